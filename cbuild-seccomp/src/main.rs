//! cbuild-seccomp: the CLI. Mechanism lives in the library; this file parses arguments, prints, and maps
//! errors to the exit codes of docs/ARCHITECTURE.md.

use cbuild_seccomp::arch::Arch;
use cbuild_seccomp::check::{self, Query};
use cbuild_seccomp::compile::{self, Compiled, Options};
use cbuild_seccomp::profile::{self, Format, Profile};
use cbuild_seccomp::resolve::{self, Resolved, Target};
use cbuild_seccomp::{bpf, builtin, caps, inspect, step, Error, Result, TOOL};
use clap::{Args, Parser, Subcommand};
use std::ffi::{CString, OsString};
use std::io::{IsTerminal, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

#[derive(Parser)]
#[command(name = "cbuild-seccomp", version, about = "Docker and OCI seccomp profiles: compile, load, check, explain")]
struct Cli {
    /// Print each step to stderr.
    #[arg(short, long, global = true)]
    verbose: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Args, Clone)]
struct Resolve {
    /// Capability set the profile's includes/excludes are resolved against: a comma list of `default`
    /// (Docker's 14), `all`, `none`, CAP_X (add) and -CAP_X (remove).
    #[arg(long, default_value = "default")]
    caps: String,
    /// Architecture to build for (amd64, arm64, SCMP_ARCH_S390X, …); default: this machine's.
    #[arg(long)]
    arch: Option<String>,
    /// Kernel version minKernel is compared with; default: the running kernel's.
    #[arg(long)]
    kernel: Option<String>,
    /// Read the profile from an OCI config.json's linux.seccomp (detected automatically otherwise).
    #[arg(long)]
    oci: bool,
    /// Skip libseccomp's binary-tree optimization (for comparison).
    #[arg(long)]
    no_optimize: bool,
    /// Do not prepend the ENOSYS prologue for syscalls newer than the profile.
    #[arg(long)]
    no_enosys: bool,
    /// Neither read nor write the cache of compiled programs under <data>/seccomp.
    #[arg(long)]
    no_cache: bool,
    /// Build the program with libseccomp's generator instead of ours (the reference the tests compare
    /// with; ~9 ms slower).
    #[arg(long, value_enum, default_value = "native", hide = true)]
    generator: GeneratorArg,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum GeneratorArg {
    Native,
    Libseccomp,
}

#[derive(Subcommand)]
enum Cmd {
    /// Write the raw cBPF program (struct sock_filter[]) for `cbuild-ns run --seccomp FILE`.
    Compile {
        /// A profile file (Docker or OCI format, `-` for stdin) or `default`.
        profile: String,
        /// Output file (default: stdout).
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Print a summary (instructions, flags, arches) as JSON on stdout.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        r: Resolve,
    },
    /// Load the profile and exec CMD in this process (keeping the PID).
    Exec {
        #[arg(long)]
        profile: String,
        /// Do not set no_new_privs (loading then needs CAP_SYS_ADMIN).
        #[arg(long)]
        no_new_privs_off: bool,
        #[command(flatten)]
        r: Resolve,
        #[arg(last = true, required = true)]
        cmd: Vec<OsString>,
    },
    /// Tell for each SYSCALL[,ARG...] what the compiled profile does with it.
    Check {
        #[arg(long)]
        profile: String,
        /// The ABI the call is made from (x86 for a 32-bit call on x86_64); default: --arch.
        #[arg(long)]
        abi: Option<String>,
        /// Check every syscall number libseccomp can name for the ABI (arguments 0).
        #[arg(long)]
        all: bool,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        r: Resolve,
        syscalls: Vec<String>,
    },
    /// The resolved rules as a table, JSON, or libseccomp's PFC text.
    Show {
        profile: String,
        #[arg(long, conflicts_with = "pfc")]
        json: bool,
        #[arg(long)]
        pfc: bool,
        #[command(flatten)]
        r: Resolve,
    },
    /// Print the built-in `default` profile as Docker-format JSON.
    Default,
    /// Seccomp mode, number of filters and no_new_privs of a process.
    Inspect {
        pid: u32,
        #[arg(long)]
        json: bool,
    },
}

fn main() {
    // End quietly, as C tools do, when the reader of our output goes away (`| head`); the Rust runtime
    // ignores SIGPIPE, which turns that into a panic (and would pass the ignore on to a command we exec).
    // SAFETY: restoring the default disposition before any thread exists.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) if !e.use_stderr() || e.kind() == clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            // --help, --version, or no subcommand: clap's text, success.
            let _ = e.print();
            std::process::exit(0);
        }
        Err(e) => {
            // Usage errors are bad input too: one line in the contract's shape and 125 (clap's 2 could
            // not be told from the status of a command `exec` runs).
            // clap's message up to its usage block, on one line ("... not provided: <PROFILE>").
            let text = e.to_string();
            let msg: Vec<&str> =
                text.lines().map(str::trim).take_while(|l| !l.is_empty() && !l.starts_with("Usage:")).collect();
            let msg = msg.join(" ");
            eprintln!("{TOOL}: args: command line: {}", msg.trim_start_matches("error: "));
            eprintln!("hint: {TOOL} --help");
            std::process::exit(125);
        }
    };
    cbuild_seccomp::set_verbose(cli.verbose);
    if let Err(e) = run(cli.cmd) {
        eprintln!("{TOOL}: {e}");
        if let Some(h) = &e.hint {
            eprintln!("hint: {h}");
        }
        // A stop signal that interrupted a write (already undone) lands now, after its line: 128+N.
        cbuild_seccomp::signals::release();
        std::process::exit(e.code);
    }
}

