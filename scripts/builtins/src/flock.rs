//! `flock [-n | -w SECONDS] [-s | -x | -u] FD`: util-linux flock(1) on an open descriptor, without the
//! fork.
//!
//! Exit status: 0 locked (or unlocked); 1 not locked: held elsewhere with -n, timed out with -w; 128+N
//! a signal N the script traps came while waiting (its trap runs next, as after `wait`); 2 a usage
//! error or a bad FD (flock(1): 64 and 65). A signal the script does not trap (bash's own SIGCHLD when a
//! background job ends) does not end the wait, as it would not end flock(1)'s.

use crate::{complain, errno, number, signal_for_script, strerror, words, Builtin, Doc, WordList, USAGE};
use core::ffi::c_int;
use core::ptr;

static DOC: Doc = Doc::new(
    c"Lock or unlock an open file descriptor with flock(2), as util-linux flock(1) FD does, in the shell.

    -n          fail at once (status 1) if another open file holds the lock
    -w SECONDS  give up after that long (status 1)
    -s          a shared lock; -x an exclusive one (the default); -u unlock

    A signal the script traps ends the wait with status 128+N, and its trap runs; other signals do not.
    A bad FD or usage: status 2.",
);

pub(crate) const BUILTIN: Builtin =
    Builtin::new(c"flock", flock_builtin, &DOC, c"flock [-n | -w SECONDS] [-s | -x | -u] FD");

#[derive(Debug, PartialEq)]
struct Args {
    op: c_int,
    wait: Wait,
    fd: c_int,
}

#[derive(Debug, PartialEq)]
enum Wait {
    Forever,
    No,
    /// Milliseconds.
    For(u64),
}

/// `flock ARGS`: what went wrong names the word, for the one error line.
fn parse<'a>(mut next: impl FnMut() -> Option<&'a [u8]>) -> Result<Args, (&'static str, &'a [u8])> {
    let (mut op, mut wait, mut fd) = (libc::LOCK_EX, Wait::Forever, None);
    while let Some(a) = next() {
        match a {
            b"-n" | b"--nonblock" => wait = Wait::No,
            b"-s" | b"--shared" => op = libc::LOCK_SH,
            b"-x" | b"-e" | b"--exclusive" => op = libc::LOCK_EX,
            b"-u" | b"--unlock" => op = libc::LOCK_UN,
            b"-w" | b"--timeout" => {
                let v = next().ok_or(("-w needs SECONDS", a))?;
                let ms = millis(v).ok_or(("not a number of seconds", v))?;
                wait = if ms == 0 { Wait::No } else { Wait::For(ms) };
            }
            _ if fd.is_none() && a.first() != Some(&b'-') => {
                fd = Some(number(a).ok_or(("not a file descriptor (the builtin takes flock(1)'s FD form only)", a))?)
            }
            _ => return Err(("unexpected (the builtin takes flock(1)'s FD form only)", a)),
        }
    }
    Ok(Args { op, wait, fd: fd.ok_or(("missing FD", &b""[..]))? })
}

/// "SECONDS[.FRACTION]" in milliseconds (flock(1) takes fractions: cbuild-rm waits 0.05 s).
fn millis(s: &[u8]) -> Option<u64> {
    let (int, frac) = match s.iter().position(|&c| c == b'.') {
        Some(i) => (&s[..i], &s[i + 1..]),
        None => (s, &b""[..]),
    };
    if int.is_empty() && frac.is_empty() || int.len() > 9 || !int.iter().chain(frac).all(u8::is_ascii_digit) {
        return None;
    }
    let secs = int.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
    let mut ms = 0;
    for (i, d) in frac.iter().take(3).enumerate() {
        ms += u64::from(d - b'0') * [100, 10, 1][i];
    }
    // A fraction below a millisecond still waits one.
    if ms == 0 && frac.iter().any(|&d| d != b'0') {
        ms = 1;
    }
    Some(secs * 1000 + ms)
}

unsafe extern "C" fn flock_builtin(list: *const WordList) -> c_int {
    // SAFETY: bash's own argument list.
    let mut next = unsafe { words(list) };
    match parse(|| next().map(|w| w.to_bytes())) {
        Ok(a) => run(&a),
        Err((what, word)) => {
            complain(b"flock", word, what.as_bytes());
            USAGE
        }
    }
}

