#!/bin/bash
# SPDX-License-Identifier: MIT
# Usage: qemu_migrate.sh
# Live migration with QEMU as the vhost-user front-end (issue 6):
#   - source: uvhost-net (loopback) on socket A and QEMU (TCG, shared RAM:
#     see VM_MIG_RAM) booting a Debian guest; destination: a second
#     uvhost-net on socket B and a second QEMU, same command line plus
#     -incoming defer;
#   - in the guest, vm-migrate (vm_migrate.c) streams sequence-numbered raw
#     frames of every length through virtio_net and checks each echo byte
#     for byte;
#   - while that traffic runs, the host migrates the guest over a unix
#     socket (qmp.py drives both QMP monitors) and waits for completion;
#   - checked: the migration completes; the guest's traffic goes on from the
#     destination (its console output continues on the destination's serial,
#     where the program finishes); no echo corrupt, stale (dup) or lost (with
#     VM_MIG_RAM=copy: every page the source back-end wrote during the
#     migration reached the destination, the dirty log); no TX watchdog, no virtio ring error; the
#     source uvhost-net mapped QEMU's dirty log (seen in its /proc maps) and
#     QEMU sent it SET_LOG_BASE (QEMU's vhost_user_write trace); the vring
#     bases the source stopped at are the ones the destination starts at;
#     both uvhost-nets exit 0 on SIGTERM with no error logged.
# Printed: frames before/after the switch-over, migration time, downtime,
# RAM pages and bytes transferred (query-migrate).
# Guest RAM (VM_MIG_RAM):
#   shared (default, the suite's): both QEMUs map one shared RAM file and
#     migrate with x-ignore-shared (a local live migration: QEMU's device
#     state moves, RAM does not). The back-end side is all there: dirty log
#     set up and LOG_ALL / F_LOG switched on running rings, GET_VRING_BASE
#     under traffic, bases handed over, the destination's rings resume.
#   copy: memfd RAM copied page by page, the dirty log deciding what is
#     sent again. Under TCG, QEMU 7.2 loses guest pages this way whenever
#     RAM is fd-backed (memfd or file, as vhost-user needs), with no
#     vhost-user device at all (VM_MIG_NET=qemu shows it): the guest then
#     breaks on the destination ("output.0:id N is not a head!"). So copy
#     mode is for KVM hosts; here it pauses the destination (-S) and
#     compares both RAMs page by page before letting it run
#     (VM_MIG_COMPARE=0 skips that), to show which pages did not arrive.
# Device (VM_MIG_NET): uvhost (default) or qemu (QEMU's own virtio-net on
#   a UDP socket that loops frames back: the control without vhost-user;
#   the back-end checks are skipped).
# Environment: as qemu_net.sh (UVHOST_NET, QEMU, UVH_VM_CACHE, VM_KEEP),
#   VM_MIG_SECS (the guest's traffic time, default 24), VM_MIG_RAM,
#   VM_MIG_NET, VM_MIG_COMPARE. Exit 0 pass, 1 fail, 77 skip.
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
NAME="vm-migrate"
# shellcheck source=tests/vm/vm_lib.sh
. "$HERE/vm_lib.sh"
PYTHON=${PYTHON:-python3}
GUEST_MEM=256M
MAC=52:54:00:12:34:58
SRC_NET=""
DST_NET=""
SRC_QEMU=""
DST_QEMU=""
MAPS_PID=""
SECS=${VM_MIG_SECS:-24}
RAM_MODE=${VM_MIG_RAM:-shared}
NET_MODE=${VM_MIG_NET:-uvhost}
COMPARE=0
[ "$RAM_MODE" = copy ] && COMPARE=${VM_MIG_COMPARE:-1}

case $SECS in ''|*[!0-9]*) say "VM_MIG_SECS must be a number"; exit 2 ;; esac
[ "$SECS" -ge 12 ] || { say "VM_MIG_SECS must be 12 or more"; exit 2; }
case $RAM_MODE in shared|copy) ;; *) say "VM_MIG_RAM must be shared or copy"; exit 2 ;; esac
case $NET_MODE in uvhost|qemu) ;; *) say "VM_MIG_NET must be uvhost or qemu"; exit 2 ;; esac
say "guest RAM: $RAM_MODE, device: $NET_MODE"

