//! IPv4 subnets and address leases: host-local's design (a directory lock plus one file per address,
//! created with O_EXCL) under `<state>/net/<BR>/`.
//!
//! The lock serialises the search for a free address between concurrent connects; O_EXCL makes a
//! lease exclusive even against a writer that skipped the lock (a static `--ip`). A lease file holds the
//! container ID, so a release never frees an address someone else has since taken.

use std::fmt;
use std::io::Write;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use nix::fcntl::{Flock, FlockArg};

use crate::error::{Error, Result};
use crate::paths::{open_in, open_parent, read_in, read_nofollow, remove_in, write_atomic_in};

/// Lease files are `<state>/net/<BR>/<file>`: no symlink is followed in the last three components.
const DEPTH: usize = 3;

/// An IPv4 network: its network address and prefix length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Subnet {
    pub net: Ipv4Addr,
    pub prefix: u8,
}

impl Subnet {
    pub fn mask(&self) -> u32 {
        if self.prefix == 0 {
            0
        } else {
            u32::MAX << (32 - self.prefix)
        }
    }
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.net)
    }
    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.net) | !self.mask())
    }
    pub fn overlaps(&self, other: &Subnet) -> bool {
        let m = self.mask() & other.mask();
        u32::from(self.net) & m == u32::from(other.net) & m
    }
    /// The first host address: the default gateway.
    pub fn first_host(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.net) + 1)
    }
    /// Whether `ip` may be given to a host: inside, and neither the network nor the broadcast address.
    pub fn is_host(&self, ip: Ipv4Addr) -> bool {
        self.contains(ip) && ip != self.net && ip != self.broadcast()
    }
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.net, self.prefix)
    }
}

impl FromStr for Subnet {
    type Err = String;
    /// `A.B.C.D/N` with N in 8..=30 (a /31 or /32 has no room for a gateway and a container) and no
    /// host bits set (a typo like 10.1.2.3/16 is refused rather than silently widened).
    fn from_str(s: &str) -> std::result::Result<Subnet, String> {
        let (a, p) = s.split_once('/').ok_or("want A.B.C.D/N")?;
        let net: Ipv4Addr = a.parse().map_err(|_| format!("{a:?} is not an IPv4 address"))?;
        let prefix: u8 = p.parse().map_err(|_| format!("{p:?} is not a prefix length"))?;
        if !(8..=30).contains(&prefix) {
            return Err("prefix length must be 8 to 30".into());
        }
        let sn = Subnet { net, prefix };
        let masked = Ipv4Addr::from(u32::from(net) & sn.mask());
        if masked != net {
            return Err(format!("host bits set (the network is {masked}/{prefix})"));
        }
        // With a prefix of 8 or more, a subnet is inside one of these or clear of them all.
        match net.octets()[0] {
            0 => Err("not a usable network: 0.0.0.0/8 is \"this network\"".into()),
            127 => Err("not a usable network: 127.0.0.0/8 is loopback".into()),
            224..=239 => Err("not a usable network: 224.0.0.0/4 is multicast".into()),
            240..=255 => Err("not a usable network: 240.0.0.0/4 is reserved (and holds 255.255.255.255)".into()),
            _ => Ok(sn),
        }
    }
}

impl TryFrom<String> for Subnet {
    type Error = String;
    fn try_from(s: String) -> std::result::Result<Subnet, String> {
        s.parse()
    }
}

impl From<Subnet> for String {
    fn from(s: Subnet) -> String {
        s.to_string()
    }
}

/// An IPv6 network of a dual-stack bridge. Its addresses follow the IPv4 leases: a container whose
/// IPv4 address is host number N of the IPv4 subnet gets host number N of this one (the gateway
/// too), so the IPv4 lease is the lease of both and two containers can never share an address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Subnet6 {
    pub net: Ipv6Addr,
    pub prefix: u8,
}

impl Subnet6 {
    pub fn mask(&self) -> u128 {
        if self.prefix == 0 {
            0
        } else {
            u128::MAX << (128 - self.prefix)
        }
    }
    pub fn overlaps(&self, other: &Subnet6) -> bool {
        let m = self.mask() & other.mask();
        u128::from(self.net) & m == u128::from(other.net) & m
    }
    pub fn contains(&self, ip: Ipv6Addr) -> bool {
        u128::from(ip) & self.mask() == u128::from(self.net)
    }
    /// The address of host number `ip - v4.net` in this subnet.
    pub fn follow(&self, v4: &Subnet, ip: Ipv4Addr) -> Ipv6Addr {
        Ipv6Addr::from(u128::from(self.net) | (u32::from(ip) - u32::from(v4.net)) as u128)
    }
    /// Room for every host number of `v4`.
    pub fn fits(&self, v4: &Subnet) -> bool {
        128 - self.prefix >= 32 - v4.prefix
    }
}

