//! `mount --fd N --rm`: a throw-away writable layer, as `docker run --rm`'s. The upper and work dirs go
//! once the command chain that holds the mount has exited, removed by a child forked before the exec, so
//! the caller neither waits for the removal nor starts a process of its own for it (an `rm -rf` is a
//! whole program start, ~1 ms of CPU here; a fork of this small process is ~0.1 ms).
//!
//! The remover:
//! - waits on a pidfd of the chain (this process, after its exec): readable when the chain has exited,
//!   whatever it became and whoever reaps it;
//! - holds an exclusive flock on the upper dir from before the fork until it is done: a sign of life for
//!   whoever cleans up after crashes (`cbuild-rm --prune` leaves a locked upper dir alone);
//! - is in its own session, so a terminal's ^C or a kill of the caller's process group does not stop it
//!   half-way (one that came before the setsid is dropped: it ignores HUP, INT, QUIT and TERM), and holds
//!   no fd of the caller but its stdin/out/err, pointed at /dev/null;
//! - removes with its own nofile limit at 1024: std's `remove_dir_all` recurses a level per directory, so a
//!   tree deeper than that ends with EMFILE rather than past the stack's end, and [`remove_deep`], which
//!   holds two fds at any depth, finishes what is left (rm(1) is no help there: busybox's gives up past
//!   PATH_MAX).

use std::ffi::{CStr, CString};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, CWD};

use crate::error::{p, Error, Result};

