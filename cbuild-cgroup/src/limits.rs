//! Resource limits: Docker's flags (as strings from the CLI) or an OCI config's `linux.resources`,
//! parsed and checked *before* anything is created, so bad input never leaves a half-made cgroup.

use crate::controllers::devices;
use crate::convert::{self, Limit};
use crate::error::{Error, Result};
use crate::fsutil;
use crate::layout::Host;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;

/// The flags as typed. main.rs fills this from clap.
#[derive(Debug, Default, Clone)]
pub struct RawLimits {
    pub memory: Option<String>,
    pub memory_swap: Option<String>,
    pub memory_reservation: Option<String>,
    pub cpus: Option<String>,
    pub cpu_period: Option<String>,
    pub cpu_quota: Option<String>,
    pub cpu_shares: Option<String>,
    pub cpu_weight: Option<String>,
    pub cpuset_cpus: Option<String>,
    pub cpuset_mems: Option<String>,
    pub pids: Option<String>,
    pub io_weight: Option<String>,
    pub io_max: Vec<String>,
    pub oom_group: bool,
    pub oci: Option<String>,
    /// `docker` or `all`.
    pub devices: Option<String>,
    pub device_rules: Vec<String>,
}

/// One `--io-max` entry: a block device and its throttles.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IoMax {
    pub major: u64,
    pub minor: u64,
    pub rbps: Option<Limit>,
    pub wbps: Option<Limit>,
    pub riops: Option<Limit>,
    pub wiops: Option<Limit>,
}

/// Validated limits; `None` means "leave as is".
#[derive(Debug, Clone, Default)]
pub struct Limits {
    pub memory: Option<Limit>,
    /// Docker's memory+swap.
    pub memory_swap: Option<Limit>,
    /// Whether memory_swap was asked for (an implied one is skipped on a kernel without swap accounting).
    pub memory_swap_explicit: bool,
    pub memory_reservation: Option<Limit>,
    pub cpus: Option<f64>,
    pub cpu_period: Option<u64>,
    pub cpu_quota: Option<Limit>,
    pub cpu_shares: Option<u64>,
    pub cpu_weight: Option<u64>,
    pub cpuset_cpus: Option<Vec<u32>>,
    pub cpuset_mems: Option<Vec<u32>>,
    pub pids: Option<Limit>,
    /// Docker's --blkio-weight scale, 10..=1000.
    pub io_weight: Option<u64>,
    pub io_max: Vec<IoMax>,
    pub oom_group: bool,
    /// OCI `linux.resources.unified`: v2 file name → value.
    pub unified: BTreeMap<String, String>,
    /// Device nodes allowed (all others denied); None leaves the device policy alone.
    pub devices: Option<Vec<devices::Rule>>,
}

fn bad(flag: &str, value: &str, reason: impl Into<String>) -> Error {
    Error::bad("limits", format!("{flag} {value}"), reason)
}

/// Docker's floor for a memory limit or reservation: below it the container could not even start (and
/// the v1 kernel rounds a limit under a page down to 0, which OOM-kills every charge).
const MIN_MEMORY: u64 = 6 << 20;

/// A memory limit (`what` = "limit") or reservation at or above [`MIN_MEMORY`], as Docker requires.
fn min_memory(v: Option<Limit>, what: &str, err: impl FnOnce(String) -> Error) -> Result<Option<Limit>> {
    match v {
        Some(Limit::Value(n)) if n < MIN_MEMORY => Err(err(format!("Minimum memory {what} allowed is 6MB"))),
        _ => Ok(v),
    }
}

fn size(flag: &str, v: &Option<String>) -> Result<Option<Limit>> {
    v.as_deref().map(|s| convert::parse_size(s).map_err(|r| bad(flag, s, r))).transpose()
}

fn int(flag: &str, v: &Option<String>, min: u64, max: u64) -> Result<Option<u64>> {
    let Some(s) = v.as_deref() else { return Ok(None) };
    let n: i64 = s.trim().parse().map_err(|_| bad(flag, s, "not an integer"))?;
    if n < min as i64 || n > max as i64 {
        return Err(bad(flag, s, format!("out of range {min}..={max}")));
    }
    Ok(Some(n as u64))
}

impl Limits {
    pub fn is_empty(&self) -> bool {
        self.memory.is_none()
            && self.memory_swap.is_none()
            && self.memory_reservation.is_none()
            && self.cpu_period.is_none()
            && self.cpu_quota.is_none()
            && self.cpu_shares.is_none()
            && self.cpu_weight.is_none()
            && self.cpuset_cpus.is_none()
            && self.cpuset_mems.is_none()
            && self.pids.is_none()
            && self.io_weight.is_none()
            && self.io_max.is_empty()
            && !self.oom_group
            && self.unified.is_empty()
            && self.devices.is_none()
    }

