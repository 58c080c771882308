//! The built-in `default` profile: the syscalls Docker's default profile allows and blocks (moby/profiles
//! `seccomp/default.json`), written here as data grouped by what the calls do, so a reader sees *why* a
//! container may call them. `cbuild-seccomp default` prints it in Docker's JSON format; the integration
//! tests check that it resolves to the same rules as Docker's file for every architecture and capability
//! set.
//!
//! What it leaves out, and so denies with EPERM: namespaces and mounts (unshare, setns, mount, fsopen…),
//! kernel keyrings (keyctl, add_key, request_key), modules, kexec, reboot, BPF, perf, userfaultfd, io_uring,
//! clock setting, swap, accounting, quotas, personality changes other than the harmless ones, AF_ALG and
//! AF_VSOCK sockets, and clone with namespace flags — most of these are also guarded by a capability the
//! container does not have; the filter is the second wall. Capability-gated entries come back when the
//! capability is granted, as in Docker.

use crate::profile::{ArchMap, Arg, Filter, Profile, Syscall};

struct Entry {
    comment: &'static str,
    names: &'static [&'static str],
    action: &'static str,
    errno: Option<u32>,
    args: &'static [(u32, &'static str, u64)],
    caps: &'static [&'static str],
    arches: &'static [&'static str],
    not_caps: &'static [&'static str],
    not_arches: &'static [&'static str],
    min_kernel: Option<&'static str>,
}

const ALLOW: &str = "SCMP_ACT_ALLOW";
const E: Entry = Entry {
    comment: "",
    names: &[],
    action: ALLOW,
    errno: None,
    args: &[],
    caps: &[],
    arches: &[],
    not_caps: &[],
    not_arches: &[],
    min_kernel: None,
};

// clone(2) flags that create namespaces: a container without CAP_SYS_ADMIN may not use them.
const CLONE_NEWNS: u64 = 0x0002_0000;
const CLONE_NEWCGROUP: u64 = 0x0200_0000;
const CLONE_NEWUTS: u64 = 0x0400_0000;
const CLONE_NEWIPC: u64 = 0x0800_0000;
const CLONE_NEWUSER: u64 = 0x1000_0000;
const CLONE_NEWPID: u64 = 0x2000_0000;
const CLONE_NEWNET: u64 = 0x4000_0000;
const CLONE_NS_FLAGS: u64 =
    CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET;

// personality(2) values that only select the Linux ABI, 32-bit uname, or query (0xffffffff).
const PER_LINUX: u64 = 0;
const PER_LINUX32: u64 = 0x0008;
const UNAME26: u64 = 0x0002_0000;
const PER_QUERY: u64 = 0xffff_ffff;

// socket(2) families a container may not open: the kernel crypto API and host/guest vsock.
const AF_ALG: u64 = 38;
const AF_VSOCK: u64 = 40;

