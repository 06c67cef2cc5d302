# SPDX-License-Identifier: GPL-2.0
#
# Fault: entropy device 1 stops sending anything once its driver is up. Its
# backend still fills the buffers it is given, so reads still complete: the
# transport looks at the queues on the bus's clock (its keepalive period, 1 s)
# and finds the used buffers whose EVENT_USED never came. Then its backend
# stops too (a stall that does not end): the device is dead, holding the
# buffer of a read, while the FIFO's device side still answers PING. The
# transport, having seen nothing announced for twice its timeout after the
# kick, asks for the device status: no answer, three times, so the device is
# broken (the read ends) and recovered; the new probe gets no answer either,
# so the device is left out. /dev/hwrng, held by the dead device's read until
# then (the hwrng core has no timeout), serves the other entropy device, and
# the other devices of the FIFO move data throughout.
# e2e-host: faults
. /tests/lib.sh

given_up() {
	for _ in $(seq 400); do
		dmesg | grep -q "device 1: not added" && return 0
		sleep 0.1
	done
	return 1
}

fault_up
check faulty_rng_reads_before rng_reads virtio_rng.0
emulator_ctl fault 0:1:silent
check silent_rng_still_reads rng_reads virtio_rng.0 30
check lost_events_found test "$(bus_stat lost_events_found)" -ge 1
emulator_ctl fault 0:1:stall,ms=600000
check dead_rng_gives_nothing rng_gives_nothing virtio_rng.0
check blk_moves_meanwhile blk_moves 0
check dead_device_given_up_within_40s given_up
cat "$stats" | sed 's/^/  /'
check asked_if_alive test "$(bus_stat liveness_checks)" -ge 1
check broken_by_status_check sh -c 'dmesg | grep -q "device 1: message 0x07 failed 3 times"'
check two_devices_left wait_for 2
fault_down
