#!/bin/bash
# SPDX-License-Identifier: MIT
#
# Soak: uvhost-net (the build's binary: ASan + UBSan in CI) with three
# ports under traffic from uvhost's front-end and control-plane churn
# (tests/soak/soak_driver.c: queues disabled and enabled, regions added and
# removed, rings stopped and restarted, LOG_ALL on and off, device state
# saved, reconnects; engine mode switches on a fourth, in-process port).
# Prints what was done, then checks nothing leaked or crashed: uvhost-net's
# fd count back to its idle value, its RSS stable under load and back near
# idle, both processes exiting cleanly with no sanitizer report.
#
#   tests/soak/soak.sh [SECONDS] [BUILD_DIR]     (default 600 s, ./build)
#
# Exit 0 PASS, 1 FAIL.
set -u

SECONDS_RUN=${1:-600}
HERE=$(cd "$(dirname "$0")" && pwd)
BUILD=${2:-$HERE/../../build}
NET=$BUILD/tools/uvhost-net
DRIVER=$BUILD/tests/soak/uvhost-soak-driver
RSS_SLACK_KB=${SOAK_RSS_SLACK_KB:-32768}

fail() { echo "FAIL: soak: $*"; cleanup; exit 1; }

for b in "$NET" "$DRIVER"; do
	[ -x "$b" ] || { echo "FAIL: soak: $b not built"; exit 1; }
done

TMP=$(mktemp -d /tmp/uvh-soak.XXXXXX)
NET_PID=
DRV_PID=
cleanup() {
	[ -n "$DRV_PID" ] && kill "$DRV_PID" 2>/dev/null && wait "$DRV_PID" 2>/dev/null
	[ -n "$NET_PID" ] && kill "$NET_PID" 2>/dev/null && wait "$NET_PID" 2>/dev/null
	DRV_PID=
	NET_PID=
	rm -rf "$TMP"
}
trap 'cleanup; exit 1' INT TERM

fds_of() { ls "/proc/$1/fd" 2>/dev/null | wc -l; }
rss_of() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }

if nm -D "$NET" 2>/dev/null | grep -q __asan_init || ldd "$NET" 2>/dev/null | grep -q libasan; then
	SAN="ASan"
else
	SAN="no ASan (leak checks by fd count and RSS only)"
fi

# Sanitizer reports go to files: any file is a failure. A small quarantine
# keeps RSS meaningful under ASan.
export ASAN_OPTIONS="log_path=$TMP/asan:detect_leaks=1:quarantine_size_mb=4:abort_on_error=0"
export UBSAN_OPTIONS="log_path=$TMP/ubsan:print_stacktrace=1:halt_on_error=1"

"$NET" --socket-path "$TMP/p0" --socket-path "$TMP/p1" --socket-path "$TMP/p2" \
	--queues 2 --mode loopback --engine-mode adaptive >"$TMP/net.log" 2>&1 &
NET_PID=$!
for _ in $(seq 100); do
	[ -S "$TMP/p0" ] && [ -S "$TMP/p1" ] && [ -S "$TMP/p2" ] && break
	sleep 0.1
done
[ -S "$TMP/p2" ] || { cat "$TMP/net.log"; fail "uvhost-net did not start"; }
sleep 0.3
FD0=$(fds_of "$NET_PID")
RSS0=$(rss_of "$NET_PID")
echo "soak: uvhost-net pid $NET_PID ($SAN), 3 ports, ${SECONDS_RUN} s; idle: $FD0 fds, RSS $RSS0 kB"

"$DRIVER" --seconds "$SECONDS_RUN" --inproc "$TMP/p0" "$TMP/p1" "$TMP/p2" >"$TMP/driver.log" 2>&1 &
DRV_PID=$!

# RSS under load: early (a quarter in) and late (nine tenths in)
sleep "$(awk -v s="$SECONDS_RUN" 'BEGIN { print s / 4 }')"
RSS_EARLY=$(rss_of "$NET_PID")
FD_BUSY=$(fds_of "$NET_PID")
sleep "$(awk -v s="$SECONDS_RUN" 'BEGIN { print s * 0.65 }')"
RSS_LATE=$(rss_of "$NET_PID")
MAX_RSS=$RSS_LATE
wait "$DRV_PID"
DRV_RC=$?
DRV_PID=
cat "$TMP/driver.log"
kill -0 "$NET_PID" 2>/dev/null || fail "uvhost-net died: $(tail -5 "$TMP/net.log")"

# idle again: every connection closed, every mapping and fd gone
sleep 1
FD1=$(fds_of "$NET_PID")
RSS1=$(rss_of "$NET_PID")
kill -TERM "$NET_PID"
wait "$NET_PID"
NET_RC=$?
NET_PID=

echo "soak: uvhost-net fds idle $FD0 -> $FD1 (busy $FD_BUSY); RSS idle $RSS0 -> $RSS1 kB," \
     "under load $RSS_EARLY -> $RSS_LATE kB; exit codes: uvhost-net $NET_RC, driver $DRV_RC"
grep -E "error|ERROR|broken|leak" "$TMP/net.log" | grep -v "port busy\|busy" | head -5

ok=1
[ "$DRV_RC" -eq 0 ] || { echo "FAIL: soak: the driver saw errors (exit $DRV_RC)"; ok=0; }
[ "$NET_RC" -eq 0 ] ||
	{ echo "FAIL: soak: uvhost-net exited with $NET_RC"; tail -20 "$TMP/net.log"; ok=0; }
[ "$FD1" -eq "$FD0" ] || { echo "FAIL: soak: uvhost-net fds $FD0 -> $FD1"; ok=0; }
[ $((RSS_LATE - RSS_EARLY)) -le "$RSS_SLACK_KB" ] ||
	{ echo "FAIL: soak: RSS grew under load by $((RSS_LATE - RSS_EARLY)) kB"; ok=0; }
[ $((RSS1 - RSS0)) -le "$RSS_SLACK_KB" ] ||
	{ echo "FAIL: soak: idle RSS grew by $((RSS1 - RSS0)) kB"; ok=0; }
if ls "$TMP"/asan* "$TMP"/ubsan* >/dev/null 2>&1; then
	echo "FAIL: soak: sanitizer reports:"
	head -40 "$TMP"/asan* "$TMP"/ubsan* 2>/dev/null
	ok=0
fi
: "$MAX_RSS"
cleanup
if [ "$ok" -eq 1 ]; then
	echo "PASS: soak ${SECONDS_RUN} s: no crash, no leak ($SAN)"
	exit 0
fi
exit 1
