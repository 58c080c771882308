//! rtnetlink sockets bound to a network namespace, and the few link/address/route requests cbuild needs.
//!
//! A socket is opened during a short visit of this thread to the namespace ([`crate::netns::visit`]),
//! registered with the current-thread runtime, and then used from the runtime like any other: a
//! netlink socket stays in the namespace it was created in.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};

use futures::{StreamExt, TryStreamExt};
use rtnetlink::packet_core::{NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST};
use rtnetlink::packet_route::link::{
    AfSpecInet6, AfSpecUnspec, In6AddrGenMode, InfoBridgePort, InfoData, InfoKind, InfoPortData, InfoPortKind,
    InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteMessage, RouteType};
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::proto::ConnectionHandle;
use rtnetlink::{AddressMessageBuilder, Handle, LinkBridge, LinkUnspec, LinkVeth, RouteMessageBuilder};

use crate::error::{Error, Result};
use crate::ipam::{Subnet, Subnet6};
use crate::netns::visit;
use rtnetlink::packet_route::address::{AddressAttribute, AddressFlags};

/// A route netlink handle whose socket lives in one network namespace.
#[derive(Clone)]
pub struct Nl {
    pub h: Handle,
    /// The socket itself, for the interface ioctls below (the kernel hands an ioctl it does not know on
    /// a netlink socket to the device layer of the socket's namespace, as on any socket). A duplicate of
    /// the connection's: if that task ends and closes its fd, the number cannot come back as another
    /// file (or another namespace's socket) under these ioctls.
    fd: std::sync::Arc<OwnedFd>,
}

/// `ETHTOOL_GLINK` (linux/ethtool.h): read a device's link state.
const ETHTOOL_GLINK: u32 = 0x0000000a;

impl Nl {
    /// Open a socket in `ns` (`None`: this process's own namespace); `home` is this thread's own.
    pub fn open(rt: &tokio::runtime::Handle, ns: Option<BorrowedFd<'_>>, home: BorrowedFd<'_>) -> Result<Nl> {
        use rtnetlink::sys::AsyncSocket;
        let _guard = rt.enter();
        let (mut conn, h, _) =
            visit(ns, home, || rtnetlink::new_connection().map_err(|e| Error::io("netlink", "socket", e)))?;
        let fd = dup_socket(conn.socket_mut().socket_ref().as_raw_fd())?;
        rt.spawn(conn);
        Ok(Nl { h, fd: std::sync::Arc::new(fd) })
    }

    /// The index of the link called `name` (`None`: no such link); see [`ifindex`].
    pub fn index(&self, name: &str) -> Result<Option<u32>> {
        ifindex(self.fd.as_raw_fd(), name)
    }

    /// The MAC address of the link called `name`; see [`hwaddr`].
    pub fn hwaddr(&self, name: &str) -> Result<[u8; 6]> {
        hwaddr(self.fd.as_raw_fd(), name)
    }

    /// Run the link watch's pending event for `name` now; see [`sync_link`].
    pub fn sync_link(&self, name: &str) -> Result<()> {
        sync_link(self.fd.as_raw_fd(), name)
    }

    /// The link called `name`, or `None` when there is none.
    pub async fn link(&self, name: &str) -> Result<Option<LinkMessage>> {
        match self.h.link().get().match_name(name.to_string()).execute().try_next().await {
            Ok(m) => Ok(m),
            Err(e) => {
                let err = Error::netlink("link", name, e);
                if err.is_errno(libc::ENODEV) {
                    Ok(None)
                } else {
                    Err(err)
                }
            }
        }
    }

    pub async fn links(&self) -> Result<Vec<LinkMessage>> {
        self.h.link().get().execute().try_collect().await.map_err(|e| Error::netlink("link", "dump", e))
    }

    pub async fn del_link(&self, index: u32, name: &str) -> Result<()> {
        self.h.link().del(index).execute().await.map_err(|e| Error::netlink("del-link", name, e))
    }

