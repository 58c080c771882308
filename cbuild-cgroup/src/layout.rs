//! Which cgroup layout the host runs, and where each hierarchy is mounted.
//!
//! Like runc: `statfs("/sys/fs/cgroup")` says cgroup2 → pure v2 ("unified"). Otherwise it is a tmpfs of
//! v1 mounts; if `/sys/fs/cgroup/unified` is a cgroup2 mount too, the host is "hybrid" (v1 controllers
//! plus a controller-less v2 tree, which still gives cgroup.kill, cgroup.events and PSI), else "legacy".
//! The v1 mounts and their controllers come from /proc/self/mountinfo, so co-mounted hierarchies
//! (`cpu,cpuacct`) and separate ones (`cpu` and `cpuacct`, as on the development machines) both work.

use crate::error::{Error, Result};
use crate::fsutil;
use nix::sys::statfs::{statfs, CGROUP2_SUPER_MAGIC};
use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";
const HYBRID_UNIFIED: &str = "/sys/fs/cgroup/unified";

/// The v1 controllers the kernel can have; other super options (`rw`, `name=systemd`, `clone_children`)
/// are not controllers. A named hierarchy without a controller (systemd's) is bookkeeping we do not join.
const V1_CONTROLLERS: &[&str] = &[
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

/// The v2 controllers we enable for our subtree (what limits and stats use).
pub const V2_WANTED: &[&str] = &["cpuset", "cpu", "io", "memory", "pids", "hugetlb", "rdma"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Layout {
    /// Pure cgroup v2 at /sys/fs/cgroup.
    Unified,
    /// v1 controllers plus a controller-less cgroup2 at /sys/fs/cgroup/unified.
    Hybrid,
    /// v1 only.
    Legacy,
}

impl Layout {
    pub fn as_str(self) -> &'static str {
        match self {
            Layout::Unified => "unified",
            Layout::Hybrid => "hybrid",
            Layout::Legacy => "legacy",
        }
    }
}

/// One mounted hierarchy.
#[derive(Debug, Clone)]
pub struct Hierarchy {
    pub version: u8,
    pub mount: PathBuf,
    /// v1: the controllers attached to this mount. v2: the controllers available at `base`.
    pub controllers: Vec<String>,
    /// The cgroup under which `cbuild/` lives: the mount's root for root, the caller's own (delegated)
    /// cgroup when not root.
    pub base: PathBuf,
}

/// `{"version","mount","controllers","base"}`. JSON strings are Unicode, mount points are bytes: a path
/// that is not UTF-8 also comes as `mount_bytes` (`base_bytes`), exactly, beside the readable form with
/// U+FFFD, as cbuild-overlay gives names (serde refuses such a path, and `info --json` printed nothing).
impl Serialize for Hierarchy {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("version", &self.version)?;
        path_entry(&mut m, "mount", &self.mount)?;
        m.serialize_entry("controllers", &self.controllers)?;
        path_entry(&mut m, "base", &self.base)?;
        m.end()
    }
}

/// `key` as a string, and, for a path that is not UTF-8, `key_bytes` as an array of its bytes.
fn path_entry<M: SerializeMap>(m: &mut M, key: &'static str, path: &Path) -> std::result::Result<(), M::Error> {
    match path.to_str() {
        Some(p) => m.serialize_entry(key, p),
        None => {
            m.serialize_entry(key, &path.to_string_lossy())?;
            m.serialize_entry(&format!("{key}_bytes"), path.as_os_str().as_bytes())
        }
    }
}

