//! `ls` and `prune`: what exists (bridges, veth pairs with both ends, leases, rules) and what is
//! orphaned — the one view both verbs share, so prune removes exactly what ls reports as orphaned.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use rtnetlink::packet_route::link::InfoKind;
use serde::Serialize;

use crate::attach::{self, Record};
use crate::bridge::{self, BridgeConf};
use crate::error::Result;
use crate::ipam::Leases;
use crate::nft::{self, RuleInfo};
use crate::nl::{self, Nl};
use crate::paths::{bridge_dir, host_ifname};
use crate::Ctx;

#[derive(Debug, Serialize)]
pub struct BridgeView {
    #[serde(flatten)]
    pub conf: BridgeConf,
    pub ifindex: Option<u32>,
    pub up: bool,
    pub leases: usize,
}

#[derive(Debug, Serialize)]
pub struct PairView {
    pub id: Option<String>,
    pub bridge: Option<String>,
    pub host_ifname: String,
    pub host_ifindex: Option<u32>,
    pub peer_ifname: Option<String>,
    pub peer_ifindex: Option<u32>,
    pub netns: Option<String>,
    pub ip: Option<Ipv4Addr>,
    pub orphaned: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub why: Option<&'static str>,
    /// Set when the pair lives in another host namespace than this invocation's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_netns: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct LeaseView {
    pub bridge: String,
    pub ip: Ipv4Addr,
    pub id: String,
}

#[derive(Debug, Default)]
pub struct Inventory {
    pub bridges: Vec<BridgeView>,
    pub pairs: Vec<PairView>,
    pub orphan_leases: Vec<LeaseView>,
    pub orphan_rules: Vec<RuleInfo>,
    pub rules: Vec<RuleInfo>,
    /// The `ip6 cbuild` table's rules (dual-stack bridges), for `ls`; `prune` reads that table itself.
    pub rules6: Vec<RuleInfo>,
    pub orphan_rules6: Vec<RuleInfo>,
    /// IDs whose records are empty and unlocked (a connect died).
    pub broken: Vec<String>,
}

