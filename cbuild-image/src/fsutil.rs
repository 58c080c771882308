//! File-system steps done relative to directory fds, never by joining path strings: every lookup below a
//! target root goes through openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS), so `..` and symlinks
//! (absolute or relative) resolve as if the target were `/`, and nothing can reach outside it.

use nix::errno::Errno;
use nix::fcntl::{openat, openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{fchmod, fstat, mkdirat, FileStat, Mode};
use nix::unistd::{unlinkat, UnlinkatFlags};
use std::ffi::{CString, OsStr, OsString};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Open `rel` below `root` (an fd on the target directory), resolving every component inside it.
pub fn open_in_root(root: impl AsFd, rel: &Path, flags: OFlag) -> nix::Result<OwnedFd> {
    let rel: &Path = if rel.as_os_str().is_empty() { Path::new(".") } else { rel };
    let how = OpenHow::new()
        .flags(flags | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    // EAGAIN: a `..` was resolved while a rename or mount happened anywhere on the machine, so the
    // kernel could not prove the lookup stayed inside the root; it asks the caller to try again.
    let mut tries = 0;
    loop {
        match openat2(root.as_fd(), rel, how) {
            Err(Errno::EAGAIN) if tries < 100 => tries += 1,
            r => return r,
        }
    }
}

/// Open a directory for use as a root: O_PATH, and refuse a symlink in place of the directory itself.
pub fn open_root(path: &Path) -> nix::Result<OwnedFd> {
    nix::fcntl::open(path, OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC, Mode::empty())
}

/// The O_PATH fd of directory `comps` below `root`, creating missing components (mode 0755) one at a time.
/// `created` gets the relative path of each directory made here.
pub fn mkdir_all_in_root(root: &OwnedFd, comps: &[&OsStr], created: &mut Vec<PathBuf>) -> nix::Result<OwnedFd> {
    let full: PathBuf = comps.iter().collect();
    match open_in_root(root, &full, OFlag::O_PATH | OFlag::O_DIRECTORY) {
        Err(Errno::ENOENT) => {}
        r => return r,
    }
    let mut cur = open_in_root(root, Path::new("."), OFlag::O_PATH | OFlag::O_DIRECTORY)?;
    let mut prefix = PathBuf::new();
    for c in comps {
        prefix.push(c);
        cur = match open_in_root(root, &prefix, OFlag::O_PATH | OFlag::O_DIRECTORY) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => {
                mkdirat(&cur, *c, Mode::from_bits_truncate(0o755))?;
                created.push(prefix.clone());
                openat(
                    &cur,
                    *c,
                    OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                    Mode::empty(),
                )?
            }
            Err(e) => return Err(e),
        };
    }
    Ok(cur)
}

/// Remove `name` in `dir` whatever it is, a directory recursively, never following symlinks. Missing is
/// fine. Directories without write permission (a rootless caller, a 0555 dir) are made writable first.
///
/// A layer can make a tree far deeper than PATH_MAX (symlinks chained inside the root), so the walk is
/// iterative: one open directory at a time and the names of the way down on the heap, going back up
/// through `..`. Neither the stack nor the open-file limit bounds the depth.
pub fn remove_all_at(dir: &impl AsFd, name: &OsStr) -> nix::Result<()> {
    match unlinkat(dir, name, UnlinkatFlags::NoRemoveDir) {
        Ok(()) | Err(Errno::ENOENT) => return Ok(()),
        Err(Errno::EISDIR) | Err(Errno::EPERM) => {}
        Err(e) => return Err(e),
    }
    let top = match open_subdir(dir, name)? {
        Some(fd) => fd,
        None => return Ok(()),
    };
    let mut cur = top.0;
    let mut stack = vec![Level { name: name.to_os_string(), id: top.1, subdirs: unlink_nondirs(&cur)? }];
    loop {
        let level = stack.last_mut().unwrap();
        if let Some(sub) = level.subdirs.pop() {
            if let Some((fd, id)) = open_subdir(&cur, &sub)? {
                let subdirs = unlink_nondirs(&fd)?;
                stack.push(Level { name: sub, id, subdirs });
                cur = fd;
            }
            continue;
        }
        let done = stack.pop().unwrap();
        let Some(parent) = stack.last() else { break };
        // `..` of a directory someone renamed meanwhile is somewhere else: check it is where we came
        // from, or the rmdir below could hit a directory outside the tree.
        let up = openat(
            &cur,
            "..",
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        if file_id(&fstat(&up)?) != parent.id {
            return Err(Errno::ESTALE);
        }
        cur = up;
        match unlinkat(&cur, done.name.as_os_str(), UnlinkatFlags::RemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => {}
            Err(e) => return Err(e),
        }
    }
    drop(cur);
    match unlinkat(dir, name, UnlinkatFlags::RemoveDir) {
        Ok(()) | Err(Errno::ENOENT) => Ok(()),
        Err(e) => Err(e),
    }
}

/// One directory on the way down in `remove_all_at`: its name in its parent, its identity (to check
/// the way back up) and the subdirectories still to remove.
struct Level {
    name: OsString,
    id: (u64, u64),
    subdirs: Vec<OsString>,
}

fn file_id(st: &FileStat) -> (u64, u64) {
    (st.st_dev, st.st_ino)
}

/// Open directory `name` in `dir` for removing its entries, made writable when it is not. None when it
/// is gone; a non-directory there is unlinked and gives None too.
fn open_subdir(dir: &impl AsFd, name: &OsStr) -> nix::Result<Option<(OwnedFd, (u64, u64))>> {
    let fd = match openat(
        dir,
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(Errno::ENOENT) => return Ok(None),
        // Replaced by a symlink or a file since it was listed.
        Err(Errno::ENOTDIR | Errno::ELOOP) => {
            return match unlinkat(dir, name, UnlinkatFlags::NoRemoveDir) {
                Ok(()) | Err(Errno::ENOENT) => Ok(None),
                Err(e) => Err(e),
            }
        }
        // Rootless: a directory without u+r or u+x (an image's 0000 dir) cannot be opened by its owner, who
        // may still chmod it. Through an O_PATH fd, so the chmod hits the very dir opened, never a symlink.
        Err(Errno::EACCES) => {
            let p = openat(
                dir,
                name,
                OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            )?;
            chmod_fd(&p, fstat(&p)?.st_mode | 0o700)?;
            reopen(&p, OFlag::O_RDONLY)?
        }
        Err(e) => return Err(e),
    };
    let st = fstat(&fd)?;
    if st.st_mode & 0o700 != 0o700 {
        let _ = fchmod(&fd, Mode::from_bits_truncate(st.st_mode | 0o700));
    }
    Ok(Some((fd, file_id(&st))))
}

/// Unlink every non-directory in `dir`; return the names of its subdirectories.
fn unlink_nondirs(dir: &OwnedFd) -> nix::Result<Vec<OsString>> {
    let mut subdirs = Vec::new();
    for name in list_dir(dir)? {
        match unlinkat(dir, name.as_os_str(), UnlinkatFlags::NoRemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => {}
            Err(Errno::EISDIR | Errno::EPERM) => subdirs.push(name),
            Err(e) => return Err(e),
        }
    }
    Ok(subdirs)
}

/// Names in directory `dir` (an fd opened O_RDONLY|O_DIRECTORY), without `.` and `..`.
pub fn list_dir(dir: &OwnedFd) -> nix::Result<Vec<OsString>> {
    let d = nix::dir::Dir::from_fd(dir.try_clone().map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(0)))?)?;
    let mut out = Vec::new();
    let mut d = d;
    for ent in d.iter() {
        let ent = ent?;
        let n = ent.file_name().to_bytes();
        if n != b"." && n != b".." {
            out.push(OsStr::from_bytes(n).to_os_string());
        }
    }
    Ok(out)
}

