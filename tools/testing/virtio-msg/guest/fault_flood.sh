# SPDX-License-Identifier: GPL-2.0
#
# Fault: entropy device 1 floods the FIFO with events nobody asked for: 62
# EVENT_USED (a whole queue's worth) and 20 EVENT_CONFIG every 100 ms. The
# interrupt handler takes a queue's worth at a time and leaves the rest to its
# thread, so no CPU is kept in interrupt context (the lockup detectors would
# say); the block device and the other entropy device move data meanwhile.
# The device queue is full most of the time, and the emulator (compat mode,
# as QEMU's device model) drops what does not fit, real EVENT_USED included:
# the bus sees the queue was full and has the transport look at the queues at
# once.
# e2e-host: faults
. /tests/lib.sh

fault_up
dbg=$(ls -d /sys/kernel/debug/virtio_msg_amp_pci-*)
before=$(sed -n 's/^received: //p' $dbg/fifo0)
received() { sed -n 's/^received: //p' $dbg/fifo0; }
# The flood is on once the driver has taken 1500 messages more than the
# requests it made would bring (a few hundred here), within 30 s: the relay
# of the commands, and a device side that is busy, take a while on a loaded
# host. The other devices must then work while it goes on.
flooding() { [ $(($(received) - before)) -gt 1500 ]; }
emulator_ctl fault 0:1:flood-used,n=62
emulator_ctl fault 0:1:flood-config,n=20
check flood_arrived eventually 30 flooding
check blk_moves_during_flood blk_moves 0
check healthy_rng_reads_during_flood rng_reads virtio_rng.1
check faulty_rng_reads_during_flood rng_reads virtio_rng.0
sleep 3
echo "received during the flood: $(($(received) - before))"
emulator_ctl clear 0
cat $dbg/fifo0 | sed 's/^/  /'
check no_device_broken test "$(bus_stat broken_devices)" = 0
check full_queue_seen test "$(fifo_stat 0 device_queue_full)" -ge 1
check loss_reported test "$(bus_stat bus_losses)" -ge 1
fault_down
