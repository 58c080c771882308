//! A depth-first walk of one directory tree in name order, without following symlinks or crossing into
//! other mounts: what `diff` and `inspect` both need, and what `find -xdev` does.
//!
//! The upper dir belongs to a running container, which may swap a dir for a symlink to a host path while
//! we walk. So the walk is fd-relative: each dir is opened with `O_NOFOLLOW` from its parent's fd, and each
//! entry is looked at through `/proc/self/fd/<dir fd>/<name>`, which the container cannot redirect.

use std::ffi::OsStr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Stat, CWD};

use crate::error::{p, Error, Result};

/// One entry: its path relative to the root (`""` for the root itself), the path to show, a race-free path
/// for xattr calls, and its lstat.
pub struct Entry {
    pub rel: PathBuf,
    pub path: PathBuf,
    pub at: PathBuf,
    pub st: Stat,
}

impl Entry {
    pub fn file_type(&self) -> FileType {
        FileType::from_raw_mode(self.st.st_mode)
    }
    pub fn is_dir(&self) -> bool {
        self.file_type() == FileType::Directory
    }
}

const DIR_FLAGS: OFlags = OFlags::RDONLY.union(OFlags::DIRECTORY).union(OFlags::NOFOLLOW).union(OFlags::CLOEXEC);

/// Visit `root` and everything below it. `visit` returns false to skip a directory's contents.
pub fn walk(step: &'static str, root: &Path, visit: &mut dyn FnMut(&Entry) -> bool) -> Result<()> {
    let fd = rustix::fs::openat(CWD, root, DIR_FLAGS, Mode::empty()).map_err(|e| Error::os(step, p(root), e))?;
    let st = rustix::fs::fstat(&fd).map_err(|e| Error::os(step, p(root), e))?;
    let at = fd_path(&fd).unwrap_or_else(|| root.to_path_buf());
    let top = Entry { rel: PathBuf::new(), path: root.to_path_buf(), at, st };
    if visit(&top) {
        walk_dir(step, fd, root, Path::new(""), st.st_dev, visit)?;
    }
    Ok(())
}

/// `/proc/self/fd/N`, or None without /proc (then xattrs are read by the plain path, racy but working).
fn fd_path(fd: &OwnedFd) -> Option<PathBuf> {
    static PROC: OnceLock<bool> = OnceLock::new();
    PROC.get_or_init(|| Path::new("/proc/self/fd").is_dir())
        .then(|| PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd())))
}

fn walk_dir(
    step: &'static str,
    fd: OwnedFd,
    dir: &Path,
    rel: &Path,
    dev: u64,
    visit: &mut dyn FnMut(&Entry) -> bool,
) -> Result<()> {
    let mut names = vec![];
    let mut reader = rustix::fs::Dir::read_from(&fd).map_err(|e| Error::os(step, p(dir), e))?;
    while let Some(ent) = reader.read() {
        let ent = ent.map_err(|e| Error::os(step, p(dir), e))?;
        let name = ent.file_name().to_bytes();
        if name != b"." && name != b".." {
            names.push(name.to_vec());
        }
    }
    names.sort();
    let base = fd_path(&fd).unwrap_or_else(|| dir.to_path_buf());
    for name in names {
        let name = OsStr::from_bytes(&name);
        let path = dir.join(name);
        let st = match rustix::fs::statat(&fd, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            // Removed while we walk (a running container): not an error for a report.
            Err(rustix::io::Errno::NOENT) => continue,
            Err(e) => return Err(Error::os(step, p(&path), e)),
        };
        let e = Entry { rel: rel.join(name), path, at: base.join(name), st };
        let descend = visit(&e);
        // Another filesystem mounted inside a layer is not part of it.
        if descend && e.is_dir() && st.st_dev == dev {
            let child = match rustix::fs::openat(fd.as_fd(), name, DIR_FLAGS, Mode::empty()) {
                Ok(c) => c,
                // Gone, or swapped for a non-dir since the stat: skip it rather than follow anything.
                Err(rustix::io::Errno::NOENT | rustix::io::Errno::NOTDIR | rustix::io::Errno::LOOP) => continue,
                Err(err) => return Err(Error::os(step, p(&e.path), err)),
            };
            walk_dir(step, child, &e.path, &e.rel, dev, visit)?;
        }
    }
    Ok(())
}
