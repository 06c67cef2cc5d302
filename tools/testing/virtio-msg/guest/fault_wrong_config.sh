# SPDX-License-Identifier: GPL-2.0
#
# Fault: the disk (device 0) answers GET_CONFIG with the wrong offset or the
# wrong length (decodable, but not what was asked), then announces a
# configuration change, so that virtio-blk reads its capacity again. The
# transport asks again, then breaks and recovers the device; the capacity
# virtio-blk reads meanwhile is the last one the device reported, never
# zeros (it would resize the disk to 0) nor anything made up: while the disk
# exists its size stays 8192 sectors. The entropy devices keep working, the
# modules unload.
# e2e-host: faults
# e2e-kasan: configuration answers of another offset or length than asked
. /tests/lib.sh

fault_up
name=${disk#/dev/}
check disk_size_before test "$(cat /sys/block/$name/size)" = 8192
(
	end=$(($(date +%s) + 15))
	while [ "$(date +%s)" -le $end ]; do
		s=$(cat /sys/block/$name/size 2>/dev/null)
		[ -z "$s" ] || [ "$s" = 8192 ] || echo "$s" >>/tmp/sizes.wrong
		sleep 0.05
	done
	touch /tmp/sizes.done
) &
emulator_ctl "fault 0:0:wrong-config"
emulator_ctl "fault 0:0:flood-config,n=1,count=1"
check disk_broken sh -c 'for _ in $(seq 150); do
	dmesg | grep -q "device 0: message 0x[0-9a-f]* answered with nonsense" && exit 0; sleep 0.1; done; exit 1'
for _ in $(seq 200); do [ -e /tmp/sizes.done ] && break; sleep 0.1; done
check disk_size_never_wrong test ! -e /tmp/sizes.wrong
[ -e /tmp/sizes.wrong ] && sed 's/^/  size seen: /' /tmp/sizes.wrong | head -5
emulator_ctl "clear 0"
check rng_reads rng_reads virtio_rng.1
fault_unload
check_no_leaks
