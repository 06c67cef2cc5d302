# SPDX-License-Identifier: GPL-2.0
#
# Fault: entropy device 1, running, raises DEVICE_NEEDS_RESET (an EVENT_CONFIG
# the emulator adds after its next message, switched on through the control
# pipe). The transport breaks the device at once (the read in flight ends)
# and recovers it: its virtio device is removed and the device number probed
# again, so virtio-rng binds anew and the device gives entropy again. The
# other devices of the FIFO keep moving data throughout.
# e2e-host: faults
. /tests/lib.sh

recovered() {
	for _ in $(seq 200); do
		dmesg | grep -q "device 1: removed to recover it" && wait_for 3 && return 0
		sleep 0.1
	done
	return 1
}

fault_up
check faulty_rng_reads_before rng_reads virtio_rng.0
emulator_ctl fault 0:1:needs-reset
# The next message of device 1 (the answer to this read) brings the event.
timeout 5 dd if=/dev/hwrng of=/dev/null bs=64 count=4 2>/dev/null
check broken_at_once sh -c 'dmesg | grep -q "device 1: device needs a reset"'
check recovered_within_20s recovered
cat "$stats" | sed 's/^/  /'
check one_device_broken test "$(bus_stat broken_devices)" = 1
check recovered_rng_reads rng_reads virtio_rng.0
check recovered_rng_reads_again rng_reads virtio_rng.0
fault_down
