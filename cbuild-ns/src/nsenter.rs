//! `cbuild-ns exec`: run a command inside an existing container's namespaces (nsenter).
//!
//! Two container-escape classes are closed here. CVE-2019-5736: while we are inside the container's pid
//! namespace, a container process could open /proc/OURPID/exe and later overwrite the host binary; we make
//! ourselves non-dumpable before joining, so the kernel refuses that (ptrace access mode check), and only
//! the forked child (which execs at once) ever becomes visible in the container. CVE-2024-21626: host fds
//! (including a host cwd) must not survive into the container; every fd above 2 except `--preserve-fds`
//! is closed on exec, and the cwd is set inside the container after joining its mount namespace.

use crate::capabilities;
use crate::error::{Context, Error, Result, Step};
use crate::namespaces::{self, NsFd, NsType};
use crate::process;
use crate::protocol;
use crate::signals;
use crate::spec::RunSpec;
use nix::sys::signal::{SigSet, SigmaskHow};
use nix::sys::wait::waitpid;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;

/// The privileges of the target process, adopted by the command (as `runc exec` gives it the
/// container's): joining namespaces alone would hand a host root's full capabilities to a process inside.
struct Privileges {
    caps: caps::CapsHashSet,
    bounding: caps::CapsHashSet,
    no_new_privs: bool,
}

fn target_privileges(pid: i32) -> Result<Privileges> {
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).ctx(Step::Capabilities, format!("pid {pid}"))?;
    let field = |k: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(k).and_then(|r| r.strip_prefix(':')))
            .map(str::trim)
            .unwrap_or("")
            .to_string()
    };
    let mask = |k: &str| u64::from_str_radix(&field(k), 16).unwrap_or(0);
    Ok(Privileges {
        caps: capabilities::from_mask(mask("CapPrm")),
        bounding: capabilities::from_mask(mask("CapBnd")),
        no_new_privs: field("NoNewPrivs") == "1",
    })
}

/// A pidfd for `pid`; None for a thread ID (pidfd_open takes only a process's), which /proc/TID and so
/// `--target` accept as nsenter does: that case keeps the unpinned behaviour.
fn pidfd_open(pid: i32) -> Result<Option<OwnedFd>> {
    let r = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if r < 0 {
        return match nix::errno::Errno::last() {
            nix::errno::Errno::EINVAL => Ok(None),
            e => Err(Error::sys(Step::Join, format!("pid {pid}"), e)),
        };
    }
    Ok(Some(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(r as i32) }))
}

/// Signal 0 through the pidfd: ESRCH once the process has exited (even if its PID was reused since).
fn still_alive(pidfd: &OwnedFd, pid: i32) -> Result<()> {
    let r = unsafe {
        libc::syscall(libc::SYS_pidfd_send_signal, pidfd.as_raw_fd(), 0, std::ptr::null::<libc::siginfo_t>(), 0)
    };
    match (r, nix::errno::Errno::last()) {
        (0, _) => Ok(()),
        (_, nix::errno::Errno::ESRCH) => {
            Err(Error::new(Step::Join, format!("pid {pid}"), "exited while its namespaces were being opened"))
        }
        (_, e) => Err(Error::sys(Step::Join, format!("pid {pid}"), e)),
    }
}

pub struct ExecSpec {
    pub target: Option<i32>,
    pub ns_dir: Option<PathBuf>,
    /// Empty = every namespace of the target that differs from ours.
    pub types: Vec<NsType>,
    /// Keep our own capabilities instead of adopting the target's (nsenter's behaviour).
    pub keep_caps: bool,
    /// Environment, user, workdir, preserved fds and the command, reusing run's fields.
    pub proc: RunSpec,
}

pub fn exec(spec: ExecSpec) -> i32 {
    match exec_inner(&spec) {
        Ok(code) => code,
        Err(e) => {
            crate::report(&e);
            e.code
        }
    }
}

