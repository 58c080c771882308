//! Shared helpers for the integration tests. The tests run the *built* binaries (`cargo build --workspace`
//! first; the README's test command does), as root, against the real kernel.
//!
//! Rules every test follows: unique names (so tests run in parallel), private `CBUILD_STATE`/`CBUILD_DATA`
//! (a [`Sandbox`]), and cleanup in `Drop` guards so a failing assertion still leaves nothing behind.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

/// Directory holding the built binaries: `CBUILD_BIN_DIR`, else the cargo profile dir this test runs from
/// (`target/<profile>/deps/<test>` → `target/<profile>`).
pub fn bin_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("CBUILD_BIN_DIR") {
        return PathBuf::from(d);
    }
    let exe = std::env::current_exe().expect("current_exe");
    exe.parent().and_then(Path::parent).expect("target/<profile>").to_path_buf()
}

/// Path of a built tool, e.g. `bin("cbuild-ns")`. Panics with the fix if it was not built.
pub fn bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(p.exists(), "{} not built: run `cargo build --workspace` first", p.display());
    p
}

/// A `Command` for a built tool with the sandbox's state/data dirs.
pub fn tool(name: &str, sb: &Sandbox) -> Command {
    let mut c = Command::new(bin(name));
    c.env("CBUILD_STATE", &sb.state).env("CBUILD_DATA", &sb.data);
    c
}

/// A name unique to this test process and call: `<prefix>-<pid>-<n>`, short enough for interface names
/// when `prefix` is ≤ 4 chars.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!("{prefix}{}x{}", std::process::id() % 100000, N.fetch_add(1, Ordering::Relaxed))
}

/// Private state and data directories for one test; removed (after unmounting anything left under them,
/// which would be a bug the test should also assert on) when dropped.
pub struct Sandbox {
    pub dir: tempfile::TempDir,
    pub state: PathBuf,
    pub data: PathBuf,
}

