#!/bin/bash
# SPDX-License-Identifier: MIT
# Usage: qemu_net.sh split|packed|mq [BOOTS]
# QEMU as the vhost-user front-end, uvhost-net (--mode loopback) as the
# back-end, a Debian kernel's virtio_net driver in the guest:
#   - prepare.sh fetches the kernel and builds the busybox initramfs (cached);
#   - uvhost-net listens on a socket in a fresh work folder;
#   - QEMU (TCG) boots the guest with its RAM in a shared memfd and a
#     virtio-net-pci device whose back-end is that socket: split ring,
#     packed ring (packed=on), or mq (split, two queue pairs, two vCPUs);
#   - in the guest, vm-rawecho (vm_rawecho.c, gcc -static) sends raw 0x88B5
#     frames out of eth0 (from each vCPU in turn) and checks that each comes
#     back intact and that eth0's counters moved by exactly that much; the
#     guest also reports the negotiated virtio features and its queues, so
#     the ring layout and queue count are checked too;
#   - the guest boots BOOTS times (default 2) against the same uvhost-net: a
#     front-end that leaves is no reason to stop, the next one must work too;
#   - then uvhost-net must exit 0 on SIGTERM, must have logged no error and
#     must have counted what the guests sent.
# Environment: UVHOST_NET (the uvhost-net executable, set by meson),
#   QEMU (default qemu-system-x86_64), VM_TIMEOUT (seconds for the QEMU run,
#   default 150), UVH_VM_CACHE (see prepare.sh), VM_KEEP=1 keeps the work folder,
#   VM_NET_VERBOSE (uvhost-net's verbosity flags, default -v), VM_QEMU_EXTRA (more
#   QEMU arguments, e.g. '-trace vhost_user_*' to see every request QEMU sends).
# Prints PASS/FAIL lines; exit 0 pass, 1 fail, 77 skip (a host requirement is
# missing, with the reason).
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
RING=${1:-split}
BOOTS=${2:-2}
NAME="vm-$RING"
# shellcheck source=tests/vm/vm_lib.sh
. "$HERE/vm_lib.sh"
VM_TIMEOUT=${VM_TIMEOUT:-150}
GUEST_MEM=256M
MAC=52:54:00:12:34:56
NET_PID=""
QEMU_PID=""

case $BOOTS in ''|*[!0-9]*|0) say "BOOTS must be a positive number"; exit 2 ;; esac
# mq: two queue pairs and two vCPUs; the guest sends from each CPU, and
# virtio_net's XPS map sends CPU n's frames on TX queue n
SMP=1
QUEUES=1
NETDEV_EXTRA=""
case $RING in
split) VNET_EXTRA="" ;;
packed) VNET_EXTRA=",packed=on" ;;
mq) VNET_EXTRA=",mq=on"; NETDEV_EXTRA=",queues=2"; SMP=2; QUEUES=2 ;;
*) say "usage: $0 split|packed|mq [BOOTS]"; exit 2 ;;
esac

