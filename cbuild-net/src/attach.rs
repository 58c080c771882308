//! Attachments: one container's veth pair, address and published ports, recorded in
//! `<state>/<ID>/net.json`.
//!
//! `net.json` doubles as the lock of the attachment: connect creates it (exclusively, already
//! flock'ed) before doing anything else, holds the lock until it has written the record, and every
//! other verb takes the same lock. A `net.json` that is empty and unlocked is therefore the mark of a
//! connect that died half-way, which `prune` cleans up.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, AsRawFd};
use std::path::Path;

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use crate::bridge::{self, BridgeConf};
use crate::error::{Error, Result};
use crate::ipam::{rmdir_quiet, Leases};
use crate::netns::NsFile;
use crate::nft::{self, Port};
use crate::nl::{self, Nl};
use crate::paths::{
    attachment_file, bridge_dir, check_name, container_dir, host_ifname, open_in, open_nofollow, open_parent,
    remove_nofollow, still_at,
};

/// Records are `<state>/<ID>/net.json`: no symlink is followed in the last two components.
const DEPTH: usize = 2;
use crate::{conntrack, Ctx};

/// `<state>/<ID>/net.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Attachment {
    pub id: String,
    pub bridge: String,
    /// The namespace as it was named to connect (a path, `<state>/NAME/ns/net`, `/proc/PID/ns/net`).
    pub netns: String,
    pub netns_inode: u64,
    pub host_ifname: String,
    pub host_ifindex: u32,
    pub host_mac: String,
    pub ifname: String,
    /// The container end's index inside its namespace (`@ifN` on the host end).
    pub peer_ifindex: u32,
    pub mac: String,
    pub ip: Ipv4Addr,
    pub prefix_len: u8,
    pub gateway: Ipv4Addr,
    /// Dual-stack bridges only: the IPv6 address (it follows the IPv4 lease), prefix and gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip6: Option<std::net::Ipv6Addr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix_len6: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway6: Option<std::net::Ipv6Addr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(default)]
    pub ports: Vec<Port>,
    /// The host namespace the pair's host end, the bridge and the rules live in (`Ctx::host_path`)
    /// and its inode (0 in records written before it was recorded: taken to be the current one). A
    /// verb run against another host namespace must neither judge nor undo this attachment.
    #[serde(default)]
    pub host_netns: String,
    #[serde(default)]
    pub host_netns_inode: u64,
}

/// Where an attachment's host side lives, seen from this invocation's host namespace.
pub enum Home {
    Here,
    /// Another host namespace that still exists (its path; empty: a process's own, unnamed).
    Elsewhere(String),
    /// Another host namespace that no longer exists: its links and rules went with it.
    Gone,
}

pub fn home_of(ctx: &Ctx, a: &Attachment) -> Home {
    if a.host_netns_inode == 0 || a.host_netns_inode == ctx.host_inode {
        return Home::Here;
    }
    if a.host_netns.is_empty() {
        // Unnamed: no way to tell whether it still exists, so never treat it as gone.
        return Home::Elsewhere(String::new());
    }
    match crate::netns::open_path(Path::new(&a.host_netns)) {
        Ok(ns) if ns.inode == a.host_netns_inode => Home::Elsewhere(a.host_netns.clone()),
        _ => Home::Gone,
    }
}

/// Refuse to act on an attachment of another, living, host namespace from this one.
fn check_home(ctx: &Ctx, a: &Attachment, step: &'static str) -> Result<Home> {
    match home_of(ctx, a) {
        Home::Elsewhere(p) => {
            let e = Error::new(step, &a.id, "connected in another host network namespace");
            Err(if p.is_empty() { e } else { e.hint(format!("run it with --host-netns {p}")) })
        }
        h => Ok(h),
    }
}

impl Attachment {
    /// Names a record may hold: `bridge` becomes a path under `<state>/net` (a forged `../..` would
    /// reach outside it), `id` a lease owner and a path. A record failing this is treated as broken
    /// (found again from its ID alone), never followed.
    pub fn valid(&self) -> bool {
        check_name("record", "", &self.id).is_ok() && bridge::check_bridge_name(&self.bridge).is_ok()
    }

    /// The CNI-result-like object `connect --json` prints.
    pub fn result_json(&self) -> serde_json::Value {
        let mut v = serde_json::json!({
            "id": self.id,
            "bridge": self.bridge,
            "interfaces": [
                {"name": self.host_ifname, "mac": self.host_mac, "ifindex": self.host_ifindex},
                {"name": self.ifname, "mac": self.mac, "ifindex": self.peer_ifindex, "sandbox": self.netns},
            ],
            "ips": [{"address": format!("{}/{}", self.ip, self.prefix_len), "gateway": self.gateway, "interface": 1}],
            "routes": [{"dst": "0.0.0.0/0", "gw": self.gateway}],
        });
        if let (Some(ip6), Some(p6), Some(gw6)) = (self.ip6, self.prefix_len6, self.gateway6) {
            if let Some(a) = v["ips"].as_array_mut() {
                a.push(serde_json::json!({"address": format!("{ip6}/{p6}"), "gateway": gw6, "interface": 1}));
            }
            if let Some(a) = v["routes"].as_array_mut() {
                a.push(serde_json::json!({"dst": "::/0", "gw": gw6}));
            }
        }
        v
    }
}

