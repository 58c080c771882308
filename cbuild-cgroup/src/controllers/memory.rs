//! memory: limit, memory+swap, reservation, oom group; usage, breakdown and OOM counters.
//!
//! v1 `memory.limit_in_bytes` + `memory.memsw.limit_in_bytes` (memory+swap, Docker's meaning) +
//! `memory.soft_limit_in_bytes`; v2 `memory.max` + `memory.swap.max` (swap alone) + `memory.low`.

use super::{Dir, Writer};
use crate::convert::{self, Limit};
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

fn no_swap_accounting(d: Dir, file: &str) -> Error {
    Error::bad("limits", d.file(file).display(), "--memory-swap: this kernel does not account swap")
        .with_hint("boot with swapaccount=1 (v1) or a kernel with CONFIG_MEMCG_SWAP")
}

fn apply_v2(d: Dir, l: &Limits, w: &mut Writer) -> Result<()> {
    if let Some(m) = l.memory {
        w.write(&d.file("memory.max"), &m.v2())?;
    }
    if let Some(memsw) = l.memory_swap {
        let swap_file = d.file("memory.swap.max");
        if swap_file.exists() {
            let memory = match l.memory {
                Some(m) => m,
                None => fsutil::read_u64_opt(&d.file("memory.max"))?.map_or(Limit::Max, Limit::Value),
            };
            let swap = convert::memsw_to_swap(memory, memsw).map_err(|e| {
                let memory = match l.memory {
                    Some(m) => l.given("memory.limit", m.v2()),
                    None => format!("the memory limit in force ({})", memory.v2()),
                };
                Error::bad("limits", l.given("memory.swap", memsw.v2()), e.reason(&memory))
            })?;
            w.write(&swap_file, &swap.v2())?;
        } else if l.memory_swap_explicit {
            return Err(no_swap_accounting(d, "memory.swap.max"));
        }
    }
    if let Some(r) = l.memory_reservation {
        w.write(&d.file("memory.low"), &r.v2())?;
    }
    if l.oom_group {
        w.write(&d.file("memory.oom.group"), "1")?;
    }
    // `Limits::check` refuses these on v2 before anything is made; never dropped silently here either.
    if l.swappiness.is_some() || l.oom_kill_disable {
        return Err(Error::bad("limits", d.path.display(), "cgroup v2 has no swappiness or OOM-killer switch"));
    }
    Ok(())
}

fn apply_v1(d: Dir, l: &Limits, w: &mut Writer) -> Result<()> {
    let mem_file = d.file("memory.limit_in_bytes");
    let memsw_file = d.file("memory.memsw.limit_in_bytes");
    let memsw = match l.memory_swap {
        Some(s) if memsw_file.exists() => Some(s),
        Some(_) if l.memory_swap_explicit => return Err(no_swap_accounting(d, "memory.memsw.limit_in_bytes")),
        _ => None,
    };
    match (l.memory, memsw) {
        (Some(m), Some(s)) => {
            // The kernel keeps memory <= memory+swap at every moment, so the order depends on whether
            // the new memory+swap is above the current one (raise it first) or not (lower memory first).
            let cur = fsutil::read_u64_opt(&memsw_file)?;
            let raising = match (s.value(), cur) {
                (None, _) => true,
                (Some(_), None) => false,
                (Some(new), Some(cur)) => new > cur,
            };
            if raising {
                w.write(&memsw_file, &s.v1())?;
                w.write(&mem_file, &m.v1())?;
            } else {
                w.write(&mem_file, &m.v1())?;
                w.write(&memsw_file, &s.v1())?;
            }
        }
        (Some(m), None) => w.write(&mem_file, &m.v1()).map_err(|e| match e.errno() {
            Some(libc::EINVAL) => {
                e.with_hint("above the memory+swap limit in force: give --memory-swap too (as docker update)")
            }
            _ => e,
        })?,
        (None, Some(s)) => w.write(&memsw_file, &s.v1())?,
        (None, None) => {}
    }
    if let Some(r) = l.memory_reservation {
        w.write(&d.file("memory.soft_limit_in_bytes"), &r.v1())?;
    }
    if let Some(s) = l.swappiness {
        w.write(&d.file("memory.swappiness"), &s.to_string())
            .map_err(|e| e.for_field("linux.resources.memory.swappiness"))?;
    }
    if l.oom_kill_disable {
        let current = |text: &str| kv(text, "oom_kill_disable").map(|v| v.to_string());
        w.write_read_as(&d.file("memory.oom_control"), "1", current)
            .map_err(|e| e.for_field("linux.resources.memory.disableOOMKiller"))?;
    }
    Ok(())
}

