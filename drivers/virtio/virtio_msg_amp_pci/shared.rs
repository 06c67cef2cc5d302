// SPDX-License-Identifier: GPL-2.0

//! The queues of BAR1 as [`QueueMemory`] for the shared SPSC code (`virtio_msg_amp_pci/spsc.rs`).
//!
//! BAR1 is memory the device side writes at any time, so it is only ever touched through MMIO
//! accessors: every access is bounds-checked against the mapped BAR, and the accessors keep
//! their program order towards the device (a slot's bytes are written before the index that
//! publishes them, and an index is read before the slot bytes it announces), which is the
//! release/acquire ordering the queue protocol asks for.
//!
//! The mapping is device-managed ([`Devres`]) and disappears when the driver unbinds; an
//! access after that reads an index of `u32::MAX`, which the queue code rejects as out of
//! range, and writes nothing.

use kernel::{devres::Devres, io::Io, pci, sync::Arc};

use crate::spsc::{QueueMemory, QUEUE_BYTES};

/// BAR1, mapped.
pub(crate) type SharedBar = Devres<pci::Bar<'static>>;

/// One 4 KiB queue in BAR1.
pub(crate) struct SharedQueue {
    bar: Arc<SharedBar>,
    /// Offset of the queue in BAR1.
    base: usize,
}

impl SharedQueue {
    /// The queue at `base` in `bar`.
    pub(crate) fn new(bar: Arc<SharedBar>, base: usize) -> Self {
        Self { bar, base }
    }

    fn at(&self, offset: usize) -> usize {
        self.base + offset.min(QUEUE_BYTES - 4)
    }
}

impl QueueMemory for SharedQueue {
    fn load_index(&self, offset: usize) -> u32 {
        self.bar
            .try_access_with(|bar| bar.try_read32(self.at(offset)).ok())
            .flatten()
            .unwrap_or(u32::MAX)
    }

    fn store_index(&self, offset: usize, value: u32) {
        let _ = self
            .bar
            .try_access_with(|bar| bar.try_write32(value, self.at(offset)));
    }

    fn read(&self, offset: usize, out: &mut [u8]) {
        self.bar.try_access_with(|bar| {
            for (i, chunk) in out.chunks_mut(4).enumerate() {
                let word = bar.try_read32(self.at(offset + i * 4)).unwrap_or(0);
                for (dst, src) in chunk.iter_mut().zip(word.to_le_bytes()) {
                    *dst = src;
                }
            }
        });
    }

    fn write(&self, offset: usize, data: &[u8]) {
        self.bar.try_access_with(|bar| {
            for (i, chunk) in data.chunks(4).enumerate() {
                let mut word = [0u8; 4];
                for (dst, &src) in word.iter_mut().zip(chunk) {
                    *dst = src;
                }
                let _ = bar.try_write32(u32::from_le_bytes(word), self.at(offset + i * 4));
            }
        });
    }
}
