//! cbuild-overlay: the command line. The mechanism is in the library; this file parses arguments, prints
//! reports and maps errors to the contract's exit code 125 and one-line error.
//!
//! No Rust `main`: the C `main` below is the entry point, which skips the standard library's own start-up
//! (reading `/proc/self/maps` to find the main thread's stack guard, an alternate signal stack, `sigaction`s,
//! a `poll` of fds 0-2): ~0.1 ms of every start, and this tool is in every container's start (as cbuild-net's
//! connect is in every network's). Arguments come from `main`'s argv (only glibc would also hand them to
//! `std::env::args_os`), a stack overflow is then a plain SIGSEGV, a panic aborts (134, not 101), and stdout
//! is flushed before returning. The one part of that start-up a tool must keep is done here: fds 0-2 are
//! opened on /dev/null when the caller closed them.
#![no_main]

// The static build links musl (scripts/lib/static.sh), whose allocator maps and unmaps pages for each size
// class as a tool starts (25 mmaps and 21 munmaps in one `cbuild-ns run`); dlmalloc keeps them.
#[cfg(target_env = "musl")]
#[global_allocator]
static ALLOC: dlmalloc::GlobalDlmalloc = dlmalloc::GlobalDlmalloc;

use std::ffi::{CStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};

use cbuild_overlay::diff::{self, DiffRequest};
use cbuild_overlay::error::{one_line, p, sh_word, verbose, Error};
use cbuild_overlay::inspect;
use cbuild_overlay::mount::{self, Api, MountRequest, Mounted};

#[derive(Parser)]
#[command(
    name = "cbuild-overlay",
    version,
    about = "OverlayFS for containers: mount layers, list changes, inspect layers"
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
    /// Mount an overlay on TARGET (created if missing), or hand it detached to CMD (--fd N -- CMD).
    Mount {
        /// Lower dirs, top first, `:`-separated as overlay's lowerdir (`\:` = a colon; repeatable).
        #[arg(long, value_name = "DIR[:DIR...]")]
        lower: Vec<OsString>,
        /// Read lower dirs, top first, one per line from FILE (`-` = stdin), after any --lower.
        #[arg(long, value_name = "FILE|-")]
        lower_from: Option<PathBuf>,
        /// Upper (writable) dir, created if missing; without it the overlay is read-only.
        #[arg(long, value_name = "DIR")]
        upper: Option<PathBuf>,
        /// Work dir, on the same mount as --upper and not inside it; created if missing.
        #[arg(long, value_name = "DIR")]
        work: Option<PathBuf>,
        /// Put upper and work on a fresh tmpfs (optional size: 64m, 10%), gone after umount.
        #[arg(long, value_name = "SIZE", num_args = 0..=1, require_equals = true, default_missing_value = "")]
        tmpfs_upper: Option<String>,
        /// No syncs to the upper dir (faster; the upper is unusable after a crash).
        #[arg(long)]
        volatile: bool,
        /// index=on: hard links and file handles survive copy-up.
        #[arg(long)]
        index: bool,
        /// redirect_dir=on: renaming a lower dir does not copy its whole tree up.
        #[arg(long)]
        redirect_dir: bool,
        /// metacopy=on: chmod/chown copy up metadata only, not data.
        #[arg(long)]
        metacopy: bool,
        /// Keep overlay's xattrs in user.overlay.* (for mounts inside a user namespace).
        #[arg(long)]
        userxattr: bool,
        /// Use classic mount(2) as on kernels before 6.8 (also: CBUILD_OVERLAY_FORCE_LEGACY=1).
        #[arg(long, hide = true)]
        legacy_api: bool,
        /// Attach the overlay nowhere: hand it to CMD as a detached mount at fd N and exec CMD (e.g.
        /// `cbuild-ns run --rootfs DIR --rootfs-fd N`). It never appears on the host, and it is gone when
        /// its last holder (the container's mount namespace) is.
        #[arg(long, value_name = "N", requires = "cmd", conflicts_with = "target")]
        fd: Option<i32>,
        /// With --fd: remove the (new) upper and work dirs once CMD has exited, in the background, as
        /// `docker run --rm` discards a container's layer. The remover holds a lock on the upper dir
        /// till it is done.
        #[arg(long, requires_all = ["fd", "upper", "work"])]
        rm: bool,
        /// Where to mount (not with --fd).
        #[arg(required_unless_present = "fd")]
        target: Option<PathBuf>,
        /// With --fd: the command to exec.
        #[arg(last = true, value_name = "CMD")]
        cmd: Vec<std::ffi::OsString>,
    },
    /// Unmount the overlay on TARGET (and its tmpfs upper or layer links, if cbuild made them).
    Umount {
        /// Detach now, free when no longer used.
        #[arg(long)]
        lazy: bool,
        target: PathBuf,
    },
    /// List a container's changes from its upper dir: added, modified, deleted, opaque.
    Diff {
        upper: PathBuf,
        /// The lower dirs, top first (default: from the mount using UPPER, else overlay's xattrs).
        #[arg(long, value_name = "DIR[:DIR...]")]
        lower: Vec<OsString>,
        /// Read the lower dirs one per line from FILE (`-` = stdin).
        #[arg(long, value_name = "FILE|-")]
        lower_from: Option<PathBuf>,
        /// The upper was used with --userxattr (read user.overlay.* xattrs).
        #[arg(long)]
        userxattr: bool,
        /// JSON lines.
        #[arg(long)]
        json: bool,
    },
    /// The layers of the overlay on TARGET: counts, sizes, free inodes and space.
    Inspect {
        target: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Every overlay mount with its layers.
    Ls {
        #[arg(long)]
        json: bool,
    },
    /// Remove what an invocation killed with SIGKILL left in <state>/.overlay (a --tmpfs-upper tmpfs
    /// whose overlay is gone, a --fd temporary); prints each dir removed.
    Prune,
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
    // A closed 0, 1 or 2 (`cbuild-overlay ... 2>&-`) would be the number of the first file we open, and an
    // error message would then be written into it (or a command we exec would get it).
    for fd in 0..3 {
        // SAFETY: fcntl and open on plain integers; an fd opened here is the process's for good.
        unsafe {
            if libc::fcntl(fd, libc::F_GETFD) < 0 && libc::open(c"/dev/null".as_ptr(), libc::O_RDWR) < 0 {
                return 125;
            }
        }
    }
    // SAFETY: argc and argv are what the C runtime handed `main`.
    let args = unsafe { args_from(argc, argv) };
    let code = cli_main(args);
    let _ = std::io::Write::flush(&mut std::io::stdout());
    libc::c_int::from(code)
}

