#!/bin/bash
# Lab 04 — cgroups: memory (OOM kill, page cache), CPU (throttling, weights), pids (a fork bomb stopped).
# Seed: "cgroups limit what a container may use. Over its memory limit the kernel OOM-kills inside the
# cgroup; over its CPU quota it is throttled until the next period; at its pids limit fork() fails. Page
# cache the container causes is charged to it. CPU weights share the CPUs in proportion under contention."
source "$(dirname "$0")/lib.sh"
n=lab$$
stat_json() { "$CGROUP_BIN" stat "$1" --json; }
field() { stat_json "$1" | jq -r "$2"; }
for c in oom cpu pids cache w100 w200 w300; do at_exit "'$CGROUP_BIN' rm $n-$c --force"; done

say "1. OOM: 100 MB into a 32 MiB cgroup (no swap)"
show "$CGROUP_BIN" exec "$n-oom" --memory 32m --memory-swap 32m -- sh -c 'x=$(head -c 100000000 /dev/zero | tr "\0" a); echo survived'
code=$?
kills=$(field "$n-oom" .memory.oom_kills)
measured "exit status" "$code" "137 (SIGKILL from the OOM killer)"
measured "memory.oom_kills" "$kills"
show "$CGROUP_BIN" events "$n-oom"
claim "the hog was OOM-killed (137)" test "$code" = 137
claim "oom_kills counted it" test "$kills" -ge 1

say "2. CPU quota: a busy loop under --cpus 0.2 for 1 s"
"$CGROUP_BIN" exec "$n-cpu" --cpus 0.2 -- timeout 1 sh -c 'while :; do :; done'
usage=$(field "$n-cpu" .cpu.usage_usec)
ratio=$(field "$n-cpu" .cpu.throttle_ratio)
measured "CPU time used in 1 s" "$((usage / 1000)) ms" "~200 ms"
measured "throttled periods / periods" "$ratio" "near 1"
claim "used at most ~0.3 s of CPU in 1 s" test "$usage" -lt 300000
claim "throttled in most periods (ratio > 0.5)" awk "BEGIN{exit !($ratio > 0.5)}"

say "3. pids: a fork loop of 100 in a cgroup limited to 20"
"$CGROUP_BIN" exec "$n-pids" --pids 20 -- sh -c 'for i in $(seq 100); do sleep 1 & done; wait' 2>/dev/null
hits=$(field "$n-pids" .pids.limit_hits)
peak=$(field "$n-pids" .pids.peak)
measured "forks refused (pids.events max)" "$hits"
measured "pids.peak" "$peak" "≤ 20"
claim "the limit refused forks" test "$hits" -gt 0
claim "never more than 20 processes" test "$peak" -le 20

say "4. Page cache is charged to the cgroup that caused it"
"$CGROUP_BIN" exec "$n-cache" -- sh -c "dd if=/dev/zero of='$LAB/file' bs=1M count=64 status=none; sync; sleep 0.2"
file=$(field "$n-cache" .memory.file)
measured "memory.file after writing 64 MiB" "$((file >> 20)) MiB" "~64 MiB"
claim "at least 48 MiB of page cache charged" test "$file" -ge $((48 << 20))

say "5. CPU weights 100/200/300, three busy loops sharing one CPU for 3 s"
for w in 100 200 300; do
    "$CGROUP_BIN" exec "$n-w$w" --cpu-weight $w --cpuset-cpus 0 -- timeout 3 sh -c 'while :; do :; done' &
done
wait
u1=$(field "$n-w100" .cpu.usage_usec) u2=$(field "$n-w200" .cpu.usage_usec) u3=$(field "$n-w300" .cpu.usage_usec)
total=$((u1 + u2 + u3))
measured "shares of CPU 0" "$((u1 * 100 / total))% / $((u2 * 100 / total))% / $((u3 * 100 / total))%" "17% / 33% / 50%"
claim "weight 200 got more than weight 100" test "$u2" -gt "$u1"
claim "weight 300 got more than 1.8x weight 100 (3x on a quiet machine)" test "$u3" -gt $((2 * u1 * 9 / 10))
lab_done
