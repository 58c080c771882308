#!/usr/bin/env bash
# Install what building and testing cbuild needs on Debian 12, idempotently: a package already present is
# not touched, and apt-get runs only when something is missing. Run as root.
set -euo pipefail

packages=(
    build-essential pkg-config libseccomp-dev   # building (libseccomp links statically into cbuild-seccomp)
    rustc-web cargo-web rust-web-clippy rustfmt-web  # Rust 1.96 (bookworm-security); a rustup one is used first
    rust-web-src musl-tools libunwind-14-dev    # the static build's musl tools (scripts/lib/static.sh)
    busybox-static                              # the embedded default rootfs
    iproute2 nftables conntrack uidmap procps   # what the tools and tests drive
    runc bubblewrap umoci skopeo containernetworking-plugins cgroup-tools hyperfine fio strace  # anchors, labs
    qemu-system-x86 cpio zstd                   # the pure cgroup v2 test VM
    util-linux e2fsprogs jq file curl ca-certificates bash-builtins python3
)

missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
# rustc-web and cargo-web conflict with Debian's rustc and cargo: apt would remove those, and what depends
# on them, without asking. Say so and stop instead.
if [[ " ${missing[*]} " == *" rustc-web "* || " ${missing[*]} " == *" cargo-web "* ]]; then
    for p in rustc cargo rustup; do
        if dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
            echo "setup: Debian's $p package is installed, and rustc-web/cargo-web (Rust 1.96) would replace it: remove it first (apt-get remove $p)" >&2
            exit 125
        fi
    done
fi
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing ${missing[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Rust: Debian 12's rustc (1.63) is too old for the crates we use; its rustc-web (above) is not, and with
# its standard library's source it builds the musl tools. A rustup toolchain in ~/.cargo/bin, when there is
# one, is what test.sh, demo.sh and CI put first on PATH for everything else.
