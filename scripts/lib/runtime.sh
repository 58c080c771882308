# scripts/lib/runtime.sh — what the cbuild-* scripts share: paths, the error line, the undo. Sourced;
# defines only rt_* (and tool paths). A container NAME leaves in <state>/NAME/ (docs/runtime.md):
#   record  shell assignments (image, cmd, options, supervisor pid), sourced by the others
#   undo    a word per step, appended BEFORE it creates anything (undone bottom-up); also the run's
#           lock, held by all of the run but the container (and cgroup's waiting parent)
#   status  cbuild-ns --status-fd JSON lines: phases with the host PID, then the exit code
#   stdout, stderr  a detached run's output

# Tools: $CBUILD_BIN, target/release, target/debug, else PATH; no subshell (every start pays).
rt_root=${BASH_SOURCE[0]%/*}/../..
rt_bin_dir=''
for rt_d in ${CBUILD_BIN:+"$CBUILD_BIN"} "$rt_root/target/release" "$rt_root/target/debug"; do
    if [[ -x $rt_d/cbuild-ns ]]; then rt_bin_dir=$rt_d/ && break; fi
done
IMAGE_BIN=${rt_bin_dir}cbuild-image OVERLAY_BIN=${rt_bin_dir}cbuild-overlay NET_BIN=${rt_bin_dir}cbuild-net
SECCOMP_BIN=${rt_bin_dir}cbuild-seccomp CGROUP_BIN=${rt_bin_dir}cbuild-cgroup NS_BIN=${rt_bin_dir}cbuild-ns
# The seccomp cache compares with cbuild-seccomp's file: its path from bash's hash, not a $(...) fork.
if [[ -z $rt_bin_dir ]] && hash cbuild-seccomp 2>/dev/null; then SECCOMP_BIN=${BASH_CMDS[cbuild-seccomp]}; fi

# cbuild's builtins, one .so (each costs ~0.08 ms): no fork per start for flock (flock(1)'s forms, else
# util-linux's), spawn/reap (the chain; a bash fork ~0.6 ms), mkdir rmdir rm mv (fork+exec 1-5 ms each).
rt_builtins=${rt_bin_dir}libcbuild_builtins.so
if [[ -z $rt_bin_dir ]] && hash cbuild-ns 2>/dev/null; then rt_builtins=${BASH_CMDS[cbuild-ns]%/*}/libcbuild_builtins.so; fi
rt_own_builtins=0
[[ -f $rt_builtins ]] && enable -f "$rt_builtins" flock spawn reap mkdir rmdir rm mv 2>/dev/null && rt_own_builtins=1
# Without them: Debian's loadables, spawn and reap as functions (a fork each).
[[ $rt_own_builtins == 1 ]] || source "${BASH_SOURCE[0]%/*}/fallback.sh"

# <state>, <data> per docs/ARCHITECTURE.md; exported so every tool agrees with the script.
if [[ $EUID -eq 0 ]]; then
    rt_state=${CBUILD_STATE:-/run/cbuild} rt_data=${CBUILD_DATA:-/var/lib/cbuild}
else
    rt_state=${CBUILD_STATE:-${XDG_RUNTIME_DIR:-/run/user/$EUID}/cbuild}
    rt_data=${CBUILD_DATA:-${XDG_DATA_HOME:-$HOME/.local/share}/cbuild}
fi
export CBUILD_STATE=$rt_state CBUILD_DATA=$rt_data

rt_prog=${0##*/}

# The contract's error line: `prog: step: object: reason`.
rt_error() { printf '%s: %s: %s: %s\n' "$rt_prog" "$1" "$2" "$3" >&2; }
rt_die() { rt_error "$@"; exit 125; }

# --help: the script's opening comment block (its usage, options and exit codes), on stdout, exit 0,
# as docker's --help. The comment is the one text: a reader of the script sees what --help prints.
rt_help() {
    local line n=0
    while IFS= read -r line; do
        ((n++)) || continue # the #! line
        [[ $line == '#'* ]] || break
        line=${line#\#}
        printf '%s\n' "${line# }"
    done <"$rt_self"
    exit 0
}

# --verbose, as the tools' -v.
rt_verbose=${rt_verbose:-0}
rt_say() { [[ $rt_verbose == 1 ]] && printf '%s: step: %s: %s\n' "$rt_prog" "$1" "$2" >&2; return 0; }

# Runnable form: tool names, odd words quoted.
rt_show() {
    local out='' a
    for a in "$@"; do
        case $a in
            "$IMAGE_BIN" | "$OVERLAY_BIN" | "$NET_BIN" | "$SECCOMP_BIN" | "$CGROUP_BIN" | "$NS_BIN") a=${a##*/} ;;
            *[!A-Za-z0-9_./:=,+@%-]* | '') printf -v a '%q' "$a" ;;
        esac
        out+=" $a"
    done
    printf '%s\n' "${out# }"
}

# The contract's NAME rule, before NAME joins a path. (Globs: a regex compiles on first use, ~0.2 ms.)
rt_check_name() { rt_name_ok "$1" || exit 125; }
# The same, reported but not fatal: for verbs that go on with their other NAMEs.
rt_name_ok() {
    if [[ $1 != [A-Za-z0-9]* || $1 == *[!A-Za-z0-9_.-]* || ${#1} -gt 64 ]]; then
        rt_error name "$1" 'must match [A-Za-z0-9][A-Za-z0-9_.-]{0,63}'
        return 1
    fi
    [[ $1 != net ]] || { rt_error name "$1" 'reserved: <state>/net holds cbuild-net'"'"'s own files' && return 1; }
}

# -e WORD as docker: KEY=VALUE, or KEY from the caller's environment → rt_env; KEY alone if not set there
# (docker's daemon then unsets it: cbuild-ns --env KEY). The caller's environment as it came
# (/proc/$$/environ), not this script's variables: `-e name` must not pass the script's $name.
rt_env_word() {
    rt_env=''
    if [[ $1 == *=* ]]; then
        [[ $1 != =* ]] || rt_die args "-e $1" 'invalid environment variable (no name before =)'
        rt_env=$1
        return 0
    fi
    [[ $1 == [A-Za-z_]* && $1 != *[!A-Za-z0-9_]* ]] || rt_die args "-e $1" 'not a variable name (KEY=VALUE, or KEY to pass it on)'
    rt_env_lookup "$1"
}

# rt_env_lookup NAME — rt_env=NAME=VALUE from our environment, or NAME alone when it is not set here.
rt_env_lookup() {
    local kv
    while IFS= read -r -d '' kv; do
        if [[ $kv == "$1="* ]]; then rt_env=$kv && return 0; fi
    done </proc/$$/environ
    rt_env=$1
}

# rt_same_run NAME [FD=8] — is our lock still NAME's? A new run of NAME has a new undo file, which a waiter
# woken on the old one must not act on.
rt_same_run() { [[ /proc/self/fd/${2:-8} -ef $rt_state/$1/undo ]]; }

# Did run NAME reach its exec?
rt_exec_seen() { [[ -s $rt_state/$1/status && $(<"$rt_state/$1/status") == *'"phase":"exec"'* ]]; }
