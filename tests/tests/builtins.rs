//! scripts/builtins, in a real bash: the `flock` builtin the scripts load against real locks (util-linux
//! flock(1)'s FD forms and exit codes, the lock shared with the processes that inherit the descriptor, a
//! signal ending the wait, no fork), `spawn`/`reap` (a command started with posix_spawn: its files,
//! environment, signals and session; its status never taken by bash; a trap ending the wait), and
//! `mkdir`/`rmdir`/`rm`/`mv` (coreutils' results for the scripts' forms, symbolic links never followed, a
//! tree deeper than the builtin goes left whole for rm(1), mv renaming only).

use cbuild_tests::*;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// bash with the builtins (flock, spawn, reap, mkdir, rmdir, rm, mv) loaded, running SCRIPT; $1 is ARG, a
/// lock file or a directory private to the test.
fn bash(script: &str, arg: &std::path::Path) -> Command {
    let so = bin_dir().join("libcbuild_builtins.so");
    assert!(so.exists(), "{} not built: run `cargo build --workspace` first", so.display());
    let mut c = Command::new("bash");
    c.arg("-c")
        .arg(format!("enable -f '{}' flock spawn reap mkdir rmdir rm mv || exit 99\n{script}", so.display()))
        .arg("bash")
        .arg(arg);
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

/// SCRIPT (run by `bash`, $1 = ARG) prints EXPECTED and says why on stderr in one line holding MSG.
#[track_caller]
fn assert_one_line(arg: &std::path::Path, script: &str, expected: &str, msg: &str) {
    let o = run(&mut bash(script, arg));
    let err = stderr(&o);
    assert_eq!(stdout(&o), expected, "{script}: {err}");
    assert!(err.contains(msg) && err.lines().count() == 1, "{script}: {err}");
}

/// The lines of an `strace -f -o` trace that make a process: by the call's name ("PID call(..."), not a
/// word anywhere in the line (a path may hold "clone").
fn processes_made(trace: &str) -> Vec<&str> {
    trace
        .lines()
        .filter(|l| {
            let call = l.split_whitespace().nth(1).unwrap_or("");
            ["clone(", "clone3(", "fork(", "vfork("].iter().any(|c| call.starts_with(c))
        })
        .collect()
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
    assert!(processes_made(&trace).is_empty(), "a process was made: {trace}");
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

/// A trapped signal that does not end the script: `flock` returns 128+N (as `wait` does), not the 1 of
/// a lock not taken, and the trap runs; with `-w` too.
#[test]
fn a_trapped_signal_is_status_128_plus_n() {
    let d = lock_file();
    let lock = d.path().join("lock");
    let mut holder = hold(&lock, "exec sleep 10");
    let o = bash(
        "trap 'echo trap' USR1; exec 9>\"$1\"
         (sleep 0.2; kill -USR1 $$) & flock 9; echo blocking=$?
         (sleep 0.2; kill -USR1 $$) & flock -w 5 9; echo w=$?",
        &lock,
    )
    .output()
    .unwrap();
    let _ = holder.kill();
    let _ = holder.wait();
    assert_eq!(stdout(&o), "trap\nblocking=138\ntrap\nw=138\n", "{}", stderr(&o));
}

/// bash's SIGCHLD, when a background job ends, interrupts the builtin's system calls: neither wait
/// ends early for it (flock(1), a process of its own, never sees it).
#[test]
fn a_background_job_ending_does_not_end_the_wait() {
    let d = lock_file();
    let lock = d.path().join("lock");
    let mut holder = hold(&lock, "sleep 3");
    let t = Instant::now();
    let o = bash(
        "exec 9>\"$1\"
         sleep 0.1 & sleep 0.2 & flock -w 1 9; echo w=$?
         sleep 0.1 & flock 9; echo blocking=$?",
        &lock,
    )
    .output()
    .unwrap();
    let _ = holder.wait();
    // -w 1 times out (the holder keeps the lock 3 s), then the blocking wait gets it when the holder ends.
    assert_eq!(stdout(&o), "w=1\nblocking=0\n", "{}", stderr(&o));
    assert!(t.elapsed() >= Duration::from_secs(1), "-w 1 gave up after {:?}", t.elapsed());
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
        assert_one_line(&lock, &format!("exec 9>\"$1\"; flock {args}; echo rc=$?"), "rc=2\n", msg);
    }
}

#[test]
fn spawn_starts_the_command_without_forking_the_shell() {
    let d = lock_file();
    // strace -f follows every child: the one process made must be a vfork-style clone (the shell's
    // memory lent until the exec), not a fork.
    let o = run(Command::new("strace")
        .args(["-f", "-qq", "-e", "trace=fork,vfork,clone,clone3,execve", "-o"])
        .arg(d.path().join("trace"))
        .arg("bash")
        .args([
            "-c",
            &format!(
                "enable -f '{}' spawn reap && spawn -p c -- /bin/sh -c 'exit 3'; reap -p e $c; echo $?",
                bin_dir().join("libcbuild_builtins.so").display()
            ),
        ]));
    assert_eq!(stdout(&o), "3\n", "{}", stderr(&o));
    let trace = std::fs::read_to_string(d.path().join("trace")).unwrap();
    let made = processes_made(&trace);
    assert_eq!(made.len(), 1, "one process made: {trace}");
    assert!(made[0].contains("CLONE_VM") && made[0].contains("CLONE_VFORK"), "not a vfork-style clone: {trace}");
    assert!(trace.contains("execve(\"/bin/sh\""), "{trace}");
}

#[test]
fn spawn_gives_the_command_its_files_environment_signals_and_session() {
    let d = lock_file();
    std::fs::write(d.path().join("out"), "old contents, to be truncated\n").unwrap();
    std::fs::write(d.path().join("app"), "first\n").unwrap();
    std::fs::write(d.path().join("in"), "from stdin\n").unwrap();
    let o = run(&mut bash(
        "export FOO=bar
         trap 'echo trapped' INT
         trap '' USR1
         spawn -p c -s -w 4 \"$1/out\" -a 5 \"$1/app\" -r 0 \"$1/in\" -- sh -c '
             echo \"FOO=$FOO\" >&4; echo second >&5; read l; echo \"$l\" >&4
             set -- $(cat /proc/self/stat); echo \"session-is-self=$(( $6 == $$ ))\" >&4
             grep -E \"^Sig(Ign|Blk)\" /proc/self/status >&4'
         reap -p e $c; echo \"status=$? reaped=$(( e == c ))\"",
        d.path(),
    ));
    assert_eq!(stdout(&o), "status=0 reaped=1\n", "{}", stderr(&o));
    let out = std::fs::read_to_string(d.path().join("out")).unwrap();
    let mask = |name: &str| {
        let l = out.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("{out}"));
        u64::from_str_radix(l.split_whitespace().nth(1).unwrap(), 16).unwrap()
    };
    assert!(out.starts_with("FOO=bar\nfrom stdin\nsession-is-self=1\n"), "{out}");
    assert_eq!(mask("SigBlk:"), 0, "the command's signal mask is the shell's own, SIGCHLD not held: {out}");
    let bit = |sig: i32| 1u64 << (sig - 1);
    assert_ne!(mask("SigIgn:") & bit(libc::SIGUSR1), 0, "an ignored signal stays ignored: {out}");
    assert_eq!(mask("SigIgn:") & bit(libc::SIGINT), 0, "a trapped signal is at its default: {out}");
    assert_eq!(std::fs::read_to_string(d.path().join("app")).unwrap(), "first\nsecond\n");
}

