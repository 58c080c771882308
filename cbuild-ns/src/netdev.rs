//! `--loopback`: bring `lo` up in a new network namespace. The kernel creates it down (what the labs
//! show); Docker's `--network none` and bwrap bring it up so 127.0.0.1 works.

use crate::error::{Error, Result, Step};

pub fn loopback_up() -> Result<()> {
    crate::log::step(Step::Loopback, "lo");
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(Error::sys(Step::Loopback, "lo", nix::errno::Errno::last()));
    }
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in ifr.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    let r = unsafe {
        let mut r = libc::ioctl(fd, libc::SIOCGIFFLAGS as _, &mut ifr);
        if r == 0 {
            ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            r = libc::ioctl(fd, libc::SIOCSIFFLAGS as _, &ifr);
        }
        r
    };
    let errno = nix::errno::Errno::last();
    unsafe { libc::close(fd) };
    if r != 0 {
        return Err(Error::sys(Step::Loopback, "lo", errno));
    }
    Ok(())
}
