//! `cargo fuzz run --fuzz-dir tests/fuzz hub_response`: see docs/reliability.md.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    // A refusal is a correct answer; a panic (an accepted value that is not safe to use),
    // an abort or a leak is a finding.
    let _ = ldl_fuzz::hub_response(data);
});
