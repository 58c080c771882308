#!/usr/bin/env bash
# Benchmark cbuild-net, as root; rewrites the "net" section of docs/BENCHMARKS.md. A few minutes.
#
# Everything runs inside a network namespace this script creates (it re-executes itself under
# `unshare --net`), which plays the host: bridges, veth host ends, nft/iptables rules and ip_forward
# live only there and vanish with it. The machine's own network configuration is never touched.
#
#  1. connect, disconnect, and the two together, one container namespace attached to a bridge with NAT
#     on, against the anchors in the same hyperfine run:
#       - the CNI bridge plugin (Debian's containernetworking-plugins, /usr/lib/cni/bridge) with
#         host-local IPAM and ipMasq on, ADD and DEL, same kind of subnet;
#       - the equivalent iproute2 sequence (veth created in the namespace, master, address, lo, route;
#         no IPAM, no NAT): the floor a tool that forks `ip` cannot go below;
#     and floors in the connect run: starting a process that does nothing (/bin/true), the same through
#     `sh -c` (what the CNI and iproute2 rows pay for their shell), one `ip link add ... type veth
#     peer ... netns` (one process, the kernel creating a pair in a namespace), and a minimal static
#     process making every request connect makes of the kernel and nothing else
#     (cbuild-net/examples/connect_floor.rs): no connect can be faster than that on this machine. cbuild-net and the single-process floors run directly (hyperfine -N,
#     no shell); the CNI plugin needs its configuration on stdin, which hyperfine 1.15 cannot give
#     without a shell, and the iproute2 sequence is several processes, so those two run from a small
#     sh script each.
#     Disconnect also as `disconnect --leave-link` after `netns del` (the kernel deletes the pair with
#     the namespace), and a whole namespace's life both ways in the cycle run.
#  2. Scale: 500 containers on one bridge, connected then disconnected one after another; time per
#     container for each block of 100 (it should stay flat as the bridge fills), and the same with the
#     iproute2 sequence; after each block, one more connect against connect's kernel requests alone
#     (connect_floor) on the same bridge: the kernel's growth is in both, the difference is cbuild-net's.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=lib/bench.sh
source "$root/scripts/lib/bench.sh"
[ "$(id -u)" = 0 ] || { echo "bench-net: run as root" >&2; exit 1; }
for t in hyperfine unshare nsenter ip nft; do command -v $t >/dev/null || { echo "bench-net: needs $t" >&2; exit 1; }; done
CNI=/usr/lib/cni
[ -x $CNI/bridge ] && [ -x $CNI/host-local ] || { echo "bench-net: needs containernetworking-plugins" >&2; exit 1; }

if [ "${1:-}" != --inside ]; then
    export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target-net}
    # The static build (scripts/lib/static.sh: musl, what runs inside any rootfs) is the one measured;
    # the ordinary dynamic release build and a glibc static build are measured too, as rows of their own
    # (glibc's start-up and, for the first, the dynamic linker).
    source "$root/scripts/lib/static.sh"
    static_musl_check || exit 125
    (cd "$root" && cargo build -q --release -p cbuild-net &&
        static_glibc build -q --release -p cbuild-net --bin cbuild-net &&
        static_musl build -q --release -p cbuild-net --bin cbuild-net --example veth_floor --example connect_floor)
    export BGLIBC=$CARGO_TARGET_DIR/x86_64-unknown-linux-gnu/release/cbuild-net
    export B=$CARGO_TARGET_DIR/x86_64-unknown-linux-musl/release/cbuild-net
    export FLOOR=$CARGO_TARGET_DIR/x86_64-unknown-linux-musl/release/examples/veth_floor
    export CFLOOR=$CARGO_TARGET_DIR/x86_64-unknown-linux-musl/release/examples/connect_floor
    export BDYN=$CARGO_TARGET_DIR/release/cbuild-net
    # A fresh network namespace is "the host" for the whole run.
    exec unshare --net --mount -- bash ${BENCH_TRACE:+-x} "$0" --inside
fi

