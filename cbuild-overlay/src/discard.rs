//! `mount --fd N --rm`: a throw-away writable layer, as `docker run --rm`'s. The upper and work dirs go
//! once the command chain that holds the mount has exited, removed by a child forked before the exec, so
//! the caller neither waits for the removal nor starts a process of its own for it (an `rm -rf` is a
//! whole program start, ~1 ms of CPU here; a fork of this small process is ~0.1 ms).
//!
//! The remover:
//! - waits on a pidfd of the chain (this process, after its exec): readable when the chain has exited,
//!   whatever it became and whoever reaps it. The container need not be gone with it: started without a
//!   pid namespace (`cbuild-ns run` without `--pid`), a process of it can live on, holding the mount, and
//!   change the upper dir while it is being removed;
//! - holds an exclusive flock on the upper dir from before the fork until it is done: a sign of life for
//!   whoever cleans up after crashes (`cbuild-rm --prune` leaves a locked upper dir alone);
//! - is in its own session, so a terminal's ^C or a kill of the caller's process group does not stop it
//!   half-way (one that came before the setsid is dropped: it ignores HUP, INT, QUIT and TERM), and holds
//!   no fd of the caller but its stdin/out/err, pointed at /dev/null;
//! - removes with its own nofile limit at 1024: std's `remove_dir_all` recurses a level per directory, so a
//!   tree deeper than that ends with EMFILE rather than past the stack's end, and [`remove_deep`], which
//!   keeps below the fd limit at any depth and never leaves the tree however it is moved meanwhile,
//!   finishes what is left (rm(1) is no help there: busybox's gives up past PATH_MAX).

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

/// One dir on the walk's way down from the start dir: its name in the dir above, what it is (dev, ino),
/// and an fd of it while the fd limit allows.
struct Level {
    name: CString,
    dev: u64,
    ino: u64,
    fd: Option<OwnedFd>,
}

/// The levels below `floor` (a level whose fd was held when the scope began) keep their fds, once the fd
/// limit is hit, only at multiples of `every` counted from it; `every` doubles as the depth needs.
struct Scope {
    floor: usize,
    every: usize,
}

/// The dirs from the start dir (level 0) down to the one being emptied (the last), whose fds are always
/// held. The scopes nest: the start dir's, and one for each run of levels opened again from a held one,
/// so a run longer than the fds left is thinned on its own spacing rather than the whole chain's (with one
/// spacing for all, going back up a chain of a million levels opened each level again a thousand times).
struct Chain {
    levels: Vec<Level>,
    scopes: Vec<Scope>,
}

