#!/bin/bash
# Lab 01 — a container is just a process.
# Seed: "A container is not a VM: it is an ordinary Linux process that the kernel shows a different view of
# the system (namespaces), limits (cgroups) and confines (capabilities, seccomp)."
# We build one by hand with util-linux (unshare + chroot), then with cbuild-ns, and find it in the host's
# process table like any other process.
source "$(dirname "$0")/lib.sh"
rootfs=$(lab_rootfs)

say "1. By hand: new PID, mount and UTS namespaces, /proc remounted, chroot into a busybox tree"
show unshare --pid --fork --mount --uts --mount-proc="$rootfs/proc" \
    chroot "$rootfs" /bin/sh -c 'hostname by-hand; echo "pid=$$ hostname=$(hostname)"; ps'
hand=$(unshare --pid --fork --mount --uts --mount-proc="$rootfs/proc" chroot "$rootfs" /bin/sh -c 'echo $$')
claim "inside unshare+chroot the shell is PID 1 (got $hand)" test "$hand" = 1

say "2. The same with cbuild-ns (pivot_root instead of chroot, which root could climb out of)"
show "$NS_BIN" run --pid --mount --uts --hostname with-ns --rootfs "$rootfs" -- \
    /bin/sh -c 'echo "pid=$$ hostname=$(hostname)"; ps'
ns=$("$NS_BIN" run --pid --mount --uts --rootfs "$rootfs" -- /bin/sh -c 'echo $$')
claim "inside cbuild-ns the shell is PID 1 (got $ns)" test "$ns" = 1

say "3. Seen from the host, the container is an ordinary process with a host PID"
exec 3>"$LAB/info"
"$NS_BIN" run --pid --mount --uts --ipc --net --rootfs "$rootfs" --info-fd 3 -- /bin/sleep 30 &
runner=$!
exec 3>&-
at_exit "kill -KILL $runner"
for _ in $(seq 100); do [[ -s $LAB/info ]] && break; sleep 0.02; done
hostpid=$(rt_json_field "$(<"$LAB/info")" pid)
sleep 0.1
show ps -o pid,ppid,comm -p "$hostpid"
show grep NSpid "/proc/$hostpid/status"
measured "host PID of the container's sleep" "$hostpid"
claim "the host sees it as /bin/sleep" test "$(cat "/proc/$hostpid/comm")" = sleep
claim "its NSpid line maps host PID $hostpid to 1 inside" grep -Eq "^NSpid:\s+$hostpid\s+1$" "/proc/$hostpid/status"
for t in pid mnt uts ipc net; do
    a=$(readlink "/proc/$hostpid/ns/$t") b=$(readlink "/proc/self/ns/$t")
    claim "its $t namespace differs from ours ($a vs $b)" test "$a" != "$b"
done
a=$(readlink "/proc/$hostpid/ns/user") b=$(readlink /proc/self/ns/user)
claim "but it shares our user namespace (no --userns): same kernel, same uid 0" test "$a" = "$b"
kill -KILL "$hostpid" 2>/dev/null # PID 1 of its namespace: a TERM would be ignored
wait "$runner" 2>/dev/null

say "4. What it costs: 20 starts of each, wall time"
t0=$EPOCHREALTIME
for _ in $(seq 20); do unshare --pid --fork --mount --uts --mount-proc="$rootfs/proc" chroot "$rootfs" /bin/true; done
t1=$EPOCHREALTIME
for _ in $(seq 20); do "$NS_BIN" run --pid --mount --uts --rootfs "$rootfs" -- /bin/true; done
t2=$EPOCHREALTIME
measured "unshare + chroot, per start" "$(awk "BEGIN{printf \"%.2f ms\", ($t1-$t0)*50}")"
measured "cbuild-ns run --rootfs, per start" "$(awk "BEGIN{printf \"%.2f ms\", ($t2-$t1)*50}")"
lab_done
