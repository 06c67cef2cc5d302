# SPDX-License-Identifier: GPL-2.0
#
# Fault: FIFO 0's device side stops taking messages from the driver queue for 8 s: the queue fills, senders find no room.
# Two FIFOs (host/dead_fifo.sh), each with a disk and an entropy device, and
# traffic on both. Whatever the driver makes of it (messages dropped as
# malformed or late, requests retried, devices broken and recovered, or the
# FIFO stopped and its devices removed: its keepalive takes a device side
# that answers no PING for three periods for gone, and withdraws what that
# side had not taken, so that it acts on nothing of it when it wakes up), it
# is over in bounded time, the guest's memory intact: FIFO 1's
# devices move data (bytes compared) throughout, FIFO 0's disk either works
# again or is gone, nothing hangs, and the modules unload.
# e2e-host: dead_fifo
. /tests/lib.sh

fifo0_fault "fault 0:all:stop-consuming,ms=8000"
