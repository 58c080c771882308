#!/bin/bash
# Lab 03 — network namespaces, the veth pair and the `@ifN` peer index.
# Seed: "A new network namespace has only a loopback device, down. A veth pair is a virtual cable: one end in
# the container (eth0), the other on the host, plugged into a bridge. `ip link` shows each end as NAME@ifN,
# where N is the interface index of its peer in the other namespace."
# Everything happens inside a network namespace this lab makes to play "the host".
source "$(dirname "$0")/lib.sh"
lab_host_netns
host() { nsenter --net="$CBUILD_NET_HOST_NS" "$@"; }

say "1. A new network namespace: only lo, and it is down"
show "$NS_BIN" run --net -- ip -o link
links=$("$NS_BIN" run --net -- ip -o link | wc -l)
claim "one interface in a new network namespace" test "$links" = 1
claim "lo is down" bash -c "! '$NS_BIN' run --net -- ip -o link show lo | grep -q 'state UP\|,UP'"

say "2. A bridge on the (lab's) host, a persisted namespace, and one veth pair connecting them"
show "$NET_BIN" bridge add lab0 --subnet 10.250.0.0/24
show "$NET_BIN" netns add c1
show "$NET_BIN" connect c1 --bridge lab0 --id c1
at_exit "'$NET_BIN' bridge del lab0"
at_exit "'$NET_BIN' netns del c1"
at_exit "'$NET_BIN' disconnect --id c1"
c1() { nsenter --net="$CBUILD_STATE/c1/ns/net" "$@"; }
show c1 ip -o link show eth0
show host ip -o link show master lab0

# eth0@ifN in the container; the host end cbXXXX@ifM: N is the host end's index, M is eth0's.
c_line=$(c1 ip -o link show eth0)
c_index=${c_line%%:*}
peer_of_c=$(sed -n 's/.*eth0@if\([0-9]*\).*/\1/p' <<<"$c_line")
h_line=$(host ip -o link show master lab0 | head -1)
h_index=${h_line%%:*}
peer_of_h=$(sed -n 's/^[0-9]*: cb[0-9a-f]*@if\([0-9]*\).*/\1/p' <<<"$h_line")
measured "container: eth0 index / its @if" "$c_index / @if$peer_of_c"
measured "host end: index / its @if" "$h_index / @if$peer_of_h"
claim "eth0's @ifN is the host end's index ($peer_of_c = $h_index)" test "$peer_of_c" = "$h_index"
claim "the host end's @ifN is eth0's index ($peer_of_h = $c_index)" test "$peer_of_h" = "$c_index"
claim "the two indexes live in different namespaces (both can be small and even equal elsewhere)" \
    test "$(readlink "$CBUILD_STATE/c1/ns/net")" != "$(host readlink /proc/self/ns/net)"

say "3. The cable works: the container reaches the bridge's address"
show c1 ip -4 -o addr show eth0
show c1 busybox ping -c 1 -W 2 10.250.0.1
claim "ping from the container to the gateway 10.250.0.1" c1 busybox ping -c 1 -W 2 10.250.0.1

say "4. Deleting one end deletes the pair"
"$NET_BIN" disconnect --id c1
claim "no veth left on the host after disconnect" test -z "$(host ip -o link show type veth)"
claim "eth0 is gone from the container" bash -c "! nsenter --net='$CBUILD_STATE/c1/ns/net' ip link show eth0 2>/dev/null"
lab_done
