//! Names and where state lives (docs/ARCHITECTURE.md, "Names" and "Where state lives").

use std::ffi::{CStr, CString};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// `<state>`: `CBUILD_STATE`, else `/run/cbuild` for root, else `$XDG_RUNTIME_DIR/cbuild`.
pub fn state_dir() -> PathBuf {
    if let Some(s) = std::env::var_os("CBUILD_STATE") {
        return PathBuf::from(s);
    }
    if nix::unistd::Uid::effective().is_root() {
        return PathBuf::from("/run/cbuild");
    }
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(d) => Path::new(&d).join("cbuild"),
        None => PathBuf::from(format!("/run/user/{}/cbuild", nix::unistd::Uid::effective())),
    }
}

/// `[A-Za-z0-9][A-Za-z0-9_.-]{0,63}`: checked before any path is built from it.
pub fn check_name(step: &'static str, kind: &str, name: &str) -> Result<()> {
    let b = name.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= 64
        && b[0].is_ascii_alphanumeric()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(Error::new(step, name, format!("invalid {kind}: want [A-Za-z0-9][A-Za-z0-9_.-]{{0,63}}")))
    }
}

/// An interface name the kernel accepts: 1..=15 bytes, no `/`, `:`, whitespace, not `.` or `..`.
pub fn check_ifname(step: &'static str, name: &str) -> Result<()> {
    if name.is_empty() || name.len() > 15 {
        return Err(Error::new(step, name, "interface name must be 1 to 15 bytes (IFNAMSIZ)"));
    }
    if name == "." || name == ".." || name.bytes().any(|c| c == b'/' || c == b':' || c <= b' ' || c >= 0x7f) {
        return Err(Error::new(step, name, "invalid interface name"));
    }
    Ok(())
}

/// `<state>/<NAME>`: the container's directory, shared with the other tools.
pub fn container_dir(state: &Path, id: &str) -> PathBuf {
    state.join(id)
}

/// `<state>/<NAME>/net.json`: the attachment record.
pub fn attachment_file(state: &Path, id: &str) -> PathBuf {
    state.join(id).join("net.json")
}

/// `<state>/net`: everything cbuild-net keeps that is not one container's.
pub fn net_dir(state: &Path) -> PathBuf {
    state.join("net")
}

/// `<state>/net/<BR>`: one bridge's config and IPAM leases.
pub fn bridge_dir(state: &Path, bridge: &str) -> PathBuf {
    net_dir(state).join(bridge)
}

/// The host end of a container's veth pair: `cb` + 12 hex digits of a hash of the ID, so it fits
/// IFNAMSIZ, is the same for the same ID (prune finds a half-built pair from the ID alone), and the
/// leak-check hooks can find every cbuild link by its prefix.
pub fn host_ifname(id: &str) -> String {
    // FNV-1a 64: tiny, stable across versions, and good enough to spread names.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("cb{:012x}", h & 0xffff_ffff_ffff)
}

/// Open the file at `path` without following a symlink in its last `depth` components (the file and
/// the `depth - 1` directories above it: 2 for `<state>/ID/net.json`, 3 for `<state>/net/BR/x`), and
/// only if it is a regular file. `flags` adds the access mode and `O_CREAT`/`O_EXCL`; `O_NONBLOCK` is
/// always set, so a FIFO put there is refused instead of blocking the open forever.
///
/// Everything below the state dir may be written by other tools and scripts: a symlink planted there
/// must never make cbuild-net read, write or delete a file elsewhere.
pub fn open_nofollow(path: &Path, depth: usize, flags: libc::c_int) -> std::io::Result<std::fs::File> {
    let (dir, name) = open_parent(path, depth)?;
    open_in(dir.as_fd(), &name, flags)
}

/// Whether `file`, just locked, is still the file at `name` in `dir`: not removed (and maybe made again)
/// by whoever held the lock before (`disconnect` removes a record, `bridge del` a lease directory, each
/// while holding its lock), so a lock won on it guards nothing.
pub fn still_at(dir: BorrowedFd<'_>, name: &CStr, file: &std::fs::File) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(held) = file.metadata() else { return false };
    let now = nix::sys::stat::fstatat(dir, name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW);
    held.nlink() > 0 && now.is_ok_and(|st| st.st_ino == held.ino())
}

