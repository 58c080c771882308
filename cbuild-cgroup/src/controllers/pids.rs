//! pids: `pids.max` (same name on v1 and v2); current count and how often fork hit the limit
//! (`pids.events` `max`).

use super::{Dir, Writer};
use crate::error::Result;
use crate::fsutil::{self, kv};
use crate::limits::Limits;
use serde::Serialize;

pub fn apply(d: Dir, l: &Limits, w: &mut Writer) -> Result<()> {
    if let Some(p) = l.pids {
        // "max" on both versions (v1 pids also spells no limit "max").
        w.write(&d.file("pids.max"), &p.v2())?;
    }
    Ok(())
}

#[derive(Debug, Default, Serialize)]
pub struct PidsStats {
    pub current: u64,
    /// Highest count seen (`pids.peak`, kernel ≥ 6.10; None before).
    pub peak: Option<u64>,
    pub limit: Option<u64>,
    /// fork/clone failures because the limit was reached.
    pub limit_hits: u64,
}

pub fn stats(d: Dir) -> Result<PidsStats> {
    Ok(PidsStats {
        current: fsutil::read_u64_opt(&d.file("pids.current"))?.unwrap_or(0),
        peak: fsutil::read_u64_opt(&d.file("pids.peak"))?,
        limit: fsutil::read_u64_opt(&d.file("pids.max"))?,
        limit_hits: limit_hits(d)?,
    })
}

pub fn limit_hits(d: Dir) -> Result<u64> {
    let ev = fsutil::read_opt(&d.file("pids.events"))?.unwrap_or_default();
    Ok(kv(&ev, "max").unwrap_or(0))
}