#[test]
fn reap_gives_the_status_and_a_trap_ends_its_wait_early() {
    let d = lock_file();
    let o = run(&mut bash(
        "trap 'echo trapped; kill -TERM $c' USR1
         spawn -p c -- sleep 10
         spawn -p k -- sh -c 'sleep 0.3; kill -USR1 $PPID'
         while :; do reap -p e $c; st=$?; echo \"st=$st e=${e:+pid}\"; [[ -n $e ]] && break; done
         reap -p e $k; echo \"killer=$?\"
         spawn -p c -- sh -c 'kill -KILL $$'; reap -p e $c; echo \"killed=$?\"
         spawn -p c -- sleep 0.3; reap -n -p e $c; echo \"n=$? e=${e:-running}\"
         reap -p e $c; echo \"blocking=$? e=${e:+pid}\"",
        d.path(),
    ));
    assert_eq!(
        stdout(&o),
        "trapped\nst=138 e=\nst=143 e=pid\nkiller=0\nkilled=137\nn=0 e=running\nblocking=0 e=pid\n",
        "{}",
        stderr(&o)
    );
}

#[test]
fn the_shell_never_takes_a_spawned_commands_status() {
    // bash reaps every child whose SIGCHLD it handles; spawn holds SIGCHLD until reap, so a command that
    // ends at once is still there for reap, round after round.
    let d = lock_file();
    let o = run(&mut bash(
        "for i in $(seq 300); do spawn -p c -- /bin/sh -c 'exit 3'; : $((i * 2)); reap -p e $c; echo -n $?; done",
        d.path(),
    ));
    assert_eq!(stdout(&o), "3".repeat(300), "{}", stderr(&o));
}

