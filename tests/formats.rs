//! The age datasets' own formats: ChaLearn LAP, DLDL-v2 lists, UTKFace file names.

use std::path::Path;

use ldl::data::{read_chalearn, read_dldl_list, read_utkface, Input, OnBadSample};
use ldl::{Axis, Label, LabelSpace};

fn age() -> LabelSpace {
    LabelSpace::new(vec![Axis::linear("age", 0.0, 100.0, 1.0).unwrap()]).unwrap()
}

fn touch(dir: &Path, name: &str) {
    std::fs::write(dir.join(name), b"").unwrap();
}

#[test]
fn chalearn_files_with_or_without_header_and_either_separator() {
    let dir = tempfile::tempdir().unwrap();
    touch(dir.path(), "000001.jpg");
    touch(dir.path(), "000002.jpg");
    for (name, text) in [
        (
            "gt.csv",
            "image,mean,stdv\n000001.jpg,32.5,4.1\n000002.jpg,60,6.0\n",
        ),
        ("gt2015.csv", "000001.jpg;32.5;4.1\n000002.jpg;60;6.0\n"),
    ] {
        std::fs::write(dir.path().join(name), text).unwrap();
        let table =
            read_chalearn(&dir.path().join(name), None, &age(), OnBadSample::Error).unwrap();
        assert_eq!(table.samples.len(), 2, "{name}");
        assert_eq!(
            table.samples[0].labels,
            vec![Label::value_with_std(32.5, 4.1)]
        );
        assert_eq!(
            table.samples[1].input,
            Input::ImagePath(dir.path().join("000002.jpg"))
        );
    }
    std::fs::write(
        dir.path().join("bad.csv"),
        "image,mean,stdv\n000001.jpg,32.5\n000003.jpg,40,2\n",
    )
    .unwrap();
    let err = read_chalearn(
        &dir.path().join("bad.csv"),
        None,
        &age(),
        OnBadSample::Error,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("bad.csv:2: expected 3 fields"), "{err}");
    let table =
        read_chalearn(&dir.path().join("bad.csv"), None, &age(), OnBadSample::Skip).unwrap();
    assert_eq!(table.skipped.len(), 2);
    assert!(
        table.skipped[1].reason.contains("000003.jpg not found"),
        "{:?}",
        table.skipped
    );
}

#[test]
fn dldl_v2_lists_with_and_without_sigma() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("faces")).unwrap();
    touch(&dir.path().join("faces"), "a.jpg");
    touch(&dir.path().join("faces"), "b.jpg");
    std::fs::write(
        dir.path().join("train.txt"),
        "faces/a.jpg 23 3.2\nfaces/b.jpg 41\n\n",
    )
    .unwrap();
    let table = read_dldl_list(
        &dir.path().join("train.txt"),
        None,
        &age(),
        OnBadSample::Error,
    )
    .unwrap();
    assert_eq!(table.samples.len(), 2);
    assert_eq!(
        table.samples[0].labels,
        vec![Label::value_with_std(23.0, 3.2)]
    );
    assert_eq!(table.samples[1].labels, vec![Label::value(41.0)]);
    std::fs::write(
        dir.path().join("bad.txt"),
        "faces/a.jpg 23 3.2\nfaces/b.jpg 141 2\n",
    )
    .unwrap();
    let err = read_dldl_list(
        &dir.path().join("bad.txt"),
        None,
        &age(),
        OnBadSample::Error,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("bad.txt:2: axis `age`: label value 141 is outside"),
        "{err}"
    );
}

#[test]
fn utkface_names_give_age_gender_and_race() {
    let dir = tempfile::tempdir().unwrap();
    touch(dir.path(), "26_0_1_20170116174525125.jpg.chip.jpg");
    touch(dir.path(), "3_1_2_20161219204347420.jpg.chip.jpg");
    touch(dir.path(), "notes.txt");
    let space = LabelSpace::new(vec![
        Axis::linear("age", 0.0, 116.0, 1.0).unwrap(),
        Axis::categorical("gender", ["male", "female"]).unwrap(),
        Axis::categorical("race", ["white", "black", "asian", "indian", "other"]).unwrap(),
    ])
    .unwrap();
    let table = read_utkface(dir.path(), &space, OnBadSample::Error).unwrap();
    assert_eq!(table.samples.len(), 2);
    assert_eq!(
        table.samples[0].labels,
        vec![Label::value(26.0), Label::Class(0), Label::Class(1)]
    );
    assert_eq!(
        table.samples[1].labels,
        vec![Label::value(3.0), Label::Class(1), Label::Class(2)]
    );
    // A sample's origin, used in messages, is its file.
    assert_eq!(
        table.samples[0].origin.to_string(),
        dir.path()
            .join("26_0_1_20170116174525125.jpg.chip.jpg")
            .display()
            .to_string()
    );
    touch(dir.path(), "unknown_face.jpg");
    let err = read_utkface(dir.path(), &space, OnBadSample::Error)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("unknown_face.jpg") && err.contains("not named AGE_GENDER_RACE_DATE"),
        "{err}"
    );
    let table = read_utkface(dir.path(), &space, OnBadSample::Skip).unwrap();
    assert_eq!((table.samples.len(), table.skipped.len()), (2, 1));
}
