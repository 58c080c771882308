#!/usr/bin/env bash
# Benchmark cbuild-seccomp: compile time of the built-in `default` profile, and the per-syscall cost of
# the loaded filter (binary-tree optimized, unoptimized, none), next to runc loading Docker's profile.
#
# Two syscall loops, run by perl (`syscall(NR, ...)` COUNT times):
#   getpid                  always allowed: kernels >= 5.11 cache it per arch and skip the filter;
#   personality(0xffffffff) allowed only for certain argument values: the filter runs on every call.
# Per-call cost = (system CPU time with filter - without) / COUNT (CPU time is steadier than wall time on
# a shared machine; wall medians are shown too). Writes the table into docs/BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/bench.sh
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target-seccomp}
cargo build --release -q -p cbuild-seccomp
B=$CARGO_TARGET_DIR/release/cbuild-seccomp
MOBY=${MOBY:-/work/shared/data/seccomp/moby-default.json}
PERL=$(command -v perl)
BEFORE_LABEL=${BEFORE_LABEL:-${BEFORE:-}}
COUNT=${COUNT:-2000000}
RUNS=${RUNS:-5}
work=$(mktemp -d); trap 'runc delete -f cbs-bench >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
# x86_64 numbers (the script measures the host; other arches: set these).
NR_GETPID=${NR_GETPID:-39} NR_PERSONALITY=${NR_PERSONALITY:-135}
code_getpid="syscall($NR_GETPID)for(1..$COUNT)"
code_pers="syscall($NR_PERSONALITY,0xffffffff)for(1..$COUNT)"

sys_ms() { python3 -c 'import json,sys; r=json.load(open(sys.argv[1]))["results"][int(sys.argv[2])]; print("%.1f" % (r["system"]*1000))' "$1" "$2"; }
per_call() { python3 -c "print('%.1f' % (($1-$2)*1e6/$COUNT))"; }

# 1. Compile time (default → file). Cold: --no-cache, our generator (src/gen.rs) builds the program every
# time. Warm: the program comes from the cache under <data>/seccomp (the warm-up runs fill it). Each run
# writes to a fresh name, as a first container start does (an identical existing file is left alone, which
# would make the warm row cheaper still). Before: `--generator libseccomp --no-cache`, libseccomp's
# generator (one context per architecture, parallel threads, chained), what this tool used until now.
# `default` (print JSON, no compile) is the process-start baseline.
# BEFORE=path/to/an/older/cbuild-seccomp adds it as an anchor row (e.g. one built from the commit before
# the per-architecture contexts and the cache: all architectures in one libseccomp context, no cache).
export CBUILD_DATA=$work/data
before=()
[ -n "${BEFORE:-}" ] && before=(--prepare true "$BEFORE compile default -o $work/b.bpf")
hyperfine -N -w 5 -r 100 --export-json "$work/compile.json" \
  --prepare "rm -f $work/d.bpf" "$B compile default --no-cache -o $work/d.bpf" \
  --prepare "rm -f $work/w.bpf" "$B compile default -o $work/w.bpf" \
  --prepare "rm -f $work/u.bpf" "$B compile default --no-cache --no-optimize -o $work/u.bpf" \
  --prepare "rm -f $work/l.bpf" "$B compile default --no-cache --generator libseccomp -o $work/l.bpf" \
  --prepare true "$B default" "${before[@]}" >/dev/null
cmp "$work/d.bpf" "$work/w.bpf"  # the cached program is the compiled one
insns_opt=$(( $(stat -c %s "$work/d.bpf") / 8 )); insns_un=$(( $(stat -c %s "$work/u.bpf") / 8 ))
insns_lib=$(( $(stat -c %s "$work/l.bpf") / 8 ))
cpu() { python3 -c 'import json,sys; r=json.load(open(sys.argv[1]))["results"][int(sys.argv[2])]; print("%.1f" % ((r["user"]+r["system"])*1000))' "$work/compile.json" "$1"; }

