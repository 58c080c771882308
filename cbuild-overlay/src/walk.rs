//! A depth-first walk of one directory tree in name order, without following symlinks or crossing into
//! other mounts: what `diff` and `inspect` both need, and what `find -xdev` does.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::error::{p, Error, Result};

/// One entry: its path relative to the root (`""` for the root itself) and its lstat.
pub struct Entry {
    pub rel: PathBuf,
    pub path: PathBuf,
    pub md: std::fs::Metadata,
}

/// Visit `root` and everything below it. `visit` returns false to skip a directory's contents.
pub fn walk(step: &'static str, root: &Path, visit: &mut dyn FnMut(&Entry) -> bool) -> Result<()> {
    let md = std::fs::symlink_metadata(root).map_err(|e| Error::os(step, p(root), e))?;
    let dev = md.dev();
    let top = Entry { rel: PathBuf::new(), path: root.to_path_buf(), md };
    let descend = visit(&top);
    if descend && top.md.is_dir() {
        walk_dir(step, root, Path::new(""), dev, visit)?;
    }
    Ok(())
}

fn walk_dir(step: &'static str, dir: &Path, rel: &Path, dev: u64, visit: &mut dyn FnMut(&Entry) -> bool) -> Result<()> {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| Error::os(step, p(dir), e))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<std::io::Result<_>>()
        .map_err(|e| Error::os(step, p(dir), e))?;
    names.sort();
    for name in names {
        let path = dir.join(&name);
        let md = match std::fs::symlink_metadata(&path) {
            Ok(md) => md,
            // Removed while we walk (a running container): not an error for a report.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::os(step, p(&path), e)),
        };
        let e = Entry { rel: rel.join(&name), path, md };
        let descend = visit(&e);
        // Another filesystem mounted inside a layer is not part of it.
        if descend && e.md.is_dir() && e.md.dev() == dev {
            walk_dir(step, &e.path, &e.rel, dev, visit)?;
        }
    }
    Ok(())
}
