//! `mount` and `umount`: checks first, then create what is missing, then mount, undoing everything this
//! invocation did if any step fails.
//!
//! Two ways to hand overlay its layers:
//! - the new mount API (kernel ≥ 6.8): `fsopen("overlay")`, one `fsconfig(lowerdir+)` per layer,
//!   `fsmount`, `move_mount`. No length limit, no escaping, and the kernel explains a refusal in the
//!   fs_context log, which we read back into the error line;
//! - classic mount(2) (older kernels, or `CBUILD_OVERLAY_FORCE_LEGACY=1` / `--legacy-api`): all options
//!   in one string that must fit in a page. When the lower dirs do not fit, cbuild shortens them as
//!   Docker's overlay2 does with its `l/` symlinks, but without writing 500 symlinks: it opens each layer
//!   (`O_PATH`), chdirs to /proc/self/fd and passes `lowerdir=3:4:5:...`, which the kernel resolves
//!   through the fds. mountinfo then shows only those numbers, so the layer list is written to an aux
//!   dir `<state>/.overlay/<id>/lower` and the aux dir is the mount's source; `inspect` and `ls` read it
//!   back, `umount` removes it.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::sys::signal::{sigprocmask, SigSet, SigmaskHow, Signal};
use rustix::fs::{Mode, OFlags, CWD};
use rustix::mount::{FsMountFlags, FsOpenFlags, MountAttrFlags, MountFlags, MoveMountFlags, UnmountFlags};

use crate::error::{one_line, p, verbose::step, Error, Reason, Result};
use crate::fsutil;
use crate::mountinfo;

/// The kernel's limit on lower layers (OVL_MAX_STACK in fs/overlayfs). Used only to explain an EINVAL
/// from mount(2), which cannot say why; the new API's log names the limit itself.
pub const KERNEL_MAX_LOWER: usize = 500;

/// Environment switch forcing classic mount(2), so the path older kernels take is testable on a new one.
pub const FORCE_LEGACY_ENV: &str = "CBUILD_OVERLAY_FORCE_LEGACY";

/// The file in an aux dir listing the lower layers (one per line, top first) of a mount(2) mount whose
/// lowerdir holds fd numbers.
pub const LOWER_LIST: &str = "lower";

const PROC_FD: &str = "/proc/self/fd";

/// Source shown in mountinfo for mounts that need no aux dir.
pub const SOURCE: &str = "cbuild-overlay";

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Api {
    /// New API when the kernel has `lowerdir+` (≥ 6.8), else mount(2).
    Auto,
    New,
    Legacy,
}

#[derive(Debug, Clone)]
pub struct MountRequest {
    /// Lower dirs, top first.
    pub lower: Vec<PathBuf>,
    pub upper: Option<PathBuf>,
    pub work: Option<PathBuf>,
    /// Where to mount; ignored with `detached`.
    pub target: PathBuf,
    /// Do not attach the overlay anywhere: return it as a detached mount fd (`mount --fd N -- CMD`), to be
    /// attached by whoever receives it (`cbuild-ns run --rootfs-fd N`) and gone when the last holder is.
    pub detached: bool,
    /// `Some(size)` puts upper and work on a fresh tmpfs (size as tmpfs takes it: `64m`, `10%`).
    pub tmpfs_upper: Option<Option<String>>,
    pub volatile: bool,
    pub index: bool,
    pub redirect_dir: bool,
    pub metacopy: bool,
    pub userxattr: bool,
    pub api: Api,
    /// `<state>`, where the aux dir goes when one is needed.
    pub state_dir: PathBuf,
    /// `--rm` (with `detached`): upper and work must be new, and go once this process (the command it
    /// becomes) has exited ([`crate::discard`]).
    pub discard: bool,
}

/// What was mounted, for `-v` and the tests.
#[derive(Debug)]
pub struct Mounted {
    pub api: Api,
    pub aux: Option<PathBuf>,
    /// The detached mount, when `detached` was asked.
    pub fd: Option<OwnedFd>,
    /// What this call made, kept (disarmed) for a caller that must take it all back after all.
    undo: Undo,
}

impl Mounted {
    /// Undo everything the mount made, newest first, as a failed mount would have: for a detached
    /// overlay whose command could not be executed, that is the dirs it created (upper and work whole)
    /// and what overlay made in a work dir that was already there (`work/work`, `work/index`). Close
    /// the detached mount first ([`Mounted::fd`]): it holds the work dir while it lives.
    pub fn take_back(mut self) {
        self.undo.armed = true;
    }
}

/// Checked, absolute inputs.
#[derive(Clone)]
struct Plan {
    lower: Vec<PathBuf>,
    upper: Option<PathBuf>,
    work: Option<PathBuf>,
    target: PathBuf,
}

#[derive(Debug)]
enum UndoStep {
    Rmdir(PathBuf),
    /// A dir with what overlay put in it (the upper and work dirs this call created, `work/work`).
    RmAll(PathBuf),
    Umount(PathBuf),
    Unlink(PathBuf),
    /// `<state>/.overlay` and the dirs above it this call made: removed only if no other mount's aux dir
    /// is in it by now (a concurrent mount), never an error (see [`remove_base`]).
    RemoveBase(PathBuf),
}

/// Everything this invocation made, undone in reverse order unless disarmed. Undo failures are reported
/// and do not change the exit code (the contract's "failing cleanly").
#[derive(Debug, Default)]
struct Undo {
    steps: Vec<UndoStep>,
    armed: bool,
}

impl Undo {
    fn push(&mut self, s: UndoStep) {
        self.armed = true;
        self.steps.push(s);
    }

    /// Undo now the steps pushed after the first `keep` (a temporary the rest of the work no longer needs).
    fn run_from(&mut self, keep: usize) {
        let tail = Undo { steps: self.steps.split_off(keep), armed: true };
        drop(tail);
    }
}

impl Drop for Undo {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        while let Some(s) = self.steps.pop() {
            let (what, path, r) = match &s {
                UndoStep::RemoveBase(b) => {
                    remove_base(b);
                    continue;
                }
                UndoStep::Rmdir(d) => ("rmdir", d, std::fs::remove_dir(d)),
                // Gone already is removed (overlay makes `index` only with index=on).
                UndoStep::RmAll(d) => ("rm", d, crate::discard::remove_tree(d)),
                UndoStep::Unlink(f) => ("unlink", f, std::fs::remove_file(f)),
                UndoStep::Umount(m) => {
                    ("umount", m, rustix::mount::unmount(m, UnmountFlags::DETACH).map_err(Into::into))
                }
            };
            step(&format!("undo {what}"), p(path));
            if let Err(e) = r {
                eprintln!("cbuild-overlay: undo {what}: {}: {e}", one_line(&p(path)));
            }
        }
    }
}