    /// Delete a link by name; `Ok(false)` when it was already gone.
    pub async fn del_link_by_name(&self, name: &str) -> Result<bool> {
        match self.link(name).await? {
            Some(l) => match self.del_link(l.header.index, name).await {
                Ok(()) => Ok(true),
                Err(e) if e.is_errno(libc::ENODEV) => Ok(false),
                Err(e) => Err(e),
            },
            None => Ok(false),
        }
    }

    /// A bridge, up, with a fixed MAC (a bridge otherwise takes its lowest port's MAC, which changes as
    /// containers come and go and makes neighbours' ARP caches stale) and multicast snooping off: with
    /// no IGMP/MLD querier on a container bridge the kernel floods multicast to every port anyway, and
    /// with snooping on every port that comes up re-arms two query timers on every port of the bridge,
    /// a cost each connect pays once per container already there (docs/net.md).
    pub async fn add_bridge(&self, name: &str, mac: [u8; 6]) -> Result<()> {
        let msg = LinkBridge::new(name).address(mac.to_vec()).mcast_snooping(false).up().build();
        self.h.link().add(msg).execute().await.map_err(|e| Error::netlink("add-bridge", name, e))
    }

    /// `ip link set NAME up`, by index.
    pub async fn set_up(&self, index: u32, name: &str) -> Result<()> {
        let msg = LinkUnspec::new_with_index(index).up().build();
        self.h.link().set(msg).execute().await.map_err(|e| Error::netlink("link-up", name, e))
    }

    /// `ip link set NAME down`, by index.
    pub async fn set_down(&self, index: u32, name: &str) -> Result<()> {
        let msg = LinkUnspec::new_with_index(index).down().build();
        self.h.link().set(msg).execute().await.map_err(|e| Error::netlink("link-down", name, e))
    }

    /// The host end as a bridge port, in one request: hairpin mode on (a frame may leave by the
    /// port it came in, which a container reaching its own published port needs when
    /// `br_netfilter` DNATs bridged frames), and, on an IPv4-only bridge, no IPv6 link-local address
    /// (see [`no_ipv6_attr`]). An `RTM_NEWLINK` on the existing link carries both the
    /// port's data and the address-family settings (`RTM_SETLINK` takes no port data).
    pub async fn setup_port(&self, index: u32, name: &str, no_ipv6: bool) -> Result<()> {
        let port = LinkAttribute::LinkInfo(vec![
            LinkInfo::PortKind(InfoPortKind::Bridge),
            LinkInfo::PortData(InfoPortData::BridgePort(vec![InfoBridgePort::HairpinMode(true)])),
        ]);
        let mut b = LinkUnspec::new_with_index(index).append_extra_attribute(port.clone());
        if no_ipv6 {
            b = b.append_extra_attribute(no_ipv6_attr());
        }
        let send = |m: LinkMessage| self.h.link().add(m).set_flags(NLM_F_REQUEST | NLM_F_ACK).execute();
        match send(b.build()).await {
            Ok(()) => Ok(()),
            Err(e) => {
                let err = Error::netlink("setup-port", name, e);
                if no_ipv6 && err.is_errno(libc::EAFNOSUPPORT) {
                    // A kernel without IPv6: nothing to disable.
                    let m = LinkUnspec::new_with_index(index).append_extra_attribute(port).build();
                    return send(m).await.map_err(|e| Error::netlink("setup-port", name, e));
                }
                Err(err)
            }
        }
    }

