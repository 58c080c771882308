//! The command line of cbuild-ns. Only parsing and the mapping of errors to exit codes live here; the
//! mechanism is in the library.
//!
//! No Rust `main`: the C `main` below is the entry point, which skips the standard library's own start-up
//! (reading `/proc/self/maps` to find the main thread's stack guard, an alternate signal stack, `sigaction`s,
//! a `poll` of fds 0-2): ~0.1 ms of every start, and this tool is in every container's start. Arguments come
//! from `main`'s argv (only glibc would also hand them to `std::env::args_os`), a stack overflow is then a
//! plain SIGSEGV, a panic aborts (134, not 101); `std::process::exit` still flushes stdout. The one part of
//! that start-up a tool must keep is done here: fds 0-2 are opened on /dev/null when the caller closed them.
#![no_main]

// The static build links musl (scripts/lib/static.sh), whose allocator maps and unmaps pages for each size
// class as a tool starts (25 mmaps and 21 munmaps in one `cbuild-ns run`); dlmalloc keeps them.
#[cfg(target_env = "musl")]
#[global_allocator]
static ALLOC: dlmalloc::GlobalDlmalloc = dlmalloc::GlobalDlmalloc;

use std::ffi::{CStr, OsString};
use std::os::unix::ffi::OsStringExt;

