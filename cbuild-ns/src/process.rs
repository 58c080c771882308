//! The process that will become the command: its user and groups (resolved in the new root's /etc, as
//! Docker does), environment, rlimits, working directory, and the exec itself with the shell's 126/127.

use crate::error::{Context, Error, Result, Step, EXIT_CANNOT_EXEC, EXIT_NOT_FOUND};
use crate::spec::{Rlimit, RunSpec};
use std::ffi::CString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    /// The `--group-add` ones: failing to set these is an error, not a silent drop.
    pub explicit_groups: Vec<u32>,
    pub home: Option<String>,
}

/// The most of an image's /etc/passwd or /etc/group read: far above any real one (runc stops at a 64 KiB
/// line), and a bound on what a hostile image can make the set-up hold.
pub const ETC_FILE_MAX: u64 = 4 << 20;

/// The entries of the image's /etc/passwd or /etc/group (none when it has no such file). The image
/// chooses what the path is: a FIFO no one writes would hold the set-up for ever (open without
/// O_NONBLOCK waits for a writer), `/dev/zero` would grow it without end, so only a regular file of at
/// most [`ETC_FILE_MAX`] is read, and anything else is the contract's error rather than a partial read.
fn etc_entries(path: &str) -> Result<Vec<Vec<String>>> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let f = match std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(path) {
        Ok(f) => f,
        // An image without the file (or without /etc) lists no one, as before.
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR)) => return Ok(vec![]),
        Err(e) => return Err(Error::io(Step::User, path, &e)),
    };
    let md = f.metadata().ctx(Step::User, path)?;
    if !md.is_file() {
        return Err(Error::new(Step::User, path, "not a regular file in the container"));
    }
    let too_big = || Error::new(Step::User, path, format!("larger than {} MiB", ETC_FILE_MAX >> 20));
    if md.len() > ETC_FILE_MAX {
        return Err(too_big());
    }
    let mut data = Vec::with_capacity(md.len() as usize);
    // `take`: a file that grows while it is read is still bounded.
    f.take(ETC_FILE_MAX + 1).read_to_end(&mut data).ctx(Step::User, path)?;
    if data.len() as u64 > ETC_FILE_MAX {
        return Err(too_big());
    }
    // Lossy: a stray non-UTF-8 byte (a GECOS field in Latin-1) must not make every user unknown.
    Ok(String::from_utf8_lossy(&data)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split(':').map(str::to_string).collect())
        .collect())
}

/// Resolve `--user` and `--group-add` against /etc/passwd and /etc/group as the process now sees them
/// (after pivot_root: the image's files, never the host's).
pub fn resolve_identity(user: Option<&str>, group_add: &[String]) -> Result<Identity> {
    let passwd = etc_entries("/etc/passwd")?;
    let group = etc_entries("/etc/group")?;
    let (u, g) = match user {
        Some(s) => match s.split_once(':') {
            Some((u, g)) => (u.to_string(), Some(g.to_string())),
            None => (s.to_string(), None),
        },
        None => ("0".to_string(), None),
    };
    let entry = passwd.iter().find(|e| e.len() >= 4 && (e[0] == u || e[2] == u));
    let uid = match (u.parse::<u32>(), entry) {
        (Ok(n), _) => id_in_range(n, &u)?,
        (Err(_), Some(e)) => etc_id(&e[2], &u, "uid", "/etc/passwd")?,
        (Err(_), None) => {
            return Err(Error::new(Step::User, &u, "no such user in the container's /etc/passwd"));
        }
    };
    let name = entry.map(|e| e[0].clone());
    let group_id = |g: &str| -> Result<u32> {
        if let Ok(n) = g.parse::<u32>() {
            return id_in_range(n, g);
        }
        match group.iter().find(|e| e.len() >= 3 && e[0] == g) {
            Some(e) => etc_id(&e[2], g, "gid", "/etc/group"),
            None => Err(Error::new(Step::User, g, "no such group in the container's /etc/group")),
        }
    };
    let gid = match (&g, entry) {
        (Some(g), _) => group_id(g)?,
        (None, Some(e)) => etc_id(&e[3], &u, "gid", "/etc/passwd")?,
        (None, None) => 0,
    };
    // Supplementary groups: the groups listing the user by name (only when no group was forced, as Docker),
    // plus --group-add.
    let mut groups = vec![];
    if let (Some(name), None) = (&name, &g) {
        for e in &group {
            if e.len() >= 4 && e[3].split(',').any(|m| m == name) {
                if let Ok(n) = e[2].parse::<u32>() {
                    groups.push(n);
                }
            }
        }
    }
    let mut explicit_groups = vec![];
    for extra in group_add {
        explicit_groups.push(group_id(extra)?);
    }
    groups.extend(&explicit_groups);
    groups.sort_unstable();
    groups.dedup();
    let home = entry.and_then(|e| e.get(5).cloned());
    Ok(Identity { uid, gid, groups, explicit_groups, home })
}

