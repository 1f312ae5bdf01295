# SPDX-License-Identifier: MIT
# DPDK testpmd's virtio-user front-end against uvhost-net --mode loopback.
# Phase 1: one burst per queue pair in rxonly mode, printed by testpmd
# (verbose 1): every frame must come back on its queue with its MACs,
# type and length intact.
# Phase 2: testpmd forwards in io mode after a first burst ("start tx_first"), so
# the frames it sends come back through uvhost-net and are sent again. At
# the end every count must add up on both sides:
#   uvhost-net rx (taken from testpmd's TX rings) == testpmd TX-packets
#   uvhost-net tx (put into testpmd's RX rings)   == uvhost-net rx, no drops
#   uvhost-net tx - testpmd RX-packets == the frames still circulating when
#   testpmd stopped (first burst - testpmd's own TX drops), sitting in its
#   RX rings.
# Usage: net_loopback.sh split|packed MRG(0|1) QUEUE-PAIRS(1|2)
# With MRG=1 the frames are 3000 bytes in 3 segments, bigger than one RX
# buffer, so uvhost-net must merge RX buffers (num_buffers > 1).
. "$(dirname "$0")/net_lib.sh"

RING=${1:-split}
MRG=${2:-0}
QP=${3:-1}
T_NAME="net-loopback-$RING-mrg$MRG-q$QP"
BURSTS=4		# "start tx_first 4": 4 bursts of 32 per stream
RUN_SECS=1.5
need_net
net_setup

SOCK=$T_WORK/net.sock
MAC=02:00:00:00:0A:01		# testpmd's port (txonly: source)
PEER=02:00:00:00:00:00		# testpmd's default peer (txonly: destination)
LEN=64
[ "$MRG" = 1 ] && LEN=3000
VU="net_virtio_user0,path=$SOCK,queues=$QP,queue_size=256,mrg_rxbuf=$MRG,in_order=0,mac=$MAC"
[ "$RING" = packed ] && VU="$VU,packed_vq=1"

if ! un_start "$T_WORK/uvhost-net.log" --socket-path "$SOCK" --mode loopback --queues "$QP" \
		--stats-interval 1; then
	fail "uvhost-net did not start"
	t_finish
fi
pass "uvhost-net (loopback, $QP queue pair(s)) listening on $SOCK"

if ! tpn_start a "$(nth_cpu 0)" "$VU" --rxq="$QP" --txq="$QP"; then
	fail "testpmd (virtio-user, $RING, mrg_rxbuf=$MRG, $QP queue pairs) did not reach its prompt"
	t_finish
fi
pass "testpmd (virtio-user, $RING, mrg_rxbuf=$MRG, $QP queue pairs) reached its prompt"
check "testpmd: virtio-user port probed and configured" tpn_port_ok a
check "testpmd: port 0 link up" test "$(tpn_link a)" = up
check "uvhost-net: front-end connected" \
	wait_log "$UN_LOG" 'port0: front-end connected' 5 "$UN_PID"

# Phase 1, contents: one burst per queue pair in rxonly mode with verbose
# output; every frame must come back whole (MACs, type, length).
FIRST=$((32 * QP))
tpn_do a "set fwd rxonly" || fail "testpmd: set fwd rxonly"
if [ "$MRG" = 1 ]; then
	tpn_do a "set txpkts 1000,1000,1000" || fail "testpmd: set txpkts"
	check "testpmd accepted 3000-byte frames in 3 segments" \
		test -z "$(printf '%s\n' "$TPN_OUT" | grep -iE 'error|invalid|fail')"
fi
tpn_do a "set verbose 1" || fail "testpmd: set verbose 1"
tpn_do a "start tx_first 1" || fail "testpmd: start tx_first 1"
for i in $(seq 50); do
	# not anchored: testpmd's forwarding lcore prints a frame's line in
	# several printf()s, and the main thread's prompt can land in between
	got=$(grep -oE '  src=' "${TPN_LOG[a]}" | wc -l)
	[ "$got" -ge "$FIRST" ] && break
	sleep 0.1
done
tpn_fwd_stop a || fail "testpmd: no forward statistics after the first burst"
tpn_do a "set verbose 0"
say "first burst: sent $FW_TX, received $FW_RX"
num_check "testpmd: first burst sent" "$FW_TX" -eq "$FIRST"
num_check "testpmd: first burst all received" "$FW_RX" -eq "$FIRST"
good=$(grep -oE "src=$MAC - dst=$PEER - pool=[^ ]+ - type=0x0800 - length=$LEN - " \
	"${TPN_LOG[a]}" | wc -l)
num_check "testpmd: frames came back whole (src $MAC, dst $PEER, IPv4, $LEN bytes)" \
	"$good" -eq "$FIRST"