impl fmt::Display for Subnet6 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.net, self.prefix)
    }
}

impl FromStr for Subnet6 {
    type Err = String;
    /// `ADDR/N`, N in 48..=120, no host bits, a global or unique-local unicast network (not
    /// link-local, multicast, loopback or unspecified: those are the kernel's own).
    fn from_str(s: &str) -> std::result::Result<Subnet6, String> {
        let (a, p) = s.split_once('/').ok_or("want an IPv6 network like fd00:cb::/64")?;
        let net: Ipv6Addr = a.parse().map_err(|_| format!("{a:?} is not an IPv6 address"))?;
        let prefix: u8 = p.parse().map_err(|_| format!("{p:?} is not a prefix length"))?;
        if !(48..=120).contains(&prefix) {
            return Err("prefix length must be 48 to 120".into());
        }
        let sn = Subnet6 { net, prefix };
        let masked = Ipv6Addr::from(u128::from(net) & sn.mask());
        if masked != net {
            return Err(format!("host bits set (the network is {masked}/{prefix})"));
        }
        let first = net.segments()[0];
        if first & 0xffc0 == 0xfe80 || first & 0xff00 == 0xff00 || first == 0 {
            return Err("not a unicast network (link-local, multicast or reserved)".into());
        }
        Ok(sn)
    }
}

impl TryFrom<String> for Subnet6 {
    type Error = String;
    fn try_from(s: String) -> std::result::Result<Subnet6, String> {
        s.parse()
    }
}

impl From<Subnet6> for String {
    fn from(s: Subnet6) -> String {
        s.to_string()
    }
}

/// One bridge's lease directory.
pub struct Leases {
    pub dir: PathBuf,
    /// The directory, opened on first use (no symlink followed below the state dir) and kept: the
    /// lock, the last address, the lease and the note after a connect are one path walk, not four; and
    /// the files all land in the directory that was locked, even if the bridge is deleted and made again
    /// meanwhile.
    fd: std::sync::OnceLock<OwnedFd>,
}

impl Leases {
    pub fn new(dir: PathBuf) -> Leases {
        Leases { dir, fd: std::sync::OnceLock::new() }
    }

