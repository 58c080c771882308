//! cbuild-net command line. The mechanism is in the library; this file parses arguments, runs one
//! verb, prints its result and maps errors to exit code 125 with one `cbuild-net: step: object: reason`
//! line.
//!
//! No Rust `main`: the C `main` below is the entry point, which skips the standard library's own start-up
//! (reading `/proc/self/maps` to find the main thread's stack guard, an alternate signal stack, four
//! `sigaction`s, a `poll` of fds 0-2): ~0.1 ms of a ~2 ms connect. Arguments come from `main`'s argv (only
//! glibc would also hand them to `std::env::args_os`), a stack overflow is then a plain SIGSEGV, a panic
//! aborts (134, not 101), and stdout is flushed before returning. The one part of that start-up a tool must
//! keep is done here: fds 0-2 are opened on /dev/null when the caller closed them.
#![no_main]

// The static build links musl (scripts/lib/static.sh), whose allocator maps and unmaps pages for each size
// class as a tool starts (25 mmaps and 21 munmaps in one `cbuild-ns run`); dlmalloc keeps them.
#[cfg(target_env = "musl")]
#[global_allocator]
static ALLOC: dlmalloc::GlobalDlmalloc = dlmalloc::GlobalDlmalloc;

use std::ffi::{CStr, OsString};
use std::os::unix::ffi::OsStringExt;

use std::io::Write;
use std::net::Ipv4Addr;

use clap::{Parser, Subcommand};

use cbuild_net::attach::{self, ConnectOpts};
use cbuild_net::error::{Error, Result};
use cbuild_net::ipam::{Subnet, Subnet6};
use cbuild_net::{bridge, inventory, netns, nft, nl, paths, signals, Ctx};

#[derive(Parser)]
#[command(
    name = "cbuild-net",
    version,
    about = "Container networking: bridges, veth pairs, IPAM, NAT, published ports"
)]
struct Cli {
    /// Print each step to stderr as it happens.
    #[arg(short, long, global = true)]
    verbose: bool,
    /// The network namespace playing "the host" (a namespace file or a NAME); default: this process's.
    #[arg(long, global = true, env = "CBUILD_NET_HOST_NS", value_name = "PATH|NAME")]
    host_netns: Option<String>,
    #[command(subcommand)]
    cmd: Cmd,
}

