//! One error type for every step. Its Display is the contract's error line after the tool name:
//! `<step>: <object>: <reason>`; `hint` becomes a second line. `code` is the exit code the failure maps to
//! (125 for the tool's own failures, 126/127 when the command itself cannot be executed).

use serde::{Deserialize, Serialize};
use std::fmt;

/// The steps of cbuild-ns, named as they appear in error lines, `-v` lines and `--status-fd` records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    Args,
    Rootfs,
    Join,
    Clone,
    CgroupFd,
    Unshare,
    Setgroups,
    UidMap,
    GidMap,
    Sync,
    Hostname,
    Domainname,
    Loopback,
    TimeOffsets,
    Propagation,
    MountRoot,
    MountProc,
    MountDev,
    MountSys,
    MountCgroup,
    Tmpfs,
    Bind,
    Mount,
    Mask,
    Readonly,
    PivotRoot,
    ReadonlyRoot,
    Persist,
    InfoFd,
    WaitFd,
    StatusFd,
    Workdir,
    User,
    Rlimit,
    Capabilities,
    NoNewPrivs,
    Seccomp,
    Fds,
    Exec,
    Fork,
    Wait,
    Inspect,
}

impl Step {
    pub fn name(self) -> &'static str {
        match self {
            Step::Args => "args",
            Step::Rootfs => "rootfs",
            Step::Join => "join",
            Step::Clone => "clone",
            Step::CgroupFd => "cgroup_fd",
            Step::Unshare => "unshare",
            Step::Setgroups => "setgroups",
            Step::UidMap => "uid_map",
            Step::GidMap => "gid_map",
            Step::Sync => "sync",
            Step::Hostname => "hostname",
            Step::Domainname => "domainname",
            Step::Loopback => "loopback",
            Step::TimeOffsets => "time_offsets",
            Step::Propagation => "propagation",
            Step::MountRoot => "mount_root",
            Step::MountProc => "mount_proc",
            Step::MountDev => "mount_dev",
            Step::MountSys => "mount_sys",
            Step::MountCgroup => "mount_cgroup",
            Step::Tmpfs => "tmpfs",
            Step::Bind => "bind",
            Step::Mount => "mount",
            Step::Mask => "mask",
            Step::Readonly => "readonly",
            Step::PivotRoot => "pivot_root",
            Step::ReadonlyRoot => "readonly_root",
            Step::Persist => "persist",
            Step::InfoFd => "info_fd",
            Step::WaitFd => "wait_fd",
            Step::StatusFd => "status_fd",
            Step::Workdir => "workdir",
            Step::User => "user",
            Step::Rlimit => "rlimit",
            Step::Capabilities => "capabilities",
            Step::NoNewPrivs => "no_new_privs",
            Step::Seccomp => "seccomp",
            Step::Fds => "fds",
            Step::Exec => "exec",
            Step::Fork => "fork",
            Step::Wait => "wait",
            Step::Inspect => "inspect",
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Exit code for the tool's own failures (contract).
pub const EXIT_TOOL: i32 = 125;
/// The command exists but cannot be executed.
pub const EXIT_CANNOT_EXEC: i32 = 126;
/// The command was not found.
pub const EXIT_NOT_FOUND: i32 = 127;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Error {
    pub step: Step,
    pub object: String,
    pub reason: String,
    pub hint: Option<String>,
    pub code: i32,
}

impl Error {
    pub fn new(step: Step, object: impl fmt::Display, reason: impl fmt::Display) -> Error {
        Error { step, object: object.to_string(), reason: reason.to_string(), hint: None, code: EXIT_TOOL }
    }

    /// A failed syscall: the reason is the errno's text, as the shell tools print it.
    pub fn sys(step: Step, object: impl fmt::Display, errno: nix::errno::Errno) -> Error {
        let reason = std::io::Error::from_raw_os_error(errno as i32).to_string();
        Error::new(step, object, reason)
    }

    pub fn io(step: Step, object: impl fmt::Display, e: &std::io::Error) -> Error {
        Error::new(step, object, e)
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

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}", self.step, one_line(&self.object), one_line(&self.reason))
    }
}

impl std::error::Error for Error {}

pub type Result<T> = std::result::Result<T, Error>;

/// Attach a step and object to a nix result.
pub trait Context<T> {
    fn ctx(self, step: Step, object: impl fmt::Display) -> Result<T>;
}

impl<T> Context<T> for nix::Result<T> {
    fn ctx(self, step: Step, object: impl fmt::Display) -> Result<T> {
        self.map_err(|e| Error::sys(step, object, e))
    }
}

impl<T> Context<T> for std::io::Result<T> {
    fn ctx(self, step: Step, object: impl fmt::Display) -> Result<T> {
        self.map_err(|e| Error::io(step, object, &e))
    }
}

/// Text for a stderr line: a line break inside an object or a reason (a path or a name, from
/// hostile input) is shown as `\n` or `\r`, so the contract's error stays one line whatever the input.
pub fn one_line(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains(['\n', '\r']) {
        s.replace('\n', "\\n").replace('\r', "\\r").into()
    } else {
        s.into()
    }
}
