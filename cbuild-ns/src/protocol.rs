//! The fd protocols other programs drive cbuild-ns with (documented in docs/ARCHITECTURE.md):
//! `--info-fd` (one JSON object once the namespaces exist), `--wait-fd` (one byte = go, EOF = abort),
//! `--status-fd` (JSON lines of phases and the final exit code), and `run --args FD` (more of the command
//! line, NUL-separated, read from FD: bwrap's `--args`).

use crate::error::{Error, Result, Step};
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{FromRawFd, RawFd};

/// Fail early, with the fd named, when an fd the caller promised is not open.
pub fn check_fd(fd: RawFd, step: Step) -> Result<()> {
    if fd < 0 || unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return Err(Error::new(step, format!("fd {fd}"), "not an open file descriptor"));
    }
    Ok(())
}

/// The fds of the fd flags (`own`: the fd and its flag) are all different: each is taken over, and
/// closed, by the code that serves its flag, so one given to two flags would be closed twice. Checked
/// before any of them is taken over.
pub fn check_distinct(own: &[(Option<RawFd>, &str)]) -> Result<()> {
    for (i, (fd, flag)) in own.iter().enumerate() {
        let Some(fd) = fd else { continue };
        if let Some((_, other)) = own[..i].iter().find(|(f, _)| *f == Some(*fd)) {
            return Err(Error::new(Step::Fds, format!("fd {fd}"), format!("given to both {other} and {flag}")));
        }
    }
    Ok(())
}

/// `--preserve-fds N`: fds 3..3+N-1 are the caller's, for the command. Each must be open before this
/// process opens anything of its own (one of ours would take a free number, and the command would get
/// it: a namespace fd, a pipe), and none may be an fd cbuild-ns itself reads or writes (`own`: the fd
/// and its flag).
pub fn check_preserved(n: u32, own: &[(Option<RawFd>, &str)]) -> Result<()> {
    for fd in 3..3i64 + i64::from(n) {
        let fd = RawFd::try_from(fd).map_err(|_| Error::new(Step::Fds, format!("--preserve-fds {n}"), "too many"))?;
        if let Some((_, flag)) = own.iter().find(|(f, _)| *f == Some(fd)) {
            return Err(Error::new(
                Step::Fds,
                format!("fd {fd}"),
                format!("is {flag}, and --preserve-fds {n} passes it on"),
            ));
        }
        check_fd(fd, Step::Fds)
            .map_err(|e| e.hint(format!("--preserve-fds {n} passes fds 3 to {}, which must be open", 2 + n)))?;
    }
    Ok(())
}

/// An fd handed over for set-up only (`--cgroup-fd`, `--rootfs-fd`): open, not one of the fds
/// `--preserve-fds` passes on, and made close-on-exec, so the command never holds it.
pub fn take_handed_fd(fd: RawFd, preserve_fds: u32, step: Step) -> Result<()> {
    if fd >= 3 && (fd as u32) < 3 + preserve_fds {
        return Err(Error::new(step, format!("fd {fd}"), "is one of the fds --preserve-fds passes on"));
    }
    check_fd(fd, step)?;
    unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    Ok(())
}

/// How much `--args FD` reads at most: four times the most execve(2) takes on a default 8 MiB stack.
pub const ARGS_MAX: usize = 8 << 20;

/// What `--args FD` gave.
#[derive(Debug, PartialEq)]
pub enum Args {
    /// The arguments (a lone NUL is one empty argument).
    Words(Vec<std::ffi::OsString>),
    /// FD ended before its first byte: the writer gave up (and reports why itself).
    Empty,
}

