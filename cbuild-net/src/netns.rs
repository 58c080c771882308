//! Network namespaces: naming them (a file path, a NAME, or a PID), persisting them as `ip netns` does,
//! and running code inside one.
//!
//! setns(2) changes the namespace of the calling *thread*, and a socket stays bound to the namespace
//! it was created in. Opening a socket in another namespace is therefore a short synchronous visit
//! ([`visit`]): setns there, socket(2), setns back, with no await in between, so no task of the
//! (current-thread) runtime ever runs in the wrong namespace. Work that is not a short visit (unshare,
//! sysctl writes) runs on a dedicated std thread ([`in_netns`]).

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};

use crate::error::{Error, Result};
use crate::paths::check_name;

/// An open network namespace and how the user named it.
#[derive(Debug)]
pub struct NsFile {
    /// What the user gave (a path, a NAME's path, `/proc/PID/ns/net`), for messages and records.
    pub path: String,
    pub fd: OwnedFd,
    /// The namespace's inode number, as `ls -i /proc/PID/ns/net` shows.
    pub inode: u64,
}

/// `ioctl(NS_GET_NSTYPE)`: which kind of namespace an nsfs fd refers to.
const NS_GET_NSTYPE: libc::c_ulong = 0xb703;
/// `ioctl(SIOCGSKNS)` on a socket: an fd of the network namespace the socket belongs to.
const SIOCGSKNS: libc::c_ulong = 0x894c;

/// `<state>/<NAME>/ns/net`.
pub fn name_path(state: &Path, name: &str) -> PathBuf {
    state.join(name).join("ns").join("net")
}

/// Open a namespace given as a path (anything with a `/`) or a NAME.
pub fn open_spec(state: &Path, spec: &str) -> Result<NsFile> {
    if spec.contains('/') {
        open_path(Path::new(spec))
    } else {
        check_name("netns", "namespace name", spec)?;
        open_path(&name_path(state, spec)).map_err(|e| {
            if e.is_errno(libc::ENOENT) {
                e.hint(format!("create it with `cbuild-net netns add {spec}` or pass a namespace file"))
            } else {
                e
            }
        })
    }
}

/// Open `/proc/PID/ns/net`.
pub fn open_pid(pid: u32) -> Result<NsFile> {
    open_path(Path::new(&format!("/proc/{pid}/ns/net")))
}

/// Open a file and make sure it is a network namespace, not a regular file or another namespace type.
pub fn open_path(path: &Path) -> Result<NsFile> {
    let f = File::open(path).map_err(|e| Error::io("netns", path.display(), e))?;
    // SAFETY: NS_GET_NSTYPE takes no argument and only reads the fd.
    let kind = unsafe { libc::ioctl(f.as_raw_fd(), NS_GET_NSTYPE as _) };
    if kind != libc::CLONE_NEWNET {
        return Err(Error::new("netns", path.display(), "not a network namespace file")
            .hint("give a file like /proc/PID/ns/net or one bind-mounted by `ip netns add` / `cbuild-net netns add`"));
    }
    let inode = f.metadata().map_err(|e| Error::io("netns", path.display(), e))?.ino();
    Ok(NsFile { path: path.display().to_string(), fd: f.into(), inode })
}

/// The namespace this thread runs in: asked of a socket made for the purpose (`SIOCGSKNS`, ~3 µs),
/// rather than through `/proc/thread-self`, whose entries the kernel makes on a new process's first
/// look (~20 µs of a connect). Without CAP_NET_ADMIN over the namespace the ioctl is refused, and /proc
/// answers.
pub fn current() -> Result<NsFile> {
    let from_socket = || -> Option<NsFile> {
        // SAFETY: a socket and an ioctl on it; both fds are ours, the socket closed at once.
        let fd = unsafe {
            let sock = libc::socket(libc::AF_UNIX, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
            if sock < 0 {
                return None;
            }
            let fd = libc::ioctl(sock, SIOCGSKNS as _);
            libc::close(sock);
            if fd < 0 {
                return None;
            }
            OwnedFd::from_raw_fd(fd)
        };
        let inode = nix::sys::stat::fstat(fd.as_fd()).ok()?.st_ino;
        Some(NsFile { path: "current".into(), fd, inode })
    };
    if let Some(ns) = from_socket() {
        return Ok(ns);
    }
    let mut ns = open_path(Path::new("/proc/thread-self/ns/net"))?;
    ns.path = "current".into();
    Ok(ns)
}

/// Run `f` on this thread inside `ns`, then come back to `home` (this thread's own namespace, opened
/// at start). For short synchronous work only: opening a socket or a /proc/sys file, which then stay
/// bound to `ns`. A thread spawn costs far more than the two setns calls (tens of microseconds, and
/// on a busy machine a new thread may wait milliseconds for a CPU), which is why connect does this
/// instead of [`in_netns`]. `ns == None` means this process's own namespace: no setns at all.
///
/// Failing to come back would leave the process acting on the wrong namespace; it cannot happen for a
/// namespace we were in a moment ago, so it aborts rather than continue.
pub fn visit<T>(ns: Option<BorrowedFd<'_>>, home: BorrowedFd<'_>, f: impl FnOnce() -> Result<T>) -> Result<T> {
    let Some(fd) = ns else { return f() };
    setns(fd, CloneFlags::CLONE_NEWNET).map_err(|e| Error::errno("setns", "net", e))?;
    let r = f();
    if let Err(e) = setns(home, CloneFlags::CLONE_NEWNET) {
        eprintln!("cbuild-net: setns: back to own network namespace: {e}");
        std::process::abort();
    }
    r
}

/// Run `f` on a fresh thread that has joined `ns` (or on a fresh thread in this process's namespace
/// when `ns` is `None`, which costs nothing extra because callers run several of these in parallel).
pub fn in_netns<T: Send>(ns: Option<BorrowedFd<'_>>, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    std::thread::scope(|s| {
        s.spawn(move || {
            if let Some(fd) = ns {
                setns(fd, CloneFlags::CLONE_NEWNET).map_err(|e| Error::errno("setns", "net", e))?;
            }
            f()
        })
        .join()
        .unwrap_or_else(|_| Err(Error::new("setns", "net", "thread panicked")))
    })
}

