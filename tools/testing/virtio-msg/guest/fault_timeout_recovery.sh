# SPDX-License-Identifier: GPL-2.0
#
# Fault: entropy device 1 stops answering resets, three times, from the moment
# its driver is unbound: the reset the unbinding sends (SET_DEVICE_STATUS 0)
# gets no answer, three times (every essential request is asked three times
# before the device is given up). The device is broken, so the unbinding ends
# without waiting further, and recovered: removed and probed again. By then it
# answers again, so it is registered anew and virtio-rng binds and reads from
# it. Only SET_DEVICE_STATUS is dropped (msg=0x08): anything else the driver
# may ask meanwhile (the kick watch asks a device that is slow to return a
# buffer for its status) is answered, so the three timeouts are the reset's.
# e2e-host: faults
# e2e-kasan: a device unbound while its resets time out
. /tests/lib.sh

fault_up
# Registered in device-number order: device 1 is the second virtio device.
rngdev=virtio1
check virtio1_is_device_1 grep -qx 0x0004 /sys/bus/virtio/devices/$rngdev/device
check faulty_rng_reads_before rng_reads virtio_rng.0
# From here on, the hwrng core reads the other one: device 1 sends nothing
# until its reset is asked for.
echo virtio_rng.1 >/sys/class/misc/hw_random/rng_current
emulator_ctl fault 0:1:silent,count=3,msg=0x08
start=$(date +%s)
check unbind_within_20s timeout 20 sh -c "echo $rngdev >/sys/bus/virtio/drivers/virtio_rng/unbind"
echo "unbind took $(($(date +%s) - start)) s"
cat "$stats" | sed 's/^/  /'
check three_timeouts test "$(bus_stat timeouts)" = 3
check broken_after_three test "$(bus_stat broken_devices)" = 1
check recovered sh -c 'dmesg | grep -q "device 1: removed to recover it"'
check bound_again wait_for 3
check recovered_rng_reads rng_reads virtio_rng.0
fault_down
