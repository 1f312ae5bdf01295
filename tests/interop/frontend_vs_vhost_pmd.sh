# SPDX-License-Identifier: MIT
# (a) uvhost's front-end (uvhost-demo --connect) against DPDK testpmd's
# vhost PMD (net_vhost0, the vhost library as back-end, socket server):
# features, protocol features, a memfd memory table of two regions, two
# split vrings with kick/call eventfds, DRIVER_OK; testpmd must call the
# device ready and report the link up, then see a clean teardown.
. "$(dirname "$0")/lib.sh"

need_testpmd
t_setup
SOCK=$T_WORK/vhost.sock
DEMO_LOG=$T_WORK/demo.log

if ! tp_start --vdev "net_vhost0,iface=$SOCK,queues=1"; then
	fail "testpmd (vhost PMD) did not reach its prompt"
	t_finish
fi
pass "testpmd is up with net_vhost0 listening on $SOCK"

demo_start "$DEMO_LOG" --connect "$SOCK" --hold 20 --timeout 5000
if wait_log "$DEMO_LOG" 'holding the device up' 15 "$DEMO_PID"; then
	pass "uvhost front-end set the device up"
else
	fail "uvhost front-end did not set the device up"
fi

check "testpmd: virtio is now ready for processing" \
	wait_log "$TP_LOG" 'virtio is now ready for processing' 5 "$TP_PID"
link=$(tp_port_info)
say "testpmd while connected: $link"
check "testpmd: port 0 link up while uvhost is connected" \
	test "$link" = "Link status: up"

# SIGTERM ends the hold early: the front-end stops the rings and leaves.
kill -TERM "$DEMO_PID" 2>/dev/null
if wait_exit "$DEMO_PID" 10; then
	DEMO_PID=""
	check "uvhost-demo --connect exits 0 (status $WAIT_RC)" test "$WAIT_RC" = 0
else
	fail "uvhost-demo --connect did not exit after SIGTERM"
fi
check "testpmd: vhost peer closed after teardown" \
	wait_log "$TP_LOG" 'vhost peer closed' 5 "$TP_PID"
link=$(tp_port_info)
say "testpmd after disconnect: $link"
check "testpmd: port 0 link down after disconnect" test "$link" = "Link status: down"

# What the front-end says it did.
check "uvhost: VERSION_1 negotiated" has "$DEMO_LOG" '^frontend: negotiated features .* VERSION_1'
check "uvhost: PROTOCOL_FEATURES negotiated" \
	has "$DEMO_LOG" '^frontend: negotiated features .* PROTOCOL_FEATURES'
check "uvhost: REPLY_ACK and STATUS negotiated" \
	has "$DEMO_LOG" '^frontend: negotiated protocol features .*REPLY_ACK.* STATUS'
check "uvhost: memory table of 2 memfd regions sent" \
	has "$DEMO_LOG" '^frontend: memory: (table of 2 regions sent|2 regions added)'
check "uvhost: vring 0 set up" has "$DEMO_LOG" '^frontend: vring 0: split, num 256'
check "uvhost: vring 1 set up" has "$DEMO_LOG" '^frontend: vring 1: split, num 256'
check "uvhost: DRIVER_OK sent" has "$DEMO_LOG" '^frontend: status .*DRIVER_OK'
check "uvhost: both vrings stopped with GET_VRING_BASE" \
	test "$(count "$DEMO_LOG" '^frontend: vring [01] stopped')" = 2
check "uvhost: no error lines" hasnt "$DEMO_LOG" '(: error|refused)'

# What testpmd's vhost library saw.
check "testpmd: features negotiated (VERSION_1 bit 32 set)" \
	has "$TP_LOG" 'negotiated Virtio features: 0x1[0-9a-f]{8}$'
check "testpmd: protocol features negotiated" \
	has "$TP_LOG" 'negotiated Vhost-user protocol features: 0x'
check "testpmd: two memory regions mapped" \
	test "$(count "$TP_LOG" 'guest memory region size: 0x100000')" = 2
check "testpmd: region 1 honours mmap_offset 0x10000" has "$TP_LOG" 'mmap off  : 0x10000'
for i in 0 1; do
	check "testpmd: vring $i call eventfd" has "$TP_LOG" "vring call idx:$i file:"
	check "testpmd: vring $i kick eventfd" has "$TP_LOG" "vring kick idx:$i file:"
	check "testpmd: vring $i enabled" has "$TP_LOG" "set queue enable: 1 to qp idx: $i"
	check "testpmd: vring $i stopped" has "$TP_LOG" "vring base idx:$i file:"
done
check "testpmd: vring addresses translated" \
	test "$(count "$TP_LOG" 'mapped address used:')" -ge 2
check "testpmd: DRIVER_OK seen" has "$TP_LOG" '-DRIVER_OK: 1'
check "testpmd: no message failed" hasnt "$TP_LOG" '(processing .* failed|handling failed|failed to)'

t_finish
