//! Signals while NAME is made, and `exec --rm`: stay outside NAME as the command's parent, pass signals
//! on, and remove NAME once the command has exited — `docker run --rm` for a cgroup. The parent never
//! joins NAME, so on v1 nothing of it is left inside to make the rmdir fail.

use crate::error::{Error, Result};
use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, SigmaskHow, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

/// What a shell's `kill` or a container manager sends to stop, reload or resize the command. Not the
/// terminal's job-control stop (TSTP, TTIN, TTOU): the terminal sends it to the whole process group, so
/// this process stops with the command, and the shell that started it sees the job stopped.
const FORWARDED: [Signal; 9] = [
    Signal::SIGHUP,
    Signal::SIGINT,
    Signal::SIGQUIT,
    Signal::SIGTERM,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGWINCH,
    Signal::SIGCONT,
    Signal::SIGALRM,
];

/// The forwarded signals that end a process by default: Ctrl-C, `kill`, a closed terminal, and USR1 and
/// USR2, which end it too. A runtime forwards all six to a chain still setting up (cbuild-run does), and
/// one landing mid-create must not leave NAME half-made in some hierarchies with its limits half-written.
pub const STOP: [Signal; 6] =
    [Signal::SIGHUP, Signal::SIGINT, Signal::SIGQUIT, Signal::SIGTERM, Signal::SIGUSR1, Signal::SIGUSR2];

/// Signals held blocked, with the mask (and, for `exec --rm`, the SIGCHLD disposition) the caller gave
/// us, to put back: by the process that execs the command, or after a failure's error line.
#[derive(Debug)]
pub struct Blocked {
    set: SigSet,
    old: SigSet,
    /// SIGCHLD's disposition before [`block`] reset it; [`hold`] leaves it alone.
    old_chld: Option<SigAction>,
    /// The verb a held stop signal cancels, for its error line.
    step: &'static str,
}

/// Block [`STOP`] from before NAME's first mkdir until it is complete (`create`, `exec`), so a stop
/// signal cannot end this process between steps; [`Blocked::check`] at the end turns one that arrived
/// into a failure, undone like any other. One sigprocmask: `exec` is in front of every container start.
pub fn hold(step: &'static str) -> Result<Blocked> {
    let set: SigSet = STOP.into_iter().collect();
    let mut old = SigSet::empty();
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), Some(&mut old))
        .map_err(|e| Error::sys("sigprocmask", "stop signals", e.into()))?;
    Ok(Blocked { set, old, old_chld: None, step })
}

/// Block the forwarded signals and SIGCHLD before NAME is made (as [`hold`], whose stop signals they
/// include) and through the fork, so none arrives between the fork and the parent's first sigwaitinfo
/// (it would be lost, or kill the parent by its default action). SIGCHLD goes back to its default action
/// first: ignored (which an exec keeps), the kernel would reap the child itself and never report it, and
/// the wait would last forever.
pub fn block(step: &'static str) -> Result<Blocked> {
    let dfl = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
    // SAFETY: SIG_DFL installs no handler; single-threaded.
    let old_chld =
        unsafe { sigaction(Signal::SIGCHLD, &dfl) }.map_err(|e| Error::sys("sigaction", "SIGCHLD", e.into()))?;
    let mut set = SigSet::empty();
    for sig in FORWARDED {
        set.add(sig);
    }
    set.add(Signal::SIGCHLD);
    let mut old = SigSet::empty();
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), Some(&mut old))
        .map_err(|e| Error::sys("sigprocmask", "forwarded signals", e.into()))?;
    Ok(Blocked { set, old, old_chld: Some(old_chld), step })
}

/// In the parent, right after the fork: close what the caller handed down for the command — every
/// descriptor from 3 up that is not close-on-exec (this tool opens all of its own close-on-exec). The
/// parent outlives the command, and a copy it kept would too: the reader of a pipe given to the command
/// would see no EOF, and a detached mount given to it (cbuild-overlay's `--fd`) would stay alive, until
/// the parent has removed NAME and exited. Without /proc nothing is closed.
pub fn close_inherited() {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else { return };
    // Collected first: the listing's own descriptor (close-on-exec) is closed before any other is.
    let fds: Vec<i32> = dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).filter(|&fd| fd > 2).collect();
    for fd in fds {
        // SAFETY: F_GETFD only reads the flags (EBADF for the listing's own, closed by now); the fds
        // closed are the caller's, which nothing in this process owns.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
        if flags >= 0 && flags & libc::FD_CLOEXEC == 0 {
            unsafe { libc::close(fd) };
        }
    }
}

