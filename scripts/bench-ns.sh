#!/usr/bin/env bash
# Start-to-exit of /bin/true in new pid+mount+uts+ipc+net namespaces on the same busybox rootfs:
# cbuild-ns run vs unshare+chroot vs bwrap --unshare-all vs runc run, one hyperfine run, medians and ratios
# written to docs/BENCHMARKS.md (section "ns"). Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/bench.sh
runs=${RUNS:-60}
cargo build --release -p cbuild-ns --quiet
ns=$PWD/target/release/cbuild-ns

work=$(mktemp -d /tmp/cbuild-bench-ns.XXXXXX)
trap 'rm -rf "$work"' EXIT
scripts/mkrootfs.sh "$work/bundle/rootfs"
(cd "$work/bundle" && runc spec)
# runc's config with the same five namespaces and the command; everything else is runc's default
# (its masked paths, capabilities, devices and a cgroup), which is what a runc user gets.
jq '.process.terminal=false | .process.args=["/bin/true"] | .root.path="rootfs"
    | .linux.namespaces=[{"type":"pid"},{"type":"mount"},{"type":"uts"},{"type":"ipc"},{"type":"network"}]' \
    "$work/bundle/config.json" >"$work/c.json" && mv "$work/c.json" "$work/bundle/config.json"
root=$work/bundle/rootfs

hyperfine -N --warmup 5 --runs "$runs" --export-json "$work/r.json" \
    -n cbuild-ns "$ns run --pid --mount --uts --ipc --net --rootfs $root -- /bin/true" \
    -n unshare+chroot "unshare --pid --mount --uts --ipc --net --fork chroot $root /bin/true" \
    -n "bwrap --unshare-all" "bwrap --unshare-all --bind $root / --proc /proc --dev /dev /bin/true" \
    -n "runc run" "bash -c 'runc run --bundle $work/bundle cbns\$\$ >/dev/null'" >&2

c=$(bench_median_ms "$work/r.json" 0); u=$(bench_median_ms "$work/r.json" 1)
b=$(bench_median_ms "$work/r.json" 2); r=$(bench_median_ms "$work/r.json" 3)
ratio() { python3 -c "print('%.2f' % ($1/$2))"; }
body=$work/section.md
cat >"$body" <<EOT
## cbuild-ns: start-to-exit of /bin/true (scripts/bench-ns.sh)

$(bench_machine); hyperfine, $runs runs each, medians. New pid+mount+uts+ipc+net namespaces on the same
busybox rootfs. cbuild-ns also builds /proc, a minimal /dev, a read-only /sys, runc's masked paths and
pivot_root; unshare+chroot does none of that.

| command | median ms | cbuild-ns ÷ this |
|---|---:|---:|
| cbuild-ns run | $c | 1.00 |
| unshare --fork + chroot | $u | $(ratio "$c" "$u") |
| bwrap --unshare-all | $b | $(ratio "$c" "$b") |
| runc run | $r | $(ratio "$c" "$r") |

Targets: ≤ 1.2× unshare+chroot, ≤ 0.25× runc.
EOT
bench_section ns "$body"
cat "$body"