/// `run --args FD`: read FD to its end (blocking until the writer closes it) and split it on NUL
/// bytes, as bwrap's `--args` does; a last argument without its NUL counts too. Lets a driver start
/// the chain before it has worked out cbuild-ns's arguments: this process waits here, before it has
/// done anything, while the tools ahead of it in the chain do their work. FD is closed.
pub fn read_args(fd: RawFd) -> Result<Args> {
    use std::os::unix::ffi::OsStringExt;
    let what = || format!("fd {fd}");
    // Where this process's own error line goes is no input.
    if fd == 1 || fd == 2 {
        return Err(Error::new(Step::Args, what(), "is stdout or stderr: give the arguments on another fd"));
    }
    check_fd(fd, Step::Args)?;
    // SAFETY: an open fd (checked above), handed to us by the caller to read once; closed below.
    let f = std::mem::ManuallyDrop::new(unsafe { File::from_raw_fd(fd) });
    // A page: what cbuild-run writes fits, so one read takes it all.
    let mut data = Vec::with_capacity(4096);
    // `take`: a writer that never stops cannot make this process grow without bound.
    let read = (&*f).take(ARGS_MAX as u64 + 1).read_to_end(&mut data);
    if fd == 0 {
        // Stdin, read to its end, is not the command's: /dev/null takes its place, and fd 0 stays open (a
        // later open would take the number, and the command would read that).
        // SAFETY: open(2) of a constant path, dup2 onto fd 0 (which closes the stdin read), close of the copy.
        unsafe {
            let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
            if null >= 0 {
                libc::dup2(null, 0);
                libc::close(null);
            }
        }
    } else {
        drop(std::mem::ManuallyDrop::into_inner(f));
    }
    read.map_err(|e| Error::io(Step::Args, what(), &e))?;
    if data.len() > ARGS_MAX {
        return Err(Error::new(Step::Args, what(), format!("more than {} MiB of arguments", ARGS_MAX >> 20)));
    }
    if data.is_empty() {
        return Ok(Args::Empty);
    }
    if data.last() == Some(&0) {
        data.pop();
    }
    Ok(Args::Words(data.split(|&b| b == 0).map(|w| std::ffi::OsString::from_vec(w.to_vec())).collect()))
}

/// Write `value` as one line to `fd` and close it. A reader that went away (EPIPE; the supervisor ignores
/// SIGPIPE) is an error: the driver never learns the namespaces it was to wait for, so the run is undone.
pub fn write_info(fd: RawFd, value: &serde_json::Value) -> Result<()> {
    let mut f = unsafe { File::from_raw_fd(fd) };
    let line = format!("{value}\n");
    f.write_all(line.as_bytes()).map_err(|e| {
        let err = Error::io(Step::InfoFd, format!("fd {fd}"), &e);
        match e.raw_os_error() {
            Some(libc::EPIPE) => err.hint("the reader of --info-fd closed it before the namespaces were ready"),
            _ => err,
        }
    })
}

/// Block until one byte arrives. EOF means the driver gave up: abort.
pub fn wait_go(fd: RawFd) -> Result<()> {
    crate::log::step(Step::WaitFd, format!("fd {fd}"));
    let mut f = unsafe { File::from_raw_fd(fd) };
    let mut b = [0u8; 1];
    loop {
        match f.read(&mut b) {
            Ok(1) => return Ok(()),
            Ok(_) => return Err(Error::new(Step::WaitFd, format!("fd {fd}"), "closed before go")),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::io(Step::WaitFd, format!("fd {fd}"), &e)),
        }
    }
}

/// The `--status-fd` writer. Writes are best-effort: a reader that went away must not change the
/// command's outcome (the supervisor ignores SIGPIPE: it is an EPIPE here, and nothing more).
pub struct Status(Option<File>);

impl Status {
    /// An fd that is not open is not adopted: `prepare` refuses it with the one error line, and closing
    /// it as ours would have std abort the process (its IO-safety check) with a second line and exit 134.
    pub fn new(fd: Option<RawFd>) -> Status {
        Status(fd.filter(|&fd| check_fd(fd, Step::StatusFd).is_ok()).map(|fd| unsafe { File::from_raw_fd(fd) }))
    }

    pub fn send(&mut self, value: serde_json::Value) {
        if let Some(f) = &mut self.0 {
            let _ = f.write_all(format!("{value}\n").as_bytes());
        }
    }
}
