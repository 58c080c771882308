//! Mount primitives used while building a root filesystem. Every target inside the new root is resolved
//! with openat2(RESOLVE_IN_ROOT), and mounted through its /proc/self/fd path, so a hostile rootfs with
//! symlinks (`/proc -> /etc`, `dev -> ../../host`) can never make us mount over a host path.

use crate::error::{Context, Error, Result, Step};
use nix::mount::{mount, MsFlags};
use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
const RESOLVE_IN_ROOT: u64 = 0x10;

fn openat2(dir: &OwnedFd, path: &Path, flags: i32, mode: u32) -> nix::Result<OwnedFd> {
    let c = CString::new(path.as_os_str().as_encoded_bytes()).map_err(|_| nix::errno::Errno::EINVAL)?;
    let how = OpenHow {
        flags: (flags | libc::O_CLOEXEC) as u64,
        mode: mode as u64,
        resolve: RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS,
    };
    // EAGAIN: a `..` in the path was resolved while a mount or rename happened anywhere on the machine,
    // so the kernel could not prove the lookup stayed inside the root; it asks the caller to retry.
    // Other containers starting at the same moment make that common on a busy host.
    let mut tries = 0;
    loop {
        let fd = unsafe {
            libc::syscall(libc::SYS_openat2, dir.as_raw_fd(), c.as_ptr(), &how as *const OpenHow, size_of::<OpenHow>())
        };
        if fd >= 0 {
            return Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) });
        }
        let e = nix::errno::Errno::last();
        tries += 1;
        if e != nix::errno::Errno::EAGAIN || tries == 100 {
            return Err(e);
        }
    }
}

/// The new root, held open so every path below it resolves inside it.
pub struct Root {
    pub path: PathBuf,
    fd: OwnedFd,
}

/// What a mount target must be.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File,
}

/// `/proc/self/fd/N`: the path through which mount(2) reaches an fd we resolved safely.
pub struct Target {
    fd: OwnedFd,
    pub shown: String,
}

impl Target {
    pub fn proc_path(&self) -> String {
        format!("/proc/self/fd/{}", self.fd.as_raw_fd())
    }

    /// The resolved directory, for *at(2) calls relative to it.
    pub fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Make directory `name` right below this one and open it to mount on. Only for a filesystem this
    /// process has just mounted (nothing of the image's can be there); `name` is one component.
    pub fn new_dir(&self, name: &str, step: Step) -> Result<Target> {
        let shown = format!("{}/{name}", self.shown);
        nix::sys::stat::mkdirat(&self.fd, name, nix::sys::stat::Mode::from_bits_truncate(0o755)).ctx(step, &shown)?;
        let flags = nix::fcntl::OFlag::O_PATH
            | nix::fcntl::OFlag::O_DIRECTORY
            | nix::fcntl::OFlag::O_NOFOLLOW
            | nix::fcntl::OFlag::O_CLOEXEC;
        let fd = nix::fcntl::openat(&self.fd, name, flags, nix::sys::stat::Mode::empty()).ctx(step, &shown)?;
        Ok(Target { fd, shown })
    }

