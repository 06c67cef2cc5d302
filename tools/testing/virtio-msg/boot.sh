#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# boot.sh [--test NAME --log FILE --timeout SECONDS [--boot-limit SECONDS]]
#         [--emulator "ARGS"]...
#         [--append "KERNEL-ARGS"] [-- QEMU-ARGS...]
#
# Boots build/out/bzImage with build/out/initramfs.cpio.gz (with
# VMSG_VARIANT=kasan: build/out-kasan/) in QEMU (q35,
# TCG: KVM is broken on these hosts). With --test, the guest runs
# /tests/NAME.sh and powers off; the serial log goes to FILE, the guest's
# result lines to FILE.results, and a guest still running after SECONDS is
# killed (exit status 124); with --boot-limit, one whose init has not said a
# word (no "e2e-result:" line) by then is stopped and FILE says so: its kernel
# hung while it booted. Without --test,
# the serial console is this terminal (the demo shell). --append adds to the
# kernel command line (repeatable); QEMU-ARGS go to QEMU as they are.
#
# With --emulator (repeatable; the ARGS of all of them are joined), the
# virtio-msg AMP PCI device is served by virtio-msg-emulator (build it with
# 'make emulator'): ARGS are its --fifos/--mode/--log-level/--device options
# (see 'virtio-msg-emulator --help'); the socket lives in a private temporary
# directory, next to its control pipe (--control), to which a test guest's
# "e2e-ctl:" lines are relayed (without --test, the pipe is build/run/control,
# for commands from the host: "echo 'unplug 0:1' >build/run/control"). The emulator's log goes to FILE.emulator (--test) or to
# build/run/emulator.log; guest RAM becomes a shared memfd so the emulator can
# reach the virtqueues. The emulator is stopped (SIGTERM) after QEMU exits,
# and the exit status is QEMU's. Exit status 2 if the emulator does not start.
set -euo pipefail

top=$(cd "$(dirname "$0")/../../.." && pwd)
# VMSG_VARIANT=kasan: the KASAN guest kernel of 'make kasan'.
out=$top/build/out${VMSG_VARIANT:+-$VMSG_VARIANT}
test= log= timeout=180 boot_limit= extra_append=
emulator_args=()
while [ $# -gt 0 ]; do
	case "$1" in
	--test) test=$2; shift 2 ;;
	--log) log=$2; shift 2 ;;
	--timeout) timeout=$2; shift 2 ;;
	--boot-limit) boot_limit=$2; shift 2 ;;
	--append) extra_append+=" $2"; shift 2 ;;
	--emulator) read -ra words <<<"$2"; emulator_args+=("${words[@]}"); shift 2 ;;
	--) shift; break ;;
	*) echo "boot.sh: unknown option $1" >&2; exit 2 ;;
	esac
done

# run_guest QEMU-ARGS...: the test guest, under its timeout and boot limit
run_guest() {
	local guest watch= rc=0
	timeout --kill-after=10 "$timeout" "${qemu[@]}" "$@" </dev/null &
	guest=$!
	if [ -n "$boot_limit" ]; then
		(
			for _ in $(seq $((boot_limit * 2))); do
				sleep 0.5
				grep -qa '^e2e-result: ' "$log.results" 2>/dev/null && exit 0
				kill -0 $guest 2>/dev/null || exit 0
			done
			echo "boot.sh: nothing from the guest's init within ${boot_limit}s: the kernel hung while booting" >>"$log"
			kill -TERM $guest 2>/dev/null
		) &
		watch=$!
	fi
	wait $guest || rc=$?
	if [ -n "$watch" ]; then
		kill $watch 2>/dev/null || true
		wait $watch 2>/dev/null || true
	fi
	return $rc
}

for f in "$out/bzImage" "$out/initramfs.cpio.gz"; do
	[ -f "$f" ] || { echo "boot.sh: $f missing: run 'make'" >&2; exit 2; }
done

