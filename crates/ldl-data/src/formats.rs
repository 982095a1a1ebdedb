//! The formats age-estimation datasets ship in: ChaLearn LAP apparent age (image, mean,
//! std), DLDL-v2's list files (`path age sigma`), and UTKFace's file names
//! (`age_gender_race_date.jpg`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ldl_core::files::{check_regular, read_text, FileKind, FileProblem};
use ldl_core::{Label, LabelSpace};

use crate::error::{Error, Result};
use crate::sample::{Input, Sample, SampleOrigin};
use crate::table::{OnBadSample, SkippedSample, Table};

/// Reads a ChaLearn LAP 2015/2016 apparent-age file: one row per image with its file
/// name, the annotators' mean age and their std, comma- or semicolon-separated, with or
/// without a header row (`image,mean,stdv`). Images are looked up next to the file, or
/// under `images` when given. The label space must be the one age axis.
pub fn read_chalearn(
    path: &Path,
    images: Option<&Path>,
    space: &LabelSpace,
    policy: OnBadSample,
) -> Result<Table> {
    let (text, root, mut reader) = LineReader::open(path, images, space, policy)?;
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        let fields: Vec<&str> = line.split([',', ';']).map(str::trim).collect();
        if line.trim().is_empty()
            || (number == 1 && fields.get(1).is_some_and(|f| f.parse::<f64>().is_err()))
        {
            continue; // blank line or header row
        }
        let parsed = match fields.as_slice() {
            [image, mean, std] => {
                number_pair(mean, std).map(|(m, s)| (root.join(image), m, Some(s)))
            }
            _ => Err(format!(
                "expected 3 fields (image, mean, std), found {}",
                fields.len()
            )),
        };
        reader.push(number, parsed)?;
    }
    reader.finish()
}

/// Reads a DLDL-v2 list file: one `path age sigma` line per image (whitespace-separated;
/// `sigma` may be omitted for the axis default). Paths are relative to `images`, or to the
/// list's folder.
pub fn read_dldl_list(
    path: &Path,
    images: Option<&Path>,
    space: &LabelSpace,
    policy: OnBadSample,
) -> Result<Table> {
    let (text, root, mut reader) = LineReader::open(path, images, space, policy)?;
    for (index, line) in text.lines().enumerate() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let parsed = match fields.as_slice() {
            [] => continue,
            [image, age] => parse_number("age", age).map(|a| (root.join(image), a, None)),
            [image, age, sigma] => {
                number_pair(age, sigma).map(|(a, s)| (root.join(image), a, Some(s)))
            }
            _ => Err(format!(
                "expected `path age [sigma]`, found {} fields",
                fields.len()
            )),
        };
        reader.push(index + 1, parsed)?;
    }
    reader.finish()
}

/// Reads a folder of UTKFace images named `AGE_GENDER_RACE_DATE.jpg`. The label space's
/// axes are filled by name: `age` (a value), and optionally `gender` and `race`
/// (categorical, taking the class index). Files whose names do not follow the pattern are
/// bad samples (each named), handled by `policy`.
pub fn read_utkface(folder: &Path, space: &LabelSpace, policy: OnBadSample) -> Result<Table> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(folder)
        .map_err(|e| Error::io(folder, e))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| {
            matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("jpg" | "jpeg" | "png")
            )
        })
        .collect();
    names.sort();
    let mut table = empty_table();
    for path in names {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let result = utkface_labels(&name, space).and_then(|labels| {
            space.encode(&labels).map_err(|e| e.to_string())?;
            Ok(labels)
        });
        match result {
            Ok(labels) => table.samples.push(Sample {
                // The file itself is the sample's origin: it has no line.
                origin: SampleOrigin::line(Arc::new(path.clone()), 0),
                input: Input::ImagePath(path),
                labels,
                group: None,
                split: None,
            }),
            Err(reason) => match policy {
                OnBadSample::Error => return Err(Error::file(&path, reason)),
                OnBadSample::Skip => table.skipped.push(SkippedSample {
                    location: path.display().to_string(),
                    reason,
                }),
            },
        }
    }
    if table.samples.is_empty() && table.skipped.is_empty() {
        return Err(Error::file(folder, "no .jpg or .png images in the folder"));
    }
    Ok(table)
}