/// [`open_nofollow`] of the file `name` in a directory already opened by [`open_parent`].
pub fn open_in(dir: BorrowedFd<'_>, name: &CStr, flags: libc::c_int) -> std::io::Result<std::fs::File> {
    open_sized(dir, name, flags).map(|(f, _)| f)
}

/// [`open_in`], and the file's size as it was opened.
fn open_sized(dir: BorrowedFd<'_>, name: &CStr, flags: libc::c_int) -> std::io::Result<(std::fs::File, u64)> {
    let fd = openat(dir.as_raw_fd(), name, flags | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC, 0o644)?;
    let f = std::fs::File::from(fd);
    let m = f.metadata()?;
    if !m.is_file() {
        return Err(not_regular());
    }
    Ok((f, m.len()))
}

/// Read a whole state file, as [`open_nofollow`] opens it.
pub fn read_nofollow(path: &Path, depth: usize) -> std::io::Result<String> {
    let (dir, name) = open_parent(path, depth)?;
    read_in(dir.as_fd(), &name)
}

/// [`read_nofollow`] of the file `name` in an open directory.
pub fn read_in(dir: BorrowedFd<'_>, name: &CStr) -> std::io::Result<String> {
    use std::io::Read;
    let (f, len) = open_sized(dir, name, libc::O_RDONLY)?;
    // Sized from the fstat above, and read through `Take`: `File::read_to_string` would ask the kernel
    // for the size and the position again (an fstat and an lseek per state file; a connect reads three).
    // The room past the size lets the read that meets the end be a plain one. The size is a hint only,
    // capped: the file may grow or shrink meanwhile, and the read goes on to the real end.
    let mut s = String::with_capacity(len.min(1 << 16) as usize + 64);
    (&f).take(u64::MAX).read_to_string(&mut s)?;
    Ok(s)
}

/// Unlink the file at `path` (never a directory), with its parent directories opened as
/// [`open_nofollow`] does: a symlinked directory cannot redirect the unlink elsewhere.
pub fn remove_nofollow(path: &Path, depth: usize) -> std::io::Result<()> {
    let (dir, name) = open_parent(path, depth)?;
    remove_in(dir.as_fd(), &name)
}

/// [`remove_nofollow`] of the file `name` in an open directory.
pub fn remove_in(dir: BorrowedFd<'_>, name: &CStr) -> std::io::Result<()> {
    // SAFETY: unlinkat on an open directory fd and a NUL-terminated name.
    match unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), 0) } {
        0 => Ok(()),
        _ => Err(std::io::Error::last_os_error()),
    }
}

/// The directory holding `path`, opened without following a symlink in its last `depth - 1`
/// components, and the file's name in it.
pub fn open_parent(path: &Path, depth: usize) -> std::io::Result<(OwnedFd, CString)> {
    use std::path::Component;
    let comps: Vec<Component> = path.components().collect();
    let n = comps.len();
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a plain path below the state dir");
    if depth == 0 || n <= depth || comps[n - depth..].iter().any(|c| !matches!(c, Component::Normal(_))) {
        return Err(bad());
    }
    let base: PathBuf = comps[..n - depth].iter().collect();
    let dflags = libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC;
    let mut dir = openat(libc::AT_FDCWD, &cstr(base.as_os_str())?, dflags, 0)?;
    for c in &comps[n - depth..n - 1] {
        dir = openat(dir.as_raw_fd(), &cstr(c.as_os_str())?, dflags | libc::O_NOFOLLOW, 0)?;
    }
    Ok((dir, cstr(comps[n - 1].as_os_str())?))
}

fn cstr(s: &std::ffi::OsStr) -> std::io::Result<CString> {
    use std::os::unix::ffi::OsStrExt;
    CString::new(s.as_bytes()).map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "NUL in a path"))
}

