#!/bin/bash
# SPDX-License-Identifier: MIT
# Run each fuzz target (libFuzzer) for a given time, then fold what it
# found back into the corpus, minimized (-merge=1).
#
#   tests/fuzz/run.sh [SECONDS] [TARGET...]     (default: 60 s, every target)
#
# Environment:
#   BUILD=dir     the clang build with the libFuzzer binaries (default
#                 build-fuzz; set up with CC=clang and ASan+UBSan if missing)
#   JOBS=n        targets run at once (default 1; the machines are shared)
#   MERGE=0       leave the corpora alone (default: minimize into them)
#
# Crashes land in tests/fuzz/crashes/TARGET/ (the 'fuzz' meson suite
# replays them: fix the bug before committing one), timeouts in
# tests/fuzz/hangs/TARGET/ (kept, not replayed). Prints one line per
# target (executions, coverage, corpus, new crashes and hangs, libFuzzer's
# exit status) and exits 1 when a target found a crash or a hang, or
# libFuzzer itself failed (any non-zero status), 0 otherwise.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
secs=${1:-60}
[ $# -gt 0 ] && shift
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(fuzz_message fuzz_backend_req fuzz_vq_split fuzz_vq_packed
				      fuzz_frontend_reply fuzz_net_offload)
build=${BUILD:-$top/build-fuzz}
jobs=${JOBS:-1}
merge=${MERGE:-1}

if ! [[ $secs =~ ^[0-9]+$ ]]; then
	echo "usage: $0 [SECONDS] [TARGET...]" >&2
	exit 1
fi
if ! command -v clang >/dev/null; then
	echo "SKIP: clang not found (libFuzzer needs clang)"
	exit 77
fi
if [ ! -f "$build/build.ninja" ]; then
	CC=clang meson setup "$build" "$top" -Db_sanitize=address,undefined -Db_lundef=false \
		>/dev/null || exit 1
fi
ninja -C "$build" "${targets[@]/#/tests/fuzz/}" >/dev/null || exit 1

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
out=$(mktemp -d /tmp/uvh-fuzz.XXXXXX)
trap 'rm -rf "$out"' EXIT

run_one() {
	local t=$1 bin=$build/tests/fuzz/$1
	local work=$out/$t crashes=$here/crashes/$t corpus=$here/corpus/$t hangs=$here/hangs/$t
	local before after hbefore hafter status

	mkdir -p "$work" "$crashes" "$corpus" "$hangs"
	before=$(find "$crashes" -type f | wc -l)
	hbefore=$(find "$hangs" -type f | wc -l)
	"$bin" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -max_len=16384 \
		-print_final_stats=1 -artifact_prefix="$crashes/" \
		"$work" "$corpus" >"$out/$t.log" 2>&1
	status=$?
	# Hangs are kept apart: replaying them would block the suite.
	find "$crashes" -maxdepth 1 -type f \( -name 'timeout-*' -o -name 'slow-unit-*' \) \
		-exec mv -t "$hangs/" {} +
	after=$(find "$crashes" -type f | wc -l)
	hafter=$(find "$hangs" -type f | wc -l)
	if [ "$merge" = 1 ]; then
		mkdir -p "$out/$t.min"
		"$bin" -merge=1 -timeout=10 -max_len=16384 "$out/$t.min" "$corpus" "$work" \
			>>"$out/$t.log" 2>&1 &&
			rm -f "$corpus"/* && cp "$out/$t.min"/* "$corpus"/ 2>/dev/null
	fi
	printf '%s: %s executions, %s, corpus %s files (%s), %d new crash(es), %d new hang(s), status %d\n' \
		"$t" "$(sed -n 's/^stat::number_of_executed_units: *//p' "$out/$t.log" | tail -1)" \
		"$(grep -Eo 'cov: [0-9]+ ft: [0-9]+' "$out/$t.log" | tail -1)" \
		"$(find "$corpus" -type f | wc -l)" "$(du -sh --apparent-size "$corpus" | cut -f1)" \
		$((after - before)) $((hafter - hbefore)) "$status" > "$out/$t.sum"
	if [ "$after" -ne "$before" ] || [ "$hafter" -ne "$hbefore" ] || [ "$status" -ne 0 ]; then
		grep -E 'ERROR|SUMMARY|ALARM|INFO: a leak|deadly signal' "$out/$t.log" | head -5 \
			>> "$out/$t.sum"
		return 1
	fi
	return 0
}

rc=0
pids=()
for t in "${targets[@]}"; do
	if [ ! -x "$build/tests/fuzz/$t" ]; then
		echo "FAIL: $t: no libFuzzer binary in $build"
		rc=1
		continue
	fi
	run_one "$t" &
	pids+=($!)
	if [ ${#pids[@]} -ge "$jobs" ]; then
		wait "${pids[0]}" || rc=1
		pids=("${pids[@]:1}")
	fi
done
for p in "${pids[@]}"; do
	wait "$p" || rc=1
done
for t in "${targets[@]}"; do
	[ -f "$out/$t.sum" ] || continue
	if grep -q ', 0 new crash(es), 0 new hang(s), status 0$' "$out/$t.sum"; then
		echo "PASS: $(cat "$out/$t.sum")"
	else
		echo "FAIL: $(cat "$out/$t.sum")"
	fi
done
exit $rc
