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
# shellcheck source=tests/vm/vm_lib.sh
. "$HERE/vm_lib.sh"
GUEST_MEM=256M
MAC=52:54:00:12:34:57
NET_PID=""
QEMU_PID=""
# guest traffic time: long enough for every kill plus QEMU's 1 s reconnect
SECS=$((6 + KILLS * 5))

case $RING in
split) VNET_EXTRA="" ;;
packed) VNET_EXTRA=",packed=on" ;;
*) say "usage: $0 split|packed [KILLS]"; exit 2 ;;
esac
case $KILLS in ''|*[!0-9]*|0) say "KILLS must be a positive number"; exit 2 ;; esac

# shellcheck disable=SC2317  # run by the EXIT trap
cleanup() {
	vm_stop_pid "$QEMU_PID" 2
	vm_stop_pid "$NET_PID" 2
	vm_rm_work
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- requirements (as qemu_net.sh) ----------------------------------------------
vm_need_exe uvhost-net UVHOST_NET
vm_need_qemu
vm_need_memfd
vm_need_gcc
vm_mkwork vmr
vm_prepare "$WORK"
mkdir -p "$WORK/root/bin"
vm_static_probe "$WORK"
vm_static_build "$HERE/vm_restart.c" "$WORK/root/bin/vm-restart"

# ---- the guest's part ---------------------------------------------------------------
vm_guest_net_cmd "$WORK/root/cmd.sh" "vm-restart eth0 $SECS"
vm_pack_initrd "$WORK/root" "$INITRD" "$WORK/initrd.gz"

# ---- the back-end, started again after each kill ------------------------------------
SOCK=$WORK/vu.sock
NET_N=0
start_net() { # start uvhost-net #NET_N; 0 once it listens
	# shellcheck disable=SC2086  # none, one or several flags
	vm_start_net "$WORK/uvhost-net-$NET_N.log" --socket-path "$SOCK" --mode loopback ${VM_NET_VERBOSE--v}
}
start_net || { fail "uvhost-net did not start"; cat "$WORK/uvhost-net-0.log"; exit 1; }

# ---- the front-end: QEMU reconnecting by itself ---------------------------------------
# vectors=0 and the memfd RAM: see qemu_net.sh. reconnect=1: QEMU connects
# again every second after the back-end went away.
vm_qemu_head 1 "$GUEST_MEM" memfd
# shellcheck disable=SC2054
QARGS+=(-chardev "socket,id=chr0,path=$SOCK,reconnect=1"
	-netdev "vhost-user,id=net0,chardev=chr0"
	-device "virtio-net-pci,netdev=net0,mac=$MAC,vectors=0,romfile=$VNET_EXTRA")
vm_qemu_boot "$WORK/initrd.gz"
CON=$WORK/console.log
timeout -k 5 $((SECS + 90)) "$QEMU" "${QARGS[@]}" < /dev/null > "$CON" 2>&1 &
QEMU_PID=$!

# echoed: the guest's last progress count
echoed() { vm_echoed "$CON"; }

if ! vm_wait_con "$CON" '^VM-TRAFFIC start' 60 "$QEMU_PID"; then
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
vm_check_guest_net "$con"
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
vm_finish