/// Remove `path` whole, whatever its depth: down the first subdirectory each time, unlinking the rest on
/// the way, and back up once a dir is empty. A dir is listed again each time the walk returns to it, so it
/// is for what `remove_dir_all` left past its fd limit (a deep chain), not for whole trees.
///
/// The tree may be changing meanwhile: a container started without a pid namespace can outlive the chain
/// that held the mount, and move the subtree the walk is in. So the walk never opens `..` (whose answer
/// depends on where the dir is now, and took the walk above `path`): it goes back up to fds it holds, and
/// every fd it holds was opened by name, `O_NOFOLLOW`, from another one, starting at `path`, so it cannot
/// leave the tree whatever moves. A level whose fd it let go (past the fd limit) is opened again by name
/// from the nearest held one above and must be the same dir (dev, ino) as on the way down; where it is not
/// (moved), the walk goes on from the last level that is, which lists its dir again.
fn remove_deep(path: &Path) -> std::io::Result<()> {
    let root = rustix::fs::openat(CWD, path, DIR, Mode::empty())?;
    let st = rustix::fs::fstat(&root)?;
    let mut chain = Chain {
        levels: vec![Level { name: CString::default(), dev: st.st_dev, ino: st.st_ino, fd: Some(root) }],
        scopes: vec![Scope { floor: 0, every: 1 }],
    };
    loop {
        match chain.retry(|ls| first_subdir(last_fd(ls)))? {
            Some(name) => chain.descend(name)?,
            None if chain.levels.len() == 1 => break,
            None => {
                let name = chain.levels.pop().expect("below the start dir").name;
                // Not the same dir any more above: go on from where the walk is sure, which lists it again.
                if !chain.reopen()? {
                    continue;
                }
                match rustix::fs::unlinkat(last_fd(&chain.levels), name.as_c_str(), AtFlags::REMOVEDIR) {
                    // Moved away meanwhile: wherever it went in the tree, a later listing finds it.
                    Ok(()) | Err(rustix::io::Errno::NOENT) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
    }
    drop(chain);
    std::fs::remove_dir(path)
}

impl Chain {
    /// Open `name` below the last level and make it the last.
    fn descend(&mut self, name: CString) -> std::io::Result<()> {
        let fd = self.retry(|ls| rustix::fs::openat(last_fd(ls), name.as_c_str(), DIR, Mode::empty()))?;
        let st = rustix::fs::fstat(&fd)?;
        self.levels.push(Level { name, dev: st.st_dev, ino: st.st_ino, fd: Some(fd) });
        Ok(())
    }

    /// Hold the last level's fd again (after a pop), opening the levels let go by name from the nearest
    /// held one above. False when one of them is not the dir it was (moved): the levels from there on are
    /// dropped.
    fn reopen(&mut self) -> std::io::Result<bool> {
        let last = self.levels.len() - 1;
        // Scopes wholly below the last level are done with.
        while self.scopes.len() > 1 && self.scopes.last().is_some_and(|s| s.floor >= last) {
            self.scopes.pop();
        }
        let held = self.levels.iter().rposition(|l| l.fd.is_some()).expect("level 0 is held");
        if held == last {
            return Ok(true);
        }
        // A scope whose floor was let go is inside the new one.
        while self.scopes.len() > 1 && self.scopes.last().is_some_and(|s| s.floor > held) {
            self.scopes.pop();
        }
        match self.scopes.last_mut() {
            Some(s) if s.floor == held => s.every = 1,
            _ => self.scopes.push(Scope { floor: held, every: 1 }),
        }
        for i in held + 1..=last {
            let (above, below) = self.levels.split_at_mut(i);
            let l = &mut below[0];
            // Only `above` may lose fds meanwhile, and never its last, the dir this opens from.
            let fd = match retry_emfile(&mut self.scopes, above, |ls| {
                rustix::fs::openat(last_fd(ls), l.name.as_c_str(), DIR, Mode::empty())
            }) {
                Ok(fd) => fd,
                Err(rustix::io::Errno::NOENT | rustix::io::Errno::NOTDIR | rustix::io::Errno::LOOP) => {
                    self.truncate(i);
                    return Ok(false);
                }
                Err(e) => return Err(e.into()),
            };
            let st = rustix::fs::fstat(&fd)?;
            if (st.st_dev, st.st_ino) != (l.dev, l.ino) {
                self.truncate(i);
                return Ok(false);
            }
            l.fd = Some(fd);
        }
        Ok(true)
    }

    /// Keep levels `..len` and the scopes that still have levels below their floor.
    fn truncate(&mut self, len: usize) {
        self.levels.truncate(len);
        while self.scopes.len() > 1 && self.scopes.last().is_some_and(|s| s.floor + 1 >= len) {
            self.scopes.pop();
        }
    }

    /// `op`, again after letting fds go each time it fails for want of one (EMFILE).
    fn retry<T>(&mut self, op: impl FnMut(&[Level]) -> rustix::io::Result<T>) -> std::io::Result<T> {
        retry_emfile(&mut self.scopes, &mut self.levels, op).map_err(Into::into)
    }
}

/// The fd of the last level, which is always held.
fn last_fd(levels: &[Level]) -> &OwnedFd {
    levels.last().and_then(|l| l.fd.as_ref()).expect("the last level is held")
}

/// `op` on `levels`, again after each EMFILE that [`let_go`] could free an fd for; its error once nothing
/// is left to let go.
fn retry_emfile<T>(
    scopes: &mut [Scope],
    levels: &mut [Level],
    mut op: impl FnMut(&[Level]) -> rustix::io::Result<T>,
) -> rustix::io::Result<T> {
    loop {
        match op(levels) {
            Err(rustix::io::Errno::MFILE) if let_go(scopes, levels) => {}
            r => return r,
        }
    }
}

/// Close fds of levels between the first and the last, innermost scope first: those off its spacing
/// (what was held since the last time), then, while that is less than half of its held ones, those off
/// twice the spacing. Doubling only then keeps a spacing that the depth needs: doubling at each call
/// halved the held levels each time while the depth grew by a few, until none were left to come back
/// up to but the start dir. False when none is left to close.
fn let_go(scopes: &mut [Scope], levels: &mut [Level]) -> bool {
    let last = levels.len().saturating_sub(1);
    for scope in scopes.iter_mut().rev() {
        let first = scope.floor + 1;
        let held = levels.iter().take(last).skip(first).filter(|l| l.fd.is_some()).count();
        if held == 0 {
            continue;
        }
        let mut closed = 0;
        // Ends: once `every` passes the range, all of it is off the spacing.
        loop {
            for (i, l) in levels.iter_mut().enumerate().take(last).skip(first) {
                if (i - scope.floor) % scope.every != 0 && l.fd.take().is_some() {
                    closed += 1;
                }
            }
            if closed * 2 >= held {
                return true;
            }
            scope.every = scope.every.saturating_mul(2);
        }
    }
    false
}

/// Unlink every entry of `dir` that is not a directory, up to its first subdirectory, whose name it returns.
fn first_subdir(dir: &OwnedFd) -> rustix::io::Result<Option<CString>> {
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