# shellcheck disable=SC2317  # run by the EXIT trap
cleanup() {
	vm_stop_pid "$MAPS_PID" 1
	vm_stop_pid "$SRC_QEMU" 2
	vm_stop_pid "$DST_QEMU" 2
	vm_stop_pid "$SRC_NET" 2
	vm_stop_pid "$DST_NET" 2
	vm_rm_work
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- requirements (as qemu_net.sh) ----------------------------------------------
[ "$NET_MODE" = uvhost ] && vm_need_exe uvhost-net UVHOST_NET
vm_need_qemu
command -v timeout >/dev/null || skip "no timeout (coreutils)"
command -v "$PYTHON" >/dev/null || skip "no $PYTHON to drive QMP"
[ "$RAM_MODE" = copy ] && vm_need_memfd
vm_need_gcc
vm_mkwork vmm
vm_prepare "$WORK"
mkdir -p "$WORK/root/bin"
vm_static_probe "$WORK"
vm_static_build "$HERE/vm_migrate.c" "$WORK/root/bin/vm-migrate"

# ---- the guest's part ---------------------------------------------------------------
vm_guest_net_cmd "$WORK/root/cmd.sh" "vm-migrate eth0 $SECS" '|unexpected'
vm_pack_initrd "$WORK/root" "$INITRD" "$WORK/initrd.gz"

# ---- the two back-ends ----------------------------------------------------------------
# -vv: the vring starts and stops (with their bases) are debug lines
start_net() { # start_net src|dst: uvhost-net on $WORK/<side>.sock, pid in NET_PID
	vm_start_net "$WORK/uvhost-net-$1.log" --socket-path "$WORK/$1.sock" --mode loopback -v -v
}
if [ "$NET_MODE" = uvhost ]; then
	start_net src || { fail "source uvhost-net did not start"; cat "$WORK/uvhost-net-src.log"; exit 1; }
	SRC_NET=$NET_PID
	start_net dst || { fail "destination uvhost-net did not start"; cat "$WORK/uvhost-net-dst.log"; exit 1; }
	DST_NET=$NET_PID
fi

# ---- the two front-ends -------------------------------------------------------------------
# vectors=0 and shared RAM for vhost-user: see qemu_net.sh. The same
# device line on both sides (only the socket differs), as migration requires. The source
# traces the requests it writes (vhost_user_write req:N) to stderr.
qargs() { # qargs src|dst
	local port=40001
	# shellcheck disable=SC2054  # the commas belong to QEMU's option syntax
	if [ "$RAM_MODE" = copy ]; then
		vm_qemu_head 1 "$GUEST_MEM" memfd
	else
		# one file both QEMUs map (x-ignore-shared: it is not copied)
		vm_qemu_head 1 "$GUEST_MEM"
		QARGS+=(-object "memory-backend-file,id=mem,size=$GUEST_MEM,mem-path=$WORK/guest-ram,share=on"
			-numa node,memdev=mem)
	fi
	QARGS+=(-qmp "unix:$WORK/qmp-$1.sock,server=on,wait=off")
	if [ "$NET_MODE" = uvhost ]; then
		QARGS+=(-chardev "socket,id=chr0,path=$WORK/$1.sock"
			-netdev "vhost-user,id=net0,chardev=chr0")
	else
		# a UDP socket sending to itself: every frame comes back
		[ "$1" = dst ] && port=40002
		QARGS+=(-netdev "socket,id=net0,udp=127.0.0.1:$port,localaddr=127.0.0.1:$port")
	fi
	QARGS+=(-device "virtio-net-pci,netdev=net0,mac=$MAC,vectors=0,romfile=")
	vm_qemu_boot "$WORK/initrd.gz"
	if [ "$1" = dst ]; then
		QARGS+=(-incoming defer)
		# paused after the migration until both RAMs are compared
		[ "$COMPARE" = 1 ] && QARGS+=(-S)
	elif [ "$NET_MODE" = uvhost ]; then
		QARGS+=(-trace vhost_user_write)
	fi
}
QTIME=$((SECS + 120))
qargs dst
timeout -k 5 $QTIME "$QEMU" "${QARGS[@]}" < /dev/null > "$WORK/console-dst.log" 2> "$WORK/qemu-dst.err" &
DST_QEMU=$!
qargs src
timeout -k 5 $QTIME "$QEMU" "${QARGS[@]}" < /dev/null > "$WORK/console-src.log" 2> "$WORK/qemu-src.err" &
SRC_QEMU=$!
qmp() { "$PYTHON" "$HERE/qmp.py" "$@"; }

echoed() { vm_echoed "$1"; } # the last progress count on console FILE

# the source uvhost-net maps QEMU's dirty log ("vhost-log" memfd) while
# the migration runs: look for it in its maps until told to stop
watch_maps() {
	[ "$NET_MODE" = uvhost ] || return 0
	while kill -0 "$SRC_NET" 2>/dev/null; do
		grep -m1 'vhost-log' "/proc/$SRC_NET/maps" >> "$WORK/log-maps" 2>/dev/null
		[ -s "$WORK/log-maps" ] && break
		sleep 0.05
	done
}

# compare_ram: the source stopped, the destination paused before its first
# instruction: their RAMs must be equal page for page. Differing pages are
# listed (guest-physical address, first and last byte that differ).
compare_ram() {
	local size n
	size=$(numfmt --from=iec "$GUEST_MEM")
	for side in src dst; do
		qmp "$WORK/qmp-$side.sock" pmemsave \
			"{\"val\": 0, \"size\": $size, \"filename\": \"$WORK/ram-$side.img\"}" > /dev/null ||
			{ fail "QMP pmemsave on the $side failed"; return; }
	done
	"$PYTHON" - "$WORK/ram-src.img" "$WORK/ram-dst.img" > "$WORK/ramdiff.txt" <<'PY'
import sys
a = open(sys.argv[1], "rb").read()
b = open(sys.argv[2], "rb").read()
diff = []
for off in range(0, min(len(a), len(b)), 4096):
    pa, pb = a[off:off + 4096], b[off:off + 4096]
    if pa != pb:
        d = [i for i in range(4096) if pa[i] != pb[i]]
        diff.append("0x%x (bytes %d..%d)" % (off, d[0], d[-1]))
print(len(diff) if len(a) == len(b) else "size")
for line in diff[:12]:
    print(line)
PY
	rm -f "$WORK/ram-src.img" "$WORK/ram-dst.img"
	n=$(head -n 1 "$WORK/ramdiff.txt")
	if [ "$n" = 0 ]; then
		pass "RAM: source and destination equal page for page"
	else
		fail "RAM: $n pages differ between the source and the destination:" \
			"$(tail -n +2 "$WORK/ramdiff.txt" | tr '\n' ' ')"
	fi
	qmp "$WORK/qmp-dst.sock" cont > /dev/null || fail "QMP cont on the destination failed"
}

MIG_OK=0
if ! vm_wait_con "$WORK/console-src.log" '^VM-TRAFFIC start' 90 "$SRC_QEMU"; then
	fail "the guest's traffic did not start on the source"
else
	# traffic must flow before the migration starts
	for _ in $(seq 100); do
		[ "$(echoed "$WORK/console-src.log")" -gt 300 ] 2>/dev/null && break
		sleep 0.1
	done
	e0=$(echoed "$WORK/console-src.log")
	say "source: $e0 frames echoed before the migration started"
	watch_maps &
	MAPS_PID=$!
	MIG=$WORK/mig.sock
	CAPS='{"capabilities": [{"capability": "x-ignore-shared", "state": true}]}'
	if [ "$RAM_MODE" = shared ]; then
		qmp "$WORK/qmp-dst.sock" migrate-set-capabilities "$CAPS" > /dev/null &&
			qmp "$WORK/qmp-src.sock" migrate-set-capabilities "$CAPS" > /dev/null ||
			fail "QMP: x-ignore-shared refused"
	fi
	# max-bandwidth in bytes/s: converge quickly although the guest runs
	if qmp "$WORK/qmp-dst.sock" migrate-incoming "{\"uri\": \"unix:$MIG\"}" > /dev/null &&
	   qmp "$WORK/qmp-src.sock" migrate-set-parameters \
		'{"max-bandwidth": 4294967296, "downtime-limit": 300}' > /dev/null &&
	   qmp "$WORK/qmp-src.sock" migrate "{\"uri\": \"unix:$MIG\"}" > /dev/null; then
		qmp "$WORK/qmp-src.sock" wait-migrate 60 > "$WORK/migrate.json"
		qrc=$?
		e1=$(echoed "$WORK/console-src.log")
		if [ $qrc = 0 ]; then
			MIG_OK=1
			pass "migration completed"
		else
			fail "migration did not complete: $(cat "$WORK/migrate.json")"
		fi
	else
		fail "QMP commands to start the migration failed"
	fi
	vm_stop_pid "$MAPS_PID" 1
	MAPS_PID=""
fi

if [ $MIG_OK = 1 ]; then
	# query-migrate's figures
	"$PYTHON" - "$WORK/migrate.json" > "$WORK/migrate.txt" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
r = m.get("ram", {})
print("total-time %s ms, downtime %s ms, setup %s ms; ram: transferred %s bytes, "
      "normal %s pages (%s bytes), duplicate %s pages, dirty-sync-count %s, "
      "mbps %s" % (m.get("total-time"), m.get("downtime"), m.get("setup-time"),
      r.get("transferred"), r.get("normal"), r.get("normal-bytes"), r.get("duplicate"),
      r.get("dirty-sync-count"), r.get("mbps")))
PY
	say "query-migrate: $(cat "$WORK/migrate.txt")"
	[ "$COMPARE" = 1 ] && compare_ram
	if qmp "$WORK/qmp-dst.sock" wait-status running 10 > /dev/null; then
		pass "destination running"
	else
		fail "destination not running: $(qmp "$WORK/qmp-dst.sock" query-status)"
	fi
	st=$(qmp "$WORK/qmp-src.sock" query-status)
	grep -q '"postmigrate"' <<< "$st" && pass "source stopped in postmigrate" ||
		fail "source status: $st"
	say "source: $e1 frames echoed when the migration completed"
	# the source has handed the guest over: it goes
	qmp "$WORK/qmp-src.sock" quit > /dev/null 2>&1
fi
# the source QEMU leaves (quit, or the guest's own end if never migrated)
for _ in $(seq 100); do kill -0 "$SRC_QEMU" 2>/dev/null || break; sleep 0.1; done
vm_stop_pid "$SRC_QEMU" 2
SRC_QEMU=""
if [ $MIG_OK = 1 ]; then
	wait "$DST_QEMU"
	drc=$?
	DST_QEMU=""
	[ "$drc" = 124 ] && fail "destination QEMU timed out"
	[ "$drc" = 0 ] || fail "destination QEMU exited $drc"
fi
vm_stop_pid "$DST_QEMU" 2
DST_QEMU=""

src=$(tr -d '\r' < "$WORK/console-src.log")
dst=$(tr -d '\r' < "$WORK/console-dst.log")
grep -vE '^VM-PROGRESS' <<< "$src" | sed 's/^/  src| /' | tail -n 30
grep -vE '^VM-PROGRESS' <<< "$dst" | sed 's/^/  dst| /' | tail -n 40
for side in src dst; do
	grep -vE 'vhost_user_write' "$WORK/qemu-$side.err" | sed "s/^/  qemu-$side| /" | tail -n 10
done

if [ $MIG_OK = 1 ]; then
	# the guest program went on and ended on the destination
	before=$(echoed "$WORK/console-src.log")
	first=$(echoed <(head -n 5 <<< "$(grep '^VM-PROGRESS' <<< "$dst")"))
	res=$(grep -m1 '^VM-MIGRATE ' <<< "$dst")
	grep -q '^VM-MIGRATE ' <<< "$src" && fail "the guest program ended on the source"
	if [ -z "$res" ]; then
		fail "the guest program did not finish on the destination"
	else
		val() { sed -n "s/.* $1=\([0-9]*\).*/\1/p" <<< "$res"; }
		after=$(( $(val echoed) - ${before:-0} ))
		say "guest: ${res#VM-MIGRATE }"
		say "frames echoed: ${before:-0} by the source (last report there), $after after it" \
			"(first report on the destination: ${first:-none})"
		[ -n "$first" ] && [ "$after" -ge 300 ] &&
			pass "traffic went on from the destination ($after echoes after the switch-over)" ||
			fail "too little traffic after the switch-over ($after echoes)"
		[ "$(val bad)" = 0 ] && pass "every echo intact" || fail "$(val bad) echoes corrupt"
		[ "$(val dup)" = 0 ] && pass "no stale echo (no frame seen twice)" ||
			fail "$(val dup) frames echoed twice (stale RX pages?)"
		[ "$(val lost)" = 0 ] && pass "no frame lost" || fail "$(val lost) frames never echoed"
		say "longest spell without an echo (guest clock): $(val max_gap_ms) ms"
	fi
	grep -q '^@@VM cmd-exit=0' <<< "$dst" && pass "the guest finished on the destination" ||
		fail "guest command: $(grep -m1 '^@@VM cmd-exit' <<< "$dst" || echo 'never ended')"
	vm_check_guest_net "$dst"

	if [ "$NET_MODE" = uvhost ]; then
		# dirty logging: QEMU sent SET_LOG_BASE (req 6), and SET_FEATURES
		# (req 2) again to turn LOG_ALL on; the source back-end mapped the log
		nlog=$(grep -c 'vhost_user_write req:6 ' "$WORK/qemu-src.err")
		nfeat=$(grep -c 'vhost_user_write req:2 ' "$WORK/qemu-src.err")
		[ "$nlog" -ge 1 ] && [ "$nfeat" -ge 2 ] &&
			pass "QEMU sent SET_LOG_BASE $nlog time(s), SET_FEATURES $nfeat times" ||
			fail "QEMU sent SET_LOG_BASE $nlog time(s), SET_FEATURES $nfeat time(s)"
		if [ -s "$WORK/log-maps" ]; then
			pass "the source uvhost-net mapped the dirty log: $(head -n 1 "$WORK/log-maps" |
				awk '{ print $1, $2, $6, $7 }')"
		else
			fail "the source uvhost-net never mapped QEMU's dirty log"
		fi
		# the destination's rings start where the source's stopped
		# (GET_VRING_BASE there, migrated, SET_VRING_BASE here)
		for q in 0 1; do
			sb=$(sed -n "s/.*vring $q stopped at \(0x[0-9a-f]*\).*/\1/p" "$WORK/uvhost-net-src.log" | tail -n 1)
			db=$(sed -n "s/.*vring $q started on .* base \(0x[0-9a-f]*\)).*/\1/p" \
				"$WORK/uvhost-net-dst.log" | head -n 1)
			if [ -n "$sb" ] && [ "$sb" = "$db" ]; then
				pass "vring $q: source stopped at $sb, destination started at $db"
			else
				fail "vring $q: source stopped at '${sb:-?}', destination started at '${db:-?}'"
			fi
		done
	fi
fi

# both back-ends: clean stop, no error logged
[ "$NET_MODE" = uvhost ] || vm_finish
for side in src dst; do
	if [ $side = src ]; then pid=$SRC_NET; SRC_NET=""; else pid=$DST_NET; DST_NET=""; fi
	vm_term_net "$pid" "$side uvhost-net"
	f=$WORK/uvhost-net-$side.log
	grep -vE 'vring [0-9]+ (started|stopped)' "$f" | sed "s/^/  net-$side| /" | tail -n 15
	if grep -qE 'uvhost(-net)? error|AddressSanitizer|runtime error|LeakSanitizer' "$f"; then
		grep -m3 -E 'uvhost(-net)? error|AddressSanitizer|runtime error|LeakSanitizer' "$f" |
			sed "s/^/  net-$side| /"
		fail "$side uvhost-net logged an error"
	else
		pass "$side uvhost-net logged no error"
	fi
done

vm_finish
