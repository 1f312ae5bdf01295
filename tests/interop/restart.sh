# SPDX-License-Identifier: MIT
# Restart resubmits what was in flight (issue 6): uvhost-net (loopback) is
# killed with SIGKILL under traffic KILLS times and started again on the
# same socket. Each kill is timed to hit chains in flight: uvhost-net is
# frozen (SIGSTOP) at a random moment and killed only if the inflight area
# marks chains in flight then (else let go and tried again). The front-end
# (restart_peer: uvhost's own, sequence-numbered frames, inflight area from
# GET_INFLIGHT_FD) notices, reconnects by itself and replays the session
# with SET_INFLIGHT_FD; the new process must resubmit exactly what the area
# marked (less what the restart finds completed), and restart_peer's counters prove that no descriptor was lost or
# used twice and no frame lost (one in flight may come back twice: see
# restart_peer.c).
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
	# freeze it at a random moment until it is caught with chains in flight
	marked=0
	for try in $(seq 300); do
		kill -STOP "$UN_PID"
		n0=$(grep -c '^restart_peer: frozen marked=' "$PEER_LOG")
		kill -USR1 "$PEER_PID"
		for _ in $(seq 100); do
			[ "$(grep -c '^restart_peer: frozen marked=' "$PEER_LOG")" -gt "$n0" ] && break
			sleep 0.01
		done
		marked=$(sed -n 's/^restart_peer: frozen marked=//p' "$PEER_LOG" | tail -n 1)
		[ "${marked:-0}" -gt 0 ] && break
		kill -CONT "$UN_PID"
		sleep "0.00$((RANDOM % 9 + 1))"
	done
	say "kill $((k + 1)): caught with $marked chains in flight (try $try)"
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
num_check "chains were in flight at the kills: the inflight path ran" "${marked:-0}" -gt 0
# at most: chains of a batch whose completion was published just before the
# kill are still marked, and the restart commits rather than resubmits them
# (the spec's inflight recovery)
num_check "resubmitted what the area marked in flight, at most" "$resub" -le "${marked:-0}"
num_check "... and something: the resubmission path ran" "$resub" -gt 0
check "every restarted uvhost-net took the inflight area" \
	test "$(cat "$T_WORK"/uvhost-net-[1-9]*.log 2>/dev/null | grep -c 'inflight region refused\|inflight area refused')" = 0
check "no sanitizer report" \
	test "$(cat "$T_WORK"/*.log | grep -c 'ERROR: AddressSanitizer\|runtime error:')" = 0
check "the last uvhost-net stops on SIGTERM" un_stop
check "... with status 0" test "${UN_RC:-x}" = 0
t_finish