# 2. The loops: no filter, binary tree, unoptimized, libseccomp's program.
steps() { $B check --profile default "${@:2}" --json "$1" 2>/dev/null | jq -r .instructions_run; }
rows=""
for loop in getpid pers; do
  code=code_$loop; code=${!code}
  hyperfine -N -w 1 -r "$RUNS" --export-json "$work/$loop.json" \
    "$PERL -e $code" \
    "$B exec --profile default -- $PERL -e $code" \
    "$B exec --profile default --no-optimize -- $PERL -e $code" \
    "$B exec --profile default --generator libseccomp -- $PERL -e $code" >/dev/null
  q=$([ $loop = getpid ] && echo getpid || echo personality,0xffffffff)
  s0=$(sys_ms "$work/$loop.json" 0); s1=$(sys_ms "$work/$loop.json" 1); s2=$(sys_ms "$work/$loop.json" 2)
  s3=$(sys_ms "$work/$loop.json" 3)
  rows+="| \`$q\` | no filter | $(bench_median_ms "$work/$loop.json" 0) ms | $s0 ms | - | - |
| \`$q\` | \`exec --profile default\` (binary tree) | $(bench_median_ms "$work/$loop.json" 1) ms | $s1 ms | $(per_call "$s1" "$s0") ns | $(steps "$q") |
| \`$q\` | \`exec --profile default --no-optimize\` | $(bench_median_ms "$work/$loop.json" 2) ms | $s2 ms | $(per_call "$s2" "$s0") ns | $(steps "$q" --no-optimize) |
| \`$q\` | \`exec --profile default --generator libseccomp\` (before) | $(bench_median_ms "$work/$loop.json" 3) ms | $s3 ms | $(per_call "$s3" "$s0") ns | $(steps "$q" --generator libseccomp) |
"
done

# 3. Anchor: runc run with Docker's profile (and without), the same perl loops inside the container.
if command -v runc >/dev/null && [ -f "$MOBY" ]; then
  # The host's /usr read-only inside the container, so the same perl runs the same loop.
  mkdir -p "$work/bundle/rootfs/usr" "$work/bundle/rootfs/dev" "$work/bundle/rootfs/proc"
  for l in bin lib lib64 sbin; do ln -s "usr/$l" "$work/bundle/rootfs/$l"; done
  (cd "$work/bundle" && runc spec)
  # Docker hands runc an OCI profile: entries resolved for amd64 and the default capabilities, Docker-only
  # keys dropped. That resolution is done here independently of cbuild-seccomp.
  python3 - "$work/bundle/config.json" "$MOBY" <<'PY'
import json,sys
cfgp,mobyp=sys.argv[1],sys.argv[2]; c=json.load(open(cfgp)); m=json.load(open(mobyp))
caps={"CAP_CHOWN","CAP_DAC_OVERRIDE","CAP_FSETID","CAP_FOWNER","CAP_MKNOD","CAP_NET_RAW","CAP_SETGID","CAP_SETUID","CAP_SETFCAP","CAP_SETPCAP","CAP_NET_BIND_SERVICE","CAP_SYS_CHROOT","CAP_KILL","CAP_AUDIT_WRITE"}
out=[]
for r in m["syscalls"]:
    inc,exc=r.get("includes") or {},r.get("excludes") or {}
    if inc.get("arches") and "amd64" not in inc["arches"]: continue
    if exc.get("arches") and "amd64" in exc["arches"]: continue
    if not set(inc.get("caps") or []) <= caps: continue
    if set(exc.get("caps") or []) & caps: continue
    out.append({k:r[k] for k in ("names","action","errnoRet","args") if k in r})
c["process"]["terminal"]=False
c["mounts"].append({"destination":"/usr","type":"bind","source":"/usr","options":["rbind","ro"]})
c["linux"]["seccomp"]={"defaultAction":m["defaultAction"],"defaultErrnoRet":m.get("defaultErrnoRet",1),
  "architectures":["SCMP_ARCH_X86_64","SCMP_ARCH_X86","SCMP_ARCH_X32"],"syscalls":out}
json.dump(c,open(cfgp+".with","w"))
del c["linux"]["seccomp"]; json.dump(c,open(cfgp+".without","w"))
PY
  rv=$(runc --version | awk 'NR==1{print $3}')
  for loop in getpid pers; do
    code=code_$loop; code=${!code}
    q=$([ $loop = getpid ] && echo getpid || echo personality,0xffffffff)
    for v in with without; do
      jq --arg p "$PERL" --arg c "$code" '.process.args=[$p,"-e",$c]' "$work/bundle/config.json.$v" >"$work/bundle/config.json"
      hyperfine -N -w 1 -r "$RUNS" --export-json "$work/runc_${loop}_$v.json" "runc run --bundle $work/bundle cbs-bench" >/dev/null
    done
    rw=$(sys_ms "$work/runc_${loop}_with.json" 0); rn=$(sys_ms "$work/runc_${loop}_without.json" 0)
    rows+="| \`$q\` | runc $rv run, no seccomp | $(bench_median_ms "$work/runc_${loop}_without.json" 0) ms | $rn ms | - | - |
| \`$q\` | runc $rv run, Docker's profile (libseccomp, no binary tree) | $(bench_median_ms "$work/runc_${loop}_with.json" 0) ms | $rw ms | $(per_call "$rw" "$rn") ns | - |
"
  done
fi

libver=$(dpkg-query -W -f '${Version}' libseccomp2 2>/dev/null || echo '?')
c0=$(bench_median_ms "$work/compile.json" 0); c1=$(bench_median_ms "$work/compile.json" 1)
c2=$(bench_median_ms "$work/compile.json" 2); c3=$(bench_median_ms "$work/compile.json" 3)
c4=$(bench_median_ms "$work/compile.json" 4)
before_row=""
if [ -n "${BEFORE:-}" ]; then
  before_row="| older binary ($BEFORE_LABEL) | $(bench_median_ms "$work/compile.json" 5) ms | $(cpu 5) ms | $(( $(stat -c %s "$work/b.bpf") / 8 )) instructions |
"
fi
out=$work/section.md
cat >"$out" <<MD
## cbuild-seccomp (scripts/bench-seccomp.sh)

$(bench_machine); libseccomp $libver. Medians of wall time; CPU time is the mean.

Compile (\`compile default -o FILE\`, a new FILE each run, process start included; target ≤ 5 ms). Cold =
\`--no-cache\`: our generator (src/gen.rs) builds the program for x86_64, x86 and x32; warm = the same program
read from the cache under \`<data>/seccomp\`; before = libseccomp 2.5's generator (one context per
architecture in parallel threads, chained), kept as \`--generator libseccomp\`. CPU is user+system of all
threads:

| command | median wall | CPU | note |
|---|---|---|---|
| \`compile default --no-cache\` (cold, binary tree) | $c0 ms | $(cpu 0) ms | $insns_opt instructions |
| \`compile default\` (warm, from the cache) | $c1 ms | $(cpu 1) ms | byte-identical output |
| \`compile default --no-cache --no-optimize\` (cold, no tree) | $c2 ms | $(cpu 2) ms | $insns_un instructions |
| before: \`compile default --no-cache --generator libseccomp\` | $c3 ms | $(cpu 3) ms | $insns_lib instructions |
| \`default\` (print JSON, no compile: process-start baseline) | $c4 ms | $(cpu 4) ms | |
$before_row
Per-call cost of the loaded filter, $COUNT calls from perl; "per call" is the system-CPU difference to the
run without a filter divided by the number of calls; "BPF insns" is what the kernel executes for one call
(\`check --json\` → \`instructions_run\`, ENOSYS prologue included):

| call | run | median wall | system CPU | per call | BPF insns |
|---|---|---|---|---|---|
$rows
getpid is allowed whatever its arguments, so the kernel (≥ 5.11) can cache that verdict per architecture
and skip the filter: what remains is the seccomp hook on syscall entry plus noise. personality is allowed
only for five argument values, so the filter runs on every call: that row is the filter's own cost, and where
the binary tree pays. runc rows include container set-up in the wall time; compare their system-CPU
difference only.
MD
bench_section seccomp "$out"
cat "$out"
