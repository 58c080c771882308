//! cpu (and v1 cpuacct): quota/period, shares/weight; usage and throttling.
//!
//! v1 `cpu.cfs_quota_us` + `cpu.cfs_period_us` + `cpu.shares`, usage from the cpuacct controller (which
//! may be a separate hierarchy), throttled_time in ns. v2 `cpu.max` ("quota period") + `cpu.weight`,
//! everything in `cpu.stat` with throttled_usec in µs.

use super::{Dir, Writer};
use crate::convert;
use crate::error::{Error, Result};
use crate::fsutil::{self, kv};
use crate::limits::Limits;
use serde::Serialize;
use std::path::PathBuf;

/// The kernel's largest quota, and largest quota + burst together, in µs: its bandwidth arithmetic
/// keeps a runtime in 64 − 20 bits (kernel/sched: `MAX_BW`). v1 and v2 alike.
pub const MAX_QUOTA_US: u64 = (1 << 44) - 1;

/// The kernel's largest burst with no quota in force, in µs: one that still fits in u64 nanoseconds.
/// (With a quota it must also be at most the quota, and the two together at most [`MAX_QUOTA_US`].)
pub const MAX_BURST_US: u64 = u64::MAX / 1000;

pub fn apply(d: Dir, l: &Limits, w: &mut Writer) -> Result<()> {
    if d.v2 {
        apply_v2(d, l, w)
    } else {
        apply_v1(d, l, w)
    }
}

fn apply_v2(d: Dir, l: &Limits, w: &mut Writer) -> Result<()> {
    let max = d.file("cpu.max");
    let value = match (l.cpu_quota, l.cpu_period) {
        (Some(q), Some(p)) => Some(format!("{} {p}", q.v2())),
        // The kernel keeps the period when only the quota is written.
        (Some(q), None) => Some(q.v2()),
        (None, Some(p)) => {
            // Writing a period needs a quota in the same write: keep the current one.
            let cur = fsutil::read(&max)?;
            let quota = cur.split_whitespace().next().unwrap_or("max").to_string();
            Some(format!("{quota} {p}"))
        }
        (None, None) => None,
    };
    bandwidth(w, l, value.map(|v| (max.clone(), v)), d.file("cpu.max.burst"), || {
        fsutil::read_opt(&max)
            .ok()
            .flatten()
            .and_then(|m| m.split_whitespace().next().and_then(convert::parse_kernel_limit))
    })?;
    let weight = l.cpu_weight.or(l.cpu_shares.map(convert::shares_to_weight));
    if let Some(wt) = weight {
        w.write(&d.file("cpu.weight"), &wt.to_string())?;
    }
    // After the weight: the kernel takes no weight for an idle group.
    if let Some(i) = l.cpu_idle {
        w.write(&d.file("cpu.idle"), &i.to_string()).map_err(|e| e.for_field(&l.field("cpu.idle")))?;
    }
    // `Limits::check` refuses these on v2 before anything is made; never dropped silently here either.
    if l.cpu_rt_period.is_some() || l.cpu_rt_runtime.is_some() {
        return Err(Error::bad("limits", d.path.display(), "cgroup v2 has no real-time group scheduling"));
    }
    Ok(())
}

fn apply_v1(d: Dir, l: &Limits, w: &mut Writer) -> Result<()> {
    let quota_file = d.file("cpu.cfs_quota_us");
    let period_file = d.file("cpu.cfs_period_us");
    if let Some(p) = l.cpu_period {
        // A new period can be refused while the old quota/period ratio breaks a parent's limit; writing
        // the quota first then succeeds (runc does the same retry).
        if let Err(e) = w.write(&period_file, &p.to_string()) {
            match l.cpu_quota {
                Some(q) if e.errno() == Some(libc::EINVAL) => {
                    w.write(&quota_file, &q.v1())?;
                    w.write(&period_file, &p.to_string())?;
                }
                _ => return Err(e),
            }
        }
    }
    let in_force = || fsutil::read_opt(&quota_file).ok().flatten().and_then(|q| q.trim().parse::<u64>().ok());
    bandwidth(w, l, l.cpu_quota.map(|q| (quota_file.clone(), q.v1())), d.file("cpu.cfs_burst_us"), in_force)?;
    let shares = l.cpu_shares.or(l.cpu_weight.map(convert::weight_to_shares));
    if let Some(s) = shares {
        w.write(&d.file("cpu.shares"), &s.to_string())?;
    }
    // After the shares: the kernel takes none for an idle group.
    if let Some(i) = l.cpu_idle {
        w.write(&d.file("cpu.idle"), &i.to_string()).map_err(|e| e.for_field(&l.field("cpu.idle")))?;
    }
    apply_rt(d, l, w)
}

