//! `cbuild-ns run`: the one set-up path, top to bottom.
//!
//! Parent (stays outside, supervises)          Child (clone()d into the new namespaces)
//!  validate everything, open join fds
//!  join user/pid namespaces (affect us/children)
//!  clone(new namespace flags) ───────────────▶  wait for 'M' if a user namespace needs maps
//!   (clone3 into --cgroup-fd's group)
//!  write uid/gid maps, send 'M'                become root in the user ns, join the other namespaces,
//!                                              [--cgroup-fd: new cgroup namespace rooted at the group]
//!                                              new time namespace + offsets, send 'R'
//!  persist namespaces, write --info-fd         wait for 'G'
//!  send 'G' ─────────────────────────────────▶ mounts, pivot_root, hostname
//!                                              [--init: fork; PID 1 supervises, the child goes on]
//!                                              user, rlimits, env, workdir, --wait-fd, capabilities,
//!                                              no_new_privs, fds, seccomp, execve
//!  ctrl pipe reaches EOF at execve (CLOEXEC); a failure arrives on it as one JSON line instead
//!  forward signals, wait, exit with the command's status
//!
//! Everything the child could fail at is reported back to the parent, which prints the one error line and
//! undoes what it made (persisted namespace files). Namespaces and mounts die with the child by themselves.

use crate::capabilities;
use crate::error::{Context, Error, Result, Step, EXIT_TOOL};
use crate::idmap;
use crate::namespaces::{self, NsFd, NsType};
use crate::persist::{self, Persisted};
use crate::process;
use crate::protocol::{self, Status};
use crate::rootfs;
use crate::seccomp;
use crate::signals;
use crate::spec::RunSpec;
use nix::sys::signal::{SigSet, SigmaskHow};
use nix::sys::wait::waitpid;
use nix::unistd::{read, write, Pid};
use serde_json::json;
use std::io::{BufRead, BufReader};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

/// Everything checked and opened before anything is created.
struct Prepared {
    joins_parent: Vec<NsFd>,
    joins_child: Vec<NsFd>,
    seccomp: Option<seccomp::Program>,
    caps: caps::CapsHashSet,
    /// `--cgroup-fd`: the cgroup2 directory the child starts in (None: no cgroup2 tree to join).
    cgroup_fd: Option<std::os::fd::RawFd>,
    /// clone3 could not place the child: the parent moves it into `cgroup_fd` and then sends 'C', which
    /// the child waits for before it unshares the cgroup namespace.
    cgroup_join_by_parent: bool,
    /// Where the child will sit in each cgroup hierarchy, for its /sys/fs/cgroup (read here: inside its
    /// cgroup namespace every path reads `/`).
    cgroups: crate::cgroupfs::Placement,
    /// `--init`: where PID 1 leaves the signal that killed the command.
    init_note: Option<crate::init::SignalNote>,
}

