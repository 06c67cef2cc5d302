# SPDX-License-Identifier: GPL-2.0
#
# Fault: the bus lists 28 device numbers besides its three devices, and none
# of them answers (each would cost three timeouts). The transport probes the
# listed devices in a work item, not in its probe: loading the bus module
# returns at once, the real devices (listed first) work, unloading while the
# silent numbers are probed waits for one probe at most, and after four
# silent numbers in a row the rest are not probed. (Before, the probes ran
# with the bus's device held: 28 silent numbers kept rmmod waiting about
# three minutes, 256 on eight FIFOs about three hours.)
# e2e-host: faults
# e2e-emulator-extra: --fault 0:all:silent-numbers,n=28
# e2e-kasan: the bus unloaded while devices are probed in a work item
. /tests/lib.sh

check core_load insmod $MODDIR/virtio_msg.ko
start=$(date +%s)
check amp_pci_load_returns_at_once sh -c "insmod $MODDIR/virtio_msg_amp_pci.ko && test \$((\$(date +%s) - $start)) -le 3"
check devices_bound wait_for 3
blkdev=$(virtio_dev 2)
disk=/dev/$(ls "$blkdev/block" 2>/dev/null)
check blk_moves blk_moves 0
check rng_reads rng_reads virtio_rng.0
# The silent numbers are being probed now: unloading waits for one of them.
start=$(date +%s)
check unload_during_the_probes_within_10s timeout 10 rmmod virtio_msg_amp_pci
echo "  unloaded in $(($(date +%s) - start)) s"
check reload insmod $MODDIR/virtio_msg_amp_pci.ko
check devices_bound_again wait_for 3
check rest_left_unprobed_within_40s sh -c 'for _ in $(seq 400); do
	dmesg | grep -q "4 listed devices in a row did not answer: 24 more not probed" && exit 0
	sleep 0.1; done; exit 1'
check three_devices test "$(ls /sys/bus/virtio/devices/ | wc -l)" = 3
fault_down
