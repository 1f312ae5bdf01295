#!/bin/bash
# SPDX-License-Identifier: MIT
# Usage: build_vdpa_sim.sh KVER
# Builds the vDPA simulator for Debian's kernel KVER (e.g. 6.1.0-56-amd64),
# which Debian does not ship built (bookworm's 6.1 has CONFIG_VDPA off): the
# modules vringh, vdpa, vhost_vdpa, vdpa_sim and vdpa_sim_net, out of tree,
# from Debian's own linux-source against Debian's linux-headers and
# linux-kbuild (all fetched with `apt-get download` and unpacked with
# dpkg-deb, never installed). Debian's kernel loads them unsigned (module
# signatures are not enforced; the kernel is tainted, nothing more).
#
# Cache: the vdpa/ folder of prepare.sh's ($UVH_VM_CACHE, else
# $XDG_CACHE_HOME/uvhost-vm, else ~/.cache/uvhost-vm):
#   vdpa/src-SRCVER/   drivers/vdpa and drivers/vhost of linux-source (the
#                      ~140 MB package is fetched once, only these two folders
#                      kept, the package deleted)
#   vdpa/hdr-KVER/     the unpacked headers + kbuild packages (~80 MB)
#   vdpa/sim-KVER/     *.ko and a stamp (kernel, source version, this
#                      script, compiler): rebuilt only when one changes
# Prints MODULES=<folder> as the last line of stdout. Exit 77 (reason on
# stderr) when the host lacks a tool, 1 on any other failure (a failed
# package download included).
set -euo pipefail
CACHE=${UVH_VM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/uvhost-vm}/vdpa
KVER=${1:?usage: build_vdpa_sim.sh KVER}
# the modules the kernel lacks, in load order
MODS="vringh vdpa vhost_vdpa vdpa_sim vdpa_sim_net"

skip() { echo "SKIP: $*" >&2; exit 77; }
die() { echo "build_vdpa_sim: $*" >&2; exit 1; }

# Debian's 6.1 headers are built for gcc-12: kbuild refuses another major
CC=${VDPA_CC:-gcc-12}
for t in apt-get apt-cache dpkg-deb tar xz make "$CC" cksum; do
	command -v "$t" >/dev/null || skip "no $t on the host (see .ci/setup)"
done

mkdir -p "$CACHE" || die "cannot create $CACHE"

