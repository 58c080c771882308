//! Reading and writing cgroup files. Every access names its step (`read`, `write`, `mkdir`, `rmdir`) and
//! its path, so an error line says exactly which file the kernel refused.

use crate::error::{Error, Result};
use crate::log;
use std::fs;
use std::io::{self, Read, Write};
use std::path::Path;

/// A cgroup directory's identity (device, inode), or None when it is gone: cgroupfs and kernfs do not hand
/// a removed directory's inode number to the next one made, so NAME removed and made again is told apart.
pub fn identity(dir: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    fs::symlink_metadata(dir).ok().map(|m| (m.dev(), m.ino()))
}

/// The whole file as a string.
pub fn read(path: &Path) -> Result<String> {
    read_small(path).map_err(|e| Error::sys("read", path.display(), e))
}

/// The file, or None when it does not exist (a controller file the kernel does not offer).
pub fn read_opt(path: &Path) -> Result<Option<String>> {
    match read_small(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::sys("read", path.display(), e)),
    }
}

/// cgroup and proc files report size 0, so `fs::read_to_string` starts with 32-byte probe reads; these
/// files are small, and one 4 KiB read (plus the one that sees EOF) is all they need.
/// (`read_to_end` would also fstat and lseek for a size hint these files do not give.)
fn read_small(path: &Path) -> io::Result<String> {
    let mut f = fs::File::open(path)?;
    let mut buf = vec![0u8; 4096];
    let mut len = 0;
    loop {
        if len == buf.len() {
            buf.resize(len * 2, 0);
        }
        match f.read(&mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(len);
    String::from_utf8(buf).map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "not UTF-8"))
}

/// A file holding one number (`max` and v1's "unlimited" sentinel read as None).
pub fn read_u64_opt(path: &Path) -> Result<Option<u64>> {
    Ok(read_opt(path)?.and_then(|s| crate::convert::parse_kernel_limit(s.trim())))
}

/// Write a value with a single write(2): cgroup files take one value per write, and the kernel reports
/// a rejected value as the error of that write. No O_CREAT: a missing file means a missing controller,
/// which must be an error (ENOENT), not a new regular file.
pub fn write(path: &Path, value: &str) -> Result<()> {
    log::step("write", format_args!("{} = {}", path.display(), value.trim_end()));
    let mut f = fs::OpenOptions::new().write(true).open(path).map_err(|e| Error::sys("write", path.display(), e))?;
    f.write_all(value.as_bytes()).map_err(|e| Error::sys("write", path.display(), e))
}

/// [`write`] to a file opened earlier (`path` names it in messages).
pub fn write_file(mut f: &fs::File, path: &Path, value: &str) -> Result<()> {
    log::step("write", format_args!("{} = {}", path.display(), value.trim_end()));
    f.write_all(value.as_bytes()).map_err(|e| Error::sys("write", path.display(), e))
}

/// `mkdir`; Ok(false) when it already existed.
pub fn mkdir(path: &Path) -> Result<bool> {
    match fs::create_dir(path) {
        Ok(()) => {
            log::step("mkdir", path.display());
            Ok(true)
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(Error::sys("mkdir", path.display(), e)),
    }
}

/// `rmdir` (cgroup directories are removed with rmdir even though they contain control files).
pub fn rmdir(path: &Path) -> Result<()> {
    log::step("rmdir", path.display());
    fs::remove_dir(path).map_err(|e| Error::sys("rmdir", path.display(), e))
}

/// Parse `key value` lines (memory.stat, cpu.stat, memory.events, pids.events, oom_control).
pub fn kv(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let mut it = l.split_whitespace();
        if it.next() == Some(key) {
            it.next().and_then(|v| v.parse().ok())
        } else {
            None
        }
    })
}
