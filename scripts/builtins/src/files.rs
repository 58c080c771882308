//! `mkdir [-p] DIR...`, `rmdir DIR...`, `rm [-r] [-f] PATH...` and `mv [-f] [-T] FROM TO`: the file operations
//! the scripts run on every start and undo, without a fork, and loaded with the other builtins from this
//! one shared object (bash pays ~80 µs for each shared object it loads; Debian's bash-builtins has the
//! first three as three, and no mv).
//!
//! coreutils' meanings, for the forms the scripts use; anything else is a usage error. `rm -r` walks by
//! directory descriptors (openat with O_NOFOLLOW: a symbolic link is removed, never followed, and no
//! path grows with the depth) down to `DEPTH` levels. A deeper tree is left, with status 1, for rm(1),
//! whose walk takes any depth: lib/undo.sh's `rt_rm_tree` runs it on whatever a container's upper
//! dir still holds.
//!
//! Exit status: 0 done; 1 something could not be made or removed (one line on stderr each); 2 usage.

use crate::{complain, errno, strerror, words, Builtin, Doc, WordList, USAGE};
use core::ffi::{c_char, c_int, CStr};

/// How deep `rm -r` goes itself (named in its error text): each level holds a descriptor and glibc's
/// ~32 KiB directory buffer.
const DEPTH: u32 = 64;
// The help and the error text say 64.
const _: () = assert!(DEPTH == 64);

static MKDIR_DOC: Doc = Doc::new(
    c"Create directories, as mkdir(1) does, in the shell.

    -p  create missing parents too; a directory that exists already is fine",
);
static RMDIR_DOC: Doc = Doc::new(c"Remove empty directories, as rmdir(1) does, in the shell.");
static RM_DOC: Doc = Doc::new(
    c"Remove files, as rm(1) does, in the shell.

    -r, -R  remove directories and what they hold (symbolic links are removed, never followed; a tree
            deeper than 64 levels is left for rm(1), status 1)
    -f      a PATH that does not exist is not an error",
);

pub(crate) const MKDIR: Builtin = Builtin::new(c"mkdir", mkdir_builtin, &MKDIR_DOC, c"mkdir [-p] DIR...");
pub(crate) const RMDIR: Builtin = Builtin::new(c"rmdir", rmdir_builtin, &RMDIR_DOC, c"rmdir DIR...");
pub(crate) const RM: Builtin = Builtin::new(c"rm", rm_builtin, &RM_DOC, c"rm [-r] [-f] PATH...");
static MV_DOC: Doc = Doc::new(
    c"Rename FROM to TO, as mv(1) does, in the shell: rename(2) only, so both on one filesystem (a move
    across filesystems fails, status 1, and moves nothing). TO, if it exists, is replaced as rename(2)
    replaces it: a file by a file, an empty directory by a directory.

    -f  accepted (nothing asks here)
    -T  TO is the new name even if it is a directory; without -T a directory TO is refused (mv(1)
        would move FROM into it)",
);
pub(crate) const MV: Builtin = Builtin::new(c"mv", mv_builtin, &MV_DOC, c"mv [-f] [-T] FROM TO");

