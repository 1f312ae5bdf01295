# SPDX-License-Identifier: MIT
# uvhost-net --mode switch with three ports, a DPDK testpmd virtio-user
# front-end on each (a, b, c):
#   1. b sends one burst to a MAC nobody has: the switch floods it to a
#      and c (not back to b), and learns b's MAC on port 1.
#   2. a sends to b's MAC (txonly, eth-peer) for a while: every frame goes
#      to b alone (c receives nothing more); the counts add up on both
#      sides (uvhost-net's drops, when b's ring is full, included).
. "$(dirname "$0")/net_lib.sh"

T_NAME=net-switch
RUN_SECS=1.5
need_net
net_setup

MAC_A=02:00:00:00:0A:01
MAC_B=02:00:00:00:0B:01
MAC_C=02:00:00:00:0C:01
UNKNOWN=02:00:00:00:00:00	# testpmd's default peer: on no port

if ! un_start "$T_WORK/uvhost-net.log" --mode switch --stats-interval 1 \
		--socket-path "$T_WORK/a.sock" --socket-path "$T_WORK/b.sock" \
		--socket-path "$T_WORK/c.sock"; then
	fail "uvhost-net --mode switch did not start"
	t_finish
fi
pass "uvhost-net (switch, 3 ports) listening"

vu() { # vu NAME MAC
	echo "net_virtio_user0,path=$T_WORK/$1.sock,queues=1,queue_size=256,mrg_rxbuf=0,in_order=0,mac=$2"
}
ok=1
tpn_start a "$(nth_cpu 0)" "$(vu a $MAC_A)" || ok=0
tpn_start b "$(nth_cpu 1)" "$(vu b $MAC_B)" || ok=0
tpn_start c "$(nth_cpu 0)" "$(vu c $MAC_C)" || ok=0
if [ "$ok" = 0 ]; then
	fail "a testpmd did not reach its prompt"
	t_finish
fi
pass "three testpmd virtio-user front-ends reached their prompts"
for n in a b c; do
	check "testpmd $n: port probed and configured" tpn_port_ok "$n"
	check "testpmd $n: link up" test "$(tpn_link "$n")" = up
done
check "uvhost-net: three front-ends connected" \
	wait_log "$UN_LOG" 'port2: front-end connected' 5 "$UN_PID"
wait_log "$UN_LOG" 'port1: front-end connected' 1
wait_log "$UN_LOG" 'port0: front-end connected' 1

# ---- 1. flooding ----
for n in a b c; do
	tpn_do "$n" "set fwd rxonly" || fail "testpmd $n: set fwd rxonly"
done
tpn_do a start || fail "testpmd a: start"
tpn_do c start || fail "testpmd c: start"
tpn_do b "start tx_first 1" || fail "testpmd b: start tx_first 1"
for i in $(seq 50); do
	tpn_port_stats a; ra=$TP_RX
	tpn_port_stats c; rc=$TP_RX
	[ "${ra:-0}" -ge 32 ] && [ "${rc:-0}" -ge 32 ] && break
	sleep 0.1
done
tpn_port_stats b
say "flood: b sent $TP_TX to $UNKNOWN; a received $ra, c received $rc, b received $TP_RX"
num_check "b sent one burst" "$TP_TX" -eq 32
num_check "unknown destination flooded to a" "$ra" -eq 32
num_check "unknown destination flooded to c" "$rc" -eq 32
num_check "nothing flooded back to the sender b" "$TP_RX" -eq 0

# ---- 2. learned unicast ----
tpn_fwd_stop a
tpn_do a "set eth-peer 0 $MAC_B" || fail "testpmd a: set eth-peer"
tpn_do a "set fwd txonly" || fail "testpmd a: set fwd txonly"
tpn_do a start || fail "testpmd a: start txonly"
sleep "$RUN_SECS"
tpn_fwd_stop a || fail "testpmd a: no forward statistics"
A_TX=$FW_TX
sleep 0.5	# b drains what is still in its ring
tpn_fwd_stop b
tpn_fwd_stop c
tpn_port_stats a; A_RX=$TP_RX; A_TXALL=$TP_TX
tpn_port_stats b; B_RX=$TP_RX
tpn_port_stats c; C_RX=$TP_RX
say "unicast a -> b ($MAC_B): a sent $A_TX; b received $B_RX; c received $C_RX in all"
for n in a b c; do
	tpn_stop "$n"
	check "testpmd $n quit cleanly (status ${TPN_QUIT_RC:-none})" test "${TPN_QUIT_RC:-x}" = 0
done
if un_stop; then
	check "uvhost-net exits 0 on SIGTERM (status $UN_RC)" test "$UN_RC" = 0
else
	fail "uvhost-net did not exit within 10 s of SIGTERM"
fi
for p in 0 1 2; do
	say "uvhost-net port $p: rx $(un_total $p rx), tx $(un_total $p tx)," \
		"drops rx $(un_total $p rx_drops) tx $(un_total $p tx_drops)"
done

num_check "a sent frames to b" "$A_TX" -gt 1000
num_check "b received frames from a (beyond the flood)" "$B_RX" -gt 1000
num_check "c received nothing but the flood (b's MAC was learned)" "$C_RX" -eq 32
num_check "a received nothing but the flood" "$A_RX" -eq 32
num_check "uvhost-net port 0 took every frame a sent" "$(un_total 0 rx)" -eq "$A_TXALL"
num_check "uvhost-net port 1 took every frame b sent" "$(un_total 1 rx)" -eq 32
num_check "uvhost-net port 2 took nothing (c never sent)" "$(un_total 2 rx)" -eq 0
num_check "uvhost-net port 1 delivered what b received" "$(un_total 1 tx)" -eq "$B_RX"
U1TX=$(un_total 1 tx)
U1D=$(un_total 1 tx_drops)
num_check "every frame of a reached b's port (delivered + dropped for lack of room)" \
	$(( ${U1TX:-0} + ${U1D:-0} )) -eq "$A_TXALL"
num_check "uvhost-net port 0 delivered the flood alone" "$(un_total 0 tx)" -eq 32
num_check "uvhost-net port 2 delivered the flood alone" "$(un_total 2 tx)" -eq 32
num_check "no drops on port 0" "$(un_total 0 tx_drops)" -eq 0
num_check "no drops on port 2" "$(un_total 2 tx_drops)" -eq 0
for p in 0 1 2; do
	num_check "no rx drops on port $p" "$(un_total $p rx_drops)" -eq 0
done
check "uvhost-net: no error lines" hasnt "$UN_LOG" '(uvhost error|AddressSanitizer|runtime error)'

t_finish