use cbuild_ns::capabilities::{parse_name, CapName};
use cbuild_ns::error::{Error, Step, EXIT_TOOL};
use cbuild_ns::idmap::{self, Range};
use cbuild_ns::namespaces::NsType;
use cbuild_ns::spec::{self, BindMount, RunSpec, SeccompSource, TmpfsMount};
use cbuild_ns::{inspect, nsenter, persist, protocol, report, run};
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "cbuild-ns",
    version,
    about = "Create and join Linux namespaces, build a container's root, exec a command.",
    after_help = "Exit codes: the command's own; 125 cbuild-ns failed; 126 not executable; 127 not found; 128+N killed by signal N.\nState: $CBUILD_STATE (default /run/cbuild, or $XDG_RUNTIME_DIR/cbuild when not root)."
)]
struct Cli {
    /// Print each step to stderr as it happens.
    #[arg(short, long, global = true)]
    verbose: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

// `defer`: a verb's arguments are defined only when that verb is the one run, not every verb's on each
// start (this tool runs in front of every container start).
#[derive(Subcommand)]
#[command(defer = true)]
enum Cmd {
    /// Create namespaces, set up the root filesystem and the process, and exec CMD.
    Run(Box<RunArgs>),
    /// Run CMD inside the namespaces of a running process or of persisted namespace files (nsenter).
    Exec(ExecArgs),
    /// Show a process's namespaces, NSpid chain, ID maps, capabilities, seccomp and cgroups.
    Inspect {
        pid: String,
        #[arg(long)]
        json: bool,
    },
    /// Release namespaces persisted with `run --persist` (unmount and remove their files): those listed
    /// in DIR/.cbuild-ns, never another tool's (cbuild-net's `netns add`).
    Unpersist {
        /// A directory, or a NAME meaning $CBUILD_STATE/NAME/ns.
        dir: String,
    },
}

#[derive(Args, Default)]
struct ProcessArgs {
    /// Working directory of the command (inside the new root).
    #[arg(short = 'w', long, value_name = "DIR")]
    workdir: Option<PathBuf>,
    /// Set an environment variable (repeatable); a NAME alone unsets it (what an earlier --env or our
    /// own environment gave), as Docker's daemon reads an entry without `=`.
    #[arg(short = 'e', long = "env", value_name = "K=V|K")]
    env: Vec<String>,
    /// Start from an empty environment (PATH gets a default).
    #[arg(long)]
    clear_env: bool,
    /// Run as UID[:GID] or NAME[:GROUP], resolved in the new root's /etc/passwd and /etc/group;
    /// supplementary groups come from /etc/group.
    #[arg(short = 'u', long, value_name = "UID[:GID]")]
    user: Option<String>,
    /// An extra supplementary group (repeatable).
    #[arg(long, value_name = "GROUP")]
    group_add: Vec<String>,
    /// Pass fds 3..3+N-1 to the command; every other fd above 2 is closed.
    #[arg(long, value_name = "N", default_value_t = 0)]
    preserve_fds: u32,
    /// Before exec, block until one byte can be read from fd N (EOF aborts with 125).
    #[arg(long, value_name = "N")]
    wait_fd: Option<i32>,
}

#[derive(Args)]
struct RunArgs {
    /// New pid namespace (the command, or cbuild-ns with --init, is PID 1).
    #[arg(long)]
    pid: bool,
    /// New mount namespace (implied by --rootfs, --bind, --tmpfs).
    #[arg(long)]
    mount: bool,
    /// New UTS namespace (implied by --hostname, --domainname).
    #[arg(long)]
    uts: bool,
    /// New IPC namespace.
    #[arg(long)]
    ipc: bool,
    /// New network namespace (only `lo`, down).
    #[arg(long)]
    net: bool,
    /// Bring `lo` up in the new network namespace, as Docker's `--network none` and bwrap do.
    #[arg(long)]
    loopback: bool,
    /// New user namespace (implied by the map options).
    #[arg(long)]
    userns: bool,
    /// New cgroup namespace.
    #[arg(long)]
    cgroup: bool,
    /// New time namespace (implied by --time-offset).
    #[arg(long)]
    time: bool,
    /// Every namespace type except user (add --userns or a map option for that).
    #[arg(long)]
    all: bool,
    /// Join an existing namespace: TYPE=PATH, or TYPE=NAME for $CBUILD_STATE/NAME/ns/TYPE (repeatable).
    #[arg(long, value_name = "TYPE=PATH")]
    join: Vec<String>,
    /// Join every namespace of PID that differs from ours.
    #[arg(long, value_name = "PID")]
    join_pid: Option<i32>,
    /// Hostname in the new uts namespace (implies --uts).
    #[arg(long)]
    hostname: Option<String>,
    /// NIS domain name in the new uts namespace (implies --uts).
    #[arg(long)]
    domainname: Option<String>,
    /// Time namespace offsets: SECS, or monotonic=SECS,boottime=SECS.
    #[arg(long, value_name = "SPEC", allow_hyphen_values = true)]
    time_offset: Option<String>,
    /// New root filesystem (pivot_root; the old root is detached).
    #[arg(long, value_name = "DIR")]
    rootfs: Option<PathBuf>,
    /// The root filesystem is the detached mount at fd N (`cbuild-overlay mount --fd N`): attach it on
    /// --rootfs DIR inside the new mount namespace only (nothing appears on the host), then as --rootfs.
    #[arg(long, value_name = "N", requires = "rootfs")]
    rootfs_fd: Option<i32>,
    /// Mount a tmpfs: DST[:OPTIONS] (e.g. /tmp:size=100m). nosuid,nodev,noexec by default, as Docker's;
    /// `suid`, `dev`, `exec` lift them.
    #[arg(long, value_name = "DST[:OPTS]")]
    tmpfs: Vec<String>,
    /// Bind-mount SRC:DST[:OPTIONS] (DST inside the new root), recursively. OPTIONS, as Docker's -v:
    /// comma-separated ro|rw, [r]private (the default) or [r]slave, z|Z (no SELinux relabelling: accepted
    /// without SELinux, refused with it).
    #[arg(long, value_name = "SRC:DST[:OPTS]")]
    bind: Vec<String>,
    /// A mount in Docker's --mount form (cbuild-run --mount): type=bind,source=S,target=T[,readonly][,bind-propagation=P] or
    /// type=tmpfs,target=T[,tmpfs-size=BYTES][,tmpfs-mode=OCTAL].
    #[arg(long = "mount-spec", value_name = "type=...,target=...")]
    docker_mount: Vec<String>,
    /// Make the root filesystem read-only.
    #[arg(long)]
    read_only: bool,
    /// Size of the container's /dev/shm (Docker's --shm-size: bytes, or with b, k, m, g; default 64m).
    #[arg(long, value_name = "SIZE", requires = "rootfs")]
    shm_size: Option<String>,
    /// Do not mask runc's default paths (/proc/kcore, /proc/keys, /sys/firmware, ...) nor make /proc/sys
    /// and friends read-only.
    #[arg(long)]
    no_mask: bool,
    #[command(flatten)]
    process: ProcessArgs,
    /// Drop capabilities: names (NET_RAW or CAP_NET_RAW), ALL, or DOCKER_DEFAULT (comma-separated or repeated).
    #[arg(long, value_name = "CAPS")]
    cap_drop: Vec<String>,
    /// Add capabilities back, same names; `--cap-drop ALL --cap-add DOCKER_DEFAULT` is Docker's default set.
    #[arg(long, value_name = "CAPS")]
    cap_add: Vec<String>,
    /// Set no_new_privs: setuid binaries and file capabilities stop granting privileges.
    #[arg(long)]
    no_new_privs: bool,
    /// Resource limit NAME=SOFT[:HARD] (nofile, nproc, core, ...; `unlimited`) (repeatable).
    #[arg(long, value_name = "NAME=SOFT[:HARD]")]
    rlimit: Vec<String>,
    /// Map root in the new user namespace to the caller (implies --userns).
    #[arg(long)]
    map_root_user: bool,
    /// Map root to the caller and 1..N to the caller's range in /etc/subuid and /etc/subgid (implies --userns).
    #[arg(long)]
    map_auto: bool,
    /// UID map range INSIDE:OUTSIDE[:COUNT] (repeatable; implies --userns; newuidmap is used when needed).
    #[arg(long, value_name = "IN:OUT[:N]")]
    uid_map: Vec<String>,
    /// GID map range INSIDE:OUTSIDE[:COUNT] (repeatable; implies --userns).
    #[arg(long, value_name = "IN:OUT[:N]")]
    gid_map: Vec<String>,
    /// Load a compiled seccomp BPF program (cbuild-seccomp compile) as the last step before exec.
    #[arg(long, value_name = "FILE", conflicts_with = "seccomp_fd")]
    seccomp: Option<PathBuf>,
    /// Read the seccomp BPF program from fd N.
    #[arg(long, value_name = "N")]
    seccomp_fd: Option<i32>,
    /// Seccomp filter flags: tsync, log, spec_allow (comma-separated).
    #[arg(long, value_name = "FLAGS", default_value = "")]
    seccomp_flags: String,
    /// Stay as PID 1: reap zombies, forward signals, exit with the command's status.
    #[arg(long)]
    init: bool,
    /// Bind-mount the new namespaces to files in DIR (or NAME: $CBUILD_STATE/NAME/ns).
    #[arg(long, value_name = "DIR|NAME")]
    persist: Option<String>,
    /// Write one JSON object (pid, namespace inodes) to fd N once the namespaces exist.
    #[arg(long, value_name = "N")]
    info_fd: Option<i32>,
    /// Write JSON lines of phases and the final exit code to fd N.
    #[arg(long, value_name = "N")]
    status_fd: Option<i32>,
    /// More of these arguments, read from fd N to its end and NUL-separated (bwrap's --args): they stand
    /// where --args N is. Read first, before anything is done, so a driver can start the chain before it
    /// has them. N closed before its first byte: exit 125 and no message (the writer gave up, and says why).
    #[arg(long = "args", value_name = "N")]
    args_fd: Option<i32>,
    /// Create the container's first process directly in the cgroup2 directory open at fd N (clone3
    /// CLONE_INTO_CGROUP: no migration afterwards), as `cbuild-cgroup exec NAME --cgroup-fd N` hands it
    /// over. /dev/null at fd N means there is no cgroup2 tree to join (a pure v1 host).
    #[arg(long, value_name = "N")]
    cgroup_fd: Option<i32>,
    /// The command and its arguments.
    #[arg(last = true, required = true, value_name = "CMD")]
    cmd: Vec<OsString>,
}

#[derive(Args)]
struct ExecArgs {
    /// Join the namespaces of this PID.
    #[arg(short, long, value_name = "PID", conflicts_with = "ns_dir")]
    target: Option<i32>,
    /// Join persisted namespace files in DIR (or NAME: $CBUILD_STATE/NAME/ns).
    #[arg(long, value_name = "DIR|NAME")]
    ns_dir: Option<String>,
    /// Only these namespace types (comma-separated: user,mnt,net,...); default: all that differ.
    #[arg(long, value_name = "TYPES")]
    ns: Option<String>,
    /// Keep cbuild-ns's own capabilities (as nsenter does) instead of adopting the target's bounding,
    /// permitted and effective sets and its no_new_privs (as runc exec does).
    #[arg(long)]
    keep_caps: bool,
    /// Set no_new_privs before exec.
    #[arg(long)]
    no_new_privs: bool,
    /// Load a compiled seccomp BPF program last before exec (docker exec applies the container's).
    #[arg(long, value_name = "FILE")]
    seccomp: Option<PathBuf>,
    #[command(flatten)]
    process: ProcessArgs,
    #[arg(last = true, required = true, value_name = "CMD")]
    cmd: Vec<OsString>,
}

fn bad(object: impl std::fmt::Display, reason: impl std::fmt::Display) -> Error {
    Error::new(Step::Args, object, reason)
}

/// $CBUILD_STATE, else /run/cbuild for root, $XDG_RUNTIME_DIR/cbuild otherwise.
fn state_dir() -> PathBuf {
    if let Some(s) = std::env::var_os("CBUILD_STATE") {
        return PathBuf::from(s);
    }
    if nix::unistd::geteuid().is_root() {
        return PathBuf::from("/run/cbuild");
    }
    let rt = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(format!("/run/user/{}", nix::unistd::geteuid())));
    rt.join("cbuild")
}

