#!/usr/bin/env bash
# The README's first command: install what is needed, build every tool, and run a container on the
# embedded busybox rootfs, printing what the container sees.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# rustup's toolchain first when there is one (a developer's); else Debian's rustc-web (setup.sh).
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release --workspace --quiet
bin=target/release

rootfs=$(mktemp -d /tmp/cbuild-demo-rootfs.XXXXXX)
trap 'rm -rf "$rootfs"' EXIT
scripts/mkrootfs.sh "$rootfs"

echo "== cbuild-ns run --all --rootfs <busybox> --hostname cbuild-demo --init -- sh -c ..." >&2
"$bin/cbuild-ns" run --all --rootfs "$rootfs" --hostname cbuild-demo --init \
    --cap-drop ALL --cap-add DOCKER_DEFAULT -- sh -c '
    echo "hostname:   $(hostname)"
    echo "PID 1:      $(cat /proc/1/comm) (cbuild-ns --init, reaping and forwarding signals)"
    echo "my PID:     $$"
    echo "processes:"; ps -o pid,comm | sed "s/^/  /"
    echo "interfaces:"; ip -o link | sed "s/^/  /"
    echo "capabilities: $(grep CapEff /proc/self/status)"'
