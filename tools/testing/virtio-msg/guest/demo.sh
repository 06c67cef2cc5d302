# SPDX-License-Identifier: GPL-2.0
#
# The demo (make run): load the virtio-msg transport and the loopback bus,
# and show the stock virtio-rng driver reading through them.
. /tests/lib.sh

echo
echo "virtio-msg demo guest: Linux $(uname -r)"
insmod $MODDIR/virtio_msg.ko && echo "loaded virtio_msg (the transport)"
insmod $MODDIR/rust_virtio_msg_loopback.ko && echo "loaded rust_virtio_msg_loopback (a bus with an entropy device)"
sleep 1
for d in /sys/bus/virtio/devices/*; do
	[ -e "$d/device" ] || continue
	echo "$(basename $d): virtio device id $(cat $d/device), driver $(basename "$(readlink $d/driver)")"
done
echo "hwrng: $(cat /sys/class/misc/hw_random/rng_current)"
echo "16 random bytes from /dev/hwrng: $(dd if=/dev/hwrng bs=16 count=1 2>/dev/null | od -An -tx1)"
echo
echo "Try: cat /sys/kernel/debug/virtio_msg-*/stats"
echo "Leave with: poweroff -f"
