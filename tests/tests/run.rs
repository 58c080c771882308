//! scripts/cbuild-run and friends, end to end: every flag, Docker's exit codes, detached containers,
//! bridge networking with published ports (inside a "host" network namespace the test makes), escape
//! attempts from a container started with the seed's hardening command, and a loop of runs with some
//! killed by SIGKILL mid-start, after which cbuild-rm leaves nothing behind.
//!
//! The scripts find the built tools through CBUILD_BIN. All containers share one data dir (one image
//! store, built on first use) and each test has its own state dir.

use cbuild_tests::*;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const IMAGE: &str = "cbuild/busybox";

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts").join(name)
}

/// One data dir for the whole test process, with the default image built once; removed at exit (statics
/// are never dropped, so an atexit hook does it).
fn shared_data() -> &'static Path {
    static DATA: OnceLock<PathBuf> = OnceLock::new();
    extern "C" fn remove_shared_data() {
        if let Some(d) = DATA.get() {
            let _ = std::fs::remove_dir_all(d);
        }
    }
    DATA.get_or_init(|| {
        let d = tempfile::Builder::new().prefix("cbuild-run-data-").tempdir().unwrap().keep();
        // SAFETY: registering a plain extern "C" function with no arguments.
        unsafe { libc::atexit(remove_shared_data) };
        let state = d.join("warm-state");
        std::fs::create_dir_all(&state).unwrap();
        let o = run(Command::new(script("cbuild-run"))
            .env("CBUILD_BIN", bin_dir())
            .env("CBUILD_STATE", &state)
            .env("CBUILD_DATA", &d)
            .args(["--rm", "--network", "none", IMAGE, "true"]));
        assert!(o.status.success(), "first run (builds the default image): {}", stderr(&o));
        d
    })
}

/// A test's runtime: its own state dir, the shared data dir, and (for bridge networking) its own "host"
/// network namespace, so nothing touches the machine's network.
struct Rt {
    sb: Sandbox,
    data: PathBuf,
    host_ns: Option<PathBuf>,
    children: Vec<Child>,
}

impl Rt {
    fn new() -> Rt {
        require_root();
        Rt { sb: Sandbox::new(), data: shared_data().to_path_buf(), host_ns: None, children: vec![] }
    }

    /// With a private host network namespace (CBUILD_NET_HOST_NS) for --network bridge and -p.
    fn with_host_ns() -> Rt {
        let mut rt = Rt::new();
        let p = rt.sb.path().join("hostns");
        std::fs::write(&p, "").unwrap();
        let o = run(Command::new("unshare").arg(format!("--net={}", p.display())).arg("true"));
        assert!(o.status.success(), "unshare --net: {}", stderr(&o));
        rt.host_ns = Some(p);
        rt
    }

    fn cmd(&self, script_name: &str) -> Command {
        let mut c = Command::new(script(script_name));
        c.env("CBUILD_BIN", bin_dir()).env("CBUILD_STATE", &self.sb.state).env("CBUILD_DATA", &self.data);
        // Never the machine's network: without a namespace of its own, a test may not use a bridge.
        match &self.host_ns {
            Some(p) => c.env("CBUILD_NET_HOST_NS", p),
            None => c.env("CBUILD_NET_HOST_NS", "/nonexistent-test-has-no-host-ns"),
        };
        c
    }

    /// `cbuild-run ARGS`, output captured.
    fn run(&self, args: &[&str]) -> Output {
        run(self.cmd("cbuild-run").args(args))
    }

    /// `cbuild-run ARGS` that must succeed; its stdout.
    #[track_caller]
    fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "cbuild-run {args:?}: {:?}\nstdout: {}\nstderr: {}",
            o.status,
            stdout(&o),
            stderr(&o)
        );
        stdout(&o)
    }

    /// Run a shell command line in the container (--rm --network none unless `extra` says otherwise).
    #[track_caller]
    fn sh(&self, extra: &[&str], line: &str) -> String {
        let mut args = vec!["--rm"];
        if !extra.iter().any(|a| a.starts_with("--network")) {
            args.extend(["--network", "none"]);
        }
        args.extend_from_slice(extra);
        args.extend([IMAGE, "sh", "-c", line]);
        self.ok(&args)
    }

    fn tool(&self, script_name: &str, args: &[&str]) -> Output {
        run(self.cmd(script_name).args(args))
    }

    fn in_host(&self, line: &str) -> Output {
        let ns = self.host_ns.as_ref().expect("a host netns");
        run(Command::new("nsenter").arg(format!("--net={}", ns.display())).args(["sh", "-c", line]))
    }

    /// Everything a container NAME could leave behind, empty when it is fully gone.
    fn leftovers(&self, name: &str) -> Vec<String> {
        let mut left = vec![];
        let dir = self.sb.state.join(name);
        if dir.exists() {
            left.push(format!("state dir {}", dir.display()));
        }
        for d in ["upper", "work"] {
            let p = self.data.join(d).join(name);
            if p.exists() {
                left.push(format!("{d} dir {}", p.display()));
            }
        }
        // An --rm run's upper and work dirs, renamed to .rm.NAME.PID, go in the background: give that
        // rm(1) time to finish before calling what it left a leftover.
        let trash = || -> Vec<String> {
            ["upper", "work"]
                .iter()
                .flat_map(|d| std::fs::read_dir(self.data.join(d)).into_iter().flatten().flatten())
                .map(|e| e.path())
                .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(&format!(".rm.{name}.")))
                .map(|p| format!("trash dir {}", p.display()))
                .collect()
        };
        let since = Instant::now();
        while !trash().is_empty() && since.elapsed() < Duration::from_secs(30) {
            std::thread::sleep(Duration::from_millis(20));
        }
        left.extend(trash());
        for m in
            mounts_under(&self.sb.state.to_string_lossy()).into_iter().chain(mounts_under(&self.data.to_string_lossy()))
        {
            if m.contains(name) {
                left.push(format!("mount {m}"));
            }
        }
        left.extend(cgroup_dirs(name).into_iter().map(|d| format!("cgroup {d}")));
        if self.host_ns.is_some() {
            let o = self.in_host("ip -o link show type veth; nft list ruleset 2>/dev/null");
            for l in stdout(&o).lines() {
                if l.contains(&format!("cbuild pub {name} ")) {
                    left.push(format!("nft rule {l}"));
                }
            }
            for lease in leases(&self.sb.state) {
                if lease.1 == name {
                    left.push(format!("lease {}", lease.0));
                }
            }
        }
        left
    }

    #[track_caller]
    fn assert_gone(&self, name: &str) {
        let left = self.leftovers(name);
        assert!(left.is_empty(), "{name} left behind: {left:#?}");
    }

    /// `cb*` veth links in the test's host namespace.
    fn veths(&self) -> Vec<String> {
        stdout(&self.in_host("ip -o link show type veth"))
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap().to_string())
            .filter(|n| n.starts_with("cb"))
            .collect()
    }

    /// `veths()` once no more host ends are going away: a run that ended on its own leaves its pair to the
    /// kernel, which deletes it with the container's network namespace shortly after the run returns
    /// (`cbuild-net disconnect --leave-link`). Up to 5 s.
    fn veths_settled(&self) -> Vec<String> {
        let t = Instant::now();
        loop {
            let v = self.veths();
            if v.is_empty() || t.elapsed() > Duration::from_secs(5) {
                return v;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A detached container; removed (with -f) when the test ends.
    #[track_caller]
    fn detached(&self, name: &str, extra: &[&str], line: &str) {
        let mut args = vec!["-d", "--name", name];
        if !extra.iter().any(|a| a.starts_with("--network")) {
            args.extend(["--network", "none"]);
        }
        args.extend_from_slice(extra);
        args.extend([IMAGE, "sh", "-c", line]);
        let out = self.ok(&args);
        assert_eq!(out.trim(), name, "-d prints the NAME");
    }
}

impl Drop for Rt {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        // Whatever a failing test left running goes with it.
        let _ = run(self.cmd("cbuild-rm").args(["--prune"]));
        if let Ok(rd) = std::fs::read_dir(&self.sb.state) {
            for e in rd.flatten() {
                let n = e.file_name().to_string_lossy().to_string();
                if n != "net" {
                    let _ = run(self.cmd("cbuild-rm").args(["-f", &n]));
                }
            }
        }
    }
}

/// cgroup directories named NAME under any hierarchy's cbuild/ (v1 controllers, unified, or pure v2).
fn cgroup_dirs(name: &str) -> Vec<String> {
    let mut out = vec![];
    let direct = Path::new("/sys/fs/cgroup/cbuild").join(name);
    if direct.exists() {
        out.push(direct.display().to_string());
    }
    if let Ok(rd) = std::fs::read_dir("/sys/fs/cgroup") {
        for e in rd.flatten() {
            let p = e.path().join("cbuild").join(name);
            if p.exists() {
                out.push(p.display().to_string());
            }
        }
    }
    out
}

/// (lease file, container ID) pairs under <state>/net/<BR>/.
fn leases(state: &Path) -> Vec<(String, String)> {
    let mut out = vec![];
    if let Ok(brs) = std::fs::read_dir(state.join("net")) {
        for br in brs.flatten().filter(|e| e.path().is_dir()) {
            for f in std::fs::read_dir(br.path()).unwrap().flatten() {
                let n = f.file_name().to_string_lossy().to_string();
                if n.split('.').count() == 4 && n.split('.').all(|p| p.parse::<u8>().is_ok()) {
                    let id = std::fs::read_to_string(f.path()).unwrap_or_default().trim().to_string();
                    out.push((f.path().display().to_string(), id));
                }
            }
        }
    }
    out
}

fn status_line<'a>(s: &'a str, key: &str) -> &'a str {
    s.lines().find(|l| l.starts_with(key)).unwrap_or_else(|| panic!("no {key} line in:\n{s}"))
}

// ------------------------------------------------------------------------------------------------------
// Exit codes and failing cleanly
// ------------------------------------------------------------------------------------------------------

#[test]
fn exit_codes_are_dockers() {
    let rt = Rt::new();
    let code = |args: &[&str]| {
        let mut a = vec!["--rm", "--network", "none"];
        a.extend_from_slice(args);
        rt.run(&a).status.code()
    };
    assert_eq!(code(&[IMAGE, "true"]), Some(0));
    assert_eq!(code(&[IMAGE, "sh", "-c", "exit 7"]), Some(7));
    assert_eq!(code(&[IMAGE, "/no/such/command"]), Some(127), "not found");
    assert_eq!(code(&[IMAGE, "/etc/passwd"]), Some(126), "not executable");
    // PID 1 cannot be killed from inside its own namespace; with --init the command is PID 2.
    assert_eq!(code(&["--init", IMAGE, "sh", "-c", "kill -9 $$"]), Some(137), "killed by SIGKILL");
    // The command's stdout and stderr are the caller's.
    let o = rt.run(&["--rm", "--network", "none", IMAGE, "sh", "-c", "echo out; echo err >&2"]);
    assert_eq!((stdout(&o).as_str(), stderr(&o).as_str()), ("out\n", "err\n"));
}

#[test]
fn bad_input_fails_with_125_one_line_and_leaves_nothing() {
    let rt = Rt::new();
    let bad_profile = rt.sb.path().join("bad.json");
    std::fs::write(&bad_profile, "{ not json").unwrap();
    let bad_profile = format!("seccomp={}", bad_profile.display());
    let cases: Vec<(Vec<&str>, &str, &str)> = vec![
        (vec!["--bogus", IMAGE, "true"], "cbuild-run", "--bogus"),
        (vec!["--name"], "cbuild-run", "--name"),
        (vec![], "cbuild-run", "image"),
        (vec!["--network", "weird", IMAGE, "true"], "cbuild-run", "--network"),
        (vec!["--security-opt", "apparmor=x", IMAGE, "true"], "cbuild-run", "apparmor"),
        (vec!["--name", "../etc", IMAGE, "true"], "cbuild-run", "../etc"),
        (vec!["no/such/image:1", "true"], "cbuild-image", "no/such/image"),
        (vec!["--memory=lots", IMAGE, "true"], "cbuild-cgroup", "lots"),
        (vec!["--pids-limit", "lots", IMAGE, "true"], "cbuild-cgroup", "pids"),
        (vec!["--cap-add", "NOT_A_CAP", IMAGE, "true"], "cbuild-seccomp", "NOT_A_CAP"),
        (
            vec!["--cap-add", "NOT_A_CAP", "--security-opt", "seccomp=unconfined", IMAGE, "true"],
            "cbuild-ns",
            "NOT_A_CAP",
        ),
        (vec!["--security-opt", &bad_profile, IMAGE, "true"], "cbuild-seccomp", "bad.json"),
        // (-v makes a missing host dir, as docker's; --mount refuses it.)
        (vec!["--mount", "type=bind,src=/no/such/dir,dst=/x", IMAGE, "true"], "cbuild-ns", "/no/such/dir"),
        (vec!["--tmpfs", "/x:bogus=1", IMAGE, "true"], "cbuild-ns", "/x"),
        (vec!["-u", "nosuchuser", IMAGE, "true"], "cbuild-ns", "nosuchuser"),
        (vec!["--cap-drop", "NOT_A_CAP", IMAGE, "true"], "cbuild-ns", "NOT_A_CAP"),
        (vec!["--cap-add", "ALL", "--cap-drop", "NOT_A_CAP", IMAGE, "true"], "cbuild-seccomp", "NOT_A_CAP"),
        // A KEY alone is expanded by bash: one that is not a plain name (a subscript would run) is refused.
        (vec!["-e", "x[$(touch /tmp/cbuild-run-pwned)]", IMAGE, "true"], "cbuild-run", "not a variable name"),
        (vec!["-e", "a b", IMAGE, "true"], "cbuild-run", "not a variable name"),
        (vec!["--rm=maybe", IMAGE, "true"], "cbuild-run", "--rm=maybe"),
        (vec!["--name", "net", IMAGE, "true"], "cbuild-run", "reserved"),
        // One run-cache file per image name: `cbuild%busybox` is not `cbuild/busybox`.
        (vec!["cbuild%busybox", "true"], "cbuild-image", "cbuild%busybox"),
    ];
    for (i, (args, tool, needle)) in cases.iter().enumerate() {
        let name = format!("bad{i}x{}", std::process::id());
        let mut a = vec!["--name", &name, "--network", "none"];
        if args.first() == Some(&"--name") || args.iter().any(|x| x.starts_with("--network")) {
            a.clear();
        }
        a.extend_from_slice(args);
        let o = rt.run(&a);
        assert_tool_error(&o, tool, needle);
        rt.assert_gone(&name);
    }
    assert!(!Path::new("/tmp/cbuild-run-pwned").exists(), "-e KEY ran a command substitution");
    assert!(!Path::new("/no/such/dir").exists(), "a refused --mount made its source");
    // A NAME cbuild-cgroup refuses (a cgroup control file's): its error once, not again from the undo.
    // (Not `tasks`: that is a file in every v1 cbuild/ directory, which the leftovers check would see.)
    let o = rt.run(&["--name", "memory.bogus", "--network", "none", IMAGE, "true"]);
    assert_tool_error(&o, "cbuild-cgroup", "control file");
    assert_eq!(stderr(&o).matches("cbuild-cgroup: ").count(), 1, "{}", stderr(&o));
    rt.assert_gone("memory.bogus");
    // A NAME in use is refused, and the container holding it is untouched.
    let name = unique("busy");
    rt.detached(&name, &[], "sleep 30");
    let o = rt.run(&["--name", &name, "--network", "none", IMAGE, "true"]);
    assert_tool_error(&o, "cbuild-run", &format!("Conflict. The container name \"/{name}\" is already in use"));
    let ps = stdout(&rt.tool("cbuild-ps", &[]));
    assert!(ps.lines().any(|l| l.starts_with(&name) && l.contains("running")), "{ps}");
    assert_eq!(rt.tool("cbuild-rm", &["-f", &name]).status.code(), Some(0));
    rt.assert_gone(&name);
    // Nothing at all is left in the state dir.
    let left: Vec<_> = std::fs::read_dir(&rt.sb.state).unwrap().flatten().map(|e| e.file_name()).collect();
    assert!(left.is_empty(), "state dir not empty: {left:?}");
}

