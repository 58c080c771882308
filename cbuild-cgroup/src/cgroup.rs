//! Placement: NAME lives at `cbuild/<NAME>` under each hierarchy's base (every v1 controller mount, plus
//! the v2 tree — the unified one on hybrid hosts). Creating, joining, listing processes, killing and
//! removing, each over all hierarchies at once, with undo when a step fails halfway.

use crate::controllers::{self, cpuset, Writer};
use crate::error::{Error, Result};
use crate::fsutil;
use crate::layout::{self, Host, V2_WANTED};
use crate::limits::Limits;
use crate::log;
use crate::supervise::Blocked;
use nix::sys::signal::Signal;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The directory under each hierarchy's base that holds our cgroups.
pub const PARENT: &str = "cbuild";

/// The contract's NAME rule, checked before a name reaches a path.
pub fn check_name(name: &str) -> Result<()> {
    let b = name.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= 64
        && b[0].is_ascii_alphanumeric()
        && b.iter().all(|&c| c.is_ascii_alphanumeric() || c == b'_' || c == b'.' || c == b'-');
    if !ok {
        return Err(Error::bad("name", format!("{name:?}"), "want [A-Za-z0-9][A-Za-z0-9_.-]{0,63}"));
    }
    if is_kernel_file_name(name) {
        return Err(Error::bad("name", format!("{name:?}"), "is the name of a cgroup's own control file")
            .with_hint("cgroup files are `<controller>.<knob>`, `tasks`, `notify_on_release`, `release_agent`"));
    }
    Ok(())
}

/// Control-file name prefixes, v1 and v2 (`cgroup.procs`, `memory.max`, `cpu.cfs_quota_us`, ...).
const FILE_PREFIXES: &[&str] = &[
    "cgroup",
    "cpu",
    "cpuacct",
    "cpuset",
    "memory",
    "io",
    "blkio",
    "pids",
    "hugetlb",
    "rdma",
    "misc",
    "dmem",
    "freezer",
    "devices",
    "net_cls",
    "net_prio",
    "perf_event",
    // Not a controller: `irq.pressure` (PSI with CONFIG_IRQ_TIME_ACCOUNTING, Linux 6.2).
    "irq",
];

/// Whether NAME would collide with a file the kernel puts in `cbuild/` (in some hierarchy, on some
/// kernel): mkdir then fails with EEXIST, which would read as "NAME exists" and send the next write into
/// `cbuild/cgroup.procs/...`. Refused on every host alike, so a NAME that works here works everywhere.
fn is_kernel_file_name(name: &str) -> bool {
    matches!(name, "tasks" | "notify_on_release" | "release_agent")
        || name.split_once('.').is_some_and(|(prefix, _)| FILE_PREFIXES.contains(&prefix))
}

/// A cgroup NAME: its directory in every hierarchy of the host, in `host.hierarchies` order.
#[derive(Debug)]
pub struct Cgroup {
    pub name: String,
    pub dirs: Vec<PathBuf>,
}

/// What a `create` did, so a later failure (exec) can take it back.
pub struct Created {
    pub cg: Cgroup,
    /// Directories this call made, oldest first.
    pub dirs: Vec<PathBuf>,
    /// Where the caller was before it joined, when it joined a cgroup this call made.
    back: Option<Vec<PathBuf>>,
    /// The files the caller joined through, still open.
    join_files: Vec<std::fs::File>,
    /// The lock: exclusive when this call created, shared when it joined an existing NAME
    /// (close-on-exec: `exec` releases it at execve).
    _lock: Option<std::fs::File>,
    /// What the limits overwrote in a NAME that existed: put back by `undo`, so an `exec` whose command
    /// then fails to start (or whose `--cgroup-fd` cannot be handed over) leaves a running container's
    /// limits as they were.
    limits: Option<Writer>,
}

