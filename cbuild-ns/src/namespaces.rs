//! The namespace types, their clone flags and /proc names, and joining existing ones.

use crate::error::{Context, Error, Result, Step};
use nix::sched::CloneFlags;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NsType {
    // Order matters when joining: user first (it decides what the others may do), mnt last among those
    // that affect the caller (it changes how the remaining paths resolve), pid only affects children.
    User,
    Cgroup,
    Ipc,
    Uts,
    Net,
    Time,
    Pid,
    Mnt,
}

pub const ALL: [NsType; 8] =
    [NsType::User, NsType::Cgroup, NsType::Ipc, NsType::Uts, NsType::Net, NsType::Time, NsType::Pid, NsType::Mnt];

impl NsType {
    /// The name under /proc/PID/ns/ (also the persisted file name).
    pub fn proc_name(self) -> &'static str {
        match self {
            NsType::User => "user",
            NsType::Cgroup => "cgroup",
            NsType::Ipc => "ipc",
            NsType::Uts => "uts",
            NsType::Net => "net",
            NsType::Time => "time",
            NsType::Pid => "pid",
            NsType::Mnt => "mnt",
        }
    }

    pub fn flag(self) -> CloneFlags {
        match self {
            NsType::User => CloneFlags::CLONE_NEWUSER,
            NsType::Cgroup => CloneFlags::CLONE_NEWCGROUP,
            NsType::Ipc => CloneFlags::CLONE_NEWIPC,
            NsType::Uts => CloneFlags::CLONE_NEWUTS,
            NsType::Net => CloneFlags::CLONE_NEWNET,
            NsType::Time => CloneFlags::from_bits_retain(libc::CLONE_NEWTIME),
            NsType::Pid => CloneFlags::CLONE_NEWPID,
            NsType::Mnt => CloneFlags::CLONE_NEWNS,
        }
    }

    /// Accepts the /proc names and the common aliases (`mount`, `network`).
    pub fn parse(s: &str) -> Option<NsType> {
        Some(match s {
            "user" => NsType::User,
            "cgroup" => NsType::Cgroup,
            "ipc" => NsType::Ipc,
            "uts" => NsType::Uts,
            "net" | "network" => NsType::Net,
            "time" => NsType::Time,
            "pid" => NsType::Pid,
            "mnt" | "mount" => NsType::Mnt,
            _ => return None,
        })
    }

    /// The file of this namespace for a process. For pid and time the one that matters to a joiner is the
    /// process's own (not `*_for_children`).
    pub fn proc_path(self, pid: i32) -> PathBuf {
        PathBuf::from(format!("/proc/{pid}/ns/{}", self.proc_name()))
    }
}

/// The file a new namespace of this type is reached through right after set-up: for `time` the process's
/// `time_for_children` (the new time namespace from its unshare on, also before it enters it with setns),
/// for the others its own.
pub fn setup_path(ty: NsType, pid: i32) -> PathBuf {
    match ty {
        NsType::Time => PathBuf::from(format!("/proc/{pid}/ns/time_for_children")),
        _ => ty.proc_path(pid),
    }
}

/// The inode of a namespace file: what `ls -i /proc/PID/ns` shows and what identifies the namespace.
pub fn inode(path: &Path) -> std::io::Result<u64> {
    Ok(std::fs::metadata(path)?.ino())
}

/// An opened namespace, ready for setns. Opening everything before joining anything means a bad path fails
/// before the process has changed at all.
pub struct NsFd {
    pub ty: NsType,
    pub path: PathBuf,
    pub fd: OwnedFd,
}

pub fn open(ty: NsType, path: &Path) -> Result<NsFd> {
    // O_NONBLOCK: a FIFO put where a namespace file was expected must not hang the open.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .ctx(Step::Join, path.display())?;
    // Check it is a namespace of the right type: setns with the type flag would also catch it, but only
    // after the other joins have happened.
    let want = ty.flag();
    let fd: OwnedFd = file.into();
    let got = unsafe { libc::ioctl(std::os::fd::AsRawFd::as_raw_fd(&fd), NS_GET_NSTYPE as _) };
    if got < 0 {
        return Err(Error::new(Step::Join, path.display(), "not a namespace file"));
    }
    if got != want.bits() {
        return Err(Error::new(Step::Join, path.display(), format!("not a {} namespace", ty.proc_name())));
    }
    Ok(NsFd { ty, path: path.to_path_buf(), fd })
}

/// ioctl(NS_GET_NSTYPE) = _IO(0xb7, 0x3)
const NS_GET_NSTYPE: libc::c_ulong = 0xb703;

impl NsFd {
    pub fn join(&self) -> Result<()> {
        crate::log::step(Step::Join, format!("{}={}", self.ty.proc_name(), self.path.display()));
        nix::sched::setns(self.fd.as_fd(), self.ty.flag()).ctx(Step::Join, self.path.display())
    }
}

/// Whether `pid`'s namespace of type `ty` is the same as our own.
pub fn same_as_self(ty: NsType, pid: i32) -> bool {
    let own = PathBuf::from(format!("/proc/self/ns/{}", ty.proc_name()));
    matches!((inode(&ty.proc_path(pid)), inode(&own)), (Ok(a), Ok(b)) if a == b)
}
