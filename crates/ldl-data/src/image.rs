//! Images: decoding (JPEG and PNG), resizing to a square, augmentation that keeps the
//! labels true (a horizontal flip negates yaw and roll; a rotation adds to roll), and
//! normalisation into CHW floats.

use std::path::Path;

use fast_image_resize as fr;
use ldl_core::files::{read_bounded, FileKind};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Largest accepted image side, in pixels: larger files are refused rather than decoded.
pub const MAX_IMAGE_SIDE: u32 = 8192;

/// An 8-bit RGB image, row-major, 3 bytes per pixel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RgbImage {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// `width × height × 3` bytes.
    pub pixels: Vec<u8>,
}

/// Decodes a JPEG or PNG file into RGB. Errors name the file and say what is wrong.
pub fn decode(path: &Path) -> Result<RgbImage> {
    let bytes = read_bounded(path, FileKind::Image)?;
    let reader = image::ImageReader::new(std::io::Cursor::new(bytes.as_slice()))
        .with_guessed_format()
        .map_err(|e| Error::io(path, e))?;
    decode_with_limits(reader, &bytes).map_err(|message| Error::file(path, message))
}

/// Decodes an encoded JPEG or PNG image held in memory (as read from a parquet file) into
/// RGB, with the same limits as [`decode`]. Errors say what is wrong; the caller names the
/// sample.
pub fn decode_bytes(bytes: &[u8]) -> Result<RgbImage> {
    let reader = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| Error::Spec(format!("cannot read the image bytes: {e}")))?;
    decode_with_limits(reader, bytes).map_err(Error::Spec)
}

/// Decodes `reader`, which reads `bytes`, within the size limits; a JPEG must be complete.
fn decode_with_limits<R: std::io::BufRead + std::io::Seek>(
    mut reader: image::ImageReader<R>,
    bytes: &[u8],
) -> std::result::Result<RgbImage, String> {
    let jpeg = reader.format() == Some(image::ImageFormat::Jpeg);
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_IMAGE_SIDE);
    limits.max_image_height = Some(MAX_IMAGE_SIDE);
    limits.max_alloc = Some(512 * 1024 * 1024);
    reader.limits(limits);
    let decoded = reader
        .decode()
        .map_err(|e| format!("cannot decode the image ({e}); only JPEG and PNG are read"))?;
    // The JPEG decoder fills in what a cut-off file lacks (grey or repeated rows) and
    // reports no error, so a truncated JPEG would train and predict as a different image.
    // Checked after decoding, so that what the decoder refuses keeps its own message.
    if jpeg && !jpeg_is_complete(bytes) {
        return Err(
            "the JPEG is truncated: it ends before its end-of-image marker, so \
                    part of the picture is missing (an interrupted copy or download?); \
                    replace it with a complete copy, or leave it out (`on_bad_sample = \
                    \"skip\"` skips and lists such images)"
                .into(),
        );
    }
    let rgb = decoded.to_rgb8();
    Ok(RgbImage {
        width: rgb.width(),
        height: rgb.height(),
        pixels: rgb.into_raw(),
    })
}

/// Whether the JPEG `bytes` reaches its end-of-image marker (`FF D9`), found by walking its
/// segments: those with a length (headers, and metadata such as an EXIF thumbnail, which
/// has an end-of-image marker of its own) are stepped over whole, and in the compressed
/// data a marker byte is always followed by `00` or a restart marker, so the first other
/// `FF D9` is the image's end. Bytes after it (trailers some cameras append) are allowed.
fn jpeg_is_complete(bytes: &[u8]) -> bool {
    let mut at = 2; // after the start-of-image marker
    while at < bytes.len() {
        // Compressed data and stray bytes between segments are passed over, as decoders do.
        if bytes[at] != 0xff {
            at += 1;
            continue;
        }
        // Any number of `FF` fill bytes may precede a marker.
        while at < bytes.len() && bytes[at] == 0xff {
            at += 1;
        }
        let Some(&marker) = bytes.get(at) else {
            return false;
        };
        at += 1;
        match marker {
            0xd9 => return true,
            // A stuffed `FF` in compressed data, and the markers without a length.
            0x00 | 0x01 | 0xd0..=0xd8 => {}
            _ => {
                let Some(length) = bytes.get(at..at + 2) else {
                    return false;
                };
                let length = usize::from(u16::from_be_bytes([length[0], length[1]]));
                // A length below its own two bytes is malformed: the decoder judges it.
                if length >= 2 {
                    at += length;
                }
            }
        }
    }
    false
}

