//! An image as the store holds it: a manifest, its config, its layers. Everything read here is
//! checked (digest, size, media type, diff_id count) before it is used, because a manifest can come from
//! anyone.

use crate::digest::{chain_ids, Digest};
use crate::error::{Error, Result};
use crate::store::{self, desc_digest, desc_size, is_index, is_manifest, Store};
use crate::stream::Compression;
use oci_spec::image::{Descriptor, ImageIndex, ImageManifest};
use serde_json::Value;

#[derive(Clone, Debug)]
pub struct Layer {
    pub digest: Digest,
    pub size: u64,
    pub media_type: String,
    pub compression: Compression,
    pub diff_id: Digest,
    pub chain_id: Digest,
}

pub struct Image {
    pub reference: Option<String>,
    pub manifest_digest: Digest,
    pub manifest_size: u64,
    pub manifest: ImageManifest,
    pub config_digest: Digest,
    pub config_size: u64,
    pub config: Value,
    pub layers: Vec<Layer>,
}

impl Image {
    /// The name to show: the reference, or the short manifest digest.
    pub fn name(&self) -> String {
        self.reference.clone().unwrap_or_else(|| self.manifest_digest.to_string())
    }

    /// Compressed bytes of the image (config and layers), as `docker images` counts it.
    pub fn size(&self) -> u64 {
        self.config_size + self.layers.iter().map(|l| l.size).sum::<u64>()
    }

    /// The runtime part of the config (`config` in OCI terms): Entrypoint, Cmd, Env, ...
    pub fn runtime(&self) -> &Value {
        self.config.get("config").unwrap_or(&Value::Null)
    }
}

