//! `--cgroup-fd N`: create the container's first process directly inside a cgroup2 directory.
//!
//! Moving a process into a cgroup2 group afterwards (a write to `cgroup.procs`) write-locks the kernel's
//! global `cgroup_threadgroup_rwsem`, and after a quiet moment that lock first waits for an RCU grace
//! period: ~10–20 ms on this kind of machine, most of a container start. clone3's CLONE_INTO_CGROUP
//! (Linux ≥ 5.7) places the child at fork time under the same lock's read side, which costs nothing.
//! `cbuild-cgroup exec NAME --cgroup-fd N` hands the directory over instead of joining it itself; this
//! module takes it from there. The cgroup namespace (`--cgroup`) is then made by the child with
//! unshare once it is inside the group, so that the group is the namespace's root (clone makes
//! namespaces before it places the child, which would root the namespace at our own cgroup).

use crate::error::{Error, Result, Step};
use std::os::fd::RawFd;

const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;
/// CLONE_INTO_CGROUP, a clone3-only flag (bit 33: it does not fit clone(2)'s int).
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// Check fd N: a cgroup2 directory outside the fds passed to the command, or /dev/null, which
/// `cbuild-cgroup exec --cgroup-fd` hands over on a host without a cgroup2 tree (→ `None`: nothing to
/// join). It is made close-on-exec: the command never sees it.
pub fn check(fd: RawFd, preserve_fds: u32) -> Result<Option<RawFd>> {
    crate::protocol::take_handed_fd(fd, preserve_fds, Step::CgroupFd)?;
    let mut md: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(fd, &mut md) } == 0
        && md.st_mode & libc::S_IFMT == libc::S_IFCHR
        && md.st_rdev == libc::makedev(1, 3)
    {
        crate::log::step(Step::CgroupFd, format!("fd {fd} is /dev/null: no cgroup2 group to create the container in"));
        return Ok(None);
    }
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstatfs(fd, &mut st) } != 0 {
        return Err(Error::sys(Step::CgroupFd, format!("fd {fd}"), nix::errno::Errno::last()));
    }
    let is_dir = md.st_mode & libc::S_IFMT == libc::S_IFDIR;
    if st.f_type as i64 != CGROUP2_SUPER_MAGIC || !is_dir {
        return Err(Error::new(Step::CgroupFd, format!("fd {fd}"), "not a cgroup2 directory")
            .hint("cbuild-cgroup exec NAME --cgroup-fd N opens one"));
    }
    crate::log::step(Step::CgroupFd, format!("fd {fd}: the container starts in this cgroup2 group"));
    Ok(Some(fd))
}

/// `struct clone_args` (linux/sched.h), the fields up to `cgroup` (CLONE_ARGS_SIZE_VER2).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// clone3 with `flags` (namespace flags, no signal bits) into the cgroup at `fd`, SIGCHLD at exit, no new
/// stack (fork semantics). Returns what clone returns: the child's PID, 0 in the child, or the errno.
pub fn clone_into(flags: u64, fd: RawFd) -> std::result::Result<libc::pid_t, nix::errno::Errno> {
    let mut args = CloneArgs {
        flags: flags | CLONE_INTO_CGROUP,
        exit_signal: libc::SIGCHLD as u64,
        cgroup: fd as u64,
        ..Default::default()
    };
    let r = unsafe { libc::syscall(libc::SYS_clone3, &mut args as *mut CloneArgs, std::mem::size_of::<CloneArgs>()) };
    if r < 0 {
        Err(nix::errno::Errno::last())
    } else {
        Ok(r as libc::pid_t)
    }
}

/// The fallback where clone3 cannot place the child (before 5.7, or a seccomp profile answering ENOSYS,
/// as Docker's does): move `pid` into the group, paying the migration, so the result is the same.
pub fn join(fd: RawFd, pid: libc::pid_t) -> Result<()> {
    let f = unsafe { libc::openat(fd, c"cgroup.procs".as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
    if f < 0 {
        return Err(Error::sys(Step::CgroupFd, "cgroup.procs", nix::errno::Errno::last()));
    }
    let text = pid.to_string();
    let r = unsafe { libc::write(f, text.as_ptr().cast(), text.len()) };
    let e = nix::errno::Errno::last();
    unsafe { libc::close(f) };
    if r != text.len() as isize {
        return Err(Error::sys(Step::CgroupFd, "cgroup.procs", e));
    }
    Ok(())
}
