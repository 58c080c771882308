//! Pure conversions between what users type (Docker's flags), cgroup v1 values and cgroup v2 values.
//! No I/O here, so every formula is unit-tested.

/// v1 writes "unlimited" as the largest page-aligned i64; anything this large means "no limit".
const V1_UNLIMITED_FLOOR: u64 = 1 << 62;

/// A limit: a number or no limit (`max`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    Max,
    Value(u64),
}

impl Limit {
    /// The v2 spelling: a number or `max`.
    pub fn v2(self) -> String {
        match self {
            Limit::Max => "max".into(),
            Limit::Value(v) => v.to_string(),
        }
    }

    /// The v1 spelling: a number or -1.
    pub fn v1(self) -> String {
        match self {
            Limit::Max => "-1".into(),
            Limit::Value(v) => v.to_string(),
        }
    }

    pub fn value(self) -> Option<u64> {
        match self {
            Limit::Max => None,
            Limit::Value(v) => Some(v),
        }
    }
}

/// A number as the kernel prints a limit: `max`, v1's huge "unlimited", `-1` → None.
pub fn parse_kernel_limit(s: &str) -> Option<u64> {
    if s == "max" || s == "-1" {
        return None;
    }
    s.parse::<u64>().ok().filter(|&v| v < V1_UNLIMITED_FLOOR)
}

/// A size as Docker takes it: bytes, or a number with a b/k/m/g/t suffix (binary units, case-insensitive,
/// an optional trailing `b` as in `512mb`), or `max`/`-1` for no limit. Zero is rejected: a zero memory
/// limit is never what anyone means.
pub fn parse_size(s: &str) -> Result<Limit, String> {
    let t = s.trim();
    if t.eq_ignore_ascii_case("max") || t == "-1" {
        return Ok(Limit::Max);
    }
    let lower = t.to_ascii_lowercase();
    // A decimal fraction too, as docker takes it (`1.5g`).
    let digits_end = lower.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(lower.len());
    let (num, suffix) = lower.split_at(digits_end);
    let (num, frac) = match num.split_once('.') {
        Some((_, f)) if f.is_empty() || !f.bytes().all(|b| b.is_ascii_digit()) => {
            return Err(format!("{t:?} is not a size (a number with an optional k, m, g or t suffix, or max)"))
        }
        Some((n, f)) => (n, f),
        None => (num, ""),
    };
    if num.is_empty() {
        return Err(if t.starts_with('-') {
            format!("{t:?} is negative")
        } else {
            format!("{t:?} is not a size (a number with an optional k, m, g or t suffix, or max)")
        });
    }
    let mult: u64 = match suffix {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => return Err(format!("unknown size suffix {suffix:?} in {t:?} (use k, m, g or t)")),
    };
    let n: u64 = num.parse().map_err(|_| format!("{t:?} is too large"))?;
    let v = n.checked_mul(mult).ok_or_else(|| format!("{t:?} is too large"))?;
    // The fraction's bytes, rounded down (exact: integers, not floats).
    let frac = frac.get(..frac.len().min(18)).unwrap_or("");
    let part = if frac.is_empty() {
        0
    } else {
        u128::from(mult) * frac.parse::<u128>().unwrap_or(0) / 10u128.pow(frac.len() as u32)
    };
    let v = v.checked_add(part as u64).ok_or_else(|| format!("{t:?} is too large"))?;
    if v == 0 {
        return Err(format!("{t:?} is zero"));
    }
    if v >= V1_UNLIMITED_FLOOR {
        return Err(format!("{t:?} is too large (use max for no limit)"));
    }
    Ok(Limit::Value(v))
}

/// cpu.shares (v1, 2..=262144) → cpu.weight (v2, 1..=10000), the formula runc (≥ 1.3) and crun share:
/// a quadratic in log2(shares) that maps 2→1, 1024→100 and 262144→10000 exactly, so the default share
/// maps to the default weight (the old linear formula mapped 1024 to 39).
pub fn shares_to_weight(shares: u64) -> u64 {
    if shares == 0 {
        return 0;
    }
    let shares = shares.clamp(2, 262_144) as f64;
    let l = shares.log2();
    let exponent = (l * l + 125.0 * l) / 612.0 - 7.0 / 34.0;
    let w = 10f64.powf(exponent).ceil() as u64;
    w.clamp(1, 10_000)
}

