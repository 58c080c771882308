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
    pub propagation: Propagation,
}

/// A bind's mount propagation. Binds are always recursive here (rbind), so Docker's `private` and
/// `rprivate` (the default) mean the same, as do `slave` and `rslave`. `shared` and `rshared` are not
/// offered: the container's mount namespace starts from a private (or slave) copy of the host's, so
/// nothing mounted inside could reach the host anyway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Propagation {
    #[default]
    Private,
    /// Mounts the host makes under the source later appear in the container too (not the reverse).
    Slave,
}

impl Propagation {
    /// Docker's word for it, or None.
    pub fn parse(word: &str) -> Option<Propagation> {
        match word {
            "private" | "rprivate" => Some(Propagation::Private),
            "slave" | "rslave" => Some(Propagation::Slave),
            _ => None,
        }
    }
}

/// Docker's `-v SRC:DST[:OPTIONS]` options, as parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BindOptions {
    pub readonly: bool,
    pub propagation: Propagation,
    /// `z` or `Z` was given: an SELinux relabel, which cbuild does not do (ignored where SELinux is off,
    /// as Docker ignores it there; the caller refuses it where SELinux is on).
    pub relabel: bool,
}

/// Docker's `-v SRC:DST[:OPTIONS]` options, comma-separated: `ro`/`rw`, one propagation, `z`/`Z`, and
/// macOS's `consistent`, `cached`, `delegated` (no meaning on Linux, accepted as Docker accepts them).
pub fn parse_bind_options(opts: &str) -> Result<BindOptions, String> {
    let (mut ro, mut prop, mut relabel) = (None, None, false);
    for o in opts.split(',') {
        if let Some(p) = Propagation::parse(o) {
            if prop.replace(p).is_some() {
                return Err("more than one propagation".into());
            }
            continue;
        }
        match o {
            "ro" | "rw" => {
                if ro.replace(o == "ro").is_some() {
                    return Err("more than one of ro, rw".into());
                }
            }
            "shared" | "rshared" => {
                return Err(format!("{o}: not supported (a container's mounts never propagate to the host here)"));
            }
            "z" | "Z" => relabel = true,
            "consistent" | "cached" | "delegated" => {}
            "" => return Err("empty option".into()),
            o => return Err(format!("unknown option {o:?} (ro, rw, z, Z, [r]private, [r]slave)")),
        }
    }
    Ok(BindOptions { readonly: ro.unwrap_or(false), propagation: prop.unwrap_or_default(), relabel })
}

/// Docker's `--shm-size`: bytes, or a number with b, k, m or g (either case), more than 0; in KiB,
/// rounded up (tmpfs sizes in pages anyway).
pub fn parse_shm_size(s: &str) -> Result<u64, String> {
    let lower = s.to_ascii_lowercase();
    let (digits, unit) = match lower.as_bytes().last() {
        Some(b'b') => (&lower[..lower.len() - 1], 1u64),
        Some(b'k') => (&lower[..lower.len() - 1], 1 << 10),
        Some(b'm') => (&lower[..lower.len() - 1], 1 << 20),
        Some(b'g') => (&lower[..lower.len() - 1], 1 << 30),
        _ => (lower.as_str(), 1),
    };
    let n: u64 = digits
        .parse()
        .ok()
        .filter(|_| digits.bytes().all(|c| c.is_ascii_digit()))
        .ok_or_else(|| format!("{s:?}: want a size (bytes, or with b, k, m, g)"))?;
    let bytes = n.checked_mul(unit).filter(|&b| b > 0).ok_or_else(|| format!("{s:?}: must be more than 0"))?;
    Ok(bytes.div_ceil(1024))
}

/// One `--mount` of Docker's: `type=bind,source=S,target=T[,readonly][,bind-propagation=P]` or
/// `type=tmpfs,target=T[,tmpfs-size=BYTES][,tmpfs-mode=OCTAL]`.
#[derive(Debug, Clone)]
pub enum DockerMount {
    Bind(BindMount),
    Tmpfs(TmpfsMount),
}

