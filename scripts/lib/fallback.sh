# scripts/lib/fallback.sh — for a shell without cbuild's builtins (scripts/builtins not built, or a bash
# that cannot load them): Debian's loadable mkdir, rmdir and rm (bash-builtins) where installed, and
# `spawn` and `reap` as bash functions. lib/runtime.sh sources this file only then: bash parses a whole
# `if ... fi` before running any of it, so these definitions kept inside runtime.sh would cost every
# start their parse even where the builtins are loaded.

for rt_b in mkdir rmdir rm; do
    [[ -f /usr/lib/bash/$rt_b ]] && enable -f "/usr/lib/bash/$rt_b" "$rt_b" 2>/dev/null
done

# The same words as the builtins, for what the scripts use of them (a fork each, where the builtin forks
# nothing):
#   spawn -p VAR [-s] [-d] [-c] [-k N]... [-r|-w|-a N FILE]... -- COMMAND [ARG...]      reap [-q] [-n] -p VAR PID
# (Not spawn's -i: bash cannot make a pipe end that the commands it runs next do not inherit.)
spawn() {
    local _var='' _sid='' _redir='' _q _close=0 _keep=' 0 1 2 '
    while [[ $# -gt 0 ]]; do
        case $1 in
            -p) _var=$2 && shift 2 ;;
            -s) _sid=setsid && shift ;;
            -d) shift ;; # bash collects a `&` job's status itself
            -c) _close=1 && shift ;;
            -k) _keep+="$2 " && shift 2 ;;
            -r | -w | -a)
                printf -v _q %q "$3"
                case $1 in -r) _redir+=" $2<$_q" ;; -w) _redir+=" $2>$_q" ;; -a) _redir+=" $2>>$_q" ;; esac
                shift 3 ;;
            --) shift && break ;;
            *) break ;;
        esac
    done
    # bash ignores SIGINT and SIGQUIT in a `&` command and gives it /dev/null as stdin: neither, as
    # the builtin does.
    # -c: every fd from 3 up but the -k ones closed first (the redirections then make their own).
    (
        trap - INT QUIT
        if [[ $_close == 1 ]]; then
            for _q in /proc/self/fd/*; do
                _q=${_q##*/}
                [[ $_keep == *" $_q "* ]] || eval "exec $_q>&-" 2>/dev/null
            done
        fi
        eval "exec $_redir" && exec $_sid "$@"
    ) <&0 &
    printf -v "$_var" %s "$!"
}
# -n: bash's own SIGCHLD handler reaps it; `kill -0` then fails, and `wait` has its status.
# -q: bash keeps a `&` job's status whoever waited, so there is nothing to be quiet about.
reap() {
    [[ $1 == -q ]] && shift
    if [[ $1 == -n ]]; then
        if kill -0 "$4" 2>/dev/null; then printf -v "$3" %s ''; return 0; fi
        shift
    fi
    wait -p "$2" "$3"
}