    /// Parse the flags (and the OCI file, which flags override). Pure: no host state is consulted.
    pub fn parse(raw: &RawLimits) -> Result<Limits> {
        let mut l = match &raw.oci {
            Some(path) => from_oci(Path::new(path))?,
            None => Limits::default(),
        };
        let memory = size("--memory", &raw.memory)?;
        if let Some(m) = min_memory(memory, "limit", |r| bad("--memory", raw.memory.as_deref().unwrap_or(""), r))? {
            l.memory = Some(m);
        }
        if let Some(s) = size("--memory-swap", &raw.memory_swap)? {
            l.memory_swap = Some(s);
            l.memory_swap_explicit = true;
        }
        let reservation = size("--memory-reservation", &raw.memory_reservation)?;
        let flag = raw.memory_reservation.as_deref().unwrap_or("");
        if let Some(r) = min_memory(reservation, "reservation", |r| bad("--memory-reservation", flag, r))? {
            l.memory_reservation = Some(r);
        }
        if let Some(p) = int("--cpu-period", &raw.cpu_period, 1000, 1_000_000)? {
            l.cpu_period = Some(p);
        }
        if let Some(q) = raw.cpu_quota.as_deref() {
            l.cpu_quota = Some(match q.trim() {
                "-1" | "max" => Limit::Max,
                _ => Limit::Value(int("--cpu-quota", &raw.cpu_quota, 1000, i64::MAX as u64)?.unwrap_or(0)),
            });
        }
        if let Some(c) = raw.cpus.as_deref() {
            if raw.cpu_quota.is_some() || raw.cpu_period.is_some() {
                return Err(bad("--cpus", c, "conflicts with --cpu-period and --cpu-quota (as in Docker)"));
            }
            let cpus: f64 = c
                .trim()
                .parse()
                .ok()
                .filter(|c: &f64| c.is_finite())
                .ok_or_else(|| bad("--cpus", c, "not a number"))?;
            // The range (0.01 up to the CPU count) is checked against the host in `check`.
            let period = 100_000;
            l.cpus = Some(cpus);
            l.cpu_period = Some(period);
            l.cpu_quota = Some(Limit::Value(convert::cpus_to_quota(cpus, period)));
        }
        if let Some(s) = int("--cpu-shares", &raw.cpu_shares, 2, 262_144)? {
            l.cpu_shares = Some(s);
            l.cpu_weight = None;
        }
        if let Some(w) = int("--cpu-weight", &raw.cpu_weight, 1, 10_000)? {
            if raw.cpu_shares.is_some() {
                return Err(bad("--cpu-weight", &w.to_string(), "conflicts with --cpu-shares (give one)"));
            }
            l.cpu_weight = Some(w);
            l.cpu_shares = None;
        }
        if let Some(c) = raw.cpuset_cpus.as_deref() {
            l.cpuset_cpus = Some(convert::parse_id_list(c).map_err(|r| bad("--cpuset-cpus", c, r))?);
        }
        if let Some(m) = raw.cpuset_mems.as_deref() {
            l.cpuset_mems = Some(convert::parse_id_list(m).map_err(|r| bad("--cpuset-mems", m, r))?);
        }
        if let Some(p) = raw.pids.as_deref() {
            let t = p.trim();
            l.pids = Some(if t == "max" || t == "-1" {
                Limit::Max
            } else {
                Limit::Value(int("--pids", &raw.pids, 1, i32::MAX as u64)?.unwrap_or(0))
            });
        }
        if let Some(w) = int("--io-weight", &raw.io_weight, 10, 1000)? {
            l.io_weight = Some(w);
        }
        for spec in &raw.io_max {
            l.io_max.push(parse_io_max(spec)?);
        }
        l.oom_group |= raw.oom_group;
        // As Docker: --device-cgroup-rule adds to the list in force (the OCI file's, else Docker's default);
        // --devices replaces it, as any flag overrides the file.
        match raw.devices.as_deref() {
            None if raw.device_rules.is_empty() => {}
            Some("all") if raw.device_rules.is_empty() => l.devices = Some(devices::all()),
            None if l.devices.is_some() => {}
            None | Some("docker") => l.devices = Some(devices::docker()),
            Some("all") => {
                return Err(bad(
                    "--device-cgroup-rule",
                    &raw.device_rules[0],
                    "needs --devices docker (all allows all)",
                ))
            }
            Some(p) => return Err(bad("--devices", p, "must be docker or all")),
        }
        for r in &raw.device_rules {
            let rule = devices::Rule::parse(r).map_err(|e| bad("--device-cgroup-rule", r, e))?;
            l.devices.get_or_insert_with(Vec::new).push(rule);
        }
        l.finish()?;
        Ok(l)
    }

