//! Resource limits: Docker's flags (as strings from the CLI) or an OCI config's `linux.resources`,
//! parsed and checked *before* anything is created, so bad input never leaves a half-made cgroup.

use crate::controllers::{cpu, devices, hugetlb};
use crate::convert::{self, Limit};
use crate::error::{Error, Result};
use crate::fsutil;
use crate::layout::{Host, Layout};
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
    /// Docker's v1-only flags (the OCI fields of the same meaning).
    pub memory_swappiness: Option<String>,
    pub oom_kill_disable: bool,
    pub cpu_rt_period: Option<String>,
    pub cpu_rt_runtime: Option<String>,
    /// runc update's: SCHED_IDLE for the group (0 or 1), and the CFS burst in µs.
    pub cpu_idle: Option<String>,
    pub cpu_burst: Option<String>,
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
    /// What an error names the entry by: `--io-max` and its value as typed (`/dev/vda:rbps=1m`,
    /// `008:0:…`, not the MAJ:MIN it became), or the OCI list that first named the device.
    pub given: String,
    pub rbps: Option<Limit>,
    pub wbps: Option<Limit>,
    pub riops: Option<Limit>,
    pub wiops: Option<Limit>,
}

/// One `linux.resources.blockIO.weightDevice` entry: a block device's own weight and CFQ's leaf weight,
/// both on the 10..1000 scale of Docker's `--blkio-weight` (None: not set here).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WeightDevice {
    pub major: u64,
    pub minor: u64,
    pub weight: Option<u64>,
    pub leaf_weight: Option<u64>,
}

/// One `linux.resources.rdma` entry: an RDMA device's limits (None: not limited by this entry).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rdma {
    pub hca_handles: Option<u32>,
    pub hca_objects: Option<u32>,
}

/// Validated limits; `None` means "leave as is".
#[derive(Debug, Clone, Default)]
pub struct Limits {
    pub memory: Option<Limit>,
    /// Docker's memory+swap.
    pub memory_swap: Option<Limit>,
    /// Whether memory_swap was asked for (an implied one is skipped on a kernel without swap accounting).
    pub memory_swap_explicit: bool,
    /// The memory limit came from `--memory`: Docker's memory+swap of twice the memory applies when no
    /// swap is given. Not to an OCI config's limit: its runtime (runc) leaves the swap alone then, as a
    /// config from Docker carries the swap Docker worked out.
    pub memory_from_flag: bool,
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
    /// OCI `hugepageLimits`: page size as the kernel names it (`2MB`, `1GB`, `64KB`) → bytes.
    pub hugetlb: BTreeMap<String, u64>,
    /// OCI `memory.swappiness`, 0..=100 (v1 only).
    pub swappiness: Option<u64>,
    /// OCI `memory.disableOOMKiller` (v1 only).
    pub oom_kill_disable: bool,
    /// OCI `blockIO.leafWeight` (CFQ's, v1 only).
    pub io_leaf_weight: Option<u64>,
    /// OCI `blockIO.weightDevice`.
    pub io_weight_device: Vec<WeightDevice>,
    /// OCI `rdma`: device name → limits.
    pub rdma: BTreeMap<String, Rdma>,
    /// OCI `cpu.realtimePeriod`, µs (v1 with RT group scheduling only).
    pub cpu_rt_period: Option<u64>,
    /// OCI `cpu.realtimeRuntime`, µs per period; -1 for no limit.
    pub cpu_rt_runtime: Option<i64>,
    /// OCI `cpu.idle`: 1 puts the group's tasks under SCHED_IDLE (it runs only when nothing else wants
    /// the CPU), 0 undoes it (kernel ≥ 5.15).
    pub cpu_idle: Option<u64>,
    /// OCI `cpu.burst`, µs: quota left unused in earlier periods that a period may spend beyond its
    /// own (kernel ≥ 5.14); at most the quota.
    pub cpu_burst: Option<u64>,
    /// Device nodes allowed (all others denied); None leaves the device policy alone.
    pub devices: Option<Vec<devices::Rule>>,
    /// OCI `network.classID` (v1 `net_cls.classid`; 0 leaves it alone, as runc does).
    pub net_classid: Option<u32>,
    /// OCI `network.priorities`: interface → priority (v1 `net_prio.ifpriomap`), a later entry for the
    /// same interface replacing an earlier one.
    pub net_priorities: Vec<(String, u32)>,
    /// OCI field (`memory.swappiness`, ...) → the flag that set it, for errors that name what was given.
    pub flagged: BTreeMap<&'static str, &'static str>,
    /// Flag → its value as typed: an error shows what the user gave (`1g`, `1e308`), not the number it
    /// became (bytes, or a float printed digit by digit).
    pub typed: BTreeMap<&'static str, String>,
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
    let range = || bad(flag, s, format!("out of range {min}..={max}"));
    // An integer too long for any type is still an integer, and out of range.
    let n: i128 = s.trim().parse().map_err(|e: std::num::ParseIntError| match e.kind() {
        std::num::IntErrorKind::PosOverflow | std::num::IntErrorKind::NegOverflow => range(),
        _ => bad(flag, s, "not an integer"),
    })?;
    if n < i128::from(min) || n > i128::from(max) {
        return Err(range());
    }
    Ok(Some(n as u64))
}

