# SPDX-License-Identifier: GPL-2.0
#
# Fault: the network device (FIFO 0, device 0) raises DEVICE_NEEDS_RESET while
# traffic runs both ways (two streams through the host's echo server), with
# its messages half a second late, again
# after its recovery, and then past the recovery limit. Before the recovery
# reset the device before breaking its queues, and before
# virtqueue_enable_cb_delayed() reported no work on a broken queue (patch 0016
# of the series), virtio-net's TX clean-up could loop for ever on used entries
# a broken queue never returns: soft lockups, the other CPU spinning on the TX
# lock. Now each time the interface comes back and moves data (SHA-256
# compared), the console on the same FIFO and the disk and entropy device of
# FIFO 1 keep working, and past the limit the device is removed for good.
# e2e-host: kinds
# e2e-exclusive: vmsgtap0
# e2e-kasan: the network device torn down under traffic and probed again
. /tests/lib.sh

kinds_up
check net_interface_up net_up
check net_moves net_moves
check console_writes console_line "console before the resets"
traffic_start
sleep 2
# Each time behind late messages: the device completes transmissions for half
# a second before it says so, then raises NEEDS_RESET just after an EVENT_USED.
# When that event starts a receive poll, its TX clean-up finds most of the
# transmit queue used, on a queue just broken.
for round in 1 2; do
	emulator_ctl "fault 0:0:late,ms=500"
	emulator_ctl "fault 0:0:needs-reset"
	check net_recovered_$round recovered 0 $round
	emulator_ctl "clear 0"
	check net_interface_up_again_$round net_up
	sleep 2
done
traffic_stop
check net_moves_after_two_resets net_moves
check healthy_fifo_moves healthy_moves 0
check console_writes_after_resets console_line "console after two resets"
# The third recovery is the last; the fourth request removes it for good.
emulator_ctl "fault 0:0:needs-reset"
check net_recovered_3 recovered 0 3
check net_interface_up_again_3 net_up
emulator_ctl "fault 0:0:needs-reset"
check net_removed_for_good sh -c 'for _ in $(seq 300); do
	dmesg | grep -q "device 0: failed after 3 recoveries" && exit 0; sleep 0.1; done; exit 1'
check net_interface_gone sh -c '! ls /sys/bus/virtio/devices/*/net >/dev/null 2>&1'
check console_writes_at_the_end console_line "console at the end"
check healthy_fifo_still_moves healthy_moves 64
fault_unload
check_no_leaks