unset CBUILD_NET_HOST_NS
ip link set lo up
work=$(mktemp -d /tmp/cbuild-bench-net.XXXXXX)
# cbuild-net's state (<state>: leases, records) on a tmpfs, as /run is on Debian 12 and any systemd
# machine, in this script's own mount namespace; this VM's /run is on its ext4 root, where each file
# made costs ~0.1-0.3 ms, so a connect is also timed with its state there ("state on the disk"). The CNI
# plugin keeps its leases where host-local keeps them by default, on the disk (/var/lib/cni/networks).
mkdir -p "$work/run" "$work/state-disk"
mount -t tmpfs -o mode=0755 cbuild-bench-run "$work/run"
export CBUILD_STATE=$work/run/cbuild
cleanup() {
    { grep -o " $work[^ ]*" /proc/self/mountinfo || true; } | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT
[ -n "${BENCH_KEEP:-}" ] && trap - EXIT
out=$work/out
mkdir -p "$out"

mkns() { : >"$1" && unshare --net="$1" true; }
median() { bench_median_ms "$1" "$2"; }
ratio() { python3 -c 'import sys; print("%.1f" % (float(sys.argv[1]) / float(sys.argv[2])))' "$1" "$2"; }
# hf --export-json JSON ARGS...: the contenders in turns (bench_hf, lib/bench.sh).
hf() { [ "$1" = --export-json ] || return 1; local json=$2; shift 2; bench_hf "$json" "$@"; }

# --- set-up: one bridge per contender, each on its own /16, NAT on ---------------------------------
"$B" bridge add cbb0 --subnet 10.250.0.0/16 --nat
cat >"$work/cni.json" <<EOF
{"cniVersion": "1.0.0", "name": "benchnet", "type": "bridge", "bridge": "cnib0", "isGateway": true,
 "ipMasq": true, "ipam": {"type": "host-local", "subnet": "10.251.0.0/16", "dataDir": "$work/cni-ipam"}}
EOF
# The iproute2 anchor's bridge as cbuild makes its own: multicast snooping off (nl::add_bridge says why).
ip link add ipb0 type bridge mcast_snooping 0 && ip addr add 10.252.0.1/16 dev ipb0 && ip link set ipb0 up
c1=$work/c1 c2=$work/c2 c3=$work/c3 c4=$work/c4 c5=$work/c5
mkns "$c1" && mkns "$c2" && mkns "$c3" && mkns "$c4" && mkns "$c5"

# Each contender as one executable, so hyperfine runs it without a shell (-N) and no contender pays
# for a shell the others do not.
cat >"$work/cni" <<EOF
#!/bin/sh
# cni ADD|DEL: the CNI bridge plugin on container c2, as a runtime calls it.
CNI_COMMAND=\$1 CNI_CONTAINERID=bench CNI_NETNS=$c2 CNI_IFNAME=eth0 CNI_PATH=$CNI exec $CNI/bridge <$work/cni.json >/dev/null
EOF
printf 'link add ipv0 type veth peer name eth0 netns %s\nlink set ipv0 master ipb0 up\n' "$c3" >"$work/ip-host.batch"
printf 'addr add 10.252.0.2/16 dev eth0\nlink set eth0 up\nlink set lo up\nroute add default via 10.252.0.1\n' >"$work/ip-ctr.batch"
cat >"$work/iproute" <<EOF
#!/bin/sh
# iproute up|down: the same plumbing by hand on container c3.
case \$1 in
up) ip -b $work/ip-host.batch && exec nsenter --net=$c3 ip -b $work/ip-ctr.batch ;;
down) exec ip link del ipv0 ;;
unveth) exec ip link del ipf0 ;;
unfloor) exec ip link del cff0 ;;
esac
EOF
cat >"$work/cbuild" <<EOF
#!/bin/sh
# cbuild down|cycle|prep-leave|life|life-leave: what needs more than one process (the timed single
# commands run directly). prep-leave: a namespace "lk" connected, then released (netns del), as a
# runtime leaves it before "disconnect --leave-link". life, life-leave: a namespace's whole life, with
# a plain disconnect before netns del, or netns del then disconnect --leave-link.
case \$1 in
down) exec $B disconnect --id bench ;;
cycle) $B connect $c1 --bridge cbb0 --id bench >/dev/null && exec $B disconnect --id bench ;;
prep-leave) $B netns add lk >/dev/null && $B connect lk --bridge cbb0 --id lk >/dev/null && exec $B netns del lk ;;
life) $B netns add lf >/dev/null && $B connect lf --bridge cbb0 --id lf >/dev/null && $B disconnect --id lf && exec $B netns del lf ;;
life-leave) $B netns add lf >/dev/null && $B connect lf --bridge cbb0 --id lf >/dev/null && $B netns del lf && exec $B disconnect --id lf --leave-link ;;
esac
EOF
# "down || true": the prepare step before the first timed run finds nothing to remove. Then a pause,
# so each timed run starts once the kernel has finished the previous run's deferred work (deleting a
# device leaves RCU callbacks and workqueue items that would otherwise be charged to the next command).
cat >"$work/quiet" <<EOF
#!/bin/sh
"\$@" >/dev/null 2>&1 || true
sleep \${SETTLE:-0.2}
EOF
# unprobe: the scale run's probes (one more connect, one connect_floor) removed, then the pause.
cat >"$work/unprobe" <<EOF
#!/bin/sh
$B disconnect --id probe >/dev/null 2>&1 || true
ip link del cff0 >/dev/null 2>&1 || true
sleep \${SETTLE:-0.2}
EOF
chmod +x "$work/cni" "$work/iproute" "$work/cbuild" "$work/quiet" "$work/unprobe"
q=$work/quiet