/// `netns add NAME`: a new, empty network namespace bind-mounted at `<state>/NAME/ns/net`, on a
/// directory with shared propagation so mount namespaces created later still see it.
pub fn add(state: &Path, name: &str, log: &dyn Fn(&str, &str)) -> Result<PathBuf> {
    check_name("netns", "namespace name", name)?;
    if name == "net" {
        // <state>/net is cbuild-net's own directory (bridges, leases, the nft lock): a namespace there
        // would be a mount inside it, hidden from `netns ls`, and `ns` would clash with a bridge name.
        return Err(Error::new("netns", name, "reserved: <state>/net holds cbuild-net's own files"));
    }
    let _serial = serialize(state, true)?;
    let cdir = state.join(name);
    let dir = cdir.join("ns");
    let file = dir.join("net");
    // A symlink planted at <state>/NAME or <state>/NAME/ns would put the bind mounts (and a shared
    // mount point) on whatever it points at, outside the state dir.
    for d in [&cdir, &dir] {
        if std::fs::symlink_metadata(d).is_ok_and(|m| !m.is_dir()) {
            return Err(Error::new(
                "netns",
                d.display(),
                "a symbolic link or not a directory (refused in the state dir)",
            ));
        }
    }
    let made_cdir = !cdir.exists();
    let made_dir = !dir.exists();
    let mut undo = Undo::default();
    if made_cdir || made_dir {
        log("mkdir", &dir.display().to_string());
        std::fs::create_dir_all(&dir).map_err(|e| Error::io("mkdir", dir.display(), e))?;
        if made_cdir {
            undo.rmdirs.push(cdir.clone());
        }
        if made_dir {
            undo.rmdirs.insert(0, dir.clone());
        }
    }
    let r = (|| {
        log("make-shared", &dir.display().to_string());
        if !is_mountpoint(&dir) {
            mount(Some(&dir), &dir, None::<&str>, MsFlags::MS_BIND, None::<&str>)
                .map_err(|e| Error::errno("make-shared", dir.display(), e))?;
            undo.umount_dir = Some(dir.clone());
        }
        mount(None::<&str>, &dir, None::<&str>, MsFlags::MS_SHARED, None::<&str>)
            .map_err(|e| Error::errno("make-shared", dir.display(), e))?;
        log("create", &file.display().to_string());
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&file)
            .map_err(|e| Error::io("create", file.display(), e))?;
        undo.unlink = Some(file.clone());
        log("unshare", "net");
        let target = file.clone();
        in_netns(None, move || {
            unshare(CloneFlags::CLONE_NEWNET).map_err(|e| Error::errno("unshare", "net", e))?;
            mount(Some("/proc/thread-self/ns/net"), &target, None::<&str>, MsFlags::MS_BIND, None::<&str>)
                .map_err(|e| Error::errno("bind-mount", target.display(), e))
        })?;
        undo.umount_file = true;
        // While the undo below still covers every step: a stop signal held meanwhile fails it.
        crate::signals::check("netns", name)
    })();
    match r {
        Ok(()) => Ok(file),
        Err(e) => {
            if let Some(f) = &undo.unlink {
                if undo.umount_file {
                    let _ = umount2(f, MntFlags::MNT_DETACH);
                }
                if let Err(e) = std::fs::remove_file(f) {
                    eprintln!("cbuild-net: undo: {}: {e}", f.display());
                }
            }
            if let Some(d) = &undo.umount_dir {
                let _ = umount2(d, MntFlags::MNT_DETACH);
            }
            for d in &undo.rmdirs {
                let _ = std::fs::remove_dir(d);
            }
            Err(e)
        }
    }
}

