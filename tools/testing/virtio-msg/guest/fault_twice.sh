# SPDX-License-Identifier: GPL-2.0
#
# Fault: entropy device 1 sends every message twice, from its first answer on
# (its probe included). Each doubled response is dropped as unsolicited and the
# next request waits for a barrier; the device keeps working, and so do the
# others on its FIFO.
# e2e-host: faults
# e2e-emulator-extra: --fault 0:1:twice
. /tests/lib.sh

fault_up
check blk_moves blk_moves 0
check faulty_rng_reads rng_reads virtio_rng.0
check faulty_rng_reads_again rng_reads virtio_rng.0
cat "$stats" | sed 's/^/  /'
check doubles_dropped test $(($(bus_stat unsolicited) + $(bus_stat late))) -gt 0
check barriers_run test "$(bus_stat barriers)" -gt 0
check nothing_timed_out test "$(bus_stat timeouts)" = 0
check no_device_broken test "$(bus_stat broken_devices)" = 0
fault_down
