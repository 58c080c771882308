//! Writing layers: `build` (a root filesystem directory becomes a one-layer image) and `commit` (an
//! overlayfs upper dir becomes a layer on top of an image, overlay whiteouts turned back into OCI ones).
//!
//! The tar is deterministic: entries sorted by name, numeric owners without names, no atime/ctime, a
//! gzip header without time or file name, and (with `--mtime`) one fixed mtime; so the same tree gives
//! the same diff_id and digest, and the same image digest when the config is the same too.

use crate::digest::{Digest, HashWriter};
use crate::error::{Error, Result};
use crate::extract::{WHITEOUT_OPAQUE, WHITEOUT_PREFIX};
use crate::fsutil::{fd_xattrs, list_dir, proc_fd, reopen};
use crate::image::{Image, Platform};
use crate::import::descriptor;
use crate::store::{StagedBlob, Staging, Store};
use crate::stream::Compression;
use crate::Ctx;
use nix::errno::Errno;
use nix::fcntl::{openat, OFlag};
use nix::sys::stat::{fstat, FileStat, Mode, SFlag};
use oci_spec::image::MediaType;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use tar::{EntryType, Header};

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Walk {
    /// A plain root filesystem.
    Rootfs,
    /// An overlayfs upper dir: 0/0 char devices and opaque xattrs become OCI whiteouts.
    Upper,
}

/// The image-config fields a build or commit may set.
#[derive(Default, Clone)]
pub struct RuntimeConfig {
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    pub env: Vec<String>,
    pub workdir: Option<String>,
    pub user: Option<String>,
}

pub struct BuildOptions {
    pub compression: Compression,
    /// One mtime for every entry (and the config's `created`): reproducible builds.
    pub mtime: Option<u64>,
    pub config: RuntimeConfig,
}

pub struct LayerOut {
    pub blob: StagedBlob,
    pub diff_id: Digest,
}

enum Enc<W: Write> {
    None(W),
    Gzip(flate2::write::GzEncoder<W>),
    Zstd(zstd::stream::write::Encoder<'static, W>),
}

impl<W: Write> Write for Enc<W> {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        match self {
            Enc::None(w) => w.write(b),
            Enc::Gzip(w) => w.write(b),
            Enc::Zstd(w) => w.write(b),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Enc::None(w) => w.flush(),
            Enc::Gzip(w) => w.flush(),
            Enc::Zstd(w) => w.flush(),
        }
    }
}

impl<W: Write> Enc<W> {
    fn new(w: W, c: Compression) -> io::Result<Enc<W>> {
        Ok(match c {
            Compression::None => Enc::None(w),
            // mtime 0 and no file name in the gzip header: the bytes depend only on the content.
            Compression::Gzip => Enc::Gzip(flate2::GzBuilder::new().mtime(0).write(w, flate2::Compression::default())),
            Compression::Zstd => Enc::Zstd(zstd::stream::write::Encoder::new(w, 3)?),
        })
    }
    fn finish(self) -> io::Result<W> {
        match self {
            Enc::None(w) => Ok(w),
            Enc::Gzip(w) => w.finish(),
            Enc::Zstd(w) => w.finish(),
        }
    }
}

type Sink = HashWriter<Enc<HashWriter<BufWriter<File>>>>;

struct TarWriter<'a> {
    b: tar::Builder<Sink>,
    walk: Walk,
    mtime: Option<u64>,
    links: HashMap<(u64, u64), PathBuf>,
    ctx: &'a Ctx,
    src: PathBuf,
}

