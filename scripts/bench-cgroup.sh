#!/usr/bin/env bash
# bench-cgroup.sh — how much `cbuild-cgroup exec` adds to a command's start, against Debian's cgexec
# (cgroup-tools) and plain /bin/true, in one hyperfine run. Writes the `cgroup` section of
# docs/BENCHMARKS.md. Run as root: scripts/bench-cgroup.sh [RUNS]
#
# The binary is the static build (what scripts/build-static.sh ships). Both cgroup tools move into an
# existing cgroup: cbuild's NAME is created once (as a container's would be), and `exec` re-applies the
# limits on every start, as the issue's command line does; cgexec only moves. A last row creates and
# removes NAME on every run (the removal is hyperfine's --prepare, outside the timing).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/bench.sh
runs=${1:-300}
[ "$(id -u)" = 0 ] || { echo "bench-cgroup: must run as root" >&2; exit 125; }
command -v hyperfine >/dev/null || { echo "bench-cgroup: hyperfine not installed" >&2; exit 125; }
command -v cgexec >/dev/null || { echo "bench-cgroup: cgexec not installed (apt-get install cgroup-tools)" >&2; exit 125; }

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target-cgroup}
if [ -z "${CBUILD_CGROUP_BIN:-}" ]; then
    source scripts/lib/static.sh
    static_musl build -q --release -p cbuild-cgroup
    CBUILD_CGROUP_BIN=$CARGO_TARGET_DIR/x86_64-unknown-linux-musl/release/cbuild-cgroup
fi
cb=$CBUILD_CGROUP_BIN
name=bench$$
fresh=benchf$$
work=$(mktemp -d)
cleanup() {
    "$cb" rm --force "$name" 2>/dev/null || true
    "$cb" rm --force "$fresh" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

limits="--memory 64M --pids 64 --cpus 1"
# shellcheck disable=SC2086
"$cb" create "$name" $limits
layout=$("$cb" info --json | jq -r .layout)
# cgexec joins the same hierarchies: every v1 controller mount, or the v2 controllers.
ctrls=$("$cb" info --json | jq -r '[.hierarchies[] | select(.version == 1) | .controllers[]] | join(",")')
[ -n "$ctrls" ] || ctrls=$("$cb" info --json | jq -r '[.hierarchies[] | select(.version == 2) | .controllers[]] | join(",")')

# --prepare is given once per command (hyperfine's rule when they differ); only the last one does work.
hyperfine -N --style none --warmup 20 --runs "$runs" --export-json "$work/h.json" \
    --prepare true -n "/bin/true" "/bin/true" \
    --prepare true -n "cbuild-cgroup exec (existing NAME)" "$cb exec $name $limits -- /bin/true" \
    --prepare true -n "cgexec -g $ctrls" "cgexec -g $ctrls:cbuild/$name /bin/true" \
    --prepare "sh -c '$cb rm $fresh 2>/dev/null; true'" -n "cbuild-cgroup exec (new NAME each run)" \
    "$cb exec $fresh $limits -- /bin/true" \
    >/dev/null 2>"$work/err" || { cat "$work/err" >&2; exit 1; }

true_ms=$(bench_median_ms "$work/h.json" 0)
row() { # row INDEX LABEL
    local m
    m=$(bench_median_ms "$work/h.json" "$1")
    python3 -c 'import sys; m,t=float(sys.argv[1]),float(sys.argv[2]); print("| %s | %.3f | %+.3f | %.2f× |" % (sys.argv[3], m, m-t, m/t))' "$m" "$true_ms" "$2"
}
min_ms() { python3 -c 'import json,sys; print("%.3f" % (json.load(open(sys.argv[1]))["results"][int(sys.argv[2])]["min"]*1000))' "$work/h.json" "$1"; }
cb_ms=$(bench_median_ms "$work/h.json" 1)
cg_ms=$(bench_median_ms "$work/h.json" 2)
{
    echo "### cbuild-cgroup exec (scripts/bench-cgroup.sh)"
    echo
    echo "$(bench_machine), $layout cgroups, $runs runs each, medians. Command: \`exec NAME $limits -- /bin/true\`."
    echo
    echo "| command | median ms | added over /bin/true ms | ratio to /bin/true |"
    echo "|---|---|---|---|"
    row 0 "\`/bin/true\`"
    row 1 "\`cbuild-cgroup exec\`, existing NAME (static build)"
    row 2 "\`cgexec -g $ctrls\`"
    row 3 "\`cbuild-cgroup exec\`, NAME created each run"
    echo
    python3 -c 'import sys; a,b=float(sys.argv[1]),float(sys.argv[2]); print("cbuild-cgroup exec vs cgexec: %.2f× (%s). Fastest runs: /bin/true %s ms, cbuild-cgroup exec %s ms, cgexec %s ms." % (b/a, "faster" if a < b else "slower", sys.argv[3], sys.argv[4], sys.argv[5]))' \
        "$cb_ms" "$cg_ms" "$(min_ms 0)" "$(min_ms 1)" "$(min_ms 2)"
    echo
    echo "Moving a whole process with cgroup.procs write-locks the kernel's global cgroup_threadgroup_rwsem;"
    echo "after a quiet moment that lock first waits for an RCU grace period (~12 ms on this HZ=250 kernel)."
    echo "cbuild-cgroup moves itself into v1 hierarchies through \`tasks\` (single thread: no global lock), so"
    echo "only the v2 tree's cgroup.procs can pay it; cgexec pays it in the first v1 hierarchy. Which runs"
    echo "pay it depends on what else migrates tasks on the machine, hence the spread between medians and"
    echo "fastest runs. See docs/cgroup.md, \"Performance\"."
} >"$work/section.md"
cat "$work/section.md"
bench_section cgroup "$work/section.md"