fn utkface_labels(name: &str, space: &LabelSpace) -> std::result::Result<Vec<Label>, String> {
    let fields: Vec<&str> = name.split('.').next().unwrap_or("").split('_').collect();
    if fields.len() < 3 {
        return Err(format!("`{name}` is not named AGE_GENDER_RACE_DATE"));
    }
    let number = |what: &str, text: &str| {
        text.parse::<usize>()
            .map_err(|_| format!("`{name}`: the {what} field `{text}` is not a whole number"))
    };
    let (age, gender, race) = (
        number("age", fields[0])?,
        number("gender", fields[1])?,
        number("race", fields[2])?,
    );
    space
        .axes()
        .iter()
        .map(|axis| match axis.name() {
            "age" => Ok(Label::value(age as f64)),
            "gender" => Ok(Label::Class(gender)),
            "race" => Ok(Label::Class(race)),
            other => Err(format!(
                "UTKFace names give age, gender and race, not `{other}`"
            )),
        })
        .collect()
}

/// Shared by the line formats: one age axis, samples with a line number each.
struct LineReader<'a> {
    path: Arc<PathBuf>,
    space: &'a LabelSpace,
    policy: OnBadSample,
    table: Table,
}

impl<'a> LineReader<'a> {
    /// The file's text, the folder its image paths are relative to, and a reader.
    fn open(
        path: &Path,
        images: Option<&Path>,
        space: &'a LabelSpace,
        policy: OnBadSample,
    ) -> Result<(String, PathBuf, Self)> {
        let text = read_text(path, FileKind::Table)?;
        let root = images
            .map(Path::to_path_buf)
            .unwrap_or_else(|| folder_of(path));
        Ok((text, root, LineReader::new(path, space, policy)?))
    }

    fn new(path: &Path, space: &'a LabelSpace, policy: OnBadSample) -> Result<Self> {
        if space.len() != 1 {
            return Err(Error::Spec(format!(
                "{}: this format labels one axis (age), but the label space has {}",
                path.display(),
                space.len()
            )));
        }
        Ok(LineReader {
            path: Arc::new(path.to_path_buf()),
            space,
            policy,
            table: empty_table(),
        })
    }

    fn push(
        &mut self,
        line: usize,
        parsed: std::result::Result<(PathBuf, f64, Option<f64>), String>,
    ) -> Result<()> {
        let result = parsed.and_then(|(image, value, std)| {
            check_regular(&image).map_err(|problem| match problem {
                FileProblem::NotFound => format!("image {} not found", image.display()),
                problem => format!("image {}: {problem}", image.display()),
            })?;
            let label = Label::Value { value, std };
            self.space
                .encode(std::slice::from_ref(&label))
                .map_err(|e| e.to_string())?;
            Ok(Sample {
                input: Input::ImagePath(image),
                labels: vec![label],
                group: None,
                split: None,
                origin: SampleOrigin::line(Arc::clone(&self.path), line),
            })
        });
        match (result, self.policy) {
            (Ok(sample), _) => self.table.samples.push(sample),
            (Err(reason), OnBadSample::Error) => return Err(Error::row(&self.path, line, reason)),
            (Err(reason), OnBadSample::Skip) => self.table.skipped.push(SkippedSample {
                location: format!("{}:{line}", self.path.display()),
                reason,
            }),
        }
        Ok(())
    }

    fn finish(self) -> Result<Table> {
        if self.table.samples.is_empty() && self.table.skipped.is_empty() {
            return Err(Error::file(&self.path, "the file lists no images"));
        }
        Ok(self.table)
    }
}

fn empty_table() -> Table {
    Table {
        samples: Vec::new(),
        skipped: Vec::new(),
        feature_names: Vec::new(),
    }
}

fn folder_of(path: &Path) -> PathBuf {
    path.parent().map(Path::to_path_buf).unwrap_or_default()
}

fn parse_number(what: &str, text: &str) -> std::result::Result<f64, String> {
    match text.parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(v),
        _ => Err(format!("the {what} `{text}` is not a finite number")),
    }
}

fn number_pair(value: &str, std: &str) -> std::result::Result<(f64, f64), String> {
    Ok((parse_number("age", value)?, parse_number("std", std)?))
}
