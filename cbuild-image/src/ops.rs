//! The verbs that read layers: `unpack` (one flattened rootfs), `layers` (the per-layer store for
//! overlayfs), `verify`; and the ones that change only names or tidy the store: `tag`, `gc`.

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::extract::{ExtractMode, Extractor, Options};
use crate::fsutil;
use crate::image::{Image, Layer};
use crate::progress::Progress;
use crate::store::{lock_file, read_file_limited, read_limited, Store, MAX_JSON};
use crate::stream::{LayerStream, Measured};
use crate::Ctx;
use std::collections::HashSet;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

/// Bounds on what one layer may make us write.
#[derive(Clone, Copy)]
pub struct Limits {
    pub max_layer_size: u64,
    pub max_entries: u64,
}

/// Compare what the decoder measured with what the manifest and config promised.
pub fn check_measured(l: &Layer, m: &Measured) -> Result<()> {
    let obj = format!("layer {}", l.digest);
    if m.size != l.size {
        return Err(Error::new("verify", obj, format!("size is {} bytes, descriptor says {}", m.size, l.size)));
    }
    if m.digest != l.digest {
        return Err(Error::new("verify", obj, format!("content has digest {}", m.digest)));
    }
    if m.diff_id != l.diff_id {
        return Err(Error::new(
            "verify",
            obj,
            format!("uncompressed content has digest {}, the config's diff_id is {}", m.diff_id, l.diff_id),
        ));
    }
    Ok(())
}

/// Extract one layer blob into `ex`'s target, verifying digests in the same pass.
fn extract_layer(
    store: &Store,
    l: &Layer,
    ex: &mut Extractor,
    limits: Limits,
    progress: Option<&Progress>,
) -> Result<()> {
    let path = store.blob_path(&l.digest);
    let mut s = LayerStream::open(&path, l.digest.as_str(), l.compression, limits.max_layer_size, progress)?;
    if let Err(e) = ex.extract(&mut s) {
        return Err(s.abort().unwrap_or(e));
    }
    let m = s.finish()?;
    check_measured(l, &m)
}

/// `unpack REF DIR`: all layers, whiteouts applied, into DIR (which must not exist, or be empty). The
/// stop signals are held throughout, and looked for before every entry: one that arrives undoes the
/// unpack as an error does (`unpack: DIR: interrupted by SIGx`), within an entry's time.
pub fn unpack(store: &Store, img: &Image, dir: &Path, limits: Limits, ctx: &Ctx) -> Result<()> {
    // Before DIR is made, and dropped only after the undo: no signal ends us with DIR half-filled.
    let held = crate::signals::Held::hold();
    // An empty DIR we were given: its owner, mode and times, which the image's root entry changes and a
    // failed unpack must give back.
    let given = match std::fs::read_dir(dir) {
        Ok(mut rd) => {
            if rd.next().is_some() {
                return Err(Error::new("unpack", dir.display(), "directory is not empty"));
            }
            let fd = fsutil::open_root(dir).map_err(|e| Error::sys("open", dir.display(), e))?;
            Some(nix::sys::stat::fstat(&fd).map_err(|e| Error::sys("open", dir.display(), e))?)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir(dir).map_err(|e| Error::io("mkdir", dir, e))?;
            None
        }
        Err(e) => return Err(Error::io("unpack", dir, e)),
    };
    let r = (|| {
        let opts = Options {
            mode: ExtractMode::Flatten,
            privileged: fsutil::privileged(),
            max_entries: limits.max_entries,
            max_size: limits.max_layer_size,
        };
        let progress = Progress::new("unpack", 0, ctx.quiet());
        let stop = || held.check("unpack", dir.display());
        let mut ex = Extractor::new(dir, &opts, ctx, "")?;
        // Between entries, so Ctrl-C stops a long unpack promptly (a sigpending per entry).
        ex.stop_with(&stop);
        for (i, l) in img.layers.iter().enumerate() {
            ctx.step("unpack", format!("layer {}/{} {}", i + 1, img.layers.len(), l.digest));
            ex.set_layer(l.digest.as_str());
            extract_layer(store, l, &mut ex, limits, progress.as_ref())?;
        }
        // A signal during the last entry or the last layer's finishing touches: still not done.
        stop()
    })();
    let r = r.map_err(|e| {
        // Leave nothing behind: what we created goes, an empty dir we were given is emptied again.
        let undo = match &given {
            None => fsutil::remove_tree(dir),
            Some(st) => restore_given(dir, st).map_err(std::io::Error::from),
        };
        match undo {
            Ok(()) => e,
            Err(u) => undo_failed(e, dir, u),
        }
    });
    drop(held);
    r
}

