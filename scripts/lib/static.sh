# The static build, shared by scripts/build-static.sh, scripts/test-vm.sh and the benchmarks: binaries that
# run inside any rootfs or an initramfs, with no C library there. Sourced; needs CARGO_TARGET_DIR.
#
# - cbuild-ns, cbuild-cgroup, cbuild-overlay and cbuild-net, the four tools in every container's start and
#   every network's connect, link musl (static-pie). glibc's start-up asks the CPU about its features and
#   caches with ~60 `cpuid` instructions; in a virtual machine each one exits to the hypervisor (~6.7 µs on
#   this one): ~0.4 ms of every process, before `main`. musl's start-up asks nothing. No musl standard
#   library for Rust is packaged, so it is built from the source Debian ships beside its rustc-web
#   (`-Z build-std`, which needs RUSTC_BOOTSTRAP: that compiler and that source must be one release, which
#   static_musl_check checks). musl's libc.a and C runtime come from musl-dev (musl-tools' gcc specs do
#   not know static-pie: musl-static-pie.specs); the standard library's unwinder (for a backtrace: a panic
#   aborts) is LLVM's libunwind. The four use dlmalloc instead of musl's allocator (see their Cargo.toml).
#   They are optimised for size (opt-level "s", standard library included): each runs for a millisecond or
#   two, mostly in the kernel, and much of what its own code costs there is the page faults of its first
#   touches: a connect takes 39 in an -O3 cbuild-net's text and read-only data (2.8 MB), 20 in an -Os
#   one's (1.8 MB), at ~2.3 µs each in this VM; its CPU time fell by 4-7% (two runs, medians of 150
#   connects, interleaved with an -O3 build). opt-level "z" was no better.
# - cbuild-image and cbuild-seccomp link glibc statically (crt-static): libseccomp and OpenSSL are
#   packaged for glibc. With the explicit --target, proc-macros stay dynamic.
# - libcbuild_builtins.so, the scripts' bash builtin, is a shared object bash loads (glibc, not static).

static_musl_tools=(cbuild-ns cbuild-cgroup cbuild-overlay cbuild-net)
static_lib=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

# static_glibc SUBCOMMAND [ARGS...]: cargo (the one on PATH) for glibc crt-static.
static_glibc() {
    local sub=$1
    shift
    LIBSECCOMP_LINK_TYPE=static LIBSECCOMP_LIB_PATH=/usr/lib/x86_64-linux-gnu OPENSSL_STATIC=1 \
        RUSTFLAGS='-C target-feature=+crt-static' cargo "$sub" --target x86_64-unknown-linux-gnu "$@"
}

# static_musl_check: what static_musl needs is there, and the compiler and the standard library's source
# are one release (rust-web-src does not depend on rustc-web's version). One line on stderr and 125 if not.
static_musl_check() {
    local p v src
    for p in /usr/bin/cargo /usr/bin/rustc /usr/lib/rustlib/src/rust/library/std /usr/lib/x86_64-linux-musl/libc.a \
        /usr/lib/llvm-14/lib/libunwind.a; do
        [ -e "$p" ] || { echo "static: musl build: $p is missing (scripts/setup.sh installs it)" >&2; return 125; }
    done
    v=$(/usr/bin/rustc -V | awk '{print $2}')
    src=$(readlink -f /usr/lib/rustlib/src/rust)
    [ "${src##*/}" = "rustc-$v" ] || {
        echo "static: musl build: rustc $v but the standard library's source is ${src##*/} (install rust-web-src of rustc-web's version)" >&2
        return 125
    }
}

# static_musl SUBCOMMAND [ARGS...]: Debian's rustc-web and its cargo for musl static-pie, whatever
# toolchain PATH or rustup would pick.
static_musl() {
    local sub=$1
    shift
    static_musl_check || return
    CARGO_PROFILE_RELEASE_OPT_LEVEL=s RUSTC_BOOTSTRAP=1 RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc CARGO_TARGET_X86_64_UNKNOWN_LINUX_MUSL_LINKER=gcc \
        RUSTFLAGS="-C link-self-contained=no -C link-arg=-specs=$static_lib/musl-static-pie.specs -L /usr/lib/llvm-14/lib" \
        /usr/bin/cargo "$sub" -Z build-std=std,panic_abort --target x86_64-unknown-linux-musl "$@"
}

# static_dir: where static_build gathers every tool.
static_dir() { echo "$CARGO_TARGET_DIR/static"; }

# static_build [CARGO ARGS...]: build every tool and gather them, with the builtin, in $(static_dir):
# hard links to the builds' own files.
static_build() {
    local t excl=() musl=()
    static_musl_check || return
    for t in "${static_musl_tools[@]}"; do excl+=(--exclude "$t") musl+=(-p "$t"); done
    static_glibc build --release --workspace --exclude cbuild-builtins "${excl[@]}" "$@"
    static_musl build --release "${musl[@]}" "$@"
    cargo build --release --target x86_64-unknown-linux-gnu -p cbuild-builtins "$@"
    local out gnu=$CARGO_TARGET_DIR/x86_64-unknown-linux-gnu/release mus=$CARGO_TARGET_DIR/x86_64-unknown-linux-musl/release
    out=$(static_dir)
    mkdir -p "$out"
    # The glibc tools (not an older glibc build of the four), then the musl ones.
    for t in "$gnu"/cbuild-* "$gnu"/libcbuild_builtins.so; do
        case " ${static_musl_tools[*]} " in *" ${t##*/} "*) continue ;; esac
        if [ -f "$t" ] && [ -x "$t" ] && [[ $t != *.d ]]; then ln -f "$t" "$out/"; fi
    done
    for t in "${static_musl_tools[@]}"; do ln -f "$mus/$t" "$out/$t"; done
}