    /// Device node `name` right below this directory, the same device as the host's `host`. Only for a
    /// filesystem this process has just mounted. mknod, as runc does: one call and no mount for the
    /// namespace to carry and tear down. Where mknod is refused (a user namespace; a device cgroup
    /// without `m`) the host's node is bind-mounted on an empty file instead, as bwrap does. A node the
    /// host lacks is left out.
    pub fn device(&self, name: &str, host: &str, try_mknod: bool, step: Step) -> Result<()> {
        use nix::sys::stat::{Mode, SFlag};
        let shown = format!("{}/{name}", self.shown);
        let st = match nix::sys::stat::stat(host) {
            Ok(st) => st,
            Err(nix::errno::Errno::ENOENT) => return Ok(()),
            Err(e) => return Err(Error::sys(step, host, e)),
        };
        if try_mknod {
            let kind = SFlag::from_bits_truncate(st.st_mode & libc::S_IFMT);
            let mode = Mode::from_bits_truncate(0o666);
            match nix::sys::stat::mknodat(&self.fd, name, kind, mode, st.st_rdev) {
                // mknod applies the umask; the node must be 0666 as on the host.
                Ok(()) => {
                    return nix::sys::stat::fchmodat(
                        &self.fd,
                        name,
                        mode,
                        nix::sys::stat::FchmodatFlags::NoFollowSymlink,
                    )
                    .ctx(step, &shown)
                }
                Err(nix::errno::Errno::EPERM) => {}
                Err(e) => return Err(Error::sys(step, &shown, e)),
            }
        }
        let flags = nix::fcntl::OFlag::O_CREAT
            | nix::fcntl::OFlag::O_EXCL
            | nix::fcntl::OFlag::O_WRONLY
            | nix::fcntl::OFlag::O_NOFOLLOW
            | nix::fcntl::OFlag::O_CLOEXEC;
        let fd = nix::fcntl::openat(&self.fd, name, flags, Mode::from_bits_truncate(0o644)).ctx(step, &shown)?;
        mount_at(Some(host), &Target { fd, shown }, None, MsFlags::MS_BIND, None, step)
    }
}

/// A path as the container sees it, relative to its root and cleaned as Docker cleans a mount's
/// destination: `/tmp/../opt` is `opt`, and `..` never climbs above the root. Empty for the root itself.
pub fn relative_inside(inside: &Path) -> PathBuf {
    let mut rel = PathBuf::new();
    for c in inside.components() {
        match c {
            Component::Normal(n) => rel.push(n),
            Component::ParentDir => {
                rel.pop();
            }
            _ => {}
        }
    }
    rel
}

