//! Synthetic faces with known age and head pose, rendered procedurally: an honest image
//! task for examples and tests where real face datasets cannot be downloaded.
//!
//! Each face is a head (an ellipsoid) with eyes, brows, nose, mouth, ears and hair, seen
//! under a yaw, pitch and roll, lit from a random direction, on a random background with
//! noise. Every identity has its own face shape, skin tone, eye spacing, hair colour and
//! style. Age shows as it does in faces: a child's large cranium and low-set, large eyes
//! give way to adult proportions; forehead lines, crow's feet and nasolabial folds deepen
//! after 30; hair greys and, for some identities, recedes.
//!
//! Sample `i` of seed `s` is always the same image: nothing needs storing.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::image::RgbImage;
use crate::seeds::mix;

/// What the generator draws from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SynthConfig {
    /// Image side in pixels (default 64, at most 224).
    #[serde(default = "default_size")]
    pub size: u32,
    /// Seed of the whole set.
    #[serde(default)]
    pub seed: u64,
    /// Number of distinct people (default 500); samples are spread over them.
    #[serde(default = "default_identities")]
    pub identities: u64,
    /// Largest |yaw| in degrees (default 90).
    #[serde(default = "default_yaw")]
    pub max_yaw: f64,
    /// Largest |pitch| in degrees (default 60).
    #[serde(default = "default_pitch")]
    pub max_pitch: f64,
    /// Largest |roll| in degrees (default 30).
    #[serde(default = "default_roll")]
    pub max_roll: f64,
}

fn default_size() -> u32 {
    64
}
fn default_identities() -> u64 {
    500
}
fn default_yaw() -> f64 {
    90.0
}
fn default_pitch() -> f64 {
    60.0
}
fn default_roll() -> f64 {
    30.0
}

impl Default for SynthConfig {
    fn default() -> Self {
        SynthConfig {
            size: default_size(),
            seed: 0,
            identities: default_identities(),
            max_yaw: default_yaw(),
            max_pitch: default_pitch(),
            max_roll: default_roll(),
        }
    }
}

/// A rendered face and its ground truth.
#[derive(Debug, Clone, PartialEq)]
pub struct SynthFace {
    /// The image.
    pub image: RgbImage,
    /// The person.
    pub identity: u64,
    /// True age in years, 0–100.
    pub age: f64,
    /// Mean of simulated annotators' guesses (apparent age).
    pub apparent_age: f64,
    /// Their std, growing with age as in ChaLearn's data.
    pub apparent_age_std: f64,
    /// Degrees; positive turns the face to the image's right.
    pub yaw: f64,
    /// Degrees; positive tilts the face up.
    pub pitch: f64,
    /// Degrees; positive rotates the face counter-clockwise in the image.
    pub roll: f64,
}

/// Per-identity traits.
struct Identity {
    width: f64,
    skin: [f64; 3],
    eye_spacing: f64,
    hair: [f64; 3],
    long_hair: bool,
    recedes: f64,
    greying: f64,
    nose: f64,
    mouth: f64,
}

impl Identity {
    fn draw(rng: &mut ChaCha8Rng) -> Identity {
        let tone = rng.gen_range(0.25..1.0);
        let skin = [0.35 + 0.55 * tone, 0.25 + 0.5 * tone, 0.18 + 0.45 * tone];
        let hair_tone = rng.gen_range(0.0..1.0f64);
        let hair = if hair_tone < 0.6 {
            let v = 0.08 + 0.25 * hair_tone;
            [v, v * 0.8, v * 0.6]
        } else if hair_tone < 0.85 {
            [0.45, 0.3, 0.15]
        } else {
            [0.75, 0.6, 0.35]
        };
        Identity {
            width: rng.gen_range(0.72..0.84),
            skin,
            eye_spacing: rng.gen_range(0.30..0.40),
            hair,
            long_hair: rng.gen_bool(0.45),
            recedes: if rng.gen_bool(0.4) {
                rng.gen_range(0.5..1.0)
            } else {
                0.0
            },
            greying: rng.gen_range(0.6..1.4),
            nose: rng.gen_range(0.8..1.2),
            mouth: rng.gen_range(0.8..1.2),
        }
    }
}