/// Random changes applied to training images.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Augment {
    /// Flip horizontally with probability ½.
    #[serde(default)]
    pub flip: bool,
    /// Probability of turning the image grey.
    #[serde(default)]
    pub grayscale: f32,
    /// The crop's side as a fraction of the image's, drawn uniformly from this range
    /// (`[1, 1]`: no rescaling); smaller crops zoom in.
    #[serde(default = "no_scale")]
    pub scale: [f32; 2],
    /// Largest rotation in degrees, drawn uniformly from `[−rotation, rotation]`.
    #[serde(default)]
    pub rotation: f32,
    /// Brightness jitter: an offset drawn from `[−b, b]` (as a fraction of full range).
    #[serde(default)]
    pub brightness: f32,
    /// Contrast jitter: a factor drawn from `[1 − c, 1 + c]`.
    #[serde(default)]
    pub contrast: f32,
}

fn no_scale() -> [f32; 2] {
    [1.0, 1.0]
}

impl Default for Augment {
    fn default() -> Self {
        Augment {
            flip: false,
            grayscale: 0.0,
            scale: no_scale(),
            rotation: 0.0,
            brightness: 0.0,
            contrast: 0.0,
        }
    }
}

impl Augment {
    /// DLDL-v2's training augmentation: flips, grey images, random rescaling and crops,
    /// small rotations and colour jitter.
    pub fn dldl_v2() -> Augment {
        Augment {
            flip: true,
            grayscale: 0.1,
            scale: [0.85, 1.0],
            rotation: 10.0,
            brightness: 0.1,
            contrast: 0.1,
        }
    }

    /// Checks the ranges.
    pub fn validate(&self) -> Result<()> {
        let [low, high] = self.scale;
        let ok = (0.0..=1.0).contains(&self.grayscale)
            && low > 0.0
            && low <= high
            && high <= 1.0
            && (0.0..=180.0).contains(&self.rotation)
            && (0.0..=1.0).contains(&self.brightness)
            && (0.0..=1.0).contains(&self.contrast);
        if ok {
            Ok(())
        } else {
            Err(Error::Spec(format!(
                "augmentation out of range: {self:?} (grayscale, brightness and contrast in [0, 1], \
                 0 < scale[0] ≤ scale[1] ≤ 1, rotation in [0, 180])"
            )))
        }
    }

    fn is_identity(&self) -> bool {
        !self.flip
            && self.grayscale == 0.0
            && self.scale == [1.0, 1.0]
            && self.rotation == 0.0
            && self.brightness == 0.0
            && self.contrast == 0.0
    }
}

/// What augmentation did to an image, so that its labels can follow.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Geometry {
    /// Mirrored left–right.
    pub flipped: bool,
    /// Rotated counter-clockwise by this many degrees, after the flip.
    pub rotation: f32,
}

/// From a decoded image to a normalised `3 × size × size` float array.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImagePipeline {
    /// Output side in pixels.
    pub size: u32,
    /// Per-channel mean subtracted after scaling pixels to [0, 1].
    #[serde(default = "half")]
    pub mean: [f32; 3],
    /// Per-channel std divided by after that.
    #[serde(default = "half")]
    pub std: [f32; 3],
}

fn half() -> [f32; 3] {
    [0.5, 0.5, 0.5]
}

impl ImagePipeline {
    /// Images of `size × size`, scaled to `[−1, 1]`.
    pub fn new(size: u32) -> ImagePipeline {
        ImagePipeline {
            size,
            mean: half(),
            std: half(),
        }
    }

    /// Resizes (shorter side to `size`, centre crop), augments when `rng` is given, and
    /// normalises. Returns CHW floats and what the augmentation did.
    pub fn process(
        &self,
        image: &RgbImage,
        augment: &Augment,
        rng: Option<&mut ChaCha8Rng>,
    ) -> Result<(Vec<f32>, Geometry)> {
        let square = self.square(image)?;
        let size = self.size as usize;
        let identity = Geometry {
            flipped: false,
            rotation: 0.0,
        };
        let (mut rgb, geometry) = match rng {
            Some(rng) if !augment.is_identity() => warp(&square, size, augment, rng),
            _ => (square.iter().map(|&v| v as f32).collect(), identity),
        };
        Ok((self.normalise(&mut rgb), geometry))
    }

