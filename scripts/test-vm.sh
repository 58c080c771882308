#!/usr/bin/env bash
# Run cbuild's kernel-dependent test suites on a second kernel with pure cgroup v2, and the cgroup suite
# again with pure cgroup v1: Debian's stock linux-image-amd64 under qemu (TCG), booted from an initramfs
# holding busybox, the static cbuild tools and the static test programs. See docs/test-vm.md.
#
#   scripts/test-vm.sh                    self-check + every default suite that exists (cgroup ns overlay seccomp)
#                                         on cgroup v2, then self-check + cgroup on cgroup v1
#   scripts/test-vm.sh --layout v1 --suite cgroup    one boot, pure cgroup v1
#   scripts/test-vm.sh --suite cgroup     self-check + one suite (repeat or comma-separate for more)
#   scripts/test-vm.sh --shell            boot into an interactive guest shell (no tests, no timeout)
#
# Exit status: 0 all passed; 1 a check or suite failed; 2 the guest hung, crashed or reported nothing;
# 3 the harness could not set up (kernel download, build, initramfs).
set -euo pipefail
# The whole script is one { } block, so bash parses it completely before running any of it: editing this
# file during a 10-minute run (e.g. a git pull) cannot change the running script under its feet.
{

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=${XDG_CACHE_HOME:-$HOME/.cache}/cbuild-vm
target=${CBUILD_VM_TARGET_DIR:-$repo/target-vm}
default_suites=(cgroup ns overlay seccomp)
# Debian builds these as modules; the tests need them. Dependencies (depends=, softdep pre:) are added.
modules=${CBUILD_VM_MODULES:-"overlay veth bridge loop dummy tun nf_tables nft_chain_nat nft_nat nft_masq nft_ct nft_fib_inet nft_reject_inet"}

suites=()
filter=""
threads=2
timeout=900
suite_timeout=""
boot_timeout=120
keep=0
shell=0
verbose=0
inject=""
layout=""

usage() {
    sed -n '2,14s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"
    cat <<'EOF'
Options:
  --suite NAME[,NAME]  run these suites (default: those of cgroup ns overlay seccomp that exist)
  --filter STR         pass STR to the test programs as a libtest name filter
  --layout v2|v1       boot once with pure cgroup v2 or pure cgroup v1 (default: v2 with every suite,
                       then v1 with the cgroup suite when it is among them; CBUILD_VM_V1=0 skips v1)
  --threads N          libtest --test-threads in the guest (default 2)
  --timeout SECS       kill the guest after SECS and fail (default 900)
  --suite-timeout SECS kill one suite after SECS in the guest and fail it (default 360; the guest
                       also cuts it to what is left of the run so every result gets reported)
  --boot-timeout SECS  the guest must reach its init within SECS, else it is killed and booted once
                       more (default 120)
  --keep               keep the run directory (initramfs staging tree, logs, qemu command line)
  --verbose            stream the guest console to stderr
  --shell              boot into an interactive shell on the serial console (exit it to power off)
  --inject WHAT        harness self-test: fail (add a check that fails), hang (hang after the
                       self-check), hang-boot (hang before the tests start)
EOF
}

while [ $# -gt 0 ]; do
    case "$1" in
    --suite) IFS=, read -ra s <<<"${2:?--suite needs a NAME}"; suites+=("${s[@]}"); shift 2 ;;
    --suite=*) IFS=, read -ra s <<<"${1#*=}"; suites+=("${s[@]}"); shift ;;
    --filter) filter=${2:?--filter needs a STR}; shift 2 ;;
    --threads) threads=${2:?}; shift 2 ;;
    --layout) layout=${2:?--layout needs v2 or v1}; shift 2 ;;
    --layout=*) layout=${1#*=}; shift ;;
    --timeout) timeout=${2:?}; shift 2 ;;
    --suite-timeout) suite_timeout=${2:?}; shift 2 ;;
    --boot-timeout) boot_timeout=${2:?}; shift 2 ;;
    --keep) keep=1; shift ;;
    --verbose | -v) verbose=1; shift ;;
    --shell) shell=1; shift ;;
    --inject) inject=${2:?--inject needs fail or hang}; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "test-vm: unknown argument: $1 (see --help)" >&2; exit 3 ;;
    esac
