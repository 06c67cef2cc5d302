# SPDX-License-Identifier: GPL-2.0
#
# Fault: the device side raises the FIFO's MSI-X vector 20 times every 100 ms
# with nothing on its queue (an interrupt storm). The AMP PCI interrupt
# handler drains nothing and says so (IRQ_NONE, counted as "spurious"), so the
# kernel's spurious-interrupt detection sees the storm; the devices move data
# meanwhile and after, and the modules unload. (Before, every interrupt
# claimed to be handled: a storm could never be detected.)
# e2e-host: faults
. /tests/lib.sh

fault_up
before=$(fifo_stat 0 spurious)
emulator_ctl fault 0:all:msix-storm,n=20
check blk_moves_during_the_storm blk_moves 0
check rng_reads_during_the_storm rng_reads virtio_rng.0
storm_seen() { [ "$(fifo_stat 0 spurious)" -ge $((before + 20)) ]; }
check storm_seen_as_spurious eventually 20 storm_seen
emulator_ctl clear 0
echo "  spurious interrupts: $before before, $(fifo_stat 0 spurious) after the storm"
fault_down