/// Leading option words (up to `--` or the first operand): each letter must be in `allowed`; returns
/// the letters seen, or the offending word.
fn options<'a>(
    next: &mut impl FnMut() -> Option<&'a CStr>,
    allowed: &[u8],
) -> Result<([bool; 128], Option<&'a CStr>), &'a CStr> {
    let mut seen = [false; 128];
    while let Some(w) = next() {
        let b = w.to_bytes();
        if b == b"--" {
            return Ok((seen, next()));
        }
        if b.len() < 2 || b[0] != b'-' {
            return Ok((seen, Some(w)));
        }
        for &c in &b[1..] {
            if !allowed.contains(&c) {
                return Err(w);
            }
            seen[usize::from(c)] = true;
        }
    }
    Ok((seen, None))
}

/// Why an operand failed: the kernel's errno, or a refusal of our own.
enum Fail {
    Errno(c_int),
    Refused(&'static [u8]),
}

impl From<c_int> for Fail {
    fn from(e: c_int) -> Fail {
        Fail::Errno(e)
    }
}

/// Run `each` on every operand (the first already taken by `options`), one error line for each that
/// fails; 1 if any did, a usage error if there is none.
fn operands<'a>(
    prog: &[u8],
    first: Option<&'a CStr>,
    next: &mut impl FnMut() -> Option<&'a CStr>,
    mut each: impl FnMut(&CStr) -> Result<(), Fail>,
) -> c_int {
    let Some(first) = first else {
        complain(prog, b"", b"missing operand");
        return USAGE;
    };
    let mut status = 0;
    let mut w = Some(first);
    while let Some(p) = w {
        if let Err(f) = each(p) {
            let what = match f {
                Fail::Errno(e) => strerror(e),
                Fail::Refused(why) => why,
            };
            complain(prog, p.to_bytes(), what);
            status = 1;
        }
        w = next();
    }
    status
}

unsafe extern "C" fn mkdir_builtin(list: *const WordList) -> c_int {
    // SAFETY: bash's own argument list.
    let mut next = unsafe { words(list) };
    match options(&mut next, b"p") {
        Ok((o, first)) => operands(b"mkdir", first, &mut next, |p| Ok(make_dir(p, o[usize::from(b'p')])?)),
        Err(w) => usage(b"mkdir", w),
    }
}

unsafe extern "C" fn rmdir_builtin(list: *const WordList) -> c_int {
    // SAFETY: bash's own argument list.
    let mut next = unsafe { words(list) };
    match options(&mut next, b"") {
        // SAFETY: a NUL-terminated path.
        Ok((_, first)) => operands(b"rmdir", first, &mut next, |p| Ok(ok(unsafe { libc::rmdir(p.as_ptr()) })?)),
        Err(w) => usage(b"rmdir", w),
    }
}

unsafe extern "C" fn rm_builtin(list: *const WordList) -> c_int {
    // SAFETY: bash's own argument list.
    let mut next = unsafe { words(list) };
    let (o, first) = match options(&mut next, b"rRf") {
        Ok(x) => x,
        Err(w) => return usage(b"rm", w),
    };
    let (recursive, force) = (o[usize::from(b'r')] || o[usize::from(b'R')], o[usize::from(b'f')]);
    if force && first.is_none() {
        return 0;
    }
    operands(b"rm", first, &mut next, |p| remove(p, recursive, force))
}

unsafe extern "C" fn mv_builtin(list: *const WordList) -> c_int {
    // SAFETY: bash's own argument list.
    let mut next = unsafe { words(list) };
    let (o, from) = match options(&mut next, b"fT") {
        Ok(x) => x,
        Err(w) => return usage(b"mv", w),
    };
    let (Some(from), Some(to), None) = (from, next(), next()) else {
        complain(b"mv", b"", b"usage: mv [-f] [-T] FROM TO");
        return USAGE;
    };
    // Without -T, mv(1) moves FROM *into* TO when TO is a directory: not a rename, so not done here.
    if !o[usize::from(b'T')] && is_dir(to.as_ptr()) {
        complain(b"mv", to.to_bytes(), b"a directory: only renames here (mv -T, or mv(1))");
        return 1;
    }
    // SAFETY: NUL-terminated paths.
    match ok(unsafe { libc::rename(from.as_ptr(), to.as_ptr()) }) {
        Ok(()) => 0,
        Err(e) => {
            complain(b"mv", from.to_bytes(), strerror(e));
            1
        }
    }
}

fn usage(prog: &[u8], word: &CStr) -> c_int {
    complain(prog, word.to_bytes(), b"unknown option");
    USAGE
}

/// A syscall's return as a Result of its errno.
fn ok(rc: c_int) -> Result<(), c_int> {
    if rc == 0 {
        Ok(())
    } else {
        Err(errno())
    }
}

fn is_dir(path: *const c_char) -> bool {
    // SAFETY: a zeroed stat filled by the kernel; a NUL-terminated path.
    unsafe {
        let mut st: libc::stat = core::mem::zeroed();
        libc::stat(path, &mut st) == 0 && st.st_mode & libc::S_IFMT == libc::S_IFDIR
    }
}

/// mkdir(2), and with `parents` every missing directory above it first (an existing one is fine).
fn make_dir(path: &CStr, parents: bool) -> Result<(), c_int> {
    // SAFETY: a NUL-terminated path.
    let made = ok(unsafe { libc::mkdir(path.as_ptr(), 0o777) });
    match made {
        Err(libc::EEXIST) if parents && is_dir(path.as_ptr()) => return Ok(()),
        Err(libc::ENOENT) if parents => {}
        r => return r,
    }
    // The parents, shortest first, in a copy cut at each '/' in turn (a path longer than PATH_MAX
    // could not be made anyway).
    let b = path.to_bytes();
    let mut buf = [0u8; libc::PATH_MAX as usize];
    if b.len() >= buf.len() {
        return Err(libc::ENAMETOOLONG);
    }
    buf[..b.len()].copy_from_slice(b);
    for i in (1..b.len()).filter(|&i| b[i] == b'/' && b[i - 1] != b'/') {
        buf[i] = 0;
        // SAFETY: NUL-terminated at i.
        match ok(unsafe { libc::mkdir(buf.as_ptr().cast(), 0o777) }) {
            Ok(()) | Err(libc::EEXIST) => {}
            Err(e) => return Err(e),
        }
        buf[i] = b'/';
    }
    // SAFETY: a NUL-terminated path.
    match ok(unsafe { libc::mkdir(path.as_ptr(), 0o777) }) {
        Err(libc::EEXIST) if is_dir(path.as_ptr()) => Ok(()),
        r => r,
    }
}

/// Whether rm -r must refuse PATH: `/` (any number of slashes), or a last component `.` or `..`.
fn refused(b: &[u8]) -> bool {
    let t = match b.iter().rposition(|&c| c != b'/') {
        None => return true,
        Some(end) => &b[..=end],
    };
    let last = t.rsplit(|&c| c == b'/').next().unwrap_or(t);
    last == b"." || last == b".."
}

fn remove(path: &CStr, recursive: bool, force: bool) -> Result<(), Fail> {
    if recursive && refused(path.to_bytes()) {
        return Err(Fail::Refused(b"refusing to remove '/', '.' or '..'"));
    }
    // unlink(2) answers EISDIR for a directory (Linux), and removes a symbolic link itself.
    // SAFETY: a NUL-terminated path.
    match ok(unsafe { libc::unlinkat(libc::AT_FDCWD, path.as_ptr(), 0) }) {
        Ok(()) => Ok(()),
        Err(libc::ENOENT) if force => Ok(()),
        Err(libc::EISDIR) if recursive => remove_tree(libc::AT_FDCWD, path.as_ptr(), 0),
        Err(e) => Err(e.into()),
    }
}

/// Remove directory NAME (relative to `parent`) and everything in it, by descriptors.
fn remove_tree(parent: c_int, name: *const c_char, depth: u32) -> Result<(), Fail> {
    if depth >= DEPTH {
        return Err(Fail::Refused(b"deeper than 64 levels: left for rm(1)"));
    }
    // SAFETY: a NUL-terminated name relative to an open directory (or AT_FDCWD).
    let fd =
        unsafe { libc::openat(parent, name, libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC) };
    if fd < 0 {
        return match errno() {
            // No longer a directory (a link or a file put there meanwhile): it goes as itself.
            // SAFETY: as above.
            libc::ENOTDIR | libc::ELOOP => Ok(ok(unsafe { libc::unlinkat(parent, name, 0) })?),
            e => Err(e.into()),
        };
    }
    // SAFETY: an open directory descriptor, owned by the DIR from here on.
    let dir = unsafe { libc::fdopendir(fd) };
    if dir.is_null() {
        let e = errno();
        // SAFETY: our own descriptor, not taken by a DIR.
        unsafe { libc::close(fd) };
        return Err(e.into());
    }
    let mut first_failure = None;
    // Entries removed while the directory is read may shift what is left past the reading position on
    // some filesystems: a second and third pass take what the first missed.
    for _ in 0..3 {
        loop {
            // SAFETY: an open DIR; the entry stays valid until the next readdir.
            let ent = unsafe { libc::readdir(dir) };
            if ent.is_null() {
                break;
            }
            // SAFETY: the kernel's NUL-terminated name.
            let (n, kind) = unsafe { ((*ent).d_name.as_ptr(), (*ent).d_type) };
            // SAFETY: as above.
            let b = unsafe { CStr::from_ptr(n) }.to_bytes();
            if b == b"." || b == b".." {
                continue;
            }
            let r = if kind == libc::DT_DIR {
                remove_tree(fd, n, depth + 1)
            } else {
                // SAFETY: a name in the open directory.
                match ok(unsafe { libc::unlinkat(fd, n, 0) }) {
                    Err(libc::EISDIR) => remove_tree(fd, n, depth + 1),
                    r => r.map_err(Fail::from),
                }
            };
            if let Err(f) = r {
                first_failure.get_or_insert(f);
            }
        }
        // SAFETY: as above.
        match ok(unsafe { libc::unlinkat(parent, name, libc::AT_REMOVEDIR) }) {
            Err(libc::ENOTEMPTY) if first_failure.is_none() => unsafe { libc::rewinddir(dir) },
            r => {
                // SAFETY: closes the DIR and its descriptor.
                unsafe { libc::closedir(dir) };
                return match first_failure {
                    Some(f) => Err(f),
                    None => Ok(r?),
                };
            }
        }
    }
    // SAFETY: as above.
    unsafe { libc::closedir(dir) };
    Err(first_failure.unwrap_or(Fail::Errno(libc::ENOTEMPTY)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_the_root_and_dot_dirs() {
        for p in ["/", "//", ".", "..", "a/.", "a/..", "a/../", "./", "/tmp/.."] {
            assert!(refused(p.as_bytes()), "{p}");
        }
        for p in ["a", "/tmp/x", "a/.b", "..a", "a/b/", ".hidden"] {
            assert!(!refused(p.as_bytes()), "{p}");
        }
    }
}
