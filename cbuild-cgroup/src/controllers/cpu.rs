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

pub fn apply(d: Dir, l: &Limits, w: &mut Writer) -> Result<()> {
    if d.v2 {
        apply_v2(d, l, w)
    } else {
        apply_v1(d, l, w)
    }
}

fn apply_v2(d: Dir, l: &Limits, w: &mut Writer) -> Result<()> {
    let max = d.file("cpu.max");
    match (l.cpu_quota, l.cpu_period) {
        (Some(q), Some(p)) => w.write(&max, &format!("{} {p}", q.v2()))?,
        // The kernel keeps the period when only the quota is written.
        (Some(q), None) => w.write(&max, &q.v2())?,
        (None, Some(p)) => {
            // Writing a period needs a quota in the same write: keep the current one.
            let cur = fsutil::read(&max)?;
            let quota = cur.split_whitespace().next().unwrap_or("max").to_string();
            w.write(&max, &format!("{quota} {p}"))?;
        }
        (None, None) => {}
    }
    let weight = l.cpu_weight.or(l.cpu_shares.map(convert::shares_to_weight));
    if let Some(wt) = weight {
        w.write(&d.file("cpu.weight"), &wt.to_string())?;
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
    if let Some(q) = l.cpu_quota {
        w.write(&quota_file, &q.v1())?;
    }
    let shares = l.cpu_shares.or(l.cpu_weight.map(convert::weight_to_shares));
    if let Some(s) = shares {
        w.write(&d.file("cpu.shares"), &s.to_string())?;
    }
    apply_rt(d, l, w)
}

/// Real-time group scheduling (v1, CONFIG_RT_GROUP_SCHED): `cpu.rt_period_us`, `cpu.rt_runtime_us`.
/// Limits are applied before the join (rootless aside), which matters here: a SCHED_FIFO or SCHED_RR
/// process cannot join a group without RT time.
fn apply_rt(d: Dir, l: &Limits, w: &mut Writer) -> Result<()> {
    let (period_file, runtime_file) = (d.file("cpu.rt_period_us"), d.file("cpu.rt_runtime_us"));
    let runtime_field = "linux.resources.cpu.realtimeRuntime";
    let hint = |e: Error| match e.errno() {
        Some(libc::EINVAL) => e.with_hint(
            "a group's real-time runtime/period must fit in what its parent (cbuild/) has left beside its siblings",
        ),
        _ => e,
    };
    let write_runtime =
        |w: &mut Writer, r: i64| w.write(&runtime_file, &r.to_string()).map_err(|e| hint(e.for_field(runtime_field)));
    if let Some(p) = l.cpu_rt_period {
        // As with CFS: a new period can be refused while the old runtime/period ratio would break the
        // parent's; the runtime first then succeeds (runc does the same retry).
        if let Err(e) = w.write(&period_file, &p.to_string()) {
            return match l.cpu_rt_runtime {
                Some(r) if e.errno() == Some(libc::EINVAL) => {
                    write_runtime(w, r)?;
                    w.write(&period_file, &p.to_string())
                        .map_err(|e| hint(e.for_field("linux.resources.cpu.realtimePeriod")))
                }
                _ => Err(hint(e.for_field("linux.resources.cpu.realtimePeriod"))),
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
    fn ratio() {
        assert_eq!(super::throttle_ratio(0, 0), 0.0);
        assert_eq!(super::throttle_ratio(3, 4), 0.75);
    }
}