    /// Cross-field rules and Docker's defaults.
    fn finish(&mut self) -> Result<()> {
        if let (Some(Limit::Value(r)), Some(Limit::Value(m))) = (self.memory_reservation, self.memory) {
            if r > m {
                return Err(bad("--memory-reservation", &r.to_string(), "is above --memory"));
            }
        }
        match (self.memory, self.memory_swap) {
            // Docker: --memory without --memory-swap allows as much swap as memory (memory+swap = 2×).
            (Some(Limit::Value(m)), None) => self.memory_swap = Some(Limit::Value(m.saturating_mul(2))),
            (Some(Limit::Max), None) => self.memory_swap = Some(Limit::Max),
            (Some(m), Some(s)) => {
                convert::memsw_to_swap(m, s).map_err(|r| bad("--memory-swap", &s.v2(), r))?;
            }
            (None, Some(Limit::Value(s))) => {
                return Err(bad("--memory-swap", &s.to_string(), "needs --memory (it counts memory + swap)"))
            }
            _ => {}
        }
        Ok(())
    }

    /// Checks that need the host: the controllers exist, the CPU count, the allowed cpuset.
    pub fn check(&self, host: &Host) -> Result<()> {
        let need = |ctrl: &str, flag: &str| -> Result<()> {
            let alias = if ctrl == "io" { "blkio" } else { ctrl };
            if host.hierarchy_of(ctrl).is_none() && host.hierarchy_of(alias).is_none() {
                return Err(Error::bad("limits", flag, format!("the host has no {ctrl} controller available")));
            }
            Ok(())
        };
        if self.memory.is_some() || self.memory_swap_explicit || self.memory_reservation.is_some() {
            need("memory", "--memory")?;
        }
        if self.cpu_quota.is_some()
            || self.cpu_period.is_some()
            || self.cpu_shares.is_some()
            || self.cpu_weight.is_some()
        {
            need("cpu", "--cpus")?;
        }
        if self.cpuset_cpus.is_some() || self.cpuset_mems.is_some() {
            need("cpuset", "--cpuset-cpus")?;
        }
        if self.pids.is_some() {
            need("pids", "--pids")?;
        }
        if self.io_weight.is_some() || !self.io_max.is_empty() {
            need("io", "--io-max")?;
        }
        if self.oom_group {
            let v2_memory = host.hierarchy_of("memory").map(|i| host.hierarchies[i].version == 2).unwrap_or(false);
            if !v2_memory {
                return Err(Error::bad("limits", "--oom-group", "needs the memory controller on cgroup v2"));
            }
        }
        if !self.unified.is_empty() {
            let v2 = host.v2().map(|i| &host.hierarchies[i]);
            if v2.is_none_or(|h| h.controllers.is_empty()) {
                return Err(Error::bad("limits", "unified", "OCI unified resources need cgroup v2 controllers"));
            }
            // A file of a controller the v2 tree lacks (memory.* on a hybrid host, whose memory is v1)
            // would only fail after every directory exists: say so before anything is made.
            for k in self.unified.keys() {
                let ctrl = k.split('.').next().unwrap_or_default();
                if ctrl != "cgroup" && !v2.is_some_and(|h| h.has(ctrl)) {
                    return Err(Error::bad(
                        "limits",
                        format!("unified {k}"),
                        format!("the host's cgroup v2 tree has no {ctrl} controller"),
                    ));
                }
            }
        }
        // A device policy with nowhere to go would leave the group open while the caller believes
        // otherwise: the v1 devices controller, or a v2 tree for the BPF program, or an error.
        if self.devices.is_some() && host.hierarchy_of("devices").is_none() && host.v2().is_none() {
            return Err(Error::bad(
                "limits",
                "--devices",
                "the host has neither a devices controller (v1) nor a cgroup v2 tree for a device program",
            ));
        }
        if let Some(cpus) = self.cpus {
            let online = nix::unistd::sysconf(nix::unistd::SysconfVar::_NPROCESSORS_ONLN).ok().flatten().unwrap_or(1);
            // As Docker: below 0.01 the quota would be under the kernel's 1 ms minimum per 100 ms period.
            if !(0.01..=online as f64).contains(&cpus) {
                return Err(bad(
                    "--cpus",
                    &cpus.to_string(),
                    format!("range of CPUs is from 0.01 to {online}, as there are only {online} CPUs available"),
                ));
            }
        }
        for (ids, flag, v1file, v2file) in [
            (&self.cpuset_cpus, "--cpuset-cpus", "cpuset.effective_cpus", "cpuset.cpus.effective"),
            (&self.cpuset_mems, "--cpuset-mems", "cpuset.effective_mems", "cpuset.mems.effective"),
        ] {
            let Some(ids) = ids else { continue };
            let Some(i) = host.hierarchy_of("cpuset") else { continue };
            let h = &host.hierarchies[i];
            let file = h.base.join(if h.version == 2 { v2file } else { v1file });
            let allowed = fsutil::read(&file)?;
            let allowed = convert::parse_id_list(allowed.trim()).unwrap_or_default();
            if let Some(bad_id) = ids.iter().find(|id| !allowed.contains(id)) {
                return Err(bad(
                    flag,
                    &convert::format_id_list(ids),
                    format!("{bad_id} is outside the allowed set {}", convert::format_id_list(&allowed)),
                ));
            }
        }
        for io in &self.io_max {
            let dev = format!("/sys/dev/block/{}:{}", io.major, io.minor);
            if !Path::new(&dev).exists() {
                return Err(bad("--io-max", &format!("{}:{}", io.major, io.minor), "no such block device"));
            }
        }
        Ok(())
    }
}

