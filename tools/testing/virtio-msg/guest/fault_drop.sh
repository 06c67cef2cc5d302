# SPDX-License-Identifier: GPL-2.0
#
# Fault: messages of entropy device 1 are lost, as when the device model's
# queue is full. While it is probed, every 3rd of its first 9 messages: each
# lost answer is asked again and the probe completes. Then, running, every
# 2nd of its messages: the lost EVENT_USED (lost other than by a full queue,
# which the bus would have seen) are found by the transport's look at the
# queues on the bus's clock (its keepalive period, 1 s), so reads still
# complete, slower.
# e2e-host: faults
# e2e-emulator-extra: --fault 0:1:drop,every=3,count=9
. /tests/lib.sh

fault_up
check faulty_rng_reads rng_reads virtio_rng.0
cat "$stats" | sed 's/^/  /'
check lost_answers_asked_again test "$(bus_stat retries)" -ge 2
emulator_ctl fault 0:1:drop,every=2
check faulty_rng_reads_with_lost_events rng_reads virtio_rng.0 30
check faulty_rng_reads_with_lost_events_again rng_reads virtio_rng.0 30
cat "$stats" | sed 's/^/  /'
check lost_events_found test "$(bus_stat lost_events_found)" -ge 1
check no_device_broken test "$(bus_stat broken_devices)" = 0
emulator_ctl clear 0
fault_down
