# SPDX-License-Identifier: GPL-2.0
#
# Fault: the device side puts 200 PINGs on its queue at once, more than the
# driver queue has room for echoes. The AMP PCI driver answers them in
# batches, one doorbell per batch, without waiting in its interrupt handler
# for room it would never get; the block device moves data meanwhile.
# host/faults.sh checks the emulator's side: it got an echo for every PING
# it sent (host_burst_pings_echoed), and the driver rang at most one
# doorbell per four echoes from the burst to its last echo, as one doorbell
# per batch does and one per PONG does not
# (host_burst_one_doorbell_per_batch).
# e2e-host: faults
. /tests/lib.sh

fault_up
dbg=$(ls -d /sys/kernel/debug/virtio_msg_amp_pci-*)
emulator_ctl fault 0:all:ping-burst,n=200
check blk_moves_meanwhile blk_moves 0
check rng_reads_meanwhile rng_reads virtio_rng.0
answered() { [ "$(fifo_stat 0 pings_answered)" -gt 0 ]; }
check pings_answered eventually 20 answered
sleep 2
cat $dbg/fifo0 | sed 's/^/  /'
answered=$(fifo_stat 0 pings_answered)
data pings_burst_answered "$answered"
fault_down
