//! Path and filesystem facts the mount checks and the walkers need: resolving paths that may not exist
//! yet, mount identity (statx), filesystem type (statfs), overlay xattrs and whiteouts.

use std::ffi::OsString;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, StatxAttributes, StatxFlags, CWD};

use crate::error::{p, Error, Result};

pub const OVERLAYFS_SUPER_MAGIC: i64 = 0x794c_7630;

/// An absolute, symlink-free path for `path`, which need not exist: the longest existing prefix is
/// canonicalized and the rest appended. `..` in the part that does not exist yet is refused, so the
/// result is what the kernel will resolve once the missing dirs are created.
pub fn resolve(step: &'static str, path: &Path) -> Result<PathBuf> {
    if path.as_os_str().is_empty() {
        return Err(Error::invalid(step, "\"\"", "empty path"));
    }
    let abs = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir().map_err(|e| Error::os(step, "current directory", e))?.join(path)
    };
    let (existing, rest) = nearest_existing(&abs);
    let mut out = std::fs::canonicalize(&existing).map_err(|e| Error::os(step, p(&existing), e))?;
    for c in rest {
        if c == ".." {
            return Err(Error::invalid(step, p(path), "`..` below a directory that does not exist yet"));
        }
        if c != "." {
            out.push(c);
        }
    }
    Ok(out)
}

/// Split `abs` into its longest existing ancestor (itself included) and the missing components below it.
pub fn nearest_existing(abs: &Path) -> (PathBuf, Vec<OsString>) {
    let mut existing = abs.to_path_buf();
    let mut rest = vec![];
    while std::fs::symlink_metadata(&existing).is_err() {
        match (existing.file_name().map(|n| n.to_os_string()), existing.parent()) {
            (Some(name), Some(parent)) => {
                rest.push(name);
                existing = parent.to_path_buf();
            }
            _ => break,
        }
    }
    rest.reverse();
    (existing, rest)
}

/// Mount identity of a path: the id mountinfo shows, and whether the path is the root of that mount.
pub struct MountIdentity {
    pub mnt_id: u64,
    pub is_mount_root: bool,
}

pub fn mount_identity(step: &'static str, path: &Path) -> Result<MountIdentity> {
    let st =
        rustix::fs::statx(CWD, path, AtFlags::empty(), StatxFlags::MNT_ID).map_err(|e| Error::os(step, p(path), e))?;
    let is_mount_root = if st.stx_attributes_mask.contains(StatxAttributes::MOUNT_ROOT) {
        st.stx_attributes.contains(StatxAttributes::MOUNT_ROOT)
    } else {
        // Kernels before 5.8 lack the attribute: a mount root has a different mount id than its parent.
        let parent = path.parent().unwrap_or(Path::new("/"));
        let pst = rustix::fs::statx(CWD, parent, AtFlags::empty(), StatxFlags::MNT_ID)
            .map_err(|e| Error::os(step, p(parent), e))?;
        path == Path::new("/") || pst.stx_mnt_id != st.stx_mnt_id
    };
    Ok(MountIdentity { mnt_id: st.stx_mnt_id, is_mount_root })
}

/// statfs f_type of the filesystem holding `path`.
pub fn fs_magic(step: &'static str, path: &Path) -> Result<i64> {
    let st = rustix::fs::statfs(path).map_err(|e| Error::os(step, p(path), e))?;
    #[allow(clippy::unnecessary_cast)]
    Ok(st.f_type as i64)
}

/// A name for the common statfs magics, for the tables.
pub fn fs_name(magic: i64) -> String {
    match magic {
        0xEF53 => "ext4".into(),
        0x0102_1994 => "tmpfs".into(),
        OVERLAYFS_SUPER_MAGIC => "overlay".into(),
        0x5846_5342 => "xfs".into(),
        0x9123_683E => "btrfs".into(),
        0x6573_5546 => "fuse".into(),
        0x2FC1_2FC1 => "zfs".into(),
        0x6969 => "nfs".into(),
        0x0102_1997 => "9p".into(),
        m => format!("0x{m:x}"),
    }
}

/// The xattr namespace overlay uses on this mount: `trusted.overlay.` normally, `user.overlay.` with
/// `userxattr` (rootless mounts).
pub fn xattr_prefix(userxattr: bool) -> &'static str {
    if userxattr {
        "user.overlay."
    } else {
        "trusted.overlay."
    }
}

/// An overlay xattr of `path` (not following symlinks), or None when absent or unreadable.
pub fn overlay_xattr(path: &Path, prefix: &str, name: &str) -> Option<Vec<u8>> {
    let key = format!("{prefix}{name}");
    let mut buf = vec![0u8; 4096];
    match rustix::fs::lgetxattr(path, key.as_str(), &mut buf[..]) {
        Ok(n) => {
            buf.truncate(n);
            Some(buf)
        }
        Err(_) => None,
    }
}

/// A whiteout as overlay makes it: a character device 0/0. (Overlay ≥ 6.7 may also use a zero-size file
/// with an `overlay.whiteout` xattr inside a dir marked `overlay.opaque=x`, for nested overlays.)
pub fn is_whiteout(md: &std::fs::Metadata, path: &Path, prefix: &str) -> bool {
    if md.file_type().is_char_device() && md.rdev() == 0 {
        return true;
    }
    md.file_type().is_file() && md.len() == 0 && overlay_xattr(path, prefix, "whiteout").is_some()
}

/// [`is_whiteout`] for a raw lstat (the walker's).
pub fn is_whiteout_stat(st: &rustix::fs::Stat, path: &Path, prefix: &str) -> bool {
    let ft = rustix::fs::FileType::from_raw_mode(st.st_mode);
    if ft == rustix::fs::FileType::CharacterDevice && st.st_rdev == 0 {
        return true;
    }
    ft == rustix::fs::FileType::RegularFile && st.st_size == 0 && overlay_xattr(path, prefix, "whiteout").is_some()
}

/// Whether a dir is opaque (hides the same dir in the layers below): `overlay.opaque` = `y`.
pub fn is_opaque(path: &Path, prefix: &str) -> bool {
    overlay_xattr(path, prefix, "opaque").as_deref() == Some(b"y")
}

/// Create `path` and any missing parents (`mode`, less the umask), returning the dirs created,
/// outermost first, so a failing invocation can remove exactly those. A dir another process made
/// meanwhile is used, not counted.
pub fn mkdir_p(path: &Path, mode: u32, created: &mut Vec<PathBuf>) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    let (existing, rest) = nearest_existing(path);
    let mut cur = existing;
    for c in rest {
        cur.push(c);
        crate::error::verbose::step("mkdir", p(&cur));
        match std::fs::DirBuilder::new().mode(mode).create(&cur) {
            Ok(()) => created.push(cur.clone()),
            Err(e)
                if e.kind() == std::io::ErrorKind::AlreadyExists
                    && std::fs::symlink_metadata(&cur).is_ok_and(|m| m.is_dir()) => {}
            Err(e) => return Err(Error::os("mkdir", p(&cur), e)),
        }
    }
    Ok(())
}

/// True when `inner` is `outer` or below it (both absolute and canonical).
pub fn is_within(inner: &Path, outer: &Path) -> bool {
    inner.starts_with(outer)
}
