#!/usr/bin/env bash
# Fully static binaries that run inside any rootfs or an initramfs, gathered with the scripts' bash builtin
# in $CARGO_TARGET_DIR/static (default target/static): the four tools of a container's start link musl, the
# others glibc. How and why: scripts/lib/static.sh. Extra arguments go to each cargo build (e.g. -q).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
source scripts/lib/static.sh
static_build "$@"