/// A container NAME (contract) or a path.
fn name_or_path(s: &str, suffix: &str) -> Result<PathBuf, Error> {
    if s.contains('/') {
        return Ok(PathBuf::from(s));
    }
    let ok = !s.is_empty()
        && s.len() <= 64
        && s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    if !ok {
        return Err(bad(s, "not a NAME ([A-Za-z0-9][A-Za-z0-9_.-]{0,63}) nor a path"));
    }
    // Below <state> nothing is trusted (other tools and scripts write there): a symlink planted at
    // <state>/NAME, its ns dir or a namespace file would send a persist's binds, an unpersist's
    // unmounts or a join wherever it points (another container's namespace, the host's).
    let mut p = state_dir().join(s);
    for c in std::iter::once("").chain(suffix.split('/')) {
        if !c.is_empty() {
            p.push(c);
        }
        if std::fs::symlink_metadata(&p).is_ok_and(|m| m.file_type().is_symlink()) {
            return Err(bad(p.display(), "a symbolic link (refused in the state dir)"));
        }
    }
    Ok(p)
}

fn caps_list(v: &[String]) -> Result<Vec<CapName>, Error> {
    v.iter()
        .flat_map(|s| s.split(','))
        .filter(|s| !s.is_empty())
        .map(|s| parse_name(s).map_err(|e| Error::new(Step::Capabilities, s, e)))
        .collect()
}

