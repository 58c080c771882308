//! Loadable bash builtins for cbuild's scripts:
//! `enable -f .../libcbuild_builtins.so flock spawn reap mkdir rmdir rm mv`.
//!
//! - `flock` (flock.rs): util-linux flock(1)'s FD forms, without the fork.
//! - `spawn` and `reap` (spawn.rs): start a command without forking the shell (posix_spawn), and wait
//!   for it.
//! - `mkdir`, `rmdir`, `rm`, `mv` (files.rs): coreutils' forms the scripts use, without the fork, and from
//!   this one shared object (each one bash loads costs a start ~80 µs).
//!
//! A fork costs a running bash ~0.4 ms on this kind of machine, and more afterwards: every page it
//! writes once the child is gone faults, copy-on-write. cbuild-run takes its lock and starts its chain
//! on every start.
//!
//! No `std`: bash loads this on every start, and a std library costs ~0.3 ms to load (relocations,
//! symbol lookups) against ~0.05 ms for this one. It calls only libc and the few functions and
//! variables bash exports to loadable builtins, and allocates only with libc's malloc.
#![cfg_attr(not(test), no_std)]

mod files;
mod flock;
mod spawn;

use core::ffi::{c_char, c_int, CStr};

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

/// A builtin's long help as bash reads it: a NULL-terminated array of lines (here one block). It holds
/// pointers, which are not Sync by themselves; nothing writes to it.
#[repr(transparent)]
pub struct Doc([*const c_char; 2]);
unsafe impl Sync for Doc {}

impl Doc {
    pub const fn new(text: &'static CStr) -> Doc {
        Doc([text.as_ptr(), core::ptr::null()])
    }
}

impl Builtin {
    /// The entry bash finds as `NAME_struct`: FUNCTION, its help (a `static`: bash keeps the pointer)
    /// and its usage line.
    pub const fn new(
        name: &'static CStr,
        function: unsafe extern "C" fn(*const WordList) -> c_int,
        doc: &'static Doc,
        usage: &'static CStr,
    ) -> Builtin {
        Builtin {
            name: name.as_ptr(),
            function,
            flags: BUILTIN_ENABLED,
            long_doc: doc.0.as_ptr(),
            short_doc: usage.as_ptr(),
            handle: core::ptr::null(),
        }
    }
}

const BUILTIN_ENABLED: c_int = 0x01;

/// A usage error (bash's own builtins return 2 for one).
const USAGE: c_int = 2;

// The builtins, as bash finds them (`NAME_struct`). `mut`: bash writes into them when it loads them
// (their handle, their flags), so they must not be read-only.
#[no_mangle]
pub static mut flock_struct: Builtin = flock::BUILTIN;
#[no_mangle]
pub static mut spawn_struct: Builtin = spawn::SPAWN;
#[no_mangle]
pub static mut reap_struct: Builtin = spawn::REAP;
#[no_mangle]
pub static mut mkdir_struct: Builtin = files::MKDIR;
#[no_mangle]
pub static mut rmdir_struct: Builtin = files::RMDIR;
#[no_mangle]
pub static mut rm_struct: Builtin = files::RM;
#[no_mangle]
pub static mut mv_struct: Builtin = files::MV;

/// The words of a builtin's argument list, one by one (bash's expanded words, NUL-terminated, alive
/// during the call).
///
/// # Safety
/// `list` is the list bash passed to the builtin.
unsafe fn words<'a>(list: *const WordList) -> impl FnMut() -> Option<&'a CStr> {
    let mut l = list;
    move || {
        // SAFETY: the caller's promise: bash's list, alive during the call.
        unsafe {
            while !l.is_null() {
                let w = (*l).word;
                l = (*l).next;
                if !w.is_null() && !(*w).word.is_null() {
                    return Some(CStr::from_ptr((*w).word));
                }
            }
        }
        None
    }
}

// bash's signal state, which its handlers write (bash 4.4 to 5.2 alike).
extern "C" {
    static trapped_signal_received: c_int;
    static interrupt_state: c_int;
}

/// After a system call failed with EINTR: the status to return to the script when the signal is one it
/// must see now — 128+N for a signal N with a trap (bash runs the trap once the builtin returns), 128+2
/// for a SIGINT bash handles itself — or None for a signal the script does not care about (bash's own
/// SIGCHLD, SIGWINCH): wait on.
fn signal_for_script() -> Option<c_int> {
    // SAFETY: bash's globals, read once each (signal handlers write them).
    let (trapped, interrupted) = unsafe {
        (
            core::ptr::read_volatile(core::ptr::addr_of!(trapped_signal_received)),
            core::ptr::read_volatile(core::ptr::addr_of!(interrupt_state)),
        )
    };
    if trapped > 0 {
        Some(128 + trapped)
    } else if interrupted != 0 {
        Some(128 + libc::SIGINT)
    } else {
        None
    }
}

/// `PROG: WORD: WHAT` on stderr (`PROG: WHAT` without a word), in one write.
fn complain(prog: &[u8], word: &[u8], what: &[u8]) {
    let mut buf = [0u8; 512];
    let mut n = 0;
    for part in [prog, b": ", word, if word.is_empty() { b"" } else { b": " }, what, b"\n"] {
        let take = part.len().min(buf.len() - n);
        buf[n..n + take].copy_from_slice(&part[..take]);
        n += take;
    }
    // SAFETY: writes n initialised bytes; an error line that cannot be written is dropped.
    unsafe { libc::write(2, buf.as_ptr().cast(), n) };
}

/// strerror's text for `e`.
fn strerror(e: c_int) -> &'static [u8] {
    // SAFETY: glibc's strerror returns a string that stays valid (a static one for a known errno).
    unsafe { CStr::from_ptr(libc::strerror(e)) }.to_bytes()
}

fn errno() -> c_int {
    // SAFETY: glibc's thread-local errno.
    unsafe { *libc::__errno_location() }
}

/// A small non-negative decimal.
fn number(s: &[u8]) -> Option<c_int> {
    if s.is_empty() || s.len() > 9 || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(s.iter().fold(0, |n, d| n * 10 + c_int::from(d - b'0')))
}

/// `n` in decimal, NUL-terminated, in `buf`; the digits' slice (the NUL follows it in `buf`).
fn decimal(n: c_int, buf: &mut [u8; 12]) -> &[u8] {
    let mut i = buf.len() - 1;
    buf[i] = 0;
    let mut v = n.max(0);
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    &buf[i..buf.len() - 1]
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

    #[test]
    fn numbers() {
        assert_eq!(number(b"9"), Some(9));
        assert_eq!(number(b"4096"), Some(4096));
        assert_eq!(number(b""), None);
        assert_eq!(number(b"-1"), None);
        assert_eq!(number(b"99999999999"), None);
        let mut b = [0; 12];
        assert_eq!(decimal(0, &mut b), b"0");
        assert_eq!(decimal(4194304, &mut b), b"4194304");
        assert_eq!(b[b.len() - 1], 0);
    }
}
