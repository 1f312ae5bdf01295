# SPDX-License-Identifier: MIT
# uvhost-net --mode tap, the tap moved into a network namespace of its own
# with a link-local address (169.254.0.0/16 only), and a ping through it.
# The other end is DPDK testpmd's virtio-user port in icmpecho forwarding
# mode, which answers every ARP request (whatever the address asked for)
# and every ICMP echo request. So the ping's frames go: namespace -> tap
# -> uvhost-net -> testpmd, and the replies come back the same way.
# Needs root and /dev/net/tun; skips (77) without them.
. "$(dirname "$0")/net_lib.sh"

T_NAME=net-tap
PINGS=3
need_net
[ "$(id -u)" = 0 ] || skip "needs root (tap, network namespace)"
[ -c /dev/net/tun ] && [ -w /dev/net/tun ] || skip "/dev/net/tun is not available"
command -v ip > /dev/null || skip "ip (iproute2) is not installed"
[ -n "${NET_PING:-}" ] && [ -x "$NET_PING" ] ||
	{ say "interop-net-ping not found (NET_PING='${NET_PING:-}')"; exit 1; }
net_setup

NET_TAP="uvhT$$"
NET_TAP=${NET_TAP:0:15}
NS="uvh-ns-$$"
SUB=$(( ($$ % 250) + 2 ))
LOCAL=169.254.$SUB.1
REMOTE=169.254.$SUB.2
MAC=02:00:00:00:0E:01

if ! ip netns add "$NS" 2> "$T_WORK/netns.err"; then
	skip "cannot make a network namespace: $(cat "$T_WORK/netns.err")"
fi
NET_NS=$NS

if ! un_start "$T_WORK/uvhost-net.log" --mode tap --tap "$NET_TAP" \
		--socket-path "$T_WORK/net.sock"; then
	if grep -qE 'TUNSETIFF|/dev/net/tun|Operation not permitted' "$UN_LOG"; then
		skip "uvhost-net cannot make a tap here: $(grep -m1 -E 'TUNSETIFF|tun|permitted' "$UN_LOG")"
	fi
	fail "uvhost-net --mode tap did not start"
	t_finish
fi
check "uvhost-net made tap $NET_TAP" has "$UN_LOG" "^uvhost-net: port 0: tap $NET_TAP\$"
check "the tap exists" sh -c "ip link show '$NET_TAP' > /dev/null"
check "tap has multi-queue and a virtio-net header" \
	sh -c "ip -d link show '$NET_TAP' | grep -qE 'tap.*(multi_queue|vnet_hdr).*(vnet_hdr|multi_queue)'"

# Into the namespace; no IPv6 there, so every frame is ARP or ICMP.
ip netns exec "$NS" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 2>/dev/null
ip netns exec "$NS" sysctl -qw net.ipv6.conf.default.disable_ipv6=1 2>/dev/null
check "tap moved into namespace $NS" ip link set "$NET_TAP" netns "$NS"
ip netns exec "$NS" sysctl -qw "net.ipv6.conf.$NET_TAP.disable_ipv6=1" 2>/dev/null
check "address $LOCAL/24 on the tap" ip -n "$NS" addr add "$LOCAL/24" dev "$NET_TAP"
check "tap up" ip -n "$NS" link set "$NET_TAP" up
check "the tap is no longer in our namespace" sh -c "! ip link show '$NET_TAP' 2>/dev/null"

VU="net_virtio_user0,path=$T_WORK/net.sock,queues=1,queue_size=256,mrg_rxbuf=1,in_order=0,mac=$MAC"
if ! tpn_start a "$(nth_cpu 0)" "$VU"; then
	fail "testpmd (virtio-user) did not reach its prompt"
	t_finish
fi
check "testpmd: virtio-user port probed and configured" tpn_port_ok a
check "testpmd: port 0 link up" test "$(tpn_link a)" = up
check "uvhost-net: front-end connected" \
	wait_log "$UN_LOG" 'port0: front-end connected' 5 "$UN_PID"
tpn_do a "set fwd icmpecho" || fail "testpmd: set fwd icmpecho"
tpn_do a start || fail "testpmd: start"

# our own ping (net_ping.c): checks each reply's id, sequence and payload
ip netns exec "$NS" "$NET_PING" "$REMOTE" "$PINGS" 5 > "$T_WORK/ping.log" 2>&1
ping_rc=$?
say "ping: $(cat "$T_WORK/ping.log")"
check "ping $REMOTE from the namespace through the tap: all $PINGS answered intact" \
	test "$ping_rc" = 0
neigh=$(ip -n "$NS" neigh show "$REMOTE" dev "$NET_TAP")
say "neighbour: $neigh"
check "ARP resolved $REMOTE to testpmd's MAC" \
	sh -c "printf '%s' '$neigh' | grep -qi 'lladdr $MAC'"

tpn_fwd_stop a || fail "testpmd: no forward statistics"
say "testpmd icmpecho: received $FW_RX, answered $FW_TX"
num_check "testpmd received the ARP request and the echo requests" "$FW_RX" -ge $((PINGS + 1))
num_check "testpmd answered every frame (ARP and ICMP only)" "$FW_TX" -eq "$FW_RX"
tpn_stop a
check "testpmd quit cleanly (status ${TPN_QUIT_RC:-none})" test "${TPN_QUIT_RC:-x}" = 0
check "uvhost-net: front-end gone, ready for the next one" \
	wait_log "$UN_LOG" 'port 0: front-end gone.*ready for the next one' 5 "$UN_PID"
if un_stop; then
	check "uvhost-net exits 0 on SIGTERM (status $UN_RC)" test "$UN_RC" = 0
else
	fail "uvhost-net did not exit within 10 s of SIGTERM"
fi
say "uvhost-net totals: rx $(un_total 0 rx), tx $(un_total 0 tx)," \
	"drops rx $(un_total 0 rx_drops) tx $(un_total 0 tx_drops)"
num_check "uvhost-net put every frame from the tap into testpmd's RX" "$(un_total 0 tx)" -eq "$FW_RX"
num_check "uvhost-net took every reply testpmd sent" "$(un_total 0 rx)" -eq "$FW_TX"
num_check "uvhost-net: no rx drops" "$(un_total 0 rx_drops)" -eq 0
num_check "uvhost-net: no tx drops" "$(un_total 0 tx_drops)" -eq 0
check "uvhost-net: no error lines" hasnt "$UN_LOG" '(uvhost error|AddressSanitizer|runtime error)'

t_finish
