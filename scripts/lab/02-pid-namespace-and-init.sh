#!/bin/bash
# Lab 02 — the PID namespace and PID 1's duties.
# Seed: "The first process in a PID namespace is PID 1: orphans are re-parented to it and it must reap them,
# or zombies pile up; signals without a handler are ignored by PID 1, so `docker stop` waits and then kills.
# `--init` (tini) puts a small init in front of the command."
source "$(dirname "$0")/lib.sh"
rootfs=$(lab_rootfs)

# start NAME ARGS... — a cbuild-ns container in the background; sets host PID in ${NAME}_pid
start() {
    local name=$1
    shift
    exec 3>"$LAB/$name.info"
    "$NS_BIN" run --pid --mount --rootfs "$rootfs" --info-fd 3 "$@" &
    eval "${name}_runner=$!"
    exec 3>&-
    for _ in $(seq 100); do [[ -s $LAB/$name.info ]] && break; sleep 0.02; done
    eval "${name}_pid=$(rt_json_field "$(<"$LAB/$name.info")" pid)"
    at_exit "kill -KILL $(eval echo \$${name}_pid) $(eval echo \$${name}_runner)"
}
# zombies PIDNS — processes in state Z in that pid namespace
zombies() {
    local n=0 p
    for p in /proc/[0-9]*; do
        [[ $(readlink "$p/ns/pid" 2>/dev/null) == "$1" ]] || continue
        grep -q '^State:.*Z' "$p/status" 2>/dev/null && n=$((n + 1))
    done
    echo $n
}

say "1. NSpid: one process, one PID per namespace it is visible in"
start a -- /bin/sh -c 'sleep 30'
show grep -E '^(Pid|NSpid)' "/proc/$a_pid/status"
claim "NSpid lists the host PID then 1" grep -Eq "^NSpid:\s+$a_pid\s+1$" "/proc/$a_pid/status"

say "2. PID 1 ignores signals it has no handler for: SIGTERM does nothing, SIGKILL from the host works"
kill -TERM "$a_pid"
sleep 0.3
claim "after SIGTERM the PID 1 shell is still alive" test -d "/proc/$a_pid"
kill -KILL "$a_pid"
wait "$a_runner"
code=$?
measured "exit status after SIGKILL" "$code" "137 = 128+9"
claim "SIGKILL from outside ends it (137)" test "$code" = 137

say "3. Orphans become PID 1's children; a PID 1 that never wait()s keeps them as zombies"
# The subshell's sleep is orphaned at once; PID 1 then becomes `sleep`, which reaps nobody.
start b -- /bin/sh -c '(for i in 1 2 3 4 5; do sleep 0.1 & done); exec sleep 30'
sleep 0.8
nb=$(zombies "$(readlink "/proc/$b_pid/ns/pid")")
show ps -o pid,stat,comm --ppid "$b_pid"
measured "zombies without --init" "$nb" "they accumulate"
claim "without an init, 5 orphans stay zombies" test "$nb" = 5

say "4. With --init, cbuild-ns stays PID 1, reaps every orphan and forwards signals"
start c --init -- /bin/sh -c '(for i in 1 2 3 4 5; do sleep 0.1 & done); exec sleep 30'
sleep 0.8
nc=$(zombies "$(readlink "/proc/$c_pid/ns/pid")")
measured "zombies with --init" "$nc" "0"
claim "with --init no zombie is left" test "$nc" = 0
kill -TERM "$c_runner"
wait "$c_runner"
code=$?
measured "exit status after SIGTERM with --init" "$code" "143 = 128+15"
claim "with --init, SIGTERM reaches the command and stops it" test "$code" = 143
kill -KILL "$b_pid" 2>/dev/null
lab_done
