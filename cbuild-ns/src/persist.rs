//! `--persist DIR`: keep namespaces alive after their last process by bind-mounting /proc/PID/ns/TYPE onto
//! files in DIR, as `ip netns add` and `unshare --net=FILE` do. Anything (cbuild-ns exec --ns-dir, nsenter,
//! ip netns exec, cbuild-net) can join them later; `cbuild-ns unpersist DIR` (umount + unlink) ends them.

use crate::error::{Context, Error, Result, Step};
use crate::namespaces::NsType;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// The file in DIR listing, one per line, the namespace types cbuild-ns persisted there. `<state>/NAME/ns`
/// is shared (cbuild-net's `netns add NAME` makes `net` there): `unpersist` releases only what this lists.
pub const MANIFEST: &str = ".cbuild-ns";

/// What persisting created, so a later failure can undo exactly that.
#[derive(Default)]
pub struct Persisted {
    /// The directory, and the types this call added to its manifest.
    manifest: Option<(PathBuf, Vec<String>)>,
    files: Vec<PathBuf>,
    /// The directories this call created, outermost first.
    created_dirs: Vec<PathBuf>,
    /// The directory bind-mounted on itself (private), for a mount namespace.
    private_dir: Option<PathBuf>,
}

pub fn persist(dir: &Path, pid: i32, types: &[NsType]) -> Result<Persisted> {
    let mut done = Persisted::default();
    let missing: Vec<PathBuf> = dir.ancestors().take_while(|d| !d.exists()).map(Path::to_path_buf).collect();
    std::fs::create_dir_all(dir).ctx(Step::Persist, dir.display())?;
    done.created_dirs = missing.into_iter().rev().collect();
    let r = lock(dir).and_then(|_lock| persist_locked(dir, pid, types, &mut done));
    if let Err(e) = r {
        // The lock is released first: undo takes it again for the list.
        done.undo();
        return Err(e);
    }
    Ok(done)
}

fn persist_locked(dir: &Path, pid: i32, types: &[NsType], done: &mut Persisted) -> Result<()> {
    // Listed before anything is made: a persist killed half-way leaves what its unpersist still knows.
    let mut listed = read_manifest(dir)?.unwrap_or_default();
    let mut added = vec![];
    for t in types {
        let n = t.proc_name().to_string();
        if !listed.contains(&n) {
            listed.push(n.clone());
            added.push(n);
        }
    }
    write_manifest(dir, &listed)?;
    done.manifest = Some((dir.to_path_buf(), added));
    if types.contains(&NsType::Mnt) {
        // The kernel refuses to bind a mount namespace onto a shared mount (it could make a propagation
        // loop), and on systemd hosts / is shared: give the directory its own private mount. If this
        // bind fails, nothing of ours is mounted there, and the undo must not unmount whatever was
        // (cbuild-net's shared bind of `<state>/NAME/ns`, say). Not recursive: a `net` cbuild-net
        // already bound there is hidden under it while it lasts (a private copy would be out of reach
        // of `netns del`'s unmount through its shared bind).
        mount(Some(dir), dir, None::<&str>, MsFlags::MS_BIND, None::<&str>).ctx(Step::Persist, dir.display())?;
        done.private_dir = Some(dir.to_path_buf());
        mount(None::<&str>, dir, None::<&str>, MsFlags::MS_PRIVATE, None::<&str>).ctx(Step::Persist, dir.display())?;
    }
    for ty in types {
        let file = dir.join(ty.proc_name());
        // O_EXCL: never take over a file that may already hold another namespace.
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&file)
            .ctx(Step::Persist, file.display())
            .map_err(|e| e.hint("the directory already holds persisted namespaces; remove them first"))?;
        done.files.push(file.clone());
        crate::log::step(Step::Persist, file.display());
        mount(Some(&crate::namespaces::setup_path(*ty, pid)), &file, None::<&str>, MsFlags::MS_BIND, None::<&str>)
            .ctx(Step::Persist, file.display())?;
    }
    Ok(())
}

