#!/bin/bash
# Lab 05 — OverlayFS: copy-on-write, whiteouts, opaque directories.
# Seed: "An image is read-only layers; a container adds one writable upper layer. Reads search the layers top
# down; the first write to a lower file copies it up whole; deleting a lower file leaves a whiteout (a 0/0
# character device) in the upper layer; a directory deleted and made again is marked opaque."
source "$(dirname "$0")/lib.sh"
cd "$LAB" || exit 1
mkdir -p l1/etc l2/dir
echo top >l1/shared
echo bottom >l2/shared
echo x >l2/dir/x
echo orig >l1/etc/conf
echo bye >l1/gone
head -c 8M /dev/urandom >l2/big
show "$OVERLAY_BIN" -v mount --lower l1:l2 --upper u --work w m
at_exit "'$OVERLAY_BIN' umount '$LAB/m'"

say "1. Reads search the layers top-down"
show cat m/shared
claim "m/shared comes from the top layer l1" test "$(cat m/shared)" = top

say "2. A new file lands in the upper layer only"
echo n >m/new
show ls u
claim "u/new exists, no lower layer has it" bash -c "test -f u/new && ! test -e l1/new && ! test -e l2/new"

say "3. The first write copies the whole lower file up; the lower copy is untouched"
echo more >>m/etc/conf
show cat l1/etc/conf u/etc/conf
claim "l1/etc/conf unchanged" test "$(cat l1/etc/conf)" = orig
claim "u/etc/conf holds the copy plus the write" test "$(cat u/etc/conf)" = "$(printf 'orig\nmore')"
t0=$EPOCHREALTIME
printf x | dd of=m/big bs=1 seek=0 conv=notrunc status=none
t1=$EPOCHREALTIME
measured "a 1-byte write to an 8 MiB lower file" "$(awk "BEGIN{printf \"%.1f ms\", ($t1-$t0)*1000}")" "copies 8 MiB up first"
claim "the 1-byte write put all 8 MiB in the upper layer" test "$(stat -c %s u/big)" = 8388608

say "4. Deleting a lower file leaves a whiteout: a character device 0/0"
rm m/gone
show ls -l u/gone
claim "u/gone is a char device 0,0" test "$(stat -c '%F %t,%T' u/gone)" = "character special file 0,0"
claim "the merged view no longer shows it" test ! -e m/gone

say "5. A lower dir deleted and made again is opaque: nothing below shows through"
rm -r m/dir
mkdir m/dir
xattr() { python3 -c 'import os,sys; print(os.getxattr(sys.argv[1], sys.argv[2]).decode())' "$@"; }
show xattr u/dir trusted.overlay.opaque
claim "u/dir carries trusted.overlay.opaque=y" test "$(xattr u/dir trusted.overlay.opaque 2>/dev/null)" = y
claim "m/dir is empty although l2/dir/x exists" test -z "$(ls -A m/dir)"

say "6. What the container changed, read from the upper dir"
show "$OVERLAY_BIN" diff u
d=$("$OVERLAY_BIN" diff u)
claim "diff reports the whiteout as deleted /gone" grep -qx 'deleted /gone' <<<"$d"
claim "diff reports the opaque dir" grep -qx 'opaque /dir' <<<"$d"
lab_done
