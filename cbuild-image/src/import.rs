//! `import`: docker-archive (classic `docker save` and Docker 25+, which is also an OCI layout),
//! oci-archive, or an OCI layout directory (an unpacked Docker 25+ `docker save` included), recognised
//! by content.
//!
//! An archive is read once, as a stream: every regular file is copied into a staging dir while it is
//! hashed, keyed by its path in the archive (archive paths never become file names). Then the manifests
//! are followed — `manifest.json` for docker-archive (never the legacy `<id>/layer.tar` layout),
//! `index.json` for OCI — and every blob they name is checked against its descriptor's digest and size
//! before anything is renamed into the store, under the store lock, index.json last.

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::extract::split_path;
use crate::image::{pick_platform, validate, Platform};
use crate::progress::{Progress, ProgressReader};
use crate::store::{
    check, desc_digest, desc_size, is_index, is_manifest, read_limited, StagedBlob, Staging, Store, CONTAINERD_NAME,
    MAX_JSON, REF_NAME,
};
use crate::stream::Compression;
use crate::Ctx;
use oci_spec::image::{Descriptor, DescriptorBuilder, ImageIndex, ImageManifest, MediaType};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

pub struct ImportOptions {
    pub tag: Option<String>,
    pub platform: Platform,
    /// Bound on the uncompressed tar stream of an archive: everything in it is staged on disk, so a
    /// small gzip- or zstd-compressed archive must not fill the disk (a decompression bomb).
    pub max_size: u64,
    /// Bound on the archive's entries (each regular file becomes a staged file).
    pub max_entries: u64,
}

/// Counts what passes and fails the read past `limit`, noting it in `over` (the tar reader wraps
/// errors, so the flag, not the error, tells the caller why the archive stopped).
struct Bounded<R> {
    inner: R,
    n: u64,
    limit: u64,
    over: std::rc::Rc<std::cell::Cell<bool>>,
}

impl<R: Read> Read for Bounded<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let k = self.inner.read(buf)?;
        self.n += k as u64;
        if self.n > self.limit {
            self.over.set(true);
            return Err(std::io::Error::new(std::io::ErrorKind::FileTooLarge, crate::digest::LIMIT_MSG));
        }
        Ok(k)
    }
}

/// One image that was imported.
#[derive(serde::Serialize)]
pub struct Imported {
    #[serde(rename = "ref")]
    pub reference: Option<String>,
    pub digest: String,
    pub layers: usize,
    pub size: u64,
}

/// Where blobs come from: files staged from an archive, or an OCI layout directory.
enum Source {
    Archive { files: HashMap<String, StagedBlob>, links: HashMap<String, String> },
    Dir(PathBuf),
}

impl Source {
    /// Follow in-archive symlinks and hardlinks (by name, in our map: nothing touches the disk).
    fn lookup(&self, name: &str) -> Option<&StagedBlob> {
        let Source::Archive { files, links } = self else { return None };
        let mut key = normalize(name)?;
        for _ in 0..16 {
            if let Some(b) = files.get(&key) {
                return Some(b);
            }
            key = links.get(&key)?.clone();
        }
        None
    }

    fn has(&self, name: &str) -> bool {
        match self {
            Source::Archive { .. } => self.lookup(name).is_some(),
            Source::Dir(d) => d.join(name).is_file(),
        }
    }
}

/// An archive path as a key: components joined by `/`, without `.`; None for `..` or absolute paths.
fn normalize(name: &str) -> Option<String> {
    let c = split_path(name.as_bytes()).ok()?;
    Some(c.iter().map(|s| s.to_string_lossy()).collect::<Vec<_>>().join("/"))
}

/// Resolve a symlink target inside the archive's namespace; None if it leaves it.
fn resolve_link(entry: &str, target: &str) -> Option<String> {
    let mut parts: Vec<&str> = if target.starts_with('/') { Vec::new() } else { entry.split('/').collect() };
    if !target.starts_with('/') {
        parts.pop();
    }
    for c in target.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            c => parts.push(c),
        }
    }
    Some(parts.join("/"))
}

struct Importer<'a> {
    store: &'a Store,
    staging: Staging,
    src: Source,
    /// Blobs to move into the store, by digest (one copy each).
    keep: BTreeMap<Digest, StagedBlob>,
    ctx: &'a Ctx,
}

/// An image found in the input: its names, manifest descriptor, layer count and size.
type Found = (Vec<String>, Descriptor, usize, u64);

