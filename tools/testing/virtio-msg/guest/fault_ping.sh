# SPDX-License-Identifier: GPL-2.0
#
# The device side PINGs the driver, 20 times 100 ms apart (a bus message the
# specification lets either side send); the AMP PCI driver answers each from
# its interrupt handler with the echo, while the block device moves data. The
# emulator counts the echoes it got back (host/faults.sh checks them), the
# driver the PINGs it answered.
# e2e-host: faults
. /tests/lib.sh

fault_up
dbg=$(ls -d /sys/kernel/debug/virtio_msg_amp_pci-*)
emulator_ctl fault 0:all:ping,count=20
check blk_moves_meanwhile blk_moves 0
twenty_answered() { [ "$(fifo_stat 0 pings_answered)" = 20 ]; }
check twenty_pings_answered eventually 20 twenty_answered
cat $dbg/fifo0 | sed 's/^/  /'
answered=$(fifo_stat 0 pings_answered)
check no_pong_dropped grep -qx 'pongs_dropped: 0' $dbg/fifo0
data pings_answered "$answered"
fault_down
