//! One error type for every step. Each variant renders as `step: object: reason`, which `main` prefixes
//! with `cbuild-overlay: ` to make the contract's one-line error.

use std::fmt;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// A failed step: what was being done (`step`), to what (`object`, usually a path), and why.
#[derive(Debug)]
pub struct Error {
    pub step: &'static str,
    pub object: String,
    pub reason: Reason,
    /// A likely fix, printed as a second `hint:` line.
    pub hint: Option<String>,
}

#[derive(Debug)]
pub enum Reason {
    /// A syscall failed; `detail` is what the kernel said beyond errno (the fs_context log), if anything.
    Os { err: io::Error, detail: Option<String> },
    /// The input is wrong in a way no syscall reported (checked before anything is created).
    Invalid(String),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn os(step: &'static str, object: impl Into<String>, err: impl Into<io::Error>) -> Error {
        Error { step, object: object.into(), reason: Reason::Os { err: err.into(), detail: None }, hint: None }
    }

    pub fn invalid(step: &'static str, object: impl Into<String>, reason: impl Into<String>) -> Error {
        Error { step, object: object.into(), reason: Reason::Invalid(reason.into()), hint: None }
    }

    pub fn with_detail(mut self, detail: Option<String>) -> Error {
        if let Reason::Os { detail: d, .. } = &mut self.reason {
            *d = detail;
        }
        self
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Error {
        self.hint = Some(hint.into());
        self
    }

    /// errno of an OS failure, for callers that treat one errno specially.
    pub fn errno(&self) -> Option<i32> {
        match &self.reason {
            Reason::Os { err, .. } => err.raw_os_error(),
            Reason::Invalid(_) => None,
        }
    }
}

/// A path for a line of text, stderr's (error objects, `-v` steps, warnings) or a human report's:
/// control characters, `\` and bytes that are not UTF-8 as `\ooo` ([`cbuild_mountinfo::escape`]), as the
/// `diff` report shows names.
/// `display()` made each such byte U+FFFD, so an error named `u\xff` and `u\xfe` alike, and otherwise
/// than the report that listed it.
pub fn p(path: &Path) -> String {
    cbuild_mountinfo::escape(path.as_os_str().as_bytes())
}

/// `path` as one POSIX shell word, for a hint a reader pastes into a shell: in single quotes when it is
/// printable UTF-8; otherwise as [`p`] shows it (no portable shell word holds arbitrary bytes on one line).
pub fn sh_word(path: &Path) -> String {
    match path.to_str() {
        Some(s) if !s.chars().any(char::is_control) => format!("'{}'", s.replace('\'', "'\\''")),
        _ => p(path),
    }
}

/// Text for a stderr line (error, undo, warning or `-v` step): a line break in a path becomes `\n` or
/// `\r`, so a line stays one line whatever the path, and the same object reads the same in a step and in
/// an error.
pub fn one_line(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains(['\n', '\r']) {
        s.replace('\n', "\\n").replace('\r', "\\r").into()
    } else {
        s.into()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: ", self.step, one_line(&self.object))?;
        match &self.reason {
            // The kernel's own words may quote a path too.
            Reason::Os { err, detail: Some(d) } => write!(f, "{} ({err})", one_line(d)),
            Reason::Os { err, detail: None } => write!(f, "{err}"),
            Reason::Invalid(r) => write!(f, "{}", one_line(r)),
        }
    }
}

impl std::error::Error for Error {}

/// Step lines for `-v`, in the same `step: object` shape the errors use.
pub mod verbose {
    use std::sync::atomic::{AtomicBool, Ordering};

    static ON: AtomicBool = AtomicBool::new(false);

    pub fn enable() {
        ON.store(true, Ordering::Relaxed);
    }

    pub fn step(step: &str, object: impl std::fmt::Display) {
        if ON.load(Ordering::Relaxed) {
            eprintln!("cbuild-overlay: step: {step}: {}", super::one_line(&object.to_string()));
        }
    }
}
