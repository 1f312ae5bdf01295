# SPDX-License-Identifier: MIT
# The systemd template unit uvhost-net@.service (tools/systemd/) and its
# example options file: the unit as meson configured it names the
# installed uvhost-net; systemd-analyze verify (when installed) finds
# nothing to say about it; and its ExecStart line, expanded as systemd
# would for an instance "test" with the example options file (the
# Environment= default, then the EnvironmentFile= values, ${VAR} one word,
# $VAR split at spaces), starts uvhost-net, which serves a front-end,
# stops on SIGTERM with status 0 and removes its socket. No systemd needs
# to run: the unit is read, not started.
# Environment (set by meson): UVHOST_NET, UVHOST_VMM, UVHOST_NET_UNIT (the
# configured unit), UVHOST_NET_CONF (the example), UVHOST_BINDIR (where
# the unit expects uvhost-net).
. "$(dirname "$0")/lib.sh"

T_NAME=systemd-unit
for v in UVHOST_NET UVHOST_VMM UVHOST_NET_UNIT UVHOST_NET_CONF UVHOST_BINDIR; do
	[ -n "${!v:-}" ] || { say "$v is not set (run through meson test)"; exit 1; }
done
t_setup
UN_PID=""
sd_cleanup() {
	local rc=$?
	[ -n "$UN_PID" ] && stop_pid "$UN_PID" 3
	(exit "$rc")
	t_cleanup	# prints the logs on failure, removes $T_WORK, exits with rc
}
trap sd_cleanup EXIT

UNIT=$UVHOST_NET_UNIT
INSTANCE=test
# unit_value KEY: the value of the unit's (first) KEY= line
unit_value() { sed -n "s/^$1=//p" "$UNIT" | head -n 1; }

EXEC=$(unit_value ExecStart)
say "ExecStart=$EXEC"
check "ExecStart runs the installed uvhost-net ($UVHOST_BINDIR)" \
	test "${EXEC%% *}" = "$UVHOST_BINDIR/uvhost-net"
check "no @VARIABLE@ left unconfigured" hasnt "$UNIT" '@[A-Z_]+@'
check "options come from /etc/uvhost/%i.conf" test "$(unit_value EnvironmentFile)" = "/etc/uvhost/%i.conf"
check "RuntimeDirectory=uvhost, kept while other instances run" \
	test "$(unit_value RuntimeDirectory):$(unit_value RuntimeDirectoryPreserve)" = "uvhost:yes"
check "Restart=on-failure" test "$(unit_value Restart)" = on-failure
check "LimitMEMLOCK=infinity (AF_XDP UMEM)" test "$(unit_value LimitMEMLOCK)" = infinity
check "SIGTERM stops it" test "$(unit_value KillSignal)" = SIGTERM
for cap in CAP_NET_ADMIN CAP_NET_RAW CAP_BPF CAP_SYS_ADMIN; do
	check "$cap in the bounding set (tap, xdp)" has "$UNIT" "^CapabilityBoundingSet=.*\\b$cap\\b"
done

# systemd-analyze verify: the unit with the build's uvhost-net (verify
# wants an executable there), as an instance. Any line it prints is a
# complaint (unknown setting, bad value, ignored line).
if command -v systemd-analyze > /dev/null; then
	mkdir -p "$T_WORK/units"
	sed "s|^ExecStart=$UVHOST_BINDIR/uvhost-net |ExecStart=$UVHOST_NET |" "$UNIT" \
		> "$T_WORK/units/uvhost-net@$INSTANCE.service"
	(cd "$T_WORK/units" && systemd-analyze verify "./uvhost-net@$INSTANCE.service") \
		> "$T_WORK/verify.log" 2>&1
	rc=$?
	sed 's/^/  verify| /' "$T_WORK/verify.log"
	check "systemd-analyze verify: exit 0 ($rc)" test "$rc" = 0
	check "systemd-analyze verify: nothing to say" test ! -s "$T_WORK/verify.log"
