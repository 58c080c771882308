#!/bin/sh
# Kernel self-check of the cbuild test VM: proves the guest is what the suites are meant to meet (cgroup2
# alone, or with cbuild.layout=v1 the v1 hierarchies alone; all controllers, working limits, the modules loaded) before any suite runs, and proves the harness
# end to end (a failing check here fails the run). Each check is a real kernel behaviour that can fail.
# Output mimics libtest ("test NAME ... ok|FAILED", "test result: ..."), so one parser reads both.

root=/sys/fs/cgroup
base=$root/vm-selfcheck
passed=0
failed=0

check() { # check NAME: runs check_NAME, which prints why on failure
    if out=$("check_$1" 2>&1); then
        echo "test $1 ... ok"
        passed=$((passed + 1))
    else
        echo "test $1 ... FAILED"
        echo "$out" | sed 's/^/    /'
        failed=$((failed + 1))
    fi
}

fail() { echo "$*"; return 1; }

# field FILE KEY: the value of "KEY VALUE" in a flat-keyed cgroup file (memory.events, cpu.stat, ...)
field() { awk -v k="$2" '$1 == k { print $2 }' "$1"; }

# child NAME: a fresh cgroup under $base with every controller available
child() {
    rmdir "$base/$1" 2>/dev/null
    mkdir "$base/$1" || return 1
    echo "$base/$1"
}

# in_cg CG CMD...: run CMD as a process moved into CG first
in_cg() {
    cg=$1
    shift
    sh -c 'echo $$ >"$1/cgroup.procs" || exit 99; shift; exec "$@"' sh "$cg" "$@"
}

check_cgroup2_only() {
    mounts=$(awk '$3 == "cgroup" || $3 == "cgroup2"' /proc/mounts)
    [ "$(echo "$mounts" | wc -l)" = 1 ] || fail "want exactly one cgroup mount, got: $mounts" || return 1
    case "$mounts" in "cgroup2 /sys/fs/cgroup cgroup2 "*) ;; *) fail "not cgroup2 at /sys/fs/cgroup: $mounts" || return 1 ;; esac
    [ "$(wc -l </proc/self/cgroup)" = 1 ] || fail "/proc/self/cgroup has v1 lines: $(cat /proc/self/cgroup)" || return 1
    grep -q '^0::/' /proc/self/cgroup || fail "/proc/self/cgroup: $(cat /proc/self/cgroup)" || return 1
    v1=$(awk 'NR > 1 && $2 != 0 { print $1 }' /proc/cgroups)
    [ -z "$v1" ] || fail "controllers bound to a v1 hierarchy: $v1"
}

check_controllers_enabled() {
    for c in cpu memory pids io cpuset; do
        grep -qw "$c" $root/cgroup.subtree_control || fail "root subtree_control lacks $c: $(cat $root/cgroup.subtree_control)" || return 1
        grep -qw "$c" "$base/cgroup.controllers" || fail "child lacks $c: $(cat "$base/cgroup.controllers")" || return 1
    done
}

check_memory_oom_kill() {
    cg=$(child oom) || return 1
    echo 32M >"$cg/memory.max" || return 1
    echo 0 >"$cg/memory.swap.max" || return 1
    in_cg "$cg" dd if=/dev/zero of=/dev/null bs=100M count=1 2>/dev/null
    rc=$?
    [ $rc -eq 137 ] || fail "dd bs=100M under memory.max=32M exited $rc, want 137 (SIGKILL)" || return 1
    n=$(field "$cg/memory.events" oom_kill)
    [ "$n" = 1 ] || fail "memory.events oom_kill=$n, want 1: $(cat "$cg/memory.events")"
}

check_cpu_max_throttles() {
    cg=$(child cpu) || return 1
    echo "10000 100000" >"$cg/cpu.max" || return 1
    start=$(date +%s)
    in_cg "$cg" timeout 2 sh -c 'while :; do :; done'
    wall=$(($(date +%s) - start))
    thr=$(field "$cg/cpu.stat" nr_throttled)
    usage=$(field "$cg/cpu.stat" usage_usec)
    [ "${thr:-0}" -gt 0 ] || fail "cpu.stat nr_throttled=$thr after a busy loop under cpu.max 10%: $(cat "$cg/cpu.stat")" || return 1
    # 10% of ~2 s is 0.2 s; allow scheduling slack but catch a limit that does nothing.
    [ "$usage" -lt $((wall * 500000)) ] || fail "usage_usec=$usage over ${wall}s wall: cpu.max not enforced"
}

