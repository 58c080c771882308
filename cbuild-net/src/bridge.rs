//! Bridges: the host side of every container network. A bridge's configuration (subnet, gateway,
//! whether NAT is on) lives in `<state>/net/<BR>/bridge.json` next to its IPAM leases.

use std::net::Ipv4Addr;
use std::path::Path;

use rtnetlink::packet_route::link::InfoKind;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::ipam::{Leases, Subnet, Subnet6};
use crate::netns::{self, in_netns};
use crate::nft::{self, Nft, RuleInfo};
use crate::nl::{self, Nl};
use crate::paths::{self, bridge_dir, check_ifname};
use crate::Ctx;

/// The bridge used when none is named, created on first use as docker0 is.
pub const DEFAULT: &str = "cbuild0";

/// Private /16s tried in order for the default bridge; the first that overlaps no route wins.
fn default_candidates() -> impl Iterator<Item = Subnet> {
    (17..=31u8)
        .map(|b| Subnet { net: Ipv4Addr::new(172, b, 0, 0), prefix: 16 })
        .chain((88..=99u8).map(|b| Subnet { net: Ipv4Addr::new(10, b, 0, 0), prefix: 16 }))
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BridgeConf {
    pub name: String,
    pub subnet: Subnet,
    pub gateway: Ipv4Addr,
    #[serde(default)]
    pub nat: bool,
    /// Dual-stack bridges only: the IPv6 subnet and the gateway (the IPv4 gateway's host number).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet6: Option<Subnet6>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway6: Option<std::net::Ipv6Addr>,
    /// Saved before the link is made, cleared by the last step: a `bridge add` that was killed left
    /// the bridge without forwarding or NAT, and `connect` completes it before using it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub building: bool,
}

pub fn conf_path(state: &Path, name: &str) -> std::path::PathBuf {
    bridge_dir(state, name).join("bridge.json")
}

/// A bridge's configuration, `None` when it has none. The file is another process's input as much as
/// ours: a `name` that is not a valid bridge name, or not the name of its own directory, would send
/// lease and lock paths elsewhere (`../..`), so such a file is refused, as a forged record is.
pub fn load(state: &Path, name: &str) -> Result<Option<BridgeConf>> {
    check_bridge_name(name)?;
    let p = conf_path(state, name);
    let b = match paths::read_nofollow(&p, 3) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("bridge", p.display(), e)),
    };
    let c: BridgeConf = serde_json::from_str(&b).map_err(|e| Error::new("bridge", p.display(), e))?;
    if c.name != name || check_bridge_name(&c.name).is_err() {
        return Err(Error::new(
            "bridge",
            p.display(),
            format!("invalid configuration: names bridge {:?}, not its directory's {name:?}", c.name),
        ));
    }
    Ok(Some(c))
}

/// Whether the bridge is still the one `c` describes, asked under its IPAM lock of the configuration in
/// the directory locked (no second path walk): a bridge deleted and made again since `c` was read, on
/// another subnet or gateway, or gone, is refused.
pub fn check_unchanged(leases: &Leases, c: &BridgeConf) -> Result<()> {
    match reread(leases, c) {
        Some(_) => Ok(()),
        None => Err(Error::new("ipam", &c.name, "bridge deleted or made again while connecting")),
    }
}

/// The configuration in the directory `leases` locked, if it is still the bridge `c` describes (see
/// [`check_unchanged`]): what is there now, `nat` and `building` included, not what `c` says.
fn reread(leases: &Leases, c: &BridgeConf) -> Option<BridgeConf> {
    let now = leases.read(c"bridge.json").ok().and_then(|b| serde_json::from_str::<BridgeConf>(&b).ok())?;
    let same = (&now.name, now.subnet, now.gateway, now.subnet6, now.gateway6)
        == (&c.name, c.subnet, c.gateway, c.subnet6, c.gateway6);
    same.then_some(now)
}

/// Every bridge cbuild knows about in this state dir (a directory whose name or configuration is not
/// valid is skipped: `bridge del` of it names the problem).
pub fn list(state: &Path) -> Vec<BridgeConf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(paths::net_dir(state)) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if check_bridge_name(&name).is_err() {
                continue;
            }
            if let Ok(Some(c)) = load(state, &name) {
                out.push(c);
            }
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

fn save(state: &Path, c: &BridgeConf) -> Result<()> {
    let data = serde_json::to_vec_pretty(c).map_err(|e| Error::new("bridge", &c.name, e))?;
    paths::write_atomic("bridge", &conf_path(state, &c.name), 3, &data)
}

