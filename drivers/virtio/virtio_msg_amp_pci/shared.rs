// SPDX-License-Identifier: GPL-2.0

//! The queues of BAR1 as [`QueueMemory`] for the shared SPSC code (`virtio_msg_amp_pci/spsc.rs`).
//!
//! BAR1 is memory the device side writes at any time, so it is only ever touched through MMIO
//! accessors: every access is bounds-checked against the mapped BAR, and the accessors keep
//! their program order towards the device (a slot's bytes are written before the index that
//! publishes them, and an index is read before the slot bytes it announces), which is the
//! release/acquire ordering the queue protocol asks for.
//!
//! The mapping is device-managed ([`Devres`]) and disappears when the driver unbinds. Each
//! queue operation makes sure of it once ([`QueueMemory::access`]: one revocable access, not
//! one per word); after the unbinding an operation reads an index of `u32::MAX`, which the
//! queue code rejects as out of range, and writes nothing.

use core::cell::Cell;
use kernel::{devres::Devres, io::Io, pci, sync::Arc};

use crate::spsc::{QueueAccess, QueueMemory, QUEUE_BYTES};

/// BAR1, mapped.
pub(crate) type SharedBar = Devres<pci::Bar<'static>>;

/// One 4 KiB queue in BAR1.
pub(crate) struct SharedQueue {
    bar: Arc<SharedBar>,
    /// Offset of the queue in BAR1.
    base: usize,
    /// The accesses to BAR1 so far: on a real link each is a bus transaction, the cost of
    /// the queue that the driver controls.
    accesses: Accesses,
}

/// Reads and writes of BAR1 that one queue end made. Plain cells: a queue end is only used
/// under its lock.
#[derive(Default)]
pub(crate) struct Accesses {
    reads: Cell<u64>,
    writes: Cell<u64>,
}

impl Accesses {
    fn add(counter: &Cell<u64>, n: usize) {
        counter.set(counter.get().wrapping_add(n as u64));
    }

    /// Reads and writes so far.
    pub(crate) fn get(&self) -> (u64, u64) {
        (self.reads.get(), self.writes.get())
    }
}

impl SharedQueue {
    /// The queue at `base` in `bar`.
    pub(crate) fn new(bar: Arc<SharedBar>, base: usize) -> Self {
        Self {
            bar,
            base,
            accesses: Accesses::default(),
        }
    }

    /// The accesses to BAR1 this queue end made.
    pub(crate) fn accesses(&self) -> &Accesses {
        &self.accesses
    }

    /// Where an access of `width` bytes at `offset` of the queue lands in BAR1: never past
    /// the queue, whatever `offset`.
    fn at(&self, offset: usize, width: usize) -> usize {
        self.base + offset.min(QUEUE_BYTES - width)
    }
}

/// Bytes per access to slot data: eight where the CPU has 64-bit MMIO accessors, since every
/// access is a bus transaction on a real link. Slots and the messages in them start on
/// 8-byte boundaries.
#[cfg(CONFIG_64BIT)]
const WORD: usize = 8;
#[cfg(not(CONFIG_64BIT))]
const WORD: usize = 4;

fn read_word(bar: &pci::Bar<'static>, at: usize) -> [u8; WORD] {
    #[cfg(CONFIG_64BIT)]
    let word = bar.try_read64(at).unwrap_or(0);
    #[cfg(not(CONFIG_64BIT))]
    let word = bar.try_read32(at).unwrap_or(0);
    word.to_le_bytes()
}

fn write_word(bar: &pci::Bar<'static>, word: [u8; WORD], at: usize) {
    #[cfg(CONFIG_64BIT)]
    let _ = bar.try_write64(u64::from_le_bytes(word), at);
    #[cfg(not(CONFIG_64BIT))]
    let _ = bar.try_write32(u32::from_le_bytes(word), at);
}

impl QueueMemory for SharedQueue {
    type Access<'a> = Mapped<'a>;

    fn access<R>(&self, f: impl FnOnce(&Mapped<'_>) -> R) -> R {
        let bar = self.bar.try_access();
        f(&Mapped {
            bar: bar.as_deref(),
            queue: self,
        })
    }
}

/// One queue of BAR1 for the length of a queue operation: the mapping, or `None` once the
/// driver unbound.
pub(crate) struct Mapped<'a> {
    bar: Option<&'a pci::Bar<'static>>,
    queue: &'a SharedQueue,
}

impl QueueAccess for Mapped<'_> {
    fn load_index(&self, offset: usize) -> u32 {
        Accesses::add(&self.queue.accesses.reads, 1);
        self.bar
            .and_then(|bar| bar.try_read32(self.queue.at(offset, 4)).ok())
            .unwrap_or(u32::MAX)
    }

    fn store_index(&self, offset: usize, value: u32) {
        Accesses::add(&self.queue.accesses.writes, 1);
        if let Some(bar) = self.bar {
            let _ = bar.try_write32(value, self.queue.at(offset, 4));
        }
    }

    fn read(&self, offset: usize, out: &mut [u8]) {
        Accesses::add(&self.queue.accesses.reads, out.len().div_ceil(WORD));
        let Some(bar) = self.bar else {
            return;
        };
        for (i, chunk) in out.chunks_mut(WORD).enumerate() {
            let word = read_word(bar, self.queue.at(offset + i * WORD, WORD));
            // A whole word at once; byte by byte only for the last, partial one.
            if let Ok(whole) = <&mut [u8; WORD]>::try_from(&mut *chunk) {
                *whole = word;
            } else {
                for (dst, src) in chunk.iter_mut().zip(word) {
                    *dst = src;
                }
            }
        }
    }

    fn write(&self, offset: usize, data: &[u8]) {
        Accesses::add(&self.queue.accesses.writes, data.len().div_ceil(WORD));
        let Some(bar) = self.bar else {
            return;
        };
        for (i, chunk) in data.chunks(WORD).enumerate() {
            let word = <[u8; WORD]>::try_from(chunk).unwrap_or_else(|_| {
                let mut word = [0u8; WORD];
                for (dst, &src) in word.iter_mut().zip(chunk) {
                    *dst = src;
                }
                word
            });
            write_word(bar, word, self.queue.at(offset + i * WORD, WORD));
        }
    }
}
