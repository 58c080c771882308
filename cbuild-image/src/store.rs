//! The store: an OCI image layout (`<data>/images`: `oci-layout`, `index.json`, `blobs/sha256/`) plus
//! extracted layers (`<data>/layers/<chainID hex>/`).
//!
//! Writers never make a half-written thing visible: blobs are staged in `.tmp/<staging>/` (same file
//! system) and renamed into place under the store lock, `index.json` is replaced by rename, and layer
//! dirs are extracted under a temporary name and renamed. Each staging dir holds an flock'd `lock` file,
//! so `gc` can tell a dead importer's leftovers (lock free) from a running one's.
//!
//! Verbs that only read open the store with [`Store::open_existing`], which creates nothing: a
//! read-only store (a read-only bind mount, someone else's layout) works, and reading leaves no trace.
//! They hold the store lock shared ([`Store::read_lock`]) from start to end: index.json is only ever
//! replaced by rename and blobs never change once named, but `rm` then `gc` could remove the blobs a
//! reader found an image by before it reads them; gc's exclusive lock now waits for it.

use crate::digest::{Digest, HashWriter};
use crate::error::{Error, Result};
use nix::fcntl::{Flock, FlockArg};
use oci_spec::image::{Descriptor, ImageIndex, ImageIndexBuilder, ImageManifest, MediaType};
use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

pub const REF_NAME: &str = "org.opencontainers.image.ref.name";
pub const CONTAINERD_NAME: &str = "io.containerd.image.name";
/// Manifests, indexes and configs are small; a larger one is hostile (containerd uses the same bound).
pub const MAX_JSON: u64 = 4 << 20;

pub struct Store {
    pub dir: PathBuf,
    pub layers: PathBuf,
    /// False with `--store` elsewhere: other stores may share `<data>/layers`, so gc leaves it alone.
    pub owns_layers: bool,
    /// Opened by a reader: a missing index.json is an empty store rather than an error (nothing was
    /// created for it to find).
    read_only: bool,
}

#[derive(Clone, Debug)]
pub struct StagedBlob {
    pub path: PathBuf,
    pub digest: Digest,
    pub size: u64,
}

/// A private directory for one writer's temporary files, removed when dropped.
pub struct Staging {
    pub dir: PathBuf,
    _lock: Flock<File>,
    n: u32,
}

impl Staging {
    /// A fresh file in the staging dir.
    pub fn file(&mut self) -> Result<(PathBuf, File)> {
        self.n += 1;
        let p = self.dir.join(format!("f{}", self.n));
        let f = OpenOptions::new().write(true).create_new(true).open(&p).map_err(|e| Error::io("stage", &p, e))?;
        set_mode(&f, 0o644);
        Ok((p, f))
    }

    /// Copy `r` into a staged file, hashing it on the way.
    pub fn copy(&mut self, mut r: impl Read, what: &str) -> Result<StagedBlob> {
        let (path, f) = self.file()?;
        let mut w = HashWriter::new(std::io::BufWriter::with_capacity(256 * 1024, f));
        std::io::copy(&mut r, &mut w).map_err(|e| Error::new("stage", what, e))?;
        let (bw, digest, size) = w.finish();
        bw.into_inner().map_err(|e| Error::new("stage", what, e.into_error()))?;
        Ok(StagedBlob { path, digest, size })
    }

    pub fn bytes(&mut self, b: &[u8], what: &str) -> Result<StagedBlob> {
        self.copy(b, what)
    }

