# scripts/lib/runs.sh — what the scripts that look at runs share (cbuild-ps, cbuild-stop, cbuild-rm,
# cbuild-exec, the labs): liveness, the command's PID, JSON. Sourced after lib/runtime.sh; kept out of it
# because cbuild-run needs none of it, and bash parses every function it is given (~0.5 ms for runtime.sh
# on each start).

rt_need_value() { [[ $# -ge 2 ]] || rt_die args "$1" 'needs a value'; }

# 0: something holds a lock on PATH (a file or a dir; one that cannot be opened holds none).
rt_locked() {
    local fd held
    { exec {fd}<"$1"; } 2>/dev/null || return 1
    flock -n "$fd"
    held=$?
    exec {fd}<&-
    [[ $held != 0 ]]
}

# 0: something of run NAME lives (its undo list is locked).
rt_alive() { rt_locked "$rt_state/$1/undo"; }

# rt_remove_layers [NAME] — the upper and work dirs named .rm.NAME.PID that nothing holds any more: an --rm
# run's layer whose cbuild-overlay remover was killed with it, or a background removal (rt_discard_tree)
# that never finished. PID (the run's, or the remover's caller) alive: still its; later, a remover at work
# holds a lock on the upper dir. Without NAME (prune): also not while a run of NAME is alive. (rt_rm_tree:
# lib/undo.sh, which cbuild-rm sources.)
rt_remove_layers() {
    local d base n pid
    for d in "$rt_data"/upper/.rm.* "$rt_data"/work/.rm.*; do
        [[ -e $d ]] || continue
        base=${d##*/} n=${d##*/.rm.} pid=${d##*.}
        n=${n%.*}
        [[ -n $pid && $pid != *[!0-9]* && ! -e /proc/$pid ]] || continue
        if [[ $# -gt 0 ]]; then
            [[ $n == "$1" ]] || continue
        elif rt_alive "$n"; then
            continue
        fi
        rt_locked "$rt_data/upper/$base" || rt_rm_tree "$d"
    done
}

# Host PID of run NAME's command (none before its exec).
rt_pid() {
    local st=''
    [[ -s $rt_state/$1/status ]] && st=$(<"$rt_state/$1/status")
    # Once exited the PID may be reused: none for cbuild-stop to signal or cbuild-exec to enter.
    [[ $st == *'"phase":"exited"'* ]] && return 1
    [[ $st =~ \"phase\":\"exec\",\"pid\":([0-9]+) ]] && printf '%s\n' "${BASH_REMATCH[1]}"
}

# rt_json = VALUE as a quoted JSON string.
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

# A top-level field of a one-line JSON object, nested ones cut out; no jq (hot path):
#   rt_json_field '{"pid": 12, ...}' pid  ->  12
rt_json_field() {
    local s=${1#\{} re="\"$2\"[[:space:]]*:[[:space:]]*([0-9]+)"
    while [[ $s =~ \{[^{}]*\} ]]; do s=${s/"${BASH_REMATCH[0]}"/}; done
    [[ $s =~ $re ]] && printf '%s\n' "${BASH_REMATCH[1]}"
}
