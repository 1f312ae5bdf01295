# SPDX-License-Identifier: MIT
# Helpers of the interop tests: start and always stop DPDK testpmd (fed
# through a fifo), wait for log lines, report checks.
#
# Environment (set by tests/interop/meson.build):
#   TESTPMD      path of dpdk-testpmd, empty when it was not found
# Only processes started here are stopped, by pid.

set -u
trap '' PIPE	# writing to a dead testpmd's fifo must not kill the script

T_NAME=${T_NAME:-$(basename "$0" .sh)}
T_FAILED=0
T_WORK=""
TP_PID=""
TP_PREFIX=""

say() { printf '%s: %s\n' "$T_NAME" "$*"; }
pass() { printf '%s: PASS: %s\n' "$T_NAME" "$*"; }
fail() { printf '%s: FAIL: %s\n' "$T_NAME" "$*"; T_FAILED=1; }
skip() { printf '%s: SKIP: %s\n' "$T_NAME" "$*"; exit 77; }

# check DESCRIPTION COMMAND...: PASS or FAIL on the command's status.
check() {
	local what=$1; shift
	if "$@"; then pass "$what"; else fail "$what"; fi
}

need_testpmd() {
	[ -n "${TESTPMD:-}" ] && [ -x "$TESTPMD" ] ||
		skip "dpdk-testpmd not found (Debian: apt-get install dpdk-dev)"
}

# The first CPU we may run on: testpmd's two lcores share it.
first_cpu() {
	local list
	list=$(awk '/^Cpus_allowed_list/ { print $2 }' /proc/self/status)
	list=${list%%,*}
	echo "${list%%-*}"
}

t_setup() {
	T_WORK=$(mktemp -d /tmp/uvh-interop.XXXXXX) || { say "mktemp failed"; exit 1; }
	TP_PREFIX="uvh-interop-$$"
	trap t_cleanup EXIT
	trap 'exit 130' INT TERM
}

stop_pid() { # $1 pid, $2 seconds to wait after TERM
	local pid=$1 i
	[ -n "$pid" ] || return 0
	kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null; return 0; }
	kill -TERM "$pid" 2>/dev/null
	for i in $(seq $(( ${2:-3} * 10 ))); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	kill -KILL "$pid" 2>/dev/null
	wait "$pid" 2>/dev/null
}

tp_stop() {
	local i
	[ -n "$TP_PID" ] || return 0
	if kill -0 "$TP_PID" 2>/dev/null; then
		{ echo stop; echo quit; } >&7 2>/dev/null
		for i in $(seq 50); do
			kill -0 "$TP_PID" 2>/dev/null || break
			sleep 0.1
		done
	fi
	stop_pid "$TP_PID" 2
	TP_PID=""
	exec 7>&- 2>/dev/null
}

t_cleanup() {
	local rc=$?
	tp_stop
	[ -n "$TP_PREFIX" ] && rm -rf "/var/run/dpdk/$TP_PREFIX"
	if [ -n "$T_WORK" ] && [ -d "$T_WORK" ]; then
		if [ "$rc" != 0 ] && [ "$rc" != 77 ]; then
			for f in "$T_WORK"/*.log; do
				[ -f "$f" ] || continue
				say "---- last lines of $(basename "$f") ----"
				grep -vE '^(update_memory_region|VHOST_CONFIG.*processing)' "$f" | tail -n 60
			done
		fi
		if [ "${INTEROP_KEEP:-0}" = 1 ]; then say "work folder kept: $T_WORK"; else rm -rf "$T_WORK"; fi
	fi
	exit "$rc"
}

# wait_log FILE REGEX SECONDS [PID that must stay alive]
wait_log() {
	local i
	for i in $(seq $(( $3 * 10 ))); do
		grep -qE -- "$2" "$1" 2>/dev/null && return 0
		if [ -n "${4:-}" ] && ! kill -0 "$4" 2>/dev/null; then
			grep -qE -- "$2" "$1" 2>/dev/null && return 0
			return 1
		fi
		sleep 0.1
	done
	return 1
}

# wait_exit PID SECONDS: 0 when it exited within the time (status in WAIT_RC).
wait_exit() {
	local i
	WAIT_RC=""
	for i in $(seq $(( $2 * 10 ))); do
		if ! kill -0 "$1" 2>/dev/null; then
			wait "$1"
			WAIT_RC=$?
			return 0
		fi
		sleep 0.1
	done
	return 1
}

# tp_start VDEV-ARGS...: interactive testpmd on one CPU without hugepages,
# stdin from a fifo (fd 7), output to $T_WORK/testpmd.log; TP_APP_ARGS are
# added to testpmd's own options. Waits for the prompt; returns 1 when it
# does not come.
tp_start() {
	local cpu fifo=$T_WORK/testpmd.fifo
	cpu=$(first_cpu)
	TP_LOG=$T_WORK/testpmd.log
	rm -f "$fifo"
	mkfifo "$fifo" || return 1
	# Line-buffered, so that command output is in the log when it is read.
	local lb=""
	command -v stdbuf > /dev/null && lb="stdbuf -oL -eL"
	$lb "$TESTPMD" --lcores "0@$cpu,1@$cpu" --no-pci --no-huge -m 256 --no-telemetry \
		--file-prefix "$TP_PREFIX" --log-level=lib.vhost.config:debug \
		"$@" -- -i --nb-cores=1 --total-num-mbufs=2048 --disable-link-check ${TP_APP_ARGS:-} \
		< "$fifo" > "$TP_LOG" 2>&1 &
	TP_PID=$!
	exec 7> "$fifo"
	wait_log "$TP_LOG" 'testpmd> ' 30 "$TP_PID"
}

tp_cmd() { echo "$*" >&7; }

# tp_port_info: run "show port info 0" and wait for its link line.
tp_port_info() {
	local before
	before=$(grep -c 'Link status:' "$TP_LOG")
	tp_cmd "show port info 0"
	local i
	for i in $(seq 50); do
		[ "$(grep -c 'Link status:' "$TP_LOG")" -gt "$before" ] && break
		sleep 0.1
	done
	grep 'Link status:' "$TP_LOG" | tail -n 1
}


# has FILE REGEX: the file has a line matching (extended regex).
has() { grep -qE -- "$2" "$1"; }
hasnt() { ! grep -qE -- "$2" "$1"; }
count() { grep -cE -- "$2" "$1"; }

t_finish() {
	if [ "$T_FAILED" = 0 ]; then
		say "all checks passed"
		exit 0
	fi
	say "FAILED"
	exit 1
}
