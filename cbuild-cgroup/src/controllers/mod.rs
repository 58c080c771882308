//! One module per controller. Each knows its v1 and its v2 file names and turns [`Limits`] into writes
//! (`apply`) and files into [`crate::stats`] numbers (`stats`), so v1/v2 differences live in one place.

pub mod cpu;
pub mod cpuset;
pub mod devices;
pub mod hugetlb;
pub mod io;
pub mod memory;
pub mod net;
pub mod pids;
pub mod rdma;

use crate::error::Result;
use crate::fsutil;
use crate::layout::Host;
use crate::limits::Limits;
use std::path::{Path, PathBuf};

/// A cgroup's directory in the hierarchy of one controller, and which cgroup version that is.
#[derive(Debug, Clone, Copy)]
pub struct Dir<'a> {
    pub path: &'a Path,
    pub v2: bool,
}

impl Dir<'_> {
    pub fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

/// Writes limit files, optionally remembering each file's previous value (and the device policy
/// replaced) so a failed `set` can put the cgroup back as it was.
pub struct Writer {
    saved: Option<Vec<Saved>>,
}

/// One thing a [`Writer`] changed, in the order changed.
enum Saved {
    File(PathBuf, String),
    Devices(devices::Undo),
}

impl Writer {
    /// For a cgroup this invocation created: nothing to restore (the directory is removed on failure).
    pub fn fresh() -> Writer {
        Writer { saved: None }
    }

    /// For an existing cgroup: remember old values.
    pub fn restoring() -> Writer {
        Writer { saved: Some(Vec::new()) }
    }

    pub fn write(&mut self, path: &Path, value: &str) -> Result<()> {
        if let Some(saved) = &mut self.saved {
            if let Some(old) = fsutil::read_opt(path)? {
                // Already so: no write (an `exec` that reuses a cgroup re-applies the same limits on
                // every start; some limit writes take locks or trigger reclaim).
                if same_value(&old, value) {
                    return Ok(());
                }
                saved.push(Saved::File(path.to_path_buf(), old.trim().to_string()));
            }
        }
        fsutil::write(path, value)
    }

    /// Set one line of a file that holds a line per key (a device's throttle, `default` of a weight),
    /// remembering that key's old line, or `unset` when it had none. The whole old file cannot be the
    /// undo: written back, it would set the other keys' lines again and leave this one's new value (an
    /// empty file is no write at all).
    pub fn write_keyed(&mut self, path: &Path, key: &str, value: &str, unset: &str) -> Result<()> {
        if let Some(saved) = &mut self.saved {
            if let Some(text) = fsutil::read_opt(path)? {
                let old = text
                    .lines()
                    .find(|l| l.split_whitespace().next() == Some(key))
                    .map_or(unset, str::trim)
                    .to_string();
                // The kernel prints every field of a line, `value` may set only some of them.
                let have: Vec<&str> = old.split_whitespace().collect();
                if value.split_whitespace().all(|t| have.contains(&t)) {
                    return Ok(());
                }
                saved.push(Saved::File(path.to_path_buf(), old));
            }
        }
        fsutil::write(path, value)
    }

    /// Write `value` to a file that reads back as more than it takes (v1 `memory.oom_control` shows
    /// three counters and takes one number), remembering as the undo what `current` makes of its text.
    pub fn write_read_as(
        &mut self,
        path: &Path,
        value: &str,
        current: impl FnOnce(&str) -> Option<String>,
    ) -> Result<()> {
        if let Some(saved) = &mut self.saved {
            if let Some(old) = fsutil::read_opt(path)?.as_deref().and_then(current) {
                if old == value.trim() {
                    return Ok(());
                }
                saved.push(Saved::File(path.to_path_buf(), old));
            }
        }
        fsutil::write(path, value)
    }