/// The labels of sample `index` (what [`render`] draws, without drawing the image).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FaceLabels {
    /// The identity (subject) the face belongs to.
    pub identity: u64,
    /// True age in years.
    pub age: f64,
    /// Apparent age: the mean of simulated annotators.
    pub apparent_age: f64,
    /// Their standard deviation (growing with age, like ChaLearn's).
    pub apparent_age_std: f64,
    /// Head yaw in degrees (positive: the face turns to the image's right).
    pub yaw: f64,
    /// Head pitch in degrees (positive: up).
    pub pitch: f64,
    /// Head roll in degrees.
    pub roll: f64,
}

/// Draws the labels of sample `index`; the generator continues with the scene and image.
fn draw_labels(config: &SynthConfig, index: u64) -> (FaceLabels, ChaCha8Rng) {
    let mut rng = ChaCha8Rng::seed_from_u64(mix(config.seed, index));
    let identity = rng.gen_range(0..config.identities.max(1));
    let age: f64 = rng.gen_range(0.0..100.0);
    let apparent_age_std = 1.0 + 0.07 * age;
    let noise = crate::feature_noise::standard_normal(&mut rng);
    let apparent_age = (age + 0.5 * apparent_age_std * noise).clamp(0.0, 100.0);
    let yaw = rng.gen_range(-config.max_yaw..=config.max_yaw);
    let pitch = rng.gen_range(-config.max_pitch..=config.max_pitch);
    let roll = rng.gen_range(-config.max_roll..=config.max_roll);
    let labels = FaceLabels {
        identity,
        age,
        apparent_age,
        apparent_age_std,
        yaw,
        pitch,
        roll,
    };
    (labels, rng)
}

/// The labels of sample `index` of the set `config` describes, without rendering it
/// (about a hundred times faster).
pub fn face_labels(config: &SynthConfig, index: u64) -> FaceLabels {
    draw_labels(config, index).0
}

/// Renders sample `index` of the set `config` describes.
pub fn render(config: &SynthConfig, index: u64) -> SynthFace {
    let (labels, mut rng) = draw_labels(config, index);
    let identity = Identity::draw(&mut ChaCha8Rng::seed_from_u64(mix(
        config.seed ^ 0x1D,
        labels.identity,
    )));
    let scene = Scene {
        light: normalise([rng.gen_range(-0.7..0.7), rng.gen_range(-0.7..0.3), 1.0]),
        ambient: rng.gen_range(0.35..0.55),
        background: [
            rng.gen_range(0.1..0.9),
            rng.gen_range(0.1..0.9),
            rng.gen_range(0.1..0.9),
        ],
        gradient: rng.gen_range(-0.3..0.3),
        noise: rng.gen_range(0.01..0.04),
        scale: rng.gen_range(1.25..1.45),
    };
    let image = draw(
        config.size.clamp(8, 224) as usize,
        &identity,
        labels.age,
        [labels.yaw, labels.pitch, labels.roll],
        &scene,
        &mut rng,
    );
    SynthFace {
        image,
        identity: labels.identity,
        age: labels.age,
        apparent_age: labels.apparent_age,
        apparent_age_std: labels.apparent_age_std,
        yaw: labels.yaw,
        pitch: labels.pitch,
        roll: labels.roll,
    }
}

/// The columns of the synthetic face table, as in `manifest.csv` of
/// [`write_synthetic_set`] and the `builtin:faces` source.
pub const FACE_COLUMNS: [&str; 8] = [
    "image",
    "age",
    "apparent_age",
    "apparent_age_std",
    "yaw",
    "pitch",
    "roll",
    "identity",
];

/// One table row of a face (`image` first, then the labels in [`FACE_COLUMNS`] order).
fn table_row(image: &str, labels: &FaceLabels) -> String {
    format!(
        "{image},{:.3},{:.3},{:.3},{:.3},{:.3},{:.3},{}",
        labels.age,
        labels.apparent_age,
        labels.apparent_age_std,
        labels.yaw,
        labels.pitch,
        labels.roll,
        labels.identity
    )
}