/// Write the tree at `src` as a layer blob into `staging`.
///
/// The tree may be an upper dir a running container still writes, so it is walked by directory fds,
/// never by path: each entry is opened `O_PATH|O_NOFOLLOW` relative to its directory's fd and everything
/// after (type, metadata, xattrs, link target, contents) comes from that fd. A file swapped for a symlink
/// is then read as the symlink it has become, a directory swapped for a symlink to `/etc` cannot steer
/// the walk out of the tree, and a FIFO or device node is never opened (opening a FIFO blocks).
pub fn write_layer(src: &Path, walk: Walk, opts: &BuildOptions, staging: &mut Staging, ctx: &Ctx) -> Result<LayerOut> {
    let root = crate::fsutil::open_root(src).map_err(|e| match e {
        Errno::ENOTDIR | Errno::ELOOP => Error::new("build", src.display(), "not a directory"),
        e => Error::sys("build", src.display(), e),
    })?;
    let (path, f) = staging.file()?;
    let e = |x: io::Error| Error::new("build", src.display(), x);
    let sink: Sink = HashWriter::new(
        Enc::new(HashWriter::new(BufWriter::with_capacity(256 * 1024, f)), opts.compression).map_err(e)?,
    );
    let mut b = tar::Builder::new(sink);
    b.mode(tar::HeaderMode::Complete);
    b.follow_symlinks(false);
    let mut tw = TarWriter { b, walk, mtime: opts.mtime, links: HashMap::new(), ctx, src: src.to_path_buf() };
    let dir = reopen(&root, OFlag::O_RDONLY).map_err(|x| Error::sys("build", src.display(), x))?;
    raise_nofile();
    tw.walk(dir)?;
    let sink = tw.b.into_inner().map_err(e)?;
    let (enc, diff_id, _) = sink.finish();
    let (bw, digest, size) = enc.finish().map_err(e)?.finish();
    // Not synced here: the store's commit syncs the blobs it does not have yet, and only those.
    bw.into_inner().map_err(|x| e(x.into_error()))?;
    Ok(LayerOut { blob: StagedBlob { path, digest, size }, diff_id })
}

/// One open directory of the walk.
struct Frame {
    dir: OwnedFd,
    rel: PathBuf,
    names: std::vec::IntoIter<std::ffi::OsString>,
}

/// The walk holds one fd per directory level: take the whole hard limit (the soft one is often 1024).
fn raise_nofile() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
        }
    }
}

/// A failed syscall of the walk; running out of fds means the tree is deeper than the walk can hold.
fn sys_err(src: &Path, rel: &Path, depth: usize, e: Errno) -> Error {
    if e == Errno::EMFILE || e == Errno::ENFILE {
        let limit = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
            .map(|(soft, _)| soft.to_string())
            .unwrap_or_else(|_| "?".into());
        return Error::new(
            "build",
            src.display(),
            format!("directory tree deeper than the open-file limit ({limit}) at depth {depth}"),
        )
        .hint("raise the hard RLIMIT_NOFILE (one fd is held per directory level)");
    }
    Error::sys("build", src.join(rel).display(), e)
}

fn is_overlay_xattr(k: &str) -> bool {
    k.starts_with("trusted.overlay.") || k.starts_with("user.overlay.")
}

fn kind(st: &FileStat) -> SFlag {
    SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits())
}

/// Reads exactly `left` bytes: a file that grew is cut at the size in its header, one that shrank
/// (truncated while read) is padded with zeros, as GNU tar does, so the archive stays well-formed.
struct Exact {
    f: File,
    left: u64,
    padded: u64,
}

impl Read for Exact {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = buf.len().min(usize::try_from(self.left).unwrap_or(usize::MAX));
        if want == 0 {
            return Ok(0);
        }
        let n = match self.f.read(&mut buf[..want])? {
            0 => {
                buf[..want].fill(0);
                self.padded += want as u64;
                want
            }
            n => n,
        };
        self.left -= n as u64;
        Ok(n)
    }
}

