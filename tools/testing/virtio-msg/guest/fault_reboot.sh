# SPDX-License-Identifier: GPL-2.0
#
# The device side of a FIFO restarts, as firmware on the other side of an AMP
# system does (the emulator's "reboot": it takes, answers and raises nothing,
# then starts again with every device reset and its backends kept). FIFO 0
# has the network device (device number 0) and the console (1), FIFO 1 the
# disk (0) and the entropy device (1). The keepalive PINGs every 200 ms
# (keepalive_ms=200, bus_timeout_ms=200), so a device side down for 3 s is
# found gone (3 PINGs unanswered): the FIFO stops, its devices are removed,
# and once it answers a PING again the FIFO takes its queues over again,
# enumerates and adds its devices anew. A restart too short for that is seen
# from what the device side says as it starts (EVENT_DEVICE REMOVED, then
# READY, per device).
#
# FIFO 1 restarts 20 times (vmsg.restarts=N: N times; 4 in the KASAN guest,
# which looks for memory errors in each path, not for rare interleavings),
# long and short in turn, while FIFO 0's network device moves data (bytes
# compared) after each; each time its disk comes
# back with the data written before the first, and its entropy device reads.
# FIFO 0 restarts twice with traffic on it and the disk busy: the network
# device comes back with its MAC address, the console's host end gets
# another line. A device side that stays down is found within the keepalive's
# bound and a reader of its disk ends; one that stays down but still answers
# PING is not taken for gone (its disk's reader ends on the transport's
# timeouts). Nothing hangs, leaks or warns.
# e2e-host: kinds
# e2e-exclusive: vmsgtap0
# e2e-timeout: 420
# e2e-append-kasan: vmsg.restarts=4
# e2e-kasan: a FIFO's devices freed and made anew, its queues taken over again
. /tests/lib.sh

# dev_of ID: the virtio device (virtioN) of device id ID bound to its driver, if any
dev_of() {
	want=$(printf '0x%04x' "$1")
	for d in /sys/bus/virtio/devices/*; do
		[ "$(cat "$d/device" 2>/dev/null)" = "$want" ] && [ -e "$d/driver" ] && basename "$d" && return
	done
}
# probes FIFO NUM: how many times the transport set up device NUM of FIFO
# (a new virtio device each time; its name may be the one it had before)
probes() { dmesg | grep -c "virtio_msg.bus.$1: device $2: virtio device id"; }
# replaced FIFO NUM ID BEFORE: device NUM of FIFO was set up again since
# BEFORE (its probes), and a device of id ID is bound to its driver
replaced() { [ "$(probes "$1" "$2")" -gt "$4" ] && [ -n "$(dev_of "$3")" ]; }
# fifo1_back BEFORE: the disk was set up anew (BEFORE: its probes until
# then) and its disk is there, and the entropy device too
fifo1_back() {
	replaced 1 0 2 "$1" && ls /sys/bus/virtio/devices/"$(dev_of 2)"/block/vd* >/dev/null 2>&1 &&
		[ -n "$(rng_name)" ]
}
# the_disk: the disk's device node now
the_disk() { echo "/dev/$(ls /sys/bus/virtio/devices/*/block/ 2>/dev/null | grep -m1 ^vd)"; }
# data_kept: the pattern written before the restarts reads back
data_kept() {
	dd if="$(the_disk)" bs=4096 skip=300 count=64 iflag=direct 2>/dev/null | cmp -s - /tmp/keep
}
# grew NAME FIFO FROM: the FIFO's counter NAME is past FROM
grew() { [ "$(fifo_stat "$2" "$1")" -gt "$3" ]; }
# ctl COMMAND: to the emulator now; the caller waits for what it does
ctl() { echo "e2e-ctl: $*" >/dev/ttyS1; }

[ -w /sys/kernel/debug/kmemleak ] && echo clear >/sys/kernel/debug/kmemleak
check core_load insmod $MODDIR/virtio_msg.ko
check amp_pci_load insmod $MODDIR/virtio_msg_amp_pci.ko keepalive_ms=200 bus_timeout_ms=200
check devices_bound wait_for 4
check net_interface_up net_up
mac=$(cat /sys/class/net/"$(net_if)"/address)
check console_writes console_line "console before the restarts"
dd if=/dev/urandom of=/tmp/keep bs=4096 count=64 2>/dev/null
check disk_pattern_written dd if=/tmp/keep of="$(the_disk)" bs=4096 seek=300 oflag=direct conv=fsync

