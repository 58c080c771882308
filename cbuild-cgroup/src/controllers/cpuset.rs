//! cpuset: `cpuset.cpus` / `cpuset.mems` (same names on v1 and v2).
//!
//! A new v1 cpuset starts with empty cpus and mems and refuses tasks until both are set, so a fresh
//! directory inherits its parent's values ([`inherit_v1`]); v2 inherits by itself.

use super::{Dir, Writer};
use crate::convert::format_id_list;
use crate::error::Result;
use crate::fsutil;
use crate::limits::Limits;
use std::path::Path;

pub fn apply(d: Dir, l: &Limits, w: &mut Writer) -> Result<()> {
    // mems before cpus does not matter to the kernel; both are checked against the parent.
    if let Some(cpus) = &l.cpuset_cpus {
        w.write(&d.file("cpuset.cpus"), &format_id_list(cpus))?;
    }
    if let Some(mems) = &l.cpuset_mems {
        w.write(&d.file("cpuset.mems"), &format_id_list(mems))?;
    }
    Ok(())
}

/// Copy cpus and mems from the parent into a fresh v1 cpuset directory whose own are empty.
/// A parent that is empty too (a `cbuild/` someone made by hand) is filled first.
pub fn inherit_v1(dir: &Path) -> Result<()> {
    for f in ["cpuset.cpus", "cpuset.mems"] {
        inherit_file(dir, f, 0)?;
    }
    Ok(())
}

fn inherit_file(dir: &Path, f: &str, depth: usize) -> Result<String> {
    let own = fsutil::read(&dir.join(f))?.trim().to_string();
    if !own.is_empty() || depth > 8 {
        return Ok(own);
    }
    let Some(parent) = dir.parent().filter(|p| p.join(f).exists()) else { return Ok(own) };
    let from = inherit_file(parent, f, depth + 1)?;
    fsutil::write(&dir.join(f), &from)?;
    Ok(from)
}