const BUILTIN: &str = "built-in default";

/// The largest profile or config.json read.
const MAX_PROFILE: u64 = 16 << 20;

fn load_profile(name: &str, oci: bool) -> Result<(Profile, &'static str)> {
    if name == "default" && !Path::new(name).exists() {
        return Ok((builtin::default_profile(), BUILTIN));
    }
    step("read", name);
    let object = if name == "-" { "stdin" } else { name };
    let src: Box<dyn Read> = if name == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(std::fs::File::open(name).map_err(|e| Error::new("read", name, e))?)
    };
    // Bounded: `compile /dev/zero` (or a runaway pipe) otherwise grows memory until the OOM killer ends
    // it. Docker's default profile is ~20 KiB, an OCI config.json rarely above 100 KiB.
    let mut text = String::new();
    src.take(MAX_PROFILE + 1).read_to_string(&mut text).map_err(|e| Error::new("read", object, e))?;
    if text.len() as u64 > MAX_PROFILE {
        return Err(Error::new("read", object, format!("larger than {} MiB", MAX_PROFILE >> 20)));
    }
    step("parse", name);
    let (p, f) = profile::parse(&text, name, oci)?;
    Ok((p, if f == Format::OciConfig { "OCI config.json" } else { "profile" }))
}

fn target(r: &Resolve) -> Result<Target> {
    let caps = caps::parse(&r.caps)?;
    let mut t = Target::host(caps);
    if let Some(a) = &r.arch {
        t.arch = Arch::parse(a).ok_or_else(|| Error::new("resolve", format!("--arch {a}"), "unknown architecture"))?;
    }
    if let Some(k) = &r.kernel {
        t.kernel = resolve::parse_kernel(k)
            .ok_or_else(|| Error::new("resolve", format!("--kernel {k}"), "not a version like 5.10"))?;
    }
    Ok(t)
}

fn resolved(profile: &str, r: &Resolve) -> Result<(Resolved, &'static str)> {
    let (p, kind) = load_profile(profile, r.oci)?;
    let t = target(r)?;
    step("resolve", &format!("{profile} for {} caps={}", t.arch.name, t.caps.len()));
    let res = resolve::resolve(&p, &t)?;
    // The built-in profile names calls newer than an older libseccomp knows; that is expected, so it is
    // only reported with -v. A user's profile gets the warning.
    if !res.unknown.is_empty() && (kind != BUILTIN || cbuild_seccomp::verbose()) {
        let why = format!("unknown to libseccomp {}, skipped", resolve::libseccomp_version());
        // One line, of a readable length even for a profile listing thousands of made-up names.
        const SHOWN: usize = 20;
        let mut names = res.unknown.iter().take(SHOWN).cloned().collect::<Vec<_>>().join(",");
        if res.unknown.len() > SHOWN {
            names.push_str(&format!(" and {} more", res.unknown.len() - SHOWN));
        }
        cbuild_seccomp::warn("resolve", &names, &why);
    }
    Ok((res, kind))
}

fn options(r: &Resolve) -> Options {
    let generator = match r.generator {
        GeneratorArg::Native => compile::Generator::Native,
        GeneratorArg::Libseccomp => compile::Generator::Libseccomp,
    };
    Options { optimize: !r.no_optimize, enosys: !r.no_enosys, cache: !r.no_cache, generator }
}

