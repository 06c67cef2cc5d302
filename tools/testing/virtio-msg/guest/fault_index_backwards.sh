# SPDX-License-Identifier: GPL-2.0
#
# Fault: FIFO 0's device side moves its device queue's head index back three slots (once): the driver either loses unread messages or sees stale slots again.
# Two FIFOs (host/dead_fifo.sh), each with a disk and an entropy device, and
# traffic on both. Whatever the driver makes of it (messages dropped as
# malformed or late, requests retried, devices broken and recovered, or the
# FIFO stopped and its devices removed), it is over in bounded time: FIFO 1's
# devices move data (bytes compared) throughout, FIFO 0's disk either works
# again or is gone, nothing hangs, and the modules unload.
# e2e-host: dead_fifo
. /tests/lib.sh

two_fifos_up
emulator_ctl "fault 0:all:index-backwards"
fifo0_busy
check fifo1_moves_meanwhile fifo1_moves 0
sleep 8
check fifo1_still_moves fifo1_moves 64
check fifo0_disk_works_or_is_gone fifo0_settled
show_fifo0
emulator_ctl "clear 0"
fault_unload
check_no_leaks