/// The quota (v1's quota file, or v2's cpu.max line), then the burst. The kernel refuses a
/// burst above the quota in force, checking each write against the other's current value: raising
/// both works quota first, lowering both only burst first. So quota first, and on EINVAL the burst
/// first and the quota again (as the period's retry above). `in_force` reads the quota the kernel
/// holds (None: no quota), for a hint that says which of its bounds a refused burst broke.
fn bandwidth(
    w: &mut Writer,
    l: &Limits,
    quota: Option<(PathBuf, String)>,
    burst_file: PathBuf,
    in_force: impl Fn() -> Option<u64>,
) -> Result<()> {
    let burst = |w: &mut Writer, b: u64| {
        w.write(&burst_file, &b.to_string()).map_err(|e| {
            let hint = (e.errno() == Some(libc::EINVAL)).then(|| burst_hint(b, in_force())).flatten();
            let e = e.for_field(&l.field("cpu.burst"));
            match hint {
                Some(h) => e.with_hint(h),
                None => e,
            }
        })
    };
    if let Some((file, value)) = quota {
        if let Err(e) = w.write(&file, &value) {
            return match l.cpu_burst {
                Some(b) if e.errno() == Some(libc::EINVAL) => {
                    burst(w, b)?;
                    w.write(&file, &value)
                }
                _ => Err(e),
            };
        }
    }
    if let Some(b) = l.cpu_burst {
        burst(w, b)?;
    }
    Ok(())
}

/// Which of the kernel's bounds a burst of `b` µs breaks with `quota` in force; None if none does (the
/// refusal is then not about the burst's size, and a guess would mislead).
pub fn burst_hint(b: u64, quota: Option<u64>) -> Option<String> {
    match quota {
        Some(q) if b > q => Some(format!("a burst must not exceed the quota in force ({q} µs)")),
        Some(q) if b.saturating_add(q) > MAX_QUOTA_US => {
            Some(format!("the quota in force ({q} µs) plus the burst must not exceed the kernel's {MAX_QUOTA_US} µs"))
        }
        None if b > MAX_BURST_US => Some(format!("the kernel's largest burst is {MAX_BURST_US} µs")),
        _ => None,
    }
}

/// Real-time group scheduling (v1, CONFIG_RT_GROUP_SCHED): `cpu.rt_period_us`, `cpu.rt_runtime_us`.
/// Limits are applied before the join (rootless aside), which matters here: a SCHED_FIFO or SCHED_RR
/// process cannot join a group without RT time.
fn apply_rt(d: Dir, l: &Limits, w: &mut Writer) -> Result<()> {
    let (period_file, runtime_file) = (d.file("cpu.rt_period_us"), d.file("cpu.rt_runtime_us"));
    let (runtime_field, period_field) = (l.field("cpu.realtimeRuntime"), l.field("cpu.realtimePeriod"));
    let hint = |e: Error| match e.errno() {
        Some(libc::EINVAL) => e.with_hint(
            "a group's real-time runtime/period must fit in what its parent (cbuild/) has left beside its siblings",
        ),
        _ => e,
    };
    let write_runtime =
        |w: &mut Writer, r: i64| w.write(&runtime_file, &r.to_string()).map_err(|e| hint(e.for_field(&runtime_field)));
    if let Some(p) = l.cpu_rt_period {
        // As with CFS: a new period can be refused while the old runtime/period ratio would break the
        // parent's; the runtime first then succeeds (runc does the same retry).
        if let Err(e) = w.write(&period_file, &p.to_string()) {
            return match l.cpu_rt_runtime {
                Some(r) if e.errno() == Some(libc::EINVAL) => {
                    write_runtime(w, r)?;
                    w.write(&period_file, &p.to_string()).map_err(|e| hint(e.for_field(&period_field)))
                }
                _ => Err(hint(e.for_field(&period_field))),
            };
        }
    }
    if let Some(r) = l.cpu_rt_runtime {
        write_runtime(w, r)?;
    }
    Ok(())
}

/// CPU numbers in µs on every layout.
#[derive(Debug, Default, Serialize)]
pub struct CpuStats {
    pub usage_usec: u64,
    pub user_usec: Option<u64>,
    pub system_usec: Option<u64>,
    /// Enforcement periods that had runnable tasks.
    pub nr_periods: u64,
    /// Periods in which the cgroup ran out of quota.
    pub nr_throttled: u64,
    pub throttled_usec: u64,
    /// nr_throttled / nr_periods: the share of periods the quota ran out — near 1 means the limit binds.
    pub throttle_ratio: f64,
    /// quota per period (None: no quota).
    pub quota_usec: Option<u64>,
    pub period_usec: Option<u64>,
    pub weight: Option<u64>,
    pub shares: Option<u64>,
    /// 1: an idle group (SCHED_IDLE); None on kernels without cpu.idle.
    pub idle: Option<u64>,
    /// The burst allowed beyond the quota, and how often and how much of it was spent (Linux 5.14).
    pub burst_usec: Option<u64>,
    pub nr_bursts: Option<u64>,
    pub burst_used_usec: Option<u64>,
}

