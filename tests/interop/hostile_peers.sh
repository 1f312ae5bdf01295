# SPDX-License-Identifier: MIT
# Hostile front-ends against the real daemon: uvhost-net (loopback, two
# ports) takes one protocol-breaking session after another on port 0
# (interop-hostile-peer CASE). After each: the daemon logged the reason,
# is alive, is back to its baseline fd count, holds no guest memory, and a
# well-behaved front-end still passes frames on the same port and on the
# other one. A half-sent message must not hold a port (closed after 5 s)
# nor the other port meanwhile. No DPDK needed.
. "$(dirname "$0")/net_lib.sh"

T_NAME=hostile-peers
[ -n "${UVHOST_NET:-}" ] && [ -x "$UVHOST_NET" ] ||
	{ say "uvhost-net not found (UVHOST_NET='${UVHOST_NET:-}')"; exit 1; }
[ -n "${HOSTILE_PEER:-}" ] && [ -x "$HOSTILE_PEER" ] ||
	{ say "interop-hostile-peer not found"; exit 1; }
net_setup
P0=$T_WORK/p0.sock
P1=$T_WORK/p1.sock
LOG=$T_WORK/uvhost-net.log

if ! un_start "$LOG" --socket-path "$P0" --socket-path "$P1" --mode loopback; then
	fail "uvhost-net did not start"
	t_finish
fi

nfds() { ls "/proc/$UN_PID/fd" 2>/dev/null | wc -l; }
nmaps() { grep -c 'memfd:hostile' "/proc/$UN_PID/maps" 2>/dev/null; }

