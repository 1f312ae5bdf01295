#!/bin/bash
# SPDX-License-Identifier: MIT
# Usage: vm_backends.sh
# The kern and vdpa backends (backends/vhost.h) on a real kernel: Debian's
# own, booted once under QEMU (TCG), runs uvhost-vmm (the tiny VMM of
# tools/uvhost-vmm.c) against
#   - /dev/vhost-net (modprobe vhost_net), its rings' frames leaving through
#     a tap that uvhost-vmm --echo loops back (AF_PACKET on the tap): split,
#     then packed (SKIP when vhost-net does not offer RING_PACKED; 6.1 does not);
#   - /dev/vhost-vdpa-0: the vDPA simulator (vdpa_sim_net, built by
#     build_vdpa_sim.sh, as Debian does not ship it), created with
#     `vdpa dev add`, which loops TX back to RX: split, then packed (SKIP
#     when not offered).
# Each run prints what the kernel answered (features, backend features,
# device id, ring size limit, IOVA range, config MAC) and a PASS/FAIL line;
# this script checks each run's exit status and its PASS line.
# uvhost-vmm goes into the guest as built (ASan included): the binary, every
# shared library ldd names and the dynamic loader are copied into the per-run
# archive.
# Environment: UVHOST_VMM (the executable, set by meson), QEMU (default
#   qemu-system-x86_64), VM_TIMEOUT (seconds for the QEMU run, default 300),
#   VM_FRAMES (frames per run, default 512), UVH_VM_CACHE (see prepare.sh),
#   VM_KEEP=1 keeps the work folder, VM_VMM_VERBOSE (uvhost-vmm flags, e.g. -v).
# Exit 0 pass, 1 fail, 77 skip (a host requirement is missing).
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
NAME=vm-backends
# shellcheck source=tests/vm/vm_lib.sh
. "$HERE/vm_lib.sh"
VM_TIMEOUT=${VM_TIMEOUT:-300}
FRAMES=${VM_FRAMES:-512}
# ASan's shadow and quarantine want room
GUEST_MEM=1G
QEMU_PID=""

# shellcheck disable=SC2317  # run by the EXIT trap
cleanup() {
	vm_stop_pid "$QEMU_PID" 2
	vm_rm_work
}
trap cleanup EXIT
trap 'exit 130' INT TERM

case $FRAMES in ''|*[!0-9]*|0) say "VM_FRAMES must be a positive number"; exit 2 ;; esac
vm_need_exe uvhost-vmm UVHOST_VMM
vm_need_qemu
for t in timeout ldd cpio gzip; do
	command -v "$t" >/dev/null || skip "no $t on the host"
done

vm_mkwork vmb

T0=$(date +%s)
vm_prepare "$WORK" --vdpa
sed 's/^/  prepare| /' "$WORK/prepare.err"
say "kernel $KERNEL, guest ready after $(($(date +%s) - T0)) s"

# ---- uvhost-vmm and what it links, at the same paths in the guest ---------------------
R=$WORK/root
mkdir -p "$R/bin" "$R/usr/lib/uvhost"
cp -L "$UVHOST_VMM" "$R/bin/uvhost-vmm" || { say "cannot copy $UVHOST_VMM"; exit 1; }
libs=$(ldd "$UVHOST_VMM") || { say "ldd $UVHOST_VMM failed"; exit 1; }
if grep -q 'not found' <<< "$libs"; then
	say "$UVHOST_VMM: $(grep 'not found' <<< "$libs" | tr '\n' ' ')"
	exit 1
fi
# libraries go to one folder (LD_LIBRARY_PATH in the guest: the build
# tree's RUNPATH does not exist there); the loader to its ELF path
while read -r lib; do
	case $lib in
	*/ld-linux*) mkdir -p "$R$(dirname "$lib")"; cp -L "$lib" "$R$lib" ;;
	*) cp -L "$lib" "$R/usr/lib/uvhost/" ;;
	esac
done < <(grep -o '/[^ ]*' <<< "$libs")

