//! Capability sets for resolving `includes.caps`/`excludes.caps`, as Docker does against the container's
//! bounding set.

use crate::{Error, Result};
use std::collections::BTreeSet;

/// Every capability the kernel defines, in number order (CAP_CHOWN = 0 … CAP_CHECKPOINT_RESTORE = 40).
pub const ALL: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// The 14 capabilities a Docker container gets by default (moby's `oci/caps/defaults.go`).
pub const DOCKER_DEFAULT: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

pub type CapSet = BTreeSet<String>;

/// `--caps`: a comma-separated list of `default` (Docker's 14), `all`, `none`, `CAP_X` or `X` (added) and
/// `-CAP_X` (removed), applied left to right. `default,CAP_SYS_ADMIN` is Docker's `--cap-add SYS_ADMIN`.
pub fn parse(spec: &str) -> Result<CapSet> {
    let mut set = CapSet::new();
    for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        match item.to_ascii_lowercase().as_str() {
            "default" => set.extend(DOCKER_DEFAULT.iter().map(|s| s.to_string())),
            "all" => set.extend(ALL.iter().map(|s| s.to_string())),
            "none" => set.clear(),
            _ => {
                let (remove, name) = match item.strip_prefix('-') {
                    Some(n) => (true, n),
                    None => (false, item.strip_prefix('+').unwrap_or(item)),
                };
                let cap = canonical(name).ok_or_else(|| {
                    Error::new("resolve", format!("--caps {item}"), "unknown capability")
                        .hint("names are CAP_SYS_ADMIN or SYS_ADMIN; also default, all, none, -CAP_X")
                })?;
                if remove {
                    set.remove(&cap);
                } else {
                    set.insert(cap);
                }
            }
        }
    }
    Ok(set)
}

/// `sys_admin` / `CAP_SYS_ADMIN` → `CAP_SYS_ADMIN`, if the kernel defines it.
pub fn canonical(name: &str) -> Option<String> {
    let up = name.to_ascii_uppercase();
    let full = if up.starts_with("CAP_") { up } else { format!("CAP_{up}") };
    ALL.contains(&full.as_str()).then_some(full)
}

pub fn docker_default() -> CapSet {
    DOCKER_DEFAULT.iter().map(|s| s.to_string()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs() {
        assert_eq!(parse("default").unwrap().len(), 14);
        let s = parse("default,sys_admin,-CAP_KILL").unwrap();
        assert!(s.contains("CAP_SYS_ADMIN") && !s.contains("CAP_KILL") && s.len() == 14);
        assert_eq!(parse("all").unwrap().len(), ALL.len());
        assert!(parse("none").unwrap().is_empty());
        assert!(parse("CAP_NOPE").is_err());
    }
}
