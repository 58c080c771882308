#!/bin/bash
# Lab 12 — the full container: everything of the previous labs at once, the equivalent of the seed's Go
# program (clone with new namespaces, hostname, new root, /proc, cgroup limits, then exec a shell), built
# by scripts/cbuild-run one tool call at a time. --verbose prints each call; each could be typed by hand.
source "$(dirname "$0")/lib.sh"

say "1. The steps"
"$RUN" --verbose --rm --network none --hostname lab --memory 64m --pids-limit 50 "$IMAGE" true 2>&1 |
    sed 's/^/    /'

say "2. Inside: what each step gave"
out=$("$RUN" --rm --network none --hostname lab --memory 64m --pids-limit 50 "$IMAGE" sh -c '
    echo "pid=$$"; echo "hostname=$(hostname)"; echo "links=$(ls /sys/class/net | xargs)"
    echo "root=$(grep " / " /proc/mounts | cut -d" " -f3)"
    grep -E "^(CapEff|Seccomp|NoNewPrivs):" /proc/self/status; cat /proc/self/cgroup | grep -m1 pids')
printf '%s\n' "$out" | sed 's/^/    /'
v() { sed -n "s/^$1[=:][[:space:]]*//p" <<<"$out"; }
claim "PID 1 (pid namespace)" test "$(v pid)" = 1
claim "hostname lab (UTS namespace)" test "$(v hostname)" = lab
claim "only lo (network namespace)" test "$(v links)" = lo
claim "root is an overlay (image layers + upper)" test "$(v root)" = overlay
claim "Docker's capabilities" test "$(v CapEff)" = 00000000a80425fb
claim "seccomp filter loaded" test "$(v Seccomp)" = 2
claim "its cgroup is / to itself (cgroup namespace)" grep -q ':pids:/$' <<<"$out"

say "3. The limits, read from the host while it runs"
"$RUN" -d --name full --network none --memory 64m --pids-limit 50 "$IMAGE" sleep 30 >/dev/null
at_exit "'$LAB_SCRIPTS/cbuild-rm' -f full"
st=$("$CGROUP_BIN" stat full --json)
measured "memory limit / pids limit" "$(jq -r '"\(.memory.limit) / \(.pids.limit)"' <<<"$st")" "67108864 / 50"
claim "memory limit 64 MiB" test "$(jq .memory.limit <<<"$st")" = 67108864
claim "pids limit 50" test "$(jq .pids.limit <<<"$st")" = 50
# And from inside: its own cgroup namespace, with its own cgroups mounted read-only at /sys/fs/cgroup.
inside=$("$LAB_SCRIPTS/cbuild-exec" full sh -c 'cat /sys/fs/cgroup/pids/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids.max')
measured "pids limit read inside at /sys/fs/cgroup" "$inside" "50"
claim "the container reads its own limit" test "$inside" = 50
# The overlay was handed to cbuild-ns as a detached mount (cbuild-overlay mount --fd 6): it exists only in
# the container's mount namespace, so the host has nothing to unmount, even after a kill -9.
pid=$(rt_pid full)
claim "its root is an overlay in its own mount table" grep -q ' / / .* - overlay ' "/proc/$pid/mountinfo"
claim "...and not in the host's" bash -c "! grep -q ' $CBUILD_STATE/full ' /proc/self/mountinfo"
"$LAB_SCRIPTS/cbuild-rm" -f full >/dev/null

say "4. And afterwards nothing is left"
claim "no container state left" test -z "$(ls -A "$CBUILD_STATE" | grep -v '^net$')"
claim "no overlay mount left" bash -c "! grep -q ' $LAB/' /proc/self/mountinfo"
lab_done
