//! What `cbuild-ns run` was asked to do, validated: the CLI builds a [`RunSpec`]; nothing is created until
//! it exists, so every bad input fails before the first syscall that changes anything.

use crate::capabilities::CapName;
use crate::idmap::Range;
use crate::namespaces::NsType;
use std::collections::BTreeSet;
use std::os::fd::RawFd;
use std::path::PathBuf;

#[derive(Debug, Clone)]
pub struct TmpfsMount {
    pub dst: PathBuf,
    pub options: String,
}

#[derive(Debug, Clone)]
pub struct BindMount {
    pub src: PathBuf,
    pub dst: PathBuf,
    pub readonly: bool,
}

#[derive(Debug, Clone, Copy)]
pub struct Rlimit {
    pub resource: i32,
    pub name: &'static str,
    pub soft: u64,
    pub hard: u64,
}

#[derive(Debug, Clone)]
pub enum SeccompSource {
    File(PathBuf),
    Fd(RawFd),
}

#[derive(Debug, Clone, Default)]
pub struct RunSpec {
    pub new_ns: BTreeSet<NsType>,
    /// Existing namespaces to join, by file.
    pub joins: Vec<(NsType, PathBuf)>,
    pub hostname: Option<String>,
    /// Bring `lo` up in the new network namespace.
    pub loopback: bool,
    pub domainname: Option<String>,
    /// (clock id, seconds) for the time namespace: CLOCK_MONOTONIC or CLOCK_BOOTTIME.
    pub time_offsets: Vec<(i32, i64)>,
    pub rootfs: Option<PathBuf>,
    /// A detached mount (fd) to attach on `rootfs` inside the new mount namespace.
    pub rootfs_fd: Option<RawFd>,
    pub tmpfs: Vec<TmpfsMount>,
    pub binds: Vec<BindMount>,
    pub read_only: bool,
    pub no_mask: bool,
    pub workdir: Option<PathBuf>,
    pub clear_env: bool,
    pub env: Vec<(String, String)>,
    /// `UID[:GID]` or `NAME[:GROUP]`, resolved against the new root's /etc/passwd and /etc/group.
    pub user: Option<String>,
    pub group_add: Vec<String>,
    pub cap_drop: Vec<CapName>,
    pub cap_add: Vec<CapName>,
    pub no_new_privs: bool,
    pub rlimits: Vec<Rlimit>,
    pub uid_map: Vec<Range>,
    pub gid_map: Vec<Range>,
    pub seccomp: Option<SeccompSource>,
    pub seccomp_flags: u32,
    pub init: bool,
    pub persist: Option<PathBuf>,
    pub info_fd: Option<RawFd>,
    pub wait_fd: Option<RawFd>,
    pub status_fd: Option<RawFd>,
    /// A cgroup2 directory to create the container's first process in (clone3 CLONE_INTO_CGROUP).
    pub cgroup_fd: Option<RawFd>,
    pub preserve_fds: u32,
    pub argv: Vec<String>,
}

impl RunSpec {
    pub fn userns(&self) -> bool {
        self.new_ns.contains(&NsType::User)
    }

    /// Whether the process needs to know about the rootfs-related mount work at all.
    pub fn needs_mount_setup(&self) -> bool {
        self.new_ns.contains(&NsType::Mnt)
    }
}

/// Rlimit names as `ulimit`/Docker spell them (`nofile`, `nproc`, ...).
pub fn rlimit_resource(name: &str) -> Option<(i32, &'static str)> {
    let r = match name.to_ascii_lowercase().trim_start_matches("rlimit_") {
        "as" => (libc::RLIMIT_AS, "as"),
        "core" => (libc::RLIMIT_CORE, "core"),
        "cpu" => (libc::RLIMIT_CPU, "cpu"),
        "data" => (libc::RLIMIT_DATA, "data"),
        "fsize" => (libc::RLIMIT_FSIZE, "fsize"),
        "locks" => (libc::RLIMIT_LOCKS, "locks"),
        "memlock" => (libc::RLIMIT_MEMLOCK, "memlock"),
        "msgqueue" => (libc::RLIMIT_MSGQUEUE, "msgqueue"),
        "nice" => (libc::RLIMIT_NICE, "nice"),
        "nofile" => (libc::RLIMIT_NOFILE, "nofile"),
        "nproc" => (libc::RLIMIT_NPROC, "nproc"),
        "rss" => (libc::RLIMIT_RSS, "rss"),
        "rtprio" => (libc::RLIMIT_RTPRIO, "rtprio"),
        "rttime" => (libc::RLIMIT_RTTIME, "rttime"),
        "sigpending" => (libc::RLIMIT_SIGPENDING, "sigpending"),
        "stack" => (libc::RLIMIT_STACK, "stack"),
        _ => return None,
    };
    Some((r.0 as i32, r.1))
}

/// `NAME=SOFT[:HARD]`, values a number or `unlimited`; HARD defaults to SOFT (as Docker's --ulimit).
pub fn parse_rlimit(s: &str) -> Result<Rlimit, String> {
    let (name, vals) = s.split_once('=').ok_or("want NAME=SOFT[:HARD]")?;
    let (resource, name) = rlimit_resource(name).ok_or_else(|| format!("unknown resource {name:?}"))?;
    let num = |v: &str| -> Result<u64, String> {
        if v == "unlimited" || v == "-1" {
            Ok(libc::RLIM_INFINITY)
        } else {
            v.parse().map_err(|_| format!("{v:?} is not a number"))
        }
    };
    let (soft, hard) = match vals.split_once(':') {
        Some((a, b)) => (num(a)?, num(b)?),
        None => (num(vals)?, num(vals)?),
    };
    if soft > hard {
        return Err("soft limit above hard limit".into());
    }
    Ok(Rlimit { resource, name, soft, hard })
}

/// `SECS` for both clocks or `monotonic=SECS,boottime=SECS`.
pub fn parse_time_offsets(s: &str) -> Result<Vec<(i32, i64)>, String> {
    let mut v = Vec::new();
    for part in s.split(',') {
        let (clock, secs) = match part.split_once('=') {
            Some((c, n)) => (Some(c), n),
            None => (None, part),
        };
        let secs: i64 = secs.parse().map_err(|_| format!("{secs:?} is not a number of seconds"))?;
        match clock {
            Some("monotonic") => v.push((libc::CLOCK_MONOTONIC, secs)),
            Some("boottime") => v.push((libc::CLOCK_BOOTTIME, secs)),
            None => {
                v.push((libc::CLOCK_MONOTONIC, secs));
                v.push((libc::CLOCK_BOOTTIME, secs));
            }
            Some(c) => return Err(format!("unknown clock {c:?} (monotonic or boottime)")),
        }
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rlimits() {
        let r = parse_rlimit("nofile=1024:2048").unwrap();
        assert_eq!((r.soft, r.hard, r.name), (1024, 2048, "nofile"));
        assert_eq!(parse_rlimit("NPROC=10").unwrap().hard, 10);
        assert!(parse_rlimit("nofile=2048:1024").is_err());
        assert!(parse_rlimit("bogus=1").is_err());
    }

    #[test]
    fn offsets() {
        assert_eq!(parse_time_offsets("100").unwrap().len(), 2);
        assert_eq!(parse_time_offsets("boottime=-5").unwrap(), vec![(libc::CLOCK_BOOTTIME, -5)]);
        assert!(parse_time_offsets("realtime=5").is_err());
    }
}
