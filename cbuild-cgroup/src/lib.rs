//! cbuild-cgroup: control groups on cgroup v1, v2 and hybrid hosts — limits, placement, statistics,
//! events — behind one interface. `layout` finds the hierarchies, `cgroup` places NAME in all of them,
//! `controllers::*` hold each controller's v1 and v2 files, `stats` and `events` read them back.
//! The verbs below are what main.rs calls; each returns a typed [`Error`] naming the failed step.

pub mod cgroup;
pub mod controllers;
pub mod convert;
pub mod error;
pub mod events;
pub mod fsutil;
pub mod layout;
pub mod limits;
pub mod log;
pub mod stats;
pub mod supervise;

pub use error::{Error, Result};

use cgroup::{Cgroup, IfExists, Join};
use layout::Host;
use limits::{Limits, RawLimits};
use nix::sys::signal::Signal;
use serde::Serialize;
use std::convert::Infallible;
use std::ffi::{CString, OsStr, OsString};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Parse and check limits against the host before anything is created.
fn limits_for(host: &Host, raw: &RawLimits) -> Result<Limits> {
    let l = Limits::parse(raw)?;
    l.check(host)?;
    Ok(l)
}

/// `create NAME [limits]`: fails if NAME exists.
pub fn create(name: &str, raw: &RawLimits) -> Result<()> {
    cgroup::check_name(name)?;
    let host = Host::detect_for_write()?;
    let l = limits_for(&host, raw)?;
    // Stop signals held from before the first mkdir: one must not end this process with NAME half-made.
    let held = supervise::hold("create")?;
    match Cgroup::create(&host, name, &l, IfExists::Fail, Join::No, &held) {
        // NAME is whole: the caller's mask back.
        Ok(_) => held.restore(),
        // Undone already; the signal, if one interrupted it, lands after the error line.
        Err(e) => Err(e.holding(held)),
    }
}

/// `set NAME [limits]`: change limits of an existing NAME; on failure the old values are put back.
pub fn set(name: &str, raw: &RawLimits) -> Result<()> {
    cgroup::check_name(name)?;
    let host = Host::detect_for_write()?;
    let mut l = limits_for(&host, raw)?;
    // As `docker update`: a new --memory keeps the memory+swap in force; Docker's twice-the-memory is a
    // default for a new container only.
    if !l.memory_swap_explicit {
        l.memory_swap = None;
    }
    // The host-wide lock shared, so no creator or `rm` is half-way through NAME meanwhile, and NAME's own
    // lock exclusive: two `set`s at once would interleave their writes (one's memory limit with the
    // other's pids limit, a v1 device list moved by difference from what the other half-wrote). Not the
    // host-wide lock exclusive: lowering a memory limit reclaims synchronously, and every other NAME's
    // `exec` would wait for it.
    let _host_lock = cgroup::lock(&host, libc::LOCK_SH)?;
    let cg = Cgroup::open(&host, name)?;
    let _name_lock = cgroup::lock_name(&cg)?;
    // Stop signals held from before the first write: one must not end this process with half the limits
    // new; one that came by the end puts the old values back, as a failed write does.
    let held = supervise::hold("set")?;
    let mut w = controllers::Writer::restoring();
    match controllers::apply(&host, &cg.dirs, &l, &mut w).and_then(|()| held.check(name)) {
        Ok(()) => held.restore(),
        Err(e) => {
            w.restore();
            Err(e.holding(held))
        }
    }
}

/// `add NAME PID...`
pub fn add(name: &str, pids: &[String]) -> Result<()> {
    cgroup::check_name(name)?;
    let pids: Vec<i32> = pids
        .iter()
        .map(|p| p.parse::<i32>().ok().filter(|&n| n > 0).ok_or_else(|| Error::bad("add", p, "not a process id")))
        .collect::<Result<_>>()?;
    let host = Host::detect_for_write()?;
    // Shared, as every join: an `rm` (exclusive) then either sees these processes and refuses, or has
    // removed NAME everywhere before it is opened here, never half.
    let _lock = cgroup::lock(&host, libc::LOCK_SH)?;
    let cg = Cgroup::open(&host, name)?;
    for p in pids {
        log::step("join", format_args!("{p} → {}", cg.name));
        cg.join(p)?;
    }
    Ok(())
}

