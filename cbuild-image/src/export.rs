//! `export REF FILE`: an oci-archive (a tar of an OCI layout holding just this image) or a
//! docker-archive (`manifest.json`, `<config>.json`, uncompressed `<diff_id>.tar` layers, as `docker load`
//! and skopeo read it). Every blob is re-verified as it is copied; the file appears only when complete.

use crate::digest::{Digest, HashReader};
use crate::error::{Error, Result};
use crate::image::{Image, Layer};
use crate::ops::check_measured;
use crate::store::{Store, REF_NAME};
use crate::stream::{Compression, LayerStream};
use crate::Ctx;
use serde_json::json;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Format {
    OciArchive,
    DockerArchive,
}

impl Format {
    pub fn parse(s: &str) -> std::result::Result<Format, String> {
        match s {
            "oci-archive" | "oci" => Ok(Format::OciArchive),
            "docker-archive" | "docker" => Ok(Format::DockerArchive),
            _ => Err(format!("unknown format {s:?} (oci-archive, docker-archive)")),
        }
    }
}

fn header(size: u64, kind: tar::EntryType, mode: u32) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(mode);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h
}

struct Out<'h, W: Write> {
    b: tar::Builder<W>,
    what: String,
    /// Writing FILE (not stdout): the stop signals, held until the temporary is renamed or removed.
    held: Option<&'h crate::signals::Held>,
}

impl<W: Write> Out<'_, W> {
    /// Fail if a stop signal is pending: looked at before every entry, so a long export stops promptly.
    fn check(&self) -> Result<()> {
        self.held.map_or(Ok(()), |h| h.check("export", &self.what))
    }

    fn bytes(&mut self, name: &str, data: &[u8]) -> Result<()> {
        self.check()?;
        let mut h = header(data.len() as u64, tar::EntryType::Regular, 0o644);
        self.b.append_data(&mut h, name, data).map_err(|e| Error::new("export", &self.what, e))
    }

    fn dir(&mut self, name: &str) -> Result<()> {
        self.check()?;
        let mut h = header(0, tar::EntryType::Directory, 0o755);
        self.b.append_data(&mut h, name, io::empty()).map_err(|e| Error::new("export", &self.what, e))
    }

    /// Copy a store blob, checking it matches `digest` (the tar entry is already out, but the whole file
    /// is thrown away on a mismatch).
    fn blob(&mut self, name: &str, path: &Path, digest: &Digest, size: u64) -> Result<()> {
        self.check()?;
        let f = File::open(path).map_err(|e| Error::io("export", path, e))?;
        let mut r = HashReader::new(f.take(size));
        let mut h = header(size, tar::EntryType::Regular, 0o644);
        self.b.append_data(&mut h, name, &mut r).map_err(|e| Error::new("export", format!("blob {digest}"), e))?;
        let (got, n) = r.finish();
        if &got != digest || n != size {
            return Err(Error::new(
                "verify",
                format!("blob {digest}"),
                format!("store content has digest {got} ({n} bytes)"),
            ));
        }
        Ok(())
    }
}

impl<W: Write> Out<'_, W> {
    /// A compressed layer, uncompressed. A tar header needs the size up front: a first pass measures
    /// (and verifies) it, a second writes the entry and is verified again. Inflating twice, rather than
    /// staging the uncompressed layer in the store, keeps export a reader (a read-only store works).
    fn inflated(&mut self, name: &str, store: &Store, l: &Layer) -> Result<()> {
        self.check()?;
        let path = store.blob_path(&l.digest);
        let m = LayerStream::open(&path, l.digest.as_str(), l.compression, u64::MAX, None)?.finish()?;
        check_measured(l, &m)?;
        let mut s = LayerStream::open(&path, l.digest.as_str(), l.compression, u64::MAX, None)?;
        let mut h = header(m.uncompressed, tar::EntryType::Regular, 0o644);
        let r = self.b.append_data(&mut h, name, (&mut s).take(m.uncompressed));
        if let Err(e) = r {
            return Err(s.abort().unwrap_or_else(|| Error::new("export", format!("layer {}", l.digest), e)));
        }
        let again = s.finish()?;
        check_measured(l, &again)?;
        if again.uncompressed != m.uncompressed {
            return Err(Error::new("verify", format!("layer {}", l.digest), "changed while it was read"));
        }
        Ok(())
    }
}

/// The tag part of a reference (`busybox:1.36` → `1.36`; no tag → `latest`).
fn tag_of(r: &str) -> &str {
    match r.rsplit_once(':') {
        Some((_, t)) if !t.contains('/') => t,
        _ => "latest",
    }
}