/// Lock the (new) upper dir and fork the remover of `upper` and `work`: from here on the dirs belong to
/// the remover, which removes them once this process has exited, exec or not.
pub fn arm(upper: &Path, work: &Path) -> Result<()> {
    // O_CLOEXEC: the chain must not hold the lock; the remover's copy keeps it.
    let dir = rustix::fs::openat(CWD, upper, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
        .map_err(|e| Error::os("rm", p(upper), e))?;
    rustix::fs::flock(&dir, rustix::fs::FlockOperation::NonBlockingLockExclusive)
        .map_err(|e| Error::os("rm", p(upper), e).with_hint("another process holds a lock on this upper dir"))?;
    // Opened before the fork, so it names this process even if it is gone by the time the child runs.
    let me = rustix::process::getpid();
    let pidfd = rustix::process::pidfd_open(me, rustix::process::PidfdFlags::empty())
        .map_err(|e| Error::os("rm", "pidfd_open", e).with_hint("--rm needs Linux 5.3 or later"))?;
    let dirs = [upper.to_path_buf(), work.to_path_buf()];
    // SAFETY: single-threaded (cbuild-overlay starts no threads), so the child may run Rust code.
    match unsafe { libc::fork() } {
        -1 => Err(Error::os("rm", "fork", std::io::Error::last_os_error())),
        0 => remover(pidfd, dir, &dirs),
        _ => Ok(()), // our pidfd and dir close here; the child's copy of dir keeps the lock
    }
}

/// The child: detach, wait for the chain, remove. Never returns.
fn remover(pidfd: OwnedFd, lock: OwnedFd, dirs: &[PathBuf; 2]) -> ! {
    // SAFETY: plain syscalls on fds this process owns; _exit never runs the parent's destructors.
    unsafe {
        libc::setsid();
        // The parent holds signals while it mounts. One sent to the caller's whole process group (^C, a
        // `timeout`) before the setsid above is pending here: ignoring the stop signals drops it, and any
        // later one (the dirs would be left half-removed). SIGKILL still stops the remover.
        for sig in crate::mount::STOP_SIGNALS {
            libc::signal(sig as libc::c_int, libc::SIG_IGN);
        }
        let mut none = std::mem::zeroed::<libc::sigset_t>();
        libc::sigemptyset(&mut none);
        libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
        libc::chdir(c"/".as_ptr());
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        for fd in 0..3 {
            libc::dup2(null, fd);
        }
        // Keep only the pidfd and the lock: the caller's fds (the detached mount, a run's lock file,
        // pipes) must not live on in us.
        let mut keep = [pidfd.as_raw_fd(), lock.as_raw_fd()];
        keep.sort_unstable();
        close_from_to(3, keep[0] - 1);
        close_from_to(keep[0] + 1, keep[1] - 1);
        close_from_to(keep[1] + 1, RawFd::MAX);
        let mut pfd = libc::pollfd { fd: pidfd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        loop {
            if libc::poll(&mut pfd, 1, -1) > 0 {
                break;
            }
            if *libc::__errno_location() != libc::EINTR {
                // Cannot tell when the chain ends: leave the dirs (and, unlocked, to a prune).
                libc::_exit(1);
            }
        }
        let mut lim = std::mem::zeroed::<libc::rlimit>();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            lim.rlim_cur = lim.rlim_max.min(1024);
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
        // Both, whatever the first gives.
        let failed = dirs.iter().filter(|d| remove_tree(d).is_err()).count();
        libc::_exit(if failed == 0 { 0 } else { 1 });
    }
}

/// Remove `d` whole (gone already counts as removed): `remove_dir_all`, and where that fails (past the fd
/// limit) [`remove_deep`] for what is left; the first error is the one reported. Also the mount's undo.
pub(crate) fn remove_tree(d: &Path) -> std::io::Result<()> {
    match std::fs::remove_dir_all(d) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => remove_deep(d).map_err(|_| e),
        ok => ok,
    }
}

const DIR: OFlags = OFlags::RDONLY.union(OFlags::DIRECTORY).union(OFlags::NOFOLLOW).union(OFlags::CLOEXEC);

/// Remove `path` whole holding two fds whatever its depth: down the first subdirectory each time (the names
/// on a stack, only the current dir open), unlinking the rest on the way, and back up through `..` once a
/// dir is empty. A dir is listed again each time the walk returns to it, so it is for what
/// `remove_dir_all` left past its fd limit (a deep chain), not for whole trees. The container is gone:
/// nothing moves the tree meanwhile.
fn remove_deep(path: &Path) -> std::io::Result<()> {
    let mut names: Vec<CString> = vec![];
    let mut cur = rustix::fs::openat(CWD, path, DIR, Mode::empty())?;
    loop {
        match first_subdir(&cur)? {
            Some(name) => {
                cur = rustix::fs::openat(&cur, name.as_c_str(), DIR, Mode::empty())?;
                names.push(name);
            }
            None => match names.pop() {
                Some(name) => {
                    let parent = rustix::fs::openat(&cur, c"..", DIR, Mode::empty())?;
                    rustix::fs::unlinkat(&parent, name.as_c_str(), AtFlags::REMOVEDIR)?;
                    cur = parent;
                }
                None => break,
            },
        }
    }
    drop(cur);
    std::fs::remove_dir(path)
}

/// Unlink every entry of `dir` that is not a directory, up to its first subdirectory, whose name it returns.
fn first_subdir(dir: &OwnedFd) -> std::io::Result<Option<CString>> {
    let mut entries = rustix::fs::Dir::read_from(dir)?;
    while let Some(e) = entries.read() {
        let e = e?;
        let name: &CStr = e.file_name();
        if name == c"." || name == c".." {
            continue;
        }
        let is_dir = match e.file_type() {
            FileType::Unknown => rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)
                .map(|st| FileType::from_raw_mode(st.st_mode) == FileType::Directory)?,
            t => t == FileType::Directory,
        };
        if is_dir {
            return Ok(Some(name.to_owned()));
        }
        rustix::fs::unlinkat(dir, name, AtFlags::empty())?;
    }
    Ok(None)
}

fn close_from_to(first: RawFd, last: RawFd) {
    if first <= last {
        // SAFETY: closes fds of this (forked) process only.
        unsafe { libc::syscall(libc::SYS_close_range, first as libc::c_uint, last as libc::c_uint, 0) };
    }
}