/// `spawn -d`: a command nobody reaps (cbuild-run's background removal of an upper dir). SIGCHLD is left
/// as it was, so bash collects the command's status itself, and a plain `spawn` afterwards still works.
#[test]
fn spawn_d_leaves_sigchld_alone_and_bash_collects_the_status() {
    let d = lock_file();
    let o = run(&mut bash(
        "blk() { local k v; while read -r k v; do [[ $k == SigBlk: ]] && printf -v \"$1\" %s \"$v\"; done </proc/$$/status; }
         blk before
         spawn -p a -d -- /bin/sh -c 'exit 3'; rc=$?
         blk after
         /bin/sleep 0.3; /bin/true
         reap -p e $a 2>/dev/null; echo \"spawn=$rc reaped=$? same=$([[ $before == \"$after\" ]] && echo yes)\"
         spawn -p b -- /bin/sh -c 'exit 4'; blk held
         reap -p e $b; echo \"plain=$? held=$([[ $held != \"$before\" ]] && echo yes)\"",
        d.path(),
    ));
    // 127: no such child any more, bash took (and dropped) its status.
    assert_eq!(stdout(&o), "spawn=0 reaped=127 same=yes\nplain=4 held=yes\n", "{}", stderr(&o));
}

/// `spawn -c`: the command gets none of the shell's descriptors from 3 up (above 9 too) but its FILEs,
/// the `-i` pipe and those `-k` keeps; without `-c`, all of them, as a `&` command would.
#[test]
fn spawn_c_closes_every_other_descriptor_but_the_kept_ones() {
    let d = lock_file();
    let o = run(&mut bash(
        "exec 3>/dev/null 7>/dev/null 9>/dev/null 12>/dev/null
         fds='for n in 3 4 5 7 9 12; do [ -e /proc/self/fd/$n ] && printf \"$n \"; done; echo'
         spawn -p c -c -k 9 -w 4 \"$1/out\" -i 5 w -- sh -c \"{ $fds; } >&4\"; exec {w}>&-; reap -p e $c
         spawn -p c -- sh -c \"$fds\"; reap -p e $c
         spawn -p c -c -- sh -c \"$fds\"; reap -p e $c
         echo \"rc=$?\"",
        d.path(),
    ));
    assert_eq!(std::fs::read_to_string(d.path().join("out")).unwrap(), "4 5 9 \n", "{}", stderr(&o));
    assert_eq!(stdout(&o), "3 7 9 12 \n\nrc=0\n", "{}", stderr(&o));
}