# --- 1. connect / disconnect ------------------------------------------------------------------------
# Every cbuild-net row and single-process floor runs the program itself (-N: no shell in between;
# hyperfine discards its output).
hf --export-json "$out/up.json" \
    --prepare "$q $work/cbuild down" --command-name "cbuild-net connect" "$B connect $c1 --bridge cbb0 --id bench" \
    --prepare "$q $work/cni DEL" --command-name "CNI bridge ADD" "$work/cni ADD" \
    --prepare "$q $work/iproute down" --command-name "iproute2 sequence up" "$work/iproute up" \
    --prepare "$q $work/iproute unveth" --command-name "floor: ip link add veth peer netns" "ip link add ipf0 type veth peer name eth0 netns $c4" \
    --prepare "true" --command-name "floor: /bin/true" "/bin/true" \
    --prepare "$q $work/cbuild down" --command-name "cbuild-net connect (dynamic build)" "$BDYN connect $c1 --bridge cbb0 --id bench" \
    --prepare "$q $work/iproute unveth" --command-name "floor: minimal static process making the pair" "$FLOOR ipf0 eth0 $c4" \
    --prepare "true" --command-name "floor: sh -c 'exec /bin/true'" "sh -c 'exec /bin/true'" \
    --prepare "$q $work/cbuild down" --command-name "cbuild-net connect (glibc static build)" "$BGLIBC connect $c1 --bridge cbb0 --id bench" \
    --prepare "$q $work/iproute unfloor" --command-name "floor: minimal static process making connect's requests" "$CFLOOR cff0 eth0 $c5 cbb0 10.250.255.250/16 10.250.0.1"
SETTLE=0 $q "$work/iproute" unveth
SETTLE=0 $q "$work/iproute" unfloor
# The same connect with its state on the disk (this VM's /run): its own bridge and namespace there.
CBUILD_STATE=$work/state-disk "$B" bridge add cbd0 --subnet 10.253.0.0/16 --nat
CBUILD_STATE=$work/state-disk hf --export-json "$out/up-disk.json" \
    --prepare "$q $B disconnect --id disk" --command-name "cbuild-net connect, state on the disk" "$B connect $c4 --bridge cbd0 --id disk"
CBUILD_STATE=$work/state-disk SETTLE=0 $q "$B" disconnect --id disk
CBUILD_STATE=$work/state-disk "$B" bridge del cbd0
hf --export-json "$out/down.json" \
    --prepare "$q $B connect $c1 --bridge cbb0 --id bench" --command-name "cbuild-net disconnect" "$B disconnect --id bench" \
    --prepare "$q $work/cni ADD" --command-name "CNI bridge DEL" "$work/cni DEL" \
    --prepare "$q $work/iproute up" --command-name "iproute2 ip link del" "ip link del ipv0" \
    --prepare "$q $work/cbuild prep-leave" --command-name "cbuild-net disconnect --leave-link" "$B disconnect --id lk --leave-link"
SETTLE=0 $q "$work/cbuild" down
SETTLE=0 $q "$work/cni" DEL
SETTLE=0 $q "$work/iproute" down
hf --export-json "$out/cycle.json" \
    --command-name "cbuild-net connect + disconnect" "$work/cbuild cycle" \
    --command-name "CNI bridge ADD + DEL" "sh -c '$work/cni ADD && $work/cni DEL'" \
    --command-name "iproute2 up + down" "sh -c '$work/iproute up && $work/iproute down'" \
    --command-name "netns add, connect, disconnect, netns del" "$work/cbuild life" \
    --command-name "netns add, connect, netns del, disconnect --leave-link" "$work/cbuild life-leave"