impl TarWriter<'_> {
    fn err(&self, rel: &Path, r: impl std::fmt::Display) -> Error {
        Error::new("build", self.src.join(rel).display(), r)
    }

    fn header(&self, st: &FileStat, kind: EntryType) -> Header {
        let mut h = Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(st.st_mode & 0o7777);
        h.set_uid(st.st_uid as u64);
        h.set_gid(st.st_gid as u64);
        h.set_mtime(self.mtime.unwrap_or(st.st_mtime.max(0) as u64));
        h.set_size(0);
        h
    }

    fn whiteout(&mut self, rel: &Path, st: &FileStat) -> Result<()> {
        let mut h = self.header(st, EntryType::Regular);
        h.set_mode(0o644);
        self.b.append_data(&mut h, rel, io::empty()).map_err(|e| self.err(rel, e))
    }

    /// Depth-first, names sorted, without recursion (a container can make a tree as deep as it likes):
    /// a stack of open directories, one fd each, so the depth is bounded by the open-file limit.
    fn walk(&mut self, root: OwnedFd) -> Result<()> {
        let mut stack = vec![self.frame(root, PathBuf::new(), 0)?];
        while let Some(top) = stack.last_mut() {
            let Some(name) = top.names.next() else {
                stack.pop();
                continue;
            };
            let rel = top.rel.join(&name);
            let depth = stack.len();
            let top = stack.last().unwrap();
            if let Some(sub) = self.entry(&top.dir, &name, &rel, depth)? {
                let f = self.frame(sub, rel, stack.len())?;
                stack.push(f);
            }
        }
        Ok(())
    }

    /// A directory (an O_RDONLY fd) and its entries, sorted by name.
    fn frame(&self, dir: OwnedFd, rel: PathBuf, depth: usize) -> Result<Frame> {
        let mut names = list_dir(&dir).map_err(|e| sys_err(&self.src, &rel, depth, e))?;
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        Ok(Frame { dir, rel, names: names.into_iter() })
    }

    /// Write one entry; a directory's fd (O_RDONLY) is returned for the walk to descend into.
    fn entry(&mut self, dir: &OwnedFd, name: &OsStr, rel: &Path, depth: usize) -> Result<Option<OwnedFd>> {
        let src = self.src.clone();
        let sys = |e: Errno| sys_err(&src, rel, depth, e);
        let fd = match openat(dir, name, OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC, Mode::empty()) {
            Ok(fd) => fd,
            // Listed, then removed by whoever writes the tree: it is not part of the snapshot.
            Err(Errno::ENOENT) => return Ok(None),
            Err(e) => return Err(sys(e)),
        };
        let st = fstat(&fd).map_err(sys)?;
        let ft = kind(&st);
        let xattrs = fd_xattrs(&proc_fd(&fd)).map_err(|e| self.err(rel, e))?;
        // In an upper dir too: overlayfs gives `.wh.*` names no meaning, so a container can make such a
        // file, which as a layer entry would delete its namesake (or make its directory opaque).
        if name.as_bytes().starts_with(WHITEOUT_PREFIX.as_bytes()) {
            return Err(self
                .err(rel, "a file named .wh.* would read as a whiteout")
                .hint("rename it; OCI layers cannot carry such names"));
        }
        if self.walk == Walk::Upper {
            if let Some((k, _)) =
                xattrs.iter().find(|(k, _)| k.ends_with(".overlay.redirect") || k.ends_with(".overlay.metacopy"))
            {
                return Err(self.err(
                    rel,
                    format!("has {k}: upper dirs of mounts with redirect_dir or metacopy cannot be committed"),
                ));
            }
            let xwhiteout = xattrs.iter().any(|(k, _)| is_overlay_xattr(k) && k.ends_with(".overlay.whiteout"));
            if (ft == SFlag::S_IFCHR && st.st_rdev == 0) || (ft == SFlag::S_IFREG && xwhiteout) {
                let wh = rel.with_file_name(format!("{WHITEOUT_PREFIX}{}", name.to_string_lossy()));
                return self.whiteout(&wh, &st).map(|_| None);
            }
        }
        let pax: Vec<(String, Vec<u8>)> = xattrs
            .iter()
            .filter(|(k, _)| !is_overlay_xattr(k))
            .map(|(k, v)| (format!("SCHILY.xattr.{k}"), v.clone()))
            .collect();
        if !pax.is_empty() {
            self.b
                .append_pax_extensions(pax.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
                .map_err(|e| self.err(rel, e))?;
        }
        match ft {
            SFlag::S_IFDIR => {
                let sub = reopen(&fd, OFlag::O_RDONLY | OFlag::O_NONBLOCK).map_err(sys)?;
                let mut h = self.header(&st, EntryType::Directory);
                let mut p = rel.as_os_str().to_os_string();
                p.push("/");
                self.b.append_data(&mut h, Path::new(&p), io::empty()).map_err(|e| self.err(rel, e))?;
                let opaque = xattrs
                    .iter()
                    .any(|(k, v)| (k == "trusted.overlay.opaque" || k == "user.overlay.opaque") && v == b"y");
                if self.walk == Walk::Upper && opaque {
                    self.whiteout(&rel.join(WHITEOUT_OPAQUE), &st)?;
                }
                Ok(Some(sub))
            }
            SFlag::S_IFLNK => {
                let t = nix::fcntl::readlinkat(&fd, "").map_err(sys)?;
                let mut h = self.header(&st, EntryType::Symlink);
                self.b.append_link(&mut h, rel, Path::new(&t)).map_err(|e| self.err(rel, e))?;
                Ok(None)
            }
            SFlag::S_IFREG => {
                if st.st_nlink > 1 {
                    if let Some(first) = self.links.get(&(st.st_dev, st.st_ino)).cloned() {
                        let mut h = self.header(&st, EntryType::Link);
                        self.b.append_link(&mut h, rel, &first).map_err(|e| self.err(rel, e))?;
                        return Ok(None);
                    }
                    self.links.insert((st.st_dev, st.st_ino), rel.to_path_buf());
                }
                // Reopen the very inode the O_PATH fd holds, for reading: no path lookup in between.
                let f: File = nix::fcntl::open(
                    &proc_fd(&fd),
                    OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
                    Mode::empty(),
                )
                .map_err(sys)?
                .into();
                let now = fstat(&f).map_err(sys)?;
                if (now.st_dev, now.st_ino, kind(&now)) != (st.st_dev, st.st_ino, ft) {
                    return Err(self.err(rel, "changed while it was read"));
                }
                let mut h = self.header(&now, EntryType::Regular);
                let size = now.st_size.max(0) as u64;
                h.set_size(size);
                let mut r = Exact { f, left: size, padded: 0 };
                self.b.append_data(&mut h, rel, &mut r).map_err(|e| self.err(rel, e))?;
                if r.padded > 0 {
                    self.ctx.warn(&format!(
                        "build: {}: shrank by {} bytes while read; padded with zeros",
                        self.src.join(rel).display(),
                        r.padded
                    ));
                }
                Ok(None)
            }
            SFlag::S_IFCHR | SFlag::S_IFBLK | SFlag::S_IFIFO => {
                // Recorded, never opened.
                let kind = match ft {
                    SFlag::S_IFCHR => EntryType::Char,
                    SFlag::S_IFBLK => EntryType::Block,
                    _ => EntryType::Fifo,
                };
                let mut h = self.header(&st, kind);
                let rdev = st.st_rdev;
                h.set_device_major(nix::sys::stat::major(rdev) as u32).map_err(|e| self.err(rel, e))?;
                h.set_device_minor(nix::sys::stat::minor(rdev) as u32).map_err(|e| self.err(rel, e))?;
                self.b.append_data(&mut h, rel, io::empty()).map_err(|e| self.err(rel, e))?;
                Ok(None)
            }
            _ => {
                self.ctx.warn(&format!("build: {}: skipped a socket", self.src.join(rel).display()));
                Ok(None)
            }
        }
    }
}