    /// One request makes the whole pair: the host end attached to `master`, the peer created
    /// directly inside `peer_ns` with its name, MAC and MTU. No move between namespaces (a move
    /// re-registers the device and costs far more than the creation), no rename. Both ends stay
    /// down: the caller brings the container end up from inside its namespace, then the host end.
    ///
    /// The host end is not made up here: an end that is up without a carrier (its peer still down)
    /// has its pending link-watch event (the carrier-off of creation) run as a queue deactivation,
    /// which waits for an expedited RCU grace period while holding the RTNL lock, in the kernel's
    /// link-watch worker, and every request of the rest of the connect then blocks on that lock.
    /// Brought up last, after its peer, it gets its carrier at once and no end ever sits up
    /// without one long enough for the worker to notice.
    ///
    /// Both ends get one TX and one RX queue, asked for explicitly: left unset, veth allocates one
    /// per possible CPU and then trims the real count to 1 on each end, and each trim of a
    /// registered device waits for an expedited RCU grace period (`netif_set_real_num_tx_queues` ->
    /// `synchronize_net`), two off-CPU waits per connect for queues a veth never uses by default.
    ///
    /// The caller learns the ends' indexes and the host end's MAC with `SIOCGIFINDEX` and
    /// `SIOCGIFHWADDR` ([`ifindex`], [`hwaddr`]): neither runs the link watch, as a `RTM_GETLINK`
    /// would (`linkwatch_sync_dev`, a queue deactivation that waits for an RCU grace period before
    /// the pair has a carrier), nor costs the ~2 KB description an `NLM_F_ECHO` answer carries.
    #[allow(clippy::too_many_arguments)]
    pub async fn add_veth(
        &self,
        host: &str,
        master: u32,
        peer: &str,
        peer_ns: RawFd,
        peer_mac: [u8; 6],
        mtu: Option<u32>,
    ) -> Result<()> {
        let mut pb = LinkUnspec::new_with_name(peer)
            .setns_by_fd(peer_ns)
            .address(peer_mac.to_vec())
            .append_extra_attribute(LinkAttribute::NumTxQueues(1))
            .append_extra_attribute(LinkAttribute::NumRxQueues(1));
        if let Some(m) = mtu {
            pb = pb.mtu(m);
        }
        let mut b = LinkVeth::new(host, peer)
            .set_info_data(InfoData::Veth(InfoVeth::Peer(pb.build())))
            .controller(master)
            .append_extra_attribute(LinkAttribute::NumTxQueues(1))
            .append_extra_attribute(LinkAttribute::NumRxQueues(1));
        if let Some(m) = mtu {
            b = b.mtu(m);
        }
        self.h.link().add(b.build()).execute().await.map_err(|e| Error::netlink("add-veth", host, e))
    }

    pub async fn add_addr(&self, index: u32, ip: Ipv4Addr, prefix: u8, what: &str) -> Result<()> {
        match self.h.address().add(index, ip.into(), prefix).execute().await {
            Ok(()) => Ok(()),
            Err(e) => Err(Error::netlink("add-addr", format!("{ip}/{prefix} on {what}"), e)),
        }
    }

    /// An IPv6 address, usable at once: no duplicate address detection (`nodad`), as the address
    /// comes from a lease and nobody else on the bridge may hold it.
    pub async fn add_addr6(&self, index: u32, ip: Ipv6Addr, prefix: u8, what: &str) -> Result<()> {
        let mut req = self.h.address().add(index, ip.into(), prefix);
        req.message_mut().attributes.push(AddressAttribute::Flags(AddressFlags::Nodad));
        req.execute().await.map_err(|e| Error::netlink("add-addr", format!("{ip}/{prefix} on {what}"), e))
    }

    /// The IPv6 prefixes a namespace routes somewhere or holds addresses of (see [`route_prefixes`];
    /// not default, not link-local), with the index of the link each goes out of.
    pub async fn prefixes_v6(&self) -> Result<Vec<(Subnet6, Option<u32>)>> {
        let q = RouteMessageBuilder::<Ipv6Addr>::new().build();
        let routes: Vec<RouteMessage> =
            self.h.route().get(q).execute().try_collect().await.map_err(|e| Error::netlink("routes", "dump", e))?;
        let mut out = Vec::new();
        for r in &routes {
            let prefix = r.header.destination_prefix_length;
            if prefix == 0 || !occupies(r.header.kind) {
                continue;
            }
            let oif = r.attributes.iter().find_map(|a| if let RouteAttribute::Oif(i) = a { Some(*i) } else { None });
            for a in &r.attributes {
                if let RouteAttribute::Destination(RouteAddress::Inet6(ip)) = a {
                    if ip.segments()[0] & 0xffc0 != 0xfe80 {
                        let mask = u128::MAX << (128 - prefix);
                        out.push((Subnet6 { net: Ipv6Addr::from(u128::from(*ip) & mask), prefix }, oif));
                    }
                }
            }
        }
        Ok(out)
    }

