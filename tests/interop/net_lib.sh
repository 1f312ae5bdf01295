# SPDX-License-Identifier: MIT
# Helpers of the uvhost-net interop tests (net_*.sh), on top of lib.sh:
# uvhost-net in the background with its final counters, any number of
# interactive testpmd instances (each fed through its own fifo, with its
# own file prefix and log), command output captured per command, and a
# clean-up that also removes network namespaces and taps made here.
#
# Environment (set by tests/interop/meson.build):
#   UVHOST_NET   path of the uvhost-net executable
#   TESTPMD      path of dpdk-testpmd, empty when it was not found
# Only processes started here are stopped, by pid.

. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

UN_PID=""
UN_LOG=""
UN_RC=""
NET_NS=""		# network namespace to delete on exit
NET_TAP=""		# tap to delete on exit (when it is still in our namespace)
declare -A TPN_PID=() TPN_FD=() TPN_LOG=()
TPN_OUT=""		# output of the last tpn_do

need_net() {
	[ -n "${UVHOST_NET:-}" ] && [ -x "$UVHOST_NET" ] ||
		{ say "uvhost-net not found (UVHOST_NET='${UVHOST_NET:-}')"; exit 1; }
	[ -n "${TESTPMD:-}" ] && [ -x "$TESTPMD" ] ||
		skip "dpdk-testpmd not found (Debian: apt-get install dpdk-dev)"
}

net_setup() {
	t_setup
	trap net_cleanup EXIT
}

net_cleanup() {
	local rc=$? n
	for n in "${!TPN_PID[@]}"; do
		tpn_stop "$n"
	done
	un_kill
	if [ -n "$NET_NS" ]; then
		ip netns del "$NET_NS" 2>/dev/null
		NET_NS=""
	fi
	if [ -n "$NET_TAP" ] && ip link show "$NET_TAP" > /dev/null 2>&1; then
		ip link del "$NET_TAP" 2>/dev/null
	fi
	rm -rf "/var/run/dpdk/$TP_PREFIX"-*
	(exit "$rc")
	t_cleanup	# prints the logs on failure, removes $T_WORK, exits with rc
}

# The CPUs we may run on, one per line.
cpu_list() {
	local list part a b
	list=$(awk '/^Cpus_allowed_list/ { print $2 }' /proc/self/status)
	for part in ${list//,/ }; do
		a=${part%-*}
		b=${part#*-}
		seq "$a" "$b"
	done
}

# nth_cpu N: the Nth allowed CPU (0-based), wrapping around.
nth_cpu() {
	local cpus
	mapfile -t cpus < <(cpu_list)
	echo "${cpus[$(( $1 % ${#cpus[@]} ))]}"
}

# ---- uvhost-net -----------------------------------------------------------

# un_start LOG ARGS...: uvhost-net in the background; waits until every
# port announced itself. 1 when it died or did not start.
un_start() {
	UN_LOG=$1; shift
	"$UVHOST_NET" "$@" > "$UN_LOG" 2>&1 &
	UN_PID=$!
	UN_RC=""
	wait_log "$UN_LOG" '^uvhost-net: port [0-9]+: (listening on|connecting to|fd)' 10 "$UN_PID" &&
		kill -0 "$UN_PID" 2>/dev/null
}

# un_stop: SIGTERM, then the exit status in UN_RC. 1 when it did not exit
# within 10 s (it is then killed).
un_stop() {
	[ -n "$UN_PID" ] || return 1
	kill -TERM "$UN_PID" 2>/dev/null
	if wait_exit "$UN_PID" 10; then
		UN_RC=$WAIT_RC
		UN_PID=""
		return 0
	fi
	un_kill
	return 1
}

un_kill() {
	stop_pid "$UN_PID" 3
	UN_PID=""
}

# un_total PORT FIELD: a final counter of port PORT, printed at exit as
#   uvhost-net: port N NAME: total rx A pkts B bytes, tx C pkts D bytes,
#   drops rx E tx F[ (REASON N, ...)], ctrl G
# FIELD: rx rx_bytes tx tx_bytes rx_drops tx_drops ctrl. Empty if absent.
un_total() {
	sed -nE "s/^uvhost-net: port $1 [^:]*: total rx ([0-9]+) pkts ([0-9]+) bytes, tx ([0-9]+) pkts ([0-9]+) bytes, drops rx ([0-9]+) tx ([0-9]+)( \\([^)]*\\))?, ctrl ([0-9]+)\$/\\1 \\2 \\3 \\4 \\5 \\6 \\8/p" \
		"$UN_LOG" | tail -n 1 | {
		read -r rx rxb tx txb rxd txd ctrl || exit 0
		case $2 in
		rx) echo "$rx" ;; rx_bytes) echo "$rxb" ;;
		tx) echo "$tx" ;; tx_bytes) echo "$txb" ;;
		rx_drops) echo "$rxd" ;; tx_drops) echo "$txd" ;;
		ctrl) echo "$ctrl" ;;
		esac
	}
}

# ---- testpmd instances ----------------------------------------------------

