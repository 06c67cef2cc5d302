# SPDX-License-Identifier: GPL-2.0
#
# Soak: 100 unload/reload cycles of both modules in the 2-vCPU guest (host
# side: host/soak.sh; two FIFOs: block and entropy devices on FIFO 0, network
# and entropy devices on FIFO 1). In every cycle, once the four devices are
# bound: an entropy read, 64 KiB written to the disk and read back, and a ping
# of the host must all succeed; then block, entropy and network traffic is
# started again and the modules are unloaded under it (that traffic may fail,
# the unload must not hang). Before the soak a 1 MiB pattern is written to
# the disk; after it, it must read back unchanged (host/soak.sh checks the
# image too). No kernel warning (e2e.sh) and no leak at the end.
# e2e-timeout: 900
# e2e-exclusive: vmsgsoak0
. /tests/lib.sh

CYCLES=100
HOST_IP=10.78.0.1
GUEST_IP=10.78.0.2
KEPT=2048 # 4 KiB block of the kept pattern (8 MiB in)

[ -w /sys/kernel/debug/kmemleak ] && echo clear >/sys/kernel/debug/kmemleak

up() {
	insmod $MODDIR/virtio_msg.ko && insmod $MODDIR/virtio_msg_amp_pci.ko && wait_for 4 || return 1
	blkdev=$(virtio_dev 2)
	disk=/dev/$(ls "$blkdev/block" 2>/dev/null)
	ip link set eth0 up 2>/dev/null && ip addr add $GUEST_IP/24 dev eth0 2>/dev/null
	[ -b "$disk" ]
}
down() { rmmod virtio_msg_amp_pci && rmmod virtio_msg; }

# One cycle's traffic, which must succeed: entropy, 64 KiB to the disk and
# back (outside the kept pattern), a ping.
traffic() {
	dd if=/dev/hwrng of=/dev/null bs=64 count=4 2>/dev/null &&
		dd if=/tmp/chunk of="$disk" bs=4096 seek=$((64 + $1 % 256 * 16)) oflag=direct 2>/dev/null &&
		dd if="$disk" bs=4096 skip=$((64 + $1 % 256 * 16)) count=16 iflag=direct 2>/dev/null | cmp -s - /tmp/chunk &&
		ping -c 1 -W 5 $HOST_IP >/dev/null
}

# Traffic that the unload interrupts.
background() {
	(while dd if=/dev/hwrng of=/dev/null bs=64 count=16 2>/dev/null; do :; done) &
	(while dd if="$disk" of=/dev/null bs=4096 count=64 iflag=direct 2>/dev/null; do :; done) &
	(ping -i 0.05 -W 1 $HOST_IP >/dev/null 2>&1) &
}

check first_load up
dd if=/dev/urandom of=/tmp/kept bs=4096 count=256 2>/dev/null
dd if=/tmp/kept of="$disk" bs=4096 seek=$KEPT oflag=direct conv=fsync 2>/dev/null
data kept_sha256 "$(sha256sum </tmp/kept | cut -d' ' -f1)" $((KEPT * 4096)) $((256 * 4096))
dd if=/dev/urandom of=/tmp/chunk bs=4096 count=16 2>/dev/null

loaded=0 moved=0 unloaded=0
start=$(date +%s)
for i in $(seq $CYCLES); do
	if [ $i -gt 1 ]; then up || { echo "cycle $i: load failed"; break; }; fi
	loaded=$((loaded + 1))
	if traffic $i; then moved=$((moved + 1)); else echo "cycle $i: traffic failed"; fi
	background
	sleep 0.2
	timeout 60 sh -c 'rmmod virtio_msg_amp_pci && rmmod virtio_msg' || { echo "cycle $i: unload failed"; break; }
	unloaded=$((unloaded + 1))
	kill $(jobs -p) 2>/dev/null
	wait 2>/dev/null
done
echo "soak: $loaded loads, $moved cycles moved data, $unloaded unloads in $(($(date +%s) - start)) s"
check all_cycles_loaded test $loaded = $CYCLES
check all_cycles_moved_data test $moved = $CYCLES
check all_cycles_unloaded test $unloaded = $CYCLES
check last_load up
check kept_pattern_intact sh -c "dd if=$disk bs=4096 skip=$KEPT count=256 iflag=direct 2>/dev/null | cmp -s - /tmp/kept"
check last_unload timeout 60 sh -c 'rmmod virtio_msg_amp_pci && rmmod virtio_msg'
check_no_leaks
