# SPDX-License-Identifier: GPL-2.0
#
# The AMP PCI bus end to end, against virtio-msg-emulator (host side:
# host/amp_pci.sh): two FIFOs, three devices on FIFO 0 (entropy, block,
# console) and two on FIFO 1 (network, entropy). The stock virtio drivers move
# real data; the host side checks the other end (the disk image, the bytes the
# network peer received, the console line). Then both modules are unloaded,
# loaded again, and the devices work again; finally they are unloaded while
# the entropy and block devices are busy.
# e2e-exclusive: vmsgtap0
. /tests/lib.sh

HOST_IP=10.77.0.1
GUEST_IP=10.77.0.2
DEVICES=5

check core_load insmod $MODDIR/virtio_msg.ko
check amp_pci_load insmod $MODDIR/virtio_msg_amp_pci.ko

pci=
for d in /sys/bus/pci/devices/*; do
	[ "$(cat $d/vendor):$(cat $d/device)" = 0x10ee:0x9039 ] && pci=$d
done
check pci_device_found test -n "$pci"
check pci_class_0880 test "$(cat $pci/class 2>/dev/null)" = 0x088000
check pci_driver_bound test "$(basename "$(readlink $pci/driver 2>/dev/null)")" = virtio_msg_amp_pci
check devices_bound wait_for $DEVICES
dbg=/sys/kernel/debug/virtio_msg_amp_pci-$(basename "$pci")
cat $dbg/fifo0 $dbg/fifo1 2>/dev/null | sed 's/^/  /'
check fifo0_devices grep -qx 'devices: 0 1 2' $dbg/fifo0
check fifo1_devices grep -qx 'devices: 3 5' $dbg/fifo1

# virtio-rng: both entropy devices register; /dev/hwrng reads random bytes.
rng_check() {
	dd if=/dev/hwrng of=/tmp/r1 bs=64 count=4 2>/dev/null
	dd if=/dev/hwrng of=/tmp/r2 bs=64 count=4 2>/dev/null
	[ "$(wc -c </tmp/r1)" = 256 ] && ! cmp -s /tmp/r1 /tmp/r2
}
check rng_hwrng_reads rng_check
check rng_two_devices test "$(tr " " "\n" </sys/class/misc/hw_random/rng_available | grep -c "^virtio_rng")" = 2
echo "  hwrng: $(cat /sys/class/misc/hw_random/rng_available)"

# virtio-blk: write a pattern at 1 MiB, read it back past the page cache.
blk=$(for b in /sys/block/vd*; do [ -e "$b" ] && basename $b; done | head -n1)
check blk_disk_found test -n "$blk"
blk_check() {
	dd if=/dev/urandom of=/tmp/pattern bs=4096 count=64 2>/dev/null &&
	dd if=/tmp/pattern of=/dev/$blk bs=4096 seek=256 conv=fsync 2>/dev/null &&
	echo 3 >/proc/sys/vm/drop_caches &&
	dd if=/dev/$blk of=/tmp/readback bs=4096 skip=256 count=64 iflag=direct 2>/dev/null &&
	cmp /tmp/pattern /tmp/readback
}
check blk_write_read_compare blk_check
data blk_sha256 $(sha256sum </tmp/pattern | cut -d' ' -f1) 1048576 262144

# virtio-console: a line each way through /dev/hvc0.
token=guest-line-$(od -An -tx1 -N6 /dev/urandom | tr -d ' \n')
con_check() {
	[ -c /dev/hvc0 ] || return 1
	stty -F /dev/hvc0 raw -echo 2>/dev/null
	timeout 30 head -n1 /dev/hvc0 >/tmp/con.in &
	reader=$!
	sleep 0.5
	echo "$token" >/dev/hvc0
	wait $reader
	tr -d '\r' </tmp/con.in | grep -qx "host-got:$token"
}
check console_line_round_trip con_check
data console_token $token

# virtio-net: address, ping the host end of the tap, a bulk transfer whose
# SHA-256 the host sends back (and the host side checks too).
net_up() {
	ip link set eth0 up && ip addr add $GUEST_IP/24 dev eth0
}
check net_interface_up net_up
check net_ping ping -c 3 -W 5 $HOST_IP
dd if=/dev/urandom of=/tmp/bulk bs=65536 count=16 2>/dev/null
sum=$(sha256sum </tmp/bulk | cut -d' ' -f1)
data net_sha256 $sum
net_bulk() {
	timeout 60 nc $HOST_IP 5577 </tmp/bulk >/tmp/bulk.reply
	[ "$(cat /tmp/bulk.reply)" = "$sum" ]
}
check net_bulk_1MiB_sha256 net_bulk

cat $dbg/fifo0 $dbg/fifo1 | sed 's/^/  /'
for f in $dbg/fifo0 $dbg/fifo1; do
	n=$(basename $f)
	# Every interrupt was served in the hard handler, within its budget.
	check ${n}_drained_in_hard_irq grep -qx 'threaded: 0' $f
	check ${n}_no_index_errors grep -qx 'index_errors: 0' $f
	check ${n}_interrupts sh -c "grep -q '^interrupts: [1-9]' $f"
	check ${n}_no_late_bus_reply grep -qx 'late_bus: 0' $f
	# What the bench counts: every message sent wrote at least one word of
	# its slot and the head, every one received read at least its slot's
	# first word and freed it; the first doorbell and one in 16 after it
	# were timed (one may be in flight: counted rung, not yet timed), and
	# took some time. One reading of the file: the keepalive goes on.
	snap=$(cat $f)
	c() { echo "$snap" | sed -n "s/^$1: //p"; }
	check ${n}_bar1_writes_counted test "$(c bar1_writes)" -ge $((2 * $(c sent) + $(c received)))
	check ${n}_bar1_reads_counted test "$(c bar1_reads)" -ge "$(c received)"
	timed=$(c doorbells_timed) want=$((($(c doorbells) + 15) / 16))
	check ${n}_doorbells_timed test "$timed" -le "$want" -a "$timed" -ge $((want - 1))
	check ${n}_doorbell_time test "$(c doorbell_ns)" -ge "$timed"
done
# Whatever the emulator does with tokens, every response answered its own
# request: nothing late, unsolicited or timed out, no request unprotected.
i=0
for s in /sys/kernel/debug/virtio_msg-*/stats; do
	check transport${i}_all_answered sh -c "grep -qx 'late: 0' $s && grep -qx 'unsolicited: 0' $s && grep -qx 'timeouts: 0' $s && grep -qx 'unprotected_requests: 0' $s"
	check transport${i}_nothing_malformed grep -qx 'malformed: 0' $s
	i=$((i + 1))
