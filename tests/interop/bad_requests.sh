# SPDX-License-Identifier: MIT
# uvhost-net refuses what it must (vring addresses outside guest memory, misaligned rings,
# a region past the end of its file, ...: interop-bad-frontend), keeps the connection usable,
# serves the next front-end, leaves no fd open and no guest memory mapped, and stops cleanly
# on SIGTERM. No DPDK needed.
. "$(dirname "$0")/net_lib.sh"

T_NAME=bad-requests
[ -n "${BAD_FRONTEND:-}" ] && [ -x "$BAD_FRONTEND" ] ||
	{ say "interop-bad-frontend not found"; exit 1; }
[ -n "${UVHOST_VMM:-}" ] && [ -x "$UVHOST_VMM" ] ||
	{ say "uvhost-vmm not found (UVHOST_VMM='${UVHOST_VMM:-}')"; exit 1; }
net_setup
SOCK=$T_WORK/net.sock
if ! un_start "$T_WORK/uvhost-net.log" --socket-path "$SOCK" --mode loopback; then
	fail "uvhost-net did not start"
	t_finish
fi
fds_before=$(ls "/proc/$UN_PID/fd" | wc -l)
"$BAD_FRONTEND" "$SOCK" > "$T_WORK/bad.log" 2>&1
rc=$?
grep -E '^bad-frontend: (PASS|FAIL)' "$T_WORK/bad.log" | sed "s/^bad-frontend/$T_NAME/"
check "every refusal came back as a NACK on a live connection (status $rc)" test "$rc" = 0
nacks=$(grep -c '^bad-frontend: PASS: .*refused' "$T_WORK/bad.log")
check "uvhost-net logged a reason for each of the $nacks refusals" \
	test "$(count "$UN_LOG" 'uvhost error: ')" -ge "$nacks"
check "uvhost-net named the bad descriptor table" has "$UN_LOG" 'vring 0 .*(not in guest memory|descriptor table)'
check "uvhost-net named the short memfd" has "$UN_LOG" 'past the end of the file'
check "the first front-end's session ended" \
	wait_log "$UN_LOG" 'front-end gone.*ready for the next one' 5 "$UN_PID"

# A second connection after the first: a good front-end moving frames.
"$UVHOST_VMM" --backend "user:$SOCK" --frames 200 > "$T_WORK/vmm.log" 2>&1
rc=$?
check "a second front-end is served, its frames looped back (status $rc)" \
	has "$T_WORK/vmm.log" ']: PASS: 200/200 frames back'
wait_log "$UN_LOG" 'front-end gone.*ready for the next one.*' 5 "$UN_PID"
check "two front-ends served" test "$(count "$UN_LOG" 'front-end gone')" = 2
fds_after=$(ls "/proc/$UN_PID/fd" | wc -l)
# Guest memory comes as memfds: none of them may stay mapped.
memfd_maps=$(grep -c 'memfd:' "/proc/$UN_PID/maps")
check "no fd left open after both connections ($fds_before -> $fds_after)" \
	test "$fds_before" = "$fds_after"
check "no guest memory left mapped ($memfd_maps memfd mappings)" test "$memfd_maps" = 0

if un_stop; then
	check "SIGTERM stops uvhost-net with status 0 (status $UN_RC)" test "$UN_RC" = 0
else
	fail "uvhost-net did not stop on SIGTERM"
fi
check "the socket is removed" test ! -e "$SOCK"
check "no sanitizer report" hasnt "$UN_LOG" '(AddressSanitizer|runtime error|LeakSanitizer)'
t_finish
