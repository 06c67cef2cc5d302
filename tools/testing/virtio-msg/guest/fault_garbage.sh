# SPDX-License-Identifier: GPL-2.0
#
# Fault: once it is up (its first 11 messages: the probe and the first
# buffer), entropy device 1 sends only undecodable messages. They are counted
# as malformed and dropped, and the block device on the same FIFO keeps moving
# data. Its backend still fills the buffers it is given: the transport's look
# at the queues on the bus's clock (1 s) finds them, although no EVENT_USED
# can be read, so the device still gives entropy. At unload its reset gets no
# answer it can read, three times: it is broken, and the unload takes bounded
# time. Loaded again, the device fails its probe and is left out; the other
# two work.
# e2e-host: faults
# e2e-emulator-extra: --fault 0:1:garbage,after=11
. /tests/lib.sh

fault_up
check blk_moves blk_moves 0
sleep 1
cat "$stats" | sed 's/^/  /'
check garbage_counted test "$(bus_stat malformed)" -gt 0
check faulty_rng_still_reads rng_reads virtio_rng.0 30
check lost_events_found test "$(bus_stat lost_events_found)" -ge 1
fault_down

check core_reload insmod $MODDIR/virtio_msg.ko
check amp_pci_reload insmod $MODDIR/virtio_msg_amp_pci.ko
check two_devices_bound wait_for 2
sleep 3
n=0
for d in /sys/bus/virtio/devices/*; do [ -e "$d/driver" ] && n=$((n + 1)); done
check faulty_device_left_out test $n = 2
check healthy_rng_reads_after_reload rng_reads virtio_rng.0
check blk_moves_after_reload blk_moves 700
fault_unload unload_again_within_60s