/// The fds handed over by flags, each with its flag.
fn own_fds(spec: &RunSpec) -> [(Option<std::os::fd::RawFd>, &'static str); 6] {
    let seccomp_fd = match spec.seccomp {
        Some(crate::spec::SeccompSource::Fd(n)) => Some(n),
        _ => None,
    };
    [
        (spec.info_fd, "--info-fd"),
        (spec.wait_fd, "--wait-fd"),
        (spec.status_fd, "--status-fd"),
        (seccomp_fd, "--seccomp-fd"),
        (spec.cgroup_fd, "--cgroup-fd"),
        (spec.rootfs_fd, "--rootfs-fd"),
    ]
}

fn prepare(spec: &RunSpec) -> Result<Prepared> {
    // The handed-over fds first: anything this process opens before could land on their numbers.
    protocol::check_preserved(spec.preserve_fds, &own_fds(spec))?;
    let cgroup_fd = match spec.cgroup_fd {
        Some(fd) => crate::cgroupfd::check(fd, spec.preserve_fds)?,
        None => None,
    };
    if let Some(fd) = spec.rootfs_fd {
        rootfs::check_detached(fd, spec.preserve_fds)?;
    }
    if spec.argv.is_empty() {
        return Err(Error::new(Step::Args, "command", "missing (give it after --)"));
    }
    if let Some(r) = &spec.rootfs {
        let md = std::fs::metadata(r).ctx(Step::Rootfs, r.display())?;
        if !md.is_dir() {
            return Err(Error::new(Step::Rootfs, r.display(), "not a directory"));
        }
    }
    for fd in [spec.info_fd, spec.wait_fd, spec.status_fd].into_iter().flatten() {
        protocol::check_fd(fd, Step::Fds)?;
    }
    for b in &spec.binds {
        std::fs::metadata(&b.src).ctx(Step::Bind, b.src.display())?;
    }
    for t in &spec.tmpfs {
        crate::mounts::parse_options(&t.options).map_err(|e| Error::new(Step::Tmpfs, t.dst.display(), e))?;
    }
    idmap::check(&spec.uid_map, "uid map")?;
    idmap::check(&spec.gid_map, "gid map")?;
    if !spec.uid_map.is_empty() && !spec.userns() {
        return Err(Error::new(Step::Args, "--uid-map", "needs a new user namespace (--userns)"));
    }
    let caps = capabilities::resolve(&spec.cap_drop, &spec.cap_add, spec.userns())?;
    let mut joins_parent = vec![];
    let mut joins_child = vec![];
    for (ty, path) in &spec.joins {
        if spec.new_ns.contains(ty) {
            return Err(Error::new(
                Step::Join,
                path.display(),
                format!("both a new and a joined {} namespace", ty.proc_name()),
            ));
        }
        let fd = namespaces::open(*ty, path)?;
        // Joining pid only affects children, so it must precede clone; joining user first decides what
        // the other namespaces may be used for.
        if matches!(ty, NsType::Pid | NsType::User) {
            joins_parent.push(fd);
        } else {
            joins_child.push(fd);
        }
    }
    joins_child.sort_by_key(|j| j.ty);
    let seccomp = spec.seccomp.as_ref().map(|s| seccomp::read(s, spec.seccomp_flags)).transpose()?;
    let cgroups = if spec.new_ns.contains(&NsType::Cgroup) && spec.rootfs.is_some() {
        crate::cgroupfs::Placement::read(cgroup_fd)
    } else {
        crate::cgroupfs::Placement::default()
    };
    let init_note = spec.init.then(crate::init::SignalNote::new).transpose()?;
    Ok(Prepared {
        joins_parent,
        joins_child,
        seccomp,
        caps,
        cgroup_fd,
        cgroup_join_by_parent: false,
        cgroups,
        init_note,
    })
}

fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).ctx(Step::Sync, "pipe")
}

fn send(fd: &OwnedFd, b: u8) -> Result<()> {
    write(fd, &[b]).ctx(Step::Sync, "pipe").map(|_| ())
}

fn recv(fd: &OwnedFd) -> Option<u8> {
    let mut b = [0u8; 1];
    loop {
        match read(fd, &mut b) {
            Ok(1) => return Some(b[0]),
            Err(nix::errno::Errno::EINTR) => continue,
            _ => return None,
        }
    }
}

/// Run the spec; returns the exit code for the caller to exit with.
pub fn run(spec: RunSpec) -> i32 {
    // Before the status fd (or any other) is taken over.
    if let Err(e) = protocol::check_distinct(&own_fds(&spec)) {
        crate::report(&e);
        return e.code;
    }
    let mut status = Status::new(spec.status_fd);
    match run_inner(&spec, &mut status) {
        Ok(code) => code,
        Err(e) => {
            // A failure before the clone comes here with SIGPIPE at its default still (see run_inner).
            signals::ignore_sigpipe();
            status.send(json!({"phase": "failed", "step": e.step, "error": e.to_string(), "exit_code": e.code}));
            crate::report(&e);
            e.code
        }
    }
}