/// `export REF FILE`. To a FILE, the stop signals are held from the temporary's creation until it is
/// renamed into place or removed, and looked for before every entry and before the rename: a stop
/// signal that arrives before the rename removes the temporary (`export: FILE: interrupted by SIGx`, no
/// FILE made or replaced); one after it ends the process with FILE complete.
pub fn export(store: &Store, img: &Image, file: &str, format: Format, ctx: &Ctx) -> Result<()> {
    // Before the temporary exists, and dropped only after the rename or the removal.
    let held = (file != "-").then(crate::signals::Held::hold);
    let (tmp, w): (Option<PathBuf>, Box<dyn Write>) = if file == "-" {
        (None, Box::new(io::stdout().lock()))
    } else {
        let (t, f) = create_temp(Path::new(file)).map_err(|e| Error::new("export", file, e))?;
        (Some(t), Box::new(io::BufWriter::with_capacity(256 * 1024, f)))
    };
    let mut out = Out { b: tar::Builder::new(w), what: file.to_string(), held: held.as_ref() };
    let r = (|| {
        match format {
            Format::OciArchive => oci(store, img, &mut out, ctx)?,
            Format::DockerArchive => docker(store, img, &mut out, ctx)?,
        }
        let mut w = out.b.into_inner().map_err(|e| Error::new("export", file, e))?;
        w.flush().map_err(|e| Error::new("export", file, e))?;
        drop(w);
        // The last moment to stop with nothing made.
        held.as_ref().map_or(Ok(()), |h| h.check("export", file))
    })();
    match (&tmp, &r) {
        (Some(t), Ok(())) => {
            if let Err(e) = std::fs::rename(t, file) {
                let _ = std::fs::remove_file(t);
                return Err(Error::io("rename", Path::new(file), e));
            }
        }
        (Some(t), Err(_)) => {
            let _ = std::fs::remove_file(t);
        }
        _ => {}
    }
    drop(held);
    r
}

/// A new temporary file beside `file`, for the rename into place. FILE's directory may be shared (/tmp):
/// the name is not guessable from the pid alone, and O_EXCL refuses whatever already sits there, a
/// planted symlink included, instead of writing through it.
fn create_temp(file: &Path) -> io::Result<(PathBuf, File)> {
    use std::os::unix::fs::OpenOptionsExt;
    let name = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    let mut last = io::Error::from(io::ErrorKind::AlreadyExists);
    for i in 0..8u32 {
        let salt = nanos.wrapping_mul(2654435761).wrapping_add(i);
        let t = file.with_file_name(format!(".{name}.tmp-{}-{salt:08x}", std::process::id()));
        match std::fs::OpenOptions::new().write(true).create_new(true).mode(0o644).open(&t) {
            Ok(f) => return Ok((t, f)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = e,
            Err(e) => return Err(e),
        }
    }
    Err(last)
}

fn oci<W: Write>(store: &Store, img: &Image, out: &mut Out<'_, W>, ctx: &Ctx) -> Result<()> {
    let mut ann = serde_json::Map::new();
    if let Some(r) = &img.reference {
        ann.insert(REF_NAME.into(), json!(tag_of(r)));
        ann.insert(crate::store::CONTAINERD_NAME.into(), json!(r));
    }
    let mut desc = json!({
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": img.manifest_digest.as_str(),
        "size": img.manifest_size,
    });
    if !ann.is_empty() {
        desc["annotations"] = json!(ann);
    }
    let index =
        json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [desc]});
    out.bytes("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    out.bytes("index.json", &serde_json::to_vec(&index).unwrap())?;
    out.dir("blobs/")?;
    out.dir("blobs/sha256/")?;
    let mut blobs =
        vec![(img.manifest_digest.clone(), img.manifest_size), (img.config_digest.clone(), img.config_size)];
    for l in &img.layers {
        if !blobs.iter().any(|(d, _)| d == &l.digest) {
            blobs.push((l.digest.clone(), l.size));
        }
    }
    for (d, size) in blobs {
        ctx.step("export", format!("blob {d}"));
        out.blob(&format!("blobs/sha256/{}", d.hex()), &store.blob_path(&d), &d, size)?;
    }
    Ok(())
}

fn docker<W: Write>(store: &Store, img: &Image, out: &mut Out<'_, W>, ctx: &Ctx) -> Result<()> {
    let cfg_name = format!("{}.json", img.config_digest.hex());
    out.blob(&cfg_name, &store.blob_path(&img.config_digest), &img.config_digest, img.config_size)?;
    let mut names = Vec::new();
    for l in &img.layers {
        let name = format!("{}.tar", l.diff_id.hex());
        ctx.step("export", format!("layer {} as {name}", l.digest));
        if names.contains(&name) {
            continue;
        }
        if l.compression == Compression::None {
            out.blob(&name, &store.blob_path(&l.digest), &l.digest, l.size)?;
        } else {
            out.inflated(&name, store, l)?;
        }
        names.push(name);
    }
    let layers: Vec<String> = img.layers.iter().map(|l| format!("{}.tar", l.diff_id.hex())).collect();
    let tags: Vec<String> = img
        .reference
        .iter()
        .map(|r| if r.rsplit('/').next().unwrap_or(r).contains(':') { r.clone() } else { format!("{r}:latest") })
        .collect();
    let manifest = json!([{"Config": cfg_name, "RepoTags": tags, "Layers": layers}]);
    out.bytes("manifest.json", &serde_json::to_vec(&manifest).unwrap())
}

#[cfg(test)]
mod tests {
    #[test]
    fn tags() {
        assert_eq!(super::tag_of("busybox:1.36"), "1.36");
        assert_eq!(super::tag_of("localhost:5000/x"), "latest");
        assert_eq!(super::tag_of("x"), "latest");
    }
}