impl Hierarchy {
    pub fn has(&self, controller: &str) -> bool {
        self.controllers.iter().any(|c| c == controller)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Host {
    pub layout: Layout,
    pub rootless: bool,
    pub hierarchies: Vec<Hierarchy>,
}

impl Host {
    /// Detect the layout and the hierarchies; for a non-root caller, find its delegated cgroups.
    pub fn detect() -> Result<Host> {
        let rootless = !nix::unistd::geteuid().is_root();
        let layout = detect_layout()?;
        crate::log::step("detect", format_args!("{} cgroups", layout.as_str()));
        let own = if rootless { Some(own_cgroups()?) } else { None };
        let mut hierarchies = Vec::new();
        if layout != Layout::Unified {
            for (mount, controllers) in v1_mounts()? {
                let base = match &own {
                    Some(own) => match own_v1_path(own, &controllers) {
                        Some(p) => join_rel(&mount, &p),
                        None => continue,
                    },
                    None => mount.clone(),
                };
                hierarchies.push(Hierarchy { version: 1, mount, controllers, base });
            }
        }
        let v2_mount = match layout {
            Layout::Unified => Some(PathBuf::from(CGROUP_ROOT)),
            Layout::Hybrid => Some(PathBuf::from(HYBRID_UNIFIED)),
            Layout::Legacy => None,
        };
        if let Some(mount) = v2_mount {
            let base = match &own {
                Some(own) => {
                    join_rel(&mount, own.iter().find(|(h, _)| h == "0").map(|(_, p)| p.as_str()).unwrap_or("/"))
                }
                None => mount.clone(),
            };
            let mut controllers: Vec<String> = fsutil::read_opt(&base.join("cgroup.controllers"))?
                .unwrap_or_default()
                .split_whitespace()
                .map(str::to_string)
                .collect();
            controllers.sort();
            hierarchies.push(Hierarchy { version: 2, mount, controllers, base });
        }
        if hierarchies.is_empty() {
            return Err(Error::bad("detect", CGROUP_ROOT, "no cgroup hierarchy is mounted"));
        }
        Ok(Host { layout, rootless, hierarchies })
    }

    /// [`Host::detect`] for verbs that change cgroups: not root, the caller's cgroups must be delegated.
    pub fn detect_for_write() -> Result<Host> {
        let host = Host::detect()?;
        if host.rootless {
            host.check_delegation()?;
        }
        Ok(host)
    }

    /// The hierarchy holding a controller (v1 mount or the v2 tree where it is available).
    pub fn hierarchy_of(&self, controller: &str) -> Option<usize> {
        self.hierarchies.iter().position(|h| h.has(controller))
    }

    /// The v2 hierarchy (pure v2, or the unified tree of a hybrid host).
    pub fn v2(&self) -> Option<usize> {
        self.hierarchies.iter().position(|h| h.version == 2)
    }

    /// Every controller the host offers us, sorted.
    pub fn controllers(&self) -> Vec<String> {
        let mut all: Vec<String> = self.hierarchies.iter().flat_map(|h| h.controllers.iter().cloned()).collect();
        all.sort();
        all.dedup();
        all
    }

    /// Not root: every hierarchy we would create in must be writable by us, else say what to do.
    fn check_delegation(&self) -> Result<()> {
        for h in &self.hierarchies {
            let procs = h.base.join("cgroup.procs");
            let writable = |p: &Path| nix::unistd::access(p, nix::unistd::AccessFlags::W_OK).is_ok();
            if !writable(&h.base) || !writable(&procs) {
                return Err(Error::bad(
                    "delegation",
                    h.base.display(),
                    "not root and this cgroup is not delegated to you",
                )
                .with_hint(
                    "run under a delegated cgroup, e.g. `systemd-run --user --scope -p Delegate=yes cbuild-cgroup ...`",
                ));
            }
        }
        Ok(())
    }
}

/// statfs magic of /sys/fs/cgroup and /sys/fs/cgroup/unified.
pub fn detect_layout() -> Result<Layout> {
    let st = statfs(CGROUP_ROOT).map_err(|e| Error::sys("detect", CGROUP_ROOT, e.into()))?;
    if st.filesystem_type() == CGROUP2_SUPER_MAGIC {
        return Ok(Layout::Unified);
    }
    match statfs(HYBRID_UNIFIED) {
        Ok(u) if u.filesystem_type() == CGROUP2_SUPER_MAGIC => Ok(Layout::Hybrid),
        _ => Ok(Layout::Legacy),
    }
}

/// v1 mounts with at least one controller, from /proc/self/mountinfo; the first mount of each hierarchy.
fn v1_mounts() -> Result<Vec<(PathBuf, Vec<String>)>> {
    // Bytes, not UTF-8: any mount of the host's may have a name that is not (a user's, a test's), and
    // refusing the whole table for it stopped every verb; the cgroup mounts are all that is read here.
    let info = std::fs::read("/proc/self/mountinfo").map_err(|e| Error::sys("read", "/proc/self/mountinfo", e))?;
    Ok(parse_v1_mounts(&info))
}

pub fn parse_v1_mounts(info: &[u8]) -> Vec<(PathBuf, Vec<String>)> {
    let mut out: Vec<(PathBuf, Vec<String>)> = Vec::new();
    // "36 25 0:31 / /sys/fs/cgroup/cpu rw,relatime shared:9 - cgroup cgroup rw,cpu"
    for m in cbuild_mountinfo::parse(info).into_iter().filter(|m| m.fs_type == "cgroup") {
        let opts = String::from_utf8_lossy(&m.super_options);
        let mut controllers: Vec<String> =
            opts.split(',').filter(|o| V1_CONTROLLERS.contains(o)).map(str::to_string).collect();
        if controllers.is_empty() {
            continue;
        }
        controllers.sort();
        if out.iter().any(|(_, c)| *c == controllers) {
            continue;
        }
        out.push((m.mount_point, controllers));
    }
    out
}

/// /proc/self/cgroup as (hierarchy controllers field, path) pairs; "0" is the v2 tree.
fn own_cgroups() -> Result<Vec<(String, String)>> {
    let text = fsutil::read(Path::new("/proc/self/cgroup"))?;
    Ok(parse_proc_cgroup(&text))
}

pub fn parse_proc_cgroup(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.splitn(3, ':');
            let id = it.next()?;
            let ctrls = it.next()?;
            let path = it.next()?;
            let key = if id == "0" && ctrls.is_empty() { "0".to_string() } else { ctrls.to_string() };
            Some((key, path.to_string()))
        })
        .collect()
}