/// The ids a process may have: 0 to 2^31-1, as runc allows. setresuid(2) takes -1 (4294967295) as "leave
/// this one unchanged", so without this check `-u 4294967295` would run the command as root.
const MAX_ID: u32 = i32::MAX as u32;

fn id_in_range(n: u32, given: &str) -> Result<u32> {
    if n > MAX_ID {
        return Err(Error::new(Step::User, given, format!("id out of range (0 to {MAX_ID})")));
    }
    Ok(n)
}

/// A uid or gid field of the image's /etc/passwd or /etc/group: a malformed one is refused, not read as
/// root.
fn etc_id(field: &str, who: &str, what: &str, file: &str) -> Result<u32> {
    match field.parse::<u32>() {
        Ok(n) => id_in_range(n, who),
        Err(_) => Err(Error::new(Step::User, who, format!("invalid {what} {field:?} in the container's {file}"))),
    }
}

/// Switch groups, gid and uid. PR_SET_KEEPCAPS keeps the permitted set across the uid change so the
/// capability step after it can still choose what stays.
pub fn switch_user(id: &Identity, userns_without_setgroups: bool) -> Result<()> {
    use nix::unistd::{setgroups, setresgid, setresuid, Gid, Uid};
    let obj = format!("{}:{}", id.uid, id.gid);
    crate::log::step(Step::User, &obj);
    if !userns_without_setgroups {
        let gs: Vec<Gid> = id.groups.iter().map(|g| Gid::from_raw(*g)).collect();
        setgroups(&gs).ctx(Step::User, format!("groups {:?}", id.groups))?;
    } else if !id.explicit_groups.is_empty() {
        return Err(Error::new(
            Step::User,
            format!("groups {:?}", id.explicit_groups),
            "setgroups is denied in this user namespace",
        )
        .hint("a rootless --map-root-user namespace cannot change groups; map a range with --map-auto (newgidmap)"));
    }
    nix::sys::prctl::set_keepcaps(true).ctx(Step::User, "keepcaps")?;
    let g = Gid::from_raw(id.gid);
    setresgid(g, g, g).ctx(Step::User, &obj).map_err(|e| e.hint("the gid must be mapped in the user namespace"))?;
    let u = Uid::from_raw(id.uid);
    setresuid(u, u, u).ctx(Step::User, &obj).map_err(|e| e.hint("the uid must be mapped in the user namespace"))?;
    nix::sys::prctl::set_keepcaps(false).ctx(Step::User, "keepcaps")?;
    Ok(())
}

/// Without `-u` or `--group-add` the process keeps its uid and gid, but not the caller's supplementary
/// groups (a host's `disk` or `docker` group would carry into the container): it gets those the image's
/// /etc/group gives root, as runc sets them. Not where setgroups is denied (a rootless user namespace,
/// which has no other groups to give) nor where the process is not root (it may not call it).
pub fn reset_groups(id: &Identity) -> Result<()> {
    use nix::unistd::{setgroups, Gid};
    let denied = std::fs::read_to_string("/proc/self/setgroups").map(|s| s.trim() == "deny").unwrap_or(false);
    if denied || !nix::unistd::geteuid().is_root() {
        return Ok(());
    }
    let gs: Vec<Gid> = id.groups.iter().map(|g| Gid::from_raw(*g)).collect();
    setgroups(&gs).ctx(Step::User, format!("groups {:?}", id.groups))
}

