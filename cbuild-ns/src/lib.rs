//! cbuild-ns: create and join Linux namespaces, build a container's filesystem view, set up the process
//! (user, capabilities, rlimits, seccomp) and exec a command. One module per concern; `run` reads top to
//! bottom as the whole set-up path.

pub mod capabilities;
pub mod cgroupfd;
pub mod cgroupfs;
pub mod error;
pub mod idmap;
pub mod init;
pub mod inspect;
pub mod log;
pub mod mounts;
pub mod namespaces;
pub mod netdev;
pub mod nsenter;
pub mod persist;
pub mod process;
pub mod protocol;
pub mod rootfs;
pub mod run;
pub mod seccomp;
pub mod signals;
pub mod spec;

/// Print an error as the contract's one line (plus an optional hint line). A write error is dropped, not a
/// panic (eprintln's): with SIGPIPE ignored, a stderr whose reader is gone must not stop what follows.
pub fn report(e: &error::Error) {
    use std::io::Write;
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "cbuild-ns: {e}");
    if let Some(h) = e.hint.as_deref().filter(|h| !h.is_empty()) {
        let _ = writeln!(err, "hint: {h}");
    }
}
