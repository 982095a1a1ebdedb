//! `cargo fuzz run --fuzz-dir tests/fuzz parquet`: see docs/reliability.md.
#![no_main]

use std::cell::RefCell;
use std::panic::{catch_unwind, set_hook, PanicHookInfo};
use std::sync::Once;

thread_local! {
    /// The last panic's message and place, shown if that panic reaches this target.
    static LAST_PANIC: RefCell<String> = const { RefCell::new(String::new()) };
}

fn remember(info: &PanicHookInfo<'_>) {
    LAST_PANIC.with(|last| *last.borrow_mut() = info.to_string());
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    // ldl reads parquet files inside `catch_unwind`: a panic of the parquet crate on a
    // malformed file becomes ldl's error, which is a correct answer. libfuzzer-sys's panic
    // hook would abort on it first, so it is replaced by one that only remembers the
    // message, and a panic that reaches this target (one ldl let through) aborts here.
    static HOOK: Once = Once::new();
    HOOK.call_once(|| set_hook(Box::new(remember)));
    if catch_unwind(|| ldl_fuzz::parquet(data)).is_err() {
        LAST_PANIC.with(|last| eprintln!("panicked: {}", last.borrow()));
        std::process::abort();
    }
});