/// A bridge name: an interface name, and a NAME (it names a state directory too).
pub fn check_bridge_name(name: &str) -> Result<()> {
    check_ifname("bridge", name)?;
    paths::check_name("bridge", "bridge name", name)?;
    // <state>/net/<BR> sits next to the nft lock file: a bridge of that name would make the lock a
    // directory and break every NAT and publish verb (even `bridge del` of any bridge).
    if name == "nft.lock" {
        return Err(Error::new("bridge", name, "reserved: <state>/net/nft.lock is cbuild-net's nft lock"));
    }
    Ok(())
}

/// Refuse a subnet that overlaps a route already present in the host namespace (other than the
/// bridge's own) or in the machine's root namespace: traffic for it would go the wrong way.
pub async fn check_free(ctx: &Ctx, host: &Nl, subnet: &Subnet, own_index: Option<u32>) -> Result<()> {
    for (p, oif) in nl::route_prefixes(&host.routes_v4().await?) {
        if p.overlaps(subnet) && (own_index.is_none() || oif != own_index) {
            return Err(Error::new("bridge", subnet, format!("overlaps route {p} already present")));
        }
    }
    if let Some(rnl) = other_root(ctx)? {
        for (p, _) in nl::route_prefixes(&rnl.routes_v4().await?) {
            if p.overlaps(subnet) {
                return Err(in_root(subnet, p));
            }
        }
    }
    Ok(())
}

/// The machine's root network namespace, when the host namespace is another one: a lab's "host"
/// usually reaches the world through the real host, whose routes must stay unambiguous too.
fn other_root(ctx: &Ctx) -> Result<Option<Nl>> {
    let root = match netns::open_path(Path::new("/proc/1/ns/net")) {
        Ok(r) => r,
        Err(e) => {
            // Not readable (a sandbox that hides PID 1's namespaces): nothing to check against, said so.
            ctx.step("check-routes", format_args!("root network namespace not checked ({e})"));
            return Ok(None);
        }
    };
    if root.inode == ctx.host_inode {
        return Ok(None);
    }
    use std::os::fd::AsFd;
    Ok(Some(ctx.nl_in(Some(root.fd.as_fd()))?))
}

fn in_root(subnet: impl std::fmt::Display, p: impl std::fmt::Display) -> Error {
    Error::new("bridge", subnet, format!("overlaps route {p} already present in the root network namespace"))
}

/// A stable locally administered MAC for a bridge, derived from its name.
fn bridge_mac(name: &str) -> [u8; 6] {
    let h = paths::host_ifname(name);
    let b = u64::from_str_radix(&h[2..], 16).unwrap_or(0).to_be_bytes();
    [0x02, 0xcb, b[4], b[5], b[6], b[7]]
}

/// `bridge add`: idempotent. Same name and subnet again: makes sure the link, its address and
/// forwarding are there. A different subnet for an existing bridge: an error.
pub async fn add(
    ctx: &Ctx,
    host: &Nl,
    name: &str,
    subnet: Subnet,
    gateway: Option<Ipv4Addr>,
    nat: bool,
    subnet6: Option<Subnet6>,
) -> Result<BridgeConf> {
    check_bridge_name(name)?;
    let gateway = gateway.unwrap_or_else(|| subnet.first_host());
    if !subnet.is_host(gateway) {
        return Err(Error::new("bridge", gateway, format!("gateway is not a host address in {subnet}")));
    }
    if let Some(s6) = &subnet6 {
        if !s6.fits(&subnet) {
            return Err(Error::new(
                "bridge",
                s6,
                format!(
                    "too small for {subnet}: IPv6 addresses follow the IPv4 host numbers (want a /{} or larger)",
                    96 + subnet.prefix
                ),
            ));
        }
    }
    let dir = bridge_dir(&ctx.state, name);
    // All bridges are checked against each other's routes and made under one lock, taken on <state>/net
    // itself (no lock file to leave behind): two adds of overlapping subnets at once would each pass
    // before the other's route exists.
    let _all = lock_net(ctx, Some(&dir))?.ok_or_else(|| Error::new("lock", dir.display(), "not made"))?;
    let leases = Leases::new(dir.clone());
    let lock = leases.lock()?;
    // Ours to remove on failure only if it had no configuration when this add took the locks: then
    // nothing in it is another add's, nor a connect's (none leases on a bridge it cannot load).
    let existing = load(&ctx.state, name);
    let owned = matches!(existing, Ok(None));
    let mut created_link = false;
    let r = match existing {
        Ok(existing) => add_locked(ctx, host, name, subnet, gateway, nat, subnet6, existing, &mut created_link).await,
        Err(e) => Err(e),
    };
    if r.is_err() {
        if created_link {
            ctx.step("undo", format_args!("del-link {name}"));
            if let Err(u) = host.del_link_by_name(name).await {
                ctx.undo_failed(&u);
            }
        }
        // Both locks still held: an add waiting for them finds the directory gone and makes it again, a
        // connect waiting for the IPAM lock finds the bridge deleted.
        if owned {
            let _ = std::fs::remove_dir_all(&dir);
            crate::ipam::rmdir_quiet(&paths::net_dir(&ctx.state));
        }
    }
    drop(lock);
    r
}

