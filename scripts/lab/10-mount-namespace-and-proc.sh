#!/bin/bash
# Lab 10 — the mount namespace and /proc.
# Seed: "A new PID namespace without a new /proc still shows the host's processes: /proc is a view of the
# PID namespace of whoever mounted it. A mount namespace gives the container its own mount table, so it can
# mount its own /proc without the host seeing it."
source "$(dirname "$0")/lib.sh"

say "1. New PID namespace, the host's /proc: ps still lists the host's processes"
n_host=$(unshare --pid --fork sh -c 'ls -d /proc/[0-9]* | wc -l')
show unshare --pid --fork sh -c 'echo "my pid: $$"; ls -d /proc/[0-9]* | wc -l'
measured "processes visible without a new /proc" "$n_host"
claim "more than 10 processes visible: /proc shows the host's PID namespace" test "$n_host" -gt 10

say "2. With a mount namespace and its own /proc (unshare --mount-proc, or cbuild-ns run --pid --mount)"
n_own=$("$NS_BIN" run --pid --mount -- sh -c 'ls -d /proc/[0-9]* | wc -l')
show "$NS_BIN" run --pid --mount -- sh -c 'echo "my pid: $$"; ps'
measured "processes visible with its own /proc" "$n_own" "the container's only"
claim "at most the shell and its ls are visible" test "$n_own" -le 3

say "3. Mounts made inside the mount namespace stay inside"
mkdir -p "$LAB/mnt"
show "$NS_BIN" run --mount -- sh -c "mount -t tmpfs lab $LAB/mnt && grep ' $LAB/mnt ' /proc/self/mounts"
claim "the host does not see the tmpfs mounted inside" bash -c "! grep -q ' $LAB/mnt ' /proc/self/mounts"
host_n=$(wc -l </proc/self/mountinfo)
ns_n=$("$NS_BIN" run --mount -- sh -c 'wc -l </proc/self/mountinfo')
measured "mount table entries host / new namespace" "$host_n / $ns_n" "a copy at creation"
claim "a new mount namespace starts as a copy of the host's table" test "$ns_n" -ge $((host_n - 2))
lab_done