fn process_spec(p: ProcessArgs, cmd: Vec<OsString>) -> Result<RunSpec, Error> {
    let mut env = vec![];
    for kv in p.env {
        let (k, v) = match kv.split_once('=') {
            Some((k, v)) => (k, Some(v.to_string())),
            None => (kv.as_str(), None),
        };
        if k.is_empty() {
            return Err(bad(&kv, "no variable name before the ="));
        }
        env.push((k.to_string(), v));
    }
    // Refused as Docker refuses it: relative to what (for `exec`, no image WorkingDir is at hand)?
    if let Some(w) = p.workdir.as_ref().filter(|w| !w.is_absolute()) {
        return Err(bad(format!("--workdir {}", w.display()), "not an absolute path"));
    }
    Ok(RunSpec {
        workdir: p.workdir,
        env,
        clear_env: p.clear_env,
        user: p.user,
        group_add: p.group_add,
        preserve_fds: p.preserve_fds,
        wait_fd: p.wait_fd,
        argv: cmd,
        ..RunSpec::default()
    })
}

fn run_spec(a: RunArgs) -> Result<RunSpec, Error> {
    // The top level's were read by expand_args_fd: this one came from an fd itself.
    if let Some(fd) = a.args_fd {
        return Err(bad(format!("--args {fd}"), "not inside what --args gave"));
    }
    let mut s = process_spec(a.process, a.cmd)?;
    let mut want = |on: bool, ty: NsType| {
        if on {
            s.new_ns.insert(ty);
        }
    };
    let implied_mnt = a.rootfs.is_some() || !a.bind.is_empty() || !a.tmpfs.is_empty() || !a.docker_mount.is_empty();
    let implied_user = a.map_root_user || a.map_auto || !a.uid_map.is_empty() || !a.gid_map.is_empty();
    want(a.pid || a.all, NsType::Pid);
    want(a.mount || a.all || implied_mnt, NsType::Mnt);
    // A hostname without a new UTS namespace would rename the host.
    want(a.uts || a.all || a.hostname.is_some() || a.domainname.is_some(), NsType::Uts);
    want(a.ipc || a.all, NsType::Ipc);
    want(a.net || a.all, NsType::Net);
    want(a.userns || implied_user, NsType::User);
    want(a.cgroup || a.all, NsType::Cgroup);
    want(a.time || a.all || a.time_offset.is_some(), NsType::Time);

    for j in &a.join {
        let (ty, path) = j.split_once('=').ok_or_else(|| bad(j, "want TYPE=PATH"))?;
        let t = NsType::parse(ty).ok_or_else(|| bad(ty, "unknown namespace type"))?;
        s.joins.push((t, name_or_path(path, &format!("ns/{}", t.proc_name()))?));
    }
    if let Some(pid) = a.join_pid {
        std::fs::metadata(format!("/proc/{pid}")).map_err(|e| Error::io(Step::Join, format!("pid {pid}"), &e))?;
        for ty in cbuild_ns::namespaces::ALL {
            if !cbuild_ns::namespaces::same_as_self(ty, pid) && !s.new_ns.contains(&ty) {
                s.joins.push((ty, ty.proc_path(pid)));
            }
        }
    }
    s.hostname = a.hostname;
    s.loopback = a.loopback;
    if s.loopback && !s.new_ns.contains(&NsType::Net) {
        return Err(bad("--loopback", "needs a new network namespace (--net)"));
    }
    s.domainname = a.domainname;
    if let Some(t) = &a.time_offset {
        s.time_offsets = spec::parse_time_offsets(t).map_err(|e| bad(t, e))?;
    }
    s.rootfs = a.rootfs;
    s.rootfs_fd = a.rootfs_fd;
    let mut tmpfs = vec![];
    let mut binds = vec![];
    for t in a.tmpfs {
        let (dst, opts) = t.split_once(':').unwrap_or((&t, ""));
        tmpfs.push(TmpfsMount { dst: dst.into(), options: opts.to_string() });
    }
    for b in a.bind {
        let parts: Vec<&str> = b.splitn(3, ':').collect();
        let (src, dst, opts) = match parts.as_slice() {
            [src, dst] => (*src, *dst, None),
            [src, dst, opts] => (*src, *dst, Some(*opts)),
            _ => return Err(Error::new(Step::Bind, &b, "want SRC:DST[:OPTIONS]")),
        };
        let o = match opts {
            None => spec::BindOptions { readonly: false, propagation: Default::default(), relabel: false },
            Some(o) => spec::parse_bind_options(o).map_err(|e| Error::new(Step::Bind, &b, e))?,
        };
        // Docker ignores z and Z where SELinux is off; where it is on they would mean a relabel not done.
        if o.relabel && std::path::Path::new("/sys/fs/selinux/enforce").exists() {
            return Err(Error::new(Step::Bind, &b, "z, Z: SELinux relabelling is not supported"));
        }
        binds.push(BindMount { src: src.into(), dst: dst.into(), readonly: o.readonly, propagation: o.propagation });
    }
    for m in a.docker_mount {
        match spec::parse_docker_mount(&m).map_err(|e| Error::new(Step::Mount, &m, e))? {
            spec::DockerMount::Bind(b) => binds.push(b),
            spec::DockerMount::Tmpfs(t) => tmpfs.push(t),
        }
    }
    for t in tmpfs {
        let dst = t.dst.to_string_lossy();
        if !dst.starts_with('/') {
            return Err(Error::new(Step::Tmpfs, dst, "must be an absolute path"));
        }
        if cbuild_ns::mounts::relative_inside(&t.dst).as_os_str().is_empty() {
            return Err(Error::new(Step::Tmpfs, dst, "cannot be / (use --rootfs for the root filesystem)"));
        }
        s.tmpfs.push(t);
    }
    for b in binds {
        let dst = b.dst.to_string_lossy();
        if !dst.starts_with('/') {
            return Err(Error::new(Step::Bind, dst, "must be an absolute path"));
        }
        // As Docker: a bind over the root would replace the container's root filesystem.
        if cbuild_ns::mounts::relative_inside(&b.dst).as_os_str().is_empty() {
            return Err(Error::new(Step::Bind, dst, "cannot be / (use --rootfs for the root filesystem)"));
        }
        s.binds.push(b);
    }
    s.read_only = a.read_only;
    if s.read_only && s.rootfs.is_none() {
        // Without a new root there is no root of the container's own to make read-only.
        return Err(bad("--read-only", "needs --rootfs"));
    }
    if let Some(v) = &a.shm_size {
        s.shm_size_kib = Some(spec::parse_shm_size(v).map_err(|e| Error::new(Step::Args, "--shm-size", e))?);
    }
    s.no_mask = a.no_mask;
    s.cap_drop = caps_list(&a.cap_drop)?;
    s.cap_add = caps_list(&a.cap_add)?;
    s.no_new_privs = a.no_new_privs;
    for r in &a.rlimit {
        s.rlimits.push(spec::parse_rlimit(r).map_err(|e| Error::new(Step::Rlimit, r, e))?);
    }
    let uid = nix::unistd::geteuid().as_raw();
    let gid = nix::unistd::getegid().as_raw();
    let parse_maps = |v: &[String], what: &str| -> Result<Vec<Range>, Error> {
        v.iter().map(|m| idmap::parse_range(m).map_err(|e| Error::new(Step::Args, format!("{what} {m}"), e))).collect()
    };
    s.uid_map = parse_maps(&a.uid_map, "--uid-map")?;
    s.gid_map = parse_maps(&a.gid_map, "--gid-map")?;
    if a.map_root_user {
        s.uid_map = vec![Range { inside: 0, outside: uid, count: 1 }];
        s.gid_map = vec![Range { inside: 0, outside: gid, count: 1 }];
    }
    if a.map_auto {
        let name = std::env::var("USER").unwrap_or_else(|_| uid.to_string());
        s.uid_map = idmap::auto_map(uid, &name, "/etc/subuid")?;
        s.gid_map = idmap::auto_map(gid, &name, "/etc/subgid")?;
    }
    if s.userns() && s.uid_map.is_empty() && !a.userns {
        return Err(bad("--userns", "no uid map"));
    }
    // A user namespace with users but no groups mapped: every file would show the overflow group and
    // the first mount (/dev) fail after the namespaces exist; runc refuses it too.
    if !s.uid_map.is_empty() && s.gid_map.is_empty() {
        return Err(bad("--uid-map", "needs a --gid-map too"));
    }
    if !s.gid_map.is_empty() && s.uid_map.is_empty() {
        return Err(bad("--gid-map", "needs a --uid-map too"));
    }
    s.seccomp = match (a.seccomp, a.seccomp_fd) {
        (Some(p), _) => Some(SeccompSource::File(p)),
        (None, Some(fd)) => Some(SeccompSource::Fd(fd)),
        _ => None,
    };
    s.seccomp_flags = cbuild_ns::seccomp::parse_flags(&a.seccomp_flags)
        .map_err(|e| Error::new(Step::Seccomp, &a.seccomp_flags, e))?;
    s.init = a.init;
    if s.init && !s.new_ns.contains(&NsType::Pid) {
        return Err(bad("--init", "needs a new pid namespace (--pid)"));
    }
    if a.persist.as_deref() == Some("net") {
        // <state>/net is cbuild-net's own directory (bridges, leases, its nft lock), where `ns` may be a
        // bridge: the contract makes `net` no NAME, as cbuild-net netns add refuses it.
        return Err(bad("--persist net", "reserved: <state>/net holds cbuild-net's own files"));
    }
    s.persist = a.persist.as_deref().map(|p| name_or_path(p, "ns")).transpose()?;
    s.info_fd = a.info_fd;
    s.status_fd = a.status_fd;
    s.cgroup_fd = a.cgroup_fd;
    Ok(s)
}