else
	say "systemd-analyze not found: the unit is not verified by systemd (Debian: apt-get install systemd)"
fi

# ---- ExecStart, expanded as systemd would ---------------------------------
RUN=$T_WORK/run	# stands for /run: RuntimeDirectory=uvhost is $RUN/uvhost
mkdir -p "$RUN/uvhost"
# specifiers of the unit file: %i and /run
spec() { local s=${1//%i/$INSTANCE}; echo "${s//\/run\//$RUN/}"; }

declare -A ENV=()
# Environment=NAME=VALUE lines of the unit, then the options file's lines
# (EnvironmentFile= overrides Environment=); the file takes no specifiers.
while IFS= read -r line; do
	ENV[${line%%=*}]=$(spec "${line#*=}")
done < <(sed -n 's/^Environment=//p' "$UNIT")
while IFS= read -r line; do
	case $line in ''|'#'*) continue ;; esac
	val=${line#*=}
	val=${val#\"}
	val=${val%\"}
	ENV[${line%%=*}]=$val
done < "$UVHOST_NET_CONF"
check "the example sets UVHOST_NET_OPTS" test -n "${ENV[UVHOST_NET_OPTS]:-}"
say "UVHOST_SOCKET=${ENV[UVHOST_SOCKET]:-} UVHOST_NET_OPTS=${ENV[UVHOST_NET_OPTS]:-}"

# ExecStart's words: ${VAR} is one word, $VAR is split at white space
CMD=()
read -r -a words <<< "$EXEC"
for w in "${words[@]}"; do
	if [[ $w =~ ^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$ ]]; then
		CMD+=("${ENV[${BASH_REMATCH[1]}]:-}")
	elif [[ $w =~ ^\$([A-Za-z_][A-Za-z0-9_]*)$ ]]; then
		read -r -a split <<< "${ENV[${BASH_REMATCH[1]}]:-}"
		CMD+=("${split[@]}")
	else
		CMD+=("$(spec "$w")")
	fi
done
CMD[0]=$UVHOST_NET	# the build's, where the unit names the installed one
SOCK=$(spec /run/uvhost/%i.sock)
say "runs: ${CMD[*]}"
check "the instance's socket is /run/uvhost/$INSTANCE.sock" \
	test "${ENV[UVHOST_SOCKET]:-}" = "$SOCK"

LOG=$T_WORK/uvhost-net.log
"${CMD[@]}" > "$LOG" 2>&1 &
UN_PID=$!
if wait_log "$LOG" "^uvhost-net: port 0: listening on $SOCK\$" 10 "$UN_PID"; then
	pass "uvhost-net started with the example's options, listening on $SOCK"
	"$UVHOST_VMM" --backend "user:$SOCK" --frames 64 > "$T_WORK/vmm.out" 2>&1
	rc=$?
	sed 's/^/  vmm| /' "$T_WORK/vmm.out"
	check "a front-end is served (uvhost-vmm exit $rc, 64 frames back)" \
		has "$T_WORK/vmm.out" '\]: PASS: 64/64 frames back'
	kill -TERM "$UN_PID"
	if wait_exit "$UN_PID" 15; then	# TimeoutStopSec=15s
		UN_PID=""
		check "SIGTERM: exit 0 (status $WAIT_RC)" test "$WAIT_RC" = 0
		check "SIGTERM: socket removed" test ! -e "$SOCK"
		check "SIGTERM: final counters printed" has "$LOG" '^uvhost-net: port 0 [^:]*: total rx 64 pkts'
	else
		fail "uvhost-net did not exit within TimeoutStopSec (15 s) of SIGTERM"
	fi
else
	fail "uvhost-net did not start with the example's options"
fi
sed 's/^/  uvhost-net| /' "$LOG"
check "no error lines" hasnt "$LOG" '(uvhost error|ERROR|AddressSanitizer|runtime error)'

t_finish