check_pids_max() {
    cg=$(child pids) || return 1
    echo 4 >"$cg/pids.max" || return 1
    in_cg "$cg" sh -c 'for i in 1 2 3 4 5 6 7 8; do sleep 3 & done 2>/dev/null; wait' 2>/dev/null
    hits=$(field "$cg/pids.events" max)
    echo 1 >"$cg/cgroup.kill"
    [ "${hits:-0}" -gt 0 ] || fail "pids.events max=$hits after forking 9 under pids.max=4"
}

check_cgroup_kill() {
    cg=$(child kill) || return 1
    in_cg "$cg" sleep 1000 &
    pid=$!
    n=0
    while ! grep -q 'populated 1' "$cg/cgroup.events" && [ $n -lt 50 ]; do sleep 0.1; n=$((n + 1)); done
    echo 1 >"$cg/cgroup.kill" || return 1
    wait $pid
    rc=$?
    [ $rc -eq 137 ] || fail "sleep in a killed cgroup exited $rc, want 137" || return 1
    grep -q 'populated 0' "$cg/cgroup.events" || fail "still populated after cgroup.kill: $(cat "$cg/cgroup.events")"
}

check_psi() {
    cg=$(child psi) || return 1
    for f in cpu.pressure memory.pressure io.pressure; do
        grep -q '^some avg10=' "$cg/$f" || fail "$f: $(cat "$cg/$f" 2>&1)" || return 1
    done
    grep -q '^some avg10=' /proc/pressure/memory || fail "/proc/pressure/memory unreadable"
}

check_modules_loaded() {
    for m in overlay veth bridge loop; do
        [ -d "/sys/module/$m" ] || fail "module $m not loaded" || return 1
    done
    grep -qw overlay /proc/filesystems || fail "overlay not in /proc/filesystems"
}

check_overlay_whiteout() {
    d=$(mktemp -d)
    mkdir "$d/lower" "$d/upper" "$d/work" "$d/merged"
    echo x >"$d/lower/gone"
    mount -t overlay overlay -o "lowerdir=$d/lower,upperdir=$d/upper,workdir=$d/work" "$d/merged" || return 1
    rm "$d/merged/gone"
    umount "$d/merged"
    st=$(stat -c '%F %t:%T' "$d/upper/gone" 2>&1)
    rm -rf "$d"
    [ "$st" = "character special file 0:0" ] || fail "whiteout for a removed lower file is '$st', want a 0:0 char device"
}

check_user_namespace() {
    u=$(unshare -U -r id -u 2>&1)
    [ "$u" = 0 ] || fail "unshare -U -r id -u: $u" || return 1
    # Unprivileged too (Debian's kernel allows it by default), so rootless suites have a user to run as.
    u=$(su user -c 'unshare -U -r id -u' 2>&1)
    [ "$u" = 0 ] || fail "as uid 1000: unshare -U -r id -u: $u"
}

# --- pure cgroup v1 (cbuild.layout=v1) ---------------------------------------------------------------
# The same kernel behaviours through the v1 files: each check makes its cgroup in the one hierarchy it
# needs, under vm-selfcheck there.

# v1child HIERARCHY NAME: a fresh cgroup HIERARCHY/vm-selfcheck/NAME
v1child() {
    mkdir -p "$root/$1/vm-selfcheck" || return 1
    rmdir "$root/$1/vm-selfcheck/$2" 2>/dev/null
    mkdir "$root/$1/vm-selfcheck/$2" || return 1
    echo "$root/$1/vm-selfcheck/$2"
}

# v1kill CG: SIGKILL every process in a v1 cgroup and wait until it is empty (v1 has no cgroup.kill)
v1kill() {
    n=0
    while [ -s "$1/cgroup.procs" ] && [ $n -lt 50 ]; do
        for p in $(cat "$1/cgroup.procs"); do kill -KILL "$p" 2>/dev/null; done
        sleep 0.1
        n=$((n + 1))
    done
}

