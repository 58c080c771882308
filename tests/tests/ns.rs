//! cbuild-ns against the real kernel: every namespace type observed from inside, the root filesystem,
//! capabilities, no_new_privs, seccomp, --init, exit codes, rootless use, persist/join, the fd protocols,
//! inspect, nsenter's escape defences, and bad input leaving nothing behind.

use cbuild_tests::*;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn ns(sb: &Sandbox) -> Command {
    require_root();
    tool("cbuild-ns", sb)
}

/// `cbuild-ns run ARGS -- sh -c SCRIPT` on the shared busybox rootfs.
fn run_sh(sb: &Sandbox, args: &[&str], script: &str) -> Output {
    let mut c = ns(sb);
    c.arg("run").args(args).arg("--rootfs").arg(busybox_rootfs()).args(["--", "sh", "-c", script]);
    run(&mut c)
}

fn ok(o: &Output) -> String {
    assert!(o.status.success(), "exit {:?}\nstdout: {}\nstderr: {}", o.status, stdout(o), stderr(o));
    stdout(o)
}

fn host_inode(ty: &str) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/proc/self/ns/{ty}")).unwrap().ino()
}

/// A CLOEXEC pipe: the test process spawns many children in parallel threads, and a pipe end leaking into
/// an unrelated child would keep it from ever reaching EOF.
fn pipe() -> (OwnedFd, OwnedFd) {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap()
}

