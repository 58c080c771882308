//! `inspect TARGET` and `ls`: overlay mounts as mountinfo shows them, with per-layer counts and the
//! backing filesystems' free inodes and space.
//!
//! Inode exhaustion is the classic overlay failure: many small layers on one filesystem run out of
//! inodes while `df -h` still shows free space, and every create fails with ENOSPC. `inspect` warns when
//! a layer's filesystem has more than [`INODE_WARN_PERCENT`] of its inodes in use.

use std::collections::HashSet;
use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use rustix::fs::FileType;
use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;

use crate::diff::{name_entry, names_entry};
use crate::error::{p, verbose::step, Error, Result};
use crate::fsutil::{self, is_whiteout_stat, xattr_prefix};
use crate::mountinfo::{self, MountEntry, OverlayOptions};
use crate::walk;

pub const INODE_WARN_PERCENT: f64 = 90.0;

/// One overlay mount, from mountinfo alone (what `ls` prints). Names are bytes, as in mountinfo.
#[derive(Debug)]
pub struct OverlayMount {
    pub target: PathBuf,
    pub mount_id: u64,
    pub source: OsString,
    /// How the layers were passed: `lowerdir+` (new mount API) or `lowerdir` (one string, mount(2)).
    pub layer_keys: &'static str,
    /// Lower layers top first, as mountinfo shows them (cbuild's are absolute; a foreign relative one stays so).
    pub lower: Vec<PathBuf>,
    pub data: Vec<PathBuf>,
    pub upper: Option<PathBuf>,
    pub work: Option<PathBuf>,
    pub userxattr: bool,
    pub options: Vec<String>,
}

/// The fields in order, each name as `diff --json` gives one: the string, plus `KEY_bytes` where it is
/// not UTF-8 (for `lower` and `data`: every layer's bytes, when any layer's name is not UTF-8).
impl Serialize for OverlayMount {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        name_entry(&mut m, "target", self.target.as_os_str().as_bytes())?;
        m.serialize_entry("mount_id", &self.mount_id)?;
        name_entry(&mut m, "source", self.source.as_bytes())?;
        m.serialize_entry("layer_keys", self.layer_keys)?;
        names_entry(&mut m, "lower", &as_bytes(&self.lower))?;
        names_entry(&mut m, "data", &as_bytes(&self.data))?;
        for (key, dir) in [("upper", &self.upper), ("work", &self.work)] {
            match dir {
                Some(d) => name_entry(&mut m, key, d.as_os_str().as_bytes())?,
                None => m.serialize_entry(key, &None::<()>)?,
            }
        }
        m.serialize_entry("userxattr", &self.userxattr)?;
        m.serialize_entry("options", &self.options)?;
        m.end()
    }
}

impl OverlayMount {
    pub fn from_entry(e: &MountEntry) -> OverlayMount {
        let mut o = OverlayOptions::parse(&e.super_options);
        // cbuild's mount(2) fallback passes fd numbers and records the real list in its aux dir.
        let fd_numbers = o.lower.iter().chain(&o.data).all(|l| {
            let b = l.as_os_str().as_bytes();
            !b.is_empty() && b.iter().all(u8::is_ascii_digit)
        });
        if let Some(list) = recorded_lower(&e.source, o.lower.len() + o.data.len()).filter(|_| fd_numbers) {
            let data = list[o.lower.len()..].to_vec();
            o.lower = list[..o.lower.len()].to_vec();
            o.data = data;
        }
        // Shown as the kernel shows them: a relative path was relative to the mounting process's cwd,
        // which mountinfo does not record (the source is whatever string the maker chose), so it stays
        // relative rather than be joined to a base that is not its own.
        OverlayMount {
            target: e.mount_point.clone(),
            mount_id: e.mount_id,
            source: e.source.clone(),
            layer_keys: if o.per_layer_keys { "lowerdir+" } else { "lowerdir" },
            lower: o.lower,
            data: o.data,
            upper: o.upper,
            work: o.work,
            userxattr: o.userxattr,
            options: o.other,
        }
    }
}

fn as_bytes(paths: &[PathBuf]) -> Vec<&[u8]> {
    paths.iter().map(|p| p.as_os_str().as_bytes()).collect()
}

/// The layer list cbuild's legacy path wrote into the aux dir named by the mount's source, if it is there
/// and has one line per layer shown. Lines are bytes, as the names are.
fn recorded_lower(source: &std::ffi::OsStr, n: usize) -> Option<Vec<PathBuf>> {
    let aux = crate::mount::aux_dir(source)?;
    let text = std::fs::read(aux.join(crate::mount::LOWER_LIST)).ok()?;
    let list: Vec<PathBuf> = text
        .strip_suffix(b"\n")
        .unwrap_or(&text)
        .split(|&b| b == b'\n')
        .map(|l| PathBuf::from(OsString::from_vec(l.to_vec())))
        .collect();
    (list.len() == n).then_some(list)
}

/// Every overlay mount visible to this process, in mount order.
pub fn ls() -> Result<Vec<OverlayMount>> {
    Ok(mountinfo::read()?.iter().filter(|e| e.fs_type == "overlay").map(OverlayMount::from_entry).collect())
}

#[derive(Debug, Default, Serialize)]
pub struct Counts {
    /// Regular files.
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    /// 0/0 character devices (and xattr whiteouts): deletions recorded in this layer.
    pub whiteouts: u64,
    /// Devices, fifos, sockets.
    pub other: u64,
    /// Distinct inodes, the layer's root dir included (hard links count once), as `find DIR | wc -l`.
    pub inodes: u64,
    /// Apparent size of the regular files, each inode once.
    pub bytes: u64,
}

