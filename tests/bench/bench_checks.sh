#!/bin/bash
# SPDX-License-Identifier: MIT
# uvhost-bench's checks (tests/bench/meson.build):
#   quick  `uvhost-bench --quick` (tx, rx and loop with every frame checked) must pass:
#          the README's main job works and its loopback comes back byte for byte
#   flip   against a back-end that flips one byte in the middle of every frame, the loop
#          check must fail: every frame counted bad, exit status 1
#   sweep  --load-sweep (two points, two modes) and --latency run and report what they
#          promise: a peak, a ping-pong and each load point per mode, every one with
#          frames, CPU and round-trip percentiles in order; the paced points near their
#          offered rate; the SVG written
#   uplink bench/compare-uplink --quick (xdp, tap + bridge, DPDK af_xdp + vhost over a veth
#          pair whose far end reflects): every arm has a tx and a loop figure (flagged
#          ones, on a crowded machine, marked), and the kernel's XDP mode is said
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
sweep)
	"$UVHOST_BENCH" --uvhost-net "$UVHOST_NET" --load-sweep --load-points 10,40 \
		--modes poll,adaptive --seconds 0.3 --warmup 0.15 --retries 0 --no-c2c --json \
		--svg "$work/sweep.svg" >"$work/sweep.json" 2>"$work/err"
	rc=$?
	cat "$work/sweep.json"
	[ "$rc" -eq 0 ] || { cat "$work/err"; fail "uvhost-bench --load-sweep exited $rc"; }
	"$UVHOST_BENCH" --uvhost-net "$UVHOST_NET" --latency --rings split --modes event \
		--seconds 0.3 --warmup 0.15 --retries 0 --no-c2c --json >"$work/lat.json" 2>"$work/err"
	rc=$?
	cat "$work/lat.json"
	[ "$rc" -eq 0 ] || { cat "$work/err"; fail "uvhost-bench --latency exited $rc"; }
	python3 - "$work/sweep.json" "$work/lat.json" "$work/sweep.svg" <<'PY' || fail "see above"
import json, sys
import xml.dom.minidom
sw = json.load(open(sys.argv[1]))
bad, flagged = [], []
pts = sw["points"]
kinds = [(p["engine"], p["kind"]) for p in pts]
want = [("poll", "peak")] + [(m, k) for m in ("poll", "adaptive") for k in ("ping-pong", "10%", "40%")]
if kinds != want:
    bad.append("points %s, want %s" % (kinds, want))
for p in pts:
    tag = "%s %s" % (p["engine"], p["kind"])
    if not p["ok"] or p["error"]:
        bad.append(tag + ": failed: " + p["error"])
        continue
    if p["dev_cpu"] is None or p["dev_cpu"] <= 0:
        bad.append(tag + ": no back-end CPU")
    r = [p["rtt_p50_us"], p["rtt_p99_us"], p["rtt_p999_us"]]
    # a flagged point has no figures, by the bench's rules (a starved
    # generator on a 2-core CI machine is the machine, not the device)
    if p["contended"] or p["far"]:
        if r != [None] * 3:
            bad.append(tag + ": flagged, yet round trips %s" % r)
        flagged.append(tag)
    elif None in r or not (0 < r[0] <= r[1] <= r[2]):
        bad.append(tag + ": round trips %s" % r)
    if p["offered_mpps"] and p["mpps"] is not None and p["contended"] is False:
        if p["mpps"] < 0.8 * p["offered_mpps"]:
            bad.append(tag + ": %.3f Mpps of %.3f offered" % (p["mpps"], p["offered_mpps"]))
lat = json.load(open(sys.argv[2]))["results"]
if len(lat) != 1 or lat[0]["inflight"] != 1 or lat[0]["frames"] <= 0 or lat[0]["bad"] or lat[0]["lost"]:
    bad.append("latency: %s" % lat)
xml.dom.minidom.parse(sys.argv[3])
for f in flagged:
    print("bench-sweep: %s flagged (contended or far): no figures to check" % f)
for b in bad:
    print("bench-sweep:", b)
sys.exit(1 if bad else 0)
PY
	say "PASS: the sweep's peak, ping-pongs and load points, and a ping-pong's round trips"
	;;
tso)
	"$UVHOST_BENCH" --uvhost-net "$UVHOST_NET" --tso --seconds 0.3 --warmup 0.15 --no-c2c \
		--json >"$work/tso.json" 2>"$work/err"
	rc=$?
	cat "$work/tso.json"
	[ "$rc" -eq 0 ] || { cat "$work/err"; fail "uvhost-bench --tso exited $rc"; }
	python3 - "$work/tso.json" <<'PY' || fail "see above"
import json, sys
d = json.load(open(sys.argv[1]))
cases = [(c["case"], c["ok"], c["payload_gbps"], c["frames_mpps"], c["error"]) for c in d["tso"]]
want = ["mtu-frames", "tso-passed", "tso-segmented", "tso-partial"]
bad = []
if [c[0] for c in cases] != want:
    bad.append("cases %s, want %s" % ([c[0] for c in cases], want))
for name, ok, gbps, mpps, err in cases:
    if not ok or err or not gbps or not mpps:
        bad.append("%s: ok %s, %s Gbit/s, %s Mpps, %s" % (name, ok, gbps, mpps, err))
f = {c[0]: c for c in cases}
# whole 64 KiB frames arrive as such; segments as ~45 per frame: frames per payload byte
if not bad and f["tso-passed"][3] / f["tso-passed"][2] > f["tso-segmented"][3] / f["tso-segmented"][2] / 20:
    bad.append("the GUEST_TSO4 receiver got segments, not whole frames")
for b in bad:
    print("bench-tso:", b)
sys.exit(1 if bad else 0)
PY
	say "PASS: a TCP stream through the switch, offloads on and off, every frame's headers checked"
	;;
uplink)
	arms=xdp,tap
	command -v dpdk-testpmd >/dev/null && arms=xdp,tap,dpdk
	"$COMPARE_UPLINK" --quick --sizes 64 --arms "$arms" --uvhost-net "$UVHOST_NET" \
		--uvhost-bench "$UVHOST_BENCH" --reflect "$XDP_REFLECT" >"$work/out" 2>&1
	rc=$?
	cat "$work/out"
	[ "$rc" -eq 0 ] || fail "compare-uplink exited $rc"
	grep -q "the kernel gave uvhost-net's xdp port: .*XDP" "$work/out" ||
		fail "no XDP mode line"
	python3 - "$work/out" "$arms" <<'PY' || fail "see above"
import re, sys
lines = open(sys.argv[1]).read().splitlines()
arms = sys.argv[2].split(",")
bad = []
for what in ("tx: on the wire", "loop: back, checked"):
    row = [l for l in lines if l.strip().startswith("64 " + what)]
    if not row:
        bad.append("no row '%s'" % what)
        continue
    figs = re.findall(r"(\d+\.\d+) \(\*?n=\d+\)", row[0])
    if len(figs) != len(arms) or any(float(f) <= 0 for f in figs):
        bad.append("'%s': %s (want a figure per arm: %s)" % (what, figs, arms))
for b in bad:
    print("bench-uplink:", b)
sys.exit(1 if bad else 0)
PY
	say "PASS: $arms over the veth pair, every arm measured, the XDP mode said"
	;;
*)
	fail "unknown check '$1'"
	;;
esac