impl Persisted {
    /// Unmount and remove what was made, newest first.
    pub fn undo(&mut self) {
        for f in self.files.drain(..).rev() {
            let _ = umount2(&f, MntFlags::MNT_DETACH);
            let _ = std::fs::remove_file(&f);
        }
        if let Some(d) = self.private_dir.take() {
            let _ = umount2(&d, MntFlags::MNT_DETACH);
        }
        if let Some((d, names)) = self.manifest.take() {
            let _ = lock(&d).and_then(|_lock| {
                let mut l = read_manifest(&d)?.unwrap_or_default();
                l.retain(|n| !names.contains(n));
                write_manifest(&d, &l)
            });
        }
        for d in self.created_dirs.drain(..).rev() {
            let _ = std::fs::remove_dir(d);
        }
    }
}

/// Remove persisted namespaces in DIR, then DIR if it is left empty: the types its list names, or, in a
/// directory without one (`unshare --net=DIR/net`), every namespace file there. `name_dir`: DIR is
/// `<state>/NAME/ns`, whose NAME directory goes too once empty (a directory the caller named by path is
/// theirs, and only its namespace files are ours to remove); there the list is required, since another
/// tool's files live there too.
///
/// Only what `persist` makes is touched: a regular file with a namespace (nsfs) bound on it, or one whose
/// bind is already gone. Anything else named like a listed type (a symlink: umount2 would follow it and
/// unmount what it points at; a directory; a file with another filesystem on it) is refused, before
/// anything is unmounted.
pub fn remove(dir: &Path, name_dir: bool) -> Result<Vec<String>> {
    let lock = lock(dir)?;
    let listed = read_manifest(dir)?;
    if name_dir && listed.is_none() {
        return Err(Error::new(Step::Persist, dir.display(), "no namespace persisted here by cbuild-ns").hint(
            "namespaces `cbuild-net netns add` made are its `netns del`'s; a directory without the list \
             (an older cbuild-ns's) is released by its path: `cbuild-ns unpersist <state>/NAME/ns`",
        ));
    }
    let mut found = vec![];
    let entries = std::fs::read_dir(dir).ctx(Step::Persist, dir.display())?;
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if NsType::parse(&name).is_none() || listed.as_ref().is_some_and(|l| !l.contains(&name)) {
            continue;
        }
        let p = e.path();
        let bound = namespace_file(&p)?;
        found.push((name, p, bound));
    }
    let mut removed = vec![];
    for (name, p, bound) in found {
        if bound {
            // NOFOLLOW: a file swapped for a symlink since it was looked at is refused, not followed.
            match umount2(&p, MntFlags::MNT_DETACH | MntFlags::UMOUNT_NOFOLLOW) {
                Ok(()) | Err(nix::errno::Errno::EINVAL) => {}
                Err(err) => return Err(Error::sys(Step::Persist, p.display(), err)),
            }
        }
        std::fs::remove_file(&p).ctx(Step::Persist, p.display())?;
        removed.push(name);
    }
    if listed.is_some() {
        write_manifest(dir, &[])?;
    }
    // The directory's own private mount, if persisting a mount namespace made one; no other mount there
    // (`unpersist /sys/fs/cgroup`) is ours. With a list: only when it names `mnt` and nothing else is
    // left in the directory (cbuild-net's `netns add` after ours makes that bind its shared one and keeps
    // `net` on it; it is then its `netns del`'s to remove).
    let ours = match &listed {
        None => true,
        Some(l) => {
            l.iter().any(|n| n == "mnt") && std::fs::read_dir(dir).ctx(Step::Persist, dir.display())?.next().is_none()
        }
    };
    if ours && is_own_bind(dir) {
        umount2(dir, MntFlags::MNT_DETACH | MntFlags::UMOUNT_NOFOLLOW).ctx(Step::Persist, dir.display())?;
    }
    drop(lock);
    // The namespace dir, then the NAME dir if nothing else lives there (contract: whoever removes the last
    // thing removes the directory; rmdir fails harmlessly otherwise).
    let _ = std::fs::remove_dir(dir);
    if name_dir {
        if let Some(parent) = dir.parent() {
            let _ = std::fs::remove_dir(parent);
        }
    }
    Ok(removed)
}

/// cbuild-ns's lock on DIR (flock on the directory itself), held while its list and files change: two
/// persists into one directory, or a persist and an unpersist, must not lose each other's lines. Opened
/// without following a symlink (nothing below `<state>` is trusted).
fn lock(dir: &Path) -> Result<nix::fcntl::Flock<std::fs::File>> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(dir)
        .ctx(Step::Persist, dir.display())?;
    nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| Error::sys(Step::Persist, dir.display(), e))
}

