//! Signals a supervising cbuild-ns passes on to the command: what a terminal, a shell's `kill` or a
//! container manager sends to stop, reload or resize a container.

use nix::sys::signal::{SigSet, Signal};

pub const FORWARDED: [Signal; 10] = [
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

/// The forwarded signals plus SIGCHLD: blocked, then taken synchronously with sigwaitinfo.
pub fn supervised() -> SigSet {
    let mut s = SigSet::empty();
    for sig in FORWARDED {
        s.add(sig);
    }
    s.add(Signal::SIGCHLD);
    s
}

/// sigwaitinfo: the signal and whether it came from a process (kill, sigqueue, tgkill) rather than the kernel
/// (a terminal's ^C reaches the command's process group directly; passing it on again would double it).
pub fn wait(set: &SigSet) -> (i32, bool) {
    loop {
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let sig = unsafe { libc::sigwaitinfo(set.as_ref(), &mut info) };
        if sig > 0 {
            return (sig, matches!(info.si_code, libc::SI_USER | libc::SI_QUEUE | libc::SI_TKILL));
        }
    }
}

/// Exit code of a wait status, as the shell reports it: the code, or 128+N for a signal.
pub fn exit_code(status: nix::sys::wait::WaitStatus) -> Option<(i32, Option<i32>)> {
    use nix::sys::wait::WaitStatus;
    match status {
        WaitStatus::Exited(_, code) => Some((code, None)),
        WaitStatus::Signaled(_, sig, _) => Some((128 + sig as i32, Some(sig as i32))),
        _ => None,
    }
}

/// Supervise `child` from outside its namespaces until it exits: pass on the forwarded signals that a
/// process sent us (a terminal's own reach the child's process group directly). Returns the exit code
/// (128+N for a signal) and the signal. The supervised set must already be blocked.
pub fn supervise(child: nix::unistd::Pid, set: &SigSet) -> nix::Result<(i32, Option<i32>)> {
    use nix::sys::wait::{waitpid, WaitPidFlag};
    release_freed_memory();
    loop {
        let (sig, from_process) = wait(set);
        if sig == libc::SIGCHLD {
            if let Some(done) = exit_code(waitpid(child, Some(WaitPidFlag::WNOHANG))?) {
                return Ok(done);
            }
        } else if from_process {
            let _ = nix::sys::signal::kill(child, Signal::try_from(sig).ok());
        }
    }
}

/// SIGPIPE ignored: a write to a pipe whose reader is gone fails with EPIPE instead of ending the process.
pub fn ignore_sigpipe() {
    // SAFETY: SIG_IGN installs no handler; only this process's disposition changes.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
}

extern "C" fn noop(_: libc::c_int) {}

/// PID 1 of a pid namespace only receives signals it has a handler for (the kernel drops the rest at
/// send time, even when blocked), so install a do-nothing handler for each forwarded signal.
pub fn install_noop_handlers() {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler};
    let act = SigAction::new(SigHandler::Handler(noop), SaFlags::SA_RESTART, SigSet::empty());
    for sig in FORWARDED.iter().chain([Signal::SIGCHLD].iter()) {
        let _ = unsafe { sigaction(*sig, &act) };
    }
}

/// Before waiting out a container's life: give the heap pages freed during set-up (arguments, the spec,
/// mount plans) back to the kernel. This process stays resident, in the container's cgroup, for as long
/// as the container runs, and glibc keeps freed memory in its heap, dirty: ~44 KiB per container. The
/// static build's musl has no malloc_trim, and its allocator here, dlmalloc, keeps freed memory for reuse
/// (docs/ns.md, "Static build").
pub fn release_freed_memory() {
    // SAFETY: malloc_trim only hands free pages back (madvise); no live allocation is touched.
    #[cfg(target_env = "gnu")]
    unsafe {
        libc::malloc_trim(0)
    };
}

/// For the static build's musl: its `abort()` signals the thread id it cached at the last `fork()`, and the
/// container's first process comes from a raw clone(2)/clone3, after which that id is still the parent's.
/// A panic there (panic = "abort") would send SIGABRT to cbuild-ns's parent, or to another of the
/// container's processes. After the usual message, this hook ends the panicking process itself, as glibc's
/// `abort()` does.
#[cfg(target_env = "musl")]
pub fn abort_self_on_panic() {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        report(info);
        // SAFETY: the disposition, the mask and the signal concern this process only; _exit does not return.
        unsafe {
            libc::signal(libc::SIGABRT, libc::SIG_DFL);
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGABRT);
            libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
            libc::syscall(libc::SYS_tgkill, libc::getpid(), libc::syscall(libc::SYS_gettid), libc::SIGABRT);
            libc::_exit(134);
        }
    }));
}
