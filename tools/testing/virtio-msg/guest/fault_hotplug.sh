# SPDX-License-Identifier: GPL-2.0
#
# Devices the device side removes and adds again at run time (EVENT_DEVICE,
# the emulator's "unplug"/"plug"): each kind in turn, with data moving on it
# and on the others. FIFO 0 has the network device (device number 0) and the
# console (1), FIFO 1 the disk (0) and the entropy device (1). A removed
# device's users get errors in bounded time, nothing hangs, the other devices
# keep moving data; a device added back works again with its backend as it
# was: the disk's data, the network device's MAC address, the console's
# host end. The entropy device and the console are taken off before the
# modules load, so that they are first added, with a reader or traffic on the
# others, as numbers the bus has never seen. Then one number removed and added
# 50 times. The bus counts every event and ignores none.
# e2e-host: kinds
# e2e-exclusive: vmsgtap0
# e2e-kasan: each device kind freed with data moving on it, and made anew
. /tests/lib.sh

# rng_present, disk_present, console_present: the device is back, its driver bound
rng_present() { [ -n "$(rng_name)" ]; }
disk_present() { ls /sys/bus/virtio/devices/*/block/vd* >/dev/null 2>&1; }
console_present() { [ -n "$(virtio_dev 3)" ]; }

# Off before the load: the bus enumerates the network device and the disk only.
emulator_ctl "unplug 1:1"
emulator_ctl "unplug 0:1"
[ -w /sys/kernel/debug/kmemleak ] && echo clear >/sys/kernel/debug/kmemleak
check core_load insmod $MODDIR/virtio_msg.ko
check amp_pci_load insmod $MODDIR/virtio_msg_amp_pci.ko
check two_devices_at_load wait_for 2
check none_more_at_load test "$(ls /sys/bus/virtio/devices | wc -l)" = 2
blkdev=$(virtio_dev 2)
disk=/dev/$(ls "$blkdev/block" 2>/dev/null)
check net_interface_up net_up
mac=$(cat /sys/class/net/"$(net_if)"/address)
# Added for the first time: the entropy device while the network moves data,
# the console while the disk is read.
traffic_start
emulator_ctl "plug 1:1"
check rng_added eventually 20 rng_present
check rng_reads_once_added rng_reads "$(rng_name)"
traffic_stop
check net_moves_beside_a_new_device net_moves
(while dd if="$disk" of=/dev/null bs=4096 count=256 iflag=direct 2>/dev/null; do :; done) &
reader=$!
emulator_ctl "plug 0:1"
check console_added eventually 20 console_present
check console_writes console_line "console before the hot removals"
check disk_read_meanwhile kill -0 $reader
kill $reader
wait $reader 2>/dev/null

# The disk: a pattern written before, a reader busy while it goes.
dd if=/dev/urandom of=/tmp/keep bs=4096 count=64 2>/dev/null
check disk_pattern_written dd if=/tmp/keep of="$disk" bs=4096 seek=300 oflag=direct conv=fsync
(while dd if="$disk" of=/dev/null bs=4096 count=256 iflag=direct 2>/dev/null; do :; done) &
reader=$!
sleep 1
emulator_ctl "unplug 1:0"
check disk_removed gone 2
check disk_reader_ends reader_ends $reader 20
check rng_moves_without_disk rng_reads "$(rng_name)"
check net_moves_without_disk net_moves
emulator_ctl "plug 1:0"
check disk_back eventually 20 disk_present
blkdev=$(virtio_dev 2)
disk=/dev/$(ls "$blkdev/block" 2>/dev/null)
check disk_data_kept sh -c "dd if=$disk bs=4096 skip=300 count=64 iflag=direct 2>/dev/null | cmp -s - /tmp/keep"
check disk_moves_again blk_moves 600

# The entropy device, with a reader on it.
rng=$(rng_name)
echo "$rng" >/sys/class/misc/hw_random/rng_current
(while dd if=/dev/hwrng of=/dev/null bs=64 count=64 2>/dev/null; do :; done) &
reader=$!
sleep 1
emulator_ctl "unplug 1:1"
check rng_removed gone 4
check rng_reader_ends reader_ends $reader 20
check disk_moves_without_rng blk_moves 700
emulator_ctl "plug 1:1"
check rng_back eventually 20 rng_present
check rng_reads_again rng_reads "$(rng_name)"

# The network device, with traffic both ways.
traffic_start
sleep 2
emulator_ctl "unplug 0:0"
check net_removed gone 1
check console_writes_without_net console_line "console without the network device"
check healthy_moves_without_net healthy_moves 800
emulator_ctl "plug 0:0"
traffic_stop
check net_back net_ready
check net_same_mac test "$(cat /sys/class/net/"$(net_if)"/address)" = "$mac"
check net_moves_again net_moves

# The console, with a writer on it.
writer_start
sleep 1
emulator_ctl "unplug 0:1"
check console_removed gone 3
check net_moves_without_console net_moves
emulator_ctl "plug 0:1"
writer_stop
check console_back eventually 20 console_present
check console_writes_again console_line "console after it came back"

# One number 50 times: the entropy device, read after each return.
ok=0
for i in $(seq 50); do
	echo "e2e-ctl: unplug 1:1" >/dev/ttyS1
	eventually 20 gone 4 || break
	echo "e2e-ctl: plug 1:1" >/dev/ttyS1
	eventually 20 rng_present || break
	rng_reads "$(rng_name)" || break
	ok=$i
done
echo "  $ok of 50 removals and returns"
check rng_50_cycles test "$ok" = 50

# READY and REMOVED back to back: the removal waits for the probe the READY
# started, then takes the device away; the next READY brings it back.
echo "e2e-ctl: unplug 1:1" >/dev/ttyS1
check rng_gone_before gone 4
echo "e2e-ctl: plug 1:1" >/dev/ttyS1
echo "e2e-ctl: unplug 1:1" >/dev/ttyS1
sleep 3
check rng_gone_after_ready_removed gone 4
echo "e2e-ctl: plug 1:1" >/dev/ttyS1
check rng_back_after_all_that eventually 20 rng_present
check rng_reads_at_the_end rng_reads "$(rng_name)"
check events_counted test "$(fifo_stat 1 device_events)" -ge 109
check no_event_ignored test "$(fifo_stat 0 device_events_ignored) $(fifo_stat 1 device_events_ignored)" = "0 0"
check no_resync test "$(fifo_stat 0 device_resyncs) $(fifo_stat 1 device_resyncs)" = "0 0"
check healthy_moves_at_the_end healthy_moves 900
check net_moves_at_the_end net_moves
fault_unload
check_no_leaks
