# SPDX-License-Identifier: GPL-2.0
#
# Fault: the block device answers every GET_CONFIG with a new configuration
# generation. The virtio core reads a field again for as long as the
# generation moves (__virtio_cread_many); while the driver probes, the
# transport's read-ahead window answers the second read of a field, and once
# the driver runs, the transport stops passing changes on after 8 reads in a
# row (KUnit: a_generation_that_never_settles...). So the probe ends and the
# disk has its real size.
# e2e-host: faults
# e2e-emulator-extra: --fault 0:0:generation-churn
. /tests/lib.sh

fault_up
check blk_size_4MiB test "$(cat /sys/class/block/${disk#/dev/}/size 2>/dev/null)" = 8192
check blk_moves blk_moves 0
fault_down
