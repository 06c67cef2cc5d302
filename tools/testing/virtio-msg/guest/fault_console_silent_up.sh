# SPDX-License-Identifier: GPL-2.0
#
# Fault: the console (FIFO 0, device 1) stops returning buffers and goes
# silent while a writer writes to its terminal, on one vCPU (nr_cpus=1). virtio_console's console write busy-waits with
# interrupts off until the device returns its buffer. Before patch 0017 of
# the series, once the transport found the device dead and broke its queues,
# the write freed its buffer and the removal freed it again (a double free,
# refcount underflow); before 0018 the wait had no bound, and with one vCPU
# nothing else ran: the guest froze at the first write. Now the device is
# broken and removed (its probe again fails: it stays silent), the writer is
# not stuck (its writes fail or are dropped), nothing is freed twice (the KASAN guest checks), and the network
# device on the same FIFO and FIFO 1's devices keep moving data.
# e2e-host: kinds
# e2e-append: nr_cpus=1
# e2e-exclusive: vmsgtap0
. /tests/lib.sh

kinds_up
check one_cpu test "$(grep -c ^processor /proc/cpuinfo)" = 1
console_silenced