if [ "$good" != "$FIRST" ]; then
	say "frames received (counted by src, dst, type, length):"
	grep -oE '  src=.*' "${TPN_LOG[a]}" | sed -E 's/ - pool=[^ ]+//; s/ - (nb_segs|hw ptype|sw ptype).*//' |
		sort | uniq -c | head -n 10
	if [ "$RING" = packed ] && [ "$MRG" = 1 ]; then
		say "hint: DPDK 22.11's virtio driver sends multi-segment frames on a packed ring" \
			"through an indirect table whose first entry (the virtio-net header) keeps" \
			"VRING_DESC_F_WRITE from vring_desc_init_indirect_packed(); DPDK's vhost ignores" \
			"the write flag on TX chains. A device that treats that entry as writable" \
			"loses the header and reads the frame 12 bytes late."
	fi
fi
if [ "$MRG" = 1 ]; then
	num_check "testpmd: each frame filled 2 RX buffers (mergeable, num_buffers 2)" \
		"$(grep -oE "src=[^ ]+ - dst=[^ ]+ - pool=[^ ]+ - type=0x[0-9a-f]+ - length=$LEN - nb_segs=2 " "${TPN_LOG[a]}" | wc -l)" -eq "$FIRST"
fi
for q in $(seq 0 $((QP - 1))); do
	num_check "testpmd: first burst came back on queue $q" \
		"$(grep -oE "port 0/queue $q: received [0-9]+ packets" "${TPN_LOG[a]}" |
		   awk '{ n += $5 } END { print n + 0 }')" -eq 32
done

# Phase 2, counts: io forwarding keeps the first burst circulating.
tpn_do a "set fwd io" || fail "testpmd: set fwd io"
tpn_do a "start tx_first $BURSTS" || fail "testpmd: start tx_first"
sleep "$RUN_SECS"
tpn_fwd_stop a || fail "testpmd: no forward statistics after stop"
say "testpmd forward stats: RX $FW_RX, TX $FW_TX, TX-dropped $FW_TXDROP, RX-dropped $FW_RXDROP"
tpn_port_stats a || fail "testpmd: no port statistics"
say "testpmd port stats (both phases): RX-packets $TP_RX, TX-packets $TP_TX"
if [ "$QP" -gt 1 ]; then
	tpn_do a "show port xstats 0" || fail "testpmd: no xstats"
	for q in $(seq 0 $((QP - 1))); do
		rxq=$(val "rx_q${q}_good_packets")
		txq=$(val "tx_q${q}_good_packets")
		say "testpmd queue $q: rx $rxq, tx $txq"
		num_check "testpmd: queue pair $q sent frames" "$txq" -gt $((BURSTS * 32 * 4))
		num_check "testpmd: queue pair $q received frames" "$rxq" -gt $((BURSTS * 32 * 4))
	done
fi
tpn_stop a
check "testpmd quit cleanly (status ${TPN_QUIT_RC:-none})" test "${TPN_QUIT_RC:-x}" = 0
check "uvhost-net: front-end gone, ready for the next one" \
	wait_log "$UN_LOG" 'port 0: front-end gone.*ready for the next one' 5 "$UN_PID"

if un_stop; then
	check "uvhost-net exits 0 on SIGTERM (status $UN_RC)" test "$UN_RC" = 0
else
	fail "uvhost-net did not exit within 10 s of SIGTERM"
fi
URX=$(un_total 0 rx)
UTX=$(un_total 0 tx)
URXD=$(un_total 0 rx_drops)
UTXD=$(un_total 0 tx_drops)
say "uvhost-net totals: rx $URX, tx $UTX, drops rx $URXD tx $UTXD"
check "uvhost-net printed --stats-interval lines" has "$UN_LOG" '^uvhost-net: port 0 port0: rx [0-9.]+ Mpps'

INITIAL=$((BURSTS * 32 * QP))
num_check "testpmd: frames circulated (sent well beyond the first burst)" "$FW_TX" -gt $((INITIAL * 4))
num_check "testpmd: port TX == both phases' forward TX" "$TP_TX" -eq $(( ${FW_TX:-0} + FIRST ))
num_check "testpmd: port RX == both phases' forward RX" "$TP_RX" -eq $(( ${FW_RX:-0} + FIRST ))
num_check "testpmd: RX-dropped is 0" "$FW_RXDROP" -eq 0
num_check "uvhost-net: took every frame testpmd sent" "$URX" -eq "$TP_TX"
num_check "uvhost-net: gave every frame back" "$UTX" -eq "$URX"
num_check "uvhost-net: no rx drops" "$URXD" -eq 0
num_check "uvhost-net: no tx drops" "$UTXD" -eq 0
if [ -n "$UTX" ] && [ -n "$TP_RX" ] && [ -n "$FW_TXDROP" ]; then
	num_check "testpmd: frames left in its RX rings == frames still circulating" \
		$((UTX - TP_RX)) -eq $((INITIAL - FW_TXDROP))
	num_check "testpmd: its TX drops leave frames circulating" "$FW_TXDROP" -lt "$INITIAL"
fi
URXB=$(un_total 0 rx_bytes)
num_check "uvhost-net: every frame was $LEN bytes (rx bytes == $LEN * rx)" \
	"$URXB" -eq $(( ${URX:-0} * LEN ))
check "uvhost-net: no error lines" hasnt "$UN_LOG" '(uvhost error|ERROR|AddressSanitizer|runtime error)'

t_finish
