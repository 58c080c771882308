#!/usr/bin/env bash
# Fully static binaries (glibc crt-static) that run inside any rootfs or an initramfs:
# target/x86_64-unknown-linux-gnu/release/cbuild-*. The explicit --target keeps proc-macros dynamic;
# libseccomp (cbuild-seccomp) and OpenSSL (if a crate pulls it in) link statically.
# Beside them, libcbuild_builtins.so, the scripts' bash builtin: a shared object bash loads, which a
# crt-static build cannot make, so it is built without it.
set -euo pipefail
cd "$(dirname "$0")/.."
LIBSECCOMP_LINK_TYPE=static LIBSECCOMP_LIB_PATH=/usr/lib/x86_64-linux-gnu OPENSSL_STATIC=1 \
RUSTFLAGS='-C target-feature=+crt-static' \
    cargo build --release --target x86_64-unknown-linux-gnu --workspace --exclude cbuild-builtins "$@"
cargo build --release --target x86_64-unknown-linux-gnu -p cbuild-builtins "$@"
