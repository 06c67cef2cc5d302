# SPDX-License-Identifier: GPL-2.0
#
# Faults on the loopback bus: unbinding while a reader is busy, and a device
# that stops answering (it must time out, be marked broken, and its removal
# must not hang). The kernel log must stay free of warnings throughout.
. /tests/lib.sh

# The entropy device (virtio device id 4) is up, its driver bound.
wait_bound() { [ -n "$(virtio_dev 4)" ]; }

# 1. Unbind under load: a reader keeps the queue busy while the bus goes away.
check core_load insmod $MODDIR/virtio_msg.ko
check loopback_load insmod $MODDIR/virtio_msg_loopback.ko
check rng_bound wait_bound
dd if=/dev/hwrng of=/tmp/big bs=64 count=1000000 2>/dev/null &
reader=$!
sleep 1
check unbind_under_load rmmod virtio_msg_loopback
wait $reader
check reader_got_data test "$(wc -c </tmp/big)" -gt 0
echo "  the reader got $(wc -c </tmp/big) bytes before the unbind"
check no_device_left sh -c '! ls /sys/bus/virtio/devices/ 2>/dev/null | grep -q .'
check core_unload rmmod virtio_msg

# 2. A device that goes silent once the driver is up (10 answers: the probe).
mark="vmsg-silent-$$"
echo "$mark" >/dev/kmsg
check core_load_short_timeout insmod $MODDIR/virtio_msg.ko timeout_ms=300
check silent_loopback_load insmod $MODDIR/virtio_msg_loopback.ko silent_after=10
check rng_bound_before_silence wait_bound
start=$(date +%s)
timeout 10 rmmod virtio_msg_loopback
rc=$?
took=$(($(date +%s) - start))
echo "  removal of the silent device took ${took}s (rmmod status $rc)"
check silent_removal_completes test $rc = 0
check silent_removal_is_bounded test $took -le 5
check silent_device_marked_broken sh -c "dmesg | sed -n '/$mark/,\$p' | grep -q 'marked broken'"
check no_device_left_after_silence sh -c '! ls /sys/bus/virtio/devices/ 2>/dev/null | grep -q .'
check core_unload_after_silence rmmod virtio_msg
