//! NAT and published ports: every rule lives in one nftables table of cbuild's own, `ip cbuild`, so
//! nothing else's rules are touched and a full teardown is one `delete table`.
//!
//! Rules are built with the `nftables` crate's typed schema and handed to Debian's `nft` as JSON on
//! stdin (`nft -j -f -`), one atomic batch per change. Each rule carries a comment naming its owner
//! (`cbuild nat BR`, `cbuild pub ID PROTO HOSTPORT`): that is how rules are found again for removal,
//! listing and pruning. When the last rule goes, the table goes too, so a host with no containers has
//! exactly the ruleset it had before cbuild ran.

use std::borrow::Cow;
use std::collections::HashSet;
use std::io::Write;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use nftables::expr::{
    Expression, Fib, FibFlag, FibResult, Meta, MetaKey, NamedExpression, Payload, PayloadField, Prefix, CT,
};
use nftables::schema::{Chain, NfCmd, NfListObject, NfObject, Nftables, Rule, Table};
use nftables::stmt::{Match, Operator, Statement, NAT};
use nftables::types::{NfChainPolicy, NfChainType, NfFamily, NfHook};

use crate::error::{Error, Result};
use crate::ipam::{Subnet, Subnet6};

pub const TABLE: &str = "cbuild";
const FAMILY: NfFamily = NfFamily::IP;

/// A rule of ours as listed back from the kernel.
#[derive(Debug, Clone)]
pub struct RuleInfo {
    pub chain: String,
    pub handle: u32,
    pub comment: String,
    /// The address a DNAT rule sends to: which bridge (and so which state dir) the rule serves.
    pub dnat: Option<std::net::IpAddr>,
}

/// `nft` run inside the host namespace, serialised by a lock file so a list-then-change is atomic.
pub struct Nft<'a> {
    host: Option<BorrowedFd<'a>>,
    /// `ip cbuild`, or `ip6 cbuild` for dual-stack bridges' IPv6 rules.
    family: NfFamily,
    lock: PathBuf,
    /// The fd of the lock while [`Nft::lock`]'s guard lives (-1: not held), passed on to `nft`.
    held: std::cell::Cell<i32>,
}

/// A published port, as the rule comment and net.json name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Port {
    pub host_port: u16,
    pub port: u16,
    pub protocol: Proto,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

/// `HOSTPORT:PORT[/tcp|udp]` (or just `HOSTPORT[/proto]` when `need_target` is false, for unpublish).
pub fn parse_port(s: &str, need_target: bool) -> std::result::Result<Port, String> {
    let (ports, proto) = match s.split_once('/') {
        Some((p, "tcp")) => (p, Proto::Tcp),
        Some((p, "udp")) => (p, Proto::Udp),
        Some((_, other)) => return Err(format!("unknown protocol {other:?}: want tcp or udp")),
        None => (s, Proto::Tcp),
    };
    let num = |p: &str| -> std::result::Result<u16, String> {
        match p.parse::<u16>() {
            Ok(0) | Err(_) => Err(format!("{p:?} is not a port (1-65535)")),
            Ok(n) => Ok(n),
        }
    };
    let (host_port, port) = match ports.split_once(':') {
        Some((h, c)) => (num(h)?, num(c)?),
        None if need_target => return Err("want HOSTPORT:PORT[/tcp|udp]".into()),
        None => (num(ports)?, 0),
    };
    Ok(Port { host_port, port, protocol: proto })
}

pub fn nat_comment(bridge: &str) -> String {
    format!("cbuild nat {bridge}")
}

pub fn pub_comment(id: &str, p: &Port) -> String {
    format!("cbuild pub {id} {} {}", p.protocol.as_str(), p.host_port)
}

/// The owner named by a publish rule's comment: (ID, proto, host port).
pub fn parse_pub_comment(c: &str) -> Option<(String, String, u16)> {
    let mut it = c.strip_prefix("cbuild pub ")?.split(' ');
    let id = it.next()?.to_string();
    let proto = it.next()?.to_string();
    let hp = it.next()?.parse().ok()?;
    Some((id, proto, hp))
}