/// `DEV:rbps=1m,wbps=..,riops=..,wiops=..` with DEV a `MAJ:MIN` or a block device path.
pub fn parse_io_max(spec: &str) -> Result<IoMax> {
    let b = |r: String| bad("--io-max", spec, r);
    // The device part ends at the last ':' before the first '='.
    let eq = spec.find('=').ok_or_else(|| b("want DEV:rbps=..,wbps=..,riops=..,wiops=..".into()))?;
    let colon = spec[..eq].rfind(':').ok_or_else(|| b("want DEV:key=value,...".into()))?;
    let (dev, settings) = (&spec[..colon], &spec[colon + 1..]);
    let mut io = IoMax::default();
    if let Some((ma, mi)) = dev.split_once(':').filter(|_| !dev.starts_with('/')) {
        io.major = ma.parse().map_err(|_| b(format!("{dev:?} is not MAJ:MIN")))?;
        io.minor = mi.parse().map_err(|_| b(format!("{dev:?} is not MAJ:MIN")))?;
    } else {
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        let md = std::fs::metadata(dev).map_err(|e| Error::sys("limits", format!("--io-max {dev}"), e))?;
        if !md.file_type().is_block_device() {
            return Err(b(format!("{dev} is not a block device")));
        }
        io.major = nix::sys::stat::major(md.rdev());
        io.minor = nix::sys::stat::minor(md.rdev());
    }
    for kv in settings.split(',') {
        let (k, v) = kv.split_once('=').ok_or_else(|| b(format!("{kv:?} is not key=value")))?;
        let val = if k.ends_with("bps") {
            convert::parse_size(v).map_err(b)?
        } else if v == "max" {
            Limit::Max
        } else {
            Limit::Value(
                v.parse().ok().filter(|&n: &u64| n > 0).ok_or_else(|| b(format!("{v:?} is not a positive count")))?,
            )
        };
        match k {
            "rbps" => io.rbps = Some(val),
            "wbps" => io.wbps = Some(val),
            "riops" => io.riops = Some(val),
            "wiops" => io.wiops = Some(val),
            _ => return Err(b(format!("unknown key {k:?} (rbps, wbps, riops, wiops)"))),
        }
    }
    Ok(io)
}

// --- OCI runtime config: linux.resources --------------------------------------------------------------

#[derive(Deserialize, Default)]
struct OciConfig {
    #[serde(default)]
    linux: Option<OciLinux>,
}