// `defer`: a verb's arguments are defined only when that verb is the one run, not all nine verbs'
// on every start (7 page faults, ~0.03 ms of a ~1.6 ms connect).
#[derive(Subcommand)]
#[command(defer = true)]
enum Cmd {
    /// Persisted network namespaces at <state>/NAME/ns/net.
    Netns {
        #[command(subcommand)]
        cmd: NetnsCmd,
    },
    /// Bridges: `add BR --subnet CIDR [--gateway IP] [--subnet6 CIDR6] [--nat]`, `del BR`.
    Bridge {
        #[command(subcommand)]
        cmd: BridgeCmd,
    },
    /// Attach a network namespace to a bridge with a veth pair.
    Connect {
        /// The container's network namespace: a file, or a NAME (<state>/NAME/ns/net).
        netns: Option<String>,
        /// Use /proc/PID/ns/net instead of NETNS.
        #[arg(long, conflicts_with = "netns")]
        pid: Option<u32>,
        /// Bridge to attach to (default: cbuild0, created on first use with NAT on).
        #[arg(long)]
        bridge: Option<String>,
        /// Container ID (a NAME).
        #[arg(long)]
        id: String,
        /// `auto` or an address in the bridge's subnet.
        #[arg(long, default_value = "auto")]
        ip: String,
        /// Interface name inside the container.
        #[arg(long, default_value = "eth0")]
        ifname: String,
        /// MAC address of the container's interface (default: random, locally administered).
        #[arg(long)]
        mac: Option<String>,
        /// MTU of both ends.
        #[arg(long)]
        mtu: Option<u32>,
        /// Print the CNI-like result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Undo a connect: pair, lease, published ports, conntrack entries.
    Disconnect {
        #[arg(long)]
        id: String,
        /// Do not delete the veth pair: the kernel deletes it when it destroys the container's network
        /// namespace. Safe only once that namespace is released (nothing holds it: no process in it, no
        /// bind mount such as `netns del NAME` removes, no open fd). The host end is still taken
        /// down at once, and the lease, record, published-port rules and conntrack entries go as
        /// usual. If something still holds the namespace, the pair stays (down) until it is
        /// destroyed; `ls` shows the host end as orphaned and `prune` deletes it. Saves the ~20 ms
        /// the kernel blocks a link deletion for.
        #[arg(long)]
        leave_link: bool,
    },
    /// Masquerade traffic leaving a bridge's subnet (`on`) or stop (`off`).
    Nat { bridge: String, state: OnOff },
    /// DNAT HOSTPORT on the host's addresses (127.0.0.1 too, from the host itself) to PORT in the
    /// container, reachable from its own bridge too (hairpin); on both families on a dual-stack bridge.
    Publish {
        #[arg(long)]
        id: String,
        /// HOSTPORT:PORT[/tcp|udp]
        spec: String,
    },
    /// Remove a published port.
    Unpublish {
        #[arg(long)]
        id: String,
        /// HOSTPORT[:PORT][/tcp|udp]
        spec: String,
    },
    /// Bridges, veth pairs (both ends), leases and rules, with orphans marked.
    Ls {
        #[arg(long)]
        json: bool,
    },
    /// Remove orphans: dead pairs, half-built connects, leases and rules of gone containers.
    Prune {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum NetnsCmd {
    Add {
        name: String,
    },
    Del {
        name: String,
    },
    Ls {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum BridgeCmd {
    Add {
        name: String,
        #[arg(long)]
        subnet: String,
        #[arg(long)]
        gateway: Option<String>,
        /// Make the bridge dual-stack with this IPv6 subnet (e.g. fd00:cb:1::/64): each container's
        /// IPv6 address has the host number of its IPv4 address.
        #[arg(long, value_name = "CIDR6")]
        subnet6: Option<String>,
        /// Also masquerade traffic leaving the subnet (same as `nat BR on`).
        #[arg(long)]
        nat: bool,
    },
    Del {
        name: String,
    },
    Ls {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum OnOff {
    On,
    Off,
}

/// The arguments `main` was given, as the kernel passed them to the process.
///
/// # Safety
/// `argv` holds `argc` valid NUL-terminated strings, as the C runtime hands them to `main`.
unsafe fn args_from(argc: libc::c_int, argv: *const *const libc::c_char) -> Vec<OsString> {
    (0..usize::try_from(argc).unwrap_or(0))
        .map(|i| OsString::from_vec(unsafe { CStr::from_ptr(*argv.add(i)) }.to_bytes().to_vec()))
        .collect()
}

/// The entry point the C runtime calls.
///
/// # Safety
/// `argv` holds `argc` valid NUL-terminated strings.
#[no_mangle]
pub unsafe extern "C" fn main(argc: libc::c_int, argv: *const *const libc::c_char) -> libc::c_int {
    // A closed 0, 1 or 2 (`cbuild-net ... 2>&-`) would be the number of the first file or socket we
    // open, and an error message would then be written into a lease or a netlink socket.
    for fd in 0..3 {
        // SAFETY: fcntl and open on plain integers; an fd opened here is the process's for good.
        unsafe {
            if libc::fcntl(fd, libc::F_GETFD) < 0 && libc::open(c"/dev/null".as_ptr(), libc::O_RDWR) < 0 {
                return 125;
            }
        }
    }
    // SAFETY: argc and argv are what the C runtime handed `main`.
    let args = unsafe { args_from(argc, argv) };
    let code = cli_main(args);
    let _ = std::io::stdout().flush();
    code
}

fn cli_main(args: Vec<OsString>) -> libc::c_int {
    // End quietly, as C tools do, when the reader of our output goes away (`| head`): whatever
    // disposition the caller left us (a Rust parent ignores SIGPIPE), the default one, so a closed pipe
    // is not a panic, and no ignore is passed on to a command we exec.
    // SAFETY: setting the default disposition before any thread exists.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let cli = match Cli::try_parse_from(args) {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(
                e.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) {
                let _ = e.print();
                return 0;
            }
            let msg = e.to_string();
            // clap's first paragraph, on one line: a list it ends with a colon ("not provided:") is in it.
            let line = msg.split("\n\n").next().unwrap_or("").split_whitespace().collect::<Vec<_>>().join(" ");
            let line = line.trim_start_matches("error: ");
            eprintln!("cbuild-net: args: command line: {line}");
            eprintln!("hint: cbuild-net --help");
            return 125;
        }
    };
    // The verbs that change state run with the stop signals held (lib's signals.rs says why).
    let changes = match &cli.cmd {
        Cmd::Netns { cmd } => !matches!(cmd, NetnsCmd::Ls { .. }),
        Cmd::Bridge { cmd } => !matches!(cmd, BridgeCmd::Ls { .. }),
        Cmd::Ls { .. } => false,
        _ => true,
    };
    let held = if changes { signals::hold() } else { None };
    let code = match run(cli) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("cbuild-net: {}", printable(&e.to_string()));
            if let Some(h) = &e.hint {
                eprintln!("hint: {}", printable(h));
            }
            125
        }
    };
    // A held signal ends the process now, its verb done or undone, and what it printed out.
    let _ = std::io::stdout().flush();
    drop(held);
    code
}

fn parse<T: std::str::FromStr>(step: &'static str, what: &str, s: &str) -> Result<T>
where
    T::Err: std::fmt::Display,
{
    s.parse::<T>().map_err(|e| Error::new(step, s, format!("invalid {what}: {e}")))
}

fn run(cli: Cli) -> Result<()> {
    // Cheap checks first, before a runtime or a namespace is opened.
    // Never dropped: the process ends right after the verb, and exit(2) closes the sockets and frees
    // the memory at once, cheaper than tearing the runtime and its tasks down one by one first.
    let ctx = std::mem::ManuallyDrop::new(Ctx::new(cli.host_netns.as_deref(), cli.verbose)?);
    match cli.cmd {
        Cmd::Netns { cmd } => {
            let log = |s: &str, o: &str| ctx.step(s, o);
            match cmd {
                NetnsCmd::Add { name } => {
                    let p = netns::add(&ctx.state, &name, &log)?;
                    println!("{}", p.display());
                }
                NetnsCmd::Del { name } => netns::del(&ctx.state, &name, &log)?,
                NetnsCmd::Ls { json } => {
                    for (name, path, inode) in netns::list(&ctx.state) {
                        if json {
                            println!("{}", serde_json::json!({"name": name, "path": path, "inode": inode}));
                        } else {
                            println!("{}\t{inode}\t{}", printable(&name), printable(&path.display().to_string()));
                        }
                    }
                }
            }
        }
        Cmd::Bridge { cmd } => match cmd {
            BridgeCmd::Add { name, subnet, gateway, subnet6, nat } => {
                bridge::check_bridge_name(&name)?;
                let subnet: Subnet = parse("bridge", "subnet", &subnet)?;
                let gateway: Option<Ipv4Addr> = gateway.map(|g| parse("bridge", "gateway", &g)).transpose()?;
                let subnet6: Option<Subnet6> = subnet6.map(|s| parse("bridge", "IPv6 subnet", &s)).transpose()?;
                let host = ctx.host_nl()?;
                ctx.rt.block_on(bridge::add(&ctx, &host, &name, subnet, gateway, nat, subnet6))?;
            }
            BridgeCmd::Del { name } => {
                let host = ctx.host_nl()?;
                ctx.rt.block_on(bridge::del(&ctx, &host, &name))?;
            }
            BridgeCmd::Ls { json } => {
                for b in bridge::list(&ctx.state) {
                    if json {
                        println!("{}", serde_json::to_string(&b).unwrap_or_default());
                    } else {
                        let v6 = b.subnet6.map(|s| format!("\t{s}")).unwrap_or_default();
                        println!(
                            "{}\t{}\t{}\tnat={}{v6}",
                            b.name,
                            b.subnet,
                            b.gateway,
                            if b.nat { "on" } else { "off" }
                        );
                    }
                }
            }
        },
        Cmd::Connect { netns: ns, pid, bridge, id, ip, ifname, mac, mtu, json } => {
            paths::check_name("connect", "container ID", &id)?;
            paths::check_ifname("connect", &ifname)?;
            let ip = match ip.as_str() {
                "auto" => None,
                s => Some(parse::<Ipv4Addr>("connect", "address", s)?),
            };
            let mac = mac
                .map(|m| nl::parse_mac(&m).map_err(|e| Error::new("connect", &m, format!("invalid MAC: {e}"))))
                .transpose()?;
            if let Some(m) = mtu {
                if !(68..=65535).contains(&m) {
                    return Err(Error::new("connect", m, "MTU must be 68 to 65535"));
                }
            }
            if let Some(b) = &bridge {
                bridge::check_bridge_name(b)?;
            }
            let ns = match (ns, pid) {
                (Some(n), None) => netns::open_spec(&ctx.state, &n)?,
                (None, Some(p)) => netns::open_pid(p)?,
                _ => return Err(Error::new("connect", "netns", "give a namespace (NETNS) or --pid PID")),
            };
            let att = ctx.rt.block_on(attach::connect(&ctx, ConnectOpts { ns, bridge, id, ip, ifname, mac, mtu }))?;
            if json {
                println!("{}", att.result_json());
            } else {
                println!(
                    "{} {}/{} via {} ({} <-> {})",
                    att.id, att.ip, att.prefix_len, att.gateway, att.host_ifname, att.ifname
                );
            }
        }
        Cmd::Disconnect { id, leave_link } => ctx.rt.block_on(attach::disconnect(&ctx, &id, leave_link))?,
        Cmd::Nat { bridge, state } => bridge::set_nat(&ctx, &bridge, matches!(state, OnOff::On))?,
        Cmd::Publish { id, spec } => {
            paths::check_name("publish", "container ID", &id)?;
            let p = nft::parse_port(&spec, true).map_err(|e| Error::new("publish", &spec, e))?;
            attach::publish(&ctx, &id, p)?;
        }
        Cmd::Unpublish { id, spec } => {
            paths::check_name("unpublish", "container ID", &id)?;
            let p = nft::parse_port(&spec, false).map_err(|e| Error::new("unpublish", &spec, e))?;
            attach::unpublish(&ctx, &id, p)?;
        }
        Cmd::Ls { json } => {
            let host = ctx.host_nl()?;
            let inv = ctx.rt.block_on(inventory::take(&ctx, &host))?;
            print_ls(&inv, json);
        }
        Cmd::Prune { json } => {
            let host = ctx.host_nl()?;
            for line in ctx.rt.block_on(inventory::prune(&ctx, &host))? {
                if json {
                    println!("{}", serde_json::json!({ "removed": line }));
                } else {
                    // A line names state-file contents (a lease's owner): escaped like `ls`.
                    println!("removed {}", printable(&line));
                }
            }
        }
    }
    Ok(())
}

/// `s` with control characters escaped (`\n`, `\u{1b}`): a namespace path, or any other string a
/// user chose, must not forge lines or send terminal escapes in an error line or the `ls` table.
fn printable(s: &str) -> String {
    if !s.chars().any(char::is_control) {
        return s.to_string();
    }
    s.chars().map(|c| if c.is_control() { c.escape_default().to_string() } else { c.to_string() }).collect()
}

fn print_ls(inv: &inventory::Inventory, json: bool) {
    let opt = |v: Option<String>| v.map_or_else(|| "-".into(), |s| printable(&s));
    if json {
        for b in &inv.bridges {
            let mut v = serde_json::to_value(b).unwrap_or_default();
            v["kind"] = "bridge".into();
            println!("{v}");
        }
        for p in &inv.pairs {
            let mut v = serde_json::to_value(p).unwrap_or_default();
            v["kind"] = "veth".into();
            println!("{v}");
        }
        for l in &inv.orphan_leases {
            let mut v = serde_json::to_value(l).unwrap_or_default();
            v["kind"] = "lease".into();
            v["orphaned"] = true.into();
            println!("{v}");
        }
        for (family, rules, orphans) in
            [("ip", &inv.rules, &inv.orphan_rules), ("ip6", &inv.rules6, &inv.orphan_rules6)]
        {
            for r in rules {
                let orphaned = orphans.iter().any(|o| o.handle == r.handle);
                println!(
                    "{}",
                    serde_json::json!({"kind": "rule", "family": family, "chain": r.chain, "handle": r.handle, "comment": r.comment, "orphaned": orphaned})
                );
            }
        }
        return;
    }
    println!("{:<16} {:<18} {:<15} {:<4} {:<8} LEASES", "BRIDGE", "SUBNET", "GATEWAY", "NAT", "IFINDEX");
    for b in &inv.bridges {
        println!(
            "{:<16} {:<18} {:<15} {:<4} {:<8} {}",
            b.conf.name,
            b.conf.subnet.to_string(),
            b.conf.gateway.to_string(),
            if b.conf.nat { "on" } else { "off" },
            opt(b.ifindex.map(|i| i.to_string())),
            b.leases,
        );
        if let Some(s6) = b.conf.subnet6 {
            println!(
                "{:<16} {:<18} {}",
                "",
                s6.to_string(),
                b.conf.gateway6.map(|g| g.to_string()).unwrap_or_default()
            );
        }
    }
    println!();
    println!("{:<20} {:<10} {:<20} {:<12} {:<16} {:<24} STATE", "ID", "BRIDGE", "HOST END", "PEER", "IP", "NETNS");
    for p in &inv.pairs {
        println!(
            "{:<20} {:<10} {:<20} {:<12} {:<16} {:<24} {}",
            opt(p.id.clone()),
            opt(p.bridge.clone()),
            format!("{}@{}", printable(&p.host_ifname), opt(p.host_ifindex.map(|i| i.to_string()))),
            format!("{}@if{}", opt(p.peer_ifname.clone()), opt(p.peer_ifindex.map(|i| i.to_string()))),
            opt(p.ip.map(|i| i.to_string())),
            opt(p.netns.clone()),
            match (&p.host_netns, p.orphaned) {
                (Some(h), _) => format!("in host netns {}", printable(h)),
                (None, true) => format!("orphaned: {}", p.why.unwrap_or("")),
                (None, false) => "ok".into(),
            }
        );
    }
    for l in &inv.orphan_leases {
        println!("orphaned lease {} on {} held by {}", l.ip, printable(&l.bridge), printable(&l.id));
    }
    for (family, orphans) in [("ip", &inv.orphan_rules), ("ip6", &inv.orphan_rules6)] {
        for r in orphans {
            println!("orphaned rule {} in {family} {}: {}", r.handle, printable(&r.chain), printable(&r.comment));
        }
    }
}