pub fn import(store: &Store, input: &str, opts: &ImportOptions, ctx: &Ctx) -> Result<Vec<Imported>> {
    let mut staging = store.staging()?;
    let path = Path::new(input);
    let src = if input != "-" && path.is_dir() {
        if !path.join("oci-layout").is_file() {
            return Err(Error::new("import", input, "directory is not an OCI image layout (no oci-layout file)"));
        }
        ctx.step("read", format!("{input} (OCI layout directory)"));
        Source::Dir(path.to_path_buf())
    } else {
        ctx.step("read", input);
        let (r, total): (Box<dyn Read>, u64) = if input == "-" {
            (Box::new(std::io::stdin().lock()), 0)
        } else {
            let f = File::open(path).map_err(|e| Error::io("open", path, e))?;
            let len = f.metadata().map(|m| m.len()).unwrap_or(0);
            (Box::new(f), len)
        };
        let progress = Progress::new("import", total, ctx.quiet());
        read_archive(ProgressReader { inner: r, progress: progress.as_ref() }, input, opts, &mut staging)?
    };
    let mut im = Importer { store, staging, src, keep: BTreeMap::new(), ctx };
    let images = if im.src.has("manifest.json") {
        ctx.step("detect", format!("{input}: docker-archive"));
        im.docker(input)?
    } else if im.src.has("index.json") {
        ctx.step("detect", format!("{input}: OCI layout"));
        im.oci(input, &opts.platform)?
    } else {
        return Err(Error::new(
            "import",
            input,
            "neither a docker-archive (manifest.json) nor an OCI layout (index.json)",
        ));
    };
    if images.is_empty() {
        return Err(Error::new("import", input, "no images in the archive"));
    }
    if opts.tag.is_some() && images.len() > 1 {
        return Err(Error::new(
            "import",
            input,
            format!("{} images in the archive, --tag names only one", images.len()),
        ));
    }
    let mut refs: Vec<(Option<String>, Descriptor)> = Vec::new();
    let mut out = Vec::new();
    for (names, desc, layers, size) in images {
        let names: Vec<Option<String>> = match &opts.tag {
            Some(t) => vec![Some(t.clone())],
            None if names.is_empty() => vec![None],
            None => names.into_iter().map(Some).collect(),
        };
        for n in names {
            let n = n.as_deref().map(crate::reference::normalize).transpose()?;
            out.push(Imported { reference: n.clone(), digest: desc.digest().to_string(), layers, size });
            refs.push((n, desc.clone()));
        }
    }
    ctx.step("store", format!("{} blobs", im.keep.len()));
    let blobs: Vec<StagedBlob> = std::mem::take(&mut im.keep).into_values().collect();
    store.commit(blobs, refs)?;
    Ok(out)
}

/// Stage every regular file of a (possibly gzip- or zstd-compressed) tar stream, within the limits.
/// Longest entry name or link target in an image archive (Linux's PATH_MAX; a layout's own are short:
/// `blobs/sha256/<64 hex>`, `manifest.json`, `<id>/layer.tar`).
const MAX_NAME: usize = 4096;
/// All of an archive's names and link targets together (a million blobs' worth).
const MAX_NAMES: usize = 64 << 20;