fn run_inner(spec: &RunSpec, status: &mut Status) -> Result<i32> {
    let mut prep = prepare(spec)?;
    for j in &prep.joins_parent {
        j.join()?;
    }

    let (ctrl_r, ctrl_w) = pipe()?; // child → parent: 'R', a JSON error line, EOF at exec
    let (go_r, go_w) = pipe()?; // parent → child: 'M' maps written, 'G' go on

    // Before the clone: --init's command takes the terminal before we hear of its exec.
    let terminal = spec.init.then(terminal_foreground_is_ours).flatten();
    // Block the signals we supervise before the child exists, so none is lost between clone and wait.
    let supervised = signals::supervised();
    let mut old_mask = SigSet::empty();
    nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&supervised), Some(&mut old_mask))
        .ctx(Step::Clone, "sigmask")?;

    let mut flags: libc::c_ulong = 0;
    for ty in &spec.new_ns {
        // time: unshared by the child (its offsets must be written first); cgroup with --cgroup-fd:
        // unshared by the child once it is in the group, so the group is the namespace's root.
        if *ty != NsType::Time && !(*ty == NsType::Cgroup && prep.cgroup_fd.is_some()) {
            flags |= ty.flag().bits() as libc::c_ulong;
        }
    }
    crate::log::step(Step::Clone, ns_list(spec));
    // clone() without a new stack behaves as fork() with namespace flags; we are single-threaded here.
    let clone = || unsafe { libc::syscall(libc::SYS_clone, flags | libc::SIGCHLD as libc::c_ulong, 0, 0, 0, 0) };
    let pid = match prep.cgroup_fd {
        Some(fd) => match crate::cgroupfd::clone_into(flags as u64, fd) {
            Ok(pid) => pid as libc::c_long,
            // No clone3 (before 5.3, or a seccomp filter answering ENOSYS as Docker's does), or a clone3
            // without the `cgroup` field (5.3-5.6: E2BIG for the longer struct, EINVAL for the flag):
            // plain clone, and we move the child into the group before it goes on.
            Err(e @ (nix::errno::Errno::ENOSYS | nix::errno::Errno::E2BIG | nix::errno::Errno::EINVAL)) => {
                crate::log::step(Step::CgroupFd, format!("clone3: {e}, the child is moved into the group"));
                prep.cgroup_join_by_parent = true;
                clone()
            }
            Err(e) => {
                let _ = nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&old_mask), None);
                return Err(Error::sys(Step::CgroupFd, format!("clone3 into fd {fd}"), e));
            }
        },
        None => clone(),
    };
    if pid < 0 {
        let e = nix::errno::Errno::last();
        let _ = nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&old_mask), None);
        return Err(Error::sys(Step::Clone, ns_list(spec), e).hint(match e {
            nix::errno::Errno::EPERM => "creating these namespaces needs root, or a user namespace (--userns)",
            nix::errno::Errno::ENOSPC => "a namespace limit in /proc/sys/user/max_*_namespaces was reached",
            _ => "",
        }));
    }
    if pid == 0 {
        drop(ctrl_r);
        drop(go_w);
        // The info and status fds are the parent's to write and close: a copy held here would keep the
        // reader from ever seeing EOF.
        for fd in [spec.info_fd, spec.status_fd].into_iter().flatten() {
            if Some(fd) != spec.wait_fd {
                let _ = nix::unistd::close(fd);
            }
        }
        let _ = nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&old_mask), None);
        child(spec, prep, &ctrl_w, &go_r);
    }
    // The supervisor writes to pipes whose reader may be gone (--info-fd, --status-fd, the child's go
    // pipe): an EPIPE it answers, not SIGPIPE's death with no error line and persisted binds left
    // mounted. After the clone, so the child keeps the caller's disposition.
    signals::ignore_sigpipe();
    let child_pid = Pid::from_raw(pid as i32);
    drop(ctrl_w);
    drop(go_r);
    // The child has its own copy to attach; ours would keep the root filesystem alive after the
    // container's mount namespace is gone.
    if let Some(fd) = spec.rootfs_fd {
        let _ = nix::unistd::close(fd);
    }

    let mut persisted = Persisted::default();
    let join_by_parent = prep.cgroup_fd.filter(|_| prep.cgroup_join_by_parent);
    let result = parent_setup(spec, child_pid, join_by_parent, &ctrl_r, &go_w, status, &mut persisted);
    drop(go_w);
    // Read the child's verdict: 'E' (about to exec) then EOF means execve succeeded; a JSON line is a
    // failure; EOF without 'E' means the child died during set-up (e.g. killed while waiting on --wait-fd).
    let failure = result.err().or_else(|| match recv(&ctrl_r) {
        Some(b'E') => match recv(&ctrl_r) {
            Some(b'F') => Some(read_failure(&ctrl_r)),
            _ => None,
        },
        Some(b'F') => Some(read_failure(&ctrl_r)),
        _ => Some(Error::new(Step::Exec, pid, "the child died during set-up, before exec")),
    });
    if let Some(e) = failure {
        let _ = nix::sys::signal::kill(child_pid, nix::sys::signal::Signal::SIGKILL);
        let _ = waitpid(child_pid, None);
        persisted.undo();
        if let Some(tty) = &terminal {
            take_terminal_back(tty);
        }
        return Err(e);
    }
    status.send(json!({"phase": "exec", "pid": pid}));

    let (code, mut signal) = signals::supervise(child_pid, &supervised).ctx(Step::Wait, pid)?;
    if let Some(tty) = &terminal {
        take_terminal_back(tty);
    }
    // With --init, our child is PID 1, which exits 128+N for the command's signal N and notes N.
    if let (None, Some(note)) = (signal, &prep.init_note) {
        signal = note.signal().filter(|s| code == 128 + s);
    }
    let mut rec = json!({"phase": "exited", "exit_code": code});
    if let Some(s) = signal {
        rec["signal"] = json!(s);
    }
    status.send(rec);
    Ok(code)
}

