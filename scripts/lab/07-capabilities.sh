#!/bin/bash
# Lab 07 — capabilities decoded.
# Seed: "root in a container is not root on the host: Docker keeps 14 of the ~41 capabilities
# (CHOWN DAC_OVERRIDE FSETID FOWNER MKNOD NET_RAW SETGID SETUID SETFCAP SETPCAP NET_BIND_SERVICE SYS_CHROOT
# KILL AUDIT_WRITE = 0xa80425fb) and `--cap-drop=ALL` keeps none."
source "$(dirname "$0")/lib.sh"
names=(CHOWN DAC_OVERRIDE DAC_READ_SEARCH FOWNER FSETID KILL SETGID SETUID SETPCAP LINUX_IMMUTABLE
    NET_BIND_SERVICE NET_BROADCAST NET_ADMIN NET_RAW IPC_LOCK IPC_OWNER SYS_MODULE SYS_RAWIO SYS_CHROOT
    SYS_PTRACE SYS_PACCT SYS_ADMIN SYS_BOOT SYS_NICE SYS_RESOURCE SYS_TIME SYS_TTY_CONFIG MKNOD LEASE
    AUDIT_WRITE AUDIT_CONTROL SETFCAP MAC_OVERRIDE MAC_ADMIN SYSLOG WAKE_ALARM BLOCK_SUSPEND AUDIT_READ
    PERFMON BPF CHECKPOINT_RESTORE)
decode() { # a CapEff hex mask -> names
    local m=$((16#$1)) i out=()
    for ((i = 0; i < ${#names[@]}; i++)); do ((m >> i & 1)) && out+=("${names[i]}"); done
    echo "${out[*]:-(none)}"
}
capeff() { "$RUN" --rm --network none "$@" "$IMAGE" sh -c "grep CapEff /proc/self/status" | awk '{print $2}'; }

say "1. The host's root shell"
h=$(awk '/CapEff/{print $2}' /proc/self/status)
measured "CapEff" "$h = $(decode "$h" | wc -w) capabilities"

say "2. A default container"
d=$(capeff)
measured "CapEff" "$d" "00000000a80425fb"
echo "    $(decode "$d")"
claim "Docker's default set: 0xa80425fb, 14 capabilities" test "$d" = 00000000a80425fb -a "$(decode "$d" | wc -w)" = 14

say "3. --cap-drop=ALL, and --cap-drop NET_RAW"
a=$(capeff --cap-drop=ALL)
measured "CapEff with --cap-drop=ALL" "$a = $(decode "$a")"
claim "nothing left" test "$((16#$a))" = 0
r=$(capeff --cap-drop NET_RAW)
measured "CapEff with --cap-drop NET_RAW" "$r"
claim "exactly NET_RAW (bit 13) removed" test $((16#$d & ~16#$r)) = $((1 << 13))

say "4. What a missing capability looks like: ping needs NET_RAW for its raw socket"
show "$RUN" --rm --network none "$IMAGE" ping -c1 127.0.0.1
show "$RUN" --rm --network none --cap-drop NET_RAW "$IMAGE" ping -c1 127.0.0.1
out=$("$RUN" --rm --network none --cap-drop NET_RAW "$IMAGE" ping -c1 127.0.0.1 2>&1)
claim "without NET_RAW the socket is refused" grep -qi 'permission denied\|not permitted' <<<"$out"

say "5. A non-root user keeps no effective capabilities even from the default set"
u=$(capeff --user 1000)
measured "CapEff as uid 1000" "$u"
claim "uid 1000 has none effective" test "$((16#$u))" = 0
lab_done
