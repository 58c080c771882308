//! Extracting one layer tar into a directory, safely.
//!
//! Every entry is created relative to an fd on the target: the parent directory is resolved with
//! openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS) (so symlinks planted by earlier entries resolve inside
//! the target, as if it were `/`), and the final component is created with *at() calls that never follow
//! it (O_EXCL | O_NOFOLLOW, symlinkat, mknodat, linkat without AT_SYMLINK_FOLLOW). Whatever already sits at
//! that name is removed first, so a duplicate entry replaces, never writes through, what came before.
//! Entries with `..` or an absolute path, and anything but a directory at the root itself (umoci's
//! CVE-2021-29136), are refused outright.
//!
//! Two modes: `Flatten` applies OCI whiteouts (deletes), building one root filesystem from all layers;
//! `Overlay` turns them into overlayfs whiteouts (0/0 char devices, the opaque xattr) in a per-layer dir.

use crate::error::{Error, Result};
use crate::fsutil::{self, open_in_root, remove_all_at};
use crate::Ctx;
use nix::errno::Errno;
use nix::fcntl::{openat, AtFlags, OFlag};
use nix::sys::stat::{
    fchmod, fchmodat, fstat, fstatat, futimens, mkdirat, mknodat, utimensat, FchmodatFlags, Mode, SFlag, UtimensatFlags,
};
use nix::sys::time::TimeSpec;
use nix::unistd::{fchown, fchownat, linkat, symlinkat, unlinkat, Gid, Uid, UnlinkatFlags};
use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use tar::EntryType;

pub const WHITEOUT_PREFIX: &str = ".wh.";
pub const WHITEOUT_OPAQUE: &str = ".wh..wh..opq";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExtractMode {
    /// Apply whiteouts: one flattened root filesystem.
    Flatten,
    /// Keep whiteouts as overlayfs expects them; `userxattr` = `user.overlay.*` (rootless overlay).
    Overlay { userxattr: bool },
}

pub struct Options {
    pub mode: ExtractMode,
    /// Create device nodes, chown, set trusted.* xattrs (real root only).
    pub privileged: bool,
    pub max_entries: u64,
    /// Bound on what sparse files' holes add to a layer (`--max-layer-size`): a few bytes of GNU sparse
    /// map may declare terabytes, which the stream's own bound never sees.
    pub max_size: u64,
}

/// Split a tar path into components, refusing absolute paths and `..`. `.` and empty components vanish,
/// so `./a//b/` is `[a, b]` and `.` / `./` is the root (an empty list).
pub fn split_path(raw: &[u8]) -> std::result::Result<Vec<&OsStr>, &'static str> {
    if raw.starts_with(b"/") {
        return Err("absolute path");
    }
    if raw.contains(&0) {
        return Err("NUL in path");
    }
    let mut v = Vec::new();
    for c in raw.split(|b| *b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => return Err("path escapes the root (..)"),
            c => v.push(OsStr::from_bytes(c)),
        }
    }
    Ok(v)
}

struct DirMeta {
    rel: PathBuf,
    mode: u32,
    mtime: i64,
}

/// What a layer's end applies to one directory: a mode (with the (dev, ino) it was noted for, when it is
/// one to put back) and times.
struct DirFix {
    /// The layer's own entry for the directory, not something to put back.
    own: bool,
    mode: Option<(u32, Option<(u64, u64)>)>,
    times: Option<(TimeSpec, TimeSpec)>,
}

pub struct Extractor<'a> {
    root: OwnedFd,
    opts: &'a Options,
    ctx: &'a Ctx,
    layer: String,
    /// Directories this layer made or listed: their mtimes are this layer's, not a lower one's to put back.
    created: HashSet<PathBuf>,
    /// Every path an entry of this layer occupies, with all its ancestors (umoci's "upper paths"). A
    /// whiteout hides only what lower layers left: these stay, and a directory among them loses only the
    /// lower content inside it.
    upper: HashSet<PathBuf>,
    dirs: Vec<DirMeta>,
    /// Directories from lower layers whose mtime this layer changed by adding or removing entries: put back.
    restore: HashMap<PathBuf, (TimeSpec, TimeSpec)>,
    cache: Option<(PathBuf, OwnedFd)>,
    skipped_devices: u64,
    skipped_xattrs: u64,
    /// The sparse files' declared sizes so far (see `Options::max_size`).
    sparse_bytes: u64,
    /// Rootless: directories of lower layers opened up (u+rwx) for this one, with the mode to put back
    /// and their (dev, ino), so a directory of that name made since keeps its own.
    modes: HashMap<PathBuf, (u32, (u64, u64))>,
    /// Overlay form: the whiteout devices this layer made. One that a later entry put below an opaque
    /// directory of the layer hides nothing any more, and goes when the layer ends.
    whiteouts: Vec<PathBuf>,
    buf: Vec<u8>,
    /// Overlay form: the dirs of the layers below, top-first (O_PATH). A directory this layer needs but
    /// does not list takes its metadata from them, and a hard link to a lower file copies that file up,
    /// as containerd does, so the mount shows what `unpack` makes.
    lowers: Vec<OwnedFd>,
    /// Asked before every entry whether to go on (`unpack`: no stop signal pending).
    stop: Option<&'a dyn Fn() -> Result<()>>,
}

