#!/usr/bin/env bash
# Benchmark cbuild-image on a ~500 MB, ~11k-file gzip image built from /usr:
#   unpack            vs `umoci unpack` of the same OCI layout and the floor `gzip -dc | tar -x`
#   import + unpack   (a fresh store: copy and verify every blob, then unpack) vs `umoci unpack`
#   layers            (extract into the per-layer store for overlayfs)
# All with full digest verification (compressed digest, size and diff_id, hashed in the same pass).
# Needs root, umoci and hyperfine. Writes the "image" section of docs/BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/bench.sh
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target-image}
cargo build --release -q -p cbuild-image
BIN=$CARGO_TARGET_DIR/release/cbuild-image
RUNS=${RUNS:-3}

# On disk, not tmpfs: this measures what a user sees.
W=$(mktemp -d /var/tmp/cbuild-bench-image.XXXXXX)
trap 'rm -rf "$W"' EXIT
export CBUILD_DATA=$W/data

echo "== making the test tree and image" >&2
mkdir -p "$W/tree/usr/share" "$W/tree/usr/lib"
cp -a /usr/bin "$W/tree/usr/"
cp -a /usr/share/doc /usr/share/i18n "$W/tree/usr/share/"
cp -a /usr/lib/python3 "$W/tree/usr/lib/" 2>/dev/null || true
tree_mb=$(du -sm "$W/tree" | cut -f1)
tree_files=$(find "$W/tree" | wc -l)
"$BIN" build "$W/tree" --tag bench >/dev/null
"$BIN" export bench "$W/bench.oci.tar"
mkdir "$W/oci"
tar -C "$W/oci" -xf "$W/bench.oci.tar"
rm "$W/bench.oci.tar"
layer=$("$BIN" --json inspect bench | python3 -c 'import json,sys; print(json.load(sys.stdin)["layers"][0]["digest"].split(":")[1])')
blob=$W/oci/blobs/sha256/$layer
blob_mb=$(( $(stat -c %s "$blob") / 1000000 ))

echo "== hyperfine" >&2
load_before=$(cut -d' ' -f1 /proc/loadavg)
hyperfine --warmup 1 --runs "$RUNS" --export-json "$W/h.json" \
  -n "gzip -dc | tar -x (floor)" --prepare "rm -rf $W/out; mkdir $W/out; sync" "gzip -dc $blob | tar -x -C $W/out" \
  -n "umoci unpack" --prepare "rm -rf $W/bundle; sync" "umoci unpack --image $W/oci:latest $W/bundle >/dev/null" \
  -n "cbuild-image unpack" --prepare "rm -rf $W/out; sync" "$BIN unpack bench $W/out" \
  -n "cbuild-image import + unpack" --prepare "rm -rf $W/out $W/fresh; sync" \
     "CBUILD_DATA=$W/fresh $BIN import $W/oci --tag b >/dev/null && CBUILD_DATA=$W/fresh $BIN unpack b $W/out" \
  -n "cbuild-image layers" --prepare "rm -rf $W/data/layers; sync" "$BIN layers bench >/dev/null" >&2

load_after=$(cut -d' ' -f1 /proc/loadavg)
floor=$(bench_median_ms "$W/h.json" 0)
umoci=$(bench_median_ms "$W/h.json" 1)
unpack=$(bench_median_ms "$W/h.json" 2)
import=$(bench_median_ms "$W/h.json" 3)
layers=$(bench_median_ms "$W/h.json" 4)
r() { python3 -c "print('%.2f' % ($1 / $2))"; }

out=$W/section.md
{
  echo "### cbuild-image: unpack a ${tree_mb} MB, ${tree_files}-file gzip image (${blob_mb} MB layer)"
  echo
  echo "$(bench_machine); hyperfine, $RUNS runs after 1 warm-up, page cache warm, on disk (/var/tmp)."
  echo "Every cbuild-image row verifies the blob digest, size and diff_id while it extracts."
  echo "Load average $load_before before, $load_after after (on a shared machine, system time and so wall time"
  echo "swing with other work; compare rows of one run, and user time, which hyperfine prints, is steadier)."
  echo
  echo "| command | median ms | vs gzip \\| tar | umoci ÷ this |"
  echo "|---|---:|---:|---:|"
  echo "| gzip -dc \\| tar -x (floor) | $floor | 1.00 | $(r "$umoci" "$floor") |"
  echo "| umoci unpack | $umoci | $(r "$umoci" "$floor") | 1.00 |"
  echo "| cbuild-image unpack | $unpack | $(r "$unpack" "$floor") | $(r "$umoci" "$unpack") |"
  echo "| cbuild-image import (OCI dir, fresh store) + unpack | $import | $(r "$import" "$floor") | $(r "$umoci" "$import") |"
  echo "| cbuild-image layers (extract to the layer store) | $layers | $(r "$layers" "$floor") | $(r "$umoci" "$layers") |"
  echo
  echo "Targets: unpack at least 2× faster than umoci ($(r "$umoci" "$unpack")×) and within 1.3× of gzip | tar ($(r "$unpack" "$floor")×)."
} >"$out"
cat "$out"
bench_section image "$out"
