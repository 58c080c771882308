//! cbuild-cgroup: the CLI. Parsing with clap, then one call into the library per verb, and the
//! contract's error line and exit code.
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
use std::os::unix::ffi::OsStringExt;

use cbuild_cgroup::limits::RawLimits;
use cbuild_cgroup::{log, Error};
use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cbuild-cgroup",
    version,
    about = "Control groups on cgroup v1, v2 and hybrid hosts: limits, placement, statistics, events."
)]
struct Cli {
    /// Print each step to stderr as it happens.
    #[arg(short, long, global = true)]
    verbose: bool,
    /// Machine output: one JSON object, or JSON lines for lists and streams.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    verb: Verb,
}

// `defer`: a verb's arguments are defined only when that verb is the one run, not every verb's on each
// start (this tool runs in front of every container start).
#[derive(Subcommand)]
#[command(defer = true)]
enum Verb {
    /// The host's cgroup layout (unified, hybrid, legacy), hierarchies, controllers and features.
    Info,
    /// Create NAME (cbuild/NAME in every hierarchy) with limits.
    Create {
        name: String,
        #[command(flatten)]
        limits: LimitArgs,
    },
    /// Change the limits of an existing NAME.
    Set {
        name: String,
        #[command(flatten)]
        limits: LimitArgs,
    },
    /// Move processes into NAME in every hierarchy.
    Add {
        name: String,
        #[arg(required = true)]
        pids: Vec<String>,
    },
    /// Create (or reuse) NAME, move this process into it, and exec CMD (with --rm: run CMD in a new NAME,
    /// then remove it).
    Exec {
        name: String,
        #[command(flatten)]
        limits: LimitArgs,
        /// Do not move into NAME's cgroup2 group: open it as fd N for CMD to create its processes in
        /// (`cbuild-ns run --cgroup-fd N`). Skips the RCU grace period a cgroup2 move waits for. On a host
        /// without a cgroup2 tree, fd N is /dev/null: nothing to join.
        #[arg(long, value_name = "N")]
        cgroup_fd: Option<i32>,
        /// Run CMD as a child instead of becoming it, pass signals on, and remove NAME when CMD has exited
        /// (killing what it left there); exit with CMD's status. NAME must not exist yet.
        #[arg(long)]
        rm: bool,
        /// Only join NAME if it exists (no limits; an error if it does not): `docker exec` into a running
        /// container, which must not make a new cgroup if the container has just gone.
        #[arg(long, conflicts_with = "rm")]
        existing: bool,
        /// NAME must not exist yet, as with --rm: a runtime that removes NAME (and kills what is in it)
        /// when its container ends must not have joined someone else's.
        #[arg(long, conflicts_with_all = ["rm", "existing"])]
        new: bool,
        #[arg(last = true, required = true, value_name = "CMD")]
        cmd: Vec<std::ffi::OsString>,
    },
    /// Memory, CPU, pids, io and pressure numbers for NAME.
    Stat { name: String },
    /// OOM kills and pids-limit hits as JSON lines.
    Events {
        name: String,
        /// Keep watching and print events as they happen (until NAME is removed).
        #[arg(short, long)]
        follow: bool,
    },
    /// List cgroups made by cbuild-cgroup.
    Ls,
    /// Signal every process in NAME (default SIGKILL, via cgroup.kill where available).
    Kill {
        name: String,
        /// A name (TERM, sigusr1), a real-time signal (RTMIN+3, RTMAX-1) or a number, as kill(1) takes.
        #[arg(short, long, default_value = "KILL")]
        signal: String,
    },
    /// Remove NAME from every hierarchy (the shared cbuild/ parent stays for the next one; see prune).
    Rm {
        name: String,
        /// Kill live processes first instead of refusing.
        #[arg(short, long)]
        force: bool,
        /// A NAME that does not exist, or cannot (`tasks`), is not an error (for undo steps that may
        /// run twice, or after `exec` refused the NAME).
        #[arg(long)]
        missing_ok: bool,
    },
    /// Remove the shared cbuild/ parent from every hierarchy where no NAME is left (rm keeps it, as
    /// Docker keeps docker/); prints each dir removed.
    Prune,
}