    fn dirfd(&self) -> std::io::Result<BorrowedFd<'_>> {
        if let Some(fd) = self.fd.get() {
            return Ok(fd.as_fd());
        }
        let (fd, _) = open_parent(&self.dir.join("lock"), DEPTH)?;
        Ok(self.fd.get_or_init(|| fd).as_fd())
    }

    /// The directory lock. `bridge del` removes the directory while holding it, so a lock won on a
    /// file that is no longer at its path guards nothing: then the path is checked again (the usual
    /// lock-file dance), and a directory gone meanwhile is a bridge deleted meanwhile.
    pub fn lock(&self) -> Result<Flock<std::fs::File>> {
        let p = self.dir.join("lock");
        let gone = |e: std::io::Error| match e.kind() {
            // ENOENT kept: a verb that read the configuration first says it in its own words.
            std::io::ErrorKind::NotFound => Error {
                errno: Some(libc::ENOENT),
                ..Error::new("ipam", self.dir.display(), "no such bridge (deleted)")
            },
            _ => Error::io("ipam", p.display(), e),
        };
        let dir = self.dirfd().map_err(gone)?;
        loop {
            let f = open_in(dir, c"lock", libc::O_WRONLY | libc::O_CREAT).map_err(gone)?;
            let l = Flock::lock(f, FlockArg::LockExclusive).map_err(|(_, e)| Error::errno("ipam", p.display(), e))?;
            // Not: the directory deleted meanwhile (the open above then fails, ENOENT) or the lock remade.
            if crate::paths::still_at(dir, c"lock", &l) {
                return Ok(l);
            }
        }
    }

    /// Whether the bridge still exists (its directory, and so its leases).
    pub fn exists(&self) -> bool {
        self.dir.is_dir()
    }

    fn lease_path(&self, ip: Ipv4Addr) -> PathBuf {
        self.dir.join(ip.to_string())
    }

    /// `ip`'s lease file, as a name in the directory.
    fn lease_name(ip: Ipv4Addr) -> std::ffi::CString {
        std::ffi::CString::new(ip.to_string()).expect("an address has no NUL")
    }

    /// A file of the directory (`bridge.json`), read through the directory opened once, the one locked.
    pub fn read(&self, name: &std::ffi::CStr) -> std::io::Result<String> {
        read_in(self.dirfd()?, name)
    }

    /// Replace a file of the directory (`bridge.json`) as [`crate::paths::write_atomic`] does, in the
    /// directory opened once, the one locked: never into a directory made again at its path meanwhile.
    pub fn write(&self, step: &'static str, name: &std::ffi::CStr, data: &[u8]) -> Result<()> {
        let p = self.dir.join(name.to_string_lossy().as_ref());
        let dir = self.dirfd().map_err(|e| Error::io(step, p.display(), e))?;
        write_atomic_in(step, dir, name, &p, data)
    }

    /// Take `want`, or the next free host address after the last one handed out (round robin, as
    /// host-local does, so a just-released address is not reused at once). `check` runs first, under the
    /// lock: a lease is taken only if it passes.
    pub fn allocate(
        &self,
        subnet: &Subnet,
        gateway: Ipv4Addr,
        want: Option<Ipv4Addr>,
        id: &str,
        check: impl FnOnce(&Leases) -> Result<()>,
    ) -> Result<Ipv4Addr> {
        let _lock = self.lock()?;
        check(self)?;
        if let Some(ip) = want {
            if !subnet.is_host(ip) || ip == gateway {
                return Err(Error::new(
                    "ipam",
                    ip,
                    format!("not a usable address in {subnet} (network, broadcast and gateway {gateway} are reserved)"),
                ));
            }
            return match self.try_take(ip, id)? {
                true => Ok(ip),
                false => Err(Error::new("ipam", ip, format!("already leased to {}", self.owner(ip)))),
            };
        }
        let first = u32::from(subnet.net) + 1;
        let last = u32::from(subnet.broadcast()) - 1;
        let n = last - first + 1;
        let start = (self.dirfd().ok())
            .and_then(|d| read_in(d, c"last_reserved_ip").ok())
            .and_then(|s| s.trim().parse::<Ipv4Addr>().ok())
            .map(u32::from)
            .filter(|&a| a >= first && a <= last)
            .map(|a| a - first + 1)
            .unwrap_or(0);
        for i in 0..n {
            let ip = Ipv4Addr::from(first + (start + i) % n);
            if ip == gateway {
                continue;
            }
            if self.try_take(ip, id)? {
                return Ok(ip);
            }
        }
        Err(Error::new("ipam", subnet, "no free address left").hint("disconnect containers or use a larger subnet"))
    }

    /// Remember `ip` as the last address handed out, once the connect that took it has succeeded (a
    /// failed connect must leave nothing, not even this hint). Losing it costs a longer scan next
    /// time, never a duplicate.
    ///
    /// Overwritten in place, padded to the longest address, never truncated: on ext4 a truncate frees
    /// the file's block and the write allocates it again, two journal updates on every connect.
    pub fn remember(&self, ip: Ipv4Addr) {
        use std::os::unix::fs::FileExt;
        // Never through a symlink or into a FIFO someone put there.
        if let Ok(f) = self.dirfd().and_then(|d| open_in(d, c"last_reserved_ip", libc::O_WRONLY | libc::O_CREAT)) {
            let _ = f.write_all_at(format!("{ip:<15}\n").as_bytes(), 0);
        }
    }

    /// Create the lease file exclusively. `false`: someone holds it.
    fn try_take(&self, ip: Ipv4Addr, id: &str) -> Result<bool> {
        let p = self.lease_path(ip);
        let (dir, name) = (self.dirfd().map_err(|e| Error::io("ipam", self.dir.display(), e))?, Self::lease_name(ip));
        match open_in(dir, &name, libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL) {
            Ok(mut f) => {
                f.write_all(id.as_bytes()).map_err(|e| {
                    let _ = remove_in(dir, &name);
                    Error::io("ipam", p.display(), e)
                })?;
                Ok(true)
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(Error::io("ipam", p.display(), e)),
        }
    }

    fn owner(&self, ip: Ipv4Addr) -> String {
        self.dirfd().and_then(|d| read_in(d, &Self::lease_name(ip))).unwrap_or_default()
    }

    /// Free `ip` if `id` holds it. `Ok(false)`: it was not held by `id` (nothing removed).
    pub fn release(&self, ip: Ipv4Addr, id: &str) -> Result<bool> {
        self.release_unless(ip, id, || false)
    }

    /// `release`, unless `keep()`, asked under the directory lock, says the lease is still wanted.
    pub fn release_unless(&self, ip: Ipv4Addr, id: &str, keep: impl FnOnce() -> bool) -> Result<bool> {
        let _lock = match self.lock() {
            Ok(l) => l,
            // The bridge and every lease on it are gone: nothing left to release.
            Err(_) if !self.exists() => return Ok(false),
            Err(e) => return Err(e),
        };
        if keep() {
            return Ok(false);
        }
        let p = self.lease_path(ip);
        let (dir, name) =
            (self.dirfd().map_err(|e| Error::io("release", self.dir.display(), e))?, Self::lease_name(ip));
        match read_in(dir, &name) {
            Ok(owner) if owner == id => {
                remove_in(dir, &name).map_err(|e| Error::io("release", p.display(), e))?;
                Ok(true)
            }
            Ok(_) => Ok(false),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Error::io("release", p.display(), e)),
        }
    }

    /// Every lease: (address, container ID).
    pub fn list(&self) -> Vec<(Ipv4Addr, String)> {
        let mut out = Vec::new();
        let Ok(rd) = std::fs::read_dir(&self.dir) else { return out };
        for e in rd.flatten() {
            if let Ok(ip) = e.file_name().to_string_lossy().parse::<Ipv4Addr>() {
                out.push((ip, read_nofollow(&e.path(), DEPTH).unwrap_or_default()));
            }
        }
        out.sort();
        out
    }
}