# FIFO 1, $restarts times: 3 s down (the keepalive sees it), then 300 ms (it
# does not).
restarts=20
for arg in $(cat /proc/cmdline); do
	case $arg in vmsg.restarts=*) restarts=${arg#vmsg.restarts=} ;; esac
done
ok=0 long=0 short=0 net=0
for i in $(seq "$restarts"); do
	stops=$(fifo_stat 1 stops) events=$(fifo_stat 1 device_events) old=$(probes 1 0)
	if [ $((i % 2)) = 1 ]; then
		ctl "reboot 1,ms=3000"
		eventually 15 grew stops 1 "$stops" || break
		eventually 10 gone 2 || break
		long=$((long + 1))
	else
		ctl "reboot 1,ms=300"
		# REMOVED and READY for both devices
		eventually 15 grew device_events 1 $((events + 3)) || break
		short=$((short + 1))
	fi
	eventually 30 fifo1_back "$old" || break
	data_kept || break
	rng_reads "$(rng_name)" || break
	net_moves && net=$((net + 1))
	ok=$i
done
echo "  $ok of $restarts restarts of FIFO 1 ($long long, $short short); the network moved data after $net"
show() { sed 's/^/  /' /sys/kernel/debug/virtio_msg_amp_pci-*/fifo"$1"; }
show 1
check fifo1_${restarts}_restarts test "$ok" = "$restarts"
check net_moved_during_each test "$net" = "$restarts"
check fifo1_stopped_and_back test "$(fifo_stat 1 stops)" -ge $((restarts / 2)) \
	-a "$(fifo_stat 1 reattaches)" -ge $((restarts / 2))
disk=$(the_disk)
check disk_moves_after_restarts blk_moves 600
check fifo0_never_stopped test "$(fifo_stat 0 stops)" = 0

# FIFO 0, with traffic on it and the disk busy: long, then short.
(while dd if="$(the_disk)" of=/dev/null bs=4096 count=256 iflag=direct 2>/dev/null; do :; done) &
disk_reader=$!
traffic_start
sleep 1
stops=$(fifo_stat 0 stops)
old=$(probes 0 0)
ctl "reboot 0,ms=3000"
check fifo0_found_gone eventually 15 grew stops 0 "$stops"
check net_removed gone 1
check net_back_after_long eventually 30 replaced 0 0 1 "$old"
check net_answers_after_long net_ready
check net_same_mac_after_long test "$(cat /sys/class/net/"$(net_if)"/address)" = "$mac"
check console_back_after_long console_line "console after a long restart"
events=$(fifo_stat 0 device_events) old=$(probes 0 0)
ctl "reboot 0,ms=300"
check fifo0_restart_said eventually 15 grew device_events 0 $((events + 3))
check net_back_after_short eventually 30 replaced 0 0 1 "$old"
check net_answers_after_short net_ready
check net_same_mac_after_short test "$(cat /sys/class/net/"$(net_if)"/address)" = "$mac"
check console_back_after_short console_line "console after a short restart"
check disk_read_throughout kill -0 $disk_reader
kill $disk_reader 2>/dev/null
wait $disk_reader 2>/dev/null
traffic_stop
check net_moves_after_restarts net_moves

# FIFO 1 stays down: found within 0.2 + 3 * (0.2 + 0.2) s (5 s allowed); a
# reader of its disk ends; then it starts again.
(while dd if="$(the_disk)" of=/dev/null bs=4096 count=256 iflag=direct 2>/dev/null; do :; done) &
disk_reader=$!
sleep 1
stops=$(fifo_stat 1 stops) old=$(probes 1 0)
ctl "down 1"
start=$(cut -d' ' -f1 /proc/uptime)
check dead_side_found_within_5s eventually 5 grew stops 1 "$stops"
echo "  found gone within $(awk -v s="$start" '{ printf "%.1f", $1 - s }' /proc/uptime) s"
check disk_reader_ends reader_ends $disk_reader 20
check net_moves_while_fifo1_down net_moves
ctl "up 1"
check fifo1_back_after_down eventually 30 fifo1_back "$old"
check data_kept_after_down data_kept

# FIFO 1 down but its bus still answering PING: not taken for gone; its
# disk's reader ends on the transport's own timeouts; the restart replaces
# the devices.
(while dd if="$(the_disk)" of=/dev/null bs=4096 count=256 iflag=direct 2>/dev/null; do :; done) &
disk_reader=$!
sleep 1
stops=$(fifo_stat 1 stops) old=$(probes 1 0)
ctl "down 1,pings"
check reader_of_silent_disk_ends reader_ends $disk_reader 60
check pinging_side_not_gone test "$(fifo_stat 1 stops)" = "$stops"
ctl "up 1"
check fifo1_back_after_silence eventually 30 fifo1_back "$old"
check data_kept_after_silence data_kept
check rng_reads_at_the_end rng_reads "$(rng_name)"
check net_moves_at_the_end net_moves
fault_unload
check_no_leaks