fn s(v: &str) -> Expression<'static> {
    Expression::String(Cow::Owned(v.to_string()))
}

fn payload(proto: &str, field: &str) -> Expression<'static> {
    Expression::Named(NamedExpression::Payload(Payload::PayloadField(PayloadField {
        protocol: Cow::Owned(proto.to_string()),
        field: Cow::Owned(field.to_string()),
    })))
}

fn matches(left: Expression<'static>, op: Operator, right: Expression<'static>) -> Statement<'static> {
    Statement::Match(Match { left, right, op })
}

fn rule(chain: &str, expr: Vec<Statement<'static>>, comment: String) -> Rule<'static> {
    Rule {
        family: FAMILY,
        table: Cow::Borrowed(TABLE),
        chain: Cow::Owned(chain.to_string()),
        expr: Cow::Owned(expr),
        handle: None,
        index: None,
        comment: Some(Cow::Owned(comment)),
    }
}

/// `ip saddr SUBNET oifname != BR masquerade`: traffic from the bridge's subnet leaving by any other
/// link takes the address of that link.
pub fn masquerade_rule(bridge: &str, subnet: &Subnet) -> Rule<'static> {
    let prefix = Expression::Named(NamedExpression::Prefix(Prefix {
        addr: Box::new(s(&subnet.net.to_string())),
        len: subnet.prefix as u32,
    }));
    let oifname = Expression::Named(NamedExpression::Meta(Meta { key: MetaKey::Oifname }));
    rule(
        "postrouting",
        vec![
            matches(payload("ip", "saddr"), Operator::EQ, prefix),
            matches(oifname, Operator::NEQ, s(bridge)),
            Statement::Masquerade(None),
        ],
        nat_comment(bridge),
    )
}

pub fn ports_comment(bridge: &str) -> String {
    format!("cbuild ports {bridge}")
}

/// The bridge named by a bridge-wide publish rule's comment (`cbuild ports BR`).
pub fn parse_ports_comment(c: &str) -> Option<&str> {
    c.strip_prefix("cbuild ports ")
}

/// The rules a bridge needs while any of its containers has a published port (comment
/// `cbuild ports BR`), on top of each port's DNAT rules:
///
/// - `ip saddr 127.0.0.0/8 oifname BR masquerade`: a connection the host makes to
///   `127.0.0.1:HOSTPORT` is DNAT'd in `output` and leaves by the bridge with a loopback source,
///   which the container could not answer; it takes the bridge's address instead (the kernel lets
///   it out at all only with `route_localnet` on the bridge, set alongside these rules);
/// - `ip saddr SUBNET oifname BR ct status dnat masquerade`: hairpin NAT. A container reaching a
///   published port through a host address is DNAT'd back onto its own bridge, to itself or a
///   sibling, which would answer it directly, from an address it never called; masqueraded, the
///   answer comes back through the host and is un-NAT'd. Only DNAT'd flows: direct traffic between
///   containers keeps its addresses;
/// - `iifname BR ip daddr 127.0.0.0/8 drop`, before conntrack: `route_localnet` would otherwise let a
///   container reach services the host binds to 127.0.0.1 by sending to that address
///   (CVE-2020-8558). Answers to the host's own connections arrive addressed to the bridge's address
///   and are un-NAT'd to 127.0.0.1 only after this check;
/// - `iifname BR ip saddr 127.0.0.0/8 drop`, likewise: `route_localnet` also lifts the martian-source
///   check, so without it a container (CAP_NET_RAW) could send packets claiming a 127/8 source to the
///   host's services that trust loopback peers. Answers to the host's loopback connections come back
///   from the container's address, so this drops nothing legitimate.
pub fn ports_rules(bridge: &str, subnet: &Subnet) -> Vec<Rule<'static>> {
    let loopback = || Expression::Named(NamedExpression::Prefix(Prefix { addr: Box::new(s("127.0.0.0")), len: 8 }));
    let prefix = Expression::Named(NamedExpression::Prefix(Prefix {
        addr: Box::new(s(&subnet.net.to_string())),
        len: subnet.prefix as u32,
    }));
    let oifname = || Expression::Named(NamedExpression::Meta(Meta { key: MetaKey::Oifname }));
    let iifname = || Expression::Named(NamedExpression::Meta(Meta { key: MetaKey::Iifname }));
    let ct_status =
        Expression::Named(NamedExpression::CT(CT { key: Cow::Borrowed("status"), family: None, dir: None }));
    let c = ports_comment(bridge);
    let guard = |field: &'static str| {
        let m = vec![
            matches(iifname(), Operator::EQ, s(bridge)),
            matches(payload("ip", field), Operator::EQ, loopback()),
            Statement::Drop(None),
        ];
        rule("guard", m, c.clone())
    };
    vec![
        guard("daddr"),
        guard("saddr"),
        rule(
            "postrouting",
            vec![
                matches(payload("ip", "saddr"), Operator::EQ, loopback()),
                matches(oifname(), Operator::EQ, s(bridge)),
                Statement::Masquerade(None),
            ],
            c.clone(),
        ),
        rule(
            "postrouting",
            vec![
                matches(payload("ip", "saddr"), Operator::EQ, prefix),
                matches(oifname(), Operator::EQ, s(bridge)),
                matches(ct_status, Operator::IN, s("dnat")),
                Statement::Masquerade(None),
            ],
            c,
        ),
    ]
}

