# SPDX-License-Identifier: GPL-2.0
#
# The virtio-msg transport with the loopback test bus: the stock virtio-rng
# driver binds to the loopback's in-kernel entropy device through virtio_msg,
# /dev/hwrng returns random data; with blk_mib, the stock virtio-blk driver
# writes to and reads back from its memory-backed block device; both modules
# unload without leaking.
. /tests/lib.sh

kmemleak=/sys/kernel/debug/kmemleak
# Forget what boot left behind: only our own leaks count.
[ -w $kmemleak ] && echo clear >$kmemleak

check core_load insmod $MODDIR/virtio_msg.ko
check loopback_load insmod $MODDIR/virtio_msg_loopback.ko

# The virtio device of id 4 (entropy), once its driver is bound.
dev=$(virtio_dev 4)
check rng_device_registered test -n "$dev"
check rng_driver_bound test "$(basename "$(readlink "$dev/driver" 2>/dev/null)")" = virtio_rng
echo "  device $dev: vendor $(cat $dev/vendor 2>/dev/null), status $(cat $dev/status 2>/dev/null)"
check driver_ok sh -c "[ \$((\$(cat $dev/status) & 4)) -ne 0 ]"
check hwrng_current grep -q '^virtio_rng' /sys/class/misc/hw_random/rng_current

dd if=/dev/hwrng of=/tmp/r1 bs=64 count=8 2>/dev/null
dd if=/dev/hwrng of=/tmp/r2 bs=64 count=8 2>/dev/null
check hwrng_read_512_bytes test "$(wc -c </tmp/r1)" = 512
check hwrng_reads_differ sh -c '! cmp -s /tmp/r1 /tmp/r2'
check hwrng_not_all_zero sh -c "od -An -tx1 /tmp/r1 | tr -d ' \n0' | grep -q ."
echo "  first bytes: $(od -An -tx1 -N16 /tmp/r1)"

stats=$(cat /sys/kernel/debug/virtio_msg-*/stats 2>/dev/null)
echo "$stats" | sed 's/^/  /'
check stats_events_used sh -c "echo \"\$1\" | awk '\$1 == \"EVENT_USED\" && \$3 > 0 { ok = 1 } END { exit !ok }'" _ "$stats"
check stats_no_timeouts sh -c "echo \"\$1\" | grep -qx 'timeouts: 0'" _ "$stats"
check stats_nothing_malformed sh -c "echo \"\$1\" | grep -qx 'malformed: 0'" _ "$stats"

check loopback_unload rmmod virtio_msg_loopback
check device_gone sh -c "! ls /sys/bus/virtio/devices/ 2>/dev/null | grep -q ."
check core_unload rmmod virtio_msg

# Load again in the other order: the bus first, then the transport binds to it,
# this time with the memory-backed block device next to the entropy device.
check loopback_reload insmod $MODDIR/virtio_msg_loopback.ko blk_mib=4
check core_reload insmod $MODDIR/virtio_msg.ko
sleep 1
check hwrng_read_after_reload sh -c 'dd if=/dev/hwrng bs=32 count=1 2>/dev/null | wc -c | grep -qx 32'
blk=$(virtio_dev 2)
disk=/dev/$(ls $blk/block 2>/dev/null)
check blk_device_registered test -b "$disk"
check blk_size_4MiB test "$(cat /sys/class/block/${disk#/dev/}/size 2>/dev/null)" = 8192
dd if=/dev/urandom of=/tmp/blk bs=4096 count=256 2>/dev/null
check blk_write_1MiB dd if=/tmp/blk of=$disk bs=4096 seek=100 oflag=direct conv=fsync 2>/dev/null
check blk_read_back_1MiB sh -c "dd if=$disk bs=4096 skip=100 count=256 iflag=direct 2>/dev/null | cmp -s - /tmp/blk"
check blk_past_end_fails sh -c "! dd if=/tmp/blk of=$disk bs=4096 seek=1024 count=1 oflag=direct 2>/dev/null"
check unload_again sh -c 'rmmod virtio_msg_loopback && rmmod virtio_msg'

check_no_leaks