/// The error of a step whose undo failed too: the contract's one error line stays first and alone, and
/// what was left behind follows it as the hint (before whatever hint the error had).
fn undo_failed(e: Error, left: &Path, u: std::io::Error) -> Error {
    let what = format!("{} left behind, the undo failed: {u}", left.display());
    let hint = match &e.hint {
        Some(h) => format!("{what}; {h}"),
        None => what,
    };
    e.hint(hint)
}

/// The undo of an unpack into an empty DIR: empty it again and give it back the owner, mode and times
/// it had (`st`). The image may have left it shut to its owner (rootless), so it is opened up first.
fn restore_given(dir: &Path, st: &nix::sys::stat::FileStat) -> nix::Result<()> {
    use nix::sys::stat::{fchmod, fstat, futimens, Mode};
    use nix::sys::time::TimeSpec;
    let fd = fsutil::open_root(dir)?;
    let mode = fstat(&fd)?.st_mode;
    if mode & 0o700 != 0o700 {
        // Best effort: a DIR someone else owns (writable to us by its group) was never changed by us.
        let _ = fsutil::chmod_fd(&fd, mode | 0o700);
    }
    let fd = fsutil::reopen(&fd, nix::fcntl::OFlag::O_RDONLY)?;
    fsutil::remove_children(&fd, |_| true)?;
    let now = fstat(&fd)?;
    if (now.st_uid, now.st_gid) != (st.st_uid, st.st_gid) {
        nix::unistd::fchown(&fd, Some(st.st_uid.into()), Some(st.st_gid.into()))?;
    }
    // After the chown, which clears set-id bits.
    if now.st_mode & 0o7777 != st.st_mode & 0o7777 {
        fchmod(&fd, Mode::from_bits_truncate(st.st_mode & 0o7777))?;
    }
    match futimens(&fd, &TimeSpec::new(st.st_atime, st.st_atime_nsec), &TimeSpec::new(st.st_mtime, st.st_mtime_nsec)) {
        Err(nix::errno::Errno::EPERM) => Ok(()), // not ours: its times are its owner's to keep
        r => r,
    }
}

/// `layers REF`: extract every layer not yet in `<data>/layers/<chainID>` (once, under a per-layer lock,
/// into a temporary dir renamed into place) and return the dirs bottom-first.
pub fn layers(store: &Store, img: &Image, userxattr: bool, limits: Limits, ctx: &Ctx) -> Result<Vec<PathBuf>> {
    let privileged = fsutil::privileged();
    let opts = Options {
        mode: ExtractMode::Overlay { userxattr: userxattr || !privileged },
        privileged,
        max_entries: limits.max_entries,
        max_size: limits.max_layer_size,
    };
    crate::store::private_dir(&store.layers)?;
    if !store.owns_layers {
        register(store)?;
    }
    let mut out = Vec::new();
    for l in &img.layers {
        let dir = store.layer_dir(&l.chain_id);
        out.push(dir.clone());
        if dir.is_dir() {
            continue;
        }
        crate::store::mkdir(&store.layers.join(".locks"))?;
        let _lock = lock_file(&store.layers.join(".locks").join(l.chain_id.hex()), true)?;
        if dir.is_dir() {
            continue; // another process extracted it while we waited
        }
        ctx.step("extract", format!("layer {} -> {}", l.digest, dir.display()));
        let tmp = store.layers.join(format!(".tmp-{}-{}", l.chain_id.hex(), std::process::id()));
        let _ = fsutil::remove_tree(&tmp);
        std::fs::create_dir(&tmp).map_err(|e| Error::io("mkdir", &tmp, e))?;
        let r = (|| {
            let mut ex = Extractor::new(&tmp, &opts, ctx, l.digest.as_str())?;
            let lowers: Vec<PathBuf> = out[..out.len() - 1].iter().rev().cloned().collect();
            ex.set_lowers(&lowers)?;
            extract_layer(store, l, &mut ex, limits, None)?;
            match std::fs::rename(&tmp, &dir) {
                Ok(()) => Ok(()),
                // Someone else won the race (possible only if a lock file was replaced): theirs is as good.
                Err(_) if dir.is_dir() => fsutil::remove_tree(&tmp).map_err(|e| Error::io("remove", &tmp, e)),
                Err(e) => Err(Error::io("rename", &dir, e)),
            }
        })();
        if let Err(e) = r {
            return Err(match fsutil::remove_tree(&tmp) {
                Ok(()) => e,
                Err(u) => undo_failed(e, &tmp, u),
            });
        }
    }
    Ok(out)
}

