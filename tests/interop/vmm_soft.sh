# SPDX-License-Identifier: MIT
# The soft backend (backends/soft.c: the virtio-net device of devices/net/net.h
# in the VMM's own process, on a uvhost engine thread) driven by uvhost-vmm,
# the tiny VMM of tools/uvhost-vmm.c: "soft:net" is a loopback device, so
# every frame sent on TX ring 1 must come back on RX ring 0 intact and in
# order, and GET_VRING_BASE must match what was processed. Split ring, then
# packed ring, then split with mergeable RX buffers.
# Environment: UVHOST_VMM (set by meson), VMM_FRAMES (default 5000).
. "$(dirname "$0")/lib.sh"

T_NAME=vmm-soft
FRAMES=${VMM_FRAMES:-5000}
[ -n "${UVHOST_VMM:-}" ] && [ -x "$UVHOST_VMM" ] ||
	{ say "uvhost-vmm not found (UVHOST_VMM='${UVHOST_VMM:-}')"; exit 1; }
t_setup

run() { # label args...
	local label=$1 log rc
	shift
	log=$T_WORK/vmm-$label.out
	"$UVHOST_VMM" --backend soft:net --frames "$FRAMES" "$@" > "$log" 2>&1
	rc=$?
	sed "s/^/  $label| /" "$log"
	if [ $rc = 0 ] && has "$log" "^uvhost-vmm\\[soft/[a-z]+\\]: PASS: $FRAMES/$FRAMES frames back"; then
		pass "$label: $(sed -n 's/.*]: PASS: //p' "$log")"
	else
		fail "$label: uvhost-vmm exit $rc: $(grep -m1 ']: FAIL' "$log" | sed 's/.*]: //')"
	fi
	check "$label: both vring bases as expected" test "$(grep -c 'base .*: ok$' "$log")" = 2
	check "$label: device id 1 (net)" has "$log" 'device_id: 1 '
	check "$label: no sanitizer report" hasnt "$log" '(AddressSanitizer|runtime error|LeakSanitizer)'
	LOG=$log
}

run split --ring split
check "split: EVENT_IDX acked" has "$LOG" 'features_acked: .*EVENT_IDX'
run packed --ring packed
check "packed: RING_PACKED acked" has "$LOG" 'features_acked: .*RING_PACKED'
run split-mrg --ring split --mrg-rxbuf
check "split-mrg: MRG_RXBUF acked" has "$LOG" 'features_acked: .*MRG_RXBUF'
# a backend spec that names nothing must fail cleanly, not crash
"$UVHOST_VMM" --backend nonsense:x --frames 1 > "$T_WORK/bad.out" 2>&1
rc=$?
check "an unknown backend type fails with exit 1 (got $rc)" test "$rc" = 1
check "an unknown backend type is reported" has "$T_WORK/bad.out" 'FAIL: uvh_vhost_open'

t_finish