// Docker's flags. Values are parsed by the library (so bad input gets the contract's error shape).
// (A `//` comment: with `defer`, a doc comment here would replace the help text of every verb that
// flattens these.)
#[derive(Args)]
struct LimitArgs {
    /// Memory limit: bytes or k/m/g suffix, or max.
    #[arg(short = 'm', long, allow_hyphen_values = true)]
    memory: Option<String>,
    /// Memory plus swap (Docker's meaning); -1 or max for unlimited swap. Default: twice --memory.
    #[arg(long, allow_hyphen_values = true)]
    memory_swap: Option<String>,
    /// Soft limit (v1 soft_limit_in_bytes, v2 memory.low).
    #[arg(long, allow_hyphen_values = true)]
    memory_reservation: Option<String>,
    /// CPUs worth of time per period, e.g. 1.5 (quota 150000 per period 100000).
    #[arg(long, allow_hyphen_values = true)]
    cpus: Option<String>,
    /// CFS period in µs (1000..1000000).
    #[arg(long, allow_hyphen_values = true)]
    cpu_period: Option<String>,
    /// CFS quota in µs per period, -1 for none.
    #[arg(long, allow_hyphen_values = true)]
    cpu_quota: Option<String>,
    /// Relative weight on the v1 scale (2..262144, default 1024); converted to cpu.weight on v2.
    #[arg(short = 'c', long, allow_hyphen_values = true)]
    cpu_shares: Option<String>,
    /// Relative weight on the v2 scale (1..10000, default 100); converted to cpu.shares on v1.
    #[arg(long, allow_hyphen_values = true)]
    cpu_weight: Option<String>,
    /// CPUs allowed, e.g. 0-1,3.
    #[arg(long, allow_hyphen_values = true)]
    cpuset_cpus: Option<String>,
    /// Memory nodes allowed, e.g. 0.
    #[arg(long, allow_hyphen_values = true)]
    cpuset_mems: Option<String>,
    /// Maximum number of processes and threads (or max).
    #[arg(long, alias = "pids-limit", allow_hyphen_values = true)]
    pids: Option<String>,
    /// Block I/O weight, 10..1000 (Docker's --blkio-weight).
    #[arg(long, alias = "blkio-weight", allow_hyphen_values = true)]
    io_weight: Option<String>,
    /// DEV:rbps=..,wbps=..,riops=..,wiops=.. with DEV a MAJ:MIN or /dev path (repeatable).
    #[arg(long, allow_hyphen_values = true)]
    io_max: Vec<String>,
    /// Kill the whole cgroup when the OOM killer picks one of its processes (v2).
    #[arg(long)]
    oom_group: bool,
    /// How readily the kernel swaps the cgroup's memory, 0..100; -1 for the host's (v1 only).
    #[arg(long, allow_hyphen_values = true)]
    memory_swappiness: Option<String>,
    /// No OOM kills in the cgroup: at its memory limit its tasks wait for memory (v1 only).
    #[arg(long)]
    oom_kill_disable: bool,
    /// Real-time scheduling period in µs (v1 with real-time group scheduling).
    #[arg(long, allow_hyphen_values = true)]
    cpu_rt_period: Option<String>,
    /// Real-time runtime in µs per period, -1 for no limit; comes out of the cbuild/ parent's (v1).
    #[arg(long, allow_hyphen_values = true)]
    cpu_rt_runtime: Option<String>,
    /// 1: the group's tasks run under SCHED_IDLE, only when nothing else wants the CPU; 0: normal
    /// (runc update's --cpu-idle; Linux 5.15).
    #[arg(long, allow_hyphen_values = true)]
    cpu_idle: Option<String>,
    /// Quota unused in earlier periods that one period may spend beyond its own, in µs, at most the
    /// quota (runc update's --cpu-burst; Linux 5.14).
    #[arg(long, allow_hyphen_values = true)]
    cpu_burst: Option<String>,
    /// Read linux.resources from an OCI runtime config (flags override it).
    #[arg(long, value_name = "CONFIG_JSON")]
    oci: Option<String>,
    /// Device nodes: all (no policy, the default) or docker (deny all but Docker's default list: mknod of
    /// any node, and opening null, zero, full, random, urandom, tty, console, ptmx and pts). v1: the devices
    /// controller; v2: an attached BPF device program.
    #[arg(long, value_name = "POLICY")]
    devices: Option<String>,
    /// Allow one more, e.g. 'c 10:200 rwm' (TYPE MAJOR:MINOR ACCESS, * for any; repeatable; implies
    /// --devices docker).
    #[arg(long, value_name = "RULE")]
    device_cgroup_rule: Vec<String>,
}