fn ns_list(spec: &RunSpec) -> String {
    let v: Vec<&str> = spec.new_ns.iter().map(|t| t.proc_name()).collect();
    if v.is_empty() {
        "no new namespaces".into()
    } else {
        v.join(",")
    }
}

fn parent_setup(
    spec: &RunSpec,
    child: Pid,
    cgroup_join: Option<std::os::fd::RawFd>,
    ctrl_r: &OwnedFd,
    go_w: &OwnedFd,
    status: &mut Status,
    persisted: &mut Persisted,
) -> Result<()> {
    let pid = child.as_raw();
    if spec.userns() {
        idmap::write_maps(pid, &spec.uid_map, &spec.gid_map)?;
        send(go_w, b'M')?;
    }
    if let Some(fd) = cgroup_join {
        // We write, not the child: inside a user namespace it may be an unprivileged host uid.
        crate::cgroupfd::join(fd, pid)?;
        send(go_w, b'C')?;
    }
    match recv(ctrl_r) {
        Some(b'R') => {}
        // The child failed before its namespaces were ready; its error line follows.
        Some(b'F') => return Err(read_failure(ctrl_r)),
        _ => return Err(Error::new(Step::Clone, pid, "child exited during set-up")),
    }
    status.send(json!({"phase": "namespaces", "pid": pid}));
    if let Some(dir) = &spec.persist {
        let types: Vec<NsType> = spec.new_ns.iter().copied().collect();
        *persisted = persist::persist(dir, pid, &types)?;
    }
    if let Some(fd) = spec.info_fd {
        let mut ns = serde_json::Map::new();
        for ty in namespaces::ALL {
            if let Ok(ino) = namespaces::inode(&namespaces::setup_path(ty, pid)) {
                ns.insert(ty.proc_name().into(), json!(ino));
            }
        }
        let info = json!({"pid": pid, "ns": ns, "persist": spec.persist});
        protocol::write_info(fd, &info)?;
    }
    send(go_w, b'G')
}