fn cli_main(args: Vec<OsString>) -> u8 {
    // Like C tools, end quietly when the reader of our output goes away (`| head`), whatever disposition
    // the caller left us (a Rust parent ignores SIGPIPE, and the ignore would pass on to what we exec).
    // SAFETY: restoring the default disposition before any thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = match Cli::try_parse_from(args) {
        Ok(c) => c,
        Err(e) if !e.use_stderr() => {
            let _ = e.print();
            return 0;
        }
        Err(e) => {
            let text = e.to_string();
            // clap's first paragraph, on one line: a list it ends with a colon ("not provided:") is in it.
            let first = text.split("\n\n").next().unwrap_or("").split_whitespace().collect::<Vec<_>>().join(" ");
            let first = first.trim_start_matches("error: ");
            eprintln!("cbuild-overlay: args: command line: {first}");
            eprintln!("hint: cbuild-overlay --help");
            return 125;
        }
    };
    if cli.verbose {
        verbose::enable();
    }
    match run(cli.cmd) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("cbuild-overlay: {e}");
            if let Some(h) = &e.hint {
                eprintln!("hint: {}", one_line(h));
            }
            125
        }
    }
}

/// Put the detached mount at fd `n` (dup2: not close-on-exec) and exec `cmd`. Only returns if that
/// failed: the mount is closed and what it made is taken back (the dirs it created, what overlay made in
/// an existing work dir), and the process exits 127 (not found) or 126, as a shell would.
fn exec_with(mnt: std::os::fd::OwnedFd, n: i32, cmd: &[std::ffi::OsString], made: Mounted) -> Result<(), Error> {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    // dup2 onto itself would keep close-on-exec: then clear the flag instead.
    let r = if mnt.as_raw_fd() == n {
        unsafe { libc::fcntl(n, libc::F_SETFD, 0) }
    } else {
        unsafe { libc::dup2(mnt.as_raw_fd(), n) }
    };
    if r < 0 {
        let e = std::io::Error::last_os_error();
        drop(mnt);
        made.take_back();
        return Err(Error::os("fd", n.to_string(), e));
    }
    verbose::step("exec", cmd[0].to_string_lossy());
    let e = std::process::Command::new(&cmd[0]).args(&cmd[1..]).exec();
    // The overlay holds its work dir until its last fd is closed.
    drop(mnt);
    unsafe { libc::close(n) };
    made.take_back();
    eprintln!("cbuild-overlay: exec: {}: {e}", one_line(&cmd[0].to_string_lossy()));
    std::process::exit(if e.kind() == std::io::ErrorKind::NotFound { 127 } else { 126 });
}

