//! Writing layers: `build` (a root filesystem directory becomes a one-layer image) and `commit` (an
//! overlayfs upper dir becomes a layer on top of an image, overlay whiteouts turned back into OCI ones).
//!
//! The tar is deterministic: entries sorted by name, numeric owners without names, no atime/ctime, a
//! gzip header without time or file name, and (with `--mtime`) one fixed mtime; so the same tree gives
//! the same diff_id and digest, and the same image digest when the config is the same too.

use crate::digest::{Digest, HashWriter};
use crate::error::{Error, Result};
use crate::extract::{WHITEOUT_OPAQUE, WHITEOUT_PREFIX};
use crate::fsutil::lxattrs;
use crate::image::{Image, Platform};
use crate::import::descriptor;
use crate::store::{StagedBlob, Staging, Store};
use crate::stream::Compression;
use crate::Ctx;
use oci_spec::image::MediaType;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
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
pub fn write_layer(src: &Path, walk: Walk, opts: &BuildOptions, staging: &mut Staging, ctx: &Ctx) -> Result<LayerOut> {
    let meta = std::fs::symlink_metadata(src).map_err(|e| Error::io("build", src, e))?;
    if !meta.is_dir() {
        return Err(Error::new("build", src.display(), "not a directory"));
    }
    let (path, f) = staging.file()?;
    let e = |x: io::Error| Error::new("build", src.display(), x);
    let sink: Sink = HashWriter::new(
        Enc::new(HashWriter::new(BufWriter::with_capacity(256 * 1024, f)), opts.compression).map_err(e)?,
    );
    let mut b = tar::Builder::new(sink);
    b.mode(tar::HeaderMode::Complete);
    b.follow_symlinks(false);
    let mut tw = TarWriter { b, walk, mtime: opts.mtime, links: HashMap::new(), ctx, src: src.to_path_buf() };
    tw.dir(src, Path::new(""))?;
    let sink = tw.b.into_inner().map_err(e)?;
    let (enc, diff_id, _) = sink.finish();
    let (bw, digest, size) = enc.finish().map_err(e)?.finish();
    bw.into_inner().map_err(|x| e(x.into_error()))?.sync_data().map_err(e)?;
    Ok(LayerOut { blob: StagedBlob { path, digest, size }, diff_id })
}

fn is_overlay_xattr(k: &str) -> bool {
    k.starts_with("trusted.overlay.") || k.starts_with("user.overlay.")
}

impl TarWriter<'_> {
    fn err(&self, rel: &Path, r: impl std::fmt::Display) -> Error {
        Error::new("build", self.src.join(rel).display(), r)
    }

    fn header(&self, m: &std::fs::Metadata, kind: EntryType) -> Header {
        let mut h = Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(m.mode() & 0o7777);
        h.set_uid(m.uid() as u64);
        h.set_gid(m.gid() as u64);
        h.set_mtime(self.mtime.unwrap_or(m.mtime().max(0) as u64));
        h.set_size(0);
        h
    }

    fn whiteout(&mut self, rel: &Path, m: &std::fs::Metadata) -> Result<()> {
        let mut h = self.header(m, EntryType::Regular);
        h.set_mode(0o644);
        self.b.append_data(&mut h, rel, io::empty()).map_err(|e| self.err(rel, e))
    }

    fn dir(&mut self, abs: &Path, rel: &Path) -> Result<()> {
        let mut names: Vec<_> = std::fs::read_dir(abs)
            .map_err(|e| self.err(rel, e))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<io::Result<_>>()
            .map_err(|e| self.err(rel, e))?;
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        for n in names {
            let (a, r) = (abs.join(&n), rel.join(&n));
            self.entry(&a, &r)?;
        }
        Ok(())
    }

    fn entry(&mut self, abs: &Path, rel: &Path) -> Result<()> {
        let m = std::fs::symlink_metadata(abs).map_err(|e| self.err(rel, e))?;
        let ft = m.file_type();
        let xattrs = lxattrs(abs).map_err(|e| self.err(rel, e))?;
        let name = rel.file_name().map(|n| n.as_bytes()).unwrap_or(b"");
        // In an upper dir too: overlayfs gives `.wh.*` names no meaning, so a container can make such a
        // file, which as a layer entry would delete its namesake (or make its directory opaque).
        if name.starts_with(WHITEOUT_PREFIX.as_bytes()) {
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
            if (ft.is_char_device() && m.rdev() == 0) || (ft.is_file() && xwhiteout) {
                let wh = rel.with_file_name(format!("{WHITEOUT_PREFIX}{}", rel.file_name().unwrap().to_string_lossy()));
                return self.whiteout(&wh, &m);
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
        if ft.is_dir() {
            let mut h = self.header(&m, EntryType::Directory);
            let mut p = rel.as_os_str().to_os_string();
            p.push("/");
            self.b.append_data(&mut h, Path::new(&p), io::empty()).map_err(|e| self.err(rel, e))?;
            let opaque =
                xattrs.iter().any(|(k, v)| (k == "trusted.overlay.opaque" || k == "user.overlay.opaque") && v == b"y");
            if self.walk == Walk::Upper && opaque {
                self.whiteout(&rel.join(WHITEOUT_OPAQUE), &m)?;
            }
            return self.dir(abs, rel);
        }
        if ft.is_symlink() {
            let t = std::fs::read_link(abs).map_err(|e| self.err(rel, e))?;
            let mut h = self.header(&m, EntryType::Symlink);
            return self.b.append_link(&mut h, rel, &t).map_err(|e| self.err(rel, e));
        }
        if ft.is_file() {
            if m.nlink() > 1 {
                if let Some(first) = self.links.get(&(m.dev(), m.ino())).cloned() {
                    let mut h = self.header(&m, EntryType::Link);
                    return self.b.append_link(&mut h, rel, &first).map_err(|e| self.err(rel, e));
                }
                self.links.insert((m.dev(), m.ino()), rel.to_path_buf());
            }
            let mut h = self.header(&m, EntryType::Regular);
            h.set_size(m.len());
            let f = File::open(abs).map_err(|e| self.err(rel, e))?;
            return self.b.append_data(&mut h, rel, f).map_err(|e| self.err(rel, e));
        }
        let kind = if ft.is_char_device() {
            EntryType::Char
        } else if ft.is_block_device() {
            EntryType::Block
        } else if ft.is_fifo() {
            EntryType::Fifo
        } else {
            self.ctx.warn(&format!("build: {}: skipped a socket", abs.display()));
            return Ok(());
        };
        let mut h = self.header(&m, kind);
        let rdev = m.rdev();
        h.set_device_major(nix::sys::stat::major(rdev) as u32).map_err(|e| self.err(rel, e))?;
        h.set_device_minor(nix::sys::stat::minor(rdev) as u32).map_err(|e| self.err(rel, e))?;
        self.b.append_data(&mut h, rel, io::empty()).map_err(|e| self.err(rel, e))
    }
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
    }
}
