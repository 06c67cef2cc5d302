# SPDX-License-Identifier: GPL-2.0
#
# Fault: the console (FIFO 0, device 1) stops returning buffers and goes
# silent while a writer writes to its terminal, on two vCPUs. virtio_console's console write busy-waits with
# interrupts off until the device returns its buffer. Before patch 0015 of
# the series, once the transport found the device dead and broke its queues,
# the write freed its buffer and the removal freed it again (a double free,
# refcount underflow); before 0016 the wait had no bound. Now the device is
# broken and removed (its probe again fails: it stays silent), the writer is
# not stuck (its writes fail or are dropped), nothing is freed twice (the KASAN guest checks), and the network
# device on the same FIFO and FIFO 1's devices keep moving data.
# e2e-host: kinds
# e2e-exclusive: vmsgtap0
. /tests/lib.sh

kinds_up
check console_writes console_line "console before the fault"
check net_interface_up net_up
term=$(hvc)
# The device keeps the buffers it is given (its backend stalls, so the used
# ring does not move: what the console write polls) and answers nothing.
emulator_ctl "fault 0:1:stall,ms=600000"
emulator_ctl "fault 0:1:silent"
(
	i=0
	while echo "line $i of a writer that outlives its console" >&3; do i=$((i + 1)); done 3>"$term"
	echo "$i" >/tmp/writer.done
) 2>/dev/null &
writer=$!
check console_broken sh -c 'for _ in $(seq 600); do
	dmesg | grep -q "device 1: message 0x[0-9a-f]* failed" && exit 0; sleep 0.1; done; exit 1'
check console_removed sh -c 'for _ in $(seq 600); do
	grep -q 0x0003 /sys/bus/virtio/devices/*/device || exit 0; sleep 0.1; done; exit 1'
# The writer's writes fail once the terminal is hung up, or are dropped
# (the tty layer may still take them): either way it is not stuck, and dies
# when killed.
writer_free() {
	for _ in $(seq 300); do [ -e /tmp/writer.done ] && return 0; sleep 0.1; done
	grep -q '^State:.*D' /proc/$writer/status && return 1
	kill -9 $writer && sleep 1 && ! kill -0 $writer 2>/dev/null
}
check writer_not_stuck writer_free
echo "  writer: $(cat /tmp/writer.done 2>/dev/null) lines written"
check net_still_moves net_moves
check healthy_fifo_moves healthy_moves 0
check three_devices_left test "$(ls /sys/bus/virtio/devices/ | wc -l)" = 3
fault_unload
check_no_leaks