pub fn set_rlimits(limits: &[Rlimit]) -> Result<()> {
    for l in limits {
        crate::log::step(Step::Rlimit, format!("{}={}:{}", l.name, l.soft, l.hard));
        let r = libc::rlimit { rlim_cur: l.soft, rlim_max: l.hard };
        if unsafe { libc::setrlimit(l.resource as _, &r) } != 0 {
            let e = nix::errno::Errno::last();
            let mut cur = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
            unsafe { libc::getrlimit(l.resource as _, &mut cur) };
            let err = Error::sys(Step::Rlimit, l.name, e);
            return Err(if e == nix::errno::Errno::EPERM && l.hard > cur.rlim_max {
                err.hint(format!(
                    "raising the hard limit above {} needs CAP_SYS_RESOURCE, which this process lacks",
                    cur.rlim_max
                ))
            } else {
                err
            });
        }
    }
    Ok(())
}

/// The environment the command gets: ours (unless `--clear-env`), then `--env` in order (a NAME alone
/// unsets it, as Docker's ReplaceOrAppendEnvValues); PATH and HOME defaulted.
pub fn environment(spec: &RunSpec, home: Option<&str>) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = if spec.clear_env {
        vec![]
    } else {
        std::env::vars_os().filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))).collect()
    };
    for (k, v) in &spec.env {
        env.retain(|(ek, _)| ek != k);
        if let Some(v) = v {
            env.push((k.clone(), v.clone()));
        }
    }
    if !env.iter().any(|(k, _)| k == "PATH") {
        env.push(("PATH".into(), DEFAULT_PATH.into()));
    }
    // HOME follows the user (as Docker sets it) unless --env gave one explicitly; a user the image's
    // /etc/passwd does not list gets `/`, as in Docker.
    let home = Some(home.unwrap_or("/"));
    let given = spec.env.iter().rev().find(|(k, _)| k == "HOME").is_some_and(|(_, v)| v.is_some());
    if let (false, Some(h)) = (given, home) {
        if spec.user.is_some() || !env.iter().any(|(k, _)| k == "HOME") {
            env.retain(|(k, _)| k != "HOME");
            env.push(("HOME".into(), h.into()));
        }
    }
    // Defaulted only if no --env named it: `--env HOSTNAME` (a NAME alone) unsets even this one, as
    // Docker's daemon drops its own default for it.
    let named = env.iter().any(|(k, _)| k == "HOSTNAME") || spec.env.iter().any(|(k, _)| k == "HOSTNAME");
    if let (false, Some(h)) = (named, &spec.hostname) {
        env.push(("HOSTNAME".into(), h.clone()));
    }
    env
}

/// `--workdir`: made when the image lacks it (see [`make_workdir`]), then entered. Runs in the new root,
/// before the user switch.
pub fn chdir(dir: Option<&Path>) -> Result<()> {
    if let Some(d) = dir {
        crate::log::step(Step::Workdir, d.display());
        match nix::unistd::chdir(d) {
            Err(nix::errno::Errno::ENOENT) => {
                make_workdir(d)?;
                nix::unistd::chdir(d).ctx(Step::Workdir, d.display())?;
            }
            r => r.ctx(Step::Workdir, d.display())?,
        }
    }
    Ok(())
}

/// The workdir with its missing parents, 0755 and root's, as Docker makes it. With `--read-only` this
/// runs before the root is made read-only (Docker makes it before the container starts, too).
pub fn make_workdir(d: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    match std::fs::metadata(d) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::DirBuilder::new().recursive(true).mode(0o755).create(d).ctx(Step::Workdir, d.display())
        }
        _ => Ok(()),
    }
}