FLAVOUR=${KVER##*-}		# amd64
ABI=${KVER%-"$FLAVOUR"}		# 6.1.0-56
SERIES=$(echo "$KVER" | cut -d. -f1-2)	# 6.1
SRCVER=$(apt-cache show "linux-image-$KVER" 2>/dev/null | awk '/^Version:/ { print $2; exit }')
OUT=$CACHE/sim-$KVER
stamp_of() { (cat "$0"; echo "$KVER $1"; "$CC" --version | head -1) | cksum | cut -d' ' -f1; }
if [ -z "$SRCVER" ]; then
	# apt does not know the kernel (offline, no lists): what was built will do
	if [ -f "$OUT/stamp" ] && [ -f "$OUT/vdpa_sim_net.ko" ]; then
		echo "build_vdpa_sim: apt does not know linux-image-$KVER, using $OUT" >&2
		echo "MODULES=$OUT"
		exit 0
	fi
	die "apt does not know linux-image-$KVER (run apt-get update)"
fi
STAMP=$(stamp_of "$SRCVER")
if [ -f "$OUT/stamp" ] && [ "$(cat "$OUT/stamp")" = "$STAMP" ]; then
	echo "MODULES=$OUT"
	exit 0
fi

# several build dirs may run the vm suite at once: one builder at a time
exec 8>"$CACHE/.lock"
flock -w 1200 8 || die "timed out waiting for $CACHE/.lock"
if [ -f "$OUT/stamp" ] && [ "$(cat "$OUT/stamp")" = "$STAMP" ]; then
	echo "MODULES=$OUT"
	exit 0
fi

T0=$(date +%s)
echo "build_vdpa_sim: building $MODS for $KVER (source $SRCVER)" >&2
DEBS=$CACHE/debs
mkdir -p "$DEBS"
fetch() { # package version
	local f
	f=$(ls -1 "$DEBS/${1}_${2}_"*.deb 2>/dev/null | tail -1 || true)
	if [ -z "$f" ]; then
		# apt's sandbox user may not write here; its warning is noise
		(cd "$DEBS" && apt-get download "$1=$2" 2>&1 | grep -v unsandboxed >&2) || true
		f=$(ls -1 "$DEBS/${1}_${2}_"*.deb 2>/dev/null | tail -1 || true)
		[ -n "$f" ] || die "apt-get download $1=$2 failed (no network?)"
	fi
	echo "$f"
}

# the sources: only drivers/vdpa and drivers/vhost, kept per source version
SRC=$CACHE/src-$SRCVER
if [ ! -f "$SRC/.done" ]; then
	deb=$(fetch "linux-source-$SERIES" "$SRCVER")
	rm -rf "$SRC" && mkdir -p "$SRC"
	# the package holds one tar.xz of the whole tree; stream it, keep two folders
	dpkg-deb --fsys-tarfile "$deb" | tar -xO "./usr/src/linux-source-$SERIES.tar.xz" |
		xz -dc -T0 | tar -x -C "$SRC" --strip-components=1 \
			--wildcards "linux-source-$SERIES/drivers/vdpa/*" "linux-source-$SERIES/drivers/vhost/*" ||
		die "cannot unpack drivers/vdpa and drivers/vhost from $deb"
	touch "$SRC/.done"
	# 140 MB of which we keep 1: the package is of no more use
	rm -f "$deb"
	for d in "$CACHE"/src-*/; do
		[ "$d" = "$SRC/" ] || rm -rf "$d"
	done
fi

# the headers: flavour + common + kbuild (fixdep, modpost: prebuilt binaries)
HDR=$CACHE/hdr-$KVER
if [ ! -f "$HDR/.done" ]; then
	rm -rf "$HDR" && mkdir -p "$HDR"
	for p in "linux-headers-$KVER" "linux-headers-$ABI-common" "linux-kbuild-$SERIES"; do
		deb=$(fetch "$p" "$SRCVER")
		dpkg-deb -x "$deb" "$HDR" || die "dpkg-deb -x $deb failed"
	done
	# the flavour's Makefile includes the common tree by an absolute path
	# under /usr/src: point it at our copy
	sed -i "s#^include /usr/src/#include $HDR/usr/src/#" "$HDR/usr/src/linux-headers-$KVER/Makefile"
	touch "$HDR/.done"
	rm -f "$DEBS"/linux-headers-*.deb "$DEBS"/linux-kbuild-*.deb
	for d in "$CACHE"/hdr-*/; do
		[ "$d" = "$HDR/" ] || rm -rf "$d"
	done
fi
KDIR=$HDR/usr/src/linux-headers-$KVER
[ -f "$KDIR/Module.symvers" ] || die "$KDIR has no Module.symvers"

B=$(mktemp -d "$CACHE/build.XXXXXX")
trap 'rm -rf "$B"' EXIT
cp "$SRC/drivers/vhost/vringh.c" "$SRC/drivers/vdpa/vdpa.c" \
   "$SRC"/drivers/vdpa/vdpa_sim/vdpa_sim.[ch] "$SRC/drivers/vdpa/vdpa_sim/vdpa_sim_net.c" \
   "$SRC/drivers/vhost/vhost.h" "$B/" || die "sources missing in $SRC"
# in tree drivers/vhost/vdpa.c becomes vhost_vdpa.ko
cp "$SRC/drivers/vhost/vdpa.c" "$B/vhost_vdpa.c"
echo "obj-m := $(for m in $MODS; do printf '%s.o ' "$m"; done)" > "$B/Kbuild"
# The headers' autoconf.h says these options are off; the sources test them
# (IS_ENABLED), so say they are modules. No BTF: the headers have no vmlinux.
make -s -C "$KDIR" M="$B" CC="$CC" CONFIG_DEBUG_INFO_BTF_MODULES= \
	KCFLAGS="-DCONFIG_VHOST_RING_MODULE=1 -DCONFIG_VDPA_MODULE=1 -DCONFIG_VDPA_SIM_MODULE=1 -DCONFIG_VDPA_SIM_NET_MODULE=1" \
	-j"$(nproc)" modules >&2 || die "module build failed"

rm -rf "$OUT.tmp" && mkdir -p "$OUT.tmp"
for m in $MODS; do
	cp "$B/$m.ko" "$OUT.tmp/" || die "$m.ko was not built"
done
echo "$MODS" > "$OUT.tmp/order"
echo "$STAMP" > "$OUT.tmp/stamp"
rm -rf "$OUT" && mv "$OUT.tmp" "$OUT"
for d in "$CACHE"/sim-*/; do
	[ "$d" = "$OUT/" ] || rm -rf "$d"
done
echo "build_vdpa_sim: $(ls "$OUT"/*.ko | wc -l) modules in $OUT after $(($(date +%s) - T0)) s" >&2
echo "MODULES=$OUT"
