//! Loadable bash builtins for cbuild's scripts: `enable -f .../libcbuild_builtins.so flock`.
//!
//! `flock [-n | -w SECONDS] [-s | -x | -u] FD` is util-linux's flock(1) on an open descriptor, without
//! the fork. A fork costs a running bash ~1 ms on this kind of machine (every page it writes afterwards
//! faults once, copy-on-write), and cbuild-run takes its lock on every start.
//!
//! Exit status: 0 locked (or unlocked); 1 not locked: held elsewhere with -n, timed out with -w, or any
//! signal bash handles came (flock(1) would go on waiting unless it is a trap's); 2 a usage error or a bad
//! FD (flock(1): 64 and 65). The scripts only tell zero from non-zero.
//!
//! No `std`: bash loads this on every start, and a std library costs ~0.3 ms to load (relocations,
//! symbol lookups) against ~0.05 ms for this one. It allocates nothing and calls only libc.
#![cfg_attr(not(test), no_std)]

use core::ffi::{c_char, c_int, CStr};
use core::ptr;

/// bash's `WORD_DESC` and `WORD_LIST` (bash 5.x `command.h`): the arguments, a linked list of words.
#[repr(C)]
pub struct WordDesc {
    word: *const c_char,
    flags: c_int,
}

#[repr(C)]
pub struct WordList {
    next: *const WordList,
    word: *const WordDesc,
}

/// bash's `struct builtin` (`builtins.h`): what `enable -f FILE NAME` looks up as `NAME_struct`.
#[repr(C)]
pub struct Builtin {
    name: *const c_char,
    function: unsafe extern "C" fn(*const WordList) -> c_int,
    flags: c_int,
    long_doc: *const *const c_char,
    short_doc: *const c_char,
    handle: *const c_char,
}

/// The doc table holds pointers, which are not Sync by themselves; nothing writes to it.
#[repr(transparent)]
pub struct Doc([*const c_char; 2]);
unsafe impl Sync for Doc {}

const BUILTIN_ENABLED: c_int = 0x01;

static FLOCK_DOC: Doc = Doc([
    c"Lock or unlock an open file descriptor with flock(2), as util-linux flock(1) FD does, in the shell.

    -n          fail at once (status 1) if another open file holds the lock
    -w SECONDS  give up after that long (status 1)
    -s          a shared lock; -x an exclusive one (the default); -u unlock

    A signal ends the wait with status 1, so that the script's trap runs. A bad FD or usage: status 2."
        .as_ptr(),
    ptr::null(),
]);

// `mut`: bash writes into it when it loads it (its handle, its flags), so it must not be read-only.
#[no_mangle]
pub static mut flock_struct: Builtin = Builtin {
    name: c"flock".as_ptr(),
    function: flock_builtin,
    flags: BUILTIN_ENABLED,
    long_doc: &FLOCK_DOC.0 as *const _ as *const *const c_char,
    short_doc: c"flock [-n | -w SECONDS] [-s | -x | -u] FD".as_ptr(),
    handle: ptr::null(),
};

const USAGE: c_int = 2;

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

/// A small non-negative decimal.
fn number(s: &[u8]) -> Option<c_int> {
    if s.is_empty() || s.len() > 9 || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(s.iter().fold(0, |n, d| n * 10 + c_int::from(d - b'0')))
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

/// `flock: WHAT: WORD` (or `flock: FD: strerror`) on stderr, in one write.
fn complain(what: &[u8], word: &[u8]) {
    let mut buf = [0u8; 256];
    let mut n = 0;
    for part in [&b"flock: "[..], word, if word.is_empty() { b"" } else { b": " }, what, b"\n"] {
        let take = part.len().min(buf.len() - n);
        buf[n..n + take].copy_from_slice(&part[..take]);
        n += take;
    }
    // SAFETY: writes n initialised bytes; an error line that cannot be written is dropped.
    unsafe { libc::write(2, buf.as_ptr().cast(), n) };
}

fn errno() -> c_int {
    // SAFETY: glibc's thread-local errno.
    unsafe { *libc::__errno_location() }
}

unsafe extern "C" fn flock_builtin(list: *const WordList) -> c_int {
    let mut l = list;
    let next = || {
        // SAFETY: bash's list of expanded words, each a NUL-terminated string, alive during the call.
        unsafe {
            while !l.is_null() {
                let w = (*l).word;
                l = (*l).next;
                if !w.is_null() && !(*w).word.is_null() {
                    return Some(CStr::from_ptr((*w).word).to_bytes());
                }
            }
        }
        None
    };
    match parse(next) {
        Ok(a) => run(&a),
        Err((what, word)) => {
            complain(what.as_bytes(), word);
            USAGE
        }
    }
}

/// One flock(2): Ok(false) if held elsewhere (with LOCK_NB), Err(status) to give up with.
fn try_lock(a: &Args, nonblock: bool) -> Result<bool, c_int> {
    let op = a.op | if nonblock { libc::LOCK_NB } else { 0 };
    // SAFETY: flock(2) on a number; a bad one is EBADF.
    if unsafe { libc::flock(a.fd, op) } == 0 {
        return Ok(true);
    }
    match errno() {
        libc::EWOULDBLOCK => Ok(false),
        // A signal: give control back, so that bash runs the script's trap.
        libc::EINTR => Err(1),
        e => {
            let mut fd = [0u8; 10];
            let mut i = fd.len();
            let mut v = a.fd.max(0);
            loop {
                i -= 1;
                fd[i] = b'0' + (v % 10) as u8;
                v /= 10;
                if v == 0 {
                    break;
                }
            }
            // SAFETY: strerror's static string for a known errno.
            let msg = unsafe { CStr::from_ptr(libc::strerror(e)) };
            complain(msg.to_bytes(), &fd[i..]);
            Err(if e == libc::EBADF { USAGE } else { 1 })
        }
    }
}

fn run(a: &Args) -> c_int {
    match a.wait {
        Wait::Forever => try_lock(a, false).map_or_else(|c| c, |_| 0),
        Wait::No => try_lock(a, true).map_or_else(|c| c, |got| if got { 0 } else { 1 }),
        // flock(1) arms a timer and blocks; a builtin must not take bash's SIGALRM, so it polls, from
        // 1 ms up to 10 ms apart (a lock let go is seen within 10 ms).
        Wait::For(limit) => {
            let (mut waited, mut pause) = (0u64, 1u64);
            loop {
                match try_lock(a, true) {
                    Ok(true) => return 0,
                    Ok(false) if waited >= limit => return 1,
                    Ok(false) => {}
                    Err(c) => return c,
                }
                let nap = pause.min(limit - waited);
                let ts = libc::timespec { tv_sec: (nap / 1000) as _, tv_nsec: ((nap % 1000) * 1_000_000) as _ };
                // SAFETY: a plain sleep; EINTR means a signal for the script.
                if unsafe { libc::nanosleep(&ts, ptr::null_mut()) } != 0 {
                    return 1;
                }
                waited += nap;
                pause = (pause * 2).min(10);
            }
        }
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    // Nothing here can panic (no indexing out of bounds, no overflow on these inputs); if it did,
    // unwinding into bash is not an option.
    // SAFETY: abort(3) never returns.
    unsafe { libc::abort() }
}

/// The precompiled `core` is built to unwind and names this symbol in unoptimised builds; with panics
/// aborting it is never called, but the shared object must not leave it undefined for bash's dlopen.
#[cfg(not(test))]
#[no_mangle]
pub extern "C" fn rust_eh_personality() -> ! {
    // SAFETY: abort(3) never returns.
    unsafe { libc::abort() }
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
