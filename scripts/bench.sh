#!/usr/bin/env bash
# Benchmark the whole runtime, as root; rewrites the "runtime" section of docs/BENCHMARKS.md.
#
#  1. Start-to-exit of `/bin/true` in a container without network:
#       cbuild-run --rm --network none cbuild/busybox /bin/true
#     against, in the same run (the contenders taking turns in BENCH_ROUNDS rounds, lib/bench.sh),
#       runc run   on the same busybox tree (cbuild-image unpack) with an equivalent config.json: the same
#                  namespaces (pid net ipc uts mount cgroup), Docker's 14 capabilities, Docker's default
#                  seccomp profile (moby's file resolved for those capabilities and amd64), masked paths,
#                  and Docker's binds of the container's /etc/hostname, /etc/hosts and /etc/resolv.conf;
#       bwrap --unshare-all   bubblewrap's namespaces and a bind-mounted root (no cgroup, no seccomp);
#       cbuild-ns run alone   the floor of the chain's last step (namespaces + pivot_root, no overlay,
#                             cgroup, image or seccomp).
#  2. The same with a network: cbuild-run --network bridge (veth on the default bridge, NAT on) against
#     runc + the CNI bridge plugin (netns file, CNI ADD with host-local IPAM and ipMasq, runc run joining
#     it, CNI DEL).
#  3. Scale: SCALE (default 500) detached containers running `sleep`, started one after another: the time
#     per start for each block of 50, and the host memory each costs (MemAvailable before and after, and
#     the PSS of the processes a container consists of).
# BENCH_QUICK=1 runs 1 and 2 only and prints their medians (BENCHMARKS.md untouched); CBUILD_BIN picks the
# tools (default: a static release build of this checkout, scripts/build-static.sh).
#
# Everything runs inside a network namespace this script makes (it re-executes itself under
# `unshare --net`), which plays the host: the machine's network is never touched.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=lib/bench.sh
source "$root/scripts/lib/bench.sh"
[ "$(id -u)" = 0 ] || { echo "bench: run as root" >&2; exit 1; }
for t in hyperfine runc bwrap jq unshare nsenter; do
    command -v $t >/dev/null || { echo "bench: needs $t" >&2; exit 1; }
done
CNI=/usr/lib/cni
MOBY=${MOBY_PROFILE:-/work/shared/data/seccomp/moby-default.json}

if [ "${1:-}" != --inside ]; then
    if [ -z "${CBUILD_BIN:-}" ]; then
        # The static build (what scripts/build-static.sh makes, and the VM runs): no dynamic linking at
        # each of the chain's execs, and musl's start-up for the chain's tools (scripts/lib/static.sh).
        export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target-run}
        "$root/scripts/build-static.sh" -q
        source "$root/scripts/lib/static.sh"
        export CBUILD_BIN=$(static_dir)
    fi
    exec unshare --net --mount -- bash ${BENCH_TRACE:+-x} "$0" --inside
fi