/// The signals that end a process by default and are sent to stop one (Ctrl-C, kill, a closed terminal),
/// and USR1/USR2, which end it too: a runtime forwards all six to a chain still setting up (cbuild-run
/// does), and one landing mid-mount must not leave the upper and work dirs behind.
pub(crate) const STOP_SIGNALS: [Signal; 6] =
    [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP, Signal::SIGQUIT, Signal::SIGUSR1, Signal::SIGUSR2];

/// Holds [`STOP_SIGNALS`] blocked while mount makes things, so a Ctrl-C or `kill` cannot end the process
/// between steps with a tmpfs, an aux dir or created dirs left behind. Dropped on failure, it restores the
/// old mask, which delivers a pending signal (after the undo ran): the process still dies by it, cleanly.
/// On success it is forgotten: the mount is complete, and a signal that came at the very end is moot.
struct SignalsHeld {
    old: SigSet,
    /// The stop signals the caller ignores (SIG_IGN when the hold began: a background job of a
    /// non-interactive shell ignores SIGINT and SIGQUIT, nohup SIGHUP). Blocked, such a signal still
    /// stays pending, but it must not cancel the mount.
    ignored: Vec<Signal>,
}

impl SignalsHeld {
    fn hold() -> Option<SignalsHeld> {
        let set: SigSet = STOP_SIGNALS.into_iter().collect();
        let mut old = SigSet::empty();
        sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), Some(&mut old)).ok()?;
        let ignored = STOP_SIGNALS.into_iter().filter(|s| is_ignored(*s)).collect();
        Some(SignalsHeld { old, ignored })
    }

    /// The first stop signal waiting to be delivered that the caller does not ignore, if any.
    fn pending(&self) -> Option<Signal> {
        let mut set = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
        // SAFETY: sigpending fills the set it is given; it is read only after success.
        let set = unsafe {
            if libc::sigpending(set.as_mut_ptr()) != 0 {
                return None;
            }
            set.assume_init()
        };
        // SAFETY: `set` is an initialized sigset_t.
        STOP_SIGNALS
            .into_iter()
            .filter(|s| !self.ignored.contains(s))
            .find(|s| unsafe { libc::sigismember(&set, *s as libc::c_int) } == 1)
    }
}

/// Whether `sig`'s disposition is SIG_IGN.
fn is_ignored(sig: Signal) -> bool {
    let mut old = std::mem::MaybeUninit::<libc::sigaction>::zeroed();
    // SAFETY: a null new action only queries; `old` is written on success and read only then.
    unsafe {
        libc::sigaction(sig as libc::c_int, std::ptr::null(), old.as_mut_ptr()) == 0
            && old.assume_init().sa_sigaction == libc::SIG_IGN
    }
}

impl Drop for SignalsHeld {
    fn drop(&mut self) {
        let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&self.old), None);
    }
}

/// Mount an overlay as `req` asks.
pub fn mount(req: &MountRequest) -> Result<Mounted> {
    let mut plan = check(req)?;
    // Declared before `undo`, so on failure the undo runs first and only then a held signal lands.
    let held = SignalsHeld::hold();
    let mut undo = Undo::default();

    let mut created = vec![];
    let target = (!req.detached).then_some(&plan.target);
    let scratch: Vec<&PathBuf> = [plan.upper.as_ref(), plan.work.as_ref()].into_iter().flatten().collect();
    // What overlay makes in a work dir that already exists; removed (after the umount) on failure.
    let kernel_made: Vec<PathBuf> = plan
        .work
        .iter()
        .flat_map(|w| [w.join("work"), w.join("index")])
        .filter(|d| std::fs::symlink_metadata(d).is_err())
        .collect();
    for dir in [target, plan.upper.as_ref(), plan.work.as_ref()].into_iter().flatten() {
        let mut made = vec![];
        // The upper and work dirs, and the parents made for them (`<data>/upper`, `<data>/work`), only
        // their owner may enter: what a container writes there (a set-uid-root copy of a shell, say)
        // must not be runnable by every host user from the host's side of the mount. The upper dir
        // then takes the image root's mode, below; its parent keeps the gate.
        let mode = if scratch.contains(&dir) { 0o700 } else { 0o777 };
        let r = fsutil::mkdir_p(dir, mode, &mut made);
        for c in made {
            // The upper and work dirs go whole: by the time an undo runs, overlay may have filled them.
            undo.push(if scratch.contains(&&c) { UndoStep::RmAll(c.clone()) } else { UndoStep::Rmdir(c.clone()) });
            created.push(c);
        }
        r?;
    }
    if let (Some(u), Some(l)) = (&plan.upper, plan.lower.first()) {
        if created.contains(u) {
            set_mode_like(u, l)?;
        }
    }
    for d in kernel_made.into_iter().filter(|d| !created.iter().any(|c| d.starts_with(c))) {
        undo.push(UndoStep::RmAll(d));
    }
    // Everything after this point is temporary for a detached mount(2) overlay (see below).
    let temporary_from = undo.steps.len();

    let api = match req.api {
        Api::Auto if std::env::var_os(FORCE_LEGACY_ENV).is_some_and(|v| v == "1") => Api::Legacy,
        Api::Auto if kernel_has_lowerdir_plus() => Api::New,
        Api::Auto => Api::Legacy,
        a => a,
    };

    // The aux dir: needed for a tmpfs upper, and by mount(2) when the layers do not fit in a page.
    let mut aux = None;
    if let Some(size) = &req.tmpfs_upper {
        let dir = make_aux(&req.state_dir, &mut undo)?;
        let mut data = String::from("mode=0755");
        if let Some(s) = size {
            data.push_str(&format!(",size={s}"));
        }
        step("tmpfs", format!("{} ({data})", p(&dir)));
        let cdata = std::ffi::CString::new(data).expect("no NUL in tmpfs options");
        rustix::mount::mount("cbuild-overlay-upper", &dir, "tmpfs", MountFlags::empty(), cdata.as_c_str())
            .map_err(|e| Error::os("tmpfs", p(&dir), e).with_hint("check the --tmpfs-upper size (e.g. 64m, 10%)"))?;
        undo.push(UndoStep::Umount(dir.clone()));
        for sub in ["upper", "work"] {
            let d = dir.join(sub);
            step("mkdir", p(&d));
            std::fs::create_dir(&d).map_err(|e| Error::os("mkdir", p(&d), e))?;
        }
        set_mode_like(&dir.join("upper"), &plan.lower[0])?;
        plan.upper = Some(dir.join("upper"));
        plan.work = Some(dir.join("work"));
        aux = Some(dir);
    }
    // Measured with the final upper/work paths.
    let fd_names = api == Api::Legacy && {
        let abs: Vec<&[u8]> = plan.lower.iter().map(|l| l.as_os_str().as_bytes()).collect();
        legacy_options(&abs, &plan, req).len() >= page_size()
    };
    if fd_names && aux.is_none() {
        aux = Some(make_aux(&req.state_dir, &mut undo)?);
    }
    // The aux dir's path as it is, bytes and all: `umount` and `prune` find the aux dir by the source
    // mountinfo shows, which a lossy UTF-8 copy would not match under a state dir that is not UTF-8.
    let source: std::ffi::OsString = aux.as_ref().map_or_else(|| SOURCE.into(), |a| a.as_os_str().to_owned());

    let fd = match (api, req.detached) {
        (Api::New, _) => mount_new(&plan, req, &source)?,
        (_, false) => {
            mount_legacy(&plan, req, &source, aux.as_deref().filter(|_| fd_names), &mut undo)?;
            None
        }
        // mount(2) cannot make a detached mount: mount on a private temporary dir, take a detached clone
        // of it (open_tree, Linux ≥ 5.2), and remove the temporary.
        (_, true) => {
            let tmp = match &aux {
                Some(a) => a.clone(),
                None => make_aux(&req.state_dir, &mut undo)?,
            };
            // The temporary becomes a private mount (a bind of itself) before the overlay is mounted in
            // it: under a shared mount (/ on systemd hosts) the overlay would be copied into every peer
            // mount namespace, and its clone would join that peer group, which pivot_root refuses. A
            // mount made under a private one is private.
            step("mount", format!("{} (private bind)", p(&tmp)));
            rustix::mount::mount_bind(&tmp, &tmp).map_err(|e| Error::os("mount", p(&tmp), e))?;
            undo.push(UndoStep::Umount(tmp.clone()));
            rustix::mount::mount_change(&tmp, rustix::mount::MountPropagationFlags::PRIVATE)
                .map_err(|e| Error::os("mount", p(&tmp), e))?;
            let at = Plan { target: tmp.join("root"), ..plan.clone() };
            step("mkdir", p(&at.target));
            std::fs::create_dir(&at.target).map_err(|e| Error::os("mkdir", p(&at.target), e))?;
            undo.push(UndoStep::Rmdir(at.target.clone()));
            mount_legacy(&at, req, tmp.as_os_str(), aux.as_deref().filter(|_| fd_names), &mut undo)?;
            undo.push(UndoStep::Umount(at.target.clone()));
            step("open_tree", format!("{} (detached clone)", p(&at.target)));
            let flags = rustix::mount::OpenTreeFlags::OPEN_TREE_CLONE | rustix::mount::OpenTreeFlags::OPEN_TREE_CLOEXEC;
            let fd = rustix::mount::open_tree(CWD, &at.target, flags)
                .map_err(|e| Error::os("open_tree", p(&at.target), e))?;
            undo.run_from(temporary_from);
            Some(fd)
        }
    };
    if !req.detached {
        undo.push(UndoStep::Umount(plan.target.clone()));
    }
    if let Some(sig) = held.as_ref().and_then(SignalsHeld::pending) {
        // Asked to stop while mounting: take it all back, then let the signal end the process.
        return Err(Error::invalid("mount", p(&plan.target), format!("interrupted by {sig}")));
    }
    if req.discard {
        // Made by this call (not by a racing process since the check): ours to throw away. Forked while
        // signals are still held, so a stop signal from here on ends a process whose remover is armed.
        let (u, w) = (plan.upper.as_ref().expect("checked"), plan.work.as_ref().expect("checked"));
        if !created.contains(u) || !created.contains(w) {
            return Err(Error::invalid("rm", p(u), "appeared while mounting; --rm needs new upper and work dirs"));
        }
        crate::discard::arm(u, w)?;
    }
    undo.armed = false;
    if req.detached {
        // The command exec'd next inherits the signal mask: it must get the caller's back. A stop signal
        // that arrived after the check above lands now: the detached mount dies with us, the upper and
        // work dirs made stay (a script's undo removes them, as cbuild-run's `upper` does).
        drop(held);
    } else {
        std::mem::forget(held);
    }
    Ok(Mounted { api, aux: aux.filter(|_| !req.detached), fd, undo })
}

