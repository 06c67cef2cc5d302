// SPDX-License-Identifier: GPL-2.0 OR MIT

//! The device's ends of a FIFO's two SPSC queues, run the way the mode asks.
//!
//! Strict mode runs the shared SPSC code ([`virtio_msg_spsc`]): private copies of both indexes,
//! every index the guest writes checked, and a queue that makes no sense stops until it is
//! adopted again.
//!
//! Compat mode runs the queues the way QEMU's device model does, because a driver meets that
//! behaviour with the device users run, and the recordings show what it leads to
//! (`09-reload-indexes.txt`: a driver that zeroes the indexes gets stale requests answered
//! again). The device model keeps a private copy of the *other* side's index only, reads its
//! own index back from shared memory on every message, reduces every index it reads modulo
//! the capacity instead of rejecting it, and refreshes the other side's index only when its
//! copy says the queue is empty (consumer) or full (producer). So:
//!
//! - a consumer whose tail was rewritten goes on from the rewritten tail up to the head it saw
//!   last, then reads the head again and goes on from there (wrapping through every slot in
//!   between, whatever they hold);
//! - a producer whose head was rewritten writes from there;
//! - nothing is ever reported as an error: a nonsense index just points at another slot.
//!
//! Both flavours copy whole slots and never hand out references into shared memory, so the
//! guest cannot change a message while it is parsed.

use crate::shm::QueueWindow;
use virtio_msg_spsc::{
    Consumer, Producer, QueueAccess, QueueError, CAPACITY, HEAD_OFFSET, SLOTS_OFFSET, SLOT_BYTES,
    TAIL_OFFSET,
};

fn slot_offset(index: u32) -> usize {
    SLOTS_OFFSET + index as usize * SLOT_BYTES
}

fn next(index: u32) -> u32 {
    (index + 1) % CAPACITY
}

/// An index as the device model reads it: whatever is there, modulo the capacity.
fn load_any(mem: &QueueWindow, offset: usize) -> u32 {
    mem.load_index(offset) % CAPACITY
}

/// The device model's consumer: its own tail read back every time, the producer's head cached.
struct ModelConsumer {
    mem: QueueWindow,
    head_seen: u32,
}

impl ModelConsumer {
    fn new(mem: QueueWindow) -> Self {
        let head_seen = load_any(&mem, HEAD_OFFSET);
        Self { mem, head_seen }
    }

    fn pop(&mut self, out: &mut [u8; SLOT_BYTES]) -> bool {
        let tail = load_any(&self.mem, TAIL_OFFSET);
        if tail == self.head_seen {
            self.head_seen = load_any(&self.mem, HEAD_OFFSET);
            if tail == self.head_seen {
                return false;
            }
        }
        self.mem.read(slot_offset(tail), out);
        self.mem.store_index(TAIL_OFFSET, next(tail));
        true
    }

    fn discard(&mut self) -> u32 {
        let tail = load_any(&self.mem, TAIL_OFFSET);
        self.head_seen = load_any(&self.mem, HEAD_OFFSET);
        self.mem.store_index(TAIL_OFFSET, self.head_seen);
        (self.head_seen + CAPACITY - tail) % CAPACITY
    }
}

/// The device model's producer: its own head read back every time, the consumer's tail cached.
struct ModelProducer {
    mem: QueueWindow,
    tail_seen: u32,
}

impl ModelProducer {
    fn new(mem: QueueWindow) -> Self {
        let tail_seen = load_any(&mem, TAIL_OFFSET);
        Self { mem, tail_seen }
    }

    fn push(&mut self, msg: &[u8]) -> Result<(), QueueError> {
        let mut slot = [0u8; SLOT_BYTES];
        slot.get_mut(..msg.len())
            .ok_or(QueueError::TooLong { len: msg.len() })?
            .copy_from_slice(msg);
        let head = load_any(&self.mem, HEAD_OFFSET);
        if next(head) == self.tail_seen {
            self.tail_seen = load_any(&self.mem, TAIL_OFFSET);
            if next(head) == self.tail_seen {
                return Err(QueueError::Full);
            }
        }
        self.mem.write(slot_offset(head), &slot);
        self.mem.store_index(HEAD_OFFSET, next(head));
        Ok(())
    }
}