fn run(cmd: Cmd) -> Result<(), Error> {
    match cmd {
        Cmd::Mount {
            lower,
            lower_from,
            upper,
            work,
            tmpfs_upper,
            volatile,
            index,
            redirect_dir,
            metacopy,
            userxattr,
            legacy_api,
            fd,
            rm,
            target,
            cmd,
        } => {
            if let Some(n) = fd {
                if n < 3 {
                    return Err(Error::invalid(
                        "fd",
                        n.to_string(),
                        "fds 0-2 are the command's stdin, stdout and stderr",
                    ));
                }
            }
            let req = MountRequest {
                lower: lowers(&lower, lower_from.as_deref())?,
                upper,
                work,
                detached: fd.is_some(),
                target: target.unwrap_or_default(),
                tmpfs_upper: tmpfs_upper.map(|s| (!s.is_empty()).then_some(s)),
                volatile,
                index,
                redirect_dir,
                metacopy,
                userxattr,
                api: if legacy_api { Api::Legacy } else { Api::Auto },
                state_dir: state_dir(),
                discard: rm,
            };
            let mut m = mount::mount(&req)?;
            let how = if m.api == Api::New { "new mount API" } else { "mount(2)" };
            match (fd, m.fd.take()) {
                (Some(n), Some(mnt)) => {
                    verbose::step("mounted", format!("detached, fd {n} ({how})"));
                    exec_with(mnt, n, &cmd, m)
                }
                _ => {
                    verbose::step("mounted", format!("{} ({how})", p(&req.target)));
                    Ok(())
                }
            }
        }
        Cmd::Umount { lazy, target } => mount::umount(&target, lazy, &state_dir()),
        Cmd::Diff { upper, lower, lower_from, userxattr, json } => {
            let lower = if lower.is_empty() && lower_from.is_none() {
                None
            } else {
                Some(lowers(&lower, lower_from.as_deref())?)
            };
            let r = diff::diff(&DiffRequest { upper, lower, userxattr: userxattr.then_some(true) })?;
            let mut out = std::io::stdout().lock();
            for c in &r.changes {
                let line = if json {
                    serde_json::to_string(c).expect("serializable")
                } else {
                    format!("{} {}", c.change.as_str(), cbuild_mountinfo::escape(&c.path))
                };
                if writeln!(out, "{line}").is_err() {
                    break; // reader went away (| head): not our failure
                }
            }
            Ok(())
        }
        Cmd::Inspect { target, json } => {
            let r = inspect::inspect(&target)?;
            for w in &r.warnings {
                eprintln!("cbuild-overlay: inodes: {}", one_line(w));
            }
            if json {
                println!("{}", serde_json::to_string(&r).expect("serializable"));
            } else {
                print_inspect(&r);
            }
            Ok(())
        }
        Cmd::Prune => {
            // One line per dir, as `ls` prints paths: a newline in a name cannot forge a second entry.
            for d in mount::prune(&state_dir())? {
                println!("{}", p(&d));
            }
            Ok(())
        }
        Cmd::Ls { json } => {
            let mounts = inspect::ls()?;
            if json {
                for m in &mounts {
                    println!("{}", serde_json::to_string(m).expect("serializable"));
                }
            } else {
                println!("{:<40} {:>6} {:<10} UPPER", "TARGET", "LOWER", "KEYS");
                for m in &mounts {
                    println!(
                        "{:<40} {:>6} {:<10} {}",
                        p(&m.target),
                        m.lower.len() + m.data.len(),
                        m.layer_keys,
                        m.upper.as_deref().map(p).unwrap_or_else(|| "-".into())
                    );
                }
            }
            Ok(())
        }
    }
}