impl Sandbox {
    pub fn new() -> Sandbox {
        let dir = tempfile::Builder::new().prefix("cbuild-test-").tempdir().expect("tempdir");
        let state = dir.path().join("state");
        let data = dir.path().join("data");
        std::fs::create_dir_all(&state).unwrap();
        std::fs::create_dir_all(&data).unwrap();
        Sandbox { dir, state, data }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Default for Sandbox {
    fn default() -> Self {
        Sandbox::new()
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        // Unmount anything still mounted below the sandbox, deepest first, so TempDir can remove it.
        let prefix = self.dir.path().to_string_lossy().to_string();
        let mut mounts = mounts_under(&prefix);
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in mounts {
            let _ = nix::mount::umount2(m.as_str(), nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

/// Mount points (from /proc/self/mountinfo) at or below `prefix`. The table is read as the tools read it
/// (cbuild-mountinfo: bytes): one mount point with an odd name anywhere on the host must not turn every
/// leak check into a check of nothing.
pub fn mounts_under(prefix: &str) -> Vec<String> {
    let prefix = Path::new(prefix);
    cbuild_mountinfo::read_self()
        .expect("read /proc/self/mountinfo")
        .into_iter()
        .filter(|m| m.mount_point.starts_with(prefix))
        .map(|m| m.mount_point.to_string_lossy().into_owned())
        .collect()
}

/// A minimal root filesystem made from Debian's busybox-static: `/bin/busybox` plus one symlink per applet,
/// /etc/passwd and /etc/group with root and a user 1000, and empty /proc /sys /dev /tmp. Tests that write
/// into their rootfs copy it with [`copy_rootfs`] first.
///
/// Built once, next to the binaries (`<bin_dir>/test-rootfs`), and shared by every test process: a static
/// TempDir is never dropped, so a per-process one would leak a directory per run. Concurrent builders each
/// fill a private directory and rename it into place; the loser discards its own.
pub fn busybox_rootfs() -> &'static Path {
    static ROOTFS: OnceLock<PathBuf> = OnceLock::new();
    ROOTFS.get_or_init(|| {
        let dest = bin_dir().join("test-rootfs");
        if dest.join("bin/busybox").exists() {
            return dest;
        }
        let tmp = bin_dir().join(format!(".test-rootfs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        make_busybox_rootfs(&tmp);
        if std::fs::rename(&tmp, &dest).is_err() {
            let _ = std::fs::remove_dir_all(&tmp);
        }
        assert!(dest.join("bin/busybox").exists(), "test rootfs at {}", dest.display());
        dest
    })
}

/// Fill `dir` with the busybox rootfs described at [`busybox_rootfs`].
pub fn make_busybox_rootfs(dir: &Path) {
    // The same script the demo and the labs use, embedded so it also runs in the test VM, where the
    // repository is not (busybox sh runs it there).
    const MKROOTFS: &str = include_str!("../../scripts/mkrootfs.sh");
    let st = Command::new("sh").args(["-c", MKROOTFS, "mkrootfs.sh"]).arg(dir).status().expect("sh");
    assert!(st.success(), "mkrootfs.sh {} failed (busybox-static installed?)", dir.display());
}

/// A private, writable copy of the busybox rootfs in `dest` (cp -a keeps the symlinks).
pub fn copy_rootfs(dest: &Path) {
    std::fs::create_dir_all(dest).unwrap();
    let st = Command::new("cp").arg("-a").arg(format!("{}/.", busybox_rootfs().display())).arg(dest).status().unwrap();
    assert!(st.success(), "cp -a rootfs");
}

/// Run a command, capturing output; never panics on a non-zero exit (tests assert on it).
pub fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"))
}

/// stdout as a String.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// stderr as a String.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Assert the documented failure shape: exit 125 and one `tool: step: object: reason` line on stderr that
/// contains `needle`.
#[track_caller]
pub fn assert_tool_error(o: &Output, tool: &str, needle: &str) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(125), "want exit 125, got {:?}; stderr: {err}", o.status);
    let first = err.lines().find(|l| l.starts_with(&format!("{tool}: "))).unwrap_or("");
    assert!(
        first.contains(needle) && first.matches(": ").count() >= 2,
        "want an error line `{tool}: step: object: reason` containing {needle:?}, got: {err}"
    );
}

/// Run `cmd` with `sig` pending and blocked (and, if `ignore`, its disposition SIG_IGN), as a signal that
/// arrives while mount works is held.
pub fn with_pending_signal(cmd: &mut Command, sig: libc::c_int, ignore: bool) -> &mut Command {
    // SAFETY: signal, sigprocmask and raise only, between fork and exec.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(cmd, move || {
            if ignore {
                libc::signal(sig, libc::SIG_IGN);
            }
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, sig);
            libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            libc::raise(sig);
            Ok(())
        })
    }
}

/// The suite runs as root, as CI does; fail loudly otherwise rather than pass vacuously.
pub fn require_root() {
    assert!(nix::unistd::Uid::effective().is_root(), "the integration tests must run as root");
}

/// Runs a closure when dropped: cleanup that must happen even when an assertion fails.
pub struct Defer<F: FnMut()>(pub F);

impl<F: FnMut()> Drop for Defer<F> {
    fn drop(&mut self) {
        (self.0)()
    }
}

/// Until `cond` holds (a traced process reached the step a test waits for), at most 10 s.
#[track_caller]
pub fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !cond() {
        assert!(std::time::Instant::now() < deadline, "never happened: {what}");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// Whether process `pid` is blocked in system call `nr` right now.
pub fn in_syscall(pid: u32, nr: libc::c_long) -> bool {
    let sys = std::fs::read_to_string(format!("/proc/{pid}/syscall")).unwrap_or_default();
    sys.split_whitespace().next() == Some(&nr.to_string())
}

/// Until the process an `strace -o /dev/null -e inject=...:delay_enter=...` command runs is stopped by
/// strace entering system call `nr` (the one the delay was injected at), at most 10 s: the moment a
/// test makes its race happen, every time, in the order it wants.
#[track_caller]
pub fn wait_until_traced_at(strace: &std::process::Child, nr: libc::c_long) {
    let id = strace.id();
    wait_until(&format!("the traced process enters system call {nr}"), || {
        let kids = std::fs::read_to_string(format!("/proc/{id}/task/{id}/children")).unwrap_or_default();
        kids.split_whitespace().filter_map(|p| p.parse().ok()).any(|pid| in_syscall(pid, nr))
    });
}