/// One checked blob, for `verify`'s report.
#[derive(serde::Serialize)]
pub struct Checked {
    pub kind: &'static str,
    pub digest: String,
    pub size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diff_id: Option<String>,
}

/// `verify REF`: every blob's digest and size, every layer's diff_id. (Manifest and config were already
/// checked when the image was loaded.)
pub fn verify(store: &Store, img: &Image, ctx: &Ctx) -> Result<Vec<Checked>> {
    let mut out = vec![
        Checked { kind: "manifest", digest: img.manifest_digest.to_string(), size: img.manifest_size, diff_id: None },
        Checked { kind: "config", digest: img.config_digest.to_string(), size: img.config_size, diff_id: None },
    ];
    for l in &img.layers {
        ctx.step("verify", format!("layer {}", l.digest));
        let s = LayerStream::open(&store.blob_path(&l.digest), l.digest.as_str(), l.compression, u64::MAX, None)?;
        let m = s.finish()?;
        check_measured(l, &m)?;
        out.push(Checked {
            kind: "layer",
            digest: l.digest.to_string(),
            size: l.size,
            diff_id: Some(l.diff_id.to_string()),
        });
    }
    Ok(out)
}

/// `tag SOURCE TARGET`: a second name for SOURCE's manifest (as `docker tag`: no blob is copied, and
/// an image already named TARGET loses the name). Returns TARGET in stored form and the digest.
pub fn tag(store: &Store, source: &str, target: &str, ctx: &Ctx) -> Result<(String, Digest)> {
    let target = crate::reference::normalize(target)?;
    let (name, desc) = crate::image::lookup(store, source)?;
    // Loading checks the manifest and config, so a broken image is refused rather than named again.
    let img = crate::image::load(store, name, &desc)?;
    ctx.step("tag", format!("{target} -> {}", img.manifest_digest));
    store.commit(Vec::new(), vec![(Some(target.clone()), desc)])?;
    Ok((target, img.manifest_digest))
}

/// What `gc` removed.
#[derive(serde::Serialize, Default)]
pub struct GcReport {
    pub blobs: u64,
    pub bytes: u64,
    pub layer_dirs: u64,
    pub temp: u64,
    pub kept_mounted: u64,
    /// Kept because another store sharing the layer dirs could not be read (its warning says why).
    pub kept_unknown: u64,
}

/// A staging dir whose writer is gone: its lock is free. The lock is never made here: an importer makes
/// the dir first and its lock file an instant later, and a lock made by gc in between would look free
/// (the importer then found its own dir gone). A dir without one is left alone for ten minutes.
fn staging_abandoned(dir: &Path) -> bool {
    match std::fs::File::open(dir.join("lock")) {
        Ok(f) => nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock).is_ok(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::metadata(dir)
            .and_then(|m| m.modified())
            .is_ok_and(|t| t.elapsed().is_ok_and(|age| age > std::time::Duration::from_secs(600))),
        Err(_) => false,
    }
}

/// `index.tmp<pid>-<n>`, as [`crate::store::write_atomic`] names index.json's temporaries.
fn is_index_temp(name: &str) -> bool {
    name.strip_prefix("index.tmp").and_then(|r| r.split_once('-')).is_some_and(|(pid, n)| {
        !pid.is_empty()
            && !n.is_empty()
            && pid.bytes().all(|b| b.is_ascii_digit())
            && n.bytes().all(|b| b.is_ascii_digit())
    })
}