impl<'a> Extractor<'a> {
    pub fn new(root_path: &Path, opts: &'a Options, ctx: &'a Ctx, layer: &str) -> Result<Extractor<'a>> {
        let root = fsutil::open_root(root_path).map_err(|e| Error::sys("open", root_path.display(), e))?;
        Ok(Extractor {
            root,
            opts,
            ctx,
            layer: layer.to_string(),
            created: HashSet::new(),
            upper: HashSet::new(),
            dirs: Vec::new(),
            restore: HashMap::new(),
            cache: None,
            skipped_devices: 0,
            sparse_bytes: 0,
            modes: HashMap::new(),
            whiteouts: Vec::new(),
            skipped_xattrs: 0,
            buf: vec![0u8; 256 * 1024],
            lowers: Vec::new(),
            stop: None,
        })
    }

    /// Call `stop` before every entry, and end the extraction with its error.
    pub fn stop_with(&mut self, stop: &'a dyn Fn() -> Result<()>) {
        self.stop = Some(stop);
    }

    /// Overlay form: the layer dirs below this one, top-first.
    pub fn set_lowers(&mut self, lowers: &[PathBuf]) -> Result<()> {
        self.lowers = lowers
            .iter()
            .map(|p| fsutil::open_root(p).map_err(|e| Error::sys("open", p.display(), e)))
            .collect::<Result<_>>()?;
        Ok(())
    }

    /// `rel` as the overlay mount shows it from the layers below: its O_PATH fd in the topmost lower
    /// layer that has it, and its stat. None if nothing below shows through: no lower has it, the topmost
    /// one that names it holds a whiteout, or a directory on the way is opaque, whited out or not a
    /// directory above the layers that have it (this layer's own opaque directories included).
    fn lookup_lower(&self, rel: &Path) -> Option<(OwnedFd, nix::sys::stat::FileStat)> {
        self.lower_at(rel).ok().flatten()
    }

    /// `lookup_lower`, or Err when a directory on the way cannot be read (rootless, a lower directory
    /// without u+rx): what shows through is then unknown.
    fn lower_at(&self, rel: &Path) -> std::result::Result<Option<(OwnedFd, nix::sys::stat::FileStat)>, ()> {
        let Some(key) = self.overlay_xattr() else { return Ok(None) };
        if self.lowers.is_empty() {
            return Ok(None);
        }
        let comps: Vec<&OsStr> = rel.iter().collect();
        let Some((_, dirs)) = comps.split_last() else { return Ok(None) };
        // The layers each directory on the way is merged from, top-first: 0 is this layer, i is lowers[i-1].
        let layer = |i: usize| if i == 0 { &self.root } else { &self.lowers[i - 1] };
        let mut merged: Vec<usize> = (0..=self.lowers.len()).collect();
        let mut prefix = PathBuf::new();
        for c in dirs {
            prefix.push(c);
            let mut next = Vec::new();
            for i in merged {
                match open_in_root(layer(i), &prefix, OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW) {
                    Ok(fd) => {
                        next.push(i);
                        if fsutil::fgetxattr(&fd, key).as_deref() == Some(b"y") {
                            break;
                        }
                    }
                    Err(Errno::ENOENT) => continue,
                    Err(Errno::EACCES) => return Err(()),
                    Err(_) => break,
                }
            }
            merged = next;
        }
        for i in merged.into_iter().filter(|i| *i > 0) {
            match open_in_root(layer(i), rel, OFlag::O_PATH | OFlag::O_NOFOLLOW) {
                Ok(fd) => {
                    let st = fstat(&fd).map_err(|_| ())?;
                    return Ok((!is_whiteout(&st)).then_some((fd, st)));
                }
                Err(Errno::ENOENT) => continue,
                Err(Errno::EACCES) => return Err(()),
                Err(_) => return Ok(None),
            }
        }
        Ok(None)
    }

    /// Overlay form: what the layers below show at `rel`, for a whiteout or opaque marker to hide: None
    /// if nothing, else whether it is a directory (assumed so when it cannot be told: hiding too much
    /// is safer than letting a deleted file show).
    fn below(&self, rel: &Path) -> Option<bool> {
        match self.lower_at(rel) {
            Ok(None) => None,
            Ok(Some((_, st))) => Some(st.st_mode & libc::S_IFMT == libc::S_IFDIR),
            Err(()) => Some(true),
        }
    }

    /// Metadata the lower copy of `fd`'s inode carries that a copy in this layer must too (overlayfs's
    /// own xattrs excepted: an opaque mark copied up would hide the lower dir's entries).
    fn lower_xattrs(fd: &OwnedFd) -> Vec<(String, Vec<u8>)> {
        let mut x = fsutil::fd_xattrs(&fsutil::proc_fd(fd)).unwrap_or_default();
        x.retain(|(k, _)| !k.starts_with("trusted.overlay.") && !k.starts_with("user.overlay."));
        x
    }

    /// A directory this layer created only as a parent: give it the owner, mode, xattrs and mtime of
    /// the same directory in the layers below (mode and mtime applied with the layer's own dirs, last).
    fn copy_lower_dir(&mut self, raw: &[u8], rel: &Path) -> Result<()> {
        let Some((lfd, st)) = self.lookup_lower(rel) else { return Ok(()) };
        if st.st_mode & libc::S_IFMT != libc::S_IFDIR {
            return Ok(());
        }
        let dfd = open_in_root(&self.root, rel, OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW)
            .map_err(|x| self.err(raw, format!("parent directory: {}", io(x))))?;
        if self.opts.privileged {
            fchown(&dfd, Some(Uid::from_raw(st.st_uid)), Some(Gid::from_raw(st.st_gid)))
                .map_err(|x| self.err(raw, format!("parent directory chown: {}", io(x))))?;
        }
        let xattrs = Self::lower_xattrs(&lfd);
        self.set_xattrs(&dfd, &xattrs, raw)?;
        // Not a later entry of this layer: insert first so that such an entry wins in finish_layer.
        self.dirs.insert(0, DirMeta { rel: rel.to_path_buf(), mode: st.st_mode & 0o7777, mtime: st.st_mtime });
        Ok(())
    }

    /// Overlay form: a hard link whose target is in a lower layer. Copy the target up into this layer
    /// (content, owner, mode, xattrs, mtime) so both names share one inode, as they do in `unpack`.
    fn copy_up(&mut self, raw: &[u8], tcomps: &[&OsStr]) -> Result<bool> {
        let trel: PathBuf = tcomps.iter().collect();
        let Some((lfd, st)) = self.lookup_lower(&trel) else { return Ok(false) };
        if st.st_mode & libc::S_IFMT != libc::S_IFREG {
            return Ok(false);
        }
        let (tname, tparent) = tcomps.split_last().unwrap();
        let tparent_rel: PathBuf = tparent.iter().collect();
        let pfd = self.parent(raw, tparent, &tparent_rel)?;
        let e = |s: &Self, what: &str, err: Errno| s.err(raw, format!("copy up hardlink target: {what}: {}", io(err)));
        let mut src: File = nix::fcntl::open(
            &fsutil::proc_fd(&lfd),
            OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|x| e(self, "open", x))?
        .into();
        let fd = openat(
            &pfd,
            *tname,
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o600),
        )
        .map_err(|x| e(self, "create", x))?;
        let mut f = File::from(fd);
        std::io::copy(&mut src, &mut f).map_err(|x| self.err(raw, format!("copy up hardlink target: {x}")))?;
        if self.opts.privileged {
            fchown(&f, Some(Uid::from_raw(st.st_uid)), Some(Gid::from_raw(st.st_gid)))
                .map_err(|x| e(self, "chown", x))?;
        }
        fchmod(&f, Mode::from_bits_truncate(st.st_mode & 0o7777)).map_err(|x| e(self, "chmod", x))?;
        let xattrs = Self::lower_xattrs(&lfd);
        self.set_xattrs(&f, &xattrs, raw)?;
        let (at, mt) = (TimeSpec::new(st.st_atime, st.st_atime_nsec), TimeSpec::new(st.st_mtime, st.st_mtime_nsec));
        futimens(&f, &at, &mt).map_err(|x| e(self, "utimes", x))?;
        self.mark_upper(&trel);
        Ok(true)
    }

    fn err(&self, path: &[u8], reason: impl std::fmt::Display) -> Error {
        Error::new("extract", format!("layer {} entry {:?}", short(&self.layer), String::from_utf8_lossy(path)), reason)
    }

    /// Extract a whole tar stream.
    pub fn extract<R: Read>(&mut self, r: R) -> Result<()> {
        let mut ar = tar::Archive::new(crate::guard::TarGuard::new(r));
        let entries = ar.entries().map_err(|e| Error::new("extract", format!("layer {}", short(&self.layer)), e))?;
        let mut n: u64 = 0;
        for ent in entries {
            if let Some(stop) = self.stop {
                stop()?;
            }
            let mut ent = ent.map_err(|e| Error::new("extract", format!("layer {}", short(&self.layer)), e))?;
            n += 1;
            if n > self.opts.max_entries {
                return Err(Error::new(
                    "extract",
                    format!("layer {}", short(&self.layer)),
                    format!("more than {} entries", self.opts.max_entries),
                )
                .hint("raise it with --max-entries if the image is trusted"));
            }
            self.entry(&mut ent)?;
        }
        self.finish_layer()
    }

    fn entry<R: Read>(&mut self, ent: &mut tar::Entry<R>) -> Result<()> {
        let raw = ent.path_bytes().into_owned();
        let kind = ent.header().entry_type();
        if matches!(
            kind,
            EntryType::XGlobalHeader | EntryType::XHeader | EntryType::GNULongName | EntryType::GNULongLink
        ) {
            return Ok(());
        }
        let comps = split_path(&raw).map_err(|r| self.err(&raw, r))?;
        let Some((name, parent)) = comps.split_last() else {
            // The root itself: only a directory may stand here (CVE-2021-29136 was a `.` symlink).
            if kind != EntryType::Directory {
                return Err(self.err(&raw, "a non-directory would replace the root"));
            }
            let h = ent.header();
            let mode = h.mode().map_err(|e| self.err(&raw, e))?;
            let mtime = h.mtime().unwrap_or(0) as i64;
            if self.opts.privileged {
                let (uid, gid) = (h.uid().unwrap_or(0) as u32, h.gid().unwrap_or(0) as u32);
                fchownat(
                    &self.root,
                    ".",
                    Some(Uid::from_raw(uid)),
                    Some(Gid::from_raw(gid)),
                    AtFlags::AT_SYMLINK_NOFOLLOW,
                )
                .map_err(|e| self.err(&raw, io(e)))?;
            }
            self.dirs.push(DirMeta { rel: PathBuf::new(), mode, mtime });
            return Ok(());
        };
        let name: &OsStr = name;
        let parent_rel: PathBuf = parent.iter().collect();
        let nb = name.as_bytes();
        if nb.starts_with(WHITEOUT_PREFIX.as_bytes()) {
            return self.whiteout(&raw, parent, &parent_rel, &nb[WHITEOUT_PREFIX.len()..]);
        }
        let rel = parent_rel.join(name);
        let pfd = self.parent(&raw, parent, &parent_rel)?;

        // Whatever is at the name goes, unless a directory meets a directory (then only metadata changes).
        let mut keep_dir = false;
        // Overlay form: what a directory replaces here is this layer's own (a whiteout, a file, a symlink) and
        // hid the lower entry of that name; the directory must go on hiding it, as in `unpack`.
        let mut opaque = false;
        match fstatat(&pfd, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => {
                if st.st_mode & libc::S_IFMT == libc::S_IFDIR && kind == EntryType::Directory {
                    keep_dir = true;
                } else {
                    opaque = kind == EntryType::Directory && self.overlay_xattr().is_some();
                    remove_all_at(&pfd, name).map_err(|e| self.err(&raw, format!("replace existing: {}", io(e))))?;
                    self.cache = None;
                }
            }
            Err(Errno::ENOENT) => {}
            Err(e) => return Err(self.err(&raw, io(e))),
        }

        let h = ent.header().clone();
        let mode = h.mode().map_err(|e| self.err(&raw, e))? & 0o7777;
        let uid = Uid::from_raw(h.uid().map_err(|e| self.err(&raw, e))? as u32);
        let gid = Gid::from_raw(h.gid().map_err(|e| self.err(&raw, e))? as u32);
        let mtime = h.mtime().unwrap_or(0) as i64;
        let mut xattrs = self.xattrs(ent, &raw)?;
        if !self.opts.privileged && matches!(kind, EntryType::Directory | EntryType::Regular | EntryType::Continuous) {
            // Ownership we cannot apply is recorded as rootlesscontainers.io's xattr, as umoci --rootless
            // does, so a later privileged tool (or a user-namespace runtime) can restore it.
            if let Some(v) = rootless_owner(uid.as_raw(), gid.as_raw()) {
                xattrs.retain(|(k, _)| k != ROOTLESS_XATTR);
                xattrs.push((ROOTLESS_XATTR.to_string(), v));
            }
        }
        let chown = self.opts.privileged;
        let e = |s: &Self, what: &str, err: Errno| s.err(&raw, format!("{what}: {}", io(err)));

        match kind {
            EntryType::Directory => {
                if !keep_dir {
                    mkdirat(&pfd, name, Mode::from_bits_truncate(0o700)).map_err(|x| e(self, "mkdir", x))?;
                }
                let flags = OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
                let dfd = match openat(&pfd, name, flags | OFlag::O_RDONLY, Mode::empty()) {
                    // Rootless: a lower layer's directory without u+r (0000): open it up; this entry's
                    // mode is applied when the layer ends.
                    Err(Errno::EACCES) if keep_dir && !self.opts.privileged => {
                        openat(&pfd, name, flags | OFlag::O_PATH, Mode::empty()).and_then(|p| {
                            self.open_up(&rel, &p)?;
                            fsutil::reopen(&p, OFlag::O_RDONLY)
                        })
                    }
                    r => r,
                }
                .map_err(|x| e(self, "open", x))?;
                if chown {
                    fchown(&dfd, Some(uid), Some(gid)).map_err(|x| e(self, "chown", x))?;
                }
                self.set_xattrs(&dfd, &xattrs, &raw)?;
                if opaque {
                    self.set_opaque(&dfd, &raw)?;
                }
                self.dirs.push(DirMeta { rel: rel.clone(), mode, mtime });
            }
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                let sparse = kind == EntryType::GNUSparse;
                if sparse {
                    let size = h.as_gnu().and_then(|g| g.real_size().ok()).unwrap_or(u64::MAX);
                    self.sparse_bytes = self.sparse_bytes.saturating_add(size);
                    if self.sparse_bytes > self.opts.max_size {
                        return Err(self
                            .err(&raw, format!("sparse files larger than the limit of {} bytes", self.opts.max_size)));
                    }
                }
                let fd = openat(
                    &pfd,
                    name,
                    OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                    Mode::from_bits_truncate(0o600),
                )
                .map_err(|x| e(self, "create", x))?;
                let mut f = File::from(fd);
                loop {
                    let k = match ent.read(&mut self.buf) {
                        Ok(0) => break,
                        Ok(k) => k,
                        Err(x) => return Err(self.err(&raw, x)),
                    };
                    // A sparse file's holes stay holes: the reader hands them over as zeros.
                    if sparse && self.buf[..k].iter().all(|&b| b == 0) {
                        f.seek(SeekFrom::Current(k as i64)).map_err(|x| self.err(&raw, x))?;
                    } else {
                        f.write_all(&self.buf[..k]).map_err(|x| self.err(&raw, x))?;
                    }
                }
                if sparse {
                    let end = f.stream_position().map_err(|x| self.err(&raw, x))?;
                    f.set_len(end).map_err(|x| self.err(&raw, x))?;
                }
                // chown clears set-id bits, so it comes before chmod; xattrs (file capabilities) after both.
                if chown {
                    fchown(&f, Some(uid), Some(gid)).map_err(|x| e(self, "chown", x))?;
                }
                fchmod(&f, Mode::from_bits_truncate(mode)).map_err(|x| e(self, "chmod", x))?;
                self.set_xattrs(&f, &xattrs, &raw)?;
                let t = TimeSpec::new(mtime, 0);
                futimens(&f, &t, &t).map_err(|x| e(self, "utimes", x))?;
            }
            EntryType::Symlink => {
                let target = ent.link_name_bytes().ok_or_else(|| self.err(&raw, "symlink without a target"))?;
                symlinkat(OsStr::from_bytes(&target), &pfd, name).map_err(|x| e(self, "symlink", x))?;
                if chown {
                    fchownat(&pfd, name, Some(uid), Some(gid), AtFlags::AT_SYMLINK_NOFOLLOW)
                        .map_err(|x| e(self, "chown", x))?;
                }
                self.set_special_xattrs(&pfd, name, &xattrs, &raw)?;
                let t = TimeSpec::new(mtime, 0);
                utimensat(&pfd, name, &t, &t, UtimensatFlags::NoFollowSymlink).map_err(|x| e(self, "utimes", x))?;
            }
            EntryType::Link => {
                let target =
                    ent.link_name_bytes().ok_or_else(|| self.err(&raw, "hardlink without a target"))?.into_owned();
                let tcomps = split_path(&target).map_err(|r| self.err(&raw, format!("hardlink target: {r}")))?;
                let Some((tname, tparent)) = tcomps.split_last() else {
                    return Err(self.err(&raw, "hardlink to the root"));
                };
                let tparent_rel: PathBuf = tparent.iter().collect();
                let tdir = |s: &Self| open_in_root(&s.root, &tparent_rel, OFlag::O_PATH | OFlag::O_DIRECTORY);
                // Overlay form: this layer's whiteout of the target says it is gone, as unpack finds it
                // gone; a link to the 0/0 device would be one more whiteout, hiding a lower file.
                let whited_out = matches!(self.opts.mode, ExtractMode::Overlay { .. })
                    && tdir(self)
                        .and_then(|t| fstatat(&t, *tname, AtFlags::AT_SYMLINK_NOFOLLOW))
                        .is_ok_and(|st| is_whiteout(&st));
                if whited_out {
                    return Err(e(self, "hardlink target", Errno::ENOENT));
                }
                let link = |s: &Self| -> nix::Result<()> { linkat(&tdir(s)?, *tname, &pfd, name, AtFlags::empty()) };
                match link(self) {
                    Err(Errno::ENOENT) if !self.lowers.is_empty() && self.copy_up(&raw, &tcomps)? => {
                        link(self).map_err(|x| e(self, "link", x))?
                    }
                    r => r.map_err(|x| e(self, "hardlink target", x))?,
                }
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                let sflag = match kind {
                    EntryType::Char => SFlag::S_IFCHR,
                    EntryType::Block => SFlag::S_IFBLK,
                    _ => SFlag::S_IFIFO,
                };
                if sflag != SFlag::S_IFIFO && !self.opts.privileged {
                    self.skipped_devices += 1;
                    return Ok(());
                }
                let dev = nix::sys::stat::makedev(
                    h.device_major().ok().flatten().unwrap_or(0) as u64,
                    h.device_minor().ok().flatten().unwrap_or(0) as u64,
                );
                mknodat(&pfd, name, sflag, Mode::from_bits_truncate(mode & 0o777), dev)
                    .map_err(|x| e(self, "mknod", x))?;
                if chown {
                    fchownat(&pfd, name, Some(uid), Some(gid), AtFlags::AT_SYMLINK_NOFOLLOW)
                        .map_err(|x| e(self, "chown", x))?;
                }
                // mknod's mode went through the umask; the node was just made here, so this is not a symlink.
                fchmodat(&pfd, name, Mode::from_bits_truncate(mode), FchmodatFlags::FollowSymlink)
                    .map_err(|x| e(self, "chmod", x))?;
                self.set_special_xattrs(&pfd, name, &xattrs, &raw)?;
                let t = TimeSpec::new(mtime, 0);
                utimensat(&pfd, name, &t, &t, UtimensatFlags::NoFollowSymlink).map_err(|x| e(self, "utimes", x))?;
            }
            other => {
                self.ctx.warn(&format!(
                    "extract: layer {} entry {:?}: skipped unsupported type {other:?}",
                    short(&self.layer),
                    String::from_utf8_lossy(&raw)
                ));
                return Ok(());
            }
        }
        if kind == EntryType::Directory {
            self.created.insert(rel.clone());
        }
        self.mark_upper(&rel);
        Ok(())
    }

    /// `rel` and its ancestors are this layer's (see `upper`). An ancestor already there has all of its own.
    fn mark_upper(&mut self, rel: &Path) {
        let mut p = rel;
        while !p.as_os_str().is_empty() && self.upper.insert(p.to_path_buf()) {
            p = p.parent().unwrap_or(Path::new(""));
        }
    }

    /// The overlay form's opaque-directory xattr, None when whiteouts are applied instead.
    fn overlay_xattr(&self) -> Option<&'static str> {
        match self.opts.mode {
            ExtractMode::Flatten => None,
            ExtractMode::Overlay { userxattr: true } => Some("user.overlay.opaque"),
            ExtractMode::Overlay { userxattr: false } => Some("trusted.overlay.opaque"),
        }
    }

    fn set_opaque(&self, dfd: &OwnedFd, raw: &[u8]) -> Result<()> {
        let Some(key) = self.overlay_xattr() else { return Ok(()) };
        fsutil::fsetxattr(dfd, key, b"y").map_err(|x| self.err(raw, format!("set {key}: {x}")))
    }

    /// The parent directory of an entry, created when the tar did not list it. Remembers the last one:
    /// entries come grouped by directory.
    fn parent(&mut self, raw: &[u8], comps: &[&OsStr], rel: &Path) -> Result<OwnedFd> {
        if let Some((p, fd)) = &self.cache {
            if p == rel {
                return fd.try_clone().map_err(|x| self.err(raw, x));
            }
        }
        let mut made = Vec::new();
        let mut fd = fsutil::mkdir_all_in_root(&self.root, comps, &mut made);
        if fd.as_ref().err() == Some(&Errno::EACCES) && !self.opts.privileged {
            self.accessible(rel).map_err(|x| self.err(raw, format!("parent directory: chmod u+rwx: {}", io(x))))?;
            fd = fsutil::mkdir_all_in_root(&self.root, comps, &mut made);
        }
        let fd = match fd {
            Err(Errno::ENOTDIR) if self.whiteouts_to_dirs(raw, comps)? => {
                fsutil::mkdir_all_in_root(&self.root, comps, &mut made)
            }
            r => r,
        };
        let fd = fd.map_err(|x| match x {
            // The component exists but does not resolve to a directory inside the root.
            Errno::EEXIST => self.err(raw, "parent directory: a symlink on the path points to nothing inside the root"),
            x => self.err(raw, format!("parent directory: {}", io(x))),
        })?;
        self.created.extend(made.iter().cloned());
        if !self.lowers.is_empty() {
            for m in &made {
                self.copy_lower_dir(raw, m)?;
            }
        }
        self.note_touched(rel, &fd);
        self.writable(raw, rel, &fd)?;
        self.cache = Some((rel.to_path_buf(), fd.try_clone().map_err(|x| self.err(raw, x))?));
        Ok(fd)
    }

    /// Rootless (no CAP_DAC_OVERRIDE): a directory a lower layer left read-only (0555, as Fedora's
    /// `/usr/bin`) cannot take this layer's entries or whiteouts. It is ours (a rootless extraction owns
    /// everything it makes), so it is made writable to its owner for the moment and its mode put back
    /// when the layer ends, as umoci's `--rootless` does.
    fn writable(&mut self, raw: &[u8], rel: &Path, fd: &OwnedFd) -> Result<()> {
        if self.opts.privileged || self.modes.contains_key(rel) {
            return Ok(());
        }
        self.open_up(rel, fd).map_err(|x| self.err(raw, format!("parent directory: chmod u+rwx: {}", io(x))))
    }

    /// Rootless: make directory `rel` (`fd`, O_PATH or not) u+rwx if it is not, noting the mode to put
    /// back when the layer ends.
    fn open_up(&mut self, rel: &Path, fd: &OwnedFd) -> nix::Result<()> {
        let st = fstat(fd)?;
        if st.st_mode & 0o700 == 0o700 {
            return Ok(());
        }
        fsutil::chmod_fd(fd, st.st_mode | 0o700)?;
        self.modes.entry(rel.to_path_buf()).or_insert((st.st_mode & 0o7777, (st.st_dev, st.st_ino)));
        Ok(())
    }

    /// Rootless: a lower layer's directory its owner cannot enter or list (0000, 0300) is on the way to
    /// `rel`. Open up every directory from the root down to `rel` (to where it ends: what is missing is
    /// made next), as umoci's --rootless does; the modes go back when the layer ends.
    fn accessible(&mut self, rel: &Path) -> nix::Result<()> {
        let mut prefix = PathBuf::new();
        for c in std::iter::once(OsStr::new("")).chain(rel.iter()) {
            prefix.push(c);
            let fd = match open_in_root(&self.root, &prefix, OFlag::O_PATH | OFlag::O_DIRECTORY) {
                Ok(fd) => fd,
                Err(Errno::ENOENT | Errno::ENOTDIR) => return Ok(()),
                Err(e) => return Err(e),
            };
            self.open_up(&prefix, &fd)?;
        }
        Ok(())
    }

    /// `open_in_root` below the target, opening up the way first when the owner cannot pass (rootless).
    fn open_rel(&mut self, rel: &Path, flags: OFlag) -> nix::Result<OwnedFd> {
        match open_in_root(&self.root, rel, flags) {
            Err(Errno::EACCES) if !self.opts.privileged => {
                self.accessible(rel)?;
                open_in_root(&self.root, rel, flags)
            }
            r => r,
        }
    }

    /// Overlay form: an entry below a name this layer whited out (`.wh.a`, then `a/x` without `a/`). In
    /// `unpack` the whiteout removed `a` and `a/x` makes it anew; here the whiteout device must become a
    /// directory that hides the lower `a`. Returns whether one was replaced.
    fn whiteouts_to_dirs(&mut self, raw: &[u8], comps: &[&OsStr]) -> Result<bool> {
        if self.overlay_xattr().is_none() {
            return Ok(false);
        }
        let e = |s: &Self, x: Errno| s.err(raw, format!("parent directory: {}", io(x)));
        let mut replaced = false;
        for i in 0..comps.len() {
            let prel: PathBuf = comps[..i].iter().collect();
            let pfd = match open_in_root(&self.root, &prel, OFlag::O_PATH | OFlag::O_DIRECTORY) {
                Ok(fd) => fd,
                Err(_) => break, // not this method's case: mkdir_all_in_root reports it
            };
            let st = match fstatat(&pfd, comps[i], AtFlags::AT_SYMLINK_NOFOLLOW) {
                Ok(st) => st,
                Err(_) => break,
            };
            if !is_whiteout(&st) {
                continue;
            }
            unlinkat(&pfd, comps[i], UnlinkatFlags::NoRemoveDir).map_err(|x| e(self, x))?;
            mkdirat(&pfd, comps[i], Mode::from_bits_truncate(0o755)).map_err(|x| e(self, x))?;
            let dfd = openat(
                &pfd,
                comps[i],
                OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .map_err(|x| e(self, x))?;
            self.set_opaque(&dfd, raw)?;
            // Made here, but not `made`: the lower directory it hides has no metadata to give it.
            self.created.insert(prel.join(comps[i]));
            self.cache = None;
            replaced = true;
        }
        Ok(replaced)
    }

    /// Remember a lower layer's directory mtime before this layer changes its entries.
    fn note_touched(&mut self, rel: &Path, fd: &OwnedFd) {
        if self.created.contains(rel) || self.restore.contains_key(rel) {
            return;
        }
        if let Ok(st) = fstat(fd) {
            let at = TimeSpec::new(st.st_atime, st.st_atime_nsec);
            let mt = TimeSpec::new(st.st_mtime, st.st_mtime_nsec);
            self.restore.insert(rel.to_path_buf(), (at, mt));
        }
    }

    fn whiteout(&mut self, raw: &[u8], parent: &[&OsStr], parent_rel: &Path, target: &[u8]) -> Result<()> {
        let opaque = target == &WHITEOUT_OPAQUE.as_bytes()[WHITEOUT_PREFIX.len()..];
        if !opaque && target.starts_with(WHITEOUT_PREFIX.as_bytes()) {
            // Other `.wh..wh.` names are aufs bookkeeping (.wh..wh.plnk, .wh..wh.aufs), not content.
            return Ok(());
        }
        if !opaque && (target.is_empty() || target == b"." || target == b"..") {
            return Err(self.err(raw, "malformed whiteout"));
        }
        match self.opts.mode {
            ExtractMode::Flatten => {
                let pfd = match self.open_rel(parent_rel, OFlag::O_RDONLY | OFlag::O_DIRECTORY) {
                    Ok(fd) => fd,
                    // No parent, or a file or a symlink to one: nothing below to hide (as umoci).
                    Err(Errno::ENOENT | Errno::ENOTDIR) => return Ok(()),
                    Err(x) => return Err(self.err(raw, format!("whiteout parent: {}", io(x)))),
                };
                self.note_touched(parent_rel, &pfd);
                self.writable(raw, parent_rel, &pfd)?;
                self.cache = None;
                if opaque {
                    return self.hide_lower(raw, parent_rel, pfd);
                }
                let name = OsStr::from_bytes(target);
                let trel = parent_rel.join(name);
                if !self.upper.contains(&trel) {
                    return remove_all_at(&pfd, name).map_err(|x| self.err(raw, format!("whiteout: {}", io(x))));
                }
                // This layer's own entry stays; if it is a directory, what lower layers left in it goes.
                match openat(
                    &pfd,
                    name,
                    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                    Mode::empty(),
                ) {
                    Ok(dfd) => self.hide_lower(raw, &trel, dfd)?,
                    Err(Errno::ENOTDIR | Errno::ELOOP | Errno::ENOENT) => {}
                    Err(x) => return Err(self.err(raw, format!("whiteout: {}", io(x)))),
                }
            }
            ExtractMode::Overlay { .. } => {
                if opaque && parent.is_empty() {
                    return self.opaque_root(raw);
                }
                // Only what the layers below show needs hiding. A whiteout device in a directory that
                // merges with none would be listed by overlayfs as an entry that cannot be stat'ed, and
                // the directory made for it one that `unpack` does not have.
                let name = OsStr::from_bytes(target);
                let trel = if opaque { parent_rel.to_path_buf() } else { parent_rel.join(name) };
                let Some(lower_dir) = self.below(&trel) else { return Ok(()) };
                if opaque {
                    // Over a lower non-directory the layer's directory is not merged: nothing to hide.
                    if !lower_dir {
                        return Ok(());
                    }
                    let pfd = self.parent(raw, parent, parent_rel)?;
                    let dfd = fsutil::reopen(&pfd, OFlag::O_RDONLY).map_err(|x| self.err(raw, io(x)))?;
                    return self.set_opaque(&dfd, raw);
                }
                let pfd = self.parent(raw, parent, parent_rel)?;
                // Everything in a layer dir is this layer's own: an entry already at the name stays (it
                // hides the lower one by itself; a directory needs to be opaque for that).
                match fstatat(&pfd, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
                    Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFDIR && !lower_dir => {}
                    Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFDIR => {
                        let dfd = openat(
                            &pfd,
                            name,
                            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                            Mode::empty(),
                        )
                        .map_err(|x| self.err(raw, format!("whiteout: {}", io(x))))?;
                        self.set_opaque(&dfd, raw)?;
                    }
                    Ok(_) => {}
                    Err(Errno::ENOENT) => {
                        // overlayfs's whiteout: a character device 0/0 (allowed without CAP_MKNOD since 5.8).
                        mknodat(&pfd, name, SFlag::S_IFCHR, Mode::empty(), 0)
                            .map_err(|x| self.err(raw, format!("whiteout mknod: {}", io(x))))?;
                        self.whiteouts.push(trel);
                    }
                    Err(x) => return Err(self.err(raw, format!("whiteout: {}", io(x)))),
                }
            }
        }
        Ok(())
    }

    /// Overlay form: `./.wh..wh..opq`. overlayfs never reads the opaque xattr on a layer's root, so what
    /// the layers below show at the top is whited out name by name instead, and this layer's directories
    /// there that would merge with lower ones are made opaque. Names the layer makes later replace those
    /// whiteouts (a directory among them is made opaque, as after any whiteout of its own layer).
    fn opaque_root(&mut self, raw: &[u8]) -> Result<()> {
        let e = |s: &Self, x: Errno| s.err(raw, format!("opaque root: {}", io(x)));
        let mut names = std::collections::BTreeSet::new();
        for l in &self.lowers {
            let fd = fsutil::reopen(l, OFlag::O_RDONLY).map_err(|x| e(self, x))?;
            names.extend(fsutil::list_dir(&fd).map_err(|x| e(self, x))?);
        }
        self.cache = None;
        for name in names {
            let rel = PathBuf::from(&name);
            let Some(lower_dir) = self.below(&rel) else { continue };
            match fstatat(&self.root, name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
                Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFDIR => {
                    if lower_dir {
                        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
                        let dfd = openat(&self.root, name.as_os_str(), flags, Mode::empty()).map_err(|x| e(self, x))?;
                        self.set_opaque(&dfd, raw)?;
                    }
                }
                Ok(_) => {}
                Err(Errno::ENOENT) => {
                    mknodat(&self.root, name.as_os_str(), SFlag::S_IFCHR, Mode::empty(), 0)
                        .map_err(|x| self.err(raw, format!("whiteout mknod: {}", io(x))))?;
                    self.whiteouts.push(rel);
                }
                Err(x) => return Err(e(self, x)),
            }
        }
        Ok(())
    }

    /// Overlay form, at the layer's end: remove the whiteouts that hide nothing any more (a later entry
    /// made a directory above them opaque), which the mount would list as entries that cannot be stat'ed.
    fn prune_whiteouts(&mut self) -> Result<()> {
        for rel in std::mem::take(&mut self.whiteouts) {
            let (Some(name), Some(parent)) = (rel.file_name(), rel.parent()) else { continue };
            let Ok(pfd) = open_in_root(&self.root, parent, OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW)
            else {
                continue;
            };
            let still = fstatat(&pfd, name, AtFlags::AT_SYMLINK_NOFOLLOW).is_ok_and(|st| is_whiteout(&st));
            if !still || self.below(&rel).is_some() {
                continue;
            }
            let e = |s: &Self, x: Errno| s.err(rel.as_os_str().as_bytes(), format!("whiteout: {}", io(x)));
            unlinkat(&pfd, name, UnlinkatFlags::NoRemoveDir).map_err(|x| e(self, x))?;
            // The directories made only to hold it, now empty, below the opaque one: `unpack` removes
            // them with the lower content (no entry of the layer is in them).
            let key = self.overlay_xattr().unwrap_or_default();
            let mut dir = parent;
            while let (Some(dname), Some(up)) = (dir.file_name(), dir.parent()) {
                if self.upper.contains(dir) {
                    break;
                }
                let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW;
                let opaque = open_in_root(&self.root, dir, flags).map(|d| fsutil::fgetxattr(&d, key).is_some());
                let Ok(upfd) = open_in_root(&self.root, up, OFlag::O_PATH | OFlag::O_DIRECTORY) else { break };
                if opaque != Ok(false) || unlinkat(&upfd, dname, UnlinkatFlags::RemoveDir).is_err() {
                    break;
                }
                dir = up;
            }
        }
        Ok(())
    }

    /// Flattened form: remove what lower layers left below directory `rel` (open as `dir`), keeping
    /// this layer's entries (`upper`) and descending into its directories, as umoci does. Iterative,
    /// one directory open at a time: the layer's own tree can be as deep as PATH_MAX allows.
    fn hide_lower(&mut self, raw: &[u8], rel: &Path, dir: OwnedFd) -> Result<()> {
        let e = |s: &Self, x: Errno| s.err(raw, format!("whiteout: {}", io(x)));
        let mut todo: Vec<PathBuf> = Vec::new();
        let mut next = Some((rel.to_path_buf(), dir));
        loop {
            let (rel, dfd) = match next.take() {
                Some(d) => d,
                None => {
                    let Some(r) = todo.pop() else { break };
                    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW;
                    match self.open_rel(&r, flags) {
                        Ok(fd) => (r, fd),
                        Err(x) => return Err(e(self, x)),
                    }
                }
            };
            self.note_touched(&rel, &dfd);
            self.writable(raw, &rel, &dfd)?;
            for name in fsutil::list_dir(&dfd).map_err(|x| e(self, x))? {
                let crel = rel.join(&name);
                if !self.upper.contains(&crel) {
                    remove_all_at(&dfd, &name).map_err(|x| e(self, x))?;
                    continue;
                }
                match fstatat(&dfd, name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
                    Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFDIR => todo.push(crel),
                    Ok(_) => {}
                    Err(x) => return Err(e(self, x)),
                }
            }
        }
        Ok(())
    }

    /// The entry's `SCHILY.xattr.*` PAX records, minus overlayfs's own attributes: a layer that carries
    /// `trusted.overlay.*` could forge whiteouts, opaque dirs or redirects in the overlay mount.
    fn xattrs<R: Read>(&mut self, ent: &mut tar::Entry<R>, raw: &[u8]) -> Result<Vec<(String, Vec<u8>)>> {
        let mut out = Vec::new();
        let Some(exts) = ent.pax_extensions().map_err(|e| self.err(raw, e))? else { return Ok(out) };
        for ext in exts {
            let ext = ext.map_err(|e| self.err(raw, e))?;
            let Ok(key) = ext.key() else { continue };
            if let Some(name) = key.strip_prefix("SCHILY.xattr.") {
                if name.starts_with("trusted.overlay.") || name.starts_with("user.overlay.") {
                    self.ctx.warn(&format!(
                        "extract: layer {} entry {:?}: dropped xattr {name}",
                        short(&self.layer),
                        String::from_utf8_lossy(raw)
                    ));
                    continue;
                }
                out.push((name.to_string(), ext.value_bytes().to_vec()));
            }
        }
        Ok(out)
    }

    fn set_xattrs(&mut self, fd: &impl AsFd, xattrs: &[(String, Vec<u8>)], raw: &[u8]) -> Result<()> {
        self.apply_xattrs(|k, v| fsutil::fsetxattr(fd, k, v), false, xattrs, raw)
    }

    /// xattrs of a symlink, device node or FIFO just made as `name` in `pfd`: no fd can be opened for
    /// writing on those, so they are set through `/proc/self/fd/N` of an O_PATH fd on that very inode
    /// (setxattr follows the magic link to it and no further). The kernel allows no `user.*` xattrs there
    /// (EPERM): those are skipped, as umoci does.
    fn set_special_xattrs(
        &mut self,
        pfd: &OwnedFd,
        name: &OsStr,
        xattrs: &[(String, Vec<u8>)],
        raw: &[u8],
    ) -> Result<()> {
        if xattrs.is_empty() {
            return Ok(());
        }
        let fd = openat(pfd, name, OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC, Mode::empty())
            .map_err(|x| self.err(raw, format!("open for xattrs: {}", io(x))))?;
        let p = fsutil::proc_fd(&fd);
        self.apply_xattrs(|k, v| fsutil::setxattr_path(&p, k, v), true, xattrs, raw)
    }

    fn apply_xattrs(
        &mut self,
        set: impl Fn(&str, &[u8]) -> std::io::Result<()>,
        special: bool,
        xattrs: &[(String, Vec<u8>)],
        raw: &[u8],
    ) -> Result<()> {
        for (k, v) in xattrs {
            if let Err(e) = set(k, v) {
                // Without privilege, trusted.* and security.* cannot be set: skip those, fail on others.
                let unprivileged_ns = k.starts_with("trusted.") || k.starts_with("security.");
                let user_on_special = special && k.starts_with("user.") && e.raw_os_error() == Some(libc::EPERM);
                if (!self.opts.privileged && unprivileged_ns) || user_on_special {
                    self.skipped_xattrs += 1;
                    continue;
                }
                return Err(self.err(raw, format!("set xattr {k}: {e}")));
            }
        }
        Ok(())
    }

    /// Directory modes and times go last: entries written into a directory change its mtime, and a
    /// read-only mode would stop a rootless caller from writing them.
    fn finish_layer(&mut self) -> Result<()> {
        self.cache = None;
        self.prune_whiteouts()?;
        // Per directory: this layer's entry for it (the last one wins; parents copied from a lower layer
        // come first), else the mode it had before the layer opened it up and the times it had before
        // the layer changed its entries.
        let mut fixes: HashMap<PathBuf, DirFix> = HashMap::new();
        for d in std::mem::take(&mut self.dirs) {
            let t = TimeSpec::new(d.mtime, 0);
            fixes.insert(d.rel, DirFix { own: true, mode: Some((d.mode & 0o7777, None)), times: Some((t, t)) });
        }
        for (rel, (mode, id)) in std::mem::take(&mut self.modes) {
            fixes.entry(rel).or_insert(DirFix { own: false, mode: Some((mode, Some(id))), times: None });
        }
        for (rel, times) in std::mem::take(&mut self.restore) {
            let f = fixes.entry(rel).or_insert(DirFix { own: false, mode: None, times: None });
            if !f.own {
                f.times = Some(times);
            }
        }
        // Deepest first: a mode that shuts a directory (0000, rootless) must not stop the ones below it.
        let mut fixes: Vec<_> = fixes.into_iter().collect();
        fixes.sort_unstable_by_key(|(rel, _)| std::cmp::Reverse(rel.components().count()));
        for (rel, f) in fixes {
            self.fix_dir(&rel, &f)?;
        }
        if self.skipped_devices > 0 {
            self.ctx.warn(&format!(
                "extract: layer {}: skipped {} device nodes (not root)",
                short(&self.layer),
                self.skipped_devices
            ));
        }
        if self.skipped_xattrs > 0 {
            self.ctx.warn(&format!(
                "extract: layer {}: skipped {} xattrs (trusted/security when not root, user.* on symlinks and special files)",
                short(&self.layer),
                self.skipped_xattrs
            ));
        }
        self.created.clear();
        self.upper.clear();
        self.skipped_devices = 0;
        self.skipped_xattrs = 0;
        Ok(())
    }

    /// Apply `f` to directory `rel`. Errors count only for the layer's own entries: a directory put back
    /// may have been removed or replaced by the layer since.
    fn fix_dir(&self, rel: &Path, f: &DirFix) -> Result<()> {
        let raw = rel.as_os_str().as_bytes();
        let flags = OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW;
        let (fd, path) = match open_in_root(&self.root, rel, flags | OFlag::O_RDONLY) {
            Ok(fd) => (fd, false),
            // Rootless, a directory its owner cannot read (0000, 0300, a mode applied above): its mode
            // and times are set through an O_PATH fd.
            Err(Errno::EACCES) if !self.opts.privileged => match open_in_root(&self.root, rel, flags | OFlag::O_PATH) {
                Ok(fd) => (fd, true),
                Err(x) if f.own => return Err(self.err(raw, io(x))),
                Err(_) => return Ok(()),
            },
            Err(Errno::ENOENT | Errno::ENOTDIR | Errno::ELOOP) => return Ok(()), // replaced later in the layer
            Err(x) if f.own => return Err(self.err(raw, io(x))),
            Err(_) => return Ok(()),
        };
        if let Some((mode, id)) = f.mode {
            let same = id.is_none_or(|id| fstat(&fd).is_ok_and(|st| (st.st_dev, st.st_ino) == id));
            if same {
                let r = if path { fsutil::chmod_fd(&fd, mode) } else { fchmod(&fd, Mode::from_bits_truncate(mode)) };
                r.map_err(|x| self.err(raw, format!("chmod: {}", io(x))))?;
            }
        }
        if let Some((at, mt)) = f.times {
            let r = if path {
                utimensat(nix::fcntl::AT_FDCWD, &fsutil::proc_fd(&fd), &at, &mt, UtimensatFlags::FollowSymlink)
            } else {
                futimens(&fd, &at, &mt)
            };
            if f.own {
                r.map_err(|x| self.err(raw, format!("utimes: {}", io(x))))?;
            }
        }
        Ok(())
    }

    /// Start the next layer of a flattened unpack.
    pub fn set_layer(&mut self, layer: &str) {
        self.layer = layer.to_string();
    }
}

