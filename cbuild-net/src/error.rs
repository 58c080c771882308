//! One error type for every step: `step: object: reason`, plus an optional hint line.
//!
//! The step names are the same ones `-v` prints, so a lab can match an error line to the step line
//! that preceded it.

use std::fmt;

/// A failed step. `main` prints it as `cbuild-net: <step>: <object>: <reason>` and exits 125.
#[derive(Debug)]
pub struct Error {
    pub step: &'static str,
    pub object: String,
    pub reason: String,
    pub hint: Option<String>,
    /// The errno behind the failure, when there is one (callers match on EEXIST, ENOENT, ...).
    pub errno: Option<i32>,
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn new(step: &'static str, object: impl fmt::Display, reason: impl fmt::Display) -> Error {
        Error { step, object: object.to_string(), reason: reason.to_string(), hint: None, errno: None }
    }

    /// A failed system call or file operation.
    pub fn io(step: &'static str, object: impl fmt::Display, e: std::io::Error) -> Error {
        let errno = e.raw_os_error();
        Error { errno, ..Error::new(step, object, e) }
    }

    pub fn errno(step: &'static str, object: impl fmt::Display, e: nix::errno::Errno) -> Error {
        Error::io(step, object, std::io::Error::from_raw_os_error(e as i32))
    }

    /// A failed rtnetlink request: the kernel's errno when it sent one, else the crate's message.
    pub fn netlink(step: &'static str, object: impl fmt::Display, e: rtnetlink::Error) -> Error {
        match &e {
            rtnetlink::Error::NetlinkError(m) if m.code.is_some() => {
                let code = -m.code.map(|c| c.get()).unwrap_or(0);
                let mut err = Error::io(step, object, std::io::Error::from_raw_os_error(code));
                if code == libc::EXFULL {
                    // In words whichever C library this was built with: musl has none for EXFULL.
                    err.reason = format!("{} (os error {code})", nix::errno::Errno::EXFULL.desc());
                    err = err.hint("a bridge holds at most 1023 ports (the kernel's BR_MAX_PORTS)");
                }
                err
            }
            _ => Error::new(step, object, e),
        }
    }

    pub fn hint(mut self, hint: impl fmt::Display) -> Error {
        self.hint = Some(hint.to_string());
        self
    }

    pub fn is_errno(&self, errno: i32) -> bool {
        self.errno == Some(errno)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // One line, whatever the reason text holds.
        let reason = self.reason.replace('\n', " ");
        write!(f, "{}: {}: {}", self.step, one_line(&self.object), one_line(reason.trim()))
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
