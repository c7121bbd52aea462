#!/usr/bin/env bash
# Proves --udp-port and --nat-ip behind a real (nftables) NAT, as root: "studio" (the
# internet side, the broadcaster) reaches the friend's "router" at its public IP 10.77.0.2;
# the router forwards TCP 4001, 8081, 8082 and UDP 40000 and 40010 (one media port per relay)
# to the "home" machine 192.168.77.2 and masquerades its outgoing traffic, like a home router
# with port forwarding. Two relays run at home: one with --nat-ip 10.77.0.2 --udp-port 40000,
# one without --nat-ip (--udp-port 40010). Viewers record 100 frames from each: one with a
# public address, one behind its own NAT (10.88.0.2 masqueraded by the studio, nothing
# forwarded in: like most viewers at home). Expected: relay A serves both at once, its parent
# and both children on its one UDP socket (read with ss while they play); relay B serves the
# public viewer (its own checks open its NAT and ICE finds a peer-reflexive pair) but not the
# NATed one: it advertises 192.168.77.2, which nobody outside can reach.
#
#   sudo TREECAST=target/debug/treecast examples/home-relay/nat-demo.sh
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
B=$(realpath "${TREECAST:-$root/target/release/treecast}")
[ -x "$B" ] || { echo "no treecast binary at $B"; exit 1; }
[ "$(id -u)" = 0 ] || { echo "run as root (network namespaces)"; exit 1; }
command -v nft >/dev/null || { echo "needs nft (apt-get install nftables)"; exit 1; }

id=$$
studio=tc-studio-$id router=tc-router-$id home=tc-home-$id viewer=tc-viewer-$id
S=10.77.0.1 P=10.77.0.2 R=192.168.77.1 H=192.168.77.2 VR=10.88.0.1 V=10.88.0.2
work=$(mktemp -d /tmp/treecast-nat.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  # $! is the shell that ran `ip netns exec`, not always treecast: stop whatever runs in our
  # namespaces (SIGTERM, then SIGKILL after 2 s), or it outlives the script.
  for sig in TERM KILL; do
    for ns in "$studio" "$router" "$home" "$viewer"; do
      ip netns pids "$ns" 2>/dev/null | xargs -r kill -s $sig 2>/dev/null || true
    done
    [ $sig = TERM ] && sleep 2
  done
  wait 2>/dev/null || true
  for ns in "$studio" "$router" "$home" "$viewer"; do ip netns del "$ns" 2>/dev/null || true; done
  rm -rf "$work"
  echo "cleaned up: namespaces and $work removed"
}
trap cleanup EXIT
step() { printf '\n== %s\n' "$*"; }
wait_line() {
  for _ in $(seq $(($3 * 10))); do
    if line=$(grep -m1 "^$2" "$1"); then echo "$line"; return 0; fi
    sleep 0.1
  done
  echo "timed out waiting for '$2' in $1" >&2; return 1
}
ivf_frames() {
  python3 - "$1" <<'EOF'
import struct, sys
try:
    d = open(sys.argv[1], "rb").read()
except FileNotFoundError:
    d = b""
n, at = 0, 32
while at + 12 <= len(d):
    at += 12 + struct.unpack_from("<I", d, at)[0]; n += 1
print(n)
EOF
}

step "network: studio $S -- $P router $R -- home $H (NAT)"
for ns in "$studio" "$router" "$home" "$viewer"; do ip netns add "$ns"; ip -n "$ns" link set lo up; done
ip link add "ts$id" type veth peer name "tr$id"
ip link add "th$id" type veth peer name "tx$id"
ip link set "ts$id" netns "$studio"; ip link set "tr$id" netns "$router"
ip link set "tx$id" netns "$router"; ip link set "th$id" netns "$home"
ip -n "$studio" addr add $S/24 dev "ts$id"; ip -n "$router" addr add $P/24 dev "tr$id"
ip -n "$router" addr add $R/24 dev "tx$id"; ip -n "$home" addr add $H/24 dev "th$id"
ip -n "$studio" link set "ts$id" up; ip -n "$router" link set "tr$id" up
ip -n "$router" link set "tx$id" up; ip -n "$home" link set "th$id" up
# The studio knows nothing of 192.168.77.0/24; a default route only for webrtc's mDNS socket.
ip -n "$studio" route add default dev "ts$id"
ip -n "$home" route add default via $R
ip netns exec "$router" sysctl -qw net.ipv4.ip_forward=1
ip netns exec "$router" nft -f - <<EOF
table ip nat {
  chain pre {
    type nat hook prerouting priority -100;
    iifname "tr$id" tcp dport { 4001, 8081, 8082 } dnat to $H
    iifname "tr$id" udp dport { 40000, 40010 } dnat to $H
  }
  chain post {
    type nat hook postrouting priority 100;
    oifname "tr$id" ip saddr 192.168.77.0/24 masquerade
  }
}
EOF
ip netns exec "$router" nft list ruleset | grep -E "dnat|masquerade"
# The viewer's own NAT in the studio: masquerade out, nothing forwarded in.
ip link add "tv$id" type veth peer name "tw$id"
ip link set "tv$id" netns "$studio"; ip link set "tw$id" netns "$viewer"
ip -n "$studio" addr add $VR/24 dev "tv$id"; ip -n "$viewer" addr add $V/24 dev "tw$id"
ip -n "$studio" link set "tv$id" up; ip -n "$viewer" link set "tw$id" up
ip -n "$viewer" route add default via $VR
ip netns exec "$studio" sysctl -qw net.ipv4.ip_forward=1
ip netns exec "$studio" nft -f - <<EOF
table ip nat {
  chain post {
    type nat hook postrouting priority 100;
    oifname "ts$id" ip saddr 10.88.0.0/24 masquerade
  }
}
EOF