# ---- the guest's part ------------------------------------------------------------------
VMM_FLAGS="--frames $FRAMES --timeout 20000 ${VM_VMM_VERBOSE:-}"
cat > "$R/cmd.sh" <<GUEST
export LD_LIBRARY_PATH=/usr/lib/uvhost
# LSan needs ptrace-like access it has as root; keep ASan's reports on the console
export ASAN_OPTIONS=abort_on_error=0:detect_leaks=1
up() { cut -d' ' -f1 /proc/uptime; }
vmm() { # case-name args...
	local name=\$1 t0 rc
	shift
	t0=\$(up)
	echo "VMB-BEGIN \$name"
	uvhost-vmm "\$@" $VMM_FLAGS
	rc=\$?
	echo "VMB-RC \$name \$rc \$t0 \$(up)"
}
echo "VMB-T \$(up) modprobe vhost_net"
modprobe vhost_net || echo "VMB-ERR modprobe vhost_net failed"
ls -l /dev/vhost-net /dev/net/tun
vmm kern-split --backend kern:/dev/vhost-net --tap uvt0 --echo
vmm kern-packed --backend kern:/dev/vhost-net --tap uvt1 --echo --ring packed
echo "VMB-T \$(up) modprobe vhost_vdpa vdpa_sim_net"
if modprobe vhost_vdpa && modprobe vdpa_sim_net; then
	vdpa mgmtdev show
	vdpa dev add name vdpa0 mgmtdev vdpasim_net mac 02:75:76:64:70:61 ||
		echo "VMB-ERR vdpa dev add failed"
	vdpa dev show
	for i in \$(seq 50); do [ -e /dev/vhost-vdpa-0 ] && break; sleep 0.1; done
	ls -l /dev/vhost-vdpa-0
	vmm vdpa-split --backend vdpa:/dev/vhost-vdpa-0
	vmm vdpa-packed --backend vdpa:/dev/vhost-vdpa-0 --ring packed
else
	echo "VMB-ERR modprobe vhost_vdpa / vdpa_sim_net failed"
fi
dmesg | grep -iE 'vhost|vdpa|tainted|BUG|WARNING' | tail -20
true
GUEST
vm_pack_initrd "$R" "$INITRD" "$WORK/initrd.gz"

# One vCPU, no device at all: vhost-net and vdpa_sim are inside the guest.
vm_qemu_head 1 "$GUEST_MEM"
vm_qemu_boot "$WORK/initrd.gz"
say "qemu: $QEMU ${QARGS[*]}"
LOG=$WORK/console.log
t0=$(date +%s)
timeout -k 5 "$VM_TIMEOUT" "$QEMU" "${QARGS[@]}" < /dev/null > "$LOG" 2>&1 &
QEMU_PID=$!
wait "$QEMU_PID"
qrc=$?
QEMU_PID=""
say "qemu exited rc=$qrc after $(($(date +%s) - t0)) s"
tr -d '\r' < "$LOG" | sed 's/^/  guest| /'
con=$(tr -d '\r' < "$LOG")
[ "$qrc" = 124 ] && fail "QEMU timed out after $VM_TIMEOUT s"
grep -q '^@@VM cmd-exit=0' <<< "$con" ||
	fail "guest command: $(grep -m1 '^@@VM cmd-exit' <<< "$con" || echo 'never ended')"
grep '^VMB-ERR' <<< "$con" | while IFS= read -r l; do say "guest: ${l#VMB-ERR }"; done
grep -q '^VMB-ERR' <<< "$con" && fail "guest set-up: $(grep -m1 '^VMB-ERR' <<< "$con" | cut -d' ' -f2-)"

# one case: its exit status and uvhost-vmm's own verdict must agree;
# packed may be a SKIP when the device does not offer RING_PACKED
check_case() { # name packed-may-skip
	local name=$1 may_skip=$2 line rc secs lbl t0 t1
	line=$(grep -m1 "^VMB-RC $name " <<< "$con")
	if [ -z "$line" ]; then
		fail "$name: never ran"
		return
	fi
	read -r _ _ rc t0 t1 <<< "$line"
	secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
	# uvhost-vmm[kern/split]: ... lines of this case
	lbl=$(sed -n "/^VMB-BEGIN $name\$/,/^VMB-RC $name /p" <<< "$con")
	if [ "$rc" = 0 ] && grep -q ']: PASS: ' <<< "$lbl"; then
		pass "$name: $(grep -m1 ']: PASS: ' <<< "$lbl" | sed 's/.*]: PASS: //') (${secs} s in the guest)"
	elif [ "$rc" = 77 ] && [ "$may_skip" = 1 ] && grep -q ']: SKIP: ' <<< "$lbl"; then
		say "SKIP: $name: $(grep -m1 ']: SKIP: ' <<< "$lbl" | sed 's/.*]: SKIP: //')"
	else
		fail "$name: exit $rc: $(grep -m1 -E ']: FAIL' <<< "$lbl" | sed 's/.*]: //')"
	fi
	if grep -q 'ERROR: AddressSanitizer\|runtime error:\|LeakSanitizer' <<< "$lbl"; then
		fail "$name: sanitizer report"
	fi
}
check_case kern-split 0
check_case kern-packed 1
check_case vdpa-split 0
check_case vdpa-packed 1
# what each kernel device answered, for the record
grep -E '^uvhost-vmm\[[a-z]+/split\]: (features_offered|features_acked|backend_features|device_id|vring_num_max|iova_range|config|queue_num|status_after)' <<< "$con" |
	sed 's/^/  fact| /'

say "total $(($(date +%s) - T0)) s"
vm_finish