/// A `--mount` value's comma-separated fields as Docker reads them (Go's encoding/csv): a field in double
/// quotes may hold commas, `""` inside it is one quote (`"src=/a,b",dst=/c`).
fn csv_fields(line: &str) -> Result<Vec<String>, String> {
    let (mut fields, mut cur, mut quoted, mut at_start) = (Vec::new(), String::new(), false, true);
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                chars.next();
                cur.push('"');
            }
            '"' if quoted => quoted = false,
            '"' if at_start => quoted = true,
            ',' if !quoted => {
                fields.push(std::mem::take(&mut cur));
                at_start = true;
                continue;
            }
            c => cur.push(c),
        }
        at_start = false;
    }
    if quoted {
        return Err("a quoted field is not closed".into());
    }
    fields.push(cur);
    Ok(fields)
}

pub fn parse_docker_mount(spec: &str) -> Result<DockerMount, String> {
    let (mut kind, mut src, mut dst, mut ro, mut prop) = (None, None, None, false, None);
    let (mut size, mut mode) = (None, None);
    let fields = csv_fields(spec)?;
    for field in fields.iter().map(String::as_str) {
        let (k, v) = match field.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (field, None),
        };
        let value = || v.filter(|v| !v.is_empty()).ok_or_else(|| format!("{k} needs a value"));
        match k {
            "type" => kind = Some(value()?),
            "source" | "src" => src = Some(value()?),
            "target" | "destination" | "dst" => dst = Some(value()?),
            "readonly" | "ro" => {
                ro = match v {
                    None | Some("true" | "1") => true,
                    Some("false" | "0") => false,
                    Some(v) => return Err(format!("{k}={v}: must be true or false")),
                }
            }
            "bind-propagation" => {
                let v = value()?;
                prop = Some(Propagation::parse(v).ok_or_else(|| match v {
                    "shared" | "rshared" => {
                        format!("bind-propagation={v}: not supported (nothing propagates to the host here)")
                    }
                    _ => format!("bind-propagation={v}: must be [r]private or [r]slave"),
                })?);
            }
            "tmpfs-size" => size = Some(value()?),
            "tmpfs-mode" => mode = Some(value()?),
            "consistency" => {}
            "" => return Err("empty field".into()),
            k if k.starts_with("volume-") => return Err(format!("{k}: volumes are not supported")),
            k => return Err(format!("unknown field {k:?}")),
        }
    }
    let dst = dst.ok_or("target= is required")?;
    match kind.ok_or("type= is required")? {
        "bind" => {
            if size.is_some() || mode.is_some() {
                return Err("tmpfs-size and tmpfs-mode are for type=tmpfs".into());
            }
            let src = src.ok_or("source= is required for type=bind")?;
            let propagation = prop.unwrap_or_default();
            Ok(DockerMount::Bind(BindMount { src: src.into(), dst: dst.into(), readonly: ro, propagation }))
        }
        "tmpfs" => {
            if src.is_some() || prop.is_some() {
                return Err("source and bind-propagation are for type=bind".into());
            }
            let mut options: Vec<String> = vec![];
            if ro {
                options.push("ro".into());
            }
            if let Some(s) = size {
                // A size, as Docker takes it, never option text: `1m,exec,suid,dev,size=0` (one quoted
                // field) would otherwise pass mount options of its own.
                let kib = parse_shm_size(s).map_err(|e| format!("tmpfs-size={e}"))?;
                options.push(format!("size={kib}k"));
            }
            if let Some(m) = mode {
                // Docker takes the mode in octal with or without a leading 0; tmpfs reads it as octal.
                if m.is_empty() || !m.bytes().all(|c| (b'0'..=b'7').contains(&c)) || m.len() > 5 {
                    return Err(format!("tmpfs-mode={m}: must be an octal mode"));
                }
                options.push(format!("mode={m}"));
            }
            Ok(DockerMount::Tmpfs(TmpfsMount { dst: dst.into(), options: options.join(",") }))
        }
        "volume" | "npipe" | "cluster" | "image" => {
            Err(format!("type={}: not supported (bind, tmpfs)", kind.unwrap_or("")))
        }
        t => Err(format!("type={t}: unknown (bind, tmpfs)")),
    }
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
    /// Size of the container's /dev/shm tmpfs, KiB (Docker's --shm-size; 64 MiB unless told).
    pub shm_size_kib: Option<u64>,
    pub no_mask: bool,
    pub workdir: Option<PathBuf>,
    pub clear_env: bool,
    /// `--env` in order: `(K, Some(V))` sets K, `(K, None)` (a NAME alone) unsets it.
    pub env: Vec<(String, Option<String>)>,
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
    /// The command, byte for byte: whatever its encoding, as execve takes it.
    pub argv: Vec<std::ffi::OsString>,
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
    fn shm_sizes() {
        assert_eq!(parse_shm_size("64m"), Ok(65536));
        assert_eq!(parse_shm_size("1G"), Ok(1 << 20));
        assert_eq!(parse_shm_size("1000"), Ok(1));
        assert_eq!(parse_shm_size("2048b"), Ok(2));
        for bad in ["0", "0m", "", "m", "-1m", "1.5m", "1t", "99999999999999999g"] {
            assert!(parse_shm_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn docker_bind_options() {
        let o = |readonly, propagation, relabel| Ok(BindOptions { readonly, propagation, relabel });
        assert_eq!(parse_bind_options("ro"), o(true, Propagation::Private, false));
        assert_eq!(parse_bind_options("rw,z"), o(false, Propagation::Private, true));
        assert_eq!(parse_bind_options("Z,ro,rslave"), o(true, Propagation::Slave, true));
        assert_eq!(parse_bind_options("slave,cached"), o(false, Propagation::Slave, false));
        assert!(parse_bind_options("ro,rw").is_err());
        assert!(parse_bind_options("slave,private").is_err());
        assert!(parse_bind_options("rshared").unwrap_err().contains("not supported"));
        assert!(parse_bind_options("nocopy").unwrap_err().contains("unknown option"));
        assert!(parse_bind_options("ro,").is_err());
    }

    #[test]
    fn docker_mount_fields() {
        let DockerMount::Bind(b) = parse_docker_mount("type=bind,source=/a,target=/b,readonly").unwrap() else {
            panic!("a bind")
        };
        assert_eq!((b.src.to_str(), b.dst.to_str(), b.readonly), (Some("/a"), Some("/b"), true));
        let DockerMount::Bind(b) =
            parse_docker_mount("type=bind,src=/a,dst=/b,ro=false,bind-propagation=rslave").unwrap()
        else {
            panic!("a bind")
        };
        assert_eq!((b.readonly, b.propagation), (false, Propagation::Slave));
        let DockerMount::Tmpfs(t) = parse_docker_mount("type=tmpfs,target=/t,tmpfs-size=1m,tmpfs-mode=1770").unwrap()
        else {
            panic!("a tmpfs")
        };
        assert_eq!((t.dst.to_str(), t.options.as_str()), (Some("/t"), "size=1024k,mode=1770"));
        // Docker's CSV quoting: a comma (and a doubled quote) inside a quoted field.
        let DockerMount::Bind(b) = parse_docker_mount(r#"type=bind,"src=/a,b ""x""",dst=/c"#).unwrap() else {
            panic!("a bind")
        };
        assert_eq!((b.src.to_str(), b.dst.to_str()), (Some(r#"/a,b "x""#), Some("/c")));
        assert!(parse_docker_mount(r#"type=bind,"src=/a,dst=/c"#).is_err(), "an unclosed quote");
        for bad in [
            "type=volume,source=v,target=/v",
            "type=bind,target=/b",
            "type=bind,source=/a",
            "source=/a,target=/b",
            "type=tmpfs,target=/t,tmpfs-mode=rwx",
            "type=tmpfs,target=/t,source=/a",
            r#"type=tmpfs,target=/t,"tmpfs-size=1m,exec,suid,dev,size=0""#,
            "type=tmpfs,target=/t,tmpfs-size=0",
            "type=tmpfs,target=/t,tmpfs-size=lots",
            "type=bind,source=/a,target=/b,tmpfs-size=1m",
            "type=bind,source=/a,target=/b,readonly=maybe",
            "type=bind,source=/a,target=/b,volume-nocopy",
            "type=bind,source=/a,target=/b,color=red",
            "type=bind,source=,target=/b",
            "type=bind,source=/a,target=/b,bind-propagation=ro",
            "type=bind,source=/a,target=/b,bind-propagation=rshared",
        ] {
            assert!(parse_docker_mount(bad).is_err(), "{bad}");
        }
    }

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