impl Limits {
    /// What an error names for an OCI field (`cpu.idle`): the flag that set it, else the field's path.
    pub fn field(&self, f: &str) -> String {
        self.flagged.get(f).map_or_else(|| format!("linux.resources.{f}"), |flag| flag.to_string())
    }

    /// What an error names for an OCI field and its value: the flag that set it with the value as typed,
    /// else the field's path with the file's `value`.
    pub fn given(&self, f: &str, value: impl std::fmt::Display) -> String {
        match self.flagged.get(f).and_then(|flag| self.typed.get(flag).map(|t| (flag, t))) {
            Some((flag, t)) => format!("{flag} {t}"),
            None => format!("{} {value}", self.field(f)),
        }
    }

    /// Record that `flag`, typed as `value`, set the OCI field `f`.
    fn flag(&mut self, f: &'static str, flag: &'static str, value: &str) {
        self.flagged.insert(f, flag);
        self.typed.insert(flag, value.to_string());
    }

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
            && self.hugetlb.is_empty()
            && self.swappiness.is_none()
            && !self.oom_kill_disable
            && self.io_leaf_weight.is_none()
            && self.io_weight_device.is_empty()
            && self.rdma.is_empty()
            && self.cpu_rt_period.is_none()
            && self.cpu_rt_runtime.is_none()
            && self.cpu_idle.is_none()
            && self.cpu_burst.is_none()
            && self.net_classid.is_none()
            && self.net_priorities.is_empty()
    }

    /// Parse the flags (and the OCI file, which flags override). Pure: no host state is consulted.
    pub fn parse(raw: &RawLimits) -> Result<Limits> {
        let mut l = match &raw.oci {
            Some(path) => from_oci(Path::new(path))?,
            None => Limits::default(),
        };
        let memory = size("--memory", &raw.memory)?;
        let typed = |v: &Option<String>| v.as_deref().unwrap_or("").to_string();
        if let Some(m) = min_memory(memory, "limit", |r| bad("--memory", &typed(&raw.memory), r))? {
            l.memory = Some(m);
            l.memory_from_flag = true;
            l.flag("memory.limit", "--memory", &typed(&raw.memory));
        }
        if let Some(s) = size("--memory-swap", &raw.memory_swap)? {
            l.memory_swap = Some(s);
            l.memory_swap_explicit = true;
            l.flag("memory.swap", "--memory-swap", &typed(&raw.memory_swap));
        }
        let reservation = size("--memory-reservation", &raw.memory_reservation)?;
        let flag = typed(&raw.memory_reservation);
        if let Some(r) = min_memory(reservation, "reservation", |r| bad("--memory-reservation", &flag, r))? {
            l.memory_reservation = Some(r);
            l.flag("memory.reservation", "--memory-reservation", &flag);
        }
        if let Some(p) = int("--cpu-period", &raw.cpu_period, 1000, 1_000_000)? {
            l.cpu_period = Some(p);
        }
        if let Some(q) = raw.cpu_quota.as_deref() {
            l.cpu_quota = Some(match q.trim() {
                "-1" | "max" => Limit::Max,
                _ => Limit::Value(int("--cpu-quota", &raw.cpu_quota, 1000, cpu::MAX_QUOTA_US)?.unwrap_or(0)),
            });
            l.flag("cpu.quota", "--cpu-quota", q);
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
            l.flag("cpu.quota", "--cpus", c);
            l.cpu_period = Some(period);
            l.cpu_quota = Some(Limit::Value(convert::cpus_to_quota(cpus, period)));
        }
        if let Some(s) = int("--cpu-shares", &raw.cpu_shares, 2, 262_144)? {
            l.cpu_shares = Some(s);
            l.cpu_weight = None;
        }
        if let Some(w) = int("--cpu-weight", &raw.cpu_weight, 1, 10_000)? {
            if raw.cpu_shares.is_some() {
                return Err(bad("--cpu-weight", &typed(&raw.cpu_weight), "conflicts with --cpu-shares (give one)"));
            }
            l.cpu_weight = Some(w);
            l.cpu_shares = None;
        }
        if let Some(c) = raw.cpuset_cpus.as_deref() {
            l.cpuset_cpus = Some(convert::parse_id_list(c).map_err(|r| bad("--cpuset-cpus", c, r))?);
            l.flag("cpu.cpus", "--cpuset-cpus", c);
        }
        if let Some(m) = raw.cpuset_mems.as_deref() {
            l.cpuset_mems = Some(convert::parse_id_list(m).map_err(|r| bad("--cpuset-mems", m, r))?);
            l.flag("cpu.mems", "--cpuset-mems", m);
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
        let mut io_flagged = Vec::new();
        for spec in &raw.io_max {
            let io = parse_io_max(spec)?;
            io_flagged.push(format!("{}:{}", io.major, io.minor));
            l.io_max.push(io);
        }
        l.oom_group |= raw.oom_group;
        // Docker's -1: the host's swappiness (nothing written).
        if raw.memory_swappiness.as_deref().is_some_and(|s| s.trim() != "-1") {
            l.swappiness = int("--memory-swappiness", &raw.memory_swappiness, 0, 100)?;
            l.flagged.insert("memory.swappiness", "--memory-swappiness");
        }
        if raw.oom_kill_disable {
            l.oom_kill_disable = true;
            l.flagged.insert("memory.disableOOMKiller", "--oom-kill-disable");
        }
        if let Some(p) = int("--cpu-rt-period", &raw.cpu_rt_period, 1, 1_000_000_000)? {
            l.cpu_rt_period = Some(p);
            l.flagged.insert("cpu.realtimePeriod", "--cpu-rt-period");
        }
        if let Some(r) = raw.cpu_rt_runtime.as_deref() {
            l.cpu_rt_runtime = Some(match r.trim() {
                "-1" => -1,
                _ => int("--cpu-rt-runtime", &raw.cpu_rt_runtime, 0, 1_000_000_000)?.unwrap_or(0) as i64,
            });
            l.flagged.insert("cpu.realtimeRuntime", "--cpu-rt-runtime");
        }
        if let Some(i) = int("--cpu-idle", &raw.cpu_idle, 0, 1)? {
            l.cpu_idle = Some(i);
            l.flagged.insert("cpu.idle", "--cpu-idle");
        }
        if let Some(b) = int("--cpu-burst", &raw.cpu_burst, 0, cpu::MAX_BURST_US)? {
            l.cpu_burst = Some(b);
            l.flag("cpu.burst", "--cpu-burst", &typed(&raw.cpu_burst));
        }
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
        l.flags_over_unified(raw, io_flagged);
        l.finish()?;
        Ok(l)
    }

    /// A flag beats the OCI file's `unified` entry for the file it sets, as it beats the file's other
    /// fields: `unified` is written last (so within the file it beats the structured fields, as in
    /// runc), and without this a file's `pids.max` would quietly undo `--pids` on a v2 host. Only what a
    /// flag sets counts; what one implies (Docker's memory+swap of twice `--memory`) yields to the file.
    fn flags_over_unified(&mut self, raw: &RawLimits, io_flagged: Vec<String>) {
        if self.unified.is_empty() {
            return;
        }
        let set = |o: &Option<String>| o.is_some();
        let whole = [
            (set(&raw.memory), "memory.max"),
            (set(&raw.memory_swap), "memory.swap.max"),
            (set(&raw.memory_reservation), "memory.low"),
            (set(&raw.cpus) || set(&raw.cpu_period) || set(&raw.cpu_quota), "cpu.max"),
            (set(&raw.cpu_shares) || set(&raw.cpu_weight), "cpu.weight"),
            (set(&raw.cpuset_cpus), "cpuset.cpus"),
            (set(&raw.cpuset_mems), "cpuset.mems"),
            (set(&raw.pids), "pids.max"),
            (raw.oom_group, "memory.oom.group"),
            (set(&raw.cpu_idle), "cpu.idle"),
            (set(&raw.cpu_burst), "cpu.max.burst"),
        ];
        for (given, key) in whole {
            if given {
                self.unified.remove(key);
            }
        }
        // Files holding a line per device: the flag takes only the lines it sets (`--io-weight` the
        // default weight, `--io-max` its devices' throttles), the file keeps the others.
        let mut keyed = vec![("io.max", io_flagged)];
        if raw.io_weight.is_some() {
            keyed.extend(["io.weight", "io.bfq.weight"].map(|k| (k, vec!["default".to_string()])));
        }
        for (key, keys) in keyed {
            let Some(v) = self.unified.get(key).filter(|_| !keys.is_empty()) else { continue };
            let kept: Vec<&str> = v
                .lines()
                .filter(|line| {
                    let first = line.split_whitespace().next().unwrap_or_default();
                    // A bare number in a weight file is its default weight.
                    let first = if first.contains(':') || key == "io.max" { first } else { "default" };
                    !line.trim().is_empty() && !keys.iter().any(|k| k == first)
                })
                .collect();
            if kept.is_empty() {
                self.unified.remove(key);
            } else {
                let kept = kept.join("\n");
                self.unified.insert(key.to_string(), kept);
            }
        }
    }

    /// Cross-field rules and Docker's defaults.
    fn finish(&mut self) -> Result<()> {
        if let (Some(Limit::Value(r)), Some(Limit::Value(m))) = (self.memory_reservation, self.memory) {
            if r > m {
                let memory = self.given("memory.limit", m);
                return Err(Error::bad("limits", self.given("memory.reservation", r), format!("is above {memory}")));
            }
        }
        match (self.memory, self.memory_swap) {
            // Docker: --memory without --memory-swap allows as much swap as memory (memory+swap = 2×).
            (Some(Limit::Value(m)), None) if self.memory_from_flag => {
                self.memory_swap = Some(Limit::Value(m.saturating_mul(2)))
            }
            (Some(Limit::Max), None) => self.memory_swap = Some(Limit::Max),
            (Some(m), Some(s)) => {
                convert::memsw_to_swap(m, s).map_err(|e| {
                    let memory = self.given("memory.limit", m.v2());
                    Error::bad("limits", self.given("memory.swap", s.v2()), e.reason(&memory))
                })?;
            }
            (None, Some(Limit::Value(s))) => {
                return Err(Error::bad(
                    "limits",
                    self.given("memory.swap", s),
                    "needs a memory limit (--memory; it counts memory + swap)",
                ))
            }
            _ => {}
        }
        // The kernel's bounds on quota and burst (v1 and v2 alike), and its refusal of any weight for an
        // idle group: said before anything is made rather than after.
        // (`--cpus` is held to the CPU count in `check`, with Docker's message.)
        let too_large = |q: &Limit| q.value() > Some(cpu::MAX_QUOTA_US) && self.cpus.is_none();
        if let Some(Limit::Value(q)) = self.cpu_quota.filter(too_large) {
            return Err(Error::bad(
                "limits",
                self.given("cpu.quota", q),
                format!("is above the kernel's largest quota ({} µs)", cpu::MAX_QUOTA_US),
            ));
        }
        if let Some(b) = self.cpu_burst {
            let quota = self.cpu_quota.and_then(Limit::value);
            // The quota as given, and in µs where it was given as CPUs.
            let of = |q: u64| match self.cpus {
                Some(_) => format!("{} ({q} µs)", self.given("cpu.quota", q)),
                None => self.given("cpu.quota", q),
            };
            let why = match quota {
                Some(q) if b > q => Some(format!("is above the quota of {}", of(q))),
                Some(q) if b.saturating_add(q) > cpu::MAX_QUOTA_US => Some(format!(
                    "with the quota of {} it is above the kernel's largest quota + burst ({} µs)",
                    of(q),
                    cpu::MAX_QUOTA_US
                )),
                _ if b > cpu::MAX_BURST_US => {
                    Some(format!("is above the kernel's largest burst ({} µs)", cpu::MAX_BURST_US))
                }
                _ => None,
            };
            if let Some(why) = why {
                return Err(Error::bad("limits", self.given("cpu.burst", b), why));
            }
        }
        if self.cpu_idle == Some(1) && (self.cpu_shares.is_some() || self.cpu_weight.is_some()) {
            return Err(Error::bad(
                "limits",
                format!("{} 1", self.field("cpu.idle")),
                "conflicts with a CPU weight (an idle group has the kernel's lowest, and takes no other)",
            ));
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
                    self.typed.get("--cpus").map_or("", String::as_str),
                    format!("range of CPUs is from 0.01 to {online}, as there are only {online} CPUs available"),
                ));
            }
        }
        for (ids, f, v1file, v2file) in [
            (&self.cpuset_cpus, "cpu.cpus", "cpuset.effective_cpus", "cpuset.cpus.effective"),
            (&self.cpuset_mems, "cpu.mems", "cpuset.effective_mems", "cpuset.mems.effective"),
        ] {
            let Some(ids) = ids else { continue };
            let Some(i) = host.hierarchy_of("cpuset") else { continue };
            let h = &host.hierarchies[i];
            let file = h.base.join(if h.version == 2 { v2file } else { v1file });
            let allowed = fsutil::read(&file)?;
            let allowed = convert::parse_id_list(allowed.trim()).unwrap_or_default();
            if let Some(bad_id) = ids.iter().find(|id| !allowed.contains(id)) {
                return Err(Error::bad(
                    "limits",
                    self.given(f, convert::format_id_list(ids)),
                    format!("{bad_id} is outside the allowed set {}", convert::format_id_list(&allowed)),
                ));
            }
        }
        for io in &self.io_max {
            let dev = format!("/sys/dev/block/{}:{}", io.major, io.minor);
            if !Path::new(&dev).exists() {
                return Err(Error::bad("limits", &io.given, "no such block device"));
            }
        }
        self.check_oci_only(host)
    }

    /// The OCI fields no flag sets (runc's others): each is applied where this host has a file for it,
    /// and refused here, before anything is made, where it certainly has none. Whether a file only
    /// non-root cgroups show exists (BFQ's weights) is known only once NAME is made: `apply` says so then.
    fn check_oci_only(&self, host: &Host) -> Result<()> {
        let field = |f: &str| self.field(f);
        // The hierarchy of a controller, or an error naming the field that needs it.
        let hierarchy = |ctrl: &str, f: &str| {
            let alias = if ctrl == "io" { "blkio" } else { ctrl };
            host.hierarchy_of(ctrl)
                .or_else(|| host.hierarchy_of(alias))
                .map(|i| &host.hierarchies[i])
                .ok_or_else(|| Error::bad("limits", field(f), format!("the host has no {ctrl} controller available")))
        };
        let v1_only = |ctrl: &str, f: &str, what: &str| -> Result<&crate::layout::Hierarchy> {
            let h = hierarchy(ctrl, f)?;
            if h.version == 2 {
                return Err(Error::bad(
                    "limits",
                    field(f),
                    format!("cgroup v2 has no {what} (the {ctrl} controller is on cgroup v2 here)"),
                ));
            }
            Ok(h)
        };
        if !self.hugetlb.is_empty() {
            hierarchy("hugetlb", "hugepageLimits")?;
            let sizes = hugetlb::host_sizes();
            if let Some(size) = self.hugetlb.keys().find(|s| !sizes.contains(s)) {
                let have = if sizes.is_empty() { "none".to_string() } else { sizes.join(", ") };
                return Err(Error::bad(
                    "limits",
                    format!("{} {size}", field("hugepageLimits")),
                    format!("not a huge page size of this host (it has {have})"),
                ));
            }
        }
        if self.swappiness.is_some() {
            v1_only("memory", "memory.swappiness", "swappiness")?;
        }
        if self.oom_kill_disable {
            v1_only("memory", "memory.disableOOMKiller", "switch for the OOM killer")?;
        }
        if self.cpu_rt_period.is_some() || self.cpu_rt_runtime.is_some() {
            let f = if self.cpu_rt_runtime.is_some() { "cpu.realtimeRuntime" } else { "cpu.realtimePeriod" };
            let h = v1_only("cpu", f, "real-time group scheduling")?;
            if !h.base.join("cpu.rt_runtime_us").exists() {
                return Err(Error::bad(
                    "limits",
                    field(f),
                    "this kernel has no real-time group scheduling (CONFIG_RT_GROUP_SCHED: cpu.rt_runtime_us)",
                ));
            }
            // A group's RT time comes out of its parent's, and `cbuild/` starts with none: every runtime
            // would be refused by the kernel, after the mkdirs. How much is the administrator's call (as
            // Docker's daemon takes --cpu-rt-runtime for its parent), not a container's.
            if self.cpu_rt_runtime.is_some() {
                let parent = h.base.join(crate::cgroup::PARENT).join("cpu.rt_runtime_us");
                let budget = fsutil::read_opt(&parent)?.and_then(|t| t.trim().parse::<i64>().ok()).unwrap_or(0);
                if budget == 0 {
                    return Err(Error::bad(
                        "limits",
                        field(f),
                        format!("{} has no real-time time to give (0 µs)", parent.display()),
                    )
                    .with_hint(format!("give cbuild/ a budget first, e.g. `echo 100000 > {}`", parent.display())));
                }
            }
        }
        // Newer than some kernels cbuild runs on: cpu.idle (5.15), the CFS burst (5.14). Neither file is
        // in a root cgroup of v2, so look in cbuild/ too, and refuse only where a sibling file shows the
        // kernel would have made it.
        for (set, f, v1file, v2file, what) in [
            (self.cpu_idle.is_some(), "cpu.idle", "cpu.idle", "cpu.idle", "idle groups (Linux 5.15)"),
            (self.cpu_burst.is_some(), "cpu.burst", "cpu.cfs_burst_us", "cpu.max.burst", "CFS burst (Linux 5.14)"),
        ] {
            if !set {
                continue;
            }
            let h = hierarchy("cpu", f)?;
            let (file, sibling) = if h.version == 2 { (v2file, "cpu.max") } else { (v1file, "cpu.cfs_quota_us") };
            let dirs = [h.base.join(crate::cgroup::PARENT), h.base.clone()];
            let has = |name: &str| dirs.iter().any(|d| d.join(name).exists());
            if !has(file) && has(sibling) {
                return Err(Error::bad("limits", field(f), format!("this kernel has no {what}: no {file}")));
            }
        }
        if self.io_leaf_weight.is_some() || self.io_weight_device.iter().any(|d| d.leaf_weight.is_some()) {
            v1_only("io", "blockIO.leafWeight", "leaf weight (CFQ's, which the kernel dropped in 5.0)")?;
        }
        if !self.io_weight_device.is_empty() {
            hierarchy("io", "blockIO.weightDevice")?;
        }
        for d in &self.io_weight_device {
            if !Path::new(&format!("/sys/dev/block/{}:{}", d.major, d.minor)).exists() {
                return Err(Error::bad(
                    "limits",
                    format!("{} {}:{}", field("blockIO.weightDevice"), d.major, d.minor),
                    "no such block device",
                ));
            }
        }
        if !self.rdma.is_empty() {
            hierarchy("rdma", "rdma")?;
        }
        // cgroup v2 has no net_cls or net_prio, and runc's v2 manager leaves `network` alone: so here.
        // On v1 runc's manager fails for a field whose hierarchy is not mounted: so here too, before
        // anything is made rather than after.
        if host.layout == Layout::Unified {
            if self.net_classid.is_some() || !self.net_priorities.is_empty() {
                crate::log::step("skip", "linux.resources.network: cgroup v2 has no net_cls or net_prio (as runc)");
            }
        } else {
            for (set, ctrl, f) in [
                (self.net_classid.is_some(), "net_cls", "network.classID"),
                (!self.net_priorities.is_empty(), "net_prio", "network.priorities"),
            ] {
                if set && host.hierarchy_of(ctrl).is_none() {
                    return Err(Error::bad(
                        "limits",
                        field(f),
                        format!("the host has no {ctrl} controller mounted (cgroup v1)"),
                    )
                    .with_hint(format!(
                        "mount it first, e.g. `mkdir /sys/fs/cgroup/{ctrl} && mount -t cgroup -o {ctrl} {ctrl} /sys/fs/cgroup/{ctrl}`"
                    )));
                }
            }
        }
        for dev in self.rdma.keys() {
            if !Path::new("/sys/class/infiniband").join(dev).exists() {
                return Err(Error::bad(
                    "limits",
                    format!("{}.{dev}", field("rdma")),
                    "no such RDMA device (/sys/class/infiniband)",
                ));
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
    let mut io = IoMax { given: format!("--io-max {spec}"), ..Default::default() };
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
    hugepage_limits: Option<Vec<OciHugepageLimit>>,
    rdma: Option<BTreeMap<String, OciRdma>>,
    unified: Option<BTreeMap<String, String>>,
    /// Read entry by entry (serde_json values), so a bad one is named by its index.
    devices: Option<Vec<serde_json::Value>>,
    network: Option<OciNetwork>,
}

#[derive(Deserialize, Default)]
struct OciNetwork {
    #[serde(rename = "classID")]
    class_id: Option<u32>,
    #[serde(default)]
    priorities: Vec<OciIfPriority>,
}

#[derive(Deserialize)]
struct OciIfPriority {
    name: String,
    priority: u32,
}

#[derive(Deserialize, Default)]
struct OciMemory {
    limit: Option<i64>,
    reservation: Option<i64>,
    swap: Option<i64>,
    /// The spec's type is uint64, but -1 (and its uint64 spelling) is what runc reads as "not set".
    swappiness: Option<i128>,
    #[serde(rename = "disableOOMKiller")]
    disable_oom_killer: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct OciCpu {
    shares: Option<u64>,
    quota: Option<i64>,
    period: Option<u64>,
    cpus: Option<String>,
    mems: Option<String>,
    realtime_runtime: Option<i64>,
    realtime_period: Option<u64>,
    idle: Option<i64>,
    burst: Option<u64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OciHugepageLimit {
    page_size: String,
    limit: u64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OciRdma {
    hca_handles: Option<u32>,
    hca_objects: Option<u32>,
}

#[derive(Deserialize, Default)]
struct OciPids {
    limit: Option<i64>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct OciBlockIo {
    weight: Option<u64>,
    leaf_weight: Option<u64>,
    #[serde(default)]
    weight_device: Vec<OciWeightDevice>,
    #[serde(default)]
    throttle_read_bps_device: Vec<OciThrottle>,
    #[serde(default)]
    throttle_write_bps_device: Vec<OciThrottle>,
    #[serde(default, rename = "throttleReadIOPSDevice")]
    throttle_read_iops_device: Vec<OciThrottle>,
    #[serde(default, rename = "throttleWriteIOPSDevice")]
    throttle_write_iops_device: Vec<OciThrottle>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OciWeightDevice {
    major: u64,
    minor: u64,
    weight: Option<u64>,
    leaf_weight: Option<u64>,
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
        // As runc: absent or -1 (also as uint64) leaves it alone; above 100 is refused.
        l.swappiness = match m.swappiness {
            None | Some(-1) => None,
            Some(n) if n == u64::MAX as i128 => None,
            Some(n @ 0..=100) => Some(n as u64),
            Some(n) => {
                return Err(Error::bad(
                    "oci",
                    "linux.resources.memory.swappiness",
                    format!("{n} is out of range 0..=100"),
                ))
            }
        };
        l.oom_kill_disable = m.disable_oom_killer == Some(true);
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
        // As runc: 0 leaves a value alone; a runtime of -1 is no limit (the kernel's own spelling).
        l.cpu_rt_period = c.realtime_period.filter(|&p| p != 0);
        l.cpu_rt_runtime = match c.realtime_runtime {
            None | Some(0) => None,
            Some(r) if r < -1 => {
                return Err(Error::bad(
                    "oci",
                    "linux.resources.cpu.realtimeRuntime",
                    format!("{r} is negative (-1 means no limit)"),
                ))
            }
            r => r,
        };
        l.cpu_idle = match c.idle {
            None => None,
            Some(i @ 0..=1) => Some(i as u64),
            Some(i) => return Err(Error::bad("oci", "linux.resources.cpu.idle", format!("{i} is neither 0 nor 1"))),
        };
        l.cpu_burst = c.burst;
    }
    if let Some(p) = r.pids {
        // As runc: a positive limit sets it, -1 lifts it, 0 leaves the current one alone.
        l.pids = oci_limit("linux.resources.pids.limit", p.limit)?;
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
        let weight = |field: String, w: Option<u64>| -> Result<Option<u64>> {
            match w {
                None | Some(0) => Ok(None),
                Some(w @ 10..=1000) => Ok(Some(w)),
                Some(w) => Err(Error::bad("oci", field, format!("{w} is out of range 10..=1000"))),
            }
        };
        l.io_leaf_weight = weight("linux.resources.blockIO.leafWeight".into(), b.leaf_weight)?;
        for (i, d) in b.weight_device.iter().enumerate() {
            let at = |k: &str| format!("linux.resources.blockIO.weightDevice[{i}].{k}");
            let wd = WeightDevice {
                major: d.major,
                minor: d.minor,
                weight: weight(at("weight"), d.weight)?,
                leaf_weight: weight(at("leafWeight"), d.leaf_weight)?,
            };
            // A later entry for the same device replaces an earlier one.
            l.io_weight_device.retain(|o| (o.major, o.minor) != (wd.major, wd.minor));
            if wd.weight.is_some() || wd.leaf_weight.is_some() {
                l.io_weight_device.push(wd);
            }
        }
        let lim = |r: u64| if r == 0 { Limit::Max } else { Limit::Value(r) };
        let lists: [(&Vec<OciThrottle>, &str, SetThrottle); 4] = [
            (&b.throttle_read_bps_device, "throttleReadBpsDevice", |d, v| d.rbps = Some(v)),
            (&b.throttle_write_bps_device, "throttleWriteBpsDevice", |d, v| d.wbps = Some(v)),
            (&b.throttle_read_iops_device, "throttleReadIOPSDevice", |d, v| d.riops = Some(v)),
            (&b.throttle_write_iops_device, "throttleWriteIOPSDevice", |d, v| d.wiops = Some(v)),
        ];
        for (list, field, set) in lists {
            for (n, t) in list.iter().enumerate() {
                let i = match l.io_max.iter().position(|d| d.major == t.major && d.minor == t.minor) {
                    Some(i) => i,
                    None => {
                        let given = format!("linux.resources.blockIO.{field}[{n}] {}:{}", t.major, t.minor);
                        l.io_max.push(IoMax { major: t.major, minor: t.minor, given, ..Default::default() });
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
    if let Some(n) = r.network {
        // As runc: a class id of 0 leaves the group's alone.
        l.net_classid = n.class_id.filter(|&c| c != 0);
        for (i, p) in n.priorities.into_iter().enumerate() {
            // The kernel reads one word of at most 15 bytes for the name; it must be a name the kernel
            // would give an interface (dev_valid_name), never a second word or a line of its own.
            let name = &p.name;
            let ok = !name.is_empty()
                && name.len() < 16
                && name != "."
                && name != ".."
                && !name.bytes().any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace() || b.is_ascii_control());
            if !ok {
                return Err(Error::bad(
                    "oci",
                    format!("linux.resources.network.priorities[{i}].name"),
                    format!("{name:?} is not an interface name"),
                ));
            }
            l.net_priorities.retain(|(n, _)| n != name);
            l.net_priorities.push((p.name, p.priority));
        }
    }
    for (i, h) in r.hugepage_limits.unwrap_or_default().into_iter().enumerate() {
        // It becomes part of a file name (`hugetlb.<size>.max`): only the kernel's own spelling.
        let size = &h.page_size;
        let digits = size.len().saturating_sub(2);
        let ok = size.len() > 2
            && size[..digits].bytes().all(|b| b.is_ascii_digit())
            && !size.starts_with('0')
            && ["KB", "MB", "GB"].contains(&&size[digits..]);
        if !ok {
            return Err(Error::bad(
                "oci",
                format!("linux.resources.hugepageLimits[{i}].pageSize"),
                format!("{size:?} is not a page size as the kernel names them (64KB, 2MB, 1GB)"),
            ));
        }
        l.hugetlb.insert(h.page_size, h.limit);
    }
    for (dev, r) in r.rdma.unwrap_or_default() {
        // Written as the first word of a line in rdma.max.
        if dev.is_empty() || !dev.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.:-".contains(&b)) {
            return Err(Error::bad("oci", format!("linux.resources.rdma.{dev:?}"), "not an RDMA device name"));
        }
        for (k, v) in [("hcaHandles", r.hca_handles), ("hcaObjects", r.hca_objects)] {
            // The kernel takes an int.
            if v.is_some_and(|v| v > i32::MAX as u32) {
                return Err(Error::bad(
                    "oci",
                    format!("linux.resources.rdma.{dev}.{k}"),
                    format!("{} is above {}", v.unwrap_or_default(), i32::MAX),
                ));
            }
        }
        // Kept even with nothing to set: the device and the controller must still be there.
        l.rdma.insert(dev, Rdma { hca_handles: r.hca_handles, hca_objects: r.hca_objects });
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

    /// An OCI config's memory limit without a swap (or swap 0) leaves the swap alone, as runc does.
    #[test]
    fn oci_memory_without_swap_leaves_swap_alone() {
        let dir = std::env::temp_dir().join(format!("cbuild-cgroup-oci-swap-{}", std::process::id()));
        for swap in ["", r#","swap":0"#] {
            let cfg =
                format!(r#"{{"ociVersion":"1.0.2","linux":{{"resources":{{"memory":{{"limit":104857600{swap}}}}}}}}}"#);
            std::fs::write(&dir, cfg).unwrap();
            let raw = RawLimits { oci: Some(dir.display().to_string()), ..Default::default() };
            let l = Limits::parse(&raw).unwrap();
            assert_eq!(l.memory, Some(Limit::Value(100 << 20)));
            assert_eq!(l.memory_swap, None, "swap {swap:?}");
        }
        // --memory over the config's: the flag's Docker default again.
        let raw = RawLimits { oci: Some(dir.display().to_string()), memory: Some("50M".into()), ..Default::default() };
        assert_eq!(Limits::parse(&raw).unwrap().memory_swap, Some(Limit::Value(100 << 20)));
        let _ = std::fs::remove_file(&dir);
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
        assert_eq!(from_file.unwrap().memory_swap, None, "as runc: the file's memory alone leaves swap alone");
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

    /// Parse `body` as an OCI config file, with `flags` over it.
    fn oci_with(body: &str, flags: RawLimits) -> Result<Limits> {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("cbuild-cgroup-oci-t{}-{n}", std::process::id()));
        std::fs::write(&path, body).unwrap();
        let l = Limits::parse(&RawLimits { oci: Some(path.display().to_string()), ..flags });
        std::fs::remove_file(&path).unwrap();
        l
    }

    #[test]
    fn oci_fields_runc_applies_are_read() {
        let l = oci_with(
            r#"{"linux":{"resources":{"hugepageLimits":[{"pageSize":"2MB","limit":4194304},{"pageSize":"1GB","limit":0}],
            "memory":{"swappiness":30,"disableOOMKiller":true},"cpu":{"realtimeRuntime":-1,"realtimePeriod":500000},
            "blockIO":{"leafWeight":200,"weightDevice":[{"major":8,"minor":0,"weight":300},{"major":8,"minor":16,"leafWeight":50},
            {"major":8,"minor":0,"weight":400}]},"rdma":{"mlx5_0":{"hcaHandles":3},"mlx4_0":{}}}}}"#,
            RawLimits::default(),
        )
        .unwrap();
        assert_eq!(l.hugetlb.get("2MB"), Some(&(4 << 20)));
        assert_eq!(l.hugetlb.get("1GB"), Some(&0));
        assert_eq!((l.swappiness, l.oom_kill_disable), (Some(30), true));
        assert_eq!((l.cpu_rt_runtime, l.cpu_rt_period), (Some(-1), Some(500_000)));
        assert_eq!(l.io_leaf_weight, Some(200));
        let wd: Vec<_> = l.io_weight_device.iter().map(|d| (d.major, d.minor, d.weight, d.leaf_weight)).collect();
        assert_eq!(wd, [(8, 16, None, Some(50)), (8, 0, Some(400), None)], "a later entry replaces an earlier one");
        assert_eq!(l.rdma["mlx5_0"], Rdma { hca_handles: Some(3), hca_objects: None });
        assert_eq!(l.rdma["mlx4_0"], Rdma::default(), "kept: the device must still exist");
        assert!(!l.is_empty());
        // Unset the runc way: swappiness -1 (or its uint64 spelling), runtime/period 0, OOM killer on.
        let l = oci_with(
            r#"{"linux":{"resources":{"memory":{"swappiness":18446744073709551615,"disableOOMKiller":false},
            "cpu":{"realtimeRuntime":0,"realtimePeriod":0},"blockIO":{"weightDevice":[{"major":8,"minor":0}]}}}}"#,
            RawLimits::default(),
        )
        .unwrap();
        assert!(l.is_empty(), "{l:?}");
        assert_eq!(
            oci_with(r#"{"linux":{"resources":{"memory":{"swappiness":-1}}}}"#, RawLimits::default())
                .unwrap()
                .swappiness,
            None
        );
        for (bad, needle) in [
            (r#"{"hugepageLimits":[{"pageSize":"../x","limit":1}]}"#, "hugepageLimits[0].pageSize"),
            (r#"{"hugepageLimits":[{"pageSize":"2mb","limit":1}]}"#, "hugepageLimits[0].pageSize"),
            (r#"{"hugepageLimits":[{"pageSize":"02MB","limit":1}]}"#, "hugepageLimits[0].pageSize"),
            (r#"{"hugepageLimits":[{"pageSize":"2MB"}]}"#, "limit"),
            (r#"{"memory":{"swappiness":101}}"#, "linux.resources.memory.swappiness: 101 is out of range"),
            (r#"{"cpu":{"realtimeRuntime":-2}}"#, "linux.resources.cpu.realtimeRuntime: -2 is negative"),
            (r#"{"blockIO":{"weightDevice":[{"major":8,"minor":0,"weight":5}]}}"#, "weightDevice[0].weight: 5"),
            (r#"{"blockIO":{"leafWeight":1001}}"#, "blockIO.leafWeight: 1001"),
            (r#"{"rdma":{"a b":{"hcaHandles":1}}}"#, "not an RDMA device name"),
            (r#"{"rdma":{"mlx5_0":{"hcaObjects":4294967295}}}"#, "rdma.mlx5_0.hcaObjects"),
        ] {
            let e = oci_with(&format!(r#"{{"linux":{{"resources":{bad}}}}}"#), RawLimits::default()).unwrap_err();
            assert!(e.to_string().contains(needle), "{bad}: {e}");
        }
    }

    #[test]
    fn oci_pids_limit_zero_leaves_it_alone_as_runc_does() {
        let pids = |v: &str| {
            oci_with(&format!(r#"{{"linux":{{"resources":{{"pids":{{"limit":{v}}}}}}}}}"#), RawLimits::default())
        };
        assert_eq!(pids("0").unwrap().pids, None);
        assert_eq!(pids("-1").unwrap().pids, Some(Limit::Max));
        assert_eq!(pids("20").unwrap().pids, Some(Limit::Value(20)));
        assert!(pids("-2").unwrap_err().to_string().contains("linux.resources.pids.limit"));
    }

    #[test]
    fn flags_beat_the_files_unified_entries_for_the_same_file() {
        let body = r#"{"linux":{"resources":{"unified":{"pids.max":"5","memory.max":"100000000",
            "memory.swap.max":"0","cpu.max":"max 100000","io.max":"8:0 rbps=1\n8:16 wbps=2",
            "io.weight":"default 50\n8:0 70","memory.high":"90000000"}}}}"#;
        let l = oci_with(body, RawLimits::default()).unwrap();
        assert_eq!(l.unified.len(), 7, "the file alone keeps every entry");
        let flags = RawLimits {
            pids: Some("7".into()),
            memory: Some("64M".into()),
            cpus: Some("1".into()),
            io_max: vec!["8:0:wbps=1m".into()],
            io_weight: Some("300".into()),
            ..Default::default()
        };
        let l = oci_with(body, flags).unwrap();
        let keys: Vec<&str> = l.unified.keys().map(String::as_str).collect();
        assert_eq!(keys, ["io.max", "io.weight", "memory.high", "memory.swap.max"]);
        assert_eq!(l.pids, Some(Limit::Value(7)));
        assert_eq!(l.unified["io.max"], "8:16 wbps=2", "only --io-max's device goes");
        assert_eq!(l.unified["io.weight"], "8:0 70", "only the default goes");
        // Implied by --memory, not given: Docker's swap default yields to the file's explicit entry,
        // which is written last.
        assert_eq!(l.unified["memory.swap.max"], "0");
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