/// The most faces `builtin:faces` serves (2²⁴).
pub const MAX_FACES: u64 = 1 << 24;

/// Faces `0..count` of `config` as a table whose inputs are rendered when batched
/// (`Input::Synthetic`): the `builtin:faces` source. Its columns are [`FACE_COLUMNS`];
/// `spec` maps them to axes (e.g. `age` ← `apparent_age` with std `apparent_age_std`)
/// and its input columns are ignored. Messages name samples `builtin:faces:LINE`, the
/// line of the face's row in `manifest.csv` of `ldl synth` with the same settings.
pub fn read_synthetic_faces(
    config: &SynthConfig,
    count: u64,
    spec: &crate::TableSpec,
    space: &ldl_core::LabelSpace,
    policy: crate::OnBadSample,
) -> crate::Result<crate::Table> {
    if count == 0 || count > MAX_FACES {
        return Err(crate::Error::Spec(format!(
            "builtin:faces: the face count must be in 1..={MAX_FACES}, got {count}"
        )));
    }
    let mut text = FACE_COLUMNS.join(",");
    text.push('\n');
    for i in 0..count {
        text.push_str(&table_row(&i.to_string(), &face_labels(config, i)));
        text.push('\n');
    }
    // The face index travels through the table reader as a one-value feature vector
    // (exact in f32 up to MAX_FACES) and becomes the sample's input below.
    let mut spec = spec.clone();
    spec.input = crate::InputColumns::Features(vec!["image".into()]);
    let mut table = crate::parse_csv(
        std::path::Path::new("builtin:faces"),
        &text,
        &spec,
        space,
        policy,
    )?;
    // The inputs are images: there are no feature columns.
    table.feature_names.clear();
    let generator = std::sync::Arc::new(config.clone());
    for sample in &mut table.samples {
        let index = match sample.input {
            crate::Input::Features(ref values) if values.len() == 1 => Some(values[0] as u64),
            _ => None,
        };
        let Some(index) = index else {
            return Err(crate::Error::Spec(format!(
                "{}: not a synthetic face",
                sample.origin
            )));
        };
        sample.input = crate::Input::Synthetic {
            generator: std::sync::Arc::clone(&generator),
            index,
        };
    }
    Ok(table)
}

struct Scene {
    light: [f64; 3],
    ambient: f64,
    background: [f64; 3],
    gradient: f64,
    noise: f64,
    scale: f64,
}

fn normalise(v: [f64; 3]) -> [f64; 3] {
    let n = (v[0] * v[0] + v[1] * v[1] + v[2] * v[2]).sqrt();
    [v[0] / n, v[1] / n, v[2] / n]
}

/// `R = Rz(roll) · Rx(−pitch) · Ry(yaw)`, as rows; head frame: x right, y up, z towards
/// the camera. (`Rx` of a positive angle would bring the top of the head forward, a nod
/// down; the label's positive pitch is a face tilted up.)
fn rotation(yaw: f64, pitch: f64, roll: f64) -> [[f64; 3]; 3] {
    let (sy, cy) = yaw.to_radians().sin_cos();
    let (sp, cp) = (-pitch).to_radians().sin_cos();
    let (sr, cr) = roll.to_radians().sin_cos();
    let ry = [[cy, 0.0, sy], [0.0, 1.0, 0.0], [-sy, 0.0, cy]];
    let rx = [[1.0, 0.0, 0.0], [0.0, cp, -sp], [0.0, sp, cp]];
    let rz = [[cr, -sr, 0.0], [sr, cr, 0.0], [0.0, 0.0, 1.0]];
    multiply(&rz, &multiply(&rx, &ry))
}

fn multiply(a: &[[f64; 3]; 3], b: &[[f64; 3]; 3]) -> [[f64; 3]; 3] {
    let mut m = [[0.0; 3]; 3];
    for i in 0..3 {
        for j in 0..3 {
            m[i][j] = (0..3).map(|k| a[i][k] * b[k][j]).sum();
        }
    }
    m
}

fn apply(m: &[[f64; 3]; 3], v: [f64; 3]) -> [f64; 3] {
    [0, 1, 2].map(|i| m[i][0] * v[0] + m[i][1] * v[1] + m[i][2] * v[2])
}

