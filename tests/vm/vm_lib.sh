# SPDX-License-Identifier: MIT
# Shared set-up of the vm scripts (qemu_net.sh, qemu_restart.sh,
# qemu_migrate.sh, vm_backends.sh), sourced after they set NAME:
# reporting, stopping processes, host requirements, the work folder, the
# guest kernel and initramfs (prepare.sh), the static guest programs and the
# per-run archive. The caller owns WORK, FAILED and its pids; functions that
# must stop the run exit 1 (broken) or 77 (host requirement missing).
# shellcheck shell=bash

VM_LIB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
QEMU=${QEMU:-qemu-system-x86_64}
GCC=${VM_GCC:-gcc}
FAILED=0
WORK=""
# Debian's kernel under TCG: no KASLR or mitigations (speed), no IPv6 (no
# router solicitations on the wire), panic=-1 with -no-reboot ends QEMU
VM_APPEND="console=ttyS0 panic=-1 loglevel=4 mitigations=off nokaslr edd=off ipv6.disable=1"

say() { printf '%s: %s\n' "$NAME" "$*"; }
pass() { printf '%s: PASS: %s\n' "$NAME" "$*"; }
fail() { printf '%s: FAIL: %s\n' "$NAME" "$*"; FAILED=1; }
skip() { printf '%s: SKIP: %s\n' "$NAME" "$*"; exit 77; }