/// Give an upper dir this call created the mode of the top lower dir, whatever the umask: the upper
/// dir's mode is the merged root's, and the image's root mode is the top layer's.
fn set_mode_like(upper: &Path, top: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(top).map_err(|e| Error::os("lowerdir", p(top), e))?.permissions().mode() & 0o7777;
    step("chmod", format!("{} {mode:o}", p(upper)));
    std::fs::set_permissions(upper, std::fs::Permissions::from_mode(mode)).map_err(|e| Error::os("chmod", p(upper), e))
}

/// What steps and error lines call a detached overlay's target (it has none).
const DETACHED: &str = "(detached)";

/// Everything that can be checked before anything is created. Each failure names the dir at fault.
fn check(req: &MountRequest) -> Result<Plan> {
    if let Some(Some(size)) = &req.tmpfs_upper {
        check_size(size)?;
    }
    if req.lower.is_empty() {
        return Err(Error::invalid("lowerdir", "(none)", "at least one lower dir is needed"));
    }
    // Lower dirs are made absolute but not canonicalized: realpath costs a readlink per component
    // (2,000 syscalls for 500 layers), the kernel resolves symlinks itself, and one stat per layer is
    // enough to name a missing dir before anything is created. Only the overlap check against an upper
    // and work dir (below) resolves them.
    let cwd = std::env::current_dir().map_err(|e| Error::os("lowerdir", "current directory", e))?;
    let mut lower = Vec::with_capacity(req.lower.len());
    // (device, inode) of each lower, for the target check below without resolving every lower path.
    let mut lower_ids = Vec::with_capacity(req.lower.len());
    for l in &req.lower {
        let abs: PathBuf = cwd.join(l).components().collect();
        let md = std::fs::metadata(&abs).map_err(|e| Error::os("lowerdir", p(&abs), e))?;
        if !md.is_dir() {
            return Err(Error::invalid("lowerdir", p(&abs), "not a directory"));
        }
        lower_ids.push((md.dev(), md.ino()));
        lower.push(abs);
    }

    if lower.len() == 1 && req.upper.is_none() && req.tmpfs_upper.is_none() {
        // Overlay's own rule (a one-layer read-only overlay would be a bind mount); it only says so in
        // the kernel log, so say it here.
        return Err(Error::invalid("lowerdir", p(&lower[0]), "a read-only overlay needs at least two lower dirs")
            .with_hint("add --upper and --work (or --tmpfs-upper), or bind-mount the dir instead"));
    }
    if req.detached && req.tmpfs_upper.is_some() {
        return Err(Error::invalid("upperdir", "--tmpfs-upper", "cannot be combined with --fd")
            .with_hint("its tmpfs would stay mounted on the host; use --upper and --work"));
    }
    let target = if req.detached { PathBuf::from(DETACHED) } else { fsutil::resolve("target", &req.target)? };
    if let Some(md) = (!req.detached).then(|| std::fs::metadata(&target).ok()).flatten() {
        if !md.is_dir() {
            return Err(Error::invalid("target", p(&target), "not a directory"));
        }
        if fsutil::mount_identity("target", &target)?.is_mount_root {
            return Err(Error::invalid("target", p(&target), "already a mount point").with_hint(format!(
                "unmount it first (cbuild-overlay umount {}) or pick another dir",
                crate::error::sh_word(&target)
            )));
        }
    }

    let (upper, work) = match (&req.upper, &req.work, &req.tmpfs_upper) {
        (None, None, _) => (None, None),
        (Some(_), _, Some(_)) | (_, Some(_), Some(_)) => {
            return Err(Error::invalid("upperdir", "--tmpfs-upper", "conflicts with --upper/--work"));
        }
        (Some(u), None, None) => return Err(Error::invalid("workdir", p(u), "--upper needs --work too")),
        (None, Some(w), None) => return Err(Error::invalid("upperdir", p(w), "--work needs --upper too")),
        (Some(u), Some(w), None) => (Some(fsutil::resolve("upperdir", u)?), Some(fsutil::resolve("workdir", w)?)),
    };
    // Upper and work both still to be made: no overlay uses them, no earlier mount marked them.
    let mut fresh = false;
    if let (Some(u), Some(w)) = (&upper, &work) {
        if u == w {
            return Err(Error::invalid("workdir", p(w), "is the upper dir itself; overlay needs two separate dirs"));
        }
        if fsutil::is_within(w, u) {
            return Err(Error::invalid("workdir", p(w), format!("inside the upper dir {}", p(u)))
                .with_hint("put work next to upper, e.g. .../upper and .../work"));
        }
        if fsutil::is_within(u, w) {
            return Err(Error::invalid("upperdir", p(u), format!("inside the work dir {}", p(w))));
        }
        // Where they will be created is the mount of their nearest existing ancestor.
        let (ue, u_missing) = fsutil::nearest_existing(u);
        let (we, w_missing) = fsutil::nearest_existing(w);
        fresh = !u_missing.is_empty() && !w_missing.is_empty();
        if req.discard && !fresh {
            let d = if u_missing.is_empty() { u } else { w };
            return Err(Error::invalid(
                "rm",
                p(d),
                "exists: --rm removes the upper and work dirs after the command, so they must be new",
            ));
        }
        if fsutil::fs_magic("upperdir", &ue)? == fsutil::OVERLAYFS_SUPER_MAGIC {
            return Err(Error::invalid("upperdir", p(u), "on an overlay filesystem, which cannot hold an upper layer")
                .with_hint("put upper and work on the backing filesystem (ext4, xfs, tmpfs, ...)"));
        }
        let um = fsutil::mount_identity("upperdir", &ue)?.mnt_id;
        let wm = fsutil::mount_identity("workdir", &we)?.mnt_id;
        if um != wm {
            return Err(Error::invalid(
                "workdir",
                p(w),
                format!("not on the same mount as the upper dir {} (mount ids {wm} and {um})", p(u)),
            )
            .with_hint("overlay renames from work to upper, so both must be on one filesystem mount"));
        }
        // Upper and work are resolved; a lower must be too, or a symlink or `..` in its path hides that
        // it is (or holds, or sits in) one of them. Only here, where a writable layer is at stake.
        for l in &lower {
            let real = std::fs::canonicalize(l).map_err(|e| Error::os("lowerdir", p(l), e))?;
            for (what, d) in [("upperdir", u), ("workdir", w)] {
                if fsutil::is_within(&real, d) || fsutil::is_within(d, &real) {
                    let shown = if &real == l { p(l) } else { format!("{} ({})", p(l), p(&real)) };
                    return Err(Error::invalid(what, p(d), format!("overlaps the lower dir {shown}")));
                }
            }
        }
    }
    if !req.detached {
        check_target_placement(&target, &lower, &lower_ids, upper.as_deref(), work.as_deref())?;
    }
    if let (Some(u), Some(w), false) = (&upper, &work, fresh) {
        in_use_check(u, w)?;
        check_volatile_marker(w)?;
    }
    Ok(Plan { lower, upper, work, target })
}