const ENTRIES: &[Entry] = &[
    Entry {
        comment: "files and directories: paths, metadata, links",
        names: &[
            "access",
            "chdir",
            "chmod",
            "chown",
            "chown32",
            "creat",
            "faccessat",
            "faccessat2",
            "fchdir",
            "fchmod",
            "fchmodat",
            "fchmodat2",
            "fchown",
            "fchown32",
            "fchownat",
            "fstat",
            "fstat64",
            "fstatat64",
            "fstatfs",
            "fstatfs64",
            "ftruncate",
            "ftruncate64",
            "futimesat",
            "getcwd",
            "getdents",
            "getdents64",
            "lchown",
            "lchown32",
            "link",
            "linkat",
            "lstat",
            "lstat64",
            "mkdir",
            "mkdirat",
            "mknod",
            "mknodat",
            "name_to_handle_at",
            "newfstatat",
            "open",
            "openat",
            "openat2",
            "readlink",
            "readlinkat",
            "rename",
            "renameat",
            "renameat2",
            "rmdir",
            "stat",
            "stat64",
            "statfs",
            "statfs64",
            "statx",
            "symlink",
            "symlinkat",
            "truncate",
            "truncate64",
            "umask",
            "unlink",
            "unlinkat",
            "utime",
            "utimensat",
            "utimensat_time64",
            "utimes",
        ],
        ..E
    },
    Entry {
        comment: "extended attributes",
        names: &[
            "fgetxattr",
            "flistxattr",
            "fremovexattr",
            "fsetxattr",
            "getxattr",
            "getxattrat",
            "lgetxattr",
            "listxattr",
            "listxattrat",
            "llistxattr",
            "lremovexattr",
            "lsetxattr",
            "removexattr",
            "removexattrat",
            "setxattr",
            "setxattrat",
        ],
        ..E
    },
    Entry {
        comment: "file descriptors and data",
        names: &[
            "cachestat",
            "close",
            "close_range",
            "copy_file_range",
            "dup",
            "dup2",
            "dup3",
            "fadvise64",
            "fadvise64_64",
            "fallocate",
            "fcntl",
            "fcntl64",
            "fdatasync",
            "flock",
            "fsync",
            "ioctl",
            "_llseek",
            "lseek",
            "pipe",
            "pipe2",
            "pread64",
            "preadv",
            "preadv2",
            "pwrite64",
            "pwritev",
            "pwritev2",
            "read",
            "readahead",
            "readv",
            "sendfile",
            "sendfile64",
            "splice",
            "sync",
            "sync_file_range",
            "syncfs",
            "tee",
            "vmsplice",
            "write",
            "writev",
        ],
        ..E
    },
    Entry {
        comment: "asynchronous I/O (not io_uring) and I/O priorities",
        names: &[
            "io_cancel",
            "io_destroy",
            "io_getevents",
            "io_pgetevents",
            "io_pgetevents_time64",
            "io_setup",
            "io_submit",
            "ioprio_get",
            "ioprio_set",
        ],
        ..E
    },
    Entry {
        comment: "waiting for events: poll, select, epoll, eventfd, inotify, fanotify marks, signalfd, timerfd",
        names: &[
            "epoll_create",
            "epoll_create1",
            "epoll_ctl",
            "epoll_ctl_old",
            "epoll_pwait",
            "epoll_pwait2",
            "epoll_wait",
            "epoll_wait_old",
            "eventfd",
            "eventfd2",
            "fanotify_mark",
            "inotify_add_watch",
            "inotify_init",
            "inotify_init1",
            "inotify_rm_watch",
            "_newselect",
            "poll",
            "ppoll",
            "ppoll_time64",
            "pselect6",
            "pselect6_time64",
            "select",
            "signalfd",
            "signalfd4",
            "timerfd_create",
            "timerfd_gettime",
            "timerfd_gettime64",
            "timerfd_settime",
            "timerfd_settime64",
        ],
        ..E
    },
    Entry {
        comment: "memory of the calling process",
        names: &[
            "brk",
            "madvise",
            "map_shadow_stack",
            "membarrier",
            "memfd_create",
            "memfd_secret",
            "mincore",
            "mlock",
            "mlock2",
            "mlockall",
            "mmap",
            "mmap2",
            "mprotect",
            "mremap",
            "mseal",
            "msync",
            "munlock",
            "munlockall",
            "munmap",
            "pkey_alloc",
            "pkey_free",
            "pkey_mprotect",
            "remap_file_pages",
        ],
        ..E
    },
    Entry {
        comment: "processes and threads of the container (clone itself is below, with its flag check)",
        names: &[
            "capget",
            "capset",
            "execve",
            "execveat",
            "exit",
            "exit_group",
            "fork",
            "get_robust_list",
            "get_thread_area",
            "getcpu",
            "getpgid",
            "getpgrp",
            "getpid",
            "getppid",
            "getpriority",
            "getrlimit",
            "getrusage",
            "getsid",
            "gettid",
            "kill",
            "pidfd_open",
            "pidfd_send_signal",
            "prctl",
            "prlimit64",
            "process_mrelease",
            "restart_syscall",
            "rseq",
            "seccomp",
            "set_robust_list",
            "set_thread_area",
            "set_tid_address",
            "setpgid",
            "setpriority",
            "setrlimit",
            "setsid",
            "sysinfo",
            "tgkill",
            "times",
            "tkill",
            "ugetrlimit",
            "uname",
            "uretprobe",
            "vfork",
            "wait4",
            "waitid",
            "waitpid",
            "landlock_add_rule",
            "landlock_create_ruleset",
            "landlock_restrict_self",
            "riscv_hwprobe",
            "getrandom",
        ],
        ..E
    },
    Entry {
        comment: "futexes",
        names: &["futex", "futex_requeue", "futex_time64", "futex_wait", "futex_waitv", "futex_wake"],
        ..E
    },
    Entry {
        comment: "signals",
        names: &[
            "alarm",
            "pause",
            "rt_sigaction",
            "rt_sigpending",
            "rt_sigprocmask",
            "rt_sigqueueinfo",
            "rt_sigreturn",
            "rt_sigsuspend",
            "rt_sigtimedwait",
            "rt_sigtimedwait_time64",
            "rt_tgsigqueueinfo",
            "sigaltstack",
            "sigprocmask",
            "sigreturn",
        ],
        ..E
    },
    Entry {
        comment: "reading clocks, sleeping, timers (setting the clock needs CAP_SYS_TIME, below)",
        names: &[
            "adjtimex",
            "clock_adjtime",
            "clock_adjtime64",
            "clock_getres",
            "clock_getres_time64",
            "clock_gettime",
            "clock_gettime64",
            "clock_nanosleep",
            "clock_nanosleep_time64",
            "getitimer",
            "gettimeofday",
            "nanosleep",
            "setitimer",
            "time",
            "timer_create",
            "timer_delete",
            "timer_getoverrun",
            "timer_gettime",
            "timer_gettime64",
            "timer_settime",
            "timer_settime64",
        ],
        ..E
    },
    Entry {
        comment: "scheduling",
        names: &[
            "sched_get_priority_max",
            "sched_get_priority_min",
            "sched_getaffinity",
            "sched_getattr",
            "sched_getparam",
            "sched_getscheduler",
            "sched_rr_get_interval",
            "sched_rr_get_interval_time64",
            "sched_setaffinity",
            "sched_setattr",
            "sched_setparam",
            "sched_setscheduler",
            "sched_yield",
        ],
        ..E
    },
    Entry {
        comment: "user and group ids (the capability set, not the filter, limits what they may become)",
        names: &[
            "getegid",
            "getegid32",
            "geteuid",
            "geteuid32",
            "getgid",
            "getgid32",
            "getgroups",
            "getgroups32",
            "getresgid",
            "getresgid32",
            "getresuid",
            "getresuid32",
            "getuid",
            "getuid32",
            "setfsgid",
            "setfsgid32",
            "setfsuid",
            "setfsuid32",
            "setgid",
            "setgid32",
            "setgroups",
            "setgroups32",
            "setregid",
            "setregid32",
            "setresgid",
            "setresgid32",
            "setresuid",
            "setresuid32",
            "setreuid",
            "setreuid32",
            "setuid",
            "setuid32",
        ],
        ..E
    },
    Entry {
        comment: "sockets (socket itself is below, with its address family check)",
        names: &[
            "accept",
            "accept4",
            "bind",
            "connect",
            "getpeername",
            "getsockname",
            "getsockopt",
            "listen",
            "recv",
            "recvfrom",
            "recvmmsg",
            "recvmmsg_time64",
            "recvmsg",
            "send",
            "sendmmsg",
            "sendmsg",
            "sendto",
            "setsockopt",
            "shutdown",
            "socketcall",
            "socketpair",
        ],
        ..E
    },
    Entry {
        comment: "System V and POSIX IPC (the container has its own IPC namespace)",
        names: &[
            "ipc",
            "mq_getsetattr",
            "mq_notify",
            "mq_open",
            "mq_timedreceive",
            "mq_timedreceive_time64",
            "mq_timedsend",
            "mq_timedsend_time64",
            "mq_unlink",
            "msgctl",
            "msgget",
            "msgrcv",
            "msgsnd",
            "semctl",
            "semget",
            "semop",
            "semtimedop",
            "semtimedop_time64",
            "shmat",
            "shmctl",
            "shmdt",
            "shmget",
        ],
        ..E
    },
    Entry { comment: "reading the mount table", names: &["listmount", "statmount"], ..E },
    Entry {
        comment:
            "ptrace and cross-process memory access are safe from kernel 4.8 on (seccomp is re-checked after ptrace)",
        names: &["process_vm_readv", "process_vm_writev", "ptrace"],
        min_kernel: Some("4.8"),
        ..E
    },
    Entry {
        comment: "sockets of any family below AF_ALG",
        names: &["socket"],
        args: &[(0, "SCMP_CMP_LT", AF_ALG)],
        ..E
    },
    Entry {
        comment: "the family between AF_ALG and AF_VSOCK",
        names: &["socket"],
        args: &[(0, "SCMP_CMP_EQ", AF_ALG + 1)],
        ..E
    },
    Entry { comment: "families above AF_VSOCK", names: &["socket"], args: &[(0, "SCMP_CMP_GT", AF_VSOCK)], ..E },
    Entry { comment: "personality: Linux", names: &["personality"], args: &[(0, "SCMP_CMP_EQ", PER_LINUX)], ..E },
    Entry {
        comment: "personality: 32-bit Linux",
        names: &["personality"],
        args: &[(0, "SCMP_CMP_EQ", PER_LINUX32)],
        ..E
    },
    Entry { comment: "personality: 2.6 uname", names: &["personality"], args: &[(0, "SCMP_CMP_EQ", UNAME26)], ..E },
    Entry {
        comment: "personality: 32-bit Linux with 2.6 uname",
        names: &["personality"],
        args: &[(0, "SCMP_CMP_EQ", UNAME26 | PER_LINUX32)],
        ..E
    },
    Entry { comment: "personality: query", names: &["personality"], args: &[(0, "SCMP_CMP_EQ", PER_QUERY)], ..E },
    Entry { comment: "powerpc", names: &["sync_file_range2", "swapcontext"], arches: &["ppc64le"], ..E },
    Entry {
        comment: "arm",
        names: &["arm_fadvise64_64", "arm_sync_file_range", "sync_file_range2", "breakpoint", "cacheflush", "set_tls"],
        arches: &["arm", "arm64"],
        ..E
    },
    Entry { comment: "x86_64 thread pointer", names: &["arch_prctl"], arches: &["amd64", "x32"], ..E },
    Entry { comment: "x86 local descriptor table", names: &["modify_ldt"], arches: &["amd64", "x32", "x86"], ..E },
    Entry {
        comment: "s390",
        names: &["s390_pci_mmio_read", "s390_pci_mmio_write", "s390_runtime_instr"],
        arches: &["s390", "s390x"],
        ..E
    },
    Entry { comment: "riscv", names: &["riscv_flush_icache"], arches: &["riscv64"], ..E },
    Entry { comment: "CAP_DAC_READ_SEARCH", names: &["open_by_handle_at"], caps: &["CAP_DAC_READ_SEARCH"], ..E },
    Entry {
        comment: "CAP_SYS_ADMIN: namespaces, mounts, BPF, perf, quotas, host names",
        names: &[
            "bpf",
            "clone",
            "clone3",
            "fanotify_init",
            "fsconfig",
            "fsmount",
            "fsopen",
            "fspick",
            "lookup_dcookie",
            "lsm_get_self_attr",
            "lsm_list_modules",
            "lsm_set_self_attr",
            "mount",
            "mount_setattr",
            "move_mount",
            "open_tree",
            "perf_event_open",
            "quotactl",
            "quotactl_fd",
            "setdomainname",
            "sethostname",
            "setns",
            "syslog",
            "umount",
            "umount2",
            "unshare",
        ],
        caps: &["CAP_SYS_ADMIN"],
        ..E
    },
    Entry {
        comment:
            "without CAP_SYS_ADMIN: clone only without namespace flags (mask in value, compared with valueTwo = 0)",
        names: &["clone"],
        args: &[(0, "SCMP_CMP_MASKED_EQ", CLONE_NS_FLAGS)],
        not_caps: &["CAP_SYS_ADMIN"],
        not_arches: &["s390", "s390x"],
        ..E
    },
    Entry {
        comment: "s390 parameter ordering for clone is different",
        names: &["clone"],
        args: &[(1, "SCMP_CMP_MASKED_EQ", CLONE_NS_FLAGS)],
        arches: &["s390", "s390x"],
        not_caps: &["CAP_SYS_ADMIN"],
        ..E
    },
    Entry {
        comment: "clone3 passes its flags in memory the filter cannot read: ENOSYS makes libc fall back to clone",
        names: &["clone3"],
        action: "SCMP_ACT_ERRNO",
        errno: Some(libc::ENOSYS as u32),
        not_caps: &["CAP_SYS_ADMIN"],
        ..E
    },
    Entry { comment: "CAP_SYS_BOOT", names: &["reboot"], caps: &["CAP_SYS_BOOT"], ..E },
    Entry { comment: "CAP_SYS_CHROOT", names: &["chroot"], caps: &["CAP_SYS_CHROOT"], ..E },
    Entry {
        comment: "CAP_SYS_MODULE",
        names: &["delete_module", "init_module", "finit_module"],
        caps: &["CAP_SYS_MODULE"],
        ..E
    },
    Entry { comment: "CAP_SYS_PACCT", names: &["acct"], caps: &["CAP_SYS_PACCT"], ..E },
    Entry {
        comment: "CAP_SYS_PTRACE",
        names: &["kcmp", "pidfd_getfd", "process_madvise", "process_vm_readv", "process_vm_writev", "ptrace"],
        caps: &["CAP_SYS_PTRACE"],
        ..E
    },
    Entry { comment: "CAP_SYS_RAWIO", names: &["iopl", "ioperm"], caps: &["CAP_SYS_RAWIO"], ..E },
    Entry {
        comment: "CAP_SYS_TIME",
        names: &["settimeofday", "stime", "clock_settime", "clock_settime64"],
        caps: &["CAP_SYS_TIME"],
        ..E
    },
    Entry { comment: "CAP_SYS_TTY_CONFIG", names: &["vhangup"], caps: &["CAP_SYS_TTY_CONFIG"], ..E },
    Entry {
        comment: "CAP_SYS_NICE",
        names: &["get_mempolicy", "mbind", "set_mempolicy", "set_mempolicy_home_node"],
        caps: &["CAP_SYS_NICE"],
        ..E
    },
    Entry { comment: "CAP_SYSLOG", names: &["syslog"], caps: &["CAP_SYSLOG"], ..E },
    Entry { comment: "CAP_BPF", names: &["bpf"], caps: &["CAP_BPF"], ..E },
    Entry { comment: "CAP_PERFMON", names: &["perf_event_open"], caps: &["CAP_PERFMON"], ..E },
];

