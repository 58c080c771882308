#!/usr/bin/env bash
# Benchmark cbuild-overlay and OverlayFS itself, as root; rewrites the "overlay" section of
# docs/BENCHMARKS.md. About 4 minutes on 2 cores.
#
#  1. Mount + umount of 1, 10, 100 and 500 layers: cbuild-overlay (new mount API, one lowerdir+ per
#     layer), cbuild-overlay --legacy-api (mount(2) with short relative layer links, the path kernels
#     before 6.8 take), and the anchor: util-linux `mount -t overlay` / `umount` with short relative
#     layer names (cd into the layer dir, as Docker's overlay2 does with its l/ links).
#  2. Overlay vs its backing filesystem, the same work on both: sequential read, sequential write of a
#     new file, random 4k writes to an existing 256 MiB file the first time (includes the copy-up) and
#     afterwards, a recursive directory listing of a dir merged from two layers, and stat of every entry.
#  3. Copy-up cost of a large file: the first 1-byte write to a 256 MiB lower file (full copy-up), the
#     same with metacopy=on after a chmod (metadata only), against `cp` of the file and a 1-byte write
#     on the backing filesystem.
# All timings are hyperfine medians over warm page caches (the machine is shared: no cache dropping).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=lib/bench.sh
source "$root/scripts/lib/bench.sh"
[ "$(id -u)" = 0 ] || { echo "bench-overlay: run as root" >&2; exit 1; }
for t in hyperfine fio dd; do command -v $t >/dev/null || { echo "bench-overlay: needs $t" >&2; exit 1; }; done

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target-overlay}
(cd "$root" && cargo build -q --release -p cbuild-overlay)
B=$CARGO_TARGET_DIR/release/cbuild-overlay

# On the root filesystem (the backing fs a real host would use), not a tmpfs.
work=$(mktemp -d /var/tmp/cbuild-bench-overlay.XXXXXX)
export CBUILD_STATE=$work/state
cleanup() {
    # Unmount anything left below $work, deepest first, then remove it (no set -e here: a grep that finds
    # nothing must not skip the rm).
    set +e
    { grep -o " $work[^ ]*" /proc/self/mountinfo || true; } | sort -r | while read -r m; do umount -l "$m" 2>/dev/null; done
    rm -rf "$work"
}
trap cleanup EXIT
out=$work/out
mkdir -p "$out"

median() { bench_median_ms "$1" "$2"; }
ratio() { python3 -c 'import sys; print("%.2f" % (float(sys.argv[1]) / float(sys.argv[2])))' "$1" "$2"; }
hf() { hyperfine --style none --warmup "${WARMUP:-3}" --runs "${RUNS:-20}" "$@" >/dev/null; }
# Without a shell, for commands that need none (hyperfine cannot subtract a shell's start below ~5 ms).
hfn() { hf -N "$@"; }

table=$work/table.md
{
    echo "### cbuild-overlay (scripts/bench-overlay.sh)"
    echo
    echo "$(bench_machine); backing filesystem $(findmnt -no FSTYPE -T "$work"), hyperfine medians, warm caches."
    echo
    echo "Mount + umount of N lower layers plus an upper dir (ms; ratio = cbuild / anchor):"
    echo
    echo "| layers | cbuild (new API) | cbuild --legacy-api (mount(2)) | anchor: mount -t overlay + umount | ratio new API | ratio legacy |"
    echo "|---:|---:|---:|---:|---:|---:|"
} >"$table"

# --- 1. mount time --------------------------------------------------------------------------------
L=$work/L
mkdir -p "$L" "$work/m" "$work/u" "$work/w"
uw="--upper $work/u --work $work/w"
for i in $(seq 0 499); do mkdir "$L/$i" && echo "$i" >"$L/$i/who" && : >"$L/$i/f$i"; done
for n in 1 10 100 500; do
    seq 0 $((n - 1)) | sed "s|^|$L/|" >"$work/l$n"
    rel=$(seq -s: 0 $((n - 1)))
    RUNS=40 hf --export-json "$out/mount$n.json" \
        "$B mount --lower-from $work/l$n $uw $work/m && $B umount $work/m" \
        "$B mount --legacy-api --lower-from $work/l$n $uw $work/m && $B umount $work/m" \
        "cd $L && mount -t overlay overlay -o lowerdir=$rel,upperdir=$work/u,workdir=$work/w $work/m && umount $work/m"
    a=$(median "$out/mount$n.json" 0) b=$(median "$out/mount$n.json" 1) c=$(median "$out/mount$n.json" 2)
    echo "| $n | $a | $b | $c | $(ratio "$a" "$c") | $(ratio "$b" "$c") |" >>"$table"
done

# --- 2. overlay vs backing filesystem --------------------------------------------------------------
D=$work/data
low1=$D/low1 low2=$D/low2 plain=$D/plain U=$D/upper W=$D/work M=$D/merged
mkdir -p "$low1/tree" "$low2/tree" "$plain/tree"
dd if=/dev/urandom of="$low1/seqread" bs=1M count=256 status=none
dd if=/dev/urandom of="$low1/big" bs=1M count=256 status=none
cp "$low1/big" "$plain/big"
for d in $(seq 0 49); do
    mkdir -p "$low1/tree/d$d" "$low2/tree/d$d" "$plain/tree/d$d"
    for f in $(seq 0 199); do
        # Half of each dir in each layer: overlay has to merge every dir of the tree.
        if [ $((f % 2)) = 0 ]; then t=$low1; else t=$low2; fi
        echo "$f" >"$t/tree/d$d/f$f"
        echo "$f" >"$plain/tree/d$d/f$f"
    done
