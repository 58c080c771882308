#!/bin/sh
# mkrootfs.sh DIR — the embedded default root filesystem: Debian's static busybox, one symlink per applet,
# /etc/passwd and /etc/group with root, user (1000) and nobody, /etc/hostname, empty /etc/hosts and
# /etc/resolv.conf, and empty /proc /sys /dev /tmp.
# POSIX sh on purpose: it also runs inside the busybox test VM.
set -eu
dir=${1:?usage: mkrootfs.sh DIR}
if [ -x /bin/busybox ]; then bb=/bin/busybox; else bb=$(command -v busybox || true); fi
[ -n "$bb" ] || { echo "mkrootfs: busybox: not found (apt-get install busybox-static)" >&2; exit 125; }
mkdir -p "$dir"/bin "$dir"/sbin "$dir"/usr/bin "$dir"/usr/sbin "$dir"/etc "$dir"/proc "$dir"/sys "$dir"/dev \
    "$dir"/tmp "$dir"/root "$dir"/home/user "$dir"/var/tmp
cp "$bb" "$dir/bin/busybox"
for applet in $("$bb" --list-full); do
    [ "$applet" = bin/busybox ] && continue
    [ -e "$dir/$applet" ] || ln -s /bin/busybox "$dir/$applet"
done
cat >"$dir/etc/passwd" <<'P'
root:x:0:0:root:/root:/bin/sh
user:x:1000:1000:user:/home/user:/bin/sh
nobody:x:65534:65534:nobody:/:/bin/false
P
cat >"$dir/etc/group" <<'G'
root:x:0:
user:x:1000:
extra:x:2000:user
nogroup:x:65534:
G
echo busybox >"$dir/etc/hostname"
# Empty, as in Docker's busybox image: a runtime binds its own over them (a missing one would be made in
# every container's upper dir first).
: >"$dir/etc/hosts"
: >"$dir/etc/resolv.conf"
chmod 1777 "$dir/tmp" "$dir/var/tmp"
chown 1000:1000 "$dir/home/user"