/// `netns add` and `netns del` one at a time, under an exclusive flock on `<state>` itself (no tool locks
/// it otherwise), held through the undo: each judges from what it sees whether it made the directories
/// and whether `ns/` is a mount point, and an add that bound its namespace inside another add's `ns/`
/// mount lost it to that add's undo. `None`: no `<state>`, so nothing for a `del` to find.
fn serialize(state: &Path, create: bool) -> Result<Option<nix::fcntl::Flock<File>>> {
    let f = match File::open(state) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
            std::fs::create_dir_all(state).map_err(|e| Error::io("mkdir", state.display(), e))?;
            File::open(state)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        r => r,
    }
    .map_err(|e| Error::io("lock", state.display(), e))?;
    let l = nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| Error::errno("lock", state.display(), e))?;
    Ok(Some(l))
}

#[derive(Default)]
struct Undo {
    unlink: Option<PathBuf>,
    /// The namespace is bind-mounted on `unlink`'s file.
    umount_file: bool,
    umount_dir: Option<PathBuf>,
    rmdirs: Vec<PathBuf>,
}

/// `netns del NAME`: unmount and remove the file; remove the directories when nothing else is in them.
pub fn del(state: &Path, name: &str, log: &dyn Fn(&str, &str)) -> Result<()> {
    check_name("netns", "namespace name", name)?;
    let _serial = serialize(state, false)?;
    let file = name_path(state, name);
    for d in [state.join(name), state.join(name).join("ns")] {
        if std::fs::symlink_metadata(&d).is_ok_and(|m| !m.is_dir()) {
            return Err(Error::new(
                "netns",
                d.display(),
                "a symbolic link or not a directory (refused in the state dir)",
            ));
        }
    }
    // An empty regular file with nothing mounted on it is what a `netns add` killed before its bind
    // mount (SIGKILL: other signals are held) left: removed with the rest, or the NAME stays taken.
    // A namespace bound on the file is a regular file to lstat too (nsfs); a symlink (to another
    // namespace file, /run/netns/NAME say) is refused, never followed to unmount what it names.
    let meta = std::fs::symlink_metadata(&file);
    if meta.as_ref().is_ok_and(|m| !m.is_file()) {
        return Err(Error::new(
            "netns",
            file.display(),
            "a symbolic link or not a regular file (refused in the state dir)",
        ));
    }
    let leftover = meta.is_ok_and(|m| m.len() == 0) && !is_mountpoint(&file);
    if !leftover {
        // Refuse anything that is not one of ours, so a typo never unmounts something else.
        open_path(&file)?;
        log("umount", &file.display().to_string());
        umount2(&file, MntFlags::MNT_DETACH | MntFlags::UMOUNT_NOFOLLOW)
            .map_err(|e| Error::errno("umount", file.display(), e))?;
    }
    log("unlink", &file.display().to_string());
    std::fs::remove_file(&file).map_err(|e| Error::io("unlink", file.display(), e))?;
    let dir = file.parent().expect("ns dir");
    if std::fs::read_dir(dir).map(|mut d| d.next().is_none()).unwrap_or(false) {
        if is_mountpoint(dir) {
            let _ = umount2(dir, MntFlags::MNT_DETACH);
        }
        let _ = std::fs::remove_dir(dir);
        // Fails harmlessly while another tool's file is still there (the contract's rmdir rule).
        let _ = std::fs::remove_dir(state.join(name));
    }
    Ok(())
}

/// `netns ls`: every `<state>/*/ns/net` that is a live namespace file, as (NAME, path, inode).
pub fn list(state: &Path) -> Vec<(String, PathBuf, u64)> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(state) else { return out };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name == "net" || check_name("netns", "", &name).is_err() {
            continue;
        }
        let p = name_path(state, &name);
        if let Ok(ns) = open_path(&p) {
            out.push((name, p, ns.inode));
        }
    }
    out.sort();
    out
}

/// Whether `path` is itself a mount point (listed in this process's mountinfo, compared as bytes: a
/// path that is not UTF-8, here or anywhere else in the table, must not make every answer "no").
fn is_mountpoint(path: &Path) -> bool {
    let Ok(canon) = std::fs::canonicalize(path) else { return false };
    cbuild_mountinfo::read_self().unwrap_or_default().iter().any(|m| m.mount_point == canon)
}

/// The inode of the namespace an fd refers to.
pub fn inode_of(fd: BorrowedFd<'_>) -> u64 {
    nix::sys::stat::fstat(fd).map(|s| s.st_ino).unwrap_or(0)
}

/// Keep a borrowed fd usable across the API without lifetimes leaking everywhere.
pub fn borrow(ns: &Option<NsFile>) -> Option<BorrowedFd<'_>> {
    ns.as_ref().map(|n| n.fd.as_fd())
}