/// tmpfs's size= syntax: a number with an optional k/m/g/t/p/e suffix, or a percentage. Not zero: tmpfs
/// takes `size=0` as no limit at all, a throw-away upper that could fill the machine's memory.
fn check_size(s: &str) -> Result<()> {
    let digits = s.trim_end_matches(['k', 'K', 'm', 'M', 'g', 'G', 't', 'T', 'p', 'P', 'e', 'E', '%']);
    let suffix = &s[digits.len()..];
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) || suffix.len() > 1 {
        return Err(Error::invalid("tmpfs", s, "not a size (want e.g. 64m, 1g, 10%)"));
    }
    if digits.bytes().all(|b| b == b'0') {
        return Err(Error::invalid("tmpfs", s, "a size of 0 means no limit to tmpfs, so the upper could fill memory")
            .with_hint("give a size (e.g. 64m, 1g, 10%), or --tmpfs-upper alone for tmpfs's default, half of RAM"));
    }
    Ok(())
}

/// Refuse a mount point in a layer: inside (or being) the upper or work dir, the overlay would show up
/// in its own upper layer (and `diff UPPER` would read the merged view); inside a lower dir, the image
/// would contain its own mount point. Being a lower dir itself is allowed: an overlay over the dir it
/// makes writable (`/etc` over `/etc`) is a known use. Lowers are found by device and inode up the
/// target's ancestors, a stat per ancestor instead of resolving every layer; a match is confirmed by
/// path, since dirs on an overlay filesystem without xino can share both numbers.
fn check_target_placement(
    target: &Path,
    lower: &[PathBuf],
    lower_ids: &[(u64, u64)],
    upper: Option<&Path>,
    work: Option<&Path>,
) -> Result<()> {
    for (what, dir) in [("upper", upper), ("work", work)] {
        let Some(d) = dir else { continue };
        if target == d {
            return Err(Error::invalid("target", p(target), format!("is the {what} dir itself"))
                .with_hint("mount the overlay outside its layers, e.g. next to the upper and work dirs"));
        }
        if fsutil::is_within(target, d) {
            return Err(Error::invalid("target", p(target), format!("inside the {what} dir {}", p(d)))
                .with_hint("mount the overlay outside its layers, e.g. next to the upper and work dirs"));
        }
    }
    let (existing, _) = fsutil::nearest_existing(target);
    let above = if existing == target { target.parent() } else { Some(existing.as_path()) };
    for dir in above.into_iter().flat_map(Path::ancestors) {
        let Ok(md) = std::fs::metadata(dir) else { continue };
        let id = (md.dev(), md.ino());
        for i in (0..lower.len()).filter(|&i| lower_ids[i] == id) {
            if std::fs::canonicalize(&lower[i]).ok().as_deref() != Some(dir) {
                continue;
            }
            let shown = if lower[i] == dir { p(&lower[i]) } else { format!("{} ({})", p(&lower[i]), p(dir)) };
            return Err(Error::invalid("target", p(target), format!("inside the lower dir {shown}"))
                .with_hint("mount the overlay outside its layers"));
        }
    }
    Ok(())
}