/// cpu.weight → cpu.shares: the inverse of [`shares_to_weight`] (solve the quadratic for log2(shares)),
/// used when `--cpu-weight` is given on a v1 host.
pub fn weight_to_shares(weight: u64) -> u64 {
    let w = weight.clamp(1, 10_000) as f64;
    let c = 612.0 * (w.log10() + 7.0 / 34.0);
    let l = (-125.0 + (125.0f64 * 125.0 + 4.0 * c).sqrt()) / 2.0;
    let mut s = (2f64.powf(l).round() as u64).clamp(2, 262_144);
    // Land on a share value that converts back to the same weight (the forward formula rounds up).
    while s > 2 && shares_to_weight(s) > weight {
        s -= 1;
    }
    while s < 262_144 && shares_to_weight(s) < weight {
        s += 1;
    }
    s
}

/// blkio.weight (v1 and Docker's --blkio-weight, 10..=1000) → io.weight (v2, 1..=10000), runc's linear map.
pub fn blkio_to_io_weight(w: u64) -> u64 {
    1 + (w.saturating_sub(10)) * 9999 / 990
}

/// `--cpus 1.5` with a period → quota in µs (`1.5` × 100000 = 150000), as Docker computes it. Too
/// small a result (under the kernel's 1000 µs) is refused by the caller, never raised: that would give
/// more CPU than asked for.
pub fn cpus_to_quota(cpus: f64, period_us: u64) -> u64 {
    (cpus * period_us as f64).round() as u64
}

/// Why a memory+swap limit cannot go with a memory limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemswError {
    /// A memory+swap limit with no memory limit.
    NoMemoryLimit,
    /// Below the memory limit.
    BelowMemory,
}

impl MemswError {
    /// The reason, `memory` naming the memory limit as the caller knows it (`--memory 2g`): the numbers
    /// this module sees are bytes, not what the user typed.
    pub fn reason(self, memory: &str) -> String {
        match self {
            MemswError::NoMemoryLimit => {
                format!("needs a memory limit, and {memory} is none (it counts memory + swap)")
            }
            MemswError::BelowMemory => format!("is smaller than {memory} (it counts memory + swap)"),
        }
    }
}

/// Docker's `--memory-swap` is memory + swap; v2's memory.swap.max is swap alone.
/// Returns the v2 swap limit for a memory limit and a memory+swap limit.
pub fn memsw_to_swap(memory: Limit, memsw: Limit) -> Result<Limit, MemswError> {
    match (memory, memsw) {
        (_, Limit::Max) => Ok(Limit::Max),
        (Limit::Max, Limit::Value(_)) => Err(MemswError::NoMemoryLimit),
        (Limit::Value(m), Limit::Value(s)) if s < m => Err(MemswError::BelowMemory),
        (Limit::Value(m), Limit::Value(s)) => Ok(Limit::Value(s - m)),
    }
}

/// The reverse, for reporting: a v1 memory+swap limit → the swap-only limit `stat` shows on every layout.
pub fn swap_from_memsw(memory: Option<u64>, memsw: Option<u64>) -> Option<u64> {
    match (memory, memsw) {
        (Some(m), Some(s)) => Some(s.saturating_sub(m)),
        _ => None,
    }
}