/// `exec NAME [limits] [--cgroup-fd N] -- CMD`: create or reuse NAME, move this process into it in
/// every hierarchy, and execve CMD (same PID, so the whole tree CMD starts is inside). No fork, and no
/// reads that the fast path does not need: this runs in front of every container start.
///
/// With `cgroup_fd` = N, the v2 tree is not joined: NAME's v2 directory is opened as fd N for CMD, which
/// creates its processes there (`cbuild-ns run --cgroup-fd N`, clone3 CLONE_INTO_CGROUP). That skips
/// the RCU grace period a cgroup2 move waits for. On a host without a v2 tree fd N is /dev/null.
///
/// `new`: NAME must not exist yet ("cgroup exists", nothing touched), so that what is in NAME afterwards
/// is the caller's own to kill.
pub fn exec(name: &str, raw: &RawLimits, cgroup_fd: Option<i32>, new: bool, cmd: &[OsString]) -> Result<Infallible> {
    let cmd = Cmd::check(name, cgroup_fd, cmd)?;
    let host = Host::detect_for_write()?;
    let l = limits_for(&host, raw)?;
    let join = if cgroup_fd.is_some() { Join::AllButV2 } else { Join::All };
    // Stop signals held from before the first mkdir: one must not end this process with NAME half-made.
    let held = supervise::hold("exec")?;
    let if_exists = if new { IfExists::Fail } else { IfExists::Reuse };
    let created = match Cgroup::create(&host, name, &l, if_exists, join, &held) {
        Ok(c) => c,
        Err(e) => return Err(e.holding(held)),
    };
    if let Some(n) = cgroup_fd {
        if let Err(e) = hand_over_v2(&host, &created.cg, n) {
            created.undo();
            return Err(e.holding(held));
        }
    }
    // CMD must not inherit the held signals: the caller's mask back, here, in the process that becomes CMD.
    if let Err(e) = held.restore() {
        created.undo();
        return Err(e);
    }
    let e = cmd.exec();
    // Held again while the undo runs, so a signal cannot cut it short.
    let held = supervise::hold("exec");
    created.undo();
    Err(match held {
        Ok(h) => e.holding(h),
        Err(_) => e,
    })
}

/// `exec NAME --existing [--cgroup-fd N] -- CMD`: as `exec`, but only into a NAME that exists, as it is
/// (no limits): `docker exec` into a running container. NAME missing (the container ended meanwhile) is
/// an error, never a new empty cgroup left behind with the container gone.
pub fn exec_existing(name: &str, raw: &RawLimits, cgroup_fd: Option<i32>, cmd: &[OsString]) -> Result<Infallible> {
    let cmd = Cmd::check(name, cgroup_fd, cmd)?;
    let host = Host::detect_for_write()?;
    if !limits_for(&host, raw)?.is_empty() {
        return Err(Error::bad("exec", "--existing", "takes no limits: NAME is joined as it is (`set` changes them)"));
    }
    // Held through the join as `add` holds it, and released at execve (close-on-exec).
    let _lock = cgroup::lock(&host, libc::LOCK_SH)?;
    let cg = Cgroup::open(&host, name)?;
    let join = if cgroup_fd.is_some() { Join::AllButV2 } else { Join::All };
    log::step("join", format_args!("{} → {name}", std::process::id()));
    cg.join_self(&host, join)?;
    if let Some(n) = cgroup_fd {
        hand_over_v2(&host, &cg, n)?;
    }
    Err(cmd.exec())
}

/// The command `exec` runs, checked before anything is created: "not found" must not leave a cgroup
/// behind.
struct Cmd {
    path: PathBuf,
    cpath: CString,
    argv: Vec<CString>,
}