/// Overlay marks the work dir of a `volatile` mount with `work/incompat/volatile` and refuses to mount
/// it again (EINVAL, the reason only in the kernel log) until someone removes the mark. Only a person
/// can know that the last mount ended in a clean unmount and not a crash, after which the upper may be
/// inconsistent, so the mark is never removed here: the error says what to do.
fn check_volatile_marker(work: &Path) -> Result<()> {
    let mark = work.join("work/incompat/volatile");
    // Empty or not: overlay refuses any dir in `incompat`.
    if std::fs::symlink_metadata(&mark).is_ok_and(|m| m.is_dir()) {
        return Err(Error::invalid(
            "workdir",
            p(work),
            format!(
                "marked by an earlier --volatile mount, which overlay refuses to reuse: remove {} to reuse these upper and work dirs",
                p(&mark)
            ),
        )
        .with_hint(
            "only if that overlay was unmounted cleanly and the machine has not crashed since; else the upper \
             may be inconsistent: start from new upper and work dirs",
        ));
    }
    Ok(())
}

/// Refuse an upper or work dir that a mounted overlay already uses (as its upper or work dir): overlay
/// only warns in the kernel log ("workdir is in-use"), and two overlays writing one upper corrupt it.
fn in_use_check(u: &Path, w: &Path) -> Result<()> {
    for e in mountinfo::read()?.iter().filter(|e| e.fs_type == "overlay") {
        let o = mountinfo::OverlayOptions::parse(&e.super_options);
        let theirs: Vec<PathBuf> = [o.upper, o.work]
            .into_iter()
            .flatten()
            .filter(|d| d.is_absolute())
            .map(|d| std::fs::canonicalize(&d).unwrap_or(d))
            .collect();
        for (what, d) in [("upperdir", u), ("workdir", w)] {
            if theirs.iter().any(|t| t == d) {
                return Err(Error::invalid(
                    what,
                    p(d),
                    format!("already in use by the overlay mounted at {}", p(&e.mount_point)),
                ));
            }
        }
    }
    Ok(())
}

/// `lowerdir+` arrived in 6.8; older kernels get mount(2).
pub fn kernel_has_lowerdir_plus() -> bool {
    let uts = rustix::system::uname();
    let release = uts.release().to_string_lossy().into_owned();
    match parse_release(&release) {
        Some(v) => v >= (6, 8),
        None => true,
    }
}

fn parse_release(r: &str) -> Option<(u32, u32)> {
    let mut it = r.split(|c: char| !c.is_ascii_digit());
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

fn page_size() -> usize {
    // SAFETY: sysconf has no memory-safety preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if n > 0 {
        n as usize
    } else {
        4096
    }
}

/// Read what the kernel logged on an fs_context fd ("e overlayfs: ..." lines), errors last wins.
fn fc_log(fd: &OwnedFd) -> Option<String> {
    let mut msgs = vec![];
    let mut buf = [0u8; 1024];
    while let Ok(n) = rustix::io::read(fd.as_fd(), &mut buf) {
        if n == 0 {
            break;
        }
        let m = String::from_utf8_lossy(&buf[..n]).trim_end().to_string();
        // Each message starts with its level: e(rror), w(arning), i(nfo).
        let text = m.get(2..).unwrap_or(&m).to_string();
        msgs.push(text);
    }
    (!msgs.is_empty()).then(|| msgs.join("; "))
}

fn flag_options(req: &MountRequest) -> Vec<(&'static str, Option<&'static str>)> {
    let mut v = vec![];
    if req.volatile {
        v.push(("volatile", None));
    }
    if req.index {
        v.push(("index", Some("on")));
    }
    if req.redirect_dir {
        v.push(("redirect_dir", Some("on")));
    }
    if req.metacopy {
        v.push(("metacopy", Some("on")));
    }
    if req.userxattr {
        v.push(("userxattr", None));
    }
    v
}

fn limit_error(plan: &Plan, i: usize, kernel: Option<String>) -> Error {
    let why = kernel.unwrap_or_else(|| format!("the kernel's limit is {KERNEL_MAX_LOWER}"));
    Error::invalid(
        "lowerdir",
        p(&plan.lower[i.min(plan.lower.len() - 1)]),
        format!(
            "too many lower layers: {} given, layer {} is over the kernel's limit ({why})",
            plan.lower.len(),
            i + 1
        ),
    )
    .with_hint("flatten some layers (e.g. squash the image) to stay under the limit")
}

/// Detached: the mount fd, not attached anywhere.
fn mount_new(plan: &Plan, req: &MountRequest, source: &std::ffi::OsStr) -> Result<Option<OwnedFd>> {
    step("fsopen", "overlay");
    let fs = rustix::mount::fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC)
        .map_err(|e| Error::os("fsopen", "overlay", e).with_hint("is the overlay module loaded? (modprobe overlay)"))?;
    let set = |key: &str, value: &Path, object: String| -> Result<()> {
        rustix::mount::fsconfig_set_string(&fs, key, value)
            .map_err(|e| Error::os("fsconfig", object, e).with_detail(fc_log(&fs)))
    };
    set("source", Path::new(source), format!("source={}", p(Path::new(source))))?;
    for (i, l) in plan.lower.iter().enumerate() {
        step("fsconfig", format!("lowerdir+={}", p(l)));
        if let Err(e) = set("lowerdir+", l, p(l)) {
            let detail = match &e.reason {
                Reason::Os { detail, .. } => detail.clone(),
                _ => None,
            };
            if detail.as_deref().is_some_and(|d| d.contains("too many"))
                || (i >= KERNEL_MAX_LOWER && e.errno() == Some(libc::EINVAL))
            {
                return Err(limit_error(plan, i, detail));
            }
            return Err(Error { step: "lowerdir", ..e });
        }
    }
    if let (Some(u), Some(w)) = (&plan.upper, &plan.work) {
        step("fsconfig", format!("upperdir={}", p(u)));
        // Unlike `lowerdir+`, overlay unescapes upperdir and workdir (a `\` quotes the next byte) even
        // when they come one per fsconfig call, so a backslash in the path must be doubled.
        set("upperdir", &escape_backslash(u), p(u)).map_err(|e| Error { step: "upperdir", ..e })?;
        step("fsconfig", format!("workdir={}", p(w)));
        set("workdir", &escape_backslash(w), p(w)).map_err(|e| Error { step: "workdir", ..e })?;
    }
    for (key, value) in flag_options(req) {
        let shown = value.map(|v| format!("{key}={v}")).unwrap_or_else(|| key.to_string());
        step("fsconfig", &shown);
        let r = match value {
            Some(v) => rustix::mount::fsconfig_set_string(&fs, key, v),
            None => rustix::mount::fsconfig_set_flag(&fs, key),
        };
        r.map_err(|e| {
            Error::os("fsconfig", shown.clone(), e)
                .with_detail(fc_log(&fs))
                .with_hint("this kernel's overlay may not support the option")
        })?;
    }
    step("fsconfig", format!("create: {}", p(&plan.target)));
    rustix::mount::fsconfig_create(&fs).map_err(|e| {
        let detail = fc_log(&fs);
        let hint = detail.is_none();
        let err = Error::os("fsconfig", p(&plan.target), e).with_detail(detail);
        if hint {
            err.with_hint("overlayfs logs its reason in the kernel log (dmesg | tail)")
        } else {
            err
        }
    })?;
    step("fsmount", p(&plan.target));
    let mnt = rustix::mount::fsmount(&fs, FsMountFlags::FSMOUNT_CLOEXEC, MountAttrFlags::empty())
        .map_err(|e| Error::os("fsmount", p(&plan.target), e).with_detail(fc_log(&fs)))?;
    if req.detached {
        return Ok(Some(mnt));
    }
    step("move_mount", p(&plan.target));
    // A detached mount that is never attached is freed when `mnt` closes, so failing here leaves nothing.
    rustix::mount::move_mount(&mnt, "", CWD, &plan.target, MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH)
        .map_err(|e| Error::os("move_mount", p(&plan.target), e))?;
    Ok(None)
}

