//! net_cls and net_prio (OCI `network`): the class id a group's packets carry (for tc filters and
//! iptables' `-m cgroup`), and a priority per interface for the group's sockets.
//!
//! cgroup v1 only: `net_cls.classid` (a number; the kernel shows it in decimal) and
//! `net_prio.ifpriomap`, which takes one `IFNAME PRIO` line per write and shows a line per interface
//! of the host's initial network namespace (an interface without a line of its own is at 0). cgroup v2
//! has neither controller (its socket matching is by path); as runc, the fields are then left alone.

use super::{Dir, Writer};
use crate::error::Result;
use crate::limits::Limits;

pub fn apply_cls(d: Dir, l: &Limits, w: &mut Writer) -> Result<()> {
    if let (Some(id), false) = (l.net_classid, d.v2) {
        w.write(&d.file("net_cls.classid"), &id.to_string())
            .map_err(|e| e.for_field("linux.resources.network.classID"))?;
    }
    Ok(())
}

pub fn apply_prio(d: Dir, l: &Limits, w: &mut Writer) -> Result<()> {
    if d.v2 {
        return Ok(());
    }
    for (i, (name, prio)) in l.net_priorities.iter().enumerate() {
        w.write_keyed(&d.file("net_prio.ifpriomap"), name, &format!("{name} {prio}"), &format!("{name} 0")).map_err(
            |e| {
                let enodev = e.errno() == Some(libc::ENODEV);
                let e = e.for_field(&format!("linux.resources.network.priorities[{i}] {name}"));
                if enodev {
                    // The kernel looks the name up in the initial network namespace, whatever ours is.
                    e.with_hint(format!("no interface {name} in the host's (initial) network namespace"))
                } else {
                    e
                }
            },
        )?;
    }
    Ok(())
}