/// The JSON line that follows an 'F' tag on the ctrl pipe.
fn read_failure(ctrl_r: &OwnedFd) -> Error {
    let mut line = String::new();
    if let Ok(f) = ctrl_r.try_clone() {
        let _ = BufReader::new(std::fs::File::from(f)).read_line(&mut line);
    }
    serde_json::from_str(line.trim()).unwrap_or_else(|_| Error::new(Step::Sync, "child", "lost its failure report"))
}

/// The child never returns: it execs the command or reports its failure and exits with the error's code.
fn child(spec: &RunSpec, prep: Prepared, ctrl_w: &OwnedFd, go_r: &OwnedFd) -> ! {
    let e = match child_setup(spec, prep, ctrl_w, go_r) {
        Ok(never) => match never {},
        Err(e) => e,
    };
    let line = format!("F{}\n", serde_json::to_string(&e).unwrap_or_default());
    let _ = write(ctrl_w, line.as_bytes());
    unsafe { libc::_exit(e.code) }
}

fn child_setup(spec: &RunSpec, prep: Prepared, ctrl_w: &OwnedFd, go_r: &OwnedFd) -> Result<std::convert::Infallible> {
    // Die with the supervising parent: a child left running without it would hold its namespaces forever.
    let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL);
    // In a pid namespace the parent joined, this process is visible to the container's processes from the
    // clone on, with the host's root and fds; as a user namespace's root mapped to its caller, nothing
    // else makes it non-dumpable, and a container root could open /proc/PID/root (the host's /) before
    // the 'G' below. So at once, unless the parent still needs /proc/PID: for ID maps (a new user
    // namespace) or to persist namespaces (both need it dumpable when the parent is not real root).
    if prep.joins_parent.iter().any(|j| j.ty == NsType::Pid) && !spec.userns() && spec.persist.is_none() {
        nix::sys::prctl::set_dumpable(false).ctx(Step::Sync, "prctl(PR_SET_DUMPABLE)")?;
    }
    if spec.userns() && recv(go_r) != Some(b'M') {
        return Err(Error::new(Step::Sync, "parent", "gone before the ID maps were written"));
    }
    // In a user namespace, new or joined (`--join user=`, `--join-pid`: by the parent, before the clone),
    // become its root (if mapped) so the set-up below has its capabilities; a joined one's mounts are then
    // made as a new one's (devices bound, not made; a bound /proc where a fresh one is refused).
    let in_userns = spec.userns() || prep.joins_parent.iter().any(|j| j.ty == NsType::User);
    if in_userns {
        let _ = nix::unistd::setresgid(0.into(), 0.into(), 0.into());
        let _ = nix::unistd::setresuid(0.into(), 0.into(), 0.into());
    }
    for j in &prep.joins_child {
        j.join()?;
    }
    if prep.cgroup_fd.is_some() {
        if prep.cgroup_join_by_parent && recv(go_r) != Some(b'C') {
            return Err(Error::new(Step::Sync, "parent", "gone before moving us into the cgroup"));
        }
        if spec.new_ns.contains(&NsType::Cgroup) {
            crate::log::step(Step::Unshare, "cgroup");
            nix::sched::unshare(NsType::Cgroup.flag()).ctx(Step::Unshare, "cgroup")?;
        }
    }
    if spec.new_ns.contains(&NsType::Time) {
        // The offsets can only be set before any process is inside: unshare (which only prepares the
        // namespace for children), write them, then enter it ourselves with setns. Kernels since 5.x also
        // enter it at execve, but older ones (Debian 12's 6.1) only at fork.
        crate::log::step(Step::Unshare, "time");
        nix::sched::unshare(NsType::Time.flag()).ctx(Step::Unshare, "time")?;
        let mut text = String::new();
        for (clock, secs) in &spec.time_offsets {
            text.push_str(&format!("{clock} {secs} 0\n"));
        }
        if !text.is_empty() {
            crate::log::step(Step::TimeOffsets, text.trim().replace('\n', ", "));
            std::fs::write("/proc/self/timens_offsets", text).ctx(Step::TimeOffsets, "/proc/self/timens_offsets")?;
        }
        let path = std::path::Path::new("/proc/self/ns/time_for_children");
        namespaces::open(NsType::Time, path)?.join()?;
    }
    send(ctrl_w, b'R')?;
    if recv(go_r) != Some(b'G') {
        return Err(Error::new(Step::Sync, "parent", "gone before go"));
    }
    // From here on this process may be visible inside the container (--init's PID 1; in a joined pid
    // namespace it was from the clone, see child_setup) while it still holds host fds and runs the host
    // binary: non-dumpable makes /proc/PID/fd and /proc/PID/exe unreachable for container processes
    // (CVE-2019-5736). execve resets it for the command.
    // Not earlier: the parent needs /proc/PID for the ID maps and the persisted namespaces.
    nix::sys::prctl::set_dumpable(false).ctx(Step::Sync, "prctl(PR_SET_DUMPABLE)")?;

    if spec.loopback {
        crate::netdev::loopback_up()?;
    }
    if let Some(h) = &spec.hostname {
        crate::log::step(Step::Hostname, h);
        nix::unistd::sethostname(h).ctx(Step::Hostname, h)?;
    }
    if let Some(d) = &spec.domainname {
        crate::log::step(Step::Domainname, d);
        if unsafe { libc::setdomainname(d.as_ptr().cast(), d.len()) } != 0 {
            return Err(Error::sys(Step::Domainname, d, nix::errno::Errno::last()));
        }
    }
    if spec.needs_mount_setup() {
        rootfs::setup(spec, in_userns, &prep.cgroups)?;
    }

    if spec.init {
        become_init_or_child(spec, &prep.caps, prep.init_note.as_ref())?;
    }

    let id = process::resolve_identity(spec.user.as_deref(), &spec.group_add)?;
    process::set_rlimits(&spec.rlimits)?;
    let env = process::environment(spec, id.home.as_deref());
    process::chdir(spec.workdir.as_deref())?;
    let cmd = process::find_command(&spec.argv[0], &env)?;

    if let Some(fd) = spec.wait_fd {
        protocol::wait_go(fd)?;
    }

    // Capabilities: shrink the bounding set while still privileged, switch user keeping permitted, then
    // set the final sets. Seccomp comes after, unless it needs CAP_SYS_ADMIN we are about to lose.
    let seccomp_early =
        prep.seccomp.is_some() && !spec.no_new_privs && !prep.caps.contains(&caps::Capability::CAP_SYS_ADMIN);
    crate::log::step(Step::Capabilities, format!("{} kept", prep.caps.len()));
    capabilities::limit_bounding(&prep.caps)?;
    if seccomp_early {
        prep.seccomp.as_ref().unwrap().install()?;
    }
    if spec.user.is_some() || !spec.group_add.is_empty() {
        let setgroups_denied =
            std::fs::read_to_string("/proc/self/setgroups").map(|s| s.trim() == "deny").unwrap_or(false);
        process::switch_user(&id, setgroups_denied)?;
        // Changing the uid clears the parent-death signal; the command must still die with its supervisor.
        let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL);
    } else {
        process::reset_groups(&id)?;
    }
    capabilities::apply(&prep.caps)?;
    if spec.no_new_privs {
        crate::log::step(Step::NoNewPrivs, "on");
        nix::sys::prctl::set_no_new_privs().ctx(Step::NoNewPrivs, "prctl")?;
    }
    process::close_fds_on_exec(spec.preserve_fds, ctrl_w.as_raw_fd())?;
    // Tell the parent we reached exec: EOF without this means we died during set-up.
    send(ctrl_w, b'E')?;
    if let (Some(p), false) = (&prep.seccomp, seccomp_early) {
        p.install()?;
    }
    crate::log::step(Step::Exec, cmd.display());
    Err(process::exec(&cmd, &spec.argv, &env))
}