impl Created {
    fn join_self(&mut self, host: &Host, join: Join) -> Result<()> {
        // Only directories this call made must be left again (to be removed) if a later step fails.
        if !self.dirs.is_empty() {
            self.back = Some(own_dirs(host)?);
        }
        log::step("join", format_args!("{} → {}", std::process::id(), self.cg.name));
        self.cg.join_self(host, join)
    }

    /// The cgroup, with this call's lock released (what `exec --rm` waits to remove).
    pub fn into_cgroup(self) -> Cgroup {
        self.cg
    }

    /// Move back, remove what was made. Failures are reported, not returned (an error is on its way).
    pub fn undo(self) {
        if let Some(w) = self.limits {
            w.restore();
        }
        if let Some(back) = self.back {
            for d in back {
                let file = if d.join("tasks").exists() { "tasks" } else { "cgroup.procs" };
                if let Err(e) = fsutil::write(&d.join(file), "0") {
                    log::warn(format!("undo: {e}"));
                }
            }
        }
        Undo { dirs: self.dirs }.run()
    }
}

/// Directories created by this invocation, removed newest first if a later step fails.
#[derive(Default)]
struct Undo {
    dirs: Vec<PathBuf>,
}

impl Undo {
    fn run(self) {
        for d in self.dirs.into_iter().rev() {
            if let Err(e) = fsutil::rmdir(&d) {
                // `cbuild/` may have gained a sibling from a concurrent invocation: that is fine.
                if e.errno() != Some(libc::EBUSY) && e.errno() != Some(libc::ENOTEMPTY) {
                    log::warn(format!("undo: {e}"));
                }
            }
        }
    }
}

/// Whether `create` moves the caller into NAME.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Join {
    /// Create (or reuse) and set limits only.
    No,
    /// Move the calling process into NAME in every hierarchy.
    All,
    /// Every hierarchy but the v2 tree, whose directory the caller hands to the next program instead
    /// (`exec --cgroup-fd`): the v2 move is the one that waits for an RCU grace period, and a child
    /// cloned into the group (CLONE_INTO_CGROUP) gets there without it. Rootless, the caller must be
    /// inside NAME first anyway (see `create`), so it joins everywhere.
    AllButV2,
}

/// How `create` treats a NAME that already exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IfExists {
    Fail,
    Reuse,
}

impl Cgroup {
    /// The paths for NAME (nothing is checked or created).
    pub fn at(host: &Host, name: &str) -> Result<Cgroup> {
        check_name(name)?;
        let dirs = host.hierarchies.iter().map(|h| h.base.join(PARENT).join(name)).collect();
        Ok(Cgroup { name: name.to_string(), dirs })
    }

    /// An existing NAME; "no such cgroup" otherwise.
    pub fn open(host: &Host, name: &str) -> Result<Cgroup> {
        let cg = Cgroup::at(host, name)?;
        if !cg.dirs.iter().any(|d| d.is_dir()) {
            return Err(Error::bad("open", name, "no such cgroup").with_hint("`cbuild-cgroup ls` lists them"));
        }
        Ok(cg)
    }