/// 9999-12-31T23:59:59Z: RFC 3339 has four-digit years, and Go's time parser (skopeo, umoci, containerd,
/// Docker) refuses a `created` past it, which would make the image unreadable to them.
pub const MAX_MTIME: u64 = 253_402_300_799;

/// Refuse a fixed mtime that would give a `created` other tools cannot read.
pub fn check_mtime(secs: u64) -> std::result::Result<(), String> {
    if secs > MAX_MTIME {
        return Err(format!(
            "{secs} is after 9999-12-31T23:59:59Z ({MAX_MTIME}), a date OCI tools cannot read in `created`"
        ));
    }
    Ok(())
}

/// `YYYY-MM-DDTHH:MM:SSZ` for a Unix time (Howard Hinnant's civil-from-days).
pub fn rfc3339(secs: u64) -> String {
    let days = (secs / 86400) as i64;
    let rem = secs % 86400;
    let z = days + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn apply_runtime(cfg: &mut Value, rc: &RuntimeConfig) {
    let c = cfg.as_object_mut().unwrap().entry("config").or_insert_with(|| json!({}));
    if !c.is_object() {
        *c = json!({});
    }
    let c = c.as_object_mut().unwrap();
    if let Some(e) = &rc.entrypoint {
        c.insert("Entrypoint".into(), json!(e));
    }
    if let Some(e) = &rc.cmd {
        c.insert("Cmd".into(), json!(e));
    }
    if !rc.env.is_empty() {
        let mut env: Vec<String> =
            c.get("Env").and_then(|v| serde_json::from_value(v.clone()).ok()).unwrap_or_default();
        for kv in &rc.env {
            let key = kv.split('=').next().unwrap_or("");
            env.retain(|x| x.split('=').next() != Some(key));
            env.push(kv.clone());
        }
        c.insert("Env".into(), json!(env));
    }
    if let Some(w) = &rc.workdir {
        c.insert("WorkingDir".into(), json!(w));
    }
    if let Some(u) = &rc.user {
        c.insert("User".into(), json!(u));
    }
}

/// Stage a config and a manifest for `layers` and store them under `tag`. Returns the manifest digest.
fn store_image(
    ctx: &Ctx,
    store: &Store,
    mut staging: Staging,
    mut blobs: Vec<StagedBlob>,
    config: &Value,
    layers: Vec<Value>,
    tag: &str,
) -> Result<Digest> {
    let cb = serde_json::to_vec(config).unwrap();
    let cfg = staging.bytes(&cb, "config")?;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cfg.digest.as_str(), "size": cfg.size},
        "layers": layers,
    });
    let mb = serde_json::to_vec(&manifest).unwrap();
    crate::image::validate(&mb, &cb, tag)?;
    let man = staging.bytes(&mb, "manifest")?;
    let desc = descriptor(MediaType::ImageManifest, &man.digest, man.size);
    ctx.step("store", format!("{tag} {}", man.digest));
    let digest = man.digest.clone();
    blobs.push(cfg);
    blobs.push(man);
    store.commit(blobs, vec![(Some(tag.to_string()), desc)])?;
    drop(staging);
    Ok(digest)
}