    /// Every IPv4 route in every table.
    pub async fn routes_v4(&self) -> Result<Vec<RouteMessage>> {
        let q = RouteMessageBuilder::<Ipv4Addr>::new().build();
        self.h.route().get(q).execute().try_collect().await.map_err(|e| Error::netlink("routes", "dump", e))
    }
}

/// An `ifreq` naming `name`, for the ioctls below.
fn ifreq(name: &str) -> Option<libc::ifreq> {
    // SAFETY: ifreq is plain old data; all zeroes is a valid value.
    let mut r: libc::ifreq = unsafe { std::mem::zeroed() };
    if name.is_empty() || name.len() >= r.ifr_name.len() {
        return None;
    }
    for (d, s) in r.ifr_name.iter_mut().zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    Some(r)
}

/// The index of the link called `name` in the namespace of socket `fd` (`None`: no such link), as
/// if_nametoindex(3) finds it: one `SIOCGIFINDEX`, where an `RTM_GETLINK` would make the kernel fill,
/// and this process parse, a ~2 KB description of the link (statistics and all) for one number.
pub fn ifindex(fd: RawFd, name: &str) -> Result<Option<u32>> {
    let Some(mut r) = ifreq(name) else { return Ok(None) };
    // SAFETY: SIOCGIFINDEX reads the name from and writes the index into `r`, which outlives the call.
    if unsafe { libc::ioctl(fd, libc::SIOCGIFINDEX as _, &mut r) } < 0 {
        return match nix::errno::Errno::last() {
            nix::errno::Errno::ENODEV => Ok(None),
            e => Err(Error::errno("link", name, e)),
        };
    }
    // SAFETY: the kernel filled the index member of the union.
    Ok(Some(unsafe { r.ifr_ifru.ifru_ifindex } as u32))
}

/// The MAC address of the link called `name` in the namespace of socket `fd` (`SIOCGIFHWADDR`).
pub fn hwaddr(fd: RawFd, name: &str) -> Result<[u8; 6]> {
    let Some(mut r) = ifreq(name) else { return Err(Error::new("link", name, "invalid interface name")) };
    // SAFETY: SIOCGIFHWADDR reads the name from and writes the address into `r`, which outlives the
    // call.
    if unsafe { libc::ioctl(fd, libc::SIOCGIFHWADDR as _, &mut r) } < 0 {
        return Err(Error::errno("link", name, nix::errno::Errno::last()));
    }
    // SAFETY: the kernel filled the hardware address member of the union.
    let d = unsafe { r.ifr_ifru.ifru_hwaddr.sa_data };
    let mut mac = [0u8; 6];
    for (m, b) in mac.iter_mut().zip(d) {
        *m = b as u8;
    }
    Ok(mac)
}

/// Run the link watch's pending event for `name` (in the namespace of socket `fd`) now, in this
/// process: `ETHTOOL_GLINK` reads the link state after `linkwatch_sync_dev`, as `RTM_GETLINK` does,
/// without the ~2 KB answer. Once it returns, the device's operational state, its queue
/// (`dev_activate`) and, for a bridge port, its forwarding state are up to date instead of waiting
/// for the kernel's link-watch worker.
pub fn sync_link(fd: RawFd, name: &str) -> Result<()> {
    let Some(mut r) = ifreq(name) else { return Ok(()) };
    let mut v = [ETHTOOL_GLINK, 0u32];
    r.ifr_ifru.ifru_data = v.as_mut_ptr().cast();
    // SAFETY: SIOCETHTOOL reads `r` and the command in `v`, writes the answer into `v`; both outlive
    // the call.
    if unsafe { libc::ioctl(fd, libc::SIOCETHTOOL as _, &mut r) } < 0 {
        return Err(Error::errno("link-sync", name, nix::errno::Errno::last()));
    }
    Ok(())
}

/// One request of a [`Batch`]: the message, and the step and object an error names.
pub struct Req {
    msg: RouteNetlinkMessage,
    step: &'static str,
    object: String,
    /// An errno that means "nothing to do" for this request.
    benign: Option<i32>,
}