// ------------------------------------------------------------------------------------------------------
// The process: image config, env, workdir, user, hostname, init
// ------------------------------------------------------------------------------------------------------

#[test]
fn process_flags_env_workdir_user_hostname() {
    let rt = Rt::new();
    // The image's command (/bin/sh) runs when none is given; its stdin is ours (empty here).
    let o = rt.run(&["--rm", "--network", "none", IMAGE]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = rt.sh(
        &["-e", "A=1", "--env=B=two words", "-w", "/etc", "-u", "1000:2000", "--hostname", "box"],
        "echo A=$A; echo B=$B; echo PATH=$PATH; pwd; id -u; id -g; hostname; echo HOSTNAME=$HOSTNAME",
    );
    assert_eq!(
        out,
        "A=1\nB=two words\nPATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n/etc\n1000\n2000\nbox\nHOSTNAME=box\n"
    );
    // `-e KEY` takes the value from the caller's environment; the caller's other variables stay out, and
    // so do the script's own (not exported) variables of that name.
    let o = run(rt.cmd("cbuild-run").env("FROM_HOST", "yes").env("SECRET", "no").args([
        "--rm",
        "--network",
        "none",
        "-e",
        "FROM_HOST",
        "-e",
        "opt",
        "--env",
        "rt_verbose",
        "-e",
        "NOT_SET_ANYWHERE",
        IMAGE,
        "sh",
        "-c",
        "echo $FROM_HOST:$SECRET:${opt-unset}:${rt_verbose-unset}:${NOT_SET_ANYWHERE-unset}",
    ]));
    assert_eq!(stdout(&o), "yes::unset:unset:unset\n", "{}", stderr(&o));
    // Default hostname: the NAME.
    let name = unique("hn");
    assert_eq!(rt.ok(&["--rm", "--network", "none", "--name", &name, IMAGE, "hostname"]).trim(), name);
    // --verbose: one `cbuild-run: step: STEP: COMMAND` line per tool call, the tools named as a reader types them.
    let o = rt.run(&["--verbose", "--rm", "--network", "none", IMAGE, "true"]);
    let err = stderr(&o);
    for step in ["mkdir", "layers", "overlay", "start", "undo-cgroup", "undo-upper"] {
        assert!(err.lines().any(|l| l.starts_with(&format!("cbuild-run: step: {step}: "))), "no {step} line: {err}");
    }
    assert!(err.contains(": cbuild-overlay mount ") && err.contains(" --fd 6 -- cbuild-cgroup exec "), "{err}");
    assert!(err.contains(" -- cbuild-ns run ") && err.contains(" --rootfs-fd 6 "), "{err}");
    // Named user resolved in the image's /etc/passwd.
    assert_eq!(rt.sh(&["--user", "user"], "id -un").trim(), "user");
    // --env-file as docker reads it (comments, blank lines, KEY alone from the caller), -e over it;
    // --ulimit, --group-add.
    let f = rt.sb.path().join("env");
    std::fs::write(&f, "# a comment\nA=from-file\n\n   B=two words = ok\nFROM_HOST\nC=c\n").unwrap();
    let o = run(rt.cmd("cbuild-run").env("FROM_HOST", "yes").args([
        "--rm",
        "--network",
        "none",
        "--env-file",
        &f.to_string_lossy(),
        "-e",
        "C=from-e",
        "--ulimit",
        "nofile=100:200",
        "-u",
        "1000:1000",
        "--group-add",
        "1234",
        "--shm-size",
        "2m",
        IMAGE,
        "sh",
        "-c",
        "echo $A:$B:$FROM_HOST:$C; ulimit -n; ulimit -Hn; id -G; grep ' /dev/shm ' /proc/mounts | grep -o 'size=[0-9]*k'",
    ]));
    assert_eq!(stdout(&o), "from-file:two words = ok:yes:from-e\n100\n200\n1000 1234\nsize=2048k\n", "{}", stderr(&o));
    let o = rt.run(&["--rm", "--network", "none", "--env-file", "/nonexistent/env", IMAGE, "true"]);
    assert_eq!(o.status.code(), Some(125));
    assert_eq!(stderr(&o), "cbuild-run: args: --env-file /nonexistent/env: not a readable file\n");
    // A name with white space in it, or none, is refused (docker/cli: "poorly formatted environment"), and
    // so is a line that is not UTF-8, a comment too ("contains invalid utf8 bytes").
    for (text, why) in [
        (&b"A=1\n  B C=2\n"[..], "line 2: variable 'B C' contains white space"),
        (b"# c\n=x\n", "line 2: no variable name"),
        (b"KEY \n", "line 1: variable 'KEY ' contains white space"),
        (b"A=1\n# caf\xe9\nB=2\n", "line 2: not UTF-8"),
        (b"A=caf\xc3\xa9\r\nB=\xff\n", "line 2: not UTF-8"),
    ] {
        std::fs::write(&f, text).unwrap();
        let o = rt.run(&["--rm", "--network", "none", "--env-file", &f.to_string_lossy(), IMAGE, "true"]);
        assert_eq!(stderr(&o), format!("cbuild-run: args: --env-file {}: {why}\n", f.display()), "{text:?}");
        assert_eq!(o.status.code(), Some(125));
    }
    // --entrypoint replaces the image's and drops its Cmd; "" leaves none, so CMD is the whole command.
    assert_eq!(rt.ok(&["--rm", "--network", "none", "--entrypoint", "/bin/echo", IMAGE, "hi", "there"]), "hi there\n");
    assert_eq!(rt.ok(&["--rm", "--network", "none", "--entrypoint", "", IMAGE, "echo", "plain"]), "plain\n");
    let o = rt.run(&["--rm", "--network", "none", "--entrypoint=", IMAGE]);
    assert_eq!(o.status.code(), Some(125), "no command at all: {}", stderr(&o));
}

#[test]
fn pid_namespace_and_init_reap_zombies() {
    let rt = Rt::new();
    // Without --init the command is PID 1 and sees only its own processes.
    assert_eq!(rt.sh(&[], "echo $$; set -- /proc/[0-9]*; echo $#"), "1\n1\n");
    // With --init, cbuild-ns is PID 1 and reaps an orphaned zombie: sh's child's child, whose parent exits.
    let out = rt.sh(
        &["--init"],
        "echo $$; (sleep 0.2 & exec true); sleep 0.6; grep -l '^State:.*Z' /proc/[0-9]*/status 2>/dev/null | wc -l",
    );
    let v: Vec<_> = out.split_whitespace().collect();
    assert_eq!(v, ["2", "0"], "command is PID 2 and no zombie is left: {out}");
}

// ------------------------------------------------------------------------------------------------------
// Filesystem: overlay, volumes, tmpfs, read-only
// ------------------------------------------------------------------------------------------------------

#[test]
fn filesystem_flags_volume_tmpfs_read_only_and_the_upper_dir() {
    let rt = Rt::new();
    let vol = rt.sb.path().join("vol");
    std::fs::create_dir_all(&vol).unwrap();
    std::fs::write(vol.join("in"), "from host\n").unwrap();
    let rw = format!("{}:/data", vol.display());
    let ro = format!("{}:/ro:ro", vol.display());
    let out = rt.sh(
        &["-v", &rw, "--volume", &ro, "--tmpfs", "/scratch:size=1m,mode=1777"],
        "cat /data/in; echo new > /data/out; echo x > /ro/y 2>/dev/null || echo ro-refused; \
         grep ' /scratch ' /proc/mounts | cut -d' ' -f3; echo t > /scratch/t && echo tmpfs-ok",
    );
    assert_eq!(out, "from host\nro-refused\ntmpfs\ntmpfs-ok\n");
    // Docker's other spellings: -v options (z, Z: no SELinux here), --mount in both types.
    let zro = format!("{}:/z:ro,z", vol.display());
    let m = format!("type=bind,source={},target=/m,readonly", vol.display());
    let out = rt.sh(
        &["-v", &zro, "--mount", &m, "--mount", "type=tmpfs,target=/t,tmpfs-size=1m"],
        "cat /z/in /m/in; touch /z/x /m/x 2>/dev/null || echo ro-refused; grep -c ' /t tmpfs' /proc/mounts",
    );
    assert_eq!(out, "from host\nfrom host\nro-refused\n1\n");
    let o = rt.run(&["--rm", "--network", "none", "--mount", "type=volume,target=/v", IMAGE, "true"]);
    assert_eq!(o.status.code(), Some(125), "{}", stderr(&o));
    assert!(stderr(&o).contains("type=volume: not supported"), "{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(vol.join("out")).unwrap(), "new\n");
    // --read-only: the root refuses writes, a --tmpfs stays writable.
    let out = rt.sh(
        &["--read-only", "--tmpfs", "/tmp"],
        "touch /etc/x 2>/dev/null || echo root-ro; touch /tmp/x && echo tmp-rw",
    );
    assert_eq!(out, "root-ro\ntmp-rw\n");
    // Without --rm the upper dir survives the container (cbuild-ps -a shows it exited) until cbuild-rm.
    let name = unique("fs");
    let o = rt.run(&[
        "--name",
        &name,
        "--network",
        "none",
        IMAGE,
        "sh",
        "-c",
        "echo kept > /etc/new; rm /etc/group; exit 3",
    ]);
    assert_eq!(o.status.code(), Some(3));
    let upper = rt.data.join("upper").join(&name);
    assert_eq!(std::fs::read_to_string(upper.join("etc/new")).unwrap(), "kept\n");
    let wh = std::fs::symlink_metadata(upper.join("etc/group")).unwrap();
    assert!(std::os::unix::fs::FileTypeExt::is_char_device(&wh.file_type()), "whiteout for the deleted file");
    let ps = stdout(&rt.tool("cbuild-ps", &["-a"]));
    assert!(status_line(&ps, &name).contains("exited (3)"), "{ps}");
    assert!(!stdout(&rt.tool("cbuild-ps", &[])).contains(&name), "not listed without -a");
    assert!(mounts_under(&rt.sb.state.join(&name).to_string_lossy()).is_empty(), "overlay unmounted at exit");
    assert_eq!(rt.tool("cbuild-rm", &[&name]).status.code(), Some(0));
    rt.assert_gone(&name);
    // The image's layer is untouched by all of this.
    assert_eq!(rt.sh(&[], "head -1 /etc/group; ls /etc/new 2>/dev/null || echo absent"), "root:x:0:\nabsent\n");
}

/// A container chooses how deep its upper dir goes: 2048 nested directories make host paths longer
/// than PATH_MAX (Debian's loadable `rm`, walking by path, gave up on them silently under -f) and go
/// deeper than cbuild's `rm` builtin goes (64 levels). The upper dir must still go, after --rm and after
/// cbuild-rm alike.
#[test]
fn an_upper_dir_deeper_than_path_max_is_still_removed() {
    let rt = Rt::new();
    // d/d/.../d, 2048 components, 4095 bytes: within PATH_MAX inside the container, past it on the host.
    let nest = "p=d; i=0; while [ $i -lt 11 ]; do p=$p/$p; i=$((i+1)); done; cd / && mkdir -p \"$p\" && echo nested";
    let name = unique("deep");
    let o = rt.run(&["--rm", "--name", &name, "--network", "none", IMAGE, "sh", "-c", nest]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "nested\n");
    rt.assert_gone(&name);
    let name = unique("deep");
    let o = rt.run(&["--name", &name, "--network", "none", IMAGE, "sh", "-c", nest]);
    assert!(o.status.success(), "{}", stderr(&o));
    let top = rt.data.join("upper").join(&name).join("d");
    assert!(top.is_dir(), "kept without --rm: {}", top.display());
    assert_eq!(rt.tool("cbuild-rm", &[&name]).status.code(), Some(0));
    rt.assert_gone(&name);
}

/// An --rm run does not wait for its upper dir to be removed: the dir is named apart (.rm.NAME.PID) and
/// removed by cbuild-overlay's remover once the chain ends, so the NAME is free at once, and its next run
/// starts with an empty upper dir even while the old one is still going. What a removal never finished,
/// `cbuild-rm --prune` removes; a running --rm container's layer it leaves alone.
#[test]
fn an_rm_runs_upper_dir_goes_in_the_background_and_the_name_is_free_at_once() {
    let rt = Rt::new();
    let name = unique("bg");
    // 3000 files: on ext4 their removal takes a while, longer than the next start.
    let fill = "mkdir /fill && cd /fill && i=0; while [ $i -lt 3000 ]; do : > f$i; i=$((i+1)); done; echo filled";
    assert_eq!(rt.ok(&["--rm", "--name", &name, "--network", "none", IMAGE, "sh", "-c", fill]), "filled\n");
    assert!(!rt.data.join("upper").join(&name).exists(), "an --rm run's upper dir is not the NAME's");
    let again =
        rt.ok(&["--rm", "--name", &name, "--network", "none", IMAGE, "sh", "-c", "ls /fill 2>/dev/null | wc -l"]);
    assert_eq!(again.trim(), "0", "the next run of the NAME starts with an empty upper dir");
    rt.assert_gone(&name);
    // A removal that never finished (the machine went down): prune removes it, and only it. (Its PID is
    // past any pid_max: no process has it.)
    let left = rt.data.join("upper").join(format!(".rm.{name}.999999999"));
    std::fs::create_dir_all(left.join("d")).unwrap();
    std::fs::write(left.join("d/f"), "x").unwrap();
    let work = rt.data.join("work").join(format!(".rm.{name}.999999999"));
    std::fs::create_dir_all(&work).unwrap();
    let keep = rt.data.join("upper").join(format!("{name}-not-trash"));
    std::fs::create_dir_all(&keep).unwrap();
    let live = unique("live");
    rt.detached(&live, &["--rm"], "echo up >/up; sleep 60");
    let layer = |d: &str| -> Vec<PathBuf> {
        std::fs::read_dir(rt.data.join(d))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(&format!(".rm.{live}.")))
            .collect()
    };
    let (live_upper, live_work) = (layer("upper"), layer("work"));
    assert!(live_upper.len() == 1 && live_work.len() == 1, "{live_upper:?} {live_work:?}");
    let o = rt.tool("cbuild-rm", &["--prune"]);
    assert!(o.status.success(), "prune: {}", stderr(&o));
    assert!(!left.exists() && !work.exists(), "prune removes unfinished removals");
    assert!(keep.exists(), "prune leaves other dirs alone");
    assert!(
        live_upper[0].join("up").exists() && live_work[0].exists(),
        "prune leaves a running --rm container's layer"
    );
    std::fs::remove_dir(&keep).unwrap();
    assert_eq!(rt.tool("cbuild-stop", &["-t", "0", &live]).status.code(), Some(0));
    rt.assert_gone(&live);
}

// ------------------------------------------------------------------------------------------------------
// Limits (cgroup), capabilities, seccomp, no-new-privileges
// ------------------------------------------------------------------------------------------------------

#[test]
fn cgroup_limits_are_applied_and_enforced() {
    let rt = Rt::new();
    let name = unique("lim");
    rt.detached(&name, &["--memory=64m", "--memory-swap", "64m", "--cpus", "0.5", "--pids-limit=20"], "sleep 30");
    let o = run(tool("cbuild-cgroup", &rt.sb).args(["stat", &name, "--json"]));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", stderr(&o)));
    assert_eq!(v["memory"]["limit"], 64 << 20);
    assert_eq!(v["cpu"]["quota_usec"], 50000);
    assert_eq!(v["cpu"]["period_usec"], 100000);
    assert_eq!(v["pids"]["limit"], 20);
    assert_eq!(rt.tool("cbuild-rm", &["-f", &name]).status.code(), Some(0));
    rt.assert_gone(&name);
    // Docker's other CPU spellings.
    let name = unique("lim");
    rt.detached(&name, &["--cpu-period", "50000", "--cpu-quota", "20000", "--cpuset-mems", "0"], "sleep 30");
    let o = run(tool("cbuild-cgroup", &rt.sb).args(["stat", &name, "--json"]));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", stderr(&o)));
    assert_eq!((v["cpu"]["quota_usec"].as_i64(), v["cpu"]["period_usec"].as_i64()), (Some(20000), Some(50000)));
    assert_eq!(rt.tool("cbuild-rm", &["-f", &name]).status.code(), Some(0));
    rt.assert_gone(&name);
    // Docker's v1-only memory flags, where memory is a v1 controller (this host's hybrid layout).
    let memory_v1 = Path::new("/sys/fs/cgroup/memory/memory.swappiness").exists();
    if memory_v1 {
        let name = unique("lim");
        rt.detached(&name, &["-m", "64m", "--memory-swappiness", "20", "--oom-kill-disable"], "sleep 30");
        let d = Path::new("/sys/fs/cgroup/memory/cbuild").join(&name);
        assert_eq!(std::fs::read_to_string(d.join("memory.swappiness")).unwrap().trim(), "20");
        let oom = std::fs::read_to_string(d.join("memory.oom_control")).unwrap();
        assert!(oom.lines().any(|l| l == "oom_kill_disable 1"), "{oom}");
        assert_eq!(rt.tool("cbuild-rm", &["-f", &name]).status.code(), Some(0));
        rt.assert_gone(&name);
        // Docker's warning when no memory limit bounds the wait.
        let o = rt.run(&["--rm", "--network", "none", "--oom-kill-disable", IMAGE, "true"]);
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(stderr(&o).contains("warning: disabling the OOM killer"), "{}", stderr(&o));
    }
    let o = rt.run(&["--rm", "--network", "none", "--device-read-bps", "nodevice", IMAGE, "true"]);
    assert_eq!(o.status.code(), Some(125), "{}", stderr(&o));
    assert_eq!(stderr(&o), "cbuild-run: args: --device-read-bps nodevice: want DEVICE:RATE\n");
    // Docker's spellings: a decimal size; --pids-limit 0 (or -1) is no limit.
    let name = unique("lim");
    rt.detached(&name, &["--memory=1.5g", "--pids-limit", "0"], "sleep 30");
    let o = run(tool("cbuild-cgroup", &rt.sb).args(["stat", &name, "--json"]));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", stderr(&o)));
    assert_eq!(v["memory"]["limit"], 3u64 << 29);
    assert!(v["pids"]["limit"].is_null() || v["pids"]["limit"] == "max", "{}", v["pids"]);
    assert_eq!(rt.tool("cbuild-rm", &["-f", &name]).status.code(), Some(0));
    rt.assert_gone(&name);
    // The pids limit stops a fork loop (the refused forks are counted); the memory limit OOM-kills a hog.
    let name = unique("lim");
    rt.detached(&name, &["--pids-limit", "10"], "(for i in $(seq 30); do sleep 30 & done); exec sleep 30");
    let t = Instant::now();
    let v = loop {
        let o = run(tool("cbuild-cgroup", &rt.sb).args(["stat", &name, "--json"]));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
        if v["pids"]["limit_hits"].as_u64().unwrap_or(0) > 0 || t.elapsed() > Duration::from_secs(5) {
            break v;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(v["pids"]["limit_hits"].as_u64().unwrap() > 0, "{v}");
    assert!(v["pids"]["current"].as_u64().unwrap() <= 10, "{v}");
    assert_eq!(rt.tool("cbuild-rm", &["-f", &name]).status.code(), Some(0));
    rt.assert_gone(&name);
    let o = rt.run(&[
        "--rm",
        "--network",
        "none",
        "--memory",
        "32m",
        "--memory-swap",
        "32m",
        IMAGE,
        "sh",
        "-c",
        "x=$(head -c 100000000 /dev/zero | tr '\\0' a); echo survived",
    ]);
    assert_ne!(stdout(&o), "survived\n", "the hog was not stopped");
    assert_eq!(o.status.code(), Some(137), "OOM-killed: {}", stderr(&o));
}

fn cap_eff(s: &str) -> u64 {
    let l = s.lines().find(|l| l.starts_with("CapEff:")).unwrap_or_else(|| panic!("{s}"));
    u64::from_str_radix(l.split_whitespace().nth(1).unwrap(), 16).unwrap()
}

#[test]
fn capabilities_seccomp_and_no_new_privileges() {
    let rt = Rt::new();
    // Docker's default set: 0xa80425fb.
    assert_eq!(cap_eff(&rt.sh(&[], "cat /proc/self/status")), 0xa80425fb);
    // Minus NET_RAW (bit 13), plus SYS_TIME (25); and nothing at all.
    assert_eq!(
        cap_eff(&rt.sh(&["--cap-drop", "NET_RAW", "--cap-add=CAP_SYS_TIME"], "cat /proc/self/status")),
        (0xa80425fb & !(1 << 13)) | (1 << 25)
    );
    assert_eq!(cap_eff(&rt.sh(&["--cap-drop=ALL"], "cat /proc/self/status")), 0);
    // --cap-add ALL is every capability but the dropped ones, as in Docker (SYS_ADMIN 21, NET_RAW 13).
    let all = cap_eff(&rt.sh(&["--cap-add", "ALL"], "cat /proc/self/status"));
    assert_ne!(all & (1 << 21), 0, "--cap-add ALL without SYS_ADMIN: {all:#x}");
    let fewer = cap_eff(
        &rt.sh(&["--cap-add=ALL", "--cap-drop", "SYS_ADMIN", "--cap-drop", "net_raw"], "cat /proc/self/status"),
    );
    assert_eq!(fewer, all & !(1 << 21) & !(1 << 13), "--cap-add ALL --cap-drop SYS_ADMIN,NET_RAW: {fewer:#x}");
    // CAP_MKNOD is in the set, so a node for any device can be made, but Docker's device list decides
    // what opens: /dev/kmsg (1:11) and a tun (10:200) not, /dev/null (1:3) yes.
    let out = rt.sh(
        &[],
        "cd /tmp && mknod k c 1 11 && mknod t c 10 200 && mknod n c 1 3 && echo made; \
         for f in k t n; do (exec 3<$f) 2>/dev/null && echo $f-opened; done",
    );
    assert_eq!(out, "made\nn-opened\n", "device policy");
    assert_eq!(
        cap_eff(&rt.sh(&["--cap-drop", "ALL", "--cap-add", "CHOWN,KILL"], "cat /proc/self/status")),
        1 | (1 << 5)
    );
    // Seccomp: on by default (one filter), off with unconfined; the default blocks mount(2) even for a
    // root with CAP_SYS_ADMIN, unconfined does not.
    let st = rt.sh(&[], "grep -E '^(Seccomp|NoNewPrivs):' /proc/self/status");
    assert!(st.contains("Seccomp:\t2") && st.contains("NoNewPrivs:\t0"), "{st}");
    let st = rt.sh(&["--security-opt", "seccomp=unconfined"], "grep '^Seccomp:' /proc/self/status");
    assert_eq!(st, "Seccomp:\t0\n");
    // The capability set reaches the seccomp profile, as in Docker: mount(2) is allowed to a container
    // with CAP_SYS_ADMIN, refused without it.
    let mnt = "mount -t tmpfs x /tmp 2>&1 && echo mounted; true";
    let out = rt.sh(&[], mnt);
    assert!(!out.contains("mounted") && (out.contains("not permitted") || out.contains("denied")), "{out}");
    assert!(rt.sh(&["--cap-add", "SYS_ADMIN"], mnt).contains("mounted"));
    // A custom profile: Docker's format, here one that refuses only mkdir.
    let prof = rt.sb.path().join("p.json");
    std::fs::write(
        &prof,
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdir","mkdirat"],"action":"SCMP_ACT_ERRNO","errnoRet":1}]}"#,
    )
    .unwrap();
    let out = rt.sh(&["--security-opt", &format!("seccomp={}", prof.display())], "mkdir /tmp/d 2>&1; echo rc=$?");
    assert!(out.contains("not permitted") && out.contains("rc=1"), "mkdir refused by the custom profile: {out}");
    // no-new-privileges: the bit is set; a setuid binary gives nothing.
    let st = rt.sh(&["--security-opt", "no-new-privileges"], "grep NoNewPrivs /proc/self/status");
    assert_eq!(st, "NoNewPrivs:\t1\n");
    let st = rt.sh(&["--security-opt=no-new-privileges:true"], "grep NoNewPrivs /proc/self/status");
    assert_eq!(st, "NoNewPrivs:\t1\n");
}

// ------------------------------------------------------------------------------------------------------
// Detached containers: ps, logs, exec, stop, rm
// ------------------------------------------------------------------------------------------------------

#[test]
fn detached_ps_logs_exec_stop_rm() {
    let rt = Rt::new();
    let name = unique("det");
    rt.detached(
        &name,
        &["-e", "FOO=bar"],
        "echo hello; echo oops >&2; trap 'echo bye; exit 0' TERM; while :; do sleep 0.1; done",
    );
    let ps = stdout(&rt.tool("cbuild-ps", &[]));
    assert!(status_line(&ps, &name).contains("running"), "{ps}");
    let js = stdout(&rt.tool("cbuild-ps", &["--json"]));
    let v: serde_json::Value = serde_json::from_str(js.lines().find(|l| l.contains(&name)).unwrap()).unwrap();
    assert_eq!(v["state"], "running");
    let pid = v["pid"].as_u64().expect("pid");
    assert!(Path::new(&format!("/proc/{pid}")).exists(), "the container's process is a host process");
    // exec: same namespaces (hostname, the sleeping loop visible), same env, its privileges.
    let o = run(rt.cmd("cbuild-exec").args([
        "-e",
        "X=1",
        &name,
        "sh",
        "-c",
        "hostname; echo $FOO$X; grep -c trap /proc/1/cmdline; grep CapEff /proc/self/status; \
         grep Seccomp: /proc/self/status",
    ]));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    let mut l = out.lines();
    assert_eq!(l.next(), Some(name.as_str()));
    assert_eq!(l.next(), Some("bar1"));
    assert_eq!(l.next(), Some("1"), "PID 1 is the container's shell");
    assert_eq!(cap_eff(&out), 0xa80425fb, "exec gets the container's capabilities");
    assert!(out.contains("Seccomp:\t2"), "exec gets the container's seccomp filter: {out}");
    assert_eq!(run(rt.cmd("cbuild-exec").args([&name, "sh", "-c", "exit 5"])).status.code(), Some(5));
    // logs: stdout and stderr apart.
    let t = Instant::now();
    loop {
        let o = rt.tool("cbuild-logs", &[&name]);
        if stdout(&o) == "hello\n" && stderr(&o) == "oops\n" {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(5), "logs: {} / {}", stdout(&o), stderr(&o));
        std::thread::sleep(Duration::from_millis(50));
    }
    // rm refuses a running container; stop sends TERM, the trap runs, exit 0; then rm removes it.
    assert_tool_error(&rt.tool("cbuild-rm", &[&name]), "cbuild-rm", "running");
    let o = rt.tool("cbuild-stop", &["-t", "5", &name]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&rt.tool("cbuild-logs", &[&name])), "hello\nbye\n");
    let ps = stdout(&rt.tool("cbuild-ps", &["-a"]));
    assert!(status_line(&ps, &name).contains("exited (0)"), "{ps}");
    assert!(!Path::new(&format!("/proc/{pid}")).exists());
    assert!(cgroup_dirs(&name).is_empty(), "cgroup removed at stop");
    assert_eq!(rt.tool("cbuild-rm", &[&name]).status.code(), Some(0));
    rt.assert_gone(&name);
    // A container that ignores TERM is killed after -t.
    let name = unique("det");
    rt.detached(&name, &["--rm"], "trap '' TERM; sleep 60");
    let t = Instant::now();
    assert_eq!(rt.tool("cbuild-stop", &["-t", "1", &name]).status.code(), Some(0));
    assert!(t.elapsed() < Duration::from_secs(8));
    rt.assert_gone(&name);
    // cbuild-exec on a stopped container fails cleanly.
    assert_tool_error(&run(rt.cmd("cbuild-exec").args([&name, "true"])), "cbuild-exec", "not running");
}

/// A detached start whose command cannot run fails as a foreground one does (127 or 126, cbuild-ns's error
/// line on the caller's stderr, nothing left), not with the NAME printed and the error in the log; the
/// other scripts' bad input is the contract's one line and 125; `cbuild-ps --json` stays JSON whatever
/// the command holds; `--rm=false` keeps the container, as Docker's spelling does.
#[test]
fn detached_failures_option_errors_and_ps_json() {
    let rt = Rt::new();
    for (cmd, code, needle) in [("nosuchcmd", 127, "not found"), ("/etc/passwd", 126, "Permission denied")] {
        let name = unique("dfail");
        let o = rt.run(&["-d", "--name", &name, "--network", "none", IMAGE, cmd]);
        assert_eq!(o.status.code(), Some(code), "-d {cmd}: {}", stderr(&o));
        assert!(stdout(&o).is_empty(), "-d {cmd} printed the NAME: {}", stdout(&o));
        assert!(stderr(&o).contains("cbuild-ns: exec: ") && stderr(&o).contains(needle), "{}", stderr(&o));
        rt.assert_gone(&name);
        // The same in the foreground: the command never ran, so nothing is kept.
        let o = rt.run(&["--name", &name, "--network", "none", IMAGE, cmd]);
        assert_eq!(o.status.code(), Some(code), "{cmd}: {}", stderr(&o));
        rt.assert_gone(&name);
    }
    for (script_name, args, needle) in [
        ("cbuild-stop", vec!["-t", "abc", "x"], "-t abc"),
        ("cbuild-stop", vec!["-t", "-2", "x"], "-t -2"),
        ("cbuild-stop", vec!["x", "-t"], "-t"),
        ("cbuild-exec", vec!["-w"], "-w"),
        ("cbuild-exec", vec!["-e", "x[1]", "c", "true"], "not a variable name"),
    ] {
        let o = rt.tool(script_name, &args);
        assert_tool_error(&o, script_name, needle);
    }
    let name = unique("json");
    rt.detached(&name, &["--rm=false"], "sleep 30; : 'a\\b\t\"c\"'");
    let js = stdout(&rt.tool("cbuild-ps", &["--json"]));
    let line = js.lines().find(|l| l.contains(&name)).unwrap_or_else(|| panic!("{js}"));
    let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
    assert_eq!(v["command"], "sh -c sleep 30; : 'a\\b\t\"c\"'", "{line}");
    // -1: no limit (the container ends at the TERM here).
    assert_eq!(rt.tool("cbuild-stop", &["-t", "-1", &name]).status.code(), Some(0));
    let ps = stdout(&rt.tool("cbuild-ps", &["-a"]));
    assert!(status_line(&ps, &name).contains("exited"), "--rm=false keeps the stopped container: {ps}");
    assert_eq!(rt.tool("cbuild-rm", &[&name]).status.code(), Some(0));
    rt.assert_gone(&name);
}

/// Without the bash builtins (libcbuild_builtins.so not beside the tools) the scripts' same `flock` words
/// run util-linux's flock(1), and `spawn`/`reap` are bash functions (a fork): a run (foreground and
/// detached), cbuild-ps's liveness check, cbuild-rm's refusal of a running container and cbuild-stop all
/// still work.
#[test]
fn without_the_builtins_the_scripts_fall_back_to_flock1_and_a_fork() {
    let rt = Rt::new();
    let bin = rt.sb.path().join("bin-without-builtin");
    std::fs::create_dir(&bin).unwrap();
    for t in ["cbuild-ns", "cbuild-cgroup", "cbuild-overlay", "cbuild-net", "cbuild-seccomp", "cbuild-image"] {
        std::os::unix::fs::symlink(bin_dir().join(t), bin.join(t)).unwrap();
    }
    let cmd = |s: &str| {
        let mut c = rt.cmd(s);
        c.env("CBUILD_BIN", &bin);
        c
    };
    let lib = script("lib/runtime.sh");
    let o = run(Command::new("bash")
        .env("CBUILD_BIN", &bin)
        .args(["-c", "source \"$0\"; type -t flock spawn reap"])
        .arg(&lib));
    assert_eq!(stdout(&o), "file\nfunction\nfunction\n", "flock(1) and bash's own fork here: {}", stderr(&o));
    let o = run(Command::new("bash")
        .env("CBUILD_BIN", bin_dir())
        .args(["-c", "source \"$0\"; type -t flock spawn reap mkdir rmdir rm"])
        .arg(&lib));
    assert_eq!(stdout(&o), "builtin\n".repeat(6), "the builtins beside the tools: {}", stderr(&o));
    let o = run(cmd("cbuild-run").args(["--rm", "--network", "none", IMAGE, "sh", "-c", "exit 3"]));
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let name = unique("nobuiltin");
    let o = run(cmd("cbuild-run").args(["-d", "--name", &name, "--network", "none", IMAGE, "sleep", "60"]));
    assert!(o.status.success(), "{}", stderr(&o));
    let ps = stdout(&run(cmd("cbuild-ps").arg("-a")));
    assert!(status_line(&ps, &name).contains("running"), "{ps}");
    assert_tool_error(&run(cmd("cbuild-rm").arg(&name)), "cbuild-rm", "running");
    assert_eq!(run(cmd("cbuild-stop").args(["-t", "1", &name])).status.code(), Some(0));
    let ps = stdout(&run(cmd("cbuild-ps").arg("-a")));
    assert!(status_line(&ps, &name).contains("exited"), "{ps}");
    assert_eq!(run(cmd("cbuild-rm").arg(&name)).status.code(), Some(0));
    rt.assert_gone(&name);
}

#[test]
fn foreground_signals_reach_the_container_and_cleanup_follows() {
    let rt = Rt::new();
    let name = unique("sig");
    let child = rt
        .cmd("cbuild-run")
        .args([
            "--rm",
            "--name",
            &name,
            "--network",
            "none",
            IMAGE,
            "sh",
            "-c",
            "trap 'echo got-term; exit 9' TERM; echo ready; while :; do sleep 0.05; done",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t = Instant::now();
    while !rt.sb.state.join(&name).join("status").exists()
        || !std::fs::read_to_string(rt.sb.state.join(&name).join("status")).unwrap_or_default().contains("exec")
    {
        assert!(t.elapsed() < Duration::from_secs(10), "never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(200));
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGTERM).unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(9), "the container's own exit status: {}", stderr(&o));
    assert_eq!(stdout(&o), "ready\ngot-term\n");
    rt.assert_gone(&name);
}

/// Killed by the signal itself, bash had not set its traps yet: at most the run's directory with its empty
/// undo list may be left, which `cbuild-rm --prune` removes (docs/runtime.md).
fn prune_if_signalled(rt: &Rt, o: &Output) {
    use std::os::unix::process::ExitStatusExt;
    if o.status.signal().is_some() {
        assert_eq!(rt.tool("cbuild-rm", &["--prune"]).status.code(), Some(0));
    }
}

/// `cbuild-logs -f` follows a detached container until its run ends (the run's lock, not a PID), with
/// everything it wrote; more than one NAME is refused.
#[test]
fn logs_follow_until_the_run_ends() {
    let rt = Rt::new();
    let name = unique("logf");
    rt.detached(&name, &["--rm"], "for i in 1 2 3; do echo out$i; echo err$i >&2; sleep 0.2; done");
    let t = Instant::now();
    let o = rt.tool("cbuild-logs", &["-f", &name]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o), "out1\nout2\nout3\n");
    assert_eq!(stderr(&o), "err1\nerr2\nerr3\n");
    assert!(t.elapsed() < Duration::from_secs(10), "followed for {:?}", t.elapsed());
    rt.assert_gone(&name);
    assert_tool_error(&rt.tool("cbuild-logs", &["a", "b"]), "cbuild-logs", "one NAME only");
}

/// A SIGTERM to cbuild-run at any moment of a start: once cbuild-run has exited, nothing of the run is
/// left (a foreground run passes the signal to its chain and undoes what was made when the chain ends;
/// until the chain is started it aborts), or, for a detached start, either nothing is left (status 125)
/// or the container runs and its NAME was printed. The delays cover the whole start, chain included.
/// Then the same with SIGUSR1 (forwarded like TERM; it ends the tools by default) and without cbuild's
/// builtins, where `spawn` is a bash fork whose child holds the script's traps for a moment.
#[test]
fn a_term_at_any_moment_of_a_start_leaves_nothing_behind() {
    let rt = Rt::new();
    term_sweep(&rt, None, nix::sys::signal::Signal::SIGTERM, (0..60).step_by(4));
    let bin = rt.sb.path().join("bin-without-builtin");
    std::fs::create_dir(&bin).unwrap();
    for t in ["cbuild-ns", "cbuild-cgroup", "cbuild-overlay", "cbuild-net", "cbuild-seccomp", "cbuild-image"] {
        std::os::unix::fs::symlink(bin_dir().join(t), bin.join(t)).unwrap();
    }
    term_sweep(&rt, Some(&bin), nix::sys::signal::Signal::SIGUSR1, (0..60).step_by(6));
    // Stopped while it builds the default image (a data dir of its own, so the image is made here):
    // the tree being built goes with the run's directory.
    let data = rt.sb.path().join("fresh-data");
    let c = rt
        .cmd("cbuild-run")
        .env("CBUILD_DATA", &data)
        .args(["--rm", "--network", "none", IMAGE, "true"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(150));
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.id() as i32), nix::sys::signal::Signal::SIGTERM);
    let _ = c.wait_with_output().unwrap();
    let left: Vec<_> = std::fs::read_dir(&rt.sb.state).unwrap().flatten().map(|e| e.path()).collect();
    assert!(left.is_empty(), "a start stopped while building the image left {left:?}");
}

/// One signal to cbuild-run at each of `delays` (ms) into a start, foreground then detached; `bin`: the
/// tools' dir instead of the built one (without the builtins' library beside them).
fn term_sweep(rt: &Rt, bin: Option<&Path>, sig: nix::sys::signal::Signal, delays: impl Iterator<Item = u64>) {
    let cmd = |s: &str| {
        let mut c = rt.cmd(s);
        if let Some(b) = bin {
            c.env("CBUILD_BIN", b);
        }
        c
    };
    let term = |c: &Child| nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.id() as i32), sig);
    let killed = 128 + sig as i32;
    let marks = rt.sb.path().join(format!("marks-{}", sig as i32));
    std::fs::create_dir(&marks).unwrap();
    let vol = format!("{}:/m", marks.display());
    for ms in delays {
        let name = unique("term");
        let ran = marks.join(&name);
        let c = cmd("cbuild-run")
            .args(["--rm", "--name", &name, "--network", "none", "-v", &vol, IMAGE])
            .args(["sh", "-c", &format!(": > /m/{name}; sleep 0.3")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(ms));
        let _ = term(&c);
        let o = c.wait_with_output().unwrap();
        prune_if_signalled(rt, &o);
        let left = rt.leftovers(&name);
        assert!(left.is_empty(), "{sig} after {ms} ms, status {:?}: left {left:#?}; {}", o.status, stderr(&o));
        // Before the command's exec the start was stopped: 125. Once it runs, the signal is its own: 128+N,
        // or 0 when it reached sh as PID 1 of its namespace, which ignores a signal it has no handler for.
        match o.status.code() {
            Some(125) => assert!(!ran.exists(), "{sig} after {ms} ms: 125, but the command ran"),
            Some(c) if c == 0 || c == killed => {}
            c => assert!(c.is_none(), "{sig} after {ms} ms: status {c:?}; {}", stderr(&o)),
        }
        if ran.exists() {
            let c = o.status.code();
            assert!(c == Some(0) || c == Some(killed), "{sig} after {ms} ms, the command ran: {:?}", o.status);
        }
        let d = cmd("cbuild-run")
            .args(["-d", "--name", &name, "--network", "none", IMAGE, "sleep", "30"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(ms));
        let _ = term(&d);
        let o = d.wait_with_output().unwrap();
        prune_if_signalled(rt, &o);
        if o.status.code() == Some(0) {
            assert_eq!(stdout(&o).trim(), name, "a detached start that succeeded prints the NAME");
            let ps = stdout(&rt.tool("cbuild-ps", &[]));
            assert!(status_line(&ps, &name).contains("running"), "{sig} after {ms} ms: {ps}");
            assert_eq!(rt.tool("cbuild-rm", &["-f", &name]).status.code(), Some(0));
        } else if o.status.code().is_some() {
            assert_eq!(o.status.code(), Some(125), "{sig} after {ms} ms: {}", stderr(&o));
        }
        let left = rt.leftovers(&name);
        assert!(left.is_empty(), "-d, {sig} after {ms} ms, status {:?}: left {left:#?}; {}", o.status, stderr(&o));
    }
}

/// A foreground run starts its chain before cbuild-ns has its arguments (step 4: cbuild-ns waits on fd 5,
/// `--args`, while the script works them out). A TERM in that window aborts the start: the script closes
/// fd 5, cbuild-ns ends silently, the chain undoes its steps, the run its own: 125, no message, nothing
/// left, the command never ran. The window is widened by 20000 variables for step 8 to pass on.
#[test]
fn a_term_while_cbuild_ns_waits_for_its_arguments_aborts_the_start() {
    let rt = Rt::new();
    let name = unique("argsterm");
    let marks = rt.sb.path().join("marks");
    std::fs::create_dir(&marks).unwrap();
    let ran = marks.join("ran");
    let env_file = rt.sb.path().join("env");
    std::fs::write(&env_file, (0..20000).map(|i| format!("K{i}=v\n")).collect::<String>()).unwrap();
    let mut c = rt
        .cmd("cbuild-run")
        .args(["--rm", "--name", &name, "--network", "none", "-v", &format!("{}:/m", marks.display())])
        .arg("--env-file")
        .arg(&env_file)
        .args([IMAGE, "sh", "-c", ": > /m/ran"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // cbuild-ns waiting: its command line is `run --args 5` (its parent's names the container).
    let waiting = || {
        std::fs::read_dir("/proc").unwrap().flatten().any(|e| {
            let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            if !cmdline.ends_with(b"cbuild-ns\0run\0--args\x005\0") {
                return false;
            }
            let ppid = std::fs::read_to_string(e.path().join("stat"))
                .ok()
                .and_then(|st| st.rsplit(") ").next().and_then(|r| r.split(' ').nth(1)).map(str::to_string));
            let parent = ppid.map(|p| std::fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default());
            parent.is_some_and(|p| String::from_utf8_lossy(&p).contains(&format!("\0{name}\0")))
        })
    };
    let t = Instant::now();
    while !waiting() {
        if t.elapsed() > Duration::from_secs(30) {
            let _ = (c.kill(), c.wait());
            panic!("cbuild-ns never waited for its arguments");
        }
    }
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.id() as i32), nix::sys::signal::Signal::SIGTERM).unwrap();
    let o = c.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(125), "{}", stderr(&o));
    assert_eq!(stderr(&o), "", "a TERM says nothing, and the chain's cbuild-ns neither");
    assert!(!ran.exists(), "the command never ran");
    let left = rt.leftovers(&name);
    assert!(left.is_empty(), "left {left:#?}");
}

/// A tools directory whose cbuild-ns sleeps `secs` before it starts (a shell wrapper), the other tools
/// the build's own: to hold the chain back at a chosen moment.
fn slow_ns_bin(rt: &Rt, secs: u32) -> PathBuf {
    let bin = rt.sb.path().join("slow-ns-bin");
    std::fs::create_dir(&bin).unwrap();
    for t in
        ["cbuild-cgroup", "cbuild-overlay", "cbuild-net", "cbuild-seccomp", "cbuild-image", "libcbuild_builtins.so"]
    {
        std::os::unix::fs::symlink(bin_dir().join(t), bin.join(t)).unwrap();
    }
    let wrapper = bin.join("cbuild-ns");
    let ns = bin_dir().join("cbuild-ns");
    std::fs::write(&wrapper, format!("#!/bin/sh\nsleep {secs}\nexec {} \"$@\"\n", ns.display())).unwrap();
    std::fs::set_permissions(&wrapper, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    bin
}

/// A TERM once cbuild-run gave cbuild-ns its arguments (more than a default pipe holds, to a cbuild-ns that
/// is slow to start reading: a wrapper sleeps before it) goes to the chain at once: the command never runs,
/// the run ends 125 at once (not after the command's own sleep), and nothing is left, the upper dir
/// included. Bash runs a trap only when a builtin's write returns: with the write blocked until cbuild-ns
/// read it all (a 64 KiB pipe), the TERM came after cbuild-ns's set-up on a loaded machine and the
/// command ran (`spawn -i` now makes the pipe hold 1 MiB).
#[test]
fn a_term_while_the_arguments_are_written_reaches_the_chain() {
    let rt = Rt::new();
    let bin = slow_ns_bin(&rt, 2);
    let marks = rt.sb.path().join("marks");
    std::fs::create_dir(&marks).unwrap();
    let name = unique("argsw");
    let pad = "x".repeat(100_000);
    let mut c = rt.cmd("cbuild-run");
    c.env("CBUILD_BIN", &bin)
        .args(["--name", &name, "--network", "none", "-v", &format!("{}:/m", marks.display())])
        .args([IMAGE, "sh", "-c", ": > /m/ran; sleep 5", "x", &pad])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let c = c.spawn().unwrap();
    std::thread::sleep(Duration::from_millis(800));
    let t = Instant::now();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.id() as i32), nix::sys::signal::Signal::SIGTERM).unwrap();
    let o = c.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(125), "{}", stderr(&o));
    assert!(!marks.join("ran").exists(), "the command never ran");
    assert!(t.elapsed() < Duration::from_secs(4), "ended with the chain, not after the command: {:?}", t.elapsed());
    let left = rt.leftovers(&name);
    assert!(left.is_empty(), "left {left:#?}");
}

