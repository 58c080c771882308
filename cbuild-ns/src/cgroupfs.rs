//! `/sys/fs/cgroup` inside the container, as Docker gives it: the host's cgroup layout mounted again
//! from inside the new cgroup namespace, so each hierarchy's root is the container's own cgroup (its
//! limits and usage at `/sys/fs/cgroup/memory.max` or `/sys/fs/cgroup/memory/memory.limit_in_bytes`, as
//! a JVM or Go's runtime look for them), and the host's tree above it is out of reach. Read-only.
//!
//! Pure v2: one cgroup2 mount. v1 and hybrid: a tmpfs with one mount per hierarchy, named as on the
//! host (`cpu`, `memory`, ..., `unified`), plus the host's symlinks (`cpu,cpuacct` -> `cpu`). Named
//! hierarchies without controllers (`name=systemd`) are left out, and so is every hierarchy where the
//! process sits at the root (a caller that never made it a cgroup, as systemd leaves shells in the
//! cpuset or freezer roots): the namespace's root there is the host's, which would show every other
//! cgroup and its statistics. cbuild-run's containers have a cgroup of their own in every hierarchy.

use std::path::Path;

use nix::mount::MsFlags;

use crate::error::{Context, Result, Step};
use crate::mounts::{mount_at, remount_ro, Kind, Root};

const HOST: &str = "/sys/fs/cgroup";
const FLAGS: MsFlags = MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV).union(MsFlags::MS_NOEXEC);

/// The v1 controllers a hierarchy's super options may name (the rest are flags like `xattr`).
const V1_CONTROLLERS: [&str; 14] = [
    "cpuset",
    "cpu",
    "cpuacct",
    "blkio",
    "memory",
    "devices",
    "freezer",
    "net_cls",
    "perf_event",
    "net_prio",
    "hugetlb",
    "pids",
    "rdma",
    "misc",
];

/// One host cgroup mount to repeat inside: its name under /sys/fs/cgroup ("" for /sys/fs/cgroup itself),
/// the filesystem type, and (v1) its controllers as mount options.
#[derive(Debug, PartialEq, Eq)]
pub struct Hierarchy {
    pub name: String,
    pub v2: bool,
    pub controllers: String,
}

/// Where the process sits, read before its cgroup namespace hides it (inside, every path reads `/`).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Placement {
    /// The controller sets (sorted) of the v1 hierarchies where the process is in the root cgroup.
    v1_roots: Vec<Vec<String>>,
    /// Whether it is (or, with `--cgroup-fd`, will start) in the v2 root.
    v2_root: bool,
}

fn controller_set(list: &str) -> Vec<String> {
    let mut v: Vec<String> = list.split(',').filter(|c| V1_CONTROLLERS.contains(c)).map(String::from).collect();
    v.sort();
    v
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
            if path != "/" {
                continue;
            }
            if id == "0" && ctrls.is_empty() {
                p.v2_root = true;
            } else {
                let set = controller_set(ctrls);
                if !set.is_empty() {
                    p.v1_roots.push(set);
                }
            }
        }
        p
    }

    fn shows_host(&self, h: &Hierarchy) -> bool {
        if h.v2 {
            self.v2_root
        } else {
            self.v1_roots.contains(&controller_set(&h.controllers))
        }
    }
}

/// The cgroup mounts at or directly below /sys/fs/cgroup in a mountinfo text (the host's, as our new
/// mount namespace copied it). The last mount on a path wins, as the kernel shows it.
pub fn hierarchies(mountinfo: &str) -> Vec<Hierarchy> {
    let mut out: Vec<Hierarchy> = Vec::new();
    for line in mountinfo.lines() {
        let Some((left, right)) = line.split_once(" - ") else { continue };
        let Some(point) = left.split(' ').nth(4) else { continue };
        let mut r = right.split(' ');
        let (Some(fstype), Some(_source), Some(opts)) = (r.next(), r.next(), r.next()) else { continue };
        let name = match point.strip_prefix(HOST) {
            Some("") => "",
            Some(rest) => match rest.strip_prefix('/') {
                Some(n) if !n.is_empty() && !n.contains('/') && !n.contains('\\') && n != "." && n != ".." => n,
                _ => continue,
            },
            None => continue,
        };
        let h = match fstype {
            "cgroup2" => Hierarchy { name: name.into(), v2: true, controllers: String::new() },
            "cgroup" => {
                let c: Vec<&str> = opts.split(',').filter(|o| V1_CONTROLLERS.contains(o)).collect();
                if c.is_empty() {
                    continue;
                }
                Hierarchy { name: name.into(), v2: false, controllers: c.join(",") }
            }
            _ => {
                if name.is_empty() {
                    // A tmpfs (or anything else) over /sys/fs/cgroup hides what was mounted before it.
                    out.clear();
                }
                continue;
            }
        };
        out.retain(|o| o.name != h.name);
        out.push(h);
    }
    out
}

