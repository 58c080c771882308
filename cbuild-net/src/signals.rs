//! The stop signals held while a verb changes things. INT, TERM, HUP and QUIT stop a process (Ctrl-C,
//! kill, a closed terminal); USR1 and USR2 end one by default too, and a runtime forwards all six to a
//! tool still setting up. Delivered between two steps, any of them would end the process with a bridge
//! half-made (no forwarding, no NAT, under a configuration later connects trust) or a namespace file
//! that is not one. So `main` blocks them for the verbs that change state; a verb that makes something
//! looks for one (`check`) where its undo still covers every step, and fails, undone; `main` then
//! restores the caller's mask and the signal ends the process as usual (128+N in a shell). Threads
//! started later inherit the mask; a spawned `nft` gets an empty one (std resets it in the child).

use std::fmt::Display;

use nix::sys::signal::{sigprocmask, SigSet, SigmaskHow, Signal};

use crate::{Error, Result};

pub const STOP_SIGNALS: [Signal; 6] =
    [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP, Signal::SIGQUIT, Signal::SIGUSR1, Signal::SIGUSR2];

/// The caller's mask, restored on drop: a held signal is delivered then.
pub struct Held {
    old: SigSet,
}

/// Block the stop signals, before any thread or child exists (`None`: the mask could not be changed,
/// and the verb runs as before, unprotected).
pub fn hold() -> Option<Held> {
    let set: SigSet = STOP_SIGNALS.into_iter().collect();
    let mut old = SigSet::empty();
    sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), Some(&mut old)).ok()?;
    Some(Held { old })
}

impl Drop for Held {
    fn drop(&mut self) {
        let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&self.old), None);
    }
}

/// Fails (`STEP: OBJECT: interrupted by SIGx`) when a stop signal is waiting that the caller does not
/// ignore: a blocked signal stays pending even when ignored (a background job of a non-interactive
/// shell ignores INT and QUIT, nohup HUP), and such a one must not cancel anything.
pub fn check(step: &'static str, object: impl Display) -> Result<()> {
    let mut set = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: sigpending fills the set it is given; it is read only after success.
    let pending = unsafe {
        if libc::sigpending(set.as_mut_ptr()) != 0 {
            return Ok(());
        }
        set.assume_init()
    };
    // SAFETY: `pending` is an initialized sigset_t.
    match STOP_SIGNALS
        .into_iter()
        .find(|s| unsafe { libc::sigismember(&pending, *s as libc::c_int) } == 1 && !is_ignored(*s))
    {
        Some(s) => Err(Error::new(step, object, format!("interrupted by {s}"))),
        None => Ok(()),
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