done
case "$layout" in "" | v1 | v2) ;; *) echo "test-vm: --layout: want v2 or v1" >&2; exit 3 ;; esac
case "$inject" in "" | fail | hang | hang-boot) ;; *) echo "test-vm: --inject: want fail, hang or hang-boot" >&2; exit 3 ;; esac
for n in "$threads" "$timeout" "$boot_timeout" ${suite_timeout:+"$suite_timeout"}; do
    [[ $n =~ ^[1-9][0-9]*$ ]] || { echo "test-vm: not a positive number: $n" >&2; exit 3; }
done
[ -n "$suite_timeout" ] || suite_timeout=360
for s in "${suites[@]}"; do
    [[ $s =~ ^[a-z0-9_-]+$ ]] || { echo "test-vm: bad suite name: $s" >&2; exit 3; }
done

log() { echo "test-vm: $*" >&2; }
die() { log "$*"; exit 3; }

for t in qemu-system-x86_64 cpio apt-get dpkg-deb busybox jq file; do
    command -v "$t" >/dev/null || die "$t not found (run scripts/setup.sh)"
done
busybox_bin=$(command -v busybox)
file -b "$(readlink -f "$busybox_bin")" | grep -q static || die "$busybox_bin is not static (apt-get install busybox-static)"

mkdir -p "$cache" "$target"
run=$(mktemp -d "$target/vm-run.XXXXXX")
qpid=""
cleanup() {
    local rc=$?
    if [ -n "$qpid" ] && kill -0 "$qpid" 2>/dev/null; then
        kill -TERM "$qpid" 2>/dev/null; sleep 1; kill -KILL "$qpid" 2>/dev/null || true
        wait "$qpid" 2>/dev/null || true
    fi
    [ -z "${tailpid:-}" ] || kill "$tailpid" 2>/dev/null || true
    if [ "$keep" = 1 ] || { [ "$rc" != 0 ] && [ -n "$(find "$run" -maxdepth 1 -name 'console*.log' -size +0)" ]; }; then
        log "logs kept in $run"
    else
        rm -rf "$run"
    fi
    # Keep the five newest run directories that were kept, drop older ones.
    # (|| true: with none left, ls fails, and under pipefail and -e that would become the script's status.)
    { ls -dt "$target"/vm-run.* 2>/dev/null || true; } | tail -n +6 | xargs -r rm -rf
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- kernel ------------------------------------------------------------------------------------------
# The package linux-image-amd64 depends on, e.g. linux-image-6.1.0-57-amd64, at apt's candidate version.
# Cached unpacked per package version; the host never installs it.
resolve_kernel_pkg() {
    apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ { print $2; exit }'
}
kpkg=$(resolve_kernel_pkg || true)
if [ -z "$kpkg" ] && [ "$(id -u)" = 0 ]; then
    log "apt has no linux-image-amd64 candidate; running apt-get update"
    apt-get update -qq >&2 || log "apt-get update failed"
    kpkg=$(resolve_kernel_pkg || true)
fi
kver=""
[ -n "$kpkg" ] && kver=$(apt-cache policy "$kpkg" | awk '/Candidate:/ { print $2 }')

fetch_kernel() { # fetch_kernel DIR: download and unpack $kpkg=$kver, keep vmlinuz, config, System.map and the .deb
    local dir=$1 tmp
    tmp=$(mktemp -d "$cache/fetch.XXXXXX")
    log "downloading $kpkg=$kver"
    # apt drops to user _apt when it can; let it write the download directory.
    chmod 0777 "$tmp"
    local root_sandbox=""
    [ "$(id -u)" = 0 ] && root_sandbox=1
    (cd "$tmp" && apt-get download -q ${root_sandbox:+-o APT::Sandbox::User=root} "$kpkg=$kver" >&2) || { rm -rf "$tmp"; return 1; }
    mkdir -p "$tmp/dir"
    mv "$tmp"/*.deb "$tmp/dir/kernel.deb"
    dpkg-deb --fsys-tarfile "$tmp/dir/kernel.deb" | tar -x -C "$tmp/dir" --wildcards './boot/*'
    mv "$tmp"/dir/boot/vmlinuz-* "$tmp/dir/vmlinuz"
    mv "$tmp"/dir/boot/config-* "$tmp/dir/config"
    rm -rf "$tmp/dir/boot"
    echo "$kpkg $kver" >"$tmp/dir/version"
    mv -T "$tmp/dir" "$dir" 2>/dev/null || true # another run may have won the race; either copy is good
    rm -rf "$tmp"
}

kdir=""
if [ -n "$kpkg" ] && [ -n "$kver" ] && [ "$kver" != "(none)" ]; then
    kdir=$cache/kernels/${kpkg}_$kver
    mkdir -p "$cache/kernels"
    [ -f "$kdir/version" ] || fetch_kernel "$kdir" || { log "could not download $kpkg=$kver"; kdir=""; }
fi
if [ -z "$kdir" ]; then
    # Offline or no apt lists: the newest kernel already in the cache will do.
    kdir=$(ls -dt "$cache"/kernels/*/ 2>/dev/null | head -n1)
    kdir=${kdir%/}
    if [ -z "$kdir" ] || [ ! -f "$kdir/version" ]; then
        die "no kernel: linux-image-amd64 unresolvable (apt-get update?) and none cached in $cache/kernels"
    fi
    log "using cached kernel $(cat "$kdir/version") (could not resolve the current one)"
fi
read -r kpkg kver <"$kdir/version"

# Modules: resolve the wanted list plus dependencies, in load order, once per (kernel, list).
modhash=$(echo "$modules" | sha256sum | cut -c1-16)
moddir=$kdir/modules-$modhash
if [ ! -f "$moddir/order" ]; then
    tmp=$(mktemp -d "$cache/mods.XXXXXX")
    dpkg-deb --fsys-tarfile "$kdir/kernel.deb" | tar -x -C "$tmp" --wildcards './lib/modules/*'
    kroot=$(echo "$tmp"/lib/modules/*)
    declare -A modpath=() seen=()
    while IFS= read -r f; do
        b=${f##*/}; b=${b%%.ko*}; modpath[${b//-/_}]=$f
    done < <(find "$kroot/kernel" -name '*.ko' -o -name '*.ko.xz' -o -name '*.ko.zst')
    builtin=" $(sed 's|.*/||; s|\.ko.*||; s|-|_|g' "$kroot/modules.builtin" | tr '\n' ' ') "
    mkdir -p "$tmp/out"
    order=()
    modinfo_field() { # modinfo_field FILE KEY: the .modinfo values of KEY
        tr '\0' '\n' <"$1" | sed -n "s/^$2=//p"
    }
    add_module() { # add_module NAME REQUIRED: NAME's dependencies, then NAME, into $order
        local m=${1//-/_} required=$2 f d
        [ -z "${seen[$m]:-}" ] || return 0
        seen[$m]=1
        case "$builtin" in *" $m "*) return 0 ;; esac
        f=${modpath[$m]:-}
        [ -z "$f" ] && [ -n "${modpath[${m}_generic]:-}" ] && m=${m}_generic && f=${modpath[$m]} # crypto aliases
        if [ -z "$f" ]; then
            [ "$required" = 1 ] && { log "kernel $kpkg has no module $m"; return 1; }
            return 0
        fi
        case "$f" in
        *.xz) xz -dc "$f" >"$tmp/out/$m.ko" ;;
        *.zst) zstd -qdc "$f" >"$tmp/out/$m.ko" ;;
        *) cp "$f" "$tmp/out/$m.ko" ;;
        esac
        for d in $(modinfo_field "$tmp/out/$m.ko" softdep | sed -n 's/^pre: *//p'); do add_module "$d" 0 || return 1; done
        for d in $(modinfo_field "$tmp/out/$m.ko" depends | tr ',' ' '); do add_module "$d" 1 || return 1; done
        order+=("$m")
    }
    for m in $modules; do add_module "$m" 1 || { rm -rf "$tmp"; exit 3; }; done
    printf '%s\n' "${order[@]}" >"$tmp/out/order"
    rm -rf "$moddir"
    mv -T "$tmp/out" "$moddir" 2>/dev/null || true
    rm -rf "$tmp"
