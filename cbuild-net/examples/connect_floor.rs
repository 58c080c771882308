//! The floor of a whole connect on a given machine, for scripts/bench-net.sh: a process that asks the
//! kernel for everything `connect` asks it for, with the same messages (built by the same
//! netlink-packet-route types), and does nothing else: no runtime, no IPAM, no files, no record. One
//! plain socket per namespace, blocking sends:
//!
//!  1. the pair (`RTM_NEWLINK`: host end on the bridge, peer made inside the namespace), then the ends'
//!     indexes and the host end's MAC (`SIOCGIFINDEX`, `SIOCGIFHWADDR`),
//!  2. the host end's port settings (hairpin, `addrgenmode none`),
//!  3. the container end's batch in one datagram (`addrgenmode none`, the address, `lo` up, the end up,
//!     the default route),
//!  4. the host end up, and both ends' link-watch events run (`ETHTOOL_GLINK`).
//!
//! What a connect costs above this is cbuild-net's own: start-up, arguments, the runtime, leases and
//! the record.
//!
//! `connect_floor HOSTNAME PEERNAME NETNS-FILE BRIDGE ADDR/PREFIX GATEWAY`

use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use rtnetlink::packet_core::{NetlinkMessage, NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST};
use rtnetlink::packet_route::link::{
    AfSpecInet6, AfSpecUnspec, In6AddrGenMode, InfoBridgePort, InfoData, InfoPortData, InfoPortKind, InfoVeth,
    LinkAttribute, LinkInfo, LinkMessage,
};
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::{AddressMessageBuilder, LinkUnspec, LinkVeth, RouteMessageBuilder};

fn die(what: &str, err: std::io::Error) -> ! {
    eprintln!("connect_floor: {what}: {err}");
    std::process::exit(1)
}

fn socket() -> OwnedFd {
    // SAFETY: a plain socket(2); the fd is owned from here on.
    let fd = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::NETLINK_ROUTE) };
    if fd < 0 {
        die("socket", std::io::Error::last_os_error());
    }
    // SAFETY: fd was just made and nothing else owns it.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// One request: the message, its flags, and an errno that means "nothing to do" (as connect takes it).
type Msg = (RouteNetlinkMessage, u16, Option<i32>);

/// Send `msgs` in one datagram and read one acknowledgement per message.
fn send(fd: RawFd, msgs: Vec<Msg>) {
    let mut buf = Vec::new();
    let benign: Vec<Option<i32>> = msgs.iter().map(|m| m.2).collect();
    let n = msgs.len();
    for (seq, (m, flags, _)) in msgs.into_iter().enumerate() {
        let mut nl = NetlinkMessage::from(m);
        nl.header.flags = flags;
        nl.header.sequence_number = seq as u32 + 1;
        nl.finalize();
        let at = buf.len();
        buf.resize(at + nl.buffer_len(), 0);
        nl.serialize(&mut buf[at..]);
    }
    // SAFETY: send/recv on buffers that outlive the calls.
    unsafe {
        if libc::send(fd, buf.as_ptr().cast(), buf.len(), 0) != buf.len() as isize {
            die("send", std::io::Error::last_os_error());
        }
        let mut acks = 0;
        let mut rx = [0u8; 8192];
        while acks < n {
            let got = libc::recv(fd, rx.as_mut_ptr().cast(), rx.len(), 0);
            if got < 0 {
                die("recv", std::io::Error::last_os_error());
            }
            let mut off = 0;
            while off + 20 <= got as usize {
                let len = u32::from_ne_bytes(rx[off..off + 4].try_into().unwrap()) as usize;
                let err = i32::from_ne_bytes(rx[off + 16..off + 20].try_into().unwrap());
                if err != 0 && Some(-err) != benign[acks] {
                    die("request", std::io::Error::from_raw_os_error(-err));
                }
                acks += 1;
                off += len.max(20).next_multiple_of(4);
            }
        }
    }
}

fn ifreq(name: &str) -> libc::ifreq {
    // SAFETY: an all-zero ifreq is a valid value.
    let mut r: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in r.ifr_name.iter_mut().zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    r
}

fn index(fd: RawFd, name: &str) -> u32 {
    let mut r = ifreq(name);
    // SAFETY: SIOCGIFINDEX reads the name from and writes the index into `r`.
    if unsafe { libc::ioctl(fd, libc::SIOCGIFINDEX as _, &mut r) } < 0 {
        die(name, std::io::Error::last_os_error());
    }
    // SAFETY: the kernel filled the index member of the union.
    unsafe { r.ifr_ifru.ifru_ifindex as u32 }
}

fn hwaddr(fd: RawFd, name: &str) {
    let mut r = ifreq(name);
    // SAFETY: SIOCGIFHWADDR reads the name from and writes the address into `r`.
    if unsafe { libc::ioctl(fd, libc::SIOCGIFHWADDR as _, &mut r) } < 0 {
        die(name, std::io::Error::last_os_error());
    }
}