/// Fork: the parent becomes the namespace's PID 1 supervisor and never returns; the child goes on to exec
/// the command in its own process group (so PID 1 can signal all of it).
fn become_init_or_child(
    spec: &RunSpec,
    caps: &caps::CapsHashSet,
    note: Option<&crate::init::SignalNote>,
) -> Result<()> {
    signals::install_noop_handlers();
    let supervised = signals::supervised();
    nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&supervised), None).ctx(Step::Fork, "sigmask")?;
    match unsafe { nix::unistd::fork() }.ctx(Step::Fork, "init")? {
        nix::unistd::ForkResult::Child => {
            let _ = nix::unistd::setpgid(Pid::from_raw(0), Pid::from_raw(0));
            give_terminal();
            // Restore default dispositions and an empty mask for the command.
            for sig in signals::FORWARDED.iter().chain([nix::sys::signal::Signal::SIGCHLD].iter()) {
                let _ = unsafe { nix::sys::signal::signal(*sig, nix::sys::signal::SigHandler::SigDfl) };
            }
            nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)
                .ctx(Step::Fork, "sigmask")?;
            Ok(())
        }
        nix::unistd::ForkResult::Parent { child } => {
            // PID 1 lives as long as the container and is visible in it: it keeps no host fd (its copy of
            // the ctrl pipe must go anyway, or the outside parent would never see EOF at exec), and no more
            // privilege than the command gets, so `exec --target` on it hands out nothing extra.
            unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) };
            let _ = capabilities::limit_bounding(caps).and_then(|_| capabilities::apply(caps));
            if spec.no_new_privs {
                let _ = nix::sys::prctl::set_no_new_privs();
            }
            let code = crate::init::supervise(child, note);
            unsafe { libc::_exit(code) }
        }
    }
}