done

# Unload both (bus first), load again, and the devices work again.
check amp_pci_unload rmmod virtio_msg_amp_pci
check devices_gone sh -c '! ls /sys/bus/virtio/devices/ 2>/dev/null | grep -q .'
check core_unload rmmod virtio_msg
check core_reload insmod $MODDIR/virtio_msg.ko
check amp_pci_reload insmod $MODDIR/virtio_msg_amp_pci.ko
check devices_bound_again wait_for $DEVICES
check rng_after_reload rng_check
blk=$(for b in /sys/block/vd*; do [ -e "$b" ] && basename $b; done | head -n1)
check blk_after_reload sh -c "dd if=/dev/$blk bs=4096 skip=256 count=64 iflag=direct 2>/dev/null | cmp - /tmp/pattern"
check net_after_reload sh -c "ip link set eth0 up && ip addr add $GUEST_IP/24 dev eth0 && ping -c 2 -W 5 $HOST_IP"

# Two bus modules at once: the loopback test bus next to the FIFOs, its
# entropy device bound too (lockdep checks the shared link's lock classes).
check second_bus_module insmod $MODDIR/virtio_msg_loopback.ko
check second_bus_devices_bound wait_for $((DEVICES + 1))
check second_bus_unload rmmod virtio_msg_loopback

# Unbind under load, in the other order (the transport first, then the bus):
# the entropy and block devices are busy reading while they go away. Their
# readers end with an error or finish; nothing hangs.
(while dd if=/dev/hwrng of=/dev/null bs=64 count=200 2>/dev/null; do :; done) &
rng_reader=$!
(while dd if=/dev/$blk of=/dev/null bs=4096 count=1024 iflag=direct 2>/dev/null; do :; done) &
blk_reader=$!
sleep 2
check unbind_under_load_transport timeout 60 rmmod virtio_msg
# A reader that ended is a zombie until reaped: "running" means not that.
running() { [ -e /proc/$1 ] && [ "$(cut -d' ' -f3 /proc/$1/stat)" != Z ]; }
readers_stopped() { sleep 2; ! running $rng_reader && ! running $blk_reader; }
check readers_stopped readers_stopped
kill $rng_reader $blk_reader 2>/dev/null
check unbind_bus timeout 60 rmmod virtio_msg_amp_pci