fn apply_transposed(m: &[[f64; 3]; 3], v: [f64; 3]) -> [f64; 3] {
    [0, 1, 2].map(|i| m[0][i] * v[0] + m[1][i] * v[1] + m[2][i] * v[2])
}

fn smoothstep(edge0: f64, edge1: f64, x: f64) -> f64 {
    let t = ((x - edge0) / (edge1 - edge0)).clamp(0.0, 1.0);
    t * t * (3.0 - 2.0 * t)
}

fn draw(
    size: usize,
    who: &Identity,
    age: f64,
    pose: [f64; 3],
    scene: &Scene,
    rng: &mut ChaCha8Rng,
) -> RgbImage {
    let r = rotation(pose[0], pose[1], pose[2]);
    // Growth: 0 for a newborn, 1 for an adult.
    let growth = smoothstep(0.0, 18.0, age);
    // A child's head is rounder, with a large cranium and a small jaw.
    let axes = [who.width + 0.08 * (1.0 - growth), 1.0, 0.86];
    let eye_height = -0.22 + 0.2 * growth;
    let eye_radius = 0.11 - 0.03 * growth;
    let mouth_height = -0.62 + 0.1 * growth;
    let nose_height = (eye_height + mouth_height) / 2.0;
    let wrinkles = smoothstep(28.0, 85.0, age);
    let grey = smoothstep(35.0, 75.0, age * who.greying);
    let hair = [0, 1, 2].map(|c| who.hair[c] * (1.0 - grey) + 0.78 * grey);
    let hairline = 0.45 + who.recedes * smoothstep(25.0, 70.0, age) * 0.35;
    let skin = [0, 1, 2].map(|c| who.skin[c] * (1.0 - 0.12 * wrinkles));

    let mut pixels = Vec::with_capacity(size * size * 3);
    for py in 0..size {
        for px in 0..size {
            // Camera coordinates: x right, y up, the head about 1 / scale of the frame.
            let x = ((px as f64 + 0.5) / size as f64 * 2.0 - 1.0) * scene.scale;
            let y = -((py as f64 + 0.5) / size as f64 * 2.0 - 1.0) * scene.scale;
            let colour = match hit(&r, axes, x, y) {
                Some((point, normal)) => {
                    let local = [point[0] / axes[0], point[1] / axes[1], point[2] / axes[2]];
                    let albedo = surface(
                        local,
                        who,
                        skin,
                        hair,
                        hairline,
                        eye_height,
                        eye_radius,
                        nose_height,
                        mouth_height,
                        wrinkles,
                    );
                    let n = apply(&r, normal);
                    let light = scene.ambient
                        + (1.0 - scene.ambient)
                            * (n[0] * scene.light[0]
                                + n[1] * scene.light[1]
                                + n[2] * scene.light[2])
                                .max(0.0);
                    albedo.map(|a| a * light)
                }
                None => {
                    let shade = 1.0 + scene.gradient * y / scene.scale;
                    scene.background.map(|b| b * shade)
                }
            };
            for c in colour {
                let noisy = c + scene.noise * (rng.gen::<f64>() - 0.5) * 2.0;
                pixels.push((noisy.clamp(0.0, 1.0) * 255.0).round() as u8);
            }
        }
    }
    RgbImage {
        width: size as u32,
        height: size as u32,
        pixels,
    }
}

/// The front-most intersection of the view ray through `(x, y)` with the head ellipsoid:
/// the point and its unit normal, in the head frame.
fn hit(r: &[[f64; 3]; 3], axes: [f64; 3], x: f64, y: f64) -> Option<([f64; 3], [f64; 3])> {
    let origin = apply_transposed(r, [x, y, 10.0]);
    let direction = apply_transposed(r, [0.0, 0.0, -1.0]);
    let scaled_o = [
        origin[0] / axes[0],
        origin[1] / axes[1],
        origin[2] / axes[2],
    ];
    let scaled_d = [
        direction[0] / axes[0],
        direction[1] / axes[1],
        direction[2] / axes[2],
    ];
    let a: f64 = scaled_d.iter().map(|d| d * d).sum();
    let b: f64 = 2.0
        * scaled_o
            .iter()
            .zip(&scaled_d)
            .map(|(o, d)| o * d)
            .sum::<f64>();
    let c: f64 = scaled_o.iter().map(|o| o * o).sum::<f64>() - 1.0;
    let discriminant = b * b - 4.0 * a * c;
    if discriminant < 0.0 {
        return None;
    }
    let t = (-b - discriminant.sqrt()) / (2.0 * a);
    let point = [0, 1, 2].map(|i| origin[i] + t * direction[i]);
    let normal = normalise([0, 1, 2].map(|i| point[i] / (axes[i] * axes[i])));
    Some((point, normal))
}