impl Cmd {
    fn check(name: &str, cgroup_fd: Option<i32>, cmd: &[OsString]) -> Result<Cmd> {
        cgroup::check_name(name)?;
        if let Some(n) = cgroup_fd {
            if n < 3 {
                return Err(Error::bad("cgroup-fd", n, "fds 0-2 are the command's stdin, stdout and stderr"));
            }
            // Checked before any limit is written: dup2 onto it would fail only after the group (an
            // existing one, a running container's) had its new limits.
            let (soft, _) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
                .map_err(|e| Error::sys("cgroup-fd", n, e.into()))?;
            if n as u64 >= soft {
                return Err(Error::bad("cgroup-fd", n, format!("beyond the open-file limit ({soft})")));
            }
        }
        let path = resolve(&cmd[0])?;
        // Any bytes but NUL, as execve takes them: CMD is the caller's, whatever its encoding.
        let argv = cmd
            .iter()
            .map(|a| {
                CString::new(a.as_bytes()).map_err(|_| Error::bad("exec", a.to_string_lossy(), "contains a NUL byte"))
            })
            .collect::<Result<_>>()?;
        let cpath = CString::new(path.as_os_str().as_bytes()).map_err(|_| Error::bad("exec", path.display(), "NUL"))?;
        Ok(Cmd { path, cpath, argv })
    }

    /// execve; it returns only when that failed, as the error to report (127 not found, else 126).
    fn exec(&self) -> Error {
        log::step("exec", self.path.display());
        let err = nix::unistd::execv(&self.cpath, &self.argv).unwrap_err();
        let mut e = Error::sys("exec", self.path.display(), err.into());
        e.exit_code = if err == nix::errno::Errno::ENOENT { 127 } else { 126 };
        e
    }
}

/// `exec NAME --rm [limits] [--cgroup-fd N] -- CMD`: make NAME, run CMD in it as a child, pass signals
/// on to it, and remove NAME once CMD has exited, killing whatever CMD left there — `docker run --rm` for
/// the cgroup, without a second process to start afterwards. NAME must not exist yet: removing it must not
/// take anyone else's processes with it. Returns CMD's exit code (128+N when a signal N killed it).
///
/// The parent never joins NAME (on v1 its rmdir would fail while the parent is inside); the child joins
/// and execs CMD exactly as `exec` does, `--cgroup-fd` included.
pub fn exec_rm(name: &str, raw: &RawLimits, cgroup_fd: Option<i32>, cmd: &[OsString]) -> Result<i32> {
    let cmd = Cmd::check(name, cgroup_fd, cmd)?;
    let host = Host::detect_for_write()?;
    if host.rootless {
        // The waiting parent stays in its own cgroup, the delegated base: v2 then refuses to hand
        // controllers down from it to NAME ("no internal processes").
        return Err(Error::bad(
            "exec",
            "--rm",
            "needs root: not as root the waiting process would have to leave the delegated cgroup it stays in",
        )
        .with_hint("run `exec NAME -- CMD`, then `rm NAME`"));
    }
    let l = limits_for(&host, raw)?;
    // Blocked from before the first mkdir, not after it: a stop signal must not end this process with NAME
    // half-made (the create fails on one instead); then held on through the fork, as the wait needs.
    let blocked = supervise::block("exec")?;
    let created = match Cgroup::create(&host, name, &l, IfExists::Fail, Join::No, &blocked) {
        Ok(c) => c,
        Err(e) => {
            let e = match &e.reason {
                error::Reason::Bad(r) if r.starts_with("cgroup exists") => {
                    e.with_hint("`exec --rm` makes NAME and removes it afterwards: it must not exist yet")
                }
                _ => e,
            };
            return Err(e.holding(blocked));
        }
    };
    log::step("fork", format_args!("{} (this process waits outside {name}, then removes it)", cmd.path.display()));
    // SAFETY: single-threaded (no thread is ever started by this tool), so the child may run any code.
    match unsafe { nix::unistd::fork() } {
        Err(e) => {
            // Undone with the signals still held; they are put back after the error line.
            created.undo();
            Err(Error::sys("fork", cmd.path.display(), e.into()).holding(blocked))
        }
        Ok(nix::unistd::ForkResult::Child) => {
            // An error returned here ends the child through main, with the contract's error line.
            blocked.restore()?;
            let join = if cgroup_fd.is_some() { Join::AllButV2 } else { Join::All };
            log::step("join", format_args!("{} → {name}", std::process::id()));
            created.cg.join_self(&host, join)?;
            if let Some(n) = cgroup_fd {
                hand_over_v2(&host, &created.cg, n)?;
            }
            Err(cmd.exec())
        }
        Ok(nix::unistd::ForkResult::Parent { child }) => {
            supervise::close_inherited();
            // The lock `create` took is released here, and by the child at its exec.
            let cg = created.into_cgroup();
            // NAME's directories as made, told apart from any made again under the same name: while
            // this waits (stopped with its job by ^Z, say), an `rm --force NAME` may end CMD and someone
            // make a new NAME, which is not ours to remove.
            let ids = || cg.dirs.iter().map(|d| fsutil::identity(d)).collect::<Vec<_>>();
            let made = ids();
            let code = blocked.wait(child);
            if ids() != made {
                log::warn(format!("exec --rm: {name} was removed while its command ran: not removed again"));
                return code;
            }
            log::step("rm", name);
            cg.remove(&host, true)?;
            code
        }
    }
}

