//! `cargo fuzz run --fuzz-dir tests/fuzz image`: see docs/reliability.md.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    // A refusal is a correct answer; only a panic, an abort or a leak is a finding.
    let _ = ldl_fuzz::image(data);
});