impl Root {
    pub fn open(path: &Path) -> Result<Root> {
        let fd = nix::fcntl::open(
            path,
            nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .ctx(Step::Rootfs, path.display())?;
        Ok(Root { path: path.to_path_buf(), fd })
    }

    /// Resolve `inside` (an absolute path as the container sees it) to an O_PATH fd, creating missing
    /// directories (and the final file, for `Kind::File`) on the way, all inside the root.
    pub fn target(&self, inside: &Path, kind: Kind, step: Step) -> Result<Target> {
        self.target_at_depth(inside, kind, step, 0)
    }

    fn target_at_depth(&self, inside: &Path, kind: Kind, step: Step, depth: u32) -> Result<Target> {
        let rel = relative_inside(inside);
        let shown = format!("{}", self.path.join(&rel).display());
        if rel.as_os_str().is_empty() {
            let fd = openat2(&self.fd, Path::new("."), libc::O_PATH | libc::O_DIRECTORY, 0).ctx(step, &shown)?;
            return Ok(Target { fd, shown });
        }
        let want = if kind == Kind::Dir { libc::O_PATH | libc::O_DIRECTORY } else { libc::O_PATH };
        match openat2(&self.fd, &rel, want, 0) {
            Ok(fd) => return Ok(Target { fd, shown }),
            Err(nix::errno::Errno::ENOENT) => {}
            Err(e) => return Err(Error::sys(step, &shown, e)),
        }
        // Create what is missing, one component at a time, in its already-resolved parent.
        let mut parent = openat2(&self.fd, Path::new("."), libc::O_PATH | libc::O_DIRECTORY, 0).ctx(step, &shown)?;
        let comps: Vec<_> = rel.components().collect();
        let mut prefix = PathBuf::new();
        for (i, c) in comps.iter().enumerate() {
            let last = i + 1 == comps.len();
            let name = Path::new(c.as_os_str());
            if last && kind == Kind::File {
                let cname = CString::new(name.as_os_str().as_encoded_bytes()).unwrap();
                let fd = unsafe {
                    libc::openat(
                        parent.as_raw_fd(),
                        cname.as_ptr(),
                        libc::O_CREAT | libc::O_WRONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                        0o644,
                    )
                };
                let err = nix::errno::Errno::last();
                if fd < 0 && err == nix::errno::Errno::ELOOP && depth < 40 {
                    // A symlink to a missing file (an image's `/etc/resolv.conf` -> `/run/...`).
                    self.make_link_target(&parent, &prefix, name, Kind::File, step, &shown, depth)?;
                } else if fd < 0 && err != nix::errno::Errno::EEXIST {
                    return Err(Error::sys(step, &shown, err));
                }
                if fd >= 0 {
                    unsafe { libc::close(fd) };
                }
            } else {
                match nix::sys::stat::mkdirat(&parent, name, nix::sys::stat::Mode::from_bits_truncate(0o755)) {
                    Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
                    Err(e) => return Err(Error::sys(step, &shown, e)),
                }
            }
            let flags = if last { want } else { libc::O_PATH | libc::O_DIRECTORY };
            // The path so far resolved again from the container's root: a symlink on the way (`/a/b` ->
            // `/c`) means what it means inside the container, `/c`, not `/a/c`, and never leads outside.
            let resolved = openat2(&self.fd, &prefix.join(name), flags, 0);
            parent = match resolved {
                // A symlink to a missing directory (`/mnt` -> `/opt/data`); then the path resolves through it.
                Err(nix::errno::Errno::ENOENT) if depth < 40 && !(last && kind == Kind::File) => {
                    self.make_link_target(&parent, &prefix, name, Kind::Dir, step, &shown, depth)?;
                    openat2(&self.fd, &prefix.join(name), flags, 0).ctx(step, &shown)?
                }
                r => r.ctx(step, &shown)?,
            };
            prefix.push(name);
        }
        Ok(Target { fd: parent, shown })
    }

    /// What the symlink `name` in `parent` (the container's `/<prefix>`) points to, made inside the root as
    /// `kind`, as runc's MkdirAllInRoot does: a relative link from the symlink's own directory, an absolute
    /// one from the container's root. `depth` bounds a chain of such links (as the kernel's 40).
    #[allow(clippy::too_many_arguments)]
    fn make_link_target(
        &self,
        parent: &OwnedFd,
        prefix: &Path,
        name: &Path,
        kind: Kind,
        step: Step,
        shown: &str,
        depth: u32,
    ) -> Result<()> {
        let link = nix::fcntl::readlinkat(parent, name).ctx(step, shown)?;
        let to = Path::new("/").join(prefix).join(Path::new(&link));
        self.target_at_depth(&to, kind, step, depth + 1).map(drop)
    }
}

/// mount(2) with the step and object named on failure.
pub fn mount_at(
    source: Option<&str>,
    target: &Target,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
    step: Step,
) -> Result<()> {
    crate::log::step(step, &target.shown);
    mount(source, target.proc_path().as_str(), fstype, flags, data).ctx(step, &target.shown)
}

/// Bind-remount read-only, keeping the flags the kernel may have locked (nosuid, nodev, noexec, atime):
/// in a user namespace a remount that clears a locked flag fails with EPERM.
pub fn remount_ro(path: &str, step: Step) -> Result<()> {
    use nix::sys::statvfs::FsFlags;
    let c = CString::new(path).map_err(|_| Error::new(step, path, "contains a NUL byte"))?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a NUL-terminated path and a writable statvfs.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(Error::sys(step, path, nix::errno::Errno::last()));
    }
    // The raw bits: the kernel reports relatime whatever the C library, and nix names (and keeps) that
    // bit only for glibc.
    const ST_RELATIME: FsFlags = FsFlags::from_bits_retain(0x1000);
    let f = FsFlags::from_bits_retain(st.f_flag);
    let mut flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
    for (fs, ms) in [
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        (ST_RELATIME, MsFlags::MS_RELATIME),
    ] {
        if f.contains(fs) {
            flags |= ms;
        }
    }
    crate::log::step(step, path);
    mount(None::<&str>, path, None::<&str>, flags, None::<&str>).ctx(step, path)
}

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// Read-only for a mount and every mount below it (mount_setattr with AT_RECURSIVE): a plain bind
/// remount only changes the top one, leaving e.g. the host's /sys/fs/cgroup writable under a read-only
/// /sys. Falls back to the top-level remount on kernels before 5.12.
pub fn make_ro_recursive(path: &str, step: Step) -> Result<()> {
    crate::log::step(step, format!("{path} (recursive read-only)"));
    let c = CString::new(path).map_err(|_| Error::new(step, path, "NUL in path"))?;
    let attr = MountAttr { attr_set: 0x1 /* MOUNT_ATTR_RDONLY */, attr_clr: 0, propagation: 0, userns_fd: 0 };
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            c.as_ptr(),
            libc::AT_RECURSIVE as libc::c_uint,
            &attr as *const MountAttr,
            size_of::<MountAttr>(),
        )
    };
    if r == 0 {
        return Ok(());
    }
    match nix::errno::Errno::last() {
        nix::errno::Errno::ENOSYS => remount_ro(path, step),
        e => Err(Error::sys(step, path, e)),
    }
}