# tpn_start NAME CPU VDEV [TESTPMD-APP-ARGS...]: an interactive testpmd
# with both lcores on CPU, no hugepages, the virtio-user port VDEV, its
# own file prefix; log in $T_WORK/testpmd-NAME.log. Waits for the prompt.
tpn_start() {
	local name=$1 cpu=$2 vdev=$3 fifo=$T_WORK/testpmd-$1.fifo log=$T_WORK/testpmd-$1.log
	local lb="" fd
	shift 3
	mkfifo "$fifo" || return 1
	# opened read-write first: never blocks, even when testpmd dies at once
	exec {fd}<> "$fifo"
	TPN_FD[$name]=$fd
	# line-buffered, so that a command's output is in the log at its prompt
	command -v stdbuf > /dev/null && lb="stdbuf -oL -eL"
	$lb "$TESTPMD" --lcores "0@$cpu,1@$cpu" --no-pci --no-huge -m 256 --no-telemetry \
		--file-prefix "$TP_PREFIX-$name" --vdev "$vdev" \
		-- -i --nb-cores=1 --total-num-mbufs=4096 --disable-link-check "$@" \
		< "$fifo" > "$log" 2>&1 &
	TPN_PID[$name]=$!
	TPN_LOG[$name]=$log
	wait_log "$log" 'testpmd> ' 30 "${TPN_PID[$name]}"
}

# prompts NAME: prompts printed so far.
prompts() {
	grep -o 'testpmd> ' "${TPN_LOG[$1]}" 2>/dev/null | wc -l
}

# tpn_do NAME COMMAND...: run one command and wait (up to 15 s) for the
# next prompt; its output is left in TPN_OUT. 1 on time-out or death.
tpn_do() {
	local name=$1 before size i
	shift
	before=$(prompts "$name")
	size=$(stat -c %s "${TPN_LOG[$name]}")
	echo "$*" >&"${TPN_FD[$name]}" 2>/dev/null || return 1
	for i in $(seq 150); do
		if [ "$(prompts "$name")" -gt "$before" ]; then
			TPN_OUT=$(tail -c +"$((size + 1))" "${TPN_LOG[$name]}")
			return 0
		fi
		kill -0 "${TPN_PID[$name]}" 2>/dev/null || break
		sleep 0.1
	done
	TPN_OUT=$(tail -c +"$((size + 1))" "${TPN_LOG[$name]}")
	return 1
}

# tpn_stop NAME: "stop", "quit", then TERM/KILL. TPN_QUIT_RC: its status.
tpn_stop() {
	local name=$1 pid=${TPN_PID[$1]:-} i fd
	TPN_QUIT_RC=""
	[ -n "$pid" ] || return 0
	if kill -0 "$pid" 2>/dev/null; then
		{ echo stop; echo quit; } >&"${TPN_FD[$name]}" 2>/dev/null
		for i in $(seq 100); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
	fi
	if ! kill -0 "$pid" 2>/dev/null; then
		wait "$pid"
		TPN_QUIT_RC=$?
	fi
	stop_pid "$pid" 2
	fd=${TPN_FD[$name]:-}
	[ -n "$fd" ] && exec {fd}>&- 2>/dev/null
	unset "TPN_PID[$name]" "TPN_FD[$name]"
	rm -f "$T_WORK/testpmd-$name.fifo"
	rm -rf "/var/run/dpdk/$TP_PREFIX-$name"
}

# val NAME [TEXT]: the number after "NAME:" (first occurrence) in TEXT
# (default TPN_OUT); empty when absent.
val() {
	printf '%s\n' "${2-$TPN_OUT}" | grep -oE -- "$1: *[0-9]+" | head -n 1 | grep -oE '[0-9]+$'
}

# tpn_link NAME: "up" or "down" (from "show port info 0").
tpn_link() {
	tpn_do "$1" "show port info 0" || return 1
	printf '%s\n' "$TPN_OUT" | sed -nE 's/^Link status: *(up|down).*/\1/p' | tail -n 1
}

# tpn_port_ok NAME: the virtio-user port was probed and configured.
tpn_port_ok() {
	! grep -qE '(No probed ethernet devices|virtio_user_dev_init fails|Fail to|Failed to)' \
		"${TPN_LOG[$1]}" && grep -qE '^Port 0: [0-9A-F:]{17}$' "${TPN_LOG[$1]}"
}

# tpn_port_stats NAME: "show port stats all"; sets TP_RX, TP_TX.
tpn_port_stats() {
	TP_RX="" TP_TX=""
	tpn_do "$1" "show port stats all" || return 1
	TP_RX=$(val RX-packets)
	TP_TX=$(val TX-packets)
	[ -n "$TP_RX" ] && [ -n "$TP_TX" ]
}

# tpn_fwd_stop NAME: "stop"; sets FW_RX, FW_TX, FW_TXDROP, FW_RXDROP from
# the port's forward statistics.
tpn_fwd_stop() {
	FW_RX="" FW_TX="" FW_TXDROP="" FW_RXDROP=""
	local acc
	tpn_do "$1" stop || return 1
	# with several streams, per-stream blocks come first: read the totals
	acc=$(printf '%s\n' "$TPN_OUT" | sed -n '/Accumulated forward statistics/,$p')
	FW_RX=$(val RX-packets "$acc")
	FW_TX=$(val TX-packets "$acc")
	FW_RXDROP=$(val RX-dropped "$acc")
	FW_TXDROP=$(val TX-dropped "$acc")
	[ -n "$FW_RX" ] && [ -n "$FW_TX" ]
}

# num_check DESCRIPTION A OP B: arithmetic comparison with the numbers shown.
num_check() {
	local what=$1 a=${2:-} op=$3 b=${4:-}
	if [ -z "$a" ] || [ -z "$b" ]; then
		fail "$what (a number is missing: '$a' $op '$b')"
	elif [ "$a" "$op" "$b" ]; then
		pass "$what ($a $op $b)"
	else
		fail "$what ($a $op $b is false)"
	fi
}
