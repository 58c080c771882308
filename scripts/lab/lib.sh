# scripts/lab/lib.sh — shared by the numbered labs. Source it first; it gives each lab:
#   a private scratch dir $LAB (state, data, rootfs), removed on exit with everything mounted below it
#   the tool paths ($NS_BIN, $CGROUP_BIN, ... from scripts/lib/runtime.sh) and $RUN (scripts/cbuild-run)
#   say TEXT             narration
#   show CMD...          print `$ CMD`, run it, print its output (indented)
#   measured WHAT VALUE [SEED]   one measured value, next to what the seed says
#   claim TEXT CMD...    run CMD (a test); print PASS/FAIL; with --check a FAIL makes the lab exit 1
#   lab_done             the summary line and the exit code
# Every lab runs non-interactively; `--check` is what the test suite passes.
set -u
lab_check=0
for a in "$@"; do [[ $a == --check ]] && lab_check=1; done
LAB=$(mktemp -d /tmp/cbuild-lab.XXXXXX)
export CBUILD_STATE=$LAB/state CBUILD_DATA=$LAB/data
mkdir -p "$CBUILD_STATE" "$CBUILD_DATA"
echo "scratch: $LAB"
lab_cleanups=()
# at_exit CMD — run CMD (a string, eval'd) when the lab ends, newest first.
at_exit() { lab_cleanups+=("$1"); }
lab_exit() {
    # Not in a subshell that a signal reached before bash reset its traps (see docs/runtime.md).
    [[ $BASHPID == "$$" ]] || return
    local i
    for ((i = ${#lab_cleanups[@]} - 1; i >= 0; i--)); do eval "${lab_cleanups[i]}" >/dev/null 2>&1; done
    # Containers the lab left (it should not): removed with cbuild-rm, then anything still mounted.
    "$LAB_SCRIPTS/cbuild-rm" --prune >/dev/null 2>&1
    grep -o " $LAB[^ ]*" /proc/self/mountinfo | sort -r | while read -r m; do umount -l "$m"; done
    rm -rf "$LAB"
}
trap lab_exit EXIT
LAB_SCRIPTS=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=../lib/runtime.sh
source "$LAB_SCRIPTS/lib/runtime.sh"
# shellcheck source=../lib/runs.sh
source "$LAB_SCRIPTS/lib/runs.sh"
RUN=$LAB_SCRIPTS/cbuild-run
IMAGE=cbuild/busybox
lab_fail=0 lab_pass=0

if [[ -t 1 ]]; then lab_b=$'\033[1m' lab_n=$'\033[0m'; else lab_b='' lab_n=''; fi
say() { printf '\n%s%s%s\n' "$lab_b" "$*" "$lab_n"; }
show() {
    printf '$ %s\n' "$*"
    "$@" 2>&1 | sed 's/^/    /'
    return "${PIPESTATUS[0]}"
}
measured() { printf '  measured: %-40s %s%s\n' "$1" "$2" "${3:+   (seed: $3)}"; }
claim() {
    local text=$1
    shift
    if "$@"; then
        printf '  PASS  %s\n' "$text"
        lab_pass=$((lab_pass + 1))
    else
        printf '  FAIL  %s\n' "$text"
        lab_fail=$((lab_fail + 1))
    fi
}
lab_done() {
    printf '\n%s: %d claims checked, %d failed\n' "${0##*/}" $((lab_pass + lab_fail)) "$lab_fail"
    [[ $lab_check == 1 && $lab_fail -gt 0 ]] && exit 1
    exit 0
}

# A busybox root filesystem for labs that build a container by hand.
lab_rootfs() {
    local d=${1:-$LAB/rootfs}
    [[ -d $d/bin ]] || sh "$LAB_SCRIPTS/mkrootfs.sh" "$d"
    printf '%s\n' "$d"
}

# A private network namespace playing "the host" for cbuild-net: the machine's network is never touched.
lab_host_netns() {
    touch "$LAB/hostns"
    unshare --net="$LAB/hostns" true
    export CBUILD_NET_HOST_NS=$LAB/hostns
    at_exit "umount '$LAB/hostns'"
}
