# SPDX-License-Identifier: MIT
# uvhost's front-end data path against a back-end that is not uvhost's: uvhost-vmm's user
# backend (backends/user.c: the vhost-user front-end, the driver-side rings) sends frames of
# 60..1514 bytes to DPDK testpmd's vhost PMD, which sends every frame back out of the port it
# came in on (io forwarding, loop topology); each must come back intact and in order, and
# testpmd must have counted them each way. Split, then packed, each on a fresh testpmd.
# Environment: UVHOST_VMM, TESTPMD (set by meson), VMM_FRAMES (default 2000).
. "$(dirname "$0")/lib.sh"

need_testpmd
[ -n "${UVHOST_VMM:-}" ] && [ -x "$UVHOST_VMM" ] ||
	{ say "uvhost-vmm not found (UVHOST_VMM='${UVHOST_VMM:-}')"; exit 1; }
t_setup
FRAMES=${VMM_FRAMES:-2000}
TP_APP_ARGS="--forward-mode=io --port-topology=loop"

# tp_stat NAME: the last "NAME: N" of "show port stats 0" (RX-packets, TX-packets)
tp_stat() {
	local before i
	before=$(grep -c "$1:" "$TP_LOG")
	tp_cmd "show port stats 0"
	for i in $(seq 50); do
		[ "$(grep -c "$1:" "$TP_LOG")" -gt "$before" ] && break
		sleep 0.1
	done
	grep -o "$1: *[0-9]*" "$TP_LOG" | tail -n 1 | grep -o '[0-9]*$'
}

for ring in split packed; do
	SOCK=$T_WORK/vhost-$ring.sock
	if ! tp_start --vdev "net_vhost0,iface=$SOCK,queues=1"; then
		fail "$ring: testpmd (vhost PMD) did not reach its prompt"
		continue
	fi
	tp_cmd "start"
	wait_log "$TP_LOG" 'io packet forwarding' 10 "$TP_PID" ||
		fail "$ring: testpmd did not start io forwarding"
	log=$T_WORK/vmm-$ring.out
	"$UVHOST_VMM" --backend "user:$SOCK" --ring "$ring" --frames "$FRAMES" > "$log" 2>&1
	rc=$?
	sed "s/^/  vmm-$ring| /" "$log"
	if [ $rc = 0 ] && has "$log" "^uvhost-vmm\\[user/$ring\\]: PASS: $FRAMES/$FRAMES frames back"; then
		pass "$ring: $(sed -n 's/.*]: PASS: //p' "$log") through DPDK's vhost library"
	else
		fail "$ring: uvhost-vmm exit $rc: $(grep -m1 ']: FAIL' "$log" | sed 's/.*]: //')"
	fi
	[ "$ring" = packed ] &&
		check "packed: RING_PACKED acked" has "$log" "features_acked: .*RING_PACKED"
	check "$ring: no sanitizer report" hasnt "$log" '(AddressSanitizer|runtime error|LeakSanitizer)'
	# what DPDK's vhost library saw of uvhost's front-end
	check "$ring: testpmd: the device became ready" has "$TP_LOG" 'virtio is now ready for processing'
	check "$ring: testpmd: VERSION_1 negotiated" \
		has "$TP_LOG" 'negotiated Virtio features: 0x[0-9a-f]*[13579bdf][0-9a-f]{8}$'
	for i in 0 1; do
		check "$ring: testpmd: vring $i enabled" has "$TP_LOG" "set queue enable: 1 to qp idx: $i"
		check "$ring: testpmd: vring $i stopped" has "$TP_LOG" "vring base idx:$i file:"
	done
	check "$ring: testpmd: no message failed" \
		hasnt "$TP_LOG" '(processing .* failed|handling failed|failed to)'
	rx=$(tp_stat RX-packets)
	tx=$(tp_stat TX-packets)
	check "$ring: testpmd received $FRAMES (got ${rx:-none})" test "${rx:-0}" = "$FRAMES"
	check "$ring: testpmd sent $FRAMES back (got ${tx:-none})" test "${tx:-0}" = "$FRAMES"
	tp_stop
done
t_finish
