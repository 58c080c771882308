//! The floor of a connect on a given machine, for scripts/bench-net.sh: a process that makes one
//! veth pair with the container end created inside a namespace (the same `RTM_NEWLINK` as `connect`,
//! one TX/RX queue per end) and exits, and does nothing else: no runtime, no files, no address, no
//! route. Hand-built netlink on a plain socket, so nothing but process start-up and the kernel's
//! work is measured.
//!
//! `veth_floor HOSTNAME PEERNAME NETNS-FILE`

use std::os::fd::AsRawFd;

fn attr(buf: &mut Vec<u8>, kind: u16, payload: &[u8]) {
    buf.extend_from_slice(&((4 + payload.len()) as u16).to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(payload);
    while !buf.len().is_multiple_of(4) {
        buf.push(0);
    }
}

fn nested(buf: &mut Vec<u8>, kind: u16, f: impl FnOnce(&mut Vec<u8>)) {
    let mut inner = Vec::new();
    f(&mut inner);
    attr(buf, kind | libc::NLA_F_NESTED as u16, &inner);
}

fn cstr(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 4 {
        eprintln!("usage: veth_floor HOSTNAME PEERNAME NETNS-FILE");
        std::process::exit(2);
    }
    let ns = std::fs::File::open(&args[3]).expect("open namespace file");
    let one = 1u32.to_ne_bytes();
    let ifinfo = [0u8; 16];
    let mut body = ifinfo.to_vec();
    attr(&mut body, libc::IFLA_IFNAME, &cstr(&args[1]));
    attr(&mut body, libc::IFLA_NUM_TX_QUEUES, &one);
    attr(&mut body, libc::IFLA_NUM_RX_QUEUES, &one);
    nested(&mut body, libc::IFLA_LINKINFO, |li| {
        attr(li, libc::IFLA_INFO_KIND, &cstr("veth"));
        nested(li, libc::IFLA_INFO_DATA, |d| {
            // VETH_INFO_PEER: an ifinfomsg, then the peer's attributes.
            let mut peer = ifinfo.to_vec();
            attr(&mut peer, libc::IFLA_IFNAME, &cstr(&args[2]));
            attr(&mut peer, libc::IFLA_NET_NS_FD, &(ns.as_raw_fd() as u32).to_ne_bytes());
            attr(&mut peer, libc::IFLA_NUM_TX_QUEUES, &one);
            attr(&mut peer, libc::IFLA_NUM_RX_QUEUES, &one);
            attr(d, 1, &peer);
        });
    });
    let flags = (libc::NLM_F_REQUEST | libc::NLM_F_ACK | libc::NLM_F_CREATE | libc::NLM_F_EXCL) as u16;
    let mut msg = Vec::with_capacity(16 + body.len());
    msg.extend_from_slice(&((16 + body.len()) as u32).to_ne_bytes());
    msg.extend_from_slice(&libc::RTM_NEWLINK.to_ne_bytes());
    msg.extend_from_slice(&flags.to_ne_bytes());
    msg.extend_from_slice(&1u32.to_ne_bytes());
    msg.extend_from_slice(&0u32.to_ne_bytes());
    msg.extend_from_slice(&body);
    // SAFETY: plain socket/send/recv on buffers that outlive the calls.
    unsafe {
        let fd = libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::NETLINK_ROUTE);
        assert!(fd >= 0, "socket");
        assert!(libc::send(fd, msg.as_ptr().cast(), msg.len(), 0) == msg.len() as isize, "send");
        let mut buf = [0u8; 4096];
        let n = libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0);
        assert!(n >= 20, "recv");
        let err = i32::from_ne_bytes([buf[16], buf[17], buf[18], buf[19]]);
        if err != 0 {
            eprintln!("veth_floor: {}", std::io::Error::from_raw_os_error(-err));
            std::process::exit(1);
        }
    }
}