/// Make `fd` appear as `target` in the child (dup2 clears CLOEXEC on the copy).
fn pass_fd(cmd: &mut Command, fd: &OwnedFd, target: i32) {
    let raw = fd.as_raw_fd();
    unsafe {
        cmd.pre_exec(move || {
            // dup2 onto itself is a no-op that leaves CLOEXEC set: clear it explicitly then.
            let r = if raw == target { libc::fcntl(raw, libc::F_SETFD, 0) } else { libc::dup2(raw, target) };
            if r < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

#[test]
fn uts_pid_net_ipc_cgroup_namespaces_seen_from_inside() {
    let sb = Sandbox::new();
    let o = run_sh(
        &sb,
        &["--all", "--hostname", "inner-host", "--domainname", "inner.dom"],
        "hostname; cat /proc/sys/kernel/domainname; echo pid=$$; ps -o pid,comm; ip -o link; \
         for t in ipc cgroup net uts pid mnt; do echo ns-$t=$(stat -L -c %i /proc/self/ns/$t); done; \
         cat /proc/self/cgroup",
    );
    let out = ok(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "inner-host");
    assert_eq!(lines[1], "inner.dom");
    assert_eq!(lines[2], "pid=1", "the command is PID 1 of its pid namespace");
    // ps sees only the shell (PID 1) and itself.
    let ps: Vec<&str> =
        out.lines().skip_while(|l| !l.contains("PID")).skip(1).take_while(|l| !l.contains(": lo")).collect();
    assert!(ps.len() <= 2 && ps[0].trim().starts_with("1 "), "ps output: {ps:?}");
    let links: Vec<&str> = out.lines().filter(|l| l.contains(": <") || l.contains("link/")).collect();
    assert_eq!(links.len(), 1, "an empty net namespace has only lo: {links:?}");
    assert!(links[0].contains(": lo:"));
    assert!(!links[0].contains(",UP"), "the kernel makes lo down: {}", links[0]);
    // --loopback brings it up, so 127.0.0.1 answers.
    let o =
        run_sh(&sb, &["--net", "--loopback"], "ip -o link show lo; ping -c1 -W2 127.0.0.1 >/dev/null && echo ping-ok");
    let lo = ok(&o);
    assert!(lo.contains(",UP") && lo.contains("ping-ok"), "{lo}");
    for t in ["ipc", "cgroup", "net", "uts", "pid", "mnt"] {
        let line = out.lines().find(|l| l.starts_with(&format!("ns-{t}="))).unwrap();
        let ino: u64 = line.split('=').nth(1).unwrap().parse().unwrap();
        assert_ne!(ino, host_inode(t), "{t} namespace must differ from the host's");
    }
    // In a new cgroup namespace the process's own cgroup is the root.
    assert!(out.lines().filter(|l| l.contains("::") || l.contains(':')).any(|l| l.ends_with(":/")), "{out}");
    assert_ne!(nix::unistd::gethostname().unwrap().to_str().unwrap(), "inner-host", "the host was renamed");
}

#[test]
fn time_namespace_offsets_shift_uptime() {
    let sb = Sandbox::new();
    let o = run_sh(&sb, &["--time-offset", "boottime=86400,monotonic=86400"], "cut -d. -f1 /proc/uptime");
    let inside: u64 = ok(&o).trim().parse().unwrap();
    let host: u64 = std::fs::read_to_string("/proc/uptime").unwrap().split('.').next().unwrap().parse().unwrap();
    assert!(inside >= host + 86400 - 5 && inside <= host + 86400 + 60, "inside {inside}, host {host}");
}

#[test]
fn mount_isolation_and_rootfs_layout() {
    let sb = Sandbox::new();
    let marker = sb.path().join("host-marker");
    std::fs::write(&marker, "x").unwrap();
    let o = run_sh(
        &sb,
        &["--all", "--tmpfs", "/scratch:size=1m,mode=1777"],
        "mount | grep -c ' /scratch ' ; ls /dev | sort | tr '\\n' ' '; echo; \
         test -e /proc/kcore && wc -c < /proc/kcore || echo nokcore; cat /proc/keys | wc -c; \
         echo x > /proc/sysrq-trigger 2>/dev/null && echo sysrq-writable || echo sysrq-ro; \
         touch /sys/x 2>/dev/null && echo sys-writable || echo sys-ro; \
         ls / | grep -c host-marker || true",
    );
    let out = ok(&o);
    let l: Vec<&str> = out.lines().collect();
    assert_eq!(l[0], "1", "the tmpfs is mounted inside");
    for d in
        ["null", "zero", "full", "random", "urandom", "tty", "pts", "shm", "ptmx", "fd", "stdin", "stdout", "stderr"]
    {
        assert!(l[1].split(' ').any(|x| x == d), "/dev lacks {d}: {}", l[1]);
    }
    assert!(l[2] == "0" || l[2] == "nokcore", "/proc/kcore must be masked: {}", l[2]);
    assert_eq!(l[3], "0", "/proc/keys must be masked");
    assert_eq!(l[4], "sysrq-ro");
    assert_eq!(l[5], "sys-ro");
    assert_eq!(l[6], "0", "the host's root must not be visible after pivot_root");
    // Nothing of the container's mounts reached the host.
    assert!(mounts_under(busybox_rootfs().to_str().unwrap()).is_empty());
    assert!(!std::fs::read_to_string("/proc/self/mountinfo").unwrap().contains(" /scratch "));
}

/// The six device nodes as the host's: same type, numbers and 0666 mode; writable and readable.
fn check_devices(out: &str) {
    for (name, numbers) in
        [("null", "1,3"), ("zero", "1,5"), ("full", "1,7"), ("random", "1,8"), ("urandom", "1,9"), ("tty", "5,0")]
    {
        let line = out.lines().find(|l| l.ends_with(&format!("/dev/{name}"))).unwrap_or_else(|| panic!("{out}"));
        assert!(line.starts_with("crw-rw-rw-"), "{line}");
        assert!(line.split_whitespace().collect::<String>().contains(numbers), "{line}");
    }
    assert!(out.contains("\nio-ok\n"), "{out}");
}

const DEVICES_SCRIPT: &str = "ls -l /dev/null /dev/zero /dev/full /dev/random /dev/urandom /dev/tty; \
     echo x >/dev/null && [ \"$(head -c 3 /dev/zero | wc -c)\" = 3 ] && head -c 8 /dev/urandom >/dev/null && echo io-ok; \
     grep -c ' /dev/[a-z]*random \\| /dev/null \\| /dev/zero \\| /dev/full \\| /dev/tty ' /proc/self/mountinfo || true";

#[test]
fn device_nodes_are_made_with_mknod_as_root() {
    // As runc does: nodes of their own, no bind mount per device for the namespace to carry.
    let sb = Sandbox::new();
    let out = ok(&run_sh(&sb, &["--all"], DEVICES_SCRIPT));
    check_devices(&out);
    assert_eq!(out.lines().last(), Some("0"), "no device is a bind mount: {out}");
}

#[test]
fn device_nodes_are_bind_mounted_where_mknod_is_refused() {
    // A v1 device cgroup without `m` (mknod) but with read/write on the six: cbuild-ns falls back to
    // binding the host's nodes, which the same rules let the container open.
    let base = Path::new("/sys/fs/cgroup/devices");
    if !base.join("devices.allow").exists() {
        eprintln!("skipped: no cgroup v1 devices controller here (the v2 case is the BPF program's)");
        return;
    }
    let sb = Sandbox::new();
    let cg = base.join(unique("cbuild-test-nomknod"));
    std::fs::create_dir(&cg).unwrap();
    struct Rm(std::path::PathBuf);
    impl Drop for Rm {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir(&self.0);
        }
    }
    let _rm = Rm(cg.clone());
    std::fs::write(cg.join("devices.deny"), "a").unwrap();
    for rule in ["c 1:3 rw", "c 1:5 rw", "c 1:7 rw", "c 1:8 rw", "c 1:9 rw", "c 5:0 rw", "c 136:* rw", "c 5:2 rw"] {
        std::fs::write(cg.join("devices.allow"), rule).unwrap();
    }
    let mut c = ns(&sb);
    c.arg("run").arg("--all").arg("--rootfs").arg(busybox_rootfs()).args(["--", "sh", "-c", DEVICES_SCRIPT]);
    let procs = cg.join("cgroup.procs");
    unsafe {
        c.pre_exec(move || std::fs::write(&procs, "0"));
    }
    let out = ok(&run(&mut c));
    check_devices(&out);
    assert_eq!(out.lines().last(), Some("6"), "each device a bind mount of the host's: {out}");
}

#[test]
fn binds_and_read_only_root() {
    let sb = Sandbox::new();
    let shared = sb.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::write(shared.join("in.txt"), "from-host").unwrap();
    let ro = format!("{}:/mnt/ro:ro", shared.display());
    let rw = format!("{}:/mnt/rw", shared.display());
    let o = run_sh(
        &sb,
        &["--mount", "--read-only", "--bind", &ro, "--bind", &rw, "--tmpfs", "/tmp"],
        "cat /mnt/ro/in.txt; echo; touch /mnt/ro/x 2>/dev/null && echo ro-writable || echo ro-ok; \
         echo w > /mnt/rw/out.txt && echo rw-ok; touch /newfile 2>/dev/null && echo root-writable || echo root-ro; \
         touch /tmp/t && echo tmp-ok",
    );
    let out = ok(&o);
    assert_eq!(out, "from-host\nro-ok\nrw-ok\nroot-ro\ntmp-ok\n");
    assert_eq!(std::fs::read_to_string(shared.join("out.txt")).unwrap(), "w\n");
}

/// Docker's -v options and --mount (`--mount-spec`): `z`/`Z` accepted where SELinux is off, `rw`; an `rslave` bind sees
/// what the host mounts under its source after the container started, a default (`rprivate`) one does
/// not; `--mount` makes binds and tmpfs mounts; bad options are one line, 125.
#[test]
fn docker_bind_options_propagation_and_the_mount_flag() {
    let sb = Sandbox::new();
    let (src, flag) = (sb.path().join("src"), sb.path().join("flag"));
    std::fs::create_dir_all(src.join("sub")).unwrap();
    std::fs::create_dir(&flag).unwrap();
    std::fs::write(src.join("in.txt"), "from-host").unwrap();
    // Something propagates from the host only out of a shared mount: make the source one (the Sandbox
    // unmounts it, and what is mounted in it, when dropped).
    let st = Command::new("sh")
        .args(["-c", "mount --bind \"$1\" \"$1\" && mount --make-shared \"$1\"", "sh"])
        .arg(&src)
        .status()
        .unwrap();
    assert!(st.success(), "making the source a shared mount");
    // Each says it is ready (its binds made) and waits for the host's mount to be there.
    let start = |opts: &str, tag: &str| {
        let mut c = ns(&sb);
        c.args(["run", "--pid", "--mount", "--bind", &format!("{}:/s{opts}", src.display())]);
        // /p: a default bind of the same source beside it, private even in a tree made a slave for /s.
        c.args(["--bind", &format!("{}:/p", src.display())]);
        c.args(["--bind", &format!("{}:/flag", flag.display()), "--rootfs"]).arg(busybox_rootfs());
        let script = format!(
            ": > /flag/{tag}; while [ ! -e /flag/go ]; do sleep 0.05; done; ls /s/sub; echo --; ls /p/sub; cat /s/in.txt"
        );
        c.args(["--", "sh", "-c", &script]);
        c.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap()
    };
    let (slave, private) = (start(":rslave,z", "ready-slave"), start(":rw,Z", "ready-private"));
    let since = Instant::now();
    while !(flag.join("ready-slave").exists() && flag.join("ready-private").exists()) {
        assert!(since.elapsed() < Duration::from_secs(60), "the containers never got ready");
        std::thread::sleep(Duration::from_millis(20));
    }
    let st =
        Command::new("mount").args(["-t", "tmpfs", "-o", "size=1m", "late"]).arg(src.join("sub")).status().unwrap();
    assert!(st.success());
    std::fs::write(src.join("sub/late.txt"), "").unwrap();
    std::fs::write(flag.join("go"), "").unwrap();
    let (slave, private) = (slave.wait_with_output().unwrap(), private.wait_with_output().unwrap());
    assert_eq!(ok(&slave), "late.txt\n--\nfrom-host", "an rslave bind receives the host's later mount");
    assert_eq!(ok(&private), "--\nfrom-host", "a default bind does not");
    // --mount, both types.
    let m = format!("type=bind,source={},target=/m,readonly", src.display());
    let o = run_sh(
        &sb,
        &["--mount", "--mount-spec", &m, "--mount-spec", "type=tmpfs,target=/t,tmpfs-size=1m,tmpfs-mode=1770"],
        "cat /m/in.txt; echo; touch /m/x 2>/dev/null && echo m-writable; \
         grep ' /t ' /proc/self/mountinfo | grep -o 'size=1024k,mode=1770'",
    );
    assert_eq!(ok(&o), "from-host\nsize=1024k,mode=1770\n");
    for (flag, value, msg) in [
        ("--bind", format!("{}:/s:rshared", src.display()), "rshared: not supported"),
        ("--bind", format!("{}:/s:ro,rw", src.display()), "more than one of ro, rw"),
        ("--bind", format!("{}:/s:nocopy", src.display()), "unknown option"),
        (
            "--mount-spec",
            format!("type=bind,source={},target=/s,bind-propagation=ro", src.display()),
            "must be [r]private or [r]slave",
        ),
        ("--mount-spec", "type=volume,source=v,target=/v".to_string(), "type=volume: not supported"),
        ("--mount-spec", format!("type=bind,source={}", src.display()), "target= is required"),
    ] {
        let mut c = ns(&sb);
        c.args(["run", "--mount", flag, &value, "--rootfs"]).arg(busybox_rootfs()).args(["--", "true"]);
        assert_tool_error(&run(&mut c), "cbuild-ns", msg);
    }
}

/// /dev/shm is 64 MiB unless --shm-size says otherwise (Docker's units); a size of 0 or a bad one is
/// refused, and so is --shm-size without a root of the container's own (no /dev/shm is made then).
#[test]
fn shm_size() {
    let sb = Sandbox::new();
    let size = "grep ' /dev/shm ' /proc/self/mountinfo | grep -o 'size=[0-9]*k'";
    assert_eq!(ok(&run_sh(&sb, &["--mount"], size)), "size=65536k\n");
    assert_eq!(ok(&run_sh(&sb, &["--mount", "--shm-size", "1m"], size)), "size=1024k\n");
    assert_eq!(ok(&run_sh(&sb, &["--mount", "--shm-size=2G"], size)), "size=2097152k\n");
    for bad in ["0", "1.5m", "lots"] {
        assert_tool_error(&run_sh(&sb, &["--mount", "--shm-size", bad], "true"), "cbuild-ns", "--shm-size");
    }
    let mut c = ns(&sb);
    c.args(["run", "--mount", "--shm-size", "1m", "--", "true"]);
    assert_tool_error(&run(&mut c), "cbuild-ns", "--rootfs");
}

#[test]
fn hostile_rootfs_symlinks_cannot_redirect_mounts_to_the_host() {
    let sb = Sandbox::new();
    let root = sb.path().join("rootfs");
    copy_rootfs(&root);
    let victim = sb.path().join("victim");
    std::fs::create_dir(&victim).unwrap();
    let before = mounts_under("/");
    // The image points its mount targets at host paths: climbing out, and absolute.
    std::os::unix::fs::symlink("../../../../../../../../var", root.join("up")).unwrap();
    std::os::unix::fs::symlink(&victim, root.join("abs")).unwrap();
    std::fs::create_dir_all(root.join(victim.strip_prefix("/").unwrap())).unwrap();
    std::fs::create_dir_all(root.join("var")).unwrap();
    let mut c = ns(&sb);
    c.args(["run", "--mount", "--tmpfs", "/up", "--tmpfs", "/abs", "--rootfs"]).arg(&root);
    c.args(["--", "sh", "-c", "grep -c ' /var ' /proc/mounts; grep -c ' /abs\\| /up ' /proc/mounts; true"]);
    let o = run(&mut c);
    // Both resolve inside the root: "up" to the image's /var, "abs" to <root>/<victim path>.
    assert_eq!(ok(&o), "1\n0\n");
    assert!(mounts_under(victim.to_str().unwrap()).is_empty(), "the host's victim dir was mounted over");
    assert_eq!(mounts_under("/"), before, "a mount leaked onto the host");
}

#[test]
fn capabilities_and_no_new_privs() {
    let sb = Sandbox::new();
    let o = run_sh(
        &sb,
        &["--pid", "--cap-drop", "ALL", "--cap-add", "net_bind_service,CAP_KILL", "--no-new-privs"],
        "grep -E '^(CapEff|CapPrm|CapBnd|NoNewPrivs)' /proc/self/status",
    );
    let out = ok(&o);
    let want = format!("{:016x}", (1u64 << 10) | (1u64 << 5));
    for key in ["CapEff", "CapPrm", "CapBnd"] {
        let line = out.lines().find(|l| l.starts_with(key)).unwrap();
        assert!(line.ends_with(&want), "{line}, want {want}");
    }
    assert!(out.contains("NoNewPrivs:\t1"));

    let o = run_sh(&sb, &["--cap-drop", "ALL", "--cap-add", "DOCKER_DEFAULT"], "grep CapEff /proc/self/status");
    assert!(ok(&o).trim().ends_with("00000000a80425fb"), "Docker's default set");

    // Dropped CAP_NET_RAW is really gone: a raw socket fails.
    let o = run_sh(&sb, &["--net", "--cap-drop", "NET_RAW"], "ping -c1 -W1 127.0.0.1 >/dev/null 2>&1; echo rc=$?");
    assert!(ok(&o).contains("rc=1") || ok(&o).contains("rc=2"), "{}", stdout(&o));
}

#[test]
fn user_and_supplementary_groups_from_the_image() {
    let sb = Sandbox::new();
    let o = run_sh(&sb, &["--user", "user"], "id -u; id -g; id -G; echo $HOME");
    assert_eq!(ok(&o), "1000\n1000\n1000 2000\n/home/user\n");
    let o = run_sh(&sb, &["--user", "1234:5678", "--group-add", "extra"], "id -u; id -g; id -G");
    assert_eq!(ok(&o), "1234\n5678\n5678 2000\n");
    // A non-root user holds no capabilities after exec (as in Docker).
    let o = run_sh(&sb, &["--user", "1000"], "grep CapEff /proc/self/status");
    assert!(ok(&o).trim().ends_with("0000000000000000"));
}

/// setresuid(2) reads -1 as "leave unchanged": `--user 4294967295` ran the command as root. Ids above
/// 2^31-1 are refused, as runc refuses them, before the command runs.
#[test]
fn ids_out_of_range_are_refused_not_run_as_root() {
    let sb = Sandbox::new();
    for args in [&["--user", "4294967295"][..], &["--user", "1000:4294967295"], &["--group-add", "2147483648"]] {
        let o = run_sh(&sb, args, "echo ran as $(id -u):$(id -g)");
        assert_tool_error(&o, "cbuild-ns", "id out of range (0 to 2147483647)");
        assert!(!stdout(&o).contains("ran as"), "{args:?}: the command ran: {}", stdout(&o));
    }
    let o = run_sh(&sb, &["--user", "2147483647:2147483647"], "id -u; id -g");
    assert_eq!(ok(&o), "2147483647\n2147483647\n");
}

#[test]
fn rlimits_applied_and_raising_hard_limit_reported() {
    let sb = Sandbox::new();
    let o = run_sh(&sb, &["--rlimit", "nofile=64:128"], "ulimit -n; ulimit -Hn");
    assert_eq!(ok(&o), "64\n128\n");
    // This machine's root lacks CAP_SYS_RESOURCE: raising the hard limit must fail clearly.
    let mut cur = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut cur) };
    let has_sys_resource = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find(|l| l.starts_with("CapEff"))
        .map(|l| u64::from_str_radix(l.split_whitespace().nth(1).unwrap(), 16).unwrap() & (1 << 24) != 0)
        .unwrap();
    if cur.rlim_max != libc::RLIM_INFINITY && !has_sys_resource {
        let want = format!("nofile={}:{}", cur.rlim_max + 1, cur.rlim_max + 1);
        let o = run_sh(&sb, &["--rlimit", &want], "true");
        assert_tool_error(&o, "cbuild-ns", "rlimit: nofile");
        assert!(stderr(&o).contains("CAP_SYS_RESOURCE"), "{}", stderr(&o));
    }
}

/// Raw cBPF: errno EPERM for mkdir/mkdirat on x86_64, allow everything else.
fn deny_mkdir_bpf() -> Vec<u8> {
    const LD_W_ABS: u16 = 0x20;
    const JEQ_K: u16 = 0x15;
    const RET_K: u16 = 0x06;
    let insns: [(u16, u8, u8, u32); 7] = [
        (LD_W_ABS, 0, 0, 4),            // arch
        (JEQ_K, 0, 4, 0xc000_003e),     // AUDIT_ARCH_X86_64, else allow
        (LD_W_ABS, 0, 0, 0),            // nr
        (JEQ_K, 2, 0, 83),              // mkdir
        (JEQ_K, 1, 0, 258),             // mkdirat
        (RET_K, 0, 0, 0x7fff_0000),     // SECCOMP_RET_ALLOW
        (RET_K, 0, 0, 0x0005_0000 | 1), // SECCOMP_RET_ERRNO | EPERM
    ];
    let mut v = vec![];
    for (code, jt, jf, k) in insns {
        v.extend_from_slice(&code.to_ne_bytes());
        v.push(jt);
        v.push(jf);
        v.extend_from_slice(&k.to_ne_bytes());
    }
    v
}

#[test]
fn seccomp_program_from_file_and_fd_blocks_a_syscall() {
    let sb = Sandbox::new();
    let bpf = sb.path().join("deny-mkdir.bpf");
    std::fs::write(&bpf, deny_mkdir_bpf()).unwrap();
    let script = "mkdir /tmp/d 2>&1; echo rc=$?; touch /tmp/f && echo touch-ok; grep -E '^Seccomp' /proc/self/status";
    let o = run_sh(&sb, &["--mount", "--tmpfs", "/tmp", "--no-new-privs", "--seccomp", bpf.to_str().unwrap()], script);
    let out = ok(&o);
    assert!(out.contains("Operation not permitted") && out.contains("rc=1"), "{out}");
    assert!(out.contains("touch-ok"));
    assert!(out.contains("Seccomp:\t2") && out.contains("Seccomp_filters:\t1"), "{out}");

    // The same program through --seccomp-fd.
    let f = std::fs::File::open(&bpf).unwrap();
    let fd: OwnedFd = f.into();
    let mut c = ns(&sb);
    c.args(["run", "--mount", "--tmpfs", "/tmp", "--seccomp-fd", "5", "--rootfs"]).arg(busybox_rootfs());
    c.args(["--", "sh", "-c", "mkdir /tmp/d 2>/dev/null; echo rc=$?"]);
    pass_fd(&mut c, &fd, 5);
    assert_eq!(ok(&run(&mut c)), "rc=1\n");

    // Not a BPF program: a clear error before anything runs.
    let junk = sb.path().join("junk.bpf");
    std::fs::write(&junk, b"12345").unwrap();
    let o = run_sh(&sb, &["--seccomp", junk.to_str().unwrap()], "true");
    assert_tool_error(&o, "cbuild-ns", "seccomp");
}

#[test]
fn init_reaps_orphaned_zombies() {
    let sb = Sandbox::new();
    // A background job makes an orphan (the inner shell exits at once, so its sleep is re-parented to
    // PID 1) and counts zombies later, while the command itself becomes `sleep`, which never reaps.
    let script = "(sh -c 'sleep 0.2 & exit 0'; sleep 1; ps -o pid,stat,comm | grep -c ' Z ') & exec sleep 1.5";
    let o = run_sh(&sb, &["--pid", "--init"], script);
    assert_eq!(ok(&o).trim(), "0", "a zombie was left: init did not reap");
    // Control: without --init, sleep is PID 1 and the orphan stays a zombie.
    let o = run_sh(&sb, &["--pid"], script);
    assert_eq!(stdout(&o).trim(), "1", "control: the orphan should be a zombie without an init");
}

#[test]
fn init_forwards_sigterm_and_exits_143() {
    let sb = Sandbox::new();
    let (status_r, status_w) = pipe();
    let mut c = ns(&sb);
    c.args(["run", "--pid", "--init", "--status-fd", "7", "--rootfs"])
        .arg(busybox_rootfs())
        .args(["--", "sleep", "30"]);
    pass_fd(&mut c, &status_w, 7);
    let mut child = c.stdin(Stdio::null()).spawn().unwrap();
    drop(status_w);
    let mut r = std::io::BufReader::new(std::fs::File::from(status_r));
    // Wait for the exec phase: the command is running.
    let mut line = String::new();
    while !line.contains("\"exec\"") {
        line.clear();
        assert!(std::io::BufRead::read_line(&mut r, &mut line).unwrap() > 0, "status fd closed early");
    }
    std::thread::sleep(Duration::from_millis(100));
    let t0 = Instant::now();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGTERM).unwrap();
    let st = child.wait().unwrap();
    assert_eq!(st.code(), Some(143), "SIGTERM forwarded to sleep, exit 128+15");
    assert!(t0.elapsed() < Duration::from_secs(10));
    let mut rest = String::new();
    r.read_to_string(&mut rest).unwrap();
    assert!(rest.contains("\"exit_code\":143"), "{rest}");
}

