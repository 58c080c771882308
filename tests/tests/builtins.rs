//! scripts/builtins: the `flock` bash builtin the scripts load (`enable -f libcbuild_builtins.so flock`),
//! in a real bash against real locks: util-linux flock(1)'s FD forms and exit codes, the lock shared with
//! the processes that inherit the descriptor, a signal ending the wait, and no fork.

use cbuild_tests::*;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// bash with the builtin loaded, running SCRIPT; $1 is a lock file private to the test.
fn bash(script: &str, lock: &std::path::Path) -> Command {
    let so = bin_dir().join("libcbuild_builtins.so");
    assert!(so.exists(), "{} not built: run `cargo build --workspace` first", so.display());
    let mut c = Command::new("bash");
    c.arg("-c").arg(format!("enable -f '{}' flock || exit 99\n{script}", so.display())).arg("bash").arg(lock);
    c
}

/// A bash holding LOCK through its own open file, running THEN; returns once it holds it.
fn hold(lock: &std::path::Path, then: &str) -> std::process::Child {
    let mut holder = bash(&format!("exec 8>\"$1\"; flock 8 || exit 3; echo held; {then}"), lock)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(holder.stdout.take().unwrap()), &mut line).unwrap();
    assert_eq!(line, "held\n");
    holder
}

fn lock_file() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("cbuild-flock-").tempdir().unwrap()
}

#[test]
fn it_is_a_builtin_and_locks_without_a_fork() {
    let d = lock_file();
    let lock = d.path().join("lock");
    // strace -f follows any child: a fork or clone would show.
    let o = run(Command::new("strace")
        .args(["-f", "-qq", "-e", "trace=fork,vfork,clone,clone3,flock", "-o"])
        .arg(d.path().join("trace"))
        .arg("bash")
        .args([
            "-c",
            &format!(
                "enable -f '{}' flock && exec 9>\"$1\" && builtin flock 9",
                bin_dir().join("libcbuild_builtins.so").display()
            ),
        ])
        .arg("bash")
        .arg(&lock));
    assert!(o.status.success(), "{}", stderr(&o));
    let trace = std::fs::read_to_string(d.path().join("trace")).unwrap();
    assert!(trace.contains("flock(9, LOCK_EX)"), "no flock(2) on fd 9: {trace}");
    assert!(!trace.contains("clone") && !trace.contains("fork"), "a process was made: {trace}");
}

#[test]
fn a_lock_held_elsewhere_gives_1_with_n_and_w_and_is_had_once_let_go() {
    let d = lock_file();
    let lock = d.path().join("lock");
    // The holder: another open file of the same lock, kept for 0.6 s.
    let mut holder = hold(&lock, "sleep 0.6");
    let t = Instant::now();
    let o = run(&mut bash(
        "exec 9>\"$1\"
         flock -n 9; echo n=$?
         flock -w 0.1 9; echo w=$?
         flock -s -n 9; echo s=$?
         flock 9; echo blocking=$?",
        &lock,
    ));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "n=1\nw=1\ns=1\nblocking=0\n");
    // The blocking lock came only when the holder let go.
    assert!(t.elapsed() >= Duration::from_millis(400), "locked after {:?}", t.elapsed());
    assert!(holder.wait().unwrap().success());
}

#[test]
fn the_lock_is_the_open_files_so_children_share_it_and_u_lets_it_go() {
    let d = lock_file();
    let lock = d.path().join("lock");
    let o = run(&mut bash(
        "exec 9>\"$1\"; flock 9 || exit 3
         (flock -n 9; echo inherited=$?)
         bash -c 'exec 8>\"$1\"; flock -n 8; echo other=$?' x \"$1\"
         flock -u 9; echo u=$?
         bash -c 'exec 8>\"$1\"; flock -n 8; echo after_u=$?' x \"$1\"",
        &lock,
    ));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "inherited=0\nother=1\nu=0\nafter_u=0\n");
}

#[test]
fn a_signal_ends_the_wait_so_the_trap_runs() {
    let d = lock_file();
    let lock = d.path().join("lock");
    let mut holder = hold(&lock, "exec sleep 10");
    let mut waiter = bash("trap 'exit 7' TERM; exec 9>\"$1\"; flock 9; echo locked=$?", &lock)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let t = Instant::now();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(waiter.id() as i32), nix::sys::signal::SIGTERM).unwrap();
    let st = waiter.wait().unwrap();
    let _ = holder.kill();
    let _ = holder.wait();
    assert_eq!(st.code(), Some(7), "the trap did not run");
    assert!(t.elapsed() < Duration::from_secs(2), "the wait went on for {:?}", t.elapsed());
}

#[test]
fn bad_input_is_status_2_with_one_line() {
    let d = lock_file();
    let lock = d.path().join("lock");
    for (args, msg) in [
        ("77", "flock: 77: Bad file descriptor"),
        ("-w soon 9", "flock: soon: not a number of seconds"),
        ("", "flock: missing FD"),
        ("\"$1\" true", "not a file descriptor (the builtin takes flock(1)'s FD form only)"),
        ("9 true", "flock: true: unexpected"),
        ("-w", "flock: -w: -w needs SECONDS"),
    ] {
        let o = run(&mut bash(&format!("exec 9>\"$1\"; flock {args}"), &lock));
        assert_eq!(o.status.code(), Some(2), "flock {args}: {}", stderr(&o));
        let err = stderr(&o);
        assert!(err.contains(msg) && err.lines().count() == 1, "flock {args}: {err}");
    }
}
