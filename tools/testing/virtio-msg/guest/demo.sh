# SPDX-License-Identifier: GPL-2.0
#
# The demo (make run): load the virtio-msg transport and the AMP PCI bus
# driver, and show in a few lines that each device behind the emulated
# virtio-msg-amp-pci device works with its stock virtio driver.
. /tests/lib.sh

echo
echo "virtio-msg demo guest: Linux $(uname -r)"
insmod $MODDIR/virtio_msg.ko && echo "loaded virtio_msg (the transport)"
insmod $MODDIR/virtio_msg_amp_pci.ko && echo "loaded virtio_msg_amp_pci (the AMP PCI bus)"
wait_for 4 || echo "(not every device came up: see dmesg)"
for d in /sys/bus/virtio/devices/*; do
	[ -e "$d/device" ] || continue
	echo "  $(basename $d): virtio device id $(cat $d/device), driver $(basename "$(readlink $d/driver)")"
done
echo
echo "entropy  /dev/hwrng: $(dd if=/dev/hwrng bs=16 count=1 2>/dev/null | od -An -tx1)"
blk=$(for b in /sys/block/vd*; do [ -e "$b" ] && basename $b; done | head -n1)
if [ -n "$blk" ]; then
	echo "hello from the virtio-msg demo, $(date)" | dd of=/dev/$blk conv=fsync 2>/dev/null
	echo 3 >/proc/sys/vm/drop_caches
	echo "block    /dev/$blk: $(($(cat /sys/block/$blk/size) / 2048)) MiB, sector 0 reads back: $(head -c 64 /dev/$blk | head -n1)"
fi
if ip link set eth0 up 2>/dev/null && ip addr add 10.77.0.2/24 dev eth0; then
	echo "network  eth0 10.77.0.2 -> 10.77.0.1: $(ping -c 2 -W 5 10.77.0.1 | grep -E 'packets')"
fi
if [ -c /dev/hvc0 ]; then
	stty -F /dev/hvc0 raw -echo 2>/dev/null
	timeout 5 head -n1 /dev/hvc0 >/tmp/con.in &
	sleep 0.3
	echo "hello over virtio-console" >/dev/hvc0
	wait
	echo "console  /dev/hvc0 sent a line, the host answered: $(tr -d '\r' </tmp/con.in)"
fi
echo
echo "Try: cat /sys/kernel/debug/virtio_msg_amp_pci-*/fifo0"
echo "     cat /sys/kernel/debug/virtio_msg-*/stats"
echo "Leave with: reboot -f"