/// The driver queue, consumed by the device.
pub struct DriverQueue(Rx);

enum Rx {
    /// Strict mode; `None` while a bad index stopped it.
    Checked(QueueWindow, Option<Consumer<QueueWindow>>),
    /// Compat mode.
    Model(ModelConsumer),
}

/// The device queue, produced by the device.
pub struct DeviceQueue(Tx);

enum Tx {
    /// Strict mode; `None` while a bad index stopped it.
    Checked(QueueWindow, Option<Producer<QueueWindow>>),
    /// Compat mode.
    Model(ModelProducer),
}

impl DriverQueue {
    /// The driver queue in `mem`, run as the device model does (`model`) or checked. A checked
    /// queue is stopped until [`DriverQueue::adopt`].
    pub fn new(mem: QueueWindow, model: bool) -> Self {
        Self(if model {
            Rx::Model(ModelConsumer::new(mem))
        } else {
            Rx::Checked(mem, None)
        })
    }

    /// Takes the queue over with the indexes found in shared memory.
    pub fn adopt(&mut self) -> Result<(), QueueError> {
        match &mut self.0 {
            Rx::Checked(mem, rx) => {
                *rx = None;
                *rx = Some(Consumer::adopt(mem.clone())?);
            }
            Rx::Model(q) => *q = ModelConsumer::new(q.mem.clone()),
        }
        Ok(())
    }

    /// Copies the next message out; `false` if there is none (or the queue is stopped).
    pub fn pop(&mut self, out: &mut [u8; SLOT_BYTES]) -> Result<bool, QueueError> {
        match &mut self.0 {
            Rx::Checked(_, Some(rx)) => rx.pop(out),
            Rx::Checked(_, None) => Ok(false),
            Rx::Model(q) => Ok(q.pop(out)),
        }
    }

    /// Drops every waiting message; returns how many there were.
    pub fn discard(&mut self) -> Result<u32, QueueError> {
        match &mut self.0 {
            Rx::Checked(_, Some(rx)) => rx.discard(),
            Rx::Checked(_, None) => Ok(0),
            Rx::Model(q) => Ok(q.discard()),
        }
    }

    /// Stops the queue after a bad index (strict mode; the device model never stops).
    pub fn stop(&mut self) {
        if let Rx::Checked(_, rx) = &mut self.0 {
            *rx = None;
        }
    }
}

impl DeviceQueue {
    /// The device queue in `mem`, run as the device model does (`model`) or checked. A checked
    /// queue is stopped until [`DeviceQueue::adopt`].
    pub fn new(mem: QueueWindow, model: bool) -> Self {
        Self(if model {
            Tx::Model(ModelProducer::new(mem))
        } else {
            Tx::Checked(mem, None)
        })
    }

    /// Takes the queue over with the indexes found in shared memory.
    pub fn adopt(&mut self) -> Result<(), QueueError> {
        match &mut self.0 {
            Tx::Checked(mem, tx) => {
                *tx = None;
                *tx = Some(Producer::adopt(mem.clone())?);
            }
            Tx::Model(q) => *q = ModelProducer::new(q.mem.clone()),
        }
        Ok(())
    }

    /// Copies `msg` into the next slot and publishes it; a stopped queue takes nothing and
    /// says so with `Ok(false)`.
    pub fn push(&mut self, msg: &[u8]) -> Result<bool, QueueError> {
        match &mut self.0 {
            Tx::Checked(_, Some(tx)) => tx.push(msg).map(|()| true),
            Tx::Checked(_, None) => Ok(false),
            Tx::Model(q) => q.push(msg).map(|()| true),
        }
    }

    /// Stops the queue after a bad index (strict mode; the device model never stops).
    pub fn stop(&mut self) {
        if let Tx::Checked(_, tx) = &mut self.0 {
            *tx = None;
        }
    }
}