machine=q35
memory=()
if [ ${#emulator_args[@]} -gt 0 ]; then
	machine=q35,memory-backend=mem
	memory=(-object memory-backend-memfd,id=mem,size=512M,share=on)
fi
# No 5-level paging (la57=off): an interrupt that lands while the boot CPU's
# features are identified again (identify_cpu()) finds LA57 cleared for a
# moment, and a KASAN kernel then reports the interrupt's irq_desc lock, in
# the 5-level direct map, as a wild memory access (seen in 2 of 30 KASAN
# guests of one fresh-clone run).
qemu=("$top/support/qemu" -machine "$machine" "${memory[@]}" -accel tcg -cpu max,la57=off -smp 2 -m 512M
	-kernel "$out/bzImage" -initrd "$out/initramfs.cpio.gz"
	-no-reboot -display none -monitor none)
append="console=ttyS0 panic=-1 oops=panic$extra_append"

if [ ${#emulator_args[@]} -gt 0 ]; then
	emulator=$top/tools/virtio-msg/target/release/virtio-msg-emulator
	[ -x "$emulator" ] || { echo "boot.sh: $emulator missing: run 'make emulator'" >&2; exit 2; }
	if [ -n "$test" ]; then
		: "${log:=$top/build/e2e${VMSG_VARIANT:+-$VMSG_VARIANT}/$test.log}"
		emulator_log=$log.emulator
	else
		emulator_log=$top/build/run/emulator.log
	fi
	mkdir -p "$(dirname "$emulator_log")"
	sockdir=$(mktemp -d "${TMPDIR:-/tmp}/vmsg-emulator.XXXXXX")
	socket=$sockdir/amp-pci.sock
	control=$sockdir/control
	# The demo's pipe has a fixed place, for commands typed on the host
	# ("echo 'unplug 0:0' >build/run/control").
	[ -n "$test" ] || { control=$top/build/run/control; rm -f "$control"; }
	"$emulator" --socket "$socket" --control "$control" "${emulator_args[@]}" \
		>"$emulator_log" 2>&1 </dev/null &
	emulator_pid=$!
	trap 'kill -TERM $emulator_pid 2>/dev/null || true; rm -rf "$sockdir"' EXIT
	for _ in $(seq 100); do
		[ -S "$socket" ] && break
		kill -0 $emulator_pid 2>/dev/null || break
		sleep 0.1
	done
	if [ ! -S "$socket" ]; then
		echo "boot.sh: the emulator did not start ($emulator ${emulator_args[*]}):" >&2
		tail -n 20 "$emulator_log" >&2
		exit 2
	fi
	qemu+=(-device "{\"driver\":\"vfio-user-pci\",\"socket\":{\"type\":\"unix\",\"path\":\"$socket\"}}")
	rc=0
	if [ -n "$test" ]; then
		mkdir -p "$(dirname "$log")"
		rm -f "$log" "$log.results"
		: >"$log.results"
		# The guest's "e2e-ctl: COMMAND" lines (guest/lib.sh emulator_ctl) go
		# to the emulator's control pipe, while the guest runs.
		tail -n +1 -F -s 0.1 --pid=$$ "$log.results" 2>/dev/null |
			sed -un 's/\r//g; s/^e2e-ctl: //p' >"$control" &
		run_guest -serial "file:$log" -serial "file:$log.results" \
			-append "$append vmsg.test=$test" "$@" || rc=$?
	else
		"${qemu[@]}" -serial mon:stdio -append "$append quiet" "$@" || rc=$?
	fi
	# QEMU's disconnect usually ends the emulator already; make sure, bounded.
	kill -TERM $emulator_pid 2>/dev/null || true
	for _ in $(seq 50); do
		kill -0 $emulator_pid 2>/dev/null || break
		sleep 0.1
	done
	if kill -0 $emulator_pid 2>/dev/null; then
		echo "boot.sh: the emulator did not stop; killed" >&2
		kill -KILL $emulator_pid 2>/dev/null || true
	fi
	wait $emulator_pid 2>/dev/null || echo "boot.sh: the emulator exited with status $? (log $emulator_log)" >&2
	exit $rc
fi

if [ -n "$test" ]; then
	: "${log:=$top/build/e2e${VMSG_VARIANT:+-$VMSG_VARIANT}/$test.log}"
	mkdir -p "$(dirname "$log")"
	rm -f "$log"
	# Second serial port: the guest's result lines only (the kernel console on
	# the first one could interleave with them).
	rm -f "$log.results"
	rc=0
	run_guest -serial "file:$log" -serial "file:$log.results" \
		-append "$append vmsg.test=$test" "$@" || rc=$?
	exit $rc
fi
exec "${qemu[@]}" -serial mon:stdio -append "$append quiet" "$@"