impl Req {
    /// `RTM_SETLINK` (as `ip link set`): `up`, `addrgenmode`.
    pub fn set_link(m: LinkMessage, step: &'static str, object: impl Into<String>) -> Req {
        Req { msg: RouteNetlinkMessage::SetLink(m), step, object: object.into(), benign: None }
    }

    /// The link's state up.
    pub fn up(index: u32, name: &str) -> Req {
        Req::set_link(LinkUnspec::new_with_index(index).up().build(), "link-up", name)
    }

    /// No IPv6 link-local address on this link; see [`no_ipv6_attr`]. A kernel without IPv6
    /// (`EAFNOSUPPORT`) has nothing to disable.
    pub fn no_ipv6_link_local(index: u32, name: &str) -> Req {
        let m = LinkUnspec::new_with_index(index).append_extra_attribute(no_ipv6_attr()).build();
        Req { benign: Some(libc::EAFNOSUPPORT), ..Req::set_link(m, "addrgenmode", name) }
    }

    pub fn add_addr(index: u32, ip: Ipv4Addr, prefix: u8, what: &str) -> Req {
        let m = AddressMessageBuilder::<Ipv4Addr>::new().index(index).address(ip, prefix).build();
        Req {
            msg: RouteNetlinkMessage::NewAddress(m),
            step: "add-addr",
            object: format!("{ip}/{prefix} on {what}"),
            benign: None,
        }
    }

    /// An IPv6 address usable at once (`nodad`); see [`Nl::add_addr6`].
    pub fn add_addr6(index: u32, ip: Ipv6Addr, prefix: u8, what: &str) -> Req {
        let mut m = AddressMessageBuilder::<Ipv6Addr>::new().index(index).address(ip, prefix).build();
        m.attributes.push(AddressAttribute::Flags(AddressFlags::Nodad));
        Req {
            msg: RouteNetlinkMessage::NewAddress(m),
            step: "add-addr",
            object: format!("{ip}/{prefix} on {what}"),
            benign: None,
        }
    }

    /// The default route through `gw`. A namespace that has one already (a second network connected to
    /// it, as `docker network connect` does) keeps it: the first network stays the way out.
    pub fn default_route(gw: IpAddr) -> Req {
        let r = match gw {
            IpAddr::V4(g) => RouteMessageBuilder::<Ipv4Addr>::new().gateway(g).build(),
            IpAddr::V6(g) => RouteMessageBuilder::<Ipv6Addr>::new().gateway(g).build(),
        };
        Req {
            msg: RouteNetlinkMessage::NewRoute(r),
            step: "add-route",
            object: format!("default via {gw}"),
            benign: Some(libc::EEXIST),
        }
    }
}

/// No IPv6 link-local address on a link (`addrgenmode none`), as a link attribute. Container networks
/// here are IPv4 unless given a v6 subnet; without this every new port sends DAD, router solicitations
/// and MLD reports that the bridge floods to every other port, which grows with the square of the
/// containers on a bridge (Docker disables IPv6 on IPv4-only networks for the same reason). Must
/// happen before the link has a carrier.
fn no_ipv6_attr() -> LinkAttribute {
    LinkAttribute::AfSpecUnspec(vec![AfSpecUnspec::Inet6(vec![AfSpecInet6::AddrGenMode(In6AddrGenMode::None)])])
}

/// A route netlink socket in one network namespace that sends several requests in one datagram.
/// The kernel handles a datagram's requests one after another, in order, exactly as if they had
/// come one by one, and acknowledges each; a batch of N costs one `sendto` and one wake-up instead
/// of N round trips. (rtnetlink's `Handle` sends one request per datagram, so this socket is driven
/// through the `netlink-proto` connection rtnetlink itself is built on.)
pub struct Batch {
    h: ConnectionHandle<RouteNetlinkMessage>,
    /// A duplicate of the connection's socket, as [`Nl`]'s.
    fd: OwnedFd,
}

