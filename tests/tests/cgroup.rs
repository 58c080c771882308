//! cbuild-cgroup against the real kernel. Layout-agnostic: every expectation about where NAME lives comes
//! from `cbuild-cgroup info --json` (the hierarchies and their bases) and the kernel's own files, so the
//! same tests run on the hybrid development machines and in the pure cgroup v2 VM (busybox userland:
//! only `sh`, `dd`, `sleep` and the cbuild binaries are used).

use cbuild_tests::{
    assert_tool_error, bin, require_root, run, stderr, stdout, tool, unique, with_pending_signal, Sandbox,
};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const TOOL: &str = "cbuild-cgroup";

fn cg(sb: &Sandbox) -> Command {
    tool(TOOL, sb)
}

/// `info --json`, parsed.
fn info(sb: &Sandbox) -> Value {
    let o = run(cg(sb).args(["info", "--json"]));
    assert!(o.status.success(), "info: {}", stderr(&o));
    serde_json::from_str(&stdout(&o)).expect("info --json is one JSON object")
}

/// NAME's directory in every hierarchy the tool uses: `<base>/cbuild/<NAME>`.
fn dirs(info: &Value, name: &str) -> Vec<PathBuf> {
    info["hierarchies"]
        .as_array()
        .expect("hierarchies")
        .iter()
        .map(|h| Path::new(h["base"].as_str().unwrap()).join("cbuild").join(name))
        .collect()
}

/// The directory of the hierarchy holding `controller`, if any.
fn dir_of(info: &Value, name: &str, controller: &str) -> Option<PathBuf> {
    info["hierarchies"].as_array().unwrap().iter().find_map(|h| {
        let has = h["controllers"].as_array().unwrap().iter().any(|c| c == controller);
        has.then(|| Path::new(h["base"].as_str().unwrap()).join("cbuild").join(name))
    })
}