/// Docker's architecture map: a filter for the first architecture also admits the listed sub-architectures
/// (32-bit and x32 ABIs of the same machine).
const ARCH_MAP: &[(&str, &[&str])] = &[
    ("SCMP_ARCH_X86_64", &["SCMP_ARCH_X86", "SCMP_ARCH_X32"]),
    ("SCMP_ARCH_AARCH64", &["SCMP_ARCH_ARM"]),
    ("SCMP_ARCH_MIPS64", &["SCMP_ARCH_MIPS", "SCMP_ARCH_MIPS64N32"]),
    ("SCMP_ARCH_MIPS64N32", &["SCMP_ARCH_MIPS", "SCMP_ARCH_MIPS64"]),
    ("SCMP_ARCH_MIPSEL64", &["SCMP_ARCH_MIPSEL", "SCMP_ARCH_MIPSEL64N32"]),
    ("SCMP_ARCH_MIPSEL64N32", &["SCMP_ARCH_MIPSEL", "SCMP_ARCH_MIPSEL64"]),
    ("SCMP_ARCH_S390X", &["SCMP_ARCH_S390"]),
    ("SCMP_ARCH_RISCV64", &[]),
    ("SCMP_ARCH_LOONGARCH64", &[]),
];

fn strings(v: &[&str]) -> Option<Vec<String>> {
    (!v.is_empty()).then(|| v.iter().map(|s| s.to_string()).collect())
}