impl Batch {
    /// Open a socket in `ns` (`None`: this process's own namespace); `home` is this thread's own.
    pub fn open(rt: &tokio::runtime::Handle, ns: Option<BorrowedFd<'_>>, home: BorrowedFd<'_>) -> Result<Batch> {
        use rtnetlink::sys::AsyncSocket;
        let _guard = rt.enter();
        let (mut conn, h, _) = visit(ns, home, || {
            rtnetlink::proto::new_connection(rtnetlink::sys::protocols::NETLINK_ROUTE)
                .map_err(|e| Error::io("netlink", "socket", e))
        })?;
        let fd = dup_socket(conn.socket_mut().socket_ref().as_raw_fd())?;
        // Every acknowledgement comes back, not only refusals: the n-th answer is the n-th request's.
        conn.set_forward_ack(true);
        rt.spawn(conn);
        Ok(Batch { h, fd })
    }

    /// Send `reqs` in one datagram, each with an acknowledgement asked for; the first one the kernel
    /// refused is the error. The kernel goes on with the later ones after a refusal (a caller undoes
    /// what it made as a whole, as connect does by deleting the pair).
    pub async fn run(&self, reqs: Vec<Req>) -> Result<()> {
        let mut msgs = Vec::with_capacity(reqs.len());
        for r in &reqs {
            let mut m = NetlinkMessage::from(r.msg.clone());
            m.header.flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_EXCL | NLM_F_CREATE;
            msgs.push(m);
        }
        let first = reqs.first().map(|r| (r.step, r.object.clone())).unwrap_or(("netlink", String::new()));
        let mut resp = self
            .h
            .request_batch(msgs, rtnetlink::sys::SocketAddr::new(0, 0))
            .map_err(|e| Error::new(first.0, &first.1, e))?;
        // One acknowledgement per request, in the order sent.
        let mut i = 0;
        let mut failed = None;
        while let Some(m) = resp.next().await {
            if let NetlinkPayload::Error(e) = m.payload {
                let r = &reqs[i.min(reqs.len() - 1)];
                i += 1;
                if e.code.is_some() && failed.is_none() {
                    let err = Error::netlink(r.step, &r.object, rtnetlink::Error::NetlinkError(e));
                    if !r.benign.is_some_and(|n| err.is_errno(n)) {
                        failed = Some(err);
                    }
                }
            }
        }
        if i < reqs.len() && failed.is_none() {
            return Err(Error::new(first.0, &first.1, "netlink connection closed before every answer came"));
        }
        failed.map_or(Ok(()), Err)
    }

    /// See [`ifindex`].
    pub fn index(&self, name: &str) -> Result<Option<u32>> {
        ifindex(self.fd.as_raw_fd(), name)
    }

    /// See [`sync_link`].
    pub fn sync_link(&self, name: &str) -> Result<()> {
        sync_link(self.fd.as_raw_fd(), name)
    }
}

/// Route types that put a prefix to use in a namespace: routed somewhere (`unicast`), or the
/// namespace's own addresses (`local`, `broadcast`, `anycast`: the local table's entries, the only
/// trace of an address with no prefix route, such as `10.50.0.5/32` on `lo`, and of `127.0.0.0/8`).
/// Not the kernel's multicast entries, nor the blackhole/unreachable/prohibit routes a user may keep
/// over a whole private range on purpose.
fn occupies(kind: RouteType) -> bool {
    matches!(kind, RouteType::Unicast | RouteType::Local | RouteType::Broadcast | RouteType::Anycast)
}

/// The IPv4 prefixes a namespace routes somewhere or holds addresses of (see [`occupies`]), except
/// default routes, with the index of the link each goes out of.
pub fn route_prefixes(routes: &[RouteMessage]) -> Vec<(Subnet, Option<u32>)> {
    let mut out = Vec::new();
    for r in routes {
        if r.header.destination_prefix_length == 0 || !occupies(r.header.kind) {
            continue;
        }
        let mut dst = None;
        let mut oif = None;
        for a in &r.attributes {
            match a {
                RouteAttribute::Destination(RouteAddress::Inet(ip)) => dst = Some(*ip),
                RouteAttribute::Oif(i) => oif = Some(*i),
                _ => {}
            }
        }
        if let Some(ip) = dst {
            let prefix = r.header.destination_prefix_length;
            let mask = if prefix == 0 { 0 } else { u32::MAX << (32 - prefix) };
            out.push((Subnet { net: Ipv4Addr::from(u32::from(ip) & mask), prefix }, oif));
        }
    }
    out
}