step "studio: treecast broadcast"
ip netns exec "$studio" "$B" broadcast --stream demo --video "$root/examples/media/test.ivf" \
  --http $S:8080 --p2p-listen /ip4/$S/tcp/4001 --no-mdns \
  >"$work/studio.out" 2>"$work/studio.log" &
pids+=($!)
boot=$(wait_line "$work/studio.out" "p2p listening on /ip4/$S/tcp/4001" 20)
boot=${boot#p2p listening on }

step "home: relay A with --nat-ip $P --udp-port 40000; relay B without --nat-ip (--udp-port 40010)"
ip netns exec "$home" "$B" relay --stream demo --bootstrap "$boot" --http $H:8081 \
  --p2p-listen /ip4/$H/tcp/4001 --no-mdns --nat-ip $P --udp-port 40000 \
  >"$work/a.out" 2>"$work/a.log" &
pids+=($!)
ip netns exec "$home" "$B" relay --stream demo --bootstrap "$boot" --http $H:8082 \
  --p2p-listen /ip4/$H/tcp/4002 --no-mdns --udp-port 40010 \
  >"$work/b.out" 2>"$work/b.log" &
pids+=($!)
wait_line "$work/a.out" "http listening on" 20
wait_line "$work/b.out" "http listening on" 20
for _ in $(seq 150); do
  a=$(ip netns exec "$home" curl -s http://$H:8081/api/status | jq -r .receiving || true)
  [ "$a" = true ] && break
  sleep 0.1
done
echo "relay A receiving from the studio (through the NAT): $a"

# view NS IP PORT NAME: records from the relay at the router's public address, prints frames.
view() {
  ip netns exec "$1" timeout 20 "$B" view --pull "http://$P:$3/whep/demo" --ice-ip "$2" \
    --record "$work/$4.ivf" --frames 100 --no-mdns >/dev/null 2>"$work/view-$4.log" || true
  ivf_frames "$work/$4.ivf"
}
step "relay A ($P:8081) serves a public viewer ($S) and one behind its own NAT ($V) at once"
view "$studio" $S 8081 public-a >"$work/public-a.n" &
va=$!
view "$viewer" $V 8081 natted-a >"$work/natted-a.n" &
vb=$!
# While both play: the parent and the two children share relay A's one media socket. The OS
# lists relay A's UDP sockets on its LAN address (found by its WHEP port's owner).
apid=$(ip netns exec "$home" ss -ltnpH "sport = :8081" | grep -o 'pid=[0-9]*' | head -n1 | cut -d= -f2)
conns=0
for _ in $(seq 150); do
  conns=$(ip netns exec "$home" curl -s http://$H:8081/api/status | jq -r '.udp_port.connections' || true)
  [ "$conns" = 3 ] && break
  sleep 0.1
done
udp_a=$(ip netns exec "$home" ss -uanpH | grep "pid=$apid," | awk '{print $4}' | grep "^$H:" | sort -u | xargs)
echo "relay A: $conns media connections; its UDP sockets on $H: $udp_a"
wait $va $vb
pa=$(cat "$work/public-a.n"); fa=$(cat "$work/natted-a.n")
echo "relay A (--nat-ip $P): public viewer $pa frames, NATed viewer $fa frames"
step "the same two viewers pull from relay B ($P:8082, no --nat-ip)"
pb=$(view "$studio" $S 8082 public-b); fb=$(view "$viewer" $V 8082 natted-b)
echo "relay B (no --nat-ip): public viewer $pb frames, NATed viewer $fb frames"
curl_a=$(ip netns exec "$home" curl -s http://$H:8081/api/status | jq -c .udp_port || true)
echo "relay A's port: $curl_a"
[ "$a" = true ] && [ "$pa" -ge 100 ] && [ "$fa" -ge 100 ] && [ "$fb" -lt 100 ] &&
  [ "$conns" = 3 ] && [ "$udp_a" = "$H:40000" ] ||
  { echo FAIL; for f in "$work"/*.log; do echo "-- $f"; tail -n 8 "$f"; done; exit 1; }
echo "PASS: one forwarded UDP port carries a relay's parent and children; with --nat-ip it serves viewers behind NAT too, without it not"
