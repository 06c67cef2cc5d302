# SPDX-License-Identifier: GPL-2.0
#
# Fault: FIFO 0's device side dies while the FIFO is idle: it stops taking
# messages from the driver queue, for good, and sends nothing. No driver
# waits for it, so no request can time out to tell. The AMP PCI bus PINGs a
# FIFO that was silent for a keepalive period (1 s); after 3 PINGs in a row
# go unanswered, the device side is taken for gone: the FIFO stops and its
# devices are removed, within 15 s. FIFO 1's device side answers its
# keepalive, and its disk moves data (bytes compared) before and after. The
# modules unload; nothing leaks. Two FIFOs (host/dead_fifo.sh), each with a
# disk and an entropy device.
# e2e-host: dead_fifo
. /tests/lib.sh

# dead_side_found: the bus said FIFO 0's device side is gone
dead_side_found() { dmesg | grep -q "FIFO 0: device side answered none of 3 keepalive PINGs"; }
# fifo0_disk_gone: FIFO 0's disk was removed
fifo0_disk_gone() { [ -z "$(disk_of 8192)" ]; }
# pinged: FIFO 0, silent, got a keepalive PING
pinged() { [ "$(fifo_stat 0 keepalive_pings)" -ge 1 ]; }

two_fifos_up
check fifo1_moves_before fifo1_moves 0
check idle_fifo_pinged eventually 10 pinged
check alive_side_answers test "$(fifo_stat 0 keepalive_misses)" = 0
start=$(date +%s)
emulator_ctl "fault 0:all:stop-consuming"
check dead_side_found_within_15s eventually 15 dead_side_found
echo "device side found gone after $(($(date +%s) - start)) s"
check fifo0_disk_removed eventually 10 fifo0_disk_gone
check fifo1_devices_left wait_for 2
show_fifo0
check missed_three test "$(fifo_stat 0 keepalive_misses)" -ge 3
check fifo1_moves_after fifo1_moves 64
check fifo1_side_answers test "$(fifo_stat 1 keepalive_misses)" = 0
emulator_ctl "clear 0"
fault_unload
check_no_leaks