    /// The directory in the hierarchy holding `controller`.
    pub fn dir_of(&self, host: &Host, controller: &str) -> Option<controllers::Dir<'_>> {
        host.hierarchy_of(controller)
            .map(|i| controllers::Dir { path: &self.dirs[i], v2: host.hierarchies[i].version == 2 })
    }

    /// The directory in the v2 tree (pure v2, or the unified tree of a hybrid host).
    pub fn v2_dir(&self, host: &Host) -> Option<&Path> {
        host.v2().map(|i| self.dirs[i].as_path())
    }

    /// Create NAME in every hierarchy (or reuse it), apply `limits`, and with `join` move the calling
    /// (single-threaded) process into it. On failure, every value this call changed in an existing
    /// cgroup is put back, the process moves back where it was, and every directory it made is removed.
    ///
    /// Not root (a delegated v2 subtree), the order changes: the caller's own cgroup holds the caller,
    /// and v2 refuses to hand controllers to children of a cgroup with processes ("no internal
    /// processes"), so the caller first moves into NAME, then controllers are enabled, then limits set.
    ///
    /// `held` holds the stop signals blocked (the caller took it before this call): one that arrived by the
    /// end is a failure, undone as above, so a signal never leaves NAME half-made.
    pub fn create(
        host: &Host,
        name: &str,
        limits: &Limits,
        if_exists: IfExists,
        join: Join,
        held: &Blocked,
    ) -> Result<Created> {
        let cg = Cgroup::at(host, name)?;
        let join = if host.rootless && join == Join::AllButV2 { Join::All } else { join };
        // The common `exec` case, NAME exists everywhere: opening the files to join by is both the
        // existence check and half the join, so nothing is created or looked up twice. It holds the lock
        // shared until the join is done (exec closes it): a creator or `rm` (exclusive) is then never
        // half-way through NAME meanwhile, so a failing creator's undo cannot remove NAME under us.
        let mut shared = None;
        let mut ready = if join != Join::No && !host.rootless {
            shared = Some(lock(host, libc::LOCK_SH)?);
            cg.open_self_join(host, join)
        } else {
            None
        };
        // Anything else — making directories, filling a v1 cpuset, setting limits, joining — is done
        // under the exclusive lock, so two `exec NAME` at once do not see each other's half-made NAME (an
        // empty v1 cpuset refuses tasks with ENOSPC; a failing one's undo would remove the other's dirs).
        let lock = match ready {
            Some(_) => shared,
            None => {
                drop(shared);
                Some(lock(host, libc::LOCK_EX)?)
            }
        };
        if ready.is_none() && join != Join::No && !host.rootless {
            // Made by whoever held the lock before us?
            ready = cg.open_self_join(host, join);
        }
        if if_exists == IfExists::Fail {
            if let Some(d) = cg.dirs.iter().find(|d| d.exists()) {
                return Err(
                    Error::bad("mkdir", d.display(), "cgroup exists").with_hint("use `set` to change its limits")
                );
            }
        }
        let mut undo = Undo::default();
        let made = match ready {
            Some(_) => 0,
            None => match cg.make_dirs(host, &mut undo) {
                Ok(n) => n,
                Err(e) => {
                    undo.run();
                    return Err(e);
                }
            },
        };
        // Fail: a concurrent `create` of the same NAME may have won a mkdir since the check above.
        if if_exists == IfExists::Fail && made < cg.dirs.len() {
            undo.run();
            return Err(Error::bad("mkdir", &cg.name, "cgroup exists (created concurrently)"));
        }
        let mut c = Created { cg, dirs: undo.dirs, back: None, join_files: Vec::new(), _lock: lock, limits: None };
        let mut w = if made == c.cg.dirs.len() { Writer::fresh() } else { Writer::restoring() };
        let steps = |c: &mut Created, w: &mut Writer| -> Result<()> {
            if join != Join::No && host.rootless {
                c.join_self(host, join)?;
            }
            if host.rootless && made > 0 {
                for h in host.hierarchies.iter().filter(|h| h.version == 2 && !h.controllers.is_empty()) {
                    enable_controllers(&h.base, h)?;
                    enable_controllers(&h.base.join(PARENT), h)?;
                }
            }
            // Limits on a NAME that exists are applied under the shared host lock only: take NAME's own
            // lock as `set` does, so this and a concurrent `set` (or another such `exec`) apply one after
            // the other, never interleaved.
            let _name_lock = match ready.is_some() && !limits.is_empty() {
                true => Some(lock_name(&c.cg)?),
                false => None,
            };
            controllers::apply(host, &c.cg.dirs, limits, w)?;
            match &ready {
                Some(files) => {
                    log::step("join", format_args!("{} → {}", std::process::id(), c.cg.name));
                    for (path, f) in files {
                        fsutil::write_file(f, path, "0")?;
                    }
                }
                None if join != Join::No && !host.rootless => c.join_self(host, join)?,
                None => {}
            }
            // Asked to stop while NAME was being made: fail, so all of it is taken back before the signal lands.
            held.check(&c.cg.name)
        };
        match steps(&mut c, &mut w) {
            Ok(()) => {
                // Kept open (close-on-exec): the exec that follows closes them, saving a close each.
                c.join_files = ready.map(|v| v.into_iter().map(|(_, f)| f).collect()).unwrap_or_default();
                c.limits = Some(w);
                Ok(c)
            }
            Err(e) => {
                w.restore();
                c.undo();
                Err(e)
            }
        }
    }

    /// mkdir `cbuild/` and `cbuild/NAME` in each hierarchy; returns how many NAME dirs were made.
    /// The common case — NAME exists everywhere — costs one failing mkdir per hierarchy.
    fn make_dirs(&self, host: &Host, undo: &mut Undo) -> Result<usize> {
        let mut made = 0;
        for (h, dir) in host.hierarchies.iter().zip(&self.dirs) {
            let parent = dir.parent().expect("NAME has a parent");
            let cpuset_v1 = h.version == 1 && h.has("cpuset");
            let mut attempts = 0;
            let created = loop {
                match fsutil::mkdir(dir) {
                    // No `cbuild/` yet — or a concurrent failing invocation just removed it as empty.
                    Err(e) if e.errno() == Some(libc::ENOENT) && attempts < 3 => {
                        attempts += 1;
                        if fsutil::mkdir(parent)? {
                            undo.dirs.push(parent.to_path_buf());
                            if cpuset_v1 {
                                cpuset::inherit_v1(parent)?;
                            }
                        }
                    }
                    r => break r?,
                }
            };
            if !created {
                continue;
            }
            undo.dirs.push(dir.clone());
            made += 1;
            if cpuset_v1 {
                cpuset::inherit_v1(dir)?;
            }
            if h.version == 2 && !h.controllers.is_empty() && !host.rootless {
                // Controllers reach NAME only if enabled in every ancestor's subtree_control (a
                // controller enabled after NAME exists still reaches it).
                enable_controllers(&h.base, h)?;
                enable_controllers(parent, h)?;
            }
        }
        Ok(made)
    }

    /// Move `pid` into NAME in every hierarchy: one write to each cgroup.procs.
    pub fn join(&self, pid: i32) -> Result<()> {
        let files: Vec<PathBuf> = self.dirs.iter().map(|d| d.join("cgroup.procs")).collect();
        self.write_join(&files, pid, &pid.to_string())
    }

    /// Move the calling process, which must be single-threaded, into NAME in every hierarchy.
    ///
    /// Why not just cgroup.procs: migrating a whole thread group write-locks the kernel-global
    /// cgroup_threadgroup_rwsem, and taking that lock after a quiet moment waits for an RCU grace period
    /// (~10 ms at HZ=250) — the whole cost of `exec`. Moving only the calling thread ("0" written to v1's
    /// `tasks`) skips that lock, and for a single-threaded process it moves everything. v2 allows thread
    /// moves only inside a threaded subtree, so the v2 tree still takes cgroup.procs.
    pub fn join_self(&self, host: &Host, join: Join) -> Result<()> {
        let files: Vec<PathBuf> = self.self_join_files(host, join).collect();
        self.write_join(&files, 0, "0")
    }

    /// The file the caller joins NAME through in each hierarchy (see [`Cgroup::join_self`]).
    fn self_join_files<'a>(&'a self, host: &'a Host, join: Join) -> impl Iterator<Item = PathBuf> + 'a {
        host.hierarchies
            .iter()
            .zip(&self.dirs)
            .filter(move |(h, _)| !(join == Join::AllButV2 && h.version == 2))
            .map(|(h, dir)| dir.join(if h.version == 1 { "tasks" } else { "cgroup.procs" }))
    }

    /// Those files opened for writing, or None if any cannot be (NAME is missing somewhere).
    fn open_self_join(&self, host: &Host, join: Join) -> Option<Vec<(PathBuf, std::fs::File)>> {
        // The v2 group is not joined with AllButV2, but it must exist too (on pure v2 it is all there is).
        if join == Join::AllButV2 && !self.v2_dir(host).is_none_or(Path::is_dir) {
            return None;
        }
        self.self_join_files(host, join)
            .map(|p| std::fs::OpenOptions::new().write(true).open(&p).ok().map(|f| (p, f)))
            .collect()
    }

    fn write_join(&self, files: &[PathBuf], pid: i32, value: &str) -> Result<()> {
        for procs in files {
            fsutil::write(procs, value).map_err(|e| match e.errno() {
                Some(libc::ESRCH) => Error::bad("join", procs.display(), format!("no process {pid}")),
                _ => e,
            })?;
        }
        Ok(())
    }

    /// Every process in NAME or below it, in any hierarchy (sorted, unique).
    pub fn procs(&self) -> Result<Vec<i32>> {
        let mut all = Vec::new();
        for dir in &self.dirs {
            walk(dir, &mut |d| {
                if let Some(text) = fsutil::read_opt(&d.join("cgroup.procs"))? {
                    all.extend(text.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
                }
                Ok(())
            })?;
        }
        all.sort_unstable();
        all.dedup();
        Ok(all)
    }

    /// Send signal `sig` (a number: real-time signals have no [`Signal`]) to every process. SIGKILL:
    /// `cgroup.kill` where the kernel has it (≥ 5.14, v2 or the hybrid unified tree), then a
    /// freeze-kill-thaw loop over every hierarchy until none is left, so processes forking during the
    /// kill and processes only in a v1 hierarchy are caught too.
    pub fn kill(&self, host: &Host, sig: libc::c_int) -> Result<usize> {
        let first = self.procs()?;
        if sig != libc::SIGKILL {
            for &p in &first {
                log::step("kill", format_args!("{p} {}", signal_name(sig)));
                signal(p, sig);
            }
            return Ok(first.len());
        }
        match self.kill_until(host, Instant::now() + KILL_WAIT)? {
            0 => Ok(first.len()),
            left => Err(self.survived(left)),
        }
    }

    /// SIGKILL everything in NAME and wait until none is left, or until `deadline`: how many are left.
    fn kill_until(&self, host: &Host, deadline: Instant) -> Result<usize> {
        if let Some(v2) = self.v2_dir(host) {
            let ck = v2.join("cgroup.kill");
            if ck.exists() {
                fsutil::write(&ck, "1")?;
            }
        }
        let freezer = self.freezer(host);
        loop {
            let left = self.procs()?;
            if left.is_empty() || Instant::now() > deadline {
                return Ok(left.len());
            }
            if let Some(f) = &freezer {
                let _ = f.freeze(deadline);
            }
            for p in self.procs()? {
                signal(p, libc::SIGKILL);
            }
            if let Some(f) = &freezer {
                let _ = f.thaw();
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn survived(&self, left: usize) -> Error {
        Error::bad("kill", &self.name, format!("{left} processes survived SIGKILL for {} s", KILL_WAIT.as_secs()))
            .with_hint("a process in uninterruptible sleep (D state) dies when its I/O ends")
    }

    fn freezer(&self, host: &Host) -> Option<Freezer> {
        if let Some(v2) = self.v2_dir(host) {
            let f = v2.join("cgroup.freeze");
            if f.exists() {
                return Some(Freezer { file: f, v2: true });
            }
        }
        self.dir_of(host, "freezer").map(|d| Freezer { file: d.file("freezer.state"), v2: false })
    }

    /// Remove NAME (and any cgroups below it) from every hierarchy. Refuses while processes live,
    /// unless `force`, which kills them first.
    pub fn remove(&self, host: &Host, force: bool) -> Result<()> {
        let deadline = Instant::now() + KILL_WAIT;
        if force {
            {
                let _lock = lock(host, libc::LOCK_EX)?;
                if held_while(|| self.rmdir_if_empty())? {
                    return Ok(());
                }
            }
            // The kill outside the lock: a process in uninterruptible sleep can take seconds to die,
            // and every other start on the host waits for this lock meanwhile.
            if !self.procs()?.is_empty() {
                match self.kill_until(host, deadline)? {
                    0 => {}
                    left => return Err(self.survived(left)),
                }
            }
        }
        // From the look for processes to the last rmdir: every join holds this lock shared, so none
        // lands in between, where it would make one rmdir fail after others had succeeded; nor is an
        // `exec` or `create` between its mkdir and its join meanwhile.
        let mut _held = lock(host, libc::LOCK_EX)?;
        loop {
            let procs = self.procs()?;
            if procs.is_empty() {
                break;
            }
            if !force {
                return Err(Error::bad("rm", &self.name, format!("{} live process(es) inside", procs.len()))
                    .with_hint("`rm --force` kills them first, or `cbuild-cgroup kill` them"));
            }
            // Joined since the kill above (each join held the lock shared in between). Killed here, where
            // nothing else can join; a running process is gone within the short wait, so a stream of
            // joiners cannot keep `rm` from finishing. One that takes longer (uninterruptible sleep:
            // seconds) is waited for with the lock let go, as above, and the look starts over: the look
            // and the rmdirs stay in one hold of the lock, which is all the race needs.
            if self.kill_until(host, (Instant::now() + KILL_WAIT_LOCKED).min(deadline))? == 0 {
                continue;
            }
            drop(_held);
            match self.kill_until(host, deadline)? {
                0 => {}
                left => return Err(self.survived(left)),
            }
            _held = lock(host, libc::LOCK_EX)?;
        }
        held_while(|| self.rmdirs())
    }

    /// Every directory of NAME, children before parents, in every hierarchy.
    fn rmdirs(&self) -> Result<()> {
        let mut first_err = None;
        for dir in &self.dirs {
            if !dir.exists() {
                continue;
            }
            let mut order = Vec::new();
            if let Err(e) = walk(dir, &mut |d| {
                order.push(d.to_path_buf());
                Ok(())
            }) {
                first_err.get_or_insert(e);
                continue;
            }
            // Children before parents.
            for d in order.iter().rev() {
                if let Err(e) = rmdir_retry(d) {
                    first_err.get_or_insert(e);
                }
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

impl Cgroup {
    /// The common end of a container — nothing left inside, no child cgroups — costs one rmdir per
    /// hierarchy, without first reading every cgroup.procs. Called under `remove`'s lock. Returns false
    /// at the first hierarchy where NAME is busy (processes or child cgroups): `remove` does the rest.
    fn rmdir_if_empty(&self) -> Result<bool> {
        for dir in &self.dirs {
            match fsutil::rmdir(dir) {
                Ok(()) => {}
                Err(e) if e.errno() == Some(libc::ENOENT) => {}
                Err(e) if e.errno() == Some(libc::EBUSY) || e.errno() == Some(libc::ENOTEMPTY) => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }
}

/// Run `rmdirs` with the stop signals held: a signal must not end `rm` with NAME gone from some
/// hierarchies and not others. A removal cannot be taken back, so one that arrived meanwhile is not a
/// failure: it lands once the rmdirs are done (after the error line, if they failed).
fn held_while<T>(rmdirs: impl FnOnce() -> Result<T>) -> Result<T> {
    let held = crate::supervise::hold("rm")?;
    match rmdirs() {
        Ok(v) => held.restore().map(|()| v),
        Err(e) => Err(e.holding(held)),
    }
}

/// Remove the shared `cbuild/` parent from every hierarchy where no NAME is left under it. `rm` leaves
/// it for the next container, as Docker leaves `docker/`: making and removing it with every container
/// would double the cgroups a lone container start makes (nine hierarchies on a hybrid host).
/// Returns the dirs removed. rmdir fails harmlessly (EBUSY, ENOTEMPTY) where a NAME is still there;
/// creators hold this lock exclusively and joiners shared, so none of them is between seeing
/// `cbuild/` and finishing with it.
pub fn prune(host: &Host) -> Result<Vec<PathBuf>> {
    let _lock = lock(host, libc::LOCK_EX)?;
    let mut removed = Vec::new();
    for h in &host.hierarchies {
        let parent = h.base.join(PARENT);
        if std::fs::remove_dir(&parent).is_ok() {
            removed.push(parent);
        }
    }
    Ok(removed)
}

/// Names under `cbuild/` in any hierarchy.
pub fn list(host: &Host) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for h in &host.hierarchies {
        let parent = h.base.join(PARENT);
        let Ok(rd) = std::fs::read_dir(&parent) else { continue };
        for e in rd.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                names.push(e.file_name().to_string_lossy().into_owned());
            }
        }
    }
    names.sort();
    names.dedup();
    Ok(names)
}

/// The caller's current cgroup directory in each hierarchy (to move back to when `exec` fails after
/// joining a cgroup it created, so that cgroup can be removed).
pub fn own_dirs(host: &Host) -> Result<Vec<PathBuf>> {
    let own = layout::parse_proc_cgroup(&fsutil::read(Path::new("/proc/self/cgroup"))?);
    Ok(host
        .hierarchies
        .iter()
        .map(|h| {
            let rel = own
                .iter()
                .find(|(k, _)| {
                    if h.version == 2 {
                        k == "0"
                    } else {
                        let mut ks: Vec<&str> = k.split(',').filter(|c| !c.starts_with("name=")).collect();
                        ks.sort();
                        ks == h.controllers.iter().map(String::as_str).collect::<Vec<_>>()
                    }
                })
                .map(|(_, p)| p.clone())
                .unwrap_or_else(|| "/".into());
            h.mount.join(rel.trim_start_matches('/'))
        })
        .collect())
}

/// The lock serializing changes to the set of NAMEs: a flock(2) on the first hierarchy's base directory
/// (a cgroup directory: every invocation on this host finds the same one, root or not). Exclusive
/// (`LOCK_EX`) from before the first mkdir until after the join, and for `rm` from its look for
/// processes to its last rmdir; shared (`LOCK_SH`) for every join of a NAME that
/// exists (`exec`, `exec --existing`, `add`) and for `set`. The kernel drops it when the fd closes (at
/// exec: close-on-exec).
pub(crate) fn lock(host: &Host, how: libc::c_int) -> Result<std::fs::File> {
    flock_dir(&host.hierarchies[0].base, how)
}

/// flock(2) on a directory, retried when a signal interrupts the wait.
fn flock_dir(dir: &Path, how: libc::c_int) -> Result<std::fs::File> {
    let f = std::fs::File::open(dir).map_err(|e| Error::sys("lock", dir.display(), e))?;
    loop {
        // SAFETY: flock on an fd we own.
        if unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&f), how) } == 0 {
            return Ok(f);
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(Error::sys("lock", dir.display(), e));
        }
    }
}

/// NAME's own lock, for `set`: an exclusive flock(2) on its directory in the first hierarchy that has it.
pub(crate) fn lock_name(cg: &Cgroup) -> Result<std::fs::File> {
    flock_dir(cg.dirs.iter().find(|d| d.is_dir()).unwrap_or(&cg.dirs[0]), libc::LOCK_EX)
}

/// Make sure `dir/cgroup.subtree_control` has every controller we use that `dir` offers.
fn enable_controllers(dir: &Path, h: &layout::Hierarchy) -> Result<()> {
    let have = fsutil::read(&dir.join("cgroup.subtree_control"))?;
    let have: Vec<&str> = have.split_whitespace().collect();
    let missing: Vec<String> =
        V2_WANTED.iter().filter(|c| h.has(c) && !have.contains(c)).map(|c| format!("+{c}")).collect();
    if missing.is_empty() {
        return Ok(());
    }
    fsutil::write(&dir.join("cgroup.subtree_control"), &missing.join(" ")).map_err(|e| {
        if e.errno() == Some(libc::EBUSY) {
            e.with_hint("a v2 cgroup with processes cannot hand controllers to children; start from a leaf cgroup")
        } else {
            e
        }
    })
}

/// Visit `dir` and every cgroup below it, parents first.
fn walk(dir: &Path, f: &mut dyn FnMut(&Path) -> Result<()>) -> Result<()> {
    if !dir.is_dir() {
        return Ok(());
    }
    f(dir)?;
    let rd = std::fs::read_dir(dir).map_err(|e| Error::sys("read", dir.display(), e))?;
    for e in rd.flatten() {
        if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            walk(&e.path(), f)?;
        }
    }
    Ok(())
}

/// rmdir, retrying briefly on EBUSY: a killed task leaves its cgroup a moment after it is gone from
/// cgroup.procs.
fn rmdir_retry(d: &Path) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        match fsutil::rmdir(d) {
            Err(e) if e.errno() == Some(libc::EBUSY) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10))
            }
            Err(e) if e.errno() == Some(libc::ENOENT) => return Ok(()),
            r => return r,
        }
    }
}