/// With a terminal on stdin, make the command's process group the foreground one so ^C and job control
/// reach it.
fn give_terminal() {
    let stdin = std::io::stdin();
    if nix::unistd::isatty(stdin.as_fd()).unwrap_or(false) {
        unsafe { libc::signal(libc::SIGTTOU, libc::SIG_IGN) };
        let _ = nix::unistd::tcsetpgrp(stdin.as_fd(), nix::unistd::getpid());
        unsafe { libc::signal(libc::SIGTTOU, libc::SIG_DFL) };
    }
}

/// --init gives the terminal to the command's process group (`give_terminal`); when the container ends,
/// the terminal's foreground group is that group, now empty. Ours takes it back if it had it: a script
/// reading the terminal next would otherwise be stopped (SIGTTIN) as a background job, and an
/// interactive shell only hides this by taking the terminal itself. (bwrap and runc never move it.)
/// Here: stdin's terminal, if our process group is in its foreground now.
fn terminal_foreground_is_ours() -> Option<std::io::Stdin> {
    let stdin = std::io::stdin();
    let fg = nix::unistd::tcgetpgrp(stdin.as_fd()).ok()?;
    (fg == nix::unistd::getpgrp()).then_some(stdin)
}

fn take_terminal_back(tty: &std::io::Stdin) {
    // From the background, tcsetpgrp raises SIGTTOU unless it is ignored.
    unsafe { libc::signal(libc::SIGTTOU, libc::SIG_IGN) };
    let _ = nix::unistd::tcsetpgrp(tty.as_fd(), nix::unistd::getpgrp());
    unsafe { libc::signal(libc::SIGTTOU, libc::SIG_DFL) };
}

/// Exit code when the tool fails before there is a command.
pub const TOOL_FAILURE: i32 = EXIT_TOOL;