/// The foreground chain's `cbuild-cgroup exec --rm` removes the cgroup when the container ends. Killed
/// itself (status 137, as a killed container's), it removed nothing: the run's own undo must then kill
/// the container and remove the cgroup.
#[test]
fn a_killed_cgroup_waiter_leaves_the_undo_to_the_run() {
    let rt = Rt::new();
    let name = unique("wt");
    let child = rt
        .cmd("cbuild-run")
        .args(["--rm", "--name", &name, "--network", "none", IMAGE, "sleep", "300"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = rt.sb.state.join(&name).join("status");
    let t = Instant::now();
    while !std::fs::read_to_string(&status).unwrap_or_default().contains("\"exec\"") {
        assert!(t.elapsed() < Duration::from_secs(10), "never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    let text = std::fs::read_to_string(&status).unwrap();
    let container = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["phase"] == "exec")
        .and_then(|v| v["pid"].as_i64())
        .unwrap_or_else(|| panic!("no exec pid in {text}"));
    // cbuild-run's child is the chain: cbuild-cgroup, waiting outside the cgroup.
    let kids = std::fs::read_to_string(format!("/proc/{}/task/{}/children", child.id(), child.id())).unwrap();
    let waiter = kids
        .split_whitespace()
        .filter_map(|p| p.parse::<i32>().ok())
        .find(|p| std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() == "cbuild-cgroup"))
        .unwrap_or_else(|| panic!("no cbuild-cgroup among cbuild-run's children {kids:?}"));
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(waiter), nix::sys::signal::Signal::SIGKILL).unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(137), "{}", stderr(&o));
    rt.assert_gone(&name);
    assert!(
        std::fs::read_to_string(format!("/proc/{container}/stat")).map_or(true, |s| s.contains(") Z ")),
        "the container ({container}) outlived its run"
    );
}