fn read_archive(r: impl Read, input: &str, opts: &ImportOptions, staging: &mut Staging) -> Result<Source> {
    let mut br = BufReader::with_capacity(256 * 1024, r);
    let head = br.fill_buf().map_err(|e| Error::new("read", input, e))?;
    let c = Compression::sniff(head);
    let dec = crate::stream::decoder(br, c).map_err(|e| Error::new("read", input, e))?;
    let over = std::rc::Rc::new(std::cell::Cell::new(false));
    let bounded = Bounded { inner: dec, n: 0, limit: opts.max_size, over: over.clone() };
    let mut ar = tar::Archive::new(crate::guard::TarGuard::new(bounded));
    let mut files = HashMap::new();
    let mut links = HashMap::new();
    let too_big = || {
        Error::new("read", input, format!("uncompressed archive larger than the limit of {} bytes", opts.max_size))
            .hint("raise --max-size if the archive is genuine")
    };
    let bad = |e: std::io::Error| {
        if over.get() {
            return too_big();
        }
        Error::new("read", input, format!("not a readable tar archive: {e}"))
    };
    let (mut n, mut names) = (0u64, 0usize);
    for ent in ar.entries().map_err(bad)? {
        let mut ent = ent.map_err(bad)?;
        n += 1;
        if n > opts.max_entries {
            return Err(Error::new("read", input, format!("more than {} entries", opts.max_entries)));
        }
        let raw = ent.path_bytes().into_owned();
        // Every name (and link target) kept is held in memory until the archive is read: bounded, each
        // and all together, where the archive's own size bounds only the disk.
        let target_len = ent.link_name_bytes().map_or(0, |t| t.len());
        if raw.len() > MAX_NAME || target_len > MAX_NAME {
            let shown = String::from_utf8_lossy(&raw[..raw.len().min(64)]).into_owned();
            return Err(Error::new(
                "read",
                input,
                format!("archive entry {shown:?}...: name or link target longer than {MAX_NAME} bytes"),
            ));
        }
        names += raw.len() + target_len;
        if names > MAX_NAMES {
            return Err(Error::new(
                "read",
                input,
                format!("more than {MAX_NAMES} bytes of entry names and link targets"),
            ));
        }
        let Ok(name) = std::str::from_utf8(&raw) else { continue };
        let Some(key) = normalize(name) else {
            return Err(Error::new("read", input, format!("archive entry {name:?}: path escapes the archive")));
        };
        match ent.header().entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let b = staging.copy(&mut ent, &format!("{input}: {key}")).map_err(|e| {
                    if over.get() {
                        too_big()
                    } else {
                        e
                    }
                })?;
                files.insert(key, b);
            }
            tar::EntryType::Symlink => {
                let t = ent.link_name_bytes().map(|t| String::from_utf8_lossy(&t).into_owned()).unwrap_or_default();
                if let Some(t) = resolve_link(&key, &t) {
                    links.insert(key, t);
                }
            }
            tar::EntryType::Link => {
                let t = ent.link_name_bytes().map(|t| String::from_utf8_lossy(&t).into_owned()).unwrap_or_default();
                if let Some(t) = normalize(&t) {
                    links.insert(key, t);
                }
            }
            _ => {}
        }
    }
    Ok(Source::Archive { files, links })
}

#[derive(Deserialize)]
struct DockerEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers")]
    layers: Vec<String>,
}