fi
log "kernel $kpkg $kver; modules: $(tr '\n' ' ' <"$moddir/order")"

# --- static binaries -----------------------------------------------------------------------------------
# The static build (scripts/lib/static.sh: the four tools of a container's start with musl, the others with
# glibc, libseccomp and OpenSSL linked in) so they run on a bare busybox guest.
export CARGO_TARGET_DIR=$target
source "$repo/scripts/lib/static.sh"
static_musl_check || die "the musl tool chain is not there"
log "building static tools and test programs in $target"
# --keep-going: one tool that does not compile must not hide the others (its suite fails on its own).
# Not scripts/builtins: a shared object for bash, which a crt-static build cannot make (the guest's suites
# do not run the scripts).
musl_excl=() musl_sel=()
for t in "${static_musl_tools[@]}"; do musl_excl+=(--exclude "$t") musl_sel+=(-p "$t"); done
static_glibc build --keep-going --release --workspace --exclude cbuild-builtins "${musl_excl[@]}" --manifest-path "$repo/Cargo.toml" \
    --message-format=json-render-diagnostics >"$run/build.json" ||
    log "some tools did not compile (see above); the suites that use them will fail"
static_musl build --keep-going --release "${musl_sel[@]}" --manifest-path "$repo/Cargo.toml" \
    --message-format=json-render-diagnostics >>"$run/build.json" ||
    log "some tools did not compile for musl (see above); the suites that use them will fail"
