#!/usr/bin/env bash
# Benchmark cbuild-seccomp: compile time of the built-in `default` profile, and the per-syscall cost of
# the loaded filter (binary-tree optimized, unoptimized, none), next to runc loading Docker's profile.
# The syscall loop is `dd bs=1` (one read + one write per byte), so the per-syscall cost is
# (time with filter - time without) / (2 * COUNT). Writes the table into docs/BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/bench.sh
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target-seccomp}
cargo build --release -q -p cbuild-seccomp
B=$CARGO_TARGET_DIR/release/cbuild-seccomp
MOBY=${MOBY:-/work/shared/data/seccomp/moby-default.json}
BB=$(command -v busybox)
COUNT=${COUNT:-1000000}
work=$(mktemp -d); trap 'runc delete -f cbs-bench-a >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
loop="$BB dd if=/dev/zero of=/dev/null bs=1 count=$COUNT"

# 1. Compile time (default → file), with `default` (print only) as the no-compile baseline.
hyperfine -N -w 5 -r 50 --export-json "$work/compile.json" \
  "$B compile default -o $work/d.bpf" \
  "$B compile default --no-optimize -o $work/u.bpf" \
  "$B default" >/dev/null
insns_opt=$(( $(stat -c %s "$work/d.bpf") / 8 )); insns_un=$(( $(stat -c %s "$work/u.bpf") / 8 ))

# 2. Per-syscall cost under the loaded filter.
hyperfine -N -w 1 -r 10 --export-json "$work/loop.json" \
  "$loop" \
  "$B exec --profile default -- $loop" \
  "$B exec --profile default --no-optimize -- $loop" >/dev/null

# 3. Anchor: runc run with Docker's profile (and without), the same loop inside the container.
runc_rows=""
if command -v runc >/dev/null && [ -f "$MOBY" ]; then
  mkdir -p "$work/bundle/rootfs/bin" "$work/bundle/rootfs/dev" "$work/bundle/rootfs/proc"
  cp "$BB" "$work/bundle/rootfs/bin/busybox"
  (cd "$work/bundle" && runc spec)
  jq --slurpfile s "$MOBY" --arg n "$COUNT" '.process.terminal=false
      | .process.args=["/bin/busybox","dd","if=/dev/zero","of=/dev/null","bs=1","count="+$n]
      | .linux.seccomp=$s[0] | .linux.seccomp.architectures=["SCMP_ARCH_X86_64","SCMP_ARCH_X86","SCMP_ARCH_X32"]
      | del(.linux.seccomp.archMap)' "$work/bundle/config.json" >"$work/with.json"
  jq 'del(.linux.seccomp)' "$work/with.json" >"$work/without.json"
  # runc's JSON loader rejects Docker-only keys; keep names/action/errnoRet/args of entries that apply to amd64
  # with the default capabilities, the way Docker hands the profile to runc.
  $B show "$MOBY" --json >/dev/null  # validates the file
  python3 - "$work/with.json" <<'PY'
import json,sys
p=sys.argv[1]; c=json.load(open(p)); s=c["linux"]["seccomp"]
caps={"CAP_CHOWN","CAP_DAC_OVERRIDE","CAP_FSETID","CAP_FOWNER","CAP_MKNOD","CAP_NET_RAW","CAP_SETGID","CAP_SETUID","CAP_SETFCAP","CAP_SETPCAP","CAP_NET_BIND_SERVICE","CAP_SYS_CHROOT","CAP_KILL","CAP_AUDIT_WRITE"}
out=[]
for r in s["syscalls"]:
    inc,exc=r.get("includes",{}) or {},r.get("excludes",{}) or {}
    if inc.get("arches") and "amd64" not in inc["arches"]: continue
    if exc.get("arches") and "amd64" in exc["arches"]: continue
    if not set(inc.get("caps") or []) <= caps: continue
    if set(exc.get("caps") or []) & caps: continue
    out.append({k:r[k] for k in ("names","action","errnoRet","args") if k in r})
s["syscalls"]=out
json.dump(c,open(p,"w"))
PY
  cp "$work/with.json" "$work/bundle/config.json"
  hyperfine -N -w 1 -r 10 --export-json "$work/runc_with.json" "runc run --bundle $work/bundle cbs-bench-a" >/dev/null
  cp "$work/without.json" "$work/bundle/config.json"
  hyperfine -N -w 1 -r 10 --export-json "$work/runc_without.json" "runc run --bundle $work/bundle cbs-bench-a" >/dev/null
  rw=$(bench_median_ms "$work/runc_with.json" 0); rn=$(bench_median_ms "$work/runc_without.json" 0)
  per=$(python3 -c "print('%.1f' % (($rw-$rn)*1e6/(2*$COUNT)))")
  runc_rows="| runc run, Docker's profile (runc's libseccomp, no binary tree) | $rw ms | $per ns |
| runc run, no seccomp | $rn ms | - |"
fi

c0=$(bench_median_ms "$work/compile.json" 0); c1=$(bench_median_ms "$work/compile.json" 1); c2=$(bench_median_ms "$work/compile.json" 2)
l0=$(bench_median_ms "$work/loop.json" 0); l1=$(bench_median_ms "$work/loop.json" 1); l2=$(bench_median_ms "$work/loop.json" 2)
ns() { python3 -c "print('%.1f' % (($1-$l0)*1e6/(2*$COUNT)))"; }
ratio() { python3 -c "print('%.2f' % ($1/$2))"; }
out=$work/section.md
cat >"$out" <<MD
## cbuild-seccomp (scripts/bench-seccomp.sh)

$(bench_machine); libseccomp $(dpkg-query -W -f '${Version}' libseccomp2 2>/dev/null || echo '?'). Medians.

Compile (\`compile default -o FILE\`, includes process start; target ≤ 5 ms):

| command | median | note |
|---|---|---|
| \`compile default\` (binary tree) | $c0 ms | $insns_opt instructions |
| \`compile default --no-optimize\` | $c1 ms | $insns_un instructions |
| \`default\` (print JSON, no compile: process-start baseline) | $c2 ms | compile share ≈ $(python3 -c "print('%.2f' % ($c0-$c2))") ms |

Per-syscall cost: \`busybox dd bs=1 count=$COUNT\` (one read + one write per byte) with and without the filter:

| run | median | per syscall over no filter |
|---|---|---|
| no filter | $l0 ms | - |
| \`exec --profile default\` (binary tree) | $l1 ms | $(ns $l1) ns |
| \`exec --profile default --no-optimize\` | $l2 ms | $(ns $l2) ns |
$runc_rows

Ratio unoptimized/optimized loop time: $(ratio $l2 $l1). Kernels ≥ 5.11 cache "always allowed" syscalls per
architecture in a bitmap, so read/write may bypass the filter entirely after the first call; the cost shown
is then mostly the arch check. See docs/seccomp.md.
MD
bench_section seccomp "$out"
cat "$out"