/// The most a list can hold: one line per namespace type.
const MANIFEST_MAX: u64 = 256;

/// DIR's list: None when there is none. Only a regular file of at most MANIFEST_MAX bytes is read, never
/// through a symlink, and a FIFO planted there does not block the open.
fn read_manifest(dir: &Path) -> Result<Option<Vec<String>>> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let p = dir.join(MANIFEST);
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(&p);
    let f = match f {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(Step::Persist, p.display(), &e)),
    };
    let md = f.metadata().ctx(Step::Persist, p.display())?;
    if !md.is_file() || md.len() > MANIFEST_MAX {
        return Err(Error::new(Step::Persist, p.display(), "not a list cbuild-ns wrote"));
    }
    let mut text = String::new();
    f.take(MANIFEST_MAX).read_to_string(&mut text).ctx(Step::Persist, p.display())?;
    Ok(Some(text.lines().filter(|l| NsType::parse(l).is_some()).map(str::to_string).collect()))
}

/// Replace DIR's list (under [`lock`]) by a new file renamed over it, so a kill or a full disk never
/// leaves it half-written; an empty list removes it.
fn write_manifest(dir: &Path, lines: &[String]) -> Result<()> {
    use std::io::Write;
    let p = dir.join(MANIFEST);
    let gone_ok = |r: std::io::Result<()>, what: &Path| match r {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io(Step::Persist, what.display(), &e)),
        _ => Ok(()),
    };
    // What a killed writer left goes; the new one is made anew (O_EXCL), never written through.
    let tmp = dir.join(format!("{MANIFEST}.new"));
    gone_ok(std::fs::remove_file(&tmp), &tmp)?;
    if lines.is_empty() {
        return gone_ok(std::fs::remove_file(&p), &p);
    }
    let body: String = lines.iter().map(|l| format!("{l}\n")).collect();
    let r = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .and_then(|mut f| f.write_all(body.as_bytes()))
        .and_then(|()| std::fs::rename(&tmp, &p));
    if let Err(e) = r {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(Step::Persist, p.display(), &e));
    }
    Ok(())
}

/// Whether `p` is a file `persist` made: Ok(true) with a namespace bound on it, Ok(false) without (its
/// bind already gone); an error for anything else.
fn namespace_file(p: &Path) -> Result<bool> {
    use nix::fcntl::OFlag;
    let not_ours = |what: &str| Error::new(Step::Persist, p.display(), format!("not a persisted namespace: {what}"));
    // O_PATH|O_NOFOLLOW: a symlink is looked at itself, never what it points to.
    let fd = nix::fcntl::open(p, OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC, nix::sys::stat::Mode::empty())
        .ctx(Step::Persist, p.display())?;
    let st = nix::sys::stat::fstat(&fd).ctx(Step::Persist, p.display())?;
    match st.st_mode & libc::S_IFMT {
        libc::S_IFREG => {}
        libc::S_IFLNK => return Err(not_ours("a symlink")),
        libc::S_IFDIR => return Err(not_ours("a directory")),
        _ => return Err(not_ours("not a regular file")),
    }
    let fs = nix::sys::statfs::fstatfs(&fd).ctx(Step::Persist, p.display())?;
    if fs.filesystem_type() == nix::sys::statfs::NSFS_MAGIC {
        return Ok(true);
    }
    let mount_root = crate::mounts::statx_fd(fd.as_raw_fd(), libc::STATX_TYPE)
        .is_ok_and(|st| st.stx_attributes & libc::STATX_ATTR_MOUNT_ROOT as u64 != 0);
    if mount_root {
        return Err(not_ours("another filesystem is mounted on it"));
    }
    Ok(false)
}

/// Whether DIR is a mount of DIR itself (the same filesystem and directory as under it): the private
/// bind `persist` makes for a mount namespace.
fn is_own_bind(dir: &Path) -> bool {
    let Ok(canon) = dir.canonicalize() else { return false };
    let Ok(mounts) = cbuild_mountinfo::read_self() else { return false };
    // The last one listed at DIR is the one on top.
    let Some(m) = mounts.iter().rev().find(|m| m.mount_point == canon) else { return false };
    let Some(under) = mounts.iter().find(|u| u.mount_id == m.parent_id) else { return false };
    let Ok(rel) = canon.strip_prefix(&under.mount_point) else { return false };
    m.dev == under.dev && m.root == under.root.join(rel)
}
