#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# mkinitramfs.sh OUT.cpio.gz MODULE.ko...
#
# A busybox initramfs for the test guest: busybox-static, the /init of
# guest/init, the guest-side test scripts of guest/, the helpers of
# guest/*.c (built static), and our modules in /lib/modules/virtio-msg/.
set -euo pipefail

out=$1
shift
here=$(cd "$(dirname "$0")" && pwd)
busybox=/bin/busybox
[ -x "$busybox" ] && "$busybox" --list >/dev/null 2>&1 || { echo "busybox-static missing: run 'make provision'" >&2; exit 1; }

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root"/{bin,sbin,dev,proc,sys,tmp,run,etc,root,tests,lib/modules/virtio-msg}
cp "$busybox" "$root/bin/busybox"
for applet in $("$busybox" --list); do
	[ -e "$root/bin/$applet" ] || ln -s busybox "$root/bin/$applet"
done
cp "$here/guest/init" "$root/init"
# Small static helpers the tests need (guest/NAME.c becomes /bin/NAME).
for c in "$here"/guest/*.c; do
	[ -e "$c" ] || continue
	gcc -static -O2 -Wall -o "$root/bin/$(basename "$c" .c)" "$c" ||
		{ echo "mkinitramfs: cannot build $c (gcc with a static libc)" >&2; exit 1; }
done
cp "$here"/guest/*.sh "$root/tests/"
chmod +x "$root/init" "$root"/tests/*.sh
for ko in "$@"; do cp "$ko" "$root/lib/modules/virtio-msg/"; done
# /dev/console must exist before devtmpfs is mounted, or /init has no output.
mknod "$root/dev/console" c 5 1
# Renamed into place: a guest booting meanwhile reads the old one or the new.
(cd "$root" && find . -mindepth 1 | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0) | gzip -9 -n >"$out.tmp"
mv "$out.tmp" "$out"