/// Remove a directory if it is empty; the error is ignored on purpose (another tool's file may be there).
pub fn rmdir_quiet(p: &Path) {
    let _ = std::fs::remove_dir(p);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_subnets() {
        let s: Subnet = "10.88.0.0/16".parse().unwrap();
        assert_eq!(s.broadcast(), Ipv4Addr::new(10, 88, 255, 255));
        assert_eq!(s.first_host(), Ipv4Addr::new(10, 88, 0, 1));
        assert!("10.88.0.1/16".parse::<Subnet>().unwrap_err().contains("host bits"));
        assert!("10.88.0.0/31".parse::<Subnet>().is_err());
        assert!("10.88.0.0".parse::<Subnet>().is_err());
        assert!("300.0.0.0/8".parse::<Subnet>().is_err());
        assert!("10.0.0.0/x".parse::<Subnet>().is_err());
        for bad in [
            "0.0.0.0/8",
            "127.0.0.0/8",
            "127.1.0.0/16",
            "224.0.0.0/8",
            "239.1.0.0/16",
            "240.0.0.0/8",
            "255.255.255.0/24",
        ] {
            assert!(bad.parse::<Subnet>().unwrap_err().contains("not a usable network"), "{bad}");
        }
        assert!("223.255.255.0/24".parse::<Subnet>().is_ok());
    }

    #[test]
    fn overlap() {
        let a: Subnet = "10.0.0.0/8".parse().unwrap();
        let b: Subnet = "10.88.0.0/16".parse().unwrap();
        let c: Subnet = "172.17.0.0/16".parse().unwrap();
        assert!(a.overlaps(&b) && b.overlaps(&a));
        assert!(!a.overlaps(&c));
    }

    #[test]
    fn allocate_skips_reserved_and_exhausts() {
        let d = tempfile_dir();
        let l = Leases::new(d.clone());
        let s: Subnet = "10.9.0.0/29".parse().unwrap(); // hosts .1-.6, gateway .1
        let gw = s.first_host();
        let mut got = Vec::new();
        for i in 0..5 {
            let ip = l.allocate(&s, gw, None, &format!("c{i}"), |_| Ok(())).unwrap();
            l.remember(ip);
            got.push(ip);
        }
        let want: Vec<Ipv4Addr> = (2..=6).map(|i| Ipv4Addr::new(10, 9, 0, i)).collect();
        assert_eq!(got, want);
        assert!(l.allocate(&s, gw, None, "x", |_| Ok(())).unwrap_err().reason.contains("no free"));
        assert!(l.release(got[0], "c0").unwrap());
        assert!(!l.release(got[1], "c0").unwrap(), "release by a non-owner frees nothing");
        let refused = l.allocate(&s, gw, None, "y", |_| Err(Error::new("ipam", "t", "refused")));
        assert!(refused.unwrap_err().reason == "refused" && !d.join(got[0].to_string()).exists(), "no lease taken");
        assert_eq!(l.allocate(&s, gw, None, "y", |_| Ok(())).unwrap(), got[0]);
        assert!(l.allocate(&s, gw, Some(gw), "z", |_| Ok(())).is_err());
        assert!(l.allocate(&s, gw, Some(Ipv4Addr::new(10, 9, 0, 7)), "z", |_| Ok(())).is_err());
        // The hint is overwritten in place: a shorter address after a longer one leaves no tail.
        l.remember(Ipv4Addr::new(100, 100, 100, 100));
        l.remember(Ipv4Addr::new(10, 9, 0, 3));
        assert!(l.release(got[1], "c1").unwrap() && l.release(got[3], "c3").unwrap()); // .3 and .5 free
        let hint = std::fs::read_to_string(d.join("last_reserved_ip")).unwrap();
        assert_eq!(hint.trim().parse::<Ipv4Addr>().unwrap(), Ipv4Addr::new(10, 9, 0, 3));
        assert_eq!(l.allocate(&s, gw, None, "after-hint", |_| Ok(())).unwrap(), Ipv4Addr::new(10, 9, 0, 5));
        std::fs::remove_dir_all(d).unwrap();
    }

    fn tempfile_dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("cbuild-net-ipam-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
