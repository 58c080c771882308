//! `-v` step lines: `cbuild-cgroup: step: <step>: <object>`, the same step names the error lines use.

use std::fmt::Display;
use std::sync::atomic::{AtomicBool, Ordering};

static VERBOSE: AtomicBool = AtomicBool::new(false);

pub fn set_verbose(on: bool) {
    VERBOSE.store(on, Ordering::Relaxed);
}

pub fn verbose() -> bool {
    VERBOSE.load(Ordering::Relaxed)
}

/// Print one step line when `-v` was given.
pub fn step(step: &str, object: impl Display) {
    if verbose() {
        eprintln!("cbuild-cgroup: step: {step}: {object}");
    }
}

/// A warning that does not change the outcome (an undo step that failed).
pub fn warn(msg: impl Display) {
    eprintln!("cbuild-cgroup: {msg}");
}
