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

# eventually SECONDS COMMAND...: COMMAND succeeds within SECONDS (tried every
# 0.2 s): for what a control command starts, whose relay to the emulator takes
# longer on a loaded host
eventually() {
	n=$(($1 * 5))
	shift
	while ! "$@"; do
		n=$((n - 1))
		[ $n -gt 0 ] || return 1
		sleep 0.2
	done
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

# fifo_stat FIFO NAME: a counter of the AMP PCI driver's FIFO (its debugfs file)
fifo_stat() { sed -n "s/^$2: //p" /sys/kernel/debug/virtio_msg_amp_pci-*/fifo"$1"; }

# bus_stat NAME: a counter of the transport's stats of the bus
bus_stat() { sed -n "s/^$1: //p" "$stats"; }

# blk_moves BLOCK: 256 KiB of random data written at 4 KiB block BLOCK and read back
blk_moves() {
	dd if=/dev/urandom of=/tmp/pattern bs=4096 count=64 2>/dev/null
	dd if=/tmp/pattern of="$disk" bs=4096 seek="$1" oflag=direct conv=fsync 2>/dev/null &&
		dd if="$disk" bs=4096 skip="$1" count=64 iflag=direct 2>/dev/null | cmp -s - /tmp/pattern
}

# rng_reads NAME [SECONDS]: 256 bytes from entropy device NAME within
# SECONDS (5), not all zero
rng_reads() {
	echo "$1" >/sys/class/misc/hw_random/rng_current || return 1
	timeout "${2:-5}" dd if=/dev/hwrng of=/tmp/rng bs=64 count=4 2>/dev/null
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

# The fault tests on network and console devices (guest/fault_net_*.sh,
# guest/fault_console_*.sh; host side host/kinds.sh): FIFO 0 has a network
# device (device number 0) and a console (1); FIFO 1, whose disk and entropy
# device must keep moving data whatever FIFO 0 does, is the healthy one.
HOST_IP=10.77.0.1
GUEST_IP=10.77.0.2

# kinds_up: load the modules and find the healthy FIFO's disk.
kinds_up() {
	[ -w /sys/kernel/debug/kmemleak ] && echo clear >/sys/kernel/debug/kmemleak
	check core_load insmod $MODDIR/virtio_msg.ko
	check amp_pci_load insmod $MODDIR/virtio_msg_amp_pci.ko
	check devices_bound wait_for 4
	blkdev=$(virtio_dev 2)
	disk=/dev/$(ls "$blkdev/block" 2>/dev/null)
}

# healthy_moves: FIFO 1's disk and entropy device move data.
healthy_moves() {
	blk_moves "$1" && rng_reads "$(tr ' ' '\n' </sys/class/misc/hw_random/rng_available | grep -m1 ^virtio_rng)"
}

# net_if: the virtio network interface (empty if none within 20 s)
net_if() {
	for _ in $(seq 200); do
		for n in /sys/bus/virtio/devices/*/net/*; do
			[ -e "$n" ] && basename "$n" && return
		done
		sleep 0.1
	done
}

# net_up: the network interface up, with its address
net_up() {
	ifname=$(net_if)
	[ -n "$ifname" ] && ip link set "$ifname" up && ip addr add $GUEST_IP/24 dev "$ifname" &&
		ping -c 1 -W 5 $HOST_IP >/dev/null
}

# net_ready: the network interface, recovered or not, up with its address
# and answering within 30 s
net_ready() {
	for _ in $(seq 30); do
		ifname=$(net_if)
		if [ -n "$ifname" ]; then
			ip addr show "$ifname" | grep -q "$GUEST_IP/" ||
				{ ip link set "$ifname" up && ip addr add $GUEST_IP/24 dev "$ifname"; }
			ping -c 1 -W 1 $HOST_IP >/dev/null 2>&1 && return 0
		fi
		sleep 1
	done
	return 1
}

# net_moves: 256 KiB of random data to the host, whose SHA-256 comes back right
net_moves() {
	dd if=/dev/urandom of=/tmp/net.out bs=4096 count=64 2>/dev/null
	sum=$(sha256sum </tmp/net.out | cut -d' ' -f1)
	got=$({ echo 262144; cat /tmp/net.out; } | timeout 30 nc $HOST_IP 5579)
	[ "$got" = "$sum" ]
}

# traffic_start, traffic_stop: two streams through the host's echo server
# (traffic both ways), restarted whenever the interface went away.
traffic_start() {
	rm -f /tmp/traffic.stop
	for i in 1 2; do
		(while [ ! -e /tmp/traffic.stop ]; do
			timeout 10 nc $HOST_IP 5578 </dev/zero >/dev/null 2>&1
			sleep 0.2
		done) &
	done
}
traffic_stop() {
	touch /tmp/traffic.stop
	wait
}

# hvc: the console's terminal, once a virtio console is bound and its port
# (a console, the first hvc) opens; empty if not within 10 s. The port comes
# after the driver binds (a multiport device adds it with a control message).
hvc() {
	[ -n "$(virtio_dev 3)" ] || return
	for _ in $(seq 100); do
		# Not written before the terminal exists: the write would
		# create a regular file in /dev, which then takes every write
		# and keeps devtmpfs from adding the terminal (what the console
		# tests saw for a long time on a loaded host, where the port
		# comes late). Opened: the port tells the device so with a
		# control message, and what is written before the device and
		# its host peer are ready may be dropped: an empty line first,
		# then a second.
		[ -c /dev/hvc0 ] && timeout 2 sh -c 'echo >/dev/hvc0' 2>/dev/null &&
			sleep 1 && echo /dev/hvc0 && return
		sleep 0.1
	done
}

# console_line TEXT: TEXT written to the console, for the host to find
console_line() {
	t=$(hvc)
	[ -n "$t" ] && timeout 10 sh -c 'echo "$1" >"$2"' - "$1" "$t" && data console_line "$1"
}

# writer_start, writer_stop: a writer on the console's terminal, restarted
# whenever the console went away and came back
writer_start() {
	rm -f /tmp/writer.stop
	(i=0
	while [ ! -e /tmp/writer.stop ]; do
		t=$(hvc)
		[ -n "$t" ] && while [ ! -e /tmp/writer.stop ] && echo "writer line $i" >&3; do
			i=$((i + 1))
		done 3>"$t"
		sleep 0.5
	done) 2>/dev/null &
	writer=$!
}
writer_stop() {
	touch /tmp/writer.stop
	wait $writer
}

# fault_classes FIFO:DEV CHECK: each class of fault of the emulator, one after
# another, on device DEV of FIFO, for a few seconds; after each, CHECK (a
# function that waits for the device, recovered if it was broken, and moves
# data) must pass, and FIFO 1's devices must keep moving data. The classes
# that break a device (garbage, lying sizes, late answers) come last and are
# three, the number of recoveries a device number gets.
fault_classes() {
	for spec in twice drop,every=3 reorder flood-used,n=40 flood-config,n=40 \
		generation-churn garbage lying-size late,ms=5000; do
		name=$(echo "${spec%%,*}" | tr - _)
		target=$1
		# Reordering is between the devices of a FIFO.
		[ "$spec" = reorder ] && target=${1%%:*}:all
		emulator_ctl "fault $target:$spec"
		sleep 3
		emulator_ctl "clear ${1%%:*}"
		echo "  after $spec: $(grep -E 'eth[0-9]' /proc/net/dev | tr -s ' ' | cut -d' ' -f2-4,10-12)"
		check "${name}_then_works" "$2"
		check "${name}_healthy_fifo_moves" healthy_moves $((RANDOM % 512))
	done
}

# recovered DEV ROUND: the transport recovered device DEV for the ROUNDth time
# within 30 s
recovered() {
	for _ in $(seq 300); do
		dmesg | grep -q "device $1: removed to recover it, probing again ($2 of" && return 0
		sleep 0.1
	done
	return 1
}

# The two-FIFO fault tests (host/dead_fifo.sh: a 4 MiB disk and an entropy
# device on FIFO 0, an 8 MiB disk and an entropy device on FIFO 1), where
# FIFO 0 misbehaves and FIFO 1 must keep moving data.

# disk_of SECTORS: the virtio disk of that size
disk_of() {
	for b in /sys/block/vd*; do
		[ "$(cat "$b/size" 2>/dev/null)" = "$1" ] && echo "/dev/$(basename "$b")"
	done
}

# two_fifos_up: load the modules, find both disks.
two_fifos_up() {
	[ -w /sys/kernel/debug/kmemleak ] && echo clear >/sys/kernel/debug/kmemleak
	check core_load insmod $MODDIR/virtio_msg.ko
	check amp_pci_load insmod $MODDIR/virtio_msg_amp_pci.ko
	check devices_bound wait_for 4
	disk0=$(disk_of 8192) disk1=$(disk_of 16384)
	check disks_found test -b "$disk0" -a -b "$disk1"
}

# fifo0_busy: FIFO 0's disk and both entropy devices read in a loop (so that
# a fault of FIFO 0 strikes at once), until fifo0_settled.
fifo0_busy() {
	rm -f /tmp/fifo0.stop
	(while [ ! -e /tmp/fifo0.stop ]; do
		timeout 5 dd if="$disk0" of=/dev/null bs=4096 count=16 iflag=direct 2>/dev/null || sleep 0.2
		for r in $(cat /sys/class/misc/hw_random/rng_available); do
			echo "$r" >/sys/class/misc/hw_random/rng_current 2>/dev/null &&
				timeout 2 dd if=/dev/hwrng of=/dev/null bs=16 count=1 2>/dev/null
		done
	done) &
	fifo0_reader=$!
}

# fifo1_moves BLOCK: FIFO 1's disk moves data (written, read back, compared)
fifo1_moves() { disk=$disk1 blk_moves "$1"; }

# fifo0_settled: within 30 s, FIFO 0's disk is gone or moves data again; the
# readers end.
fifo0_settled() {
	touch /tmp/fifo0.stop
	for _ in $(seq 30); do
		[ -b "$disk0" ] && [ "$(cat /sys/block/${disk0#/dev/}/size 2>/dev/null)" = 8192 ] || break
		disk=$disk0 blk_moves 0 && break
		sleep 1
	done
	timeout 30 sh -c "while kill -0 $fifo0_reader 2>/dev/null; do sleep 0.2; done" &&
		{ ! [ -b "$disk0" ] || [ "$(cat /sys/block/${disk0#/dev/}/size 2>/dev/null)" != 8192 ] ||
			disk=$disk0 blk_moves 0; }
}

# show_fifo0: FIFO 0's counters of the AMP PCI driver, for the log
show_fifo0() {
	cat /sys/kernel/debug/virtio_msg_amp_pci-*/fifo0 2>/dev/null | tr '\n' ' ' | sed 's/^/  fifo0: /'
	echo
}

# writer_free: the writer ($writer) ended, its writes failing once the
# terminal is hung up; or its writes are dropped (the tty layer may still take
# them): either way it is not stuck, and dies when killed.
writer_free() {
	for _ in $(seq 300); do [ -e /tmp/writer.done ] && return 0; sleep 0.1; done
	grep -q '^State:.*D' /proc/$writer/status && return 1
	kill -9 $writer && sleep 1 && ! kill -0 $writer 2>/dev/null
}

# console_silenced: the body of fault_console_silent and fault_console_silent_up
# (after kinds_up): the console stops returning buffers and goes silent under
# a writer; it must be broken and removed, the writer not stuck, the network
# device and FIFO 1 still moving data, the modules unloading without a leak.
console_silenced() {
	check console_writes console_line "console before the fault"
	check net_interface_up net_up
	term=$(hvc)
	# The device keeps the buffers it is given (its backend stalls, so the used
	# ring does not move: what the console write polls) and answers nothing.
	emulator_ctl "fault 0:1:stall,ms=600000"
	emulator_ctl "fault 0:1:silent"
	(
		i=0
		while echo "line $i of a writer that outlives its console" >&3; do i=$((i + 1)); done 3>"$term"
		echo "$i" >/tmp/writer.done
	) 2>/dev/null &
	writer=$!
	check console_broken sh -c 'for _ in $(seq 600); do
		dmesg | grep -q "device 1: message 0x[0-9a-f]* failed" && exit 0; sleep 0.1; done; exit 1'
	check console_removed sh -c 'for _ in $(seq 600); do
		grep -q 0x0003 /sys/bus/virtio/devices/*/device || exit 0; sleep 0.1; done; exit 1'
	check writer_not_stuck writer_free
	echo "  writer: $(cat /tmp/writer.done 2>/dev/null) lines written"
	check net_still_moves net_moves
	check healthy_fifo_moves healthy_moves 0
	check three_devices_left test "$(ls /sys/bus/virtio/devices/ | wc -l)" = 3
	fault_unload
	check_no_leaks
}

# fifo0_fault SPEC: the body of the two-FIFO fault tests: SPEC (a control
# pipe command) on FIFO 0 while it is busy; FIFO 1's disk moves data
# throughout, FIFO 0's disk works again or is gone, the modules unload.
fifo0_fault() {
	two_fifos_up
	emulator_ctl "$1"
	fifo0_busy
	check fifo1_moves_meanwhile fifo1_moves 0
	sleep 8
	check fifo1_still_moves fifo1_moves 64
	check fifo0_disk_works_or_is_gone fifo0_settled
	show_fifo0
	emulator_ctl "clear 0"
	fault_unload
	check_no_leaks
}

# Devices that come and go (fault_hotplug, fault_reboot).
# gone ID: no virtio device of device id ID (decimal) within 10 s
gone() {
	want=$(printf '0x%04x' "$1")
	for _ in $(seq 100); do
		grep -qx "$want" /sys/bus/virtio/devices/*/device 2>/dev/null || return 0
		sleep 0.1
	done
	return 1
}
# rng_name: the entropy device's name for hw_random (empty if none)
rng_name() { tr ' ' '\n' </sys/class/misc/hw_random/rng_available | grep -m1 ^virtio_rng; }
# reader_ends PID SECONDS: the background reader PID ended within SECONDS
reader_ends() {
	for _ in $(seq $(($2 * 10))); do
		kill -0 "$1" 2>/dev/null || return 0
		sleep 0.1
	done
	kill "$1" 2>/dev/null
	return 1
}