# hierarchy id of controller $1 in /proc/cgroups (0: not bound to a v1 hierarchy)
v1_hier() { awk -v c="$1" '$1 == c { print $2 }' /proc/cgroups; }

check_cgroup_v1_only() {
    v2=$(awk '$3 == "cgroup2"' /proc/mounts)
    [ -z "$v2" ] || fail "a cgroup2 mount on a v1 guest: $v2" || return 1
    grep -q '^0::' /proc/self/cgroup && { fail "/proc/self/cgroup has a v2 (0::) line: $(cat /proc/self/cgroup)" || return 1; }
    fs=$(awk '$2 == "/sys/fs/cgroup" { print $3 }' /proc/mounts)
    [ "$fs" = tmpfs ] || fail "/sys/fs/cgroup is '$fs', want a tmpfs holding the hierarchies" || return 1
    for h in cpu,cpuacct memory pids blkio cpuset freezer devices systemd; do
        awk -v m="$root/$h" '$2 == m && $3 == "cgroup" { f = 1 } END { exit !f }' /proc/mounts ||
            fail "no v1 hierarchy mounted at $root/$h: $(grep cgroup /proc/mounts)" || return 1
    done
    grep -q ':name=systemd:/init.scope$' /proc/1/cgroup || fail "PID 1 not in name=systemd:/init.scope: $(cat /proc/1/cgroup)"
}

check_controllers_v1() {
    for c in cpu cpuacct memory pids blkio cpuset freezer devices; do
        id=$(v1_hier $c)
        [ "${id:-0}" != 0 ] || fail "controller $c is not bound to a v1 hierarchy: $(cat /proc/cgroups)" || return 1
        grep -q "^$id:" /proc/self/cgroup || fail "/proc/self/cgroup has no line for $c (hierarchy $id)" || return 1
    done
    [ "$(v1_hier cpu)" = "$(v1_hier cpuacct)" ] || fail "cpu and cpuacct are separate hierarchies, want them co-mounted"
}

check_v1_memory_oom_kill() {
    cg=$(v1child memory oom) || return 1
    echo 32M >"$cg/memory.limit_in_bytes" || return 1
    # With swap accounting, memory+swap too (after memory: memsw must never be below it).
    [ ! -f "$cg/memory.memsw.limit_in_bytes" ] || echo 32M >"$cg/memory.memsw.limit_in_bytes" || return 1
    in_cg "$cg" dd if=/dev/zero of=/dev/null bs=100M count=1 2>/dev/null
    rc=$?
    [ $rc -eq 137 ] || fail "dd bs=100M under memory.limit_in_bytes=32M exited $rc, want 137 (SIGKILL)" || return 1
    n=$(field "$cg/memory.oom_control" oom_kill)
    [ "$n" = 1 ] || fail "memory.oom_control oom_kill=$n, want 1: $(cat "$cg/memory.oom_control")"
}

check_v1_cfs_quota_throttles() {
    cg=$(v1child cpu,cpuacct cpu) || return 1
    echo 100000 >"$cg/cpu.cfs_period_us" || return 1
    echo 10000 >"$cg/cpu.cfs_quota_us" || return 1
    start=$(date +%s)
    in_cg "$cg" timeout 2 sh -c 'while :; do :; done'
    wall=$(($(date +%s) - start))
    thr=$(field "$cg/cpu.stat" nr_throttled)
    usage=$(cat "$cg/cpuacct.usage") # ns
    [ "${thr:-0}" -gt 0 ] || fail "cpu.stat nr_throttled=$thr after a busy loop under cfs_quota_us 10%: $(cat "$cg/cpu.stat")" || return 1
    [ "$usage" -lt $((wall * 500000000)) ] || fail "cpuacct.usage=${usage}ns over ${wall}s wall: cfs quota not enforced"
}