pub const ROOTLESS_XATTR: &str = "user.rootlesscontainers";

/// The rootlesscontainers.io `Resource` protobuf (`uint32 uid = 1; uint32 gid = 2;`, zero fields
/// omitted), or None for root:root, which needs no record.
pub fn rootless_owner(uid: u32, gid: u32) -> Option<Vec<u8>> {
    if uid == 0 && gid == 0 {
        return None;
    }
    fn varint(v: &mut Vec<u8>, mut x: u32) {
        while x >= 0x80 {
            v.push((x as u8 & 0x7f) | 0x80);
            x >>= 7;
        }
        v.push(x as u8);
    }
    let mut v = Vec::new();
    if uid != 0 {
        v.push(0x08);
        varint(&mut v, uid);
    }
    if gid != 0 {
        v.push(0x10);
        varint(&mut v, gid);
    }
    Some(v)
}

/// overlayfs's whiteout: a character device 0/0.
fn is_whiteout(st: &nix::sys::stat::FileStat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFCHR && st.st_rdev == 0
}

fn io(e: Errno) -> std::io::Error {
    std::io::Error::from(e)
}

fn short(d: &str) -> &str {
    let hex = d.strip_prefix("sha256:").unwrap_or(d);
    &hex[..hex.len().min(12)]
}

#[cfg(test)]
mod tests {
    use super::split_path;

    #[test]
    fn rootless_owner_encoding() {
        // umoci --rootless writes these bytes for 1000:2000.
        assert_eq!(super::rootless_owner(1000, 2000).unwrap(), [8, 232, 7, 16, 208, 15]);
        assert_eq!(super::rootless_owner(0, 5).unwrap(), [16, 5]);
        assert_eq!(super::rootless_owner(0, 0), None);
    }

    #[test]
    fn split() {
        assert_eq!(split_path(b"./a//b/").unwrap(), ["a", "b"]);
        assert!(split_path(b".").unwrap().is_empty());
        assert!(split_path(b"./").unwrap().is_empty());
        assert!(split_path(b"a/../../b").is_err());
        assert!(split_path(b"/etc/passwd").is_err());
        assert!(split_path(b"..").is_err());
        assert_eq!(split_path(b"a/..b").unwrap(), ["a", "..b"]);
    }
}
