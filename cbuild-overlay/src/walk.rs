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
///
/// Iterative, with one open fd per level: a hostile tree thousands of dirs deep must not overflow the
/// stack (an abort, not an error line). The depth is bounded by the open-file limit, which is raised to
/// its hard limit first; a tree deeper than that is a clean error.
pub fn walk(step: &'static str, root: &Path, visit: &mut dyn FnMut(&Entry) -> bool) -> Result<()> {
    raise_nofile();
    let fd = rustix::fs::openat(CWD, root, DIR_FLAGS, Mode::empty()).map_err(|e| Error::os(step, p(root), e))?;
    let st = rustix::fs::fstat(&fd).map_err(|e| Error::os(step, p(root), e))?;
    let at = fd_path(&fd).unwrap_or_else(|| root.to_path_buf());
    let top = Entry { rel: PathBuf::new(), path: root.to_path_buf(), at, st };
    if !visit(&top) {
        return Ok(());
    }
    let dev = st.st_dev;
    // The path of the dir on top of the stack, relative to the root: one buffer, not one per level, so a
    // deep tree costs memory linear in its depth.
    let mut rel = PathBuf::new();
    let mut stack = vec![Frame::read(step, fd, root)?];
    loop {
        let depth = stack.len();
        let Some(frame) = stack.last_mut() else { break };
        let Some(name) = frame.names.get(frame.next) else {
            stack.pop();
            rel.pop();
            continue;
        };
        frame.next += 1;
        let name = OsStr::from_bytes(name);
        let path = root.join(&rel).join(name);
        let st = match rustix::fs::statat(&frame.fd, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            // Removed while we walk (a running container): not an error for a report.
            Err(rustix::io::Errno::NOENT) => continue,
            Err(e) => return Err(Error::os(step, shown(root, &path, depth), e)),
        };
        let at = frame.base.join(name);
        let e = Entry { rel: rel.join(name), path, at, st };
        let descend = visit(&e);
        // Another filesystem mounted inside a layer is not part of it.
        if descend && e.is_dir() && st.st_dev == dev {
            let child = match rustix::fs::openat(frame.fd.as_fd(), name, DIR_FLAGS, Mode::empty()) {
                Ok(c) => c,
                // Gone, or swapped for a non-dir since the stat: skip it rather than follow anything.
                Err(rustix::io::Errno::NOENT | rustix::io::Errno::NOTDIR | rustix::io::Errno::LOOP) => continue,
                Err(err) => {
                    let error = Error::os(step, shown(root, &e.path, depth), err);
                    return Err(if err == rustix::io::Errno::MFILE {
                        error.with_hint(format!(
                            "the tree is {depth} dirs deep, more than the open-file limit (ulimit -n)"
                        ))
                    } else {
                        error
                    });
                }
            };
            let frame = Frame::read(step, child, &e.path).map_err(|err| {
                let err = Error { object: shown(root, &e.path, depth + 1), ..err };
                if err.errno() == Some(libc::EMFILE) {
                    err.with_hint(format!("the tree is {depth} dirs deep, more than the open-file limit (ulimit -n)"))
                } else {
                    err
                }
            })?;
            rel.push(name);
            stack.push(frame);
        }
    }
    Ok(())
}

/// A path for an error line: whole, unless a hostile tree made it longer than a path can be.
fn shown(root: &Path, path: &Path, depth: usize) -> String {
    if path.as_os_str().len() <= libc::PATH_MAX as usize {
        return p(path);
    }
    let name = p(Path::new(path.file_name().unwrap_or_default()));
    format!("{}/.../{name} ({depth} dirs deep)", p(root))
}

/// One open dir of the walk: its fd, its entries' names (sorted) and the next one to visit.
struct Frame {
    fd: OwnedFd,
    names: Vec<Vec<u8>>,
    next: usize,
    /// `/proc/self/fd/N`, the race-free base for the entries' xattr paths.
    base: PathBuf,
}

impl Frame {
    fn read(step: &'static str, fd: OwnedFd, dir: &Path) -> Result<Frame> {
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
        Ok(Frame { fd, names, next: 0, base })
    }
}

/// Soft RLIMIT_NOFILE up to the hard limit (as Go's runtime does at start): the walk holds one fd per
/// level. Failure leaves the limit as it was.
fn raise_nofile() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let lim = rustix::process::getrlimit(rustix::process::Resource::Nofile);
        if lim.current < lim.maximum {
            let _ = rustix::process::setrlimit(
                rustix::process::Resource::Nofile,
                rustix::process::Rlimit { current: lim.maximum, maximum: lim.maximum },
            );
        }
    });
}

/// `/proc/self/fd/N`, or None without /proc (then xattrs are read by the plain path, racy but working).
fn fd_path(fd: &OwnedFd) -> Option<PathBuf> {
    static PROC: OnceLock<bool> = OnceLock::new();
    PROC.get_or_init(|| Path::new("/proc/self/fd").is_dir())
        .then(|| PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd())))
}