impl From<LimitArgs> for RawLimits {
    fn from(a: LimitArgs) -> RawLimits {
        RawLimits {
            memory: a.memory,
            memory_swap: a.memory_swap,
            memory_reservation: a.memory_reservation,
            cpus: a.cpus,
            cpu_period: a.cpu_period,
            cpu_quota: a.cpu_quota,
            cpu_shares: a.cpu_shares,
            cpu_weight: a.cpu_weight,
            cpuset_cpus: a.cpuset_cpus,
            cpuset_mems: a.cpuset_mems,
            pids: a.pids,
            io_weight: a.io_weight,
            io_max: a.io_max,
            oom_group: a.oom_group,
            memory_swappiness: a.memory_swappiness,
            oom_kill_disable: a.oom_kill_disable,
            cpu_rt_period: a.cpu_rt_period,
            cpu_rt_runtime: a.cpu_rt_runtime,
            cpu_idle: a.cpu_idle,
            cpu_burst: a.cpu_burst,
            oci: a.oci,
            devices: a.devices,
            device_rules: a.device_cgroup_rule,
        }
    }
}

fn run(cli: Cli) -> Result<u8, Error> {
    let out = &mut std::io::stdout().lock();
    let done = match cli.verb {
        Verb::Info => cbuild_cgroup::info(cli.json, out),
        Verb::Create { name, limits } => cbuild_cgroup::create(&name, &limits.into()),
        Verb::Set { name, limits } => cbuild_cgroup::set(&name, &limits.into()),
        Verb::Add { name, pids } => cbuild_cgroup::add(&name, &pids),
        Verb::Exec { name, limits, cgroup_fd, rm: true, cmd, .. } => {
            let code = cbuild_cgroup::exec_rm(&name, &limits.into(), cgroup_fd, &cmd)?;
            // The command's own status (0-255; 128+N for a signal).
            return Ok(code as u8);
        }
        Verb::Exec { name, limits, cgroup_fd, existing: true, cmd, .. } => {
            cbuild_cgroup::exec_existing(&name, &limits.into(), cgroup_fd, &cmd).map(|n| match n {})
        }
        Verb::Exec { name, limits, cgroup_fd, rm: false, new, cmd, .. } => {
            cbuild_cgroup::exec(&name, &limits.into(), cgroup_fd, new, &cmd).map(|n| match n {})
        }
        Verb::Stat { name } => cbuild_cgroup::stat(&name, cli.json, out),
        Verb::Events { name, follow } => cbuild_cgroup::events(&name, follow, out),
        Verb::Ls => cbuild_cgroup::ls(cli.json, out),
        Verb::Kill { name, signal } => cbuild_cgroup::kill(&name, &signal),
        Verb::Rm { name, force, missing_ok } => cbuild_cgroup::rm(&name, force, missing_ok),
        Verb::Prune => cbuild_cgroup::prune(out),
    };
    done.map(|()| 0)
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
    // A closed 0, 1 or 2 (`cbuild-cgroup ... 2>&-`) would be the number of the first file we open, and an
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
    // End quietly, as C tools do, when the reader of our output goes away (`| head`), whatever disposition
    // the caller left us (a Rust parent ignores SIGPIPE: a closed pipe would be a panic here, and the
    // ignore would pass on to a command we exec).
    // SAFETY: restoring the default disposition before any thread exists.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let cli = match Cli::try_parse_from(args) {
        Ok(c) => c,
        Err(e) => {
            // Usage errors are bad input too: exit 125 (help and version exit 0).
            let code = if e.use_stderr() { 125 } else { 0 };
            if e.use_stderr() {
                let msg = e.to_string();
                // clap's first paragraph, on one line: a list it ends with a colon ("not provided:") is in it.
                let first = msg.split("\n\n").next().unwrap_or("").split_whitespace().collect::<Vec<_>>().join(" ");
                let first = first.trim_start_matches("error: ");
                eprintln!("cbuild-cgroup: usage: command line: {first}");
                eprintln!("hint: cbuild-cgroup --help");
            } else {
                let _ = e.print();
            }
            return code;
        }
    };
    log::set_verbose(cli.verbose);
    match run(cli) {
        Ok(code) => code,
        Err(mut e) => {
            eprintln!("cbuild-cgroup: {e}");
            if let Some(h) = &e.hint {
                eprintln!("hint: {h}");
            }
            // Only with the error line out may a stop signal held through the failed step end the process.
            e.release();
            e.exit_code as u8
        }
    }
}
