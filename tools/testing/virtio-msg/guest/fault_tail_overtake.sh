# SPDX-License-Identifier: GPL-2.0
#
# Fault: FIFO 0's device side sets the driver queue's tail three slots past what the driver produced (once), then back.
# Two FIFOs (host/dead_fifo.sh), each with a disk and an entropy device, and
# traffic on both. Whatever the driver makes of it (messages dropped as
# malformed or late, requests retried, devices broken and recovered, or the
# FIFO stopped and its devices removed), it is over in bounded time: FIFO 1's
# devices move data (bytes compared) throughout, FIFO 0's disk either works
# again or is gone, nothing hangs, and the modules unload.
# e2e-host: dead_fifo
# e2e-kasan: a queue index past what the driver produced
. /tests/lib.sh

fifo0_fault "fault 0:all:tail-overtake"
