# scripts/lib/runtime.sh — what cbuild-run, cbuild-ps, cbuild-stop, cbuild-rm, cbuild-exec and cbuild-logs
# share: where the tools and the state are, the one-line error shape, and the undo of a container.
# Sourced by bash; defines only functions and variables prefixed rt_ (plus the tool paths).
#
# A container NAME leaves these files behind, all written by the scripts (docs/runtime.md):
#   <state>/NAME/record     shell assignments: image, command, options, supervisor pid (`source`d by the others)
#   <state>/NAME/undo       one word per line, appended BEFORE each step that creates something, so a
#                           run killed half-way leaves a list of what may exist (read bottom-up to undo);
#                           also the run's lock: flock'd by every process of the run except the container
#                           itself (and cbuild-cgroup's waiting parent, which only removes the emptied
#                           cgroup), so free means "nothing of this run is alive any more"
#   <state>/NAME/status     cbuild-ns --status-fd JSON lines (phases with the container's host PID, then
#                           the exit code)
#   <state>/NAME/stdout, stderr   the container's output (detached runs)

# The six tools: $CBUILD_BIN if set, else this checkout's target/release then target/debug, else PATH.
# No subshell on the way: every start pays for this.
rt_root=${BASH_SOURCE[0]%/*}/../..
rt_bin_dir=''
for rt_d in ${CBUILD_BIN:+"$CBUILD_BIN"} "$rt_root/target/release" "$rt_root/target/debug"; do
    if [[ -x $rt_d/cbuild-ns ]]; then rt_bin_dir=$rt_d/ && break; fi
done
IMAGE_BIN=${rt_bin_dir}cbuild-image OVERLAY_BIN=${rt_bin_dir}cbuild-overlay NET_BIN=${rt_bin_dir}cbuild-net
SECCOMP_BIN=${rt_bin_dir}cbuild-seccomp CGROUP_BIN=${rt_bin_dir}cbuild-cgroup NS_BIN=${rt_bin_dir}cbuild-ns
# cbuild-run compares its seccomp cache with cbuild-seccomp's own file, so that one needs its path. From
# PATH it comes out of bash's command hash, not a $(command -v ...) subshell: that fork cost every start.
if [[ -z $rt_bin_dir ]] && hash cbuild-seccomp 2>/dev/null; then SECCOMP_BIN=${BASH_CMDS[cbuild-seccomp]}; fi

# cbuild's own bash builtins (scripts/builtins, built beside the tools), all from one shared object (each
# shared object bash loads costs a start ~0.08 ms):
#   flock   a run's lock, and every liveness check of cbuild-ps, cbuild-rm and cbuild-stop, without a fork
#           (it takes flock(1)'s FD forms, so without it the same words run util-linux's flock);
#   spawn, reap   cbuild-run starts its chain, and waits for it, without forking this shell (posix_spawn;
#           a fork costs a running bash ~0.6 ms a start, with the copy-on-write faults it leaves);
#   mkdir, rmdir, rm   a start and its undo make and remove several files and directories: as
#           external commands each would be a fork+exec (1-5 ms on a busy machine).
rt_builtins=${rt_bin_dir}libcbuild_builtins.so
if [[ -z $rt_bin_dir ]] && hash cbuild-ns 2>/dev/null; then rt_builtins=${BASH_CMDS[cbuild-ns]%/*}/libcbuild_builtins.so; fi
rt_own_builtins=0
[[ -f $rt_builtins ]] && enable -f "$rt_builtins" flock spawn reap mkdir rmdir rm 2>/dev/null && rt_own_builtins=1
# Without them, Debian's loadable file builtins and `spawn` and `reap` as bash functions (a fork each).
[[ $rt_own_builtins == 1 ]] || source "${BASH_SOURCE[0]%/*}/fallback.sh"

# <state> and <data> exactly as docs/ARCHITECTURE.md defines them. They are exported so every tool a script
# calls agrees with the script about where things are.
if [[ $EUID -eq 0 ]]; then
    rt_state=${CBUILD_STATE:-/run/cbuild} rt_data=${CBUILD_DATA:-/var/lib/cbuild}
else
    rt_state=${CBUILD_STATE:-${XDG_RUNTIME_DIR:-/run/user/$EUID}/cbuild}
    rt_data=${CBUILD_DATA:-${XDG_DATA_HOME:-$HOME/.local/share}/cbuild}
fi
export CBUILD_STATE=$rt_state CBUILD_DATA=$rt_data

rt_prog=${0##*/}