# shellcheck disable=SC2317  # run by the EXIT trap
cleanup() {
	vm_stop_pid "$QEMU_PID" 2
	vm_stop_pid "$NET_PID" 2
	vm_rm_work
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- requirements -------------------------------------------------------------
vm_need_exe uvhost-net UVHOST_NET
vm_need_qemu
command -v timeout >/dev/null || skip "no timeout (coreutils)"
vm_need_memfd
vm_need_gcc
vm_mkwork vm
vm_prepare "$WORK"
say "kernel $KERNEL"
mkdir -p "$WORK/root/bin"
vm_static_probe "$WORK"
vm_static_build "$HERE/vm_rawecho.c" "$WORK/root/bin/vm-rawecho"

# ---- the guest's part -------------------------------------------------------------
# No address on eth0 and IPv6 off (kernel command line): the only frames on
# the wire are vm-rawecho's, so the counters can be checked exactly.
cat > "$WORK/root/cmd.sh" <<GUEST
modprobe virtio_pci && modprobe virtio_net || exit 10
for i in \$(seq 100); do [ -e /sys/class/net/eth0 ] && break; sleep 0.1; done
[ -e /sys/class/net/eth0 ] || { echo "no eth0"; ls /sys/class/net; exit 11; }
echo "VM-FEATURES \$(cat /sys/class/net/eth0/device/features)"
echo "VM-MAC \$(cat /sys/class/net/eth0/address)"
ip link set eth0 up || exit 12
for i in \$(seq 50); do [ "\$(cat /sys/class/net/eth0/operstate)" = up ] && break; sleep 0.1; done
echo "VM-OPERSTATE \$(cat /sys/class/net/eth0/operstate)"
echo "VM-QUEUES \$(ls /sys/class/net/eth0/queues | tr '\\n' ' ')"
for q in /sys/class/net/eth0/queues/tx-*; do echo "VM-XPS \${q##*/} \$(cat \$q/xps_cpus)"; done
cpus=\$(grep -c ^processor /proc/cpuinfo)
for cpu in \$(seq 0 \$((cpus - 1))); do
	taskset -c \$cpu vm-rawecho eth0 20 64 || exit 13
done
GUEST
vm_pack_initrd "$WORK/root" "$INITRD" "$WORK/initrd.gz"

# ---- the back-end -------------------------------------------------------------------
SOCK=$WORK/vu.sock
# shellcheck disable=SC2086  # none, one or several flags
"$UVHOST_NET" --socket-path "$SOCK" --mode loopback --queues "$QUEUES" ${VM_NET_VERBOSE--v} > "$WORK/uvhost-net.log" 2>&1 < /dev/null &
NET_PID=$!
for _ in $(seq 100); do
	[ -S "$SOCK" ] && break
	kill -0 "$NET_PID" 2>/dev/null || break
	sleep 0.05
done
if [ ! -S "$SOCK" ]; then
	fail "uvhost-net did not create $SOCK"
	cat "$WORK/uvhost-net.log"
	exit 1
fi
say "uvhost-net pid $NET_PID on $SOCK"

# ---- the front-end --------------------------------------------------------------------
# vectors=0: QEMU 7.2 under TCG segfaults when a vhost-user virtio-net-pci
# device uses MSI-X (kvm_irqchip_add_irqfd_notifier_gsi without KVM), so
# the device gets legacy INTx. romfile=: no option ROM, -kernel boots.
# The uncompressed vmlinux boots through its PVH entry (no decompression
# under TCG); ipv6.disable=1 keeps router solicitations off the wire.
vm_qemu_head "$SMP" "$GUEST_MEM" memfd
# shellcheck disable=SC2054  # the commas belong to QEMU's option syntax
QARGS+=(-chardev "socket,id=chr0,path=$SOCK"
	-netdev "vhost-user,id=net0,chardev=chr0$NETDEV_EXTRA"
	-device "virtio-net-pci,netdev=net0,mac=$MAC,vectors=0,romfile=$VNET_EXTRA")
vm_qemu_boot "$WORK/initrd.gz"
# shellcheck disable=SC2206
QARGS+=(${VM_QEMU_EXTRA:-})
say "qemu: $QEMU ${QARGS[*]}"

FRAMES=0
BYTES=0
# boot N: one guest run against the uvhost-net started above
boot() {
	local n=$1 log=$WORK/console-$1.log t0 qrc con feat frames bytes
	t0=$(date +%s)
	timeout -k 5 "$VM_TIMEOUT" "$QEMU" "${QARGS[@]}" < /dev/null > "$log" 2>&1 &
	QEMU_PID=$!
	wait "$QEMU_PID"
	qrc=$?
	QEMU_PID=""
	say "boot $n: qemu exited rc=$qrc after $(($(date +%s) - t0)) s"
	tr -d '\r' < "$log" | sed "s/^/  guest$n| /"
	con=$(tr -d '\r' < "$log")
	[ "$qrc" = 124 ] && fail "boot $n: QEMU timed out after $VM_TIMEOUT s"
	# one vm-rawecho run per vCPU, each ends in a VM-RESULT line
	if grep -q '^VM-RESULT PASS' <<< "$con" && ! grep -q '^VM-RESULT FAIL' <<< "$con"; then
		pass "boot $n: guest frames echoed intact, eth0 counters exact"
		read -r frames bytes < <(awk '/^VM-RESULT PASS/ { f += $3; b += substr($5, 2) }
			END { print f + 0, b + 0 }' <<< "$con")
		FRAMES=$((FRAMES + frames))
		BYTES=$((BYTES + bytes))
	else
		fail "boot $n: guest: $(grep -m1 '^VM-RESULT FAIL' <<< "$con" || echo 'no VM-RESULT line')"
	fi
	grep -q '^@@VM cmd-exit=0' <<< "$con" ||
		fail "boot $n: guest command: $(grep -m1 '^@@VM cmd-exit' <<< "$con" || echo 'never ended')"
	grep -q '^VM-OPERSTATE up' <<< "$con" || fail "boot $n: eth0 was not up"
	# a vhost-user-net back-end offers no CONFIG: QEMU would warn "vhost-user backend
	# supports VHOST_USER_PROTOCOL_F_CONFIG but QEMU does not" (as it did with uvhost-net)
	if grep -q 'PROTOCOL_F_CONFIG' <<< "$con"; then
		fail "boot $n: QEMU: $(grep -m1 'PROTOCOL_F_CONFIG' <<< "$con")"
	else
		pass "boot $n: QEMU took the back-end's protocol features without a warning"
	fi

	# /sys/.../features: one character per feature bit, bit 0 first
	feat=$(sed -n 's/^VM-FEATURES //p' <<< "$con")
	if [ -z "$feat" ]; then
		fail "boot $n: guest did not report its virtio features"
		return
	fi
	say "boot $n: negotiated VERSION_1=${feat:32:1} RING_PACKED=${feat:34:1} MRG_RXBUF=${feat:15:1} EVENT_IDX=${feat:29:1} INDIRECT=${feat:28:1} CTRL_VQ=${feat:17:1} MQ=${feat:22:1} STATUS=${feat:16:1} MAC=${feat:5:1}"
	[ "${feat:32:1}" = 1 ] || fail "boot $n: VIRTIO_F_VERSION_1 not negotiated"
	if [ "$RING" = mq ]; then
		# CPU 1's frames leave on tx-1 only if the guest runs two pairs
		# and maps CPU 1 to queue 1 (virtio_net sets XPS that way)
		if [ "${feat:22:1}" = 1 ] && grep -q '^VM-QUEUES rx-0 rx-1 tx-0 tx-1 $' <<< "$con" &&
		   grep -q '^VM-XPS tx-1 0*2$' <<< "$con"; then
			pass "boot $n: two queue pairs, CPU 1 sends on tx-1"
		else
			fail "boot $n: MQ=${feat:22:1}, $(grep '^VM-QUEUES' <<< "$con"), $(grep '^VM-XPS' <<< "$con" | tr '\n' ' ')"
		fi
	fi
	if [ "$RING" = packed ] && [ "${feat:34:1}" = 1 ]; then
		pass "boot $n: packed ring in use"
	elif [ "$RING" = packed ]; then
		fail "boot $n: packed=on but VIRTIO_F_RING_PACKED not negotiated"
	elif [ "${feat:34:1}" = 0 ]; then
		pass "boot $n: split ring in use"
	else
		fail "boot $n: VIRTIO_F_RING_PACKED negotiated without packed=on"
	fi
}

# The second boot reconnects to the same uvhost-net: a front-end that left
# must leave it ready for the next one.
for n in $(seq "$BOOTS"); do
	[ "$n" -gt 1 ] && ! kill -0 "$NET_PID" 2>/dev/null && break
	boot "$n"
	[ "$FAILED" = 0 ] || break
done

# the front-end left: uvhost-net stays up for the next one, then stops on TERM
kill -0 "$NET_PID" 2>/dev/null && pass "uvhost-net still running after QEMU left"
vm_term_net "$NET_PID" uvhost-net
NET_PID=""
say "uvhost-net log:"
sed 's/^/  uvhost-net| /' "$WORK/uvhost-net.log"
# the back-end's own complaints say most about a failed run
grep -m3 -E 'uvhost(-net)? error' "$WORK/uvhost-net.log" | while IFS= read -r l; do
	fail "uvhost-net logged: $l"
done
grep -qE 'uvhost(-net)? error' "$WORK/uvhost-net.log" && FAILED=1
# its own count of what it looped, when it printed one
tot=$(sed -n 's/.*total rx \([0-9]*\) pkts \([0-9]*\) bytes, tx \([0-9]*\) pkts \([0-9]*\) bytes.*/\1 \2 \3 \4/p' \
	"$WORK/uvhost-net.log" | tail -1)
if [ -n "$tot" ] && [ "$FAILED" = 0 ]; then
	if [ "$tot" = "$FRAMES $BYTES $FRAMES $BYTES" ]; then
		pass "uvhost-net counted $FRAMES frames, $BYTES bytes each way"
	else
		fail "uvhost-net counted rx/tx '$tot', the guests sent $FRAMES frames, $BYTES bytes"
	fi
fi

vm_finish