pub async fn take(ctx: &Ctx, host: &Nl) -> Result<Inventory> {
    let links = host.links().await?;
    let by_name: BTreeMap<String, _> = links.iter().map(|l| (nl::name(l), l)).collect();
    let records = attach::records(&ctx.state);
    let mut inv = Inventory::default();
    // IDs that own things: complete records and connects in progress.
    let mut live: BTreeSet<String> = BTreeSet::new();
    let mut claimed: BTreeSet<String> = BTreeSet::new();
    for r in &records {
        match r {
            Record::Complete(a) => {
                let gone = match attach::home_of(ctx, a) {
                    attach::Home::Here => false,
                    attach::Home::Gone => true,
                    attach::Home::Elsewhere(p) => {
                        // Another host namespace's: alive, and none of this namespace's business.
                        live.insert(a.id.clone());
                        inv.pairs.push(PairView {
                            id: Some(a.id.clone()),
                            bridge: Some(a.bridge.clone()),
                            host_ifname: a.host_ifname.clone(),
                            host_ifindex: None,
                            peer_ifname: Some(a.ifname.clone()),
                            peer_ifindex: Some(a.peer_ifindex),
                            netns: Some(a.netns.clone()),
                            ip: Some(a.ip),
                            orphaned: false,
                            why: None,
                            host_netns: Some(if p.is_empty() { "another".into() } else { p }),
                        });
                        continue;
                    }
                };
                live.insert(a.id.clone());
                claimed.insert(a.host_ifname.clone());
                let link = by_name.get(&a.host_ifname);
                inv.pairs.push(PairView {
                    id: Some(a.id.clone()),
                    bridge: Some(a.bridge.clone()),
                    host_ifname: a.host_ifname.clone(),
                    host_ifindex: link.map(|l| l.header.index),
                    peer_ifname: Some(a.ifname.clone()),
                    peer_ifindex: link.and_then(|l| nl::peer_index(l)).or(Some(a.peer_ifindex)),
                    netns: Some(a.netns.clone()),
                    ip: Some(a.ip),
                    orphaned: gone || link.is_none(),
                    why: if gone {
                        Some("host namespace gone")
                    } else {
                        link.is_none().then_some("host end gone: the container's namespace was destroyed")
                    },
                    host_netns: None,
                });
            }
            Record::Busy(id) => {
                live.insert(id.clone());
                claimed.insert(host_ifname(id));
            }
            Record::Broken(id) => {
                inv.broken.push(id.clone());
                claimed.insert(host_ifname(id));
                let link = by_name.get(&host_ifname(id));
                inv.pairs.push(PairView {
                    id: Some(id.clone()),
                    bridge: None,
                    host_ifname: host_ifname(id),
                    host_ifindex: link.map(|l| l.header.index),
                    peer_ifname: None,
                    peer_ifindex: link.and_then(|l| nl::peer_index(l)),
                    netns: None,
                    ip: None,
                    orphaned: true,
                    why: Some("half-built: a connect died before finishing"),
                    host_netns: None,
                });
            }
        }
    }
    // A host end is created already enslaved to its bridge: one on a bridge this state dir does not
    // know belongs to another state dir's cbuild sharing this host namespace, never to us.
    let ours: BTreeSet<u32> =
        bridge::list(&ctx.state).iter().filter_map(|b| by_name.get(&b.name).map(|l| l.header.index)).collect();
    for l in &links {
        let n = nl::name(l);
        let foreign = nl::master(l).is_some_and(|m| !ours.contains(&m));
        if nl::kind(l) == Some(InfoKind::Veth) && attach::is_host_veth_name(&n) && !claimed.contains(&n) && !foreign {
            inv.pairs.push(PairView {
                id: None,
                bridge: None,
                host_ifname: n,
                host_ifindex: Some(l.header.index),
                peer_ifname: None,
                peer_ifindex: nl::peer_index(l),
                netns: nl::peer_netnsid(l).map(|i| format!("nsid {i}")),
                ip: None,
                orphaned: true,
                why: Some("no container record owns it"),
                host_netns: None,
            });
        }
    }
    for conf in bridge::list(&ctx.state) {
        let leases = Leases::new(bridge_dir(&ctx.state, &conf.name)).list();
        for (ip, id) in &leases {
            if !live.contains(id) && !inv.broken.contains(id) {
                inv.orphan_leases.push(LeaseView { bridge: conf.name.clone(), ip: *ip, id: id.clone() });
            }
        }
        let link = by_name.get(&conf.name);
        inv.bridges.push(BridgeView {
            ifindex: link.map(|l| l.header.index),
            up: link.is_some_and(|l| nl::is_up(l)),
            leases: leases.len(),
            conf,
        });
    }
    inv.rules = ctx.nft().rules()?;
    if inv.bridges.iter().any(|b| b.conf.subnet6.is_some()) {
        inv.rules6 = ctx.nft().v6().rules()?;
    }
    // The tables are shared by every state dir using this host namespace: a publish rule is ours to
    // judge only when it sends to one of our bridges' subnets (bridges never overlap).
    for (rules, orphans) in [(&inv.rules, &mut inv.orphan_rules), (&inv.rules6, &mut inv.orphan_rules6)] {
        for r in rules {
            if let Some((owner, _, _)) = nft::parse_pub_comment(&r.comment) {
                let mine = r.dnat.is_none_or(|ip| {
                    inv.bridges.iter().any(|b| nft::sends_to(ip, &b.conf.subnet, b.conf.subnet6.as_ref()))
                });
                if mine && !live.contains(&owner) {
                    orphans.push(r.clone());
                }
            }
        }
    }
    Ok(inv)
}