# CPU time (task-clock) of a connect, a disconnect both ways and /bin/true, 20 runs each: the part of
# the wall time that is this process's own work, whatever the load of the machine.
cpu=""
if command -v perf >/dev/null; then
    tc() { perf stat -x, -e task-clock "$@" 2>&1 >/dev/null | awk -F, '/task-clock/{print $1}'; }
    : >"$out/cpu-connect" && : >"$out/cpu-true" && : >"$out/cpu-floor" && : >"$out/cpu-cfloor" && : >"$out/cpu-down" && : >"$out/cpu-leave"
    for _ in $(seq 1 20); do
        sleep 0.2
        tc "$B" connect "$c1" --bridge cbb0 --id bench >>"$out/cpu-connect"
        tc /bin/true >>"$out/cpu-true"
        sleep 0.2
        tc "$B" disconnect --id bench >>"$out/cpu-down"
        sleep 0.2
        "$work/cbuild" prep-leave
        tc "$B" disconnect --id lk --leave-link >>"$out/cpu-leave"
        sleep 0.2
        tc "$FLOOR" ipf0 eth0 "$c4" >>"$out/cpu-floor"
        ip link del ipf0
        sleep 0.2
        tc "$CFLOOR" cff0 eth0 "$c5" cbb0 10.250.255.250/16 10.250.0.1 >>"$out/cpu-cfloor"
        ip link del cff0
    done
    med() { python3 -c 'import statistics,sys; print("%.2f" % statistics.median(float(l) for l in open(sys.argv[1]) if l.strip()))' "$1"; }
    cpu="CPU time (perf stat task-clock, median of 20): connect $(med "$out/cpu-connect") ms, the minimal process making connect's requests $(med "$out/cpu-cfloor") ms, the minimal pair-making process $(med "$out/cpu-floor") ms, \`/bin/true\` $(med "$out/cpu-true") ms; disconnect $(med "$out/cpu-down") ms, \`disconnect --leave-link\` $(med "$out/cpu-leave") ms."
fi

# --- 2. scale: 500 containers on one bridge ---------------------------------------------------------
N=${SCALE:-500}
mkdir -p "$work/scale"
for i in $(seq 1 "$N"); do mkns "$work/scale/$i"; done
# The namespaces the runs above destroyed are cleaned up by a kernel worker, later, under the RTNL lock:
# let that finish first, or the first hundred pay for it.
sleep 3
now() { date +%s%N; }
declare -a up_ms down_ms pc_ms pf_ms
for blk in $(seq 0 $((N / 100 - 1))); do
    t0=$(now)
    for i in $(seq $((blk * 100 + 1)) $((blk * 100 + 100))); do
        "$B" connect "$work/scale/$i" --bridge cbb0 --id "s$i" >/dev/null
    done
    up_ms[blk]=$(python3 -c "print('%.2f' % (($(now) - $t0) / 1e6 / 100))")
    # At this count, on this bridge: one more connect, against connect's kernel requests alone
    # (connect_floor) on the same bridge, in turns, each after a settle, as in the connect run above.
    # The difference is what cbuild-net itself adds; the kernel's growth is in both.
    # Each prepare removes what either left, so each runs with the bridge at exactly this count.
    RUNS=${PROBE_RUNS:-15} BENCH_ROUNDS=3 hf --export-json "$out/probe$blk.json" \
        --prepare "$work/unprobe" --command-name "connect" "$B connect $c1 --bridge cbb0 --id probe" \
        --prepare "$work/unprobe" --command-name "connect's requests alone" "$CFLOOR cff0 eth0 $c5 cbb0 10.250.255.250/16 10.250.0.1"
    SETTLE=0 "$work/unprobe"
    ! ip link show cff0 >/dev/null 2>&1 || { echo "bench-net: cff0 left behind" >&2; exit 1; }
    pc_ms[blk]=$(median "$out/probe$blk.json" 0) pf_ms[blk]=$(median "$out/probe$blk.json" 1)
done
[ "$(ls "$CBUILD_STATE/net/cbb0" | grep -c '^10\.')" = "$N" ] || { echo "bench-net: expected $N leases" >&2; exit 1; }
for blk in $(seq $((N / 100 - 1)) -1 0); do
    t0=$(now)
    for i in $(seq $((blk * 100 + 1)) $((blk * 100 + 100))); do
        "$B" disconnect --id "s$i"
    done
    down_ms[blk]=$(python3 -c "print('%.2f' % (($(now) - $t0) / 1e6 / 100))")