/// `\` doubled, for the values overlay unescapes.
fn escape_backslash(path: &Path) -> PathBuf {
    use std::os::unix::ffi::OsStringExt;
    let mut o = Vec::with_capacity(path.as_os_str().len());
    for &b in path.as_os_str().as_bytes() {
        if b == b'\\' {
            o.push(b'\\');
        }
        o.push(b);
    }
    PathBuf::from(std::ffi::OsString::from_vec(o))
}

/// Backslash-escape what the mount(2) option parser splits on, onto `o`.
fn escape_legacy(o: &mut Vec<u8>, s: &[u8]) {
    for &b in s {
        if matches!(b, b'\\' | b':' | b',') {
            o.push(b'\\');
        }
        o.push(b);
    }
}

/// The mount(2) option string, built from the paths' bytes: a lossy string turned a name that is not
/// UTF-8 (`u\xff`) into another (`u\u{fffd}`), which the kernel then could not find.
fn legacy_options(lower: &[&[u8]], plan: &Plan, req: &MountRequest) -> Vec<u8> {
    let mut o = b"lowerdir=".to_vec();
    for (i, l) in lower.iter().enumerate() {
        if i > 0 {
            o.push(b':');
        }
        escape_legacy(&mut o, l);
    }
    if let (Some(u), Some(w)) = (&plan.upper, &plan.work) {
        o.extend_from_slice(b",upperdir=");
        escape_legacy(&mut o, u.as_os_str().as_bytes());
        o.extend_from_slice(b",workdir=");
        escape_legacy(&mut o, w.as_os_str().as_bytes());
    }
    for (key, value) in flag_options(req) {
        o.push(b',');
        o.extend_from_slice(key.as_bytes());
        if let Some(v) = value {
            o.push(b'=');
            o.extend_from_slice(v.as_bytes());
        }
    }
    o
}

/// In `<state>/.overlay`, when mount created `<state>` (or more) for it: how many dirs above `.overlay`
/// it created, so whoever removes the last aux dir removes those too, and never a `<state>` it did not
/// create (`CBUILD_STATE` may name the caller's own dir).
const PARENTS_MADE: &str = ".parents-made";

/// The digits after the start time in an aux dir's name (see [`make_aux`]).
const STAMP_DIGITS: usize = 12;

/// `<state>/.overlay/<pid>-<hex>`, where hex is this process's start time (clock ticks after boot, as
/// /proc/PID/stat has it) then 12 digits of the wall clock: `prune` compares the start time with the
/// live process of that PID, which a reused PID fails, and the clock keeps names apart across reboots
/// of a `<state>` that persists.
fn make_aux(state: &Path, undo: &mut Undo) -> Result<PathBuf> {
    let name = aux_name();
    // A umount removing the last aux dir removes an empty `.overlay` (and the `<state>` it made) at any
    // time, also between our mkdir -p and our mkdir: then make them again.
    let mut attempts = 3;
    loop {
        let attempt_from = undo.steps.len();
        let base = fsutil::resolve("aux", &state.join(".overlay"))?;
        let mut created = vec![];
        let made = fsutil::mkdir_p(&base, 0o777, &mut created);
        let parents = created.len().saturating_sub(1);
        let recorded = match (&made, created.last() == Some(&base) && parents > 0) {
            (Ok(()), true) => {
                let f = base.join(PARENTS_MADE);
                step("write", p(&f));
                std::fs::write(&f, format!("{parents}\n")).map_err(|e| Error::os("write", p(&f), e))
            }
            _ => Ok(()),
        };
        // Whoever removes the last aux dir removes `.overlay` and what is recorded above it: by undo time
        // that may be another mount's, so the undo is the same tolerant removal, not plain rmdirs.
        if made.is_ok() && recorded.is_ok() && created.last() == Some(&base) {
            undo.push(UndoStep::RemoveBase(base.clone()));
        } else {
            if created.last() == Some(&base) {
                // Ours, maybe half-written: the rmdirs below take its dir.
                let _ = std::fs::remove_file(base.join(PARENTS_MADE));
            }
            for c in created {
                undo.push(UndoStep::Rmdir(c));
            }
        }
        made?;
        recorded?;
        let dir = base.join(&name);
        step("mkdir", p(&dir));
        match std::fs::create_dir(&dir) {
            Ok(()) => {
                undo.push(UndoStep::Rmdir(dir.clone()));
                return Ok(dir);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && attempts > 1 => {
                // What this attempt made is gone already.
                undo.steps.truncate(attempt_from);
                attempts -= 1;
            }
            Err(e) => return Err(Error::os("mkdir", p(&dir), e)),
        }
    }
}

fn aux_name() -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let start = proc_start_time("self").map(|t| format!("{t:x}")).unwrap_or_default();
    format!("{}-{start}{:0w$x}", std::process::id(), nanos & 0xffff_ffff_ffff, w = STAMP_DIGITS)
}