/// `gc`: blobs no index entry reaches, layer dirs no image's chain needs (unless an overlay mount still
/// uses them), and the leftovers of killed writers (their lock is free).
pub fn gc(store: &Store, ctx: &Ctx) -> Result<GcReport> {
    // Nothing to collect in a store that does not exist, and making one (even the lock) would leave an
    // empty layout where none was asked for, as a mistyped --store or CBUILD_DATA would.
    if !store.dir.join("index.json").exists() {
        return Ok(GcReport::default());
    }
    let _l = store.lock()?;
    let mut keep: HashSet<String> = HashSet::new();
    let mut chains: HashSet<String> = HashSet::new();
    for (name, d) in store.entries()? {
        keep.insert(d.digest().as_ref().trim_start_matches("sha256:").to_string());
        match crate::image::load(store, name, &d) {
            Ok(img) => {
                keep.insert(img.config_digest.hex().to_string());
                for l in img.layers {
                    keep.insert(l.digest.hex().to_string());
                    chains.insert(l.chain_id.hex().to_string());
                }
            }
            // What a broken image references cannot be known: removing anything could delete its
            // config or layers. Refuse the whole collection rather than guess.
            Err(e) => {
                return Err(Error::new(
                    "gc",
                    d.digest(),
                    format!("cannot tell what it references ({e}); nothing removed: rm or repair it first"),
                ))
            }
        }
    }
    let mut rep = GcReport::default();
    let blobs = store.dir.join("blobs/sha256");
    for ent in read_dir_if_any(&blobs)? {
        let name = ent.file_name().to_string_lossy().into_owned();
        if keep.contains(&name) {
            continue;
        }
        let size = ent.metadata().map(|m| m.len()).unwrap_or(0);
        ctx.step("remove", format!("blob sha256:{name}"));
        std::fs::remove_file(ent.path()).map_err(|e| Error::io("gc", &ent.path(), e))?;
        rep.blobs += 1;
        rep.bytes += size;
    }
    let tmp = store.dir.join(".tmp");
    for ent in read_dir_if_any(&tmp)? {
        if staging_abandoned(&ent.path()) {
            ctx.step("remove", ent.path().display());
            let _ = std::fs::remove_dir_all(ent.path());
            rep.temp += 1;
        }
    }
    // index.json is only ever replaced under the store lock, which we hold: a temporary of it now is what
    // a writer killed mid-write (SIGKILL, which no hold stops) left.
    for ent in std::fs::read_dir(&store.dir).map_err(|e| Error::io("gc", &store.dir, e))?.flatten() {
        if is_index_temp(&ent.file_name().to_string_lossy()) && ent.file_type().is_ok_and(|t| t.is_file()) {
            ctx.step("remove", ent.path().display());
            let _ = std::fs::remove_file(ent.path());
            rep.temp += 1;
        }
    }
    if !store.owns_layers {
        return Ok(rep);
    }
    let Ok(rd) = std::fs::read_dir(&store.layers) else { return Ok(rep) };
    let ents: Vec<std::fs::DirEntry> = rd.flatten().collect();
    // Held till the sweep ends: no other store's `layers` starts relying on a dir meanwhile.
    let (others, keep_all) = match other_stores(store, &mut chains, ctx) {
        Some(locks) => (locks, false),
        None => (Vec::new(), true),
    };
    // Where a relative layer path of a mount may have been resolved from: this layer store and the
    // dirs above it, and each layer dir (a mount made from inside one).
    let mut bases: Vec<PathBuf> = store.layers.ancestors().map(Path::to_path_buf).collect();
    bases.extend(ents.iter().map(|e| e.path()));
    let mounts = overlay_mounts(&bases);
    for ent in ents {
        let name = ent.file_name().to_string_lossy().into_owned();
        let hex = match name.strip_prefix(".tmp-") {
            Some(rest) => rest.split('-').next().unwrap_or("").to_string(),
            None => name.clone(),
        };
        if Digest::parse(&format!("sha256:{hex}")).is_err() || (name == hex && chains.contains(&hex)) {
            continue;
        }
        let path = ent.path();
        if keep_all {
            rep.kept_unknown += 1;
            continue;
        }
        if mounts.contains(&path) {
            ctx.warn(&format!("gc: {}: still used by an overlay mount, kept", path.display()));
            rep.kept_mounted += 1;
            continue;
        }
        let lockp = store.layers.join(".locks").join(&hex);
        let Ok(_lk) = lock_file(&lockp, false) else { continue }; // being extracted right now
        ctx.step("remove", path.display());
        fsutil::remove_tree(&path).map_err(|e| Error::io("gc", &path, e))?;
        if name == hex {
            rep.layer_dirs += 1;
        } else {
            rep.temp += 1;
        }
    }
    drop(others);
    Ok(rep)
}

