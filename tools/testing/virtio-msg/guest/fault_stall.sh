# SPDX-License-Identifier: GPL-2.0
#
# Fault: the block device's backend stalls for 8 s from the next request on,
# as behind a disk that stopped: its buffers wait in the virtqueue. The I/O
# completes once the stall ends, with the right data; meanwhile both entropy
# devices of the same FIFO keep reading. After twice the timeout with nothing
# announced (counted on the bus's clock), the transport asks the device for
# its status: it answers, so it is alive, only slow, and nothing breaks (8 s also stays under the hung-task
# detector's 15 s).
# e2e-host: faults
. /tests/lib.sh

fault_up
check blk_moves_before blk_moves 0
emulator_ctl fault 0:0:stall,ms=8000
start=$(date +%s)
(blk_moves 64 && echo ok >/tmp/blk.ok) &
sleep 1
check rng_reads_during_stall rng_reads virtio_rng.1
check other_rng_reads_during_stall rng_reads virtio_rng.0
check blk_still_waiting test ! -e /tmp/blk.ok
wait
took=$(($(date +%s) - start))
echo "blk I/O took $took s"
check stalled_blk_moves_after_stall test -e /tmp/blk.ok
check stall_lasted test "$took" -ge 6
cat "$stats" | sed 's/^/  /'
# Nothing announced for 4 s after the kick: the device was asked whether it is
# alive, and it was.
check asked_if_alive test "$(bus_stat liveness_checks)" -ge 1
check no_device_broken test "$(bus_stat broken_devices)" = 0
fault_down
