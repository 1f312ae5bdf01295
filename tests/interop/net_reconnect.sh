# SPDX-License-Identifier: MIT
# Front-ends come and go; uvhost-net (loopback) stays and serves the next:
#   server: uvhost-net listens; testpmd virtio-user #1 connects, passes
#           traffic and quits; #2 connects to the same socket and passes
#           traffic too.
#   client: uvhost-net --client; testpmd virtio-user with server=1 listens
#           (#3), passes traffic and quits; uvhost-net reconnects to #4 on
#           the same path, which passes traffic too.
# Each session runs io forwarding after a first burst; the counts of both
# sessions must add up to uvhost-net's totals (see net_loopback.sh).
. "$(dirname "$0")/net_lib.sh"

T_NAME=net-reconnect
BURSTS=4
RUN_SECS=1
INITIAL=$((BURSTS * 32))
need_net
net_setup

# session NAME VDEV: one front-end's life; adds to SUM_TX, SUM_RX, SUM_LEFT
# (frames still circulating when it stopped).
SUM_TX=0 SUM_RX=0 SUM_LEFT=0
session() {
	local name=$1 vdev=$2
	if ! tpn_start "$name" "$(nth_cpu 0)" "$vdev"; then
		fail "testpmd $name did not reach its prompt"
		return 1
	fi
	check "testpmd $name: port probed and configured" tpn_port_ok "$name"
	check "testpmd $name: link up" test "$(tpn_link "$name")" = up
	tpn_do "$name" "set fwd io" || fail "testpmd $name: set fwd io"
	tpn_do "$name" "start tx_first $BURSTS" || fail "testpmd $name: start"
	sleep "$RUN_SECS"
	tpn_fwd_stop "$name" || fail "testpmd $name: no forward statistics"
	say "testpmd $name: sent $FW_TX, received $FW_RX, TX-dropped $FW_TXDROP"
	num_check "testpmd $name: traffic passed (frames came back and went again)" \
		"$FW_TX" -gt $((INITIAL * 4))
	num_check "testpmd $name: frames still circulating at the end" "${FW_TXDROP:-}" -lt "$INITIAL"
	SUM_TX=$((SUM_TX + ${FW_TX:-0}))
	SUM_RX=$((SUM_RX + ${FW_RX:-0}))
	SUM_LEFT=$((SUM_LEFT + INITIAL - ${FW_TXDROP:-0}))
	tpn_stop "$name"
	check "testpmd $name quit cleanly (status ${TPN_QUIT_RC:-none})" test "${TPN_QUIT_RC:-x}" = 0
}

# totals MODE: uvhost-net's totals against the sessions' sums.
totals() {
	local urx utx
	urx=$(un_total 0 rx)
	utx=$(un_total 0 tx)
	say "$1: uvhost-net totals rx $urx, tx $utx, drops rx $(un_total 0 rx_drops)" \
		"tx $(un_total 0 tx_drops); front-ends sent $SUM_TX, received $SUM_RX"
	num_check "$1: uvhost-net took every frame of both front-ends" "$urx" -eq "$SUM_TX"
	num_check "$1: uvhost-net gave every frame back" "$utx" -eq "${urx:-x}"
	num_check "$1: no rx drops" "$(un_total 0 rx_drops)" -eq 0
	num_check "$1: no tx drops" "$(un_total 0 tx_drops)" -eq 0
	num_check "$1: frames not received == frames left circulating in each session" \
		$(( ${utx:-0} - SUM_RX )) -eq "$SUM_LEFT"
}

VU="queues=1,queue_size=256,mrg_rxbuf=1,in_order=1"

# ---- server ----
SOCK=$T_WORK/server.sock
if ! un_start "$T_WORK/uvhost-net-server.log" --socket-path "$SOCK" --mode loopback; then
	fail "uvhost-net (server) did not start"
	t_finish
fi
session s1 "net_virtio_user0,path=$SOCK,$VU"
check "server: uvhost-net saw front-end #1 go and is ready for the next" \
	wait_log "$UN_LOG" 'port 0: front-end gone.*ready for the next one' 5 "$UN_PID"
session s2 "net_virtio_user0,path=$SOCK,$VU"
check "server: front-end #2 was served" \
	test "$(count "$UN_LOG" 'port0: front-end connected')" = 2
if un_stop; then
	check "server: uvhost-net exits 0 on SIGTERM (status $UN_RC)" test "$UN_RC" = 0
else
	fail "server: uvhost-net did not exit within 10 s of SIGTERM"
fi
check "server: socket file removed at exit" test ! -e "$SOCK"
totals server

# ---- client ----
SUM_TX=0 SUM_RX=0 SUM_LEFT=0
SOCK=$T_WORK/client.sock
# uvhost-net first: it retries until testpmd listens (testpmd's server
# mode waits in accept() while it starts).
if ! un_start "$T_WORK/uvhost-net-client.log" --client --socket-path "$SOCK" --mode loopback; then
	fail "uvhost-net --client did not start"
	t_finish
fi
session c1 "net_virtio_user0,path=$SOCK,server=1,$VU"
check "client: uvhost-net saw front-end #3 go" \
	wait_log "$UN_LOG" 'port 0: front-end gone.*ready for the next one' 5 "$UN_PID"
if [ -e "$SOCK" ]; then
	say "client: testpmd left its socket file behind; removed"
	rm -f "$SOCK"
fi
session c2 "net_virtio_user0,path=$SOCK,server=1,$VU"
check "client: uvhost-net connected again, to front-end #4" \
	test "$(count "$UN_LOG" 'port0: front-end connected')" = 2
# now it is retrying against nobody: SIGTERM must still stop it promptly
sleep 0.3
if un_stop; then
	check "client: uvhost-net exits 0 on SIGTERM while reconnecting (status $UN_RC)" \
		test "$UN_RC" = 0
else
	fail "client: uvhost-net did not exit within 10 s of SIGTERM"
fi
totals client
for f in "$T_WORK"/uvhost-net-*.log; do
	check "$(basename "$f" .log): no error lines" \
		hasnt "$f" '(AddressSanitizer|runtime error)'
done

t_finish