/// What `connect` was asked for.
pub struct ConnectOpts {
    pub ns: NsFile,
    pub bridge: Option<String>,
    pub id: String,
    pub ip: Option<Ipv4Addr>,
    pub ifname: String,
    pub mac: Option<[u8; 6]>,
    pub mtu: Option<u32>,
}

/// The attachment file, open and locked.
pub struct Locked {
    pub file: Flock<File>,
}

impl Locked {
    /// Replace the record in place (the lock stays on the same inode, so no rename): overwrite from
    /// the start, then cut what is left of a longer old record. Never truncated to zero first: on
    /// ext4 a file truncated to zero is flushed to disk when closed (`auto_da_alloc`, meant for
    /// editors that rewrite a file in place), a synchronous writeback in every connect.
    pub fn write(&mut self, a: &Attachment) -> Result<()> {
        let mut data = serde_json::to_vec_pretty(a).map_err(|e| Error::new("record", &a.id, e))?;
        data.push(b'\n');
        let f: &mut File = &mut self.file;
        f.seek(SeekFrom::Start(0))
            .and_then(|_| f.write_all(&data))
            .and_then(|_| match f.metadata()?.len() > data.len() as u64 {
                true => f.set_len(data.len() as u64),
                false => Ok(()),
            })
            .map_err(|e| Error::io("record", &a.id, e))
    }

    pub fn read(&mut self) -> Option<Attachment> {
        let mut s = String::new();
        let f: &mut File = &mut self.file;
        f.seek(SeekFrom::Start(0)).ok()?;
        f.read_to_string(&mut s).ok()?;
        serde_json::from_str::<Attachment>(&s).ok().filter(Attachment::valid)
    }
}

/// Open and lock an existing attachment (blocking while a connect, publish or disconnect holds it).
/// A lock won on a record that is no longer at its path is taken again: disconnect removes the record
/// while it holds the lock, so a publish or disconnect that waited for it would otherwise read the
/// gone container's record and act on it (publish a port to its released address; delete, by name,
/// the pair and record of a connect of the same ID made meanwhile).
pub fn lock_existing(state: &Path, id: &str, step: &'static str) -> Result<Locked> {
    check_name(step, "container ID", id)?;
    let p = attachment_file(state, id);
    let fail = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::NotFound => Error::new(step, id, "not connected"),
        _ => Error::io(step, p.display(), e),
    };
    loop {
        let (dir, name) = open_parent(&p, DEPTH).map_err(fail)?;
        let f = open_in(dir.as_fd(), &name, libc::O_RDWR).map_err(fail)?;
        let file = Flock::lock(f, FlockArg::LockExclusive).map_err(|(_, e)| Error::errno(step, p.display(), e))?;
        if still_at(dir.as_fd(), &name, &file) {
            return Ok(Locked { file });
        }
    }
}

