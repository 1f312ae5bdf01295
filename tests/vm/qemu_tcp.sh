#!/bin/bash
# SPDX-License-Identifier: MIT
# Usage: qemu_tcp.sh [SECONDS]
# Two QEMU guests (TCG, one vCPU each, a Debian kernel's virtio_net) on one
# `uvhost-net --mode switch`, TCP between them with Debian's iperf3 (its
# package and libraries put in the guests' initramfs), in three set-ups of
# one run:
#   offloads-on   virtio-net-pci as QEMU makes it: the guests negotiate CSUM,
#                 GUEST_CSUM, HOST/GUEST_TSO4/6, ECN, and 64 KiB segments
#                 cross the switch whole
#   offloads-off  the same with csum=off,guest_csum=off,gso=off and every TSO,
#                 ECN and UFO property off: 1,514-byte frames
#   qemu-bridge   the anchor: the same two guests on QEMU's own networking,
#                 its userspace virtio-net on two taps joined by a Linux bridge
#   tap           one guest on `uvhost-net --mode tap`, the host's iperf3 as
#                 its peer both ways: the host's 64 KiB segments reach the
#                 guest whole (GUEST_TSO4 through TUNSETOFFLOAD, merged
#                 buffers), the guest's reach the host (HOST_TSO4)
# Each guest reports the offload features it negotiated (checked); the
# client prints iperf3's receiver rate; the tap guest its RX error counters
# (must stay 0). Under TCG absolute rates are low; the ratio between
# set-ups is the result. PASS when every set-up moved data, the features
# were the ones asked for, and uvhost-net logged no error.
# Environment: UVHOST_NET, QEMU, VM_TIMEOUT (per set-up, default 240),
#   UVH_VM_CACHE (see prepare.sh), VM_KEEP=1, VM_TCP_SETUPS (default all
#   three, space separated).
# Prints PASS/FAIL lines; exit 0 pass, 1 fail, 77 skip.
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
SECS=${1:-6}
NAME="vm-tcp"
# shellcheck source=tests/vm/vm_lib.sh
. "$HERE/vm_lib.sh"
VM_TIMEOUT=${VM_TIMEOUT:-240}
GUEST_MEM=256M
SETUPS=${VM_TCP_SETUPS:-offloads-on offloads-off qemu-bridge tap}
NET_PID=""
QA_PID=""
QB_PID=""
BRIDGE=""