fn compiled(profile: &str, r: &Resolve) -> Result<(Resolved, Compiled, &'static str)> {
    let (res, kind) = resolved(profile, r)?;
    let c = compile::compile(&res, options(r))?;
    Ok((res, c, kind))
}

fn flag_names(res: &Resolved) -> Vec<&'static str> {
    res.flags.iter().map(|f| f.short()).collect()
}

fn run(cmd: Cmd) -> Result<()> {
    match cmd {
        Cmd::Compile { profile, output, json, r } => {
            let (res, c, _) = compiled(&profile, &r)?;
            let bytes = bpf::to_bytes(&c.prog);
            match &output {
                Some(path) => write_atomic(path, &bytes)?,
                None => {
                    let mut out = std::io::stdout().lock();
                    if out.is_terminal() {
                        return Err(Error::new("write", "stdout", "refusing to write a binary program to a terminal")
                            .hint("use -o FILE or a pipe"));
                    }
                    out.write_all(&bytes).and_then(|_| out.flush()).map_err(|e| Error::new("write", "stdout", e))?;
                }
            }
            if json {
                let summary = serde_json::json!({
                    "path": output,
                    "instructions": c.prog.len(),
                    "bytes": bytes.len(),
                    "prologue_instructions": c.prologue,
                    "arches": res.arches.iter().map(|a| a.name).collect::<Vec<_>>(),
                    "flags": flag_names(&res),
                    // Ready for `cbuild-ns run --seccomp FILE --seccomp-flags ...`.
                    "seccomp_flags": flag_names(&res).join(",").to_ascii_lowercase(),
                    "rules": res.rules.len(),
                    "skipped": res.skipped.len(),
                });
                println!("{summary}");
            }
            Ok(())
        }
        Cmd::Exec { profile, no_new_privs_off, r, cmd } => {
            // Profile errors first, then the command, and only then compile (which may write the cache).
            let (res, _) = resolved(&profile, &r)?;
            let path = find_command(&cmd[0])?;
            let c = compile::compile(&res, options(&r))?;
            let argv: Vec<CString> = cmd.iter().map(|a| CString::new(a.as_bytes()).unwrap_or_default()).collect();
            let prog = CString::new(path.as_os_str().as_bytes()).unwrap_or_default();
            step("load", &format!("{} instructions, flags {:#x}", c.prog.len(), res.flag_bits()));
            bpf::load(&c.prog, res.flag_bits(), !no_new_privs_off)?;
            step("execve", &path.to_string_lossy());
            let e = nix::unistd::execv(&prog, &argv).unwrap_err();
            let code = if e == nix::errno::Errno::ENOENT { 127 } else { 126 };
            Err(Error::new("execve", path.to_string_lossy(), std::io::Error::from(e)).code(code))
        }
        Cmd::Check { profile, abi, all, json, r, syscalls } => {
            let (res, _) = resolved(&profile, &r)?;
            let abi = match &abi {
                Some(a) => {
                    Arch::parse(a).ok_or_else(|| Error::new("check", format!("--abi {a}"), "unknown architecture"))?
                }
                None => res.target.arch,
            };
            let queries = if all {
                check::all_queries(abi)
            } else {
                syscalls.iter().map(|s| Query::parse(s, abi)).collect::<Result<Vec<_>>>()?
            };
            if queries.is_empty() {
                return Err(Error::new("check", "syscalls", "name at least one SYSCALL[,ARG...] or use --all"));
            }
            let c = compile::compile(&res, options(&r))?;
            let answers = queries.iter().map(|q| check::check(&res, &c, abi, q)).collect::<Result<Vec<_>>>()?;
            let mut out = std::io::stdout().lock();
            if json {
                for a in &answers {
                    let _ = writeln!(out, "{}", serde_json::to_string(a).unwrap_or_default());
                }
            } else {
                let _ = writeln!(out, "{:<24} {:>5}  {:<22} {:<20} WHY", "SYSCALL", "NR", "ARGS", "RESULT");
                for a in &answers {
                    let args = a.args.iter().map(|v| format!("{v:#x}")).collect::<Vec<_>>().join(",");
                    let result = check::verdict(a.ret);
                    let name = a.syscall.clone().unwrap_or_else(|| "?".into());
                    let _ = writeln!(out, "{name:<24} {:>5}  {args:<22} {result:<20} {}: {}", a.nr, a.by, a.why);
                }
            }
            Ok(())
        }
        Cmd::Show { profile, json, pfc, r } => {
            let (res, kind) = resolved(&profile, &r)?;
            // The rules are worth showing even where this libseccomp cannot build the program (an
            // architecture it does not support); only --pfc needs the program.
            let opts = options(&r);
            let c = compile::compile(&res, opts);
            let c = match c {
                Err(e) if !pfc => Err(e.to_string()),
                other => Ok(other?),
            };
            show(&profile, kind, &res, c.as_ref(), json, pfc.then_some(opts))
        }
        Cmd::Default => {
            let text = serde_json::to_string_pretty(&builtin::default_profile())
                .map_err(|e| Error::new("default", "profile", e))?;
            println!("{text}");
            Ok(())
        }
        Cmd::Inspect { pid, json } => {
            let s = inspect::inspect(pid)?;
            if json {
                println!("{}", serde_json::to_string(&s).unwrap_or_default());
            } else {
                let filters = s.filters.map(|f| f.to_string()).unwrap_or_else(|| "-".into());
                println!("{:<8} {:<9} {:<8} NO_NEW_PRIVS", "PID", "SECCOMP", "FILTERS");
                println!("{:<8} {:<9} {:<8} {}", s.pid, s.mode, filters, if s.no_new_privs { "yes" } else { "no" });
            }
            Ok(())
        }
    }
}

