# SPDX-License-Identifier: GPL-2.0
#
# Fault: entropy device 1 answers GET_DEVICE_INFO with a configuration space
# of 65535 bytes and 65535 queues. The transport refuses it at its probe (a
# driver would size buffers and queue arrays from those); the disk and the
# other entropy device are added and move data, and the modules unload.
# e2e-host: faults
# e2e-emulator-extra: --fault 0:1:info-lie
# e2e-kasan: a configuration space and a queue count sized by the device
. /tests/lib.sh

[ -w /sys/kernel/debug/kmemleak ] && echo clear >/sys/kernel/debug/kmemleak
check core_load insmod $MODDIR/virtio_msg.ko
check amp_pci_load insmod $MODDIR/virtio_msg_amp_pci.ko
check two_devices_bound wait_for 2
blkdev=$(virtio_dev 2)
disk=/dev/$(ls "$blkdev/block" 2>/dev/null)
check lying_device_refused sh -c 'dmesg | grep -q "device 1: config size 65535 or queue count 65535 out of range"'
sleep 2
check only_two_devices test "$(ls /sys/bus/virtio/devices/ | wc -l)" = 2
check blk_moves blk_moves 0
check rng_reads rng_reads virtio_rng.0
fault_unload
check_no_leaks