#[test]
fn exit_codes() {
    let sb = Sandbox::new();
    assert_eq!(run_sh(&sb, &["--pid"], "exit 7").status.code(), Some(7));
    // Killed by a signal: reported as 128+N.
    assert_eq!(run_sh(&sb, &["--pid", "--init"], "kill -KILL $$").status.code(), Some(137));

    let mut c = ns(&sb);
    c.args(["run", "--pid", "--rootfs"]).arg(busybox_rootfs()).args(["--", "no-such-cmd"]);
    let o = run(&mut c);
    assert_eq!(o.status.code(), Some(127), "{}", stderr(&o));
    assert!(stderr(&o).starts_with("cbuild-ns: exec: no-such-cmd: "));

    let root = sb.path().join("rootfs");
    copy_rootfs(&root);
    std::fs::write(root.join("bin/noexec"), "#!/bin/sh\necho hi\n").unwrap();
    std::fs::set_permissions(root.join("bin/noexec"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut c = ns(&sb);
    c.args(["run", "--pid", "--rootfs"]).arg(&root).args(["--", "/bin/noexec"]);
    assert_eq!(run(&mut c).status.code(), Some(126));
}

#[test]
fn status_fd_tells_tool_failure_from_command_exiting_125() {
    let sb = Sandbox::new();
    let status_of = |args: &[&str], cmd: &[&str]| -> (Option<i32>, String) {
        let (r, w) = pipe();
        let mut c = ns(&sb);
        c.args(["run", "--status-fd", "6"]).args(args).arg("--").args(cmd);
        pass_fd(&mut c, &w, 6);
        let child = c.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
        drop(w);
        let mut s = String::new();
        std::fs::File::from(r).read_to_string(&mut s).unwrap();
        (child.wait_with_output().unwrap().status.code(), s)
    };
    let root = busybox_rootfs().to_str().unwrap().to_string();
    let (code, s) = status_of(&["--pid", "--rootfs", &root], &["sh", "-c", "exit 125"]);
    assert_eq!(code, Some(125));
    assert!(
        s.contains("\"phase\":\"exec\"") && s.contains("\"phase\":\"exited\"") && s.contains("\"exit_code\":125"),
        "{s}"
    );
    let (code, s) = status_of(&["--pid", "--rootfs", "/nonexistent-root"], &["true"]);
    assert_eq!(code, Some(125));
    assert!(s.contains("\"phase\":\"failed\"") && s.contains("\"step\":\"rootfs\""), "{s}");
    assert!(!s.contains("\"exited\""));
}

/// The `exited` record names the signal that killed the command, `--init` or not. With `--init` the
/// supervisor's child is PID 1, which exits 128+N: the record used to lack `signal`, as if the command
/// had exited 128+N itself.
#[test]
fn status_record_names_the_commands_signal_with_and_without_init() {
    let sb = Sandbox::new();
    let exited = |args: &[&str], script: &str| -> (Option<i32>, serde_json::Value) {
        let (r, w) = pipe();
        let mut c = ns(&sb);
        c.args(["run", "--status-fd", "6"]).args(args).arg("--rootfs").arg(busybox_rootfs());
        c.args(["--", "sh", "-c", script]);
        pass_fd(&mut c, &w, 6);
        let child = c.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
        drop(w);
        let mut s = String::new();
        std::fs::File::from(r).read_to_string(&mut s).unwrap();
        let o = child.wait_with_output().unwrap();
        let last = s.lines().last().unwrap_or_else(|| panic!("no status line; stderr: {}", stderr(&o)));
        let rec: serde_json::Value = serde_json::from_str(last).unwrap();
        assert_eq!(rec["phase"], "exited", "{s}");
        (o.status.code(), rec)
    };
    // Without --pid the command is not a namespace's PID 1, so it can die of its own SIGTERM.
    for args in [&[][..], &["--pid", "--init"]] {
        let (code, rec) = exited(args, "kill -TERM $$");
        assert_eq!(code, Some(143), "{args:?}");
        assert_eq!(rec["exit_code"], 143, "{args:?}: {rec}");
        assert_eq!(rec["signal"], 15, "{args:?}: {rec}");
        let (code, rec) = exited(args, "kill -KILL $$");
        assert_eq!((code, &rec["exit_code"], &rec["signal"]), (Some(137), &137.into(), &9.into()), "{args:?}");
        // A command that exits 143 itself was not killed.
        let (code, rec) = exited(args, "exit 143");
        assert_eq!(code, Some(143), "{args:?}");
        assert_eq!(rec["exit_code"], 143, "{args:?}: {rec}");
        assert!(rec.get("signal").is_none(), "{args:?}: {rec}");
    }
}

#[test]
fn persist_and_join_round_trip() {
    let sb = Sandbox::new();
    let name = unique("ns");
    let mut c = ns(&sb);
    c.args(["run", "--net", "--uts", "--ipc", "--mount", "--hostname", "persisted", "--persist", &name, "--", "true"]);
    ok(&run(&mut c));
    let dir = sb.state.join(&name).join("ns");
    let _cleanup = Defer(|| {
        let _ = Command::new(bin("cbuild-ns")).env("CBUILD_STATE", &sb.state).args(["unpersist", &name]).status();
    });
    for t in ["net", "uts", "ipc", "mnt"] {
        assert!(dir.join(t).exists(), "{t} persisted");
    }
    // Four namespace files, plus the directory's own private mount that a mount namespace needs.
    assert_eq!(mounts_under(dir.to_str().unwrap()).len(), 5);
    // Join by NAME and by directory.
    let mut c = ns(&sb);
    c.args(["exec", "--ns-dir", &name, "--", "hostname"]);
    assert_eq!(ok(&run(&mut c)), "persisted\n");
    let mut c = ns(&sb);
    c.arg("run").arg("--join").arg(format!("uts={}", dir.join("uts").display())).args(["--", "hostname"]);
    assert_eq!(ok(&run(&mut c)), "persisted\n");
    // The same net namespace as ip(8) sees through the file.
    let o = run(Command::new("nsenter").arg(format!("--net={}", dir.join("net").display())).args(["ip", "-o", "link"]));
    assert_eq!(ok(&o).lines().count(), 1);

    let mut c = ns(&sb);
    c.args(["unpersist", &name]);
    ok(&run(&mut c));
    assert!(!dir.exists());
    assert!(mounts_under(sb.state.to_str().unwrap()).is_empty());
}

/// One NAME, two tools (the contract: each removes only its own): `unpersist NAME` released cbuild-net's
/// `netns add NAME` namespace too, under the records of the containers connected to it. Now it releases
/// what cbuild-ns persisted there and nothing else, and a NAME where it persisted nothing is refused.
#[test]
fn unpersist_name_leaves_the_namespace_cbuild_net_made() {
    use std::os::unix::fs::MetadataExt;
    let sb = Sandbox::new();
    let name = unique("ns");
    let dir = sb.state.join(&name).join("ns");
    let _cleanup = Defer(|| {
        let _ = tool("cbuild-ns", &sb).args(["unpersist", &name]).stderr(Stdio::null()).status();
        let _ = tool("cbuild-net", &sb).args(["netns", "del", &name]).stderr(Stdio::null()).status();
    });
    ok(&run(tool("cbuild-net", &sb).args(["netns", "add", &name])));
    let net = std::fs::metadata(dir.join("net")).unwrap().ino();
    // Nothing of cbuild-ns's there yet.
    assert_tool_error(
        &run(ns(&sb).args(["unpersist", &name])),
        "cbuild-ns",
        "no namespace persisted here by cbuild-ns",
    );
    assert_eq!(std::fs::metadata(dir.join("net")).unwrap().ino(), net);
    // cbuild-ns persists the container's other namespaces beside it, joining its net namespace.
    let mut c = ns(&sb);
    c.args(["run", "--uts", "--ipc", "--hostname", "shared", "--join"]).arg(format!("net={name}"));
    c.args(["--persist", &name, "--", "true"]);
    ok(&run(&mut c));
    assert!(dir.join("uts").exists() && dir.join("ipc").exists());
    ok(&run(ns(&sb).args(["unpersist", &name])));
    assert!(!dir.join("uts").exists() && !dir.join("ipc").exists());
    // cbuild-net's namespace is still there, still bound, and still its own to remove.
    assert_eq!(std::fs::metadata(dir.join("net")).unwrap().ino(), net);
    ok(&run(tool("cbuild-net", &sb).args(["netns", "del", &name])));
    assert!(!sb.state.join(&name).exists());
    assert!(mounts_under(sb.state.to_str().unwrap()).is_empty());

    // The other order, with a mount namespace: cbuild-ns's private bind of the directory (which a mount
    // namespace needs) is taken over by `netns add` as its shared one, `net` on it. unpersist must leave
    // that bind, or `net` goes with it.
    let mut c = ns(&sb);
    c.args(["run", "--mount", "--uts", "--persist", &name, "--", "true"]);
    ok(&run(&mut c));
    ok(&run(tool("cbuild-net", &sb).args(["netns", "add", &name])));
    let net = std::fs::metadata(dir.join("net")).unwrap().ino();
    ok(&run(ns(&sb).args(["unpersist", &name])));
    assert!(!dir.join("mnt").exists() && !dir.join("uts").exists() && !dir.join(".cbuild-ns").exists());
    assert_eq!(std::fs::metadata(dir.join("net")).unwrap().ino(), net, "net went with the directory's bind");
    ok(&run(tool("cbuild-net", &sb).args(["netns", "del", &name])));
    assert!(!sb.state.join(&name).exists());
    assert!(mounts_under(sb.state.to_str().unwrap()).is_empty());

    // A FIFO planted as the list is refused at once, not waited on.
    std::fs::create_dir_all(&dir).unwrap();
    nix::unistd::mkfifo(&dir.join(".cbuild-ns"), nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let o = run(ns(&sb).args(["unpersist", &name]).stdin(Stdio::null()));
    assert_tool_error(&o, "cbuild-ns", "not a list cbuild-ns wrote");
}

/// CMD's arguments reach the command byte for byte (bwrap and unshare pass them so): a Latin-1 file name
/// was a usage error, in `run` and in `exec`.
#[test]
fn run_and_exec_pass_arguments_that_are_not_utf8() {
    use std::os::unix::ffi::OsStrExt;
    let sb = Sandbox::new();
    let arg = std::ffi::OsStr::from_bytes(b"caf\xe9 \xff");
    let o = run(ns(&sb).args(["run", "--uts", "--", "printf", "%s"]).arg(arg));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(o.stdout, arg.as_bytes());
    let me = std::process::id().to_string();
    let o = run(ns(&sb).args(["exec", "--target", &me, "--ns", "uts", "--", "printf", "%s"]).arg(arg));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(o.stdout, arg.as_bytes());
    let o = run(ns(&sb).args(["run", "--uts", "--"]).arg(std::ffi::OsStr::from_bytes(b"/nonexistent/\xe9")));
    assert_eq!(o.status.code(), Some(127), "{}", stderr(&o));
}

#[test]
fn persist_refuses_the_name_net() {
    // <state>/net is cbuild-net's (bridges, leases, its nft lock): the contract makes `net` no NAME, as
    // cbuild-net netns add and cbuild-run refuse it. cbuild-ns persisted into <state>/net/ns, where a
    // bridge named `ns` has its directory.
    let sb = Sandbox::new();
    let mut c = ns(&sb);
    c.args(["run", "--net", "--persist", "net", "--", "true"]);
    let o = run(&mut c);
    let _cleanup = Defer(|| {
        let _ = Command::new(bin("cbuild-ns")).env("CBUILD_STATE", &sb.state).args(["unpersist", "net"]).status();
    });
    assert_eq!(o.status.code(), Some(125), "stderr: {}", stderr(&o));
    assert!(stderr(&o).contains("reserved"), "{}", stderr(&o));
    assert!(!sb.state.join("net").exists(), "nothing made");
    // A path is the caller's choice, as everywhere.
    let dir = sb.state.join("elsewhere");
    let mut c = ns(&sb);
    c.args(["run", "--net", "--persist"]).arg(&dir).args(["--", "true"]);
    ok(&run(&mut c));
    ok(&run(ns(&sb).arg("unpersist").arg(&dir)));
}

#[test]
fn unpersist_finds_its_own_bind_under_a_state_dir_that_is_not_utf8() {
    // The directory's own private bind (a persisted mount namespace needs it) is found in mountinfo by
    // its path: read as text, a state dir named with a byte that is not UTF-8 never matched, and
    // unpersist left the bind mounted and the directory behind.
    use std::os::unix::ffi::OsStrExt;
    let sb = Sandbox::new();
    let state = sb.path().join(std::ffi::OsStr::from_bytes(b"st\xff\tate"));
    std::fs::create_dir(&state).unwrap();
    let name = unique("ns");
    let dir = state.join(&name).join("ns");
    let _cleanup = Defer(|| {
        let _ = Command::new(bin("cbuild-ns")).env("CBUILD_STATE", &state).args(["unpersist", &name]).status();
        let _ = nix::mount::umount2(&dir, nix::mount::MntFlags::MNT_DETACH);
    });
    let mut c = ns(&sb);
    c.env("CBUILD_STATE", &state).args(["run", "--mount", "--persist", &name, "--", "true"]);
    ok(&run(&mut c));
    assert!(dir.join("mnt").exists());
    let mut c = ns(&sb);
    c.env("CBUILD_STATE", &state).args(["unpersist", &name]);
    ok(&run(&mut c));
    assert!(!dir.exists(), "the namespace dir and its own bind are gone");
}

#[test]
fn info_and_wait_fd_handshake() {
    let sb = Sandbox::new();
    let (info_r, info_w) = pipe();
    let (wait_r, wait_w) = pipe();
    let mut c = ns(&sb);
    c.args(["run", "--net", "--pid", "--info-fd", "3", "--wait-fd", "4", "--rootfs"]).arg(busybox_rootfs());
    c.args(["--", "sh", "-c", "echo started; ip -o link | wc -l"]);
    pass_fd(&mut c, &info_w, 3);
    pass_fd(&mut c, &wait_r, 4);
    let child = c.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    drop(info_w);
    drop(wait_r);
    let mut info = String::new();
    std::fs::File::from(info_r).read_to_string(&mut info).unwrap();
    let v: serde_json::Value = serde_json::from_str(info.trim()).unwrap();
    let pid = v["pid"].as_i64().unwrap();
    // The process is held before exec: its namespaces exist and match what was reported.
    use std::os::unix::fs::MetadataExt;
    let net_ino = std::fs::metadata(format!("/proc/{pid}/ns/net")).unwrap().ino();
    assert_eq!(v["ns"]["net"].as_u64().unwrap(), net_ino);
    assert_ne!(net_ino, host_inode("net"));
    // Plug something into the namespace while it waits, as a network tool would.
    let st = Command::new("nsenter")
        .arg(format!("--net=/proc/{pid}/ns/net"))
        .args(["ip", "link", "add", "cbv0", "type", "veth", "peer", "name", "cbv1"])
        .status()
        .unwrap();
    assert!(st.success());
    std::fs::File::from(wait_w).write_all(b"g").unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(ok(&o), "started\n3\n", "the command ran after go and saw the added links");
}

#[test]
fn wait_fd_eof_aborts_and_leaves_nothing() {
    let sb = Sandbox::new();
    let name = unique("nsw");
    let (wait_r, wait_w) = pipe();
    let mut c = ns(&sb);
    c.args(["run", "--net", "--uts", "--persist", &name, "--wait-fd", "4", "--", "true"]);
    pass_fd(&mut c, &wait_r, 4);
    let child = c.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    drop(wait_r);
    drop(wait_w);
    let o = child.wait_with_output().unwrap();
    assert_tool_error(&o, "cbuild-ns", "wait_fd");
    assert!(stderr(&o).contains("closed before go"));
    assert!(!sb.state.join(&name).exists(), "persisted namespaces undone");
    assert!(mounts_under(sb.state.to_str().unwrap()).is_empty());
}

/// `run --args N`: NUL-separated words read from fd N stand where it is (bwrap's protocol), read before
/// anything is done: the process waits for its writer, holding nothing. Empty words, a last word without
/// its NUL, `--args=N`, and words after `--` left alone. N closed before its first byte: 125 and no
/// message (the writer says why). Not nested, not a closed fd, not stdout or stderr, not more than 8 MiB;
/// stdin, once read, is /dev/null for the command.
#[test]
fn args_fd_words_stand_where_it_is() {
    let sb = Sandbox::new();
    let name = unique("nsa");
    let (r, w) = pipe();
    let mut c = ns(&sb);
    c.args(["run", "--persist", &name, "--args", "5", "--rootfs"]).arg(busybox_rootfs());
    pass_fd(&mut c, &r, 5);
    let child = c.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    drop(r);
    // It waits for the words before making anything: no namespace persisted yet.
    std::thread::sleep(Duration::from_millis(300));
    assert!(!sb.state.join(&name).exists(), "nothing made before the arguments came");
    let mut w = std::fs::File::from(w);
    w.write_all(b"--uts\0--hostname\0from-fd\0--\0sh\0-c\0echo \"$(hostname) [$1] [$2]\"; ls /proc/self/fd | wc -l\0")
        .unwrap();
    w.write_all(b"x\0\0--args\x005").unwrap();
    drop(w);
    let o = child.wait_with_output().unwrap();
    // sh's $0 is x, $1 the empty word, $2 "--args" (after `--`: the command's), $3 "5" (no NUL after it).
    assert_eq!(ok(&o), "from-fd [] [--args]\n4\n", "fd 5 read and closed: 0-2 and ls's own");
    assert_eq!(run(tool("cbuild-ns", &sb).args(["unpersist", &name])).status.code(), Some(0));

    // Closed empty: the writer gave up; one error line is its own.
    let (r, w) = pipe();
    let mut c = ns(&sb);
    c.args(["run", "--net", "--persist", &name, "--args=5", "--", "true"]);
    pass_fd(&mut c, &r, 5);
    let child = c.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    drop((r, w));
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(125), "{}", stderr(&o));
    assert_eq!(stderr(&o), "", "silent: the writer reports");
    assert!(!sb.state.join(&name).exists() && mounts_under(sb.state.to_str().unwrap()).is_empty());

    let with_words = |words: &[u8], fd: &str| {
        let (r, w) = pipe();
        let mut c = ns(&sb);
        c.args(["run", "--net", "--args", fd, "--", "true"]);
        pass_fd(&mut c, &r, 5);
        let child = c.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        drop(r);
        let mut w = std::fs::File::from(w);
        let writer = {
            let words = words.to_vec();
            std::thread::spawn(move || {
                let _ = w.write_all(&words);
            })
        };
        let o = child.wait_with_output().unwrap();
        writer.join().unwrap();
        o
    };
    assert_tool_error(&with_words(b"--args\x005\0", "5"), "cbuild-ns", "args");
    assert!(stderr(&with_words(b"--args\x005\0", "5")).contains("not inside what --args gave"));
    let o = with_words(b"", "7");
    assert_tool_error(&o, "cbuild-ns", "args");
    assert!(stderr(&o).contains("fd 7: not an open file descriptor"), "{}", stderr(&o));
    assert!(stderr(&with_words(b"", "five")).contains("wants a file descriptor number"));
    // stdout and stderr carry this process's own output; stdin, once read, is /dev/null for the command.
    for fd in ["1", "2"] {
        let o = run(ns(&sb).args(["run", "--args", fd, "--", "true"]));
        assert_tool_error(&o, "cbuild-ns", "is stdout or stderr");
    }
    let mut c = ns(&sb);
    c.args(["run", "--args", "0", "--rootfs"]).arg(busybox_rootfs());
    let mut child = c.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(b"--\0sh\0-c\0readlink /proc/self/fd/0; cat\0").unwrap();
    assert_eq!(ok(&child.wait_with_output().unwrap()), "/dev/null\n");
    let o = with_words(&vec![b'a'; (8 << 20) + 1], "5");
    assert_tool_error(&o, "cbuild-ns", "args");
    assert!(stderr(&o).contains("more than 8 MiB"), "{}", stderr(&o));
}

/// A long-running container for exec/inspect tests, killed on drop.
struct Running {
    child: std::process::Child,
    pid: i32,
}

impl Running {
    fn start(sb: &Sandbox, args: &[&str]) -> Running {
        let (info_r, info_w) = pipe();
        let mut c = ns(sb);
        c.args(["run", "--info-fd", "3"]).args(args).arg("--rootfs").arg(busybox_rootfs()).args(["--", "sleep", "60"]);
        pass_fd(&mut c, &info_w, 3);
        let child = c.stdin(Stdio::null()).stdout(Stdio::null()).spawn().unwrap();
        drop(info_w);
        let mut info = String::new();
        std::fs::File::from(info_r).read_to_string(&mut info).unwrap();
        let v: serde_json::Value = serde_json::from_str(info.trim()).unwrap();
        let pid = v["pid"].as_i64().unwrap() as i32;
        // Wait until it has exec'd sleep.
        let t0 = Instant::now();
        while std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default().trim() != "sleep" {
            assert!(t0.elapsed() < Duration::from_secs(10), "container did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Running { child, pid }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn inspect_reports_namespaces_nspid_caps_and_seccomp() {
    let sb = Sandbox::new();
    let bpf = sb.path().join("f.bpf");
    std::fs::write(&bpf, deny_mkdir_bpf()).unwrap();
    let c = Running::start(
        &sb,
        &[
            "--pid",
            "--net",
            "--uts",
            "--cap-drop",
            "ALL",
            "--cap-add",
            "DOCKER_DEFAULT",
            "--no-new-privs",
            "--seccomp",
            bpf.to_str().unwrap(),
        ],
    );
    let mut cmd = ns(&sb);
    cmd.args(["inspect", "--json", &c.pid.to_string()]);
    let v: serde_json::Value = serde_json::from_str(&ok(&run(&mut cmd))).unwrap();
    let nsmap: std::collections::HashMap<String, bool> = v["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (n["type"].as_str().unwrap().to_string(), n["host"].as_bool().unwrap()))
        .collect();
    assert!(!nsmap["net"]);
    assert!(!nsmap["pid"]);
    assert!(!nsmap["uts"]);
    assert!(nsmap["ipc"]);
    assert!(nsmap["user"]);
    let nspid: Vec<i64> = v["nspid"].as_array().unwrap().iter().map(|x| x.as_i64().unwrap()).collect();
    assert_eq!(nspid, vec![c.pid as i64, 1]);
    let eff: Vec<&str> =
        v["capabilities"]["effective"]["names"].as_array().unwrap().iter().map(|x| x.as_str().unwrap()).collect();
    assert_eq!(eff.len(), 14);
    assert!(eff.contains(&"CAP_NET_RAW") && !eff.contains(&"CAP_SYS_ADMIN"));
    assert_eq!(v["seccomp"]["mode"], "filter");
    assert_eq!(v["seccomp"]["filters"], 1);
    assert_eq!(v["no_new_privs"], true);
    // The human form says the same.
    let mut cmd = ns(&sb);
    cmd.args(["inspect", &c.pid.to_string()]);
    let text = ok(&run(&mut cmd));
    assert!(text.contains("seccomp      filter (1 filters)") && text.contains("CAP_NET_RAW"), "{text}");
    // Bad input.
    let mut cmd = ns(&sb);
    cmd.args(["inspect", "not-a-pid"]);
    assert_tool_error(&run(&mut cmd), "cbuild-ns", "not-a-pid");
}

#[test]
fn exec_joins_a_running_container() {
    let sb = Sandbox::new();
    let c = Running::start(&sb, &["--pid", "--net", "--uts", "--hostname", "target-box"]);
    let mut cmd = ns(&sb);
    cmd.args(["exec", "--target", &c.pid.to_string(), "--", "sh", "-c", "hostname; ps -o pid,comm | grep -c sleep"]);
    assert_eq!(ok(&run(&mut cmd)), "target-box\n1\n");
    // A seccomp program applies to the joined process too (as docker exec applies the container's).
    let bpf = sb.path().join("deny-mkdir.bpf");
    std::fs::write(&bpf, deny_mkdir_bpf()).unwrap();
    let mut cmd = ns(&sb);
    cmd.args(["exec", "--seccomp", bpf.to_str().unwrap(), "--target", &c.pid.to_string()]);
    cmd.args(["--", "sh", "-c", "mkdir /tmp/x 2>/dev/null; echo rc=$?"]);
    assert_eq!(ok(&run(&mut cmd)), "rc=1\n");
    // The exit code passes through.
    let mut cmd = ns(&sb);
    cmd.args(["exec", "--target", &c.pid.to_string(), "--", "sh", "-c", "exit 9"]);
    assert_eq!(run(&mut cmd).status.code(), Some(9));
}

/// The caller's supplementary groups (a host's `disk` or `docker` group) never reach the container, in
/// `run` or `exec`: without --user it has root's groups from the image's /etc/group (none here), as runc.
#[test]
fn the_callers_supplementary_groups_stay_outside() {
    let sb = Sandbox::new();
    // The caller holds groups 4242 and 27 (set in the child before cbuild-ns starts; no setpriv needed).
    let with_groups = |c: &mut Command| unsafe {
        c.pre_exec(|| {
            let gs: [libc::gid_t; 2] = [4242, 27];
            if libc::setgroups(gs.len(), gs.as_ptr()) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    };
    let mut c = ns(&sb);
    c.args(["run", "--pid", "--mount", "--rootfs"]).arg(busybox_rootfs()).args(["--", "id", "-G"]);
    with_groups(&mut c);
    assert_eq!(ok(&run(&mut c)), "0\n");
    let t = Running::start(&sb, &["--pid", "--net"]);
    let mut c = ns(&sb);
    c.args(["exec", "--target", &t.pid.to_string(), "--", "id", "-G"]);
    with_groups(&mut c);
    assert_eq!(ok(&run(&mut c)), "0\n");
}

/// `--preserve-fds N` hands the command the caller's fds 3..3+N-1 only: one the caller did not open is an
/// error before anything is made (cbuild-ns's own fds would take its number), and so is one that is also
/// one of cbuild-ns's own `--*-fd`s.
#[test]
fn preserve_fds_must_be_the_callers_own() {
    let sb = Sandbox::new();
    let mut c = ns(&sb);
    c.args(["run", "--pid", "--mount", "--net", "--preserve-fds", "1", "--rootfs"]).arg(busybox_rootfs());
    c.args(["--", "ls", "/proc/self/fd"]);
    // Whatever this test process inherited at fd 3 (a test harness may hold one), cbuild-ns gets none.
    unsafe {
        c.pre_exec(|| {
            libc::close(3);
            Ok(())
        });
    }
    assert_tool_error(&run(&mut c), "cbuild-ns", "fd 3");
    let (r, w) = pipe();
    let mut c = ns(&sb);
    c.args(["run", "--pid", "--mount", "--status-fd", "3", "--preserve-fds", "1", "--rootfs"]).arg(busybox_rootfs());
    c.args(["--", "true"]);
    pass_fd(&mut c, &w, 3);
    assert_tool_error(&run(&mut c), "cbuild-ns", "--status-fd");
    drop((r, w));
}

/// As Docker: a --workdir the image lacks is made (root's, 0755), and a user the image's /etc/passwd
/// does not list has HOME=/.
#[test]
fn a_missing_workdir_is_made_and_an_unlisted_user_has_home_slash() {
    let sb = Sandbox::new();
    let root = sb.path().join("rootfs");
    copy_rootfs(&root);
    let mut c = ns(&sb);
    c.args(["run", "--pid", "--mount", "--clear-env", "-w", "/made/here", "-u", "4321", "--rootfs"]).arg(&root);
    c.args(["--", "sh", "-c", "pwd; echo HOME=$HOME"]);
    assert_eq!(ok(&run(&mut c)), "/made/here\nHOME=/\n");
    let md = std::fs::metadata(root.join("made/here")).unwrap();
    assert_eq!((md.permissions().mode() & 0o7777, std::os::unix::fs::MetadataExt::uid(&md)), (0o755, 0));
}

/// `--env` in order, a NAME alone unsetting NAME (what an earlier --env or cbuild-ns's own environment
/// gave), as Docker's daemon reads an entry without `=`; an empty name is refused.
#[test]
fn env_in_order_and_a_name_alone_unsets_it() {
    let sb = Sandbox::new();
    let mut c = ns(&sb);
    c.env("CBT_OWN", "inherited").args(["run", "--env", "A=1", "--env", "A", "--env", "B=1", "--env", "B=2"]);
    c.args(["--env", "CBT_OWN", "--", "sh", "-c", "echo ${A-unset} $B ${CBT_OWN-unset}"]);
    assert_eq!(ok(&run(&mut c)), "unset 2 unset\n");
    // HOSTNAME too, which cbuild-ns otherwise defaults to --hostname.
    let mut c = ns(&sb);
    c.args(["run", "--uts", "--hostname", "h", "--clear-env", "--env", "HOSTNAME=x", "--env", "HOSTNAME"]);
    // (env itself, not a shell: busybox's ash sets a HOSTNAME variable of its own.)
    c.args(["--", "env"]);
    let out = ok(&run(&mut c));
    assert!(!out.lines().any(|l| l.starts_with("HOSTNAME=")), "{out}");
    let mut c = ns(&sb);
    c.args(["run", "--env", "=x", "--", "true"]);
    let o = run(&mut c);
    assert_eq!(o.status.code(), Some(125), "{}", stderr(&o));
}

/// Mount destinations mean what they mean in the container: `..` is cleaned away (`/tmp/../opt` is
/// `/opt`), a symlink on the way resolves from the container's root (`/a/b -> /c`: `/a/b/new` is
/// `/c/new`), and `/` itself is refused. A --tmpfs is nosuid,nodev,noexec unless told otherwise.
#[test]
fn mount_destinations_and_tmpfs_defaults() {
    let sb = Sandbox::new();
    let root = sb.path().join("rootfs");
    copy_rootfs(&root);
    std::fs::create_dir_all(root.join("a")).unwrap();
    std::fs::create_dir_all(root.join("c")).unwrap();
    std::os::unix::fs::symlink("/c", root.join("a/b")).unwrap();
    let src = sb.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("mark"), "here").unwrap();
    let mut c = ns(&sb);
    c.args(["run", "--pid", "--mount"]);
    c.args(["--bind", &format!("{}:/tmp/../opt", src.display())]);
    c.args(["--bind", &format!("{}:/a/b/new", src.display())]);
    c.args(["--tmpfs", "/t1", "--tmpfs", "/t2:exec,size=1m", "--rootfs"]).arg(&root);
    c.args([
        "--",
        "sh",
        "-c",
        "cat /opt/mark; echo; cat /c/new/mark; echo; \
         for m in /t1 /t2; do grep \" $m \" /proc/self/mountinfo | cut -d' ' -f6; done",
    ]);
    let out = ok(&run(&mut c));
    assert_eq!(out, "here\nhere\nrw,nosuid,nodev,noexec,relatime\nrw,nosuid,nodev,relatime\n");
    assert!(!root.join("tmp/opt").exists(), "/tmp/../opt made /tmp/opt");
    assert!(!root.join("a/c").exists(), "the symlink was resolved from its parent");
    for (flag, dst) in [("--bind", format!("{}:/", src.display())), ("--tmpfs", "/tmp/..".to_string())] {
        let mut c = ns(&sb);
        c.args(["run", "--mount", flag, &dst, "--rootfs"]).arg(&root).args(["--", "true"]);
        assert_tool_error(&run(&mut c), "cbuild-ns", "cannot be /");
    }
}

#[test]
fn exec_does_not_leak_host_fds() {
    // CVE-2024-21626: an fd the caller left open (here fd 5, not CLOEXEC) must not reach the container.
    let sb = Sandbox::new();
    let c = Running::start(&sb, &["--pid", "--net"]);
    let host_dir: OwnedFd = std::fs::File::open("/sys/fs/cgroup").unwrap().into();
    let mut cmd = ns(&sb);
    cmd.args(["exec", "--target", &c.pid.to_string(), "--", "ls", "/proc/self/fd"]);
    pass_fd(&mut cmd, &host_dir, 5);
    let fds: Vec<String> = ok(&run(&mut cmd)).split_whitespace().map(str::to_string).collect();
    assert!(!fds.contains(&"5".to_string()), "host fd leaked: {fds:?}");
    assert!(fds.len() <= 4, "{fds:?}");
    // --preserve-fds passes exactly the named ones.
    let mut cmd = ns(&sb);
    cmd.args(["exec", "--preserve-fds", "1", "--target", &c.pid.to_string(), "--", "ls", "/proc/self/fd"]);
    pass_fd(&mut cmd, &host_dir, 3);
    pass_fd(&mut cmd, &host_dir, 5);
    let fds: Vec<String> = ok(&run(&mut cmd)).split_whitespace().map(str::to_string).collect();
    assert!(fds.contains(&"3".to_string()) && !fds.contains(&"5".to_string()), "{fds:?}");
    // The same for run.
    let mut cmd = ns(&sb);
    cmd.args(["run", "--pid", "--", "ls", "/proc/self/fd"]);
    pass_fd(&mut cmd, &host_dir, 5);
    let fds: Vec<String> = ok(&run(&mut cmd)).split_whitespace().map(str::to_string).collect();
    assert!(!fds.contains(&"5".to_string()), "host fd leaked into run: {fds:?}");
}

#[test]
fn exec_process_exe_is_unreachable_from_the_container() {
    // CVE-2019-5736: while `cbuild-ns exec` is inside the container (held here by --wait-fd), a container
    // process must not be able to reach the host binary through /proc/PID/exe.
    let sb = Sandbox::new();
    let c = Running::start(&sb, &["--pid", "--mount", "--cap-drop", "ALL", "--cap-add", "DOCKER_DEFAULT"]);
    let (wait_r, wait_w) = pipe();
    let mut held = ns(&sb);
    held.args(["exec", "--target", &c.pid.to_string(), "--wait-fd", "4", "--", "true"]);
    pass_fd(&mut held, &wait_r, 4);
    let held_child = held.stdin(Stdio::null()).spawn().unwrap();
    drop(wait_r);
    // Wait for the held process to appear in the container's pid namespace (as a child of the exec).
    let t0 = Instant::now();
    let held_pid = loop {
        if let Some(k) = child_of(held_child.id() as i32) {
            break k;
        }
        assert!(t0.elapsed() < Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(20));
    };
    let status = std::fs::read_to_string(format!("/proc/{held_pid}/status")).unwrap();
    let inner: i32 =
        status.lines().find(|l| l.starts_with("NSpid")).unwrap().split_whitespace().last().unwrap().parse().unwrap();
    let script = format!(
        "test -d /proc/{inner} && echo visible; readlink /proc/{inner}/exe && echo LINK-READ; \
         cat /proc/{inner}/exe > /dev/null 2>&1 && echo EXE-OPENED; echo done"
    );
    let mut cmd = ns(&sb);
    cmd.args(["exec", "--target", &c.pid.to_string(), "--", "sh", "-c", &script]);
    let out = stdout(&run(&mut cmd));
    std::fs::File::from(wait_w).write_all(b"g").unwrap();
    let o = held_child.wait_with_output().unwrap();
    assert!(o.status.success());
    assert!(out.contains("visible"), "the held exec process should be in the container's pid namespace: {out}");
    assert!(!out.contains("LINK-READ") && !out.contains("EXE-OPENED"), "host binary reachable: {out}");
}

#[test]
fn rootless_run_as_an_unprivileged_user() {
    require_root();
    let sb = Sandbox::new();
    // A user of our own (shadow's useradd also allocates /etc/subuid ranges); the test VM has no useradd
    // but comes with `user` (1000) and its subordinate ranges.
    let in_vm = std::env::var_os("CBUILD_IN_VM").is_some() && !Path::new("/usr/sbin/useradd").exists();
    let user = if in_vm { "user".to_string() } else { unique("cbu") };
    if !in_vm {
        let st = Command::new("useradd").args(["--create-home", "--shell", "/bin/sh", &user]).status().unwrap();
        assert!(st.success(), "creating user {user}");
    }
    let _del = Defer(|| {
        if !in_vm {
            let _ = Command::new("pkill").args(["-KILL", "-u", &user]).status();
            let _ = Command::new("userdel").args(["--remove", &user]).stderr(Stdio::null()).status();
        }
    });
    let uid: u32 = stdout(&run(Command::new("id").args(["-u", &user]))).trim().parse().unwrap();
    // A world-readable copy of the binary and the rootfs: the build tree may not be reachable by the user.
    let dir = sb.path();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let nsbin = dir.join("cbuild-ns");
    std::fs::copy(bin("cbuild-ns"), &nsbin).unwrap();
    let root = dir.join("rootfs");
    copy_rootfs(&root);
    let user_run = |args: &[&str], script: &str| -> Output {
        let mut c = Command::new(&nsbin);
        c.uid(uid).gid(uid).env_clear().env("USER", &user).env("HOME", format!("/home/{user}"));
        c.env("CBUILD_STATE", dir.join("user-state"));
        c.arg("run").args(args).arg("--rootfs").arg(&root).args(["--", "sh", "-c", script]);
        run(&mut c)
    };
    let o = user_run(
        &["--map-root-user", "--all"],
        "id -u; cat /proc/self/uid_map; hostname x && hostname; ps -o pid | wc -l",
    );
    let out = ok(&o);
    let l: Vec<&str> = out.lines().collect();
    assert_eq!(l[0], "0", "root inside");
    let map: Vec<&str> = l[1].split_whitespace().collect();
    assert_eq!(map, vec!["0", &uid.to_string(), "1"]);
    assert_eq!(l[2], "x");
    // Through newuidmap: a whole subordinate range.
    if idmap_available(&user) {
        let o = user_run(
            &["--map-auto", "--pid", "--tmpfs", "/scratch"],
            "cat /proc/self/uid_map | wc -l; chown 1000 /scratch && stat -c %u /scratch",
        );
        let out = ok(&o);
        assert_eq!(out, "2\n1000\n", "root and 1..65536 mapped");
    }
    // `exec` into such a container (by root, as `cbuild-exec` does) is its root, not the overflow uid of
    // the caller's unmapped one, and `--user` works though setgroups is denied there.
    let mut c = Command::new(&nsbin);
    c.uid(uid).gid(uid).env_clear().env("USER", &user).env("CBUILD_STATE", dir.join("user-state"));
    c.args(["run", "--map-root-user", "--all", "--rootfs"]).arg(&root).args(["--", "sleep", "30"]);
    let (mut held, target, _kill) = held_container(&mut c);
    for extra in [&[][..], &["--user", "0"][..]] {
        let mut e = ns(&sb);
        e.args(["exec", "--target", &target.to_string()]).args(extra).args(["--", "id"]);
        let o = run(&mut e);
        assert_eq!(
            stdout(&o).split_whitespace().take(2).collect::<Vec<_>>(),
            ["uid=0(root)", "gid=0(root)"],
            "{extra:?}: {}",
            stderr(&o)
        );
    }
    let _ = Command::new("kill").args(["-KILL", &target.to_string()]).status();
    let _ = held.wait();
    // An unprivileged user cannot map IDs that are not theirs: a clear error, exit 125.
    let o = user_run(&["--userns", "--uid-map", "0:0:1", "--gid-map", "0:0:1"], "true");
    assert_tool_error(&o, "cbuild-ns", "uid_map");
}

/// A child of `ppid`, found through /proc/*/stat (CONFIG_PROC_CHILDREN is not always built).
fn child_of(ppid: i32) -> Option<i32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: i32 = e.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // The field after the parenthesised command name: state, then ppid.
        let rest = &stat[stat.rfind(')')? + 2..];
        let parent: i32 = rest.split(' ').nth(1)?.parse().ok()?;
        (parent == ppid).then_some(pid)
    })
}

fn idmap_available(user: &str) -> bool {
    Path::new("/usr/bin/newuidmap").exists()
        && std::fs::read_to_string("/etc/subuid")
            .unwrap_or_default()
            .lines()
            .any(|l| l.starts_with(&format!("{user}:")))
}

#[test]
fn bad_input_fails_cleanly() {
    let sb = Sandbox::new();
    let name = unique("nsb");
    let persist = sb.state.join(&name);
    // A FIFO where a namespace file should be: refused, not waited on for ever.
    let fifo = sb.path().join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec!["--join".into(), format!("ipc={}", fifo.display())], "not a namespace file"),
        (vec!["--rootfs".into(), "/nonexistent/rootfs".into()], "rootfs: /nonexistent/rootfs"),
        (vec!["--uid-map".into(), "0:x:1".into()], "--uid-map 0:x:1"),
        (
            ["--uid-map", "0:1000:10", "--uid-map", "5:2000:1", "--gid-map", "0:1000:10"].map(String::from).to_vec(),
            "overlap",
        ),
        (vec!["--uid-map".into(), "0:1000:10".into()], "--uid-map: needs a --gid-map too"),
        (vec!["--gid-map".into(), "0:1000:10".into()], "no uid map"),
        (
            ["--info-fd", "9", "--status-fd", "9"].map(String::from).to_vec(),
            "fd 9: given to both --info-fd and --status-fd",
        ),
        (vec!["--read-only".into()], "--read-only: needs --rootfs"),
        (vec!["--cap-add".into(), "CAP_BOGUS".into()], "capabilities: CAP_BOGUS"),
        (vec!["--info-fd".into(), "99".into()], "fd 99"),
        (vec!["--join".into(), "net=/nonexistent".into()], "join: /nonexistent"),
        (vec!["--join".into(), "ipc=/proc/self/ns/uts".into()], "not a ipc namespace"),
        (vec!["--tmpfs".into(), "/x:bogus".into()], "unknown mount option"),
        (vec!["--rlimit".into(), "nofile=10:5".into()], "rlimit"),
        // A --status-fd that is not open was adopted, then closed as ours: std aborted (exit 134) with
        // a second line after the error, whichever input was refused.
        (vec!["--status-fd".into(), "97".into()], "fds: fd 97: not an open file descriptor"),
        (["--status-fd", "97", "--rootfs", "/nonexistent/rootfs"].map(String::from).to_vec(), "rootfs: /nonexistent"),
    ];
    for (args, needle) in cases {
        let mut c = ns(&sb);
        c.args(["run", "--net", "--uts", "--persist", &name]).args(&args).args(["--", "true"]);
        let o = run(&mut c);
        assert_tool_error(&o, "cbuild-ns", needle);
        assert_eq!(
            stderr(&o).lines().filter(|l| l.starts_with("cbuild-ns:")).count(),
            1,
            "one error line: {}",
            stderr(&o)
        );
        assert!(!persist.exists(), "{args:?} left {}", persist.display());
    }
    // A missing command is 127, with the namespaces already undone.
    let mut c = ns(&sb);
    c.args(["run", "--net", "--persist", &name, "--rootfs"]).arg(busybox_rootfs()).args(["--", "/no/such"]);
    assert_eq!(run(&mut c).status.code(), Some(127));
    assert!(!persist.exists());
    // Unknown flag: still exit 125 and one line.
    let mut c = ns(&sb);
    c.args(["run", "--bogus-flag", "--", "true"]);
    assert_tool_error(&run(&mut c), "cbuild-ns", "bogus");
    assert!(mounts_under(sb.path().to_str().unwrap()).is_empty());
}

#[test]
fn hostile_dev_symlink_cannot_plant_links_on_the_host() {
    let sb = Sandbox::new();
    let root = sb.path().join("rootfs");
    copy_rootfs(&root);
    let host_dir = sb.path().join("host-dir");
    std::fs::create_dir(&host_dir).unwrap();
    std::fs::remove_dir(root.join("dev")).unwrap();
    std::os::unix::fs::symlink(&host_dir, root.join("dev")).unwrap();
    // The image's /dev points at a host directory; whatever happens, nothing may appear there.
    let mut c = ns(&sb);
    c.args(["run", "--pid", "--rootfs"]).arg(&root).args(["--", "true"]);
    let _ = run(&mut c);
    assert_eq!(std::fs::read_dir(&host_dir).unwrap().count(), 0, "links planted in a host directory");
    assert!(mounts_under(host_dir.to_str().unwrap()).is_empty());
}

#[test]
fn read_only_sys_and_binds_are_read_only_all_the_way_down() {
    let sb = Sandbox::new();
    // A bind source with a mount inside it: `:ro` must cover the submount too.
    let src = sb.path().join("src");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    let st = Command::new("mount").args(["-t", "tmpfs", "tmpfs"]).arg(src.join("sub")).status().unwrap();
    assert!(st.success());
    let bind = format!("{}:/mnt/ro:ro", src.display());
    let o = run_sh(
        &sb,
        &["--pid", "--bind", &bind, "--cap-drop", "ALL", "--cap-add", "DOCKER_DEFAULT"],
        "mkdir /sys/fs/cgroup/pids/cbuild-escape 2>/dev/null && echo CGROUP-WRITABLE; \
         touch /mnt/ro/sub/x 2>/dev/null && echo SUBMOUNT-WRITABLE; echo done",
    );
    let out = ok(&o);
    let _ = std::fs::remove_dir("/sys/fs/cgroup/pids/cbuild-escape");
    assert_eq!(out, "done\n", "{out}");
}

#[test]
fn command_gets_default_sigpipe_and_no_inheritable_caps() {
    let sb = Sandbox::new();
    let o = run_sh(&sb, &["--pid"], "grep -E '^(SigIgn|CapInh)' /proc/self/status");
    let out = ok(&o);
    let ign = out.lines().find(|l| l.starts_with("SigIgn")).unwrap().split_whitespace().nth(1).unwrap().to_string();
    let ign = u64::from_str_radix(&ign, 16).unwrap();
    assert_eq!(ign & (1 << (libc::SIGPIPE - 1)), 0, "SIGPIPE ignored in the command: {out}");
    assert!(out.contains("CapInh:\t0000000000000000"), "{out}");
}

#[test]
fn persisted_time_namespace_keeps_its_offsets() {
    let sb = Sandbox::new();
    let name = unique("nst");
    let mut c = ns(&sb);
    c.args(["run", "--time-offset", "boottime=100000", "--persist", &name, "--", "true"]);
    ok(&run(&mut c));
    let _cleanup = Defer(|| {
        let _ = Command::new(bin("cbuild-ns")).env("CBUILD_STATE", &sb.state).args(["unpersist", &name]).status();
    });
    let mut c = ns(&sb);
    c.args(["exec", "--ns-dir", &name, "--", "cat", "/proc/uptime"]);
    let inside: f64 = ok(&run(&mut c)).split_whitespace().next().unwrap().parse().unwrap();
    let host: f64 =
        std::fs::read_to_string("/proc/uptime").unwrap().split_whitespace().next().unwrap().parse().unwrap();
    assert!(inside > host + 99_000.0, "inside {inside}, host {host}");
}

#[test]
fn child_killed_during_set_up_is_a_tool_failure() {
    let sb = Sandbox::new();
    let (info_r, info_w) = pipe();
    let (wait_r, wait_w) = pipe();
    let (status_r, status_w) = pipe();
    let mut c = ns(&sb);
    c.args(["run", "--pid", "--info-fd", "3", "--wait-fd", "4", "--status-fd", "5", "--", "true"]);
    pass_fd(&mut c, &info_w, 3);
    pass_fd(&mut c, &wait_r, 4);
    pass_fd(&mut c, &status_w, 5);
    let child = c.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    drop((info_w, wait_r, status_w));
    let mut info = String::new();
    std::fs::File::from(info_r).read_to_string(&mut info).unwrap();
    let v: serde_json::Value = serde_json::from_str(info.trim()).unwrap();
    let pid = v["pid"].as_i64().unwrap() as i32;
    // Give it time to reach the wait, then kill it there.
    std::thread::sleep(Duration::from_millis(200));
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL).unwrap();
    let o = child.wait_with_output().unwrap();
    drop(wait_w);
    let mut status = String::new();
    std::fs::File::from(status_r).read_to_string(&mut status).unwrap();
    assert_tool_error(&o, "cbuild-ns", "before exec");
    assert!(status.contains("\"phase\":\"failed\"") && !status.contains("\"exited\""), "{status}");
}

#[test]
fn init_pid1_holds_no_host_fds_nor_extra_privileges() {
    let sb = Sandbox::new();
    let host_dir: OwnedFd = std::fs::File::open(sb.path()).unwrap().into();
    let mut c = ns(&sb);
    c.args(["run", "--pid", "--init", "--no-new-privs", "--cap-drop", "ALL", "--cap-add", "DOCKER_DEFAULT"]);
    c.arg("--rootfs").arg(busybox_rootfs());
    c.args([
        "--",
        "sh",
        "-c",
        "ls /proc/1/fd 2>&1; readlink /proc/1/exe && echo EXE-READ; grep -E '^(CapEff|NoNewPrivs)' /proc/1/status",
    ]);
    pass_fd(&mut c, &host_dir, 7);
    let out = ok(&run(&mut c));
    assert!(!out.contains("EXE-READ"), "{out}");
    assert!(!out.lines().any(|l| l.split_whitespace().any(|w| w == "7")), "PID 1 kept the host fd: {out}");
    assert!(out.contains("CapEff:\t00000000a80425fb") && out.contains("NoNewPrivs:\t1"), "{out}");
}

/// With a cgroup namespace of its own the container finds its cgroups at /sys/fs/cgroup, as with Docker:
/// each hierarchy's root is its own cgroup (a limit set from outside reads back inside, whatever the
/// layout: v1, hybrid or pure v2), no other cgroup of the host is visible, and nothing can be written.
#[test]
fn own_cgroups_at_sys_fs_cgroup_read_only() {
    let sb = Sandbox::new();
    let name = unique("cgfs");
    let mut c = tool("cbuild-cgroup", &sb);
    c.args(["exec", &name, "--pids", "33", "--"]).arg(bin("cbuild-ns")).args(["run", "--all", "--rootfs"]);
    c.arg(busybox_rootfs()).args([
        "--",
        "sh",
        "-c",
        "cat /sys/fs/cgroup/pids/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids.max; \
         echo subdirs: $(find /sys/fs/cgroup -mindepth 2 -type d | grep -v '^/sys/fs/cgroup/unified/' | wc -l); \
         mkdir /sys/fs/cgroup/x 2>/dev/null && echo WRITABLE; \
         for f in /sys/fs/cgroup/pids/pids.max /sys/fs/cgroup/pids.max; do \
           [ -e $f ] && { echo 1 >$f; } 2>/dev/null && echo WRITABLE; done; \
         grep -c ':/$' /proc/self/cgroup >/dev/null && echo rooted",
    ]);
    let o = run(&mut c);
    let _ = run(tool("cbuild-cgroup", &sb).args(["rm", "--force", &name]));
    let out = ok(&o);
    let mut l = out.lines();
    assert_eq!(l.next(), Some("33"), "the container's own pids limit: {out}");
    assert_eq!(l.next(), Some("subdirs: 0"), "no cgroup below the container's own is visible: {out}");
    assert_eq!(l.next(), Some("rooted"), "{out}");
    assert!(!out.contains("WRITABLE"), "{out}");
}

/// /sys is a fresh sysfs of the network namespace the container is in, also when it did not make one
/// (here: the caller's, which the test makes): its devices, not the machine's.
#[test]
fn sys_shows_the_joined_network_namespace_devices() {
    let sb = Sandbox::new();
    let o = run(Command::new("unshare")
        .arg("--net")
        .arg(bin("cbuild-ns"))
        .args(["run", "--pid", "--mount", "--rootfs"])
        .arg(busybox_rootfs())
        .args(["--", "ls", "/sys/class/net"]));
    let _ = &sb;
    assert_eq!(ok(&o), "lo\n");
}

/// A caller sitting in the root cgroup of a hierarchy (as systemd leaves shells in the cpuset or freezer
/// roots) must not hand the container the host's whole tree: such hierarchies are not mounted.
#[test]
fn no_host_cgroup_tree_when_the_caller_sits_at_the_root() {
    let sb = Sandbox::new();
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let roots: Vec<&str> = info
        .lines()
        .filter_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            let fstype = right.split(' ').next()?;
            (fstype == "cgroup" || fstype == "cgroup2").then(|| left.split(' ').nth(4)).flatten()
        })
        .collect();
    let script = format!(
        "for r in {}; do echo $$ >$r/cgroup.procs || exit 9; done; exec \"$0\" run --all --rootfs \"$1\" -- \
         sh -c 'echo mounts: $(grep -c \" /sys/fs/cgroup\" /proc/self/mountinfo); echo entries: $(ls /sys/fs/cgroup | wc -l)'",
        roots.join(" ")
    );
    let o = run(Command::new("sh").arg("-c").arg(&script).arg(bin("cbuild-ns")).arg(busybox_rootfs()));
    let _ = &sb;
    assert_eq!(ok(&o), "mounts: 0\nentries: 0\n");
}

