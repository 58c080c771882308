//! Forgetting a container's connections on disconnect. Conntrack entries outlive the veth pair; if the
//! address is leased again, a stale NAT mapping would send the new container's traffic (or a
//! published port's) to flows of the old one. Done with the `conntrack` tool inside the host
//! namespace, and only when that namespace's table holds any entry at all (read from
//! `nf_conntrack_count`, which costs no process), so the common case costs nothing.

use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use crate::error::{Error, Result};
use crate::netns::in_netns;
use crate::Ctx;

pub fn flush(ctx: &Ctx, ip: Ipv4Addr) -> Result<()> {
    let count = in_netns(ctx.host_fd(), || {
        Ok(std::fs::read_to_string("/proc/sys/net/netfilter/nf_conntrack_count")
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .unwrap_or(0))
    })?;
    if count == 0 {
        return Ok(());
    }
    ctx.step("conntrack", format!("flush {ip}"));
    // Flows the container started (original source), flows to it (original destination), and flows
    // DNAT'd to it from a published port (reply source).
    for flag in ["-s", "-d", "-r"] {
        let mut cmd = Command::new("conntrack");
        cmd.args(["-D", flag, &ip.to_string()]).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
        if let Some(fd) = ctx.host_fd() {
            let raw = fd.as_raw_fd();
            // SAFETY: only setns(2) between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    if libc::setns(raw, libc::CLONE_NEWNET) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let out = cmd.output().map_err(|e| Error::io("conntrack", ip, e))?;
        // Exit 1 with "0 flow entries have been deleted" is the normal "nothing matched".
        let err = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() && !err.contains("0 flow entries") {
            return Err(Error::new("conntrack", ip, err.lines().next().unwrap_or("failed")));
        }
    }
    Ok(())
}