done
# A fresh overlay (empty upper), as a script hyperfine's --prepare can run; extra args go to mount.
cat >"$work/remount" <<EOF
#!/bin/sh
"$B" umount "$M" 2>/dev/null
rm -rf "$U" "$W"
exec "$B" mount --lower "$low1:$low2" --upper "$U" --work "$W" "\$@" "$M"
EOF
chmod +x "$work/remount"
"$work/remount"
fio_rw="fio --name=rw --rw=randwrite --bs=4k --size=256M --io_size=16M --randrepeat=1 --ioengine=psync --output=/dev/null"

{
    echo
    echo "Overlay vs the same work on the backing filesystem (ms; ratio = overlay / backing, 1.00 = no overhead):"
    echo
    echo "| operation | overlay | backing | ratio |"
    echo "|---|---:|---:|---:|"
} >>"$table"
row() { # name json
    local a b
    a=$(median "$2" 0) b=$(median "$2" 1)
    echo "| $1 | $a | $b | $(ratio "$a" "$b") |" >>"$table"
}

hfn --export-json "$out/seqread.json" \
    "dd if=$M/seqread of=/dev/null bs=1M status=none" \
    "dd if=$low1/seqread of=/dev/null bs=1M status=none"
row "sequential read, 256 MiB (dd bs=1M)" "$out/seqread.json"

hfn --export-json "$out/seqwrite.json" \
    --prepare "rm -f $M/new" "dd if=/dev/zero of=$M/new bs=1M count=128 status=none" \
    --prepare "rm -f $plain/new" "dd if=/dev/zero of=$plain/new bs=1M count=128 status=none"
row "sequential write of a new file, 128 MiB (dd bs=1M)" "$out/seqwrite.json"

WARMUP=0 RUNS=10 hfn --export-json "$out/randfirst.json" \
    --prepare "$work/remount" \
    "$fio_rw --filename=$M/big" \
    --prepare "true" \
    "$fio_rw --filename=$plain/big"
row "random 4k writes (16 MiB) to an existing 256 MiB file, first time (copy-up)" "$out/randfirst.json"

hfn --export-json "$out/randafter.json" "$fio_rw --filename=$M/big" "$fio_rw --filename=$plain/big"
row "the same, afterwards (already copied up)" "$out/randafter.json"

hfn --export-json "$out/list.json" "find $M/tree" "find $plain/tree"
row "recursive listing, 50 dirs x 200 files merged from 2 layers (find)" "$out/list.json"

hfn --export-json "$out/stat.json" "find $M/tree -printf '%s\n'" "find $plain/tree -printf '%s\n'"
row "stat of 10,050 entries (find -printf %s)" "$out/stat.json"

# --- 3. copy-up cost -------------------------------------------------------------------------------
{
    echo
    echo "Copy-up of a 256 MiB lower file (ms; a fresh overlay before each run):"
    echo
    echo "| operation | median | vs 1-byte write on backing fs |"
    echo "|---|---:|---:|"
} >>"$table"
prep="$work/remount"
WARMUP=1 RUNS=10 hfn --export-json "$out/copyup.json" \
    --prepare "$prep" "dd if=/dev/zero of=$M/big bs=1 count=1 conv=notrunc status=none" \
    --prepare "$prep --metacopy" "chmod 600 $M/big" \
    --prepare "$prep" "chmod 600 $M/big" \
    --prepare "rm -f $plain/copy" "cp $plain/big $plain/copy" \
    --prepare "true" "dd if=/dev/zero of=$plain/big bs=1 count=1 conv=notrunc status=none"
base=$(median "$out/copyup.json" 4)
for i in 0 1 2 3 4; do
    name=("first 1-byte write through the overlay (full data copy-up)" "chmod through the overlay, metacopy=on (metadata-only copy-up)" \
        "chmod through the overlay, metacopy off (full copy-up)" "cp of the file on the backing fs" "1-byte write on the backing fs")
    m=$(median "$out/copyup.json" $i)
    echo "| ${name[$i]} | $m | $(ratio "$m" "$base")x |" >>"$table"
done
"$B" umount "$M"

cat >>"$table" <<'EOF'

Reading the tables (a shared, noisy machine: compare ratios, not single numbers): mount time grows with
the layer count for every method (the kernel resolves each layer path); the new API costs one fsconfig
syscall per layer, the mount(2) fallback adds opening each layer and writing the layer list. Overlay adds
little to reads and writes of files already in the upper layer (the page cache is the real file's). The
first write to a lower file pays a full copy-up, proportional to the file's size and slower than `cp`
because overlay fsyncs the copy before it renames it into place (`--volatile` skips that); a chmod with
metacopy=on copies only metadata. Merged directories cost extra on listing: overlay reads every layer's
entries and merges them once per opened dir. The random-write rows are dominated by fio's own run time.
EOF

bench_section overlay "$table"
cat "$table"