/// The shell's write into an `-i` pipe returns before the command reads, up to 1 MiB: bash runs a trap
/// only once a builtin's write returns, and cbuild-run's arguments (a pipe's default 64 KiB and more) once
/// held a TERM back until cbuild-ns had read them, by when the command could have started.
#[test]
fn spawn_i_pipe_takes_a_mebibyte_before_the_reader_reads() {
    let d = lock_file();
    let o = run(&mut bash(
        "spawn -p c -i 5 w -- sh -c 'sleep 1; : > \"$0/reading\"; wc -c <&5' \"$1\"
         printf '%01000000d' 0 >&$w
         [ -e \"$1/reading\" ] && echo waited || echo returned
         exec {w}>&-; reap -p e $c; echo \"rc=$?\"",
        d.path(),
    ));
    assert_eq!(stdout(&o), "returned\n1000000\nrc=0\n", "{}", stderr(&o));
}

#[test]
fn spawn_and_reap_bad_input_is_one_line_and_starts_nothing() {
    let d = lock_file();
    for (line, code, msg) in [
        ("spawn -- true", 2, "spawn: -p VAR is required"),
        ("spawn -p c", 2, "spawn: missing COMMAND"),
        ("spawn -p c -w 12 f true", 2, "spawn: 12: N must be a descriptor from 0 to 9"),
        ("spawn -p c -x true", 2, "spawn: -x: unknown option"),
        ("spawn -p c -k 9 true", 2, "spawn: -k is for -c"),
        ("spawn -p c -c -k 12 true", 2, "spawn: -k: -k needs a descriptor from 0 to 9"),
        ("spawn -p c -- no-such-command-cbuild", 127, "spawn: no-such-command-cbuild: command not found"),
        ("spawn -p c -- /nonexistent/cbuild", 127, "spawn: /nonexistent/cbuild: No such file or directory"),
        ("spawn -p c -w 4 /nonexistent/dir/f -- true", 1, "spawn: /nonexistent/dir/f: No such file or directory"),
        ("reap -p e", 2, "reap: missing PID"),
        ("reap 1", 2, "reap: -p VAR is required"),
        ("reap -p e 1", 127, "reap: 1: No child processes"),
    ] {
        // `${c-unset}`: a failed spawn sets no PID.
        let script = format!("{line}; echo \"rc=$? c=${{c-unset}}\"");
        assert_one_line(d.path(), &script, &format!("rc={code} c=unset\n"), msg);
    }
}

/// What the scripts do with `mkdir`, `rmdir` and `rm`, against the same words run by coreutils: the same
/// exit status and the same files left, one error line each; no fork.
#[test]
fn mkdir_rmdir_rm_end_as_coreutils_do() {
    let d = lock_file();
    // Each line runs in a fresh $1/t, once with the builtins and once with coreutils (`enable -n`).
    let cases = [
        "mkdir t/a",
        "mkdir t/a/b",
        "mkdir -p t/a/b//c/ && mkdir -p t/a/b/c",
        "mkdir t/x",
        "mkdir -p t/f/sub",
        "rmdir t/x",
        "rmdir t/d",
        "rmdir t/nothere",
        "rm t/f",
        "rm t/nothere",
        "rm -f t/nothere t/f",
        "rm t/d",
        "rm -r t/d",
        "rm -rf t/d t/f t/nothere",
        "rm -fr t/d/e",
        "rm -R -f t/d/l t/d/fifo",
        "mv -T t/x t/y",
        "mv -f t/f t/g && mv t/g t/h",
        "mv -T -f t/f t/out/o",
        "mv -T t/x t/d",
        "mv -T t/nothere t/z",
        "mv -T t/d/l t/l2",
    ];
    let setup = "rm_tree() { command /bin/rm -rf \"$@\"; }; cd \"$1\" && rm_tree t && \
                 /bin/mkdir -p t/x t/d/e/g t/out && echo f > t/f && echo o > t/out/o && \
                 ln -s \"$PWD/t/out\" t/d/l && ln -s \"$PWD/t/out/o\" t/d/e/lo && mkfifo t/d/fifo";
    let listing = "find t -printf '%y %p\\n' | sort";
    for line in cases {
        let ours = run(&mut bash(&format!("{setup}; {line}; echo rc=$?; {listing}"), d.path()));
        let theirs =
            run(&mut bash(&format!("enable -n mkdir rmdir rm mv; {setup}; {line}; echo rc=$?; {listing}"), d.path()));
        assert_eq!(stdout(&ours), stdout(&theirs), "{line}: ours {} / coreutils {}", stderr(&ours), stderr(&theirs));
        assert_eq!(stderr(&ours).lines().count(), stderr(&theirs).lines().count(), "{line}: {}", stderr(&ours));
        assert!(
            stdout(&ours).contains("f t/out/o") || line.contains("t/out/o"),
            "{line}: the link's target survives: {}",
            stdout(&ours)
        );
    }
    // mv renames only: a directory TO without -T (mv(1) would move FROM into it) is refused, one line,
    // status 1, nothing moved; so is a bad option or a missing operand (status 2).
    for (line, code, msg) in [
        ("mv t/x t/d", 1, "mv: t/d: a directory: only renames here (mv -T, or mv(1))"),
        ("mv -x t/x t/y", 2, "mv: -x: unknown option"),
        ("mv -T t/x", 2, "mv: usage: mv [-f] [-T] FROM TO"),
        ("mv -T t/x t/y t/z", 2, "mv: usage: mv [-f] [-T] FROM TO"),
    ] {
        assert_one_line(
            d.path(),
            &format!("{setup}; {line}; echo rc=$?; {listing} | grep -c ' t/x$'"),
            &format!("rc={code}\n1\n"),
            msg,
        );
    }
    // No fork: the builtins run in the shell itself.
    let o = run(Command::new("strace")
        .args(["-f", "-qq", "-e", "trace=fork,vfork,clone,clone3,execve", "-o"])
        .arg(d.path().join("trace"))
        .arg("bash")
        .args(["-c", &format!("enable -f '{}' mkdir rmdir rm mv || exit 9; cd \"$1\" && mkdir -p a/b && rmdir a/b && mv -T a/ b && rm -r b && mkdir a && rm -rf a", bin_dir().join("libcbuild_builtins.so").display()), "bash"])
        .arg(d.path()));
    assert!(o.status.success(), "{}", stderr(&o));
    let trace = std::fs::read_to_string(d.path().join("trace")).unwrap();
    assert!(processes_made(&trace).is_empty(), "a process was made: {trace}");
}

/// `rm -r` refuses `/`, `.` and `..`, and leaves a tree deeper than it goes (64 levels) whole, status 1,
/// for rm(1); usage errors are status 2.
#[test]
fn rm_refuses_the_root_and_leaves_deep_trees_to_rm1() {
    let d = lock_file();
    for (line, code, msg) in [
        ("rm -rf /", 1, "rm: /: refusing to remove '/', '.' or '..'"),
        ("rm -rf .", 1, "rm: .: refusing to remove '/', '.' or '..'"),
        ("rm -r \"$1\"/..", 1, "refusing to remove '/', '.' or '..'"),
        ("rm -x f", 2, "rm: -x: unknown option"),
        ("rm", 2, "rm: missing operand"),
        ("mkdir -m 700 x", 2, "mkdir: -m: unknown option"),
        ("rmdir", 2, "rmdir: missing operand"),
    ] {
        assert_one_line(d.path(), &format!("cd \"$1\"; {line}; echo rc=$?"), &format!("rc={code}\n"), msg);
    }
    assert!(d.path().exists());
    // 128 nested directories: the builtin stops at 64 and leaves all of it; rm(1) then removes it.
    let o = run(&mut bash(
        "cd \"$1\" && p=d && for i in 1 2 3 4 5 6 7; do p=$p/$p; done && mkdir -p deep/$p && \
         rm -rf deep; echo rc=$?; [ -d deep/$p ] && echo whole; /bin/rm -rf deep && [ ! -e deep ] && echo gone",
        d.path(),
    ));
    assert_eq!(stdout(&o), "rc=1\nwhole\ngone\n", "{}", stderr(&o));
    assert!(stderr(&o).contains("deeper than 64 levels"), "{}", stderr(&o));
}