fn show(
    profile: &str,
    kind: &str,
    res: &Resolved,
    c: std::result::Result<&Compiled, &String>,
    json: bool,
    pfc: Option<Options>,
) -> Result<()> {
    let mut out = std::io::stdout().lock();
    let known = c.map(|c| c.known.clone()).unwrap_or_default();
    let instructions = c.map(|c| c.prog.len()).ok();
    let enosys: Vec<String> = known
        .iter()
        .map(|(a, k)| match k.base {
            0 => format!("{}: nr above {} -> ERRNO(38 ENOSYS)", a.name, k.max),
            b => format!("{}: nr above {b:#x}+{} -> ERRNO(38 ENOSYS)", a.name, k.max - b),
        })
        .collect();
    if let Some(opts) = pfc {
        let c = c.map_err(|e| Error::new("compile", profile, e))?;
        let _ = writeln!(out, "# cbuild-seccomp: {} instructions loaded; before libseccomp's program:", c.prog.len());
        for line in &enosys {
            let _ = writeln!(out, "#   {line}");
        }
        let _ = write!(out, "{}", compile::pfc(&compile::filter(res, opts)?)?);
        return Ok(());
    }
    let default_errno = res.default_action.errno();
    if json {
        let rules: Vec<_> = res
            .rules
            .iter()
            .map(|r| {
                serde_json::json!({
                    "syscall": r.name,
                    "action": r.action.scmp(),
                    "errno": r.action.errno(),
                    "args": r.conds,
                })
            })
            .collect();
        let v = serde_json::json!({
            "profile": profile,
            "format": kind,
            "arch": res.target.arch.name,
            "caps": res.target.caps,
            "kernel": format!("{}.{}.{}", res.target.kernel.0, res.target.kernel.1, res.target.kernel.2),
            "default_action": res.default_action.scmp(),
            "default_errno": default_errno,
            "arches": res.arches.iter().map(|a| a.name).collect::<Vec<_>>(),
            "flags": flag_names(res),
            "rules": rules,
            "skipped": res.skipped,
            "enosys": known.iter().map(|(a, k)| serde_json::json!({"arch": a.name, "above": k.max})).collect::<Vec<_>>(),
            "instructions": instructions,
            "compile_error": c.err(),
            "libseccomp": resolve::libseccomp_version(),
        });
        let _ = writeln!(out, "{v}");
        return Ok(());
    }
    let _ = writeln!(out, "profile:  {profile} ({kind})");
    let _ = writeln!(
        out,
        "resolved: {} kernel {}.{}, caps {}",
        res.target.arch.name,
        res.target.kernel.0,
        res.target.kernel.1,
        res.target.caps.iter().map(|c| &c[4..]).collect::<Vec<_>>().join(",")
    );
    let _ = writeln!(out, "default:  {}", res.default_action);
    let _ = writeln!(out, "arches:   {}", res.arches.iter().map(|a| a.name).collect::<Vec<_>>().join(","));
    let flags = flag_names(res);
    let _ = writeln!(out, "flags:    {}", if flags.is_empty() { "-".into() } else { flags.join(",") });
    match c {
        Ok(c) => writeln!(out, "program:  {} instructions", c.prog.len()),
        Err(e) => writeln!(out, "program:  not built: {e}"),
    }
    .ok();
    for line in &enosys {
        let _ = writeln!(out, "enosys:   {line}");
    }
    let _ = writeln!(out, "\n{:<26} {:<22} CONDITIONS", "SYSCALL", "ACTION");
    for r in &res.rules {
        let conds = r.conds.iter().map(|c| c.to_string()).collect::<Vec<_>>().join(" && ");
        let _ = writeln!(out, "{:<26} {:<22} {}", r.name, r.action.to_string(), conds);
    }
    for s in &res.skipped {
        let _ = writeln!(out, "{:<26} {:<22} skipped: {}", s.syscall, "-", s.reason);
    }
    Ok(())
}

