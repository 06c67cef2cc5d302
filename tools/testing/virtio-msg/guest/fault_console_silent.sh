# SPDX-License-Identifier: GPL-2.0
#
# Fault: the console (FIFO 0, device 1) stops returning buffers and goes
# silent while a writer writes to its terminal, on two vCPUs. virtio_console's console write busy-waits with
# interrupts off until the device returns its buffer. Before patch 0017 of
# the series, once the transport found the device dead and broke its queues,
# the write freed its buffer and the removal freed it again (a double free,
# refcount underflow); before 0018 the wait had no bound. Now the device is
# broken and removed (its probe again fails: it stays silent), the writer is
# not stuck (its writes fail or are dropped), nothing is freed twice (the KASAN guest checks), and the network
# device on the same FIFO and FIFO 1's devices keep moving data.
# e2e-host: kinds
# e2e-exclusive: vmsgtap0
# e2e-kasan: the console's write buffer once the device is broken (patch 0017: freed twice)
. /tests/lib.sh

kinds_up
console_silenced
