//! cbuild-seccomp: Docker and OCI seccomp profiles → classic BPF.
//!
//! The pipeline, one module per concern:
//! [`profile`] parses Docker's profile format and OCI's `linux.seccomp` (the same JSON shape, Docker's being
//! a superset) → [`resolve`] applies `includes`/`excludes` against a capability set, an architecture and a
//! kernel version and validates every rule → [`gen`] turns the rules into the program (a binary tree over
//! syscall numbers; libseccomp only resolves names) and [`compile`] prepends the ENOSYS prologue so
//! syscalls newer than the profile fail with ENOSYS (libseccomp's own generator stays available there) →
//! [`bpf`] is the program as bytes: the file format of docs/ARCHITECTURE.md, an interpreter that `check`
//! uses to answer from the *compiled* program, and `seccomp(2)` loading for `exec`.
//! [`builtin`] is the built-in `default` profile; [`inspect`] reads a process's seccomp state;
//! [`signals`] holds the stop signals while a temporary file of `compile -o` or the cache exists.

pub mod arch;
pub mod bpf;
pub mod builtin;
pub mod cache;
pub mod caps;
pub mod check;
pub mod compile;
pub mod gen;
pub mod inspect;
pub mod profile;
pub mod resolve;
pub mod signals;

use std::sync::atomic::{AtomicBool, Ordering};

pub const TOOL: &str = "cbuild-seccomp";

/// A failed step: printed as `cbuild-seccomp: <step>: <object>: <reason>` (plus an optional `hint:` line).
/// `step` is one of the names the `-v` lines use: parse, resolve, compile, export, write, read, load,
/// execve, inspect, check (and, only in `-v` lines, cache).
#[derive(Debug, thiserror::Error)]
#[error("{step}: {}: {}", one_line(object), one_line(reason))]
pub struct Error {
    pub step: &'static str,
    pub object: String,
    pub reason: String,
    pub hint: Option<String>,
    /// Exit code: 125 for the tool's own failures, 126/127 when the command could not be run.
    pub code: i32,
}

impl Error {
    pub fn new(step: &'static str, object: impl Into<String>, reason: impl ToString) -> Error {
        Error { step, object: object.into(), reason: reason.to_string(), hint: None, code: 125 }
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Error {
        self.hint = Some(hint.into());
        self
    }

    pub fn code(mut self, code: i32) -> Error {
        self.code = code;
        self
    }
}

pub type Result<T> = std::result::Result<T, Error>;

static VERBOSE: AtomicBool = AtomicBool::new(false);

pub fn set_verbose(on: bool) {
    VERBOSE.store(on, Ordering::Relaxed);
}

pub fn verbose() -> bool {
    VERBOSE.load(Ordering::Relaxed)
}

/// `-v`: one line per step, in the same `tool: step: name: object` shape the error lines use.
pub fn step(name: &str, object: &str) {
    if VERBOSE.load(Ordering::Relaxed) {
        eprintln!("{TOOL}: step: {name}: {object}");
    }
}

/// A warning that does not stop the run (e.g. a syscall name libseccomp does not know).
pub fn warn(step: &str, object: &str, reason: &str) {
    eprintln!("{TOOL}: warning: {step}: {}: {}", one_line(object), one_line(reason));
}

/// Text for a stderr line: a line break inside an object or a reason (a profile's syscall name, from
/// hostile input) is shown as `\n` or `\r`, so an error or warning stays one line and cannot forge a
/// `hint:` line.
pub fn one_line(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains(['\n', '\r']) {
        s.replace('\n', "\\n").replace('\r', "\\r").into()
    } else {
        s.into()
    }
}
