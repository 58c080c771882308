//! Capability sets by name: parsing `--cap-add`/`--cap-drop` (with `ALL` and Docker's default set),
//! applying them to the process, and decoding masks for `inspect`. Names and numbers come from the `caps`
//! crate; only Docker's choice of default capabilities is written here.

use crate::error::{Error, Result, Step};
use caps::{CapSet, Capability, CapsHashSet};
use std::str::FromStr;

/// The capabilities Docker grants a container by default (moby's `oci/caps/defaults.go`).
pub const DOCKER_DEFAULT: [Capability; 14] = [
    Capability::CAP_CHOWN,
    Capability::CAP_DAC_OVERRIDE,
    Capability::CAP_FSETID,
    Capability::CAP_FOWNER,
    Capability::CAP_MKNOD,
    Capability::CAP_NET_RAW,
    Capability::CAP_SETGID,
    Capability::CAP_SETUID,
    Capability::CAP_SETFCAP,
    Capability::CAP_SETPCAP,
    Capability::CAP_NET_BIND_SERVICE,
    Capability::CAP_SYS_CHROOT,
    Capability::CAP_KILL,
    Capability::CAP_AUDIT_WRITE,
];

/// The pseudo-name for [`DOCKER_DEFAULT`] in `--cap-add`/`--cap-drop`.
pub const DOCKER_DEFAULT_NAME: &str = "DOCKER_DEFAULT";

/// What a name in `--cap-add`/`--cap-drop` stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CapName {
    All,
    DockerDefault,
    One(Capability),
}

/// Docker-style: case-insensitive, `CAP_` optional.
pub fn parse_name(s: &str) -> std::result::Result<CapName, String> {
    let up = s.trim().to_ascii_uppercase();
    if up == "ALL" {
        return Ok(CapName::All);
    }
    if up == DOCKER_DEFAULT_NAME {
        return Ok(CapName::DockerDefault);
    }
    let full = if up.starts_with("CAP_") { up } else { format!("CAP_{up}") };
    Capability::from_str(&full).map(CapName::One).map_err(|_| format!("unknown capability {s:?}"))
}

/// Capabilities this kernel knows (dropping one it does not would fail with EINVAL). Read once per
/// process: resolving the set (parent) and applying it (child, PID 1) would otherwise each read /proc.
pub fn supported() -> CapsHashSet {
    static SUPPORTED: std::sync::OnceLock<CapsHashSet> = std::sync::OnceLock::new();
    SUPPORTED
        .get_or_init(|| {
            caps::runtime::procfs_all_supported(None).unwrap_or_else(|_| caps::runtime::thread_all_supported())
        })
        .clone()
}

fn expand(name: &CapName, all: &CapsHashSet) -> CapsHashSet {
    match name {
        CapName::All => all.clone(),
        CapName::DockerDefault => DOCKER_DEFAULT.iter().copied().filter(|c| all.contains(c)).collect(),
        CapName::One(c) => [*c].into_iter().collect(),
    }
}

/// The final set: what the process will hold anyway (in a new user namespace every capability the kernel
/// supports; otherwise our own permitted set — root may lack some, as on hosts without CAP_SYS_RESOURCE),
/// minus the drops, plus the adds. Adds win, as in Docker (`--cap-drop ALL --cap-add NET_ADMIN` leaves
/// exactly NET_ADMIN).
pub fn resolve(drops: &[CapName], adds: &[CapName], new_userns: bool) -> Result<CapsHashSet> {
    let mut all = supported();
    if !new_userns {
        let held = caps::read(None, CapSet::Permitted).unwrap_or_default();
        all.retain(|c| held.contains(c));
    }
    let mut set = all.clone();
    for d in drops {
        for c in expand(d, &all) {
            set.remove(&c);
        }
    }
    for a in adds {
        if let CapName::One(c) = a {
            if !all.contains(c) {
                return Err(Error::new(Step::Capabilities, c, "not held by cbuild-ns itself, so it cannot be granted"));
            }
        }
        set.extend(expand(a, &all));
    }
    Ok(set)
}

/// Drop from the bounding set everything not in `keep`. Must run while we still hold CAP_SETPCAP, i.e.
/// before changing to a non-root user.
pub fn limit_bounding(keep: &CapsHashSet) -> Result<()> {
    for c in supported() {
        if !keep.contains(&c) {
            caps::drop(None, CapSet::Bounding, c)
                .map_err(|e| Error::new(Step::Capabilities, format!("bounding {c}"), e))?;
        }
    }
    Ok(())
}

/// Set effective and permitted to `keep` (after the user switch, which PR_SET_KEEPCAPS preserved
/// permitted across), and clear inheritable and ambient: a full inheritable set would let a non-root user
/// regain capabilities through file capabilities (CVE-2022-24769, fixed the same way in runc).
pub fn apply(keep: &CapsHashSet) -> Result<()> {
    let set = |cs: CapSet, what: &str| caps::set(None, cs, keep).map_err(|e| Error::new(Step::Capabilities, what, e));
    caps::clear(None, CapSet::Ambient).map_err(|e| Error::new(Step::Capabilities, "ambient", e))?;
    // Effective first (it must stay within permitted), then permitted.
    set(CapSet::Effective, "effective")?;
    set(CapSet::Permitted, "permitted")?;
    caps::clear(None, CapSet::Inheritable).map_err(|e| Error::new(Step::Capabilities, "inheritable", e))?;
    Ok(())
}

/// The set a /proc status mask stands for.
pub fn from_mask(mask: u64) -> CapsHashSet {
    caps::all().into_iter().filter(|c| mask & c.bitmask() != 0).collect()
}

/// Names of the capabilities in a /proc status mask (`CapEff: 00000000a80425fb`).
pub fn decode(mask: u64) -> Vec<String> {
    let mut v: Vec<Capability> = caps::all().into_iter().filter(|c| mask & c.bitmask() != 0).collect();
    v.sort_by_key(|c| c.index());
    v.into_iter().map(|c| c.to_string()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(parse_name("net_raw").unwrap(), CapName::One(Capability::CAP_NET_RAW));
        assert_eq!(parse_name("CAP_SYS_ADMIN").unwrap(), CapName::One(Capability::CAP_SYS_ADMIN));
        assert_eq!(parse_name("all").unwrap(), CapName::All);
        assert!(parse_name("CAP_BOGUS").is_err());
    }

    #[test]
    fn drop_all_add_one() {
        let s = resolve(&[CapName::All], &[CapName::One(Capability::CAP_NET_ADMIN)], true).unwrap();
        assert_eq!(s.len(), 1);
        let d = resolve(&[CapName::All], &[CapName::DockerDefault], true).unwrap();
        assert_eq!(d.len(), 14);
    }

    #[test]
    fn decodes_docker_default_mask() {
        // The CapEff Docker's default container shows.
        let names = decode(0x00000000a80425fb);
        assert_eq!(names.len(), 14);
        assert!(names.contains(&"CAP_NET_RAW".to_string()));
    }
}
