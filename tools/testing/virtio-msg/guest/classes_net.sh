# SPDX-License-Identifier: GPL-2.0
#
# Every class of fault the emulator has, on the network device (FIFO 0,
# device 0) while traffic runs both ways: duplicated, dropped, reordered,
# garbage, lying and late answers, floods of events, a configuration
# generation that never settles. After each, the interface works again
# (recovered if the fault broke the device), a transfer's SHA-256 comes back
# right, and FIFO 1's disk and entropy device kept moving data; then the
# modules unload. (A FIFO that dies under a network device is not part of it:
# see "A device that keeps writing" in Documentation/driver-api/virtio/
# virtio_msg.rst.)
# e2e-host: kinds
# e2e-exclusive: vmsgtap0
# e2e-timeout: 420
. /tests/lib.sh

net_works() { net_ready && net_moves; }

kinds_up
check net_works net_works
traffic_start
fault_classes 0:0 net_works
traffic_stop
check healthy_fifo_still_moves healthy_moves 700
fault_unload
check_no_leaks