unset CBUILD_NET_HOST_NS
ip link set lo up
work=$(mktemp -d /tmp/cbuild-bench.XXXXXX)
# The runtimes' state (cbuild's <state>, runc's --root) on a tmpfs, as /run is on Debian 12 and any systemd
# machine; this VM's /run is on its ext4 root, where each file made and removed costs ~0.1-0.3 ms. The
# tmpfs lives in this script's own mount namespace, with runc + CNI's namespace file (as /run/netns holds
# them). Images, layers and upper dirs stay on the disk, and CNI's host-local leases where it keeps them by
# default, on the disk.
# BENCH_STATE=disk keeps the state on the disk too.
mkdir -p "$work/run"
if [ "${BENCH_STATE:-tmpfs}" != disk ]; then mount -t tmpfs -o mode=0755 cbuild-bench-run "$work/run"; fi
export CBUILD_STATE=$work/run/cbuild CBUILD_DATA=$work/data
RUNC="runc --root $work/run/runc"
RUN=$root/scripts/cbuild-run
cleanup() {
    "$root/scripts/cbuild-rm" --prune >/dev/null 2>&1 || true
    for d in "$CBUILD_STATE"/*/; do
        [ -e "$d/undo" ] && "$root/scripts/cbuild-rm" -f "$(basename "$d")" >/dev/null 2>&1
    done
    $RUNC delete -f bench >/dev/null 2>&1 || true
    { grep -o " $work[^ ]*" /proc/self/mountinfo || true; } | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT
[ -n "${BENCH_KEEP:-}" ] && trap - EXIT
out=$work/out
mkdir -p "$out" "$CBUILD_STATE" "$CBUILD_DATA"
# hf --export-json JSON ARGS...: the contenders in turns (bench_hf, lib/bench.sh).
hf() { [ "$1" = --export-json ] || return 1; local json=$2; shift 2; bench_hf "$json" "$@"; }
median() { bench_median_ms "$1" "$2"; }
ratio() { python3 -c 'import sys; print("%.2f" % (float(sys.argv[1]) / float(sys.argv[2])))' "$1" "$2"; }

# --- set-up ----------------------------------------------------------------------------------------
"$RUN" --rm --network none cbuild/busybox true # builds the default image, fills the seccomp cache
"$RUN" --rm --network bridge cbuild/busybox true # makes the default bridge
bundle=$work/bundle
mkdir -p "$bundle"
"$CBUILD_BIN/cbuild-image" unpack cbuild/busybox "$bundle/rootfs"

# Docker's default seccomp profile as OCI: moby's entries whose includes hold for Docker's 14 caps on
# amd64, and none of whose excludes do.
caps='["CAP_CHOWN","CAP_DAC_OVERRIDE","CAP_FSETID","CAP_FOWNER","CAP_MKNOD","CAP_NET_RAW","CAP_SETGID",
 "CAP_SETUID","CAP_SETFCAP","CAP_SETPCAP","CAP_NET_BIND_SERVICE","CAP_SYS_CHROOT","CAP_KILL","CAP_AUDIT_WRITE"]'
jq --argjson caps "$caps" '{
  defaultAction, defaultErrnoRet,
  architectures: ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
  syscalls: [.syscalls[]
    | select(((.includes.caps // []) - $caps) == [])
    | select(((.includes.arches // ["amd64"]) | index("amd64")) != null)
    | select(((.excludes.caps // []) - ((.excludes.caps // []) - $caps)) == [])
    | select(((.excludes.arches // []) | index("amd64")) == null)
    | del(.includes, .excludes, .comment)]
}' "$MOBY" >"$work/seccomp-oci.json"
(cd "$bundle" && runc spec)
# Docker's runc config binds the container's own /etc/hostname, /etc/hosts and /etc/resolv.conf, as
# cbuild-run does (written once here: runc writes none).
mkdir -p "$work/etc"
echo bench >"$work/etc/hostname"
printf '127.0.0.1\tlocalhost\n' >"$work/etc/hosts"
cp /etc/resolv.conf "$work/etc/resolv.conf"
jq --argjson caps "$caps" --slurpfile sc "$work/seccomp-oci.json" --arg etc "$work/etc" '
  .process.terminal = false | .process.args = ["/bin/true"] | .root.readonly = false
  | .process.capabilities = {bounding: $caps, effective: $caps, permitted: $caps, inheritable: $caps}
  | .linux.seccomp = $sc[0]
  | .linux.namespaces = [{type:"pid"},{type:"network"},{type:"ipc"},{type:"uts"},{type:"mount"},{type:"cgroup"}]
  | .mounts += [("hostname", "hosts", "resolv.conf") | {destination: "/etc/\(.)", type: "bind",
      source: "\($etc)/\(.)", options: ["rbind", "rprivate"]}]
' "$bundle/config.json" >"$bundle/c.json" && mv "$bundle/c.json" "$bundle/config.json"
# The bridge variant joins a namespace file CNI has plumbed.
cni_bundle=$work/cni-bundle
mkdir -p "$cni_bundle"
jq --arg p "$work/run/cni-ns" --arg r "$bundle/rootfs" \
    '.root.path = $r | .linux.namespaces |= map(if .type == "network" then .path = $p else . end)' \
    "$bundle/config.json" >"$cni_bundle/config.json"
cat >"$work/cni.json" <<EOF
{"cniVersion": "1.0.0", "name": "benchnet", "type": "bridge", "bridge": "cnib0", "isGateway": true,
 "ipMasq": true, "ipam": {"type": "host-local", "subnet": "10.251.0.0/16", "dataDir": "$work/cni-ipam"}}
EOF

# Each contender is run by hyperfine itself (-N: no shell in between, so no shell's start-up is timed),
# except runc + CNI: a sequence of commands, from one small sh script.
cat >"$work/runc-cni" <<EOF
#!/bin/sh
# A runtime's sequence: a namespace file, CNI ADD, runc run in it, CNI DEL, the file released.
set -e
: >$work/run/cni-ns && unshare --net=$work/run/cni-ns true
export CNI_CONTAINERID=bench CNI_NETNS=$work/run/cni-ns CNI_IFNAME=eth0 CNI_PATH=$CNI
CNI_COMMAND=ADD $CNI/bridge <$work/cni.json >/dev/null
$RUNC run --bundle $cni_bundle bench
CNI_COMMAND=DEL $CNI/bridge <$work/cni.json >/dev/null
umount $work/run/cni-ns && rm $work/run/cni-ns
EOF
chmod +x "$work/runc-cni"
cbuild_run="$RUN --rm --network" # + none|bridge cbuild/busybox /bin/true

# The build and the set-up above leave the disk busy (writeback; this ext4 discards on delete), which
# slows every file the first timed runs create: let it settle. On an ext4 without a journal (this VM's)
# every inode allocated first skips, one by one, those freed in the last 60 s (360 s while their inode
# table block is unwritten: hence the sync), such as the image build's temporary tree. With 3 s instead
# of 6 the first timed runs were up to ~30% slower; waiting the whole 60 s made no difference beyond the
# machine's noise (2 runs of each, 2026-12-01).
sync
sleep 6

# --- 1 and 2 ---------------------------------------------------------------------------------------
hf --export-json "$out/none.json" \
    --command-name "cbuild-run --rm --network none" "$cbuild_run none cbuild/busybox /bin/true" \
    --command-name "runc run (same namespaces, caps, seccomp)" "$RUNC run --bundle $bundle bench" \
    --command-name "bwrap --unshare-all" "bwrap --unshare-all --bind $bundle/rootfs / --proc /proc --dev /dev /bin/true" \
    --command-name "floor: cbuild-ns run alone" \
    "$CBUILD_BIN/cbuild-ns run --pid --mount --net --ipc --uts --rootfs $bundle/rootfs -- /bin/true"
hf --export-json "$out/bridge.json" \
    --command-name "cbuild-run --rm --network bridge" "$cbuild_run bridge cbuild/busybox /bin/true" \
    --command-name "runc run + CNI bridge ADD/DEL" "$work/runc-cni"

# BENCH_QUICK=1: only the medians of 1 and 2, printed; BENCHMARKS.md is left as it is.
if [ -n "${BENCH_QUICK:-}" ]; then
    for f in none bridge; do
        jq -r '.results[] | "\(.command): \(.median * 1000 | . * 1000 | round / 1000) ms"' "$out/$f.json"
    done
    exit 0
fi

# --- 3. scale ----------------------------------------------------------------------------------------
N=${SCALE:-500}
avail() { awk '/MemAvailable/{print $2}' /proc/meminfo; }
sync
echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true
before=$(avail)
declare -a blk_ms
now() { date +%s%N; }
for b in $(seq 0 $((N / 50 - 1))); do
    t0=$(now)
    for i in $(seq $((b * 50 + 1)) $((b * 50 + 50))); do
        "$RUN" -d --name "s$i" --network none cbuild/busybox sleep 36000 >/dev/null
    done
    blk_ms[b]=$(python3 -c "print('%.1f' % (($(now) - $t0) / 1e6 / 50))")
done
sleep 2
after=$(avail)
per_kib=$(((before - after) / N))
running=$("$root/scripts/cbuild-ps" | grep -c ' running ' || true)
# PSS of what one container consists of: the supervisor subshell, cbuild-ns (the chain's parent), the workload.
pss() { awk '/^Pss:/{print $2}' "/proc/$1/smaps_rollup" 2>/dev/null || echo 0; }
sup=$(. "$CBUILD_STATE/s$N/record"; echo "$supervisor")
wl=$(jq -s 'map(select(.phase == "exec"))[0].pid' "$CBUILD_STATE/s$N/status")
nsp=$(awk '{print $4}' "/proc/$wl/stat")
sup_pss=$(pss "$sup") ns_pss=$(pss "$nsp") wl_pss=$(pss "$wl")
# The cgroup's charge moves with the kernel's slab and per-CPU caches and with whichever container first
# faults a file page in: the median of every tenth container, not one of them.
cg_kib=$(for ((i = 10; i <= N; i += 10)); do "$CBUILD_BIN/cbuild-cgroup" stat "s$i" --json; done |
    jq -s 'map(.memory.current) | sort | .[length / 2 | floor] / 1024 | floor')
t0=$(now)
for i in $(seq 1 "$N"); do "$root/scripts/cbuild-rm" -f "s$i" >/dev/null; done
rm_ms=$(python3 -c "print('%.1f' % (($(now) - $t0) / 1e6 / $N))")

# --- the section -------------------------------------------------------------------------------------
c=$(median "$out/none.json" 0) r=$(median "$out/none.json" 1) w=$(median "$out/none.json" 2) f=$(median "$out/none.json" 3)
cb=$(median "$out/bridge.json" 0) rc=$(median "$out/bridge.json" 1)
body=$work/section.md
{
    echo "## runtime (scripts/bench.sh)"
    echo
    echo "$(bench_machine); static release builds (scripts/build-static.sh); hyperfine medians of ${RUNS:-30} runs, the contenders taking turns in ${BENCH_ROUNDS:-5} rounds (scripts/lib/bench.sh). Debug builds are slower."
    if [ "${BENCH_STATE:-tmpfs}" = disk ]; then
        echo "The runtimes' state (cbuild's \`<state>\`, runc's \`--root\`) on this VM's ext4 disk (BENCH_STATE=disk)."
    else
        echo "The runtimes' state (cbuild's \`<state>\`, runc's \`--root\`) on a tmpfs, as \`/run\` is on Debian 12 (this VM's"
        echo "\`/run\` is on its ext4 root; \`BENCH_STATE=disk\` measures that). Images and upper dirs on the disk."
    fi
    echo "hyperfine starts each contender itself (no shell), except runc + CNI, a sequence run from a small sh script."
    echo
    echo "| start to exit of \`/bin/true\` | median ms | vs runc |"
    echo "|---|---|---|"
    echo "| cbuild-run --rm --network none | $c | $(ratio "$c" "$r")× |"
    echo "| runc run (same namespaces, caps, seccomp; no image, no overlay) | $r | 1.00× |"
    echo "| bwrap --unshare-all (no cgroup, no seccomp) | $w | $(ratio "$w" "$r")× |"
    echo "| floor: cbuild-ns run alone (namespaces + pivot_root) | $f | $(ratio "$f" "$r")× |"
    echo
    echo "| with a network | median ms | vs runc + CNI |"
    echo "|---|---|---|"
    echo "| cbuild-run --rm --network bridge | $cb | $(ratio "$cb" "$rc")× |"
    echo "| runc run + CNI bridge ADD/DEL (netns file, host-local, ipMasq) | $rc | 1.00× |"
    echo
    echo "Targets (issue 9): ≤ 0.3× runc without a network, ≤ 0.2× runc + CNI with one."
    echo
    echo "**$N detached containers** (\`cbuild-run -d --network none cbuild/busybox sleep 36000\`, one after another;"
    echo "$running were running at the end):"
    echo
    echo "| containers already running | ms per start |"
    echo "|---|---|"
    for b in "${!blk_ms[@]}"; do echo "| $((b * 50))–$((b * 50 + 49)) | ${blk_ms[b]} |"; done
    echo
    echo "Memory per container: its cgroup's memory.current (cbuild-ns supervising, the workload, and the kernel"
    echo "memory charged to them: namespaces, mounts, page tables; the median of every tenth container) $cg_kib KiB + the"
    echo "supervisor's PSS (/bin/sh waiting for the chain, the last container's) $sup_pss KiB = **$((cg_kib + sup_pss)) KiB**, of which the"
    echo "workload (\`sleep\`) is $wl_pss KiB PSS: **$((cg_kib + sup_pss - wl_pss)) KiB beyond the workload** (target ≤ 1024)."
    echo "PSS of cbuild-ns supervising the command: $ns_pss KiB. Host MemAvailable before − after ÷ $N: $per_kib KiB"
    echo "(noisy: other work on the machine frees and takes memory meanwhile). \`cbuild-rm -f\` of each"
    echo "afterwards: $rm_ms ms per container."
} >"$body"
cat "$body"
bench_section runtime "$body"
