#!/bin/bash
# SPDX-License-Identifier: MIT
# Usage: qemu_restart.sh split|packed [KILLS]
# Restart without loss with QEMU as the front-end (issue 6): a Debian
# guest's virtio_net sends sequence-numbered raw frames without pause
# (vm_restart.c) through uvhost-net (loopback); the host kills uvhost-net
# with SIGKILL KILLS times (default 2) under that traffic and starts it
# again on the same socket; QEMU (-chardev socket,...,reconnect=1)
# reconnects by itself. Checked: QEMU survives and reconnects each time,
# the guest's traffic resumes after each kill, the guest's virtio ring
# never broke (no "not a head", no "broken" from virtio_ring), its TX
# watchdog never fired ("transmit queue N timed out"), every echo is
# intact, and the numbers (frames sent, echoed, lost while the back-end
# was away, time to resume) are printed. Lost frames are allowed (a net
# device may drop), a descriptor lost or used twice is not: either would
# break the ring or hang the queue, which the checks above catch.
# Environment: as qemu_net.sh (UVHOST_NET, QEMU, UVH_VM_CACHE, VM_KEEP,
#   VM_NET_VERBOSE). Exit 0 pass, 1 fail, 77 skip.
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
RING=${1:-split}
KILLS=${2:-2}
NAME="vm-restart-$RING"
QEMU=${QEMU:-qemu-system-x86_64}
GUEST_MEM=256M
MAC=52:54:00:12:34:57
FAILED=0
WORK=""
NET_PID=""
QEMU_PID=""
# guest traffic time: long enough for every kill plus QEMU's 1 s reconnect
SECS=$((6 + KILLS * 5))

say() { printf '%s: %s\n' "$NAME" "$*"; }
pass() { printf '%s: PASS: %s\n' "$NAME" "$*"; }
fail() { printf '%s: FAIL: %s\n' "$NAME" "$*"; FAILED=1; }
skip() { printf '%s: SKIP: %s\n' "$NAME" "$*"; exit 77; }

case $RING in
split) VNET_EXTRA="" ;;
packed) VNET_EXTRA=",packed=on" ;;
*) say "usage: $0 split|packed [KILLS]"; exit 2 ;;
esac
case $KILLS in ''|*[!0-9]*|0) say "KILLS must be a positive number"; exit 2 ;; esac

# shellcheck disable=SC2317  # run by cleanup
stop_pid() {
	local pid=$1
	[ -n "$pid" ] || return 0
	kill -TERM "$pid" 2>/dev/null
	for _ in $(seq $(($2 * 10))); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	kill -KILL "$pid" 2>/dev/null
	wait "$pid" 2>/dev/null
}