/// The lock on `<state>/net`, held by `bridge add` (the bridge's directory `dir` made in it) and by
/// `bridge del` (`dir` `None`: nothing made, and no `<state>/net` is `Ok(None)`, no bridge at all). A
/// failed add's undo and a del remove the bridge's directory and an emptied `<state>/net` while holding
/// it: a lock won on a directory no longer at that path guards nothing, and is taken again.
fn lock_net(ctx: &Ctx, dir: Option<&Path>) -> Result<Option<nix::fcntl::Flock<std::fs::File>>> {
    use std::os::unix::fs::MetadataExt;
    let net = paths::net_dir(&ctx.state);
    if let Some(dir) = dir {
        ctx.step("mkdir", dir.display());
    }
    loop {
        if dir.is_some() {
            std::fs::create_dir_all(&net).map_err(|e| Error::io("mkdir", net.display(), e))?;
        }
        let f = match std::fs::File::open(&net) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && dir.is_some() => continue,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            r => r.map_err(|e| Error::io("lock", net.display(), e))?,
        };
        let all = nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| Error::errno("lock", net.display(), e))?;
        // Once locked: a failed add's undo or a del may have removed it; made now, it keeps <state>/net
        // non-empty.
        if let Some(dir) = dir {
            std::fs::create_dir_all(dir).map_err(|e| Error::io("mkdir", dir.display(), e))?;
        }
        let held = all.metadata().map_err(|e| Error::io("lock", net.display(), e))?.ino();
        match std::fs::metadata(&net) {
            Ok(m) if m.ino() == held => return Ok(Some(all)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && dir.is_none() => return Ok(None),
            _ => {}
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn add_locked(
    ctx: &Ctx,
    host: &Nl,
    name: &str,
    subnet: Subnet,
    gateway: Ipv4Addr,
    nat: bool,
    subnet6: Option<Subnet6>,
    existing: Option<BridgeConf>,
    created_link: &mut bool,
) -> Result<BridgeConf> {
    if let Some(c) = &existing {
        if c.subnet != subnet || c.gateway != gateway || c.subnet6 != subnet6 {
            let v6 = c.subnet6.map(|s| format!(" subnet6 {s}")).unwrap_or_default();
            return Err(Error::new(
                "bridge",
                name,
                format!("already exists with subnet {} gateway {}{v6}", c.subnet, c.gateway),
            )
            .hint(format!("remove it first with `cbuild-net bridge del {name}`")));
        }
    }
    ctx.step("link", name);
    let link = host.link(name).await?;
    let index = match &link {
        Some(l) => {
            if existing.is_none() {
                return Err(Error::new("bridge", name, "a link with this name exists and cbuild did not create it"));
            }
            if nl::kind(l) != Some(InfoKind::Bridge) {
                return Err(Error::new("bridge", name, "a link with this name exists and is not a bridge"));
            }
            Some(l.header.index)
        }
        None => None,
    };
    ctx.step("check-routes", subnet);
    check_free(ctx, host, &subnet, index).await?;
    if let Some(s6) = &subnet6 {
        check_free6(ctx, host, s6, index).await?;
    }
    // The config is written before the link is made: a kill between the two then leaves a bridge
    // that the same `bridge add` completes (or `bridge del` removes), not a link of its name that
    // cbuild no longer recognises as its own.
    let conf = BridgeConf {
        name: name.to_string(),
        subnet,
        gateway,
        nat: nat || existing.as_ref().is_some_and(|c| c.nat),
        subnet6,
        gateway6: subnet6.map(|s6| s6.follow(&subnet, gateway)),
        building: true,
    };
    if existing.is_none() {
        save(&ctx.state, &conf)?;
    }
    let index = match index {
        Some(i) => {
            host.set_up(i, name).await?;
            i
        }
        None => {
            ctx.step("add-bridge", name);
            host.add_bridge(name, bridge_mac(name)).await?;
            *created_link = true;
            host.link(name).await?.ok_or_else(|| Error::new("add-bridge", name, "link vanished"))?.header.index
        }
    };
    ctx.step("add-addr", format_args!("{gateway}/{} on {name}", subnet.prefix));
    match host.add_addr(index, gateway, subnet.prefix, name).await {
        Err(e) if e.is_errno(libc::EEXIST) => {}
        r => r?,
    }
    if let (Some(s6), Some(gw6)) = (conf.subnet6, conf.gateway6) {
        ctx.step("add-addr", format_args!("{gw6}/{} on {name}", s6.prefix));
        match host.add_addr6(index, gw6, s6.prefix, name).await {
            Err(e) if e.is_errno(libc::EEXIST) => {}
            r => r?,
        }
    }
    // Before the steps the undo does not cover (forwarding, NAT): a stop signal held meanwhile fails
    // the add here, undone; one that comes later ends the process once the bridge is complete.
    crate::signals::check("bridge", name)?;
    ctx.step("ip-forward", "net.ipv4.ip_forward=1");
    enable_forwarding(ctx, conf.subnet6.is_some())?;
    if conf.nat {
        set_nat_rules(ctx, &conf, true)?;
    }
    let conf = BridgeConf { building: false, ..conf };
    save(&ctx.state, &conf)?;
    Ok(conf)
}

/// `net.ipv4.ip_forward = 1` in the host namespace: /proc/sys/net shows the namespace of the thread
/// that opens it, so the write happens on a thread that joined it.
/// A dual-stack bridge also needs `net.ipv6.conf.all.forwarding = 1` (which also makes the namespace
/// stop taking router advertisements, as any IPv6 router does).
fn enable_forwarding(ctx: &Ctx, v6: bool) -> Result<()> {
    in_netns(ctx.host_fd(), || {
        let mut files = vec!["/proc/sys/net/ipv4/ip_forward"];
        if v6 {
            files.push("/proc/sys/net/ipv6/conf/all/forwarding");
        }
        for p in files {
            if std::fs::read_to_string(p).map(|s| s.trim() == "1").unwrap_or(false) {
                continue;
            }
            std::fs::write(p, "1").map_err(|e| Error::io("ip-forward", p, e))?;
        }
        Ok(())
    })
}

/// `check_free` for a dual-stack bridge's IPv6 subnet (the bridge's own routes excepted once it
/// exists).
pub async fn check_free6(ctx: &Ctx, host: &Nl, subnet: &Subnet6, own_index: Option<u32>) -> Result<()> {
    for (p, oif) in host.prefixes_v6().await? {
        if p.overlaps(subnet) && (own_index.is_none() || oif != own_index) {
            return Err(Error::new("bridge", subnet, format!("overlaps route {p} already present")));
        }
    }
    if let Some(rnl) = other_root(ctx)? {
        for (p, _) in rnl.prefixes_v6().await? {
            if p.overlaps(subnet) {
                return Err(in_root(subnet, p));
            }
        }
    }
    Ok(())
}

/// The default bridge, created on first use on the first private /16 no route overlaps, NAT on.
///
/// Once made it stays, as docker0 does, even when the connect that made it fails: connects racing
/// this one may already be using it (or about to, between reading its configuration and taking a
/// lease), and `add` cannot tell which of several concurrent callers really created it. Only
/// `bridge del cbuild0` removes it.
pub async fn ensure_default(ctx: &Ctx, host: &Nl) -> Result<BridgeConf> {
    if let Some(c) = load(&ctx.state, DEFAULT)? {
        return Ok(c);
    }
    for cand in default_candidates() {
        match add(ctx, host, DEFAULT, cand, None, true, None).await {
            Ok(c) => return Ok(c),
            Err(e) => {
                // A concurrent connect made it meanwhile, on another candidate: use that one.
                if let Some(c) = load(&ctx.state, DEFAULT)? {
                    return Ok(c);
                }
                if !e.reason.contains("overlaps route") {
                    return Err(e);
                }
            }
        }
    }
    Err(Error::new("bridge", DEFAULT, "every default subnet overlaps a route")
        .hint("create it with `cbuild-net bridge add cbuild0 --subnet CIDR`"))
}

/// `bridge del`: refuses while containers are attached; removes its NAT rule, link and state.
pub async fn del(ctx: &Ctx, host: &Nl, name: &str) -> Result<()> {
    check_bridge_name(name)?;
    let no_such = || Error::new("bridge", name, "no such bridge");
    // The lock adds of bridges hold, until the directory is gone: an add of this name that comes now
    // waits and makes the bridge afresh, one at work is waited for and its bridge deleted. With the IPAM
    // lock alone, an add waiting for it woke in a directory this del had removed and failed `no such
    // bridge (deleted)`.
    let _all = lock_net(ctx, None)?.ok_or_else(no_such)?;
    let Some(conf) = load(&ctx.state, name)? else {
        return Err(no_such());
    };
    let leases = Leases::new(bridge_dir(&ctx.state, name));
    // Held until the directory is gone: a connect that takes a lease after this check would otherwise
    // see its lease removed with the directory and its pair detached from a deleted bridge.
    let _lock = leases.lock()?;
    let held = leases.list();
    if !held.is_empty() {
        return Err(Error::new("bridge", name, format!("{} containers still attached", held.len()))
            .hint("disconnect them first (`cbuild-net ls` lists them)"));
    }
    set_nat_rules(ctx, &conf, false)?;
    // A later step that fails leaves the bridge known (its bridge.json stays, and says `nat`): its
    // masquerade rule goes back, so what is left agrees with its configuration (the link perhaps gone, as
    // after its namespace was recreated), and the same del removes it or a connect completes it.
    let r = del_rest(ctx, host, name, &conf).await;
    if r.is_err() && conf.nat {
        if let Err(e) = set_nat_rules(ctx, &conf, true) {
            ctx.undo_failed(&e);
        }
    }
    r
}

/// `bridge del` once its NAT rule is gone: publish rules, the link, the directory.
async fn del_rest(ctx: &Ctx, host: &Nl, name: &str, conf: &BridgeConf) -> Result<()> {
    {
        // Bridge-wide publish rules a killed unpublish may have left (no lease means no port).
        let nft = ctx.nft();
        let _l = nft.lock()?;
        let all = nft.rules()?;
        let mine: Vec<_> = all.iter().filter(|r| nft::parse_ports_comment(&r.comment) == Some(name)).cloned().collect();
        if !mine.is_empty() {
            ctx.step("nft-delete", nft::ports_comment(name));
            nft.delete(&mine, &all)?;
        }
        if conf.subnet6.is_some() {
            delete_publish_rules6(ctx, |r| nft::parse_ports_comment(&r.comment) == Some(name))?;
        }
    }
    // Only a bridge is deleted: a link of this name of another kind (the bridge vanished and the
    // name was reused) is not cbuild's, and is left alone while cbuild's own state still goes.
    match host.link(name).await? {
        Some(l) if nl::kind(&l) == Some(InfoKind::Bridge) => {
            ctx.step("del-link", name);
            match host.del_link(l.header.index, name).await {
                Err(e) if !e.is_errno(libc::ENODEV) => return Err(e),
                _ => {}
            }
        }
        Some(_) => ctx.step("del-link", format_args!("{name}: not a bridge, not cbuild's: left alone")),
        None => {}
    }
    let dir = bridge_dir(&ctx.state, name);
    ctx.step("rmdir", dir.display());
    std::fs::remove_dir_all(&dir).map_err(|e| Error::io("rmdir", dir.display(), e))?;
    crate::ipam::rmdir_quiet(&paths::net_dir(&ctx.state));
    Ok(())
}

/// `net.ipv4.conf.BR.route_localnet` in the host namespace: on while the bridge has published ports,
/// so the host's own connections to `127.0.0.1:HOSTPORT` may leave by the bridge once DNAT'd (the
/// kernel drops a loopback source on any other link). Off: a bridge whose link is gone has nothing
/// to turn off.
pub fn set_route_localnet(ctx: &Ctx, name: &str, on: bool) -> Result<()> {
    check_bridge_name(name)?;
    in_netns(ctx.host_fd(), || {
        let p = format!("/proc/sys/net/ipv4/conf/{name}/route_localnet");
        match std::fs::write(&p, if on { "1" } else { "0" }) {
            Err(e) if !on && e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            r => r.map_err(|e| Error::io("route-localnet", &p, e)),
        }
    })
}

/// Delete the publish rules `gone` (listed in `all`; the caller holds the nft lock). A bridge of this
/// state dir left without any published port loses its bridge-wide rules too, `route_localnet`
/// turned off before its guard goes.
pub fn delete_publish_rules(ctx: &Ctx, nft: &Nft, gone: &[RuleInfo], all: &[RuleInfo]) -> Result<Vec<RuleInfo>> {
    let (gone, emptied) = nft::with_emptied_ports(gone, all, &subnets(ctx));
    for b in &emptied {
        ctx.step("route-localnet", format_args!("{b} off"));
        set_route_localnet(ctx, b, false)?;
    }
    nft.delete(&gone, all)?;
    Ok(gone)
}

fn subnets(ctx: &Ctx) -> Vec<(String, Subnet, Option<Subnet6>)> {
    list(&ctx.state).into_iter().map(|b| (b.name, b.subnet, b.subnet6)).collect()
}

/// The IPv6 side of [`delete_publish_rules`]: the publish rules in `ip6 cbuild` that `pick` selects,
/// and the bridge-wide rules of dual-stack bridges left without a published port (the caller holds
/// the nft lock). Nothing when the table does not exist.
pub fn delete_publish_rules6(ctx: &Ctx, pick: impl Fn(&RuleInfo) -> bool) -> Result<Vec<RuleInfo>> {
    let nft = ctx.nft().v6();
    let all = nft.rules()?;
    let picked: Vec<_> = all.iter().filter(|r| pick(r)).cloned().collect();
    let (gone, _) = nft::with_emptied_ports(&picked, &all, &subnets(ctx));
    nft.delete(&gone, &all)?;
    Ok(gone)
}

/// `nat BR on|off`.
pub fn set_nat(ctx: &Ctx, name: &str, on: bool) -> Result<()> {
    check_bridge_name(name)?;
    let Some(read) = load(&ctx.state, name)? else {
        return Err(Error::new("nat", name, "no such bridge")
            .hint(format!("create it with `cbuild-net bridge add {name} --subnet CIDR`")));
    };
    // `read` came before this lock, which `bridge del` holds until the directory is gone and `bridge add`
    // while it works: a bridge deleted and made again meanwhile got the old one's configuration (subnet
    // and all) written into its new directory by the path, and a rule for the old subnet. Under the lock
    // the configuration is read again through the directory locked, and written back there.
    let leases = Leases::new(bridge_dir(&ctx.state, name));
    let changed = || {
        Error::new("nat", name, "bridge deleted or made again meanwhile")
            .hint(format!("run `cbuild-net nat {name} {}` again", if on { "on" } else { "off" }))
    };
    let _lock = match leases.lock() {
        Err(e) if e.is_errno(libc::ENOENT) => return Err(changed()),
        r => r?,
    };
    let mut conf = reread(&leases, &read).ok_or_else(changed)?;
    set_nat_rules(ctx, &conf, on)?;
    conf.nat = on;
    let data = serde_json::to_vec_pretty(&conf).map_err(|e| Error::new("nat", name, e))?;
    leases.write("nat", c"bridge.json", &data)
}

fn set_nat_rules(ctx: &Ctx, conf: &BridgeConf, on: bool) -> Result<()> {
    let nft = ctx.nft();
    let _lock = nft.lock()?;
    let comment = nft::nat_comment(&conf.name);
    // IPv4 in `ip cbuild`; a dual-stack bridge's IPv6 (NAT66) in `ip6 cbuild`. Off: both, whatever
    // the configuration says, so nothing can outlive the bridge.
    let v6 = ctx.nft().v6();
    let mut tables = vec![(&nft, Some(nft::masquerade_rule(&conf.name, &conf.subnet)), conf.subnet.to_string())];
    if let Some(s6) = conf.subnet6 {
        tables.push((&v6, Some(nft::masquerade_rule6(&conf.name, &s6)), s6.to_string()));
    } else if !on {
        tables.push((&v6, None, String::new()));
    }
    for (t, rule, subnet) in tables {
        let rules = t.rules()?;
        let mine: Vec<_> = rules.iter().filter(|r| r.comment == comment).cloned().collect();
        match rule {
            Some(r) if on && mine.is_empty() => {
                ctx.step("nft-add", format_args!("masquerade {subnet} out of {}", conf.name));
                t.add(vec![r])?;
            }
            _ if !on && !mine.is_empty() => {
                ctx.step("nft-delete", format_args!("masquerade out of {}", conf.name));
                t.delete(&mine, &rules)?;
            }
            _ => {}
        }
    }
    Ok(())
}