/// Mount the container's view on `root`'s /sys/fs/cgroup (which must exist: the fresh sysfs has it).
/// Run inside the new cgroup and mount namespaces, before pivot_root.
pub fn mount(root: &Root, placement: &Placement) -> Result<()> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ctx(Step::MountCgroup, "/proc/self/mountinfo")?;
    let mut list = hierarchies(&info);
    list.retain(|h| !placement.shows_host(h));
    let inside = Path::new(HOST);
    if list.is_empty() {
        return Ok(()); // no cgroup filesystem on this host, or none with a cgroup of our own: nothing to show
    }
    let shown = |n: &str| format!("{}", root.path.join(HOST.trim_start_matches('/')).join(n).display());
    if list.iter().any(|h| h.name.is_empty() && h.v2) {
        let t = root.target(inside, Kind::Dir, Step::MountCgroup)?;
        mount_at(Some("cgroup2"), &t, Some("cgroup2"), FLAGS | MsFlags::MS_RDONLY, None, Step::MountCgroup)?;
        return Ok(());
    }
    let t = root.target(inside, Kind::Dir, Step::MountCgroup)?;
    mount_at(Some("tmpfs"), &t, Some("tmpfs"), FLAGS, Some("mode=755,size=64k"), Step::MountCgroup)?;
    for h in list.iter().filter(|h| !h.name.is_empty()) {
        let t = root.target(&inside.join(&h.name), Kind::Dir, Step::MountCgroup)?;
        let flags = FLAGS | MsFlags::MS_RDONLY;
        if h.v2 {
            mount_at(Some("cgroup2"), &t, Some("cgroup2"), flags, None, Step::MountCgroup)?;
        } else {
            mount_at(Some("cgroup"), &t, Some("cgroup"), flags, Some(&h.controllers), Step::MountCgroup)?;
        }
    }
    // The host's aliases (Debian's cpu -> cpu,cpuacct and the like), pointing at names we mounted.
    if let Ok(rd) = std::fs::read_dir(HOST) {
        for e in rd.flatten() {
            let Ok(dest) = std::fs::read_link(e.path()) else { continue };
            let name = e.file_name();
            let Some(name) = name.to_str() else { continue };
            if dest.components().count() == 1 && list.iter().any(|h| Path::new(&h.name) == dest) {
                let dir = root.target(inside, Kind::Dir, Step::MountCgroup)?;
                crate::log::step(Step::MountCgroup, format!("{} -> {}", shown(name), dest.display()));
                nix::unistd::symlinkat(&dest, dir.fd(), name).ctx(Step::MountCgroup, shown(name))?;
            }
        }
    }
    let t = root.target(inside, Kind::Dir, Step::MountCgroup)?;
    remount_ro(&t.proc_path(), Step::MountCgroup)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,xattr,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw,nsdelegate
50 41 0:38 / /sys/fs/cgroup/unified/x rw - cgroup2 cgroup2 rw
51 23 0:39 / /sys/fs/cgroupx rw - cgroup cgroup rw,pids
";

    #[test]
    fn hybrid_hierarchies_keep_controllers_and_skip_named_ones() {
        let h = hierarchies(HYBRID);
        let got: Vec<(&str, bool, &str)> = h.iter().map(|h| (h.name.as_str(), h.v2, h.controllers.as_str())).collect();
        assert_eq!(
            got,
            vec![("cpu,cpuacct", false, "cpu,cpuacct"), ("memory", false, "memory"), ("unified", true, "")]
        );
    }

    #[test]
    fn hierarchies_where_the_process_is_at_the_root_are_not_shown() {
        let p = Placement::parse("9:name=systemd:/\n5:cpu,cpuacct:/\n4:memory:/user.slice\n0::/\n");
        let h = hierarchies(HYBRID);
        let shown: Vec<&str> = h.iter().filter(|h| !p.shows_host(h)).map(|h| h.name.as_str()).collect();
        assert_eq!(shown, vec!["memory"]);
        let inside = Placement::parse("4:memory:/cbuild/x\n5:cpuacct,cpu:/cbuild/x\n0::/cbuild/x\n");
        assert!(h.iter().all(|h| !inside.shows_host(h)), "controller order does not matter");
    }

    #[test]
    fn pure_v2_is_one_mount_and_a_later_tmpfs_hides_earlier_ones() {
        let v2 = "29 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n";
        assert_eq!(hierarchies(v2), vec![Hierarchy { name: String::new(), v2: true, controllers: String::new() }]);
        let over = format!("{v2}30 29 0:27 / /sys/fs/cgroup rw - tmpfs tmpfs rw\n");
        assert!(hierarchies(&over).is_empty());
        assert!(hierarchies("garbage\n1 2 3\n").is_empty());
    }
}
