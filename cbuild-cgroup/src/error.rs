//! One error type for every step: which step failed, on which object, and why — printed as the contract's
//! one line `cbuild-cgroup: step: object: reason`, optionally followed by a `hint:` line.

use std::fmt;
use std::io;

/// Why a step failed.
#[derive(Debug)]
pub enum Reason {
    /// A syscall failed; the OS error says why.
    Sys(io::Error),
    /// The input or the host state is not acceptable; the text says why.
    Bad(String),
}

/// A failed step. Every error leaves the tool with exit code 125, except a command that cannot be
/// executed by `exec` (126) or not found (127), which follows the shell's convention.
#[derive(Debug)]
pub struct Error {
    pub step: &'static str,
    pub object: String,
    pub reason: Reason,
    pub hint: Option<String>,
    pub exit_code: i32,
    /// Signals held blocked through the failed step, put back by [`Error::release`] only once the error
    /// line is out: a stop signal that arrived meanwhile then ends the process after saying why.
    pub held: Option<Box<crate::supervise::Blocked>>,
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn sys(step: &'static str, object: impl fmt::Display, err: io::Error) -> Error {
        Error { step, object: object.to_string(), reason: Reason::Sys(err), hint: None, exit_code: 125, held: None }
    }

    pub fn bad(step: &'static str, object: impl fmt::Display, reason: impl Into<String>) -> Error {
        Error {
            step,
            object: object.to_string(),
            reason: Reason::Bad(reason.into()),
            hint: None,
            exit_code: 125,
            held: None,
        }
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Error {
        self.hint = Some(hint.into());
        self
    }

    /// The same error, keeping `held` blocked until [`Error::release`].
    pub fn holding(mut self, held: crate::supervise::Blocked) -> Error {
        self.held = Some(Box::new(held));
        self
    }

    /// Put back the signal mask the caller gave us, after the error line: a stop signal held through the
    /// failed step ends the process now, as it would have (128+N in a shell); with none, nothing happens.
    pub fn release(&mut self) {
        if let Some(held) = self.held.take() {
            let _ = held.restore();
        }
    }

    /// The same error, its object followed by the input field that asked for the step: a kernel refusal
    /// of an OCI field's write then says which field it was.
    pub fn for_field(mut self, field: &str) -> Error {
        self.object = format!("{} ({field})", self.object);
        self
    }

    /// The OS error number, when a syscall failed.
    pub fn errno(&self) -> Option<i32> {
        match &self.reason {
            Reason::Sys(e) => e.raw_os_error(),
            Reason::Bad(_) => None,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.reason {
            Reason::Sys(e) => write!(f, "{}: {}: {}", self.step, one_line(&self.object), e),
            Reason::Bad(r) => write!(f, "{}: {}: {}", self.step, one_line(&self.object), one_line(r)),
        }
    }
}

impl std::error::Error for Error {}

/// Text for a stderr line: a line break inside an object or a reason (a path or a name, from
/// hostile input) is shown as `\n` or `\r`, so the contract's error stays one line whatever the input.
pub fn one_line(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains(['\n', '\r']) {
        s.replace('\n', "\\n").replace('\r', "\\r").into()
    } else {
        s.into()
    }
}