/// A mount destination through a symlink to something missing is made where the symlink points, inside
/// the root (runc's MkdirAllInRoot): a directory (`/data` -> `/opt/data`) and a file (an image's
/// `/etc/resolv.conf` -> `../run/resolve/stub.conf`); an absolute link never leads outside the root, and
/// a loop is a clear error.
#[test]
fn mount_targets_through_dangling_symlinks_are_made_inside_the_root() {
    let sb = Sandbox::new();
    let root = sb.path().join("rootfs");
    copy_rootfs(&root);
    std::fs::create_dir_all(root.join("opt")).unwrap();
    std::os::unix::fs::symlink("/opt/data", root.join("data")).unwrap();
    let _ = std::fs::remove_file(root.join("etc/resolv.conf"));
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::os::unix::fs::symlink("../srv/resolve/stub.conf", root.join("etc/resolv.conf")).unwrap();
    // Absolute, and pointing "above" the root: still inside it.
    let outside = sb.path().join(unique("outside"));
    std::os::unix::fs::symlink(format!("/../../..{}", outside.display()), root.join("up")).unwrap();
    std::os::unix::fs::symlink("loop", root.join("loop")).unwrap();
    let src = sb.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f"), "hi\n").unwrap();
    let conf = sb.path().join("resolv");
    std::fs::write(&conf, "nameserver 192.0.2.1\n").unwrap();
    let bind = |s: &Path, d: &str| format!("{}:{d}", s.display());
    let mut c = ns(&sb);
    c.args(["run", "--mount", "--rootfs"]).arg(&root);
    c.args([
        "--bind",
        &bind(&src, "/data/x"),
        "--bind",
        &bind(&conf, "/etc/resolv.conf"),
        "--bind",
        &bind(&src, "/up/y"),
    ]);
    c.args(["--", "sh", "-c", "cat /opt/data/x/f /etc/resolv.conf"]);
    assert_eq!(ok(&run(&mut c)), "hi\nnameserver 192.0.2.1\n");
    assert!(root.join("opt/data/x").is_dir() && root.join("srv/resolve/stub.conf").is_file());
    assert!(!outside.exists(), "a symlink led outside the root");
    assert!(root.join(outside.strip_prefix("/").unwrap()).join("y").is_dir());
    let mut c = ns(&sb);
    c.args(["run", "--mount", "--rootfs"]).arg(&root).args(["--bind", &bind(&src, "/loop/x"), "--", "true"]);
    // ELOOP, by number: its text is the C library's (musl's static build says "Symbolic link loop").
    assert_tool_error(&run(&mut c), "cbuild-ns", "(os error 40)");
}