    /// Shorter side to `size`, then the centre square, with a Lanczos filter.
    fn square(&self, image: &RgbImage) -> Result<Vec<u8>> {
        if self.size == 0 || self.size > 4096 || image.width == 0 || image.height == 0 {
            return Err(Error::Spec(
                "images and the output size must be non-empty".into(),
            ));
        }
        let side = image.width.min(image.height);
        let crop_left = ((image.width - side) / 2) as f64;
        let crop_top = ((image.height - side) / 2) as f64;
        let source = fr::images::ImageRef::new(
            image.width,
            image.height,
            &image.pixels,
            fr::PixelType::U8x3,
        )
        .map_err(|e| Error::Spec(format!("bad image buffer: {e}")))?;
        let mut target = fr::images::Image::new(self.size, self.size, fr::PixelType::U8x3);
        let options = fr::ResizeOptions::new().crop(crop_left, crop_top, side as f64, side as f64);
        fr::Resizer::new()
            .resize(&source, &mut target, &options)
            .map_err(|e| Error::Spec(format!("cannot resize: {e}")))?;
        Ok(target.into_vec())
    }

    /// HWC RGB in [0, 255] to normalised CHW.
    fn normalise(&self, rgb: &mut [f32]) -> Vec<f32> {
        let plane = (self.size * self.size) as usize;
        let mut out = vec![0.0; 3 * plane];
        for (i, pixel) in rgb.chunks_exact(3).enumerate() {
            for c in 0..3 {
                out[c * plane + i] = (pixel[c] / 255.0 - self.mean[c]) / self.std[c];
            }
        }
        out
    }
}

/// One pass of bilinear sampling through the inverse of a random similarity transform
/// (a flip, then a rotation, a scale and a shift), then grey and colour jitter.
fn warp(
    square: &[u8],
    size: usize,
    augment: &Augment,
    rng: &mut ChaCha8Rng,
) -> (Vec<f32>, Geometry) {
    let flipped = augment.flip && rng.gen_bool(0.5);
    let rotation = if augment.rotation > 0.0 {
        rng.gen_range(-augment.rotation..=augment.rotation)
    } else {
        0.0
    };
    let scale = if augment.scale[0] < augment.scale[1] {
        rng.gen_range(augment.scale[0]..=augment.scale[1])
    } else {
        augment.scale[0]
    };
    // The crop may sit anywhere its margin allows.
    let margin = (1.0 - scale) * size as f32 / 2.0;
    let (shift_x, shift_y) = if margin > 0.0 {
        (
            rng.gen_range(-margin..=margin),
            rng.gen_range(-margin..=margin),
        )
    } else {
        (0.0, 0.0)
    };
    let grey = augment.grayscale > 0.0 && rng.gen::<f32>() < augment.grayscale;
    let contrast = 1.0
        + if augment.contrast > 0.0 {
            rng.gen_range(-augment.contrast..=augment.contrast)
        } else {
            0.0
        };
    let brightness = if augment.brightness > 0.0 {
        rng.gen_range(-augment.brightness..=augment.brightness) * 255.0
    } else {
        0.0
    };

    let centre = (size as f32 - 1.0) / 2.0;
    // Counter-clockwise on screen (y down) means the inverse map turns by +θ in these axes.
    let (sin, cos) = rotation.to_radians().sin_cos();
    let mut out = vec![0.0f32; size * size * 3];
    for v in 0..size {
        for u in 0..size {
            let x = u as f32 - centre;
            let y = v as f32 - centre;
            // The image is flipped, then rotated: undo the rotation first, then the flip.
            let rx = cos * x - sin * y;
            let ry = sin * x + cos * y;
            let rx = if flipped { -rx } else { rx };
            let sx = scale * rx + centre + shift_x;
            let sy = scale * ry + centre + shift_y;
            let pixel = bilinear(square, size, sx, sy);
            let o = (v * size + u) * 3;
            out[o..o + 3].copy_from_slice(&pixel);
        }
    }
    for pixel in out.chunks_exact_mut(3) {
        if grey {
            let y = 0.299 * pixel[0] + 0.587 * pixel[1] + 0.114 * pixel[2];
            pixel.fill(y);
        }
        for value in pixel.iter_mut() {
            *value = ((*value - 127.5) * contrast + 127.5 + brightness).clamp(0.0, 255.0);
        }
    }
    (out, Geometry { flipped, rotation })
}

