# SPDX-License-Identifier: GPL-2.0
#
# Fault: a FIFO dies while its disk has I/O in flight, and the other FIFO
# keeps working. Two FIFOs (host/dead_fifo.sh), each with a disk and an
# entropy device. The disk of FIFO 0 stops taking buffers (its backend
# stalls) with a reader waiting on it; then the device side breaks FIFO 0's
# queue protocol (its device queue head out of range, the next message it
# sends): the FIFO stops and all its devices are gone. Before virtio_blk
# failed the requests of a broken device when it is removed (patch 0015 of
# the series), the reader stayed in D state for ever, and the removal, the
# FIFO's other device and rmmod waited behind del_gendisk(). Now the reader
# gets an I/O error within 10 s, FIFO 0's devices are removed, FIFO 1's disk
# and entropy device move data meanwhile and after, and the modules unload.
# e2e-host: dead_fifo
# e2e-kasan: a FIFO's devices freed while a disk has requests in flight
. /tests/lib.sh

[ -w /sys/kernel/debug/kmemleak ] && echo clear >/sys/kernel/debug/kmemleak
check core_load insmod $MODDIR/virtio_msg.ko
check amp_pci_load insmod $MODDIR/virtio_msg_amp_pci.ko
check devices_bound wait_for 4
dead=$(disk_of 8192) live=$(disk_of 16384)
check disks_found test -b "$dead" -a -b "$live"
disk=$live
check live_disk_moves blk_moves 0

# FIFO 0's disk takes nothing more; a reader waits on it.
emulator_ctl "fault 0:0:stall,ms=600000"
(
	dd if="$dead" of=/dev/null bs=4096 count=64 iflag=direct 2>/dev/null
	echo $? >/tmp/reader.rc
) &
sleep 2
check reader_waits test ! -e /tmp/reader.rc
# FIFO 1 moves data while FIFO 0 dies.
(
	for i in $(seq 20); do blk_moves $((i * 64)) || echo fail >/tmp/live.fail; done
	echo done >/tmp/live.done
) &
emulator_ctl "fault 0:all:corrupt-index"
lost=$(date +%s)
# Something must go out on FIFO 0 for the fault to strike: its entropy device's
# answer (or the disk's answer when the driver asks whether it is alive).
for r in $(cat /sys/class/misc/hw_random/rng_available); do
	echo "$r" >/sys/class/misc/hw_random/rng_current 2>/dev/null &&
		timeout 3 dd if=/dev/hwrng of=/dev/null bs=16 count=1 2>/dev/null
done
while [ ! -e /tmp/reader.rc ] && [ "$(date +%s)" -le $((lost + 12)) ]; do sleep 0.1; done
took=$(($(date +%s) - lost))
echo "  reader: status $(cat /tmp/reader.rc 2>/dev/null || echo none), $took s after the loss"
check reader_ended_within_10s test -e /tmp/reader.rc -a "$took" -le 10
check reader_got_an_error test "$(cat /tmp/reader.rc 2>/dev/null || echo 0)" != 0
check dead_disk_gone sh -c "for _ in \$(seq 100); do [ -b $dead ] || exit 0; sleep 0.1; done; exit 1"
# FIFO 0's devices are removed one after the other (each driver's removal
# has its own waits: virtio-rng's for its reader, say): within 30 s.
check fifo0_devices_removed_within_30s sh -c 'for _ in $(seq 300); do
	[ "$(ls /sys/bus/virtio/devices/ | wc -l)" = 2 ] && exit 0; sleep 0.1; done; exit 1'
echo "  FIFO 0's devices removed $(($(date +%s) - lost)) s after the loss"
check one_entropy_device_left sh -c \
	'test "$(tr " " "\n" </sys/class/misc/hw_random/rng_available | grep -c ^virtio_rng)" = 1'
for _ in $(seq 300); do [ -e /tmp/live.done ] && break; sleep 0.1; done
check live_disk_moved_meanwhile test -e /tmp/live.done -a ! -e /tmp/live.fail
check live_disk_still_moves blk_moves 1536
r=$(cat /sys/class/misc/hw_random/rng_available | tr ' ' '\n' | grep ^virtio_rng)
check live_rng_reads rng_reads "$r"
fault_unload
check_no_leaks