// ------------------------------------------------------------------------------------------------------
// Network: bridge, published ports, host, none — inside the test's own host namespace
// ------------------------------------------------------------------------------------------------------

#[test]
fn network_bridge_publish_host_none() {
    let rt = Rt::with_host_ns();
    let before = stdout(&rt.in_host("ip -o link; nft list ruleset"));
    // none: only lo.
    assert_eq!(rt.sh(&[], "ls /sys/class/net"), "lo\n");
    // host: the caller's network namespace (the test's own host namespace, entered with nsenter).
    let ns = rt.host_ns.clone().unwrap();
    let o = run(Command::new("nsenter")
        .arg(format!("--net={}", ns.display()))
        .arg(script("cbuild-run"))
        .env("CBUILD_BIN", bin_dir())
        .env("CBUILD_STATE", &rt.sb.state)
        .env("CBUILD_DATA", &rt.data)
        .args(["--rm", "--network", "host", IMAGE, "sh", "-c", "readlink /proc/self/ns/net"]));
    let host_inode = std::fs::metadata(&ns).map(|m| std::os::unix::fs::MetadataExt::ino(&m)).unwrap();
    assert_eq!(stdout(&o).trim(), format!("net:[{host_inode}]"), "{}", stderr(&o));
    // bridge: eth0 with an address on the default bridge; the gateway answers; a published port reaches
    // the container's httpd from the host namespace.
    let name = unique("web");
    let www = rt.sb.path().join("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("index.html"), "from-container").unwrap();
    let vol = format!("{}:/www:ro", www.display());
    rt.detached(
        &name,
        &["--network", "bridge", "-p", "8080:80", "--publish=9090:90/tcp", "-v", &vol, "--add-host", "gw:host-gateway"],
        "httpd -f -p 80 -h /www",
    );
    let js = stdout(&rt.tool("cbuild-ps", &["--json"]));
    let v: serde_json::Value = serde_json::from_str(js.lines().find(|l| l.contains(&name)).unwrap()).unwrap();
    let ip = v["ip"].as_str().expect("an address").to_string();
    let rules = stdout(&rt.in_host("nft list ruleset"));
    assert!(rules.contains(&format!("cbuild pub {name} tcp 8080")), "{rules}");
    assert!(rules.contains("masquerade"), "bridge mode has NAT on: {rules}");
    let gw = stdout(&rt.in_host("ip -4 -o addr show dev cbuild0"))
        .split_whitespace()
        .nth(3)
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string();
    let o = run(rt.cmd("cbuild-exec").args([
        &name,
        "sh",
        "-c",
        &format!("ip -4 -o addr show eth0; ping -c1 -W2 {gw} >/dev/null && echo gw-ok"),
    ]));
    assert!(stdout(&o).contains(&ip) && stdout(&o).contains("gw-ok"), "{} {}", stdout(&o), stderr(&o));
    // /etc/hosts names the container at its address, as docker's does.
    let o = run(rt.cmd("cbuild-exec").args([&name, "cat", "/etc/hosts"]));
    assert!(stdout(&o).lines().any(|l| l == format!("{ip}\t{name}")), "{}", stdout(&o));
    assert!(stdout(&o).lines().any(|l| l == format!("{gw}\tgw")), "host-gateway: {}", stdout(&o));
    let mut body = String::new();
    for _ in 0..30 {
        let o = rt.in_host(&format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | busybox nc -w 2 {gw} 8080"));
        if let Some((_, b)) = stdout(&o).split_once("\r\n\r\n") {
            body = b.to_string();
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(body, "from-container", "published port 8080 -> {ip}:80");
    assert_eq!(rt.veths().len(), 1);
    assert_eq!(rt.tool("cbuild-rm", &["-f", &name]).status.code(), Some(0));
    rt.assert_gone(&name);
    assert!(rt.veths().is_empty());
    // Everything but the default bridge and its NAT rule (which stay, as docker0 does) is as before.
    let after = stdout(&rt.in_host("ip -o link; nft list ruleset"));
    let (b, a): (BTreeSet<&str>, BTreeSet<&str>) = (before.lines().collect(), after.lines().collect());
    let new: Vec<_> = a.difference(&b).filter(|l| !l.contains("cbuild0")).collect();
    assert!(new.iter().all(|l| !l.contains("cbuild pub") && !l.contains("veth")), "{new:#?}");
    // NAT: an "outside" namespace linked to the test's host by a veth pair (198.51.100.0/24) knows no route
    // to the containers' subnet, so only the bridge's masquerade lets a container's request come back.
    let out_ns = rt.sb.path().join("outside");
    std::fs::write(&out_ns, "").unwrap();
    assert!(run(Command::new("unshare").arg(format!("--net={}", out_ns.display())).arg("true")).status.success());
    let o = rt.in_host(&format!(
        "ip link add up0 type veth peer name o0 netns {} && ip addr add 198.51.100.1/24 dev up0 && ip link set up0 up",
        out_ns.display()
    ));
    assert!(o.status.success(), "{}", stderr(&o));
    let in_out =
        |line: &str| run(Command::new("nsenter").arg(format!("--net={}", out_ns.display())).args(["sh", "-c", line]));
    assert!(in_out("ip link set lo up && ip addr add 198.51.100.2/24 dev o0 && ip link set o0 up").status.success());
    std::fs::write(www.join("index.html"), "from-outside").unwrap();
    let mut httpd = Command::new("nsenter")
        .arg(format!("--net={}", out_ns.display()))
        .args(["busybox", "httpd", "-f", "-p", "7000", "-h"])
        .arg(&www)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let out = rt.sh(
        &["--network", "bridge"],
        "for i in 1 2 3 4 5 6 7 8 9 10; do printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 198.51.100.2 7000 && break; sleep 0.2; done",
    );
    let _ = httpd.kill();
    let _ = httpd.wait();
    let _ = nix::mount::umount2(&out_ns, nix::mount::MntFlags::MNT_DETACH);
    assert!(out.ends_with("from-outside"), "the container reached the outside through NAT: {out:?}");
    let conntrack = stdout(&rt.in_host("conntrack -L 2>/dev/null | grep -c 'dport=7000' || true"));
    assert_eq!(conntrack.trim(), "0", "disconnect removed the flow's conntrack entries");
    // That run ended on its own: its pair goes with its network namespace, in the kernel's time.
    assert!(rt.veths_settled().is_empty(), "the kernel deleted the pair: {:?}", rt.veths());
    assert!(leases(&rt.sb.state).is_empty(), "{:?}", leases(&rt.sb.state));
    // A bad port spec fails the run with 125 and undoes the attachment. The chain had started (it waited
    // for cbuild-ns's arguments) and ended before the undo: the pair goes with the namespace, in the
    // kernel's time.
    let name = unique("web");
    let o = rt.run(&["--rm", "--name", &name, "-p", "notaport", IMAGE, "true"]);
    assert_tool_error(&o, "cbuild-net", "notaport");
    assert_eq!(stderr(&o).lines().count(), 1, "one error line: {}", stderr(&o));
    rt.assert_gone(&name);
    assert!(rt.veths_settled().is_empty(), "{:?}", rt.veths());
}

// ------------------------------------------------------------------------------------------------------
// Escape attempts from a container started with the seed's hardening command
// ------------------------------------------------------------------------------------------------------

const PROBE: &str = r##"
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>
#include <netinet/in.h>
static void report(const char *what, long r) {
    if (r < 0) printf("%s %d\n", what, errno); else printf("%s OK\n", what);
}
int main(void) {
    report("mount", mount("none", "/mnt", "tmpfs", 0, NULL));
    report("umount_proc", umount2("/proc", MNT_DETACH));
    report("raw_socket", socket(AF_INET, SOCK_RAW, IPPROTO_ICMP));
    report("packet_socket", socket(AF_PACKET, SOCK_RAW, 0));
    report("add_key", syscall(SYS_add_key, "user", "cbuild", "secret", 6, -2));
    report("keyctl", syscall(SYS_keyctl, 0, -3, 1));
    report("init_module", syscall(SYS_init_module, "\0\0\0\0", 4, ""));
    int mfd = open("/probe", O_RDONLY);
    report("finit_module", syscall(SYS_finit_module, mfd, "", 0));
    int fd = open("/proc/sys/kernel/hostname", O_WRONLY);
    report("write_proc_sys", fd < 0 ? -1 : write(fd, "pwned", 5));
    fd = open("/proc/sysrq-trigger", O_WRONLY);
    report("open_sysrq", fd);
    fd = open("/proc/1/exe", O_WRONLY);
    report("open_proc1_exe", fd);
    fd = open("/proc/self/exe", O_WRONLY);
    report("open_self_exe", fd);
    report("unshare_user", unshare(CLONE_NEWUSER));
    report("unshare_mnt", unshare(CLONE_NEWNS));
    report("chroot", chroot("/tmp"));
    report("mknod", mknod("/tmp/sda", S_IFBLK | 0600, makedev(8, 0)));
    report("setuid0", setuid(0));
    report("sethostname", sethostname("pwned", 5));
    report("open_by_handle_at", syscall(SYS_open_by_handle_at, AT_FDCWD, "\x08\0\0\0\x01\0\0\0\x02\0\0\0\0\0\0\0", O_RDONLY));
    report("write_sys", open("/sys/kernel/uevent_helper", O_WRONLY));
    report("write_root", open("/pwned", O_WRONLY | O_CREAT, 0644));
    fd = creat("/tmp/x", 0755);
    if (fd >= 0) { write(fd, "#!/bin/sh\n", 10); close(fd); }
    report("exec_tmp", execl("/tmp/x", "x", (char *)NULL));
    int pids = 0;
    DIR *d = opendir("/proc");
    struct dirent *e;
    while ((e = readdir(d))) if (e->d_name[0] >= '0' && e->d_name[0] <= '9') pids++;
    printf("pids %d\n", pids);
    closedir(d);
    d = opendir("/proc/self/fd");
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.' || atoi(e->d_name) == dirfd(d) || atoi(e->d_name) == mfd) continue;
        char p[64], t[256] = "";
        snprintf(p, sizeof p, "/proc/self/fd/%s", e->d_name);
        readlink(p, t, sizeof t - 1);
        printf("fd %s %s\n", e->d_name, t);
    }
    return 0;
}
"##;

/// Compile the probe statically (the container has no libc) into the sandbox.
fn probe(rt: &Rt) -> PathBuf {
    let src = rt.sb.path().join("probe.c");
    let bin = rt.sb.path().join("probe");
    std::fs::write(&src, PROBE).unwrap();
    let o = run(Command::new("gcc").args(["-static", "-O1", "-o"]).arg(&bin).arg(&src));
    assert!(o.status.success(), "gcc -static probe: {}", stderr(&o));
    bin
}

const HARDENING: [&str; 12] = [
    "--cap-drop=ALL",
    "--security-opt",
    "seccomp=default",
    "--security-opt",
    "no-new-privileges",
    "--read-only",
    "--user",
    "1000:1000",
    "--memory=512m",
    "--pids-limit=100",
    "--tmpfs",
    "/tmp:rw,noexec,nosuid,size=100m",
];

#[test]
fn escape_attempts_from_the_hardened_container_all_fail() {
    let rt = Rt::new();
    let probe = probe(&rt);
    let vol = format!("{}:/probe:ro", probe.display());
    let ns_bin = bin("cbuild-ns");
    let ns_before = std::fs::read(&ns_bin).unwrap();
    for init in [false, true] {
        let mut args = vec!["--rm", "--network", "none", "-v", &vol];
        if init {
            args.push("--init");
        }
        args.extend(HARDENING);
        args.extend([IMAGE, "/probe"]);
        let out = rt.ok(&args);
        let get = |k: &str| status_line(&out, &format!("{k} ")).split_whitespace().nth(1).unwrap().to_string();
        const EPERM: &str = "1";
        const EACCES: &str = "13";
        const EROFS: &str = "30";
        for (what, want) in [
            ("mount", vec![EPERM]),
            ("umount_proc", vec![EPERM]),
            ("raw_socket", vec![EPERM]),
            ("packet_socket", vec![EPERM]),
            ("add_key", vec![EPERM]),
            ("keyctl", vec![EPERM]),
            ("init_module", vec![EPERM]),
            ("finit_module", vec![EPERM]),
            ("write_proc_sys", vec![EROFS, EACCES]),
            ("open_sysrq", vec![EROFS, EACCES, "2" /* no CONFIG_MAGIC_SYSRQ */]),
            ("open_proc1_exe", vec![EACCES, "26" /* ETXTBSY */, EROFS]),
            ("open_self_exe", vec![EACCES, "26", EROFS]),
            ("unshare_user", vec![EPERM]),
            ("unshare_mnt", vec![EPERM]),
            ("chroot", vec![EPERM]),
            ("mknod", vec![EPERM]),
            ("setuid0", vec![EPERM]),
            ("sethostname", vec![EPERM]),
            ("open_by_handle_at", vec![EPERM]),
            ("write_sys", vec![EROFS, EACCES, "2"]),
            ("write_root", vec![EROFS, EACCES]),
            ("exec_tmp", vec![EACCES]),
        ] {
            let got = get(what);
            assert!(want.contains(&got.as_str()), "init={init}: {what}: got {got}, want one of {want:?}\n{out}");
        }
        // Host processes are invisible: the probe (and cbuild-ns as PID 1 with --init) only.
        let pids: u32 = get("pids").parse().unwrap();
        assert_eq!(pids, if init { 2 } else { 1 }, "{out}");
        // No host fd beyond stdin/stdout/stderr.
        let fds: Vec<&str> = out.lines().filter(|l| l.starts_with("fd ")).collect();
        assert!(
            fds.iter().all(|l| ["fd 0 ", "fd 1 ", "fd 2 "].iter().any(|p| l.starts_with(p))),
            "unexpected fds: {fds:?}"
        );
    }
    assert_eq!(std::fs::read(&ns_bin).unwrap(), ns_before, "the host's cbuild-ns binary is unchanged");
    // The limits of the hardening command are in force.
    let out = rt.sh(
        &HARDENING,
        "cat /proc/self/status | grep -E '^(CapEff|NoNewPrivs|Seccomp):'; id -u; touch /x 2>&1 | grep -c Read-only",
    );
    assert_eq!(out, "CapEff:\t0000000000000000\nNoNewPrivs:\t1\nSeccomp:\t2\n1000\n1\n");
}

// ------------------------------------------------------------------------------------------------------
// A loop of runs, some killed with SIGKILL mid-start, then cbuild-rm: nothing left anywhere
// ------------------------------------------------------------------------------------------------------

#[test]
fn loop_of_runs_with_kill9_mid_start_then_rm_leaves_nothing() {
    let rt = Rt::with_host_ns();
    let veths_before = rt.veths();
    let mut names = vec![];
    // The issue's 100 runs; CBUILD_LOOP_RUNS lowers it for a quick local iteration.
    let runs: u64 = std::env::var("CBUILD_LOOP_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(100);
    for i in 0..runs {
        let name = unique("loop");
        names.push(name.clone());
        let network = if i % 3 == 0 { "bridge" } else { "none" };
        let mut args: Vec<String> =
            ["--name", &name, "--network", network, "--memory", "64m"].iter().map(|s| s.to_string()).collect();
        if i % 3 == 0 {
            args.extend(["-p".to_string(), format!("{}:80", 20000 + i)]);
        }
        if i % 2 == 0 {
            args.push("--rm".into());
        }
        // Every fifth run is left to finish on its own; the others are killed mid-start.
        let finishes = i % 5 == 4;
        let cmd: &[&str] = if finishes { &[IMAGE, "true"] } else { &[IMAGE, "sleep", "5"] };
        args.extend(cmd.iter().map(|s| s.to_string()));
        let mut c = rt
            .cmd("cbuild-run")
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        if finishes {
            let _ = c.wait();
            continue;
        }
        // SIGKILL the script somewhere along the start: 0..~150 ms in.
        std::thread::sleep(Duration::from_millis((i * 37) % 150));
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.id() as i32), nix::sys::signal::Signal::SIGKILL);
        let _ = c.wait();
    }
    // Some containers may still be starting or running (orphaned): rm -f kills and undoes each.
    for name in &names {
        let o = rt.tool("cbuild-rm", &["-f", name]);
        assert!(o.status.success() || stderr(&o).contains("no such container"), "rm -f {name}: {}", stderr(&o));
    }
    let o = rt.tool("cbuild-rm", &["--prune"]);
    assert!(o.status.success(), "prune: {}", stderr(&o));
    for name in &names {
        rt.assert_gone(name);
    }
    assert_eq!(rt.veths_settled(), veths_before, "no veth left");
    let rules = stdout(&rt.in_host("nft list ruleset"));
    assert!(!rules.contains("cbuild pub"), "{rules}");
    assert!(leases(&rt.sb.state).is_empty(), "{:?}", leases(&rt.sb.state));
    let ns_files: Vec<_> = mounts_under(&rt.sb.state.to_string_lossy());
    assert!(ns_files.is_empty(), "mounts (namespace files, overlays) left: {ns_files:?}");
}

/// A lock holder standing in for a run: `flock -o FILE cat`, which holds FILE's lock until its stdin
/// closes. Returned once the lock is held.
fn hold_lock(file: &Path) -> Child {
    let c = Command::new("flock").arg("-o").arg(file).arg("cat").stdin(Stdio::piped()).spawn().unwrap();
    let t = Instant::now();
    while run(Command::new("flock").args(["-n"]).arg(file).arg("true")).status.success() {
        assert!(t.elapsed() < Duration::from_secs(5), "flock never took {}", file.display());
        std::thread::sleep(Duration::from_millis(10));
    }
    c
}

fn release(mut c: Child) {
    drop(c.stdin.take());
    let _ = c.wait();
}

/// cbuild-stop waiting on a run's lock while that run removes itself and a new run of the same NAME
/// starts must leave the new run alone (it used to wake on the old, unlinked lock and undo the new run:
/// kill its cgroup). Both runs are stand-ins: state files and lock holders, and a real cgroup.
#[test]
fn a_waiter_on_a_removed_runs_lock_leaves_the_names_next_run_alone() {
    let rt = Rt::new();
    let name = unique("same");
    let dir = rt.sb.state.join(&name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("record"), format!("name={name} rm=1\n")).unwrap();
    std::fs::write(dir.join("undo"), "").unwrap();
    let old = hold_lock(&dir.join("undo"));
    let stop = rt.cmd("cbuild-stop").args(["-t", "20", &name]).stdout(Stdio::piped()).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(500)); // cbuild-stop is now waiting for the old lock
                                                    // The old run is gone; the new one has a cgroup with a process in it and its own locked undo list.
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("record"), format!("name={name} rm=1\n")).unwrap();
    std::fs::write(dir.join("undo"), "cgroup\n").unwrap();
    let new = hold_lock(&dir.join("undo"));
    let mut ctr = Command::new(bin("cbuild-cgroup")).args(["exec", &name, "--", "sleep", "30"]).spawn().unwrap();
    let _cleanup = Defer(|| {
        let _ = Command::new(bin("cbuild-cgroup")).args(["rm", "--force", "--missing-ok", &name]).status();
    });
    let t = Instant::now();
    while cgroup_dirs(&name).is_empty() {
        assert!(t.elapsed() < Duration::from_secs(5), "the new run's cgroup never appeared");
        std::thread::sleep(Duration::from_millis(10));
    }
    release(old);
    let o = stop.wait_with_output().unwrap();
    assert!(o.status.success(), "cbuild-stop: {}", stderr(&o));
    std::thread::sleep(Duration::from_millis(200));
    assert!(ctr.try_wait().unwrap().is_none(), "cbuild-stop killed the NAME's next run");
    assert!(dir.join("undo").exists(), "cbuild-stop undid the NAME's next run");
    release(new);
    let _ = ctr.kill();
    let _ = ctr.wait();
}