/// `run --args N`: the words read from fd N (protocol::read_args) spliced in where it stands, among run's
/// own options only (after `--` every word is the command's). Not inside what N gave: clap sees that one
/// and run_spec refuses it. `None`: N ended empty.
fn expand_args_fd(mut argv: Vec<OsString>) -> Result<Option<Vec<OsString>>, Error> {
    // The verb is the first word that is not an option (`cbuild-ns -v run ...`).
    match argv.iter().skip(1).position(|a| !a.as_encoded_bytes().starts_with(b"-")) {
        Some(v) if argv[v + 1] == "run" => {}
        _ => return Ok(Some(argv)),
    }
    let mut i = 1;
    while i < argv.len() && argv[i] != "--" {
        let w = argv[i].to_string_lossy();
        let (fd, took) = match w.strip_prefix("--args") {
            Some("") => (argv.get(i + 1).map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(), 2),
            Some(v) if v.starts_with('=') => (v[1..].to_string(), 1),
            _ => {
                i += 1;
                continue;
            }
        };
        let fd: i32 = fd.parse().map_err(|_| bad("--args", "wants a file descriptor number"))?;
        let words = match protocol::read_args(fd)? {
            protocol::Args::Words(w) => w,
            protocol::Args::Empty => return Ok(None),
        };
        let n = words.len();
        argv.splice(i..(i + took).min(argv.len()), words);
        i += n;
    }
    Ok(Some(argv))
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
    // A closed 0, 1 or 2 (`cbuild-ns ... 2>&-`) would be the number of the first file we open, and an
    // error message would then be written into it (or the command would get it as its stdio).
    for fd in 0..3 {
        // SAFETY: fcntl and open on plain integers; an fd opened here is the process's for good.
        unsafe {
            if libc::fcntl(fd, libc::F_GETFD) < 0 && libc::open(c"/dev/null".as_ptr(), libc::O_RDWR) < 0 {
                return EXIT_TOOL;
            }
        }
    }
    // SAFETY: argc and argv are what the C runtime handed `main`.
    let args = unsafe { args_from(argc, argv) };
    cli_main(args)
}

