# SPDX-License-Identifier: GPL-2.0
#
# Fault: once entropy device 1 has sent 40 messages (the test reads
# /dev/hwrng, which it backs, until then), the device side sets the FIFO's
# device queue head out of range: the queue protocol is broken, and
# nothing on that FIFO can be trusted any more. The FIFO stops and all its
# devices are gone, as if unplugged: their queues are broken, their drivers
# removed within seconds (the entropy request in flight ends); the FIFO stays
# stopped (its head stays out of range: nothing is sent to such a side), and
# the modules unload cleanly. The block device is idle meanwhile (fault_dead_fifo has one
# busy when its FIFO dies).
# e2e-host: faults
# e2e-emulator-extra: --fault 0:1:corrupt-index,after=40
. /tests/lib.sh

no_virtio_devices() {
	for _ in $(seq 300); do
		ls /sys/bus/virtio/devices/ 2>/dev/null | grep -q . || return 0
		sleep 0.1
	done
	return 1
}

fault_up
dbg=$(ls -d /sys/kernel/debug/virtio_msg_amp_pci-*)
check rng_is_device_1 grep -qx virtio_rng.0 /sys/class/misc/hw_random/rng_current
(
	for _ in $(seq 100); do
		ls /sys/bus/virtio/devices/ | grep -q . || break
		timeout 2 dd if=/dev/hwrng of=/dev/null bs=64 count=4 2>/dev/null
	done
) &
check devices_gone_within_30s no_virtio_devices
cat $dbg/fifo0 | sed 's/^/  /'
check fifo_stopped grep -qx 'stopped: true' $dbg/fifo0
check index_error_counted grep -qx 'index_errors: 1' $dbg/fifo0
check gone_reported sh -c 'dmesg | grep -q "device 0: gone"'
check disk_read_fails_at_once sh -c "! timeout 5 dd if=$disk of=/dev/null bs=4096 count=1 iflag=direct 2>/dev/null"
check disk_gone test ! -b "$disk"
fault_unload
check_no_leaks