done
# The same with the iproute2 sequence on its own bridge, in the same namespaces (now empty again): how
# much of the growth is the kernel's own, which every tool pays. Both ends without an IPv6 link-local
# address, as cbuild makes them: with one, each new port's DAD, router solicitations and MLD reports
# are flooded to every port already there, and the sequence grows by half over 300 containers.
declare -a ipup_ms ipdown_ms
for blk in $(seq 0 $((N / 100 - 1))); do
    t0=$(now)
    for i in $(seq $((blk * 100 + 1)) $((blk * 100 + 100))); do
        printf 'link add ips%s type veth peer name eth0 netns %s\nlink set ips%s addrgenmode none master ipb0 up\n' \
            "$i" "$work/scale/$i" "$i" | ip -b -
        printf 'link set eth0 addrgenmode none\naddr add 10.252.%s.%s/16 dev eth0\nlink set eth0 up\nlink set lo up\nroute add default via 10.252.0.1\n' \
            $((i / 250 + 1)) $((i % 250 + 2)) | nsenter --net="$work/scale/$i" ip -b -
    done
    ipup_ms[blk]=$(python3 -c "print('%.2f' % (($(now) - $t0) / 1e6 / 100))")
done
for blk in $(seq $((N / 100 - 1)) -1 0); do
    t0=$(now)
    for i in $(seq $((blk * 100 + 1)) $((blk * 100 + 100))); do
        ip link del "ips$i"
    done
    ipdown_ms[blk]=$(python3 -c "print('%.2f' % (($(now) - $t0) / 1e6 / 100))")
done