impl Target {
    /// Create a symlink `name -> to` inside this directory, never through a host path.
    pub fn symlink(&self, name: &str, to: &str, step: Step) -> Result<()> {
        nix::unistd::symlinkat(to, &self.fd, name).ctx(step, format!("{}/{name}", self.shown))
    }
}

/// statx(2) of the file `fd` refers to (AT_EMPTY_PATH): its `stx_attributes` tell a mount's root
/// (STATX_ATTR_MOUNT_ROOT, 5.8+).
pub fn statx_fd(fd: std::os::fd::RawFd, mask: u32) -> nix::Result<libc::statx> {
    let mut st: libc::statx = unsafe { std::mem::zeroed() };
    // The system call itself: musl wraps statx only from 1.2.5 on (Debian 12 has 1.2.3).
    // SAFETY: an empty path with AT_EMPTY_PATH stats fd itself; st is a writable statx.
    let r = unsafe {
        libc::syscall(libc::SYS_statx, fd, c"".as_ptr(), libc::AT_EMPTY_PATH, mask, &mut st as *mut libc::statx)
    };
    nix::errno::Errno::result(r).map(|_| st)
}

/// Parse tmpfs options the way mount(8) does: flag words become MsFlags, the rest is data.
pub fn parse_options(opts: &str) -> std::result::Result<(MsFlags, String), String> {
    // Docker's defaults for a tmpfs (`--tmpfs /tmp` is nosuid,nodev,noexec); `suid`, `dev`, `exec` undo them.
    let mut flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    let mut data = Vec::new();
    for o in opts.split(',').filter(|o| !o.is_empty()) {
        match o {
            "ro" => flags |= MsFlags::MS_RDONLY,
            "rw" => flags &= !MsFlags::MS_RDONLY,
            "nosuid" => flags |= MsFlags::MS_NOSUID,
            "suid" => flags &= !MsFlags::MS_NOSUID,
            "nodev" => flags |= MsFlags::MS_NODEV,
            "dev" => flags &= !MsFlags::MS_NODEV,
            "noexec" => flags |= MsFlags::MS_NOEXEC,
            "exec" => flags &= !MsFlags::MS_NOEXEC,
            "noatime" => flags |= MsFlags::MS_NOATIME,
            "relatime" => flags |= MsFlags::MS_RELATIME,
            "strictatime" => flags |= MsFlags::MS_STRICTATIME,
            "sync" => flags |= MsFlags::MS_SYNCHRONOUS,
            o if o.starts_with("size=")
                || o.starts_with("mode=")
                || o.starts_with("uid=")
                || o.starts_with("gid=")
                || o.starts_with("nr_inodes=")
                || o.starts_with("nr_blocks=") =>
            {
                data.push(o.to_string())
            }
            o => return Err(format!("unknown mount option {o:?}")),
        }
    }
    Ok((flags, data.join(",")))
}
