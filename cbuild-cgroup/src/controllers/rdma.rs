//! rdma: per-device limits on HCA handles and objects (OCI `rdma`).
//!
//! `rdma.max` on v1 and v2 alike, one line per device: `mlx5_0 hca_handle=2 hca_object=2000`; a device
//! without a line is unlimited, which `hca_handle=max hca_object=max` puts back.

use super::{Dir, Writer};
use crate::error::Result;
use crate::limits::Limits;

pub fn apply(d: Dir, l: &Limits, w: &mut Writer) -> Result<()> {
    for (dev, r) in &l.rdma {
        let mut line = dev.clone();
        for (k, v) in [("hca_handle", r.hca_handles), ("hca_object", r.hca_objects)] {
            if let Some(v) = v {
                line.push_str(&format!(" {k}={v}"));
            }
        }
        if line == *dev {
            continue;
        }
        let unset = format!("{dev} hca_handle=max hca_object=max");
        w.write_keyed(&d.file("rdma.max"), dev, &line, &unset)
            .map_err(|e| e.for_field(&format!("linux.resources.rdma.{dev}")))?;
    }
    Ok(())
}
