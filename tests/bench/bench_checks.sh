#!/bin/bash
# SPDX-License-Identifier: MIT
# uvhost-bench's checks (tests/bench/meson.build):
#   quick  `uvhost-bench --quick` (tx, rx and loop with every frame checked) must pass:
#          the README's main job works and its loopback comes back byte for byte
#   flip   against a back-end that flips one byte in the middle of every frame, the loop
#          check must fail: every frame counted bad, exit status 1
set -u
T_NAME=bench-$1
say() { printf '%s: %s\n' "$T_NAME" "$*"; }
fail() { say "FAIL: $*"; exit 1; }
work=$(mktemp -d /tmp/uvh-bench-test.XXXXXX) || exit 1
pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

case "$1" in
quick)
	"$UVHOST_BENCH" --quick --json --uvhost-net "$UVHOST_NET" >"$work/out" 2>"$work/err"
	rc=$?
	cat "$work/out" "$work/err"
	[ "$rc" -eq 0 ] || fail "uvhost-bench --quick exited $rc"
	# every case moved frames, lost none and (loop) got each back byte for byte;
	# a case on far-apart cores has no figure but its frames still count
	python3 - "$work/out" <<'PY' || fail "a case did not pass (above)"
import json, sys
res = {r["dir"]: r for r in json.load(open(sys.argv[1]))["results"]}
bad = []
for d in ("tx", "rx", "loop"):
    r = res.get(d)
    if r is None:
        bad.append(d + ": no result")
    elif not r["ok"] or r["frames"] <= 0 or r["lost"] or r["bad"] or r["error"]:
        bad.append("%s: ok=%s frames=%d lost=%d bad=%d error=%r" %
                   (d, r["ok"], r["frames"], r["lost"], r["bad"], r["error"]))
for b in bad:
    print("bench-quick:", b)
sys.exit(1 if bad else 0)
PY
	say "PASS: tx, rx and loop ran, every looped frame checked"
	;;
flip)
	"$FLIP_BACKEND" "$work/sock" >"$work/backend" 2>&1 &
	pid=$!
	for _ in $(seq 100); do [ -S "$work/sock" ] && break; sleep 0.05; done
	[ -S "$work/sock" ] || fail "the flipping back-end did not listen"
	"$UVHOST_BENCH" --connect "$work/sock" --dirs loop --sizes 64,1518 --rings split \
		--seconds 0.2 --warmup 0.1 --no-c2c >"$work/out" 2>&1
	rc=$?
	cat "$work/out"
	wait "$pid"
	pid=""
	cat "$work/backend"
	[ "$rc" -eq 1 ] || fail "uvhost-bench exited $rc on corrupted frames (1 expected)"
	n=$(grep -c "bad frames" "$work/out")
	[ "$n" -eq 2 ] || fail "$n of 2 cases reported bad frames"
	n=$(grep -Ec "^flip_backend: [1-9][0-9]* frames looped back" "$work/backend")
	[ "$n" -eq 2 ] || fail "the back-end looped frames back in $n of 2 sessions"
	say "PASS: a byte flipped mid-frame is caught, at 64 and 1518 bytes"
	;;
*)
	fail "unknown check '$1'"
	;;
esac