/// The colour of the head's surface at a point `(u, v, w)` of the unit sphere (u right,
/// v up, w towards the face's front).
#[allow(clippy::too_many_arguments)]
fn surface(
    [u, v, w]: [f64; 3],
    who: &Identity,
    skin: [f64; 3],
    hair: [f64; 3],
    hairline: f64,
    eye_height: f64,
    eye_radius: f64,
    nose_height: f64,
    mouth_height: f64,
    wrinkles: f64,
) -> [f64; 3] {
    // Hair: above the hairline at the front, and down the back (further for long hair).
    let back_limit: f64 = if who.long_hair { -0.75 } else { -0.15 };
    let front_limit = hairline - 0.25 * (1.0 - w.max(0.0));
    let in_hair = if w > 0.35 {
        v > front_limit
    } else {
        v > back_limit.max(front_limit - 0.8 * (0.35 - w))
    };
    if in_hair && !(w > 0.2 && v < hairline - 0.5) {
        let strand = 0.9 + 0.1 * (40.0 * u + 13.0 * v).sin();
        return hair.map(|h| h * strand);
    }
    let mut colour = skin;
    let darken = |colour: &mut [f64; 3], amount: f64| {
        for c in colour.iter_mut() {
            *c *= 1.0 - amount.clamp(0.0, 1.0);
        }
    };
    // Ears, on the sides.
    if u.abs() > 0.9 && (nose_height - 0.1..eye_height + 0.15).contains(&v) {
        darken(&mut colour, 0.18);
    }
    if w <= 0.2 {
        return colour;
    }
    for side in [-1.0, 1.0] {
        let (du, dv) = (u - side * who.eye_spacing, v - eye_height);
        // Eye: white, iris, pupil.
        let d =
            (du * du / (eye_radius * eye_radius) + dv * dv / (0.55 * eye_radius).powi(2)).sqrt();
        if d < 1.0 {
            let iris = (du * du + dv * dv).sqrt() / (0.5 * eye_radius);
            return if iris < 0.45 {
                [0.05, 0.04, 0.04]
            } else if iris < 1.0 {
                [0.25, 0.18, 0.1]
            } else {
                [0.92, 0.9, 0.88]
            };
        }
        // Brow.
        let brow = v - (eye_height + 0.16 + 0.05 * (1.0 - (du / (1.3 * eye_radius)).powi(2)));
        if du.abs() < 1.4 * eye_radius && brow.abs() < 0.03 {
            return hair.map(|h| h * 0.7);
        }
        // Crow's feet: short lines fanning out from the outer eye corner.
        let (cu, cv) = (
            u - side * (who.eye_spacing + 1.3 * eye_radius),
            v - eye_height,
        );
        let r = (cu * cu + cv * cv).sqrt();
        if side * cu > 0.0 && r < 0.14 {
            darken(
                &mut colour,
                wrinkles * 0.35 * (0.5 + 0.5 * (cv.atan2(cu.abs()) * 9.0).cos()).powi(8),
            );
        }
        // Nasolabial fold: from beside the nose to the mouth corner.
        let t = (v - mouth_height) / (nose_height - mouth_height);
        if (0.0..1.0).contains(&t) {
            let fold_u = side * (0.18 * who.mouth + 0.06 * t);
            darken(
                &mut colour,
                wrinkles * 0.3 * (-((u - fold_u) / 0.015).powi(2)).exp(),
            );
        }
    }
    // Forehead lines.
    let forehead = v - (eye_height + 0.28);
    if forehead > 0.0 && v < hairline - 0.05 && u.abs() < 0.45 {
        darken(
            &mut colour,
            wrinkles * 0.25 * (0.5 + 0.5 * (forehead * 70.0).cos()).powi(6),
        );
    }
    // Nose: a shaded ridge and nostrils.
    let nose_width = 0.07 * who.nose;
    if u.abs() < nose_width && (nose_height..eye_height).contains(&v) {
        darken(&mut colour, 0.08 + 0.1 * (u / nose_width).abs());
    }
    if (v - nose_height).abs() < 0.03 && u.abs() < 1.4 * nose_width {
        darken(&mut colour, 0.35);
    }
    // Mouth.
    let mouth_u = u / (0.17 * who.mouth);
    if mouth_u.abs() < 1.0 && (v - mouth_height - 0.02 * mouth_u * mouth_u).abs() < 0.035 {
        return [0.55 * skin[0] + 0.25, 0.3 * skin[1], 0.3 * skin[2]];
    }
    colour
}