/// Field 22 of /proc/PID/stat: when the process started, in clock ticks after boot.
fn proc_start_time(pid: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(Path::new("/proc").join(pid).join("stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces and parentheses itself.
    stat.rsplit_once(')')?.1.split_whitespace().nth(19)?.parse().ok()
}

/// Whether the process that made an aux dir (its name's PID and start time) still runs. Names from
/// before the start time was recorded have only the PID, which is all that can be checked then.
fn creator_alive(name: &str) -> bool {
    let Some((pid, stamp)) = name.split_once('-') else {
        return false;
    };
    let start = stamp.len().checked_sub(STAMP_DIGITS).filter(|&n| n > 0).map(|n| &stamp[..n]);
    match start {
        Some(start) => u64::from_str_radix(start, 16).is_ok_and(|t| proc_start_time(pid) == Some(t)),
        None => Path::new("/proc").join(pid).exists(),
    }
}

/// Remove `<state>/.overlay` if no aux dir is left in it, and the dirs above it that mount created
/// ([`PARENTS_MADE`]), each only if empty: what another tool keeps in `<state>` keeps it.
fn remove_base(base: &Path) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    if entries.flatten().any(|e| e.file_name() != PARENTS_MADE) {
        return;
    }
    let marker = base.join(PARENTS_MADE);
    let parents: usize = std::fs::read_to_string(&marker).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0);
    let _ = std::fs::remove_file(&marker);
    if std::fs::remove_dir(base).is_err() {
        // A mount made an aux dir meanwhile: the record stays for whoever removes the last one.
        if parents > 0 {
            let _ = std::fs::write(&marker, format!("{parents}\n"));
        }
        return;
    }
    step("rmdir", p(base));
    for dir in base.ancestors().skip(1).take(parents) {
        if std::fs::remove_dir(dir).is_err() {
            break;
        }
        step("rmdir", p(dir));
    }
}