fn open_targets(spec: &ExecSpec) -> Result<Vec<NsFd>> {
    let mut fds = vec![];
    let wanted = |ty: NsType| spec.types.is_empty() || spec.types.contains(&ty);
    match (spec.target, &spec.ns_dir) {
        (Some(pid), None) => {
            let proc_dir = PathBuf::from(format!("/proc/{pid}"));
            std::fs::metadata(&proc_dir).ctx(Step::Join, format!("pid {pid}"))?;
            for ty in namespaces::ALL {
                let explicit = spec.types.contains(&ty);
                if !wanted(ty) || (!explicit && namespaces::same_as_self(ty, pid)) {
                    continue;
                }
                fds.push(namespaces::open(ty, &ty.proc_path(pid))?);
            }
        }
        (None, Some(dir)) => {
            std::fs::metadata(dir).ctx(Step::Join, dir.display())?;
            for ty in namespaces::ALL {
                let p = dir.join(ty.proc_name());
                if wanted(ty) && (p.exists() || spec.types.contains(&ty)) {
                    fds.push(namespaces::open(ty, &p)?);
                }
            }
        }
        _ => return Err(Error::new(Step::Args, "target", "give exactly one of --target PID or --ns-dir DIR")),
    }
    if fds.is_empty() {
        return Err(Error::new(Step::Join, "target", "no namespace to join (all are the same as ours)"));
    }
    fds.sort_by_key(|f| f.ty);
    Ok(fds)
}

fn exec_inner(spec: &ExecSpec) -> Result<i32> {
    let p = &spec.proc;
    if p.argv.is_empty() {
        return Err(Error::new(Step::Args, "command", "missing (give it after --)"));
    }
    // The caller's fds first, before this process opens anything that could take a free number.
    let seccomp_fd = match p.seccomp {
        Some(crate::spec::SeccompSource::Fd(n)) => Some(n),
        _ => None,
    };
    protocol::check_preserved(p.preserve_fds, &[(p.wait_fd, "--wait-fd"), (seccomp_fd, "--seccomp-fd")])?;
    if let Some(fd) = p.wait_fd {
        protocol::check_fd(fd, Step::Fds)?;
    }
    // A pidfd pins the target's identity: a PID is not reused while its process exists, so if the pidfd
    // still names a live process after the last /proc/PID access below, every access reached that process
    // and not a newcomer that got its PID.
    let pidfd = spec.target.map(pidfd_open).transpose()?.flatten();
    let fds = open_targets(spec)?;
    let program = p.seccomp.as_ref().map(|s| crate::seccomp::read(s, 0)).transpose()?;
    let privileges = match (spec.target, spec.keep_caps) {
        (Some(pid), false) => Some(target_privileges(pid)?),
        _ => None,
    };
    // The target's root, opened before joining: its mount namespace's root may not be the process's root.
    let root: Option<OwnedFd> = match spec.target {
        Some(pid) => Some(
            nix::fcntl::open(
                format!("/proc/{pid}/root").as_str(),
                nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
                nix::sys::stat::Mode::empty(),
            )
            .ctx(Step::Join, format!("/proc/{pid}/root"))?,
        ),
        None => None,
    };
    if let (Some(fd), Some(pid)) = (&pidfd, spec.target) {
        still_alive(fd, pid)?;
    }

    // Non-dumpable before we enter anything: /proc/OURPID/exe and /proc/OURPID/mem become unreachable for
    // container processes (CVE-2019-5736).
    nix::sys::prctl::set_dumpable(false).ctx(Step::Join, "prctl(PR_SET_DUMPABLE)")?;
    for f in &fds {
        f.join()?;
    }
    let joined_mnt = fds.iter().any(|f| f.ty == NsType::Mnt);
    let joined_user = fds.iter().any(|f| f.ty == NsType::User);
    if let (Some(r), true) = (&root, joined_mnt) {
        nix::unistd::fchdir(r).ctx(Step::Join, "root")?;
        nix::unistd::chroot(".").ctx(Step::Join, "root")?;
    }
    if joined_mnt {
        nix::unistd::chdir("/").ctx(Step::Workdir, "/")?;
    }

    let supervised = signals::supervised();
    let mut old = SigSet::empty();
    nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&supervised), Some(&mut old))
        .ctx(Step::Fork, "sigmask")?;
    let (ctrl_r, ctrl_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).ctx(Step::Sync, "pipe")?;
    // Fork: joining a pid namespace only takes effect for children.
    let joined_pid = fds.iter().any(|f| f.ty == NsType::Pid);
    let forked = unsafe { nix::unistd::fork() }.map_err(|errno| {
        let e = Error::sys(Step::Fork, "exec", errno);
        // ENOMEM from fork into a pid namespace means its PID 1 has exited: nothing can enter it. The errno,
        // not its text: musl says "Out of memory" where glibc says "Cannot allocate memory".
        if joined_pid && errno == nix::errno::Errno::ENOMEM {
            e.hint("the pid namespace's first process has exited; join the others only, e.g. --ns net,uts,ipc,mnt")
        } else {
            e
        }
    })?;
    match forked {
        nix::unistd::ForkResult::Child => {
            drop(ctrl_r);
            let _ = nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&old), None);
            let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL);
            let e = match child(p, joined_user, privileges.as_ref(), program.as_ref(), &ctrl_w) {
                Ok(never) => match never {},
                Err(e) => e,
            };
            let _ =
                nix::unistd::write(&ctrl_w, format!("{}\n", serde_json::to_string(&e).unwrap_or_default()).as_bytes());
            unsafe { libc::_exit(e.code) }
        }
        nix::unistd::ForkResult::Parent { child } => {
            drop(ctrl_w);
            let mut line = String::new();
            let _ = std::io::BufRead::read_line(&mut std::io::BufReader::new(std::fs::File::from(ctrl_r)), &mut line);
            if !line.trim().is_empty() {
                let _ = waitpid(child, None);
                return Err(
                    serde_json::from_str(line.trim()).unwrap_or_else(|_| Error::new(Step::Exec, "child", line.trim()))
                );
            }
            Ok(signals::supervise(child, &supervised).ctx(Step::Wait, child)?.0)
        }
    }
}

