# SPDX-License-Identifier: MIT
# (b) DPDK testpmd's virtio-user front-end (net_virtio_user0, socket
# client) against uvhost's back-end (uvhost-demo --serve --once).
# Usage: backend_vs_virtio_user.sh split|packed
. "$(dirname "$0")/lib.sh"

RING=${1:-split}
T_NAME="backend-vs-virtio-user-$RING"
need_testpmd
t_setup
SOCK=$T_WORK/vhost.sock
DEMO_LOG=$T_WORK/demo.log
VU="net_virtio_user0,path=$SOCK,queues=1,queue_size=256,mrg_rxbuf=0,in_order=0"
[ "$RING" = packed ] && VU="$VU,packed_vq=1"

demo_start "$DEMO_LOG" --serve "$SOCK" --once
if ! wait_log "$DEMO_LOG" '^backend: listening on' 10 "$DEMO_PID"; then
	fail "uvhost-demo --serve did not start listening"
	t_finish
fi
pass "uvhost back-end listening on $SOCK"

if tp_start --vdev "$VU"; then
	pass "testpmd (virtio-user, $RING ring) reached its prompt"
else
	fail "testpmd (virtio-user, $RING ring) did not reach its prompt"
fi
check "testpmd: the virtio-user port was probed" \
	hasnt "$TP_LOG" '(No probed ethernet devices|virtio_user_dev_init fails|Failed to)'
check "testpmd: port 0 configured" has "$TP_LOG" '^Port 0: [0-9A-F:]{17}$'
link=$(tp_port_info)
say "testpmd: $link"
check "testpmd: port 0 link up" test "$link" = "Link status: up"

check "uvhost: vring 0 started (kick fd received)" \
	wait_log "$DEMO_LOG" '^backend: ready: vring 0 started' 5 "$DEMO_PID"
check "uvhost: vring 1 started (kick fd received)" \
	has "$DEMO_LOG" '^backend: ready: vring 1 started'
check "uvhost: rings are $RING" has "$DEMO_LOG" "^backend: ready: vring 0 started \\($RING ring"
check "uvhost: DRIVER_OK received" has "$DEMO_LOG" '^backend:   status .*DRIVER_OK'

# Stopping testpmd stops the rings (GET_VRING_BASE) and closes the socket;
# with --once the back-end then exits.
tp_stop
if wait_exit "$DEMO_PID" 10; then
	DEMO_PID=""
	check "uvhost-demo --serve --once exits 0 (status $WAIT_RC)" test "$WAIT_RC" = 0
else
	fail "uvhost-demo --serve --once did not exit after testpmd quit"
fi

check "uvhost: VERSION_1 acked" has "$DEMO_LOG" '^backend:   features acked .* VERSION_1'
check "uvhost: PROTOCOL_FEATURES acked" has "$DEMO_LOG" '^backend:   features acked .* PROTOCOL_FEATURES'
if [ "$RING" = packed ]; then
	check "uvhost: RING_PACKED acked" has "$DEMO_LOG" '^backend:   features acked .* RING_PACKED'
else
	check "uvhost: RING_PACKED not acked" hasnt "$DEMO_LOG" '^backend:   features acked .* RING_PACKED'
fi
check "uvhost: protocol features acked (REPLY_ACK, STATUS)" \
	has "$DEMO_LOG" '^backend:   protocol features acked .*REPLY_ACK.* STATUS'
check "uvhost: memory table mapped" has "$DEMO_LOG" '^backend:   region 0: .* mapped at'
check "uvhost: vring 0 addresses inside guest memory" \
	has "$DEMO_LOG" '^backend:   vring 0: desc .* inside guest memory'
check "uvhost: vring 1 addresses inside guest memory" \
	has "$DEMO_LOG" '^backend:   vring 1: desc .* inside guest memory'
check "uvhost: both vrings stopped by GET_VRING_BASE" \
	test "$(count "$DEMO_LOG" '^backend:   stopped: vring [01] ')" = 2
check "uvhost: summary says 2 of 2 vrings started" \
	has "$DEMO_LOG" '^backend: connection summary: vrings started: 2 of 2'
check "uvhost: no request refused" has "$DEMO_LOG" '^backend: connection summary: [0-9]+ requests, 0 refused'
check "uvhost: front-end closed the connection cleanly" \
	has "$DEMO_LOG" '^backend: front-end closed the connection'
check "uvhost: no error lines" hasnt "$DEMO_LOG" '(: error|refused:)'

t_finish
