//! `-v`: each step printed to stderr as it happens, in the same `step: object` shape as error lines, so a
//! lab can show a learner exactly what the tool did.

use crate::error::Step;
use std::sync::atomic::{AtomicBool, Ordering};

static VERBOSE: AtomicBool = AtomicBool::new(false);

pub fn set_verbose(on: bool) {
    VERBOSE.store(on, Ordering::Relaxed);
}

pub fn verbose() -> bool {
    VERBOSE.load(Ordering::Relaxed)
}

/// Print `cbuild-ns: step: <step>: <object>` when `-v` is on.
pub fn step(step: Step, object: impl std::fmt::Display) {
    if verbose() {
        // Not eprintln: its panic on a stderr whose reader is gone would stop the set-up before its undo.
        use std::io::Write;
        let _ = writeln!(std::io::stderr(), "cbuild-ns: step: {step}: {object}");
    }
}