/// `--help` as docker's: the usage on stdout, exit 0. cbuild-run's lists every option its parser takes
/// (read from the script's own option loop, so a flag added without a line in the help fails here);
/// an unknown option stays a one-line error, 125.
#[test]
fn help_lists_every_option_and_exits_0() {
    for s in ["cbuild-run", "cbuild-rm", "cbuild-stop", "cbuild-exec", "cbuild-logs", "cbuild-ps"] {
        let o = run(Command::new(script(s)).env("CBUILD_BIN", bin_dir()).arg("--help"));
        assert_eq!(o.status.code(), Some(0), "{s} --help: {}", stderr(&o));
        assert!(stderr(&o).is_empty(), "{s} --help wrote to stderr: {}", stderr(&o));
        let out = stdout(&o);
        assert!(out.contains(&format!("Usage: {s} ")), "{s} --help has no usage line:\n{out}");
        assert!(!out.contains("shellcheck") && !out.contains("#!"), "{s} --help shows more than its header:\n{out}");
        let o = run(Command::new(script(s)).env("CBUILD_BIN", bin_dir()).arg("--no-such-option"));
        assert_eq!(o.status.code(), Some(125), "{s} --no-such-option");
        assert_eq!(stderr(&o).lines().count(), 1, "{s}: {}", stderr(&o));
    }
    let src = std::fs::read_to_string(script("cbuild-run")).unwrap();
    let start = src.find("while [[ $# -gt 0 ]]; do").expect("cbuild-run's option loop");
    let body = &src[start..start + src[start..].find("\ndone\n").unwrap()];
    let help = stdout(&run(Command::new(script("cbuild-run")).env("CBUILD_BIN", bin_dir()).arg("--help")));
    let words: BTreeSet<&str> =
        help.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-')).filter(|w| w.starts_with('-')).collect();
    let mut options = 0;
    for line in body.lines() {
        // `        -e | --env) ...`: the labels before the first `)`.
        let Some((labels, _)) = line.trim_start().split_once(')') else { continue };
        if !labels.starts_with('-') || labels == "-*" || labels == "--" {
            continue;
        }
        for opt in labels.split('|').map(str::trim) {
            options += 1;
            assert!(words.contains(opt), "cbuild-run takes {opt} but --help does not list it:\n{help}");
        }
    }
    assert!(options > 40, "read only {options} options from cbuild-run's loop");
}

