//! io (v2) / blkio (v1): weight and per-device throttles; bytes and operations per device.
//!
//! v1 `blkio.weight` (CFQ, gone from modern kernels) or `blkio.bfq.weight`, and one
//! `blkio.throttle.{read,write}_{bps,iops}_device` file per throttle with `MAJ:MIN N` (0 = no limit).
//! v2 `io.bfq.weight` (same 10..1000 scale) or `io.weight` (1..10000, converted), and one `io.max` line
//! per device: `MAJ:MIN rbps=N wbps=max riops=.. wiops=..`.

use super::{Dir, Writer};
use crate::convert::{self, Limit};
use crate::error::{Error, Result};
use crate::fsutil;
use crate::limits::Limits;
use serde::Serialize;

pub fn apply(d: Dir, l: &Limits, w: &mut Writer) -> Result<()> {
    if let Some(weight) = l.io_weight {
        let (bfq, plain) = if d.v2 { ("io.bfq.weight", "io.weight") } else { ("blkio.bfq.weight", "blkio.weight") };
        let (file, v2_weight) = if d.file(bfq).exists() {
            (d.file(bfq), weight)
        } else if d.file(plain).exists() {
            (d.file(plain), if d.v2 { convert::blkio_to_io_weight(weight) } else { weight })
        } else {
            return Err(Error::bad(
                "limits",
                format!("--io-weight {weight}"),
                "this kernel has no io weight (no BFQ or iocost)",
            ));
        };
        if d.v2 {
            // v2 weight files list per-device weights after the `default` line, which alone is set here.
            w.write_keyed(&file, "default", &format!("default {v2_weight}"), "")?;
        } else {
            w.write(&file, &weight.to_string())?;
        }
    }
    apply_weight_devices(d, l, w)?;
    for io in &l.io_max {
        let dev = format!("{}:{}", io.major, io.minor);
        if d.v2 {
            let mut line = dev.clone();
            for (k, v) in [("rbps", io.rbps), ("wbps", io.wbps), ("riops", io.riops), ("wiops", io.wiops)] {
                if let Some(v) = v {
                    line.push_str(&format!(" {k}={}", v.v2()));
                }
            }
            write_max_line(w, &d.file("io.max"), &line)?;
        } else {
            for (file, v) in [
                ("blkio.throttle.read_bps_device", io.rbps),
                ("blkio.throttle.write_bps_device", io.wbps),
                ("blkio.throttle.read_iops_device", io.riops),
                ("blkio.throttle.write_iops_device", io.wiops),
            ] {
                if let Some(v) = v {
                    let n = match v {
                        Limit::Max => 0,
                        Limit::Value(n) => n,
                    };
                    // A device without a line has no throttle, which `MAJ:MIN 0` puts back.
                    w.write_keyed(&d.file(file), &dev, &format!("{dev} {n}"), &format!("{dev} 0"))?;
                }
            }
        }
    }
    Ok(())
}

/// OCI `blockIO.weightDevice` (and CFQ's leaf weights). A device's weight goes where the kernel keeps
/// one: v1 `blkio.bfq.weight_device` (BFQ, ≥ 5.4) or `blkio.weight_device` (CFQ, before 5.0); v2
/// `io.bfq.weight` (same 10..1000 scale) or `io.weight` (iocost, converted as `--io-weight` is). Either
/// way the kernel takes it only for a device whose scheduler is BFQ, or that has iocost enabled: its
/// refusal is the error, with the field named, since a weight that silently does nothing is what this
/// replaces. A device without a line gets `MAJ:MIN default` (CFQ: `MAJ:MIN 0`) back on undo.
fn apply_weight_devices(d: Dir, l: &Limits, w: &mut Writer) -> Result<()> {
    for wd in &l.io_weight_device {
        let dev = format!("{}:{}", wd.major, wd.minor);
        let field = format!("linux.resources.blockIO.weightDevice {dev}");
        if let Some(weight) = wd.weight {
            let (bfq, plain) =
                if d.v2 { ("io.bfq.weight", "io.weight") } else { ("blkio.bfq.weight_device", "blkio.weight_device") };
            let (file, value, unset, hint) = if d.file(bfq).exists() {
                let hint = format!(
                    "a BFQ weight applies only to a device scheduled by bfq (/sys/dev/block/{dev}/queue/scheduler)"
                );
                (d.file(bfq), weight, format!("{dev} default"), hint)
            } else if d.file(plain).exists() && d.v2 {
                let hint =
                    "a per-device io.weight needs iocost enabled on that device (io.cost.qos in the root cgroup)";
                (d.file(plain), convert::blkio_to_io_weight(weight), format!("{dev} default"), hint.to_string())
            } else if d.file(plain).exists() {
                (d.file(plain), weight, format!("{dev} 0"), String::new())
            } else {
                return Err(Error::bad(
                    "limits",
                    field,
                    format!("this kernel has no per-device io weight (neither {bfq} nor {plain})"),
                )
                .with_hint("BFQ's weights need the bfq scheduler built with CONFIG_BFQ_GROUP_IOSCHED"));
            };
            w.write_keyed(&file, &dev, &format!("{dev} {value}"), &unset).map_err(|e| {
                let e = e.for_field(&field);
                if e.errno() == Some(libc::EOPNOTSUPP) && !hint.is_empty() {
                    e.with_hint(hint)
                } else {
                    e
                }
            })?;
        }
        if let Some(leaf) = wd.leaf_weight {
            let file = leaf_weight_file(d, "blkio.leaf_weight_device", &field)?;
            w.write_keyed(&file, &dev, &format!("{dev} {leaf}"), &format!("{dev} 0"))
                .map_err(|e| e.for_field(&field))?;
        }
    }
    if let Some(leaf) = l.io_leaf_weight {
        let file = leaf_weight_file(d, "blkio.leaf_weight", "linux.resources.blockIO.leafWeight")?;
        w.write(&file, &leaf.to_string()).map_err(|e| e.for_field("linux.resources.blockIO.leafWeight"))?;
    }
    Ok(())
}

