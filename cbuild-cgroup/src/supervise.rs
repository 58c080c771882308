//! `exec --rm`: stay outside NAME as the command's parent, pass signals on, and remove NAME once the
//! command has exited — `docker run --rm` for a cgroup. The parent never joins NAME, so on v1 nothing of
//! it is left inside to make the rmdir fail.

use crate::error::{Error, Result};
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

/// What a terminal, a shell's `kill` or a container manager sends to stop, reload or resize the command.
const FORWARDED: [Signal; 10] = [
    Signal::SIGHUP,
    Signal::SIGINT,
    Signal::SIGQUIT,
    Signal::SIGTERM,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGWINCH,
    Signal::SIGCONT,
    Signal::SIGALRM,
    Signal::SIGTSTP,
];

/// The signal mask the parent had; the child puts it back before its exec.
pub struct Blocked {
    set: SigSet,
    old: SigSet,
}

/// Block the forwarded signals and SIGCHLD before the fork, so none arrives between the fork and the
/// parent's first sigwaitinfo (it would be lost, or kill the parent by its default action).
pub fn block() -> Result<Blocked> {
    let mut set = SigSet::empty();
    for sig in FORWARDED {
        set.add(sig);
    }
    set.add(Signal::SIGCHLD);
    let mut old = SigSet::empty();
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), Some(&mut old))
        .map_err(|e| Error::sys("sigprocmask", "forwarded signals", e.into()))?;
    Ok(Blocked { set, old })
}

impl Blocked {
    /// In the child: the command starts with the caller's mask, not ours.
    pub fn restore(&self) -> Result<()> {
        nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&self.old), None)
            .map_err(|e| Error::sys("sigprocmask", "restore", e.into()))
    }

    /// In the parent: wait for `child`, passing on each forwarded signal a process sent us (a terminal's
    /// own ^C reaches the child's process group directly; passing it on again would double it). Returns
    /// the exit code as a shell reports it: the code, or 128+N for a signal N.
    pub fn wait(&self, child: Pid) -> Result<i32> {
        loop {
            let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
            // SAFETY: the set is a valid sigset_t and info a writable siginfo_t.
            let sig = unsafe { libc::sigwaitinfo(self.set.as_ref(), &mut info) };
            if sig < 0 {
                continue; // EINTR: a signal outside the set (with a handler) interrupted the wait.
            }
            if sig == libc::SIGCHLD {
                match waitpid(child, Some(WaitPidFlag::WNOHANG)) {
                    Ok(WaitStatus::Exited(_, code)) => return Ok(code),
                    Ok(WaitStatus::Signaled(_, s, _)) => return Ok(128 + s as i32),
                    Ok(_) => {}
                    Err(e) => return Err(Error::sys("wait", child, e.into())),
                }
            } else if info.si_code == libc::SI_USER || info.si_code == libc::SI_QUEUE {
                let _ = nix::sys::signal::kill(child, Signal::try_from(sig).ok());
            }
        }
    }
}