/// /etc/hostname, /etc/hosts and /etc/resolv.conf as docker writes them: --network none gets the name,
/// localhost and the host's non-loopback nameservers; --network host the host's name and copies of its
/// files (a write inside never reaches the host's); --read-only makes them read-only; a -v of the
/// caller's on one of them wins; none of them is left behind.
#[test]
fn etc_hostname_hosts_and_resolv_conf_as_docker_writes_them() {
    let rt = Rt::new();
    let out = rt.sh(&["--name", &unique("etc"), "--hostname", "box1"], "cat /etc/hostname /etc/hosts /etc/resolv.conf");
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("box1"), "{out}");
    assert!(out.contains("127.0.0.1\tlocalhost\n") && out.contains("::1\tlocalhost ip6-localhost"), "{out}");
    assert!(out.contains("nameserver "), "{out}");
    assert!(!out.lines().any(|l| l.starts_with("nameserver 127.")), "no loopback nameserver: {out}");
    // Host network: the host's name, and copies of its files.
    let host_name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let before = std::fs::read("/etc/hosts").unwrap();
    let out = rt.sh(&["--network", "host"], "hostname; cat /etc/hosts; echo 10.9.9.9 injected >>/etc/hosts");
    assert!(out.starts_with(&host_name), "{out}");
    assert!(out.contains(std::str::from_utf8(&before).unwrap().trim_end()), "{out}");
    assert_eq!(std::fs::read("/etc/hosts").unwrap(), before, "a write inside reached the host's /etc/hosts");
    // --read-only: read-only like the rest of the root.
    let o = rt.run(&["--rm", "--network", "none", "--read-only", IMAGE, "sh", "-c", "echo x >>/etc/hosts"]);
    assert_ne!(o.status.code(), Some(0), "--read-only left /etc/hosts writable");
    // A caller's -v on /etc/hosts wins over ours.
    let mine = rt.sb.path().join("myhosts");
    std::fs::write(&mine, "10.1.2.3 mine\n").unwrap();
    let out = rt.sh(&["-v", &format!("{}:/etc/hosts:ro", mine.display())], "cat /etc/hosts");
    assert_eq!(out, "10.1.2.3 mine\n");
    // docker's --add-host, --dns, --dns-search, --dns-option.
    let out = rt.sh(
        &["--add-host", "db:10.1.2.3", "--add-host=v6=fe80::1", "--dns", "192.0.2.53", "--dns-search", "example.org"]
            .into_iter()
            .chain(["--dns-option", "ndots:2"])
            .collect::<Vec<_>>(),
        "tail -2 /etc/hosts; grep -Ev '^#|^$' /etc/resolv.conf",
    );
    assert_eq!(out, "10.1.2.3\tdb\nfe80::1\tv6\nnameserver 192.0.2.53\nsearch example.org\noptions ndots:2\n");
    for (args, needle) in [
        (["--add-host", "nocolon"], "--add-host nocolon: want HOST:IP"),
        (["--add-host", "gw:host-gateway"], "host-gateway needs --network bridge"),
        (["--dns", "bogus.example"], "--dns bogus.example: not an IP address"),
    ] {
        let o = rt.run(&[&["--rm", "--network", "none"][..], &args[..], &[IMAGE, "true"][..]].concat());
        assert_eq!(o.status.code(), Some(125), "{args:?}");
        assert!(stderr(&o).contains(needle), "{}", stderr(&o));
    }
    let name = unique("etc");
    rt.ok(&["--name", &name, "--network", "none", IMAGE, "true"]);
    assert!(rt.sb.state.join(&name).join("hosts").exists());
    assert!(rt.tool("cbuild-rm", &[&name]).status.success());
    rt.assert_gone(&name);
}