/// Root of the joined user namespace (uid and gid 0 there). Returns whether setgroups(2) is denied in it
/// (a rootless `--map-root-user` namespace), which `--user` must then do without.
fn become_ns_root() -> Result<bool> {
    use nix::unistd::{setresgid, setresuid, Gid, Uid};
    let (u, g) = (Uid::from_raw(0), Gid::from_raw(0));
    let obj = "0:0 in the joined user namespace";
    nix::sys::prctl::set_keepcaps(true).ctx(Step::User, "keepcaps")?;
    setresgid(g, g, g)
        .ctx(Step::User, obj)
        .map_err(|e| e.hint("gid 0 must be mapped in the target's user namespace"))?;
    setresuid(u, u, u)
        .ctx(Step::User, obj)
        .map_err(|e| e.hint("uid 0 must be mapped in the target's user namespace"))?;
    nix::sys::prctl::set_keepcaps(false).ctx(Step::User, "keepcaps")?;
    Ok(std::fs::read_to_string("/proc/self/setgroups").is_ok_and(|s| s.trim() == "deny"))
}

fn child(
    p: &RunSpec,
    joined_user: bool,
    privileges: Option<&Privileges>,
    program: Option<&crate::seccomp::Program>,
    ctrl_w: &OwnedFd,
) -> Result<std::convert::Infallible> {
    // In a joined user namespace this process's own IDs are usually unmapped (the overflow uid inside,
    // where nothing it makes could be owned): it becomes that namespace's root first, as nsenter(1) does.
    let setgroups_denied = joined_user && become_ns_root()?;
    let id = process::resolve_identity(p.user.as_deref(), &p.group_add)?;
    let env = process::environment(p, id.home.as_deref());
    process::chdir(p.workdir.as_deref())?;
    let cmd = process::find_command(&p.argv[0], &env)?;
    if let Some(fd) = p.wait_fd {
        protocol::wait_go(fd)?;
    }
    // Without no_new_privs, installing a filter needs CAP_SYS_ADMIN, which the adopted set may lack:
    // install it while we still hold it (as runc does), so it also covers the remaining set-up calls.
    let nnp = p.no_new_privs || privileges.is_some_and(|x| x.no_new_privs);
    if let (Some(prog), false) = (program, nnp) {
        prog.install()?;
    }
    if let Some(pr) = privileges {
        capabilities::limit_bounding(&pr.bounding)?;
    }
    if p.user.is_some() {
        process::switch_user(&id, setgroups_denied)?;
    } else {
        process::reset_groups(&id)?;
    }
    if let Some(pr) = privileges {
        capabilities::apply(&pr.caps)?;
        if pr.no_new_privs {
            nix::sys::prctl::set_no_new_privs().ctx(Step::NoNewPrivs, "prctl")?;
        }
    }
    if p.no_new_privs {
        nix::sys::prctl::set_no_new_privs().ctx(Step::NoNewPrivs, "prctl")?;
    }
    process::close_fds_on_exec(p.preserve_fds, ctrl_w.as_raw_fd())?;
    if let (Some(prog), true) = (program, nnp) {
        prog.install()?;
    }
    Err(process::exec(&cmd, &p.argv, &env))
}