# shellcheck disable=SC2317  # run by the EXIT trap
cleanup() {
	vm_stop_pid "$QA_PID" 2
	vm_stop_pid "$QB_PID" 2
	vm_stop_pid "$NET_PID" 2
	[ -n "${TAP_UP:-}" ] && ip addr del 10.77.0.254/24 dev uvhtcp-t0 2>/dev/null
	if [ -n "$BRIDGE" ]; then
		ip link del uvhtcp-a 2>/dev/null
		ip link del uvhtcp-b 2>/dev/null
		ip link del "$BRIDGE" 2>/dev/null
	fi
	vm_rm_work
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- requirements -------------------------------------------------------------
vm_need_exe uvhost-net UVHOST_NET
vm_need_qemu
command -v timeout >/dev/null || skip "no timeout (coreutils)"
vm_need_memfd
vm_mkwork tcp
vm_prepare "$WORK"
say "kernel $KERNEL"

# ---- iperf3 in the guests ------------------------------------------------------------
# Debian's own packages (the host's release), downloaded once into the vm
# cache; the shared libraries they need beyond their own come from the host
# (same release). A failed download fails the test: it is not a skip.
CACHE=${UVH_VM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/uvhost-vm}
IPDIR=$CACHE/iperf3
if ! [ -x "$IPDIR/root/usr/bin/iperf3" ]; then
	mkdir -p "$IPDIR/debs" || { fail "cannot create $IPDIR"; exit 1; }
	(cd "$IPDIR/debs" && apt-get download iperf3 libiperf0 libsctp1 > ../download.log 2>&1) ||
		{ cat "$IPDIR/download.log"; fail "apt-get download iperf3 libiperf0 libsctp1"; exit 1; }
	rm -rf "$IPDIR/root"
	for d in "$IPDIR"/debs/*.deb; do
		dpkg-deb -x "$d" "$IPDIR/root" || { fail "dpkg-deb -x $d"; exit 1; }
	done
fi
for g in a b; do
	R=$WORK/root-$g
	mkdir -p "$R"
	cp -a "$IPDIR/root/." "$R/"
	# every library iperf3 loads, where the loader looks for it
	ldd_out=$(LD_LIBRARY_PATH="$IPDIR/root/usr/lib/x86_64-linux-gnu" ldd "$IPDIR/root/usr/bin/iperf3")
	if grep -q 'not found' <<< "$ldd_out"; then
		fail "iperf3 needs libraries the host lacks: $(grep 'not found' <<< "$ldd_out" | tr -d '\t' | tr '\n' ' ')"
		exit 1
	fi
	libs=$(awk '/=> \// { print $3 } /^\t\/lib/ { print $1 }' <<< "$ldd_out")
	for l in $libs; do
		case $l in "$IPDIR"/*) continue ;; esac
		mkdir -p "$R$(dirname "$l")"
		cp -L "$l" "$R$l" || { fail "cannot copy $l"; exit 1; }
	done
done

# ---- the guests' parts ------------------------------------------------------------------
guest_common() {
	cat <<'GUEST'
modprobe virtio_pci && modprobe virtio_net || exit 10
for i in $(seq 100); do [ -e /sys/class/net/eth0 ] && break; sleep 0.1; done
[ -e /sys/class/net/eth0 ] || exit 11
echo "VM-FEATURES $(cat /sys/class/net/eth0/device/features)"
ip link set lo up
GUEST
}
{ guest_common; cat <<GUEST
ip addr add 10.77.0.1/24 dev eth0 && ip link set eth0 up || exit 12
echo VM-SERVER-UP
iperf3 -s -1 > /tmp/iperf.log 2>&1
echo "VM-SERVER-EXIT \$?"
GUEST
} > "$WORK/root-a/cmd.sh"
{ guest_common; cat <<GUEST
ip addr add 10.77.0.2/24 dev eth0 && ip link set eth0 up || exit 12
# the server boots at the same time: try until it answers
for i in \$(seq 120); do
	iperf3 -c 10.77.0.1 -t $SECS -f m > /tmp/iperf.log 2>&1 && break
	sleep 1
done
sed 's/^/VM-IPERF /' /tmp/iperf.log
grep -q receiver /tmp/iperf.log || exit 13
GUEST
} > "$WORK/root-b/cmd.sh"
mkdir -p "$WORK/root-t"
cp -a "$WORK/root-a/." "$WORK/root-t/"
{ guest_common; cat <<GUEST
ip addr add 10.77.0.1/24 dev eth0 && ip link set eth0 up || exit 12
echo VM-SERVER-UP
# the host's two runs: to the guest, then from it (-R)
iperf3 -s -1 > /tmp/iperf.log 2>&1 && iperf3 -s -1 >> /tmp/iperf.log 2>&1
echo "VM-SERVER-EXIT \$?"
for f in rx_packets rx_errors rx_length_errors rx_dropped tx_packets tx_errors; do
	echo "VM-STAT \$f \$(cat /sys/class/net/eth0/statistics/\$f)"
done
GUEST
} > "$WORK/root-t/cmd.sh"
vm_pack_initrd "$WORK/root-t" "$INITRD" "$WORK/initrd-t.gz"
vm_pack_initrd "$WORK/root-a" "$INITRD" "$WORK/initrd-a.gz"
vm_pack_initrd "$WORK/root-b" "$INITRD" "$WORK/initrd-b.gz"

# ---- one set-up -------------------------------------------------------------------------
OFF=",csum=off,guest_csum=off,gso=off,host_tso4=off,host_tso6=off,host_ecn=off,host_ufo=off"
OFF="$OFF,guest_tso4=off,guest_tso6=off,guest_ecn=off,guest_ufo=off"
declare -A RATE
# run SETUP: both guests, the client's receiver rate into RATE[SETUP]
run() {
	local setup=$1 con feat rate mac
	local -a qa qb
	case $setup in
	offloads-on|offloads-off)
		vm_start_net "$WORK/net-$setup.log" --mode switch --engine-mode adaptive \
			--socket-path "$WORK/a.sock" --socket-path "$WORK/b.sock" -v ||
			{ cat "$WORK/net-$setup.log"; fail "$setup: uvhost-net did not start"; return; }
		;;
	qemu-bridge)
		BRIDGE=uvhtcp-br
		if ! { ip link add "$BRIDGE" type bridge &&
		       ip tuntap add dev uvhtcp-a mode tap && ip tuntap add dev uvhtcp-b mode tap &&
		       ip link set uvhtcp-a master "$BRIDGE" && ip link set uvhtcp-b master "$BRIDGE" &&
		       ip link set uvhtcp-a up && ip link set uvhtcp-b up &&
		       ip link set "$BRIDGE" up; }; then
			fail "$setup: cannot make a bridge of two taps (ip link)"
			return
		fi
		;;
	esac
	for g in a b; do
		mac=52:54:00:77:00:0$([ $g = a ] && echo 1 || echo 2)
		vm_qemu_head 1 "$GUEST_MEM" memfd
		case $setup in
		qemu-bridge)
			# shellcheck disable=SC2054
			QARGS+=(-netdev "tap,id=n0,ifname=uvhtcp-$g,script=no,downscript=no,vhost=off"
				-device "virtio-net-pci,netdev=n0,mac=$mac,romfile=") ;;
		*)
			# vectors=0: QEMU 7.2 under TCG cannot do MSI-X with vhost-user
			# shellcheck disable=SC2054
			QARGS+=(-chardev "socket,id=c0,path=$WORK/$g.sock"
				-netdev "vhost-user,id=n0,chardev=c0"
				-device "virtio-net-pci,netdev=n0,mac=$mac,vectors=0,romfile=$([ "$setup" = offloads-off ] && echo "$OFF")") ;;
		esac
		vm_qemu_boot "$WORK/initrd-$g.gz"
		if [ $g = a ]; then qa=("${QARGS[@]}"); else qb=("${QARGS[@]}"); fi
	done
	timeout -k 5 "$VM_TIMEOUT" "$QEMU" "${qa[@]}" < /dev/null > "$WORK/con-$setup-a.log" 2>&1 &
	QA_PID=$!
	timeout -k 5 "$VM_TIMEOUT" "$QEMU" "${qb[@]}" < /dev/null > "$WORK/con-$setup-b.log" 2>&1 &
	QB_PID=$!
	wait "$QB_PID"
	QB_PID=""
	# the server ends after its one client; give it a moment, then stop it
	for _ in $(seq 50); do kill -0 "$QA_PID" 2>/dev/null || break; sleep 0.2; done
	vm_stop_pid "$QA_PID" 2
	QA_PID=""
	for g in a b; do
		tr -d '\r' < "$WORK/con-$setup-$g.log" | grep -E '^(VM-|@@VM)' | sed "s/^/  $setup-$g| /"
	done
	con=$(tr -d '\r' < "$WORK/con-$setup-b.log")
	rate=$(awk '/^VM-IPERF .*receiver/ { for (i = 1; i < NF; i++) if ($(i + 1) == "Mbits/sec") r = $i } END { print r }' <<< "$con")
	feat=$(sed -n 's/^VM-FEATURES //p' <<< "$con")
	if [ -z "$rate" ]; then
		fail "$setup: no iperf3 result"
	else
		RATE[$setup]=$rate
		pass "$setup: TCP $rate Mbit/s (iperf3 receiver, $SECS s)"
	fi
	# bits 0 CSUM, 1 GUEST_CSUM, 7 GUEST_TSO4, 11 HOST_TSO4
	if [ -n "$feat" ]; then
		say "$setup: negotiated CSUM=${feat:0:1} GUEST_CSUM=${feat:1:1} GUEST_TSO4=${feat:7:1} HOST_TSO4=${feat:11:1} MRG_RXBUF=${feat:15:1}"
		case $setup in
		offloads-on) [ "${feat:0:1}${feat:1:1}${feat:7:1}${feat:11:1}" = 1111 ] ||
				fail "$setup: the offloads were not negotiated" ;;
		offloads-off) [ "${feat:0:1}${feat:1:1}${feat:7:1}${feat:11:1}" = 0000 ] ||
				fail "$setup: offloads negotiated though turned off" ;;
		esac
	else
		fail "$setup: the guest did not report its features"
	fi
	case $setup in
	offloads-on|offloads-off)
		vm_term_net "$NET_PID" "$setup: uvhost-net"
		NET_PID=""
		grep -E 'total rx|drop|error' "$WORK/net-$setup.log" | sed "s/^/  $setup-net| /"
		grep -qE 'uvhost(-net)? error' "$WORK/net-$setup.log" &&
			fail "$setup: uvhost-net logged an error"
		;;
	qemu-bridge)
		ip link del uvhtcp-a; ip link del uvhtcp-b; ip link del "$BRIDGE"
		BRIDGE=""
		;;
	esac
}

# tap: one guest behind uvhost-net's tap, the host's own iperf3 as its peer
IPERF_HOST() {
	LD_LIBRARY_PATH="$IPDIR/root/usr/lib/x86_64-linux-gnu" "$IPDIR/root/usr/bin/iperf3" "$@"
}
run_tap() {
	local con feat r1 r2
	vm_start_net "$WORK/net-tap.log" --mode tap --tap uvhtcp-t0 --engine-mode adaptive \
		--socket-path "$WORK/t.sock" -v ||
		{ cat "$WORK/net-tap.log"; fail "tap: uvhost-net did not start"; return; }
	TAP_UP=1
	if ! { ip addr add 10.77.0.254/24 dev uvhtcp-t0 && ip link set uvhtcp-t0 up; }; then
		fail "tap: cannot configure uvhtcp-t0"
		return
	fi
	vm_qemu_head 1 "$GUEST_MEM" memfd
	# shellcheck disable=SC2054
	QARGS+=(-chardev "socket,id=c0,path=$WORK/t.sock" -netdev "vhost-user,id=n0,chardev=c0"
		-device "virtio-net-pci,netdev=n0,mac=52:54:00:77:00:01,vectors=0,romfile=")
	vm_qemu_boot "$WORK/initrd-t.gz"
	timeout -k 5 "$VM_TIMEOUT" "$QEMU" "${QARGS[@]}" < /dev/null > "$WORK/con-tap.log" 2>&1 &
	QA_PID=$!
	for _ in $(seq 120); do
		IPERF_HOST -c 10.77.0.1 -t "$SECS" -f m > "$WORK/iperf-tap-1.log" 2>&1 && break
		kill -0 "$QA_PID" 2>/dev/null || break
		sleep 1
	done
	sleep 0.5
	IPERF_HOST -c 10.77.0.1 -t "$SECS" -f m -R > "$WORK/iperf-tap-2.log" 2>&1
	for _ in $(seq 50); do kill -0 "$QA_PID" 2>/dev/null || break; sleep 0.2; done
	vm_stop_pid "$QA_PID" 2
	QA_PID=""
	tr -d '\r' < "$WORK/con-tap.log" | grep -E '^(VM-|@@VM)' | sed 's/^/  tap-guest| /'
	sed 's/^/  tap-host-to-guest| /' "$WORK/iperf-tap-1.log" | grep -E 'sender|receiver|error'
	sed 's/^/  tap-guest-to-host| /' "$WORK/iperf-tap-2.log" | grep -E 'sender|receiver|error'
	con=$(tr -d '\r' < "$WORK/con-tap.log")
	feat=$(sed -n 's/^VM-FEATURES //p' <<< "$con")
	r1=$(awk '/receiver/ { for (i = 1; i < NF; i++) if ($(i + 1) == "Mbits/sec") r = $i } END { print r }' "$WORK/iperf-tap-1.log")
	r2=$(awk '/receiver/ { for (i = 1; i < NF; i++) if ($(i + 1) == "Mbits/sec") r = $i } END { print r }' "$WORK/iperf-tap-2.log")
	if [ -n "$r1" ] && [ -n "$r2" ]; then
		pass "tap: host -> guest $r1 Mbit/s, guest -> host $r2 Mbit/s"
	else
		fail "tap: iperf3 host -> guest '${r1:-none}', guest -> host '${r2:-none}'"
	fi
	# no RX buffer handed back empty or cut (a guest counts those as errors)
	if grep -q '^VM-STAT rx_errors 0$' <<< "$con" &&
	   grep -q '^VM-STAT rx_length_errors 0$' <<< "$con"; then
		pass "tap: the guest counted no RX errors"
	else
		fail "tap: guest RX errors: $(grep '^VM-STAT rx_' <<< "$con" | tr '\n' ' ')"
	fi
	if [ -n "$feat" ]; then
		say "tap: negotiated CSUM=${feat:0:1} GUEST_CSUM=${feat:1:1} GUEST_TSO4=${feat:7:1} HOST_TSO4=${feat:11:1} MRG_RXBUF=${feat:15:1}"
		[ "${feat:0:1}${feat:1:1}${feat:7:1}${feat:11:1}" = 1111 ] ||
			fail "tap: the offloads were not negotiated"
	else
		fail "tap: the guest did not report its features"
	fi
	ip addr del 10.77.0.254/24 dev uvhtcp-t0 2>/dev/null
	TAP_UP=""
	vm_term_net "$NET_PID" "tap: uvhost-net"
	NET_PID=""
	grep -E 'total rx|drop' "$WORK/net-tap.log" | sed 's/^/  tap-net| /'
	grep -qE 'uvhost(-net)? error' "$WORK/net-tap.log" && fail "tap: uvhost-net logged an error"
}

for s in $SETUPS; do
	if [ "$s" = tap ]; then run_tap; else run "$s"; fi
done
if [ -n "${RATE[offloads-on]:-}" ] && [ -n "${RATE[offloads-off]:-}" ]; then
	say "RESULT offloads on / off: ${RATE[offloads-on]} / ${RATE[offloads-off]} Mbit/s = $(awk -v a="${RATE[offloads-on]}" -v b="${RATE[offloads-off]}" 'BEGIN { if (b > 0) printf "%.2fx", a / b }')"
fi
if [ -n "${RATE[offloads-on]:-}" ] && [ -n "${RATE[qemu-bridge]:-}" ]; then
	say "RESULT uvhost-net switch / QEMU's own networking: ${RATE[offloads-on]} / ${RATE[qemu-bridge]} Mbit/s = $(awk -v a="${RATE[offloads-on]}" -v b="${RATE[qemu-bridge]}" 'BEGIN { if (b > 0) printf "%.2fx", a / b }')"
fi
vm_finish
