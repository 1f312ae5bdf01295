#!/bin/bash
# SPDX-License-Identifier: MIT
# Usage: prepare.sh [--vdpa]
# Makes (once) and prints the guest the vm suite boots: Debian's own kernel
# (the linux-image-amd64 of the host's release, fetched with `apt-get
# download`, never installed) and a busybox initramfs with the virtio-net
# modules and vhost-net (vhost, vhost_iotlb, tun, tap). With --vdpa, the
# vDPA simulator is built first (build_vdpa_sim.sh: vringh, vdpa,
# vhost_vdpa, vdpa_sim, vdpa_sim_net) and iproute2's `vdpa` tool (with the
# shared libraries it needs) is required; once built, both are in every
# initramfs made from then on. Everything lives in the cache folder
#   $UVH_VM_CACHE, else $XDG_CACHE_HOME/uvhost-vm, else ~/.cache/uvhost-vm
# and is reused while the kernel version and this script stay the same.
# On success the last two lines of stdout are KERNEL=<path> and INITRD=<path>.
# Exit 77 (with the reason on stderr) when a tool the host must provide is
# missing (CI counts that as a failure too: .ci/expected-skips), 1 on any
# other failure, a failed package download included.
set -euo pipefail
CACHE=${UVH_VM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/uvhost-vm}
MODULES="virtio_pci virtio_net vhost_net"
# out of tree (build_vdpa_sim.sh), added when they were built
VDPA_MODULES="vhost_vdpa vdpa_sim_net"
WANT_VDPA=0
case ${1:-} in
--vdpa) WANT_VDPA=1 ;;
'') ;;
*) echo "usage: prepare.sh [--vdpa]" >&2; exit 2 ;;
esac
HERE=$(cd "$(dirname "$0")" && pwd)

skip() { echo "SKIP: $*" >&2; exit 77; }
die() { echo "prepare: $*" >&2; exit 1; }

for t in apt-get apt-cache dpkg-deb depmod modprobe cpio gzip xz flock; do
	command -v "$t" >/dev/null || skip "no $t on the host (see .ci/setup)"
done
BUSYBOX=$(command -v busybox || true)
[ -n "$BUSYBOX" ] || skip "no busybox (apt-get install busybox-static)"
# a dynamic busybox would need the host's libc inside the guest
LC_ALL=C readelf -l "$BUSYBOX" 2>/dev/null | grep -q 'INTERP' &&
	skip "$BUSYBOX is not static (apt-get install busybox-static)"

mkdir -p "$CACHE" || die "cannot create $CACHE"
# several build dirs may run the suite at once: one preparer at a time
exec 9>"$CACHE/.lock"
flock -w 600 9 || die "timed out waiting for $CACHE/.lock"

# linux-image-amd64 is a meta package: follow it to the real image package
resolve() {
	local pkg=linux-image-amd64 dep
	while dep=$(apt-cache depends "$pkg" 2>/dev/null |
		    awk '/Depends: linux-image-/ { print $2; exit }') && [ -n "$dep" ]; do
		pkg=$dep
	done
	[ "$pkg" != linux-image-amd64 ] && echo "$pkg"
}
PKG=$(resolve || true)
if [ -z "$PKG" ] && [ "$(id -u)" = 0 ]; then
	# fresh machine: the package lists were never fetched
	apt-get -o DPkg::Lock::Timeout=600 update -qq >&2 || true
	PKG=$(resolve || true)
fi
if [ -z "$PKG" ]; then
	# offline but prepared before: use what the cache has
	last=$(ls -1d "$CACHE"/*/stamp 2>/dev/null | tail -1 || true)
	[ -n "$last" ] || die "apt does not know linux-image-amd64 (run apt-get update)"
	PKG=linux-image-$(basename "$(dirname "$last")")
fi
KVER=${PKG#linux-image-}
DIR=$CACHE/$KVER

VDPA_TOOL=$(command -v vdpa || true)
if [ $WANT_VDPA = 1 ]; then
	[ -n "$VDPA_TOOL" ] || skip "no vdpa tool (apt-get install iproute2)"
	command -v ldd >/dev/null || skip "no ldd (libc-bin) to copy the vdpa tool's libraries"
	# the simulator's own lock; the stamp keeps a warm cache quick
	bash "$HERE/build_vdpa_sim.sh" "$KVER" > "$CACHE/.vdpa.out" || exit $?
fi
EXTRA=$CACHE/vdpa/sim-$KVER
[ -f "$EXTRA/stamp" ] || EXTRA=""
# the stamp changes when this script, busybox, the vdpa tool or the
# simulator's modules change: then rebuild
STAMP=$( (cat "$0"; cksum < "$BUSYBOX"
	  if [ -n "$EXTRA" ]; then cat "$EXTRA/stamp"; [ -n "$VDPA_TOOL" ] && cksum < "$VDPA_TOOL"; fi) |
	cksum | cut -d' ' -f1)
if [ -f "$DIR/stamp" ] && [ "$(cat "$DIR/stamp")" = "$STAMP" ] &&
   [ -f "$DIR/vmlinux" ] && [ -f "$DIR/initramfs.cpio.gz" ]; then
	echo "KERNEL=$DIR/vmlinux"
	echo "INITRD=$DIR/initramfs.cpio.gz"
	exit 0
fi

echo "prepare: building the guest for $KVER in $DIR" >&2
mkdir -p "$CACHE/debs"
DEB=$(ls -1 "$CACHE/debs/${PKG}"_*.deb 2>/dev/null | tail -1 || true)
if [ -z "$DEB" ]; then
	# an older kernel's package is of no more use
	rm -f "$CACHE"/debs/*.deb
	# apt's sandbox user may not write here; the warning about it is noise
	(cd "$CACHE/debs" && apt-get download "$PKG" 2>&1 | grep -v unsandboxed >&2) || true
	DEB=$(ls -1 "$CACHE/debs/${PKG}"_*.deb 2>/dev/null | tail -1 || true)
	if [ -z "$DEB" ]; then
		# offline with a newer kernel announced: an older guest still does
		for d in "$CACHE"/*/; do
			if [ -f "$d/stamp" ] && [ "$(cat "$d/stamp")" = "$STAMP" ]; then
				echo "prepare: apt-get download $PKG failed, using ${d%/}" >&2
				echo "KERNEL=${d}vmlinux"
				echo "INITRD=${d}initramfs.cpio.gz"
				exit 0
			fi
		done
		die "apt-get download $PKG failed (no network or package lists?)"
	fi
fi

TMP=$(mktemp -d "$CACHE/tmp.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
X=$TMP/x
dpkg-deb -x "$DEB" "$X" || die "dpkg-deb -x $DEB failed"
VMLINUZ=$X/boot/vmlinuz-$KVER
[ -f "$VMLINUZ" ] || die "$DEB has no boot/vmlinuz-$KVER"

# The ELF vmlinux inside the bzImage has a PVH entry note: QEMU boots it
# directly, skipping real mode and the in-guest decompressor, which take
# seconds under TCG. Find the xz (or zstd) stream that decompresses to ELF.
OUT=$TMP/vmlinux
for magic in '\xfd\x37\x7a\x58\x5a\x00' '\x28\xb5\x2f\xfd'; do
	for off in $(LC_ALL=C grep -obUaP "$magic" "$VMLINUZ" | cut -d: -f1); do
		case $magic in
		'\xfd'*) tail -c +$((off + 1)) "$VMLINUZ" | xz -dcq > "$OUT" 2>/dev/null || true ;;
		*) tail -c +$((off + 1)) "$VMLINUZ" | zstd -dcq > "$OUT" 2>/dev/null || true ;;
		esac
		[ "$(head -c 4 "$OUT" | od -An -c | tr -d ' ')" = '177ELF' ] && break 2
		rm -f "$OUT"
	done