/// mount(2). With `fd_names` (the aux dir), layers are passed as /proc/self/fd numbers.
fn mount_legacy(
    plan: &Plan,
    req: &MountRequest,
    source: &std::ffi::OsStr,
    fd_names: Option<&Path>,
    undo: &mut Undo,
) -> Result<()> {
    // With an aux dir, each layer is passed as an fd number relative to /proc/self/fd: "3:4:5:...".
    // The open fds pin the layers until mount(2) has resolved them; the list is recorded in the aux dir
    // (the mount's source) so `inspect` and `ls` can name the layers later.
    let mut fds = vec![];
    let lower: Vec<Vec<u8>> = match fd_names {
        None => plan.lower.iter().map(|l| l.as_os_str().as_bytes().to_vec()).collect(),
        Some(aux) => {
            let list = aux.join(LOWER_LIST);
            // Bytes, as `inspect` reads them back: a lossy line would name another dir.
            let mut text = Vec::new();
            for l in &plan.lower {
                let b = l.as_os_str().as_bytes();
                if b.contains(&b'\n') {
                    return Err(Error::invalid("lowerdir", p(l), "a newline in a layer path cannot be recorded"));
                }
                text.extend_from_slice(b);
                text.push(b'\n');
            }
            step("write", p(&list));
            std::fs::write(&list, text).map_err(|e| Error::os("write", p(&list), e))?;
            undo.push(UndoStep::Unlink(list));
            let mut names = Vec::with_capacity(plan.lower.len());
            for l in &plan.lower {
                let fd = rustix::fs::open(l, OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
                    .map_err(|e| {
                        let err = Error::os("open", p(l), e);
                        if e == rustix::io::Errno::MFILE {
                            err.with_hint("raise the open-files limit (ulimit -n) above the layer count")
                        } else {
                            err
                        }
                    })?;
                names.push(fd.as_raw_fd().to_string().into_bytes());
                fds.push(fd);
            }
            names
        }
    };
    let lower: Vec<&[u8]> = lower.iter().map(Vec::as_slice).collect();
    let data = legacy_options(&lower, plan, req);
    if data.len() >= page_size() {
        return Err(Error::invalid(
            "mount",
            p(&plan.target),
            format!(
                "the mount(2) option string is {} bytes, over the kernel's one-page limit ({})",
                data.len(),
                page_size()
            ),
        )
        .with_hint("shorten the upper/work paths, or use a kernel ≥ 6.8 (new mount API)"));
    }
    let cdata = std::ffi::CString::new(data)
        .map_err(|_| Error::invalid("mount", p(&plan.target), "a path contains a NUL byte"))?;

    // Relative layer names resolve against the cwd at mount time; go to /proc/self/fd and come back.
    let back = match fd_names {
        Some(_) => {
            let here = rustix::fs::open(".", OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
                .map_err(|e| Error::os("chdir", "current directory", e))?;
            step("chdir", PROC_FD);
            rustix::process::chdir(PROC_FD)
                .map_err(|e| Error::os("chdir", PROC_FD, e).with_hint("mount(2) of many layers needs /proc mounted"))?;
            Some(here)
        }
        None => None,
    };
    step("mount", format!("{} (mount(2), {} bytes of options)", p(&plan.target), cdata.as_bytes().len()));
    let r = rustix::mount::mount(source, &plan.target, "overlay", MountFlags::empty(), cdata.as_c_str());
    if let Some(here) = back {
        let _ = rustix::process::fchdir(&here);
    }
    drop(fds);
    r.map_err(|e| {
        if e == rustix::io::Errno::INVAL && plan.lower.len() > KERNEL_MAX_LOWER {
            limit_error(plan, KERNEL_MAX_LOWER, None)
        } else {
            Error::os("mount", p(&plan.target), e)
                .with_hint("overlayfs logs its reason in the kernel log (dmesg | tail)")
        }
    })
}

/// Unmount the overlay at `target` and remove its aux dir, if cbuild made one. An overlay cbuild did not
/// mount (its source is neither `cbuild-overlay` nor an aux dir under this `<state>`) is refused: what a
/// tool did not create it never removes, and a foreign source that merely looks like an aux dir must not
/// have its mounts and files removed.
pub fn umount(target: &Path, lazy: bool, state: &Path) -> Result<()> {
    let target = std::fs::canonicalize(target).map_err(|e| Error::os("umount", p(target), e))?;
    let entries = mountinfo::read()?;
    let entry = mountinfo::overlay_at(&entries, &target)
        .ok_or_else(|| Error::invalid("umount", p(&target), "not an overlay mount point"))?;
    let aux = aux_dir_in(&entry.source, state);
    if entry.source != SOURCE && aux.is_none() {
        return Err(Error::invalid(
            "umount",
            p(&target),
            format!("not mounted by cbuild-overlay (source {})", p(Path::new(&entry.source))),
        )
        .with_hint("unmount it with umount(8); if cbuild-overlay mounted it, set CBUILD_STATE as it was then"));
    }
    step("umount", p(&target));
    let flags = if lazy { UnmountFlags::DETACH } else { UnmountFlags::empty() };
    rustix::mount::unmount(&target, flags).map_err(|e| {
        let err = Error::os("umount", p(&target), e);
        if e == rustix::io::Errno::BUSY {
            err.with_hint("a process still uses it (fuser -m); --lazy detaches it now and frees it when unused")
        } else {
            err
        }
    })?;
    if let Some(aux) = aux {
        remove_aux(&aux);
    }
    Ok(())
}

/// `prune`: aux dirs under `<state>/.overlay` that an invocation killed with SIGKILL left behind (the
/// tmpfs of a `--tmpfs-upper` overlay that is gone, the temporary mount of a mount(2) `--fd` overlay):
/// what is mounted in each is unmounted and the dir removed. One still named as an overlay's source, or
/// whose creating process (the PID and start time in its name) is alive, is left alone. Returns the
/// dirs removed.
pub fn prune(state: &Path) -> Result<Vec<PathBuf>> {
    let base = state.join(".overlay");
    let Ok(dir) = std::fs::read_dir(&base) else {
        return Ok(Vec::new());
    };
    let base = std::fs::canonicalize(&base).map_err(|e| Error::os("prune", p(&base), e))?;
    // Creators first, mounts second: whatever a dead creator mounted is in the mount table read after.
    let mut dead = Vec::new();
    for d in dir.flatten() {
        let name = d.file_name();
        if !is_aux_name(&name) || !d.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let aux = base.join(&name);
        if creator_alive(&name.to_string_lossy()) {
            step("prune", format!("{}: its creator is alive, kept", p(&aux)));
            continue;
        }
        dead.push(aux);
    }
    let entries = mountinfo::read()?;
    let mut removed = Vec::new();
    for aux in dead {
        // In use: the source of an overlay mounted elsewhere (a --tmpfs-upper overlay, a long layer
        // list). The temporary of a mount(2) --fd overlay names it too, but is mounted inside it.
        let in_use = entries
            .iter()
            .any(|m| m.fs_type == "overlay" && Path::new(&m.source) == aux && !m.mount_point.starts_with(&aux));
        if in_use {
            step("prune", format!("{}: in use, kept", p(&aux)));
            continue;
        }
        // Deepest first: the temporary overlay of `--fd` sits on the tmpfs or dir it was mounted in.
        let mut below: Vec<&PathBuf> = entries.iter().map(|m| &m.mount_point).filter(|m| m.starts_with(&aux)).collect();
        below.sort_by_key(|m| std::cmp::Reverse(m.as_os_str().len()));
        for m in below {
            step("umount", p(m));
            rustix::mount::unmount(m, UnmountFlags::DETACH).map_err(|e| Error::os("umount", p(m), e))?;
        }
        step("rm", p(&aux));
        std::fs::remove_dir_all(&aux).map_err(|e| Error::os("rm", p(&aux), e))?;
        removed.push(aux);
    }
    remove_base(&base);
    Ok(removed)
}

/// The aux dir a mount's source names, if it looks like one of cbuild's (`.../.overlay/<id>`). Enough
/// to read a layer list from; [`aux_dir_in`] decides whether it may be removed.
pub fn aux_dir(source: &std::ffi::OsStr) -> Option<PathBuf> {
    let s = Path::new(source);
    (s.is_absolute() && s.parent()?.file_name()? == ".overlay" && is_aux_name(s.file_name()?) && s.is_dir())
        .then(|| s.to_path_buf())
}

/// [`aux_dir`], and only when it is in this `<state>`'s `.overlay` dir.
pub fn aux_dir_in(source: &std::ffi::OsStr, state: &Path) -> Option<PathBuf> {
    let aux = aux_dir(source)?;
    let base = std::fs::canonicalize(state.join(".overlay")).ok()?;
    (std::fs::canonicalize(aux.parent()?).ok()? == base).then_some(aux)
}

/// `<pid>-<hex>`, as [`make_aux`] names them.
fn is_aux_name(name: &std::ffi::OsStr) -> bool {
    let Some((pid, stamp)) = name.to_str().and_then(|n| n.split_once('-')) else {
        return false;
    };
    !pid.is_empty()
        && pid.bytes().all(|b| b.is_ascii_digit())
        && !stamp.is_empty()
        && stamp.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Remove an aux dir: unmount its tmpfs, remove its layer list, rmdir it and, if empty, its
/// `.overlay` parent. Nothing else in it is touched. Failures are warnings: the overlay is already gone.
fn remove_aux(aux: &Path) {
    if fsutil::mount_identity("umount", aux).is_ok_and(|m| m.is_mount_root) {
        step("umount", p(aux));
        if let Err(e) = rustix::mount::unmount(aux, UnmountFlags::DETACH) {
            eprintln!("cbuild-overlay: umount: {}: {e}", one_line(&p(aux)));
            return;
        }
    }
    let _ = std::fs::remove_file(aux.join(LOWER_LIST));
    step("rmdir", p(aux));
    if let Err(e) = std::fs::remove_dir(aux) {
        eprintln!("cbuild-overlay: rmdir: {}: {e}", one_line(&p(aux)));
        return;
    }
    if let Some(parent) = aux.parent() {
        remove_base(parent);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kernel_releases() {
        assert_eq!(parse_release("6.18.44-fc-v669"), Some((6, 18)));
        assert_eq!(parse_release("6.1.0-28-amd64"), Some((6, 1)));
        assert_eq!(parse_release("5.10"), Some((5, 10)));
        assert_eq!(parse_release("x"), None);
    }

    #[test]
    fn recognizes_aux_names() {
        for (n, ok) in [("123-abc0", true), ("1-f", true), ("x", false), ("12-", false), ("-a", false), ("1-g", false)]
        {
            assert_eq!(is_aux_name(std::ffi::OsStr::new(n)), ok, "{n}");
        }
    }

    #[test]
    fn aux_names_tell_their_creator_from_a_reused_pid() {
        let name = aux_name();
        assert!(is_aux_name(std::ffi::OsStr::new(&name)), "{name}");
        assert!(creator_alive(&name), "{name}");
        let (pid, stamp) = name.split_once('-').unwrap();
        let start = u64::from_str_radix(&stamp[..stamp.len() - STAMP_DIGITS], 16).unwrap();
        assert!(!creator_alive(&format!("{pid}-{:x}{}", start + 1, &stamp[stamp.len() - STAMP_DIGITS..])));
        // Names from before the start time was recorded: only the PID can be checked.
        assert!(creator_alive(&format!("{pid}-abc")));
        assert!(!creator_alive("999999999-abc"));
    }

    #[test]
    fn escapes_legacy_separators() {
        let esc = |s: &[u8]| {
            let mut o = vec![];
            escape_legacy(&mut o, s);
            o
        };
        assert_eq!(esc(b"/a:b,c\\d\xff"), b"/a\\:b\\,c\\\\d\xff");
        let (lower, _) = mountinfo::split_lowerdir(&esc(b"/a:b\\\xff"));
        assert_eq!(lower, vec![PathBuf::from(std::ffi::OsStr::from_bytes(b"/a:b\\\xff"))]);
    }
}