/// `-e KEY` takes the caller's KEY even where the script has a variable of that name; `-e =x` is
/// refused; `--env-file` reads a pipe and drops a CRLF file's CRs; a relative `-w` is refused before
/// anything is made; `--read-only -w /new` makes the directory first.
#[test]
fn env_and_workdir_edges_as_docker() {
    let rt = Rt::new();
    let o = run(rt.cmd("cbuild-run").env("name", "bob").env("hostname", "myvalue").args([
        "--rm",
        "--network",
        "none",
        "-e",
        "name",
        "-e",
        "hostname",
        IMAGE,
        "sh",
        "-c",
        "echo \"[$name] [$hostname]\"",
    ]));
    assert_eq!(stdout(&o), "[bob] [myvalue]\n", "{}", stderr(&o));
    let o = rt.run(&["--rm", "--network", "none", "-e", "=foo", IMAGE, "true"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(stderr(&o).contains("-e =foo"), "{}", stderr(&o));
    let mut c = rt.cmd("cbuild-run");
    c.args(["--rm", "--network", "none", "--env-file", "/dev/stdin", IMAGE, "sh", "-c", "printf '%s|' \"$A\" \"$B\""]);
    c.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    {
        use std::io::Write;
        child.stdin.take().unwrap().write_all(b"A=1\r\nB=two words\r\n").unwrap();
    }
    let o = child.wait_with_output().unwrap();
    assert_eq!(stdout(&o), "1|two words|", "{}", stderr(&o));
    let name = unique("rel");
    let o = rt.run(&["--rm", "--name", &name, "--network", "none", "-w", "rel", IMAGE, "pwd"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(stderr(&o).contains("-w rel: not an absolute path"), "{}", stderr(&o));
    rt.assert_gone(&name);
    assert_eq!(rt.sh(&["--read-only", "-w", "/new/dir"], "pwd"), "/new/dir\n");
    // Short forms: values attached, flags together.
    assert_eq!(rt.sh(&["-eK=v", "-e=L=w", "-w/tmp", "-u1000", "-it"], "echo $K $L; pwd; id -u"), "v w\n/tmp\n1000\n");
    let name = unique("dit");
    assert_eq!(rt.ok(&["-dit", "--name", &name, "--network", "none", IMAGE, "true"]).trim(), name);
    assert!(rt.tool("cbuild-rm", &["-f", &name]).status.success());
    let o = rt.run(&["--rm", "--network", "none", "-dx", IMAGE, "true"]);
    assert_eq!((o.status.code(), stderr(&o).trim()), (Some(125), "cbuild-run: args: -dx: unknown option"));
    // -v makes a missing host directory (as docker); --mount refuses it, naming the source.
    let vol = rt.sb.path().join("made/by/v");
    assert_eq!(rt.sh(&["-v", &format!("{}:/mnt", vol.display())], "touch /mnt/f; ls /mnt"), "f\n");
    assert!(vol.join("f").exists());
    let missing = rt.sb.path().join("missing");
    let o = rt.run(&[
        "--rm",
        "--network",
        "none",
        "--mount",
        &format!("type=bind,src={},dst=/mnt", missing.display()),
        IMAGE,
        "true",
    ]);
    assert_eq!(o.status.code(), Some(125));
    assert!(stderr(&o).contains(&format!("bind: {}: No such file", missing.display())), "{}", stderr(&o));
    assert!(!missing.exists());
}

/// `cbuild-exec` runs as the container's user in its working directory unless told otherwise (as docker
/// exec: never root where the container is not); `cbuild-rm` removes a detached container that has just
/// exited, waiting for its run to finish the undo rather than calling it running.
#[test]
fn exec_takes_the_containers_user_and_workdir_and_rm_waits_for_an_exited_one() {
    let rt = Rt::new();
    let name = unique("exu");
    rt.detached(&name, &["-u", "65534:65534", "-w", "/tmp"], "sleep 30");
    let o = rt.tool("cbuild-exec", &[&name, "sh", "-c", "pwd; id -u"]);
    assert_eq!(stdout(&o), "/tmp\n65534\n", "{}", stderr(&o));
    let o = rt.tool("cbuild-exec", &["-u", "0", "-w", "/", &name, "sh", "-c", "pwd; id -u"]);
    assert_eq!(stdout(&o), "/\n0\n", "{}", stderr(&o));
    assert!(rt.tool("cbuild-rm", &["-f", &name]).status.success());
    rt.assert_gone(&name);
    for _ in 0..5 {
        let name = unique("exd");
        rt.detached(&name, &[], "true");
        // Exited as soon as cbuild-ps says so; removable from then on.
        let t = Instant::now();
        while !stdout(&rt.tool("cbuild-ps", &["-a"])).lines().any(|l| l.starts_with(&name) && l.contains("exited")) {
            assert!(t.elapsed() < Duration::from_secs(20), "{name} never shown exited");
            std::thread::sleep(Duration::from_millis(5));
        }
        let o = rt.tool("cbuild-rm", &[&name]);
        assert!(o.status.success(), "cbuild-rm of an exited container: {}", stderr(&o));
        rt.assert_gone(&name);
    }
    // A bad NAME among good ones: reported, the others still removed, 125 at the end (as docker rm).
    let name = unique("exn");
    rt.ok(&["--name", &name, "--network", "none", IMAGE, "true"]);
    let o = rt.tool("cbuild-rm", &["bad/name", &name]);
    assert_eq!((o.status.code(), stdout(&o)), (Some(125), format!("{name}\n")), "{}", stderr(&o));
    assert!(stderr(&o).contains("bad/name"), "{}", stderr(&o));
    rt.assert_gone(&name);
    // A NAME that is not there: 125, but with -f only said (as docker rm -f).
    let o = rt.tool("cbuild-rm", &["nosuch"]);
    assert_eq!(o.status.code(), Some(125));
    let o = rt.tool("cbuild-rm", &["-f", "nosuch"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stderr(&o).contains("nosuch: no such container"), "{}", stderr(&o));
}

// ------------------------------------------------------------------------------------------------------
// The review's findings: what a run may touch, hold and leave
// ------------------------------------------------------------------------------------------------------

/// A start refused because a cgroup NAME already exists (another's, with a process in it) leaves that
/// cgroup and its process alone, foreground (`exec --rm` refuses it) and detached (`exec --new`), and says
/// so once: its undo neither kills nor removes what this run never made, nor complains about it.
#[test]
fn a_start_refused_for_an_existing_cgroup_leaves_it_and_its_processes_alone() {
    let rt = Rt::new();
    let name = unique("ocg");
    let mut other = Command::new(bin("cbuild-cgroup")).args(["exec", &name, "--", "sleep", "60"]).spawn().unwrap();
    let _cleanup = Defer(|| {
        let _ = Command::new(bin("cbuild-cgroup")).args(["rm", "--force", "--missing-ok", &name]).status();
    });
    let t = Instant::now();
    while cgroup_dirs(&name).is_empty() {
        assert!(t.elapsed() < Duration::from_secs(5), "the other cgroup never appeared");
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(100));
    for detach in [false, true] {
        let mut args = vec!["--name", &name, "--network", "none"];
        args.push(if detach { "-d" } else { "--rm" });
        args.extend([IMAGE, "true"]);
        let o = rt.run(&args);
        assert_eq!(o.status.code(), Some(125), "-d {detach}: {}", stderr(&o));
        assert!(stdout(&o).is_empty(), "-d {detach}: {}", stdout(&o));
        let err = stderr(&o);
        assert!(err.contains("cgroup exists"), "-d {detach}: {err}");
        assert_eq!(err.lines().filter(|l| l.starts_with("cbuild-")).count(), 1, "one error line: {err}");
        assert!(other.try_wait().unwrap().is_none(), "-d {detach}: the other cgroup's process was killed");
        assert!(!cgroup_dirs(&name).is_empty(), "-d {detach}: the other cgroup was removed");
        assert!(!rt.sb.state.join(&name).exists(), "-d {detach}: the run's directory is left");
    }
    let _ = other.kill();
    let _ = other.wait();
}

/// `c`, run by `bash -c LINE bash PROGRAM ARGS...` with `c`'s environment: LINE says what to do with "$@".
fn via_shell(c: &Command, line: &str) -> Command {
    let mut sh = Command::new("bash");
    sh.args(["-c", line, "bash"]).arg(c.get_program()).args(c.get_args());
    for (k, v) in c.get_envs() {
        if let Some(v) = v {
            sh.env(k, v);
        }
    }
    sh
}

/// A detached container holds none of the descriptors its caller handed cbuild-run (as docker, which
/// passes a container nothing): `{ cbuild-run -d ... 3>&1; } | cat` ends when cbuild-run does, not
/// when the container does.
#[test]
fn a_detached_container_holds_none_of_the_callers_descriptors() {
    let rt = Rt::new();
    let name = unique("fds");
    let mut c = rt.cmd("cbuild-run");
    c.args(["-d", "--name", &name, "--network", "none", IMAGE, "sleep", "20"]);
    let t = Instant::now();
    // fd 3: a second copy of the pipe `run` reads to its end.
    let o = run(via_shell(&c, "exec \"$@\" 3>&1").stdin(Stdio::null()));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o).trim(), name);
    assert!(t.elapsed() < Duration::from_secs(10), "the caller's pipe was held by the container: {:?}", t.elapsed());
    assert!(rt.tool("cbuild-rm", &["-f", &name]).status.success());
    rt.assert_gone(&name);
}

/// A reader that goes away (`cbuild-run ... 2>&1 | head -1`) does not kill cbuild-run with SIGPIPE
/// half-way: the run is undone as any other, and NAME is free again.
#[test]
fn a_reader_gone_is_no_sigpipe_the_run_is_undone() {
    let rt = Rt::new();
    let name = unique("pipe");
    let mut c = rt.cmd("cbuild-run");
    c.args(["--verbose", "--rm", "--name", &name, "--network", "none", IMAGE, "echo", "hi"]);
    let o = run(&mut via_shell(&c, "\"$@\" 2>&1 | head -1; echo \"status=${PIPESTATUS[0]}\" >&2"));
    assert!(stdout(&o).starts_with("cbuild-run: step: mkdir: "), "{}", stdout(&o));
    assert!(!stderr(&o).contains("status=141"), "killed by SIGPIPE: {}", stderr(&o));
    rt.assert_gone(&name);
    assert!(rt.ok(&["--rm", "--name", &name, "--network", "none", IMAGE, "true"]).is_empty());
    rt.assert_gone(&name);
}

/// A `-v` whose host directory is missing makes it only for a start that goes on: a spec cbuild-ns
/// refuses (no destination, a relative one, an unknown option) or any later failure of the start leaves
/// no directory on the host, not even the parents it would have made.
#[test]
fn a_refused_volume_leaves_no_host_directory() {
    let rt = Rt::new();
    let base = rt.sb.path().join("vols");
    std::fs::create_dir(&base).unwrap();
    let p = |n: &str| base.join(n).display().to_string();
    for (spec, extra, needle) in [
        (p("x1"), vec![], "want SRC:DST"),
        (format!("{}:/mnt:bogus", p("x2")), vec![], "bogus"),
        (format!("{}:relative", p("x3")), vec![], "relative"),
        (format!("{}:/mnt", p("x4/a/b")), vec!["-u", "nosuchuser"], "nosuchuser"),
    ] {
        let name = unique("vol");
        let mut args = vec!["--rm", "--name", &name, "--network", "none", "-v", &spec];
        args.extend(extra);
        args.extend([IMAGE, "true"]);
        let o = rt.run(&args);
        assert_eq!(o.status.code(), Some(125), "-v {spec}: {}", stderr(&o));
        assert!(stderr(&o).contains(needle), "-v {spec}: {}", stderr(&o));
        let left: Vec<_> = std::fs::read_dir(&base).unwrap().flatten().map(|e| e.path()).collect();
        assert!(left.is_empty(), "-v {spec} left {left:?}");
        rt.assert_gone(&name);
    }
    // A start that goes on keeps it (as docker's).
    assert_eq!(rt.sh(&["-v", &format!("{}:/mnt", p("x5/a"))], "ls /mnt"), "");
    assert!(base.join("x5/a").is_dir());
}

/// `cbuild-run -d --rm IMAGE true`, descheduled for the container's whole life (stopped once the
/// supervisor is recorded, until the container's reap has removed the run): the start succeeded, so it
/// prints NAME and exits 0, as docker would, with nothing on stderr. (A wrapper holds cbuild-ns back a
/// moment, so the stop lands before the exec.)
#[test]
fn a_detached_rm_run_reaped_before_cbuild_run_looks_still_prints_its_name() {
    use nix::sys::signal::{kill, Signal};
    let rt = Rt::new();
    let bin = slow_ns_bin(&rt, 1);
    let name = unique("race");
    let c = rt
        .cmd("cbuild-run")
        .env("CBUILD_BIN", &bin)
        .args(["-d", "--rm", "--name", &name, "--network", "none", IMAGE, "true"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = nix::unistd::Pid::from_raw(c.id() as i32);
    let dir = rt.sb.state.join(&name);
    let t = Instant::now();
    // (The record's first line names cbuild-run itself as supervisor=PID; the detached one is a line of its own.)
    while !std::fs::read_to_string(dir.join("record")).unwrap_or_default().lines().any(|l| l.starts_with("supervisor="))
    {
        assert!(t.elapsed() < Duration::from_secs(10), "no supervisor recorded");
        std::thread::sleep(Duration::from_millis(2));
    }
    kill(pid, Signal::SIGSTOP).unwrap();
    let t = Instant::now();
    while dir.exists() && t.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(10));
    }
    let gone = !dir.exists();
    kill(pid, Signal::SIGCONT).unwrap();
    let o = c.wait_with_output().unwrap();
    assert!(gone, "the run was never reaped");
    assert_eq!((o.status.code(), stdout(&o).trim()), (Some(0), name.as_str()), "{}", stderr(&o));
    assert_eq!(stderr(&o), "");
    rt.assert_gone(&name);
}

/// The processes whose process group is PGID.
fn group_members(pgid: i32) -> Vec<String> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            let pgrp: i32 = stat.rsplit(") ").next()?.split(' ').nth(2)?.parse().ok()?;
            let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
            (pgrp == pgid).then(|| String::from_utf8_lossy(&cmd).replace('\0', " "))
        })
        .collect()
}