/// Create `net.json` exclusively and already locked, so no other process ever sees it unlocked while
/// this connect is alive, and a kill at any instant leaves nothing `prune` cannot recognise:
/// - `<state>/<ID>` absent: build `<state>/.net-<ID>.<pid>/net.json` (locked), then rename the
///   directory into place (rename fails if another process made a non-empty one meanwhile);
/// - `<state>/<ID>` present (another tool's): make the file unnamed (`O_TMPFILE`), lock it, and only
///   then link it to `net.json` (linkat(2) fails if the name exists, like `O_EXCL`). A kill before
///   the link leaves no file at all; after it, an empty unlocked record, which prune recognises as a
///   dead connect.
fn reserve(state: &Path, id: &str) -> Result<(Locked, bool)> {
    let dir = container_dir(state, id);
    let p = attachment_file(state, id);
    let taken = || {
        Error::new("connect", id, "already connected")
            .hint(format!("see {} or `cbuild-net disconnect --id {id}`", p.display()))
    };
    let create_locked = |f: &Path| -> Result<Flock<File>> {
        let file = open_nofollow(f, DEPTH, libc::O_RDWR | libc::O_CREAT | libc::O_EXCL)
            .map_err(|e| Error::io("reserve", f.display(), e))?;
        Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, e)| Error::errno("reserve", f.display(), e))
    };
    // Never followed: the record would be made (and later deleted) in the symlink's target.
    let exists = match std::fs::symlink_metadata(&dir) {
        Ok(m) if m.file_type().is_symlink() => {
            return Err(Error::new("reserve", dir.display(), "is a symbolic link: refused in the state dir"))
        }
        Ok(m) if !m.is_dir() => return Err(Error::new("reserve", dir.display(), "exists and is not a directory")),
        Ok(_) => true,
        Err(_) => false,
    };
    if !exists {
        let tmpdir = state.join(format!(".net-{id}.{}", std::process::id()));
        // The state dir is made only when missing (a first run): not a mkdir and a stat on every connect.
        let mkdir = || std::fs::create_dir(&tmpdir).map_err(|e| Error::io("reserve", tmpdir.display(), e));
        match mkdir() {
            Err(e) if e.is_errno(libc::ENOENT) => {
                std::fs::create_dir_all(state).map_err(|e| Error::io("reserve", state.display(), e))?;
                mkdir()?;
            }
            r => r?,
        }
        let file = match create_locked(&tmpdir.join("net.json")) {
            Ok(f) => f,
            Err(e) => {
                let _ = std::fs::remove_dir(&tmpdir);
                return Err(e);
            }
        };
        match std::fs::rename(&tmpdir, &dir) {
            Ok(()) => return Ok((Locked { file }, true)),
            Err(_) => {
                // Someone made <state>/<ID> meanwhile: fall through to the link path.
                let _ = std::fs::remove_file(tmpdir.join("net.json"));
                let _ = std::fs::remove_dir(&tmpdir);
            }
        }
    }
    match create_linked_locked(&p) {
        Ok(file) => Ok((Locked { file }, false)),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(taken()),
        Err(e) => Err(Error::io("reserve", p.display(), e)),
    }
}

/// A new file at `path` (`<state>/<ID>/net.json`), exclusively created and locked before it has a
/// name: one inode, and no temporary name to unlink. Everything happens relative to the directory
/// opened once without following a symlink, so it cannot be swapped for one meanwhile.
fn create_linked_locked(path: &Path) -> std::io::Result<Flock<File>> {
    use std::os::fd::FromRawFd;
    let (dir, name) = open_parent(path, DEPTH)?;
    let dfd = dir.as_raw_fd();
    let lock = |f: File| Flock::lock(f, FlockArg::LockExclusive).map_err(|(_, e)| std::io::Error::from(e));
    let open = |name: &std::ffi::CStr, flags: libc::c_int| {
        // SAFETY: openat on an open directory fd and a NUL-terminated name; the new fd is ours alone.
        match unsafe { libc::openat(dfd, name.as_ptr(), flags | libc::O_CLOEXEC | libc::O_NOFOLLOW, 0o644) } {
            fd if fd >= 0 => Ok(unsafe { File::from_raw_fd(fd) }),
            _ => Err(std::io::Error::last_os_error()),
        }
    };
    match open(c".", libc::O_TMPFILE | libc::O_RDWR) {
        Ok(f) => {
            let f = lock(f)?;
            // SAFETY: linkat on open fds and NUL-terminated names; no memory is handed over.
            let mut rc = unsafe { libc::linkat(f.as_raw_fd(), c"".as_ptr(), dfd, name.as_ptr(), libc::AT_EMPTY_PATH) };
            if rc < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ENOENT) {
                // AT_EMPTY_PATH needs CAP_DAC_READ_SEARCH; the /proc link works for the file's owner.
                let proc = std::ffi::CString::new(format!("/proc/self/fd/{}", f.as_raw_fd()))?;
                // SAFETY: as above.
                rc =
                    unsafe { libc::linkat(libc::AT_FDCWD, proc.as_ptr(), dfd, name.as_ptr(), libc::AT_SYMLINK_FOLLOW) };
            }
            match rc {
                0 => Ok(f),
                _ => Err(std::io::Error::last_os_error()),
            }
        }
        // No O_TMPFILE here (EOPNOTSUPP; EISDIR from a kernel that predates it): a named temporary
        // file, locked, then hard-linked (prune removes one a kill left).
        Err(e) if matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP | libc::EISDIR)) => {
            let tmp = std::ffi::CString::new(format!(".net.json.{}", std::process::id()))?;
            let f = open(&tmp, libc::O_RDWR | libc::O_CREAT | libc::O_EXCL)?;
            let r = lock(f).and_then(|f| {
                // SAFETY: linkat within one open directory, NUL-terminated names.
                match unsafe { libc::linkat(dfd, tmp.as_ptr(), dfd, name.as_ptr(), 0) } {
                    0 => Ok(f),
                    _ => Err(std::io::Error::last_os_error()),
                }
            });
            // SAFETY: unlinkat of the temporary name in the same directory.
            unsafe { libc::unlinkat(dfd, tmp.as_ptr(), 0) };
            r
        }
        Err(e) => Err(e),
    }
}