/// `cpu` is the cpu controller's dir, `acct` the cpuacct one's (v1; may be the same dir or absent).
pub fn stats(cpu: Option<Dir>, acct: Option<Dir>) -> Result<Option<CpuStats>> {
    let mut c = CpuStats::default();
    match cpu {
        Some(d) if d.v2 => {
            let st = fsutil::read(&d.file("cpu.stat"))?;
            c.usage_usec = kv(&st, "usage_usec").unwrap_or(0);
            c.user_usec = kv(&st, "user_usec");
            c.system_usec = kv(&st, "system_usec");
            c.nr_periods = kv(&st, "nr_periods").unwrap_or(0);
            c.nr_throttled = kv(&st, "nr_throttled").unwrap_or(0);
            c.throttled_usec = kv(&st, "throttled_usec").unwrap_or(0);
            if let Some(max) = fsutil::read_opt(&d.file("cpu.max"))? {
                let mut it = max.split_whitespace();
                c.quota_usec = it.next().and_then(convert::parse_kernel_limit);
                c.period_usec = it.next().and_then(|p| p.parse().ok());
            }
            c.weight = fsutil::read_u64_opt(&d.file("cpu.weight"))?;
            c.shares = c.weight.map(convert::weight_to_shares);
            c.burst_usec = fsutil::read_u64_opt(&d.file("cpu.max.burst"))?;
            c.nr_bursts = kv(&st, "nr_bursts");
            c.burst_used_usec = kv(&st, "burst_usec");
            c.idle = fsutil::read_u64_opt(&d.file("cpu.idle"))?;
        }
        Some(d) => {
            let st = fsutil::read(&d.file("cpu.stat"))?;
            c.nr_periods = kv(&st, "nr_periods").unwrap_or(0);
            c.nr_throttled = kv(&st, "nr_throttled").unwrap_or(0);
            c.throttled_usec = kv(&st, "throttled_time").unwrap_or(0) / 1000;
            c.quota_usec = fsutil::read_u64_opt(&d.file("cpu.cfs_quota_us"))?;
            c.period_usec = fsutil::read_u64_opt(&d.file("cpu.cfs_period_us"))?;
            c.shares = fsutil::read_u64_opt(&d.file("cpu.shares"))?;
            c.weight = c.shares.map(convert::shares_to_weight);
            c.burst_usec = fsutil::read_u64_opt(&d.file("cpu.cfs_burst_us"))?;
            c.nr_bursts = kv(&st, "nr_bursts");
            c.burst_used_usec = kv(&st, "burst_time").map(|ns| ns / 1000);
            c.idle = fsutil::read_u64_opt(&d.file("cpu.idle"))?;
        }
        None if acct.is_none() => return Ok(None),
        None => {}
    }
    if let Some(a) = acct.filter(|a| !a.v2) {
        c.usage_usec = fsutil::read_u64_opt(&a.file("cpuacct.usage"))?.unwrap_or(0) / 1000;
        c.user_usec = fsutil::read_u64_opt(&a.file("cpuacct.usage_user"))?.map(|n| n / 1000);
        c.system_usec = fsutil::read_u64_opt(&a.file("cpuacct.usage_sys"))?.map(|n| n / 1000);
    }
    c.throttle_ratio = throttle_ratio(c.nr_throttled, c.nr_periods);
    Ok(Some(c))
}

pub fn throttle_ratio(nr_throttled: u64, nr_periods: u64) -> f64 {
    if nr_periods == 0 {
        0.0
    } else {
        nr_throttled as f64 / nr_periods as f64
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn burst_hints_name_the_bound_broken() {
        use super::{burst_hint, MAX_BURST_US, MAX_QUOTA_US};
        assert!(burst_hint(60_000, Some(10_000)).unwrap().contains("quota in force (10000 µs)"));
        assert!(burst_hint(MAX_QUOTA_US - 5, Some(MAX_QUOTA_US - 5)).unwrap().contains("plus the burst"));
        let none = burst_hint(MAX_BURST_US + 1, None).unwrap();
        assert!(none.contains("largest burst") && !none.contains("quota"), "{none}");
        assert_eq!(burst_hint(5_000, Some(10_000)), None);
        assert_eq!(burst_hint(MAX_BURST_US, None), None);
    }

    #[test]
    fn ratio() {
        assert_eq!(super::throttle_ratio(0, 0), 0.0);
        assert_eq!(super::throttle_ratio(3, 4), 0.75);
    }
}