/// Whether a DNAT rule sends to a bridge's subnets.
pub fn sends_to(ip: std::net::IpAddr, subnet: &Subnet, subnet6: Option<&Subnet6>) -> bool {
    match ip {
        std::net::IpAddr::V4(a) => subnet.contains(a),
        std::net::IpAddr::V6(a) => subnet6.is_some_and(|s| s.contains(a)),
    }
}

/// `gone` (rules about to be deleted) plus the bridge-wide publish rules of every bridge in
/// `bridges` that has no published port left once `gone` is deleted; and those bridges' names.
/// One table at a time: `all` is the listing of the table `gone` is in.
pub fn with_emptied_ports(
    gone: &[RuleInfo],
    all: &[RuleInfo],
    bridges: &[(String, Subnet, Option<Subnet6>)],
) -> (Vec<RuleInfo>, Vec<String>) {
    let mut out = gone.to_vec();
    let mut emptied = Vec::new();
    let left = |r: &&RuleInfo| !gone.iter().any(|g| g.handle == r.handle);
    for (name, subnet, subnet6) in bridges {
        let group: Vec<&RuleInfo> =
            all.iter().filter(left).filter(|r| parse_ports_comment(&r.comment) == Some(name.as_str())).collect();
        if group.is_empty() {
            continue;
        }
        let ports_left = all.iter().filter(left).any(|r| {
            parse_pub_comment(&r.comment).is_some() && r.dnat.is_some_and(|ip| sends_to(ip, subnet, subnet6.as_ref()))
        });
        if !ports_left {
            out.extend(group.into_iter().cloned());
            emptied.push(name.clone());
        }
    }
    (out, emptied)
}

/// `ip6 saddr SUBNET6 oifname != BR masquerade`, for the `ip6 cbuild` table (NAT66).
pub fn masquerade_rule6(bridge: &str, subnet: &crate::ipam::Subnet6) -> Rule<'static> {
    let prefix = Expression::Named(NamedExpression::Prefix(Prefix {
        addr: Box::new(s(&subnet.net.to_string())),
        len: subnet.prefix as u32,
    }));
    let oifname = Expression::Named(NamedExpression::Meta(Meta { key: MetaKey::Oifname }));
    let mut r = rule(
        "postrouting",
        vec![
            matches(payload("ip6", "saddr"), Operator::EQ, prefix),
            matches(oifname, Operator::NEQ, s(bridge)),
            Statement::Masquerade(None),
        ],
        nat_comment(bridge),
    );
    r.family = NfFamily::IP6;
    r
}

