//! Forgetting a container's connections on disconnect. Conntrack entries outlive the veth pair; if the
//! address is leased again, a stale NAT mapping would hand the new container the old one's flows (or
//! a published port's). The entries live in the host namespace's table.
//!
//! Done over ctnetlink directly (what `conntrack -D` does, without three process spawns): dump the
//! IPv4 table, and delete by original tuple every entry whose original or reply tuple has the address
//! as source or destination — flows the container started, flows to it, and flows DNAT'd to it. Only
//! when the table holds any entry at all (`nf_conntrack_count`), so the common case is one file read.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};

use crate::error::{Error, Result};
use crate::netns::visit;
use crate::Ctx;

const NETLINK_NETFILTER: libc::c_int = 12;
const NFNL_SUBSYS_CTNETLINK: u16 = 1;
const IPCTNL_MSG_CT_GET: u16 = 1;
const IPCTNL_MSG_CT_DELETE: u16 = 2;
const CTA_TUPLE_ORIG: u16 = 1;
const CTA_TUPLE_REPLY: u16 = 2;
const CTA_ZONE: u16 = 18;
const CTA_TUPLE_IP: u16 = 1;
const CTA_IP_V4_SRC: u16 = 1;
const CTA_IP_V4_DST: u16 = 2;
const CTA_IP_V6_SRC: u16 = 3;
const CTA_IP_V6_DST: u16 = 4;
const NLA_TYPE_MASK: u16 = 0x3fff;

/// A ctnetlink socket in the host namespace, or `None` when that namespace's table is empty (then
/// there is nothing to forget, exactly: `nf_conntrack_count` is the namespace's own count).
pub fn open(ctx: &Ctx) -> Result<Option<Flusher>> {
    // The count file and the socket belong to the namespace they are opened in: a short visit, no thread.
    visit(ctx.host_fd(), ctx.home.fd.as_fd(), || {
        let count = std::fs::read_to_string("/proc/sys/net/netfilter/nf_conntrack_count")
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .unwrap_or(0);
        if count == 0 {
            return Ok(None);
        }
        Sock::open().map(|s| Some(Flusher(s))).map_err(|e| Error::io("conntrack", "netlink socket", e))
    })
}

/// An open ctnetlink socket; can be moved to another thread (the walk blocks for milliseconds).
pub struct Flusher(Sock);

impl Flusher {
    /// Remove every conntrack entry involving `ip`. Returns how many went.
    ///
    /// The dump walks every bucket of the kernel's conntrack hash, which is global, not per namespace
    /// (262144 buckets: ~9 ms here, whatever the namespace holds). A kernel-side filter (CTA_FILTER)
    /// does not shorten the walk, and it ANDs its fields while we need "source or destination, original
    /// or reply" (four dumps); so one unfiltered dump of the namespace's entries, matched here.
    pub fn flush(&self, ip: IpAddr) -> Result<usize> {
        let sock = &self.0;
        let tuples = sock.matching(ip).map_err(|e| Error::io("conntrack", format!("dump for {ip}"), e))?;
        let mut n = 0;
        for t in &tuples {
            match sock.delete(t, family(ip)) {
                Ok(()) => n += 1,
                // Gone meanwhile (timed out, or closed): that is what we wanted.
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                Err(e) => return Err(Error::io("conntrack", format!("delete flow of {ip}"), e)),
            }
        }
        Ok(n)
    }
}

struct Sock {
    fd: OwnedFd,
    seq: std::sync::atomic::AtomicU32,
}

/// Iterate the attributes in `b`: (type without flags, payload, the whole attribute).
fn attrs(mut b: &[u8]) -> impl Iterator<Item = (u16, &[u8], &[u8])> {
    std::iter::from_fn(move || {
        if b.len() < 4 {
            return None;
        }
        let len = u16::from_ne_bytes([b[0], b[1]]) as usize;
        let kind = u16::from_ne_bytes([b[2], b[3]]) & NLA_TYPE_MASK;
        if len < 4 || len > b.len() {
            return None;
        }
        let item = (kind, &b[4..len], &b[..len]);
        b = &b[((len + 3) & !3).min(b.len())..];
        Some(item)
    })
}

/// Source and destination of a CTA_TUPLE_* payload (IPv4 or IPv6).
fn tuple_addrs(t: &[u8]) -> (Option<IpAddr>, Option<IpAddr>) {
    let (mut s, mut d) = (None, None);
    for (k, p, _) in attrs(t) {
        if k == CTA_TUPLE_IP {
            for (k2, p2, _) in attrs(p) {
                let a = match p2.len() {
                    4 => IpAddr::V4(Ipv4Addr::new(p2[0], p2[1], p2[2], p2[3])),
                    16 => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(p2).unwrap_or([0; 16]))),
                    _ => continue,
                };
                match k2 {
                    CTA_IP_V4_SRC | CTA_IP_V6_SRC => s = Some(a),
                    CTA_IP_V4_DST | CTA_IP_V6_DST => d = Some(a),
                    _ => {}
                }
            }
        }
    }
    (s, d)
}

fn family(ip: IpAddr) -> u8 {
    if ip.is_ipv4() {
        libc::AF_INET as u8
    } else {
        libc::AF_INET6 as u8
    }
}