fn own_v1_path(own: &[(String, String)], controllers: &[String]) -> Option<String> {
    own.iter()
        .find(|(k, _)| {
            let mut ks: Vec<&str> = k.split(',').collect();
            ks.sort();
            ks == controllers.iter().map(String::as_str).collect::<Vec<_>>()
        })
        .map(|(_, p)| p.clone())
}

fn join_rel(mount: &Path, rel: &str) -> PathBuf {
    mount.join(rel.trim_start_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_gives_a_path_that_is_not_utf8_exactly() {
        use std::ffi::OsStr;
        let mount = PathBuf::from(OsStr::from_bytes(b"/m\xff"));
        let h = Hierarchy { version: 1, mount, controllers: vec!["cpu".into()], base: "/m/é".into() };
        assert_eq!(
            serde_json::to_string(&h).unwrap(),
            "{\"version\":1,\"mount\":\"/m\u{fffd}\",\"mount_bytes\":[47,109,255],\"controllers\":[\"cpu\"],\
             \"base\":\"/m/é\"}"
        );
    }

    #[test]
    fn mountinfo_v1() {
        let info = "\
30 24 0:26 / /sys/fs/cgroup rw - tmpfs tmpfs rw,mode=755
31 30 0:27 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
32 30 0:28 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpuacct,cpu
33 30 0:29 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,xattr,name=systemd
34 30 0:30 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw
35 30 0:27 / /mnt/again rw - cgroup cgroup rw,cpu
";
        let m = parse_v1_mounts(info.as_bytes());
        assert_eq!(m.len(), 2);
        assert_eq!(m[0], (PathBuf::from("/sys/fs/cgroup/cpu"), vec!["cpu".to_string()]));
        assert_eq!(m[1].1, vec!["cpu".to_string(), "cpuacct".to_string()]);
    }

    /// Lines as the kernel prints them for mount points with a space, a tab, a newline, a backslash, a
    /// non-UTF-8 byte and a literal `\040` (its backslash escaped), and optional fields before the `-`.
    #[test]
    fn mountinfo_mount_points_are_unescaped_to_their_bytes() {
        let info: &[u8] = b"\
40 30 0:40 / /tmp/a\\040b\\011c rw,relatime shared:20 master:3 - cgroup cgroup rw,net_cls,net_prio
41 30 0:41 / /tmp/d\\134e\\012f rw - cgroup none rw,rdma
42 30 0:42 / /tmp/g\xffh\\134040 rw - cgroup cgroup rw,misc
43 30 0:43 / /tmp/x\\040-\\040y rw - tmpfs tmpfs rw
44 30 0:44 / /tmp/n rw - cgroup cgroup rw,name=cbtest
";
        let m = parse_v1_mounts(info);
        let mounts: Vec<&[u8]> = m.iter().map(|(p, _)| p.as_os_str().as_encoded_bytes()).collect();
        assert_eq!(mounts, [&b"/tmp/a b\tc"[..], b"/tmp/d\\e\nf", b"/tmp/g\xffh\\040"]);
        assert_eq!(m[0].1, ["net_cls", "net_prio"]);
    }

    #[test]
    fn proc_cgroup() {
        let c = parse_proc_cgroup("4:memory:/a/b\n2:cpu,cpuacct:/\n0::/user.slice\n");
        assert_eq!(c[0], ("memory".into(), "/a/b".into()));
        assert_eq!(c[2], ("0".into(), "/user.slice".into()));
        assert_eq!(own_v1_path(&c, &["cpu".into(), "cpuacct".into()]), Some("/".into()));
    }
}