#[derive(Debug, Serialize)]
pub struct FsUsage {
    pub fs_type: String,
    pub inodes_total: u64,
    pub inodes_free: u64,
    pub inodes_used_percent: f64,
    pub bytes_total: u64,
    pub bytes_free: u64,
    /// Free to unprivileged users (`df`'s Available).
    pub bytes_available: u64,
}

#[derive(Debug, Serialize)]
pub struct Layer {
    /// `upper`, `lower` or `data`.
    pub role: &'static str,
    /// Position among the lowers, 0 = top (the upper has none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<usize>,
    /// `path`, and `path_bytes` when the name is not UTF-8, as `diff --json` gives it.
    #[serde(flatten, serialize_with = "path_entry")]
    pub path: PathBuf,
    #[serde(flatten)]
    pub counts: Counts,
    pub fs: Option<FsUsage>,
    /// Why the layer could not be read (e.g. a relative path whose base is unknown).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Inspect {
    #[serde(flatten)]
    pub mount: OverlayMount,
    pub layers: Vec<Layer>,
    pub warnings: Vec<String>,
}

fn path_entry<S: Serializer>(path: &Path, s: S) -> std::result::Result<S::Ok, S::Error> {
    let mut m = s.serialize_map(None)?;
    name_entry(&mut m, "path", path.as_os_str().as_bytes())?;
    m.end()
}

pub fn inspect(target: &Path) -> Result<Inspect> {
    let target = std::fs::canonicalize(target).map_err(|e| Error::os("inspect", p(target), e))?;
    let entries = mountinfo::read()?;
    let entry = mountinfo::overlay_at(&entries, &target)
        .ok_or_else(|| Error::invalid("inspect", p(&target), "not an overlay mount point"))?;
    let mount = OverlayMount::from_entry(&entry);
    let prefix = xattr_prefix(mount.userxattr);

    let mut roles: Vec<(&'static str, Option<usize>, &PathBuf)> = vec![];
    if let Some(u) = &mount.upper {
        roles.push(("upper", None, u));
    }
    roles.extend(mount.lower.iter().enumerate().map(|(i, l)| ("lower", Some(i), l)));
    roles.extend(mount.data.iter().enumerate().map(|(i, l)| ("data", Some(mount.lower.len() + i), l)));

    let mut layers = vec![];
    let mut warnings = vec![];
    let mut warned_fs = HashSet::new();
    for (role, index, pb) in roles {
        step("count", p(pb));
        let (counts, error) = match count(pb, prefix) {
            Ok(c) => (c, None),
            Err(e) => (Counts::default(), Some(e.to_string())),
        };
        // A relative path would name something under our cwd, not the layer.
        let fs = pb.is_absolute().then(|| usage(pb).ok()).flatten();
        if let Some(f) = &fs {
            let dev = std::fs::metadata(pb).map(|m| m.dev()).unwrap_or(0);
            if f.inodes_total > 0 && f.inodes_used_percent > INODE_WARN_PERCENT && warned_fs.insert(dev) {
                warnings.push(format!(
                    "{}: {:.0}% of the inodes of its {} filesystem are in use ({} of {} free): new files will fail with ENOSPC",
                    p(pb), f.inodes_used_percent, f.fs_type, f.inodes_free, f.inodes_total
                ));
            }
        }
        layers.push(Layer { role, index, path: pb.clone(), counts, fs, error });
    }
    Ok(Inspect { mount, layers, warnings })
}

/// Count one layer like `find DIR -xdev`.
pub fn count(dir: &Path, prefix: &str) -> Result<Counts> {
    if !dir.is_absolute() {
        return Err(Error::invalid("count", p(dir), "relative layer path and no base dir to resolve it against"));
    }
    let mut c = Counts::default();
    let mut seen = HashSet::new();
    walk::walk("count", dir, &mut |e| {
        let first = e.st.st_nlink <= 1 || seen.insert((e.st.st_dev, e.st.st_ino));
        if !first {
            return false;
        }
        c.inodes += 1;
        match e.file_type() {
            FileType::Directory => c.dirs += 1,
            FileType::Symlink => c.symlinks += 1,
            _ if is_whiteout_stat(&e.st, &e.at, prefix) => c.whiteouts += 1,
            FileType::RegularFile => {
                c.files += 1;
                c.bytes += e.st.st_size as u64;
            }
            _ => c.other += 1,
        }
        true
    })?;
    Ok(c)
}

/// statvfs and statfs of the filesystem holding `path`.
pub fn usage(path: &Path) -> Result<FsUsage> {
    let v = rustix::fs::statvfs(path).map_err(|e| Error::os("statvfs", p(path), e))?;
    let magic = fsutil::fs_magic("statfs", path)?;
    let used = v.f_files.saturating_sub(v.f_ffree);
    let pct = if v.f_files > 0 { used as f64 * 100.0 / v.f_files as f64 } else { 0.0 };
    Ok(FsUsage {
        fs_type: fsutil::fs_name(magic),
        inodes_total: v.f_files,
        inodes_free: v.f_ffree,
        inodes_used_percent: (pct * 10.0).round() / 10.0,
        bytes_total: v.f_blocks * v.f_frsize,
        bytes_free: v.f_bfree * v.f_frsize,
        bytes_available: v.f_bavail * v.f_frsize,
    })
}