impl Importer<'_> {
    /// A small file at the top of the input (index.json, manifest.json), bounded in size.
    fn top_file(&self, name: &str) -> Result<Vec<u8>> {
        match &self.src {
            Source::Dir(d) => {
                let p = d.join(name);
                drop(open_regular(&p)?);
                read_limited(&p, MAX_JSON)
            }
            Source::Archive { .. } => {
                let b = self.src.lookup(name).ok_or_else(|| Error::new("import", name, "missing"))?;
                read_limited(&b.path, MAX_JSON)
            }
        }
    }

    /// The blob a descriptor names, checked against its digest and size, kept for the store.
    fn blob(&mut self, d: &Descriptor, what: &str) -> Result<StagedBlob> {
        let digest = desc_digest(d)?;
        let size = desc_size(d)?;
        if let Some(b) = self.keep.get(&digest) {
            return Ok(b.clone());
        }
        let b = match &self.src {
            Source::Archive { .. } => self
                .src
                .lookup(&format!("blobs/sha256/{}", digest.hex()))
                .cloned()
                .ok_or_else(|| Error::new("import", format!("{what} {digest}"), "missing from the archive"))?,
            Source::Dir(dir) => {
                let dir = dir.clone();
                match self.stored(&digest, size) {
                    // Already in the store (its name is its verified digest): nothing to copy.
                    Some(path) => StagedBlob { path, digest: digest.clone(), size },
                    None => {
                        let p = dir.join("blobs/sha256").join(digest.hex());
                        let f = open_regular(&p)?;
                        self.ctx.step("copy", format!("{what} {digest}"));
                        // One byte more than promised is enough to refuse it: a blob that is a link to
                        // /dev/zero or a file far larger than its descriptor must not fill the disk first.
                        self.staging.copy(f.take(size.saturating_add(1)), &format!("{what} {digest}"))?
                    }
                }
            }
        };
        if b.size != size {
            let got = if b.size > size { format!("more than {size}") } else { b.size.to_string() };
            return Err(Error::new(
                "verify",
                format!("{what} {digest}"),
                format!("size is {got} bytes, descriptor says {size}"),
            ));
        }
        if b.digest != digest {
            return Err(Error::new("verify", format!("{what} {digest}"), format!("content has digest {}", b.digest)));
        }
        self.ctx.step("verify", format!("{what} {digest}"));
        self.keep.insert(digest, b.clone());
        Ok(b)
    }

    /// A blob of the right size the store already has, pinned by a link in our staging dir: a
    /// concurrent `gc` may remove the store's name before we commit (it is unreferenced until then),
    /// and the commit puts it back from the link. None (copy it from the input instead) when the store
    /// does not have it, or lost it before the link was made.
    fn stored(&mut self, digest: &Digest, size: u64) -> Option<PathBuf> {
        let p = self.store.blob_path(digest);
        if !p.metadata().is_ok_and(|m| m.len() == size) {
            return None;
        }
        self.staging.link(&p).ok()
    }

    fn json(&mut self, d: &Descriptor, what: &str) -> Result<Vec<u8>> {
        if desc_size(d)? > MAX_JSON {
            return Err(Error::new(
                "verify",
                format!("{what} {}", d.digest()),
                format!("larger than the {MAX_JSON}-byte limit for JSON"),
            ));
        }
        let b = self.blob(d, what)?;
        let bytes = read_limited(&b.path, MAX_JSON)?;
        check(&bytes, &b.digest, b.size, what)?;
        Ok(bytes)
    }

    fn oci(&mut self, input: &str, platform: &Platform) -> Result<Vec<Found>> {
        let ib = self.top_file("index.json")?;
        let idx: ImageIndex =
            serde_json::from_slice(&ib).map_err(|e| Error::new("parse", format!("{input}: index.json"), e))?;
        let mut out = Vec::new();
        // A top-level index that lists one manifest per platform (buildx's OCI exporter does) is one
        // image: keep the wanted platform's manifests and those that name no platform.
        let mut top: Vec<&Descriptor> = idx.manifests().iter().collect();
        if top.iter().any(|d| is_manifest(d.media_type()) && d.platform().is_some()) {
            top.retain(|d| d.platform().is_none() || platform.matches(d));
            if top.is_empty() {
                return Err(Error::new(
                    "resolve",
                    format!("{input}: index.json"),
                    format!("no manifest for platform {platform}"),
                )
                .hint("choose another with --platform os/arch"));
            }
        }
        for d in top {
            let ann = d.annotations().clone().unwrap_or_default();
            let names: Vec<String> =
                ann.get(CONTAINERD_NAME).or_else(|| ann.get(REF_NAME)).cloned().into_iter().collect();
            let md = if is_index(d.media_type()) {
                let b = self.json(d, "index")?;
                let sub: ImageIndex =
                    serde_json::from_slice(&b).map_err(|e| Error::new("parse", format!("index {}", d.digest()), e))?;
                let mut read = |x: &Descriptor| self.json(x, "index");
                pick_platform(&sub, platform, &format!("index {}", d.digest()), &mut read, 1)?
            } else if is_manifest(d.media_type()) {
                d.clone()
            } else {
                self.ctx.warn(&format!("import: {input}: skipped {} ({})", d.digest(), d.media_type()));
                continue;
            };
            out.push(self.image(names, &md)?);
        }
        Ok(out)
    }

    /// Check one image's manifest, config and layers; keep them.
    fn image(&mut self, names: Vec<String>, md: &Descriptor) -> Result<Found> {
        let mb = self.json(md, "manifest")?;
        let m: ImageManifest =
            serde_json::from_slice(&mb).map_err(|e| Error::new("parse", format!("manifest {}", md.digest()), e))?;
        let cb = self.json(m.config(), "config")?;
        let (m, _, layers) = validate(&mb, &cb, md.digest().as_ref())?;
        for l in m.layers() {
            self.blob(l, "layer")?;
        }
        let size = cb.len() as u64 + layers.iter().map(|l| l.size).sum::<u64>();
        Ok((names, md.clone(), layers.len(), size))
    }

    /// A file `manifest.json` names. In an archive, any member (through its links). In a directory
    /// (an unpacked Docker 25+ `docker save`), only `blobs/sha256/<hex>` paths: the name gives the
    /// digest the content must have, as in an OCI layout, so a file of the directory that leads
    /// elsewhere (the legacy `<id>/layer.tar` symlinks, or a hostile link to a host file) is never
    /// taken for a layer.
    fn docker_file(&mut self, input: &str, p: &str, what: &str) -> Result<StagedBlob> {
        let dir =
            match &self.src {
                Source::Archive { .. } => {
                    return self.src.lookup(p).cloned().ok_or_else(|| {
                        Error::new("import", format!("{input}: {what} {p}"), "missing from the archive")
                    })
                }
                Source::Dir(d) => d.clone(),
            };
        let digest = normalize(p)
            .and_then(|k| k.strip_prefix("blobs/sha256/").and_then(|h| Digest::parse(&format!("sha256:{h}")).ok()))
            .ok_or_else(|| {
                Error::new(
                    "import",
                    format!("{input}: {what} {p}"),
                    "in a directory only blobs/sha256/<digest> paths are read (the Docker 25+ layout)",
                )
            })?;
        let path = dir.join("blobs/sha256").join(digest.hex());
        let size = open_regular(&path)?.metadata().map_err(|e| Error::io("import", &path, e))?.len();
        self.blob(&descriptor(MediaType::ImageLayer, &digest, size), what)
    }

    fn docker(&mut self, input: &str) -> Result<Vec<Found>> {
        let b = self.top_file("manifest.json")?;
        let entries: Vec<DockerEntry> =
            serde_json::from_slice(&b).map_err(|e| Error::new("parse", format!("{input}: manifest.json"), e))?;
        let mut out = Vec::new();
        for e in entries {
            let cfg = self.docker_file(input, &e.config, "config")?;
            let cb = read_limited(&cfg.path, MAX_JSON)?;
            let config: serde_json::Value = serde_json::from_slice(&cb)
                .map_err(|x| Error::new("parse", format!("{input}: config {}", e.config), x))?;
            let diff_ids: Vec<String> = config
                .pointer("/rootfs/diff_ids")
                .and_then(|v| v.as_array())
                .map(|a| a.iter().filter_map(|v| v.as_str().map(String::from)).collect())
                .unwrap_or_default();
            if diff_ids.len() != e.layers.len() {
                return Err(Error::new(
                    "verify",
                    format!("{input}: {}", e.config),
                    format!("{} layers but {} diff_ids", e.layers.len(), diff_ids.len()),
                ));
            }
            let mut layers = Vec::new();
            for (i, p) in e.layers.iter().enumerate() {
                let l = self.docker_file(input, p, "layer")?;
                let mut head = [0u8; 4];
                let n = File::open(&l.path)
                    .and_then(|mut f| f.read(&mut head))
                    .map_err(|x| Error::io("read", &l.path, x))?;
                let c = Compression::sniff(&head[..n]);
                // An uncompressed layer's digest is its diff_id: check it now, for free.
                if c == Compression::None && l.digest.as_str() != diff_ids[i] {
                    return Err(Error::new(
                        "verify",
                        format!("{input}: layer {p}"),
                        format!("content has digest {}, the config's diff_id is {}", l.digest, diff_ids[i]),
                    ));
                }
                layers.push(
                    serde_json::json!({"mediaType": c.media_type(), "digest": l.digest.as_str(), "size": l.size}),
                );
                self.keep.insert(l.digest.clone(), l);
            }
            self.keep.insert(cfg.digest.clone(), cfg.clone());
            let manifest = serde_json::json!({
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cfg.digest.as_str(), "size": cfg.size},
                "layers": layers,
            });
            let mb = serde_json::to_vec(&manifest).unwrap();
            let (_, _, ls) = validate(&mb, &cb, input)?;
            let staged = self.staging.bytes(&mb, "manifest")?;
            let md = descriptor(MediaType::ImageManifest, &staged.digest, staged.size);
            self.keep.insert(staged.digest.clone(), staged);
            let size = cfg.size + ls.iter().map(|l| l.size).sum::<u64>();
            out.push((e.repo_tags.unwrap_or_default(), md, ls.len(), size));
        }
        Ok(out)
    }
}

