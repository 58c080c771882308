//! The container's filesystem view, built top to bottom in the new mount namespace: private propagation,
//! the root bind, /proc, a minimal /dev, a read-only /sys, the user's tmpfs and bind mounts, pivot_root
//! (old root detached — never chroot, which a root process can climb out of), masked and read-only paths,
//! and finally the read-only root.

use crate::error::{Context, Error, Result, Step};
use crate::mounts::{make_ro_recursive, mount_at, parse_options, remount_ro, Kind, Root};
use crate::spec::{Propagation, RunSpec};
use nix::fcntl::OFlag;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::stat::Mode;
use std::os::fd::RawFd;
use std::path::Path;

/// runc's default masked paths: kernel information a container has no business reading.
pub const MASKED: [&str; 12] = [
    "/proc/acpi",
    "/proc/asound",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    // RAPL energy counters: a side channel on what other processes compute (CVE-2020-8694); Docker masks it.
    "/sys/devices/virtual/powercap",
];

/// runc's default read-only paths: kernel knobs that are global, not per container.
pub const READONLY: [&str; 5] = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"];

/// Device nodes every container gets, the host's own (see `Target::device`).
const DEVICES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];

const NOSUID_NODEV_NOEXEC: MsFlags = MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV).union(MsFlags::MS_NOEXEC);

/// Everything mount-related, run inside the new mount namespace before exec.
pub fn setup(spec: &RunSpec, in_userns: bool, cgroups: &crate::cgroupfs::Placement) -> Result<()> {
    // Our mounts must not propagate back to the host, nor the host's later mounts into us; unless a bind
    // asks for [r]slave: then the tree starts as the host's slave (still nothing goes back), the new root
    // and all under it is made private again before the binds, and only those binds keep receiving.
    let slave_tree = spec.binds.iter().any(|b| b.propagation == Propagation::Slave);
    let tree = if slave_tree { MsFlags::MS_SLAVE } else { MsFlags::MS_PRIVATE };
    crate::log::step(Step::Propagation, "/");
    mount(None::<&str>, "/", None::<&str>, MsFlags::MS_REC | tree, None::<&str>).ctx(Step::Propagation, "/")?;

    let Some(rootfs) = &spec.rootfs else {
        // No new root: behave like `unshare --mount-proc`, so tools like ps see the new pid namespace.
        if spec.new_ns.contains(&crate::namespaces::NsType::Pid) {
            crate::log::step(Step::MountProc, "/proc");
            mount(Some("proc"), "/proc", Some("proc"), NOSUID_NODEV_NOEXEC, None::<&str>)
                .ctx(Step::MountProc, "/proc")?;
        }
        return user_mounts_on_host(spec);
    };

    // Bind sources are host paths: opened now, before the new root is attached over its directory, which
    // would hide whatever a source path has under it (cbuild-run keeps a container's own /etc/hosts in
    // that very directory), and before anything of the image's could be in the way.
    let sources = spec
        .binds
        .iter()
        .map(|b| {
            nix::fcntl::open(
                &b.src,
                nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_CLOEXEC,
                nix::sys::stat::Mode::empty(),
            )
            .ctx(Step::Bind, b.src.display())
        })
        .collect::<Result<Vec<_>>>()?;

    // pivot_root needs the new root to be a mount point: the detached mount we were handed, attached
    // here (in our own mount namespace only), or the directory bound onto itself.
    if let Some(fd) = spec.rootfs_fd {
        attach_detached(fd, rootfs)?;
    } else {
        crate::log::step(Step::MountRoot, rootfs.display());
        mount(Some(rootfs.as_path()), rootfs.as_path(), None::<&str>, MsFlags::MS_BIND | MsFlags::MS_REC, None::<&str>)
            .ctx(Step::MountRoot, rootfs.display())?;
    }
    let root = Root::open(rootfs)?;

    mount_proc(&root, spec, in_userns)?;
    mount_dev(&root, spec, in_userns)?;
    mount_sys(&root, spec, cgroups)?;
    for t in &spec.tmpfs {
        let (flags, data) = parse_options(&t.options).map_err(|e| Error::new(Step::Tmpfs, t.dst.display(), e))?;
        let target = root.target(&t.dst, Kind::Dir, Step::Tmpfs)?;
        mount_at(Some("tmpfs"), &target, Some("tmpfs"), flags, Some(&data), Step::Tmpfs)?;
    }
    if slave_tree {
        // Everything mounted so far (the root bound onto itself, /proc, /sys and the binds made of them)
        // came from the slave tree: private again, so that only the [r]slave binds below receive.
        mount(None::<&str>, rootfs.as_path(), None::<&str>, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None::<&str>)
            .ctx(Step::Propagation, rootfs.display())?;
    }
    for (b, src) in spec.binds.iter().zip(&sources) {
        let dir = nix::sys::stat::fstat(src).ctx(Step::Bind, b.src.display())?.st_mode & libc::S_IFMT == libc::S_IFDIR;
        let kind = if dir { Kind::Dir } else { Kind::File };
        let target = root.target(&b.dst, kind, Step::Bind)?;
        let src = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(src));
        mount_at(Some(&src), &target, None, MsFlags::MS_BIND | MsFlags::MS_REC, None, Step::Bind)?;
        // Resolve again: the fd from before the mount still names the directory underneath it.
        let mounted = root.target(&b.dst, kind, Step::Bind)?;
        // A bind of a slave is a slave, of a private mount private: only a private bind in a slave tree
        // needs telling.
        if slave_tree && b.propagation == Propagation::Private {
            make_private(&mounted.proc_path(), &target.shown)?;
        }
        if b.readonly {
            make_ro_recursive(&mounted.proc_path(), Step::Bind)?;
        }
    }

    pivot(rootfs)?;

    if !spec.no_mask {
        mask_paths()?;
    }
    if spec.read_only {
        if let Some(w) = &spec.workdir {
            crate::process::make_workdir(w)?;
        }
        remount_ro("/", Step::ReadonlyRoot)?;
    }
    Ok(())
}

