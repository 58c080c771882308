# scripts/lib/undo.sh — a run's undo: its list of steps, newest first, and the removal of what they made.
# Sourced after lib/runtime.sh by the scripts that undo runs (cbuild-run, cbuild-rm, cbuild-stop). Apart
# from runtime.sh because bash parses a function as it defines it (~0.3 ms here): cbuild-run defines these
# while its chain works, after the arguments have gone, or at its end if it fails before.
rt_undo_loaded=1

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
                # Listed before the chain ran: until cbuild-ns has written a status line, NAME may be
                # another's (cbuild-cgroup refused a NAME that exists), or one half-made by a chain killed
                # mid-step, with nothing of ours left in it once the chain has ended. Then a plain rm,
                # which refuses live processes: quietly, as that refusal is no failure of this run's.
                if [[ ! -s $dir/status ]]; then
                    rt_say undo-cgroup "cbuild-cgroup rm $name --missing-ok (cbuild-ns never started: not --force)"
                    "$CGROUP_BIN" rm "$name" --missing-ok 2>/dev/null
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

# rm(1) on rt_trash in the background, holding none of the run's fds (lock, terminal, a caller's pipe):
# nothing waits on it.
rt_remove_trash() {
    [[ ${#rt_trash[@]} -gt 0 ]] || return 0
    local pid
    spawn -p pid -d -s -c -r 0 /dev/null -w 1 /dev/null -w 2 /dev/null -- rm -rf -- "${rt_trash[@]}"
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
        "$dir/seccomp.bpf" "$dir/layers" "$dir/layers.err" "$dir/config.err" "$dir/cache-stamp" "$dir/connect" "$dir/hostname" "$dir/hosts" "$dir/resolv.conf"
    # Left by a run stopped while building the default image.
    [[ ! -e $dir/rootfs-build ]] || rm -rf "$dir/rootfs-build"
    rmdir "$dir" 2>/dev/null || true
}