# --- table ------------------------------------------------------------------------------------------
table=$work/table.md
row() { # label json
    local a b c
    a=$(median "$2" 0) b=$(median "$2" 1) c=$(median "$2" 2)
    echo "| $1 | $a | $b | $c | $(ratio "$b" "$a")× | $(ratio "$c" "$a")× |"
}
{
    echo "### cbuild-net (scripts/bench-net.sh)"
    echo
    echo "$(bench_machine); all inside a network namespace the script made; hyperfine medians (ms), ${RUNS:-30} runs each, the contenders of a table taking turns in ${BENCH_ROUNDS:-5} rounds."
    echo "Each timed connect or disconnect starts 0.2 s after its prepare step (the kernel's deferred work from"
    echo "deleting or creating the previous pair done); the connect + disconnect cycles run back to back."
    echo "Anchors: the CNI bridge plugin ($CNI/bridge, host-local IPAM, ipMasq on) and the equivalent iproute2"
    echo "commands (no IPAM, no NAT). Ratios: how many times longer the anchor takes than cbuild-net."
    echo
    echo "| operation | cbuild-net | CNI bridge | iproute2 | CNI / cbuild | iproute2 / cbuild |"
    echo "|---|---:|---:|---:|---:|---:|"
    row "connect (CNI ADD, ip up)" "$out/up.json"
    row "disconnect (CNI DEL, ip link del)" "$out/down.json"
    row "connect + disconnect" "$out/cycle.json"
    echo
    echo "cbuild-net and the single-process floors below run directly (hyperfine -N: no shell). The CNI plugin"
    echo "reads its configuration on stdin, which hyperfine 1.15 can only give through a shell, and the iproute2 \"up\""
    echo "is three processes, so those two run from a small \`sh\` script each and pay one shell start:"
    echo "\`sh -c 'exec /bin/true'\` took $(median "$out/up.json" 7) ms in the connect run, \`/bin/true\` $(median "$out/up.json" 4) ms. The"
    echo "cycles run from a shell script for every contender alike."
    echo
    echo "The cbuild-net column is the static build (scripts/build-static.sh: musl, scripts/lib/static.sh says why); in"
    echo "the same run a glibc static build's connect took $(median "$out/up.json" 8) ms (glibc's start-up: ~60 \`cpuid\`s, each"
    echo "a VM exit here), and the ordinary dynamic release build's $(median "$out/up.json" 5) ms."
    echo
    echo "cbuild-net's state (leases, records) is on a tmpfs, as \`/run\` (its default \`/run/cbuild\`) is on Debian 12;"
    echo "CNI's host-local leases on the disk, where it keeps them by default. This VM's own \`/run\` is on its ext4"
    echo "root (no journal: each file made first skips every inode deleted in the last minutes); a connect with its"
    echo "state there took $(median "$out/up-disk.json" 0) ms, $(ratio "$(median "$out/up.json" 1)" "$(median "$out/up-disk.json" 0)")× faster than the CNI ADD above."
    echo
    echo "**\`disconnect --leave-link\`** (the container's namespace already released by \`netns del\`; the kernel"
    echo "deletes the pair when it destroys the namespace, in a worker): $(median "$out/down.json" 3) ms, against"
    echo "$(median "$out/down.json" 0) ms for a disconnect that deletes the pair. A namespace's whole life, back to back"
    echo "(\`netns add\`, \`connect\`, then \`disconnect\` and \`netns del\`): $(median "$out/cycle.json" 3) ms; with"
    echo "\`netns del\` then \`disconnect --leave-link\`: $(median "$out/cycle.json" 4) ms (the kernel's deletion of the"
    echo "pair then overlaps the next cycle, which competes with it for the CPUs and the RTNL lock)."
    echo
    echo "Floors, measured in the connect run: a process that does nothing (\`/bin/true\`) $(median "$out/up.json" 4) ms;"
    echo "one \`ip link add ... type veth peer name eth0 netns NS\` (the kernel creating a pair in a namespace, one"
    echo "process) $(median "$out/up.json" 3) ms, most of it \`ip\`'s own start-up (a dozen shared libraries); the same"
    echo "request from a minimal static process that does nothing else (\`cbuild-net/examples/veth_floor.rs\`: one socket,"
    echo "one \`RTM_NEWLINK\`, exit) $(median "$out/up.json" 6) ms. The kernel's \`RTM_NEWLINK\` itself is ~0.4 ms (perf trace)."
    echo "**Every request a connect makes of the kernel**, with the same messages, from a minimal static process"
    echo "that does nothing else (\`cbuild-net/examples/connect_floor.rs\`: the pair, the port's settings, the"
    echo "container end's batch, the host end up, both link-watch events run; no runtime, no leases, no files):"
    echo "$(median "$out/up.json" 9) ms. No connect can be faster on this machine; cbuild-net's connect takes"
    echo "$(python3 -c "print('%.3f' % ($(median "$out/up.json" 0) - $(median "$out/up.json" 9)))") ms more (its start-up, arguments, runtime, lease and record)."
    echo "A disconnect that deletes the pair cannot beat \`ip link del\` (the kernel waits for RCU grace periods when it"
    echo "deletes a device)."
    [ -z "$cpu" ] || echo "$cpu"
    echo "cbuild-net's disconnect also forgets the container's conntrack entries whenever the host namespace tracks"
    echo "any flow (here always: each bridge's own IGMP reports): on this kernel ($(uname -r | cut -d- -f1)) with four filtered"
    echo "deletes, ~0.5 ms of CPU in all ($(cat /proc/sys/net/netfilter/nf_conntrack_buckets 2>/dev/null || echo '?') hash buckets, the empty ones skipped without their lock); before"
    echo "Linux 6.11, with a dump of the whole table (~9 ms of CPU). Neither anchor flushes conntrack."
    echo
    echo "Scale: $N containers connected one after another to one bridge, then disconnected (ms per container,"
    echo "each block of 100), and the same with the iproute2 sequence (two \`ip -b\` processes per container, the"
    echo "host's half and the container's, both ends with \`addrgenmode none\` as cbuild makes them; \`ip link del\` to"
    echo "remove) on its own bridge in the same namespaces. As a port is added and enabled the kernel walks every"
    echo "port the bridge has (docs/net.md, \"What a connect costs\"); connect enables its port itself, so that it"
    echo "forwards when connect returns, where the iproute2 sequence returns first and leaves that walk to the"
    echo "kernel's link-watch worker. After each block, with that many containers on the bridge, hyperfine"
    echo "times one more connect against connect_floor (above: the same kernel requests, nothing else) on the"
    echo "same bridge, in turns, $((3 * ((${PROBE_RUNS:-15} + 2) / 3))) runs each after a 0.2 s settle; \"cbuild-net's own\" is the"
    echo "difference: what cbuild-net adds to the kernel's work, which is what should stay flat."
    echo
    echo "| containers on the bridge | connect, one after another | iproute2 up | then: connect | connect's requests alone | cbuild-net's own | disconnect | ip link del |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|"
    for blk in $(seq 0 $((N / 100 - 1))); do
        own=$(python3 -c "print('%.3f' % (${pc_ms[blk]} - ${pf_ms[blk]}))")
        echo "| $((blk * 100 + 1))–$((blk * 100 + 100)) | ${up_ms[blk]} | ${ipup_ms[blk]} | ${pc_ms[blk]} | ${pf_ms[blk]} | $own | ${down_ms[blk]} | ${ipdown_ms[blk]} |"
    done
} >"$table"
cat "$table"
bench_section net "$table"