check_v1_pids_max() {
    cg=$(v1child pids pids) || return 1
    echo 4 >"$cg/pids.max" || return 1
    in_cg "$cg" sh -c 'for i in 1 2 3 4 5 6 7 8; do sleep 3 & done 2>/dev/null; wait' 2>/dev/null
    hits=$(field "$cg/pids.events" max)
    v1kill "$cg"
    [ "${hits:-0}" -gt 0 ] || fail "pids.events max=$hits after forking 9 under pids.max=4"
}

check_v1_freezer_kill() {
    # What a v1 runtime does instead of cgroup.kill: freeze, SIGKILL each task, thaw.
    cg=$(v1child freezer kill) || return 1
    in_cg "$cg" sleep 1000 &
    pid=$!
    n=0
    while ! [ -s "$cg/cgroup.procs" ] && [ $n -lt 50 ]; do sleep 0.1; n=$((n + 1)); done
    echo FROZEN >"$cg/freezer.state" || return 1
    n=0
    while [ "$(cat "$cg/freezer.state")" != FROZEN ] && [ $n -lt 50 ]; do sleep 0.1; n=$((n + 1)); done
    [ "$(cat "$cg/freezer.state")" = FROZEN ] || fail "freezer.state is $(cat "$cg/freezer.state"), want FROZEN" || return 1
    # Every task of the cgroup ($pid is the shell that moved the sleeper in, outside the cgroup).
    for p in $(cat "$cg/cgroup.procs"); do kill -KILL "$p" || return 1; done
    echo THAWED >"$cg/freezer.state" || return 1
    wait $pid
    rc=$?
    [ $rc -eq 137 ] || fail "sleep killed in a frozen cgroup exited $rc, want 137" || return 1
    [ ! -s "$cg/cgroup.procs" ] || fail "still populated after the kill: $(cat "$cg/cgroup.procs")"
}

check_psi_system() {
    # Per-cgroup pressure files are v2 only; the system-wide ones must still be there.
    for f in cpu memory io; do
        grep -q '^some avg10=' /proc/pressure/$f || fail "/proc/pressure/$f unreadable" || return 1
    done
}

check_injected_failure() {
    # Only with cbuild.inject=fail: a check that must fail, to prove a failure reaches the exit code.
    if [ "$layout" = v1 ]; then
        cg=$(v1child memory injected) || return 1
        n=$(field "$cg/memory.oom_control" oom_kill)
    else
        cg=$(child injected) || return 1
        n=$(field "$cg/memory.events" oom_kill)
    fi
    [ "$n" = 1 ] || fail "injected failure: a fresh cgroup has oom_kill=$n, this check wants 1"
}

layout=$(tr ' ' '\n' </proc/cmdline | sed -n 's/^cbuild\.layout=//p' | tail -n1)
echo "running self-check on $(uname -r), cgroup ${layout:=v2}"
if [ "$layout" = v1 ]; then
    checks="cgroup_v1_only controllers_v1 v1_memory_oom_kill v1_cfs_quota_throttles v1_pids_max v1_freezer_kill psi_system"
else
    mkdir -p $base
    echo "+cpu +memory +pids +io +cpuset" >$base/cgroup.subtree_control
    checks="cgroup2_only controllers_enabled memory_oom_kill cpu_max_throttles pids_max cgroup_kill psi"
fi
for c in $checks modules_loaded overlay_whiteout user_namespace; do
    check $c
done
grep -qw 'cbuild.inject=fail' /proc/cmdline && check injected_failure

if [ "$layout" = v1 ]; then
    for b in "$root"/*/vm-selfcheck; do
        [ -d "$b" ] || continue
        for d in "$b"/*/; do
            [ -d "$d" ] || continue
            v1kill "$d"
            rmdir "$d" || echo "self-check: could not remove $d"
        done
        rmdir "$b" || echo "self-check: could not remove $b"
    done
else
    for d in "$base"/*/; do
        echo 1 >"$d/cgroup.kill"
        n=0
        while ! rmdir "$d" 2>/dev/null && [ $n -lt 50 ]; do sleep 0.1; n=$((n + 1)); done
    done
    rmdir $base || echo "self-check: could not remove $base"
fi

if [ $failed -eq 0 ]; then
    echo "test result: ok. $passed passed; $failed failed"
else
    echo "test result: FAILED. $passed passed; $failed failed"
    exit 1
fi