#[derive(Deserialize, Default)]
struct OciLinux {
    #[serde(default)]
    resources: Option<OciResources>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct OciResources {
    memory: Option<OciMemory>,
    cpu: Option<OciCpu>,
    pids: Option<OciPids>,
    #[serde(rename = "blockIO")]
    block_io: Option<OciBlockIo>,
    unified: Option<BTreeMap<String, String>>,
    /// Read entry by entry (serde_json values), so a bad one is named by its index.
    devices: Option<Vec<serde_json::Value>>,
}

#[derive(Deserialize, Default)]
struct OciMemory {
    limit: Option<i64>,
    reservation: Option<i64>,
    swap: Option<i64>,
}

#[derive(Deserialize, Default)]
struct OciCpu {
    shares: Option<u64>,
    quota: Option<i64>,
    period: Option<u64>,
    cpus: Option<String>,
    mems: Option<String>,
}

#[derive(Deserialize, Default)]
struct OciPids {
    limit: Option<i64>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct OciBlockIo {
    weight: Option<u64>,
    #[serde(default)]
    throttle_read_bps_device: Vec<OciThrottle>,
    #[serde(default)]
    throttle_write_bps_device: Vec<OciThrottle>,
    #[serde(default, rename = "throttleReadIOPSDevice")]
    throttle_read_iops_device: Vec<OciThrottle>,
    #[serde(default, rename = "throttleWriteIOPSDevice")]
    throttle_write_iops_device: Vec<OciThrottle>,
}

/// Which field of an [`IoMax`] an OCI throttle list sets.
type SetThrottle = fn(&mut IoMax, Limit);

#[derive(Deserialize)]
struct OciThrottle {
    major: u64,
    minor: u64,
    rate: u64,
}

/// OCI limits: a positive value, -1 for unlimited; 0 or absent means "not set".
fn oci_limit(field: &str, v: Option<i64>) -> Result<Option<Limit>> {
    match v {
        None | Some(0) => Ok(None),
        Some(-1) => Ok(Some(Limit::Max)),
        Some(n) if n > 0 => Ok(Some(Limit::Value(n as u64))),
        Some(n) => Err(Error::bad("oci", field, format!("{n} is negative"))),
    }
}

/// `linux.resources.devices`: each entry `{allow, type, major, minor, access}` checked, then the ordered
/// list reduced to the allow list it means ([`devices::reduce`]). None for an absent or empty list.
fn oci_devices(list: &[serde_json::Value]) -> Result<Option<Vec<devices::Rule>>> {
    let at = |i: usize| format!("linux.resources.devices[{i}]");
    let mut entries = Vec::new();
    for (i, v) in list.iter().enumerate() {
        let b = |r: String| Error::bad("oci", at(i), r);
        let o = v.as_object().ok_or_else(|| b(format!("{v} is not an object")))?;
        let field = |k: &str| o.get(k).filter(|v| !v.is_null());
        let allow = match field("allow") {
            Some(serde_json::Value::Bool(a)) => *a,
            Some(v) => return Err(b(format!("allow {v} is not true or false"))),
            None => return Err(b("allow is missing (true or false)".into())),
        };
        let kind = match field("type").map(|t| t.as_str().ok_or(t)) {
            None | Some(Ok("a")) => devices::Kind::All,
            Some(Ok("c")) => devices::Kind::Char,
            Some(Ok("b")) => devices::Kind::Block,
            Some(Ok(t)) => return Err(b(format!("type {t:?}: must be a, c or b"))),
            Some(Err(t)) => return Err(b(format!("type {t}: must be \"a\", \"c\" or \"b\""))),
        };
        // The kernel's dev_t: 12 bits of major, 20 of minor; -1 (or absent) is any.
        let num = |k: &str, max: i64| -> Result<Option<u32>> {
            match field(k).map(|n| n.as_i64().ok_or(n)) {
                None | Some(Ok(-1)) => Ok(None),
                Some(Ok(n)) if (0..=max).contains(&n) => Ok(Some(n as u32)),
                Some(Ok(n)) if n < 0 => Err(b(format!("{k} {n} is negative (-1 means any)"))),
                Some(Ok(n)) => Err(b(format!("{k} {n} is above {max}: no such device number"))),
                Some(Err(n)) => Err(b(format!("{k} {n} is not an integer"))),
            }
        };
        let (major, minor) = (num("major", 0xfff)?, num("minor", 0xf_ffff)?);
        let access = match field("access").map(|a| a.as_str().ok_or(a)) {
            None => "rwm",
            Some(Ok(a)) => a,
            Some(Err(a)) => return Err(b(format!("access {a} is not a string"))),
        };
        let access = devices::parse_access(access).map_err(b)?;
        entries.push(devices::Entry { allow, rule: devices::Rule { kind, major, minor, access } });
    }
    devices::reduce(&entries).map_err(|(i, r)| Error::bad("oci", at(i), r))
}

/// Largest OCI config read: real ones are a few KiB; `--oci /dev/zero` must fail, not eat all memory.
const OCI_MAX_BYTES: u64 = 4 << 20;

fn read_config(path: &Path) -> Result<String> {
    use std::io::Read;
    let f = std::fs::File::open(path).map_err(|e| Error::sys("oci", path.display(), e))?;
    let mut text = String::new();
    f.take(OCI_MAX_BYTES + 1).read_to_string(&mut text).map_err(|e| Error::sys("oci", path.display(), e))?;
    if text.len() as u64 > OCI_MAX_BYTES {
        return Err(Error::bad("oci", path.display(), format!("larger than {} MiB", OCI_MAX_BYTES >> 20)));
    }
    Ok(text)
}

/// `linux.resources` of an OCI runtime config, before flags and cross-field rules ([`Limits::parse`]).
pub fn from_oci(path: &Path) -> Result<Limits> {
    let text = read_config(path)?;
    let cfg: OciConfig = serde_json::from_str(&text)
        .map_err(|e| Error::bad("oci", path.display(), format!("not an OCI config: {e}")))?;
    let r = cfg.linux.and_then(|l| l.resources).unwrap_or_default();
    let mut l = Limits::default();
    if let Some(m) = r.memory {
        let (limit, reservation) = ("linux.resources.memory.limit", "linux.resources.memory.reservation");
        l.memory = min_memory(oci_limit(limit, m.limit)?, "limit", |r| Error::bad("oci", limit, r))?;
        l.memory_reservation =
            min_memory(oci_limit(reservation, m.reservation)?, "reservation", |r| Error::bad("oci", reservation, r))?;
        l.memory_swap = oci_limit("linux.resources.memory.swap", m.swap)?;
        l.memory_swap_explicit = l.memory_swap.is_some();
    }
    if let Some(c) = r.cpu {
        if let Some(s) = c.shares.filter(|&s| s != 0) {
            if !(2..=262_144).contains(&s) {
                return Err(Error::bad("oci", "linux.resources.cpu.shares", format!("{s} is out of range 2..=262144")));
            }
            l.cpu_shares = Some(s);
        }
        l.cpu_quota = match c.quota {
            None | Some(0) => None,
            Some(q) if q < 0 => Some(Limit::Max),
            Some(q) if q < 1000 => {
                return Err(Error::bad("oci", "linux.resources.cpu.quota", format!("{q} is below 1000 µs")))
            }
            Some(q) => Some(Limit::Value(q as u64)),
        };
        if let Some(p) = c.period.filter(|&p| p != 0) {
            if !(1000..=1_000_000).contains(&p) {
                return Err(Error::bad("oci", "linux.resources.cpu.period", format!("{p} is out of range")));
            }
            l.cpu_period = Some(p);
        }
        if let Some(cpus) = c.cpus.filter(|s| !s.is_empty()) {
            l.cpuset_cpus =
                Some(convert::parse_id_list(&cpus).map_err(|r| Error::bad("oci", "linux.resources.cpu.cpus", r))?);
        }
        if let Some(mems) = c.mems.filter(|s| !s.is_empty()) {
            l.cpuset_mems =
                Some(convert::parse_id_list(&mems).map_err(|r| Error::bad("oci", "linux.resources.cpu.mems", r))?);
        }
    }
    if let Some(p) = r.pids {
        l.pids = match p.limit {
            None => None,
            Some(n) if n <= 0 => Some(Limit::Max),
            Some(n) => Some(Limit::Value(n as u64)),
        };
    }
    if let Some(b) = r.block_io {
        if let Some(w) = b.weight.filter(|&w| w != 0) {
            if !(10..=1000).contains(&w) {
                return Err(Error::bad(
                    "oci",
                    "linux.resources.blockIO.weight",
                    format!("{w} is out of range 10..=1000"),
                ));
            }
            l.io_weight = Some(w);
        }
        let lim = |r: u64| if r == 0 { Limit::Max } else { Limit::Value(r) };
        let lists: [(&Vec<OciThrottle>, SetThrottle); 4] = [
            (&b.throttle_read_bps_device, |d, v| d.rbps = Some(v)),
            (&b.throttle_write_bps_device, |d, v| d.wbps = Some(v)),
            (&b.throttle_read_iops_device, |d, v| d.riops = Some(v)),
            (&b.throttle_write_iops_device, |d, v| d.wiops = Some(v)),
        ];
        for (list, set) in lists {
            for t in list {
                let i = match l.io_max.iter().position(|d| d.major == t.major && d.minor == t.minor) {
                    Some(i) => i,
                    None => {
                        l.io_max.push(IoMax { major: t.major, minor: t.minor, ..Default::default() });
                        l.io_max.len() - 1
                    }
                };
                set(&mut l.io_max[i], lim(t.rate));
            }
        }
    }
    if let Some(u) = r.unified {
        for (k, v) in u {
            // A file name in the cgroup directory: `controller.knob`, never a path.
            if k.contains('/')
                || k.starts_with('.')
                || !k.contains('.')
                || k.starts_with("cgroup.") && k != "cgroup.freeze"
            {
                return Err(Error::bad("oci", format!("linux.resources.unified.{k}"), "not a controller file name"));
            }
            l.unified.insert(k, v);
        }
    }
    if let Some(list) = r.devices {
        l.devices = oci_devices(&list)?;
    }
    // No `finish` here: Docker's implied memory+swap (twice the memory) must be derived after flags
    // override the file, or `--memory 100M` over a file's 10M limit keeps a 20M memory+swap and fails.
    Ok(l)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_swap_default_is_twice_memory() {
        let l = Limits::parse(&RawLimits { memory: Some("50M".into()), ..Default::default() }).unwrap();
        assert_eq!(l.memory_swap, Some(Limit::Value(100 << 20)));
        assert!(!l.memory_swap_explicit);
    }

    #[test]
    fn cpus_become_quota() {
        let l = Limits::parse(&RawLimits { cpus: Some("1.5".into()), ..Default::default() }).unwrap();
        assert_eq!(l.cpu_quota, Some(Limit::Value(150_000)));
        assert_eq!(l.cpu_period, Some(100_000));
        let e =
            Limits::parse(&RawLimits { cpus: Some("1".into()), cpu_quota: Some("5000".into()), ..Default::default() });
        assert!(e.is_err());
    }

    #[test]
    fn bad_values() {
        for raw in [
            RawLimits { memory: Some("5q".into()), ..Default::default() },
            RawLimits { memory: Some("-5".into()), ..Default::default() },
            RawLimits { pids: Some("0".into()), ..Default::default() },
            RawLimits { cpus: Some("x".into()), ..Default::default() },
            RawLimits { cpus: Some("inf".into()), ..Default::default() },
            RawLimits { memory: Some("1".into()), ..Default::default() },
            RawLimits { memory: Some("6143k".into()), ..Default::default() },
            RawLimits { memory_reservation: Some("1.5".into()), ..Default::default() },
            RawLimits { cpu_shares: Some("1".into()), ..Default::default() },
            RawLimits { memory: Some("10M".into()), memory_swap: Some("5M".into()), ..Default::default() },
            RawLimits { memory_swap: Some("5M".into()), ..Default::default() },
            RawLimits { io_max: vec!["8:0:rbps=0".into()], ..Default::default() },
            RawLimits { io_max: vec!["8:0:xbps=1".into()], ..Default::default() },
        ] {
            assert!(Limits::parse(&raw).is_err(), "{raw:?}");
        }
    }

    #[test]
    fn flags_override_oci_memory_before_swap_is_implied() {
        let dir = std::env::temp_dir().join(format!("cbuild-cgroup-oci-mem-{}", std::process::id()));
        std::fs::write(&dir, r#"{"linux":{"resources":{"memory":{"limit":10485760}}}}"#).unwrap();
        let oci = Some(dir.display().to_string());
        let from_file = Limits::parse(&RawLimits { oci: oci.clone(), ..Default::default() });
        let flagged = Limits::parse(&RawLimits { oci, memory: Some("100M".into()), ..Default::default() });
        std::fs::remove_file(&dir).unwrap();
        assert_eq!(from_file.unwrap().memory_swap, Some(Limit::Value(20 << 20)));
        let l = flagged.unwrap();
        assert_eq!(l.memory, Some(Limit::Value(100 << 20)));
        assert_eq!(l.memory_swap, Some(Limit::Value(200 << 20)), "implied from the flag, not the file");
    }

    #[test]
    fn oci_devices_and_the_flags_over_them() {
        let v: serde_json::Value = serde_json::from_str(
            r#"[{"allow":false,"access":"rwm"},{"allow":true,"type":"c","major":1,"minor":3,"access":"rwm"},
                {"allow":true,"type":"c","major":136,"minor":-1,"access":"rw"},{"allow":true,"type":"b"}]"#,
        )
        .unwrap();
        let rules = oci_devices(v.as_array().unwrap()).unwrap().unwrap();
        let text: Vec<String> = rules.iter().map(|r| r.to_string()).collect();
        assert_eq!(text, ["c 1:3 rwm", "c 136:* rw", "b *:* rwm"]);
        assert_eq!(oci_devices(&[]).unwrap(), None);
        for (bad, needle) in [
            (r#"{"allow":true,"type":"x"}"#, "type \"x\""),
            (r#"{"allow":true,"access":"q"}"#, "access \"q\""),
            (r#"{"allow":true,"access":""}"#, "empty access"),
            (r#"{"allow":true,"major":-2}"#, "negative"),
            (r#"{"allow":true,"minor":1048576}"#, "no such device number"),
            (r#"{"allow":true,"major":1.5}"#, "not an integer"),
            (r#"{"allow":"yes"}"#, "true or false"),
            (r#"{"access":"rwm"}"#, "allow is missing"),
            (r#""c 1:3 rwm""#, "not an object"),
        ] {
            let list: serde_json::Value = serde_json::from_str(&format!(r#"[{{"allow":false}},{bad}]"#)).unwrap();
            let e = oci_devices(list.as_array().unwrap()).unwrap_err().to_string();
            assert!(e.starts_with("oci: linux.resources.devices[1]: ") && e.contains(needle), "{bad}: {e}");
        }
        let first: serde_json::Value =
            serde_json::from_str(r#"[{"allow":true,"type":"c","major":1,"minor":3}]"#).unwrap();
        let e = oci_devices(first.as_array().unwrap()).unwrap_err().to_string();
        assert!(e.starts_with("oci: linux.resources.devices[0]: allow c 1:3 rwm before any deny-all"), "{e}");
        // --device-cgroup-rule adds to the file's list; --devices replaces it.
        let dir = std::env::temp_dir().join(format!("cbuild-cgroup-oci-dev-{}", std::process::id()));
        std::fs::write(
            &dir,
            r#"{"linux":{"resources":{"devices":[{"allow":false,"access":"rwm"},{"allow":true,"type":"c","major":1,"minor":3}]}}}"#,
        )
        .unwrap();
        let oci = Some(dir.display().to_string());
        let with = |devices: Option<&str>, rules: &[&str]| {
            Limits::parse(&RawLimits {
                oci: oci.clone(),
                devices: devices.map(String::from),
                device_rules: rules.iter().map(|r| r.to_string()).collect(),
                ..Default::default()
            })
            .map(|l| l.devices.unwrap().iter().map(|r| r.to_string()).collect::<Vec<_>>())
        };
        let (file, added, docker) = (with(None, &[]), with(None, &["c 1:5 r"]), with(Some("docker"), &[]));
        let all = with(Some("all"), &[]);
        std::fs::remove_file(&dir).unwrap();
        assert_eq!(file.unwrap(), ["c 1:3 rwm"]);
        assert_eq!(added.unwrap(), ["c 1:3 rwm", "c 1:5 r"]);
        assert_eq!(docker.unwrap().len(), devices::DOCKER.len());
        assert_eq!(all.unwrap(), ["a *:* rwm"]);
    }

    #[test]
    fn io_max_spec() {
        let io = parse_io_max("8:16:rbps=1m,wiops=100").unwrap();
        assert_eq!((io.major, io.minor), (8, 16));
        assert_eq!(io.rbps, Some(Limit::Value(1 << 20)));
        assert_eq!(io.wiops, Some(Limit::Value(100)));
        assert_eq!(io.wbps, None);
    }

    #[test]
    fn oci_resources() {
        let dir = std::env::temp_dir().join(format!("cbuild-cgroup-oci-{}", std::process::id()));
        std::fs::write(
            &dir,
            r#"{"ociVersion":"1.0.2","linux":{"resources":{"memory":{"limit":52428800,"swap":104857600},
            "cpu":{"shares":512,"quota":20000,"period":100000,"cpus":"0"},"pids":{"limit":20},
            "blockIO":{"weight":500,"throttleReadBpsDevice":[{"major":8,"minor":0,"rate":1048576}]},
            "unified":{"memory.high":"40000000"}}}}"#,
        )
        .unwrap();
        let l = from_oci(&dir).unwrap();
        std::fs::remove_file(&dir).unwrap();
        assert_eq!(l.memory, Some(Limit::Value(52_428_800)));
        assert_eq!(l.memory_swap, Some(Limit::Value(104_857_600)));
        assert_eq!(l.cpu_shares, Some(512));
        assert_eq!(l.cpu_quota, Some(Limit::Value(20_000)));
        assert_eq!(l.cpuset_cpus, Some(vec![0]));
        assert_eq!(l.pids, Some(Limit::Value(20)));
        assert_eq!(l.io_weight, Some(500));
        assert_eq!(l.io_max[0].rbps, Some(Limit::Value(1 << 20)));
        assert_eq!(l.unified.get("memory.high").map(String::as_str), Some("40000000"));
    }
}
