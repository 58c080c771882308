//! `stat`: one report with the same fields on v1, v2 and hybrid hosts, from each controller's module,
//! plus pressure stall information (PSI) from the v2 tree where the kernel offers it.

use crate::cgroup::Cgroup;
use crate::controllers::{cpu, io, memory, pids};
use crate::error::Result;
use crate::layout::Host;
use serde::Serialize;
use std::fmt::Write as _;
use std::path::Path;

#[derive(Debug, Serialize)]
pub struct Stats {
    pub name: String,
    pub layout: &'static str,
    pub procs: usize,
    pub memory: Option<memory::MemoryStats>,
    pub cpu: Option<cpu::CpuStats>,
    pub pids: Option<pids::PidsStats>,
    pub io: Option<io::IoStats>,
    pub psi: Option<Psi>,
}

#[derive(Debug, Default, Serialize)]
pub struct Psi {
    pub cpu: Option<Pressure>,
    pub memory: Option<Pressure>,
    pub io: Option<Pressure>,
}

#[derive(Debug, Default, Serialize)]
pub struct Pressure {
    pub some: PressureLine,
    pub full: Option<PressureLine>,
}

/// Share of wall time (percent) some/all tasks were stalled, over 10/60/300 s; total stall time in µs.
#[derive(Debug, Default, Serialize)]
pub struct PressureLine {
    pub avg10: f64,
    pub avg60: f64,
    pub avg300: f64,
    pub total_usec: u64,
}

pub fn collect(host: &Host, cg: &Cgroup) -> Result<Stats> {
    let memory = cg.dir_of(host, "memory").map(memory::stats).transpose()?;
    let cpu_dir = cg.dir_of(host, "cpu");
    let acct_dir = cg.dir_of(host, "cpuacct");
    // Without a cpu controller (hybrid unified tree, or v2 without cpu delegated) cpu.stat in the v2
    // tree still has usage.
    let cpu_dir = cpu_dir.or_else(|| {
        let v2 = cg.v2_dir(host)?;
        v2.join("cpu.stat").exists().then_some(crate::controllers::Dir { path: v2, v2: true })
    });
    let cpu = cpu::stats(cpu_dir.filter(|d| d.path.exists()), acct_dir)?;
    let pids = cg.dir_of(host, "pids").map(pids::stats).transpose()?;
    let io = cg.dir_of(host, "io").or_else(|| cg.dir_of(host, "blkio")).map(io::stats).transpose()?;
    let psi = cg.v2_dir(host).map(psi).filter(|p| p.cpu.is_some() || p.memory.is_some() || p.io.is_some());
    Ok(Stats {
        name: cg.name.clone(),
        layout: host.layout.as_str(),
        procs: cg.procs()?.len(),
        memory,
        cpu,
        pids,
        io,
        psi,
    })
}

fn psi(dir: &Path) -> Psi {
    // A kernel booted with psi=0 has no files or refuses to read them (EOPNOTSUPP): no PSI then.
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).ok().map(|t| parse_pressure(&t));
    Psi { cpu: read("cpu.pressure"), memory: read("memory.pressure"), io: read("io.pressure") }
}

/// "some avg10=0.00 avg60=0.00 avg300=0.00 total=0\nfull ..."
pub fn parse_pressure(text: &str) -> Pressure {
    let mut p = Pressure::default();
    for line in text.lines() {
        let mut it = line.split_whitespace();
        let kind = it.next();
        let mut l = PressureLine::default();
        for kv in it {
            let Some((k, v)) = kv.split_once('=') else { continue };
            match k {
                "avg10" => l.avg10 = v.parse().unwrap_or(0.0),
                "avg60" => l.avg60 = v.parse().unwrap_or(0.0),
                "avg300" => l.avg300 = v.parse().unwrap_or(0.0),
                "total" => l.total_usec = v.parse().unwrap_or(0),
                _ => {}
            }
        }
        match kind {
            Some("some") => p.some = l,
            Some("full") => p.full = Some(l),
            _ => {}
        }
    }
    p
}

pub fn bytes(n: u64) -> String {
    const U: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i < U.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", U[i])
    }
}

fn opt_bytes(n: Option<u64>) -> String {
    n.map_or("max".into(), bytes)
}

