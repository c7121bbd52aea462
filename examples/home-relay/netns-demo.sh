#!/usr/bin/env bash
# Proves examples/home-relay/README.md on one machine, as root: two network namespaces joined
# by a veth pair, "studio" (the broadcaster) and "friend" (a home relay whose upload is capped
# at 2 Mbit/s with tc tbf). The friend's relay joins with the README's one command, a second
# relay with relay.toml; a viewer in the studio plays from the friend's relay across the capped
# link and records 100 frames. Everything is removed on exit.
#
#   sudo examples/home-relay/netns-demo.sh            # uses target/release/treecast
#   sudo TREECAST=target/debug/treecast examples/home-relay/netns-demo.sh
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
B=${TREECAST:-$root/target/release/treecast}
B=$(realpath "$B")
[ -x "$B" ] || { echo "no treecast binary at $B: cargo build --release -p treecast-node"; exit 1; }
[ "$(id -u)" = 0 ] || { echo "run as root (network namespaces)"; exit 1; }
ip netns list >/dev/null 2>&1 || { echo "ip netns is unavailable here"; exit 1; }

id=$$
studio=tc-studio-$id friend=tc-friend-$id
vs=tcs$id vf=tcf$id                    # interface names: at most 15 characters
S=10.77.0.1 F=10.77.0.2
work=$(mktemp -d /tmp/treecast-home-relay.XXXXXX)
pids=()

cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  # $! is the shell that ran `ip netns exec`, not always treecast: stop whatever runs in our
  # namespaces (SIGTERM, then SIGKILL after 2 s), or it outlives the script.
  for sig in TERM KILL; do
    for ns in "$studio" "$friend"; do
      ip netns pids "$ns" 2>/dev/null | xargs -r kill -s $sig 2>/dev/null || true
    done
    [ $sig = TERM ] && sleep 2
  done
  wait 2>/dev/null || true
  ip netns del "$studio" 2>/dev/null || true
  ip netns del "$friend" 2>/dev/null || true
  rm -rf "$work"
  echo "cleaned up: namespaces $studio $friend and $work removed"
}
trap cleanup EXIT

step() { printf '\n== %s\n' "$*"; }
in_studio() { ip netns exec "$studio" "$@"; }
in_friend() { ip netns exec "$friend" "$@"; }

# Waits up to $3 s for a line starting with $2 in file $1 and prints it.
wait_line() {
  for _ in $(seq $(($3 * 10))); do
    if line=$(grep -m1 "^$2" "$1"); then echo "$line"; return 0; fi
    sleep 0.1
  done
  echo "timed out waiting for '$2' in $1" >&2; return 1
}

step "network: $studio ($S) <-veth-> $friend ($F), friend's upload capped at 2 Mbit/s"
ip netns add "$studio"
ip netns add "$friend"
ip link add "$vs" type veth peer name "$vf"
ip link set "$vs" netns "$studio"
ip link set "$vf" netns "$friend"
ip -n "$studio" addr add $S/24 dev "$vs"
ip -n "$friend" addr add $F/24 dev "$vf"
for ns in "$studio" "$friend"; do ip -n "$ns" link set lo up; done
ip -n "$studio" link set "$vs" up
ip -n "$friend" link set "$vf" up
# Default routes, as a real machine has: webrtc's mDNS socket fails with "No such device"
# on a host without any route for multicast, and takes the media connection down with it.
ip -n "$studio" route add default dev "$vs"
ip -n "$friend" route add default dev "$vf"
in_friend tc qdisc add dev "$vf" root tbf rate 2mbit burst 32kbit latency 50ms
in_friend tc qdisc show dev "$vf"

step "studio: treecast broadcast"
in_studio "$B" broadcast --stream demo \
  --video "$root/examples/media/test.ivf" --audio "$root/examples/media/test.ogg" \
  --http $S:8080 --p2p-listen /ip4/$S/tcp/4001 --no-mdns \
  >"$work/studio.out" 2>"$work/studio.log" &
pids+=($!)
boot=$(wait_line "$work/studio.out" "p2p listening on /ip4/$S/tcp/4001" 20)
boot=${boot#p2p listening on }
echo "bootstrap address: $boot"

step "friend: the README's one command"
cmd=("$B" relay --stream demo --bootstrap "$boot" --upload-mbps 1.5 --http $F:8081
     --p2p-listen /ip4/$F/tcp/4001 --udp-port 40000)
echo "treecast ${cmd[*]:1}"
in_friend "${cmd[@]}" >"$work/relay.out" 2>"$work/relay.log" &
pids+=($!)
wait_line "$work/relay.out" "http listening on" 20

step "friend: a second relay from relay.toml (the README's file, with this demo's addresses)"
sed -e "s|^bootstrap = .*|bootstrap = [\"$boot\"]|" \
    -e "s|^http = .*|http = \"$F:8082\"|" \
    -e "s|^upload_mbps = .*|upload_mbps = 1.5|" \
    -e "s|^p2p_listen = .*|p2p_listen = [\"/ip4/$F/tcp/4002\"]|" \
    -e "s|^udp_port = .*|udp_port = 40001|" \
    "$here/relay.toml" >"$work/relay.toml"
grep -v '^#' "$work/relay.toml" | grep -v '^$'
in_friend "$B" relay --config "$work/relay.toml" >"$work/relay2.out" 2>"$work/relay2.log" &
pids+=($!)
wait_line "$work/relay2.out" "http listening on" 20

step "waiting for both relays to receive media"
ok=0
for _ in $(seq 200); do
  r1=$(in_friend curl -s http://$F:8081/api/status | jq -r .receiving 2>/dev/null || true)
  r2=$(in_friend curl -s http://$F:8082/api/status | jq -r .receiving 2>/dev/null || true)
  if [ "$r1" = true ] && [ "$r2" = true ]; then ok=1; break; fi
  sleep 0.1
done
[ $ok = 1 ] || { echo "relays not receiving (r1=$r1 r2=$r2)"; for f in "$work"/*.log; do echo "-- $f"; tail -n 15 "$f"; done; exit 1; }
for port in 8081 8082; do
  in_friend curl -s http://$F:$port/api/status |
    jq -c "{relay: \"$F:$port\", receiving, parent, tracks: [.tracks[] | {kind, codec}]}"
done
echo "tree as the broadcaster sees it:"
in_studio curl -s http://$S:8080/api/streams/demo/tree | jq -c '[.nodes[] | {id, parent, depth}]' 

step "studio: a viewer plays from the friend's relay across the capped link"
if ! in_studio timeout 60 "$B" view --pull http://$F:8081/whep/demo --ice-ip $S --record "$work/x.ivf" \
     --frames 100 >"$work/view.out" 2>"$work/view.log"; then
  echo "FAIL: the viewer did not record 100 frames within 60 s"
  for f in "$work"/view.log "$work"/relay.log; do echo "-- $f"; tail -n 15 "$f"; done
  exit 1
fi
ls -l "$work/x.ivf"
frames=$(python3 - "$work/x.ivf" <<'EOF'
import struct, sys
d = open(sys.argv[1], "rb").read()
n, at = 0, 32
while at + 12 <= len(d):
    size = struct.unpack_from("<I", d, at)[0]; at += 12 + size; n += 1
print(n)
EOF
)
echo "recorded $frames frames"
[ "$frames" -ge 100 ] || { echo "FAIL: fewer than 100 frames"; exit 1; }
echo "PASS: the home relay received the broadcast and served a viewer over its 2 Mbit/s upload"