/// Write `bytes` to `path` whole or not at all: a new temporary file in the same directory, then rename.
/// The temporary file is created with O_EXCL (which also refuses a symlink in its place) under a name
/// nobody can predict: `-o` often points into a shared directory such as /tmp, where a planted
/// `.NAME.PID.tmp -> /etc/shadow` would otherwise have root write the program through the link.
/// The stop signals are held from the temporary's creation to the rename: one that arrives before the
/// rename removes the temporary (`write: FILE: interrupted by SIGx`, FILE neither made nor replaced), one
/// after it ends the process with FILE written.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    step("write", &path.to_string_lossy());
    // Every container start compiles its unchanged profile to the same file: leave an identical regular
    // file alone. Replacing it by rename costs more than the compile (ext4's auto_da_alloc starts writing
    // the new file's data back on a rename over an existing file, and waits for the journal under load).
    // Its modification time is still set to now, as a rewrite would: callers (cbuild-run's cache) read it
    // as "compiled after the tool", like make does.
    // Only a file no one else can change: ours, one link, no group or other write bit. In a shared
    // directory another user could otherwise plant the right bytes, world-writable, and rewrite the
    // program (`ret ALLOW`) once we had taken it as ours; a rewrite replaces it with a file of ours.
    let ours = |m: &std::fs::Metadata| {
        use std::os::unix::fs::MetadataExt;
        m.is_file() && m.uid() == nix::unistd::geteuid().as_raw() && m.nlink() == 1 && m.mode() & 0o022 == 0
    };
    if std::fs::symlink_metadata(path).is_ok_and(|m| ours(&m) && m.len() == bytes.len() as u64)
        && std::fs::read(path).is_ok_and(|old| old == bytes)
    {
        step("write", &format!("{}: unchanged", path.display()));
        let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).map_err(|_| {
            Error::new("write", path.to_string_lossy(), std::io::Error::from(std::io::ErrorKind::InvalidInput))
        })?;
        if unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), std::ptr::null(), libc::AT_SYMLINK_NOFOLLOW) } != 0 {
            return Err(Error::new("write", path.to_string_lossy(), std::io::Error::last_os_error()));
        }
        return Ok(());
    }
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let fail = |e: std::io::Error| Error::new("write", path.to_string_lossy(), e);
    // Before the temporary exists, so no signal can end us while it does.
    let held = cbuild_seccomp::signals::Held::hold();
    let mut attempt = 0u32;
    let (tmp, mut f) = loop {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos());
        let tmp = path.with_file_name(format!(".{name}.{}.{}.tmp", std::process::id(), nanos.unwrap_or(0)));
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)
        {
            Ok(f) => break (tmp, f),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && attempt < 16 => attempt += 1,
            Err(e) => return Err(fail(e)),
        }
    };
    let res = f
        .write_all(bytes)
        .map_err(fail)
        .and_then(|_| {
            drop(f);
            // The last moment to stop with nothing made; after the rename the write is done.
            held.check("write", path.to_string_lossy())
        })
        .and_then(|_| std::fs::rename(&tmp, path).map_err(fail));
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    drop(held);
    res
}

/// Look the command up before the filter is loaded (a profile may well forbid the lookup's syscalls).
fn find_command(cmd: &OsString) -> Result<PathBuf> {
    let p = Path::new(cmd);
    if cmd.as_bytes().contains(&b'/') {
        // Checked here too, so that a missing command is reported before anything is compiled or loaded.
        if !p.exists() {
            return Err(Error::new("execve", p.to_string_lossy(), "No such file or directory").code(127));
        }
        return Ok(p.to_path_buf());
    }
    let path = std::env::var_os("PATH")
        .unwrap_or_else(|| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path)
        .map(|d| d.join(p))
        .find(|f| f.is_file())
        .ok_or_else(|| Error::new("execve", p.to_string_lossy(), "command not found").code(127))
}