/// Open NAME's v2 directory as fd `n` (not close-on-exec) for the next program; /dev/null if the host has
/// no v2 tree, which says "nothing to join" (a closed fd would be taken by the next program's first open).
fn hand_over_v2(host: &Host, cg: &Cgroup, n: i32) -> Result<()> {
    let (dir, flags) = match cg.v2_dir(host) {
        Some(dir) => (dir, nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_DIRECTORY),
        None => (Path::new("/dev/null"), nix::fcntl::OFlag::O_RDONLY),
    };
    log::step("cgroup-fd", format_args!("{n} → {}", dir.display()));
    let fd = nix::fcntl::open(dir, flags | nix::fcntl::OFlag::O_CLOEXEC, nix::sys::stat::Mode::empty())
        .map_err(|e| Error::sys("cgroup-fd", dir.display(), e.into()))?;
    // dup2 gives fd n without close-on-exec: it survives the execve, `fd` does not. (Already n: dup2
    // would be a no-op that keeps close-on-exec, so the flag is cleared instead, and `fd` must stay open.)
    let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
    if raw == n {
        std::mem::forget(fd);
        if unsafe { libc::fcntl(n, libc::F_SETFD, 0) } < 0 {
            return Err(Error::sys("cgroup-fd", n, std::io::Error::last_os_error()));
        }
        return Ok(());
    }
    if unsafe { libc::dup2(raw, n) } < 0 {
        return Err(Error::sys("cgroup-fd", n, std::io::Error::last_os_error()));
    }
    Ok(())
}