impl Blocked {
    /// Before the command's exec: it starts with the caller's mask and SIGCHLD disposition, not ours.
    /// After a failure's error line: a stop signal that arrived meanwhile ends the process now.
    pub fn restore(&self) -> Result<()> {
        // SIGCHLD first: a signal the mask then lets through finds everything else as the caller had it.
        if let Some(chld) = &self.old_chld {
            // SAFETY: puts back the disposition we replaced (a handler does not survive the exec anyway).
            unsafe { sigaction(Signal::SIGCHLD, chld) }.map_err(|e| Error::sys("sigaction", "SIGCHLD", e.into()))?;
        }
        nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&self.old), None)
            .map_err(|e| Error::sys("sigprocmask", "restore", e.into()))
    }

    /// At the end of the steps that make NAME: a stop signal that arrived while they ran is a failure
    /// (`exec: NAME: interrupted by SIGTERM`), so the caller takes back what it made before the signal
    /// lands. One the caller ignores does not count (SIG_IGN: a background job of a non-interactive shell
    /// ignores INT and QUIT, nohup HUP); blocked, it stays pending all the same.
    pub fn check(&self, name: &str) -> Result<()> {
        match self.pending() {
            Some(sig) => Err(Error::bad(self.step, name, format!("interrupted by {sig}"))),
            None => Ok(()),
        }
    }

    /// The first stop signal pending that the caller does not ignore. One sigpending; the dispositions
    /// are asked for only when one is pending (this tool never changes a stop signal's).
    fn pending(&self) -> Option<Signal> {
        let mut set = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
        // SAFETY: sigpending fills the set it is given; it is read only after success.
        let set = unsafe {
            if libc::sigpending(set.as_mut_ptr()) != 0 {
                return None;
            }
            set.assume_init()
        };
        // SAFETY: `set` is an initialized sigset_t.
        STOP.into_iter().find(|s| unsafe { libc::sigismember(&set, *s as libc::c_int) } == 1 && !is_ignored(*s))
    }

    /// In the parent: wait for `child`, passing on each forwarded signal a process sent us (a terminal's
    /// own ^C reaches the child's process group directly; passing it on again would double it). Returns
    /// the exit code as a shell reports it: the code, or 128+N for a signal N.
    pub fn wait(&self, child: Pid) -> Result<i32> {
        // This process waits as long as the container runs: give the heap pages freed during set-up
        // back to the kernel (glibc keeps them in its heap, dirty; the static build's musl has no malloc_trim,
        // and its allocator here, dlmalloc, keeps them for reuse).
        // SAFETY: malloc_trim only hands free pages back (madvise); no live allocation is touched.
        #[cfg(target_env = "gnu")]
        unsafe {
            libc::malloc_trim(0)
        };
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
            } else if matches!(info.si_code, libc::SI_USER | libc::SI_QUEUE | libc::SI_TKILL) {
                let _ = nix::sys::signal::kill(child, Signal::try_from(sig).ok());
            }
        }
    }
}

/// Whether `sig`'s disposition is SIG_IGN.
fn is_ignored(sig: Signal) -> bool {
    let mut old = std::mem::MaybeUninit::<libc::sigaction>::zeroed();
    // SAFETY: a null new action only queries; `old` is written on success and read only then.
    unsafe {
        libc::sigaction(sig as libc::c_int, std::ptr::null(), old.as_mut_ptr()) == 0
            && old.assume_init().sa_sigaction == libc::SIG_IGN
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_stop_signals_are_forwarded_too() {
        // `exec --rm` checks the stop signals in the set `block` holds.
        assert!(super::STOP.iter().all(|s| super::FORWARDED.contains(s)));
    }
}