/// Remove the record and, if nothing else is in it, the container's directory.
fn unreserve(state: &Path, id: &str) {
    let _ = remove_nofollow(&attachment_file(state, id), DEPTH);
    rmdir_quiet(&container_dir(state, id));
}

/// `connect`: the pair, the address, the routes, the record. Any failure undoes what was done.
pub async fn connect(ctx: &Ctx, o: ConnectOpts) -> Result<Attachment> {
    check_name("connect", "container ID", &o.id)?;
    if o.id == "net" {
        return Err(Error::new("connect", &o.id, "reserved: <state>/net holds cbuild-net's own files"));
    }
    if o.ns.inode == ctx.host_inode {
        return Err(Error::new("connect", &o.ns.path, "is the host network namespace itself"));
    }
    // Two sockets: the host's and the container's, each opened by a short setns visit of this thread
    // (no thread spawns: on a busy machine each new thread can wait milliseconds for a CPU).
    let host = ctx.host_nl()?;
    let cont = ctx.batch_in(Some(o.ns.fd.as_fd()))?;

    let mut br = match &o.bridge {
        None => bridge::ensure_default(ctx, &host).await?,
        Some(b) => {
            bridge::check_bridge_name(b)?;
            bridge::load(&ctx.state, b)?.ok_or_else(|| {
                Error::new("connect", b, "no such bridge")
                    .hint(format!("create it with `cbuild-net bridge add {b} --subnet CIDR`"))
            })?
        }
    };
    if br.building {
        // A `bridge add` killed half-way (or one still at work, whose lock the add below waits for):
        // the same add completes it, forwarding and NAT included.
        ctx.step("bridge", format_args!("{}: completing it", br.name));
        br = bridge::add(ctx, &host, &br.name, br.subnet, Some(br.gateway), br.nat, br.subnet6).await?;
    }

    let mut undo = Undo::default();
    let r = async {
        ctx.step("reserve", attachment_file(&ctx.state, &o.id).display());
        let (mut lock, _) = reserve(&ctx.state, &o.id)?;
        undo.reserved = true;
        let att = connect_steps(ctx, &o, &br, &host, &cont, &mut lock, &mut undo).await?;
        // Last, while the undo below still covers every step: a stop signal held meanwhile fails it.
        crate::signals::check("connect", &o.id)?;
        Ok(att)
    }
    .await;
    if r.is_err() {
        if undo.veth {
            ctx.step("undo", format_args!("del-link {}", host_ifname(&o.id)));
            if let Err(e) = host.del_link_by_name(&host_ifname(&o.id)).await {
                ctx.undo_failed(&e);
            }
        }
        if let Some(ip) = undo.lease {
            ctx.step("undo", format_args!("release {ip}"));
            if let Err(e) = Leases::new(bridge_dir(&ctx.state, &br.name)).release(ip, &o.id) {
                ctx.undo_failed(&e);
            }
        }
        if undo.reserved {
            unreserve(&ctx.state, &o.id);
        }
        // A default bridge this connect made stays: see bridge::ensure_default.
    }
    r
}

#[derive(Default)]
struct Undo {
    reserved: bool,
    lease: Option<Ipv4Addr>,
    veth: bool,
}

