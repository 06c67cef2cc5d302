# SPDX-License-Identifier: GPL-2.0
#
# Fault: entropy device 1 answers every SET_DEVICE_STATUS with DRIVER_OK and
# DEVICE_NEEDS_RESET on top of its status, from its probe on: the answer to
# ACKNOWLEDGE claims the driver already runs, the answer to a reset that the
# device needs one. Before the transport kept only the bits the driver wrote
# (plus NEEDS_RESET while DRIVER_OK), the virtio core warned at DRIVER_OK
# (virtio_device_ready) and at removal (virtio_dev_remove): a guest with
# panic_on_warn would have died. Now the device binds and reads, and its
# removal is quiet (e2e.sh checks the kernel log).
# e2e-host: faults
# e2e-emulator-extra: --fault 0:1:status-lie
. /tests/lib.sh

fault_up
check blk_moves blk_moves 0
check lying_rng_reads rng_reads virtio_rng.0
fault_down