/// PATH lookup as the shell does it; exit 127 when not found.
fn resolve(cmd: &OsStr) -> Result<PathBuf> {
    let not_found = |what: &OsStr| {
        let mut e = Error::bad("exec", what.to_string_lossy(), "command not found");
        e.exit_code = 127;
        e
    };
    if cmd.is_empty() {
        return Err(not_found("''".as_ref()));
    }
    if cmd.as_bytes().contains(&b'/') {
        return if Path::new(cmd).exists() { Ok(PathBuf::from(cmd)) } else { Err(not_found(cmd)) };
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin".into());
    for dir in std::env::split_paths(&path) {
        let p = dir.join(cmd);
        if nix::unistd::access(&p, nix::unistd::AccessFlags::X_OK).is_ok() && p.is_file() {
            return Ok(p);
        }
    }
    Err(not_found(cmd))
}

/// A path on a line of `info`'s text: exactly, as `\ooo` where it is not printable UTF-8 (a mount point
/// is whatever bytes its mounter chose).
fn shown(p: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    cbuild_mountinfo::escape(p.as_os_str().as_bytes())
}

/// `v` as one line of JSON; a value JSON cannot hold (a path that is not UTF-8) is an error, never
/// an empty line.
fn to_json(object: &str, v: &impl serde::Serialize) -> Result<String> {
    serde_json::to_string(v).map_err(|e| Error::bad("json", object, e.to_string()))
}

/// `stat NAME [--json]`
pub fn stat(name: &str, json: bool, out: &mut dyn Write) -> Result<()> {
    cgroup::check_name(name)?;
    let host = Host::detect()?;
    let cg = Cgroup::open(&host, name)?;
    let s = stats::collect(&host, &cg)?;
    let text = if json { to_json(name, &s)? + "\n" } else { stats::human(&s) };
    out.write_all(text.as_bytes()).map_err(|e| Error::sys("write", "stdout", e))
}

/// `events NAME [--follow]`
pub fn events(name: &str, follow: bool, out: &mut dyn Write) -> Result<()> {
    cgroup::check_name(name)?;
    let host = Host::detect()?;
    let cg = Cgroup::open(&host, name)?;
    events::run(&host, &cg, follow, out)
}

#[derive(Serialize)]
struct ListEntry {
    name: String,
    procs: usize,
    memory_current: Option<u64>,
    pids_current: Option<u64>,
    dirs: Vec<PathBuf>,
}

/// `ls [--json]`
pub fn ls(json: bool, out: &mut dyn Write) -> Result<()> {
    let host = Host::detect()?;
    let mut text = String::new();
    if !json {
        text.push_str(&format!("{:<24} {:>6} {:>12} {:>6}\n", "NAME", "PROCS", "MEMORY", "PIDS"));
    }
    for name in cgroup::list(&host)? {
        let Ok(cg) = Cgroup::open(&host, &name) else { continue };
        let memory_current = cg.dir_of(&host, "memory").and_then(|d| {
            let f = if d.v2 { "memory.current" } else { "memory.usage_in_bytes" };
            fsutil::read_u64_opt(&d.file(f)).ok().flatten()
        });
        let pids_current =
            cg.dir_of(&host, "pids").and_then(|d| fsutil::read_u64_opt(&d.file("pids.current")).ok().flatten());
        let procs = match cg.procs() {
            Ok(p) => p.len(),
            // Removed (`rm` in another process) while we looked: no longer there to list.
            Err(e) if matches!(e.errno(), Some(libc::ENOENT) | Some(libc::ENODEV)) => continue,
            Err(e) => return Err(e),
        };
        let e = ListEntry {
            procs,
            memory_current,
            pids_current,
            dirs: cg.dirs.iter().filter(|d| d.is_dir()).cloned().collect(),
            name,
        };
        if json {
            text.push_str(&to_json(&e.name, &e)?);
            text.push('\n');
        } else {
            text.push_str(&format!(
                "{:<24} {:>6} {:>12} {:>6}\n",
                e.name,
                e.procs,
                e.memory_current.map_or("-".into(), stats::bytes),
                e.pids_current.map_or("-".into(), |p| p.to_string())
            ));
        }
    }
    out.write_all(text.as_bytes()).map_err(|e| Error::sys("write", "stdout", e))
}

/// `kill NAME [--signal S]`
pub fn kill(name: &str, signal: &str) -> Result<()> {
    cgroup::check_name(name)?;
    let sig = parse_signal(signal)?;
    let host = Host::detect_for_write()?;
    let cg = Cgroup::open(&host, name)?;
    cg.kill(&host, sig)?;
    Ok(())
}

/// The first and last real-time signals as kill(1), Docker and glibc number them: the kernel's first
/// two (32 and 33) are glibc's own. Not the C library's answer: musl keeps a third (its SIGRTMIN is 35),
/// and `RTMIN+3` must be the same signal however this tool was built.
pub const SIGRTMIN: libc::c_int = 34;
pub const SIGRTMAX: libc::c_int = 64;

/// A signal as kill(1) takes one: a name with or without `SIG`, in any case (`TERM`, `sigterm`), a
/// real-time one as `RTMIN`, `RTMIN+N` or `RTMAX-N` (relative to [`SIGRTMIN`]), or a number from 1 to
/// [`SIGRTMAX`].
pub fn parse_signal(s: &str) -> Result<libc::c_int> {
    let (min, max) = (SIGRTMIN, SIGRTMAX);
    let bad = |why: String| Error::bad("signal", s, why);
    let t = s.trim();
    if let Ok(n) = t.parse::<libc::c_int>() {
        return if (1..=max).contains(&n) { Ok(n) } else { Err(bad(format!("no signal {n} (1 to {max})"))) };
    }
    let up = t.to_ascii_uppercase();
    let name = up.strip_prefix("SIG").unwrap_or(&up);
    let offset = |rest: &str, sign: char| -> Result<libc::c_int> {
        if rest.is_empty() {
            return Ok(0);
        }
        rest.strip_prefix(sign)
            .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|n| n.parse::<libc::c_int>().ok())
            .filter(|&n| n <= max - min)
            .ok_or_else(|| bad(format!("not a real-time signal (RTMIN+N and RTMAX-N take N from 0 to {})", max - min)))
    };
    if let Some(rest) = name.strip_prefix("RTMIN") {
        return Ok(min + offset(rest, '+')?);
    }
    if let Some(rest) = name.strip_prefix("RTMAX") {
        return Ok(max - offset(rest, '-')?);
    }
    // kill(1)'s other names for three of them.
    let name = match name {
        "IOT" => "ABRT",
        "POLL" => "IO",
        "CLD" => "CHLD",
        n => n,
    };
    format!("SIG{name}")
        .parse::<Signal>()
        .map(|s| s as libc::c_int)
        .map_err(|_| bad("not a signal name or number".into()))
}