    /// A second name in the staging dir for a blob already in the store. It keeps the content alive
    /// if a concurrent `gc` removes the store's name before we commit (the commit then renames it back
    /// into place), and costs no copy. Fails (ENOENT) if the blob is already gone.
    pub fn link(&mut self, stored: &Path) -> std::io::Result<PathBuf> {
        self.n += 1;
        let p = self.dir.join(format!("f{}", self.n));
        fs::hard_link(stored, &p)?;
        Ok(p)
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn set_mode(f: &File, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    let _ = f.set_permissions(fs::Permissions::from_mode(mode));
}

pub fn mkdir(p: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new().recursive(true).mode(0o755).create(p).map_err(|e| Error::io("mkdir", p, e))
}

/// `<data>/layers`, which only its owner may enter: made so if missing, and its group and other
/// permissions taken away if it has any. The extracted layers keep the image's set-id files and file
/// capabilities, and a layer dir is not a container: any host user who could reach one could run an
/// image's set-uid-root program, or one a root container wrote, straight from it (Docker keeps
/// /var/lib/docker 0710 for the same reason, CVE-2021-41091). Root and overlay (which reads lower
/// dirs with the mounter's credentials) need nothing more.
pub fn private_dir(p: &Path) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    if let Some(parent) = p.parent() {
        mkdir(parent)?;
    }
    match fs::DirBuilder::new().mode(0o700).create(p) {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(Error::io("mkdir", p, e)),
    }
    // Followed if a symlink: a layers dir moved to another disk is still the layers dir.
    let m = fs::metadata(p).map_err(|e| Error::io("mkdir", p, e))?;
    if !m.is_dir() {
        return Err(Error::new("mkdir", p.display(), "not a directory"));
    }
    if m.permissions().mode() & 0o077 != 0 {
        fs::set_permissions(p, fs::Permissions::from_mode(0o700)).map_err(|e| Error::io("chmod", p, e))?;
    }
    Ok(())
}

/// Write `bytes` to `path` by writing a temporary sibling and renaming it over. The stop signals are held
/// from the temporary's creation to the rename (the fdatasync makes that milliseconds): a stop signal
/// that arrives before the rename takes it all back (`write: PATH: interrupted by SIGx`, the old file
/// untouched), one after it ends the process with the file replaced.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    static N: AtomicU32 = AtomicU32::new(0);
    let tmp = path.with_extension(format!("tmp{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed)));
    // Before the temporary exists, so no signal can end us while it does.
    let held = crate::signals::Held::hold();
    let r = (|| -> std::io::Result<()> {
        let mut f = File::create(&tmp)?;
        set_mode(&f, 0o644);
        f.write_all(bytes)?;
        f.sync_data()?;
        Ok(())
    })()
    .map_err(|e| Error::io("write", path, e))
    // Last chance to stop with nothing changed; after the rename the write is done.
    .and_then(|()| held.check("write", path.display()))
    .and_then(|()| fs::rename(&tmp, path).map_err(|e| Error::io("write", path, e)));
    if r.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    drop(held);
    r
}

/// fsync a file or directory by path. A read-only descriptor is enough on Linux.
fn sync_path(p: &Path) -> Result<()> {
    File::open(p).and_then(|f| f.sync_all()).map_err(|e| Error::io("store", p, e))
}

impl Store {
    /// The store for a verb that writes it: made (an empty layout) if it does not exist.
    pub fn open(dir: PathBuf, layers: PathBuf, owns_layers: bool) -> Result<Store> {
        let s = Store { dir, layers, owns_layers, read_only: false };
        mkdir(&s.dir.join("blobs/sha256"))?;
        mkdir(&s.dir.join(".tmp"))?;
        let layout = s.dir.join("oci-layout");
        if !layout.exists() {
            write_atomic(&layout, br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        }
        let index = s.dir.join("index.json");
        if !index.exists() {
            let _l = s.lock()?;
            if !index.exists() {
                s.write_index(&empty_index())?;
            }
        }
        Ok(s)
    }

    /// The store as it is, for a verb that only reads it (or changes only index.json, after finding
    /// what it names there): nothing is created, and a missing store reads as an empty one.
    pub fn open_existing(dir: PathBuf, layers: PathBuf, owns_layers: bool) -> Store {
        Store { dir, layers, owns_layers, read_only: true }
    }

    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        self.dir.join("blobs/sha256").join(d.hex())
    }

    pub fn layer_dir(&self, chain: &Digest) -> PathBuf {
        self.layers.join(chain.hex())
    }

    /// The store lock: every change to index.json and every blob rename or removal happens under it.
    pub fn lock(&self) -> Result<Flock<File>> {
        lock_file(&self.dir.join(".lock"), true)
    }

    /// Readers' share of the store lock, for a whole verb. Never created, opened read-only: a store no
    /// writer has locked yet, or one this user cannot open the lock of (someone else's, read-only), has no
    /// writer of ours to wait for.
    pub fn read_lock(&self) -> Result<Option<Flock<File>>> {
        let p = self.dir.join(".lock");
        let Ok(f) = File::open(&p) else { return Ok(None) };
        Flock::lock(f, FlockArg::LockShared).map(Some).map_err(|(_, e)| Error::sys("lock", p.display(), e))
    }

    pub fn staging(&self) -> Result<Staging> {
        static N: AtomicU32 = AtomicU32::new(0);
        let mut attempts = 3;
        loop {
            let n = N.fetch_add(1, Ordering::Relaxed);
            let dir = self.dir.join(".tmp").join(format!("{}-{n}", std::process::id()));
            mkdir(&dir)?;
            let lock = match lock_file(&dir.join("lock"), true) {
                Ok(l) => l,
                Err(e) => {
                    let _ = fs::remove_dir_all(&dir);
                    return Err(e);
                }
            };
            // A gc that found the lock file between its creation and our flock took the dir for a dead
            // import's and removed it: make another.
            attempts -= 1;
            if !still_at(&dir.join("lock"), &lock) && attempts > 0 {
                continue;
            }
            return Ok(Staging { dir, _lock: lock, n: 0 });
        }
    }

    pub fn read_index(&self) -> Result<ImageIndex> {
        let p = self.dir.join("index.json");
        if self.read_only && !p.exists() {
            return Ok(empty_index());
        }
        let b = read_limited(&p, MAX_JSON)?;
        serde_json::from_slice(&b).map_err(|e| Error::new("parse", p.display(), e))
    }

    /// Replace index.json, durably: the new content is synced before the rename (write_atomic), and the
    /// store directory after it, so the rename itself survives a crash.
    pub fn write_index(&self, idx: &ImageIndex) -> Result<()> {
        let b = serde_json::to_vec(idx).map_err(|e| Error::new("write", "index.json", e))?;
        write_atomic(&self.dir.join("index.json"), &b)?;
        sync_path(&self.dir)
    }

    /// (reference, manifest descriptor) for every entry of index.json.
    pub fn entries(&self) -> Result<Vec<(Option<String>, Descriptor)>> {
        Ok(self.read_index()?.manifests().iter().map(|d| (ref_of(d), d.clone())).collect())
    }

    /// Move staged blobs into place and point `refs` at their manifests, all under the lock.
    /// Every name is checked against the reference grammar and stored in full form (`NAME:latest`), and
    /// every blob the new manifests reference must be staged or already in the store (checked under the
    /// lock, so a concurrent `gc` cannot have removed a base layer in between): else nothing is stored.
    pub fn commit(&self, blobs: Vec<StagedBlob>, refs: Vec<(Option<String>, Descriptor)>) -> Result<()> {
        let refs = refs
            .into_iter()
            .map(|(r, d)| Ok((r.as_deref().map(crate::reference::normalize).transpose()?, d)))
            .collect::<Result<Vec<_>>>()?;
        // index.json must never name a blob a crash could lose: each new blob's content is synced before
        // its rename, and the blobs dir (the renames) before index.json is replaced. Blobs the store
        // already has are skipped, so re-importing or rebuilding costs no syncs. The syncs run before
        // the lock where possible, not to hold other writers up; one that gc removed meanwhile is
        // synced under the lock.
        let mut synced = vec![false; blobs.len()];
        for (b, s) in blobs.iter().zip(synced.iter_mut()) {
            if !self.blob_path(&b.digest).exists() {
                sync_path(&b.path)?;
                *s = true;
            }
        }
        let _l = self.lock()?;
        self.check_referenced(&blobs, &refs)?;
        let mut renamed = false;
        for (b, s) in blobs.into_iter().zip(synced) {
            let dst = self.blob_path(&b.digest);
            if dst.exists() {
                continue; // content-addressed: what is there is the same bytes
            }
            if !s {
                sync_path(&b.path)?;
            }
            fs::rename(&b.path, &dst).map_err(|e| Error::io("store", &dst, e))?;
            renamed = true;
        }
        if renamed {
            sync_path(&self.dir.join("blobs/sha256"))?;
        }
        let mut idx = self.read_index()?;
        let mut m = idx.manifests().clone();
        for (r, d) in refs {
            match &r {
                Some(name) => m.retain(|x| ref_of(x).as_deref() != Some(name)),
                None => {
                    if m.iter().any(|x| x.digest() == d.digest()) {
                        continue;
                    }
                }
            }
            let mut d = d;
            let mut ann: HashMap<String, String> = HashMap::new();
            if let Some(name) = r {
                ann.insert(REF_NAME.to_string(), name);
            }
            d.set_annotations(if ann.is_empty() { None } else { Some(ann) });
            d.set_platform(None);
            m.push(d);
        }
        idx.set_manifests(m);
        self.write_index(&idx)
    }

    /// Each manifest in `refs` and everything it references is in `staged` or in the store.
    fn check_referenced(&self, staged: &[StagedBlob], refs: &[(Option<String>, Descriptor)]) -> Result<()> {
        let have = |d: &Digest| -> Option<PathBuf> {
            if let Some(b) = staged.iter().find(|b| &b.digest == d) {
                return Some(b.path.clone());
            }
            let p = self.blob_path(d);
            p.is_file().then_some(p)
        };
        let missing = |d: &Digest, what: &str| {
            Error::new(
                "store",
                format!("{what} {d}"),
                "blob missing from the store (removed meanwhile?); nothing stored",
            )
        };
        for (_, desc) in refs {
            let md = desc_digest(desc)?;
            let Some(mp) = have(&md) else { return Err(missing(&md, "manifest")) };
            if !is_manifest(desc.media_type()) {
                continue;
            }
            let mb = read_limited(&mp, MAX_JSON)?;
            let m: ImageManifest =
                serde_json::from_slice(&mb).map_err(|e| Error::new("parse", format!("manifest {md}"), e))?;
            let cd = desc_digest(m.config())?;
            if have(&cd).is_none() {
                return Err(missing(&cd, "config"));
            }
            for l in m.layers() {
                let ld = desc_digest(l)?;
                if have(&ld).is_none() {
                    return Err(missing(&ld, "layer"));
                }
            }
        }
        Ok(())
    }

    /// Remove a reference from index.json. Returns the entries removed.
    pub fn untag(&self, matches: impl Fn(&Option<String>, &Descriptor) -> bool) -> Result<usize> {
        let _l = self.lock()?;
        let mut idx = self.read_index()?;
        let before = idx.manifests().len();
        let m: Vec<Descriptor> = idx.manifests().iter().filter(|d| !matches(&ref_of(d), d)).cloned().collect();
        let n = before - m.len();
        idx.set_manifests(m);
        self.write_index(&idx)?;
        Ok(n)
    }

    /// Read a small JSON blob, checking size and digest before anyone parses it.
    pub fn read_json_blob(&self, d: &Descriptor, what: &str) -> Result<Vec<u8>> {
        let digest = desc_digest(d)?;
        let size = desc_size(d)?;
        if size > MAX_JSON {
            return Err(Error::new(
                "verify",
                format!("{what} {digest}"),
                format!("size {size} exceeds the {MAX_JSON}-byte limit for JSON"),
            ));
        }
        let p = self.blob_path(&digest);
        let b = read_limited(&p, MAX_JSON)?;
        check(&b, &digest, size, what)?;
        Ok(b)
    }
}

fn empty_index() -> ImageIndex {
    ImageIndexBuilder::default().schema_version(2u32).manifests(vec![]).build().expect("a complete index")
}

/// Compare bytes against a descriptor's digest and size.
pub fn check(b: &[u8], digest: &Digest, size: u64, what: &str) -> Result<()> {
    if b.len() as u64 != size {
        return Err(Error::new(
            "verify",
            format!("{what} {digest}"),
            format!("size is {} bytes, descriptor says {size}", b.len()),
        ));
    }
    let got = Digest::of(b);
    if &got != digest {
        return Err(Error::new("verify", format!("{what} {digest}"), format!("content has digest {got}")));
    }
    Ok(())
}

pub fn read_limited(p: &Path, limit: u64) -> Result<Vec<u8>> {
    use std::os::unix::fs::OpenOptionsExt;
    // O_NONBLOCK and a regular file only: a FIFO planted as a blob or index.json (a --store is anyone's
    // directory, and gc of the default store reads every --store registered with it) must not hang us.
    let f =
        OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(p).map_err(|e| Error::io("read", p, e))?;
    read_file_limited(f, p, limit)
}

/// [`read_limited`] of a file already open (O_NONBLOCK) as `p`.
pub fn read_file_limited(f: File, p: &Path, limit: u64) -> Result<Vec<u8>> {
    if !f.metadata().map_err(|e| Error::io("read", p, e))?.is_file() {
        return Err(Error::new("read", p.display(), "not a regular file"));
    }
    let mut b = Vec::new();
    f.take(limit + 1).read_to_end(&mut b).map_err(|e| Error::io("read", p, e))?;
    if b.len() as u64 > limit {
        return Err(Error::new("read", p.display(), format!("larger than the {limit}-byte limit")));
    }
    Ok(b)
}

/// Whether the open `f` is still the file at `p` (not removed, nor replaced, since it was opened).
fn still_at(p: &Path, f: &File) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (f.metadata(), fs::symlink_metadata(p)) {
        (Ok(held), Ok(now)) => held.nlink() > 0 && (held.dev(), held.ino()) == (now.dev(), now.ino()),
        _ => false,
    }
}

pub fn lock_file(p: &Path, wait: bool) -> Result<Flock<File>> {
    let f = OpenOptions::new().create(true).truncate(false).write(true).open(p).map_err(|e| Error::io("lock", p, e))?;
    let arg = if wait { FlockArg::LockExclusive } else { FlockArg::LockExclusiveNonblock };
    Flock::lock(f, arg).map_err(|(_, e)| Error::sys("lock", p.display(), e))
}

pub fn ref_of(d: &Descriptor) -> Option<String> {
    d.annotations().as_ref().and_then(|a| a.get(REF_NAME).cloned())
}

pub fn desc_digest(d: &Descriptor) -> Result<Digest> {
    Digest::parse(d.digest().as_ref()).map_err(|e| Error::new("verify", "descriptor", e))
}

pub fn desc_size(d: &Descriptor) -> Result<u64> {
    Ok(d.size())
}

pub fn is_index(mt: &MediaType) -> bool {
    matches!(mt, MediaType::ImageIndex) || mt.to_string() == "application/vnd.docker.distribution.manifest.list.v2+json"
}

pub fn is_manifest(mt: &MediaType) -> bool {
    matches!(mt, MediaType::ImageManifest) || mt.to_string() == "application/vnd.docker.distribution.manifest.v2+json"
}
