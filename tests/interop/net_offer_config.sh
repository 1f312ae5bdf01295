# SPDX-License-Identifier: MIT
# VHOST_USER_PROTOCOL_F_CONFIG is offered by uvhost-net only with
# --offer-config. QEMU's vhost-user-net never sends GET_CONFIG and logs
# "vhost-user backend supports VHOST_USER_PROTOCOL_F_CONFIG but QEMU does
# not" for a back-end that offers it, so the default must not; a front-end
# that reads the MAC through GET_CONFIG gets it with the flag.
# uvhost-vmm (the user backend) is the front-end: it prints the protocol
# features offered and what GET_CONFIG gave, and sends a few frames that
# must come back either way.
# Environment: UVHOST_NET, UVHOST_VMM (set by meson).
. "$(dirname "$0")/net_lib.sh"

T_NAME=net-offer-config
[ -n "${UVHOST_NET:-}" ] && [ -x "$UVHOST_NET" ] ||
	{ say "uvhost-net not found (UVHOST_NET='${UVHOST_NET:-}')"; exit 1; }
[ -n "${UVHOST_VMM:-}" ] && [ -x "$UVHOST_VMM" ] ||
	{ say "uvhost-vmm not found (UVHOST_VMM='${UVHOST_VMM:-}')"; exit 1; }
net_setup

CONFIG_BIT=9	# VHOST_USER_PROTOCOL_F_CONFIG
SOCK=$T_WORK/net.sock

# run NAME [UVHOST-NET-ARGS...]: uvhost-net, one uvhost-vmm run against it,
# SIGTERM. Sets OFFERED (the protocol features uvhost-vmm was offered) and
# VMM_LOG.
run() {
	local name=$1 rc
	shift
	OFFERED=""
	VMM_LOG=$T_WORK/vmm-$name.out
	if ! un_start "$T_WORK/uvhost-net-$name.log" --socket-path "$SOCK" --mode loopback "$@"; then
		fail "$name: uvhost-net did not start"
		return
	fi
	"$UVHOST_VMM" --backend "user:$SOCK" --frames 64 > "$VMM_LOG" 2>&1
	rc=$?
	sed "s/^/  vmm-$name| /" "$VMM_LOG"
	check "$name: uvhost-vmm got its 64 frames back (exit $rc)" \
		has "$VMM_LOG" '\]: PASS: 64/64 frames back'
	OFFERED=$(sed -nE 's/.*protocol_features_offered: (0x[0-9a-f]+)$/\1/p' "$VMM_LOG" | head -n 1)
	if un_stop; then
		check "$name: uvhost-net exits 0 on SIGTERM" test "$UN_RC" = 0
	else
		fail "$name: uvhost-net did not exit within 10 s of SIGTERM"
	fi
	check "$name: socket removed" test ! -e "$SOCK"
	check "$name: no error lines" hasnt "$UN_LOG" '(uvhost error|ERROR|AddressSanitizer|runtime error)'
}

run default
if [ -z "$OFFERED" ]; then
	fail "default: no protocol_features_offered line"
else
	check "default: CONFIG not offered ($OFFERED)" test $(( OFFERED >> CONFIG_BIT & 1 )) = 0
	check "default: the net bits are (MQ RARP NET_MTU, $OFFERED)" \
		test $(( OFFERED & 0x15 )) = $(( 0x15 ))
fi
check "default: GET_CONFIG not available to the front-end" \
	has "$VMM_LOG" '\]: config: n/a'

run offer-config --offer-config
if [ -z "$OFFERED" ]; then
	fail "--offer-config: no protocol_features_offered line"
else
	check "--offer-config: CONFIG offered ($OFFERED)" test $(( OFFERED >> CONFIG_BIT & 1 )) = 1
fi
check "--offer-config: GET_CONFIG gives the MAC, link up" \
	has "$VMM_LOG" '\]: config: mac 02:75:76:68:[0-9a-f]{2}:[0-9a-f]{2} status 0x1$'

t_finish