/// Remove every child of `dir` that `select(name)` picks.
pub fn remove_children(dir: &OwnedFd, mut select: impl FnMut(&OsStr) -> bool) -> nix::Result<()> {
    for name in list_dir(dir)? {
        if select(&name) {
            remove_all_at(dir, &name)?;
        }
    }
    Ok(())
}

/// `/proc/self/fd/N`: the way to reach the inode an O_PATH fd holds (reopen it, read its xattrs)
/// without a path lookup that something else could redirect.
pub fn proc_fd(fd: &impl AsFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_fd().as_raw_fd()))
}

/// chmod the inode an O_PATH fd holds (fchmod refuses O_PATH fds), through `/proc/self/fd/N`.
pub fn chmod_fd(fd: &impl AsFd, mode: u32) -> nix::Result<()> {
    nix::sys::stat::fchmodat(
        nix::fcntl::AT_FDCWD,
        &proc_fd(fd),
        Mode::from_bits_truncate(mode & 0o7777),
        nix::sys::stat::FchmodatFlags::FollowSymlink,
    )
}

/// Re-open an O_PATH fd with real access (fsetxattr/fchmod/futimens need one).
pub fn reopen(fd: &impl AsFd, flags: OFlag) -> nix::Result<OwnedFd> {
    openat(fd, ".", flags | OFlag::O_CLOEXEC | OFlag::O_DIRECTORY, Mode::empty())
}