/// `--rootfs-fd N`: fd N must be the root of a mount (what fsmount or open_tree return), outside the fds
/// passed to the command. It is made close-on-exec: the command never holds it.
pub fn check_detached(fd: RawFd, preserve_fds: u32) -> Result<()> {
    crate::protocol::take_handed_fd(fd, preserve_fds, Step::MountRoot)?;
    let what = format!("fd {fd}");
    let st = crate::mounts::statx_fd(fd, libc::STATX_TYPE).map_err(|e| Error::sys(Step::MountRoot, &what, e))?;
    let mount_root = st.stx_attributes & libc::STATX_ATTR_MOUNT_ROOT as u64 != 0;
    if u32::from(st.stx_mode) & libc::S_IFMT != libc::S_IFDIR || !mount_root {
        return Err(Error::new(Step::MountRoot, what, "not the root directory of a mount")
            .hint("cbuild-overlay mount --fd N -- ... hands over a detached overlay"));
    }
    Ok(())
}

/// move_mount the detached mount at `fd` onto `at`. Only this mount namespace sees it (propagation was
/// made private just before), and it goes away with the namespace.
fn attach_detached(fd: RawFd, at: &Path) -> Result<()> {
    crate::log::step(Step::MountRoot, format!("{} (detached mount, fd {fd})", at.display()));
    let cat = std::ffi::CString::new(at.as_os_str().as_encoded_bytes())
        .map_err(|_| Error::new(Step::MountRoot, at.display(), "contains a NUL byte"))?;
    const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
    let r = unsafe {
        libc::syscall(libc::SYS_move_mount, fd, c"".as_ptr(), libc::AT_FDCWD, cat.as_ptr(), MOVE_MOUNT_F_EMPTY_PATH)
    };
    let e = nix::errno::Errno::last();
    let _ = nix::unistd::close(fd);
    if r != 0 {
        return Err(Error::sys(Step::MountRoot, at.display(), e));
    }
    // A clone (open_tree) of a mount on a shared host mount is in that mount's peer group, and
    // pivot_root refuses a shared new root: make it private, as the rest of our namespace is.
    mount(None::<&str>, at, None::<&str>, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None::<&str>)
        .ctx(Step::MountRoot, at.display())
}