# vm_stop_pid PID SECS: TERM, then KILL after SECS; reaps it. Empty PID: no-op.
# shellcheck disable=SC2317  # run by the callers' EXIT traps
vm_stop_pid() {
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

# vm_rm_work: removes WORK, or keeps it (and says where) with VM_KEEP=1.
# shellcheck disable=SC2317  # run by the callers' EXIT traps
vm_rm_work() {
	[ -n "$WORK" ] || return 0
	if [ "${VM_KEEP:-0}" = 1 ]; then say "work folder kept: $WORK"; else rm -rf "$WORK"; fi
}

# vm_need_exe LABEL VAR: the executable named by environment variable VAR
# (set by meson) must exist; a build without it is broken, not a skip.
vm_need_exe() {
	local path=${!2:-}
	[ -n "$path" ] && [ -x "$path" ] && return 0
	say "$1 not found ($2='$path')"
	exit 1
}

# vm_need_qemu: QEMU must be installed.
vm_need_qemu() {
	command -v "$QEMU" >/dev/null || skip "no $QEMU (apt-get install qemu-system-x86)"
}

# vm_need_memfd: vhost-user needs guest RAM in a shareable memfd.
vm_need_memfd() {
	"$QEMU" -object help 2>/dev/null | grep -q memory-backend-memfd ||
		skip "$QEMU has no memory-backend-memfd"
}

# vm_need_gcc: the guest programs are built with GCC -static.
vm_need_gcc() {
	command -v "$GCC" >/dev/null || skip "no gcc to build the static guest program"
}

# vm_mkwork TAG: a fresh WORK folder (uvh-TAG.XXXXXX); the kernel cache is
# UVH_VM_CACHE, XDG_CACHE_HOME, HOME, else the build dir's (meson) or WORK's.
vm_mkwork() {
	WORK=$(mktemp -d "${TMPDIR:-/tmp}/uvh-$1.XXXXXX") || { WORK=""; say "mktemp failed"; exit 1; }
	if [ -z "${UVH_VM_CACHE:-}" ] && [ -z "${XDG_CACHE_HOME:-}" ] && [ -z "${HOME:-}" ]; then
		export UVH_VM_CACHE=${UVH_VM_BUILD_CACHE:-$WORK/cache}
	fi
}

# vm_prepare DIR [ARGS...]: runs prepare.sh ARGS (output in DIR) and sets
# KERNEL and INITRD; its skip is ours, its failure ends the run.
vm_prepare() {
	local dir=$1 rc
	shift
	bash "$VM_LIB_DIR/prepare.sh" "$@" > "$dir/prepare.out" 2> "$dir/prepare.err"
	rc=$?
	if [ $rc != 0 ]; then
		cat "$dir/prepare.err"
		[ $rc = 77 ] && skip "$(grep -m1 '^SKIP: ' "$dir/prepare.err" | cut -d' ' -f2-)"
		say "prepare.sh${*:+ $*} failed (rc=$rc)"
		exit 1
	fi
	KERNEL=$(sed -n 's/^KERNEL=//p' "$dir/prepare.out")
	# shellcheck disable=SC2034  # the callers' vm_pack_initrd BASE
	INITRD=$(sed -n 's/^INITRD=//p' "$dir/prepare.out")
}

# vm_static_probe DIR: a host that cannot link static programs at all is a
# skip (a program of ours that does not build is a failure: vm_static_build).
vm_static_probe() {
	printf 'int main(void) { return 0; }\n' > "$1/t.c"
	"$GCC" -static -o "$1/t" "$1/t.c" 2> "$1/gcc.err" ||
		{ cat "$1/gcc.err"; skip "$GCC cannot link static programs (libc6-dev with libc.a?)"; }
}

# vm_static_build SRC OUT: the guest program SRC, static, or FAIL and exit 1.
vm_static_build() {
	"$GCC" -static -O2 -Wall -Wextra -o "$2" "$1" ||
		{ fail "$(basename "$1") does not build"; exit 1; }
}

# vm_pack_initrd ROOT BASE OUT: ROOT as a cpio archive appended to the
# initramfs BASE, into OUT (the kernel unpacks concatenated archives one
# after the other, so ROOT's files land on top of BASE's).
vm_pack_initrd() {
	local run
	run=$(dirname "$3")/run.cpio.gz
	(cd "$1" && find . | cpio -o -H newc --quiet | gzip -1) > "$run" ||
		{ say "cpio failed"; exit 1; }
	cat "$2" "$run" > "$3"
}

# vm_qemu_head SMP MEM [memfd]: QARGS = the machine (TCG q35, serial on
# stdio, no default device), with RAM in a shared memfd when asked
# (vhost-user maps it); the caller adds its devices, then vm_qemu_boot.
vm_qemu_head() {
	QARGS=(-machine q35 -accel tcg -cpu max -smp "$1" -m "$2")
	# shellcheck disable=SC2054  # the commas belong to QEMU's option syntax
	[ "${3:-}" = memfd ] &&
		QARGS+=(-object "memory-backend-memfd,id=mem,size=$2,share=on" -numa node,memdev=mem)
	QARGS+=(-nographic -nodefaults -no-reboot -display none -serial stdio)
}

# vm_qemu_boot INITRD: appends the kernel, INITRD and the command line to QARGS.
vm_qemu_boot() {
	QARGS+=(-kernel "$KERNEL" -initrd "$1" -append "$VM_APPEND")
}

# vm_start_net LOG ARGS...: uvhost-net ARGS in the background, output in
# LOG, pid in NET_PID; 0 once it logged "listening on", 1 if it died or
# took 5 s.
vm_start_net() {
	local log=$1
	shift
	"$UVHOST_NET" "$@" > "$log" 2>&1 < /dev/null &
	NET_PID=$!
	for _ in $(seq 100); do
		grep -q 'listening on' "$log" 2>/dev/null && return 0
		kill -0 "$NET_PID" 2>/dev/null || return 1
		sleep 0.05
	done
	return 1
}

# vm_term_net PID LABEL: uvhost-net PID must still run and exit 0 within
# 5 s of SIGTERM (PASS/FAIL lines start with LABEL); killed if it does not.
vm_term_net() {
	local pid=$1 nrc
	if ! kill -0 "$pid" 2>/dev/null; then
		wait "$pid"
		fail "$2 died during the run (status $?)"
		return
	fi
	kill -TERM "$pid"
	for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
	if kill -0 "$pid" 2>/dev/null; then
		fail "$2 still running 5 s after SIGTERM"
		vm_stop_pid "$pid" 1
		return
	fi
	wait "$pid"
	nrc=$?
	if [ $nrc = 0 ]; then pass "$2 exited 0 on SIGTERM"; else fail "$2 exited $nrc on SIGTERM"; fi
}

# vm_wait_con FILE REGEX SECS PID: 0 once console FILE has a line matching
# REGEX; 1 after SECS or when QEMU PID is gone.
vm_wait_con() {
	for _ in $(seq $(($3 * 10))); do
		tr -d '\r' < "$1" | grep -qE -- "$2" && return 0
		kill -0 "$4" 2>/dev/null || return 1
		sleep 0.1
	done
	return 1
}

# vm_echoed FILE: the guest program's last VM-PROGRESS echo count on FILE.
vm_echoed() {
	tr -d '\r' < "$1" | sed -n 's/^VM-PROGRESS .* echoed=\([0-9]*\)$/\1/p' | tail -n 1
}

# vm_guest_net_cmd OUT PROGRAM [RINGERR_EXTRA]: writes the guest's cmd.sh to
# OUT: eth0 (virtio_net) up, its features reported (VM-FEATURES), PROGRAM
# run, then the TX watchdog and virtio ring errors counted from dmesg for
# vm_check_guest_net (RINGERR_EXTRA: more alternatives for the ring regex).
vm_guest_net_cmd() {
	cat > "$1" <<GUEST
modprobe virtio_pci && modprobe virtio_net || exit 10
for i in \$(seq 100); do [ -e /sys/class/net/eth0 ] && break; sleep 0.1; done
[ -e /sys/class/net/eth0 ] || exit 11
echo "VM-FEATURES \$(cat /sys/class/net/eth0/device/features)"
ip link set eth0 up || exit 12
for i in \$(seq 50); do [ "\$(cat /sys/class/net/eth0/operstate)" = up ] && break; sleep 0.1; done
$2 || exit 13
echo "VM-WATCHDOG \$(dmesg | grep -c 'transmit queue [0-9]* timed out')"
echo "VM-RINGERR \$(dmesg | grep -ciE 'not a head|vring.*broken|used len|id [0-9]+ out of range${3:-}')"
dmesg | grep -iE 'virtio|eth0|watchdog' | tail -n 20 | sed 's/^/VM-DMESG /'
GUEST
}

# vm_check_guest_net CONSOLE: the VM-WATCHDOG and VM-RINGERR counts the
# guest reported (cmd.sh, from dmesg) must both be 0.
vm_check_guest_net() {
	local wd re
	wd=$(sed -n 's/^VM-WATCHDOG //p' <<< "$1")
	if [ "$wd" = 0 ]; then
		pass "virtio_net's TX watchdog never fired"
	else
		fail "TX watchdog: '${wd:-no report}' (transmit queue timed out)"
	fi
	re=$(sed -n 's/^VM-RINGERR //p' <<< "$1")
	if [ "$re" = 0 ]; then
		pass "the guest's virtio ring never broke"
	else
		fail "virtio ring errors in the guest: '${re:-no report}'"
	fi
}

# vm_finish: the verdict line and exit status (0 pass, 1 fail).
vm_finish() {
	if [ "$FAILED" = 0 ]; then
		say "PASS"
		exit 0
	fi
	say "FAIL"
	exit 1
}