/// The human table.
pub fn human(s: &Stats) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "cgroup {} ({} layout)  processes {}", s.name, s.layout, s.procs);
    if let Some(m) = &s.memory {
        let _ = writeln!(
            o,
            "memory  current {}  peak {}  limit {}  working set {}",
            bytes(m.current),
            m.peak.map_or("-".into(), bytes),
            opt_bytes(m.limit),
            bytes(m.working_set)
        );
        let _ = writeln!(
            o,
            "        anon {}  file (page cache) {}  kernel {}  shmem {}  dirty {}",
            bytes(m.anon),
            bytes(m.file),
            m.kernel.map_or("-".into(), bytes),
            bytes(m.shmem),
            bytes(m.file_dirty)
        );
        let _ = writeln!(
            o,
            "        swap {} of {}  limit hits {}  oom events {}  oom kills {}",
            m.swap_current.map_or("-".into(), bytes),
            opt_bytes(m.swap_limit),
            m.limit_hits,
            m.oom_events.map_or("-".into(), |v| v.to_string()),
            m.oom_kills
        );
    }
    if let Some(c) = &s.cpu {
        let quota = match (c.quota_usec, c.period_usec) {
            (Some(q), Some(p)) => format!("{:.2} cpus ({q}/{p} µs)", q as f64 / p as f64),
            _ => "no quota".into(),
        };
        let _ = writeln!(
            o,
            "cpu     usage {:.3} s  {}  weight {}",
            c.usage_usec as f64 / 1e6,
            quota,
            c.weight.map_or("-".into(), |w| w.to_string())
        );
        let _ = writeln!(
            o,
            "        periods {}  throttled {}  throttle ratio {:.2}  throttled time {:.3} s",
            c.nr_periods,
            c.nr_throttled,
            c.throttle_ratio,
            c.throttled_usec as f64 / 1e6
        );
        // Only where set: most groups have neither.
        if c.burst_usec.is_some_and(|b| b > 0) || c.idle == Some(1) {
            let _ = writeln!(
                o,
                "        burst {} µs  bursts {}  burst time {:.3} s{}",
                c.burst_usec.unwrap_or(0),
                c.nr_bursts.unwrap_or(0),
                c.burst_used_usec.unwrap_or(0) as f64 / 1e6,
                if c.idle == Some(1) { "  idle (SCHED_IDLE)" } else { "" }
            );
        }
    }
    if let Some(p) = &s.pids {
        let _ = writeln!(
            o,
            "pids    current {}  peak {}  limit {}  limit hits {}",
            p.current,
            p.peak.map_or("-".into(), |v| v.to_string()),
            p.limit.map_or("max".into(), |v| v.to_string()),
            p.limit_hits
        );
    }
    if let Some(i) = &s.io {
        let _ = writeln!(
            o,
            "io      read {} ({} ops)  write {} ({} ops)",
            bytes(i.read_bytes),
            i.read_ios,
            bytes(i.write_bytes),
            i.write_ios
        );
    }
    if let Some(p) = &s.psi {
        let line = |name: &str, pr: &Option<Pressure>| -> String {
            match pr {
                Some(pr) => {
                    let full = pr
                        .full
                        .as_ref()
                        .map_or(String::new(), |f| format!("  full {:.2}/{:.2}/{:.2}", f.avg10, f.avg60, f.avg300));
                    format!("{name} some {:.2}/{:.2}/{:.2}{full}", pr.some.avg10, pr.some.avg60, pr.some.avg300)
                }
                None => format!("{name} -"),
            }
        };
        let _ = writeln!(o, "psi     {}  (% stalled, avg 10/60/300 s)", line("cpu", &p.cpu));
        let _ = writeln!(o, "        {}", line("memory", &p.memory));
        let _ = writeln!(o, "        {}", line("io", &p.io));
    }
    o
}

#[cfg(test)]
mod tests {
    #[test]
    fn pressure() {
        let p = super::parse_pressure(
            "some avg10=1.50 avg60=0.20 avg300=0.00 total=1234\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=7\n",
        );
        assert_eq!(p.some.avg10, 1.5);
        assert_eq!(p.some.total_usec, 1234);
        assert_eq!(p.full.unwrap().total_usec, 7);
    }

    #[test]
    fn human_bytes() {
        assert_eq!(super::bytes(512), "512 B");
        assert_eq!(super::bytes(50 << 20), "50.0 MiB");
    }
}