fn mount_proc(root: &Root, spec: &RunSpec, in_userns: bool) -> Result<()> {
    let target = root.target(Path::new("/proc"), Kind::Dir, Step::MountProc)?;
    match mount_at(Some("proc"), &target, Some("proc"), NOSUID_NODEV_NOEXEC, None, Step::MountProc) {
        Ok(()) => Ok(()),
        // A user namespace without its own pid namespace may not mount a procfs of the host's pid
        // namespace; show the host's /proc then, as bwrap does.
        Err(_) if in_userns && !spec.new_ns.contains(&crate::namespaces::NsType::Pid) => {
            mount_at(Some("/proc"), &target, None, MsFlags::MS_BIND | MsFlags::MS_REC, None, Step::MountProc)
        }
        Err(e) => Err(e),
    }
}

fn mount_dev(root: &Root, spec: &RunSpec, in_userns: bool) -> Result<()> {
    let dev = root.target(Path::new("/dev"), Kind::Dir, Step::MountDev)?;
    mount_at(
        Some("tmpfs"),
        &dev,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME,
        Some("mode=755,size=65536k"),
        Step::MountDev,
    )?;
    // Resolve /dev again: the fd from before the tmpfs mount names the image's directory underneath it,
    // and a plain host path would follow an image's `dev -> /host/dir` symlink out of the root. All
    // below is made in that fresh tmpfs, relative to it.
    let devdir = root.target(Path::new("/dev"), Kind::Dir, Step::MountDev)?;
    for d in DEVICES {
        devdir.device(d, &format!("/dev/{d}"), !in_userns, Step::MountDev)?;
    }
    let pts = devdir.new_dir("pts", Step::MountDev)?;
    // gid=5 (tty) only exists when it is mapped; in a user namespace leave the group to the kernel.
    let pts_opts =
        if in_userns { "newinstance,ptmxmode=0666,mode=620" } else { "newinstance,ptmxmode=0666,mode=620,gid=5" };
    mount_at(
        Some("devpts"),
        &pts,
        Some("devpts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some(pts_opts),
        Step::MountDev,
    )?;
    let shm = devdir.new_dir("shm", Step::MountDev)?;
    let shm_opts = format!("mode=1777,size={}k", spec.shm_size_kib.unwrap_or(65536));
    mount_at(Some("shm"), &shm, Some("tmpfs"), NOSUID_NODEV_NOEXEC, Some(&shm_opts), Step::MountDev)?;
    if spec.new_ns.contains(&crate::namespaces::NsType::Ipc) {
        // POSIX message queues belong to the ipc namespace; a fresh one only makes sense with a new ipc ns.
        let mq = devdir.new_dir("mqueue", Step::MountDev)?;
        // Not fatal: some kernels are built without mqueue.
        let _ = mount_at(Some("mqueue"), &mq, Some("mqueue"), NOSUID_NODEV_NOEXEC, None, Step::MountDev);
    }
    for (link, to) in [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        devdir.symlink(link, to, Step::MountDev)?;
    }
    Ok(())
}

fn mount_sys(root: &Root, spec: &RunSpec, cgroups: &crate::cgroupfs::Placement) -> Result<()> {
    let target = root.target(Path::new("/sys"), Kind::Dir, Step::MountSys)?;
    let ro = NOSUID_NODEV_NOEXEC | MsFlags::MS_RDONLY;
    // A fresh sysfs shows the devices of the network namespace we are in (made for us, or joined), and
    // none of the host's mounts under /sys (its whole cgroup tree); the kernel allows it when we hold
    // CAP_SYS_ADMIN over that network namespace's owner. Otherwise (rootless in a namespace we do not
    // own) bind the host's read-only, as runc and bwrap do.
    if mount_at(Some("sysfs"), &target, Some("sysfs"), ro, None, Step::MountSys).is_err() {
        mount_at(Some("/sys"), &target, None, MsFlags::MS_BIND | MsFlags::MS_REC, None, Step::MountSys)?;
        make_ro_recursive(&root.target(Path::new("/sys"), Kind::Dir, Step::MountSys)?.proc_path(), Step::MountSys)?;
    }
    // With a cgroup namespace of its own, the container sees its own cgroups there, as with Docker.
    if spec.new_ns.contains(&crate::namespaces::NsType::Cgroup) {
        crate::cgroupfs::mount(root, cgroups)?;
    }
    Ok(())
}

/// Without a new root the user's tmpfs and binds go on the host paths, inside our private namespace.
fn user_mounts_on_host(spec: &RunSpec) -> Result<()> {
    for t in &spec.tmpfs {
        let (flags, data) = parse_options(&t.options).map_err(|e| Error::new(Step::Tmpfs, t.dst.display(), e))?;
        crate::log::step(Step::Tmpfs, t.dst.display());
        mount(Some("tmpfs"), &t.dst, Some("tmpfs"), flags, Some(data.as_str())).ctx(Step::Tmpfs, t.dst.display())?;
    }
    for b in &spec.binds {
        crate::log::step(Step::Bind, b.dst.display());
        mount(Some(&b.src), &b.dst, None::<&str>, MsFlags::MS_BIND | MsFlags::MS_REC, None::<&str>)
            .ctx(Step::Bind, b.dst.display())?;
        if b.propagation == Propagation::Private {
            make_private(&b.dst.to_string_lossy(), &b.dst.display())?;
        }
        if b.readonly {
            make_ro_recursive(&b.dst.to_string_lossy(), Step::Bind)?;
        }
    }
    Ok(())
}

/// A bind made private, all the way down (binds are recursive).
fn make_private(path: &str, shown: &dyn std::fmt::Display) -> Result<()> {
    mount(None::<&str>, path, None::<&str>, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None::<&str>).ctx(Step::Bind, shown)
}

/// pivot_root(".", ".") then detach the old root stacked underneath: no directory for the old root is
/// needed inside the image, and nothing of the host stays reachable.
fn pivot(rootfs: &Path) -> Result<()> {
    crate::log::step(Step::PivotRoot, rootfs.display());
    // The old root, to stand in after the pivot: "." would then be the new root, and a recursive change
    // of propagation there would reach the container's own mounts ([r]slave binds) too.
    let old_root = nix::fcntl::open("/", OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty())
        .ctx(Step::PivotRoot, "/")?;
    nix::unistd::chdir(rootfs).ctx(Step::PivotRoot, rootfs.display())?;
    nix::unistd::pivot_root(".", ".").ctx(Step::PivotRoot, rootfs.display())?;
    // The old root is now mounted on top of "/"; make it private so the detach does not propagate, then
    // detach it.
    nix::unistd::fchdir(&old_root).ctx(Step::PivotRoot, "old root")?;
    drop(old_root);
    mount(None::<&str>, ".", None::<&str>, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None::<&str>)
        .ctx(Step::PivotRoot, "old root")?;
    umount2(".", MntFlags::MNT_DETACH).ctx(Step::PivotRoot, "old root")?;
    nix::unistd::chdir("/").ctx(Step::PivotRoot, "/")
}

fn mask_paths() -> Result<()> {
    for p in MASKED {
        let Ok(md) = std::fs::metadata(p) else { continue };
        crate::log::step(Step::Mask, p);
        let r = if md.is_dir() {
            mount(Some("tmpfs"), p, Some("tmpfs"), MsFlags::MS_RDONLY, None::<&str>)
        } else {
            mount(Some("/dev/null"), p, None::<&str>, MsFlags::MS_BIND, None::<&str>)
        };
        r.ctx(Step::Mask, p)?;
    }
    for p in READONLY {
        if !Path::new(p).exists() {
            continue;
        }
        mount(Some(p), p, None::<&str>, MsFlags::MS_BIND | MsFlags::MS_REC, None::<&str>).ctx(Step::Readonly, p)?;
        make_ro_recursive(p, Step::Readonly)?;
    }
    Ok(())
}