# One error line, the contract's shape: `cbuild-run: step: object: reason`.
rt_error() { printf '%s: %s: %s: %s\n' "$rt_prog" "$1" "$2" "$3" >&2; }
rt_die() { rt_error "$@"; exit 125; }

# `--verbose`: one line per step, as the tools' -v prints them.
rt_verbose=${rt_verbose:-0}
rt_say() { [[ $rt_verbose == 1 ]] && printf '%s: step: %s: %s\n' "$rt_prog" "$1" "$2" >&2; return 0; }

# A command line as a reader would type it: tool paths shortened to their names, odd words quoted.
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

# The NAME rule of the contract, checked before NAME becomes part of a path.
# (Globs, not a regex: bash compiles a regex on first use, ~0.2 ms of every start in a UTF-8 locale.)
rt_check_name() {
    [[ $1 == [A-Za-z0-9]* && $1 != *[!A-Za-z0-9_.-]* && ${#1} -le 64 ]] ||
        rt_die name "$1" 'must match [A-Za-z0-9][A-Za-z0-9_.-]{0,63}'
    # <state>/net is cbuild-net's own directory (its bridges and leases).
    [[ $1 != net ]] || rt_die name "$1" 'reserved: <state>/net holds cbuild-net'"'"'s own files'
}

# An option that needs a value has one: `rt_need_value "$@"` with the option in $1 and its value in $2.
rt_need_value() { [[ $# -ge 2 ]] || rt_die args "$1" 'needs a value'; }

# `-e WORD`: KEY=VALUE as it is, or KEY alone for the caller's exported KEY (nothing if it has none), as
# docker takes it; sets rt_env (empty for nothing). KEY is checked before bash expands it: a subscript
# in it would run.
rt_env_word() {
    rt_env=''
    if [[ $1 == *=* ]]; then
        rt_env=$1
        return 0
    fi
    [[ $1 == [A-Za-z_]* && $1 != *[!A-Za-z0-9_]* ]] || rt_die args "-e $1" 'not a variable name (KEY=VALUE, or KEY to pass it on)'
    [[ -v $1 && ${!1@a} == *x* ]] && rt_env=$1=${!1}
    return 0
}

# Is something of run NAME alive (its undo list is locked)? Opens fd 8 on it; 0 = alive.
rt_alive() {
    local lock=$rt_state/$1/undo
    [[ -e $lock ]] || return 1
    { exec 8<"$lock"; } 2>/dev/null || return 1
    if flock -n 8; then
        exec 8<&-
        return 1
    fi
    exec 8<&-
    return 0
}

# Run one undo step; a failure is reported and does not stop the others (the contract's "undo steps that
# themselves fail are reported on stderr and do not change the exit code").
rt_undo_step() {
    local what=$1
    shift
    [[ $rt_verbose == 1 ]] && rt_say "undo-$what" "$(rt_show "$@")"
    "$@" || rt_error "undo-$what" "$rt_name" "failed (see the line above)"
}

# Undo container NAME from its undo list, newest first. Each step first checks that its object exists,
# because a run killed half-way recorded steps it never finished. `keep` = 1 keeps what a stopped container
# keeps (its upper dir, record and logs), as `docker run` without --rm does. `ended` = 1 says the chain is
# known to have exited (no process of the container is left): the cgroup removal and the network's
# teardown (namespace file, then disconnect) then run in the background beside the other steps (nothing
# else depends on them), and are waited for at the end.
#   rt_cleanup NAME KEEP [ENDED]
rt_cleanup() {
    local name=$1 keep=$2 ended=${3:-0} dir=$rt_state/$1 step
    local -a background=()
    local rt_name=$name netns_done=0
    [[ -f $dir/undo ]] || { [[ $keep == 1 ]] || rt_remove_dir "$name"; return 0; }
    local -a steps
    mapfile -t steps <"$dir/undo"
    local i
    for ((i = ${#steps[@]} - 1; i >= 0; i--)); do
        step=${steps[i]}
        case $step in
            cgroup)
                # Kills whatever the container left running (its pid namespace is gone with PID 1, but a
                # run killed half-way may have left the whole chain), then removes the cgroup everywhere.
                # (Not if the caller knows it is gone already: rt_cgroup_gone=1, cbuild-cgroup exec --rm.)
                if [[ ${rt_cgroup_gone:-0} == 1 ]]; then
                    rt_say undo-cgroup "none left: cbuild-cgroup exec --rm removed it when the container ended"
                    continue
                fi
                rt_say undo-cgroup "cbuild-cgroup rm $name --force --missing-ok"
                if [[ $ended == 1 ]]; then
                    "$CGROUP_BIN" rm "$name" --force --missing-ok &
                    background+=($!)
                else
                    "$CGROUP_BIN" rm "$name" --force --missing-ok
                fi
                ;;
            connect)
                # Unplugs the veth pair, releases the lease, drops published ports and their conntrack.
                if [[ -e $dir/net.json && $ended == 1 ]]; then
                    # Nothing of the container is left (its PID 1 is gone, and with it its pid namespace),
                    # so once its namespace file goes nothing holds the network namespace: the kernel
                    # destroys it, and the veth pair with it, on its own time. `--leave-link` leaves the
                    # pair to that instead of deleting it here, which waits ~20 ms for RCU grace periods.
                    netns_done=1
                    {
                        [[ -e $dir/ns/net ]] && rt_undo_step netns "$NET_BIN" netns del "$name"
                        "$NET_BIN" disconnect --id "$name" --leave-link 2>/dev/null ||
                            rt_undo_step connect "$NET_BIN" prune >/dev/null
                    } &
                    background+=($!)
                elif [[ -e $dir/net.json ]]; then
                    "$NET_BIN" disconnect --id "$name" 2>/dev/null ||
                        rt_undo_step connect "$NET_BIN" prune >/dev/null
                fi
                ;;
            netns)
                [[ $netns_done == 0 && -e $dir/ns/net ]] && rt_undo_step netns "$NET_BIN" netns del "$name"
                ;;
            upper)
                # The overlay itself lived in the container's mount namespace only: unless kept, its
                # upper dir is what is left.
                if [[ $keep != 1 ]]; then
                    rt_say undo-upper "rm -rf $rt_data/upper/$name $rt_data/work/$name"
                    rt_rm_tree "$rt_data/upper/$name" "$rt_data/work/$name"
                fi
                ;;
            overlay)
                # A host-side mount (made by an older cbuild-run). Not mounted (a run killed before or during the mount) is fine; anything else is reported.
                local out
                rt_say undo-overlay "cbuild-overlay umount $dir/rootfs"
                out=$("$OVERLAY_BIN" umount "$dir/rootfs" 2>&1) ||
                    [[ $out == *"not an overlay mount point"* || $out == *"No such file"* ]] ||
                    printf '%s\n' "$out" >&2
                # rmdir, never rm -r: if the umount failed, the rootfs still shows the container's files.
                rmdir "$dir/rootfs" 2>/dev/null
                if [[ $keep != 1 ]]; then
                    rt_rm_tree "$rt_data/upper/$name" "$rt_data/work/$name"
                fi
                ;;
        esac
    done
    [[ ${#background[@]} == 0 ]] || wait "${background[@]}"
    if [[ $keep == 1 ]]; then
        # What is undone is no longer to be undone; the upper dir stays listed for cbuild-rm.
        if [[ -d $rt_data/upper/$name ]]; then echo upper >"$dir/undo"; else : >"$dir/undo"; fi
    else
        rt_remove_dir "$name"
    fi
}

# rm -rf of a tree a container made (its upper dir): the container chose its depth. The `rm` builtin goes
# 64 levels deep (Debian's loadable, the fallback, gives up silently on a path longer than PATH_MAX);
# rm(1) takes any depth, so it finishes whatever the builtin left (one fork, only then), and its errors
# are the ones shown.
#   rt_rm_tree DIR...
rt_rm_tree() {
    rm -rf "$@" 2>/dev/null
    local d
    for d in "$@"; do [[ ! -e $d ]] || env rm -rf "$d"; done
}

# Remove <state>/NAME: our own files, then rmdir (which fails harmlessly if a tool's file is still there).
rt_remove_dir() {
    local dir=$rt_state/$1
    rm -f "$dir/record" "$dir/undo" "$dir/status" "$dir/stdout" "$dir/stderr" \
        "$dir/seccomp.bpf" "$dir/layers" "$dir/layers.err"
    # The default image's tree, when a run that was building it was stopped.
    [[ ! -e $dir/rootfs-build ]] || rm -rf "$dir/rootfs-build"
    rmdir "$dir" 2>/dev/null || true
}

# The host PID of run NAME's command: cbuild-ns's status line for the exec (empty before it).
rt_pid() {
    local st=''
    [[ -s $rt_state/$1/status ]] && st=$(<"$rt_state/$1/status")
    # Once it exited the PID is free for the kernel to reuse: no PID then, for cbuild-stop to signal or
    # cbuild-exec to enter.
    [[ $st == *'"phase":"exited"'* ]] && return 1
    [[ $st =~ \"phase\":\"exec\",\"pid\":([0-9]+) ]] && printf '%s\n' "${BASH_REMATCH[1]}"
}

# Is the lock we hold on fd FD (default 8) still run NAME's? Its undo list (the lock file) goes with the
# run's directory, and a new run of the same NAME makes a new one: a waiter that wakes up on the old one
# must not act on the new run.
#   rt_same_run NAME [FD]
rt_same_run() { [[ /proc/self/fd/${2:-8} -ef $rt_state/$1/undo ]]; }

# Did cbuild-ns reach run NAME's command (its status says so; nothing is there if a tool failed first)?
rt_exec_seen() { [[ -s $rt_state/$1/status && $(<"$rt_state/$1/status") == *'"phase":"exec"'* ]]; }

# VALUE as a JSON string, quotes included, in rt_json: backslash, quote and control characters escaped.
rt_json_string() {
    local s=${1//\\/\\\\} c hex i
    s=${s//\"/\\\"} s=${s//$'\n'/\\n} s=${s//$'\t'/\\t} s=${s//$'\r'/\\r}
    for ((i = 1; i < 32; i++)); do
        printf -v hex '%02x' "$i"
        printf -v c "\\x$hex"
        [[ $s == *"$c"* ]] && s=${s//"$c"/\\u00$hex}
    done
    rt_json="\"$s\""
}

# Read one field of a one-line JSON object without jq (the hot path stays free of extra processes):
#   rt_json_field '{"pid": 12, ...}' pid  ->  12
# Top-level fields only: nested objects ("ns": {...}) are cut out first.
rt_json_field() {
    local s=${1#\{} re="\"$2\"[[:space:]]*:[[:space:]]*([0-9]+)"
    while [[ $s =~ \{[^{}]*\} ]]; do s=${s/"${BASH_REMATCH[0]}"/}; done
    [[ $s =~ $re ]] && printf '%s\n' "${BASH_REMATCH[1]}"
}