/// An OCI config whose `unified` names a file the kernel does not have, so the write fails after every
/// directory exists. Its controller must be in the v2 tree (else it is refused before any mkdir): memory
/// on pure v2, whatever the unified tree offers on a hybrid host.
fn bogus_unified_config(sb: &Sandbox, info: &Value) -> PathBuf {
    let v2_ctrl = info["hierarchies"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["version"] == 2)
        .flat_map(|h| h["controllers"].as_array().unwrap().iter().filter_map(|c| c.as_str()))
        .find(|&c| c != "cpuset")
        .unwrap_or("memory")
        .to_string();
    let cfg = sb.path().join("config.json");
    std::fs::write(&cfg, format!(r#"{{"linux":{{"resources":{{"unified":{{"{v2_ctrl}.bogus":"1"}}}}}}}}"#)).unwrap();
    cfg
}

fn assert_no_dirs(info: &Value, name: &str) {
    for d in dirs(info, name) {
        assert!(!d.exists(), "{} was left behind", d.display());
    }
}

/// A cgroup NAME that is removed (processes killed) when the test ends, pass or fail.
struct Cg {
    name: String,
    dirs: Vec<PathBuf>,
}

impl Cg {
    fn new(info: &Value) -> Cg {
        let name = unique("cg");
        Cg { dirs: dirs(info, &name), name }
    }
}

impl Drop for Cg {
    fn drop(&mut self) {
        let _ = Command::new(bin(TOOL)).args(["rm", "--force", &self.name]).stderr(Stdio::null()).status();
        // If the tool itself is broken, clean up by hand: kill what is inside, then rmdir.
        for _ in 0..100 {
            let mut left = false;
            for d in &self.dirs {
                if let Ok(procs) = std::fs::read_to_string(d.join("cgroup.procs")) {
                    for p in procs.lines().filter_map(|l| l.parse::<i32>().ok()) {
                        unsafe { libc::kill(p, libc::SIGKILL) };
                    }
                }
                if d.exists() && std::fs::remove_dir(d).is_err() {
                    left = true;
                }
            }
            if !left {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A spawned child that is killed and reaped when the test ends.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn stat(sb: &Sandbox, name: &str) -> Value {
    let o = run(cg(sb).args(["stat", "--json", name]));
    assert!(o.status.success(), "stat: {}", stderr(&o));
    serde_json::from_str(&stdout(&o)).expect("stat --json is one JSON object")
}

fn procs_in(dir: &Path) -> Vec<i32> {
    std::fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.parse().ok())
        .collect()
}

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Lines of a child's stdout, delivered through a channel so the test can wait with a timeout.
fn lines_of(child: &mut Child) -> mpsc::Receiver<String> {
    let out = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Wait for a JSON line from `events --follow` with the given event kind.
fn wait_event(rx: &mpsc::Receiver<String>, kind: &str, timeout: Duration) -> Value {
    let end = Instant::now() + timeout;
    loop {
        let left = end.saturating_duration_since(Instant::now());
        let line = rx.recv_timeout(left).unwrap_or_else(|_| panic!("no {kind} event within {timeout:?}"));
        let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("events line {line:?}: {e}"));
        if v["event"] == kind {
            return v;
        }
    }
}

fn statfs_is_cgroup2(p: &str) -> bool {
    nix::sys::statfs::statfs(p).map(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC).unwrap_or(false)
}

#[test]
fn info_reports_the_layout_the_kernel_has() {
    require_root();
    let sb = Sandbox::new();
    let i = info(&sb);
    let want = if statfs_is_cgroup2("/sys/fs/cgroup") {
        "unified"
    } else if statfs_is_cgroup2("/sys/fs/cgroup/unified") {
        "hybrid"
    } else {
        "legacy"
    };
    assert_eq!(i["layout"], want);
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let hs = i["hierarchies"].as_array().unwrap();
    assert!(!hs.is_empty());
    for h in hs {
        let mount = h["mount"].as_str().unwrap();
        let fstype = if h["version"] == 2 { "cgroup2" } else { "cgroup" };
        assert!(
            mountinfo.lines().any(|l| l.split(' ').nth(4) == Some(mount) && l.contains(&format!(" - {fstype} "))),
            "{mount} is not a {fstype} mount"
        );
        // v1: the controllers are the mount's super options.
        if h["version"] == 1 {
            for c in h["controllers"].as_array().unwrap() {
                let c = c.as_str().unwrap();
                assert!(mountinfo
                    .lines()
                    .any(|l| l.split(' ').nth(4) == Some(mount)
                        && l.rsplit(' ').next().unwrap().split(',').any(|o| o == c)));
            }
        } else {
            let avail =
                std::fs::read_to_string(Path::new(h["base"].as_str().unwrap()).join("cgroup.controllers")).unwrap();
            let mut a: Vec<&str> = avail.split_whitespace().collect();
            a.sort();
            let mut got: Vec<&str> = h["controllers"].as_array().unwrap().iter().map(|c| c.as_str().unwrap()).collect();
            got.sort();
            assert_eq!(got, a);
        }
    }
    // Both v1 cpu and cpuacct, wherever they are mounted, and the v2 tree on hybrid hosts.
    if want != "unified" {
        assert!(dir_of(&i, "x", "cpu").is_some() && dir_of(&i, "x", "cpuacct").is_some());
    }
    if want == "hybrid" {
        assert!(hs.iter().any(|h| h["version"] == 2 && h["mount"] == "/sys/fs/cgroup/unified"));
    }
    let o = run(cg(&sb).arg("info"));
    assert!(o.status.success());
    assert!(stdout(&o).contains(want), "{}", stdout(&o));
}

#[test]
fn memory_hog_is_oom_killed_and_counted_exactly_once() {
    require_root();
    let sb = Sandbox::new();
    let i = info(&sb);
    let c = Cg::new(&i);
    // memory+swap = memory: no swap to escape to, whether or not the machine has swap.
    let o = run(cg(&sb).args(["create", &c.name, "--memory", "50M", "--memory-swap", "50M"]));
    assert!(o.status.success(), "create: {}", stderr(&o));
    let mut ev = Proc(cg(&sb).args(["events", "--follow", &c.name]).stdout(Stdio::piped()).spawn().unwrap());
    let rx = lines_of(&mut ev.0);
    std::thread::sleep(Duration::from_millis(300));
    // dd's 100M buffer is filled by read(2) from /dev/zero: 100M of anonymous memory under a 50M limit.
    let o = run(cg(&sb).args(["exec", &c.name, "--", "dd", "if=/dev/zero", "of=/dev/null", "bs=100M", "count=1"]));
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(o.status.signal(), Some(libc::SIGKILL), "the hog was not OOM-killed: {:?} {}", o.status, stderr(&o));
    let e = wait_event(&rx, "oom_kill", Duration::from_secs(10));
    assert_eq!(e["count"], 1);
    assert_eq!(e["name"], c.name.as_str());
    let s = stat(&sb, &c.name);
    let m = &s["memory"];
    assert_eq!(m["oom_kills"], 1, "stat: {s}");
    assert_eq!(m["limit"], 50 << 20);
    assert_eq!(m["swap_limit"], 0);
    assert!(m["peak"].as_u64().unwrap() > 40 << 20, "peak {}", m["peak"]);
    if let Some(oom) = m["oom_events"].as_u64() {
        assert!(oom >= 1);
    }
    // events without --follow: the total so far, once.
    let o = run(cg(&sb).args(["events", &c.name]));
    let kills: Vec<Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v["event"] == "oom_kill")
        .collect();
    assert_eq!(kills.len(), 1);
    assert_eq!(kills[0]["total"], 1);
}

#[test]
fn busy_loop_under_cpus_0_2_is_throttled() {
    require_root();
    let sb = Sandbox::new();
    let i = info(&sb);
    let c = Cg::new(&i);
    let _p = Proc(
        cg(&sb)
            // Two spinning shells, so the group still exhausts its quota when a busy CI machine gives
            // each runnable task only a fraction of a CPU.
            .args(["exec", &c.name, "--cpus", "0.2", "--", "sh", "-c", "while :; do :; done & while :; do :; done"])
            .stdin(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // 20 ms of CPU per 100 ms period: a busy loop runs out of quota in nearly every period.
    wait_for("20 enforcement periods", Duration::from_secs(20), || {
        c.dirs[0].exists() && {
            let s = stat(&sb, &c.name);
            s["cpu"]["nr_periods"].as_u64().unwrap_or(0) >= 20
        }
    });
    let s = stat(&sb, &c.name);
    let cpu = &s["cpu"];
    assert_eq!(cpu["quota_usec"], 20_000);
    assert_eq!(cpu["period_usec"], 100_000);
    let ratio = cpu["throttle_ratio"].as_f64().unwrap();
    assert!(ratio > 0.5, "throttle ratio {ratio}: {cpu}");
    let (t, p) = (cpu["nr_throttled"].as_u64().unwrap(), cpu["nr_periods"].as_u64().unwrap());
    assert!((ratio - t as f64 / p as f64).abs() < 1e-9);
    assert!(cpu["throttled_usec"].as_u64().unwrap() > 0);
    assert!(cpu["usage_usec"].as_u64().unwrap() > 0);
}

#[test]
fn fork_loop_hits_pids_limit_and_stat_and_events_count_it() {
    require_root();
    let sb = Sandbox::new();
    let i = info(&sb);
    let c = Cg::new(&i);
    let o = run(cg(&sb).args(["create", &c.name, "--pids", "20"]));
    assert!(o.status.success(), "create: {}", stderr(&o));
    let mut ev = Proc(cg(&sb).args(["events", "--follow", &c.name]).stdout(Stdio::piped()).spawn().unwrap());
    let rx = lines_of(&mut ev.0);
    std::thread::sleep(Duration::from_millis(300));
    // 40 background sleeps against a limit of 20 tasks: forks fail once 20 exist. No pipes: the sleeps
    // outlive the shell, and a pipe they hold would keep the test waiting for them.
    let st = cg(&sb)
        .args(["exec", &c.name, "--", "sh", "-c"])
        .arg("i=0; while [ $i -lt 40 ]; do sleep 30 & i=$((i+1)); done 2>/dev/null; exit 0")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(st.code().is_some(), "the shell was killed: {st:?}");
    let e = wait_event(&rx, "pids_max", Duration::from_secs(10));
    assert!(e["count"].as_u64().unwrap() >= 1);
    let s = stat(&sb, &c.name);
    let p = &s["pids"];
    assert_eq!(p["limit"], 20);
    assert!(p["limit_hits"].as_u64().unwrap() >= 1, "{s}");
    assert!(p["current"].as_u64().unwrap() <= 20);
    assert!(p["current"].as_u64().unwrap() >= 10, "the sleeps should still be there: {s}");
    if let Some(peak) = p["peak"].as_u64() {
        assert!(peak <= 20 && peak >= p["current"].as_u64().unwrap(), "{s}");
    }
    // --follow ends when NAME is removed.
    let o = run(cg(&sb).args(["rm", "--force", &c.name]));
    assert!(o.status.success(), "rm --force: {}", stderr(&o));
    wait_event(&rx, "removed", Duration::from_secs(10));
    wait_for("events --follow to exit", Duration::from_secs(5), || ev.0.try_wait().unwrap().is_some());
    assert!(ev.0.wait().unwrap().success());
}

/// NAME removed and made again between two of `events --follow`'s wake-ups (here: while it is stopped)
/// is a removal: the follower says `removed` and ends, instead of comparing the new NAME's counters
/// with the old one's totals.
#[test]
fn events_follow_ends_when_name_is_removed_and_made_again() {
    require_root();
    let sb = Sandbox::new();
    let i = info(&sb);
    let c = Cg::new(&i);
    let ok = |o: std::process::Output| assert!(o.status.success(), "{}", stderr(&o));
    ok(run(cg(&sb).args(["create", &c.name, "--pids", "20"])));
    let mut ev = Proc(cg(&sb).args(["events", "--follow", &c.name]).stdout(Stdio::piped()).spawn().unwrap());
    let rx = lines_of(&mut ev.0);
    // Following: its inotify instance exists (made after NAME's directories were looked at).
    let fds = format!("/proc/{}/fd", ev.0.id());
    let inotify = || {
        std::fs::read_dir(&fds)
            .map(|d| d.flatten().any(|e| std::fs::read_link(e.path()).is_ok_and(|l| l.ends_with("anon_inode:inotify"))))
            .unwrap_or(false)
    };
    wait_for("events --follow to watch", Duration::from_secs(10), inotify);
    let pid = nix::unistd::Pid::from_raw(ev.0.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::SIGSTOP).unwrap();
    ok(run(cg(&sb).args(["rm", &c.name])));
    ok(run(cg(&sb).args(["create", &c.name, "--pids", "20"])));
    nix::sys::signal::kill(pid, nix::sys::signal::SIGCONT).unwrap();
    wait_event(&rx, "removed", Duration::from_secs(5));
    wait_for("events --follow to exit", Duration::from_secs(5), || ev.0.try_wait().unwrap().is_some());
}

#[test]
fn exec_keeps_the_pid_and_puts_the_whole_tree_in_every_hierarchy() {
    require_root();
    let sb = Sandbox::new();
    let i = info(&sb);
    let c = Cg::new(&i);
    let mut p = Proc(
        cg(&sb)
            .args(["exec", &c.name, "--memory", "64M", "--pids", "64", "--", "sh", "-c"])
            .arg("sleep 30 & echo $!; sleep 30 & echo $!; echo $$; wait")
            .stdout(Stdio::piped())
            .stdin(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let rx = lines_of(&mut p.0);
    let mut pids = Vec::new();
    for _ in 0..3 {
        pids.push(rx.recv_timeout(Duration::from_secs(10)).expect("pid line").parse::<i32>().unwrap());
    }
    // Chain-loading: the command has the PID the tool was started with.
    assert_eq!(pids[2], p.0.id() as i32);
    for d in &c.dirs {
        let inside = procs_in(d);
        for pid in &pids {
            assert!(inside.contains(pid), "{pid} not in {}: {inside:?}", d.display());
        }
    }
    // And the kernel's view of each process agrees, for every hierarchy with a controller and the v2 tree.
    for pid in &pids {
        let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
        let mut seen = 0;
        for line in text.lines() {
            let mut f = line.splitn(3, ':');
            let (_id, ctrls, path) = (f.next().unwrap(), f.next().unwrap(), f.next().unwrap());
            if ctrls.starts_with("name=") {
                continue;
            }
            seen += 1;
            assert!(path.ends_with(&format!("/cbuild/{}", c.name)), "{pid}: {line}");
        }
        assert_eq!(seen, c.dirs.len(), "{pid} is in {seen} hierarchies, the tool uses {}", c.dirs.len());
    }
    let s = stat(&sb, &c.name);
    assert_eq!(s["procs"], 3);
}

#[test]
fn rm_leaves_no_directory_in_any_hierarchy() {
    require_root();
    let sb = Sandbox::new();
    let i = info(&sb);
    let c = Cg::new(&i);
    let o = run(cg(&sb).args(["exec", &c.name, "--memory", "32M", "--cpus", "0.5", "--pids", "10", "--", "true"]));
    assert!(o.status.success(), "exec: {}", stderr(&o));
    for d in &c.dirs {
        assert!(d.is_dir(), "{} missing", d.display());
    }
    let o = run(cg(&sb).args(["ls", "--json"]));
    assert!(stdout(&o).lines().any(|l| serde_json::from_str::<Value>(l).unwrap()["name"] == c.name.as_str()));
    let o = run(cg(&sb).args(["-v", "rm", &c.name]));
    assert!(o.status.success(), "rm: {}", stderr(&o));
    assert!(stderr(&o).contains("cbuild-cgroup: step: rmdir: "), "{}", stderr(&o));
    assert_no_dirs(&i, &c.name);
    let o = run(cg(&sb).args(["ls", "--json"]));
    assert!(!stdout(&o).contains(&format!("\"{}\"", c.name)));
    // A second rm: no such cgroup.
    assert_tool_error(&run(cg(&sb).args(["rm", &c.name])), TOOL, "no such cgroup");
}

#[test]
fn rm_refuses_live_processes_without_force() {
    require_root();
    let sb = Sandbox::new();
    let i = info(&sb);
    let c = Cg::new(&i);
    let mut p = Proc(cg(&sb).args(["exec", &c.name, "--", "sleep", "30"]).stdin(Stdio::null()).spawn().unwrap());
    let pid = p.0.id() as i32;
    wait_for("the sleep to join", Duration::from_secs(5), || procs_in(&c.dirs[0]).contains(&pid));
    let o = run(cg(&sb).args(["rm", &c.name]));
    assert_tool_error(&o, TOOL, "live process");
    for d in &c.dirs {
        assert!(d.is_dir(), "refused rm still removed {}", d.display());
    }
    assert!(p.0.try_wait().unwrap().is_none(), "refused rm killed the process");
    let o = run(cg(&sb).args(["rm", "--force", &c.name]));
    assert!(o.status.success(), "rm --force: {}", stderr(&o));
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(p.0.wait().unwrap().signal(), Some(libc::SIGKILL));
    assert_no_dirs(&i, &c.name);
}

#[test]
fn kill_sends_the_signal_to_every_process() {
    require_root();
    let sb = Sandbox::new();
    let i = info(&sb);
    let c = Cg::new(&i);
    let mut p = Proc(cg(&sb).args(["exec", &c.name, "--", "sleep", "30"]).stdin(Stdio::null()).spawn().unwrap());
    let pid = p.0.id() as i32;
    wait_for("the sleep to join", Duration::from_secs(5), || procs_in(&c.dirs[0]).contains(&pid));
    let o = run(cg(&sb).args(["kill", "--signal", "TERM", &c.name]));
    assert!(o.status.success(), "kill: {}", stderr(&o));
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(p.0.wait().unwrap().signal(), Some(libc::SIGTERM));
    // Default SIGKILL, with a forking tree.
    let mut p = Proc(
        cg(&sb)
            .args(["exec", &c.name, "--", "sh", "-c", "sleep 30 & sleep 30 & wait"])
            .stdin(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for("three processes", Duration::from_secs(5), || procs_in(&c.dirs[0]).len() == 3);
    let o = run(cg(&sb).args(["kill", &c.name]));
    assert!(o.status.success(), "kill: {}", stderr(&o));
    assert_eq!(p.0.wait().unwrap().signal(), Some(libc::SIGKILL));
    for d in &c.dirs {
        assert!(procs_in(d).is_empty(), "{} still has processes", d.display());
    }
    assert_tool_error(&run(cg(&sb).args(["kill", "--signal", "NOPE", &c.name])), TOOL, "signal");
}

#[test]
fn add_moves_a_process_into_every_hierarchy() {
    require_root();
    let sb = Sandbox::new();
    let i = info(&sb);
    let c = Cg::new(&i);
    assert!(run(cg(&sb).args(["create", &c.name])).status.success());
    let p = Proc(Command::new("sleep").arg("30").spawn().unwrap());
    let pid = p.0.id() as i32;
    let o = run(cg(&sb).args(["add", &c.name, &pid.to_string()]));
    assert!(o.status.success(), "add: {}", stderr(&o));
    for d in &c.dirs {
        assert!(procs_in(d).contains(&pid), "{pid} not in {}", d.display());
    }
    assert_tool_error(&run(cg(&sb).args(["add", &c.name, "abc"])), TOOL, "not a process id");
    assert_tool_error(&run(cg(&sb).args(["add", &c.name, "0"])), TOOL, "not a process id");
    assert_tool_error(&run(cg(&sb).args(["add", &unique("cg"), &pid.to_string()])), TOOL, "no such cgroup");
}

#[test]
fn limits_are_written_and_reported_the_same_on_every_layout() {
    require_root();
    let sb = Sandbox::new();
    let i = info(&sb);
    let c = Cg::new(&i);
    let swap_ok = i["features"]["swap_accounting"] != false;
    let mut args = vec!["create", &c.name, "--memory", "64M", "--memory-reservation", "32M", "--cpus", "0.5"];
    args.extend(["--cpu-shares", "512", "--pids", "33", "--cpuset-cpus", "0", "--cpuset-mems", "0"]);
    if swap_ok {
        args.extend(["--memory-swap", "96M"]);
    }
    let o = run(cg(&sb).args(&args));
    assert!(o.status.success(), "create: {}", stderr(&o));
    let s = stat(&sb, &c.name);
    assert_eq!(s["memory"]["limit"], 64 << 20);
    assert_eq!(s["memory"]["reservation"], 32 << 20);
    if swap_ok {
        // Docker's memory+swap 96M = 64M memory + 32M swap; v2 stores swap alone, v1 the sum.
        assert_eq!(s["memory"]["swap_limit"], 32 << 20, "{s}");
    }
    assert_eq!(s["cpu"]["quota_usec"], 50_000);
    assert_eq!(s["cpu"]["period_usec"], 100_000);
    // 512 shares ↔ weight 59 (runc's conversion), whichever of the two the kernel stores.
    assert_eq!(s["cpu"]["weight"], 59, "{s}");
    assert_eq!(s["pids"]["limit"], 33);
    let cpuset = dir_of(&i, &c.name, "cpuset").unwrap();
    assert_eq!(std::fs::read_to_string(cpuset.join("cpuset.cpus")).unwrap().trim(), "0");
    // set: change one limit, keep the others.
    let o = run(cg(&sb).args(["set", &c.name, "--cpu-weight", "100", "--pids", "max"]));
    assert!(o.status.success(), "set: {}", stderr(&o));
    let s = stat(&sb, &c.name);
    assert_eq!(s["cpu"]["weight"], 100);
    assert_eq!(s["cpu"]["shares"], 1024);
    assert_eq!(s["pids"]["limit"], Value::Null);
    assert_eq!(s["memory"]["limit"], 64 << 20);
    // The human table has the same numbers.
    let o = run(cg(&sb).args(["stat", &c.name]));
    assert!(stdout(&o).contains("limit 64.0 MiB"), "{}", stdout(&o));
    // PSI comes from the v2 tree, so wherever there is one.
    if i["features"]["psi"] == true {
        assert!(s["psi"]["cpu"]["some"]["avg10"].is_number(), "{s}");
    }
}

#[test]
fn v2_controllers_reach_the_cgroup_and_oom_group_needs_v2() {
    require_root();
    let sb = Sandbox::new();
    let i = info(&sb);
    let c = Cg::new(&i);
    let v2 = i["hierarchies"].as_array().unwrap().iter().find(|h| h["version"] == 2).cloned();
    let v2_memory = v2.as_ref().is_some_and(|h| h["controllers"].as_array().unwrap().iter().any(|c| c == "memory"));
    let mut args = vec!["create", c.name.as_str()];
    if v2_memory {
        args.push("--oom-group");
    }
    let o = run(cg(&sb).args(&args));
    assert!(o.status.success(), "create: {}", stderr(&o));
    if let Some(h) = &v2 {
        // Enabled in subtree_control all the way down: NAME offers every controller the base has.
        let d = Path::new(h["base"].as_str().unwrap()).join("cbuild").join(&c.name);
        let have = std::fs::read_to_string(d.join("cgroup.controllers")).unwrap();
        for ctrl in h["controllers"].as_array().unwrap() {
            let ctrl = ctrl.as_str().unwrap();
            if ["cpuset", "cpu", "io", "memory", "pids", "hugetlb"].contains(&ctrl) {
                assert!(have.split_whitespace().any(|x| x == ctrl), "{ctrl} not in {have}");
            }
        }
        assert!(d.join("cgroup.kill").exists());
        if v2_memory {
            assert_eq!(std::fs::read_to_string(d.join("memory.oom.group")).unwrap().trim(), "1");
        }
    }
    if !v2_memory {
        let other = unique("cg");
        assert_tool_error(&run(cg(&sb).args(["create", &other, "--oom-group"])), TOOL, "cgroup v2");
        assert_no_dirs(&i, &other);
    }
}

#[test]
fn oci_config_resources_are_applied() {
    require_root();
    let sb = Sandbox::new();
    let i = info(&sb);
    let c = Cg::new(&i);
    let cfg = sb.path().join("config.json");
    std::fs::write(
        &cfg,
        r#"{"ociVersion":"1.0.2","linux":{"resources":{"memory":{"limit":41943040},
            "cpu":{"shares":2048,"quota":25000,"period":50000},"pids":{"limit":17}}}}"#,
    )
    .unwrap();
    let o = run(cg(&sb).args(["create", &c.name, "--oci"]).arg(&cfg).args(["--pids", "18"]));
    assert!(o.status.success(), "create --oci: {}", stderr(&o));
    let s = stat(&sb, &c.name);
    assert_eq!(s["memory"]["limit"], 41_943_040);
    assert_eq!(s["cpu"]["quota_usec"], 25_000);
    assert_eq!(s["cpu"]["period_usec"], 50_000);
    assert_eq!(s["cpu"]["weight"], 174);
    assert_eq!(s["pids"]["limit"], 18, "flags override the OCI file");
    // Not an OCI config: 125, nothing made.
    std::fs::write(&cfg, "{ not json").unwrap();
    let other = unique("cg");
    assert_tool_error(&run(cg(&sb).args(["create", &other, "--oci"]).arg(&cfg)), TOOL, "not an OCI config");
    assert_no_dirs(&i, &other);
}

#[test]
fn bad_input_fails_cleanly_with_nothing_left_in_any_hierarchy() {
    require_root();
    let sb = Sandbox::new();
    let i = info(&sb);
    let huge_cpus = "4096";
    let cases: &[(&[&str], &str)] = &[
        (&["--memory", "10x"], "unknown size suffix"),
        (&["--memory", "-5M"], "negative"),
        (&["--memory", "0"], "zero"),
        (&["--pids", "0"], "--pids"),
        (&["--pids", "-7"], "--pids"),
        (&["--cpus", "0"], "range of CPUs"),
        (&["--cpus", "-1"], "range of CPUs"),
        (&["--cpus", huge_cpus], "CPUs"),
        (&["--cpus", "1", "--cpu-quota", "5000"], "conflicts"),
        (&["--cpu-shares", "1"], "out of range"),
        (&["--cpuset-cpus", "4095"], "outside the allowed set"),
        (&["--cpuset-cpus", "3-1"], "reversed"),
        (&["--memory", "64M", "--memory-swap", "32M"], "memory-swap"),
        (&["--memory-reservation", "64M", "--memory", "32M"], "above --memory"),
        (&["--io-max", "4095:4095:rbps=1m"], "no such block device"),
        (&["--io-max", "1:3:xbps=1"], "unknown key"),
        (&["--bogus-flag"], "usage"),
    ];
    for (args, needle) in cases {
        for verb in ["create", "exec"] {
            let name = unique("cg");
            let marker = sb.path().join(format!("ran-{name}"));
            let mut cmd = cg(&sb);
            cmd.arg(verb).arg(&name).args(*args);
            if verb == "exec" {
                cmd.args(["--", "touch"]).arg(&marker);
            }
            let o = run(&mut cmd);
            assert_tool_error(&o, TOOL, needle);
            assert_eq!(stderr(&o).lines().filter(|l| !l.starts_with("hint: ")).count(), 1, "{}", stderr(&o));
            assert_no_dirs(&i, &name);
            assert!(!marker.exists(), "exec ran the command after failing: {args:?}");
        }
    }
    // Names that must never reach a path.
    for name in ["../evil", "a/b", "x y", ".hidden", "", "_x"] {
        assert_tool_error(&run(cg(&sb).args(["create", name])), TOOL, "name");
    }
    assert!(!Path::new(i["hierarchies"][0]["base"].as_str().unwrap()).join("evil").exists());
    // Unknown NAMEs.
    let nobody = unique("cg");
    for verb in [&["stat"][..], &["events"], &["rm"], &["kill"], &["set", "--pids", "5"]] {
        let o = run(cg(&sb).args(verb.iter().take(1)).arg(&nobody).args(verb.iter().skip(1)));
        assert_tool_error(&o, TOOL, "no such cgroup");
    }
    // A command that is not there: 127, and no cgroup made for it.
    let name = unique("cg");
    let o = run(cg(&sb).args(["exec", &name, "--", "/nonexistent/cmd"]));
    assert_eq!(o.status.code(), Some(127), "{}", stderr(&o));
    assert_no_dirs(&i, &name);
    // create on an existing NAME refuses (and leaves it alone).
    let c = Cg::new(&i);
    assert!(run(cg(&sb).args(["create", &c.name, "--pids", "9"])).status.success());
    assert_tool_error(&run(cg(&sb).args(["create", &c.name])), TOOL, "exists");
    assert_eq!(stat(&sb, &c.name)["pids"]["limit"], 9);
}

/// A value the kernel itself refuses after the directories exist: every directory made in every
/// hierarchy is removed again (create), and values already changed are put back (set).
#[test]
fn kernel_rejection_midway_is_undone() {
    require_root();
    let sb = Sandbox::new();
    let i = info(&sb);
    // `unified` is written last, after the memory limit: a file the kernel does not have fails there.
    let cfg = bogus_unified_config(&sb, &i);
    let name = unique("cg");
    let o = run(cg(&sb).args(["create", &name, "--memory", "32M", "--oci"]).arg(&cfg));
    assert_eq!(o.status.code(), Some(125), "{}", stderr(&o));
    assert!(stderr(&o).starts_with("cbuild-cgroup: "), "{}", stderr(&o));
    assert_no_dirs(&i, &name);
    let c = Cg::new(&i);
    assert!(run(cg(&sb).args(["create", &c.name, "--memory", "100M", "--pids", "50"])).status.success());
    let o = run(cg(&sb).args(["set", &c.name, "--memory", "60M", "--pids", "7", "--oci"]).arg(&cfg));
    assert_eq!(o.status.code(), Some(125), "{}", stderr(&o));
    let s = stat(&sb, &c.name);
    assert_eq!(s["memory"]["limit"], 100 << 20, "a failed set must restore the old limit");
    assert_eq!(s["pids"]["limit"], 50);
}

#[test]
fn exec_passes_the_exit_status_and_prints_steps() {
    require_root();
    let sb = Sandbox::new();
    let i = info(&sb);
    let c = Cg::new(&i);
    let o = run(cg(&sb).args(["-v", "exec", &c.name, "--pids", "10", "--", "sh", "-c", "exit 7"]));
    assert_eq!(o.status.code(), Some(7));
    let err = stderr(&o);
    for step in ["step: detect: ", "step: mkdir: ", "step: write: ", "step: join: ", "step: exec: "] {
        assert!(err.contains(&format!("cbuild-cgroup: {step}")), "no {step:?} in {err}");
    }
    // Re-running exec on the existing NAME reuses it.
    let o = run(cg(&sb).args(["exec", &c.name, "--", "sh", "-c", "exit 0"]));
    assert!(o.status.success(), "{}", stderr(&o));
}

/// CMD's arguments reach the command byte for byte, as cgexec and chpst pass them: a file name in
/// Latin-1 is not a usage error.
#[test]
fn exec_passes_arguments_that_are_not_utf8() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    require_root();
    let sb = Sandbox::new();
    let i = info(&sb);
    let c = Cg::new(&i);
    let arg = OsStr::from_bytes(b"caf\xe9 \xff");
    let o = run(cg(&sb).args(["exec", &c.name, "--pids", "10", "--", "printf", "%s"]).arg(arg));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(o.stdout, arg.as_bytes());
    let o = run(cg(&sb).args(["exec", &c.name, "--rm", "--"]).arg(OsStr::from_bytes(b"/nonexistent/\xe9")));
    assert_eq!(o.status.code(), Some(127), "{}", stderr(&o));
    assert!(stderr(&o).contains("command not found"), "{}", stderr(&o));
}

/// A whole-disk block device the kernel has (loop devices exist wherever the loop module is loaded).
fn a_block_device() -> Option<String> {
    block_devices().into_iter().next()
}

#[test]
fn io_throttles_land_in_the_io_or_blkio_files() {
    require_root();
    let sb = Sandbox::new();
    let i = info(&sb);
    let Some(dev) = a_block_device() else {
        eprintln!("io_throttles_land_in_the_io_or_blkio_files: no block device on this machine; nothing to throttle");
        return;
    };
    let c = Cg::new(&i);
    let o = run(cg(&sb).args(["create", &c.name, "--io-max", &format!("{dev}:rbps=1m,wiops=100")]));
    assert!(o.status.success(), "create --io-max: {}", stderr(&o));
    if let Some(d) = dir_of(&i, &c.name, "io") {
        let max = std::fs::read_to_string(d.join("io.max")).unwrap();
        let line = max
            .lines()
            .find(|l| l.starts_with(&format!("{dev} ")))
            .unwrap_or_else(|| panic!("{dev} not in io.max: {max}"));
        assert!(line.contains("rbps=1048576") && line.contains("wiops=100") && line.contains("wbps=max"), "{line}");
    } else {
        let d = dir_of(&i, &c.name, "blkio").expect("an io or blkio controller");
        let r = std::fs::read_to_string(d.join("blkio.throttle.read_bps_device")).unwrap();
        assert!(r.lines().any(|l| l == format!("{dev} 1048576")), "{r}");
        let w = std::fs::read_to_string(d.join("blkio.throttle.write_iops_device")).unwrap();
        assert!(w.lines().any(|l| l == format!("{dev} 100")), "{w}");
    }
    assert!(stat(&sb, &c.name)["io"]["devices"].is_array());
    // --io-weight: set where the kernel has a weight file (BFQ or iocost), else a clean refusal.
    let other = unique("cg");
    let _g = Cg { name: other.clone(), dirs: dirs(&i, &other) };
    let o = run(cg(&sb).args(["create", &other, "--io-weight", "300"]));
    if o.status.success() {
        let d = dir_of(&i, &other, "io").or_else(|| dir_of(&i, &other, "blkio")).unwrap();
        let weights: Vec<String> = ["io.bfq.weight", "io.weight", "blkio.bfq.weight", "blkio.weight"]
            .iter()
            .filter_map(|f| std::fs::read_to_string(d.join(f)).ok())
            .collect();
        // 300 on the BFQ scale, or 300 converted to io.weight's (1 + 290 * 9999 / 990 = 2930).
        assert!(weights.iter().any(|w| w.contains("300") || w.contains("2930")), "{weights:?}");
    } else {
        assert_tool_error(&o, TOOL, "io weight");
        assert_no_dirs(&i, &other);
    }
}

#[test]
fn not_root_without_delegation_is_refused_clearly() {
    require_root();
    use std::os::unix::process::CommandExt;
    let sb = Sandbox::new();
    let i = info(&sb);
    let name = unique("cg");
    let o = run(cg(&sb).args(["create", &name, "--pids", "5"]).uid(65534).gid(65534));
    assert_tool_error(&o, TOOL, "not delegated");
    assert!(stderr(&o).contains("hint: "), "{}", stderr(&o));
    assert_no_dirs(&i, &name);
    // Reading needs no delegation.
    let o = run(cg(&sb).args(["info", "--json"]).uid(65534).gid(65534));
    assert!(o.status.success(), "info as nobody: {}", stderr(&o));
    assert_eq!(serde_json::from_str::<Value>(&stdout(&o)).unwrap()["rootless"], true);
}

/// A cgroup delegated to uid 1000 in every hierarchy, as systemd's Delegate=yes does it: the directory
/// and its cgroup.procs / tasks / cgroup.subtree_control / cgroup.threads are chowned. Removed (after
/// killing what is inside) when dropped.
struct Delegated {
    dirs: Vec<PathBuf>,
}

impl Delegated {
    fn new(info: &Value, uid: u32) -> Delegated {
        let leaf = unique("dl");
        let mut dirs = Vec::new();
        for h in info["hierarchies"].as_array().unwrap() {
            let base = Path::new(h["base"].as_str().unwrap());
            let d = base.join(&leaf);
            std::fs::create_dir(&d).unwrap();
            dirs.push(d.clone());
            let ctrls: Vec<&str> = h["controllers"].as_array().unwrap().iter().map(|c| c.as_str().unwrap()).collect();
            if h["version"] == 1 && ctrls.contains(&"cpuset") {
                for f in ["cpuset.cpus", "cpuset.mems"] {
                    std::fs::write(d.join(f), std::fs::read_to_string(base.join(f)).unwrap().trim()).unwrap();
                }
            }
            if h["version"] == 2 {
                // The delegated cgroup must itself receive the controllers from its parent.
                for c in ctrls.iter().filter(|c| ["cpu", "memory", "pids", "io", "cpuset", "hugetlb"].contains(c)) {
                    let _ = std::fs::write(base.join("cgroup.subtree_control"), format!("+{c}"));
                }
            }
            for f in ["", "cgroup.procs", "tasks", "cgroup.subtree_control", "cgroup.threads"] {
                let p = if f.is_empty() { d.clone() } else { d.join(f) };
                if p.exists() {
                    nix::unistd::chown(&p, Some(uid.into()), Some(uid.into())).unwrap();
                }
            }
        }
        Delegated { dirs }
    }
}

impl Delegated {
    /// Run the tool as uid 1000 from inside the delegated cgroups (it waits on stdin until root has
    /// moved it there): its status, stdout and stderr.
    fn run_tool(&self, args: &[&str]) -> (std::process::ExitStatus, String, String) {
        use std::io::{Read, Write};
        use std::os::unix::process::CommandExt;
        let mut child = Proc(
            Command::new("sh")
                .arg("-c")
                .arg("read go; exec \"$0\" \"$@\"")
                .arg(bin(TOOL))
                .args(args)
                .uid(1000)
                .gid(1000)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        );
        for d in &self.dirs {
            std::fs::write(d.join("cgroup.procs"), child.0.id().to_string()).unwrap();
        }
        child.0.stdin.take().unwrap().write_all(b"go\n").unwrap();
        let (mut out, mut err) = (String::new(), String::new());
        child.0.stdout.as_mut().unwrap().read_to_string(&mut out).unwrap();
        child.0.stderr.as_mut().unwrap().read_to_string(&mut err).unwrap();
        (child.0.wait().unwrap(), out, err)
    }
}

impl Drop for Delegated {
    fn drop(&mut self) {
        for d in &self.dirs {
            // Deepest first: <leaf>/cbuild/<NAME>, <leaf>/cbuild, <leaf>.
            let mut all = Vec::new();
            let mut stack = vec![d.clone()];
            while let Some(p) = stack.pop() {
                if let Ok(rd) = std::fs::read_dir(&p) {
                    for e in rd.flatten() {
                        if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                            stack.push(e.path());
                        }
                    }
                }
                all.push(p);
            }
            for p in all.iter().rev() {
                for pid in procs_in(p) {
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
                for _ in 0..100 {
                    if !p.exists() || std::fs::remove_dir(p).is_ok() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
    }
}

#[test]
fn not_root_uses_the_delegated_cgroup() {
    require_root();
    let sb = Sandbox::new();
    let i = info(&sb);
    let deleg = Delegated::new(&i, 1000);
    let name = unique("cg");
    let (st, out, err) = deleg.run_tool(&["exec", &name, "--pids", "10", "--", "cat", "/proc/self/cgroup"]);
    assert!(st.success(), "rootless exec failed: {st:?}: {err}");
    let leaf = deleg.dirs[0].file_name().unwrap().to_string_lossy().into_owned();
    let want = format!("/{leaf}/cbuild/{name}");
    let mut seen = 0;
    for line in out.lines().filter(|l| !l.split(':').nth(1).unwrap_or("").starts_with("name=")) {
        seen += 1;
        assert!(line.ends_with(&want), "{line}: want …{want}");
    }
    assert_eq!(seen, deleg.dirs.len(), "{out}");
    let pids_dir = deleg.dirs[i["hierarchies"]
        .as_array()
        .unwrap()
        .iter()
        .position(|h| h["controllers"].as_array().unwrap().iter().any(|c| c == "pids"))
        .expect("a pids controller")]
    .join("cbuild")
    .join(&name);
    assert_eq!(std::fs::read_to_string(pids_dir.join("pids.max")).unwrap().trim(), "10");

    // `exec --rm` is root's: the waiting process would stay in the delegated cgroup, which v2 then keeps
    // from handing controllers to NAME. Refused before anything is made. (A fresh delegation: the first
    // one now hands controllers down, so v2 takes no process into it.)
    let deleg = Delegated::new(&i, 1000);
    let other = unique("cg");
    let (st, _, err) = deleg.run_tool(&["exec", &other, "--rm", "--", "true"]);
    assert_eq!(st.code(), Some(125), "{err}");
    assert!(err.starts_with("cbuild-cgroup: exec: --rm: needs root"), "{err}");
    for d in &deleg.dirs {
        assert!(!d.join("cbuild").join(&other).exists(), "{other} made under {}", d.display());
    }
}

/// A NAME that is also the name of a file the kernel puts in `cbuild/` (`cgroup.procs`, `memory.max`,
/// `tasks`...) would make mkdir say EEXIST — "exists" — and send writes into `cbuild/tasks/tasks`.
/// Refused up front on every layout; the longest legal NAME (64) works, 65 does not.
#[test]
fn names_of_kernel_control_files_and_overlong_names_are_refused() {
    require_root();
    let sb = Sandbox::new();
    let i = info(&sb);
    for name in [
        "cgroup.procs",
        "memory.max",
        "cpu.max",
        "pids.max",
        "cpuset.cpus",
        "tasks",
        "notify_on_release",
        "irq.pressure",
    ] {
        for verb in ["create", "exec"] {
            let mut cmd = cg(&sb);
            cmd.args([verb, name]);
            if verb == "exec" {
                cmd.args(["--", "true"]);
            }
            let o = run(&mut cmd);
            assert_tool_error(&o, TOOL, "control file");
            assert!(stderr(&o).starts_with("cbuild-cgroup: name: "), "{}", stderr(&o));
        }
        for d in dirs(&i, name) {
            assert!(!d.is_dir(), "{} was made", d.display());
        }
    }
    let base = unique("cg");
    let longest = format!("{base}{}", "x".repeat(64 - base.len()));
    let c = Cg { dirs: dirs(&i, &longest), name: longest.clone() };
    let o = run(cg(&sb).args(["create", &c.name, "--pids", "5"]));
    assert!(o.status.success(), "64-character NAME: {}", stderr(&o));
    assert_eq!(stat(&sb, &c.name)["pids"]["limit"], 5);
    let too_long = format!("{longest}y");
    assert_tool_error(&run(cg(&sb).args(["create", &too_long])), TOOL, "name");
    assert_no_dirs(&i, &too_long);
}

/// Two `exec NAME` at once on a NAME that does not exist yet: both must run. Without serialization one
/// joins the other's half-made NAME (an empty v1 cpuset refuses tasks with ENOSPC) or has it removed
/// by the other's undo.
#[test]
fn concurrent_execs_of_a_new_name_all_run_and_share_it() {
    require_root();
    let sb = Sandbox::new();
    let i = info(&sb);
    for _round in 0..4 {
        let c = Cg::new(&i);
        let children: Vec<Child> = (0..6)
            .map(|_| {
                cg(&sb)
                    .args(["exec", &c.name, "--memory", "64M", "--pids", "50", "--", "true"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .spawn()
                    .expect("spawn")
            })
            .collect();
        for child in children {
            let o = child.wait_with_output().unwrap();
            assert!(o.status.success(), "a concurrent exec failed: {}", stderr(&o));
        }
        for d in &c.dirs {
            assert!(d.is_dir(), "{} is missing", d.display());
        }
        assert_eq!(stat(&sb, &c.name)["pids"]["limit"], 50);
        assert!(run(cg(&sb).args(["rm", &c.name])).status.success());
        assert_no_dirs(&i, &c.name);
    }
}

/// `--oci` and flags together: a flag's `--memory` overrides the file's limit, and Docker's implied
/// memory+swap (twice the memory) follows the flag, not the file.
#[test]
fn memory_flag_over_an_oci_memory_limit_is_accepted() {
    require_root();
    let sb = Sandbox::new();
    let i = info(&sb);
    let cfg = sb.path().join("config.json");
    std::fs::write(&cfg, r#"{"linux":{"resources":{"memory":{"limit":10485760}}}}"#).unwrap();
    let c = Cg::new(&i);
    let o = run(cg(&sb).args(["create", &c.name, "--memory", "100M", "--oci"]).arg(&cfg));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stat(&sb, &c.name)["memory"]["limit"], 100 << 20);
}

/// An OCI `unified` file of a controller the v2 tree does not have is refused before anything is
/// made (on a hybrid host memory is v1, so `memory.high` has nowhere to go).
#[test]
fn oci_unified_file_of_a_missing_v2_controller_is_refused_up_front() {
    require_root();
    let sb = Sandbox::new();
    let i = info(&sb);
    let v2_ctrls: Vec<String> = i["hierarchies"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["version"] == 2)
        .flat_map(|h| h["controllers"].as_array().unwrap().iter().map(|c| c.as_str().unwrap().to_string()))
        .collect();
    // A controller name the kernel has never had is missing everywhere; memory is missing on hybrid.
    let mut missing = vec!["nosuchctrl"];
    if !v2_ctrls.iter().any(|c| c == "memory") {
        missing.push("memory");
    }
    for ctrl in missing {
        let cfg = sb.path().join(format!("{ctrl}.json"));
        std::fs::write(&cfg, format!(r#"{{"linux":{{"resources":{{"unified":{{"{ctrl}.high":"1"}}}}}}}}"#)).unwrap();
        let name = unique("cg");
        let o = run(cg(&sb).args(["create", &name, "--oci"]).arg(&cfg));
        assert_tool_error(&o, TOOL, "limits");
        assert!(!stderr(&o).contains("mkdir") && !stderr(&o).contains("write"), "{}", stderr(&o));
        assert_no_dirs(&i, &name);
    }
}

/// Odd `--oci` inputs: an endless file, a directory, negative and unrepresentable values, unknown
/// fields (ignored, as the OCI spec requires). Each bad one: 125, one line, nothing made.
#[test]
fn oci_hostile_configs_fail_cleanly_and_unknown_fields_are_ignored() {
    require_root();
    let sb = Sandbox::new();
    let i = info(&sb);
    let write = |body: &str| {
        let p = sb.path().join(format!("{}.json", unique("oci")));
        std::fs::write(&p, body).unwrap();
        p
    };
    let cases: Vec<(PathBuf, &str)> = vec![
        (PathBuf::from("/dev/zero"), "larger than"),
        (sb.path().to_path_buf(), "oci"),
        (write(r#"{"linux":{"resources":{"memory":{"limit":-5}}}}"#), "negative"),
        (write(r#"{"linux":{"resources":{"memory":{"limit":99999999999999999999}}}}"#), "not an OCI config"),
        (write(r#"{"linux":{"resources":{"cpu":{"shares":-2}}}}"#), "not an OCI config"),
        (write(r#"{"linux":{"resources":{"cpu":{"quota":10}}}}"#), "below 1000"),
        (write(r#"{"linux":{"resources":{"cpu":{"cpus":"0-999999"}}}}"#), "too large"),
        (write(r#"{"linux":{"resources":{"unified":{"../x.y":"1"}}}}"#), "controller file name"),
    ];
    for (cfg, needle) in &cases {
        let name = unique("cg");
        let o = run(cg(&sb).args(["create", &name, "--oci"]).arg(cfg));
        assert_tool_error(&o, TOOL, needle);
        assert_no_dirs(&i, &name);
    }
    let c = Cg::new(&i);
    let cfg = write(r#"{"ociVersion":"9.9","future":{"x":1},"linux":{"resources":{"pids":{"limit":12,"new":true}}}}"#);
    let o = run(cg(&sb).args(["create", &c.name, "--oci"]).arg(&cfg));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stat(&sb, &c.name)["pids"]["limit"], 12);
}

/// `ls` while other invocations create and remove NAMEs: a NAME vanishing between the directory
/// listing and reading its `cgroup.procs` (ENOENT, or ENODEV from a removed cgroup's open file) is
/// simply not listed; `ls` must not fail.
#[test]
fn ls_survives_names_removed_while_it_lists() {
    require_root();
    let sb = Sandbox::new();
    let i = info(&sb);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let churn = {
        let stop = stop.clone();
        let i = i.clone();
        std::thread::spawn(move || {
            let sb = Sandbox::new();
            for _ in 0..80 {
                let c = Cg::new(&i);
                assert!(run(cg(&sb).args(["create", &c.name])).status.success());
                assert!(run(cg(&sb).args(["rm", &c.name])).status.success());
            }
            stop.store(true, std::sync::atomic::Ordering::SeqCst);
        })
    };
    let mut runs = 0;
    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
        let o = run(cg(&sb).args(["ls", "--json"]));
        assert!(o.status.success(), "ls failed during concurrent rm: {}", stderr(&o));
        runs += 1;
    }
    churn.join().unwrap();
    assert!(runs > 0);
}

/// The v2 group of `info`'s layout, if the host has a cgroup2 tree (pure v2, or hybrid's unified one).
fn v2_base(info: &Value) -> Option<PathBuf> {
    info["hierarchies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["version"] == 2)
        .map(|h| PathBuf::from(h["base"].as_str().unwrap()))
}

/// `/proc/PID/cgroup` as (hierarchy controllers, path) pairs, named hierarchies (name=systemd) left out.
fn cgroup_lines(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.splitn(3, ':');
            let (_, ctrls, path) = (f.next()?, f.next()?, f.next()?);
            (!ctrls.starts_with("name=")).then(|| (ctrls.to_string(), path.to_string()))
        })
        .collect()
}

/// `exec --cgroup-fd 3` hands NAME's cgroup2 group to `cbuild-ns run --cgroup-fd 3`, which clones the
/// container straight into it (clone3 CLONE_INTO_CGROUP; with clone3 filtered to ENOSYS, the child
/// moves itself). Either way: the container is in NAME in every hierarchy, its own cgroup namespace is
/// rooted at NAME (`/` everywhere), and only the supervising cbuild-ns stays outside the v2 group.
#[test]
fn cgroup_fd_clones_the_container_into_the_group() {
    require_root();
    let sb = Sandbox::new();
    let i = info(&sb);
    let no_clone3 = sb.path().join("no-clone3.json");
    std::fs::write(
        &no_clone3,
        r#"{"defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38}]}"#,
    )
    .unwrap();
    // With clone3 filtered the parent moves the child; in a user namespace mapped to an unprivileged
    // host uid the child could not have done it itself.
    for (filtered, userns) in [(false, false), (true, false), (false, true), (true, true)] {
        let c = Cg::new(&i);
        let mut cmd = Command::new(bin(TOOL));
        if filtered {
            cmd = Command::new(bin("cbuild-seccomp"));
            cmd.arg("exec").arg("--profile").arg(&no_clone3).arg("--").arg(bin(TOOL));
        }
        cmd.env("CBUILD_STATE", sb.path().join("state"))
            .args(["exec", &c.name, "--memory", "64M", "--cgroup-fd", "3", "--"])
            .arg(bin("cbuild-ns"))
            .args(["run", "--cgroup", "--cgroup-fd", "3"])
            .args(if userns { &["--uid-map", "0:100000:65536", "--gid-map", "0:100000:65536"][..] } else { &[] })
            .args(["--", "sh", "-c"])
            .arg("echo $$; cat /proc/self/cgroup; echo end; exec sleep 30")
            .stdout(Stdio::piped())
            .stdin(Stdio::null());
        let mut p = Proc(cmd.spawn().unwrap());
        let rx = lines_of(&mut p.0);
        let pid: i32 = rx.recv_timeout(Duration::from_secs(10)).expect("pid line").parse().unwrap();
        let mut inside = String::new();
        loop {
            let l = rx.recv_timeout(Duration::from_secs(10)).expect("cgroup lines");
            if l == "end" {
                break;
            }
            inside.push_str(&l);
            inside.push('\n');
        }
        // Seen from inside: the cgroup namespace's root is NAME itself, in every hierarchy.
        let own = cgroup_lines(&inside);
        assert_eq!(own.len(), c.dirs.len(), "filtered={filtered}: {inside}");
        assert!(own.iter().all(|(_, path)| path == "/"), "filtered={filtered}: {inside}");
        // Seen from the host: the container is in NAME everywhere, the memory limit is its.
        let host = cgroup_lines(&std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap());
        for (ctrls, path) in &host {
            assert!(path.ends_with(&format!("/cbuild/{}", c.name)), "filtered={filtered}: {ctrls}:{path}");
        }
        let mem = dir_of(&i, &c.name, "memory").expect("a memory controller");
        assert!(procs_in(&mem).contains(&pid), "{pid} not in {}", mem.display());
        // The supervisor (the chain's PID) joined the v1 hierarchies but not the v2 group.
        let sup = cgroup_lines(&std::fs::read_to_string(format!("/proc/{}/cgroup", p.0.id())).unwrap());
        if let Some(base) = v2_base(&i) {
            let v2 = base.join("cbuild").join(&c.name);
            assert_eq!(procs_in(&v2), vec![pid], "filtered={filtered}: only the container in {}", v2.display());
            let (_, sup_v2) = sup.iter().find(|(ctrls, _)| ctrls.is_empty()).expect("a 0:: line");
            assert!(!sup_v2.ends_with(&c.name), "the supervisor moved into the v2 group: {sup_v2}");
        }
        drop(p);
    }
}

/// Bad `--cgroup-fd` values: exit 125, one line, no cgroup made.
#[test]
fn cgroup_fd_bad_input_fails_cleanly() {
    require_root();
    let sb = Sandbox::new();
    let i = info(&sb);
    let name = unique("cg");
    let o = run(cg(&sb).args(["exec", &name, "--cgroup-fd", "2", "--", "true"]));
    assert_tool_error(&o, TOOL, "cgroup-fd");
    assert_no_dirs(&i, &name);
    // Beyond the open-file limit: refused before anything is made or written (dup2 onto it failed only
    // after an existing NAME had been given its new limits).
    let o = run(cg(&sb).args(["exec", &name, "--memory", "64M", "--cgroup-fd", "99999999", "--", "true"]));
    assert_tool_error(&o, TOOL, "cgroup-fd: 99999999: beyond the open-file limit");
    assert_no_dirs(&i, &name);
    // fd 3 on a regular file: open, but neither a cgroup2 directory nor /dev/null.
    let o = run(Command::new("sh")
        .env("CBUILD_STATE", &sb.state)
        .arg("-c")
        .arg(format!("exec {} run --cgroup-fd 3 -- true 3</proc/self/status", bin("cbuild-ns").display())));
    assert_tool_error(&o, "cbuild-ns", "cgroup_fd: fd 3: not a cgroup2 directory");
    // Not open at all.
    let o = run(tool("cbuild-ns", &sb).args(["run", "--cgroup-fd", "9", "--", "true"]));
    assert_tool_error(&o, "cbuild-ns", "cgroup_fd: fd 9: not an open file descriptor");
    // /dev/null is what cbuild-cgroup hands over on a host without cgroup2: nothing to join, and checked
    // before cbuild-ns opens anything (a joined namespace's fd must not take its number).
    let o = run(Command::new("sh").env("CBUILD_STATE", &sb.state).arg("-c").arg(format!(
        "exec {} run --cgroup-fd 3 --join net=/proc/self/ns/net -- true 3</dev/null",
        bin("cbuild-ns").display()
    )));
    assert!(o.status.success(), "{}", stderr(&o));
    // Inside the range --preserve-fds passes on.
    let o = run(tool("cbuild-ns", &sb).args(["run", "--preserve-fds", "1", "--cgroup-fd", "3", "--", "true"]));
    assert_tool_error(&o, "cbuild-ns", "--preserve-fds");
}

/// `exec NAME` joining an existing NAME holds the lock shared, so a creator of NAME that fails part-way
/// (here: a limit the kernel rejects after the mkdirs) can never remove NAME under it: every joiner runs
/// its command, and NAME is never left in some hierarchies only.
#[test]
fn joiners_never_see_a_failing_creators_half_made_name() {
    require_root();
    let sb = Sandbox::new();
    let i = info(&sb);
    let cfg = bogus_unified_config(&sb, &i);
    for _ in 0..40 {
        let c = Cg::new(&i);
        let spawn = |args: &[&str]| {
            cg(&sb).args(args).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap()
        };
        let creator = cg(&sb)
            .args(["exec", &c.name, "--memory", "32M", "--oci"])
            .arg(&cfg)
            .args(["--", "true"])
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let joiners: Vec<Child> = (0..8).map(|_| spawn(&["exec", &c.name, "--", "true"])).collect();
        let o = creator.wait_with_output().unwrap();
        assert_eq!(o.status.code(), Some(125), "the creator fails: {}", String::from_utf8_lossy(&o.stderr));
        for j in joiners {
            let o = j.wait_with_output().unwrap();
            assert!(o.status.success(), "a joiner failed: {}", String::from_utf8_lossy(&o.stderr));
        }
        let present = c.dirs.iter().filter(|d| d.is_dir()).count();
        assert!(present == 0 || present == c.dirs.len(), "NAME half made: {present} of {}", c.dirs.len());
    }
}

/// `rm` keeps the shared `cbuild/` parent for the next container (as Docker keeps `docker/`); `prune`
/// removes it, but never while a NAME is under it.
#[test]
fn rm_keeps_the_shared_parent_and_prune_removes_it_only_when_unused() {
    require_root();
    let sb = Sandbox::new();
    let i = info(&sb);
    let c = Cg::new(&i);
    let o = run(cg(&sb).args(["create", &c.name]));
    assert!(o.status.success(), "create: {}", stderr(&o));
    let o = run(cg(&sb).arg("prune"));
    assert!(o.status.success(), "prune: {}", stderr(&o));
    for d in &c.dirs {
        assert!(d.is_dir(), "prune removed {} while {} was there", d.parent().unwrap().display(), c.name);
    }
    let o = run(cg(&sb).args(["rm", &c.name]));
    assert!(o.status.success(), "rm: {}", stderr(&o));
    assert_no_dirs(&i, &c.name);
    for d in &c.dirs {
        assert!(d.parent().unwrap().is_dir(), "rm removed the shared {}", d.parent().unwrap().display());
    }
    // Other tests run beside this one and may come and go under a parent: a parent left by prune must
    // be one in use, at least in one of a few tries.
    let mut unused = Vec::new();
    for _ in 0..20 {
        let o = run(cg(&sb).arg("prune"));
        assert!(o.status.success(), "prune: {}", stderr(&o));
        for line in stdout(&o).lines() {
            assert!(line.ends_with("/cbuild"), "prune printed {line}");
        }
        unused = c
            .dirs
            .iter()
            .map(|d| d.parent().unwrap())
            .filter(|p| std::fs::read_dir(p).is_ok_and(|mut rd| !rd.any(|e| e.is_ok_and(|e| e.path().is_dir()))))
            .map(|p| p.display().to_string())
            .collect();
        if unused.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(unused.is_empty(), "prune left unused parents: {unused:?}");
}

/// A tmpfs of the test's own for device nodes: /tmp may be mounted nodev (it is in the VM), which would
/// refuse the opens whatever the cgroup says. Unmounted when the guard drops.
fn node_dir(sb: &Sandbox) -> (PathBuf, impl Drop) {
    let dir = sb.path().join("dev");
    std::fs::create_dir_all(&dir).unwrap();
    let st = Command::new("mount").args(["-t", "tmpfs", "-o", "size=64k", "tmpfs"]).arg(&dir).status().unwrap();
    assert!(st.success(), "mount a tmpfs on {}", dir.display());
    let d = dir.clone();
    let guard = cbuild_tests::Defer(move || {
        let _ = nix::mount::umount2(&d, nix::mount::MntFlags::MNT_DETACH);
    });
    (dir, guard)
}

/// A character device node made by the test (outside any policy).
fn char_node(dir: &Path, name: &str, major: u64, minor: u64) -> String {
    let p = dir.join(name);
    let dev = nix::sys::stat::makedev(major, minor);
    nix::sys::stat::mknod(&p, nix::sys::stat::SFlag::S_IFCHR, nix::sys::stat::Mode::from_bits(0o666).unwrap(), dev)
        .unwrap();
    p.display().to_string()
}

/// A shell line that says which of two nodes made by the test opens: /dev/kmsg's (1:11, outside Docker's
/// list: `kmsg-opened`) and /dev/null's (1:3, inside it: `null-opened`). Opening is what the policy
/// decides: `exec 3<` opens without reading (kmsg reads need a big buffer), in a subshell since a failed
/// redirection of `exec` ends the shell. With the guard that unmounts the nodes' directory.
fn kmsg_null_probe(sb: &Sandbox) -> (String, impl Drop) {
    let (dir, umount) = node_dir(sb);
    let (kmsg, null) = (char_node(&dir, "kmsg", 1, 11), char_node(&dir, "null", 1, 3));
    let probe = format!("(exec 3<{kmsg}) 2>/dev/null && echo kmsg-opened; (exec 4>{null}) && echo null-opened");
    (probe, umount)
}

/// `--devices docker`: a node the process can make (here made beforehand) opens only if Docker's list
/// allows it; `--device-cgroup-rule` allows one more. v1: the devices controller; v2: a BPF program.
#[test]
fn device_policy_denies_nodes_outside_the_list() {
    require_root();
    let sb = Sandbox::new();
    let (probe, _umount) = kmsg_null_probe(&sb);
    let i = info(&sb);
    for (args, want) in [
        (vec![], "kmsg-opened\nnull-opened\n"),
        (vec!["--devices", "docker"], "null-opened\n"),
        (vec!["--device-cgroup-rule", "c 1:11 r"], "kmsg-opened\nnull-opened\n"),
    ] {
        let c = Cg::new(&i);
        let o = run(cg(&sb).args(["exec", &c.name]).args(&args).args(["--", "sh", "-c", &probe]));
        assert_eq!(stdout(&o), want, "{args:?}: {}", stderr(&o));
        if args.first() == Some(&"--devices") {
            // `set --devices all` lifts the policy (v2: the program is replaced, not ANDed with).
            let o = run(cg(&sb).args(["set", &c.name, "--devices", "all"]));
            assert!(o.status.success(), "set: {}", stderr(&o));
            let o = run(cg(&sb).args(["exec", &c.name, "--", "sh", "-c", &probe]));
            assert_eq!(stdout(&o), "kmsg-opened\nnull-opened\n", "after set --devices all: {}", stderr(&o));
            // And an `a` rule short of rwm stays short of it (v1 would read a bare `a` as allow-all).
            let o = run(cg(&sb).args(["set", &c.name, "--device-cgroup-rule", "a *:* m"]));
            assert!(o.status.success(), "set: {}", stderr(&o));
            let o = run(cg(&sb).args(["exec", &c.name, "--", "sh", "-c", &probe]));
            assert_eq!(stdout(&o), "null-opened\n", "after a *:* m: {}", stderr(&o));
        }
    }
    let bad = unique("cg");
    assert_tool_error(
        &run(cg(&sb).args(["exec", &bad, "--device-cgroup-rule", "c 1:3", "--", "true"])),
        "cbuild-cgroup",
        "--device-cgroup-rule c 1:3",
    );
    assert_no_dirs(&i, &bad);
}

/// An OCI `linux.resources.devices` list in Docker's shape (deny all, then allows) is the policy: only
/// /dev/null (1:3) here, so a /dev/zero node neither opens nor can be made inside; the null node opens
/// and a new one can be made. Bad entries: 125, one line naming the entry, nothing made, nothing run.
#[test]
fn oci_device_list_is_the_policy_and_bad_entries_fail_cleanly() {
    require_root();
    let sb = Sandbox::new();
    let (dir, _umount) = node_dir(&sb);
    let (zero, null) = (char_node(&dir, "zero", 1, 5), char_node(&dir, "null", 1, 3));
    let d = dir.display();
    let probe = format!(
        "(exec 3<{zero}) 2>/dev/null && echo zero-opened; (exec 4>{null}) && echo null-opened; \
         mknod {d}/z2 c 1 5 2>/dev/null && echo zero-made; mknod {d}/n2 c 1 3 && echo null-made"
    );
    let write = |body: &str| {
        let p = sb.path().join(format!("{}.json", unique("oci")));
        std::fs::write(&p, format!(r#"{{"linux":{{"resources":{{"devices":{body}}}}}}}"#)).unwrap();
        p
    };
    let only_null =
        write(r#"[{"allow":false,"access":"rwm"},{"allow":true,"type":"c","major":1,"minor":3,"access":"rwm"}]"#);
    let i = info(&sb);
    let c = Cg::new(&i);
    let o = run(cg(&sb).args(["exec", &c.name, "--oci"]).arg(&only_null).args(["--", "sh", "-c", &probe]));
    assert_eq!(stdout(&o), "null-opened\nnull-made\n", "{}", stderr(&o));
    // --device-cgroup-rule adds to the file's list (as Docker's flag adds to its default list).
    let _ = std::fs::remove_file(dir.join("n2"));
    let c2 = Cg::new(&i);
    let o = run(cg(&sb).args(["exec", &c2.name, "--oci"]).arg(&only_null).args([
        "--device-cgroup-rule",
        "c 1:5 r",
        "--",
        "sh",
        "-c",
        &probe,
    ]));
    assert_eq!(stdout(&o), "zero-opened\nnull-opened\nnull-made\n", "{}", stderr(&o));
    // An empty list leaves the policy alone: c2 keeps its own.
    let _ = std::fs::remove_file(dir.join("n2"));
    let o = run(cg(&sb).args(["exec", &c2.name, "--oci"]).arg(write("[]")).args(["--", "sh", "-c", &probe]));
    assert_eq!(stdout(&o), "zero-opened\nnull-opened\nnull-made\n", "{}", stderr(&o));

    let cases = [
        (r#"[{"allow":false},{"allow":true,"type":"x"}]"#, "devices[1]: type \"x\""),
        (r#"[{"allow":false},{"allow":true,"type":"c","access":"q"}]"#, "devices[1]: access \"q\""),
        (r#"[{"allow":false},{"allow":true,"type":"c","major":-2}]"#, "devices[1]: major -2 is negative"),
        (r#"[{"allow":false},{"allow":"yes","type":"c"}]"#, "devices[1]: allow \"yes\""),
        (r#"[{"allow":true,"type":"c","major":1,"minor":3}]"#, "devices[0]: allow c 1:3 rwm before any deny-all"),
        (
            r#"[{"allow":false},{"allow":true,"type":"c","major":1},{"allow":false,"type":"c","major":1,"minor":3}]"#,
            "devices[2]: deny c 1:3 rwm takes part",
        ),
        (r#"{"allow":false}"#, "not an OCI config"),
    ];
    for (body, needle) in cases {
        let cfg = write(body);
        for verb in ["create", "exec"] {
            let name = unique("cg");
            let marker = sb.path().join(format!("ran-{name}"));
            let mut cmd = cg(&sb);
            cmd.args([verb, &name, "--oci"]).arg(&cfg);
            if verb == "exec" {
                cmd.args(["--", "touch"]).arg(&marker);
            }
            let o = run(&mut cmd);
            assert_tool_error(&o, TOOL, needle);
            assert_eq!(stderr(&o).lines().count(), 1, "{}", stderr(&o));
            assert_no_dirs(&i, &name);
            assert!(!marker.exists(), "exec ran the command after failing: {body}");
        }
    }
}

/// Round after round on one existing NAME, `first` applying limits A (`--memory 64M --pids 7`) and a
/// `set` applying limits B (`--memory 96M --pids 9`) at once: the limits read back are all A's or all
/// B's, never one's memory limit with the other's pids limit.
fn limits_never_mix(rounds: u32, first: &[&str]) {
    require_root();
    let sb = Sandbox::new();
    let c = Cg::new(&info(&sb));
    let o = run(cg(&sb).args(["create", &c.name]));
    assert!(o.status.success(), "create: {}", stderr(&o));
    let (a, b) = (["--memory", "64M", "--pids", "7"], ["--memory", "96M", "--pids", "9"]);
    for round in 0..rounds {
        let mut ka = cg(&sb).arg(first[0]).arg(&c.name).args(a).args(&first[1..]).spawn().unwrap();
        let mut kb = cg(&sb).args(["set", &c.name]).args(b).spawn().unwrap();
        assert!(ka.wait().unwrap().success() && kb.wait().unwrap().success(), "round {round}: {first:?} or set failed");
        let s = stat(&sb, &c.name);
        let got = (s["memory"]["limit"].as_u64(), s["pids"]["limit"].as_u64());
        assert!(
            got == (Some(64 << 20), Some(7)) || got == (Some(96 << 20), Some(9)),
            "round {round}: memory and pids limits from {first:?} and set interleaved: {got:?}"
        );
    }
}

/// Two `set`s at once on one NAME apply one after the other (each holds NAME's own lock). Without the
/// lock, one round in 60 to 200 mixed them on the development VM.
#[test]
fn concurrent_sets_apply_one_after_the_other() {
    limits_never_mix(500, &["set"]);
}

/// The same race with `exec` on a NAME that exists, given limits: it applies them under NAME's own lock
/// as `set` does. Without it, about one round in 100 mixed them.
#[test]
fn exec_with_limits_and_set_apply_one_after_the_other() {
    limits_never_mix(300, &["exec", "--", "true"]);
}

/// On pure v2 a device policy is a BPF program. Where bpf(2) is refused (no CAP_BPF or CAP_SYS_ADMIN, as
/// inside a Docker container), `exec --devices docker` says so in the contract's one line, exits 125 and
/// leaves no cgroup behind: it never runs the command without the policy. (v1 and hybrid hosts write
/// `devices.*` files instead; there this test has nothing to refuse.)
#[test]
fn v2_device_policy_the_kernel_refuses_fails_cleanly() {
    require_root();
    let sb = Sandbox::new();
    let i = info(&sb);
    if i["layout"] != "unified" {
        return;
    }
    let c = Cg::new(&i);
    // cbuild-ns without namespaces: only the capabilities change, then cbuild-cgroup runs.
    let mut cmd = tool("cbuild-ns", &sb);
    cmd.args(["run", "--cap-drop", "SYS_ADMIN,BPF", "--"]).arg(bin(TOOL));
    cmd.args(["exec", &c.name, "--devices", "docker", "--", "sh", "-c", "echo RAN"]);
    let o = run(&mut cmd);
    assert_tool_error(&o, TOOL, "bpf-load");
    assert!(!stdout(&o).contains("RAN"), "the command ran without its device policy");
    assert_no_dirs(&i, &c.name);
    // The same with Docker's capabilities kept (SYS_ADMIN and BPF are not among them) and --rm.
    let mut cmd = tool("cbuild-ns", &sb);
    cmd.args(["run", "--cap-drop", "ALL", "--cap-add", "DOCKER_DEFAULT", "--"]).arg(bin(TOOL));
    cmd.args(["exec", &c.name, "--rm", "--devices", "docker", "--", "sh", "-c", "echo RAN"]);
    let o = run(&mut cmd);
    assert_tool_error(&o, TOOL, "bpf-load");
    assert!(!stdout(&o).contains("RAN"), "the command ran without its device policy");
    assert_no_dirs(&i, &c.name);
}

/// A `set` that changes the device list and then fails (the kernel refuses a later file: a `unified`
/// file it does not have) puts the previous list back: the node the failed set would have allowed
/// still does not open, whether the set widened the list or lifted the policy.
#[test]
fn failed_set_puts_the_device_policy_back() {
    require_root();
    let sb = Sandbox::new();
    let (probe, _umount) = kmsg_null_probe(&sb);
    let i = info(&sb);
    let bogus = bogus_unified_config(&sb, &i);
    let c = Cg::new(&i);
    let o = run(cg(&sb).args(["create", &c.name, "--devices", "docker"]));
    assert!(o.status.success(), "create: {}", stderr(&o));
    let list = dir_of(&i, &c.name, "devices").map(|d| d.join("devices.list"));
    let before = list.as_ref().map(|l| std::fs::read_to_string(l).unwrap());
    for args in [&["--device-cgroup-rule", "c 1:11 r"][..], &["--devices", "all"]] {
        let o = run(cg(&sb).args(["set", &c.name]).args(args).arg("--oci").arg(&bogus));
        assert_eq!(o.status.code(), Some(125), "{args:?}: {}", stderr(&o));
        let o = run(cg(&sb).args(["exec", &c.name, "--", "sh", "-c", &probe]));
        assert_eq!(stdout(&o), "null-opened\n", "after a failed set {args:?}: {}", stderr(&o));
        if let (Some(l), Some(b)) = (&list, &before) {
            assert_eq!(&std::fs::read_to_string(l).unwrap(), b, "v1 devices.list after a failed set {args:?}");
        }
    }
    // And a set that succeeds does change it (the check above is not vacuous).
    let o = run(cg(&sb).args(["set", &c.name, "--device-cgroup-rule", "c 1:11 r"]));
    assert!(o.status.success(), "set: {}", stderr(&o));
    let o = run(cg(&sb).args(["exec", &c.name, "--", "sh", "-c", &probe]));
    assert_eq!(stdout(&o), "kmsg-opened\nnull-opened\n", "{}", stderr(&o));
}

/// v1 has no atomic swap of a device list: `set` moves from one list to another write by write. Read
/// by the kernel all along (`devices.list`, sampled while `set` swaps between two lists, each allowing
/// something the other does not), the list never allows more than one of the two, and /dev/null's
/// entry (rw in both) never loses rw. v1 only: the v2 program is swapped by attach-then-detach.
#[test]
fn v1_device_list_swaps_never_allow_more_than_either_list() {
    require_root();
    let sb = Sandbox::new();
    let i = info(&sb);
    let c = Cg::new(&i);
    let Some(dir) = dir_of(&i, &c.name, "devices") else {
        eprintln!("no v1 devices controller here: the v2 program swap is covered by the unit tests");
        return;
    };
    let write = |name: &str, allows: &str| {
        let p = sb.path().join(name);
        std::fs::write(&p, format!(r#"{{"linux":{{"resources":{{"devices":[{{"allow":false}},{allows}]}}}}}}"#))
            .unwrap();
        p
    };
    let a = write(
        "a.json",
        r#"{"allow":true,"type":"c","major":1,"minor":3},{"allow":true,"type":"c","major":1,"minor":11,"access":"r"}"#,
    );
    let b = write(
        "b.json",
        r#"{"allow":true,"type":"c","major":1,"minor":3,"access":"rw"},{"allow":true,"type":"c","major":1,"minor":5}"#,
    );
    let lines = |text: &str| -> Vec<(String, String)> {
        text.lines()
            .map(|l| {
                let (key, acc) = l.rsplit_once(' ').unwrap();
                (key.to_string(), acc.to_string())
            })
            .collect()
    };
    let a_list = lines("c 1:3 rwm\nc 1:11 r");
    let b_list = lines("c 1:3 rw\nc 1:5 rwm");
    let within = |snap: &[(String, String)], list: &[(String, String)]| {
        snap.iter().all(|(k, acc)| list.iter().any(|(lk, la)| lk == k && acc.chars().all(|ch| la.contains(ch))))
    };
    let o = run(cg(&sb).args(["create", &c.name, "--oci"]).arg(&a));
    assert!(o.status.success(), "create: {}", stderr(&o));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let (stop, file) = (stop.clone(), dir.join("devices.list"));
        std::thread::spawn(move || {
            let mut snaps = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                snaps.push(std::fs::read_to_string(&file).unwrap());
            }
            snaps
        })
    };
    for n in 0..30 {
        let cfg = if n % 2 == 0 { &b } else { &a };
        let o = run(cg(&sb).args(["set", &c.name, "--oci"]).arg(cfg));
        assert!(o.status.success(), "set: {}", stderr(&o));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let snaps = sampler.join().unwrap();
    assert!(snaps.len() > 30, "only {} samples", snaps.len());
    let mut distinct = std::collections::BTreeSet::new();
    for text in &snaps {
        let snap = lines(text);
        assert!(within(&snap, &a_list) || within(&snap, &b_list), "the list allowed more than either: {text:?}");
        assert!(snap.iter().any(|(k, acc)| k == "c 1:3" && acc.contains('r') && acc.contains('w')), "{text:?}");
        distinct.insert(text.clone());
    }
    assert!(distinct.len() >= 2, "the sampler saw only {distinct:?}");
    let last = std::fs::read_to_string(dir.join("devices.list")).unwrap();
    // The last set (n = 29) was a.
    assert!(within(&lines(&last), &a_list) && within(&a_list, &lines(&last)), "ends as a: {last:?}");
}

#[test]
fn exec_rm_waits_outside_the_name_then_removes_it_and_what_was_left() {
    require_root();
    let sb = Sandbox::new();
    let i = info(&sb);
    let c = Cg::new(&i);
    // The command reports where it is, whether its parent (the waiting cbuild-cgroup) is inside NAME, and
    // leaves a process behind that --rm must kill.
    let script = "while read l; do echo \"self $l\"; done </proc/self/cgroup; \
                  while read l; do case $l in */cbuild/*) echo PARENT-INSIDE;; esac; done </proc/$PPID/cgroup; \
                  sleep 300 & echo \"left $!\"; exit 7";
    let o = run(cg(&sb).args(["exec", &c.name, "--rm", "--pids", "20", "--", "sh", "-c", script]));
    assert_eq!(o.status.code(), Some(7), "{}", stderr(&o));
    let out = stdout(&o);
    let inside = out.lines().filter(|l| l.starts_with("self ") && l.ends_with(&format!("/cbuild/{}", c.name)));
    assert!(inside.count() >= 1, "the command was not in NAME: {out}");
    assert!(!out.contains("PARENT-INSIDE"), "the waiting parent joined NAME: {out}");
    let left: i32 = out.lines().find_map(|l| l.strip_prefix("left ")).expect("left pid").parse().unwrap();
    // Removed in every hierarchy before the tool exited, and the leftover killed with it.
    assert_no_dirs(&i, &c.name);
    wait_for("the leftover sleep to be killed", Duration::from_secs(5), || {
        std::fs::read_to_string(format!("/proc/{left}/stat")).map_or(true, |s| s.contains(") Z "))
    });
}

#[test]
fn exec_rm_passes_signals_on_and_exits_with_the_commands_status() {
    require_root();
    let sb = Sandbox::new();
    let i = info(&sb);
    let c = Cg::new(&i);
    let mut p = Proc(
        cg(&sb)
            .args(["exec", &c.name, "--rm", "--", "sh", "-c"])
            .arg("trap 'exit 9' TERM; echo ready; while :; do sleep 0.1; done")
            .stdout(Stdio::piped())
            .stdin(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let rx = lines_of(&mut p.0);
    assert_eq!(rx.recv_timeout(Duration::from_secs(10)).expect("ready line"), "ready");
    // The tool is not the command here (it forked): the TERM it gets must reach the command.
    unsafe { libc::kill(p.0.id() as i32, libc::SIGTERM) };
    let st = p.0.wait().unwrap();
    assert_eq!(st.code(), Some(9), "the command did not get the TERM or its status was lost");
    assert_no_dirs(&i, &c.name);
    // Killed by a signal: 128+N, as a shell reports it.
    let o = run(cg(&sb).args(["exec", &c.name, "--rm", "--", "sh", "-c", "kill -KILL $$"]));
    assert_eq!(o.status.code(), Some(137), "{}", stderr(&o));
    assert_no_dirs(&i, &c.name);
}

#[test]
fn exec_rm_works_with_sigchld_ignored_and_hands_the_v2_group_over() {
    require_root();
    use std::os::unix::process::CommandExt;
    let sb = Sandbox::new();
    let i = info(&sb);
    let c = Cg::new(&i);
    // A caller that ignores SIGCHLD passes that on through exec; the kernel would then reap the child
    // itself and never report it. The command gets the caller's disposition back. (No shell in between:
    // a shell sets SIGCHLD up for itself.)
    let mut cmd = cg(&sb);
    cmd.args(["exec", &c.name, "--rm", "--", "cat", "/proc/self/status"]);
    unsafe {
        cmd.pre_exec(|| {
            libc::signal(libc::SIGCHLD, libc::SIG_IGN);
            Ok(())
        });
    }
    let o = run(&mut cmd);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    let ign = out.lines().find_map(|l| l.strip_prefix("SigIgn:")).expect("SigIgn line");
    let ign = u64::from_str_radix(ign.trim(), 16).unwrap();
    assert_ne!(ign & (1 << (libc::SIGCHLD - 1)), 0, "SIGCHLD not ignored for the command: {out}");
    assert_no_dirs(&i, &c.name);
    let o = run(cg(&sb).args(["exec", &c.name, "--rm", "--cgroup-fd", "3", "--", "ls", "-l", "/proc/self/fd/3"]));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    // fd 3 is NAME's cgroup2 directory, or /dev/null where the host has no v2 tree.
    let want = match v2_base(&i) {
        Some(_) => format!("/cbuild/{}", c.name),
        None => "/dev/null".to_string(),
    };
    assert!(out.lines().any(|l| l.contains("/proc/self/fd/3 -> ") && l.ends_with(&want)), "want fd 3 → …{want}: {out}");
    assert_no_dirs(&i, &c.name);
}

/// `exec --existing` (cbuild-exec's: `docker exec`) joins a NAME that exists, as it is, and refuses a
/// missing one without making it: a container that ended meanwhile leaves no new empty cgroup behind.
#[test]
fn exec_existing_joins_only_a_name_that_exists() {
    require_root();
    let sb = Sandbox::new();
    let i = info(&sb);
    let c = Cg::new(&i);
    let o = run(cg(&sb).args(["exec", &c.name, "--existing", "--", "true"]));
    assert_tool_error(&o, TOOL, "no such cgroup");
    assert_no_dirs(&i, &c.name);
    let o = run(cg(&sb).args(["create", &c.name, "--pids", "50"]));
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(cg(&sb).args(["exec", &c.name, "--existing", "--", "cat", "/proc/self/cgroup"]));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let want = format!("/cbuild/{}", c.name);
    let out = stdout(&o);
    assert!(
        out.lines().filter(|l| !l.contains("name=systemd")).all(|l| l.ends_with(&want) || l.ends_with(":/")),
        "{out}"
    );
    assert!(out.lines().any(|l| l.ends_with(&want)), "{out}");
    let o = run(cg(&sb).args(["exec", &c.name, "--existing", "--pids", "10", "--", "true"]));
    assert_tool_error(&o, TOOL, "--existing");
}

/// The waiting parent keeps none of the descriptors handed down for the command: the reader of a pipe
/// whose write end only the command holds sees EOF as soon as the command closes it, while the command,
/// and the parent with it, still run.
#[test]
fn exec_rm_parent_keeps_no_descriptor_meant_for_the_command() {
    require_root();
    use std::io::Read;
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let sb = Sandbox::new();
    let i = info(&sb);
    let c = Cg::new(&i);
    // Close-on-exec, so no other child of this test process inherits it; fd 5 is a copy without the flag.
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
    let raw = w.as_raw_fd();
    let mut cmd = cg(&sb);
    cmd.args(["exec", &c.name, "--rm", "--", "sh", "-c", "exec 5>&-; echo closed; sleep 60"]);
    cmd.stdout(Stdio::piped()).stdin(Stdio::null());
    unsafe {
        cmd.pre_exec(move || if libc::dup2(raw, 5) < 0 { Err(std::io::Error::last_os_error()) } else { Ok(()) });
    }
    let mut p = Proc(cmd.spawn().unwrap());
    drop(w);
    let rx = lines_of(&mut p.0);
    assert_eq!(rx.recv_timeout(Duration::from_secs(10)).expect("closed line"), "closed");
    let (tx, eof) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = tx.send(std::fs::File::from(r).read_to_end(&mut buf).map(|_| buf.len()));
    });
    let got = eof.recv_timeout(Duration::from_secs(10));
    assert!(matches!(got, Ok(Ok(0))), "no EOF on the pipe while the command runs: the parent kept fd 5 ({got:?})");
    assert!(p.0.try_wait().unwrap().is_none(), "the parent had already exited");
    unsafe { libc::kill(p.0.id() as i32, libc::SIGTERM) };
    assert_eq!(p.0.wait().unwrap().code(), Some(143), "the TERM passed on ends the command");
    assert_no_dirs(&i, &c.name);
}

#[test]
fn exec_rm_refuses_an_existing_name_and_leaves_it_alone() {
    require_root();
    let sb = Sandbox::new();
    let i = info(&sb);
    let c = Cg::new(&i);
    let o = run(cg(&sb).args(["create", &c.name, "--pids", "5"]));
    assert!(o.status.success(), "{}", stderr(&o));
    // Someone else's NAME: removing it afterwards would take their processes with it.
    let o = run(cg(&sb).args(["exec", &c.name, "--rm", "--", "true"]));
    assert_tool_error(&o, TOOL, "mkdir");
    assert!(stderr(&o).contains("exists"), "{}", stderr(&o));
    assert!(c.dirs.iter().all(|d| d.is_dir()), "the existing NAME was removed");
    // A command that is not there: 127, and nothing made.
    let other = Cg::new(&i);
    let o = run(cg(&sb).args(["exec", &other.name, "--rm", "--", "/no/such/command"]));
    assert_eq!(o.status.code(), Some(127), "{}", stderr(&o));
    assert_no_dirs(&i, &other.name);
}

/// The six signals that end a process by default and that a runtime forwards to a chain still setting
/// up: held while NAME is made.
const STOP_SIGNALS: [(libc::c_int, &str); 6] = [
    (libc::SIGINT, "SIGINT"),
    (libc::SIGTERM, "SIGTERM"),
    (libc::SIGHUP, "SIGHUP"),
    (libc::SIGQUIT, "SIGQUIT"),
    (libc::SIGUSR1, "SIGUSR1"),
    (libc::SIGUSR2, "SIGUSR2"),
];

/// `VERB NAME EXTRA LIMITS`, `exec`'s command touching a marker file: the command and the marker.
fn maker(sb: &Sandbox, verb: &str, name: &str, extra: &[&str], limits: &[&str]) -> (Command, PathBuf) {
    let marker = sb.path().join(format!("ran-{name}"));
    let mut cmd = cg(sb);
    cmd.args([verb, name]).args(extra).args(limits);
    if verb == "exec" {
        cmd.args(["--", "touch"]).arg(&marker);
    }
    (cmd, marker)
}

/// A NAME made with a pids limit of 50, and an `exec` into it that would set 7 and touch a marker.
fn exec_into_existing(sb: &Sandbox, i: &Value) -> (Cg, Command, PathBuf) {
    let c = Cg::new(i);
    let o = run(cg(sb).args(["create", &c.name, "--pids", "50"]));
    assert!(o.status.success(), "{}", stderr(&o));
    let (cmd, marker) = maker(sb, "exec", &c.name, &[], &["--pids", "7"]);
    (c, cmd, marker)
}

/// The verbs that make NAME, as `args` after NAME, and whether they run a command.
const MAKERS: [(&str, &[&str]); 4] =
    [("create", &[]), ("exec", &[]), ("exec", &["--cgroup-fd", "3"]), ("exec", &["--rm"])];

/// A stop signal that arrives while NAME is made (here: before, held pending by the caller's mask, which
/// the tool inherits) used to end the tool between steps, leaving `cbuild/NAME` in some hierarchies with
/// half its limits; now the steps finish, the signal is seen, and everything made is taken back. The
/// caller's mask, put back, still blocks it, so the tool exits 125 with its one error line.
#[test]
fn a_stop_signal_while_name_is_made_cancels_it_and_leaves_nothing() {
    require_root();
    let sb = Sandbox::new();
    let i = info(&sb);
    for (verb, extra) in MAKERS {
        for (sig, sig_name) in STOP_SIGNALS {
            let c = Cg::new(&i);
            let (mut cmd, marker) = maker(&sb, verb, &c.name, extra, &["--pids", "20", "--memory", "64M"]);
            let o = run(with_pending_signal(&mut cmd, sig, false));
            assert_tool_error(&o, TOOL, &format!("{verb}: {}: interrupted by {sig_name}", c.name));
            assert_eq!(stderr(&o).lines().count(), 1, "one line ({verb} {extra:?}): {}", stderr(&o));
            assert_no_dirs(&i, &c.name);
            assert!(!marker.exists(), "{verb} {extra:?} ran the command after {sig_name}");
        }
    }
    // Into a NAME that exists: the limits written are put back, and NAME (not this call's) stays.
    let (c, mut cmd, marker) = exec_into_existing(&sb, &i);
    let o = run(with_pending_signal(&mut cmd, libc::SIGUSR2, false));
    assert_tool_error(&o, TOOL, &format!("exec: {}: interrupted by SIGUSR2", c.name));
    assert!(c.dirs.iter().all(|d| d.is_dir()), "the existing NAME was removed");
    assert_eq!(stat(&sb, &c.name)["pids"]["limit"], 50, "the interrupted exec's limit was not put back");
    assert!(!marker.exists(), "exec ran the command after SIGUSR2");
}

/// `set` holds the stop signals too: one that came while it wrote puts the old limits back, as a failed
/// write does, instead of ending it with half the limits new.
#[test]
fn a_stop_signal_during_set_puts_the_old_limits_back() {
    require_root();
    let sb = Sandbox::new();
    let i = info(&sb);
    let c = Cg::new(&i);
    let o = run(cg(&sb).args(["create", &c.name, "--pids", "50", "--memory", "64M"]));
    assert!(o.status.success(), "{}", stderr(&o));
    let before = stat(&sb, &c.name);
    let mut cmd = cg(&sb);
    cmd.args(["set", &c.name, "--pids", "7", "--memory", "32M"]);
    let o = run(with_pending_signal(&mut cmd, libc::SIGUSR1, false));
    assert_tool_error(&o, TOOL, &format!("set: {}: interrupted by SIGUSR1", c.name));
    let after = stat(&sb, &c.name);
    assert_eq!(after["pids"]["limit"], 50, "pids limit not put back: {after}");
    assert_eq!(after["memory"]["limit"], before["memory"]["limit"], "memory limit not put back: {after}");
    let o = run(with_pending_signal(cg(&sb).args(["set", &c.name, "--pids", "7"]), libc::SIGINT, true));
    assert!(o.status.success(), "an ignored SIGINT cancels nothing: {}", stderr(&o));
    assert_eq!(stat(&sb, &c.name)["pids"]["limit"], 7);
}

/// `rm` holds the stop signals through its rmdirs: a TERM delivered between two of them (strace injects
/// it at the fourth) used to end it with NAME gone from some hierarchies and left in the others, still
/// listed. Now NAME goes from all of them, and the signal ends the process after that.
#[test]
fn a_stop_signal_during_rm_lands_after_name_is_gone_from_every_hierarchy() {
    require_root();
    let sb = Sandbox::new();
    let i = info(&sb);
    let c = Cg::new(&i);
    let o = run(cg(&sb).args(["create", &c.name, "--pids", "20", "--memory", "64M"]));
    assert!(o.status.success(), "{}", stderr(&o));
    // Only where NAME spans several hierarchies (v1, hybrid) is there a "between two rmdirs"; strace is
    // the host's (the VM's busybox guest has none).
    if c.dirs.len() < 4 || !Command::new("strace").arg("-V").output().is_ok_and(|o| o.status.success()) {
        eprintln!(
            "SKIP: NAME spans {} hierarchies, or no strace (the VM's guest): the hybrid host covers it",
            c.dirs.len()
        );
        return;
    }
    let o = run(Command::new("strace")
        .args(["-o", "/dev/null", "-e", "trace=rmdir", "-e", "inject=rmdir:signal=SIGTERM:when=4", "--"])
        .arg(bin("cbuild-cgroup"))
        .args(["rm", &c.name])
        .env("CBUILD_STATE", &sb.state)
        .env("CBUILD_DATA", &sb.data));
    // strace ends itself as its tracee ended: by the signal.
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(o.status.signal(), Some(libc::SIGTERM), "TERM still ends rm: {:?} {}", o.status, stderr(&o));
    assert_no_dirs(&i, &c.name);
}

/// A mount anywhere on the host whose path is not UTF-8 (a test's, a user's) made every verb fail: the
/// mount table was read as UTF-8 (`read: /proc/self/mountinfo: not UTF-8`). It is read as bytes now.
#[test]
fn a_mount_path_that_is_not_utf8_stops_nothing() {
    use std::os::unix::ffi::OsStringExt;
    require_root();
    let sb = Sandbox::new();
    let mut dir = sb.path().as_os_str().to_owned().into_vec();
    dir.extend_from_slice(b"/mnt-\xff");
    let dir = std::ffi::OsString::from_vec(dir);
    // In a mount namespace of its own: the host's table is not touched.
    let o = run(Command::new("unshare")
        .args([
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            r#"mkdir "$D" && mount -t tmpfs t "$D" && exec "$@""#,
            "sh",
        ])
        .arg(bin(TOOL))
        .args(["info", "--json"])
        .env("D", &dir)
        .env("CBUILD_STATE", &sb.state)
        .env("CBUILD_DATA", &sb.data));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("\"controllers\""), "{}", stdout(&o));
}

/// A stop signal the caller ignores (a background job of a non-interactive shell ignores SIGINT and
/// SIGQUIT, nohup SIGHUP) stays pending while blocked, but does not cancel the step; and the command runs
/// with exactly the caller's signal mask, none of the signals the tool held.
#[test]
fn an_ignored_stop_signal_does_not_cancel_and_the_command_gets_the_callers_mask() {
    require_root();
    let sb = Sandbox::new();
    let i = info(&sb);
    for (sig, _) in [STOP_SIGNALS[0], STOP_SIGNALS[3]] {
        for (verb, extra) in MAKERS {
            let c = Cg::new(&i);
            let mut cmd = cg(&sb);
            cmd.args([verb, &c.name]).args(extra).args(["--pids", "20"]);
            if verb == "exec" {
                cmd.args(["--", "cat", "/proc/self/status"]);
            }
            let o = run(with_pending_signal(&mut cmd, sig, true));
            assert_eq!(o.status.code(), Some(0), "{verb} {extra:?}: {}", stderr(&o));
            if verb == "exec" {
                let out = stdout(&o);
                let blk = out.lines().find_map(|l| l.strip_prefix("SigBlk:")).expect("SigBlk line");
                let blk = u64::from_str_radix(blk.trim(), 16).unwrap();
                assert_eq!(blk, 1 << (sig - 1), "{verb} {extra:?}: the command's mask is not the caller's: {out}");
            }
            if extra == ["--rm"] {
                assert_no_dirs(&i, &c.name);
            } else {
                assert!(c.dirs.iter().all(|d| d.is_dir()), "{verb} {extra:?}: NAME not made");
            }
        }
    }
}

/// Whether `pid` blocks `sig` (its /proc status `SigBlk`).
fn blocks(pid: u32, sig: libc::c_int) -> bool {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let blk = status.lines().find_map(|l| l.strip_prefix("SigBlk:")).unwrap_or("0");
    u64::from_str_radix(blk.trim(), 16).unwrap_or(0) & (1 << (sig - 1)) != 0
}

/// Run `cmd` while holding the flock `how` on `dir` (a lock it waits for while making NAME), send it
/// `sig` once it holds its stop signals, then let it go on.
fn interrupted_while_waiting(
    cmd: &mut Command,
    dir: &Path,
    how: libc::c_int,
    sig: libc::c_int,
) -> std::process::Output {
    let lock = std::fs::File::open(dir).unwrap();
    assert_eq!(unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock), how) }, 0, "flock {}", dir.display());
    let child = cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let pid = child.id();
    wait_for("the tool to hold its stop signals", Duration::from_secs(10), || blocks(pid, sig));
    unsafe { libc::kill(pid as i32, sig) };
    drop(lock);
    child.wait_with_output().unwrap()
}

/// A stop signal from outside (not blocked by the caller) that arrives while NAME is made: NAME is taken
/// back, the error line is printed, and then the signal ends the tool as it would have (128+N in a shell).
/// The tool is kept mid-create by a lock it waits for: the host-wide one (held shared here, for a moment)
/// for a new NAME, NAME's own for limits on an existing one.
#[test]
fn a_stop_signal_from_outside_ends_the_tool_after_its_error_line() {
    use std::os::unix::process::ExitStatusExt;
    require_root();
    let sb = Sandbox::new();
    let i = info(&sb);
    let host_lock = PathBuf::from(i["hierarchies"][0]["base"].as_str().unwrap());
    let cases: [(&str, &[&str], libc::c_int, &str); 4] = [
        ("create", &[], libc::SIGTERM, "SIGTERM"),
        ("exec", &[], libc::SIGUSR1, "SIGUSR1"),
        ("exec", &["--cgroup-fd", "3"], libc::SIGHUP, "SIGHUP"),
        ("exec", &["--rm"], libc::SIGUSR2, "SIGUSR2"),
    ];
    for (verb, extra, sig, sig_name) in cases {
        let c = Cg::new(&i);
        let (mut cmd, marker) = maker(&sb, verb, &c.name, extra, &["--pids", "20"]);
        let o = interrupted_while_waiting(&mut cmd, &host_lock, libc::LOCK_SH, sig);
        assert_eq!(o.status.signal(), Some(sig), "{verb} {extra:?}: {:?}; stderr: {}", o.status, stderr(&o));
        let want = format!("cbuild-cgroup: {verb}: {}: interrupted by {sig_name}\n", c.name);
        assert_eq!(stderr(&o), want, "{verb} {extra:?}");
        assert_no_dirs(&i, &c.name);
        assert!(!marker.exists(), "{verb} {extra:?} ran the command after {sig_name}");
    }
    // Limits on an existing NAME are applied under NAME's own lock.
    let (c, mut cmd, marker) = exec_into_existing(&sb, &i);
    let o = interrupted_while_waiting(&mut cmd, &c.dirs[0], libc::LOCK_EX, libc::SIGINT);
    assert_eq!(o.status.signal(), Some(libc::SIGINT), "{:?}; stderr: {}", o.status, stderr(&o));
    assert_eq!(stderr(&o), format!("cbuild-cgroup: exec: {}: interrupted by SIGINT\n", c.name));
    assert!(c.dirs.iter().all(|d| d.is_dir()), "the existing NAME was removed");
    assert_eq!(stat(&sb, &c.name)["pids"]["limit"], 50, "the interrupted exec's limit was not put back");
    assert!(!marker.exists(), "exec ran the command after SIGINT");
}

/// Whole-disk block devices the kernel has, loop devices first (see [`a_block_device`]).
fn block_devices() -> Vec<String> {
    let mut devs: Vec<String> = std::fs::read_dir("/sys/dev/block")
        .map(|rd| {
            rd.flatten()
                .filter(|e| !e.path().join("partition").exists())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    devs.sort_by_key(|d| (!d.starts_with("7:"), d.clone()));
    devs
}

/// A device's throttles, one `key=value` per throttle, as the kernel lists them: v2 `io.max` (a device
/// without a line has every key at max) or v1's four `blkio.throttle.*_device` files (no line = 0).
fn throttles(i: &Value, name: &str, dev: &str) -> Vec<String> {
    if let Some(d) = dir_of(i, name, "io") {
        let max = std::fs::read_to_string(d.join("io.max")).unwrap();
        let line = max.lines().find(|l| l.split_whitespace().next() == Some(dev)).unwrap_or("");
        let mut kv: Vec<String> = line.split_whitespace().skip(1).map(String::from).collect();
        if kv.is_empty() {
            kv = ["rbps", "wbps", "riops", "wiops"].iter().map(|k| format!("{k}=max")).collect();
        }
        kv
    } else {
        let d = dir_of(i, name, "blkio").expect("an io or blkio controller");
        ["read_bps", "write_bps", "read_iops", "write_iops"]
            .iter()
            .map(|f| {
                let text = std::fs::read_to_string(d.join(format!("blkio.throttle.{f}_device"))).unwrap();
                let v = text.lines().find_map(|l| l.strip_prefix(&format!("{dev} "))).unwrap_or("0");
                format!("{f}={v}")
            })
            .collect()
    }
}

/// A `set` that changes io throttles and then fails (a `unified` file the kernel does not have) puts
/// each device's throttles back as they were: a device that had none has none again, one that had a
/// value has that value, whether the file held no line before or another device's line.
#[test]
fn failed_set_puts_io_throttles_back_per_device() {
    require_root();
    let sb = Sandbox::new();
    let i = info(&sb);
    let devs = block_devices();
    let [a, b, ..] = devs.as_slice() else {
        eprintln!("failed_set_puts_io_throttles_back_per_device: fewer than two block devices; nothing to throttle");
        return;
    };
    let bogus = bogus_unified_config(&sb, &i);
    let c = Cg::new(&i);
    assert!(run(cg(&sb).args(["create", &c.name])).status.success());
    let none = (throttles(&i, &c.name, a), throttles(&i, &c.name, b));
    // Into empty files: every new line must go again.
    let o = run(cg(&sb).args(["set", &c.name, "--io-max", &format!("{a}:rbps=1m,wiops=77"), "--oci"]).arg(&bogus));
    assert_eq!(o.status.code(), Some(125), "{}", stderr(&o));
    assert_eq!((throttles(&i, &c.name, a), throttles(&i, &c.name, b)), none, "after a failed set into empty files");
    // Over a line of A's own and beside it: A gets its old values back, B none.
    let o = run(cg(&sb).args(["set", &c.name, "--io-max", &format!("{a}:rbps=2m,riops=50")]));
    assert!(o.status.success(), "set: {}", stderr(&o));
    let before = (throttles(&i, &c.name, a), throttles(&i, &c.name, b));
    assert_ne!(before.0, none.0, "the successful set changed nothing");
    let o = run(cg(&sb)
        .args(["set", &c.name, "--io-max", &format!("{a}:rbps=1m,wiops=77")])
        .args(["--io-max", &format!("{b}:wbps=3m,riops=9"), "--oci"])
        .arg(&bogus));
    assert_eq!(o.status.code(), Some(125), "{}", stderr(&o));
    assert_eq!((throttles(&i, &c.name, a), throttles(&i, &c.name, b)), before, "after a failed set over lines");
}

/// `rm` racing a join (`exec --existing`, `add`) leaves NAME whole or gone, never removed from some
/// hierarchies and not others: the join holds the lock `rm` takes exclusively, so either it lands first
/// and `rm` refuses the live process, or `rm` removes NAME everywhere first and the join finds none.
#[test]
fn rm_racing_a_join_leaves_the_name_whole_or_gone() {
    require_root();
    use std::io::Read;
    let sb = Sandbox::new();
    let i = info(&sb);
    let (mut refused, mut removed) = (0, 0);
    for round in 0..40 {
        let c = Cg::new(&i);
        assert!(run(cg(&sb).args(["create", &c.name])).status.success());
        let sleeper = Proc(Command::new("sleep").arg("30").spawn().unwrap());
        let mut join = cg(&sb);
        if round % 2 == 0 {
            join.args(["exec", &c.name, "--existing", "--", "sleep", "30"]);
        } else {
            join.args(["add", &c.name, &sleeper.0.id().to_string()]);
        }
        let mut joiner = Proc(join.stdin(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap());
        let o = run(cg(&sb).args(["rm", &c.name]));
        let left: Vec<&PathBuf> = c.dirs.iter().filter(|d| d.exists()).collect();
        if o.status.success() {
            removed += 1;
            assert!(left.is_empty(), "round {round}: rm succeeded and left {left:?}");
            wait_for("the join to fail", Duration::from_secs(10), || joiner.0.try_wait().unwrap().is_some());
            let mut err = String::new();
            joiner.0.stderr.take().unwrap().read_to_string(&mut err).unwrap();
            assert!(err.contains("no such cgroup"), "round {round}: the join after rm: {err}");
        } else {
            refused += 1;
            assert_tool_error(&o, TOOL, "live process");
            assert_eq!(left.len(), c.dirs.len(), "round {round}: a refused rm removed some of {:?}", c.dirs);
        }
    }
    eprintln!("rm refused {refused} times, removed first {removed} times");
}

/// `rm --force` racing a join removes NAME everywhere. Its rmdirs run after its kill, children first,
/// and a join landing meanwhile would keep NAME's directory busy after others (its children, other
/// hierarchies) were gone. Child cgroups in the first hierarchy stretch that moment to milliseconds, and
/// the join is started as soon as the first of them is gone.
#[test]
fn rm_force_racing_a_join_removes_the_name_everywhere() {
    require_root();
    use std::io::Read;
    use std::os::unix::fs::MetadataExt;
    let sb = Sandbox::new();
    let i = info(&sb);
    const CHILDREN: u64 = 2000;
    for round in 0..3 {
        let c = Cg::new(&i);
        assert!(run(cg(&sb).args(["create", &c.name])).status.success());
        for n in 0..CHILDREN {
            std::fs::create_dir(c.dirs[0].join(format!("child{n}"))).unwrap();
        }
        // A cgroup directory's link count is 2 + its subdirectories.
        let subdirs = || std::fs::metadata(&c.dirs[0]).map_or(0, |m| m.nlink().saturating_sub(2));
        assert_eq!(subdirs(), CHILDREN);
        let rm = cg(&sb).args(["rm", "--force", &c.name]).stdin(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
        wait_for("rm to start its rmdirs", Duration::from_secs(10), || subdirs() < CHILDREN);
        let mut join = cg(&sb);
        join.args(["exec", &c.name, "--existing", "--", "sleep", "30"]);
        let mut joiner = Proc(join.stdin(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap());
        let o = rm.wait_with_output().unwrap();
        assert!(o.status.success(), "round {round}: rm --force: {}", stderr(&o));
        let left: Vec<&PathBuf> = c.dirs.iter().filter(|d| d.exists()).collect();
        assert!(left.is_empty(), "round {round}: rm --force left {left:?}");
        wait_for("the join to fail", Duration::from_secs(10), || joiner.0.try_wait().unwrap().is_some());
        let mut err = String::new();
        joiner.0.stderr.take().unwrap().read_to_string(&mut err).unwrap();
        assert!(err.contains("no such cgroup"), "round {round}: the join during rm --force: {err}");
    }
}

/// As Docker: a memory limit or reservation below 6 MiB is refused (the kernel would round a tiny v1
/// limit down to 0 and OOM-kill everything), from a flag or an OCI config, with nothing made or changed.
#[test]
fn memory_below_6mb_is_refused_as_docker_does() {
    require_root();
    let sb = Sandbox::new();
    let i = info(&sb);
    let limit_json = sb.path().join("limit.json");
    std::fs::write(&limit_json, r#"{"linux":{"resources":{"memory":{"limit":1}}}}"#).unwrap();
    let reservation_json = sb.path().join("reservation.json");
    std::fs::write(&reservation_json, r#"{"linux":{"resources":{"memory":{"limit":67108864,"reservation":4096}}}}"#)
        .unwrap();
    let (limit_json, reservation_json) = (limit_json.to_str().unwrap(), reservation_json.to_str().unwrap());
    let cases: &[(&[&str], &str)] = &[
        (&["--memory", "1"], "--memory 1: Minimum memory limit allowed is 6MB"),
        (&["--memory", "1.5"], "Minimum memory limit allowed is 6MB"),
        (&["--memory", "4k"], "Minimum memory limit allowed is 6MB"),
        (&["--memory", "6143k"], "Minimum memory limit allowed is 6MB"),
        (&["--memory", "64M", "--memory-reservation", "1m"], "Minimum memory reservation allowed is 6MB"),
        (&["--oci", limit_json], "linux.resources.memory.limit: Minimum memory limit allowed is 6MB"),
        (&["--oci", reservation_json], "memory.reservation: Minimum memory reservation allowed is 6MB"),
    ];
    let c = Cg::new(&i);
    assert!(run(cg(&sb).args(["create", &c.name, "--memory", "64M"])).status.success());
    for (args, needle) in cases {
        for verb in ["create", "exec", "set"] {
            let name = if verb == "set" { c.name.clone() } else { unique("cg") };
            let _g = (verb != "set").then(|| Cg { name: name.clone(), dirs: dirs(&i, &name) });
            let marker = sb.path().join(format!("ran-{name}"));
            let mut cmd = cg(&sb);
            cmd.arg(verb).arg(&name).args(*args);
            if verb == "exec" {
                cmd.args(["--", "touch"]).arg(&marker);
            }
            let o = run(&mut cmd);
            assert_tool_error(&o, TOOL, needle);
            assert_eq!(stderr(&o).lines().count(), 1, "{verb} {args:?}: {}", stderr(&o));
            assert!(!marker.exists(), "exec ran the command after failing: {args:?}");
            if verb == "set" {
                assert_eq!(stat(&sb, &name)["memory"]["limit"], 64 << 20, "set {args:?} changed the limit");
            } else {
                assert_no_dirs(&i, &name);
            }
        }
    }
    // 6 MiB itself is Docker's minimum, allowed.
    let o = run(cg(&sb).args(["set", &c.name, "--memory", "6m"]));
    assert!(o.status.success(), "set --memory 6m: {}", stderr(&o));
    assert_eq!(stat(&sb, &c.name)["memory"]["limit"], 6 << 20);
}

/// As Docker: `--cpus` outside 0.01 up to the CPU count is refused, never raised to the kernel's 1 ms
/// minimum quota (`--cpus 0.001` would get ten times what was asked).
#[test]
fn cpus_outside_a_hundredth_to_the_cpu_count_are_refused() {
    require_root();
    let sb = Sandbox::new();
    let i = info(&sb);
    let online = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    let range = format!("range of CPUs is from 0.01 to {online}");
    let over = format!("{online}.5");
    for cpus in ["0.001", "0.0099", "0", "-1", over.as_str()] {
        for verb in ["create", "exec"] {
            let name = unique("cg");
            let _g = Cg { name: name.clone(), dirs: dirs(&i, &name) };
            let marker = sb.path().join(format!("ran-{name}"));
            let mut cmd = cg(&sb);
            cmd.args([verb, &name, "--cpus", cpus]);
            if verb == "exec" {
                cmd.args(["--", "touch"]).arg(&marker);
            }
            let o = run(&mut cmd);
            assert_tool_error(&o, TOOL, &range);
            assert_eq!(stderr(&o).lines().count(), 1, "{verb} --cpus {cpus}: {}", stderr(&o));
            assert!(!marker.exists(), "exec --cpus {cpus} ran the command");
            assert_no_dirs(&i, &name);
        }
    }
    let c = Cg::new(&i);
    let o = run(cg(&sb).args(["create", &c.name, "--cpus", "0.01"]));
    assert!(o.status.success(), "--cpus 0.01: {}", stderr(&o));
    assert_eq!(stat(&sb, &c.name)["cpu"]["quota_usec"], 1000);
    let o = run(cg(&sb).args(["set", &c.name, "--cpus", "0.001"]));
    assert_tool_error(&o, TOOL, &range);
    assert_eq!(stat(&sb, &c.name)["cpu"]["quota_usec"], 1000, "a refused set changed the quota");
}

/// An OCI config with `resources` as its `linux.resources`, in the sandbox.
fn oci_resources(sb: &Sandbox, resources: &str) -> PathBuf {
    let p = sb.path().join(format!("{}.json", unique("oci")));
    std::fs::write(&p, format!(r#"{{"linux":{{"resources":{resources}}}}}"#)).unwrap();
    p
}

/// `create NAME --oci` with `resources` must be refused: 125, one line (a hint may follow) containing
/// `needle`, and no directory anywhere.
fn assert_oci_refused(sb: &Sandbox, i: &Value, resources: &str, needle: &str) {
    let name = unique("cg");
    let _g = Cg { name: name.clone(), dirs: dirs(i, &name) };
    let o = run(cg(sb).args(["create", &name, "--oci"]).arg(oci_resources(sb, resources)));
    assert_tool_error(&o, TOOL, needle);
    assert_eq!(stderr(&o).lines().filter(|l| !l.starts_with("hint: ")).count(), 1, "{resources}: {}", stderr(&o));
    assert_no_dirs(i, &name);
}

/// Refused with `needle` named (one line, exit 125) and nothing made: flags this time.
fn assert_flags_refused(sb: &Sandbox, i: &Value, flags: &[&str], needle: &str) {
    let name = unique("cg");
    let _g = Cg { name: name.clone(), dirs: dirs(i, &name) };
    let o = run(cg(sb).args(["create", &name]).args(flags));
    assert_tool_error(&o, TOOL, needle);
    assert_eq!(stderr(&o).lines().filter(|l| !l.starts_with("hint: ")).count(), 1, "{flags:?}: {}", stderr(&o));
    assert_no_dirs(i, &name);
}

/// Docker's v1-only flags: `--memory-swappiness` (-1: the host's), `--oom-kill-disable`, `--cpu-rt-period`
/// (`--cpu-rt-runtime` goes the OCI field's way, tested above): applied on v1, refused on v2 naming the
/// flag, not the OCI field they share a meaning with.
#[test]
fn docker_v1_only_flags_are_applied_or_refused_by_name() {
    require_root();
    let sb = Sandbox::new();
    let i = info(&sb);
    match hierarchy_of(&i, "memory") {
        Some(h) if h["version"] == 1 => {
            let c = Cg::new(&i);
            let o = run(cg(&sb).args(["create", &c.name, "--memory-swappiness", "30", "--oom-kill-disable"]));
            assert!(o.status.success(), "{}", stderr(&o));
            let d = dir_of(&i, &c.name, "memory").unwrap();
            assert_eq!(read(&d.join("memory.swappiness")).trim(), "30");
            assert!(read(&d.join("memory.oom_control")).lines().any(|l| l == "oom_kill_disable 1"));
            let c = Cg::new(&i);
            let o = run(cg(&sb).args(["create", &c.name, "--memory-swappiness=-1"]));
            assert!(o.status.success(), "{}", stderr(&o));
            let parent = Path::new(h["base"].as_str().unwrap()).join("cbuild/memory.swappiness");
            let d = dir_of(&i, &c.name, "memory").unwrap();
            assert_eq!(read(&d.join("memory.swappiness")), read(&parent), "-1 leaves the inherited value");
        }
        _ => {
            assert_flags_refused(&sb, &i, &["--memory-swappiness", "30"], "--memory-swappiness: cgroup v2 has no");
            assert_flags_refused(&sb, &i, &["--oom-kill-disable"], "--oom-kill-disable: cgroup v2 has no");
        }
    }
    assert_flags_refused(&sb, &i, &["--memory-swappiness", "101"], "--memory-swappiness 101");
    assert_flags_refused(&sb, &i, &["--cpu-rt-runtime", "-2"], "--cpu-rt-runtime -2");
    let cpu = hierarchy_of(&i, "cpu");
    match cpu.filter(|h| h["version"] == 1 && Path::new(h["base"].as_str().unwrap()).join("cpu.rt_runtime_us").exists())
    {
        Some(_) => {
            let c = Cg::new(&i);
            let o = run(cg(&sb).args(["create", &c.name, "--cpu-rt-period", "500000"]));
            assert!(o.status.success(), "{}", stderr(&o));
            assert_eq!(read(&dir_of(&i, &c.name, "cpu").unwrap().join("cpu.rt_period_us")).trim(), "500000");
        }
        None => assert_flags_refused(&sb, &i, &["--cpu-rt-period", "500000"], "--cpu-rt-period"),
    }
}

/// The hierarchy (from `info`) holding `controller`.
fn hierarchy_of<'a>(i: &'a Value, controller: &str) -> Option<&'a Value> {
    i["hierarchies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["controllers"].as_array().unwrap().iter().any(|c| c == controller))
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The huge page sizes of this kernel as its hugetlb files name them (`2MB`, `1GB`), smallest first.
fn huge_page_sizes() -> Vec<String> {
    let mut kb: Vec<u64> = std::fs::read_dir("/sys/kernel/mm/hugepages")
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().to_str()?.strip_prefix("hugepages-")?.strip_suffix("kB")?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    kb.sort_unstable();
    kb.iter()
        .map(|&k| match k {
            k if k >= 1 << 20 => format!("{}GB", k >> 20),
            k if k >= 1 << 10 => format!("{}MB", k >> 10),
            k => format!("{k}KB"),
        })
        .collect()
}

/// The OCI fields runc applies beyond the flags' (huge pages, swappiness, the OOM killer switch, RT
/// time, per-device io weights, rdma) are applied where the host has a file for them, and refused with
/// the field named, nothing made, where it has none: never dropped silently.
#[test]
fn oci_fields_runc_applies_are_applied_or_refused() {
    require_root();
    let sb = Sandbox::new();
    let i = info(&sb);

    // hugepageLimits: hugetlb.<size>.max (v2) or .limit_in_bytes (v1), and the reservation limit too.
    let sizes = huge_page_sizes();
    let hugetlb = hierarchy_of(&i, "hugetlb");
    match (sizes.first(), hugetlb) {
        (Some(size), Some(h)) => {
            let c = Cg::new(&i);
            let page: u64 = size[..size.len() - 2].parse::<u64>().unwrap()
                << match &size[size.len() - 2..] {
                    "KB" => 10,
                    "MB" => 20,
                    _ => 30,
                };
            let cfg =
                oci_resources(&sb, &format!(r#"{{"hugepageLimits":[{{"pageSize":"{size}","limit":{}}}]}}"#, 3 * page));
            let o = run(cg(&sb).args(["create", &c.name, "--oci"]).arg(&cfg));
            assert!(o.status.success(), "hugepageLimits: {}", stderr(&o));
            let d = dir_of(&i, &c.name, "hugetlb").unwrap();
            let suffix = if h["version"] == 2 { "max" } else { "limit_in_bytes" };
            assert_eq!(read(&d.join(format!("hugetlb.{size}.{suffix}"))).trim(), (3 * page).to_string());
            let rsvd = d.join(format!("hugetlb.{size}.rsvd.{suffix}"));
            if rsvd.exists() {
                assert_eq!(read(&rsvd).trim(), (3 * page).to_string());
            }
            assert_oci_refused(&sb, &i, r#"{"hugepageLimits":[{"pageSize":"3MB","limit":1}]}"#, "hugepageLimits 3MB");
        }
        _ => assert_oci_refused(
            &sb,
            &i,
            r#"{"hugepageLimits":[{"pageSize":"2MB","limit":4194304}]}"#,
            "linux.resources.hugepageLimits",
        ),
    }
    assert_oci_refused(&sb, &i, r#"{"hugepageLimits":[{"pageSize":"../2MB","limit":1}]}"#, "pageSize");

    // memory.swappiness and memory.disableOOMKiller: v1 only.
    match hierarchy_of(&i, "memory") {
        Some(h) if h["version"] == 1 => {
            let c = Cg::new(&i);
            let cfg = oci_resources(&sb, r#"{"memory":{"swappiness":30,"disableOOMKiller":true}}"#);
            let o = run(cg(&sb).args(["create", &c.name, "--oci"]).arg(&cfg));
            assert!(o.status.success(), "swappiness: {}", stderr(&o));
            let d = dir_of(&i, &c.name, "memory").unwrap();
            assert_eq!(read(&d.join("memory.swappiness")).trim(), "30");
            assert!(read(&d.join("memory.oom_control")).lines().any(|l| l == "oom_kill_disable 1"));
        }
        _ => {
            assert_oci_refused(&sb, &i, r#"{"memory":{"swappiness":30}}"#, "linux.resources.memory.swappiness");
            assert_oci_refused(&sb, &i, r#"{"memory":{"disableOOMKiller":true}}"#, "memory.disableOOMKiller");
        }
    }
    assert_oci_refused(&sb, &i, r#"{"memory":{"swappiness":101}}"#, "swappiness");

    // cpu.realtimeRuntime / realtimePeriod: v1 with RT group scheduling only.
    let cpu = hierarchy_of(&i, "cpu");
    let rt =
        cpu.filter(|h| h["version"] == 1 && Path::new(h["base"].as_str().unwrap()).join("cpu.rt_runtime_us").exists());
    match rt {
        Some(h) => {
            let c = Cg::new(&i);
            let cfg = oci_resources(&sb, r#"{"cpu":{"realtimePeriod":500000}}"#);
            let o = run(cg(&sb).args(["create", &c.name, "--oci"]).arg(&cfg));
            assert!(o.status.success(), "realtimePeriod: {}", stderr(&o));
            let d = dir_of(&i, &c.name, "cpu").unwrap();
            assert_eq!(read(&d.join("cpu.rt_period_us")).trim(), "500000");
            // RT time comes out of the parent's, and `cbuild/` has none unless an administrator gave it.
            let parent = Path::new(h["base"].as_str().unwrap()).join("cbuild/cpu.rt_runtime_us");
            let budget = read(&parent).trim().to_string();
            let runtime = r#"{"cpu":{"realtimeRuntime":10000,"realtimePeriod":1000000}}"#;
            if budget == "0" {
                assert_oci_refused(&sb, &i, runtime, "linux.resources.cpu.realtimeRuntime");
                // Given a budget, NAME gets its part. Put back once NAME is gone, pass or fail: a parent's
                // budget cannot shrink below what its children hold, and a removed child lets go of its
                // part a moment after its rmdir (the kernel frees the group asynchronously).
                let _restore = cbuild_tests::Defer(|| {
                    // NAME's own part first: given back at once, not when the kernel frees the group.
                    let _ = std::fs::write(d.join("cpu.rt_runtime_us"), "0");
                    let _ = Command::new(bin(TOOL)).args(["rm", "--force", &c.name]).stderr(Stdio::null()).status();
                    for _ in 0..250 {
                        if !parent.exists() || std::fs::write(&parent, "0").is_ok() {
                            return;
                        }
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    // Left at 20000, every later run would take the "not touched" branch and test nothing.
                    let msg = format!("could not give {} its budget of 0 back", parent.display());
                    if std::thread::panicking() {
                        eprintln!("{msg}");
                    } else {
                        panic!("{msg}");
                    }
                });
                std::fs::write(&parent, "20000").unwrap();
                let o = run(cg(&sb).args(["set", &c.name, "--oci"]).arg(oci_resources(&sb, runtime)));
                assert!(o.status.success(), "realtimeRuntime within cbuild/'s budget: {}", stderr(&o));
                assert_eq!(read(&d.join("cpu.rt_runtime_us")).trim(), "10000");
                assert_eq!(read(&d.join("cpu.rt_period_us")).trim(), "1000000");
            } else {
                eprintln!(
                    "oci_fields_runc_applies_are_applied_or_refused: cbuild/ has an RT budget ({budget}); not touched"
                );
            }
        }
        None => {
            assert_oci_refused(&sb, &i, r#"{"cpu":{"realtimePeriod":500000}}"#, "linux.resources.cpu.realtimePeriod");
            assert_oci_refused(&sb, &i, r#"{"cpu":{"realtimeRuntime":1000}}"#, "linux.resources.cpu.realtimeRuntime");
        }
    }

    // blockIO.weightDevice: BFQ's per-device weight (or iocost's), which the kernel takes only for a
    // device that BFQ schedules. An unused loop device is switched to bfq for the test where it can be.
    let loop_dev = block_devices().into_iter().rev().find(|d| {
        let sys = Path::new("/sys/dev/block").join(d);
        d.starts_with("7:")
            && std::fs::read_to_string(sys.join("size")).is_ok_and(|s| s.trim() == "0")
            && std::fs::read_to_string(sys.join("queue/scheduler"))
                .is_ok_and(|s| s.split_whitespace().any(|x| x == "bfq"))
    });
    let sched_of = |d: &str| Path::new("/sys/dev/block").join(d).join("queue/scheduler");
    let was = loop_dev.as_ref().and_then(|d| {
        let s = read(&sched_of(d));
        s.split_whitespace().find(|x| x.starts_with('[')).map(|x| x.trim_matches(['[', ']']).to_string())
    });
    let _sched = cbuild_tests::Defer(|| {
        if let (Some(d), Some(was)) = (&loop_dev, &was) {
            let _ = std::fs::write(sched_of(d), was);
        }
    });
    let bfq = loop_dev.as_ref().is_some_and(|d| std::fs::write(sched_of(d), "bfq").is_ok());
    let io = hierarchy_of(&i, "io").or_else(|| hierarchy_of(&i, "blkio")).is_some();
    if !io {
        let body = r#"{"blockIO":{"weightDevice":[{"major":1,"minor":3,"weight":300}]}}"#;
        assert_oci_refused(&sb, &i, body, "linux.resources.blockIO.weightDevice");
    } else if let Some(dev) = loop_dev.clone().or_else(a_block_device) {
        let (major, minor) = dev.split_once(':').unwrap();
        let c = Cg::new(&i);
        let body = format!(r#"{{"blockIO":{{"weightDevice":[{{"major":{major},"minor":{minor},"weight":300}}]}}}}"#);
        let o = run(cg(&sb).args(["create", &c.name, "--oci"]).arg(oci_resources(&sb, &body)));
        let d = dir_of(&i, &c.name, "io").or_else(|| dir_of(&i, &c.name, "blkio")).unwrap();
        let weights = || -> Vec<String> {
            ["io.bfq.weight", "io.weight", "blkio.bfq.weight_device", "blkio.weight_device"]
                .iter()
                .filter_map(|f| std::fs::read_to_string(d.join(f)).ok())
                .flat_map(|t| t.lines().map(String::from).collect::<Vec<_>>())
                .collect()
        };
        if o.status.success() {
            // 300 on the BFQ scale, or converted to io.weight's (1 + 290 * 9999 / 990 = 2930).
            let w = weights();
            assert!(w.iter().any(|l| *l == format!("{dev} 300") || *l == format!("{dev} 2930")), "{w:?}");
        } else {
            assert!(!bfq, "a device scheduled by bfq refused its weight: {}", stderr(&o));
            assert_tool_error(&o, TOOL, &format!("linux.resources.blockIO.weightDevice {dev}"));
            assert_no_dirs(&i, &c.name);
        }
    }
    assert_oci_refused(
        &sb,
        &i,
        r#"{"blockIO":{"weightDevice":[{"major":4095,"minor":4095,"weight":300}]}}"#,
        "no such block device",
    );
    // CFQ's leaf weights: gone from the kernel since 5.0, so refused wherever it has no file for them.
    let cfq = hierarchy_of(&i, "blkio")
        .is_some_and(|h| Path::new(h["base"].as_str().unwrap()).join("blkio.leaf_weight").exists());
    if !cfq {
        assert_oci_refused(&sb, &i, r#"{"blockIO":{"leafWeight":200}}"#, "linux.resources.blockIO.leafWeight");
    }

    // rdma: no such device (and on most hosts no rdma controller at all).
    assert_oci_refused(&sb, &i, r#"{"rdma":{"cbuildnodev0":{"hcaHandles":1}}}"#, "linux.resources.rdma");
}

/// A flag beats the OCI file's `unified` entry for the same v2 file, as it beats the file's other
/// fields; within the file, `unified` beats the structured fields (runc writes it last).
#[test]
fn flags_beat_oci_unified_entries_and_unified_beats_the_files_fields() {
    require_root();
    let sb = Sandbox::new();
    let i = info(&sb);
    let v2_has = |ctrl: &str| hierarchy_of(&i, ctrl).is_some_and(|h| h["version"] == 2);
    // Only a v2 pids or memory controller lets a flag and a unified entry name the same file (pure v2).
    if v2_has("pids") {
        let c = Cg::new(&i);
        let cfg = oci_resources(&sb, r#"{"pids":{"limit":9},"unified":{"pids.max":"5"}}"#);
        let o = run(cg(&sb).args(["create", &c.name, "--pids", "7", "--oci"]).arg(&cfg));
        assert!(o.status.success(), "{}", stderr(&o));
        assert_eq!(stat(&sb, &c.name)["pids"]["limit"], 7, "--pids over unified pids.max");
        let o = run(cg(&sb).args(["set", &c.name, "--oci"]).arg(&cfg));
        assert!(o.status.success(), "{}", stderr(&o));
        assert_eq!(stat(&sb, &c.name)["pids"]["limit"], 5, "unified pids.max over the file's pids.limit");
    } else if v2_has("memory") {
        let c = Cg::new(&i);
        let cfg = oci_resources(&sb, r#"{"unified":{"memory.max":"33554432"}}"#);
        let o = run(cg(&sb).args(["create", &c.name, "--memory", "64M", "--oci"]).arg(&cfg));
        assert!(o.status.success(), "{}", stderr(&o));
        assert_eq!(stat(&sb, &c.name)["memory"]["limit"], 64 << 20, "--memory over unified memory.max");
    } else {
        eprintln!(
            "flags_beat_oci_unified_entries...: no flag's controller on cgroup v2 here; flag over unified not checked"
        );
    }
    // --cpu-idle and --cpu-burst too (they were missing from the flags that beat unified).
    if v2_has("cpu") {
        let c = Cg::new(&i);
        let cfg = oci_resources(&sb, r#"{"unified":{"cpu.idle":"1","cpu.max.burst":"1000"}}"#);
        let o = run(cg(&sb).args(["create", &c.name, "--cpu-idle", "0", "--cpu-burst", "2000", "--oci"]).arg(&cfg));
        assert!(o.status.success(), "{}", stderr(&o));
        let d = dir_of(&i, &c.name, "cpu").unwrap();
        assert_eq!(read(&d.join("cpu.idle")).trim(), "0", "--cpu-idle over unified cpu.idle");
        assert_eq!(read(&d.join("cpu.max.burst")).trim(), "2000", "--cpu-burst over unified cpu.max.burst");
    }
    // The file's own fields: hugepageLimits (structured) and unified hugetlb.<size>.max, where hugetlb is v2.
    if let (true, Some(size)) = (v2_has("hugetlb"), huge_page_sizes().into_iter().find(|s| s == "2MB")) {
        let c = Cg::new(&i);
        let cfg = oci_resources(
            &sb,
            &format!(
                r#"{{"hugepageLimits":[{{"pageSize":"{size}","limit":8388608}}],"unified":{{"hugetlb.{size}.max":"4194304"}}}}"#
            ),
        );
        let o = run(cg(&sb).args(["create", &c.name, "--oci"]).arg(&cfg));
        assert!(o.status.success(), "{}", stderr(&o));
        let d = dir_of(&i, &c.name, "hugetlb").unwrap();
        assert_eq!(read(&d.join(format!("hugetlb.{size}.max"))).trim(), "4194304");
    }
}

/// `kill --signal` takes real-time signals as kill(1) does: RTMIN+N, RTMAX-N (SIG optional, any case)
/// and plain numbers up to SIGRTMAX, and kill(1)'s aliases POLL, IOT, CLD; others are refused.
#[test]
fn kill_takes_real_time_signals_as_kill_1_does() {
    require_root();
    use std::os::unix::process::ExitStatusExt;
    let sb = Sandbox::new();
    let i = info(&sb);
    let c = Cg::new(&i);
    let (min, max) = (libc::SIGRTMIN(), libc::SIGRTMAX());
    let number = (min + 5).to_string();
    // And kill(1)'s other names: POLL (IO), IOT (ABRT); CLD (CHLD) is ignored by default, so not here.
    for (spec, want) in [
        ("RTMIN+3", min + 3),
        ("sigrtmax-1", max - 1),
        ("SIGRTMIN", min),
        (number.as_str(), min + 5),
        ("POLL", libc::SIGIO),
        ("iot", libc::SIGABRT),
    ] {
        let mut p = Proc(cg(&sb).args(["exec", &c.name, "--", "sleep", "30"]).stdin(Stdio::null()).spawn().unwrap());
        let pid = p.0.id() as i32;
        wait_for("the sleep to join", Duration::from_secs(5), || procs_in(&c.dirs[0]).contains(&pid));
        let o = run(cg(&sb).args(["kill", "--signal", spec, &c.name]));
        assert!(o.status.success(), "kill --signal {spec}: {}", stderr(&o));
        assert_eq!(p.0.wait().unwrap().signal(), Some(want), "kill --signal {spec}");
    }
    let past = format!("RTMIN+{}", max - min + 1);
    let above = (max + 1).to_string();
    for bad in [past.as_str(), above.as_str(), "RTMAX+1", "0"] {
        assert_tool_error(&run(cg(&sb).args(["kill", "--signal", bad, &c.name])), TOOL, "signal");
    }
}

/// OCI `pids.limit`: positive sets it, -1 lifts it, 0 leaves it as it is (runc's reading).
#[test]
fn oci_pids_limit_zero_leaves_the_limit_alone() {
    require_root();
    let sb = Sandbox::new();
    let i = info(&sb);
    let c = Cg::new(&i);
    assert!(run(cg(&sb).args(["create", &c.name, "--pids", "20"])).status.success());
    let o = run(cg(&sb).args(["set", &c.name, "--oci"]).arg(oci_resources(&sb, r#"{"pids":{"limit":0}}"#)));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stat(&sb, &c.name)["pids"]["limit"], 20, "pids.limit 0 changed the limit");
    let o = run(cg(&sb).args(["set", &c.name, "--oci"]).arg(oci_resources(&sb, r#"{"pids":{"limit":-1}}"#)));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stat(&sb, &c.name)["pids"]["limit"], Value::Null, "pids.limit -1 lifts the limit");
    assert_oci_refused(&sb, &i, r#"{"pids":{"limit":-2}}"#, "linux.resources.pids.limit");
}

/// SIGKILL is pending for `pid` (thread or process queue).
fn sigkill_pending(pid: u32) -> bool {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status.lines().filter(|l| l.starts_with("SigPnd:") || l.starts_with("ShdPnd:")).any(|l| {
        let mask = u64::from_str_radix(l.split_whitespace().nth(1).unwrap_or("0"), 16).unwrap_or(0);
        mask & (1 << (libc::SIGKILL - 1)) != 0
    })
}

/// `rm --force` does not hold the host-wide lock while it waits for a process that is slow to die:
/// other starts go on meanwhile. The slow death is a process frozen by the v1 freezer in a child of
/// NAME (SIGKILL waits for its thaw); the process joins while `rm` waits for the lock after its first
/// kill, as a join racing `rm` does (under the lock held shared), so `rm` finds it only under the lock.
#[test]
fn rm_force_waits_for_a_slow_death_without_the_host_lock() {
    require_root();
    let sb = Sandbox::new();
    let i = info(&sb);
    let c = Cg::new(&i);
    let Some(freezer) = dir_of(&i, &c.name, "freezer") else {
        eprintln!("rm_force_waits_for_a_slow_death_without_the_host_lock: no v1 freezer to make a slow death with");
        return;
    };
    let other = Cg::new(&i);
    assert!(run(cg(&sb).args(["create", &c.name])).status.success());
    let (frz1, frz2) = (freezer.join("frz1"), freezer.join("frz2"));
    let mut p1 = Proc(Command::new("sleep").arg("30").spawn().unwrap());
    let mut p2 = Proc(Command::new("sleep").arg("30").spawn().unwrap());
    let (pid1, pid2) = (p1.0.id(), p2.0.id());
    // Dropped first: thaw (a frozen child would never be reaped) and remove the children, pass or fail.
    let _thaw = cbuild_tests::Defer(|| {
        for f in [&frz1, &frz2] {
            let _ = std::fs::write(f.join("freezer.state"), "THAWED");
        }
        for p in [pid1, pid2] {
            unsafe { libc::kill(p as i32, libc::SIGKILL) };
        }
        for f in [&frz1, &frz2] {
            for _ in 0..100 {
                if !f.exists() || std::fs::remove_dir(f).is_ok() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    });
    for f in [&frz1, &frz2] {
        std::fs::create_dir(f).unwrap();
        std::fs::write(f.join("freezer.state"), "FROZEN").unwrap();
    }
    let join = |pid: u32, frz: &Path| {
        for d in &c.dirs {
            let d = if *d == freezer { frz } else { d.as_path() };
            std::fs::write(d.join("cgroup.procs"), pid.to_string()).unwrap();
        }
    };
    join(pid1, &frz1);
    wait_for("p1 frozen", Duration::from_secs(5), || read(&frz1.join("freezer.state")).trim() == "FROZEN");
    // Not killed if the test fails: it ends by itself, within its 10 s.
    let rm = cg(&sb).args(["rm", "--force", &c.name]).stdin(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let rm_pid = rm.id().to_string();
    wait_for("rm's first kill", Duration::from_secs(5), || sigkill_pending(pid1));
    // Hold the lock shared, as a joiner does, then let p1 die: `rm` goes from its first kill to the lock.
    let base = i["hierarchies"][0]["base"].as_str().unwrap();
    let lock = std::fs::File::open(base).unwrap();
    assert_eq!(unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock), libc::LOCK_SH) }, 0);
    std::fs::write(frz1.join("freezer.state"), "THAWED").unwrap();
    p1.0.wait().unwrap();
    wait_for("rm to wait for the lock", Duration::from_secs(5), || {
        read(Path::new("/proc/locks")).lines().any(|l| l.contains("->") && l.split_whitespace().any(|w| w == rm_pid))
    });
    join(pid2, &frz2);
    drop(lock);
    wait_for("rm's kill of the late joiner", Duration::from_secs(5), || sigkill_pending(pid2));
    // While p2 is slow to die, another start takes the lock.
    let started = Instant::now();
    let mut create = Proc(cg(&sb).args(["create", &other.name]).stdin(Stdio::null()).spawn().unwrap());
    let done = loop {
        if let Some(st) = create.0.try_wait().unwrap() {
            break Some(st);
        }
        if started.elapsed() > Duration::from_secs(3) {
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    std::fs::write(frz2.join("freezer.state"), "THAWED").unwrap();
    let st = done.expect("another start waited for rm --force's kill: it holds the host-wide lock meanwhile");
    assert!(st.success(), "create beside rm --force failed");
    let o = rm.wait_with_output().unwrap();
    assert!(o.status.success(), "rm --force: {}", stderr(&o));
    p2.0.wait().unwrap();
    let left: Vec<&PathBuf> = c.dirs.iter().filter(|d| d.exists()).collect();
    assert!(left.is_empty(), "rm --force left {left:?}");
}

/// OCI `cpu.idle` and `cpu.burst` (runc update's `--cpu-idle`, `--cpu-burst`): the v1 files
/// (`cpu.idle`, `cpu.cfs_burst_us`) or the v2 ones (`cpu.idle`, `cpu.max.burst`), reported by `stat`;
/// lowering quota and burst together works in either write order the kernel needs; what the kernel
/// would refuse (a burst above the quota, a weight for an idle group, idle 2) is refused before
/// anything is made, and a refusal on an existing group leaves its values as they were.
#[test]
fn cpu_idle_and_burst_are_applied_and_checked() {
    require_root();
    let sb = Sandbox::new();
    let i = info(&sb);
    let h = hierarchy_of(&i, "cpu").expect("a cpu controller");
    let (idle, burst) =
        if h["version"] == 2 { ("cpu.idle", "cpu.max.burst") } else { ("cpu.idle", "cpu.cfs_burst_us") };
    let c = Cg::new(&i);
    let o = run(cg(&sb).args(["create", &c.name, "--cpus", "0.5", "--cpu-burst", "20000", "--cpu-idle", "1"]));
    assert!(o.status.success(), "{}", stderr(&o));
    let d = dir_of(&i, &c.name, "cpu").unwrap();
    assert_eq!(read(&d.join(burst)).trim(), "20000");
    assert_eq!(read(&d.join(idle)).trim(), "1");
    let s = stat(&sb, &c.name);
    assert_eq!((s["cpu"]["burst_usec"].as_u64(), s["cpu"]["idle"].as_u64()), (Some(20000), Some(1)), "{s}");
    // Quota 50000 → 10000 with burst 20000 → 5000: the quota alone first would be refused.
    let o = run(cg(&sb).args(["set", &c.name, "--cpu-quota", "10000", "--cpu-burst", "5000", "--cpu-idle", "0"]));
    assert!(o.status.success(), "{}", stderr(&o));
    let s = stat(&sb, &c.name);
    assert_eq!(s["cpu"]["quota_usec"], 10_000);
    assert_eq!((s["cpu"]["burst_usec"].as_u64(), s["cpu"]["idle"].as_u64()), (Some(5000), Some(0)), "{s}");
    // Refused by the kernel (above the quota in force): exit 125 naming the flag, the old burst kept.
    let o = run(cg(&sb).args(["set", &c.name, "--cpu-burst", "60000"]));
    assert_tool_error(&o, TOOL, "--cpu-burst");
    assert_eq!(read(&d.join(burst)).trim(), "5000");
    // From an OCI config.
    let c2 = Cg::new(&i);
    let cfg = oci_resources(&sb, r#"{"cpu":{"quota":30000,"period":100000,"burst":10000,"idle":1}}"#);
    let o = run(cg(&sb).args(["create", &c2.name, "--oci"]).arg(cfg));
    assert!(o.status.success(), "{}", stderr(&o));
    let d2 = dir_of(&i, &c2.name, "cpu").unwrap();
    assert_eq!((read(&d2.join(burst)).trim(), read(&d2.join(idle)).trim()), ("10000", "1"));
    // Refused before anything is made.
    assert_flags_refused(
        &sb,
        &i,
        &["--cpu-quota", "10000", "--cpu-burst", "20000"],
        "--cpu-burst 20000: is above the quota",
    );
    assert_flags_refused(&sb, &i, &["--cpu-idle", "2"], "--cpu-idle 2");
    assert_flags_refused(
        &sb,
        &i,
        &["--cpu-idle", "1", "--cpu-shares", "512"],
        "--cpu-idle 1: conflicts with a CPU weight",
    );
    assert_oci_refused(&sb, &i, r#"{"cpu":{"idle":5}}"#, "linux.resources.cpu.idle: 5 is neither 0 nor 1");
    assert_oci_refused(&sb, &i, r#"{"cpu":{"quota":10000,"burst":20000}}"#, "linux.resources.cpu.burst 20000");
}

/// `set --memory` keeps the memory+swap limit in force, as `docker update` does (twice the memory is
/// Docker's default for a new container only); a memory above it is refused, with a hint, and the old
/// values stay.
#[test]
fn set_memory_keeps_the_swap_limit_as_docker_update() {
    require_root();
    let sb = Sandbox::new();
    let i = info(&sb);
    let c = Cg::new(&i);
    let o = run(cg(&sb).args(["create", &c.name, "--memory", "64m", "--memory-swap", "-1"]));
    assert!(o.status.success(), "{}", stderr(&o));
    let d = dir_of(&i, &c.name, "memory").unwrap();
    let v2 = hierarchy_of(&i, "memory").unwrap()["version"] == 2;
    let swap_file = if v2 { "memory.swap.max" } else { "memory.memsw.limit_in_bytes" };
    if !d.join(swap_file).exists() {
        return; // no swap accounting: nothing to keep
    }
    let before = read(&d.join(swap_file));
    let o = run(cg(&sb).args(["set", &c.name, "--memory", "32m"]));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(read(&d.join(swap_file)), before, "set --memory changed {swap_file}");
    if !v2 {
        // memory+swap 128m in force: a memory of 200m is above it.
        let o = run(cg(&sb).args(["set", &c.name, "--memory", "64m", "--memory-swap", "128m"]));
        assert!(o.status.success(), "{}", stderr(&o));
        let o = run(cg(&sb).args(["set", &c.name, "--memory", "200m"]));
        assert_tool_error(&o, TOOL, "memory.limit_in_bytes");
        assert!(stderr(&o).contains("give --memory-swap too"), "{}", stderr(&o));
        assert_eq!(read(&d.join("memory.limit_in_bytes")).trim(), (64u64 << 20).to_string());
        assert_eq!(read(&d.join(swap_file)).trim(), (128u64 << 20).to_string());
    }
}

/// An error names a flag's value as the user typed it, in one short line: not a float printed digit by
/// digit (`--cpus 1e308` was 309 digits), not the bytes a size became (`--memory-swap 1g` was
/// 1073741824). An OCI field is named by its path, with the file's number.
#[test]
fn errors_show_flag_values_as_typed() {
    require_root();
    let sb = Sandbox::new();
    let i = info(&sb);
    let cases: &[(&[&str], &str)] = &[
        (&["--cpus", "1e308"], "--cpus 1e308: range of CPUs"),
        (&["--cpus", "1e-308"], "--cpus 1e-308: range of CPUs"),
        (&["--memory-swap", "1g", "--memory", "2g"], "--memory-swap 1g: is smaller than --memory 2g"),
        (&["--memory-swap", "1g", "--memory", "max"], "--memory-swap 1g: needs a memory limit, and --memory max"),
        (&["--memory-swap", "1g"], "--memory-swap 1g: needs a memory limit"),
        (&["--memory-reservation", "3g", "--memory", "2G"], "--memory-reservation 3g: is above --memory 2G"),
        (&["--cpu-weight", "0050", "--cpu-shares", "2"], "--cpu-weight 0050: conflicts"),
        (&["--cpuset-cpus", "0,4095"], "--cpuset-cpus 0,4095: 4095 is outside"),
    ];
    for (flags, needle) in cases {
        let name = unique("cg");
        let _g = Cg { name: name.clone(), dirs: dirs(&i, &name) };
        let o = run(cg(&sb).args(["create", &name]).args(*flags));
        assert_tool_error(&o, TOOL, needle);
        let err = stderr(&o);
        assert_eq!(err.lines().count(), 1, "{flags:?}: {err}");
        assert!(err.len() < 200, "{flags:?}: not a short line: {err}");
        assert_no_dirs(&i, &name);
    }
    let oci = r#"{"memory":{"limit":2147483648,"swap":1073741824}}"#;
    assert_oci_refused(
        &sb,
        &i,
        oci,
        "linux.resources.memory.swap 1073741824: is smaller than linux.resources.memory.limit 2147483648",
    );
}

/// Found by a review: an `--io-max` device that does not exist was named as the MAJ:MIN it parsed to
/// (`--io-max 4095:4095` for `04095:04095:rbps=1m`), and one from an OCI throttle list as if `--io-max`
/// had given it. Each is named as given: the flag with its value as typed, or the list entry.
#[test]
fn io_max_errors_show_the_device_as_typed() {
    require_root();
    let sb = Sandbox::new();
    let i = info(&sb);
    for spec in ["04095:04095:rbps=1m", "4095:4095:rbps=1m,wiops=7"] {
        let name = unique("cg");
        let _g = Cg { name: name.clone(), dirs: dirs(&i, &name) };
        let o = run(cg(&sb).args(["create", &name, "--io-max", spec]));
        assert_tool_error(&o, TOOL, &format!("limits: --io-max {spec}: no such block device"));
        assert_eq!(stderr(&o).lines().count(), 1, "{}", stderr(&o));
        assert_no_dirs(&i, &name);
    }
    let oci = r#"{"blockIO":{"throttleWriteIOPSDevice":[{"major":4095,"minor":4095,"rate":5}]}}"#;
    assert_oci_refused(
        &sb,
        &i,
        oci,
        "limits: linux.resources.blockIO.throttleWriteIOPSDevice[0] 4095:4095: no such block device",
    );
}

/// A burst the kernel refuses is refused for the bound it breaks: with no quota, only the kernel's
/// largest burst (u64 nanoseconds), which no quota is involved in; with one, the quota, and quota + burst
/// within the kernel's largest quota. A refusal on an existing group gets a hint naming the quota in
/// force.
#[test]
fn cpu_burst_errors_name_the_bound_broken() {
    require_root();
    let sb = Sandbox::new();
    let i = info(&sb);
    let h = hierarchy_of(&i, "cpu").expect("a cpu controller");
    let burst = if h["version"] == 2 { "cpu.max.burst" } else { "cpu.cfs_burst_us" };
    let cases: &[(&[&str], &str)] = &[
        (&["--cpu-burst", "18446744073709552"], "--cpu-burst 18446744073709552: out of range 0..=18446744073709551"),
        (&["--cpu-burst", "99999999999999999999999999999999999999999"], "out of range 0..=18446744073709551"),
        (&["--cpu-quota", "17592186044416"], "--cpu-quota 17592186044416: out of range 1000..=17592186044415"),
        (
            &["--cpu-quota", "17592186044414", "--cpu-burst", "2"],
            "--cpu-burst 2: with the quota of --cpu-quota 17592186044414 it is above the kernel's largest quota + burst",
        ),
        (&["--cpus", "1", "--cpu-burst", "100001"], "--cpu-burst 100001: is above the quota of --cpus 1 (100000 µs)"),
    ];
    for (flags, needle) in cases {
        assert_flags_refused(&sb, &i, flags, needle);
    }
    for (resources, needle) in [
        (r#"{"cpu":{"burst":18446744073709552}}"#, "cpu.burst 18446744073709552: is above the kernel's largest burst"),
        (r#"{"cpu":{"quota":17592186044416}}"#, "cpu.quota 17592186044416: is above the kernel's largest quota"),
    ] {
        assert_oci_refused(&sb, &i, resources, needle);
    }
    let c = Cg::new(&i);
    let o = run(cg(&sb).args(["create", &c.name]));
    assert!(o.status.success(), "{}", stderr(&o));
    let d = dir_of(&i, &c.name, "cpu").unwrap();
    if !d.join(burst).exists() {
        return; // a kernel before 5.14: no burst to refuse
    }
    // No quota in force: the kernel's largest burst is taken.
    let o = run(cg(&sb).args(["set", &c.name, "--cpu-burst", "18446744073709551"]));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(read(&d.join(burst)).trim(), "18446744073709551");
    let o = run(cg(&sb).args(["set", &c.name, "--cpu-burst", "0"]));
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(cg(&sb).args(["set", &c.name, "--cpu-quota", "10000"]));
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(cg(&sb).args(["set", &c.name, "--cpu-burst", "60000"]));
    assert_tool_error(&o, TOOL, "--cpu-burst");
    assert!(stderr(&o).contains("hint: a burst must not exceed the quota in force (10000 µs)"), "{}", stderr(&o));
    assert_eq!(read(&d.join(burst)).trim(), "0");
}

/// Whether `controller` is a v1 controller of this kernel not mounted anywhere (/proc/cgroups: a
/// hierarchy id of 0).
fn unmounted_v1_controller(controller: &str) -> bool {
    std::fs::read_to_string("/proc/cgroups").unwrap_or_default().lines().any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.len() == 4 && f[0] == controller && f[1] == "0" && f[3] == "1"
    })
}

/// A v1 hierarchy the host already has, mounted again at `<sandbox>/cg\xffmnt` (not UTF-8) in a private
/// mount namespace, with the host's mount of it unmounted there so that ours is the one found (no new
/// hierarchy, nothing in /proc/cgroups changes); `script` runs there with `$CG` the tool. The namespace,
/// and the mount with it, go when the shell exits. None without a v1 hierarchy.
fn at_non_utf8_v1_mount(
    sb: &Sandbox,
    script: &str,
    env: &[(&str, &str)],
) -> Option<(Value, PathBuf, std::process::Output)> {
    use std::os::unix::ffi::OsStrExt;
    let i = info(sb);
    let Some(h) = i["hierarchies"].as_array().unwrap().iter().find(|h| h["version"] == 1).cloned() else {
        eprintln!("skipped: no v1 hierarchy ({} cgroups)", i["layout"]);
        return None;
    };
    let ctrls: Vec<&str> = h["controllers"].as_array().unwrap().iter().map(|c| c.as_str().unwrap()).collect();
    let mnt = sb.path().join(std::ffi::OsStr::from_bytes(b"cg\xffmnt"));
    std::fs::create_dir(&mnt).unwrap();
    let mut cmd = Command::new("sh");
    cmd.args(["-c", &format!(r#"umount "$HOST" && mount -t cgroup -o "$CTRLS" none "$M" || exit 90; {script}"#)])
        .env("HOST", h["mount"].as_str().unwrap())
        .env("CTRLS", ctrls.join(","))
        .env("M", &mnt)
        .env("CG", bin(TOOL))
        .envs(env.iter().copied());
    in_private_mount_ns(&mut cmd);
    let o = run(&mut cmd);
    Some((h, mnt, o))
}

/// Found by a review: serde refuses a path that is not UTF-8, so with a v1 hierarchy mounted at such a
/// path `info --json` printed an empty line (exit 0).
#[test]
fn info_json_gives_a_mount_point_that_is_not_utf8_exactly() {
    use std::os::unix::ffi::OsStrExt;
    require_root();
    let sb = Sandbox::new();
    let script = r#""$CG" info >"$HUMAN" || exit 91; exec "$CG" info --json"#;
    let human = sb.path().join("human");
    let env = [("HUMAN", human.to_str().unwrap())];
    let Some((h, mnt, o)) = at_non_utf8_v1_mount(&sb, script, &env) else { return };
    assert!(o.status.success(), "{}", stderr(&o));
    // The text shows the mount point exactly, its byte 0xff as \377 (it was U+FFFD, lossily).
    let shown = format!(" {}/cg\\377mnt ", sb.path().display());
    let text = read(&human);
    assert!(text.lines().any(|l| l.starts_with("cgroup v1") && l.contains(&shown)), "{shown:?} in {text}");
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap_or_else(|e| panic!("{e}: {:?}", stdout(&o)));
    let hs = v["hierarchies"].as_array().unwrap();
    let ours = hs.iter().find(|x| x["controllers"] == h["controllers"]).unwrap_or_else(|| panic!("{v}"));
    let bytes: Vec<Value> = mnt.as_os_str().as_bytes().iter().map(|b| Value::from(*b)).collect();
    assert_eq!(ours["mount"], mnt.to_string_lossy().as_ref(), "{v}");
    assert_eq!(ours["mount_bytes"], Value::from(bytes.clone()), "{v}");
    assert_eq!(ours["base_bytes"], Value::from(bytes), "{v}");
    assert!(hs.iter().filter(|x| x["mount"] != ours["mount"]).all(|x| x.get("mount_bytes").is_none()), "{v}");
}

/// The same for `ls --json`, whose entries list a cgroup's directories: it printed an empty line for
/// such a cgroup (exit 0). A path JSON cannot hold is now a one-line error naming a cgroup; the
/// human listing and `stat --json` (no paths) still work.
#[test]
fn ls_json_refuses_a_cgroup_dir_that_is_not_utf8_instead_of_an_empty_line() {
    require_root();
    let sb = Sandbox::new();
    let c = Cg::new(&info(&sb));
    let script = r#""$CG" create "$N" || exit 91
"$CG" ls --json >"$OUT" 2>"$ERR"; echo "ls=$?"
"$CG" ls >/dev/null || echo "ls-human failed"
"$CG" stat "$N" --json >/dev/null || echo "stat failed"
"$CG" rm "$N" || echo "rm failed""#;
    let (out, err) = (sb.path().join("out"), sb.path().join("err"));
    let env = [("N", c.name.as_str()), ("OUT", out.to_str().unwrap()), ("ERR", err.to_str().unwrap())];
    let Some((_, _, o)) = at_non_utf8_v1_mount(&sb, script, &env) else { return };
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o).trim(), "ls=125", "{}", stderr(&o));
    assert_eq!(read(&out), "", "a partial listing was printed");
    let e = read(&err);
    // The first cgroup listed whose directory JSON cannot hold: ours, or another test's at the same time.
    assert!(e.starts_with("cbuild-cgroup: json: ") && e.contains("UTF-8") && e.lines().count() == 1, "{e}");
}

/// OCI `network` (classID, priorities) as runc applies it: on v1 into `net_cls.classid` and
/// `net_prio.ifpriomap` (a failed `set` puts a priority back), refused before anything is made where no
/// hierarchy holds the controller, ignored on a pure v2 host (v2 has neither). The hierarchy is mounted
/// for the test in a private mount namespace, at a path with a tab and a backslash, which
/// /proc/self/mountinfo escapes (`\011`, `\134`): NAME must be made at the real path.
#[test]
fn oci_network_goes_to_net_cls_and_net_prio_on_v1() {
    require_root();
    let sb = Sandbox::new();
    let i = info(&sb);
    let network = r#"{"network":{"classID":1048577,"priorities":[{"name":"lo","priority":5}]}}"#;
    if i["layout"] == "unified" {
        let c = Cg::new(&i);
        let o = run(cg(&sb).args(["create", &c.name, "--oci"]).arg(oci_resources(&sb, network)));
        assert!(o.status.success(), "ignored on cgroup v2, as runc: {}", stderr(&o));
        return;
    }
    assert_oci_refused(&sb, &i, r#"{"network":{"priorities":[{"name":"a b","priority":1}]}}"#, "not an interface name");
    if !(unmounted_v1_controller("net_cls") && unmounted_v1_controller("net_prio")) {
        eprintln!("skipped: net_cls/net_prio absent or already mounted by the host");
        return;
    }
    assert_oci_refused(&sb, &i, network, "linux.resources.network.classID: the host has no net_cls controller");
    let mnt = sb.path().join("net\tcls\\prio");
    std::fs::create_dir(&mnt).unwrap();
    let name = unique("cg");
    let _g = Cg { name: name.clone(), dirs: dirs(&i, &name) };
    let bogus = r#"{"network":{"priorities":[{"name":"lo","priority":9},{"name":"cbnosuch0","priority":1}]}}"#;
    // Inside the namespace: mount, create, set (refused), read the files back, then leave nothing behind
    // (NAME, the cbuild/ parent, the mount: an unmounted empty hierarchy is destroyed) whatever failed.
    let script = r#"
        mount -t cgroup -o net_cls,net_prio none "$M" || exit 90
        "$CG" create "$NAME" --oci "$CFG" 2>&1; echo "create=$?"
        "$CG" set "$NAME" --oci "$BOGUS" 2>&1; echo "set=$?"
        echo "classid=$(cat "$M/cbuild/$NAME/net_cls.classid")"
        grep '^lo ' "$M/cbuild/$NAME/net_prio.ifpriomap"
        "$CG" rm "$NAME"; rmdir "$M/cbuild"
        # An unmounted hierarchy is destroyed only if its root has no child then, a removed one too
        # until the kernel frees it; else it outlives the mount, unseen but in every /proc/PID/cgroup.
        n=0
        while ! grep -q "^net_cls[[:space:]][0-9]*[[:space:]]1[[:space:]]" /proc/cgroups && [ $n -lt 100 ]; do
            sleep 0.1; n=$((n + 1))
        done
        umount "$M"
    "#;
    let mut cmd = Command::new("sh");
    cmd.args(["-c", script])
        .env("M", &mnt)
        .env("CG", bin(TOOL))
        .env("NAME", &name)
        .env("CFG", oci_resources(&sb, network))
        .env("BOGUS", oci_resources(&sb, bogus));
    in_private_mount_ns(&mut cmd);
    let o = run(&mut cmd);
    let out = stdout(&o);
    assert!(o.status.success(), "{out}{}", stderr(&o));
    assert!(out.contains("create=0\n"), "{out}");
    assert!(out.contains("set=125\n") && out.contains("(linux.resources.network.priorities[1] cbnosuch0)"), "{out}");
    assert!(out.contains("classid=1048577\n"), "{out}");
    assert!(out.contains("\nlo 5\n"), "the failed set put lo's priority back: {out}");
    // The kernel destroys the unmounted empty hierarchy after an RCU grace period, not at once.
    wait_for("the test's hierarchy to go", Duration::from_secs(10), || unmounted_v1_controller("net_cls"));
}

/// `cmd` runs in a mount namespace of its own, all of it private: what it mounts (a v1 hierarchy at a
/// test's path) no other process sees, and goes with it.
fn in_private_mount_ns(cmd: &mut Command) {
    // SAFETY: unshare and mount only, between fork and exec, on strings made before the fork.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(cmd, || {
            if libc::unshare(libc::CLONE_NEWNS) != 0
                || libc::mount(
                    c"none".as_ptr(),
                    c"/".as_ptr(),
                    std::ptr::null(),
                    libc::MS_REC | libc::MS_PRIVATE,
                    std::ptr::null(),
                ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Regression: `exec NAME [limits] -- CMD` into a NAME that exists wrote the new limits, and when CMD then
/// failed to start (execve refused it: exit 126) the limits stayed: a running container kept a limit
/// nobody meant for it. Now they are put back as they were.
#[test]
fn exec_whose_command_fails_to_start_leaves_an_existing_names_limits_as_they_were() {
    require_root();
    let sb = Sandbox::new();
    let i = info(&sb);
    let c = Cg::new(&i);
    let o = run(cg(&sb).args(["create", &c.name, "--memory", "64M", "--pids", "50"]));
    assert!(o.status.success(), "{}", stderr(&o));
    let noexec = sb.path().join("not-executable");
    std::fs::write(&noexec, "#!/bin/sh\n").unwrap();
    let o = run(cg(&sb).args(["exec", &c.name, "--memory", "32M", "--pids", "7", "--"]).arg(&noexec));
    assert_eq!(o.status.code(), Some(126), "{}", stderr(&o));
    let s = stat(&sb, &c.name);
    assert_eq!(s["memory"]["limit"], 64 << 20, "{s}");
    assert_eq!(s["pids"]["limit"], 50, "{s}");
}

/// Regression: `exec NAME --rm` removed whatever was called NAME once its command had ended. Stopped with
/// its job (^Z) while an `rm --force NAME` ended the command and a new NAME was made, it woke and removed
/// the new one, processes and all. Now it removes NAME only if its directories are still the ones it made.
#[test]
fn exec_rm_leaves_a_name_made_again_while_it_waited() {
    require_root();
    let sb = Sandbox::new();
    let i = info(&sb);
    let c = Cg::new(&i);
    let mut waiter =
        Proc(cg(&sb).args(["exec", &c.name, "--rm", "--", "sleep", "30"]).stdin(Stdio::null()).spawn().unwrap());
    let pid = nix::unistd::Pid::from_raw(waiter.0.id() as i32);
    wait_for("the sleep to join", Duration::from_secs(5), || !procs_in(&c.dirs[0]).is_empty());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    let o = run(cg(&sb).args(["rm", "--force", &c.name]));
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(cg(&sb).args(["create", &c.name, "--pids", "9"]));
    assert!(o.status.success(), "{}", stderr(&o));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).unwrap();
    let _ = waiter.0.wait();
    assert!(c.dirs.iter().all(|d| d.is_dir()), "the new {} was removed by the old waiter", c.name);
}