/// Memory numbers, the same fields on v1 and v2. Sizes in bytes; `None` limits mean no limit.
#[derive(Debug, Default, Serialize)]
pub struct MemoryStats {
    pub current: u64,
    pub peak: Option<u64>,
    pub limit: Option<u64>,
    pub reservation: Option<u64>,
    pub swap_current: Option<u64>,
    /// Swap alone (v1 memory+swap minus memory), as v2 counts it.
    pub swap_limit: Option<u64>,
    /// Anonymous memory (heap, stacks): v2 `anon`, v1 `total_rss`.
    pub anon: u64,
    /// Page cache: v2 `file`, v1 `total_cache`. Counted against the limit on both; reclaimable, but on
    /// v1 dirty or mapped cache can still push a cgroup to OOM.
    pub file: u64,
    /// Kernel memory (slab, stacks, page tables): v2 `kernel` (or its parts), v1 `memory.kmem.usage_in_bytes`.
    pub kernel: Option<u64>,
    pub shmem: u64,
    pub file_mapped: u64,
    pub file_dirty: u64,
    pub file_writeback: u64,
    pub active_file: u64,
    pub inactive_file: u64,
    /// current - inactive_file: what `docker stats` shows as usage (and why it disagrees with `top`).
    pub working_set: u64,
    /// Times the limit was hit (v2 `max` event; v1 `memory.failcnt`, which stays 0 when memory+swap has
    /// the same limit — never use it to detect OOM).
    pub limit_hits: u64,
    /// OOM situations (v2 `oom`; v1 has no counter, so None).
    pub oom_events: Option<u64>,
    /// Processes killed by the OOM killer: v2 memory.events `oom_kill`, v1 memory.oom_control `oom_kill`.
    pub oom_kills: u64,
    pub under_oom: Option<bool>,
}

pub fn stats(d: Dir) -> Result<MemoryStats> {
    let stat = fsutil::read(&d.file("memory.stat"))?;
    let s = |k: &str| kv(&stat, k).unwrap_or(0);
    let mut m = MemoryStats::default();
    if d.v2 {
        m.current = fsutil::read_u64_opt(&d.file("memory.current"))?.unwrap_or(0);
        m.peak = fsutil::read_u64_opt(&d.file("memory.peak"))?;
        m.limit = fsutil::read_u64_opt(&d.file("memory.max"))?;
        m.reservation = fsutil::read_u64_opt(&d.file("memory.low"))?.filter(|&v| v > 0);
        m.swap_current = fsutil::read_u64_opt(&d.file("memory.swap.current"))?;
        m.swap_limit = fsutil::read_u64_opt(&d.file("memory.swap.max"))?;
        m.anon = s("anon");
        m.file = s("file");
        m.kernel = kv(&stat, "kernel").or_else(|| {
            Some(s("kernel_stack") + s("pagetables") + s("sec_pagetables") + s("percpu") + s("sock") + s("slab"))
        });
        m.shmem = s("shmem");
        m.file_mapped = s("file_mapped");
        m.file_dirty = s("file_dirty");
        m.file_writeback = s("file_writeback");
        m.active_file = s("active_file");
        m.inactive_file = s("inactive_file");
        let ev = fsutil::read_opt(&d.file("memory.events"))?.unwrap_or_default();
        m.limit_hits = kv(&ev, "max").unwrap_or(0);
        m.oom_events = Some(kv(&ev, "oom").unwrap_or(0));
        m.oom_kills = kv(&ev, "oom_kill").unwrap_or(0);
    } else {
        m.current = fsutil::read_u64_opt(&d.file("memory.usage_in_bytes"))?.unwrap_or(0);
        m.peak = fsutil::read_u64_opt(&d.file("memory.max_usage_in_bytes"))?;
        m.limit = fsutil::read_u64_opt(&d.file("memory.limit_in_bytes"))?;
        m.reservation = fsutil::read_u64_opt(&d.file("memory.soft_limit_in_bytes"))?;
        let memsw_usage = fsutil::read_u64_opt(&d.file("memory.memsw.usage_in_bytes"))?;
        m.swap_current = memsw_usage.map(|u| u.saturating_sub(m.current));
        m.swap_limit = convert::swap_from_memsw(m.limit, fsutil::read_u64_opt(&d.file("memory.memsw.limit_in_bytes"))?);
        // total_* include descendants, as v2's numbers do.
        m.anon = s("total_rss");
        m.file = s("total_cache");
        m.kernel = fsutil::read_u64_opt(&d.file("memory.kmem.usage_in_bytes"))?;
        m.shmem = s("total_shmem");
        m.file_mapped = s("total_mapped_file");
        m.file_dirty = s("total_dirty");
        m.file_writeback = s("total_writeback");
        m.active_file = s("total_active_file");
        m.inactive_file = s("total_inactive_file");
        m.limit_hits = fsutil::read_u64_opt(&d.file("memory.failcnt"))?.unwrap_or(0);
        let oom = fsutil::read_opt(&d.file("memory.oom_control"))?.unwrap_or_default();
        m.oom_kills = kv(&oom, "oom_kill").unwrap_or(0);
        m.under_oom = kv(&oom, "under_oom").map(|v| v != 0);
    }
    m.working_set = m.current.saturating_sub(m.inactive_file);
    Ok(m)
}

/// The OOM-kill counter alone (what `events` watches).
pub fn oom_counters(d: Dir) -> Result<(Option<u64>, u64)> {
    if d.v2 {
        let ev = fsutil::read_opt(&d.file("memory.events"))?.unwrap_or_default();
        Ok((Some(kv(&ev, "oom").unwrap_or(0)), kv(&ev, "oom_kill").unwrap_or(0)))
    } else {
        let oom = fsutil::read_opt(&d.file("memory.oom_control"))?.unwrap_or_default();
        Ok((None, kv(&oom, "oom_kill").unwrap_or(0)))
    }
}