/// The entries of a directory that may not exist (a layout another tool made has no `.tmp`).
fn read_dir_if_any(dir: &Path) -> Result<Vec<std::fs::DirEntry>> {
    match std::fs::read_dir(dir) {
        Ok(rd) => Ok(rd.flatten().collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(Error::io("gc", dir, e)),
    }
}

/// Where `layers` of a `--store` elsewhere records that store in the layer store it shares: a symlink
/// to the store, named by the hash of its path.
const STORES: &str = ".stores";

/// Note, for `gc` of the default store, that this store (a `--store` elsewhere) keeps layer dirs in
/// `store.layers`. Made before any extraction, so a gc that starts later sees it.
fn register(store: &Store) -> Result<()> {
    let path = std::fs::canonicalize(&store.dir).map_err(|e| Error::io("store", &store.dir, e))?;
    let dir = store.layers.join(STORES);
    crate::store::mkdir(&dir)?;
    let link = dir.join(Digest::of(path.as_os_str().as_encoded_bytes()).hex());
    match std::os::unix::fs::symlink(&path, &link) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => Err(Error::io("store", &link, e)),
        _ => Ok(()),
    }
}

/// The chains the images of the other stores that share the layer store need (see [`register`]),
/// added to `chains`, and those stores' locks, taken exclusively (a store's `layers` holds it shared
/// from start to end). A recorded store that is gone is forgotten. None: one of them could not be read
/// or locked at once, so what it needs is unknown and no layer dir may go this time. Stores are told
/// apart by (dev, ino), not by path: a bind mount or a second link of this gc's own store, locked
/// already through another open file, would otherwise wait for itself forever.
fn other_stores(
    store: &Store,
    chains: &mut HashSet<String>,
    ctx: &Ctx,
) -> Option<Vec<nix::fcntl::Flock<std::fs::File>>> {
    use nix::fcntl::{Flock, FlockArg};
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let id = |p: &Path| std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino()));
    let dir = store.layers.join(STORES);
    let mut links: Vec<PathBuf> = std::fs::read_dir(&dir).into_iter().flatten().flatten().map(|e| e.path()).collect();
    // One order for every gc, so two never wait for each other's locks (none waits, in fact: below).
    links.sort();
    let mut seen: HashSet<(u64, u64)> = id(&store.dir).into_iter().collect();
    let mut locks = Vec::new();
    for link in links {
        let Ok(other) = std::fs::read_link(&link) else { continue };
        if !other.join("index.json").exists() {
            ctx.step("forget", format!("store {}", other.display()));
            let _ = std::fs::remove_file(&link);
            continue;
        }
        if !id(&other).is_some_and(|i| seen.insert(i)) {
            continue;
        }
        let unknown = |why: String| {
            ctx.warn(&format!("gc: store {}: {why}; no layer dir removed", other.display()));
            None
        };
        // Read-only, as readers open it (the other store may be read-only to us); O_NONBLOCK and a
        // regular file only, and the lock tried, not waited for: that store's owner must not be able to
        // hang root's gc (a FIFO, or a lock held forever).
        let lockp = other.join(".lock");
        let opened = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW)
            .open(&lockp)
            .and_then(|f| if f.metadata()?.is_file() { Ok(f) } else { Err(std::io::ErrorKind::InvalidInput.into()) });
        match opened {
            Ok(f) => match Flock::lock(f, FlockArg::LockExclusiveNonblock) {
                Ok(l) => locks.push(l),
                Err((_, e)) => return unknown(format!("lock: {e}")),
            },
            // A layout another tool wrote may have no lock file: read it unlocked.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return unknown(format!("{}: {e}", lockp.display())),
        }
        let o = Store::open_existing(other.clone(), store.layers.clone(), false);
        let imgs = o.entries().and_then(|es| {
            es.into_iter().map(|(name, d)| crate::image::load(&o, name, &d)).collect::<Result<Vec<_>>>()
        });
        match imgs {
            Ok(imgs) => chains.extend(imgs.iter().flat_map(|i| i.layers.iter().map(|l| l.chain_id.hex().to_string()))),
            Err(e) => return unknown(e.to_string()),
        }
    }
    Some(locks)
}