    /// Replace the device policy ([`devices::apply`]), remembering the one it replaced.
    pub fn devices(&mut self, d: Dir, rules: &[devices::Rule]) -> Result<()> {
        let undo = devices::apply(d, rules)?;
        if let Some(saved) = &mut self.saved {
            saved.push(Saved::Devices(undo));
        }
        Ok(())
    }

    /// Put back what was written, newest first. Failures are reported, not returned: this runs while
    /// another error is already on its way out.
    pub fn restore(self) {
        for saved in self.saved.unwrap_or_default().into_iter().rev() {
            let r = match saved {
                // A whole file of several lines (or none) is not one value a write can put back; the
                // files holding a line per key are saved line by line (`write_keyed`).
                Saved::File(_, old) if old.contains('\n') || old.is_empty() => continue,
                Saved::File(path, old) => fsutil::write(&path, &old),
                Saved::Devices(undo) => undo.restore(),
            };
            if let Err(e) = r {
                crate::log::warn(format!("undo: {e}"));
            }
        }
    }
}

/// Whether a file's current content already is `new`: textually, or both "no limit" (v1 reads back
/// -1 as a huge number, v2 as `max`).
fn same_value(old: &str, new: &str) -> bool {
    let (old, new) = (old.trim(), new.trim());
    if old == new {
        return true;
    }
    let unlimited = |s: &str| {
        s == "-1" || s == "max" || (s.parse::<u64>().is_ok() && crate::convert::parse_kernel_limit(s).is_none())
    };
    unlimited(old) && unlimited(new)
}

/// Apply every limit to the cgroup whose directories (one per hierarchy, in `host` order) are `dirs`.
pub fn apply(host: &Host, dirs: &[PathBuf], l: &Limits, w: &mut Writer) -> Result<()> {
    let dir =
        |ctrl: &str| host.hierarchy_of(ctrl).map(|i| Dir { path: &dirs[i], v2: host.hierarchies[i].version == 2 });
    // cpuset first: a v1 cpuset must have cpus and mems before anything else joins it.
    if let Some(d) = dir("cpuset") {
        cpuset::apply(d, l, w)?;
    }
    if let Some(d) = dir("memory") {
        memory::apply(d, l, w)?;
    }
    if let Some(d) = dir("cpu") {
        cpu::apply(d, l, w)?;
    }
    if let Some(d) = dir("pids") {
        pids::apply(d, l, w)?;
    }
    if let Some(d) = dir("io").or_else(|| dir("blkio")) {
        io::apply(d, l, w)?;
    }
    if let Some(d) = dir("hugetlb") {
        hugetlb::apply(d, l, w)?;
    }
    if let Some(d) = dir("rdma") {
        rdma::apply(d, l, w)?;
    }
    if let Some(d) = dir("net_cls") {
        net::apply_cls(d, l, w)?;
    }
    if let Some(d) = dir("net_prio") {
        net::apply_prio(d, l, w)?;
    }
    // The v1 devices controller, or on v2 (where it is a BPF program, not a controller) the v2 dir.
    if let Some(rules) = &l.devices {
        if let Some(d) = dir("devices").or_else(|| host.v2().map(|i| Dir { path: &dirs[i], v2: true })) {
            w.devices(d, rules)?;
        }
    }
    if !l.unified.is_empty() {
        if let Some(i) = host.v2() {
            for (k, v) in &l.unified {
                if k == "io.max" {
                    for line in v.lines().filter(|l| !l.trim().is_empty()) {
                        io::write_max_line(w, &dirs[i].join(k), line)?;
                    }
                } else {
                    w.write(&dirs[i].join(k), v)?;
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn same_values() {
        assert!(super::same_value("52428800\n", "52428800"));
        assert!(super::same_value("9223372036854771712\n", "-1"));
        assert!(super::same_value("max\n", "max"));
        assert!(!super::same_value("max 100000\n", "50000 100000"));
        assert!(!super::same_value("1024\n", "512"));
    }
}
