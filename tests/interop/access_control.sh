# SPDX-License-Identifier: MIT
# uvhost-net's access control, checked with real processes and uids:
#   --socket-mode / --socket-owner   the socket file's mode and owner (stat),
#                                    and the kernel enforcing them on connect
#   --allow-uid                      a peer of another uid is closed at once
#                                    with a logged reason (SO_PEERCRED), the
#                                    port keeps serving; listed uids are served
#   one front-end per port           a second connection while one is served
#                                    is closed at once ("port busy"); the first
#                                    session passes frames before and after
# The second uid is nobody (65534) through setpriv; needs root.
. "$(dirname "$0")/net_lib.sh"

T_NAME=access-control
[ -n "${UVHOST_NET:-}" ] && [ -x "$UVHOST_NET" ] ||
	{ say "uvhost-net not found (UVHOST_NET='${UVHOST_NET:-}')"; exit 1; }
[ -n "${HOSTILE_PEER:-}" ] && [ -x "$HOSTILE_PEER" ] ||
	{ say "interop-hostile-peer not found"; exit 1; }
[ "$(id -u)" = 0 ] || skip "needs root (a second uid, chown of the socket)"
NOBODY=65534
command -v setpriv > /dev/null ||
	skip "setpriv (util-linux) is needed to run a peer as uid $NOBODY"
as_nobody() { setpriv --reuid=$NOBODY --regid=$NOBODY --clear-groups "$@"; }
net_setup
chmod 0755 "$T_WORK"	# nobody must reach the sockets

# peer NAME [as_nobody] SOCKET CASE [N]: a peer, its PASS/FAIL lines shown.
peer() {
	local name=$1 out=$T_WORK/peer-$1.out rc
	shift
	"$@" > "$out" 2>&1
	rc=$?
	sed -nE "s#^hostile-peer: (PASS|FAIL): #$T_NAME: \\1: $name: #p" "$out"
	return "$rc"
}

nfds() { ls "/proc/$UN_PID/fd" 2>/dev/null | wc -l; }
fds_back() { # BASE
	local i
	for i in $(seq 30); do
		[ "$(nfds)" = "$1" ] && return 0
		sleep 0.1
	done
	return 1
}

# ---- socket mode and owner --------------------------------------------------
S=$T_WORK/default.sock
if un_start "$T_WORK/un-default.log" --socket-path "$S"; then
	check "default: socket file is 600 root:root ($(stat -c '%a %u:%g' "$S"))" \
		test "$(stat -c '%a %u:%g' "$S")" = "600 0:0"
	# expected to fail: its FAIL lines are not ours
	as_nobody "$HOSTILE_PEER" "$S" good > "$T_WORK/peer-default-nobody.out" 2>&1
	check "default: uid $NOBODY cannot connect (the kernel says EACCES)" \
		grep -q 'FAIL: .*(Permission denied)' "$T_WORK/peer-default-nobody.out"
	peer default-root "$HOSTILE_PEER" "$S" good ||
		fail "default: root's front-end failed"
	un_stop || fail "default: uvhost-net did not stop"
else
	fail "uvhost-net (default) did not start"
fi
# The group by name, the owner by number; the mode lets the group in only.
S=$T_WORK/owned.sock
if un_start "$T_WORK/un-owned.log" --socket-path "$S" --socket-mode 0660 \
		--socket-owner "$NOBODY:nogroup"; then
	check "owned: socket file is 660 $NOBODY:$NOBODY ($(stat -c '%a %u:%g' "$S"))" \
		test "$(stat -c '%a %u:%g' "$S")" = "660 $NOBODY:$NOBODY"
	peer owned-nobody as_nobody "$HOSTILE_PEER" "$S" good ||
		fail "owned: the socket's owner ($NOBODY) could not use it"
	un_stop || fail "owned: uvhost-net did not stop"
	check "owned: the socket file is removed at exit" test ! -e "$S"
else
	fail "uvhost-net (--socket-mode/--socket-owner) did not start"
