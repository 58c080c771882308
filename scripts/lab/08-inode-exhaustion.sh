#!/bin/bash
# Lab 08 — inode exhaustion: "No space left on device" while df -h shows free space.
# Seed: "A filesystem has a fixed number of inodes. Many small files (image layers full of them, a
# container writing thousands of tiny files) can use every inode while most blocks are free; writes then
# fail with ENOSPC. `df -i` shows it, `df -h` does not."
source "$(dirname "$0")/lib.sh"
cd "$LAB" || exit 1

say "1. A small ext4 filesystem on a loop device: 64 MiB, only 512 inodes"
truncate -s 64M fs.img
mkfs.ext4 -q -F -N 512 fs.img
mkdir -p disk
mount -o loop fs.img disk
at_exit "umount -l '$LAB/disk'"
show df -h disk
show df -i disk

say "2. An overlay whose upper layer lives on it; the container writes small files until it fails"
mkdir -p lower/etc
echo hello >lower/etc/motd
"$OVERLAY_BIN" mount --lower lower:lower --upper disk/upper --work disk/work merged 2>/dev/null ||
    "$OVERLAY_BIN" mount --lower "$LAB/lower" --upper disk/upper --work disk/work merged
at_exit "'$OVERLAY_BIN' umount '$LAB/merged'"
n=0
err=''
while :; do
    if ! err=$(echo x 2>&1 >"merged/f$n"); then break; fi
    n=$((n + 1))
    [[ $n -gt 5000 ]] && break
done
measured "small files written before the first failure" "$n"
measured "the error" "${err##*: }" "No space left on device"
show df -h disk
show df -i disk
used=$(df --output=pcent disk | tail -1 | tr -dc 0-9)
iused=$(df --output=ipcent disk | tail -1 | tr -dc 0-9)
measured "blocks in use / inodes in use" "$used% / $iused%" "low / 100%"
claim "the write failed with ENOSPC" grep -q 'No space left' <<<"$err"
claim "while most blocks were still free (< 50% used)" test "$used" -lt 50
claim "because every inode was used" test "$iused" -ge 99

say "3. cbuild-overlay inspect names the culprit"
show "$OVERLAY_BIN" inspect merged
warn=$("$OVERLAY_BIN" inspect merged 2>&1 >/dev/null)
claim "inspect warns that the upper's filesystem is out of inodes" grep -q 'inodes' <<<"$warn"
lab_done
