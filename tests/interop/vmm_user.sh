# SPDX-License-Identifier: MIT
# The user backend (backends/user.c, the vhost-user front-end behind
# uvh_vhost_ops) driven by uvhost-vmm, the tiny VMM of tools/uvhost-vmm.c,
# against uvhost-net --mode loopback: split ring, then packed ring, one
# after the other on the same uvhost-net. Each uvhost-vmm run sends frames
# of 60..1514 bytes that must all come back intact and in order, with each
# ring's GET_VRING_BASE matching what was processed. Then uvhost-net must
# have counted exactly those frames and bytes each way, logged no error,
# and exit 0 on SIGTERM.
# Environment: UVHOST_NET, UVHOST_VMM (set by meson), VMM_FRAMES (default 2000).
. "$(dirname "$0")/net_lib.sh"

T_NAME=vmm-user
FRAMES=${VMM_FRAMES:-2000}
[ -n "${UVHOST_NET:-}" ] && [ -x "$UVHOST_NET" ] ||
	{ say "uvhost-net not found (UVHOST_NET='${UVHOST_NET:-}')"; exit 1; }
[ -n "${UVHOST_VMM:-}" ] && [ -x "$UVHOST_VMM" ] ||
	{ say "uvhost-vmm not found (UVHOST_VMM='${UVHOST_VMM:-}')"; exit 1; }
net_setup

SOCK=$T_WORK/net.sock
if ! un_start "$T_WORK/uvhost-net.log" --socket-path "$SOCK" --mode loopback -v; then
	fail "uvhost-net did not start"
	t_finish
fi
pass "uvhost-net (loopback) listening on $SOCK"

# the bytes uvhost-vmm sends: frame i is 60 + (i * 97) % 1455 bytes long
BYTES=$(awk -v n="$FRAMES" 'BEGIN { for (i = 0; i < n; i++) b += 60 + (i * 97) % 1455; print b }')
RUNS=0
for ring in split packed; do
	log=$T_WORK/vmm-$ring.out
	"$UVHOST_VMM" --backend "user:$SOCK" --ring "$ring" --frames "$FRAMES" > "$log" 2>&1
	rc=$?
	sed "s/^/  vmm-$ring| /" "$log"
	if [ $rc = 0 ] && has "$log" "^uvhost-vmm\\[user/$ring\\]: PASS: $FRAMES/$FRAMES frames back"; then
		pass "$ring: $(sed -n 's/.*]: PASS: //p' "$log")"
	else
		fail "$ring: uvhost-vmm exit $rc: $(grep -m1 ']: FAIL' "$log" | sed 's/.*]: //')"
	fi
	check "$ring: features acked include VERSION_1" has "$log" "features_acked: 0x[0-9a-f]+ .*VERSION_1"
	[ "$ring" = packed ] &&
		check "packed: RING_PACKED acked" has "$log" "features_acked: .*RING_PACKED"
	check "$ring: both vring bases as expected" test "$(grep -c 'base .*: ok$' "$log")" = 2
	check "$ring: no sanitizer report" hasnt "$log" '(AddressSanitizer|runtime error|LeakSanitizer)'
	RUNS=$((RUNS + 1))
	check "uvhost-net: front-end $RUNS gone, ready for the next one" \
		wait_log "$UN_LOG" 'front-end gone.*ready for the next one' 5 "$UN_PID"
	check "uvhost-net: front-ends counted so far" \
		test "$(grep -c 'front-end gone.*ready for the next one' "$UN_LOG")" = "$RUNS"
done

if un_stop; then
	check "uvhost-net exits 0 on SIGTERM (status $UN_RC)" test "$UN_RC" = 0
else
	fail "uvhost-net did not exit within 10 s of SIGTERM"
fi
say "uvhost-net totals: rx $(un_total 0 rx) pkts $(un_total 0 rx_bytes) bytes, tx $(un_total 0 tx) pkts $(un_total 0 tx_bytes) bytes"
num_check "uvhost-net: took every frame sent (rx)" "$(un_total 0 rx)" -eq $((2 * FRAMES))
num_check "uvhost-net: gave every frame back (tx)" "$(un_total 0 tx)" -eq $((2 * FRAMES))
num_check "uvhost-net: rx bytes are the frames' bytes" "$(un_total 0 rx_bytes)" -eq $((2 * BYTES))
num_check "uvhost-net: tx bytes are the frames' bytes" "$(un_total 0 tx_bytes)" -eq $((2 * BYTES))
num_check "uvhost-net: no rx drops" "$(un_total 0 rx_drops)" -eq 0
num_check "uvhost-net: no tx drops" "$(un_total 0 tx_drops)" -eq 0
check "uvhost-net: no error lines" hasnt "$UN_LOG" '(uvhost error|ERROR|AddressSanitizer|runtime error)'

t_finish
