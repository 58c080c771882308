#!/bin/bash
# Lab 13 — the time namespace.
# Claim: "A time namespace gives a container its own CLOCK_MONOTONIC and CLOCK_BOOTTIME offsets (so its
# uptime can start at zero after a migration); wall-clock time, CLOCK_REALTIME, is the same for everyone."
source "$(dirname "$0")/lib.sh"
rootfs=$(lab_rootfs)
day=86400

say "1. Uptime (CLOCK_BOOTTIME) shifted by one day: --time-offset boottime=$day"
show "$NS_BIN" run --time-offset "boottime=$day" --rootfs "$rootfs" -- cat /proc/uptime
inside=$("$NS_BIN" run --time-offset "boottime=$day" --rootfs "$rootfs" -- cut -d. -f1 /proc/uptime)
host=$(cut -d. -f1 /proc/uptime)
measured "uptime inside (s)" "$inside"
measured "uptime on the host (s)" "$host"
measured "difference (s)" "$((inside - host))" "$day"
claim "uptime inside is the host's plus one day (±5 s)" test $((inside - host - day)) -ge -5 -a $((inside - host - day)) -le 5

say "2. A negative offset: the container's boot looks recent (uptime can't go below zero)"
back=$((host - 60))
young=$("$NS_BIN" run --time-offset "boottime=-$back,monotonic=-$back" --rootfs "$rootfs" -- cut -d. -f1 /proc/uptime)
measured "uptime inside with boottime=-$back (s)" "$young" "about 60"
claim "the container has been 'up' for about a minute" test "$young" -ge 55 -a "$young" -le 120

say "3. Wall-clock time is not namespaced"
wall_in=$("$NS_BIN" run --time-offset "boottime=$day" --rootfs "$rootfs" -- date +%s)
wall_host=$(date +%s)
measured "date +%s inside vs host" "$wall_in vs $wall_host"
claim "CLOCK_REALTIME is the same inside and out (±2 s)" test $((wall_in - wall_host)) -ge -2 -a $((wall_in - wall_host)) -le 2

say "4. It is a namespace like the others: its own inode"
ns_in=$("$NS_BIN" run --time --rootfs "$rootfs" -- stat -L -c %i /proc/self/ns/time)
ns_host=$(stat -L -c %i /proc/self/ns/time)
measured "time namespace inode inside vs host" "$ns_in vs $ns_host"
claim "the command is in a new time namespace" test "$ns_in" != "$ns_host"
lab_done