mapfile -t tools < <(jq -r 'select(.reason == "compiler-artifact" and (.target.kind | index("bin")) and .executable != null) | .executable' "$run/build.json")
[ ${#tools[@]} -gt 0 ] || die "cargo build produced no binaries"
missing_tools=()
for d in "$repo"/cbuild-*/src/main.rs; do
    t=${d%/src/main.rs}; t=${t##*/}
    printf '%s\n' "${tools[@]}" | grep -q "/$t\$" || missing_tools+=("$t")
done
[ ${#missing_tools[@]} -eq 0 ] || log "not built (did not compile): ${missing_tools[*]}"
# --no-fail-fast (implies --keep-going): a test file another engineer is still writing must not stop the suites that do compile.
static_glibc test --no-run --no-fail-fast --release -p cbuild-tests \
    --manifest-path "$repo/Cargo.toml" --message-format=json-render-diagnostics >"$run/tests.json" ||
    log "some test programs did not compile (see above); their suites will fail"
declare -A test_exe=()
while read -r name exe; do test_exe[$name]=$exe; done < <(jq -r 'select(.reason == "compiler-artifact" and .target.kind == ["test"] and .executable != null) | "\(.target.name) \(.executable)"' "$run/tests.json")

# Which suites: the requested ones; by default each default suite whose test file exists.
if [ ${#suites[@]} -eq 0 ]; then
    for s in "${default_suites[@]}"; do
        if [ -f "$repo/tests/tests/$s.rs" ]; then suites+=("$s"); else log "suite $s: no tests/tests/$s.rs yet, skipped"; fi
    done
fi
declare -A suite_missing=()
for s in "${suites[@]}"; do
    if [ -z "${test_exe[$s]:-}" ]; then
        suite_missing[$s]=1
        log "suite $s: no test program built (tests/tests/$s.rs missing or did not compile)"
    fi
done
for f in "${tools[@]}" "${test_exe[@]}"; do
    file -b "$f" | grep -q 'static' || die "$f is not statically linked; the guest has no libc"
done

# --- initramfs -----------------------------------------------------------------------------------------
# Cached by the hash of everything that goes in; run-time choices travel on the kernel command line.
inputs=("$repo/scripts/vm/init" "$repo/scripts/vm/selfcheck.sh" "$busybox_bin" "$moddir"/*.ko "$moddir/order" "${tools[@]}")
for s in "${suites[@]}"; do [ -n "${suite_missing[$s]:-}" ] || inputs+=("${test_exe[$s]}"); done
ihash=$({
    echo "cbuild-vm initramfs v1"
    for f in "${inputs[@]}"; do echo "${f##*/} $(sha256sum <"$f" | cut -d' ' -f1)"; done
} | sha256sum | cut -c1-24)
initrd=$cache/initramfs-$ihash.cpio
if [ ! -f "$initrd" ]; then
    log "building initramfs $initrd"
    st=$run/stage
    mkdir -p "$st"/{bin,sbin,usr/bin,usr/sbin,etc/cbuild-vm,lib/modules/cbuild-vm,opt/cbuild/bin,opt/cbuild/tests}
    mkdir -p "$st"/{proc,sys,dev,tmp,run,root,home/user,newroot,var/lib}
    chmod 1777 "$st/tmp"
    install -m 0755 "$repo/scripts/vm/init" "$st/init"
    install -m 0755 "$repo/scripts/vm/selfcheck.sh" "$st/etc/cbuild-vm/selfcheck.sh"
    cp "$busybox_bin" "$st/bin/busybox"
    while read -r applet; do
        [ "$applet" = bin/busybox ] || [ -e "$st/$applet" ] || ln -s /bin/busybox "$st/$applet"
    done < <("$busybox_bin" --list-full)
    cp "$moddir"/*.ko "$st/lib/modules/cbuild-vm/"
    cp "$moddir/order" "$st/etc/cbuild-vm/modules"
    for f in "${tools[@]}"; do cp "$f" "$st/opt/cbuild/bin/"; done
    for s in "${suites[@]}"; do [ -n "${suite_missing[$s]:-}" ] || cp "${test_exe[$s]}" "$st/opt/cbuild/tests/$s"; done
    printf 'root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000:user:/home/user:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$st/etc/passwd"
    printf 'root:x:0:\ntty:x:5:\nuser:x:1000:\nnogroup:x:65534:\n' >"$st/etc/group"
    printf 'user:100000:65536\n' | tee "$st/etc/subuid" >"$st/etc/subgid"
    (cd "$st" && find . -mindepth 1 | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0 --reproducible) >"$initrd.tmp.$$"
    mv "$initrd.tmp.$$" "$initrd"
    [ "$keep" = 1 ] || rm -rf "$st"
    ls -t "$cache"/initramfs-*.cpio | tail -n +4 | xargs -r rm -f # keep the three newest
fi
touch "$initrd"

# --- boot ----------------------------------------------------------------------------------------------
run_suites=()
for s in "${suites[@]}"; do [ -n "${suite_missing[$s]:-}" ] || run_suites+=("$s"); done
# cryptomgr.notests: the boot-time crypto self-tests are slow under TCG and once stalled a vCPU for good.
cmdline_base="console=ttyS0 quiet panic=-1 rdinit=/init cryptomgr.notests cbuild.threads=$threads"
cmdline_base+=" cbuild.suite_timeout=$suite_timeout"
[ -n "$filter" ] && cmdline_base+=" cbuild.filter=$filter"
[ -n "$inject" ] && cmdline_base+=" cbuild.inject=$inject"
# TCG only: KVM hangs on these machines. No NIC: the tests need none and it saves the option ROM.
qemu=(qemu-system-x86_64 -accel tcg -cpu max -m 2G -smp 2 -nographic -no-reboot -nic none
    -kernel "$kdir/vmlinuz" -initrd "$initrd")

if [ "$shell" = 1 ]; then
    cmdline="$cmdline_base cbuild.layout=${layout:-v2} cbuild.mode=shell"
    log "interactive shell (cgroup ${layout:-v2}): Ctrl-A X quits qemu; 'exit' in the guest powers off"
    "${qemu[@]}" -append "$cmdline" -serial mon:stdio -serial "file:$run/results.log"
    exit 0
fi

# The boots: with --layout, one. Without, pure v2 with every suite, then (when the cgroup suite is among
# them and CBUILD_VM_V1 is not 0) pure v1 with the cgroup suite alone: cbuild-cgroup is the one tool
# whose code differs per layout, and no development or CI machine runs v1.
boots=()
if [ -n "$layout" ]; then
    boots=("$layout")
elif [ "${CBUILD_VM_V1:-1}" != 0 ] && printf '%s\n' "${suites[@]}" | grep -qx cgroup; then
    boots=(v2 v1)
else
    boots=(v2)
fi
# What the v1 boot after a v2 one needs at most (it took 76 s: boot ~10 s, self-check ~14 s, the cgroup
# suite ~52 s; on a busy host 3-4x that: 2026-12-01, the cgroup suites took 175 s and more under TCG),
# with room; the v2 boot gets the rest of --timeout, so both together stay within it.
v1_reserve=360

show_new_results() { # print result lines as they arrive, so a slow run shows progress
    local n
    n=$(wc -l <"$results")
    [ "$n" -gt "$shown" ] || return 0
    sed -n "$((shown + 1)),${n}p" "$results" | tr -d '\r' | awk -v l="$blayout" '
        $1 == "CBUILD-VM-TEST" && $4 == "fail" { printf "test-vm:   FAIL [%s] %s %s\n", l, $2, $3 }
        $1 == "CBUILD-VM-RESULT" { $1 = ""; printf "test-vm: [%s] suite%s\n", l, $0 }' >&2
    shown=$n
}
stop_qemu() {
    kill -TERM "$qpid" 2>/dev/null; sleep 2; kill -KILL "$qpid" 2>/dev/null || true
}
# boot: one guest run; sets timed_out=1 (whole-run timeout) or boot_hung=1 (no BEGIN within boot_timeout).
boot() {
    : >"$console"
    : >"$results"
    shown=0 timed_out=0 boot_hung=0
    # cbuild.budget: the guest's own deadline (its uptime), early enough to report before ours.
    local left=$((btimeout - (SECONDS - start)))
    "${qemu[@]}" -append "$cmdline cbuild.budget=$((left > 60 ? left - 30 : left))" -monitor none \
        -serial "file:$console" -serial "file:$results" </dev/null >"$run/qemu$lsuffix.log" 2>&1 &
    qpid=$!
    while kill -0 "$qpid" 2>/dev/null; do
        show_new_results
        if ((SECONDS - start >= btimeout)); then
            timed_out=1
            log "guest still running after ${btimeout}s: killing qemu"
            stop_qemu
            break
        fi
        if ((SECONDS - boot_start >= boot_timeout)) && ! grep -q CBUILD-VM-BEGIN "$results"; then
            boot_hung=1
            log "guest did not reach its init within ${boot_timeout}s: killing qemu"
            stop_qemu
            break
        fi
        sleep 1
    done
    qrc=0
    wait "$qpid" || qrc=$?
    qpid=""
    show_new_results
}

# run_layout LAYOUT TIMEOUT SUITE...: boot once with that cgroup layout and suites (after the self-check),
# print its table; sets bstatus (0 passed, 1 failed, 2 hung/crashed) and appends to the summary.
summary=()
run_layout() {
    blayout=$1 btimeout=$2
    shift 2
    local bsuites=("$@") rs=() s v
    for s in "${bsuites[@]}"; do [ -n "${suite_missing[$s]:-}" ] || rs+=("$s"); done
    cmdline="$cmdline_base cbuild.layout=$blayout"
    [ ${#rs[@]} -gt 0 ] && cmdline+=" cbuild.suites=$(IFS=,; echo "${rs[*]}")"
    lsuffix=""
    [ "$blayout" = v2 ] || lsuffix=-$blayout
    console=$run/console$lsuffix.log
    results=$run/results$lsuffix.log
    printf '%q ' "${qemu[@]}" -append "$cmdline" -serial mon:stdio -serial "file:$results" >"$run/qemu-cmdline$lsuffix.sh"
    log "booting $kpkg, pure cgroup $blayout, under TCG (timeout ${btimeout}s; suites: selfcheck ${rs[*]})"
    if [ "$verbose" = 1 ]; then
        : >"$console"
        tail -n +1 -F "$console" 2>/dev/null >&2 &
        tailpid=$!
    fi
    start=$SECONDS
    boot_start=$SECONDS
    boot
    if [ "$boot_hung" = 1 ] && ((btimeout - (SECONDS - start) > 2 * boot_timeout)); then
        # A TCG guest that hangs before init is (rarely) a boot-time emulation stall, not a cbuild bug:
        # keep its console for the record and try once more.
        cp "$console" "$run/console$lsuffix-hung-boot.log"
        log "retrying the boot once (hung boot's console: $run/console$lsuffix-hung-boot.log)"
        boot_start=$SECONDS
        boot
    fi
    [ -z "${tailpid:-}" ] || { kill "$tailpid" 2>/dev/null; tailpid=""; }
    [ "$boot_hung" = 1 ] && timed_out=1
    local elapsed=$((SECONDS - start))

    local txt=$run/results$lsuffix.txt
    tr -d '\r' <"$results" >"$txt"
    bstatus=0
    grep -q '^CBUILD-VM-BEGIN' "$txt" || { log "[$blayout] the guest never started its tests"; bstatus=2; }
    local -A verdict=()
    local failed_suites=() _ rest
    while read -r _ s v rest; do verdict[$s]="$v $rest"; done < <(grep '^CBUILD-VM-RESULT ' "$txt")
    echo "test-vm: results on $kpkg $kver, pure cgroup $blayout (TCG, ${elapsed}s):" >&2
    for s in selfcheck "${bsuites[@]}"; do
        v=${verdict[$s]:-}
        if [ -n "${suite_missing[$s]:-}" ]; then
            printf 'test-vm:   %-10s FAIL  no test program (missing or did not compile)\n' "$s" >&2
            [ "$bstatus" != 0 ] || bstatus=1
        elif [ -z "$v" ]; then
            printf 'test-vm:   %-10s FAIL  no result (guest hung or died before it finished)\n' "$s" >&2
            bstatus=2
        elif [ "${v%% *}" = pass ]; then
            printf 'test-vm:   %-10s pass  %s\n' "$s" "${v#* }" >&2
        else
            printf 'test-vm:   %-10s FAIL  %s\n' "$s" "${v#* }" >&2
            grep "^CBUILD-VM-TEST $s .* fail$" "$txt" | awk '{ printf "test-vm:       failed: %s\n", $3 }' >&2
            failed_suites+=("$s")
            [ "$bstatus" != 0 ] || bstatus=1
        fi
    done
    if [ "$timed_out" = 1 ]; then
        log "[$blayout] FAILED: the guest timed out (hung boot, or still running after ${btimeout}s)"
        bstatus=2
    elif ! grep -q '^CBUILD-VM-END' "$txt"; then
        log "[$blayout] FAILED: the guest stopped without finishing (qemu exit $qrc)"
        bstatus=2
    fi
    if [ "$bstatus" = 2 ]; then
        log "[$blayout] last console lines ($console):"
        tail -n 40 "$console" | tr -d '\r' | sed 's/^/  | /' >&2
    fi
    for s in "${failed_suites[@]}"; do
        log "[$blayout] why $s failed (full output: $console):"
        sed -n "s/^CBUILD-VM-LOG $s /  | /p" "$txt" >&2
    done
    local word=passed
    [ "$bstatus" = 0 ] || word="FAILED (status $bstatus)"
    summary+=("cgroup $blayout: $word in ${elapsed}s (selfcheck ${rs[*]})")
}

status=0
total_start=$SECONDS
for b in "${!boots[@]}"; do
    l=${boots[$b]}
    left=$((timeout - (SECONDS - total_start)))
    if [ "$b" = 0 ] && [ ${#boots[@]} -gt 1 ]; then
        share=$((left - v1_reserve))
        ((share >= left / 2)) || share=$((left / 2)) # a short --timeout is split evenly
        run_layout "$l" "$share" "${suites[@]}"
    elif [ "$b" = 0 ]; then
        run_layout "$l" "$left" "${suites[@]}"
    elif [ "$left" -lt 60 ]; then
        log "no time left for the cgroup $l boot"
        summary+=("cgroup $l: FAILED, not run (out of time)")
        bstatus=2
    else
        run_layout "$l" "$left" cgroup
    fi
    [ "$bstatus" -le "$status" ] || status=$bstatus
done

echo "test-vm: summary ($((SECONDS - total_start))s in the guests):" >&2
printf 'test-vm:   %s\n' "${summary[@]}" >&2
[ "$status" = 0 ] || exit "$status"
log "all passed"
exit 0
}
