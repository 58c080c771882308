//! Names and where state lives (docs/ARCHITECTURE.md, "Names" and "Where state lives").

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// `<state>`: `CBUILD_STATE`, else `/run/cbuild` for root, else `$XDG_RUNTIME_DIR/cbuild`.
pub fn state_dir() -> PathBuf {
    if let Some(s) = std::env::var_os("CBUILD_STATE") {
        return PathBuf::from(s);
    }
    if nix::unistd::Uid::effective().is_root() {
        return PathBuf::from("/run/cbuild");
    }
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(d) => Path::new(&d).join("cbuild"),
        None => PathBuf::from(format!("/run/user/{}/cbuild", nix::unistd::Uid::effective())),
    }
}

/// `[A-Za-z0-9][A-Za-z0-9_.-]{0,63}`: checked before any path is built from it.
pub fn check_name(step: &'static str, kind: &str, name: &str) -> Result<()> {
    let b = name.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= 64
        && b[0].is_ascii_alphanumeric()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(Error::new(step, name, format!("invalid {kind}: want [A-Za-z0-9][A-Za-z0-9_.-]{{0,63}}")))
    }
}

/// An interface name the kernel accepts: 1..=15 bytes, no `/`, `:`, whitespace, not `.` or `..`.
pub fn check_ifname(step: &'static str, name: &str) -> Result<()> {
    if name.is_empty() || name.len() > 15 {
        return Err(Error::new(step, name, "interface name must be 1 to 15 bytes (IFNAMSIZ)"));
    }
    if name == "." || name == ".." || name.bytes().any(|c| c == b'/' || c == b':' || c <= b' ' || c >= 0x7f) {
        return Err(Error::new(step, name, "invalid interface name"));
    }
    Ok(())
}

/// `<state>/<NAME>`: the container's directory, shared with the other tools.
pub fn container_dir(state: &Path, id: &str) -> PathBuf {
    state.join(id)
}

/// `<state>/<NAME>/net.json`: the attachment record.
pub fn attachment_file(state: &Path, id: &str) -> PathBuf {
    state.join(id).join("net.json")
}

/// `<state>/net`: everything cbuild-net keeps that is not one container's.
pub fn net_dir(state: &Path) -> PathBuf {
    state.join("net")
}

/// `<state>/net/<BR>`: one bridge's config and IPAM leases.
pub fn bridge_dir(state: &Path, bridge: &str) -> PathBuf {
    net_dir(state).join(bridge)
}

/// The host end of a container's veth pair: `cb` + 12 hex digits of a hash of the ID, so it fits
/// IFNAMSIZ, is the same for the same ID (prune finds a half-built pair from the ID alone), and the
/// leak-check hooks can find every cbuild link by its prefix.
pub fn host_ifname(id: &str) -> String {
    // FNV-1a 64: tiny, stable across versions, and good enough to spread names.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("cb{:012x}", h & 0xffff_ffff_ffff)
}

/// Write `data` to `path` atomically: a temporary file in the same directory, then rename.
pub fn write_atomic(step: &'static str, path: &Path, data: &[u8]) -> Result<()> {
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    std::fs::write(&tmp, data).map_err(|e| Error::io(step, tmp.display(), e))?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(step, path.display(), e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(check_name("t", "ID", "web-1.a_b").is_ok());
        for bad in ["", "-a", "a/b", "..", ".a", "a b", &"x".repeat(65)] {
            assert!(check_name("t", "ID", bad).is_err(), "{bad:?}");
        }
        assert!(check_name("t", "ID", &"x".repeat(64)).is_ok());
    }

    #[test]
    fn ifnames() {
        assert!(check_ifname("t", "eth0").is_ok());
        assert!(check_ifname("t", "0123456789abcde").is_ok());
        assert!(check_ifname("t", "0123456789abcdef").is_err());
        assert!(check_ifname("t", "a/b").is_err());
        assert!(check_ifname("t", "").is_err());
    }

    #[test]
    fn host_names_fit_and_differ() {
        let a = host_ifname("web");
        assert_eq!(a.len(), 14);
        assert!(a.starts_with("cb"));
        assert_eq!(a, host_ifname("web"));
        assert_ne!(a, host_ifname("web2"));
    }
}