/// `run` joining a container that has a user namespace of its own (`--join-pid`, `--join user=`): the
/// command is that namespace's root, and the set-up does what the namespace allows (a bound /proc,
/// bound devices), as for a new one.
#[test]
fn run_joins_an_existing_user_namespace() {
    let sb = Sandbox::new();
    let mut c = ns(&sb);
    c.args(["run", "--uid-map", "0:100000:65536", "--gid-map", "0:100000:65536", "--all", "--rootfs"])
        .arg(busybox_rootfs())
        .args(["--", "sleep", "30"]);
    let (mut held, target, _kill) = held_container(&mut c);
    let user = format!("user=/proc/{target}/ns/user");
    let net = format!("net=/proc/{target}/ns/net");
    for args in [vec!["--join-pid", &target.to_string()], vec!["--join", &user, "--join", &net, "--mount"]] {
        let mut j = ns(&sb);
        j.arg("run").args(&args).arg("--rootfs").arg(busybox_rootfs()).args([
            "--",
            "sh",
            "-c",
            "id -u; cat /proc/self/uid_map",
        ]);
        let out = ok(&run(&mut j));
        let mut l = out.lines();
        assert_eq!(l.next(), Some("0"), "{args:?}: {out}");
        assert_eq!(l.next().unwrap().split_whitespace().collect::<Vec<_>>(), ["0", "100000", "65536"], "{args:?}");
    }
    let _ = Command::new("kill").args(["-KILL", &target.to_string()]).status();
    let _ = held.wait();
}