/// The layer dirs overlay mounts use, as found by [`overlay_mounts`].
#[derive(Default)]
struct InUse {
    /// (dev, ino) of every dir a mount names as a layer, and of all the dirs above it: a layer dir is
    /// in use when it is one of them (the mount may name a dir inside it).
    ids: HashSet<(u64, u64)>,
    /// The components of the paths that could not be looked up (no longer there, in a namespace gc
    /// may not look into, or relative to a directory gc did not find): a layer dir whose name is among
    /// them is kept, to be safe.
    names: HashSet<std::ffi::OsString>,
}

impl InUse {
    fn contains(&self, path: &Path) -> bool {
        use std::os::unix::fs::MetadataExt;
        path.file_name().is_some_and(|n| self.names.contains(n))
            || std::fs::symlink_metadata(path).is_ok_and(|m| self.ids.contains(&(m.dev(), m.ino())))
    }

    /// Note the layer path `p` of a mount made in a namespace whose root is `root` (None: not ours to
    /// look into). An absolute path is looked up as the mounter saw it, inside that root, so a symlink,
    /// `.` or `..` in it or a bind mount of the data dir all lead to the same dir.
    fn add(&mut self, root: Option<&std::os::fd::OwnedFd>, p: &Path) {
        let root = root.filter(|_| p.is_absolute());
        match root.and_then(|r| fsutil::open_in_root(r, p, nix::fcntl::OFlag::O_PATH).ok()) {
            Some(fd) => self.add_fd(fd),
            None => self.names.extend(p.iter().map(|c| c.to_os_string())),
        }
    }

    /// Note a dir a mount uses, and the dirs above it: up to the top (whose `..` is itself), or to a dir
    /// already seen, whose own way up is noted.
    fn add_fd(&mut self, mut fd: std::os::fd::OwnedFd) {
        use nix::fcntl::{openat, OFlag};
        loop {
            let Ok(st) = nix::sys::stat::fstat(&fd) else { return };
            if !self.ids.insert((st.st_dev, st.st_ino)) {
                return;
            }
            match openat(
                &fd,
                "..",
                OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                nix::sys::stat::Mode::empty(),
            ) {
                Ok(up) => fd = up,
                Err(_) => return,
            }
        }
    }
}

/// What a mount option names: a layer the mount shows (upper, then the lower ones top-first), or a
/// dir it only uses (work dir, data-only layers).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Role {
    Upper,
    Lower,
    Hidden,
}