async fn connect_steps(
    ctx: &Ctx,
    o: &ConnectOpts,
    br: &BridgeConf,
    host: &Nl,
    cont: &nl::Batch,
    lock: &mut Locked,
    undo: &mut Undo,
) -> Result<Attachment> {
    let leases = Leases::new(bridge_dir(&ctx.state, &br.name));
    // `br` was read before this lock: a bridge deleted and made again meanwhile must not lend an address
    // of its old subnet.
    let ip = leases.allocate(&br.subnet, br.gateway, o.ip, &o.id, |l| bridge::check_unchanged(l, br))?;
    ctx.step("ipam", format_args!("{ip}/{} from {}", br.subnet.prefix, br.name));
    undo.lease = Some(ip);

    let master = match host.index(&br.name)? {
        Some(i) => i,
        None => {
            // Known bridge whose link is gone (its namespace was recreated): make it again.
            bridge::add(ctx, host, &br.name, br.subnet, Some(br.gateway), br.nat, br.subnet6).await?;
            host.index(&br.name)?.ok_or_else(|| Error::new("connect", &br.name, "bridge link missing"))?
        }
    };
    let hname = host_ifname(&o.id);
    let mac = o.mac.unwrap_or_else(nl::random_mac);
    ctx.step("add-veth", format_args!("{hname} on {} <-> {} in {}", br.name, o.ifname, o.ns.path));
    let add = || host.add_veth(&hname, master, &o.ifname, o.ns.fd.as_raw_fd(), mac, o.mtu);
    match add().await {
        Err(e) if e.is_errno(libc::EEXIST) && remove_left_link(ctx, host, &hname).await? => add().await,
        r => r,
    }
    .map_err(|e| {
        let mut e = e;
        e.object = format!("{hname} <-> {} in {}", o.ifname, o.ns.path);
        e
    })?;
    undo.veth = true;
    let vanished = |n: &str| Error::new("add-veth", n, "link vanished");
    let host_index = host.index(&hname)?.ok_or_else(|| vanished(&hname))?;
    let host_mac = host.hwaddr(&hname)?;
    let peer = cont.index(&o.ifname)?.ok_or_else(|| vanished(&o.ifname))?;

    // The container end, in one batch the kernel runs in order: IPv4-only (addrgenmode none, before
    // the pair has a carrier), the address(es), loopback up (index 1 in every namespace,
    // LOOPBACK_IFINDEX), the end itself up, and the default route(s) (a gateway must be reachable
    // through an address on a link that is up). A dual-stack bridge's IPv6 address follows the IPv4
    // lease, usable at once (nodad), with the bridge's global address as the gateway. The host
    // end's port settings (hairpin, no IPv6 link-local) go first, and the host end up last: that
    // gives the pair its carrier and queues a link-watch event for each end.
    let v6 = br.subnet6.zip(br.gateway6).map(|(s6, gw6)| (s6.follow(&br.subnet, ip), s6.prefix, gw6));
    let mut reqs =
        vec![nl::Req::no_ipv6_link_local(peer, &o.ifname), nl::Req::add_addr(peer, ip, br.subnet.prefix, &o.ifname)];
    ctx.step("add-addr", format_args!("{ip}/{} on {}", br.subnet.prefix, o.ifname));
    if let Some((ip6, p6, _)) = v6 {
        ctx.step("add-addr", format_args!("{ip6}/{p6} on {}", o.ifname));
        reqs.push(nl::Req::add_addr6(peer, ip6, p6, &o.ifname));
    }
    reqs.push(nl::Req::up(1, "lo"));
    reqs.push(nl::Req::up(peer, &o.ifname));
    ctx.step("add-route", format_args!("default via {}", br.gateway));
    reqs.push(nl::Req::default_route(br.gateway.into()));
    if let Some((_, _, gw6)) = v6 {
        ctx.step("add-route", format_args!("default via {gw6}"));
        reqs.push(nl::Req::default_route(gw6.into()));
    }
    host.setup_port(host_index, &hname, true).await?;
    cont.run(reqs).await?;
    // Not earlier: see Nl::add_veth.
    ctx.step("link-up", &hname);
    host.set_up(host_index, &hname).await?;
    // Each end's pending link-watch event runs now, in this process (no wait for a kernel worker to
    // be scheduled): when connect returns, both ends are operationally up and the bridge forwards to
    // the port.
    host.sync_link(&hname)?;
    cont.sync_link(&o.ifname)?;

    let att = Attachment {
        id: o.id.clone(),
        bridge: br.name.clone(),
        netns: o.ns.path.clone(),
        netns_inode: o.ns.inode,
        host_ifname: hname,
        host_ifindex: host_index,
        host_mac: nl::fmt_mac(&host_mac),
        ifname: o.ifname.clone(),
        peer_ifindex: peer,
        mac: nl::fmt_mac(&mac),
        ip,
        prefix_len: br.subnet.prefix,
        gateway: br.gateway,
        ip6: v6.map(|v| v.0),
        prefix_len6: v6.map(|v| v.1),
        gateway6: v6.map(|v| v.2),
        mtu: o.mtu,
        ports: Vec::new(),
        host_netns: ctx.host_path.clone(),
        host_netns_inode: ctx.host_inode,
    };
    ctx.step("record", attachment_file(&ctx.state, &o.id).display());
    lock.write(&att)?;
    leases.remember(ip);
    Ok(att)
}

/// A host end of this ID's name already exists while this connect holds the ID: if it is the mark
/// of a `disconnect --leave-link` (a veth, down, on one of this state dir's bridges) whose namespace
/// the kernel has not destroyed yet (that happens asynchronously), or that something still holds,
/// delete it so the ID can be connected again at once. Anything else is left alone (the connect then
/// fails with "File exists"). Returns whether it deleted one.
async fn remove_left_link(ctx: &Ctx, host: &Nl, hname: &str) -> Result<bool> {
    let Some(l) = host.link(hname).await? else { return Ok(false) };
    if nl::kind(&l) != Some(rtnetlink::packet_route::link::InfoKind::Veth) || nl::is_up(&l) {
        return Ok(false);
    }
    let Some(master) = nl::master(&l) else { return Ok(false) };
    let mut ours = false;
    for b in bridge::list(&ctx.state) {
        ours |= host.link(&b.name).await?.is_some_and(|bl| bl.header.index == master);
    }
    if !ours {
        return Ok(false);
    }
    ctx.step("del-link", format_args!("{hname} (left down by a disconnect --leave-link)"));
    match host.del_link(l.header.index, hname).await {
        Err(e) if !e.is_errno(libc::ENODEV) => Err(e),
        _ => Ok(true),
    }
}