/// Remove every orphan `take` found. Returns one line per thing removed.
pub async fn prune(ctx: &Ctx, host: &Nl) -> Result<Vec<String>> {
    let inv = take(ctx, host).await?;
    let mut done = Vec::new();
    // Records a dead connect left: everything reachable from the ID.
    for id in &inv.broken {
        if let Some(lock) = attach::lock_broken(&ctx.state, id) {
            attach::remove_everything(ctx, host, id, None, false).await?;
            drop(lock);
            done.push(format!("attachment {id} (half-built)"));
        }
    }
    // Complete records whose pair vanished with its namespace.
    for p in inv.pairs.iter().filter(|p| p.orphaned && p.id.is_some() && p.bridge.is_some()) {
        let id = p.id.as_deref().unwrap_or_default();
        let Ok(mut lock) = attach::lock_existing(&ctx.state, id, "prune") else { continue };
        let att = lock.read().filter(|a| a.id == id);
        if let Some(a) = &att {
            match attach::home_of(ctx, a) {
                attach::Home::Elsewhere(_) => continue,
                attach::Home::Gone => {
                    attach::forget(ctx, id, a)?;
                    done.push(format!("attachment {id} (host namespace gone)"));
                    continue;
                }
                attach::Home::Here => {}
            }
        }
        if host.link(&p.host_ifname).await?.is_some() {
            continue; // reconnected meanwhile
        }
        attach::remove_everything(ctx, host, id, att.as_ref(), false).await?;
        done.push(format!("attachment {id} (namespace gone)"));
    }
    // Host ends nobody owns, by the index they had when judged: a connect of the same ID since then
    // (after a `disconnect --leave-link`) deleted that link and made a new one of the same name, which
    // is the container's now. The kernel does not hand an index out again soon.
    for p in inv.pairs.iter().filter(|p| p.orphaned && p.id.is_none()) {
        let Some(index) = p.host_ifindex else { continue };
        ctx.step("del-link", format_args!("{} (index {index})", p.host_ifname));
        match host.del_link(index, &p.host_ifname).await {
            Ok(()) => done.push(format!("link {}", p.host_ifname)),
            Err(e) if e.is_errno(libc::ENODEV) => {}
            Err(e) => return Err(e),
        }
    }
    // A lease or rule judged orphaned may belong to a connect that began after the records were read:
    // connect creates its record before it takes a lease or publishes, and disconnect removes the
    // record last, so an ID whose record exists now (checked under the IPAM or nft lock) keeps them.
    let has_record = |id: &str| {
        crate::paths::check_name("prune", "", id).is_ok() && crate::paths::attachment_file(&ctx.state, id).exists()
    };
    for l in &inv.orphan_leases {
        ctx.step("release", format_args!("{} on {}", l.ip, l.bridge));
        if Leases::new(bridge_dir(&ctx.state, &l.bridge)).release_unless(l.ip, &l.id, || has_record(&l.id))? {
            done.push(format!("lease {} on {} ({})", l.ip, l.bridge, l.id));
        }
    }
    // Also when a bridge keeps its bridge-wide publish rules with no published port left.
    if !inv.orphan_rules.is_empty() || inv.rules.iter().any(|r| nft::parse_ports_comment(&r.comment).is_some()) {
        let nft = ctx.nft();
        let _l = nft.lock()?;
        let all = nft.rules()?;
        let gone: Vec<_> = all
            .iter()
            .filter(|r| inv.orphan_rules.iter().any(|o| o.handle == r.handle))
            .filter(|r| nft::parse_pub_comment(&r.comment).is_none_or(|(owner, _, _)| !has_record(&owner)))
            .cloned()
            .collect();
        let gone = crate::bridge::delete_publish_rules(ctx, &nft, &gone, &all)?;
        if !gone.is_empty() {
            ctx.step("nft-delete", format_args!("{} orphaned rules", gone.len()));
        }
        done.extend(gone.iter().map(|r| format!("rule {} ({})", r.handle, r.comment)));
    }
    // The IPv6 side of dual-stack bridges' published ports (`ip6 cbuild`): a rule whose container has
    // no record and that sends to one of this state dir's IPv6 subnets (the table is shared too).
    let subnets6: Vec<_> = inv.bridges.iter().filter_map(|b| b.conf.subnet6).collect();
    if !subnets6.is_empty() {
        let nft = ctx.nft();
        let _l = nft.lock()?;
        let gone = crate::bridge::delete_publish_rules6(ctx, |r| {
            nft::parse_pub_comment(&r.comment).is_some_and(|(owner, _, _)| {
                !has_record(&owner)
                    && r.dnat.is_none_or(
                        |ip| matches!(ip, std::net::IpAddr::V6(a) if subnets6.iter().any(|s| s.contains(a))),
                    )
            })
        })?;
        done.extend(gone.iter().map(|r| format!("rule {} ({}, ip6)", r.handle, r.comment)));
    }
    // Temporary names of connects killed before their record was in place.
    let dead = |pid: &str| !std::path::Path::new(&format!("/proc/{pid}")).exists();
    if let Ok(rd) = std::fs::read_dir(&ctx.state) {
        for e in rd.flatten() {
            // Only real directories: through a symlink the removals below would reach its target.
            if !e.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let n = e.file_name().to_string_lossy().into_owned();
            if let Some(rest) = n.strip_prefix(".net-") {
                if rest.rsplit_once('.').is_some_and(|(_, pid)| dead(pid)) {
                    let _ = crate::paths::remove_nofollow(&e.path().join("net.json"), 2);
                    if std::fs::remove_dir(e.path()).is_ok() {
                        done.push(format!("temporary {n}"));
                    }
                }
                continue;
            }
            if let Ok(sub) = std::fs::read_dir(e.path()) {
                for f in sub.flatten() {
                    let fname = f.file_name().to_string_lossy().into_owned();
                    if fname.strip_prefix(".net.json.").is_some_and(dead) {
                        let _ = crate::paths::remove_nofollow(&f.path(), 2);
                        crate::ipam::rmdir_quiet(&e.path());
                        done.push(format!("temporary {n}/{fname}"));
                    }
                }
            }
        }
    }
    Ok(done)
}
