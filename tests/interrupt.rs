//! Stopping a run (as Ctrl-C does) keeps the last completed epoch, and resuming finishes
//! it.

use std::path::Path;

use ldl::train::{resume, train, Config, Error, Progress, StopToken};

#[test]
fn a_stopped_run_resumes_to_the_same_result() {
    let output = tempfile::tempdir().unwrap();
    let text = include_str!("../configs/bdims.toml");
    let config = |dir: &str| {
        let overrides = vec![
            "optim.epochs=3".to_string(),
            format!(
                "run.output_dir={:?}",
                output.path().join(dir).display().to_string()
            ),
        ];
        Config::parse(Path::new("configs/bdims.toml"), text, &overrides).unwrap()
    };
    let straight = train(&config("straight"), &StopToken::new(), &mut |_| {}).unwrap();
    let stop = StopToken::new();
    let err = train(&config("stopped"), &stop, &mut |progress| {
        if let Progress::Epoch(record) = progress {
            if record.epoch == 1 {
                stop.stop();
            }
        }
    })
    .unwrap_err();
    let Error::Interrupted { run_dir, epoch } = &err else {
        panic!("{err}")
    };
    assert_eq!(*epoch, 1);
    assert!(err.to_string().contains("ldl train --resume"), "{err}");
    let resumed = resume(Path::new(run_dir), &[], &StopToken::new(), &mut |_| {}).unwrap();
    assert_eq!(resumed.best_validation, straight.best_validation);
    assert_eq!(resumed.test, straight.test);
}
