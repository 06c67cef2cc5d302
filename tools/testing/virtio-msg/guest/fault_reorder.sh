# SPDX-License-Identifier: GPL-2.0
#
# Fault: every message of the FIFO goes out after the next one of another
# device (or 50 ms late, if none comes): answers and events of the three
# devices arrive out of order. Messages are routed by device number, so each
# device gets its own in order; the block device and both entropy devices
# move data at the same time.
# e2e-host: faults
# e2e-emulator-extra: --fault 0:all:reorder
. /tests/lib.sh

fault_up
(for _ in 1 2 3; do rng_reads virtio_rng.1 || echo rng-failed; done) >/tmp/rng.log 2>&1 &
check blk_moves_while_rng_reads blk_moves 0
wait
check rng_read_meanwhile sh -c '! grep -q rng-failed /tmp/rng.log'
check faulty_rng_reads rng_reads virtio_rng.0
cat "$stats" | sed 's/^/  /'
check no_device_broken test "$(bus_stat broken_devices)" = 0
check nothing_timed_out test "$(bus_stat timeouts)" = 0
fault_down