/// The IPv6 side of a published port on a dual-stack bridge, for the `ip6 cbuild` table:
/// `fib daddr type local PROTO dport HOSTPORT dnat to [IP6]:PORT`.
pub fn dnat_rule6(chain: &str, id: &str, p: &Port, ip: std::net::Ipv6Addr) -> Rule<'static> {
    let mut r = dnat_rule(chain, id, p, std::net::Ipv4Addr::UNSPECIFIED);
    let mut expr = r.expr.into_owned();
    if let Some(Statement::DNAT(Some(nat))) = expr.last_mut() {
        nat.addr = Some(s(&ip.to_string()));
    }
    r.expr = Cow::Owned(expr);
    r.family = NfFamily::IP6;
    r
}

/// The IPv6 bridge-wide publish rule of a dual-stack bridge: hairpin NAT only (`::1` is never
/// routed out of another link, so there is no loopback publishing and no guard to keep).
pub fn ports_rules6(bridge: &str, subnet: &Subnet6) -> Vec<Rule<'static>> {
    let prefix = Expression::Named(NamedExpression::Prefix(Prefix {
        addr: Box::new(s(&subnet.net.to_string())),
        len: subnet.prefix as u32,
    }));
    let oifname = Expression::Named(NamedExpression::Meta(Meta { key: MetaKey::Oifname }));
    let ct_status =
        Expression::Named(NamedExpression::CT(CT { key: Cow::Borrowed("status"), family: None, dir: None }));
    let mut r = rule(
        "postrouting",
        vec![
            matches(payload("ip6", "saddr"), Operator::EQ, prefix),
            matches(oifname, Operator::EQ, s(bridge)),
            matches(ct_status, Operator::IN, s("dnat")),
            Statement::Masquerade(None),
        ],
        ports_comment(bridge),
    );
    r.family = NfFamily::IP6;
    vec![r]
}

/// `fib daddr type local PROTO dport HOSTPORT dnat to IP:PORT`, in `chain` (prerouting for traffic
/// arriving from outside, output for traffic the host itself sends to one of its addresses).
pub fn dnat_rule(chain: &str, id: &str, p: &Port, ip: std::net::Ipv4Addr) -> Rule<'static> {
    let fib = Expression::Named(NamedExpression::Fib(Fib {
        result: FibResult::Type,
        flags: HashSet::from([FibFlag::Daddr]),
    }));
    let proto = p.protocol.as_str();
    rule(
        chain,
        vec![
            matches(fib, Operator::EQ, s("local")),
            matches(payload(proto, "dport"), Operator::EQ, Expression::Number(p.host_port as u32)),
            Statement::DNAT(Some(NAT {
                addr: Some(s(&ip.to_string())),
                family: None,
                port: Some(Expression::Number(p.port as u32)),
                flags: None,
            })),
        ],
        pub_comment(id, p),
    )
}

impl<'a> Nft<'a> {
    pub fn new(host: Option<BorrowedFd<'a>>, state: &std::path::Path) -> Nft<'a> {
        Nft {
            host,
            family: FAMILY,
            lock: crate::paths::net_dir(state).join("nft.lock"),
            held: std::cell::Cell::new(-1),
        }
    }

    /// The same, for the `ip6 cbuild` table.
    pub fn v6(self) -> Nft<'a> {
        Nft { family: NfFamily::IP6, ..self }
    }