/// `rm NAME [--force]`
pub fn rm(name: &str, force: bool, missing_ok: bool) -> Result<()> {
    if let Err(e) = cgroup::check_name(name) {
        // No cgroup can have that name, so with --missing-ok there is nothing to remove (a runtime's undo
        // after `exec` refused the name must not repeat that error).
        if missing_ok {
            log::step("rm", format_args!("{name:?}: cannot be a cgroup's name, so none is there (--missing-ok)"));
            return Ok(());
        }
        return Err(e);
    }
    let host = Host::detect_for_write()?;
    let cg = Cgroup::at(&host, name)?;
    if missing_ok && !cg.dirs.iter().any(|d| d.is_dir()) {
        log::step("rm", format_args!("{name}: no such cgroup (--missing-ok)"));
        return Ok(());
    }
    let cg = Cgroup::open(&host, name)?;
    cg.remove(&host, force)
}

/// `prune`: the shared `cbuild/` parents no NAME uses any more (see [`cgroup::prune`]); prints each
/// one removed.
pub fn prune(out: &mut dyn Write) -> Result<()> {
    let host = Host::detect_for_write()?;
    let mut text = String::new();
    for d in cgroup::prune(&host)? {
        log::step("rmdir", d.display());
        text.push_str(&format!("{}\n", d.display()));
    }
    out.write_all(text.as_bytes()).map_err(|e| Error::sys("write", "stdout", e))
}

#[derive(Serialize)]
struct Features {
    cgroup_kill: bool,
    psi: bool,
    freezer: bool,
    swap_accounting: Option<bool>,
    swap_total: u64,
}

#[derive(Serialize)]
struct Info<'a> {
    layout: &'static str,
    rootless: bool,
    hierarchies: &'a [layout::Hierarchy],
    controllers: Vec<String>,
    /// v2: the controllers the base cgroup hands to its children (cgroup.subtree_control).
    delegated: Option<Vec<String>>,
    features: Features,
}

