//! Stop signals held off while a temporary file exists: `compile -o FILE`'s and the cache's, between
//! their O_EXCL creation and the rename. Without this, a Ctrl-C, a `kill`, or a signal a runtime script
//! forwards lands in between and leaves `.NAME.<pid>.<nanos>.tmp` behind, which nothing removes (in a
//! container's state dir it keeps the dir, and so the NAME, from going).
//!
//! The pattern is cbuild-overlay's (`mount`'s `SignalsHeld`; tool crates share no code): block the six
//! signals, write, look at what is pending (`sigpending`, one syscall) before the rename. One the caller
//! does not ignore turns into a failure: the temporary is removed, main prints the one error line
//! (`write: FILE: interrupted by SIGTERM`), then [`release`] gives the caller's mask back and the signal
//! ends the process as it would have (128+N in a shell). The generator's threads are done before any
//! hold, and `exec` loads the filter and execs only after every hold has ended: the command never
//! inherits a blocked mask.

use crate::{Error, Result};
use nix::sys::signal::{sigprocmask, SigSet, SigmaskHow, Signal};
use std::sync::Mutex;

/// The signals that end a process by default and are sent to stop one (Ctrl-C, kill, a closed terminal),
/// and USR1/USR2, which end it too: a runtime forwards all six to a tool still working.
pub const STOP_SIGNALS: [Signal; 6] =
    [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP, Signal::SIGQUIT, Signal::SIGUSR1, Signal::SIGUSR2];

/// The caller's mask, kept back while an interruption is reported: [`release`] restores it once the
/// error line is out.
static DEFERRED: Mutex<Option<SigSet>> = Mutex::new(None);

/// [`STOP_SIGNALS`] blocked until dropped, when the mask from before is restored (a signal that came
/// after the last [`Held::check`] is then delivered: the step is complete, and the signal takes effect).
pub struct Held {
    /// None when blocking failed: nothing is held, and nothing can be pending for us to see.
    old: Option<SigSet>,
}

impl Held {
    /// Block the stop signals; declare the result before what the step's undo owns, so the undo runs
    /// while they are still held.
    pub fn hold() -> Held {
        let set: SigSet = STOP_SIGNALS.into_iter().collect();
        let mut old = SigSet::empty();
        // Blocked, a stop signal waits as pending instead of ending us between two steps.
        let ok = sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), Some(&mut old)).is_ok();
        Held { old: ok.then_some(old) }
    }

    /// Fail with `step: object: interrupted by SIGx` if a stop signal the caller does not ignore is
    /// pending. The signals stay held after that until [`release`], so the caller's undo and error line
    /// come first.
    pub fn check(&self, step: &'static str, object: impl Into<String>) -> Result<()> {
        let Some(sig) = self.pending() else { return Ok(()) };
        // Kept for release(): the process must not end before the undo has run and the line is printed.
        *DEFERRED.lock().unwrap_or_else(|e| e.into_inner()) = self.old;
        Err(Error::new(step, object, format!("interrupted by {sig}")))
    }

    /// The first stop signal waiting to be delivered that the caller does not ignore, if any.
    fn pending(&self) -> Option<Signal> {
        self.old?;
        let mut set = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
        // SAFETY: sigpending fills the set it is given; it is read only after success.
        let set = unsafe {
            if libc::sigpending(set.as_mut_ptr()) != 0 {
                return None;
            }
            set.assume_init()
        };
        // SAFETY: `set` is an initialized sigset_t.
        STOP_SIGNALS.into_iter().find(|s| unsafe { libc::sigismember(&set, *s as libc::c_int) } == 1 && !is_ignored(*s))
    }
}

/// Whether `sig`'s disposition is SIG_IGN: the caller's choice (a background job of a non-interactive
/// shell ignores SIGINT and SIGQUIT, nohup SIGHUP). Blocked, such a signal still shows as pending, but it
/// must not cancel anything; this tool never changes these dispositions, so now is as at the start.
fn is_ignored(sig: Signal) -> bool {
    let mut old = std::mem::MaybeUninit::<libc::sigaction>::zeroed();
    // SAFETY: a null new action only queries; `old` is written on success and read only then.
    unsafe {
        libc::sigaction(sig as libc::c_int, std::ptr::null(), old.as_mut_ptr()) == 0
            && old.assume_init().sa_sigaction == libc::SIG_IGN
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let Some(old) = self.old else { return };
        let mut deferred = DEFERRED.lock().unwrap_or_else(|e| e.into_inner());
        if deferred.is_some() {
            // An interruption is being reported: stay held; an outer hold's mask is the caller's.
            *deferred = Some(old);
            return;
        }
        drop(deferred);
        // The caller's mask back: a stop signal that came after the last check lands now.
        let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&old), None);
    }
}

/// After an error line: give the caller's mask back, so a stop signal that interrupted a step ends the
/// process by itself, as usual. Returns only if there was none, or the caller blocks or ignores it.
pub fn release() {
    let old = DEFERRED.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some(old) = old {
        let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&old), None);
    }
}
