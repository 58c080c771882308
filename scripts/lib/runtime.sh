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

# -e WORD as docker: KEY=VALUE, or KEY from the caller's environment → rt_env. The caller's environment
# as it came (/proc/$$/environ), not this script's variables: `-e name` must not pass the script's $name.
rt_env_word() {
    rt_env=''
    if [[ $1 == *=* ]]; then
        [[ $1 != =* ]] || rt_die args "-e $1" 'invalid environment variable (no name before =)'
        rt_env=$1
        return 0
    fi
    [[ $1 == [A-Za-z_]* && $1 != *[!A-Za-z0-9_]* ]] || rt_die args "-e $1" 'not a variable name (KEY=VALUE, or KEY to pass it on)'
    local kv
    while IFS= read -r -d '' kv; do
        if [[ $kv == "$1="* ]]; then rt_env=$kv && return 0; fi
    done </proc/$$/environ
    return 0
}

# A failed undo step is reported; the others still run (the contract).
rt_undo_step() {
    local what=$1
    shift
    [[ $rt_verbose == 1 ]] && rt_say "undo-$what" "$(rt_show "$@")"
    "$@" || rt_error "undo-$what" "$rt_name" "failed (see the line above)"
}

# rt_cleanup NAME KEEP [ENDED] — undo newest first; each step checks its object (a killed run lists unfinished
# steps). KEEP=1: keep upper, record, logs. ENDED=1 (chain exited): cgroup and network go in the background.
rt_cleanup() {
    local name=$1 keep=$2 ended=${3:-0} dir=$rt_state/$1 step
    local -a background=()
    local rt_name=$name netns_done=0
    local -a rt_trash=()
    [[ -f $dir/undo ]] || { [[ $keep == 1 ]] || rt_remove_dir "$name"; return 0; }
    local -a steps
    mapfile -t steps <"$dir/undo"
    local i
    for ((i = ${#steps[@]} - 1; i >= 0; i--)); do
        step=${steps[i]}
        case $step in
            cgroup)
                # Kills leftovers (a run killed half-way may leave the chain); not if rt_cgroup_gone=1.
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
                # veth pair, lease, published ports and their conntrack.
                if [[ -e $dir/net.json && $ended == 1 ]]; then
                    # The container is gone: once its ns file goes, the kernel destroys netns and veth;
                    # --leave-link spares deleting the pair here (~20 ms of RCU waits).
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
                # The overlay died with the container's mount ns: the upper dir is what is left. (An --rm
                # run's, .rm.NAME.PID, is removed by cbuild-overlay mount --rm's own child.)
                if [[ $keep != 1 ]]; then
                    rt_say undo-upper "rm -rf $rt_data/upper/$name $rt_data/work/$name (renamed to .rm.$name.$$, removed in the background; --rm: by cbuild-overlay)"
                    rt_discard_tree "$rt_data/upper/$name" "$rt_data/work/$name"
                fi
                ;;
            overlay)
                # A host-side mount from an older cbuild-run; not mounted (killed before/during) is fine.
                local out
                rt_say undo-overlay "cbuild-overlay umount $dir/rootfs"
                out=$("$OVERLAY_BIN" umount "$dir/rootfs" 2>&1) ||
                    [[ $out == *"not an overlay mount point"* || $out == *"No such file"* ]] ||
                    printf '%s\n' "$out" >&2
                # rmdir, never rm -r: after a failed umount the rootfs shows the container's files.
                rmdir "$dir/rootfs" 2>/dev/null
                if [[ $keep != 1 ]]; then
                    rt_rm_tree "$rt_data/upper/$name" "$rt_data/work/$name"
                fi
                ;;
        esac
    done
    [[ ${#background[@]} == 0 ]] || wait "${background[@]}"
    if [[ $keep == 1 ]]; then
        # Done steps leave the list; the upper dir stays on it for cbuild-rm.
        if [[ -d $rt_data/upper/$name ]]; then echo upper >"$dir/undo"; else : >"$dir/undo"; fi
    else
        rt_remove_dir "$name"
    fi
    rt_remove_trash
}

# rt_discard_tree DIR... (adds to rt_cleanup's rt_trash) — rename to `.rm.NAME.PID` (same fs; no NAME starts
# with a dot): frees NAME at once, rt_remove_trash deletes it in the background (inline: ~1 ms per --rm on
# ext4 with discard; containerd does the same). Unrenamable: removed in place; a crash's: cbuild-rm --prune.
rt_discard_tree() {
    local d t
    for d in "$@"; do
        [[ -e $d ]] || continue
        t=${d%/*}/.rm.${d##*/}.$$
        if mv -T "$d" "$t" 2>/dev/null; then rt_trash+=("$t"); else rt_rm_tree "$d"; fi
    done
}

# rm(1) on rt_trash in the background, holding none of the run's fds (lock, terminal): nothing waits on it.
rt_remove_trash() {
    [[ ${#rt_trash[@]} -gt 0 ]] || return 0
    local pid
    spawn -p pid -d -s -r 0 /dev/null -w 1 /dev/null -w 2 /dev/null -- rm -rf -- "${rt_trash[@]}" 8>&- 9>&-
}

# rt_rm_tree DIR... — a container-made tree has any depth: the builtin goes 64 levels (Debian's fallback
# silently gives up past PATH_MAX), so rm(1) finishes what it left (a fork only then) and shows the errors.
rt_rm_tree() {
    rm -rf "$@" 2>/dev/null
    local d
    for d in "$@"; do [[ ! -e $d ]] || env rm -rf "$d"; done
}

# Remove <state>/NAME: our files, then rmdir (fails harmlessly if a tool's file remains).
rt_remove_dir() {
    local dir=$rt_state/$1
    rm -f "$dir/record" "$dir/undo" "$dir/status" "$dir/stdout" "$dir/stderr" \
        "$dir/seccomp.bpf" "$dir/layers" "$dir/layers.err" "$dir/connect" "$dir/hostname" "$dir/hosts" "$dir/resolv.conf"
    # Left by a run stopped while building the default image.
    [[ ! -e $dir/rootfs-build ]] || rm -rf "$dir/rootfs-build"
    rmdir "$dir" 2>/dev/null || true
}

# rt_same_run NAME [FD=8] — is our lock still NAME's? A new run of NAME has a new undo file, which a waiter
# woken on the old one must not act on.
rt_same_run() { [[ /proc/self/fd/${2:-8} -ef $rt_state/$1/undo ]]; }

# Did run NAME reach its exec?
rt_exec_seen() { [[ -s $rt_state/$1/status && $(<"$rt_state/$1/status") == *'"phase":"exec"'* ]]; }