# shellcheck disable=SC2317  # run by the EXIT trap
cleanup() {
	stop_pid "$QEMU_PID" 2
	stop_pid "$NET_PID" 2
	if [ -n "$WORK" ]; then
		if [ "${VM_KEEP:-0}" = 1 ]; then say "work folder kept: $WORK"; else rm -rf "$WORK"; fi
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- requirements (as qemu_net.sh) ----------------------------------------------
if [ -z "${UVHOST_NET:-}" ] || [ ! -x "$UVHOST_NET" ]; then
	say "uvhost-net not found (UVHOST_NET='${UVHOST_NET:-}')"
	exit 1
fi
command -v "$QEMU" >/dev/null || skip "no $QEMU (apt-get install qemu-system-x86)"
"$QEMU" -object help 2>/dev/null | grep -q memory-backend-memfd ||
	skip "$QEMU has no memory-backend-memfd"
GCC=${VM_GCC:-gcc}
command -v "$GCC" >/dev/null || skip "no gcc to build the static guest program"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/uvh-vmr.XXXXXX") || { say "mktemp failed"; exit 1; }
if [ -z "${UVH_VM_CACHE:-}" ] && [ -z "${XDG_CACHE_HOME:-}" ] && [ -z "${HOME:-}" ]; then
	export UVH_VM_CACHE=${UVH_VM_BUILD_CACHE:-$WORK/cache}
fi
bash "$HERE/prepare.sh" > "$WORK/prepare.out" 2> "$WORK/prepare.err"
rc=$?
if [ $rc != 0 ]; then
	cat "$WORK/prepare.err"
	[ $rc = 77 ] && skip "$(grep -m1 '^SKIP: ' "$WORK/prepare.err" | cut -d' ' -f2-)"
	say "prepare.sh failed (rc=$rc)"
	exit 1
fi
KERNEL=$(sed -n 's/^KERNEL=//p' "$WORK/prepare.out")
INITRD=$(sed -n 's/^INITRD=//p' "$WORK/prepare.out")
mkdir -p "$WORK/root/bin"
printf 'int main(void) { return 0; }\n' > "$WORK/t.c"
"$GCC" -static -o "$WORK/t" "$WORK/t.c" 2> "$WORK/gcc.err" ||
	{ cat "$WORK/gcc.err"; skip "$GCC cannot link static programs (libc6-dev with libc.a?)"; }
"$GCC" -static -O2 -Wall -Wextra -o "$WORK/root/bin/vm-restart" "$HERE/vm_restart.c" ||
	{ fail "vm_restart.c does not build"; exit 1; }

# ---- the guest's part ---------------------------------------------------------------
cat > "$WORK/root/cmd.sh" <<GUEST
modprobe virtio_pci && modprobe virtio_net || exit 10
for i in \$(seq 100); do [ -e /sys/class/net/eth0 ] && break; sleep 0.1; done
[ -e /sys/class/net/eth0 ] || exit 11
echo "VM-FEATURES \$(cat /sys/class/net/eth0/device/features)"
ip link set eth0 up || exit 12
for i in \$(seq 50); do [ "\$(cat /sys/class/net/eth0/operstate)" = up ] && break; sleep 0.1; done
vm-restart eth0 $SECS || exit 13
echo "VM-WATCHDOG \$(dmesg | grep -c 'transmit queue [0-9]* timed out')"
echo "VM-RINGERR \$(dmesg | grep -ciE 'not a head|vring.*broken|used len|id [0-9]+ out of range')"
dmesg | grep -iE 'virtio|eth0|watchdog' | tail -n 20 | sed 's/^/VM-DMESG /'
GUEST
(cd "$WORK/root" && find . | cpio -o -H newc --quiet | gzip -1) > "$WORK/run.cpio.gz" ||
	{ say "cpio failed"; exit 1; }
cat "$INITRD" "$WORK/run.cpio.gz" > "$WORK/initrd.gz"

# ---- the back-end, started again after each kill ------------------------------------
SOCK=$WORK/vu.sock
NET_N=0
start_net() { # start uvhost-net #NET_N; 0 once its socket is there
	local log=$WORK/uvhost-net-$NET_N.log
	# shellcheck disable=SC2086
	"$UVHOST_NET" --socket-path "$SOCK" --mode loopback ${VM_NET_VERBOSE--v} > "$log" 2>&1 < /dev/null &
	NET_PID=$!
	for _ in $(seq 100); do
		grep -q 'listening on' "$log" 2>/dev/null && return 0
		kill -0 "$NET_PID" 2>/dev/null || return 1
		sleep 0.05
	done
	return 1
}
start_net || { fail "uvhost-net did not start"; cat "$WORK/uvhost-net-0.log"; exit 1; }

# ---- the front-end: QEMU reconnecting by itself ---------------------------------------
# vectors=0 and the memfd RAM: see qemu_net.sh. reconnect=1: QEMU connects
# again every second after the back-end went away.
# shellcheck disable=SC2054
QARGS=(-machine q35 -accel tcg -cpu max -smp 1
	-m "$GUEST_MEM" -object "memory-backend-memfd,id=mem,size=$GUEST_MEM,share=on"
	-numa node,memdev=mem
	-nographic -nodefaults -no-reboot -display none -serial stdio
	-chardev "socket,id=chr0,path=$SOCK,reconnect=1"
	-netdev "vhost-user,id=net0,chardev=chr0"
	-device "virtio-net-pci,netdev=net0,mac=$MAC,vectors=0,romfile=$VNET_EXTRA"
	-kernel "$KERNEL" -initrd "$WORK/initrd.gz"
	-append "console=ttyS0 panic=-1 loglevel=4 mitigations=off nokaslr edd=off ipv6.disable=1")
CON=$WORK/console.log
timeout -k 5 $((SECS + 90)) "$QEMU" "${QARGS[@]}" < /dev/null > "$CON" 2>&1 &
QEMU_PID=$!

# wait_con REGEX SECONDS: the console shows a line matching, QEMU alive
wait_con() {
	for _ in $(seq $(($2 * 10))); do
		tr -d '\r' < "$CON" | grep -qE -- "$1" && return 0
		kill -0 "$QEMU_PID" 2>/dev/null || return 1
		sleep 0.1
	done
	return 1
}
# echoed: the guest's last progress count
echoed() {
	tr -d '\r' < "$CON" | sed -n 's/^VM-PROGRESS .* echoed=\([0-9]*\)$/\1/p' | tail -n 1
}

if ! wait_con '^VM-TRAFFIC start' 60; then
	fail "the guest's traffic did not start"
else
	k=0
	while [ "$k" -lt "$KILLS" ]; do
		k=$((k + 1))
		# traffic must flow before each kill
		e0=$(echoed)
		for _ in $(seq 50); do
			[ "$(echoed)" -gt $(( ${e0:-0} + 200 )) ] 2>/dev/null && break
			sleep 0.1
		done
		e1=$(echoed)
		t0=$(date +%s%N)
		kill -KILL "$NET_PID"
		wait "$NET_PID" 2>/dev/null
		NET_N=$k
		if ! start_net; then
			fail "kill $k: uvhost-net did not start again"
			break
		fi
		if grep -qE 'front-end connected' "$WORK/uvhost-net-$k.log" ||
		   { for _ in $(seq 100); do
			grep -qE 'front-end connected' "$WORK/uvhost-net-$k.log" && break; sleep 0.1
		     done; grep -qE 'front-end connected' "$WORK/uvhost-net-$k.log"; }; then
			t1=$(date +%s%N)
			pass "kill $k: QEMU reconnected after $(( (t1 - t0) / 1000000 )) ms"
		else
			fail "kill $k: QEMU did not reconnect within 10 s"
			break
		fi
		resumed=""
		for _ in $(seq 200); do
			e=$(echoed)
			if [ "${e:-0}" -gt $(( ${e1:-0} + 200 )) ]; then
				resumed=$(( ($(date +%s%N) - t0) / 1000000 ))
				break
			fi
			kill -0 "$QEMU_PID" 2>/dev/null || break
			sleep 0.1
		done
		if [ -n "$resumed" ]; then
			pass "kill $k: the guest's traffic resumed (echoed $e1 at the kill, 200 more within $resumed ms of it)"
		else
			fail "kill $k: the guest's traffic did not resume (echoed ${e1:-?} at the kill, $(echoed) now)"
			break
		fi
	done
fi

wait "$QEMU_PID"
qrc=$?
QEMU_PID=""
con=$(tr -d '\r' < "$CON")
grep -vE '^VM-PROGRESS' <<< "$con" | sed 's/^/  guest| /' | tail -n 40
[ "$qrc" = 124 ] && fail "QEMU timed out"
res=$(grep -m1 '^VM-RESTART ' <<< "$con")
if [ -z "$res" ]; then
	fail "the guest program did not finish"
else
	say "guest: ${res#VM-RESTART }"
	val() { sed -n "s/.* $1=\([0-9]*\).*/\1/p" <<< "$res"; }
	[ "$(val bad)" = 0 ] && pass "every echo intact" || fail "$(val bad) echoes corrupt"
	[ "$(val dup)" = 0 ] && pass "no frame echoed twice" ||
		say "note: $(val dup) frames echoed twice (sent again after a restart)"
	lost=$(val lost)
	say "frames lost while the back-end was away: $lost of $(val sent) (allowed for net)"
	[ "$(val echoed)" -gt $(( $(val sent) / 2 )) ] && pass "most frames came back" ||
		fail "only $(val echoed) of $(val sent) frames came back"
	say "longest spell without an echo: $(val max_stall_ms) ms over $(val stalls) stall(s)"
fi
grep -q '^@@VM cmd-exit=0' <<< "$con" ||
	fail "guest command: $(grep -m1 '^@@VM cmd-exit' <<< "$con" || echo 'never ended')"
wd=$(sed -n 's/^VM-WATCHDOG //p' <<< "$con")
[ "$wd" = 0 ] && pass "virtio_net's TX watchdog never fired" ||
	fail "TX watchdog: '${wd:-no report}' (transmit queue timed out)"
re=$(sed -n 's/^VM-RINGERR //p' <<< "$con")
[ "$re" = 0 ] && pass "the guest's virtio ring never broke" ||
	fail "virtio ring errors in the guest: '${re:-no report}'"
feat=$(sed -n 's/^VM-FEATURES //p' <<< "$con")
if [ "$RING" = packed ]; then
	[ "${feat:34:1}" = 1 ] && pass "packed ring in use" || fail "packed ring not negotiated"
else
	[ "${feat:34:1}" = 0 ] && pass "split ring in use" || fail "split ring not in use"
fi

# the last uvhost-net: clean stop, no error logged by any of them
if kill -0 "$NET_PID" 2>/dev/null; then
	kill -TERM "$NET_PID"
	wait "$NET_PID"
	nrc=$?
	NET_PID=""
	[ $nrc = 0 ] && pass "the last uvhost-net exited 0 on SIGTERM" ||
		fail "the last uvhost-net exited $nrc on SIGTERM"
else
	fail "the last uvhost-net died"
fi
for f in "$WORK"/uvhost-net-*.log; do
	grep -m3 -E 'uvhost(-net)? error|AddressSanitizer|runtime error' "$f" | while IFS= read -r l; do
		say "$(basename "$f"): $l"
	done
	grep -qE 'uvhost(-net)? error|AddressSanitizer|runtime error' "$f" &&
		fail "$(basename "$f") logged an error"
done
if [ $FAILED = 0 ]; then
	say "PASS"
	exit 0
fi
say "FAIL"
exit 1