/// Open a file of a layout directory for reading, refusing anything but a regular file: opening a FIFO
/// would block for ever, and a device would never end. O_NONBLOCK makes the open of a FIFO return.
fn open_regular(p: &Path) -> Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(p)
        .map_err(|e| Error::io("import", p, e))?;
    let m = f.metadata().map_err(|e| Error::io("import", p, e))?;
    if !m.is_file() {
        return Err(Error::new("import", p.display(), "not a regular file"));
    }
    Ok(f)
}

pub fn descriptor(mt: MediaType, d: &Digest, size: u64) -> Descriptor {
    DescriptorBuilder::default()
        .media_type(mt)
        .digest(d.as_str().parse::<oci_spec::image::Digest>().expect("a valid digest"))
        .size(size)
        .build()
        .expect("a complete descriptor")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_stay_inside() {
        assert_eq!(resolve_link("a/layer.tar", "../b/layer.tar").as_deref(), Some("b/layer.tar"));
        assert_eq!(resolve_link("a/layer.tar", "../../etc/passwd"), None);
        assert_eq!(resolve_link("a/x", "/y").as_deref(), Some("y"));
        assert_eq!(normalize("./blobs//sha256/x").as_deref(), Some("blobs/sha256/x"));
        assert_eq!(normalize("../x"), None);
    }
}
