# SPDX-License-Identifier: GPL-2.0
#
# Fault: one answer of entropy device 1 during its probe (its 4th message)
# comes 2.5 s late, after the transport's 2 s timeout. The request is asked
# again after a barrier, the late answer is dropped as late, and the device
# is probed and works: one lost or late answer is not a dead device. A second
# boot of the same test body is not needed: "late for ever" is the silent
# device of fault_silent.
# e2e-host: faults
# e2e-emulator-extra: --fault 0:1:late,ms=2500,after=3,count=1
# e2e-kasan: an answer arriving after its request timed out
. /tests/lib.sh

fault_up
check faulty_rng_reads rng_reads virtio_rng.0
cat "$stats" | sed 's/^/  /'
check one_timeout test "$(bus_stat timeouts)" = 1
check asked_again test "$(bus_stat retries)" = 1
check late_answer_dropped test "$(bus_stat late)" -ge 1
check no_device_broken test "$(bus_stat broken_devices)" = 0
fault_down