impl Sock {
    fn open() -> std::io::Result<Sock> {
        // SAFETY: plain socket(2); the fd is owned right away.
        let fd = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, NETLINK_NETFILTER) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Sock { fd: unsafe { OwnedFd::from_raw_fd(fd) }, seq: std::sync::atomic::AtomicU32::new(1) })
    }

    /// Send one ctnetlink request: netlink header, nfgenmsg (the address family), attributes.
    fn send(&self, msg: u16, flags: u16, body: &[u8], family: u8) -> std::io::Result<u32> {
        let seq = self.seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut b = Vec::with_capacity(20 + body.len());
        b.extend_from_slice(&((20 + body.len()) as u32).to_ne_bytes());
        b.extend_from_slice(&((NFNL_SUBSYS_CTNETLINK << 8) | msg).to_ne_bytes());
        b.extend_from_slice(&(flags | libc::NLM_F_REQUEST as u16).to_ne_bytes());
        b.extend_from_slice(&seq.to_ne_bytes());
        b.extend_from_slice(&0u32.to_ne_bytes());
        b.extend_from_slice(&[family, 0, 0, 0]);
        b.extend_from_slice(body);
        // SAFETY: sends `b`, which outlives the call, to the kernel (address zeroed = the kernel).
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as u16;
        let r = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                b.as_ptr().cast(),
                b.len(),
                0,
                (&addr as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as u32,
            )
        };
        if r < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(seq)
    }

    /// Read replies to `seq` until DONE (dump) or the ACK/error, calling `each` per data message.
    fn recv(&self, seq: u32, mut each: impl FnMut(&[u8])) -> std::io::Result<()> {
        let mut buf = vec![0u8; 1 << 16];
        loop {
            // SAFETY: reads into `buf`, within its length.
            let n = unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let mut b = &buf[..n as usize];
            while b.len() >= 16 {
                let len = u32::from_ne_bytes([b[0], b[1], b[2], b[3]]) as usize;
                let kind = u16::from_ne_bytes([b[4], b[5]]);
                let mseq = u32::from_ne_bytes([b[8], b[9], b[10], b[11]]);
                if len < 16 || len > b.len() {
                    return Err(std::io::Error::from_raw_os_error(libc::EBADMSG));
                }
                let m = &b[..len];
                b = &b[((len + 3) & !3).min(b.len())..];
                if mseq != seq {
                    continue;
                }
                match kind as i32 {
                    libc::NLMSG_DONE => return Ok(()),
                    libc::NLMSG_ERROR => {
                        let code = i32::from_ne_bytes([m[16], m[17], m[18], m[19]]);
                        return if code == 0 { Ok(()) } else { Err(std::io::Error::from_raw_os_error(-code)) };
                    }
                    _ if m.len() >= 20 => each(&m[20..]),
                    _ => {}
                }
            }
        }
    }

    /// The original tuple (and zone) of every entry of `ip`'s family with `ip` in either direction.
    fn matching(&self, ip: IpAddr) -> std::io::Result<Vec<Vec<u8>>> {
        let seq = self.send(IPCTNL_MSG_CT_GET, libc::NLM_F_DUMP as u16, &[], family(ip))?;
        let mut out = Vec::new();
        self.recv(seq, |body| {
            let mut orig = None;
            let mut zone = None;
            let mut hit = false;
            for (k, p, whole) in attrs(body) {
                match k {
                    CTA_TUPLE_ORIG | CTA_TUPLE_REPLY => {
                        let (s, d) = tuple_addrs(p);
                        hit |= s == Some(ip) || d == Some(ip);
                        if k == CTA_TUPLE_ORIG {
                            orig = Some(whole.to_vec());
                        }
                    }
                    CTA_ZONE => zone = Some(whole.to_vec()),
                    _ => {}
                }
            }
            if let (true, Some(mut t)) = (hit, orig) {
                if let Some(z) = zone {
                    t.extend_from_slice(&z);
                }
                out.push(t);
            }
        })?;
        Ok(out)
    }

    fn delete(&self, tuple_attrs: &[u8], family: u8) -> std::io::Result<()> {
        let seq = self.send(IPCTNL_MSG_CT_DELETE, libc::NLM_F_ACK as u16, tuple_attrs, family)?;
        self.recv(seq, |_| {})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Append one attribute (header + payload, padded to 4).
    fn put_attr(buf: &mut Vec<u8>, kind: u16, payload: &[u8]) {
        let len = (4 + payload.len()) as u16;
        buf.extend_from_slice(&len.to_ne_bytes());
        buf.extend_from_slice(&kind.to_ne_bytes());
        buf.extend_from_slice(payload);
        while !buf.len().is_multiple_of(4) {
            buf.push(0);
        }
    }

    #[test]
    fn attribute_round_trip() {
        let mut ip = Vec::new();
        put_attr(&mut ip, CTA_IP_V4_SRC, &[10, 0, 0, 2]);
        put_attr(&mut ip, CTA_IP_V4_DST, &[10, 0, 0, 9]);
        let mut tuple = Vec::new();
        put_attr(&mut tuple, CTA_TUPLE_IP | 0x8000, &ip);
        assert_eq!(
            tuple_addrs(&tuple),
            (Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2))), Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 9))))
        );
        let mut truncated = tuple.clone();
        truncated.truncate(6);
        assert_eq!(tuple_addrs(&truncated), (None, None));
    }
}