/// CFQ's leaf weight file, on v1 kernels that still have CFQ (before 5.0); refused everywhere else.
fn leaf_weight_file(d: Dir, name: &str, field: &str) -> Result<std::path::PathBuf> {
    let file = d.file(name);
    if d.v2 || !file.exists() {
        return Err(Error::bad("limits", field, format!("this kernel has no {name} (CFQ's, gone since Linux 5.0)")));
    }
    Ok(file)
}

/// One device's line of v2 `io.max` (`MAJ:MIN rbps=.. ...`); a device without a line has no limit,
/// which all four keys at `max` put back.
pub fn write_max_line(w: &mut Writer, path: &std::path::Path, line: &str) -> Result<()> {
    let dev = line.split_whitespace().next().unwrap_or_default();
    w.write_keyed(path, dev, line, &format!("{dev} rbps=max wbps=max riops=max wiops=max"))
}

#[derive(Debug, Default, Serialize)]
pub struct IoDevice {
    pub device: String,
    pub read_bytes: u64,
    pub write_bytes: u64,
    pub read_ios: u64,
    pub write_ios: u64,
}

#[derive(Debug, Default, Serialize)]
pub struct IoStats {
    pub read_bytes: u64,
    pub write_bytes: u64,
    pub read_ios: u64,
    pub write_ios: u64,
    pub devices: Vec<IoDevice>,
}

pub fn stats(d: Dir) -> Result<IoStats> {
    let devices = if d.v2 {
        parse_io_stat(&fsutil::read_opt(&d.file("io.stat"))?.unwrap_or_default())
    } else {
        parse_blkio(
            &fsutil::read_opt(&d.file("blkio.throttle.io_service_bytes_recursive"))?.unwrap_or_default(),
            &fsutil::read_opt(&d.file("blkio.throttle.io_serviced_recursive"))?.unwrap_or_default(),
        )
    };
    let mut s = IoStats::default();
    for e in &devices {
        s.read_bytes += e.read_bytes;
        s.write_bytes += e.write_bytes;
        s.read_ios += e.read_ios;
        s.write_ios += e.write_ios;
    }
    s.devices = devices;
    Ok(s)
}

/// v2 io.stat: `8:0 rbytes=1 wbytes=2 rios=3 wios=4 dbytes=0 dios=0`, one line per device.
pub fn parse_io_stat(text: &str) -> Vec<IoDevice> {
    let mut devices = Vec::new();
    for line in text.lines() {
        let mut it = line.split_whitespace();
        let Some(dev) = it.next() else { continue };
        let mut e = IoDevice { device: dev.to_string(), ..Default::default() };
        for kv in it {
            let Some((k, v)) = kv.split_once('=') else { continue };
            let v: u64 = v.parse().unwrap_or(0);
            match k {
                "rbytes" => e.read_bytes = v,
                "wbytes" => e.write_bytes = v,
                "rios" => e.read_ios = v,
                "wios" => e.write_ios = v,
                _ => {}
            }
        }
        devices.push(e);
    }
    devices
}

/// v1 blkio.throttle.io_service_bytes_recursive and io_serviced_recursive: `8:0 Read 4096` lines per
/// device and operation, and a `Total` line to skip.
pub fn parse_blkio(bytes: &str, ios: &str) -> Vec<IoDevice> {
    let mut devices: Vec<IoDevice> = Vec::new();
    for (text, is_bytes) in [(bytes, true), (ios, false)] {
        for line in text.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() != 3 {
                continue;
            }
            let v: u64 = f[2].parse().unwrap_or(0);
            let i = match devices.iter().position(|e| e.device == f[0]) {
                Some(i) => i,
                None => {
                    devices.push(IoDevice { device: f[0].to_string(), ..Default::default() });
                    devices.len() - 1
                }
            };
            let e = &mut devices[i];
            match (f[1], is_bytes) {
                ("Read", true) => e.read_bytes = v,
                ("Write", true) => e.write_bytes = v,
                ("Read", false) => e.read_ios = v,
                ("Write", false) => e.write_ios = v,
                _ => {}
            }
        }
    }
    devices
}

#[cfg(test)]
mod tests {
    #[test]
    fn v2_io_stat() {
        let d = super::parse_io_stat(
            "8:0 rbytes=4096 wbytes=8192 rios=1 wios=2 dbytes=0 dios=0\n7:0 rbytes=1 wbytes=0 rios=1 wios=0\n",
        );
        assert_eq!(d.len(), 2);
        assert_eq!((d[0].read_bytes, d[0].write_bytes, d[0].read_ios, d[0].write_ios), (4096, 8192, 1, 2));
        assert_eq!(d[1].device, "7:0");
    }

    #[test]
    fn v1_blkio() {
        let d = super::parse_blkio(
            "8:0 Read 4096\n8:0 Write 512\n8:0 Sync 0\n8:0 Total 4608\nTotal 4608\n",
            "8:0 Read 1\n8:0 Write 3\nTotal 4\n",
        );
        assert_eq!(d.len(), 1);
        assert_eq!((d[0].read_bytes, d[0].write_bytes, d[0].read_ios, d[0].write_ios), (4096, 512, 1, 3));
    }
}
