# SPDX-License-Identifier: MIT
# Restart without loss (issue 6): uvhost-net (loopback) is killed with
# SIGKILL under traffic KILLS times and started again on the same socket.
# The front-end (restart_peer: uvhost's own, sequence-numbered frames,
# inflight area from GET_INFLIGHT_FD) notices, reconnects by itself and
# replays the session with SET_INFLIGHT_FD; the new process resubmits what
# the old one had in flight. restart_peer's counters prove that no
# descriptor was lost or used twice (see restart_peer.c).
#   restart.sh split|packed KILLS
. "$(dirname "$0")/net_lib.sh"

RING=${1:-split}
KILLS=${2:-3}
T_NAME=restart-$RING
PEER_PID=""

[ -n "${UVHOST_NET:-}" ] && [ -x "$UVHOST_NET" ] ||
	{ say "uvhost-net not found (UVHOST_NET='${UVHOST_NET:-}')"; exit 1; }
[ -n "${RESTART_PEER:-}" ] && [ -x "$RESTART_PEER" ] ||
	{ say "restart_peer not found (RESTART_PEER='${RESTART_PEER:-}')"; exit 1; }

restart_cleanup() {
	local rc=$?
	stop_pid "$PEER_PID" 2
	(exit "$rc")
	net_cleanup
}
net_setup
trap restart_cleanup EXIT

SOCK=$T_WORK/net.sock
PEER_LOG=$T_WORK/peer.log

# one engine on the second CPU; the peer takes what is left
start_net() {
	un_start "$T_WORK/uvhost-net-$1.log" --socket-path "$SOCK" --mode loopback \
		--cores "$(nth_cpu 1)" -v
}

check "uvhost-net #0 started" start_net 0
"$RESTART_PEER" "$SOCK" "$RING" "$KILLS" > "$PEER_LOG" 2>&1 &
PEER_PID=$!

k=0
while [ "$k" -lt "$KILLS" ]; do
	if ! wait_log "$PEER_LOG" "^restart_peer: ready epoch=$k\$" 20 "$PEER_PID"; then
		fail "traffic flowing before kill $((k + 1))"
		break
	fi
	t0=$(date +%s%N)
	kill -KILL "$UN_PID"
	wait "$UN_PID" 2>/dev/null
	UN_PID=""
	k=$((k + 1))
	if ! start_net "$k"; then
		fail "uvhost-net #$k started after kill $k"
		break
	fi
	say "kill $k: uvhost-net listening again after $(( ($(date +%s%N) - t0) / 1000000 )) ms"
done

if wait_exit "$PEER_PID" 50; then
	PEER_RC=$WAIT_RC
else
	PEER_RC=timeout
fi
PEER_PID=""
grep -E '^restart_peer: (PASS|FAIL|stat)' "$PEER_LOG"
check "restart_peer's checks passed (status $PEER_RC)" test "$PEER_RC" = 0

# what the restarted processes found in flight and handed out again
resub=0
for f in "$T_WORK"/uvhost-net-*.log; do
	n=$(sed -nE 's/.*vring [0-9]+ resubmits ([0-9]+) chains.*/\1/p' "$f" |
		awk '{ s += $1 } END { print s + 0 }')
	resub=$((resub + n))
done
marked=$(sed -nE 's/.* marked_inflight=([0-9]+) .*/\1/p' "$PEER_LOG" | tail -n 1)
say "chains resubmitted by the restarted processes: $resub (marked in flight at the kills: ${marked:-?})"
num_check "resubmitted at most what the area marked in flight" "$resub" -le "${marked:-0}"
check "every restarted uvhost-net took the inflight area" \
	test "$(cat "$T_WORK"/uvhost-net-[1-9]*.log 2>/dev/null | grep -c 'inflight region refused\|inflight area refused')" = 0
check "no sanitizer report" \
	test "$(cat "$T_WORK"/*.log | grep -c 'ERROR: AddressSanitizer\|runtime error:')" = 0
check "the last uvhost-net stops on SIGTERM" un_stop
check "... with status 0" test "${UN_RC:-x}" = 0
t_finish
