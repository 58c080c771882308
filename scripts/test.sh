#!/usr/bin/env bash
# The README's second command: install what is needed, build, and run every test against the real kernel
# (as root): unit tests, the integration tests that drive the built binaries, and the pure cgroup v2 VM.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# rustup's toolchain first when there is one (a developer's); else Debian's rustc-web (setup.sh).
export PATH="$HOME/.cargo/bin:$PATH"
[ "$(id -u)" = 0 ] || { echo "test: the suite runs as root (namespaces, cgroups, mounts)" >&2; exit 125; }
cargo build --workspace
rc=0; cargo test --workspace --no-fail-fast || rc=$?
# cbuild-cgroup rm keeps the shared cbuild/ parents for the next container; the suite leaves none.
cargo run -q -p cbuild-cgroup -- prune >/dev/null || true
[ "$rc" = 0 ] || exit "$rc"
if [ -x scripts/test-vm.sh ] && [ "${CBUILD_SKIP_VM:-0}" != 1 ]; then
    # Exit 2 means the guest hung or crashed under TCG (not a test verdict): boot it once more.
    rc=0; scripts/test-vm.sh || rc=$?
    if [ "$rc" = 2 ]; then
        echo "test: the VM hung or crashed; one more boot" >&2
        rc=0; scripts/test-vm.sh || rc=$?
    fi
    exit "$rc"
fi
