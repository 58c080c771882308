//! `--persist DIR`: keep namespaces alive after their last process by bind-mounting /proc/PID/ns/TYPE onto
//! files in DIR, as `ip netns add` and `unshare --net=FILE` do. Anything (cbuild-ns exec --ns-dir, nsenter,
//! ip netns exec, cbuild-net) can join them later; `cbuild-ns rm-persist DIR` (umount + unlink) ends them.

use crate::error::{Context, Error, Result, Step};
use crate::namespaces::NsType;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use std::path::{Path, PathBuf};

/// What persisting created, so a later failure can undo exactly that.
#[derive(Default)]
pub struct Persisted {
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
    if types.contains(&NsType::Mnt) {
        // The kernel refuses to bind a mount namespace onto a shared mount (it could make a propagation
        // loop), and on systemd hosts / is shared: give the directory its own private mount.
        let r = mount(Some(dir), dir, None::<&str>, MsFlags::MS_BIND, None::<&str>)
            .and_then(|_| mount(None::<&str>, dir, None::<&str>, MsFlags::MS_PRIVATE, None::<&str>))
            .ctx(Step::Persist, dir.display());
        if let Err(e) = r {
            let _ = umount2(dir, MntFlags::MNT_DETACH);
            done.undo();
            return Err(e);
        }
        done.private_dir = Some(dir.to_path_buf());
    }
    for ty in types {
        let file = dir.join(ty.proc_name());
        let r = (|| {
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
                .ctx(Step::Persist, file.display())
        })();
        if let Err(e) = r {
            done.undo();
            return Err(e);
        }
    }
    Ok(done)
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
        for d in self.created_dirs.drain(..).rev() {
            let _ = std::fs::remove_dir(d);
        }
    }
}

/// Remove persisted namespaces in DIR (every namespace file there), then DIR if it is left empty.
/// `name_dir`: DIR is `<state>/NAME/ns`, whose NAME directory goes too once empty (a directory the caller
/// named by path is theirs, and only its namespace files are ours to remove).
pub fn remove(dir: &Path, name_dir: bool) -> Result<Vec<String>> {
    let mut removed = vec![];
    let entries = std::fs::read_dir(dir).ctx(Step::Persist, dir.display())?;
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if NsType::parse(&name).is_none() {
            continue;
        }
        let p = e.path();
        match umount2(&p, MntFlags::MNT_DETACH) {
            Ok(()) | Err(nix::errno::Errno::EINVAL) => {}
            Err(err) => return Err(Error::sys(Step::Persist, p.display(), err)),
        }
        std::fs::remove_file(&p).ctx(Step::Persist, p.display())?;
        removed.push(name);
    }
    // The directory's own private mount, if persisting a mount namespace made one.
    if is_mount_point(dir) {
        umount2(dir, MntFlags::MNT_DETACH).ctx(Step::Persist, dir.display())?;
    }
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

fn is_mount_point(dir: &Path) -> bool {
    let Ok(canon) = dir.canonicalize() else { return false };
    let want = canon.to_string_lossy().replace(' ', "\\040");
    std::fs::read_to_string("/proc/self/mountinfo")
        .map(|m| m.lines().any(|l| l.split(' ').nth(4) == Some(want.as_str())))
        .unwrap_or(false)
}
