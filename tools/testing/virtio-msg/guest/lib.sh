# SPDX-License-Identifier: GPL-2.0
#
# Helpers for guest-side tests. Every check prints one line
#   e2e-result: NAME pass|fail [reason]
# which the host-side runner (tools/testing/virtio-msg/e2e.sh) collects from
# the second serial port.

MODDIR=/lib/modules/virtio-msg

# Results go to the console for the log, and to the second serial port
# (ttyS1), which nothing else writes to, for the host-side runner.
result() {
	echo "e2e-result: $*"
	[ -c /dev/ttyS1 ] && echo "e2e-result: $*" >/dev/ttyS1
}
pass() { result "$1 pass"; }
fail() { result "$1 fail ${2:-}"; }

# check NAME COMMAND...: pass if COMMAND succeeds
check() {
	name=$1
	shift
	if "$@"; then pass "$name"; else fail "$name" "($*)"; fi
}

load() { insmod "$MODDIR/$1.ko" "$@"; }

# data NAME VALUE...: a fact for the host-side check (tools/testing/virtio-msg/host/)
data() {
	echo "e2e-data: $*"
	[ -c /dev/ttyS1 ] && echo "e2e-data: $*" >/dev/ttyS1
}

# emulator_ctl COMMAND: a command for the emulator's control pipe ("fault
# SPEC", "clear FIFO"; see virtio-msg-emulator --help), relayed by boot.sh from
# the result port. Takes effect within a second or two: the caller waits for
# what it does.
emulator_ctl() {
	echo "e2e-ctl: $*" >/dev/ttyS1
	sleep 2
}

# virtio_dev ID: the first virtio device of device id ID (decimal), bound to a driver,
# waiting up to 10 s for it; empty if there is none.
virtio_dev() {
	want=$(printf '0x%04x' "$1")
	for _ in $(seq 100); do
		for d in /sys/bus/virtio/devices/*; do
			[ -e "$d/device" ] && [ "$(cat "$d/device")" = "$want" ] && [ -e "$d/driver" ] && {
				echo "$d"
				return
			}
		done
		sleep 0.1
	done
}

# wait_for COUNT: wait up to 20 s until COUNT virtio devices have a driver
wait_for() {
	for _ in $(seq 200); do
		n=0
		for d in /sys/bus/virtio/devices/*; do [ -e "$d/driver" ] && n=$((n + 1)); done
		[ "$n" -ge "$1" ] && return 0
		sleep 0.1
	done
	return 1
}

# The fault tests (guest/fault_*.sh; host side host/faults.sh): one FIFO with
# a block device (device number 0), an entropy device the emulator makes
# misbehave (1, registered first: virtio_rng.0) and a healthy one (2,
# virtio_rng.1). Each test proves that the other devices of the FIFO keep
# moving data, that the modules unload in bounded time, and that nothing leaks.

# fault_up: load the modules and find the devices.
fault_up() {
	[ -w /sys/kernel/debug/kmemleak ] && echo clear >/sys/kernel/debug/kmemleak
	check core_load insmod $MODDIR/virtio_msg.ko
	check amp_pci_load insmod $MODDIR/virtio_msg_amp_pci.ko
	check devices_bound wait_for 3
	blkdev=$(virtio_dev 2)
	disk=/dev/$(ls "$blkdev/block" 2>/dev/null)
	stats=$(ls -d /sys/kernel/debug/virtio_msg-*.bus.* 2>/dev/null | head -n1)/stats
}

# bus_stat NAME: a counter of the transport's stats of the bus
bus_stat() { sed -n "s/^$1: //p" "$stats"; }

# blk_moves BLOCK: 256 KiB of random data written at 4 KiB block BLOCK and read back
blk_moves() {
	dd if=/dev/urandom of=/tmp/pattern bs=4096 count=64 2>/dev/null
	dd if=/tmp/pattern of="$disk" bs=4096 seek="$1" oflag=direct conv=fsync 2>/dev/null &&
		dd if="$disk" bs=4096 skip="$1" count=64 iflag=direct 2>/dev/null | cmp -s - /tmp/pattern
}

# rng_reads NAME: 256 bytes from entropy device NAME within 5 s, not all zero
rng_reads() {
	echo "$1" >/sys/class/misc/hw_random/rng_current || return 1
	timeout 5 dd if=/dev/hwrng of=/tmp/rng bs=64 count=4 2>/dev/null
	[ "$(wc -c </tmp/rng)" = 256 ] && od -An -tx1 /tmp/rng | tr -d ' \n0' | grep -q .
}

# rng_gives_nothing NAME: entropy device NAME returns nothing within 5 s
rng_gives_nothing() { ! rng_reads "$1"; }

# fault_unload: both modules unload within 60 s
fault_unload() {
	check ${1:-unload_within_60s} timeout 60 sh -c 'rmmod virtio_msg_amp_pci && rmmod virtio_msg'
}

# fault_down: the healthy devices still work, both modules unload within 60 s,
# nothing leaked.
fault_down() {
	check blk_still_moves blk_moves 512
	check healthy_rng_still_reads rng_reads virtio_rng.1
	fault_unload
	check_no_leaks
}

# check_no_leaks: a kmemleak scan finds nothing new (when kmemleak is there)
check_no_leaks() {
	[ -w /sys/kernel/debug/kmemleak ] || return 0
	sleep 6
	echo scan >/sys/kernel/debug/kmemleak
	leaks=$(cat /sys/kernel/debug/kmemleak)
	[ -z "$leaks" ] || echo "$leaks" | head -40
	check no_leaks test -z "$leaks"
}
