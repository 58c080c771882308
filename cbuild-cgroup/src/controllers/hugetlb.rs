//! hugetlb: a limit per huge page size (OCI `hugepageLimits`).
//!
//! v1 `hugetlb.<size>.limit_in_bytes`, v2 `hugetlb.<size>.max`, with `<size>` as the kernel names it
//! (`2MB`, `1GB`, `64KB`). Where the kernel also accounts reservations (≥ 5.7: `.rsvd.` files), the
//! same limit goes there too, as runc does: a mapping whose pages are reserved but not yet faulted in
//! then fails at mmap, not with SIGBUS at its first touch.

use super::{Dir, Writer};
use crate::error::Result;
use crate::limits::Limits;

pub fn apply(d: Dir, l: &Limits, w: &mut Writer) -> Result<()> {
    let suffix = if d.v2 { "max" } else { "limit_in_bytes" };
    for (size, limit) in &l.hugetlb {
        let field = format!("linux.resources.hugepageLimits {size}");
        w.write(&d.file(&format!("hugetlb.{size}.{suffix}")), &limit.to_string()).map_err(|e| e.for_field(&field))?;
        let rsvd = d.file(&format!("hugetlb.{size}.rsvd.{suffix}"));
        if rsvd.exists() {
            w.write(&rsvd, &limit.to_string()).map_err(|e| e.for_field(&field))?;
        }
    }
    Ok(())
}

/// The huge page sizes this kernel has, named as its hugetlb files name them.
pub fn host_sizes() -> Vec<String> {
    let Ok(rd) = std::fs::read_dir("/sys/kernel/mm/hugepages") else { return Vec::new() };
    let mut sizes: Vec<u64> = rd
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_prefix("hugepages-")?.strip_suffix("kB")?.parse().ok()
        })
        .collect();
    sizes.sort_unstable();
    sizes.into_iter().map(|kb| size_name(kb << 10)).collect()
}

/// The kernel's name for a page size (mm/hugetlb_cgroup.c: whole GB, else MB, else KB).
pub fn size_name(bytes: u64) -> String {
    if bytes >= 1 << 30 {
        format!("{}GB", bytes >> 30)
    } else if bytes >= 1 << 20 {
        format!("{}MB", bytes >> 20)
    } else {
        format!("{}KB", bytes >> 10)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes_are_named_as_the_kernel_names_them() {
        assert_eq!(super::size_name(64 << 10), "64KB");
        assert_eq!(super::size_name(2 << 20), "2MB");
        assert_eq!(super::size_name(32 << 20), "32MB");
        assert_eq!(super::size_name(1 << 30), "1GB");
        assert_eq!(super::size_name(16 << 30), "16GB");
    }
}