/// Every path ends in `std::process::exit`, which flushes stdout.
fn cli_main(args: Vec<OsString>) -> ! {
    #[cfg(target_env = "musl")]
    cbuild_ns::signals::abort_self_on_panic();
    let argv = match expand_args_fd(args) {
        Ok(Some(a)) => a,
        // The writer gave up before its first byte, and reports why itself: one error line, not two.
        Ok(None) => std::process::exit(EXIT_TOOL),
        Err(e) => std::process::exit(fail(e)),
    };
    let cli = match Cli::try_parse_from(argv) {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind;
            let code = match e.kind() {
                ErrorKind::DisplayHelp
                | ErrorKind::DisplayVersion
                | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => 0,
                _ => EXIT_TOOL,
            };
            if code == 0 {
                let _ = e.print();
            } else {
                // One line, in the contract's shape; clap's usage follows for the reader.
                let first = e.to_string();
                // clap's first paragraph, on one line: a list it ends with a colon ("not provided:") is in it.
                let msg = first.split("\n\n").next().unwrap_or("").split_whitespace().collect::<Vec<_>>().join(" ");
                let msg = msg.trim_start_matches("error: ");
                eprintln!("cbuild-ns: args: command line: {msg}");
            }
            std::process::exit(code);
        }
    };
    cbuild_ns::log::set_verbose(cli.verbose);
    let code = match cli.cmd {
        Cmd::Run(a) => match run_spec(*a) {
            Ok(spec) => run::run(spec),
            Err(e) => fail(e),
        },
        Cmd::Exec(a) => {
            let types = match a.ns.as_deref().map(|t| {
                t.split(',').map(|x| NsType::parse(x).ok_or_else(|| bad(x, "unknown namespace type"))).collect()
            }) {
                Some(Ok(v)) => v,
                Some(Err(e)) => std::process::exit(fail(e)),
                None => vec![],
            };
            let ns_dir = match a.ns_dir.as_deref().map(|d| name_or_path(d, "ns")).transpose() {
                Ok(d) => d,
                Err(e) => std::process::exit(fail(e)),
            };
            match process_spec(a.process, a.cmd).map(|mut p| {
                p.no_new_privs = a.no_new_privs;
                p.seccomp = a.seccomp.map(SeccompSource::File);
                p
            }) {
                Ok(proc) => {
                    nsenter::exec(nsenter::ExecSpec { target: a.target, ns_dir, types, keep_caps: a.keep_caps, proc })
                }
                Err(e) => fail(e),
            }
        }
        Cmd::Inspect { pid, json } => match inspect::parse_pid(&pid).and_then(inspect::inspect) {
            Ok(v) => {
                if json {
                    println!("{v}");
                } else {
                    print!("{}", inspect::render(&v));
                }
                0
            }
            Err(e) => fail(e),
        },
        Cmd::Unpersist { dir } => {
            match name_or_path(&dir, "ns").and_then(|d| persist::remove(&d, !dir.contains('/'))) {
                Ok(_) => 0,
                Err(e) => fail(e),
            }
        }
    };
    std::process::exit(code);
}

fn fail(e: Error) -> i32 {
    report(&e);
    e.code
}
