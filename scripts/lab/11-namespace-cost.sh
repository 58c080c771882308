#!/bin/bash
# Lab 11 — what each namespace type costs to create, and what an idle container costs in memory.
# Seed: "Namespaces are cheap: creating one is a system call, microseconds to a few milliseconds — the
# network namespace the dearest, a mount namespace as dear as the mount table it copies is long — and an idle container costs about the memory of its processes."
source "$(dirname "$0")/lib.sh"
rootfs=$(lab_rootfs)
N=${LAB_N:-7}

# syscall_us FLAG — median time the kernel spends in unshare(2) for that namespace type, over N runs,
# as strace -T reports it (the syscall alone: no process start-up noise). The network namespace's teardown
# is asynchronous and not counted; a PID namespace's cost is mostly paid at the first fork.
syscall_us() {
    local i
    for ((i = 0; i < N; i++)); do
        strace -f -T -e trace=unshare unshare "$@" true 2>&1 >/dev/null | sed -n 's/^unshare(.*<\([0-9.]*\)>$/\1/p'
    done | sort -n | awk '{a[NR]=$1} END{printf "%d", a[int((NR+1)/2)] * 1e6}'
}

say "1. The kernel's time in unshare(2) per namespace type (median of $N, strace -T)"
declare -A cost
for t in uts ipc mount pid cgroup net user time; do
    case $t in
        uts) f=-u ;; ipc) f=-i ;; mount) f=-m ;; pid) f=-p ;; cgroup) f=-C ;; net) f=-n ;; user) f=-U ;; time) f=-T ;;
    esac
    cost[$t]=$(syscall_us $f)
    measured "$t namespace" "${cost[$t]} µs"
done
claim "a UTS namespace costs under 1 ms" test "${cost[uts]}" -lt 1000
cheap=$(for t in uts ipc pid cgroup user time; do echo "${cost[$t]}"; done | sort -n | tail -1)
claim "the network namespace costs more than uts, ipc, pid, cgroup, user and time" test "${cost[net]}" -gt "$cheap"
# A new mount namespace copies the caller's mount table, so its cost grows with the number of mounts.
measured "mounts copied into a new mount namespace" "$(wc -l </proc/self/mountinfo)"

say "2. Memory of 20 idle containers (cbuild-ns run, new pid/mount/uts/ipc/net namespaces, sleep)"
sync
a0=$(awk '/MemAvailable/{print $2}' /proc/meminfo)
pids=()
for i in $(seq 20); do
    "$NS_BIN" run --pid --mount --uts --ipc --net --rootfs "$rootfs" -- /bin/sleep 60 &
    pids+=($!)
done
at_exit "kill -KILL ${pids[*]}"
sleep 1
a1=$(awk '/MemAvailable/{print $2}' /proc/meminfo)
per=$(((a0 - a1) / 20))
pss=0 all=()
for p in "${pids[@]}"; do
    for q in $p $(cat "/proc/$p/task/$p/children" 2>/dev/null); do
        pss=$((pss + $(awk '/^Pss:/{print $2}' "/proc/$q/smaps_rollup" 2>/dev/null || echo 0)))
        all+=("$q")
    done
done
measured "MemAvailable drop per container (noisy on a busy host)" "$per KiB"
measured "PSS of its two processes (cbuild-ns + sleep)" "$((pss / 20)) KiB"
claim "an idle container's processes cost under 4 MiB" test "$((pss / 20))" -lt 4096
# SIGKILL: each sleep is PID 1 of its namespace and would ignore a TERM.
kill -KILL "${all[@]}" 2>/dev/null
wait 2>/dev/null
lab_done
