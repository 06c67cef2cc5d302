// SPDX-License-Identifier: GPL-2.0 OR MIT

//! Virtqueues laid out in guest memory by virtio-queue's mock queue, and how to read back what
//! a device did with them: shared by the tests of every backend.

// Each test crate uses the part it needs.
#![allow(dead_code)]

use virtio_msg_device::{transport::QueueState, Backend};
use virtio_queue::{
    desc::{split::Descriptor, RawDescriptor},
    mock::MockSplitQueue,
};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// Guest memory of the tests.
pub type Mem = GuestMemoryMmap<()>;

/// VIRTQ_DESC_F_WRITE: the device writes this buffer.
pub const WRITE: u16 = 2;
/// VIRTQ_DESC_F_NEXT: the chain goes on at `next`.
pub const NEXT: u16 = 1;
/// Descriptors per test queue.
pub const QUEUE_SIZE: u16 = 16;

/// Guest memory of `bytes` bytes from address 0.
pub fn memory(bytes: usize) -> Mem {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), bytes)]).unwrap()
}

/// A descriptor.
pub fn desc(addr: u64, len: u32, flags: u16, next: u16) -> RawDescriptor {
    RawDescriptor::from(Descriptor::new(addr, len, flags, next))
}

/// The queue as the driver would have set it up with SET_VQUEUE.
pub fn state(q: &MockSplitQueue<'_, Mem>) -> QueueState {
    QueueState {
        size: QUEUE_SIZE.into(),
        desc: q.desc_table_addr().0,
        driver: q.avail_addr().0,
        device: q.used_addr().0,
        event_idx: false,
    }
}

/// Notifies queue `index` of `dev`, set up as `q` (the other queues not set up); whether the
/// device asks for an EVENT_USED for it.
pub fn kick<B: Backend>(dev: &mut B, index: u32, q: &QueueState) -> bool {
    let mut queues = vec![QueueState::default(); index as usize + 1];
    queues[index as usize] = *q;
    dev.queue_notified(index, &queues).contains(&index)
}

/// (id, len) of used ring entry `i`, and the used index.
pub fn used(mem: &Mem, q: &MockSplitQueue<'_, Mem>, i: u64) -> ((u32, u32), u16) {
    let base = q.used_addr().0;
    let idx: u16 = mem.read_obj(GuestAddress(base + 2)).unwrap();
    let id: u32 = mem.read_obj(GuestAddress(base + 4 + 8 * i)).unwrap();
    let len: u32 = mem.read_obj(GuestAddress(base + 8 + 8 * i)).unwrap();
    ((id, len), idx)
}
