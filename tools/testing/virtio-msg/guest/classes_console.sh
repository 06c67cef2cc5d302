# SPDX-License-Identifier: GPL-2.0
#
# Every class of fault the emulator has, on the console (FIFO 0, device 1)
# while a writer writes to its terminal (virtio_console busy-waits for each
# console write, interrupts off): duplicated, dropped, reordered, garbage,
# lying and late answers, floods of events, a configuration generation that
# never settles. After each, the console takes a line again (recovered if the
# fault broke the device; the host checks the line arrived), and FIFO 1's
# disk and entropy device kept moving data; then the modules unload.
# e2e-host: kinds
# e2e-exclusive: vmsgtap0
# e2e-timeout: 420
. /tests/lib.sh

line_no=0
console_works() {
	line_no=$((line_no + 1))
	for _ in $(seq 20); do
		console_line "console line $line_no after a fault" && return 0
		sleep 1
	done
	return 1
}

kinds_up
check console_works console_works
writer_start
fault_classes 0:1 console_works
writer_stop
check healthy_fifo_still_moves healthy_moves 700
fault_unload
check_no_leaks
