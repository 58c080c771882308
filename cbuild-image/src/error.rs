//! One error type: the step that failed, the object it failed on, and why — printed as the contract's
//! one line `cbuild-image: step: object: reason`, optionally followed by a `hint:` line.

use std::fmt;
use std::path::Path;

#[derive(Debug)]
pub struct Error {
    pub step: &'static str,
    pub object: String,
    pub reason: String,
    pub hint: Option<String>,
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn new(step: &'static str, object: impl fmt::Display, reason: impl fmt::Display) -> Error {
        Error { step, object: object.to_string(), reason: reason.to_string(), hint: None }
    }

    /// An I/O failure on a path.
    pub fn io(step: &'static str, path: &Path, e: std::io::Error) -> Error {
        Error::new(step, path.display(), e)
    }

    /// A failed syscall (nix errno) on an object.
    pub fn sys(step: &'static str, object: impl fmt::Display, e: nix::Error) -> Error {
        Error::new(step, object, std::io::Error::from(e))
    }

    pub fn hint(mut self, hint: impl fmt::Display) -> Error {
        self.hint = Some(hint.to_string());
        self
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}", self.step, one_line(&self.object), one_line(&self.reason))
    }
}

impl std::error::Error for Error {}

/// Text for a stderr line: a line break inside an object or a reason (a path or an archive's field, from
/// hostile input) is shown as `\n` or `\r`, so the contract's error stays one line whatever the input.
pub fn one_line(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains(['\n', '\r']) {
        s.replace('\n', "\\n").replace('\r', "\\r").into()
    } else {
        s.into()
    }
}
