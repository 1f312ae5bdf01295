# SPDX-License-Identifier: MIT
# uvhost-demo --serve refuses what it must (vring addresses outside guest
# memory, misaligned rings, a region past the end of its file, ...), keeps
# the connection usable, serves the next connection, and stops cleanly on
# SIGTERM. No DPDK needed.
. "$(dirname "$0")/lib.sh"

need_demo
[ -n "${BAD_FRONTEND:-}" ] && [ -x "$BAD_FRONTEND" ] ||
	{ say "interop-bad-frontend not found"; exit 1; }
t_setup
SOCK=$T_WORK/vhost.sock
LOG=$T_WORK/demo.log

demo_start "$LOG" --serve "$SOCK"
if ! wait_log "$LOG" '^backend: listening on' 10 "$DEMO_PID"; then
	fail "uvhost-demo --serve did not start listening"
	t_finish
fi
fds_before=$(ls "/proc/$DEMO_PID/fd" | wc -l)
"$BAD_FRONTEND" "$SOCK" > "$T_WORK/bad.log" 2>&1
rc=$?
grep -E '^bad-frontend: (PASS|FAIL)' "$T_WORK/bad.log" | sed "s/^bad-frontend/$T_NAME/"
check "every refusal came back as a NACK on a live connection (status $rc)" test "$rc" = 0
# 14 NACKs: some caught by the request handler's own checks, the rest by
# the demo device (which prints "refused:" with its reason).
check "the back-end logged all 14 refusals" \
	test "$(count "$LOG" '^backend: uvhost error: SET_')" -ge 14
check "the demo device refused the bad vring addresses itself" \
	test "$(count "$LOG" '^backend: refused: vring 0: (addresses|flags)')" = 5
check "the back-end named the bad descriptor table" \
	has "$LOG" 'vring 0: descriptor table lies outside the memory table'
check "the back-end named the short memfd" has "$LOG" 'region fd is not a file of at least'

# A second connection after the first: the good front-end.
"$UVHOST_DEMO" --connect "$SOCK" > "$T_WORK/fe.log" 2>&1
rc=$?
check "a second connection is served (front-end status $rc)" test "$rc" = 0
check "two connections accepted" has "$LOG" '^backend: connection 2 accepted'
wait_log "$LOG" '^backend: connection summary: vrings started: 2 of 2' 5 "$DEMO_PID"
fds_after=$(ls "/proc/$DEMO_PID/fd" | wc -l)
# Guest memory comes as memfds: none of them may stay mapped.
memfd_maps=$(grep -c 'memfd:' "/proc/$DEMO_PID/maps")
check "no fd left open after both connections ($fds_before -> $fds_after)" \
	test "$fds_before" = "$fds_after"
check "no guest memory left mapped ($memfd_maps memfd mappings)" \
	test "$memfd_maps" = 0

kill -TERM "$DEMO_PID"
if wait_exit "$DEMO_PID" 10; then
	DEMO_PID=""
	check "SIGTERM stops the back-end with status 0 (status $WAIT_RC)" test "$WAIT_RC" = 0
else
	fail "the back-end did not stop on SIGTERM"
fi
check "final summary printed" has "$LOG" '^backend: summary: 2 connections served'
check "the socket is removed" test ! -e "$SOCK"

t_finish
