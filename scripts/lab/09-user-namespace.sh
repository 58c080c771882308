#!/bin/bash
# Lab 09 — the user namespace and uid_map.
# Seed: "In a user namespace a process can be uid 0 — with every capability over the namespace's own
# resources — while the host sees an unprivileged uid. /proc/PID/uid_map says how: `INSIDE OUTSIDE COUNT`."
source "$(dirname "$0")/lib.sh"
rootfs=$(lab_rootfs)
chmod 755 "$LAB"
mkdir -p "$LAB/shared" "$rootfs/shared" "$rootfs/hostetc" # mount points: uid 100000 cannot make them in a root-owned tree
chmod 777 "$LAB/shared"

say "1. Root inside, uid 100000 outside: --uid-map 0:100000:65536 --gid-map 0:100000:65536"
show "$NS_BIN" run --uid-map 0:100000:65536 --gid-map 0:100000:65536 --pid --mount --rootfs "$rootfs" \
    --bind "$LAB/shared:/shared" -- /bin/sh -c 'id; cat /proc/self/uid_map; touch /shared/made-inside'
inside=$("$NS_BIN" run --uid-map 0:100000:65536 --gid-map 0:100000:65536 --pid --mount --rootfs "$rootfs" -- /bin/sh -c 'id -u; cat /proc/self/uid_map')
map=$(sed -n 2p <<<"$inside" | xargs)
measured "uid inside" "$(head -1 <<<"$inside")" "0"
measured "uid_map inside" "$map" "0 100000 65536"
claim "uid 0 inside" test "$(head -1 <<<"$inside")" = 0
claim "uid_map reads 0 100000 65536" test "$map" = "0 100000 65536"
owner=$(stat -c %u "$LAB/shared/made-inside")
measured "owner on the host of a file root made inside" "$owner" "100000"
claim "the host sees the file as uid 100000" test "$owner" = 100000

say "2. Seen from the host, the process is uid 100000"
exec 3>"$LAB/info"
"$NS_BIN" run --uid-map 0:100000:65536 --gid-map 0:100000:65536 --pid --mount --rootfs "$rootfs" --info-fd 3 -- /bin/sleep 30 &
r=$!
exec 3>&-
at_exit "kill -KILL $r"
for _ in $(seq 100); do [[ -s $LAB/info ]] && break; sleep 0.02; done
pid=$(rt_json_field "$(<"$LAB/info")" pid)
sleep 0.1
show grep -E '^(Uid|CapEff)' "/proc/$pid/status"
claim "host Uid line is 100000" grep -Eq '^Uid:\s+100000\s' "/proc/$pid/status"
show cat "/proc/$pid/uid_map"
kill -KILL "$pid" # PID 1 of its namespace: a TERM would be ignored
wait "$r" 2>/dev/null

say "3. Its capabilities hold only over its own namespaces: it cannot touch what the host owns"
# A file of the host's root (0644), bound read-write: only the user namespace stands in the way. (Not the
# host's /etc itself: without the namespace the same write would succeed, which is the control below.)
mkdir -p "$LAB/hostdir"
echo host >"$LAB/hostdir/owned"
chmod 755 "$LAB/hostdir"
chmod 644 "$LAB/hostdir/owned"
out=$("$NS_BIN" run --uid-map 0:100000:65536 --gid-map 0:100000:65536 --pid --mount --rootfs "$rootfs" \
    --bind "$LAB/hostdir:/hostetc" -- /bin/sh -c 'grep CapEff /proc/self/status; echo x >>/hostetc/owned 2>&1 || echo refused' 2>&1)
printf '%s\n' "$out" | sed 's/^/    /'
control=$("$NS_BIN" run --pid --mount --rootfs "$rootfs" --bind "$LAB/hostdir:/hostetc" -- \
    /bin/sh -c 'echo x >>/hostetc/owned && echo wrote' 2>&1)
claim "uid 0 with capabilities inside still cannot write a file the host's root owns" grep -q refused <<<"$out"
claim "the same write without the user namespace succeeds (so the namespace is what refused it)" \
    grep -q wrote <<<"$control"
lab_done