pub fn name(m: &LinkMessage) -> String {
    m.attributes
        .iter()
        .find_map(|a| if let LinkAttribute::IfName(n) = a { Some(n.clone()) } else { None })
        .unwrap_or_default()
}

pub fn kind(m: &LinkMessage) -> Option<InfoKind> {
    m.attributes.iter().find_map(|a| match a {
        LinkAttribute::LinkInfo(infos) => {
            infos.iter().find_map(|i| if let LinkInfo::Kind(k) = i { Some(k.clone()) } else { None })
        }
        _ => None,
    })
}

pub fn master(m: &LinkMessage) -> Option<u32> {
    m.attributes.iter().find_map(|a| if let LinkAttribute::Controller(i) = a { Some(*i) } else { None })
}

/// A veth's peer index (`@ifN` in `ip link`): an index in the peer's namespace.
pub fn peer_index(m: &LinkMessage) -> Option<u32> {
    m.attributes.iter().find_map(|a| if let LinkAttribute::Link(i) = a { Some(*i) } else { None })
}

/// The namespace id (relative to the namespace we asked in) of the peer, `-1`/None when same namespace.
pub fn peer_netnsid(m: &LinkMessage) -> Option<i32> {
    m.attributes.iter().find_map(|a| if let LinkAttribute::LinkNetNsId(i) = a { Some(*i) } else { None })
}

pub fn mac(m: &LinkMessage) -> String {
    m.attributes
        .iter()
        .find_map(|a| if let LinkAttribute::Address(b) = a { Some(fmt_mac(b)) } else { None })
        .unwrap_or_default()
}

pub fn is_up(m: &LinkMessage) -> bool {
    m.header.flags.contains(LinkFlags::Up)
}

pub fn fmt_mac(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect::<Vec<_>>().join(":")
}

/// `aa:bb:cc:dd:ee:ff`, unicast (a multicast MAC on an interface breaks ARP).
pub fn parse_mac(s: &str) -> std::result::Result<[u8; 6], String> {
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() != 6 {
        return Err("want six hex bytes like 02:42:ac:11:00:02".into());
    }
    let mut mac = [0u8; 6];
    for (i, p) in parts.iter().enumerate() {
        if p.len() != 2 {
            return Err("want six hex bytes like 02:42:ac:11:00:02".into());
        }
        mac[i] = u8::from_str_radix(p, 16).map_err(|_| format!("{p:?} is not a hex byte"))?;
    }
    if mac[0] & 1 == 1 {
        return Err("a multicast address cannot be an interface's address".into());
    }
    if mac == [0; 6] {
        return Err("the all-zero address cannot be an interface's address".into());
    }
    Ok(mac)
}

/// A random locally administered unicast MAC.
pub fn random_mac() -> [u8; 6] {
    let mut mac = [0u8; 6];
    // getrandom(2) on 6 bytes never blocks after boot and never returns short for ≤ 256 bytes.
    // SAFETY: writes at most 6 bytes into `mac`.
    unsafe { libc::getrandom(mac.as_mut_ptr().cast(), mac.len(), 0) };
    mac[0] = (mac[0] & 0xfe) | 0x02;
    mac
}

/// A close-on-exec duplicate of a connection's socket, for ioctls on it (see [`Nl`]).
fn dup_socket(fd: RawFd) -> Result<OwnedFd> {
    // SAFETY: the connection owns `fd` and is alive here; the borrow ends with the duplicate.
    unsafe { BorrowedFd::borrow_raw(fd) }.try_clone_to_owned().map_err(|e| Error::io("netlink", "dup", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs() {
        assert_eq!(parse_mac("02:42:ac:11:00:02").unwrap(), [2, 0x42, 0xac, 0x11, 0, 2]);
        assert!(parse_mac("01:00:5e:00:00:01").is_err());
        assert!(parse_mac("02:42:ac:11:00").is_err());
        assert!(parse_mac("02:42:ac:11:00:zz").is_err());
        let m = random_mac();
        assert_eq!(m[0] & 3, 2);
    }
}