    fn fam(&self) -> &'static str {
        if self.family == NfFamily::IP6 {
            "ip6"
        } else {
            "ip"
        }
    }

    /// Hold this while listing and then changing, so two publishers cannot both take one port.
    pub fn lock(&self) -> Result<nix::fcntl::Flock<std::fs::File>> {
        if let Some(d) = self.lock.parent() {
            std::fs::create_dir_all(d).map_err(|e| Error::io("nft", d.display(), e))?;
        }
        let f = crate::paths::open_nofollow(&self.lock, 2, libc::O_WRONLY | libc::O_CREAT)
            .map_err(|e| Error::io("nft", self.lock.display(), e))?;
        let l = nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| Error::errno("nft", self.lock.display(), e))?;
        self.held.set(l.as_raw_fd());
        Ok(l)
    }

    /// Run `nft ARGS` inside the host namespace, `input` on stdin; stdout on success.
    fn run(&self, step: &'static str, args: &[&str], input: Option<&str>) -> Result<String> {
        let mut cmd = Command::new("nft");
        cmd.args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let host = self.host.map_or(-1, |fd| fd.as_raw_fd());
        // `nft` inherits the lock (its fd without close-on-exec, in the child only): if this process
        // is killed while `nft` runs, `nft` still applies the batch, and whoever takes the lock next
        // must see the result (a disconnect listing rules before a dead publisher's `nft` committed
        // would miss them, and they would outlive the container).
        let lockfd = self.held.get();
        // SAFETY: only setns(2) and fcntl(2), async-signal-safe, between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if host >= 0 && libc::setns(host, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if lockfd >= 0 && libc::fcntl(lockfd, libc::F_SETFD, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().map_err(|e| {
            let err = Error::io(step, "nft", e);
            if err.is_errno(libc::ENOENT) {
                err.hint("install nftables (apt-get install nftables)")
            } else {
                err
            }
        })?;
        if let Some(i) = input {
            let _ = child.stdin.take().expect("stdin").write_all(i.as_bytes());
        }
        drop(child.stdin.take());
        let out = child.wait_with_output().map_err(|e| Error::io(step, "nft", e))?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            let line = err.lines().find(|l| l.starts_with("Error:")).or(err.lines().next()).unwrap_or("failed");
            return Err(Error::new(step, format!("table {} {TABLE}", self.fam()), line.trim_start_matches("Error: ")));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Every rule in our table; none when the table does not exist.
    pub fn rules(&self) -> Result<Vec<RuleInfo>> {
        let out = match self.run("nft-list", &["-j", "list", "table", self.fam(), TABLE], None) {
            Ok(o) => o,
            // `nft` ran and said the table does not exist (its message, no errno). An errno means
            // `nft` could not be started at all (ENOENT of a missing binary reads the same), and then
            // nothing is known about the table: never taken for "no rules", which would make rule
            // removal succeed while the rules stay.
            Err(e) if e.errno.is_none() && e.reason.contains("No such file or directory") => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        // Read back generically: only chain, handle and comment matter, and a strict schema would
        // reject expressions someone else added by hand.
        let v: serde_json::Value = serde_json::from_str(&out)
            .map_err(|e| Error::new("nft-list", format!("table {} {TABLE}", self.fam()), e))?;
        let mut rules = Vec::new();
        for o in v["nftables"].as_array().into_iter().flatten() {
            if let Some(r) = o.get("rule") {
                rules.push(RuleInfo {
                    chain: r["chain"].as_str().unwrap_or_default().to_string(),
                    handle: r["handle"].as_u64().unwrap_or(0) as u32,
                    comment: r["comment"].as_str().unwrap_or_default().to_string(),
                    dnat: r["expr"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .find_map(|e| e["dnat"]["addr"].as_str()?.parse().ok()),
                });
            }
        }
        Ok(rules)
    }

    /// The table and its three NAT base chains ("add" is idempotent), then `rules`, in one batch.
    pub fn add(&self, rules: Vec<Rule<'static>>) -> Result<()> {
        let chain = |name: &str, hook: NfHook, prio: i32| {
            NfObject::CmdObject(NfCmd::Add(NfListObject::Chain(Chain {
                family: self.family,
                table: Cow::Borrowed(TABLE),
                name: Cow::Owned(name.to_string()),
                _type: Some(NfChainType::NAT),
                hook: Some(hook),
                prio: Some(prio),
                policy: Some(NfChainPolicy::Accept),
                ..Default::default()
            })))
        };
        let mut objs = vec![
            NfObject::CmdObject(NfCmd::Add(NfListObject::Table(Table {
                family: self.family,
                name: Cow::Borrowed(TABLE),
                handle: None,
            }))),
            chain("prerouting", NfHook::Prerouting, -100),
            chain("output", NfHook::Output, -100),
            chain("postrouting", NfHook::Postrouting, 100),
            // A filter chain before conntrack (raw priority): the loopback guard of published ports.
            NfObject::CmdObject(NfCmd::Add(NfListObject::Chain(Chain {
                family: self.family,
                table: Cow::Borrowed(TABLE),
                name: Cow::Borrowed("guard"),
                _type: Some(NfChainType::Filter),
                hook: Some(NfHook::Prerouting),
                prio: Some(-300),
                policy: Some(NfChainPolicy::Accept),
                ..Default::default()
            }))),
        ];
        objs.extend(rules.into_iter().map(|r| NfObject::CmdObject(NfCmd::Add(NfListObject::Rule(r)))));
        self.apply("nft-add", objs)
    }

    /// Delete rules by handle; when no rule of ours would remain, delete the whole table instead.
    pub fn delete(&self, gone: &[RuleInfo], all: &[RuleInfo]) -> Result<()> {
        if gone.is_empty() {
            return Ok(());
        }
        let objs = if all.iter().all(|r| gone.iter().any(|g| g.handle == r.handle)) {
            vec![NfObject::CmdObject(NfCmd::Delete(NfListObject::Table(Table {
                family: self.family,
                name: Cow::Borrowed(TABLE),
                handle: None,
            })))]
        } else {
            gone.iter()
                .map(|r| {
                    NfObject::CmdObject(NfCmd::Delete(NfListObject::Rule(Rule {
                        family: self.family,
                        table: Cow::Borrowed(TABLE),
                        chain: Cow::Owned(r.chain.clone()),
                        expr: Cow::Owned(Vec::new()),
                        handle: Some(r.handle),
                        index: None,
                        comment: None,
                    })))
                })
                .collect()
        };
        self.apply("nft-delete", objs)
    }

    fn apply(&self, step: &'static str, objs: Vec<NfObject<'static>>) -> Result<()> {
        let doc = Nftables { objects: Cow::Owned(objs) };
        let json = serde_json::to_string(&doc).map_err(|e| Error::new(step, "ruleset", e))?;
        self.run(step, &["-j", "-f", "-"], Some(&json)).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports() {
        assert_eq!(parse_port("8080:80", true).unwrap(), Port { host_port: 8080, port: 80, protocol: Proto::Tcp });
        assert_eq!(parse_port("53:53/udp", true).unwrap().protocol, Proto::Udp);
        assert!(parse_port("8080", true).is_err());
        assert_eq!(parse_port("8080/udp", false).unwrap().host_port, 8080);
        assert!(parse_port("0:80", true).is_err());
        assert!(parse_port("70000:80", true).is_err());
        assert!(parse_port("80:80/sctp", true).is_err());
    }

    #[test]
    fn comments_round_trip() {
        let p = Port { host_port: 8080, port: 80, protocol: Proto::Tcp };
        let c = pub_comment("web-1", &p);
        assert_eq!(parse_pub_comment(&c), Some(("web-1".into(), "tcp".into(), 8080)));
        assert_eq!(parse_pub_comment(&nat_comment("cbuild0")), None);
    }

    #[test]
    fn rule_json_shape() {
        let r = dnat_rule(
            "prerouting",
            "web",
            &Port { host_port: 8080, port: 80, protocol: Proto::Tcp },
            "10.1.0.2".parse().unwrap(),
        );
        let j = serde_json::to_value(&r).unwrap();
        let t = j.to_string();
        assert!(t.contains("\"dnat\"") && t.contains("10.1.0.2") && t.contains("\"fib\""), "{t}");
    }
}
