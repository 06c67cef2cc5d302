// SPDX-License-Identifier: GPL-2.0 OR MIT

//! The virtio entropy device: fills the buffers the driver makes available with bytes from a
//! random source.
//!
//! Descriptor chains are walked by the rust-vmm `virtio-queue` crate over guest memory seen
//! through `vm-memory`, so nothing here parses rings by hand; what the driver wrote is bounds
//! checked by those crates (a descriptor outside guest memory is skipped, not followed).

use crate::{
    transport::{serve_chains, walk_queue, wants_used_event, QueueState},
    Backend, TRANSPORT_FEATURES,
};
use virtio_bindings::virtio_ids::VIRTIO_ID_RNG;
use virtio_queue::Queue;
use vm_memory::{Bytes, GuestAddressSpace};

/// Largest number of bytes put in one buffer (one descriptor chain).
const MAX_FILL: u32 = 64 * 1024;

/// A source of random bytes.
pub type Source = Box<dyn FnMut(&mut [u8]) + Send>;

/// A virtio entropy device over the driver's memory `M` (an address space, because the
/// memory map can change while the device runs).
pub struct Rng<M> {
    mem: M,
    source: Source,
    /// The driver's queue as last configured, and the `virtio-queue` state walking it.
    queue: Option<(QueueState, Queue)>,
}

impl<M: GuestAddressSpace> Rng<M> {
    /// An entropy device reading `source`, with the driver's memory `mem`.
    pub fn new(mem: M, source: Source) -> Self {
        Self {
            mem,
            source,
            queue: None,
        }
    }
}

impl<M: GuestAddressSpace> Backend for Rng<M> {
    fn device_id(&self) -> u32 {
        VIRTIO_ID_RNG
    }

    /// No device-specific features; the transport features of every device model device.
    fn features(&self) -> u64 {
        TRANSPORT_FEATURES
    }

    fn config_size(&self) -> u32 {
        0
    }

    fn read_config(&self, _offset: u32, _out: &mut [u8]) {}

    fn write_config(&mut self, _offset: u32, _data: &[u8]) {}

    fn num_queues(&self) -> u32 {
        1
    }

    fn queue_notified(&mut self, index: u32, queues: &[QueueState]) -> Vec<u32> {
        let Self { mem, source, queue } = self;
        let guard = mem.memory();
        let mem: &M::M = &guard;
        let Some(q) = queues.first().filter(|_| index == 0) else {
            return Vec::new();
        };
        let Some(vq) = walk_queue(queue, mem, q) else {
            return Vec::new();
        };
        let used = serve_chains(vq, mem, |chain| {
            let mut written = 0u32;
            for desc in chain.writable() {
                // At most MAX_FILL bytes per buffer, however many descriptors it has.
                let len = desc.len().min(MAX_FILL - written);
                if len == 0 {
                    break;
                }
                let mut bytes = vec![0u8; len as usize];
                source(&mut bytes);
                if mem.write_slice(&bytes, desc.addr()).is_ok() {
                    written = written.saturating_add(len);
                }
            }
            written
        });
        if used && wants_used_event(vq, mem, q) {
            vec![0]
        } else {
            Vec::new()
        }
    }

    fn reset(&mut self) {
        self.queue = None;
    }
}
