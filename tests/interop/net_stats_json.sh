# SPDX-License-Identifier: MIT
# uvhost-net --stats-json: per-port statistics as JSON lines on stdout.
# uvhost-net --mode loopback --stats-json --stats-interval 1 serves two
# uvhost-vmm runs (split then packed ring, frames of 60..1514 bytes that
# must come back intact), then SIGTERM. python3 then reads stdout and
# requires: every line a JSON object (nothing else on stdout), the fields
# an operator graphs, one final line at the end, the interval lines'
# counters summing to the final totals and to exactly the frames and bytes
# sent, frames moved in some interval, no drop. Last, --stats-json alone
# prints a line a second.
# Environment: UVHOST_NET, UVHOST_VMM (set by meson), VMM_FRAMES (default 2000).
. "$(dirname "$0")/net_lib.sh"

T_NAME=net-stats-json
FRAMES=${VMM_FRAMES:-2000}
[ -n "${UVHOST_NET:-}" ] && [ -x "$UVHOST_NET" ] ||
	{ say "uvhost-net not found (UVHOST_NET='${UVHOST_NET:-}')"; exit 1; }
[ -n "${UVHOST_VMM:-}" ] && [ -x "$UVHOST_VMM" ] ||
	{ say "uvhost-vmm not found (UVHOST_VMM='${UVHOST_VMM:-}')"; exit 1; }
command -v python3 > /dev/null || skip "python3 not found"
net_setup

SOCK=$T_WORK/net.sock
OUT=$T_WORK/stats.jsonl

# start_json ARGS...: uvhost-net with stdout (the JSON lines) in $OUT and
# stderr in $UN_LOG; waits for its port to be announced (on stderr).
start_json() {
	UN_LOG=$T_WORK/uvhost-net.log
	"$UVHOST_NET" "$@" > "$OUT" 2> "$UN_LOG" &
	UN_PID=$!
	UN_RC=""
	wait_log "$UN_LOG" '^uvhost-net: port 0: listening on' 10 "$UN_PID" &&
		kill -0 "$UN_PID" 2>/dev/null
}

lines() { wc -l < "$OUT"; }

if ! start_json --socket-path "$SOCK" --mode loopback --stats-json --stats-interval 1; then
	fail "uvhost-net did not start"
	t_finish
fi
pass "uvhost-net (loopback, --stats-json) listening on $SOCK"
check "the start-up lines are on stderr" has "$UN_LOG" '^uvhost-net: mode loopback, 1 port'

# the bytes uvhost-vmm sends: frame i is 60 + (i * 97) % 1455 bytes long
BYTES=$(awk -v n="$FRAMES" 'BEGIN { for (i = 0; i < n; i++) b += 60 + (i * 97) % 1455; print b }')
for ring in split packed; do
	log=$T_WORK/vmm-$ring.out
	"$UVHOST_VMM" --backend "user:$SOCK" --ring "$ring" --frames "$FRAMES" > "$log" 2>&1
	rc=$?
	check "$ring: uvhost-vmm got its $FRAMES frames back (exit $rc)" \
		has "$log" "^uvhost-vmm\\[user/$ring\\]: PASS: $FRAMES/$FRAMES frames back"
	sleep 1.1	# the runs land in different intervals
done
# two more intervals with no traffic: every frame is in an interval line
n=$(lines)
for i in $(seq 50); do
	[ "$(lines)" -ge $((n + 2)) ] && break
	sleep 0.1
done
num_check "interval lines keep coming after the traffic" "$(lines)" -ge $((n + 2))

if un_stop; then
	check "uvhost-net exits 0 on SIGTERM (status $UN_RC)" test "$UN_RC" = 0
else
	fail "uvhost-net did not exit within 10 s of SIGTERM"
fi
check "socket removed" test ! -e "$SOCK"
check "uvhost-net: no error lines" hasnt "$UN_LOG" '(uvhost error|ERROR|AddressSanitizer|runtime error)'
sed 's/^/  stdout| /' "$OUT" | cut -c 1-200

python3 - "$OUT" $((2 * FRAMES)) $((2 * BYTES)) <<'EOF'
import json, sys

path, want_pkts, want_bytes = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
failed = False

def check(what, ok):
    global failed
    print(("net-stats-json: PASS: " if ok else "net-stats-json: FAIL: ") + what)
    failed |= not ok