/// The layers of every overlay mount on the system: the options (lowerdir=..., or one lowerdir+= per
/// layer; upper and work dirs too) and, for cbuild-overlay's mount(2) mounts whose lowerdir holds fd
/// numbers, the layer list in the aux dir named as the source. Every mount namespace counts (a
/// container's root is mounted in its own, invisible from ours), so each namespace's mountinfo is read
/// once through one of its processes, and its paths are looked up through that process's root.
/// mountinfo and overlayfs escape odd bytes as `\ooo`; they are unescaped here.
///
/// The kernel shows each layer path as it was given (mount(2)'s lowerdir string, fsconfig's lowerdir+
/// values), so a relative one is relative to the mounter's directory of the time, which nothing
/// records. Each of `bases` (and each dir above the mount point) is tried as that directory: one from
/// which every path of the mount resolves to layers whose merged top level is what the mount shows is
/// taken, and the dirs found from it are noted by (dev, ino) like absolute ones. When none is, the
/// paths are matched by name.
fn overlay_mounts(bases: &[PathBuf]) -> InUse {
    use std::os::unix::fs::MetadataExt;
    let mut seen = HashSet::new();
    let mut out = InUse::default();
    let pids = std::fs::read_dir("/proc").into_iter().flatten().flatten().map(|e| e.file_name());
    let pids = std::iter::once("self".into()).chain(pids);
    for pid in pids {
        let pid = pid.to_string_lossy().into_owned();
        if pid != "self" && !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(ns) = std::fs::metadata(format!("/proc/{pid}/ns/mnt")) else { continue };
        if !seen.insert((ns.dev(), ns.ino())) {
            continue;
        }
        // Bytes: one mount anywhere whose path is not UTF-8 must not hide this namespace's overlays (their
        // layers would then be removed while mounted).
        let Ok(mi) = cbuild_mountinfo::read(Path::new(&format!("/proc/{pid}/mountinfo"))) else { continue };
        // Another user's process (rootless gc): its root cannot be opened, its paths only matched by name.
        let root = nix::fcntl::open(
            format!("/proc/{pid}/root").as_str(),
            nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .ok();
        for m in mi.iter().filter(|m| m.fs_type == "overlay") {
            let mut listed = false;
            if Path::new(&m.source).is_absolute() {
                let list = Path::new(&m.source).join("lower");
                // Bytes, one path a line: a layer whose name is not UTF-8 is listed as it is (read as
                // text, the whole list was lost, and every layer of the mount counted as unused).
                let text = match &root {
                    // O_NONBLOCK: a FIFO planted as the list must not hang gc.
                    Some(r) => {
                        fsutil::open_in_root(r, &list, nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_NONBLOCK)
                            .ok()
                            .and_then(|fd| read_file_limited(std::fs::File::from(fd), &list, MAX_JSON).ok())
                    }
                    None => read_limited(&list, MAX_JSON).ok(),
                };
                listed = text.is_some();
                for l in text.iter().flat_map(|t| t.split(|&b| b == b'\n')).filter(|l| !l.is_empty()) {
                    out.add(root.as_ref(), Path::new(std::ffi::OsStr::from_bytes(l)));
                }
            }
            let mut paths: Vec<(Role, PathBuf)> = Vec::new();
            // Still escaped in the table: split on commas first (a layer's path may hold an escaped one).
            for opt in m.super_options.split(|&b| b == b',') {
                let Some(eq) = opt.iter().position(|&b| b == b'=') else { continue };
                let value = cbuild_mountinfo::unescape(&opt[eq + 1..]);
                let path = || PathBuf::from(std::ffi::OsString::from_vec(value.clone()));
                match &opt[..eq] {
                    b"lowerdir" => paths.extend(split_layers(&value).into_iter().map(|l| (Role::Lower, l))),
                    b"lowerdir+" => paths.push((Role::Lower, path())),
                    b"upperdir" => paths.push((Role::Upper, path())),
                    b"datadir+" | b"workdir" => paths.push((Role::Hidden, path())),
                    _ => {}
                }
            }
            // The aux dir's list names the lower layers of a mount whose lowerdir holds fd numbers
            // (relative to the mounter's /proc/self/fd).
            if listed {
                paths.retain(|(role, p)| *role != Role::Lower || p.is_absolute());
            }
            let placed = match &root {
                Some(r) if paths.iter().any(|(_, p)| !p.is_absolute()) => place(r, &m.mount_point, &paths, bases),
                _ => Vec::new(),
            };
            if placed.is_empty() {
                paths.iter().for_each(|(_, p)| out.add(root.as_ref(), p));
            }
            placed.into_iter().flatten().for_each(|fd| out.add_fd(fd));
        }
    }
    out
}

/// The dirs a mount at `mountpoint` (in the namespace whose root is `root`) uses, looked up from each
/// candidate directory its relative `paths` may have been given from (`bases`, and the dirs above the
/// mount point): one set per candidate from which every path resolves and whose layers, merged, have
/// the top level the mount shows. Empty when none does.
fn place(
    root: &std::os::fd::OwnedFd,
    mountpoint: &Path,
    paths: &[(Role, PathBuf)],
    bases: &[PathBuf],
) -> Vec<Vec<std::os::fd::OwnedFd>> {
    use nix::fcntl::OFlag;
    let open = |p: &Path| fsutil::open_in_root(root, p, OFlag::O_PATH | OFlag::O_DIRECTORY).ok();
    let Some(shown) = open(mountpoint).and_then(|fd| top_level(&[fd])) else { return Vec::new() };
    let mut tried = HashSet::new();
    let mut out = Vec::new();
    let candidates = bases.iter().map(PathBuf::as_path).chain(mountpoint.ancestors().skip(1));
    for base in candidates {
        if !tried.insert(base.to_path_buf()) {
            continue;
        }
        let Some(mut fds) =
            paths.iter().map(|(role, p)| open(&base.join(p)).map(|fd| (*role, fd))).collect::<Option<Vec<_>>>()
        else {
            continue;
        };
        // Upper first, the lower ones in their order: the stack the mount merges.
        fds.sort_by_key(|(role, _)| *role);
        let shows: Vec<&std::os::fd::OwnedFd> =
            fds.iter().filter(|(r, _)| *r != Role::Hidden).map(|(_, fd)| fd).collect();
        if top_level(&shows).as_ref() == Some(&shown) {
            out.push(fds.into_iter().map(|(_, fd)| fd).collect());
        }
    }
    out
}

/// The names a stack of layers (top first) shows at its top level, as overlayfs merges them: a 0/0
/// character device hides the name in the layers below and is not shown itself (an opaque marker on a
/// layer's root is ignored by overlayfs).
fn top_level<F: std::os::fd::AsFd>(layers: &[F]) -> Option<std::collections::BTreeSet<std::ffi::OsString>> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let mut shown = std::collections::BTreeSet::new();
    let mut hidden = HashSet::new();
    for l in layers {
        for e in std::fs::read_dir(fsutil::proc_fd(l)).ok()?.flatten() {
            let name = e.file_name();
            if shown.contains(&name) || hidden.contains(&name) {
                continue;
            }
            let m = e.metadata().ok()?;
            if m.file_type().is_char_device() && m.rdev() == 0 {
                hidden.insert(name);
            } else {
                shown.insert(name);
            }
        }
    }
    Some(shown)
}