fi
"$UVHOST_NET" --socket-path "$T_WORK/x.sock" --socket-mode 0999 > "$T_WORK/bad-mode.log" 2>&1
check "an invalid --socket-mode is refused" has "$T_WORK/bad-mode.log" 'invalid --socket-mode'
"$UVHOST_NET" --socket-path "$T_WORK/x.sock" --allow-uid no-such-user-here > "$T_WORK/bad-uid.log" 2>&1
check "an unknown --allow-uid user is refused" has "$T_WORK/bad-uid.log" "unknown user 'no-such-user-here'"

# ---- the uid allow-list --------------------------------------------------------
S=$T_WORK/allow.sock
if un_start "$T_WORK/un-allow.log" --socket-path "$S" --socket-mode 0666 --allow-uid 0; then
	peer allow-warm-up "$HOSTILE_PEER" "$S" good || fail "allow: root's front-end failed"
	sleep 0.2
	base=$(nfds)
	peer allow-nobody as_nobody "$HOSTILE_PEER" "$S" refused ||
		fail "allow: uid $NOBODY was not turned away"
	check "allow: the refusal is logged with the peer's uid" wait_log "$UN_LOG" \
		"refused a connection \\(pid [0-9]+, uid $NOBODY\\): uid not in the allow-list" 3
	check "allow: the refused peer's fd is closed ($(nfds) fds, baseline $base)" fds_back "$base"
	check "allow: uid $NOBODY's session never reached the device" \
		test "$(count "$UN_LOG" 'port0: front-end connected')" = 1
	peer allow-root "$HOSTILE_PEER" "$S" good ||
		fail "allow: root's front-end failed after the refusal"
	check "allow: the port kept listening and served root again" \
		test "$(count "$UN_LOG" 'port0: front-end connected')" = 2
	un_stop || fail "allow: uvhost-net did not stop"
else
	fail "uvhost-net --allow-uid 0 did not start"
fi
S=$T_WORK/allow2.sock
if un_start "$T_WORK/un-allow2.log" --socket-path "$S" --socket-mode 0666 \
		--allow-uid root,$NOBODY; then
	peer allow2-nobody as_nobody "$HOSTILE_PEER" "$S" good ||
		fail "allow2: listed uid $NOBODY was not served"
	peer allow2-root "$HOSTILE_PEER" "$S" good || fail "allow2: listed root was not served"
	check "allow2: nobody refused" hasnt "$UN_LOG" 'refused a connection'
	un_stop || fail "allow2: uvhost-net did not stop"
else
	fail "uvhost-net --allow-uid root,$NOBODY did not start"
fi

# ---- one front-end per port ---------------------------------------------------
S=$T_WORK/busy.sock
if un_start "$T_WORK/un-busy.log" --socket-path "$S"; then
	"$HOSTILE_PEER" "$S" good 3 > "$T_WORK/peer-holder.out" 2>&1 &
	holder=$!
	if wait_log "$T_WORK/peer-holder.out" 'holding the session' 10 "$holder"; then
		base=$(nfds)
		peer busy-second "$HOSTILE_PEER" "$S" refused ||
			fail "busy: a second front-end was not turned away at once"
		check "busy: the refusal is logged as port busy" wait_log "$UN_LOG" \
			'refused a connection \(pid [0-9]+, uid 0\): port busy' 3
		check "busy: the second connection's fd is closed" fds_back "$base"
	else
		fail "busy: the first front-end did not get going"
	fi
	wait "$holder"
	rc=$?
	sed -nE "s#^hostile-peer: (PASS|FAIL): #$T_NAME: \\1: busy-first: #p" \
		"$T_WORK/peer-holder.out"
	check "busy: the first session passed frames before and after, undisturbed" \
		test "$rc" = 0
	check "busy: only one session reached the device" \
		test "$(count "$UN_LOG" 'port0: front-end connected')" = 1
	peer busy-next "$HOSTILE_PEER" "$S" good || fail "busy: the next front-end failed"
	un_stop || fail "busy: uvhost-net did not stop"
else
	fail "uvhost-net (busy) did not start"
fi

for f in "$T_WORK"/un-*.log; do
	check "$(basename "$f" .log): no sanitizer report" \
		hasnt "$f" '(AddressSanitizer|LeakSanitizer|runtime error)'
done
t_finish
