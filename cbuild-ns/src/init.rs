//! `--init`: cbuild-ns stays as PID 1 of the new pid namespace, doing the two duties a shell or a server
//! as PID 1 does not: reaping every orphan that is re-parented to it (or they stay zombies forever), and
//! passing on signals (the kernel drops signals to PID 1 that have no handler, so a plain command as PID 1
//! ignores SIGTERM). Exits with the command's status, 128+N if a signal killed it, and leaves N in a
//! [`SignalNote`] for the supervisor outside.

use std::sync::atomic::{AtomicI32, Ordering};

use crate::error::{Error, Result, Step};
use crate::signals;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

/// The signal that killed the command, from PID 1 to the supervisor. PID 1 cannot die of it itself (the
/// kernel drops a namespace init's own default-action signals), and its exit code 128+N alone cannot be
/// told from a command that exits 128+N: the status record would lose the `signal` a run without
/// `--init` has. An anonymous shared page mapped before the clone is shared by the clone and PID 1's
/// fork alike and gone at the command's exec; unlike a pipe, it leaves PID 1 holding no host fd.
pub struct SignalNote(std::ptr::NonNull<AtomicI32>);

impl SignalNote {
    pub fn new() -> Result<SignalNote> {
        // SAFETY: a fresh anonymous mapping; nothing else is at the address the kernel picks.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                std::mem::size_of::<AtomicI32>(),
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(Error::sys(Step::Fork, "init: mmap", nix::errno::Errno::last()));
        }
        // A new anonymous mapping is zero-filled: no signal yet. Page-aligned, so aligned for an i32.
        Ok(SignalNote(std::ptr::NonNull::new(p.cast()).expect("mmap returned a mapping")))
    }

    fn cell(&self) -> &AtomicI32 {
        // SAFETY: the mapping lives as long as self and holds one zero-initialised AtomicI32.
        unsafe { self.0.as_ref() }
    }

    fn record(&self, sig: i32) {
        self.cell().store(sig, Ordering::SeqCst);
    }

    /// The signal PID 1 recorded, read after it was reaped (its exit orders its write before our wait).
    pub fn signal(&self) -> Option<i32> {
        Some(self.cell().load(Ordering::SeqCst)).filter(|&s| s > 0)
    }
}

impl Drop for SignalNote {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, unmapped once.
        unsafe { libc::munmap(self.0.as_ptr().cast(), std::mem::size_of::<AtomicI32>()) };
    }
}

/// The supervising loop of PID 1. `child` leads its own process group; signals go to the whole group.
pub fn supervise(child: Pid, note: Option<&SignalNote>) -> i32 {
    let set = signals::supervised();
    signals::release_freed_memory();
    loop {
        let (sig, _) = signals::wait(&set);
        if sig != libc::SIGCHLD {
            let _ = nix::sys::signal::killpg(child, nix::sys::signal::Signal::try_from(sig).ok());
            continue;
        }
        // Reap everything that is dead, the command and any orphan alike.
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(st) => {
                    if st.pid() == Some(child) {
                        if let Some((code, signal)) = signals::exit_code(st) {
                            if let (Some(n), Some(s)) = (note, signal) {
                                n.record(s);
                            }
                            return code;
                        }
                    }
                }
            }
        }
    }
}