/// Find the command as the shell would, in the new root with the command's PATH. Not found → 127,
/// found but not executable → 126.
pub fn find_command(cmd: &std::ffi::OsStr, env: &[(String, String)]) -> Result<PathBuf> {
    let shown = cmd.to_string_lossy();
    let executable = |p: &Path| -> Option<bool> {
        let md = std::fs::metadata(p).ok()?;
        Some(md.is_file() && md.permissions().mode() & 0o111 != 0)
    };
    if cmd.as_encoded_bytes().contains(&b'/') {
        return match executable(Path::new(cmd)) {
            Some(true) => Ok(PathBuf::from(cmd)),
            Some(false) => Err(Error::new(Step::Exec, shown, "Permission denied").code(EXIT_CANNOT_EXEC)),
            None => Err(Error::new(Step::Exec, shown, "No such file or directory").code(EXIT_NOT_FOUND)),
        };
    }
    let path = env.iter().find(|(k, _)| k == "PATH").map(|(_, v)| v.as_str()).unwrap_or(DEFAULT_PATH);
    let mut denied = None;
    for dir in path.split(':').filter(|d| !d.is_empty()) {
        let p = Path::new(dir).join(cmd);
        match executable(&p) {
            Some(true) => return Ok(p),
            Some(false) => denied = denied.or(Some(p)),
            None => {}
        }
    }
    match denied {
        Some(p) => Err(Error::new(Step::Exec, p.display(), "Permission denied").code(EXIT_CANNOT_EXEC)),
        None => Err(Error::new(Step::Exec, shown, "command not found").code(EXIT_NOT_FOUND)),
    }
}

/// Every fd above 2 is closed at exec except `preserve` of them (3..3+N): a leaked host fd is a way out of
/// the container (CVE-2024-21626). CLOSE_RANGE_CLOEXEC rather than closing, because `report_fd` (the pipe
/// that tells our parent about a failed exec) must stay open until execve succeeds.
pub fn close_fds_on_exec(preserve: u32, report_fd: i32) -> Result<()> {
    let first = 3 + preserve;
    crate::log::step(Step::Fds, format!("keeping 0-{}", first - 1));
    let r = unsafe { libc::syscall(libc::SYS_close_range, first, u32::MAX, libc::CLOSE_RANGE_CLOEXEC) };
    if r != 0 {
        return Err(Error::sys(Step::Fds, format!("{first}-"), nix::errno::Errno::last()));
    }
    for fd in (3..first as i32).filter(|fd| *fd != report_fd) {
        if unsafe { libc::fcntl(fd, libc::F_SETFD, 0) } != 0 {
            return Err(Error::sys(Step::Fds, format!("fd {fd}"), nix::errno::Errno::last())
                .hint("--preserve-fds N passes fds 3..3+N-1, which must be open"));
        }
    }
    Ok(())
}

/// execve; only returns on failure, mapped to 126 (cannot execute) or 127 (vanished).
pub fn exec(path: &Path, argv: &[std::ffi::OsString], env: &[(String, String)]) -> Error {
    let c = |s: &[u8]| CString::new(s).unwrap_or_default();
    let cpath = c(path.as_os_str().as_encoded_bytes());
    let cargv: Vec<CString> = argv.iter().map(|a| c(a.as_encoded_bytes())).collect();
    let cenv: Vec<CString> = env.iter().map(|(k, v)| c(format!("{k}={v}").as_bytes())).collect();
    // execve keeps ignored signals, and a caller may have ignored SIGPIPE (a Rust parent does): give the
    // command the default, as a shell would (otherwise `cmd | head` never stops cmd).
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let e = nix::unistd::execve(&cpath, &cargv, &cenv).unwrap_err();
    let code = if e == nix::errno::Errno::ENOENT { EXIT_NOT_FOUND } else { EXIT_CANNOT_EXEC };
    Error::sys(Step::Exec, path.display(), e).code(code)
}