/// Parse and cross-check a manifest and its config. `manifest_what` names the manifest in errors.
pub fn validate(
    manifest_bytes: &[u8],
    config_bytes: &[u8],
    manifest_what: &str,
) -> Result<(ImageManifest, Value, Vec<Layer>)> {
    let manifest: ImageManifest = serde_json::from_slice(manifest_bytes)
        .map_err(|e| Error::new("parse", format!("manifest {manifest_what}"), e))?;
    let config: Value = serde_json::from_slice(config_bytes)
        .map_err(|e| Error::new("parse", format!("config of {manifest_what}"), e))?;
    if !config.is_object() {
        return Err(Error::new("parse", format!("config of {manifest_what}"), "not a JSON object"));
    }
    let diff_ids = config
        .pointer("/rootfs/diff_ids")
        .and_then(Value::as_array)
        .ok_or_else(|| Error::new("parse", format!("config of {manifest_what}"), "no rootfs.diff_ids"))?;
    if diff_ids.len() != manifest.layers().len() {
        return Err(Error::new(
            "verify",
            format!("manifest {manifest_what}"),
            format!("{} layers but the config lists {} diff_ids", manifest.layers().len(), diff_ids.len()),
        ));
    }
    let diff_ids = diff_ids
        .iter()
        .map(|v| {
            Digest::parse(v.as_str().unwrap_or(""))
                .map_err(|e| Error::new("verify", format!("config of {manifest_what}"), format!("diff_id: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    let chains = chain_ids(&diff_ids);
    let mut layers = Vec::new();
    for (i, d) in manifest.layers().iter().enumerate() {
        let mt = d.media_type().to_string();
        let compression = Compression::from_media_type(&mt).ok_or_else(|| {
            Error::new(
                "verify",
                format!("layer {} of {manifest_what}", d.digest()),
                format!("unsupported media type {mt:?}"),
            )
        })?;
        layers.push(Layer {
            digest: desc_digest(d)?,
            size: desc_size(d)?,
            media_type: mt,
            compression,
            diff_id: diff_ids[i].clone(),
            chain_id: chains[i].clone(),
        });
    }
    Ok((manifest, config, layers))
}

/// Load an image whose manifest descriptor is `desc`, verifying the manifest and config blobs.
pub fn load(store: &Store, reference: Option<String>, desc: &Descriptor) -> Result<Image> {
    let md = desc_digest(desc)?;
    let mb = store.read_json_blob(desc, "manifest")?;
    let m: ImageManifest = serde_json::from_slice(&mb).map_err(|e| Error::new("parse", format!("manifest {md}"), e))?;
    let cb = store.read_json_blob(m.config(), "config")?;
    let (manifest, config, layers) = validate(&mb, &cb, md.as_str())?;
    Ok(Image {
        reference,
        manifest_digest: md,
        manifest_size: mb.len() as u64,
        config_digest: desc_digest(manifest.config())?,
        config_size: desc_size(manifest.config())?,
        manifest,
        config,
        layers,
    })
}

/// Find REF in the store: an exact reference, `NAME` meaning `NAME:latest`, or a manifest digest
/// (`sha256:...`, or at least 12 of its hex digits).
pub fn resolve(store: &Store, r: &str) -> Result<Image> {
    let (name, desc) = lookup(store, r)?;
    load(store, name, &desc)
}

/// The index entry REF names: (its reference, its manifest descriptor).
///
/// `sha256:HEX` is only ever a digest and `NAME:TAG` only ever a name. A bare run of 12 to 64 hex
/// digits can be both (names of 12–63 hex digits are legal, as in Docker): when it is the name of one
/// image and a digest prefix of another it is refused as ambiguous rather than silently picking one
/// (Docker picks the name, so an ID copied from `ls` can act on another image); the explicit forms
/// still reach either.
pub fn lookup(store: &Store, r: &str) -> Result<(Option<String>, Descriptor)> {
    let entries = store.entries()?;
    let exact = |want: &str| entries.iter().find(|(n, _)| n.as_deref() == Some(want)).cloned();
    let mut by_name = exact(r);
    if by_name.is_none() && !r.rsplit('/').next().unwrap_or(r).contains(':') {
        by_name = exact(&format!("{r}:latest"));
    }
    if let (None, Some(bare)) = (&by_name, r.strip_suffix(":latest")) {
        by_name = exact(bare); // stored before names were normalized
    }
    let hex = r.strip_prefix("sha256:").unwrap_or(r);
    let mut by_digest = None;
    if hex.len() >= 12 && hex.len() <= 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        let found: Vec<_> = entries
            .iter()
            .filter(|(_, d)| d.digest().as_ref().strip_prefix("sha256:").is_some_and(|h| h.starts_with(hex)))
            .collect();
        let mut digests: Vec<_> = found.iter().map(|(_, d)| d.digest().to_string()).collect();
        digests.sort();
        digests.dedup();
        if digests.len() > 1 {
            return Err(Error::new("resolve", r, "ambiguous digest prefix").hint("give more digits of the digest"));
        }
        by_digest = found.first().map(|(n, d)| (n.clone(), d.clone()));
    }
    let hit = match (by_name, by_digest) {
        (Some(n), Some(d)) if n.1.digest() != d.1.digest() => {
            let name = n.0.unwrap_or_default();
            return Err(Error::new(
                "resolve",
                r,
                format!("ambiguous: the name {name} and the digest prefix of {} are different images", d.1.digest()),
            )
            .hint(format!("say {name} for the name or sha256:{hex} for the digest")));
        }
        (Some(n), _) => Some(n),
        (None, d) => d,
    };
    let (name, desc) =
        hit.ok_or_else(|| Error::new("resolve", r, "no such image").hint("list images with `cbuild-image ls`"))?;
    if !is_manifest(desc.media_type()) {
        return Err(Error::new("resolve", r, format!("not an image manifest ({})", desc.media_type())));
    }
    Ok((name, desc))
}

/// A platform wanted from an image index: `os/arch[/variant]`.
#[derive(Clone, Debug)]
pub struct Platform {
    pub os: String,
    pub arch: String,
    pub variant: Option<String>,
}

impl Platform {
    pub fn host() -> Platform {
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "powerpc64" => "ppc64le",
            a => a,
        };
        Platform { os: "linux".into(), arch: arch.into(), variant: None }
    }

    pub fn parse(s: &str) -> std::result::Result<Platform, String> {
        let p: Vec<&str> = s.split('/').collect();
        match p.as_slice() {
            [os, arch] => Ok(Platform { os: os.to_string(), arch: arch.to_string(), variant: None }),
            [os, arch, v] => Ok(Platform { os: os.to_string(), arch: arch.to_string(), variant: Some(v.to_string()) }),
            _ => Err(format!("bad platform {s:?} (want os/arch[/variant])")),
        }
    }

    pub fn matches(&self, d: &Descriptor) -> bool {
        let Some(p) = d.platform() else { return false };
        p.os().to_string() == self.os
            && p.architecture().to_string() == self.arch
            && (self.variant.is_none() || p.variant().as_deref() == self.variant.as_deref())
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.arch)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// From an index, the manifest for `want` (following nested indexes a few levels deep). `read` fetches
/// and verifies a JSON blob by descriptor.
pub fn pick_platform(
    idx: &ImageIndex,
    want: &Platform,
    what: &str,
    read: &mut dyn FnMut(&Descriptor) -> Result<Vec<u8>>,
    depth: u32,
) -> Result<Descriptor> {
    if depth > 4 {
        return Err(Error::new("resolve", what, "image indexes nested too deep"));
    }
    let d = idx.manifests().iter().find(|d| want.matches(d)).ok_or_else(|| {
        Error::new("resolve", what, format!("no manifest for platform {want}"))
            .hint("choose another with --platform os/arch")
    })?;
    if is_index(d.media_type()) {
        let b = read(d)?;
        let sub: ImageIndex =
            serde_json::from_slice(&b).map_err(|e| Error::new("parse", format!("index {}", d.digest()), e))?;
        return pick_platform(&sub, want, what, read, depth + 1);
    }
    Ok(d.clone())
}

/// `size` of a descriptor as a u64, for callers outside this module.
pub fn size_of(d: &Descriptor) -> u64 {
    store::desc_size(d).unwrap_or(0)
}
