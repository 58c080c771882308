//! A content-addressed cache of compiled programs under `<data>/seccomp/`, so compiling the same profile
//! again (every container start) is a file read. It was worth ~9 ms with libseccomp's generator; with ours
//! (src/gen.rs) it saves ~0.3 ms.
//!
//! Key: SHA-256 over everything the program depends on: this tool's version and scheme, libseccomp's
//! version (its resolver gives the numbers), the optimizer setting, the generator, and the resolved rule set (default action,
//! architectures in order, every rule with its action and conditions, in order). Flags (TSYNC, LOG,
//! SPEC_ALLOW) do not change the program and are not part of it; the ENOSYS prologue is rebuilt on every
//! run (it costs microseconds) and is not cached either.
//!
//! File `<data>/seccomp/<key hex>.bpf`: 32 bytes of SHA-256 over the program, then the program
//! (`struct sock_filter[]`, native endian). A file is used only if it is a regular file owned by us and
//! not writable by group or others, in a directory that is the same, its program is a non-zero multiple of
//! 8 bytes of at most 4096 instructions, and its stored hash matches: a torn or tampered file is ignored
//! (and replaced), never loaded. Files are written to a temporary name with O_EXCL and renamed into place,
//! so readers see a whole file or none, with the stop signals held in between (one that comes meanwhile
//! ends the process after the rename: no temporary is left). The cache never makes a compile fail: any
//! error reading or writing it is reported with `-v` and the program is compiled as if there were no cache.

use crate::bpf::{self, Insn};
use crate::resolve::Resolved;
use crate::step;
use sha2::{Digest, Sha256};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Bumped when what a key's program means changes (e.g. how per-architecture programs are chained).
const SCHEME: &str = "chain-v2";

/// `<data>`: `CBUILD_DATA`, else /var/lib/cbuild for root, else `${XDG_DATA_HOME:-~/.local/share}/cbuild`.
pub fn data_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("CBUILD_DATA").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(d));
    }
    if nix::unistd::geteuid().is_root() {
        return Some(PathBuf::from("/var/lib/cbuild"));
    }
    if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(x).join("cbuild"));
    }
    std::env::var_os("HOME").filter(|d| !d.is_empty()).map(|h| PathBuf::from(h).join(".local/share/cbuild"))
}

/// The default cache directory, `<data>/seccomp`.
pub fn default_dir() -> Option<PathBuf> {
    data_dir().map(|d| d.join("seccomp"))
}

/// The key of the program for `r` built with `opts`.
pub fn key(r: &Resolved, opts: crate::compile::Options) -> String {
    let mut h = Sha256::new();
    let mut line = |s: String| {
        h.update(s.as_bytes());
        h.update(b"\n");
    };
    line(format!("cbuild-seccomp {} {SCHEME}", env!("CARGO_PKG_VERSION")));
    line(format!("libseccomp {}", crate::resolve::libseccomp_version()));
    line(format!("optimize {} generator {:?}", opts.optimize, opts.generator));
    line(format!("default {:#x}", r.default_action.ret()));
    line(format!("arches {}", r.arches.iter().map(|a| a.name).collect::<Vec<_>>().join(",")));
    for rule in &r.rules {
        let conds: Vec<String> =
            rule.conds.iter().map(|c| format!("{}:{:?}:{:#x}:{:#x}", c.index, c.op, c.value, c.value_two)).collect();
        line(format!("rule {} {:#x} {}", rule.name, rule.action.ret(), conds.join(" ")));
    }
    hex(&h.finalize())
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Owned by us and not writable by group or others: nobody else can have put a program there.
fn trusted(m: &fs::Metadata) -> bool {
    m.uid() == nix::unistd::geteuid().as_raw() && m.permissions().mode() & 0o022 == 0
}

/// The cached program for `key` in `dir`, if there is a whole, verified one.
pub fn get(dir: &Path, key: &str) -> Option<Vec<Insn>> {
    let path = dir.join(format!("{key}.bpf"));
    let reject = |why: &str| {
        step("cache", &format!("{}: {why}, compiling", path.display()));
        None
    };
    match fs::symlink_metadata(dir) {
        Ok(m) if m.is_dir() && trusted(&m) => {}
        Ok(_) => return reject("directory not owned by us or writable by others"),
        Err(_) => return None,
    }
    // O_NOFOLLOW: the file itself must be the regular file we check, not a link to one elsewhere.
    let mut f = match OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW).open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            step("cache", &format!("{}: miss", path.display()));
            return None;
        }
        Err(e) => return reject(&e.to_string()),
    };
    match f.metadata() {
        Ok(m) if m.is_file() && trusted(&m) && m.len() <= 32 + 8 * bpf::MAX_INSNS as u64 => {}
        Ok(_) => return reject("not a regular file of ours of a program's size"),
        Err(e) => return reject(&e.to_string()),
    }
    let mut bytes = Vec::new();
    if let Err(e) = f.read_to_end(&mut bytes) {
        return reject(&e.to_string());
    }
    if bytes.len() < 32 || Sha256::digest(&bytes[32..]).as_slice() != &bytes[..32] {
        return reject("stored hash does not match");
    }
    match bpf::from_bytes(&bytes[32..], "cached program") {
        Ok(prog) => {
            step("cache", &format!("{}: hit", path.display()));
            Some(prog)
        }
        Err(e) => reject(&e.reason),
    }
}

/// Store `prog` under `key` in `dir` (created 0700 if missing), whole or not at all.
pub fn put(dir: &Path, key: &str, prog: &[Insn]) {
    if let Err(e) = try_put(dir, key, prog) {
        step("cache", &format!("{}: not written: {e}", dir.display()));
    }
}

fn try_put(dir: &Path, key: &str, prog: &[Insn]) -> std::io::Result<()> {
    if let Some(parent) = dir.parent() {
        fs::create_dir_all(parent)?;
    }
    match fs::DirBuilder::new().mode(0o700).create(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => return Err(e),
        _ => {}
    }
    let m = fs::symlink_metadata(dir)?;
    if !m.is_dir() || !trusted(&m) {
        return Err(std::io::Error::other("directory not owned by us or writable by others"));
    }
    let body = bpf::to_bytes(prog);
    let mut bytes = Sha256::digest(&body).to_vec();
    bytes.extend_from_slice(&body);
    let path = dir.join(format!("{key}.bpf"));
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos());
    let tmp = dir.join(format!(".{key}.{}.{}.tmp", std::process::id(), nanos.unwrap_or(0)));
    // Held from the temporary's creation to its rename or removal, so no stop signal ends us in between.
    // Not checked: a stop signal that came meanwhile lands once the file is in place (whole, and safe to
    // keep), when `held` drops.
    let held = crate::signals::Held::hold();
    let res = (|| {
        let mut f: File = OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
        f.write_all(&bytes)?;
        // No fsync: after a crash a rename may survive without its data, and the hash check then rejects
        // the empty or short file; a cache can afford to recompile, a container start cannot afford fsync.
        drop(f);
        fs::rename(&tmp, &path)
    })();
    if res.is_err() {
        let _ = fs::remove_file(&tmp);
    } else {
        step("cache", &format!("{}: written", path.display()));
    }
    drop(held);
    res
}