fn openat(dir: RawFd, name: &CStr, flags: libc::c_int, mode: libc::mode_t) -> std::io::Result<OwnedFd> {
    // SAFETY: openat on a NUL-terminated name; the fd returned is owned by nobody else.
    match unsafe { libc::openat(dir, name.as_ptr(), flags, mode as libc::c_uint) } {
        fd if fd >= 0 => Ok(unsafe { OwnedFd::from_raw_fd(fd) }),
        _ => {
            let e = std::io::Error::last_os_error();
            // O_PATH|O_DIRECTORY|O_NOFOLLOW on a symlink fails with ENOTDIR, O_NOFOLLOW on a file with
            // ELOOP: both are "a symlink was there", said the same way.
            match (e.raw_os_error(), flags & libc::O_DIRECTORY != 0) {
                (Some(libc::ENOTDIR), true) => {
                    Err(std::io::Error::other("a symbolic link or not a directory (refused in the state dir)"))
                }
                (Some(libc::ELOOP), _) => Err(not_regular()),
                _ => Err(e),
            }
        }
    }
}

fn not_regular() -> std::io::Error {
    std::io::Error::other("a symbolic link or not a regular file (refused in the state dir)")
}

/// Write `data` to `path` (a file `depth` components below the state dir, see [`open_nofollow`])
/// atomically: a new temporary file in the same directory, then rename. The temporary is made with
/// `O_EXCL` under a name nobody can predict (and `O_NOFOLLOW`), so nothing planted in the directory is
/// written through; the rename replaces whatever is at `path` (a symlink included) without following it.
pub fn write_atomic(step: &'static str, path: &Path, depth: usize, data: &[u8]) -> Result<()> {
    let (dir, name) = open_parent(path, depth).map_err(|e| Error::io(step, path.display(), e))?;
    write_atomic_in(step, dir.as_fd(), &name, path, data)
}

/// [`write_atomic`] of the file `name` in a directory already open (`path` names it in errors).
pub fn write_atomic_in(step: &'static str, dir: BorrowedFd<'_>, name: &CStr, path: &Path, data: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut r = [0u8; 8];
    // SAFETY: getrandom writes at most 8 bytes into `r`.
    unsafe { libc::getrandom(r.as_mut_ptr().cast(), r.len(), 0) };
    let tmp = format!(".{}.tmp.{}.{:016x}", name.to_string_lossy(), std::process::id(), u64::from_ne_bytes(r));
    let ctmp = CString::new(tmp.clone()).map_err(|e| Error::new(step, path.display(), e))?;
    let err = |e| Error::io(step, path.with_file_name(&tmp).display(), e);
    let fd = openat(
        dir.as_raw_fd(),
        &ctmp,
        libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        0o644,
    )
    .map_err(err)?;
    let unlink = || {
        // SAFETY: as in remove_nofollow.
        unsafe { libc::unlinkat(dir.as_raw_fd(), ctmp.as_ptr(), 0) };
    };
    if let Err(e) = std::fs::File::from(fd).write_all(data) {
        unlink();
        return Err(err(e));
    }
    // SAFETY: renameat within one open directory, two NUL-terminated names.
    if unsafe { libc::renameat(dir.as_raw_fd(), ctmp.as_ptr(), dir.as_raw_fd(), name.as_ptr()) } != 0 {
        let e = std::io::Error::last_os_error();
        unlink();
        return Err(Error::io(step, path.display(), e));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(check_name("t", "ID", "web-1.a_b").is_ok());
        for bad in ["", "-a", "a/b", "..", ".a", "a b", &"x".repeat(65)] {
            assert!(check_name("t", "ID", bad).is_err(), "{bad:?}");
        }
        assert!(check_name("t", "ID", &"x".repeat(64)).is_ok());
    }

    #[test]
    fn ifnames() {
        assert!(check_ifname("t", "eth0").is_ok());
        assert!(check_ifname("t", "0123456789abcde").is_ok());
        assert!(check_ifname("t", "0123456789abcdef").is_err());
        assert!(check_ifname("t", "a/b").is_err());
        assert!(check_ifname("t", "").is_err());
    }

    #[test]
    fn host_names_fit_and_differ() {
        let a = host_ifname("web");
        assert_eq!(a.len(), 14);
        assert!(a.starts_with("cb"));
        assert_eq!(a, host_ifname("web"));
        assert_ne!(a, host_ifname("web2"));
    }
}