/// ^C on `cbuild-logs -f` (SIGINT to its process group, as a terminal sends it) or a TERM to it alone
/// ends it with its lock waiter and both tails: none is left following the container.
#[test]
fn logs_follow_stopped_takes_its_helpers_along() {
    use std::os::unix::process::CommandExt;
    let rt = Rt::new();
    let name = unique("logc");
    rt.detached(&name, &[], "echo started; sleep 60");
    for (sig, to_group) in [(libc::SIGINT, true), (libc::SIGTERM, false)] {
        let mut c = rt.cmd("cbuild-logs");
        c.args(["-f", &name]).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::null()).process_group(0);
        let mut child = c.spawn().unwrap();
        let pgid = child.id() as i32;
        let t = Instant::now();
        while group_members(pgid).len() < 4 {
            assert!(t.elapsed() < Duration::from_secs(10), "{:?}", group_members(pgid));
            std::thread::sleep(Duration::from_millis(20));
        }
        // SAFETY: plain kill(2).
        unsafe { libc::kill(if to_group { -pgid } else { pgid }, sig) };
        let st = child.wait().unwrap();
        assert!(!st.success(), "{st:?}");
        let t = Instant::now();
        while !group_members(pgid).is_empty() && t.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(group_members(pgid).is_empty(), "signal {sig} left {:?}", group_members(pgid));
    }
    assert!(rt.tool("cbuild-rm", &["-f", &name]).status.success());
    rt.assert_gone(&name);
}

/// Docker's forms the scripts took wrongly: `-e`/`-u` values that start with '-', flags together ending in
/// one that takes a value (`-de A=1`), `cbuild-exec -eK=V`, `cbuild-rm -- NAME`; line breaks in a hostname
/// or a `--dns-search` refused (they would forge lines in /etc/hosts and resolv.conf); `cbuild-rm --reap`
/// without its arguments a one-line error.
#[test]
fn docker_forms_the_nits_took_wrongly() {
    let rt = Rt::new();
    let env = rt.ok(&["--rm", "--network", "none", "-e", "-x=1", "--env=-y=2", IMAGE, "cat", "/proc/self/environ"]);
    assert!(env.contains("\0-x=1\0-y=2\0"), "{env:?}");
    let name = unique("nits");
    assert_eq!(rt.ok(&["-de", "A=1", "--name", &name, "--network", "none", IMAGE, "sleep", "30"]).trim(), name);
    let o = rt.tool("cbuild-exec", &["-eB=2", "-e=C=3", &name, "sh", "-c", "echo $A$B$C"]);
    assert_eq!(stdout(&o), "123\n", "{}", stderr(&o));
    let o = rt.tool("cbuild-rm", &["-f", "--", &name]);
    assert_eq!((o.status.code(), stdout(&o)), (Some(0), format!("{name}\n")), "{}", stderr(&o));
    rt.assert_gone(&name);
    for (args, needle) in [
        (vec!["-h", "box\n10.0.0.1 forged"], "-h box: holds a line break"),
        (vec!["--dns-search", "a.org\nnameserver 10.0.0.1"], "--dns-search a.org: holds a line break"),
    ] {
        let name = unique("nl");
        let a = [&["--rm", "--name", &name, "--network", "none"][..], &args[..], &[IMAGE, "true"][..]].concat();
        let o = rt.run(&a);
        assert_tool_error(&o, "cbuild-run", needle);
        rt.assert_gone(&name);
    }
    for args in [vec!["--reap"], vec!["--reap", "x"]] {
        assert_tool_error(&rt.tool("cbuild-rm", &args), "cbuild-rm", "--reap");
    }
}

/// `IMAGE` of the shared data dir again as `tag` in the test's own (`rt.sb.data`: an import into the shared
/// one would send every other test's next start past the run-cache), its config's Env replaced by `env`
/// (an OCI layout: the config and manifest blobs rewritten under their new digests).
fn image_with_env(rt: &Rt, tag: &str, env: serde_json::Value) {
    let image = |data: &Path, args: &[&str]| {
        let o = run(Command::new(bin("cbuild-image")).env("CBUILD_DATA", data).args(args));
        assert!(o.status.success(), "cbuild-image {args:?}: {}", stderr(&o));
    };
    let dir = rt.sb.path().join(tag.replace([':', '/'], "-"));
    std::fs::create_dir_all(&dir).unwrap();
    let tar = dir.join("image.tar");
    image(shared_data(), &["export", IMAGE, &tar.to_string_lossy()]);
    assert!(run(Command::new("tar").arg("-C").arg(&dir).arg("-xf").arg(&tar)).status.success());
    std::fs::remove_file(&tar).unwrap();
    let blobs = dir.join("blobs/sha256");
    let read = |digest: &str| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(blobs.join(digest.trim_start_matches("sha256:"))).unwrap()).unwrap()
    };
    // A blob under its digest: its descriptor's digest and size.
    let write = |v: &serde_json::Value| -> (String, usize) {
        let b = serde_json::to_vec(v).unwrap();
        let tmp = dir.join("blob.tmp");
        std::fs::write(&tmp, &b).unwrap();
        let o = run(Command::new("sha256sum").arg(&tmp));
        let h = stdout(&o).split_whitespace().next().unwrap().to_string();
        std::fs::rename(&tmp, blobs.join(&h)).unwrap();
        (format!("sha256:{h}"), b.len())
    };
    let mut index: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    let mut manifest = read(index["manifests"][0]["digest"].as_str().unwrap());
    let mut config = read(manifest["config"]["digest"].as_str().unwrap());
    config["config"]["Env"] = env;
    let (d, n) = write(&config);
    manifest["config"]["digest"] = d.into();
    manifest["config"]["size"] = n.into();
    let (d, n) = write(&manifest);
    index["manifests"][0] = serde_json::json!({"mediaType": manifest["mediaType"], "digest": d, "size": n});
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    image(&rt.sb.data, &["import", &dir.to_string_lossy(), "--tag", tag]);
}

/// An image Env entry that is a NAME alone, as Docker's daemon reads it (moby's ReplaceOrAppendEnvValues:
/// "unset NAME"): the container runs without NAME, `-e NAME=V` replaces it; `-e NAME` not set in the
/// caller unsets the image's NAME=V (cbuild-exec's the container's, as docker exec); the image's
/// HOSTNAME=... wins over the default one, as Docker's; an empty entry is dropped; an empty name (`=V`)
/// fails the start, 125, one line.
#[test]
fn image_env_names_alone_as_dockers_daemon_reads_them() {
    let mut rt = Rt::new();
    let tag = format!("{}:1", unique("envnames"));
    image_with_env(&rt, &tag, serde_json::json!(["FOO", "BAR=img", "HOSTNAME=fromimg", "BAZ=img"]));
    let tag2 = format!("{}:1", unique("envempty"));
    image_with_env(&rt, &tag2, serde_json::json!(["A=1", "=x"]));
    let tag3 = format!("{}:1", unique("envblank"));
    image_with_env(&rt, &tag3, serde_json::json!(["", "A=1", ""]));
    rt.data = rt.sb.data.clone();
    let show = "echo \"${FOO-unset} ${BAR-unset} ${BAZ-unset} $HOSTNAME\"";
    let sh = |args: &[&str]| {
        let a = [&["--rm", "--network", "none"][..], args, &[tag.as_str(), "sh", "-c", show][..]].concat();
        rt.ok(&a)
    };
    assert_eq!(sh(&[]), "unset img img fromimg\n");
    assert_eq!(sh(&["-e", "FOO=1"]), "1 img img fromimg\n");
    let o = run(rt.cmd("cbuild-run").env_remove("BAR").env("BAZ", "host").args([
        "--rm",
        "--network",
        "none",
        "-e",
        "BAR",
        "-e",
        "BAZ",
        &tag,
        "sh",
        "-c",
        show,
    ]));
    assert_eq!(stdout(&o), "unset unset host fromimg\n", "{}", stderr(&o));
    // --env-file's KEY alone not set here is passed on alone, as docker/cli does (opts/file.go): it
    // unsets the image's, as `-e KEY` does. A UTF-8 BOM before the first line is not part of its name.
    let f = rt.sb.path().join("env");
    std::fs::write(&f, "\u{feff}BAR\nFOO=f\n").unwrap();
    let o = run(rt.cmd("cbuild-run").env_remove("BAR").args([
        "--rm",
        "--network",
        "none",
        "--env-file",
        &f.to_string_lossy(),
        &tag,
        "sh",
        "-c",
        show,
    ]));
    assert_eq!(stdout(&o), "f unset img fromimg\n", "{}", stderr(&o));
    let name = unique("envx");
    assert_eq!(rt.ok(&["-d", "--name", &name, "--network", "none", &tag, "sleep", "30"]).trim(), name);
    let o = run(rt.cmd("cbuild-exec").env_remove("BAR").args(["-e", "BAR", "-e", "FOO=x", &name, "sh", "-c", show]));
    assert_eq!(stdout(&o), "x unset img fromimg\n", "{}", stderr(&o));
    assert!(rt.tool("cbuild-rm", &["-f", &name]).status.success());
    rt.assert_gone(&name);
    // An empty entry unsets nothing and is dropped, as Docker's daemon drops it.
    assert_eq!(rt.ok(&["--rm", "--network", "none", &tag3, "sh", "-c", "echo \"$A\""]), "1\n");
    // An empty name: refused before anything is made, as runc refuses it under Docker.
    let name = unique("enve");
    let o = rt.run(&["--rm", "--name", &name, "--network", "none", "-e", "X=1", &tag2, "true"]);
    assert_tool_error(&o, "cbuild-image", "Env \"=x\"");
    rt.assert_gone(&name);
}

/// Regression: an image name moved to another image (`import --tag`, `tag`) while a start read it. The
/// start asked `layers` and `config` by name, one after the other, so it could mix one image's layers
/// with the other's config, and it wrote the run-cache after both, newer than the store's index.json,
/// so every later start ran the old image until something else rewrote the index. Now `config` comes
/// first and `layers` is asked for its IMAGE_DIGEST, and the cache takes the time from before `config`.
/// Here a cbuild-image wrapper moves the name right after `config` has read it.
#[test]
fn an_image_name_moved_during_a_start_is_not_cached_as_the_old_image() {
    let mut rt = Rt::new();
    let (a, b, app) = (unique("which") + ":a", unique("which") + ":b", unique("app") + ":1");
    image_with_env(&rt, &a, serde_json::json!(["WHICH=a"]));
    image_with_env(&rt, &b, serde_json::json!(["WHICH=b"]));
    rt.data = rt.sb.data.clone();
    let image = |args: &[&str]| {
        let o = run(Command::new(bin("cbuild-image")).env("CBUILD_DATA", &rt.data).args(args));
        assert!(o.status.success(), "cbuild-image {args:?}: {}", stderr(&o));
    };
    image(&["tag", &a, &app]);
    let wrapped = rt.sb.path().join("bin-moving-tag");
    std::fs::create_dir(&wrapped).unwrap();
    for t in ["cbuild-ns", "cbuild-cgroup", "cbuild-overlay", "cbuild-net", "cbuild-seccomp", "libcbuild_builtins.so"] {
        if bin_dir().join(t).exists() {
            std::os::unix::fs::symlink(bin_dir().join(t), wrapped.join(t)).unwrap();
        }
    }
    let real = bin("cbuild-image");
    std::fs::write(
        wrapped.join("cbuild-image"),
        format!(
            "#!/bin/sh\nif [ \"$1\" = config ]; then\n  out=$({real:?} \"$@\") || exit $?\n  {real:?} tag {b} {app} >/dev/null || exit 99\n  printf '%s\\n' \"$out\"; exit 0\nfi\nexec {real:?} \"$@\"\n",
            real = real.display().to_string()
        ),
    )
    .unwrap();
    std::fs::set_permissions(wrapped.join("cbuild-image"), std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .unwrap();
    let show = ["--rm", "--network", "none", app.as_str(), "sh", "-c", "echo $WHICH"];
    let o = run(rt.cmd("cbuild-run").env("CBUILD_BIN", &wrapped).args(show));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "a\n", "the image the start read first, whole");
    assert_eq!(rt.ok(&show), "b\n", "the name's image now, not a cache of the old one");
}