/// Bilinear sample of an HWC RGB square at `(x, y)`, replicating the border.
fn bilinear(image: &[u8], size: usize, x: f32, y: f32) -> [f32; 3] {
    let max = (size - 1) as f32;
    let (x, y) = (x.clamp(0.0, max), y.clamp(0.0, max));
    let (x0, y0) = (x.floor() as usize, y.floor() as usize);
    let (x1, y1) = ((x0 + 1).min(size - 1), (y0 + 1).min(size - 1));
    let (fx, fy) = (x - x0 as f32, y - y0 as f32);
    let at = |xx: usize, yy: usize, c: usize| image[(yy * size + xx) * 3 + c] as f32;
    let mut out = [0.0; 3];
    for (c, value) in out.iter_mut().enumerate() {
        let top = at(x0, y0, c) * (1.0 - fx) + at(x1, y0, c) * fx;
        let bottom = at(x0, y1, c) * (1.0 - fx) + at(x1, y1, c) * fx;
        *value = top * (1.0 - fy) + bottom * fy;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 160 × 120 baseline JPEG of a busy pattern, as the `image` crate writes it: its
    /// compressed data, not its headers, takes most of the file, as in a photo.
    fn jpeg() -> Vec<u8> {
        let image = image::RgbImage::from_fn(160, 120, |x, y| {
            let v = (x * 7919 + y * 104_729) ^ (x * y);
            image::Rgb([v as u8, (v >> 3) as u8, (v >> 6) as u8])
        });
        let mut bytes = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 90)
            .encode_image(&image)
            .unwrap();
        bytes
    }

    fn write(dir: &Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    #[test]
    fn truncated_jpegs_are_refused_and_whole_ones_decoded() {
        let dir = tempfile::tempdir().unwrap();
        let whole = jpeg();
        let decoded = decode(&write(dir.path(), "whole.jpg", &whole)).unwrap();
        assert_eq!((decoded.width, decoded.height), (160, 120));
        assert!(decode_bytes(&whole).is_ok());
        for percent in [50, 90] {
            let cut = &whole[..whole.len() * percent / 100];
            let name = format!("cut{percent}.jpg");
            // `err()`, not `unwrap_err()`: a decoded image would print every pixel.
            let e = decode(&write(dir.path(), &name, cut))
                .err()
                .unwrap_or_else(|| panic!("{name} was decoded"))
                .to_string();
            assert!(e.contains(&name), "{e}");
            assert!(e.contains("the JPEG is truncated"), "{e}");
            assert!(e.contains("replace it with a complete copy"), "{e}");
            let e = decode_bytes(cut)
                .err()
                .unwrap_or_else(|| panic!("{name} was decoded from memory"))
                .to_string();
            assert!(e.contains("the JPEG is truncated"), "{e}");
        }
        // Only the last two bytes, the end-of-image marker, missing.
        let e = decode_bytes(&whole[..whole.len() - 2])
            .err()
            .unwrap_or_else(|| panic!("a JPEG without its end marker was decoded"));
        assert!(e.to_string().contains("truncated"), "{e}");
    }

    #[test]
    fn a_thumbnail_does_not_end_the_image_and_trailers_are_allowed() {
        let whole = jpeg();
        // An APP1 segment holding a whole JPEG of its own, as an EXIF thumbnail does,
        // right after the start-of-image marker.
        let thumbnail = jpeg();
        let length = (thumbnail.len() + 2) as u16;
        let mut with_thumbnail = vec![0xff, 0xd8, 0xff, 0xe1];
        with_thumbnail.extend(length.to_be_bytes());
        with_thumbnail.extend(&thumbnail);
        with_thumbnail.extend(&whole[2..]);
        assert!(jpeg_is_complete(&with_thumbnail));
        assert!(decode_bytes(&with_thumbnail).is_ok());
        let cut = &with_thumbnail[..with_thumbnail.len() * 3 / 4];
        assert!(!jpeg_is_complete(cut), "the thumbnail's end marker counted");
        // Bytes after the end-of-image marker (a camera's trailer) are not the image's.
        let mut trailer = whole.clone();
        trailer.extend(b"\0\0\0trailer");
        assert!(decode_bytes(&trailer).is_ok());
    }
}