/// `disconnect`: published ports, the pair, conntrack entries, the lease, the record.
///
/// With `leave_link` the pair is not deleted: the caller asserts that the container's network
/// namespace is already released, so the kernel deletes the pair itself when it destroys that
/// namespace (in a kernel worker, not in this process: deleting it here would block ~20 ms in
/// `unregister_netdevice` waiting for RCU grace periods). The host end is still taken down first, so
/// nothing of the container reaches the host's stack from then on. If something still holds the
/// namespace, the pair stays, down, until it goes; `ls` shows the host end as an orphan (no record
/// owns it) and `prune` deletes it.
pub async fn disconnect(ctx: &Ctx, id: &str, leave_link: bool) -> Result<()> {
    let mut lock = lock_existing(&ctx.state, id, "disconnect")?;
    let att = lock.read().filter(|a| a.id == id);
    if let Some(a) = &att {
        if let Home::Gone = check_home(ctx, a, "disconnect")? {
            forget(ctx, id, a)?;
            return Ok(());
        }
    }
    let host = ctx.host_nl()?;
    remove_everything(ctx, &host, id, att.as_ref(), leave_link).await?;
    drop(lock);
    Ok(())
}

/// An attachment whose host namespace is gone: its pair, rules and conntrack entries went with it;
/// only the lease and the record are left, and nothing in this invocation's host namespace is touched.
pub fn forget(ctx: &Ctx, id: &str, a: &Attachment) -> Result<()> {
    ctx.step("release", format_args!("{} on {}", a.ip, a.bridge));
    Leases::new(bridge_dir(&ctx.state, &a.bridge)).release(a.ip, id)?;
    ctx.step("unrecord", attachment_file(&ctx.state, id).display());
    unreserve(&ctx.state, id);
    Ok(())
}

/// Remove all an ID holds. `att` is `None` for a record a dead connect left empty: then the link name
/// (derived from the ID) and the leases (found by owner) still lead to everything. `leave_link`: see
/// [`disconnect`].
pub async fn remove_everything(
    ctx: &Ctx,
    host: &Nl,
    id: &str,
    att: Option<&Attachment>,
    leave_link: bool,
) -> Result<()> {
    let nft = ctx.nft();
    if att.is_none_or(|a| !a.ports.is_empty()) {
        let _l = nft.lock()?;
        let rules = nft.rules()?;
        let mine: Vec<_> = rules
            .iter()
            .filter(|r| nft::parse_pub_comment(&r.comment).is_some_and(|(owner, _, _)| owner == id))
            .cloned()
            .collect();
        if !mine.is_empty() {
            ctx.step("nft-delete", format_args!("{} rules of {id}", mine.len()));
            bridge::delete_publish_rules(ctx, &nft, &mine, &rules)?;
        }
        if att.is_none_or(|a| a.ip6.is_some()) {
            bridge::delete_publish_rules6(ctx, |r| {
                nft::parse_pub_comment(&r.comment).is_some_and(|(owner, _, _)| owner == id)
            })?;
        }
    }
    let hname = host_ifname(id);
    let mut ips = Vec::new();
    match att {
        Some(a) => ips.push((a.bridge.clone(), a.ip)),
        None => {
            for b in bridge::list(&ctx.state) {
                for (ip, owner) in Leases::new(bridge_dir(&ctx.state, &b.name)).list() {
                    if owner == id {
                        ips.push((b.name.clone(), ip));
                    }
                }
            }
        }
    }
    // The host end goes down first: its bridge port is then disabled, and once the request returns
    // (dev_close waits out packets in flight with synchronize_net) no packet of the container can
    // reach the host namespace's stack, so no conntrack entry of its address can appear any more.
    // The conntrack flush can then run on a thread while the kernel deletes the pair (tens of ms,
    // mostly waiting for RCU grace periods), not after it.
    let link = host.link(&hname).await?;
    if let Some(l) = &link {
        ctx.step("link-down", &hname);
        match host.set_down(l.header.index, &hname).await {
            Err(e) if !e.is_errno(libc::ENODEV) => return Err(e),
            _ => {}
        }
    }
    // A dual-stack bridge's IPv6 address follows the IPv4 lease: forget its flows too.
    let mut addrs: Vec<std::net::IpAddr> = ips.iter().map(|(_, ip)| (*ip).into()).collect();
    for (b, ip) in &ips {
        if let Ok(Some(c)) = bridge::load(&ctx.state, b) {
            if let Some(s6) = c.subnet6 {
                addrs.push(s6.follow(&c.subnet, *ip).into());
            }
        }
    }
    let flusher = match ips.is_empty() {
        true => None,
        false => conntrack::open(ctx)?,
    };
    let forget_all =
        move |f: conntrack::Flusher| addrs.into_iter().map(|ip| Ok((ip, f.flush(ip)?))).collect::<Result<Vec<_>>>();
    let (deleted, flushed) = if leave_link {
        // Nothing to overlap with: no thread.
        if link.is_some() {
            ctx.step("leave-link", format_args!("{hname} (deleted by the kernel with the container's namespace)"));
        }
        (Ok(()), flusher.map_or_else(|| Ok(Vec::new()), forget_all))
    } else {
        let walker = flusher.map(|f| std::thread::spawn(move || forget_all(f)));
        ctx.step("del-link", &hname);
        let deleted = match &link {
            Some(l) => match host.del_link(l.header.index, &hname).await {
                Err(e) if !e.is_errno(libc::ENODEV) => Err(e),
                _ => Ok(()),
            },
            None => Ok(()),
        };
        let flushed = match walker {
            Some(w) => w.join().unwrap_or_else(|_| Err(Error::new("conntrack", "walk", "thread panicked"))),
            None => Ok(Vec::new()),
        };
        (deleted, flushed)
    };
    deleted?;
    for (ip, how) in flushed? {
        match how {
            conntrack::Forgot::Filtered => {
                ctx.step("conntrack", format_args!("flows of {ip} forgotten (kernel filter)"))
            }
            conntrack::Forgot::Walked(0) => {}
            conntrack::Forgot::Walked(n) => ctx.step("conntrack", format_args!("{n} flows of {ip} forgotten")),
        }
    }
    for (b, ip) in ips {
        ctx.step("release", format_args!("{ip} on {b}"));
        Leases::new(bridge_dir(&ctx.state, &b)).release(ip, id)?;
    }
    ctx.step("unrecord", attachment_file(&ctx.state, id).display());
    unreserve(&ctx.state, id);
    Ok(())
}