# peer NAME SOCKET CASE [N]: run a peer, its PASS/FAIL lines prefixed.
peer() {
	local name=$1 out=$T_WORK/peer-${1//\//_}.out rc
	shift
	"$HOSTILE_PEER" "$@" > "$out" 2>&1
	rc=$?
	sed -nE "s#^hostile-peer: (PASS|FAIL): #$T_NAME: \\1: $name: #p" "$out"
	grep -q '^hostile-peer: FAIL' "$out" && T_FAILED=1
	[ "$rc" = 0 ] || { fail "$name: the peer exited with status $rc"; cat "$out"; }
	return "$rc"
}

# back_to_baseline: fds and memory mappings as before the case (the port
# thread finishes tearing the session down asynchronously: wait a bit).
back_to_baseline() {
	local i
	for i in $(seq 30); do
		[ "$(nfds)" = "$BASE_FDS" ] && [ "$(nmaps)" = 0 ] && return 0
		sleep 0.1
	done
	return 1
}

# after NAME LOG-REGEX: the checks every case ends with.
after() {
	local name=$1 re=$2
	check "$name: the daemon logged the reason (/$re/)" wait_log "$LOG" "$re" 3 "$UN_PID"
	check "$name: the daemon is alive" kill -0 "$UN_PID"
	check "$name: fds back to the baseline $BASE_FDS (now $(nfds)), no guest memory mapped" \
		back_to_baseline
	peer "$name/good-same-port" "$P0" good > /dev/null ||
		fail "$name: a well-behaved front-end on the same port failed"
	peer "$name/good-other-port" "$P1" good > /dev/null ||
		fail "$name: a well-behaved front-end on the other port failed"
	pass "$name: well-behaved front-ends still served on both ports"
	back_to_baseline || fail "$name: fds not back to the baseline after the good sessions"
}

# The baseline, after one good session on each port (lazy allocations done).
peer warm-up-0 "$P0" good || fail "a well-behaved front-end failed before any hostile one"
peer warm-up-1 "$P1" good || fail "a well-behaved front-end failed on port 1"
sleep 0.3
BASE_FDS=$(nfds)
say "baseline: $BASE_FDS fds, $(nmaps) guest mappings"

peer trunc-header "$P0" trunc-header
after trunc-header 'message: peer closed mid-message \(6 bytes in\)'
peer trunc-payload "$P0" trunc-payload
after trunc-payload 'SET_FEATURES: peer closed mid-message \(15 bytes in\)'
peer oversize "$P0" oversize
after oversize 'payload size 4294967295 over the 4096 limit'
check "oversize: 4097 named too" has "$LOG" 'SET_CONFIG: payload size 4097 over the 4096 limit'
peer unknown "$P0" unknown
after unknown 'unsupported protocol version 2'
check "unknown: request 9999 named" has "$LOG" 'unknown request 9999'
check "unknown: request 0 named" has "$LOG" 'unknown request 0'
check "unknown: REPLY flag named" has "$LOG" 'REPLY flag set on a request'
peer bad-size "$P0" bad-size
after bad-size 'SET_VRING_NUM: payload size 12 is invalid'
check "bad-size: SET_FEATURES named" has "$LOG" 'SET_FEATURES: payload size 4 is invalid'
peer fds "$P0" fds
after fds 'fds not on the first header byte'
check "fds: fd on GET_FEATURES named" has "$LOG" 'GET_FEATURES: 1 fds attached, 0 to 0 expected'
check "fds: 9 fds named" has "$LOG" '9 fds over the 8 limit'
check "fds: 40 fds named" has "$LOG" 'control data truncated'
peer mem "$P0" mem
after mem 'region fd is not a file of at least|past the end of the file'
check "mem: overlap named" has "$LOG" 'SET_MEM_TABLE: regions at GPA 0x0 and 0x80000 overlap'
check "mem: zero size named" has "$LOG" 'has size 0'
check "mem: wrap named" has "$LOG" 'wraps around'
check "mem: non-file fds named" has "$LOG" 'is not a regular file'
peer vring "$P0" vring
after vring 'vring 0 (addresses are not in guest memory|cannot be set up)'
check "vring: index named" has "$LOG" 'SET_VRING_NUM: vring 200 is beyond the 3 queues'
check "vring: size named" has "$LOG" 'vring 0 size 65536 is invalid'
check "vring: kick before memory named" has "$LOG" 'vring 0 started without a memory table'
peer no-owner "$P0" no-owner
after no-owner 'port0: front-end connected'
peer ack-flood "$P0" ack-flood 20000
after ack-flood 'port 0: front-end gone'
peer churn "$P0" churn 1000
after churn 'port 0: front-end gone'
check "churn: 1000 connections served one after the other" \
	test "$(count "$LOG" 'port0: front-end connected')" -gt 1000
peer add-mem-flood "$P0" add-mem-flood 10000
after add-mem-flood 'ADD_MEM_REG: all 509 memory slots are in use'
peer broken-loop "$P0" broken-loop
after broken-loop 'port0: vring 1 broken'
peer broken-addr "$P0" broken-addr
after broken-addr 'port0: vring 1 broken'
check "broken rings: two logged" test "$(count "$LOG" 'port0: vring 1 broken')" = 2

# A stall: half a message on port 0; port 1 must be served meanwhile,
# and port 0 again once the daemon gave up on the stalled peer.
"$HOSTILE_PEER" "$P0" stall 10 > "$T_WORK/peer-stall.out" 2>&1 &
STALL_PID=$!
wait_log "$T_WORK/peer-stall.out" 'stalling' 5 "$STALL_PID"
peer stall/good-other-port-meanwhile "$P1" good > /dev/null &&
	pass "stall: port 1 served while port 0 waits for the rest of a message"
wait "$STALL_PID"
rc=$?
sed -nE "s#^hostile-peer: (PASS|FAIL): #$T_NAME: \\1: stall: #p" "$T_WORK/peer-stall.out"
check "stall: the stalled peer was closed by the daemon (status $rc)" test "$rc" = 0
after stall 'stalled 15 bytes into a SET_FEATURES for 5000 ms'

check "no sanitizer report" hasnt "$LOG" '(AddressSanitizer|LeakSanitizer|runtime error)'
if un_stop; then
	check "uvhost-net exits 0 on SIGTERM (status $UN_RC)" test "$UN_RC" = 0
else
	fail "uvhost-net did not exit within 10 s of SIGTERM"
fi
check "no sanitizer report at exit" hasnt "$LOG" '(AddressSanitizer|LeakSanitizer|runtime error)'
t_finish