/// Parse a cpu or memory-node list (`0-3,5`) into sorted unique ids. Rejects empty lists, reversed
/// ranges and anything but digits, commas and dashes.
pub fn parse_id_list(s: &str) -> Result<Vec<u32>, String> {
    let mut out = Vec::new();
    let t = s.trim();
    if t.is_empty() {
        return Err("empty list".into());
    }
    for part in t.split(',') {
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (a, b),
            None => (part, part),
        };
        let a: u32 = a.trim().parse().map_err(|_| format!("{part:?} is not a number or a range"))?;
        let b: u32 = b.trim().parse().map_err(|_| format!("{part:?} is not a number or a range"))?;
        if a > b {
            return Err(format!("{part:?} is a reversed range"));
        }
        if b - a > 65536 {
            return Err(format!("{part:?} is too large a range"));
        }
        out.extend(a..=b);
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// The kernel's list format for sorted ids (`0-3,5`), empty for none.
pub fn format_id_list(ids: &[u32]) -> String {
    let mut parts = Vec::new();
    let mut i = 0;
    while i < ids.len() {
        let start = ids[i];
        let mut end = start;
        while i + 1 < ids.len() && ids[i + 1] == end + 1 {
            i += 1;
            end = ids[i];
        }
        parts.push(if start == end { start.to_string() } else { format!("{start}-{end}") });
        i += 1;
    }
    parts.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_to_weight_matches_runc_published_values() {
        assert_eq!(shares_to_weight(512), 59);
        assert_eq!(shares_to_weight(1024), 100);
        assert_eq!(shares_to_weight(2048), 174);
        assert_eq!(shares_to_weight(4096), 303);
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(262_144), 10_000);
        assert_eq!(shares_to_weight(0), 0);
    }

    #[test]
    fn weight_to_shares_inverts() {
        assert_eq!(weight_to_shares(100), 1024);
        assert_eq!(weight_to_shares(1), 2);
        assert_eq!(weight_to_shares(10_000), 262_144);
        for s in [2u64, 100, 512, 1024, 2048, 4096, 100_000, 262_144] {
            let w = shares_to_weight(s);
            // Round trip within the weight's resolution.
            assert_eq!(shares_to_weight(weight_to_shares(w)), w, "shares {s}");
        }
    }

    #[test]
    fn blkio_weight_maps_like_runc() {
        assert_eq!(blkio_to_io_weight(10), 1);
        assert_eq!(blkio_to_io_weight(1000), 10_000);
        assert_eq!(blkio_to_io_weight(500), 1 + 490 * 9999 / 990);
    }

    #[test]
    fn cpus_to_quota_like_docker() {
        assert_eq!(cpus_to_quota(1.5, 100_000), 150_000);
        assert_eq!(cpus_to_quota(0.2, 100_000), 20_000);
        assert_eq!(cpus_to_quota(0.5, 50_000), 25_000);
        assert_eq!(cpus_to_quota(0.01, 100_000), 1000);
    }

    #[test]
    fn swap_conversion() {
        let m = |v| Limit::Value(v);
        assert_eq!(memsw_to_swap(m(100), m(300)), Ok(m(200)));
        assert_eq!(memsw_to_swap(m(100), m(100)), Ok(m(0)));
        assert_eq!(memsw_to_swap(m(100), Limit::Max), Ok(Limit::Max));
        assert_eq!(memsw_to_swap(m(100), m(50)), Err(MemswError::BelowMemory));
        assert_eq!(memsw_to_swap(Limit::Max, m(50)), Err(MemswError::NoMemoryLimit));
        assert_eq!(swap_from_memsw(Some(100), Some(300)), Some(200));
        assert_eq!(swap_from_memsw(Some(100), None), None);
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("50M"), Ok(Limit::Value(50 << 20)));
        assert_eq!(parse_size("512mb"), Ok(Limit::Value(512 << 20)));
        assert_eq!(parse_size("1g"), Ok(Limit::Value(1 << 30)));
        assert_eq!(parse_size("4096"), Ok(Limit::Value(4096)));
        assert_eq!(parse_size("2k"), Ok(Limit::Value(2048)));
        assert_eq!(parse_size("max"), Ok(Limit::Max));
        assert_eq!(parse_size("-1"), Ok(Limit::Max));
        assert!(parse_size("10x").unwrap_err().contains("unknown size suffix"));
        assert!(parse_size("-5M").unwrap_err().contains("negative"));
        assert_eq!(parse_size("1.5g"), Ok(Limit::Value(3 << 29)));
        assert_eq!(parse_size("0.5k"), Ok(Limit::Value(512)));
        assert_eq!(parse_size("2.25M"), Ok(Limit::Value(9 << 18)));
        for bad in ["1.", ".5g", "1..5g", "1.5.g", "1.x"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
        assert!(parse_size("0").unwrap_err().contains("zero"));
        assert!(parse_size("").is_err());
        assert!(parse_size("99999999999999999999").is_err());
        assert!(parse_size("9000000t").is_err());
    }

    #[test]
    fn kernel_limits() {
        assert_eq!(parse_kernel_limit("max"), None);
        assert_eq!(parse_kernel_limit("9223372036854771712"), None);
        assert_eq!(parse_kernel_limit("52428800"), Some(52_428_800));
        assert_eq!(parse_kernel_limit("-1"), None);
    }

    #[test]
    fn id_lists() {
        assert_eq!(parse_id_list("0-3,5"), Ok(vec![0, 1, 2, 3, 5]));
        assert_eq!(parse_id_list("1,1,0"), Ok(vec![0, 1]));
        assert!(parse_id_list("3-1").is_err());
        assert!(parse_id_list("a").is_err());
        assert!(parse_id_list("").is_err());
        assert_eq!(format_id_list(&[0, 1, 2, 3, 5]), "0-3,5");
        assert_eq!(format_id_list(&[]), "");
    }
}