/// `publish --id ID HOSTPORT:PORT[/proto]`.
pub fn publish(ctx: &Ctx, id: &str, p: Port) -> Result<()> {
    let mut lock = lock_existing(&ctx.state, id, "publish")?;
    let mut att = lock
        .read()
        .filter(|a| a.id == id)
        .ok_or_else(|| Error::new("publish", id, "attachment record is incomplete"))?;
    if let Home::Gone = check_home(ctx, &att, "publish")? {
        return Err(Error::new("publish", id, "its host network namespace is gone"));
    }
    let spec = format!("{}/{}", p.host_port, p.protocol.as_str());
    let nft = ctx.nft();
    let _l = nft.lock()?;
    let rules = nft.rules()?;
    for r in &rules {
        if let Some((owner, proto, hp)) = nft::parse_pub_comment(&r.comment) {
            if proto == p.protocol.as_str() && hp == p.host_port {
                return Err(Error::new("publish", spec, format!("already published by {owner}")));
            }
        }
    }
    // The record names the port before the rules exist: disconnect looks for rules only when the
    // record lists ports, so a publish killed between the two steps must leave the record saying too
    // much (a port with no rule: harmless), never too little (a DNAT rule that outlives the container
    // and points at its address when the next container gets it).
    // A publish killed after writing the record left the port listed without rules: list it once.
    att.ports.retain(|q| !(q.host_port == p.host_port && q.protocol == p.protocol));
    att.ports.push(p);
    lock.write(&att)?;
    ctx.step("nft-add", format_args!("dnat {spec} to {}:{}", att.ip, p.port));
    let mut add = vec![nft::dnat_rule("prerouting", id, &p, att.ip), nft::dnat_rule("output", id, &p, att.ip)];
    // The bridge's first published port brings the bridge-wide rules (loopback and hairpin NAT, the
    // loopback guard), in the same batch; then route_localnet, never before its guard exists.
    let group = rules.iter().any(|r| nft::parse_ports_comment(&r.comment) == Some(att.bridge.as_str()));
    let conf = bridge::load(&ctx.state, &att.bridge)?;
    if let (false, Some(c)) = (group, &conf) {
        ctx.step("nft-add", nft::ports_comment(&att.bridge));
        add.extend(nft::ports_rules(&att.bridge, &c.subnet));
    }
    let r = nft.add(add).and_then(|()| {
        ctx.step("route-localnet", format_args!("{} on", att.bridge));
        match conf {
            Some(_) => bridge::set_route_localnet(ctx, &att.bridge, true),
            None => Ok(()),
        }
    });
    // A dual-stack container: the same port on its IPv6 address, in `ip6 cbuild`.
    let r = r.and_then(|()| match (att.ip6, conf.as_ref().and_then(|c| c.subnet6)) {
        (Some(ip6), Some(s6)) => {
            let nft6 = ctx.nft().v6();
            let group = nft6.rules()?.iter().any(|r| nft::parse_ports_comment(&r.comment) == Some(att.bridge.as_str()));
            let mut add = vec![nft::dnat_rule6("prerouting", id, &p, ip6), nft::dnat_rule6("output", id, &p, ip6)];
            if !group {
                add.extend(nft::ports_rules6(&att.bridge, &s6));
            }
            ctx.step("nft-add", format_args!("dnat {spec} to [{ip6}]:{}", p.port));
            nft6.add(add)
        }
        _ => Ok(()),
    });
    // While the undo below still covers the rules: a stop signal held meanwhile fails it.
    let r = r.and_then(|()| crate::signals::check("publish", &spec));
    if let Err(e) = r {
        let comment = nft::pub_comment(id, &p);
        if att.ip6.is_some() {
            if let Err(u) = bridge::delete_publish_rules6(ctx, |r| r.comment == comment) {
                ctx.undo_failed(&u);
            }
        }
        // Whatever of the batch landed goes again (listed anew: the handles are the kernel's).
        if let Ok(all) = nft.rules() {
            let comment = nft::pub_comment(id, &p);
            let mine: Vec<_> = all.iter().filter(|r| r.comment == comment).cloned().collect();
            if let Err(u) = bridge::delete_publish_rules(ctx, &nft, &mine, &all) {
                ctx.undo_failed(&u);
            }
        }
        att.ports.pop();
        if let Err(u) = lock.write(&att) {
            ctx.undo_failed(&u);
        }
        return Err(e);
    }
    Ok(())
}