done
# no ELF found: QEMU boots the bzImage too, only slower
[ -f "$OUT" ] || cp "$VMLINUZ" "$OUT"

# the simulator's modules join the extracted tree, so depmod sees them
if [ -n "$EXTRA" ]; then
	mkdir -p "$X/lib/modules/$KVER/extra"
	cp "$EXTRA"/*.ko "$X/lib/modules/$KVER/extra/"
	MODULES="$MODULES $VDPA_MODULES"
fi
# module closure, resolved on the host against the extracted tree
depmod -b "$X" "$KVER"
R=$TMP/root
mkdir -p "$R"/{bin,sbin,usr/bin,usr/sbin,proc,sys,dev,tmp,etc,lib/modules/"$KVER"}
cp "$BUSYBOX" "$R/bin/busybox"
for m in $MODULES; do
	deps=$(modprobe -d "$X" -S "$KVER" --show-depends "$m") || die "module $m missing in $KVER"
	echo "$deps" | awk '$1 == "insmod" { print $2 }' | while read -r f; do
		rel=${f#"$X/lib/modules/$KVER/"}
		dst=$R/lib/modules/$KVER/${rel%.xz}
		dst=${dst%.zst}
		mkdir -p "$(dirname "$dst")"
		case $f in
		*.xz) xz -dc "$f" > "$dst" ;;
		*.zst) zstd -qdc "$f" > "$dst" ;;
		*) cp "$f" "$dst" ;;
		esac
	done
done
cp "$X/lib/modules/$KVER"/modules.{order,builtin,builtin.modinfo} "$R/lib/modules/$KVER/" 2>/dev/null || true
depmod -b "$R" "$KVER"

# iproute2's vdpa creates the simulator's device: the binary, the shared
# libraries ldd names and the dynamic loader, at their host paths
if [ -n "$EXTRA" ] && [ -n "$VDPA_TOOL" ]; then
	bin=$(readlink -f "$VDPA_TOOL")
	for f in "$bin" $(ldd "$bin" | grep -o '/[^ ]*'); do
		mkdir -p "$R$(dirname "$f")"
		cp -L "$f" "$R$f"
	done
	[ "$bin" = /usr/sbin/vdpa ] || cp -L "$bin" "$R/usr/sbin/vdpa"
fi

# /init runs /cmd.sh (appended per run as a second cpio archive) and powers
# off; the markers tell the host where the command began and how it ended.
cat > "$R/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
echo "@@VM init uptime=$(cut -d' ' -f1 /proc/uptime) kernel=$(uname -r)"
if [ -f /cmd.sh ]; then sh /cmd.sh; rc=$?; else echo "no /cmd.sh"; rc=99; fi
echo "@@VM cmd-exit=$rc uptime=$(cut -d' ' -f1 /proc/uptime)"
poweroff -f
INIT
chmod +x "$R/init"
(cd "$R" && find . -print0 | cpio --null -o -H newc --quiet | gzip -1) > "$TMP/initramfs.cpio.gz"

# replace the whole cache entry; drop other kernels' entries
for d in "$CACHE"/*/; do
	[ -f "$d/stamp" ] && [ "$d" != "$DIR/" ] && rm -rf "$d"
done
rm -rf "$DIR"
mkdir -p "$DIR"
mv "$OUT" "$TMP/initramfs.cpio.gz" "$DIR/"
echo "$STAMP" > "$DIR/stamp"
echo "prepare: $(du -sh "$DIR" | cut -f1) in $DIR" >&2
echo "KERNEL=$DIR/vmlinux"
echo "INITRD=$DIR/initramfs.cpio.gz"