/// How long SIGKILLed processes get to be gone: a process in uninterruptible sleep dies only when its
/// I/O ends.
const KILL_WAIT: Duration = Duration::from_secs(10);

/// How long `rm --force` waits for them holding the host-wide lock, which every start needs: long
/// enough for a running process to exit, short enough not to be noticed.
const KILL_WAIT_LOCKED: Duration = Duration::from_millis(50);

fn signal(pid: i32, sig: libc::c_int) {
    // ESRCH: it exited meanwhile, which is what we want.
    // SAFETY: kill(2) takes plain numbers.
    let _ = unsafe { libc::kill(pid, sig) };
}

/// `SIGTERM`, or `SIGRTMIN+N` for a real-time signal (which has no [`Signal`]).
pub fn signal_name(sig: libc::c_int) -> String {
    match Signal::try_from(sig) {
        Ok(s) => s.as_str().to_string(),
        Err(_) if sig >= crate::SIGRTMIN => format!("SIGRTMIN+{}", sig - crate::SIGRTMIN),
        Err(_) => sig.to_string(),
    }
}

struct Freezer {
    file: PathBuf,
    v2: bool,
}

impl Freezer {
    /// Freeze, and wait for it to settle for at most 200 ms, and not past `deadline` (a task the
    /// freezer cannot reach, in D state or frozen by another freezer, never lets it settle).
    fn freeze(&self, deadline: Instant) -> Result<()> {
        fsutil::write(&self.file, if self.v2 { "1" } else { "FROZEN" })?;
        // v1 passes through FREEZING; v2 reports in cgroup.events. Wait briefly for it to settle so
        // nothing forks between reading the list and killing it.
        let deadline = deadline.min(Instant::now() + Duration::from_millis(200));
        while Instant::now() < deadline {
            let done = if self.v2 {
                fsutil::read_opt(&self.file.with_file_name("cgroup.events"))?
                    .is_some_and(|e| fsutil::kv(&e, "frozen") == Some(1))
            } else {
                fsutil::read(&self.file)?.trim() == "FROZEN"
            };
            if done {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(())
    }

    fn thaw(&self) -> Result<()> {
        fsutil::write(&self.file, if self.v2 { "0" } else { "THAWED" })
    }
}

#[cfg(test)]
mod tests {
    use super::check_name;

    #[test]
    fn names() {
        for ok in ["web", "a", "A1_b.c-d", &"x".repeat(64)] {
            assert!(check_name(ok).is_ok(), "{ok}");
        }
        for ok in ["memory", "cpu", "cgroups.x", "x.memory.max", "tasks2"] {
            assert!(check_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", ".a", "a/b", "..", "a b", "a\0b", &"x".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        for kernel in ["cgroup.procs", "memory.max", "cpu.max", "cpuset.cpus", "pids.max", "tasks", "io.max"] {
            let e = check_name(kernel).unwrap_err();
            assert!(e.to_string().contains("control file"), "{kernel}: {e}");
        }
    }
}