/// `unpublish --id ID HOSTPORT[:PORT][/proto]`.
pub fn unpublish(ctx: &Ctx, id: &str, p: Port) -> Result<()> {
    let mut lock = lock_existing(&ctx.state, id, "unpublish")?;
    let mut att = lock
        .read()
        .filter(|a| a.id == id)
        .ok_or_else(|| Error::new("unpublish", id, "attachment record is incomplete"))?;
    check_home(ctx, &att, "unpublish")?;
    let spec = format!("{}/{}", p.host_port, p.protocol.as_str());
    let nft = ctx.nft();
    let _l = nft.lock()?;
    let rules = nft.rules()?;
    let comment = nft::pub_comment(id, &p);
    let mine: Vec<_> = rules.iter().filter(|r| r.comment == comment).cloned().collect();
    if mine.is_empty() {
        return Err(Error::new("unpublish", spec, format!("not published by {id}")));
    }
    ctx.step("nft-delete", format_args!("dnat {spec}"));
    bridge::delete_publish_rules(ctx, &nft, &mine, &rules)?;
    if att.ip6.is_some() {
        bridge::delete_publish_rules6(ctx, |r| r.comment == comment)?;
    }
    att.ports.retain(|q| !(q.host_port == p.host_port && q.protocol == p.protocol));
    lock.write(&att)
}

/// Every attachment record: complete ones, and the IDs of records that are locked (a connect in
/// progress) or unreadable and unlocked (a dead connect).
pub enum Record {
    Complete(Box<Attachment>),
    Busy(String),
    Broken(String),
}

pub fn records(state: &Path) -> Vec<Record> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(state) else { return out };
    for e in rd.flatten() {
        let id = e.file_name().to_string_lossy().into_owned();
        if check_name("ls", "", &id).is_err() {
            continue;
        }
        let p = attachment_file(state, &id);
        let Ok(f) = open_nofollow(&p, DEPTH, libc::O_RDONLY) else { continue };
        match Flock::lock(f, FlockArg::LockSharedNonblock) {
            Err(_) => out.push(Record::Busy(id)),
            Ok(mut f) => {
                let mut s = String::new();
                let _ = (&mut *f as &mut File).read_to_string(&mut s);
                match serde_json::from_str::<Attachment>(&s) {
                    Ok(a) if a.id == id && a.valid() => out.push(Record::Complete(Box::new(a))),
                    _ => out.push(Record::Broken(id)),
                }
            }
        }
    }
    out
}

pub fn is_host_veth_name(n: &str) -> bool {
    n.len() == 14 && n.starts_with("cb") && n[2..].bytes().all(|c| c.is_ascii_hexdigit())
}

/// Take the lock of a record found broken, so prune never races a connect that just started.
pub fn lock_broken(state: &Path, id: &str) -> Option<Locked> {
    let (dir, name) = open_parent(&attachment_file(state, id), DEPTH).ok()?;
    let f = open_in(dir.as_fd(), &name, libc::O_RDWR).ok()?;
    let file = Flock::lock(f, FlockArg::LockExclusiveNonblock).ok()?;
    // Removed meanwhile (by another prune), perhaps with a new connect's record in its place: not ours.
    if !still_at(dir.as_fd(), &name, &file) {
        return None;
    }
    let mut l = Locked { file };
    // Re-check under the lock: it may have been completed meanwhile.
    if l.read().is_some() {
        return None;
    }
    Some(l)
}
