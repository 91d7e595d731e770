# Sourced by tests/cluster/node and tests/cluster/keda: a test host in a network namespace of
# its own, joined to this one by a veth pair on a free /30 of 10.250.0.0/16.
#
#   make_netns NETNS VETH    # sets host_ip (VETH, here) and ns_ip (eth0, in NETNS)
#
# A namespace or link of the same name that a crashed run left is deleted first. The /30 is
# chosen under a lock (clusters may start at once) among those no interface here uses.
make_netns() {
  local netns="$1" veth="$2" block
  ip netns delete "$netns" 2>/dev/null || true
  ip link delete "$veth" 2>/dev/null || true
  exec 9>/tmp/hoist-real-node-net.lock
  flock 9
  block="$(python3 - <<'PY'
import ipaddress, subprocess
used = set()
for line in subprocess.run(["ip", "-4", "-o", "addr", "show"], capture_output=True, text=True).stdout.splitlines():
    net = ipaddress.ip_interface(line.split()[3]).network
    used.add(net)
for i in range(16384):
    net = ipaddress.ip_network(f"10.250.{i // 64}.{(i % 64) * 4}/30")
    if not any(net.overlaps(u) for u in used):
        print(net.network_address)
        break
PY
)"
  if [ -z "$block" ]; then
    flock -u 9; exec 9>&-
    echo "no free /30 in 10.250.0.0/16 for $netns" >&2
    return 1
  fi
  host_ip="$(python3 -c "import ipaddress,sys; print(ipaddress.ip_address(sys.argv[1]) + 1)" "$block")"
  ns_ip="$(python3 -c "import ipaddress,sys; print(ipaddress.ip_address(sys.argv[1]) + 2)" "$block")"
  ip netns add "$netns"
  ip link add "$veth" type veth peer name eth0 netns "$netns"
  ip addr add "$host_ip/30" dev "$veth"
  ip link set "$veth" up
  flock -u 9
  exec 9>&-
  ip -n "$netns" link set lo up
  ip -n "$netns" addr add "$ns_ip/30" dev eth0
  ip -n "$netns" link set eth0 up
}