pub fn fsetxattr(fd: &impl AsFd, name: &str, value: &[u8]) -> std::io::Result<()> {
    let n = CString::new(name).map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    let r = unsafe { libc::fsetxattr(fd.as_fd().as_raw_fd(), n.as_ptr(), value.as_ptr().cast(), value.len(), 0) };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// setxattr by path, following a final symlink: for `/proc/self/fd/N` of an O_PATH fd (see proc_fd).
pub fn setxattr_path(path: &Path, name: &str, value: &[u8]) -> std::io::Result<()> {
    let p = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    let n = CString::new(name).map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    let r = unsafe { libc::setxattr(p.as_ptr(), n.as_ptr(), value.as_ptr().cast(), value.len(), 0) };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

pub fn fgetxattr(fd: &impl AsFd, name: &str) -> Option<Vec<u8>> {
    let n = CString::new(name).ok()?;
    let mut buf = vec![0u8; 4096];
    let r = unsafe { libc::fgetxattr(fd.as_fd().as_raw_fd(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if r < 0 {
        return None;
    }
    buf.truncate(r as usize);
    Some(buf)
}

/// All extended attributes of the inode an O_PATH fd holds, named by its `/proc/self/fd/N` path, sorted
/// by name. listxattr/getxattr follow the magic link to exactly that inode (a symlink's own xattrs when
/// the fd is on a symlink) and no further; O_PATH fds cannot be given to flistxattr/fgetxattr.
pub fn fd_xattrs(path: &Path) -> std::io::Result<Vec<(String, Vec<u8>)>> {
    let p = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    let mut names = vec![0u8; 4096];
    loop {
        let r = unsafe { libc::listxattr(p.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
        if r >= 0 {
            names.truncate(r as usize);
            break;
        }
        let e = std::io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::ERANGE) => names.resize(names.len() * 4, 0),
            Some(libc::ENOTSUP) => return Ok(Vec::new()),
            _ => return Err(e),
        }
    }
    let mut out = Vec::new();
    for name in names.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let cname = CString::new(name).unwrap();
        let mut val = vec![0u8; 65536];
        let r = unsafe { libc::getxattr(p.as_ptr(), cname.as_ptr(), val.as_mut_ptr().cast(), val.len()) };
        if r < 0 {
            continue; // vanished or not readable by us: nothing to record
        }
        val.truncate(r as usize);
        out.push((String::from_utf8_lossy(name).into_owned(), val));
    }
    out.sort();
    Ok(out)
}

/// Whether this process may do what a real root can: create device nodes and set trusted.* xattrs.
/// A root inside a user namespace cannot, so it counts as rootless.
pub fn privileged() -> bool {
    if !nix::unistd::geteuid().is_root() {
        return false;
    }
    match std::fs::read_to_string("/proc/self/uid_map") {
        Ok(m) => m.split_whitespace().collect::<Vec<_>>() == ["0", "0", "4294967295"],
        Err(_) => true,
    }
}

/// Remove the tree at `path` (not following symlinks), if it exists.
pub fn remove_tree(path: &Path) -> std::io::Result<()> {
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let Some(name) = path.file_name() else { return Err(std::io::ErrorKind::InvalidInput.into()) };
    let pfd = nix::fcntl::open(parent, OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())
        .map_err(std::io::Error::from)?;
    remove_all_at(&pfd, name).map_err(std::io::Error::from)
}