fn layer_desc(l: &LayerOut, c: Compression) -> Value {
    json!({"mediaType": c.media_type(), "digest": l.blob.digest.as_str(), "size": l.blob.size})
}

/// `build DIR --tag REF`.
pub fn build(store: &Store, dir: &Path, tag: &str, opts: &BuildOptions, ctx: &Ctx) -> Result<(Digest, LayerOut)> {
    let mut staging = store.staging()?;
    ctx.step("build", format!("layer from {}", dir.display()));
    let l = write_layer(dir, Walk::Rootfs, opts, &mut staging, ctx)?;
    let created = rfc3339(opts.mtime.unwrap_or_else(now));
    let p = Platform::host();
    let mut cfg = json!({
        "created": created,
        "architecture": p.arch,
        "os": "linux",
        "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]},
        "rootfs": {"type": "layers", "diff_ids": [l.diff_id.as_str()]},
        "history": [{"created": created, "created_by": "cbuild-image build"}],
    });
    apply_runtime(&mut cfg, &opts.config);
    let layers = vec![layer_desc(&l, opts.compression)];
    let out = LayerOut { blob: l.blob.clone(), diff_id: l.diff_id.clone() };
    let d = store_image(ctx, store, staging, vec![l.blob], &cfg, layers, tag)?;
    Ok((d, out))
}

/// `commit UPPER --from REF --tag REF2`.
pub fn commit(
    store: &Store,
    upper: &Path,
    base: &Image,
    tag: &str,
    opts: &BuildOptions,
    ctx: &Ctx,
) -> Result<(Digest, LayerOut)> {
    let mut staging = store.staging()?;
    ctx.step("commit", format!("layer from {}", upper.display()));
    let l = write_layer(upper, Walk::Upper, opts, &mut staging, ctx)?;
    let created = rfc3339(opts.mtime.unwrap_or_else(now));
    let mut cfg = base.config.clone();
    let o = cfg.as_object_mut().unwrap();
    o.insert("created".into(), json!(created));
    o.get_mut("rootfs")
        .and_then(|r| r.get_mut("diff_ids"))
        .and_then(Value::as_array_mut)
        .unwrap()
        .push(json!(l.diff_id.as_str()));
    let hist = o.entry("history").or_insert_with(|| json!([]));
    if let Some(h) = hist.as_array_mut() {
        h.push(json!({"created": created, "created_by": "cbuild-image commit"}));
    }
    apply_runtime(&mut cfg, &opts.config);
    let mut layers: Vec<Value> = base
        .layers
        .iter()
        .map(|x| json!({"mediaType": x.media_type, "digest": x.digest.as_str(), "size": x.size}))
        .collect();
    layers.push(layer_desc(&l, opts.compression));
    let out = LayerOut { blob: l.blob.clone(), diff_id: l.diff_id.clone() };
    let d = store_image(ctx, store, staging, vec![l.blob], &cfg, layers, tag)?;
    Ok((d, out))
}

#[cfg(test)]
mod tests {
    #[test]
    fn rfc3339() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(super::rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(super::rfc3339(super::MAX_MTIME), "9999-12-31T23:59:59Z");
        assert!(super::check_mtime(super::MAX_MTIME).is_ok() && super::check_mtime(super::MAX_MTIME + 1).is_err());
    }
}
