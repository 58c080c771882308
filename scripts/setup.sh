#!/usr/bin/env bash
# Install what building and testing cbuild needs on Debian 12, idempotently: a package already present is
# not touched, and apt-get runs only when something is missing. Run as root.
set -euo pipefail

packages=(
    build-essential pkg-config libseccomp-dev   # building (libseccomp links statically into cbuild-seccomp)
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
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing ${missing[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Debian 12's own rustc is too old for the crates we use; take rustup's stable when no cargo is on PATH.
if ! command -v cargo >/dev/null 2>&1; then
    [ -x "$HOME/.cargo/bin/cargo" ] || curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal -c clippy,rustfmt
fi