/// overlay's lowerdir value, unescaped from the table: layers separated by `:` (`::` before data-only
/// layers), `\` quoting the next byte; bytes, as paths are.
fn split_layers(v: &[u8]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut cur = Vec::new();
    let mut bytes = v.iter();
    while let Some(&b) = bytes.next() {
        match b {
            b'\\' => cur.extend(bytes.next()),
            b':' => out.push(std::mem::take(&mut cur)),
            b => cur.push(b),
        }
    }
    out.push(cur);
    out.into_iter().filter(|l| !l.is_empty()).map(|l| PathBuf::from(std::ffi::OsString::from_vec(l))).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn index_temporaries() {
        for (n, ok) in [("index.tmp12-0", true), ("index.tmp1-34", true), ("index.json", false), ("index.tmp-1", false)]
        {
            assert_eq!(super::is_index_temp(n), ok, "{n}");
        }
        assert!(!super::is_index_temp("index.tmp12-"));
        assert!(!super::is_index_temp("oci-layout.tmp12-0"));
    }

    #[test]
    fn lowerdir_layers() {
        use std::path::PathBuf;
        let p = |v: &[&str]| v.iter().map(PathBuf::from).collect::<Vec<_>>();
        assert_eq!(super::split_layers(b"/a:/b\\:c::/data"), p(&["/a", "/b:c", "/data"]));
        assert_eq!(super::split_layers(b"rel/x"), p(&["rel/x"]));
        use std::os::unix::ffi::OsStrExt;
        assert_eq!(super::split_layers(b"/x\xff:/y")[0].as_os_str().as_bytes(), b"/x\xff");
    }
}
