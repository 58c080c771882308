//! `--init`: cbuild-ns stays as PID 1 of the new pid namespace, doing the two duties a shell or a server
//! as PID 1 does not: reaping every orphan that is re-parented to it (or they stay zombies forever), and
//! passing on signals (the kernel drops signals to PID 1 that have no handler, so a plain command as PID 1
//! ignores SIGTERM). Exits with the command's status, 128+N if a signal killed it.

use crate::signals;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

/// The supervising loop of PID 1. `child` leads its own process group; signals go to the whole group.
pub fn supervise(child: Pid) -> i32 {
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
                        if let Some((code, _)) = signals::exit_code(st) {
                            return code;
                        }
                    }
                }
            }
        }
    }
}