fn sync_link(fd: RawFd, name: &str) {
    let mut r = ifreq(name);
    let mut v = [0x0000000au32, 0]; // ETHTOOL_GLINK
    r.ifr_ifru.ifru_data = v.as_mut_ptr().cast();
    // SAFETY: SIOCETHTOOL reads `r` and the command in `v`, writes into `v`; both outlive the call.
    if unsafe { libc::ioctl(fd, libc::SIOCETHTOOL as _, &mut r) } < 0 {
        die(name, std::io::Error::last_os_error());
    }
}

fn no_ipv6() -> LinkAttribute {
    LinkAttribute::AfSpecUnspec(vec![AfSpecUnspec::Inet6(vec![AfSpecInet6::AddrGenMode(In6AddrGenMode::None)])])
}

/// `RTM_SETLINK`, as connect's `up` and `addrgenmode` requests, with `flags`.
fn set(m: LinkMessage, flags: u16) -> Msg {
    (RouteNetlinkMessage::SetLink(m), flags, None)
}

fn main() {
    let a: Vec<String> = std::env::args().collect();
    if a.len() != 7 {
        eprintln!("usage: connect_floor HOSTNAME PEERNAME NETNS-FILE BRIDGE ADDR/PREFIX GATEWAY");
        std::process::exit(2);
    }
    let (host, peer) = (&a[1], &a[2]);
    let (ip, prefix) = a[5].split_once('/').expect("ADDR/PREFIX");
    let ip: Ipv4Addr = ip.parse().expect("ADDR");
    let prefix: u8 = prefix.parse().expect("PREFIX");
    let gw: Ipv4Addr = a[6].parse().expect("GATEWAY");
    let ns = std::fs::File::open(&a[3]).unwrap_or_else(|e| die(&a[3], e));
    let own = std::fs::File::open("/proc/self/ns/net").unwrap_or_else(|e| die("/proc/self/ns/net", e));

    let hs = socket();
    // A socket stays in the namespace it was made in: make the container's there, and come back.
    // SAFETY: setns on namespace files this process holds open.
    let cs = unsafe {
        if libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
            die("setns", std::io::Error::last_os_error());
        }
        let s = socket();
        if libc::setns(own.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
            die("setns", std::io::Error::last_os_error());
        }
        s
    };
    let (h, c) = (hs.as_raw_fd(), cs.as_raw_fd());
    let master = index(h, &a[4]);

    let create = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL;
    let pb = LinkUnspec::new_with_name(peer)
        .setns_by_fd(ns.as_raw_fd())
        .address(vec![0x02, 0x42, 0xac, 0x11, 0x00, 0x02])
        .append_extra_attribute(LinkAttribute::NumTxQueues(1))
        .append_extra_attribute(LinkAttribute::NumRxQueues(1));
    let pair = LinkVeth::new(host, peer)
        .set_info_data(InfoData::Veth(InfoVeth::Peer(pb.build())))
        .controller(master)
        .append_extra_attribute(LinkAttribute::NumTxQueues(1))
        .append_extra_attribute(LinkAttribute::NumRxQueues(1))
        .build();
    send(h, vec![(RouteNetlinkMessage::NewLink(pair), create, None)]);
    let hi = index(h, host);
    hwaddr(h, host);
    let pi = index(c, peer);

    let port = LinkAttribute::LinkInfo(vec![
        LinkInfo::PortKind(InfoPortKind::Bridge),
        LinkInfo::PortData(InfoPortData::BridgePort(vec![InfoBridgePort::HairpinMode(true)])),
    ]);
    // `RTM_NEWLINK` without NLM_F_CREATE, as connect's port settings (a port's attributes).
    let p = LinkUnspec::new_with_index(hi).append_extra_attribute(port).append_extra_attribute(no_ipv6()).build();
    send(h, vec![(RouteNetlinkMessage::NewLink(p), NLM_F_REQUEST | NLM_F_ACK, None)]);

    let addr = AddressMessageBuilder::<Ipv4Addr>::new().index(pi).address(ip, prefix).build();
    let route = RouteMessageBuilder::<Ipv4Addr>::new().gateway(gw).build();
    // One datagram, every request with connect's batch flags (RTM_SETLINK ignores CREATE and EXCL), and
    // the same "nothing to do" answers: no IPv6 to disable, a default route already there.
    let mut ipv4_only = set(LinkUnspec::new_with_index(pi).append_extra_attribute(no_ipv6()).build(), create);
    ipv4_only.2 = Some(libc::EAFNOSUPPORT);
    send(
        c,
        vec![
            ipv4_only,
            (RouteNetlinkMessage::NewAddress(addr), create, None),
            set(LinkUnspec::new_with_index(1).up().build(), create),
            set(LinkUnspec::new_with_index(pi).up().build(), create),
            (RouteNetlinkMessage::NewRoute(route), create, Some(libc::EEXIST)),
        ],
    );
    send(h, vec![set(LinkUnspec::new_with_index(hi).up().build(), NLM_F_REQUEST | NLM_F_ACK)]);
    sync_link(h, host);
    sync_link(c, peer);
}
