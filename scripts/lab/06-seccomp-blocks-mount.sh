#!/bin/bash
# Lab 06 — seccomp blocks mount even for a process holding CAP_SYS_ADMIN.
# Seed: "Docker's default seccomp profile refuses about 44 system calls (mount, reboot, keyctl, kexec_load,
# ...) with EPERM, a second wall behind capabilities: even a process that has CAP_SYS_ADMIN cannot mount
# when its filter refuses mount(2)."
source "$(dirname "$0")/lib.sh"
rootfs=$(lab_rootfs)

say "1. What the compiled default profile does with a few calls (run through the BPF program itself)"
show "$SECCOMP_BIN" check --profile default mount umount2 reboot keyctl getpid
claim "default profile: mount → ERRNO(EPERM)" bash -c "'$SECCOMP_BIN' check --profile default mount | grep -q 'ERRNO(1 EPERM)'"

say "2. Compile it for a container without CAP_SYS_ADMIN (Docker's default caps) into a BPF file"
show "$SECCOMP_BIN" compile default --caps default -o "$LAB/default.bpf" --json
measured "program size" "$(($(stat -c %s "$LAB/default.bpf") / 8)) instructions"

say "3. A container that holds CAP_SYS_ADMIN, without and with the filter"
mnt='mount -t tmpfs none /tmp && echo mounted'
show "$NS_BIN" run --pid --mount --rootfs "$rootfs" --cap-drop ALL --cap-add SYS_ADMIN -- /bin/sh -c "$mnt; grep CapEff /proc/self/status"
without=$("$NS_BIN" run --pid --mount --rootfs "$rootfs" --cap-drop ALL --cap-add SYS_ADMIN -- /bin/sh -c "$mnt" 2>&1)
show "$NS_BIN" run --pid --mount --rootfs "$rootfs" --cap-drop ALL --cap-add SYS_ADMIN --seccomp "$LAB/default.bpf" -- /bin/sh -c "$mnt; grep -E 'CapEff|Seccomp' /proc/self/status"
with=$("$NS_BIN" run --pid --mount --rootfs "$rootfs" --cap-drop ALL --cap-add SYS_ADMIN --seccomp "$LAB/default.bpf" -- /bin/sh -c "$mnt" 2>&1)
claim "CAP_SYS_ADMIN alone: mount succeeds" test "$with" != mounted -a "$without" = mounted
claim "CAP_SYS_ADMIN + the filter: mount refused (EPERM)" grep -q 'not permitted\|permission denied' <<<"$with"

say "4. Through cbuild-run: the default is on; mount fails, and Seccomp: 2 (filter mode) shows it"
show "$RUN" --rm --network none "$IMAGE" sh -c 'grep Seccomp: /proc/self/status; mount -t tmpfs none /tmp'
st=$("$RUN" --rm --network none "$IMAGE" grep Seccomp: /proc/self/status)
claim "cbuild-run loads the filter by default" test "$st" = "Seccomp:	2"
lab_done