/// Writes faces `0..count` as PNGs into `folder`, with two manifests: `manifest.csv`
/// (`image,age,apparent_age,apparent_age_std,yaw,pitch,roll,identity`, for the `table`
/// format) and `chalearn.csv` (`image,mean,stdv`, for the `chalearn` format). `count` must
/// be in `1..=MAX_FACES`. The manifests are written row by row as the images are, under
/// temporary names renamed at the end, so memory stays flat and an interrupted run leaves
/// no manifest that lists missing images.
pub fn write_synthetic_set(
    config: &SynthConfig,
    count: u64,
    folder: &std::path::Path,
) -> crate::Result<()> {
    use crate::Error;
    if count == 0 || count > MAX_FACES {
        return Err(Error::Spec(format!(
            "the face count must be in 1..={MAX_FACES}, got {count}"
        )));
    }
    std::fs::create_dir_all(folder.join("images")).map_err(|e| Error::io(folder, e))?;
    let mut manifest = PartialFile::create(folder, "manifest.csv")?;
    let mut chalearn = PartialFile::create(folder, "chalearn.csv")?;
    manifest.line(&FACE_COLUMNS.join(","))?;
    chalearn.line("image,mean,stdv")?;
    for i in 0..count {
        let face = render(config, i);
        let name = format!("images/{i:06}.png");
        let path = folder.join(&name);
        image::save_buffer(
            &path,
            &face.image.pixels,
            face.image.width,
            face.image.height,
            image::ExtendedColorType::Rgb8,
        )
        .map_err(|e| Error::io(&path, e))?;
        let labels = face_labels(config, i);
        manifest.line(&table_row(&name, &labels))?;
        chalearn.line(&format!(
            "{name},{:.3},{:.3}",
            face.apparent_age, face.apparent_age_std
        ))?;
    }
    manifest.finish()?;
    chalearn.finish()
}

/// A file written line by line under `.NAME.partial`, renamed to `NAME` by
/// [`PartialFile::finish`].
struct PartialFile {
    writer: std::io::BufWriter<std::fs::File>,
    partial: std::path::PathBuf,
    target: std::path::PathBuf,
}

impl PartialFile {
    fn create(folder: &std::path::Path, name: &str) -> crate::Result<PartialFile> {
        let partial = folder.join(format!(".{name}.partial"));
        let file = std::fs::File::create(&partial).map_err(|e| crate::Error::io(&partial, e))?;
        Ok(PartialFile {
            writer: std::io::BufWriter::new(file),
            partial,
            target: folder.join(name),
        })
    }

    fn line(&mut self, text: &str) -> crate::Result<()> {
        use std::io::Write as _;
        writeln!(self.writer, "{text}").map_err(|e| crate::Error::io(&self.partial, e))
    }

    fn finish(self) -> crate::Result<()> {
        let file = self
            .writer
            .into_inner()
            .map_err(|e| crate::Error::io(&self.partial, e.into_error()))?;
        file.sync_all()
            .map_err(|e| crate::Error::io(&self.partial, e))?;
        std::fs::rename(&self.partial, &self.target).map_err(|e| crate::Error::io(&self.target, e))
    }
}