/// One flock(2): Ok(false) if held elsewhere (with LOCK_NB), Err(status) to give up with.
fn try_lock(a: &Args, nonblock: bool) -> Result<bool, c_int> {
    let op = a.op | if nonblock { libc::LOCK_NB } else { 0 };
    loop {
        // SAFETY: flock(2) on a number; a bad one is EBADF.
        if unsafe { libc::flock(a.fd, op) } == 0 {
            return Ok(true);
        }
        match errno() {
            libc::EWOULDBLOCK => return Ok(false),
            libc::EINTR => match signal_for_script() {
                Some(code) => return Err(code),
                None => continue,
            },
            e => {
                let mut buf = [0u8; 12];
                complain(b"flock", crate::decimal(a.fd, &mut buf), strerror(e));
                return Err(if e == libc::EBADF { USAGE } else { 1 });
            }
        }
    }
}

/// CLOCK_MONOTONIC in milliseconds: a wait interrupted by signals still ends on time.
fn now_ms() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: writes the local timespec; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
}

fn run(a: &Args) -> c_int {
    match a.wait {
        Wait::Forever => try_lock(a, false).map_or_else(|c| c, |_| 0),
        Wait::No => try_lock(a, true).map_or_else(|c| c, |got| if got { 0 } else { 1 }),
        // flock(1) arms a timer and blocks; a builtin must not take bash's SIGALRM, so it polls, from
        // 1 ms up to 10 ms apart (a lock let go is seen within 10 ms).
        Wait::For(limit) => {
            let deadline = now_ms() + limit;
            let mut pause = 1u64;
            loop {
                match try_lock(a, true) {
                    Ok(true) => return 0,
                    Ok(false) => {}
                    Err(c) => return c,
                }
                // A trapped signal that came between two sleeps (during the flock call, say) interrupted
                // none of them: seen here, or the wait would run on to its deadline.
                if let Some(code) = signal_for_script() {
                    return code;
                }
                let now = now_ms();
                if now >= deadline {
                    return 1;
                }
                let nap = pause.min(deadline - now);
                let ts = libc::timespec { tv_sec: (nap / 1000) as _, tv_nsec: ((nap % 1000) * 1_000_000) as _ };
                // SAFETY: a plain sleep. Cut short by a signal: the script's if it traps it, else poll on.
                if unsafe { libc::nanosleep(&ts, ptr::null_mut()) } != 0 {
                    if let Some(code) = signal_for_script() {
                        return code;
                    }
                }
                pause = (pause * 2).min(10);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(a: &[&str]) -> Result<Args, String> {
        let mut it = a.iter().map(|s| s.as_bytes());
        parse(|| it.next()).map_err(|(w, s)| format!("{w}: {}", String::from_utf8_lossy(s)))
    }

    #[test]
    fn parses_the_forms_the_scripts_use() {
        assert_eq!(p(&["9"]).unwrap(), Args { op: libc::LOCK_EX, wait: Wait::Forever, fd: 9 });
        assert_eq!(p(&["-n", "8"]).unwrap(), Args { op: libc::LOCK_EX, wait: Wait::No, fd: 8 });
        assert_eq!(p(&["-w", "0.05", "8"]).unwrap(), Args { op: libc::LOCK_EX, wait: Wait::For(50), fd: 8 });
        assert_eq!(p(&["-w", "60", "8"]).unwrap().wait, Wait::For(60_000));
        assert_eq!(p(&["-w", ".0001", "8"]).unwrap().wait, Wait::For(1));
        assert_eq!(p(&["-u", "8"]).unwrap().op, libc::LOCK_UN);
        assert_eq!(p(&["-s", "-w", "0", "3"]).unwrap(), Args { op: libc::LOCK_SH, wait: Wait::No, fd: 3 });
    }

    #[test]
    fn refuses_what_it_does_not_do() {
        assert_eq!(p(&[]).unwrap_err(), "missing FD: ");
        assert!(p(&["-w"]).is_err());
        assert_eq!(p(&["-w", "soon", "8"]).unwrap_err(), "not a number of seconds: soon");
        assert!(p(&["-w", "-1", "8"]).is_err());
        assert!(p(&["-w", ".", "8"]).is_err());
        assert!(p(&["/run/lock", "true"]).is_err());
        assert!(p(&["8", "9"]).is_err());
        assert!(p(&["-c", "8"]).is_err());
        assert!(p(&["99999999999"]).is_err());
    }
}
