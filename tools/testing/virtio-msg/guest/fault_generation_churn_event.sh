# SPDX-License-Identifier: GPL-2.0
#
# Fault: the block device announces a new configuration generation with an
# EVENT_CONFIG just before every GET_CONFIG answer, which carries it. Each
# event outdates the transport's read-ahead window, so every read of the
# probe goes to the device, and no two answers in a row look alike: before
# the transport counted the events' changes too, the virtio core read
# virtio-blk's capacity for ever (__virtio_cread_many), in probe. Now the
# generation the driver sees stays put after 8 changes in a row (KUnit:
# a_generation_changed_by_an_event_before_every_answer...), so the probe
# ends and the disk has its real size.
# e2e-host: faults
# e2e-emulator-extra: --fault 0:0:generation-churn-event
. /tests/lib.sh

fault_up
check blk_size_4MiB test "$(cat /sys/class/block/${disk#/dev/}/size 2>/dev/null)" = 8192
check blk_moves blk_moves 0
fault_down