/// `--lower` values split on `:`, then `--lower-from` lines: both bytes, as paths are; empty lines skipped;
/// a relative line relative to FILE's dir, as a manifest's paths are (stdin's: to the cwd, the only
/// base it has). A line ending in `\r` is refused: a CRLF file would otherwise name dirs that do not
/// exist, or, with the `\r` quietly dropped, a file that only one tool reads right.
fn lowers(lower: &[OsString], from: Option<&Path>) -> Result<Vec<PathBuf>, Error> {
    let mut v: Vec<PathBuf> = vec![];
    for s in lower {
        // As overlay's lowerdir: `:` between dirs, `\:` for a colon in a name.
        let (dirs, data) = cbuild_overlay::mountinfo::split_lowerdir(s.as_bytes());
        if !data.is_empty() {
            return Err(Error::invalid("lowerdir", p(Path::new(s)), "data-only layers (`::`) are not supported"));
        }
        v.extend(dirs.into_iter().filter(|d| !d.as_os_str().is_empty()));
    }
    if let Some(f) = from {
        let (text, base) = if f == Path::new("-") {
            let mut text = vec![];
            std::io::stdin().lock().read_to_end(&mut text).map_err(|e| Error::os("lower-from", "-", e))?;
            (text, None)
        } else {
            (std::fs::read(f).map_err(|e| Error::os("lower-from", p(f), e))?, f.parent())
        };
        for (i, line) in text.split(|&b| b == b'\n').enumerate() {
            if line.is_empty() {
                continue;
            }
            if line.ends_with(b"\r") {
                return Err(Error::invalid(
                    "lower-from",
                    format!("{}:{}", p(f), i + 1),
                    "the line ends in a carriage return (CRLF line ends?)",
                )
                .with_hint(if base.is_some() {
                    format!("convert it to LF line ends: sed -i 's/\\r$//' -- {}", sh_word(f))
                } else {
                    "convert the input to LF line ends, e.g. through tr -d '\\r'".to_string()
                }));
            }
            let dir = Path::new(std::ffi::OsStr::from_bytes(line));
            v.push(match base {
                Some(base) if dir.is_relative() => base.join(dir),
                _ => dir.to_path_buf(),
            });
        }
    }
    Ok(v)
}

/// `<state>` per the contract: CBUILD_STATE, else /run/cbuild for root, else the user's runtime dir.
fn state_dir() -> PathBuf {
    if let Some(s) = std::env::var_os("CBUILD_STATE") {
        return PathBuf::from(s);
    }
    if rustix::process::geteuid().is_root() {
        return PathBuf::from("/run/cbuild");
    }
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(d) => PathBuf::from(d).join("cbuild"),
        None => PathBuf::from(format!("/run/user/{}/cbuild", rustix::process::geteuid().as_raw())),
    }
}

fn human_bytes(b: u64) -> String {
    const U: [&str; 5] = ["B", "K", "M", "G", "T"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1024.0 && i < U.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{b}B")
    } else {
        format!("{v:.1}{}", U[i])
    }
}

fn print_inspect(r: &inspect::Inspect) {
    let m = &r.mount;
    println!(
        "overlay on {} (source {}, {}, {} lower layer(s){})",
        p(&m.target),
        p(Path::new(&m.source)),
        m.layer_keys,
        m.lower.len() + m.data.len(),
        if m.upper.is_some() { ", upper" } else { ", read-only" }
    );
    if !m.options.is_empty() {
        println!("options: {}", m.options.join(","));
    }
    println!(
        "{:<6} {:>4} {:>8} {:>6} {:>8} {:>9} {:>6} {:>11} {:>6} {:>9}  PATH",
        "ROLE", "#", "FILES", "DIRS", "INODES", "BYTES", "FS", "INODES-FREE", "IUSE%", "FREE"
    );
    for l in &r.layers {
        let (fs, ifree, iuse, free) = match &l.fs {
            Some(f) => (
                f.fs_type.clone(),
                f.inodes_free.to_string(),
                format!("{:.1}", f.inodes_used_percent),
                human_bytes(f.bytes_available),
            ),
            None => ("?".into(), "?".into(), "?".into(), "?".into()),
        };
        println!(
            "{:<6} {:>4} {:>8} {:>6} {:>8} {:>9} {:>6} {:>11} {:>6} {:>9}  {}{}",
            l.role,
            l.index.map(|i| i.to_string()).unwrap_or_else(|| "-".into()),
            l.counts.files,
            l.counts.dirs,
            l.counts.inodes,
            human_bytes(l.counts.bytes),
            fs,
            ifree,
            iuse,
            free,
            p(&l.path),
            l.error.as_ref().map(|e| format!("  ({e})")).unwrap_or_default()
        );
    }
}