/// `info [--json]`
pub fn info(json: bool, out: &mut dyn Write) -> Result<()> {
    let host = Host::detect()?;
    let v2 = host.v2().map(|i| &host.hierarchies[i]);
    let delegated = v2.map(|h| {
        fsutil::read_opt(&h.base.join("cgroup.subtree_control"))
            .ok()
            .flatten()
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_string)
            .collect()
    });
    let kernel = nix::sys::utsname::uname().ok();
    let release = kernel.as_ref().map(|u| u.release().to_string_lossy().into_owned()).unwrap_or_default();
    let mut ver = release.split(|c: char| !c.is_ascii_digit()).filter_map(|p| p.parse::<u32>().ok());
    let (major, minor) = (ver.next().unwrap_or(0), ver.next().unwrap_or(0));
    let swap_accounting = host.hierarchy_of("memory").map(|i| {
        let h = &host.hierarchies[i];
        if h.version == 1 {
            h.base.join("memory.memsw.limit_in_bytes").exists()
        } else {
            // Not shown on the root cgroup; a child (ours, if any exist) shows it.
            let probe = h.base.join(cgroup::PARENT).join("memory.swap.max");
            probe.exists() || !h.base.join(cgroup::PARENT).exists()
        }
    });
    let meminfo = fsutil::read_opt(Path::new("/proc/meminfo")).ok().flatten().unwrap_or_default();
    let swap_total = meminfo
        .lines()
        .find(|l| l.starts_with("SwapTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0)
        * 1024;
    let features = Features {
        cgroup_kill: v2.is_some() && (major, minor) >= (5, 14),
        psi: v2.is_some_and(|h| std::fs::read_to_string(h.base.join("cpu.pressure")).is_ok()),
        freezer: v2.is_some() || host.hierarchy_of("freezer").is_some(),
        swap_accounting,
        swap_total,
    };
    let info = Info {
        layout: host.layout.as_str(),
        rootless: host.rootless,
        hierarchies: &host.hierarchies,
        controllers: host.controllers(),
        delegated,
        features,
    };
    let text = if json {
        to_json("info", &info)? + "\n"
    } else {
        let mut t = format!("layout      {}{}\n", info.layout, if info.rootless { " (rootless)" } else { "" });
        for h in info.hierarchies {
            let c = if h.controllers.is_empty() { "(no controllers)".to_string() } else { h.controllers.join(",") };
            t.push_str(&format!("cgroup v{}   {:<28} {:<22} base {}\n", h.version, shown(&h.mount), c, shown(&h.base)));
        }
        if let Some(d) = &info.delegated {
            t.push_str(&format!("delegated   {}\n", if d.is_empty() { "(none)".into() } else { d.join(" ") }));
        }
        let f = &info.features;
        let yn = |b: bool| if b { "yes" } else { "no" };
        t.push_str(&format!(
            "features    cgroup.kill {}  psi {}  freezer {}  swap accounting {}  swap {}\n",
            yn(f.cgroup_kill),
            yn(f.psi),
            yn(f.freezer),
            f.swap_accounting.map_or("-", yn),
            stats::bytes(f.swap_total)
        ));
        t
    };
    out.write_all(text.as_bytes()).map_err(|e| Error::sys("write", "stdout", e))
}

#[cfg(test)]
mod tests {
    #[test]
    fn signals_as_kill_1_takes_them() {
        let (min, max) = (libc::SIGRTMIN(), libc::SIGRTMAX());
        // The tests are built with glibc, whose numbering is kill(1)'s.
        assert_eq!((min, max), (super::SIGRTMIN, super::SIGRTMAX));
        for (s, want) in [
            ("TERM", libc::SIGTERM),
            ("sigterm", libc::SIGTERM),
            ("9", libc::SIGKILL),
            ("RTMIN", min),
            ("SIGRTMIN+3", min + 3),
            ("rtmin+0", min),
            ("RTMAX", max),
            ("SIGRTMAX-2", max - 2),
            (&format!("RTMIN+{}", max - min), max),
            (&max.to_string(), max),
            ("32", 32),
        ] {
            assert_eq!(super::parse_signal(s).unwrap(), want, "{s}");
        }
        let past = format!("RTMIN+{}", max - min + 1);
        let above = (max + 1).to_string();
        for bad in ["0", "-1", &above, "RTMIN+", "RTMIN-1", "RTMAX+1", &past, "RTMIN+x", "NOPE", ""] {
            let e = super::parse_signal(bad).unwrap_err().to_string();
            assert!(e.starts_with("signal: "), "{bad}: {e}");
        }
    }
}