/// Spawn `c`, a `cbuild-ns run` holding a container, and wait for the container's PID 1 (its child):
/// returns both, and a guard that kills the container whatever happens after.
fn held_container(c: &mut Command) -> (Child, i32, Defer<impl FnMut()>) {
    let held = c.stdin(Stdio::null()).spawn().unwrap();
    let held_pid = held.id().to_string();
    let guard = Defer(move || {
        let _ = Command::new("pkill").args(["-KILL", "-P", &held_pid]).status();
    });
    let t0 = Instant::now();
    let target = loop {
        if let Some(k) = child_of(held.id() as i32) {
            break k;
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "the container never started");
        std::thread::sleep(Duration::from_millis(20));
    };
    (held, target, guard)
}

/// Spawn `c` with at most `limit` of address space (a set-up that reads without bound then fails rather than
/// taking the shared machine's memory) and wait at most `wait` for it (a set-up stalled for ever is killed,
/// and the test fails).
fn output_bounded(c: &mut Command, limit: u64, wait: Duration) -> Output {
    // SAFETY: setrlimit only, between fork and exec.
    unsafe {
        c.pre_exec(move || {
            let l = libc::rlimit { rlim_cur: limit, rlim_max: limit };
            if libc::setrlimit(libc::RLIMIT_AS, &l) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = c.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let t0 = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if t0.elapsed() > wait {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{c:?} still running after {wait:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// A hostile image's /etc/passwd or /etc/group is read after pivot_root, where the image decides what it
/// is: `-> /dev/zero` grew the set-up until the OOM killer came, a FIFO held it for ever (SIGKILL alone
/// ended it), a huge file was read whole. Each is now one error line, 125, before the command runs, with
/// or without --init (whose forked child resolves the user).
#[test]
fn hostile_etc_passwd_and_group_are_refused_not_read_without_bound() {
    let sb = Sandbox::new();
    let root = sb.path().join("rootfs");
    copy_rootfs(&root);
    let (passwd, group) = (root.join("etc/passwd"), root.join("etc/group"));
    let (orig_passwd, orig_group) = (std::fs::read(&passwd).unwrap(), std::fs::read(&group).unwrap());
    let run_in = |args: &[&str]| {
        let mut c = ns(&sb);
        c.args(["run", "--pid", "--mount"]).args(args).arg("--rootfs").arg(&root);
        c.args(["--", "sh", "-c", "echo ran"]);
        output_bounded(&mut c, 512 << 20, Duration::from_secs(30))
    };
    let refused = |o: &Output, needle: &str| {
        assert_tool_error(o, "cbuild-ns", needle);
        assert!(!stdout(o).contains("ran"), "the command ran: {}", stdout(o));
    };
    std::fs::remove_file(&passwd).unwrap();
    std::os::unix::fs::symlink("/dev/zero", &passwd).unwrap();
    refused(&run_in(&[]), "user: /etc/passwd: not a regular file");
    std::fs::remove_file(&passwd).unwrap();
    std::fs::write(&passwd, &orig_passwd).unwrap();

    std::fs::remove_file(&group).unwrap();
    nix::unistd::mkfifo(&group, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    for args in [&[][..], &["--init"], &["--user", "user"]] {
        refused(&run_in(args), "user: /etc/group: not a regular file");
    }
    std::fs::remove_file(&group).unwrap();
    std::fs::write(&group, &orig_group).unwrap();

    // Larger than 4 MiB: refused, not read (a partial read would be a different user table).
    let mut big = orig_passwd.clone();
    big.resize((4 << 20) + 1, b'#');
    std::fs::write(&passwd, &big).unwrap();
    refused(&run_in(&[]), "user: /etc/passwd: larger than 4 MiB");
    // Up to the cap it is read; a stray non-UTF-8 byte does not make every user unknown.
    let mut fine = orig_passwd.clone();
    fine.extend_from_slice(b"latin:x:1001:1001:Jos\xe9:/home/latin:/bin/sh\n");
    std::fs::write(&passwd, &fine).unwrap();
    let o = run_in(&["--user", "latin"]);
    assert_eq!(ok(&o), "ran\n");
}

/// SIGPIPE stayed at its default in the supervising parent: a reader of --info-fd or --status-fd that
/// went away killed it (signal 13) with no error line, leaving --persist's binds mounted, and turned the
/// command's exit code into 141. Now a gone --info-fd reader is the contract's error with everything
/// undone, and a gone --status-fd reader changes nothing.
#[test]
fn a_gone_info_or_status_reader_is_an_error_or_nothing_never_sigpipe() {
    let sb = Sandbox::new();
    let name = unique("nsp");
    let (r, w) = pipe();
    drop(r);
    let mut c = ns(&sb);
    c.args(["run", "--net", "--uts", "--mount", "--persist", &name, "--info-fd", "3", "--", "true"]);
    pass_fd(&mut c, &w, 3);
    let o = run(&mut c);
    assert_tool_error(&o, "cbuild-ns", "info_fd: fd 3");
    assert!(!sb.state.join(&name).exists(), "persisted namespaces left behind");
    assert!(mounts_under(sb.state.to_str().unwrap()).is_empty(), "persisted binds left mounted");

    let root = busybox_rootfs().to_str().unwrap();
    for (args, script, code) in [
        (&["--pid", "--rootfs", root][..], "exit 7", 7),
        // A failure before the clone writes its `failed` record too.
        (&["--pid", "--rootfs", "/nonexistent-root"], "true", 125),
    ] {
        let mut c = ns(&sb);
        c.args(["run", "--status-fd", "3"]).args(args).args(["--", "sh", "-c", script]);
        pass_fd(&mut c, &w, 3);
        let o = run(&mut c);
        assert_eq!(o.status.code(), Some(code), "{args:?}: {:?}, stderr: {}", o.status, stderr(&o));
        let lines = stderr(&o).lines().filter(|l| l.starts_with("cbuild-ns:")).count();
        assert_eq!(lines, usize::from(code == 125), "{}", stderr(&o));
    }
    drop(w);
    // The command's own SIGPIPE is still the default: command_gets_default_sigpipe_and_no_inheritable_caps.
}

/// `exec` into a persisted pid namespace whose first process has exited: fork fails with ENOMEM, and the
/// hint says why. It matched glibc's text ("Cannot allocate memory"); musl's is "Out of memory", so the
/// static build lost it (run this with CBUILD_BIN_DIR=target/static).
#[test]
fn exec_into_a_dead_pid_namespace_says_why() {
    let sb = Sandbox::new();
    let name = unique("nsd");
    let mut c = ns(&sb);
    c.args(["run", "--pid", "--uts", "--persist", &name, "--", "true"]);
    ok(&run(&mut c));
    let _cleanup = Defer(|| {
        let _ = Command::new(bin("cbuild-ns")).env("CBUILD_STATE", &sb.state).args(["unpersist", &name]).status();
    });
    let mut c = ns(&sb);
    c.args(["exec", "--ns-dir", &name, "--", "true"]);
    let o = run(&mut c);
    assert_tool_error(&o, "cbuild-ns", "fork: exec");
    assert!(stderr(&o).contains("hint: the pid namespace's first process has exited"), "{}", stderr(&o));
}

/// `unpersist DIR` released whatever was mounted at DIR/<type>: through a symlink (`mnt -> elsewhere`
/// unmounted elsewhere), on a directory, or a file with another filesystem bound on it; and DIR's own
/// mount whatever it was. Only nsfs binds on regular files (and DIR's bind of itself) are released now;
/// anything else is refused before anything is unmounted.
#[test]
fn unpersist_releases_only_persisted_namespace_files() {
    let sb = Sandbox::new();
    let tmpfs = |at: &Path| {
        let st = Command::new("mount").args(["-t", "tmpfs", "-o", "size=1m", "cbt"]).arg(at).status().unwrap();
        assert!(st.success(), "mount tmpfs on {}", at.display());
    };
    let unpersist = |d: &Path| run(tool("cbuild-ns", &sb).arg("unpersist").arg(d));
    let mounted = |p: &Path| mounts_under(p.to_str().unwrap()).iter().any(|m| Path::new(m) == p);
    // DIR/mnt -> a mount elsewhere.
    let tgt = sb.path().join("tgt");
    std::fs::create_dir(&tgt).unwrap();
    tmpfs(&tgt);
    let d1 = sb.path().join("d1");
    std::fs::create_dir(&d1).unwrap();
    std::os::unix::fs::symlink(&tgt, d1.join("mnt")).unwrap();
    assert_tool_error(&unpersist(&d1), "cbuild-ns", "not a persisted namespace: a symlink");
    assert!(mounted(&tgt), "the symlink's target was unmounted");
    assert!(d1.join("mnt").symlink_metadata().unwrap().file_type().is_symlink());
    // A directory with a mount on it, named like a namespace: refused, nothing touched.
    let d5 = sb.path().join("d5");
    std::fs::create_dir_all(d5.join("net")).unwrap();
    tmpfs(&d5.join("net"));
    assert_tool_error(&unpersist(&d5), "cbuild-ns", "not a persisted namespace: a directory");
    assert!(mounted(&d5.join("net")));
    // The same beside a namespace persist made: only what persist listed in DIR's manifest is released;
    // the rest is someone else's (cbuild-net's `net` in <state>/NAME/ns) and is left alone.
    let d2 = sb.path().join("d2");
    let mut c = ns(&sb);
    c.args(["run", "--uts", "--persist"]).arg(&d2).args(["--", "true"]);
    ok(&run(&mut c));
    assert_eq!(std::fs::read_to_string(d2.join(".cbuild-ns")).unwrap(), "uts\n");
    std::fs::create_dir(d2.join("net")).unwrap();
    tmpfs(&d2.join("net"));
    ok(&unpersist(&d2));
    assert!(mounted(&d2.join("net")) && !d2.join("uts").exists() && !d2.join(".cbuild-ns").exists());
    // A regular file with another filesystem bound on it.
    let d3 = sb.path().join("d3");
    std::fs::create_dir(&d3).unwrap();
    std::fs::write(d3.join("ipc"), "").unwrap();
    std::fs::write(sb.path().join("host-file"), "x").unwrap();
    let st = Command::new("mount").arg("--bind").arg(sb.path().join("host-file")).arg(d3.join("ipc")).status().unwrap();
    assert!(st.success());
    assert_tool_error(&unpersist(&d3), "cbuild-ns", "another filesystem is mounted on it");
    assert!(mounted(&d3.join("ipc")));
    // A mount at DIR itself that is not DIR's bind of itself.
    let d4 = sb.path().join("d4");
    std::fs::create_dir(&d4).unwrap();
    tmpfs(&d4);
    ok(&unpersist(&d4));
    assert!(mounted(&d4), "DIR's own mount, not a bind of itself, was unmounted");
    for d in [&d2, &d5] {
        assert_eq!(Command::new("umount").arg(d.join("net")).status().unwrap().code(), Some(0));
    }
}

/// The seccomp program was read to its end: `--seccomp-fd 5 5</dev/zero` took 1 GB before "out of memory".
/// One byte past the kernel's 4096 instructions is the most read now, from a file or an fd.
#[test]
fn an_endless_seccomp_program_is_refused_at_the_kernels_limit() {
    let sb = Sandbox::new();
    let needle = "more than 4096 instructions (32768 bytes)";
    let mut c = ns(&sb);
    c.args(["run", "--pid", "--seccomp", "/dev/zero", "--", "true"]);
    assert_tool_error(&output_bounded(&mut c, 512 << 20, Duration::from_secs(30)), "cbuild-ns", needle);
    let zero: OwnedFd = std::fs::File::open("/dev/zero").unwrap().into();
    let mut c = ns(&sb);
    c.args(["run", "--pid", "--seccomp-fd", "5", "--", "true"]);
    pass_fd(&mut c, &zero, 5);
    assert_tool_error(&output_bounded(&mut c, 512 << 20, Duration::from_secs(30)), "cbuild-ns", needle);
    // 4096 instructions is still a program (the verifier judges it).
    let max = sb.path().join("max.bpf");
    let allow: [u8; 8] = [0x06, 0, 0, 0, 0, 0, 0xff, 0x7f];
    std::fs::write(&max, allow.repeat(4096)).unwrap();
    let o = run_sh(&sb, &["--pid", "--no-new-privs", "--seccomp", max.to_str().unwrap()], "echo ran");
    assert_eq!(ok(&o), "ran\n");
}

/// `--mount-spec type=tmpfs,...,tmpfs-size=` took option text: one quoted field
/// `"tmpfs-size=1m,exec,suid,dev,size=0"` gave an unlimited tmpfs with suid, dev and exec. It is a size, as
/// Docker takes it (bytes, or with b, k, m, g), or the contract's error.
#[test]
fn mount_spec_tmpfs_size_is_a_size_not_options() {
    let sb = Sandbox::new();
    for bad in [r#"type=tmpfs,target=/x,"tmpfs-size=1m,exec,suid,dev,size=0""#, "type=tmpfs,target=/x,tmpfs-size=0"] {
        let o = run_sh(&sb, &["--mount", "--mount-spec", bad], "grep ' /x ' /proc/self/mountinfo");
        assert_tool_error(&o, "cbuild-ns", "tmpfs-size=");
    }
    let o = run_sh(
        &sb,
        &["--mount", "--mount-spec", "type=tmpfs,target=/x,tmpfs-size=2097152"],
        "grep ' /x ' /proc/self/mountinfo",
    );
    let out = ok(&o);
    assert!(out.contains("nosuid,nodev,noexec") && out.contains("size=2048k"), "{out}");
}

/// Regression: a symlink planted below <state> was followed. `unpersist NAME` with <state>/NAME/ns a
/// symlink to another directory of persisted namespaces (say /run/netns) unmounted that directory's
/// own bind and exited 0; a `--join TYPE=NAME` with a symlinked namespace file joined whatever it named.
/// Now the NAME form refuses a symlink at <state>/NAME, its ns dir or the namespace file.
#[test]
fn name_forms_refuse_symlinks_in_the_state_dir() {
    require_root();
    let sb = Sandbox::new();
    // Elsewhere: a directory bound on itself holding a persisted network namespace, as /run/netns is.
    let other = sb.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    ok(&run(Command::new("mount").args(["--bind"]).arg(&other).arg(&other)));
    let _umount = Defer(|| {
        let _ = nix::mount::umount2(other.join("net").as_path(), nix::mount::MntFlags::MNT_DETACH);
        let _ = nix::mount::umount2(other.as_path(), nix::mount::MntFlags::MNT_DETACH);
    });
    std::fs::write(other.join("net"), "").unwrap();
    ok(&run(Command::new("unshare").arg(format!("--net={}", other.join("net").display())).arg("true")));
    // (Two, or three where /tmp propagates mounts to itself, as in the VM suites.)
    let before = mounts_under(other.to_str().unwrap());
    assert!(before.len() >= 2, "{before:?}");

    std::fs::create_dir_all(sb.state.join("web")).unwrap();
    std::os::unix::fs::symlink(&other, sb.state.join("web/ns")).unwrap();
    let o = run(ns(&sb).args(["unpersist", "web"]));
    assert_eq!(o.status.code(), Some(125), "{}", stderr(&o));
    assert!(stderr(&o).contains("web/ns: a symbolic link (refused in the state dir)"), "{}", stderr(&o));
    assert_eq!(mounts_under(other.to_str().unwrap()), before, "nothing unmounted");

    std::fs::create_dir_all(sb.state.join("app/ns")).unwrap();
    std::os::unix::fs::symlink(other.join("net"), sb.state.join("app/ns/net")).unwrap();
    let o = run(ns(&sb).args(["run", "--join", "net=app", "--", "true"]));
    assert_eq!(o.status.code(), Some(125), "{}", stderr(&o));
    assert!(stderr(&o).contains("app/ns/net: a symbolic link (refused in the state dir)"), "{}", stderr(&o));
}

/// Regression: `--init` gave the terminal's foreground to the command's process group and never took it
/// back, so after the container ended the foreground group was an empty one, and a script reading the
/// terminal next was stopped (SIGTTIN) as a background job. Run under a pseudo-terminal (`script`), a
/// non-interactive sh finds its own group in the foreground again.
#[test]
fn init_gives_the_terminal_back_when_the_container_ends() {
    require_root();
    // script(1) gives the run a terminal; the VM suites' busybox userland has none.
    if !Path::new("/usr/bin/script").exists() {
        eprintln!("skipped: no script(1) here for a pseudo-terminal");
        return;
    }
    let ns = bin("cbuild-ns");
    let inner = format!(
        "sh -c '{} run --pid --init -- true; set -- $(cat /proc/$$/stat); echo \"pgrp=$5 foreground=$8\"'",
        ns.display()
    );
    let o = run(Command::new("timeout").args(["20", "script", "-qec", &inner, "/dev/null"]));
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    let line = out.lines().find(|l| l.starts_with("pgrp=")).unwrap_or_else(|| panic!("{out}"));
    let (pg, fg) = line.trim().split_once(' ').unwrap();
    assert_eq!(pg.trim_start_matches("pgrp="), fg.trim_start_matches("foreground="), "{line}");
}

/// `exec --user 0` into a container whose process runs as another user (permitted set: none) gets the
/// container's capabilities, as `docker exec -u 0` does: the command adopts the target's sets, and root's
/// execve then grants it everything in the bounding set, which is what `run` kept. Another user gets none.
#[test]
fn exec_as_root_into_a_container_of_another_user_gets_the_containers_capabilities() {
    let sb = Sandbox::new();
    let t = Running::start(&sb, &["--pid", "--net", "--user", "65534", "--cap-drop", "ALL", "--cap-add", "CHOWN,KILL"]);
    let caps = |user: &str| {
        let mut c = ns(&sb);
        c.args(["exec", "--target", &t.pid.to_string(), "--user", user, "--", "grep", "CapEff", "/proc/self/status"]);
        ok(&run(&mut c)).split_whitespace().nth(1).unwrap().to_string()
    };
    // CHOWN is bit 0, KILL bit 5.
    assert_eq!(caps("0"), "0000000000000021");
    assert_eq!(caps("65534"), "0000000000000000");
}