objs = []
with open(path) as f:
    for no, line in enumerate(f, 1):
        try:
            o = json.loads(line)
        except ValueError as e:
            check(f"stdout line {no} is JSON ({e}): {line[:80]!r}", False)
            continue
        if not isinstance(o, dict):
            check(f"stdout line {no} is a JSON object", False)
            continue
        objs.append(o)
check(f"every stdout line is a JSON object ({len(objs)} lines)", not failed and len(objs) >= 4)
if not objs:
    sys.exit(1)

counters = ["rx_packets", "rx_bytes", "tx_packets", "tx_bytes", "rx_drops", "tx_drops"]
types = {"ts": (int, float), "port": int, "name": str, "mode": str, "engine_mode": str,
         "interval_s": (int, float), "drops_by_reason": dict, "cpu_pct": (int, float),
         "final": bool}
types.update({c: int for c in counters})
bad = [(i, k) for i, o in enumerate(objs) for k, t in types.items()
       if k not in o or not isinstance(o[k], t) or (t is int and isinstance(o[k], bool))]
check(f"every line has the fields with their types (missing or mistyped: {bad[:5]})", not bad)
if bad:
    sys.exit(1)

final = [o for o in objs if o["final"]]
intervals = [o for o in objs if not o["final"]]
check(f"one final line, the last ({len(final)} final lines)", len(final) == 1 and objs[-1]["final"])
check("port 0 'port0', mode loopback, engine mode adaptive",
      all(o["port"] == 0 and o["name"] == "port0" and o["mode"] == "loopback"
          and o["engine_mode"] == "adaptive" for o in objs))
check("interval_s about 1 s on the interval lines",
      all(0.9 <= o["interval_s"] <= 2.5 for o in intervals))
check("ts does not go back", all(a["ts"] <= b["ts"] for a, b in zip(objs, objs[1:])))
check("counters are never negative", all(o[c] >= 0 for o in objs for c in counters))
check("frames moved in some interval", any(o["rx_packets"] > 0 and o["tx_packets"] > 0
                                           for o in intervals))
f = final[0]
for c in counters:
    total = sum(o[c] for o in intervals)
    check(f"{c}: the intervals sum to the final total ({total} vs {f[c]})", total == f[c])
check(f"rx/tx packets: every frame sent, each way ({f['rx_packets']}, {f['tx_packets']}"
      f" vs {want_pkts})", f["rx_packets"] == want_pkts and f["tx_packets"] == want_pkts)
check(f"rx/tx bytes: the frames' bytes ({f['rx_bytes']}, {f['tx_bytes']} vs {want_bytes})",
      f["rx_bytes"] == want_bytes and f["tx_bytes"] == want_bytes)
check("no drops", all(o["rx_drops"] == 0 and o["tx_drops"] == 0 for o in objs))
reasons = objs[0]["drops_by_reason"]
check(f"drops_by_reason names every reason ({len(reasons)}), all 0",
      "malformed" in reasons and "no-rx-buffer" in reasons
      and all(o["drops_by_reason"].keys() == reasons.keys() for o in objs)
      and all(v == 0 for o in objs for v in o["drops_by_reason"].values()))
check("cpu_pct between 0 and 100 (one engine)",
      all(0 <= o["cpu_pct"] <= 100.5 for o in objs))
sys.exit(1 if failed else 0)
EOF
[ $? = 0 ] || T_FAILED=1

# --stats-json alone: the interval defaults to 1 s
if ! start_json --socket-path "$SOCK" --mode sink --stats-json; then
	fail "uvhost-net --stats-json (no --stats-interval) did not start"
	t_finish
fi
sleep 2.6
un_stop
check "--stats-json alone: exit 0 (status $UN_RC)" test "$UN_RC" = 0
python3 - "$OUT" <<'EOF' || T_FAILED=1
import json, sys

objs = [json.loads(line) for line in open(sys.argv[1])]
iv = [round(o["interval_s"], 3) for o in objs if not o["final"]]
ok = 1 <= len(iv) <= 3 and 0.95 <= iv[0] <= 1.9 and objs[-1]["final"] \
    and objs[0]["mode"] == "sink"
print(f"net-stats-json: {'PASS' if ok else 'FAIL'}: --stats-json alone: a line a second"
      f" (intervals {iv} in 2.6 s, then the final line)")
sys.exit(0 if ok else 1)
EOF

t_finish
