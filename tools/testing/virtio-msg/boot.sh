#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# boot.sh [--test NAME --log FILE --timeout SECONDS] [-- QEMU-ARGS...]
#
# Boots build/out/bzImage with build/out/initramfs.cpio.gz in QEMU (q35,
# TCG: KVM is broken on these hosts). With --test, the guest runs
# /tests/NAME.sh and powers off; the serial log goes to FILE, the guest's
# result lines to FILE.results, and a guest still running after SECONDS is
# killed (exit status 124). Without --test,
# the serial console is this terminal (the demo shell).
set -euo pipefail

top=$(cd "$(dirname "$0")/../../.." && pwd)
out=$top/build/out
test= log= timeout=180
while [ $# -gt 0 ]; do
	case "$1" in
	--test) test=$2; shift 2 ;;
	--log) log=$2; shift 2 ;;
	--timeout) timeout=$2; shift 2 ;;
	--) shift; break ;;
	*) echo "boot.sh: unknown option $1" >&2; exit 2 ;;
	esac
done

for f in "$out/bzImage" "$out/initramfs.cpio.gz"; do
	[ -f "$f" ] || { echo "boot.sh: $f missing: run 'make'" >&2; exit 2; }
done

qemu=("$top/support/qemu" -machine q35 -accel tcg -cpu max -smp 2 -m 512M
	-kernel "$out/bzImage" -initrd "$out/initramfs.cpio.gz"
	-no-reboot -display none -monitor none)
append="console=ttyS0 panic=-1 oops=panic"

if [ -n "$test" ]; then
	: "${log:=$top/build/e2e/$test.log}"
	mkdir -p "$(dirname "$log")"
	rm -f "$log"
	# Second serial port: the guest's result lines only (the kernel console on
	# the first one could interleave with them).
	rm -f "$log.results"
	exec timeout --kill-after=10 "$timeout" "${qemu[@]}" -serial "file:$log" \
		-serial "file:$log.results" -append "$append vmsg.test=$test" "$@" </dev/null
fi
exec "${qemu[@]}" -serial mon:stdio -append "$append quiet" "$@"
