//! `/sys/fs/cgroup` inside the container, as Docker gives it: the cgroup filesystems mounted again from
//! inside the new cgroup namespace, so each hierarchy's root is the container's own cgroup (its limits
//! and usage at `/sys/fs/cgroup/memory.max` or `/sys/fs/cgroup/memory/memory.limit_in_bytes`, as a JVM or
//! Go's runtime look for them), and the host's tree above it is out of reach. Read-only.
//!
//! The hierarchies come from `/proc/self/cgroup`, read before the clone (inside the namespace every
//! path reads `/`): pure v2 is one cgroup2 mount; v1 and hybrid get a tmpfs with one mount per v1
//! hierarchy, named after its controllers as runc and systemd name them (`cpu,cpuacct`, with `cpu` and
//! `cpuacct` symlinks to it), plus `unified` when the host has that cgroup2 tree. Left out: named
//! hierarchies without controllers (`name=systemd`), and every hierarchy where the process sits in the
//! root cgroup (a caller that never made it a cgroup of its own, as systemd leaves shells in the cpuset
//! or freezer roots): the namespace's root there is the host's, which would show every other cgroup
//! and its statistics. cbuild-run's containers have a cgroup of their own in every hierarchy.

use std::path::Path;

use nix::mount::MsFlags;

use crate::error::{Context, Result, Step};
use crate::mounts::{mount_at, remount_ro, Kind, Root};

const HOST: &str = "/sys/fs/cgroup";
const FLAGS: MsFlags = MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV).union(MsFlags::MS_NOEXEC);

/// The process's cgroups, as `/proc/self/cgroup` lists them before its cgroup namespace hides them.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Placement {
    /// Each v1 hierarchy with controllers: its controllers as the kernel lists them, and whether the
    /// process is in its root cgroup.
    v1: Vec<(String, bool)>,
    /// Whether it is (or, with `--cgroup-fd`, will start) in the v2 root.
    v2_root: bool,
}

impl Placement {
    /// From `/proc/self/cgroup`; `cgroup_fd` is the v2 group the child will be cloned into, if any.
    pub fn read(cgroup_fd: Option<std::os::fd::RawFd>) -> Placement {
        let text = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        let mut p = Placement::parse(&text);
        if let Some(fd) = cgroup_fd {
            // The root cgroup's parent directory is not a cgroup (it has no cgroup.procs).
            p.v2_root = !Path::new(&format!("/proc/self/fd/{fd}/../cgroup.procs")).exists();
        }
        p
    }

    pub fn parse(proc_self_cgroup: &str) -> Placement {
        let mut p = Placement::default();
        for line in proc_self_cgroup.lines() {
            let mut f = line.splitn(3, ':');
            let (Some(id), Some(ctrls), Some(path)) = (f.next(), f.next(), f.next()) else { continue };
            if id == "0" && ctrls.is_empty() {
                p.v2_root = path == "/";
                continue;
            }
            // A v1 hierarchy's field lists its controllers, and `name=X` for a named one.
            let c: Vec<&str> = ctrls.split(',').filter(|c| !c.is_empty() && !c.starts_with("name=")).collect();
            if !c.is_empty() {
                p.v1.push((c.join(","), path == "/"));
            }
        }
        p
    }
}

/// Mount the container's view on `root`'s /sys/fs/cgroup (which the fresh sysfs has). Run inside the new
/// cgroup and mount namespaces, before pivot_root.
pub fn mount(root: &Root, placement: &Placement) -> Result<()> {
    let inside = Path::new(HOST);
    let ro = FLAGS | MsFlags::MS_RDONLY;
    if placement.v1.is_empty() {
        // Pure v2 (or no cgroup v1 at all): the host's /sys/fs/cgroup is the cgroup2 tree.
        if !placement.v2_root && is_cgroup2(HOST) {
            let t = root.target(inside, Kind::Dir, Step::MountCgroup)?;
            mount_at(Some("cgroup2"), &t, Some("cgroup2"), ro, None, Step::MountCgroup)?;
        }
        return Ok(());
    }
    let v1: Vec<&str> = placement.v1.iter().filter(|(_, at_root)| !at_root).map(|(c, _)| c.as_str()).collect();
    let unified = !placement.v2_root && is_cgroup2(&format!("{HOST}/unified"));
    if v1.is_empty() && !unified {
        return Ok(()); // nothing of its own to show
    }
    let t = root.target(inside, Kind::Dir, Step::MountCgroup)?;
    mount_at(Some("tmpfs"), &t, Some("tmpfs"), FLAGS, Some("mode=755,size=64k"), Step::MountCgroup)?;
    // The tmpfs is new and ours: its directories are made and opened directly, no walk from the root.
    let top = root.target(inside, Kind::Dir, Step::MountCgroup)?;
    for c in &v1 {
        let d = top.new_dir(c, Step::MountCgroup)?;
        mount_at(Some("cgroup"), &d, Some("cgroup"), ro, Some(c), Step::MountCgroup)?;
        // `cpu` -> `cpu,cpuacct`, as on the host.
        if c.contains(',') {
            for alias in c.split(',') {
                crate::log::step(Step::MountCgroup, format!("{}/{alias} -> {c}", top.shown));
                nix::unistd::symlinkat(*c, top.fd(), alias).ctx(Step::MountCgroup, format!("{}/{alias}", top.shown))?;
            }
        }
    }
    if unified {
        let d = top.new_dir("unified", Step::MountCgroup)?;
        mount_at(Some("cgroup2"), &d, Some("cgroup2"), ro, None, Step::MountCgroup)?;
    }
    remount_ro(&top.proc_path(), Step::MountCgroup)
}

fn is_cgroup2(path: &str) -> bool {
    nix::sys::statfs::statfs(path).is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_hierarchies_keep_their_controllers_and_where_the_process_is() {
        let p = Placement::parse(
            "12:rdma:/\n9:name=systemd:/user.slice\n5:cpu,cpuacct:/cbuild/x\n4:memory:/cbuild/x\n\
             3:net_cls,net_prio,name=x:/\n0::/cbuild/x\n",
        );
        let want = [("rdma", true), ("cpu,cpuacct", false), ("memory", false), ("net_cls,net_prio", true)];
        assert_eq!(p.v1, want.iter().map(|(c, r)| (c.to_string(), *r)).collect::<Vec<_>>());
        assert!(!p.v2_root);
    }

    #[test]
    fn pure_v2_has_no_v1_hierarchies() {
        let p = Placement::parse("0::/\n");
        assert!(p.v1.is_empty() && p.v2_root);
        assert_eq!(Placement::parse("garbage\n1:2\n"), Placement::default());
    }
}