fn filter(caps: &[&str], arches: &[&str], min_kernel: Option<&str>) -> Option<Filter> {
    let f = Filter { caps: strings(caps), arches: strings(arches), min_kernel: min_kernel.map(String::from) };
    (f != Filter::default()).then_some(f)
}

/// The built-in `default` profile in Docker's format: deny with EPERM unless a rule allows.
pub fn default_profile() -> Profile {
    Profile {
        default_action: "SCMP_ACT_ERRNO".into(),
        default_errno_ret: Some(libc::EPERM as u32),
        arch_map: Some(
            ARCH_MAP
                .iter()
                .map(|(a, subs)| ArchMap { architecture: a.to_string(), sub_architectures: strings(subs) })
                .collect(),
        ),
        syscalls: Some(
            ENTRIES
                .iter()
                .map(|e| Syscall {
                    names: strings(e.names),
                    action: e.action.into(),
                    errno_ret: e.errno,
                    args: (!e.args.is_empty()).then(|| {
                        e.args
                            .iter()
                            .map(|&(index, op, value)| Arg { index, value, value_two: 0, op: op.into() })
                            .collect()
                    }),
                    comment: Some(e.comment.into()).filter(|c: &String| !c.is_empty()),
                    includes: filter(e.caps, e.arches, e.min_kernel),
                    excludes: filter(e.not_caps, e.not_arches, None),
                    ..Syscall::default()
                })
                .collect(),
        ),
        ..Profile::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_name_twice_in_the_unconditional_groups() {
        let mut seen = std::collections::BTreeSet::new();
        for e in ENTRIES.iter().filter(|e| e.args.is_empty() && e.caps.is_empty() && e.arches.is_empty()) {
            for n in e.names.iter().filter(|_| e.min_kernel.is_none() && e.not_caps.is_empty()) {
                assert!(seen.insert(*n), "{n} listed twice");
            }
        }
        assert_eq!(CLONE_NS_FLAGS, 2_114_060_288);
    }
}
