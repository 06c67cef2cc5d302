// SPDX-License-Identifier: GPL-2.0 OR MIT

//! The single-producer single-consumer queues of the virtio-msg AMP PCI device.
//!
//! Each FIFO of the device (PCI 10ee:9039) is a pair of 4 KiB queues in shared memory (BAR1):
//! the driver queue (driver to device) and the device queue (device to driver). A queue is a
//! `head` index written only by its producer, a `tail` index written only by its consumer, and
//! 62 slots of 64 bytes; one slot always stays empty, so `head == tail` means empty and
//! `head + 1 == tail` (modulo 62) means full.
//!
//! Like `wire.rs`, this file uses `core` only: the kernel bus driver and the userspace device
//! emulator share it, each with its own [`QueueMemory`] (MMIO accessors in the kernel, a memory
//! mapping in the emulator), and it is tested with cargo.
//!
//! The other side is not trusted. Each side keeps private copies of both indexes and checks
//! every value it reads from shared memory before using it: an index out of range, a peer index
//! that moves backwards, or a consumer that overtakes the producer is reported as a
//! [`QueueError`], and nothing is read or written with it. Messages are copied out of a slot
//! before anyone parses them. Nothing ever resets the indexes: on start each side adopts what
//! it finds in shared memory (the other side caches it), and a consumer discards stale
//! messages by moving its tail, never by rewriting indexes to zero.

/// Bytes of one queue.
pub const QUEUE_BYTES: usize = 4096;
/// Offset of the producer's index.
pub const HEAD_OFFSET: usize = 0;
/// Offset of the consumer's index.
pub const TAIL_OFFSET: usize = 64;
/// Offset of the first slot.
pub const SLOTS_OFFSET: usize = 128;
/// Bytes of one slot.
pub const SLOT_BYTES: usize = 64;
/// Bytes of a slot [`Consumer::drain_sized`] always copies, from which it learns the rest.
pub const PREFIX_BYTES: usize = 8;
/// Number of slots; indexes run from 0 to `CAPACITY - 1`.
pub const CAPACITY: u32 = ((QUEUE_BYTES - SLOTS_OFFSET) / SLOT_BYTES) as u32;

/// Access to the shared memory of one queue. Offsets are below [`QUEUE_BYTES`].
pub trait QueueAccess {
    /// Reads a little-endian index; orders later reads of slots after it (acquire).
    fn load_index(&self, offset: usize) -> u32;
    /// Writes a little-endian index; orders earlier slot writes before it (release).
    fn store_index(&self, offset: usize, value: u32);
    /// Copies `out.len()` bytes from shared memory.
    fn read(&self, offset: usize, out: &mut [u8]);
    /// Copies `data` into shared memory.
    fn write(&self, offset: usize, data: &[u8]);
}

/// The shared memory of one queue, as a queue end keeps it. Every operation of [`Producer`]
/// and [`Consumer`] makes its accesses within one [`QueueMemory::access`]: memory that must
/// be made sure of before use (a device's BAR, which the driver's unbinding takes away) is
/// made sure of once per operation, not once per access. Memory that is always there is its
/// own access: every [`QueueAccess`] is a [`QueueMemory`].
pub trait QueueMemory {
    /// What [`QueueMemory::access`] lends.
    type Access<'a>: QueueAccess
    where
        Self: 'a;

    /// Runs `f` with access to the memory.
    fn access<R>(&self, f: impl FnOnce(&Self::Access<'_>) -> R) -> R;
}

impl<T: QueueAccess> QueueMemory for T {
    type Access<'a>
        = T
    where
        T: 'a;

    fn access<R>(&self, f: impl FnOnce(&T) -> R) -> R {
        f(self)
    }
}

/// Which index of a queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Index {
    /// The producer's.
    Head,
    /// The consumer's.
    Tail,
}

/// What the other side did wrong, or why a message cannot be queued.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueueError {
    /// An index in shared memory is not below [`CAPACITY`].
    OutOfRange {
        /// Which index.
        index: Index,
        /// Its value.
        value: u32,
    },
    /// The producer's head moved backwards: messages already announced disappeared.
    HeadBackwards {
        /// Head as last seen.
        from: u32,
        /// Head now.
        to: u32,
    },
    /// The consumer's tail moved past the producer's head: it consumed messages that were never
    /// produced.
    TailOvertook {
        /// Tail now.
        tail: u32,
        /// Our head.
        head: u32,
    },
    /// The queue is full (the consumer is not keeping up).
    Full,
    /// The message does not fit a slot.
    TooLong {
        /// Its length.
        len: usize,
    },
}

fn checked(index: Index, value: u32) -> Result<u32, QueueError> {
    if value < CAPACITY {
        Ok(value)
    } else {
        Err(QueueError::OutOfRange { index, value })
    }
}

/// Slots from `from` to `to`, going forward; both below [`CAPACITY`]. (Not a remainder: with
/// 62 slots that is a multiplication and shifts, on every index the queue looks at.)
const fn distance(from: u32, to: u32) -> u32 {
    if to >= from {
        to - from
    } else {
        to + CAPACITY - from
    }
}

/// The index after `index`, below [`CAPACITY`].
const fn next(index: u32) -> u32 {
    if index + 1 == CAPACITY {
        0
    } else {
        index + 1
    }
}

const fn slot_offset(index: u32) -> usize {
    SLOTS_OFFSET + index as usize * SLOT_BYTES
}

/// The producing side of a queue.
pub struct Producer<M: QueueMemory> {
    mem: M,
    ends: ProducerEnds,
}

/// What a producer knows of the indexes.
struct ProducerEnds {
    head: u32,
    /// The consumer's tail as last seen.
    tail: u32,
}

impl ProducerEnds {
    /// The indexes in shared memory now.
    fn adopt(m: &impl QueueAccess) -> Result<Self, QueueError> {
        let head = checked(Index::Head, m.load_index(HEAD_OFFSET))?;
        let tail = checked(Index::Tail, m.load_index(TAIL_OFFSET))?;
        Ok(Self { head, tail })
    }

    /// Reads the consumer's tail and checks it against what it can be.
    fn refresh_tail(&mut self, m: &impl QueueAccess) -> Result<u32, QueueError> {
        let tail = checked(Index::Tail, m.load_index(TAIL_OFFSET))?;
        // The consumer can only have consumed what we produced since we last looked.
        if distance(self.tail, tail) > distance(self.tail, self.head) {
            return Err(QueueError::TailOvertook {
                tail,
                head: self.head,
            });
        }
        self.tail = tail;
        Ok(tail)
    }

    fn free(&mut self, m: &impl QueueAccess) -> Result<u32, QueueError> {
        let tail = self.refresh_tail(m)?;
        Ok(CAPACITY - 1 - distance(tail, self.head))
    }

    fn push(&mut self, m: &impl QueueAccess, msg: &[u8]) -> Result<(), QueueError> {
        if msg.len() > SLOT_BYTES {
            return Err(QueueError::TooLong { len: msg.len() });
        }
        if next(self.head) == self.tail && next(self.head) == self.refresh_tail(m)? {
            return Err(QueueError::Full);
        }
        m.write(slot_offset(self.head), msg);
        self.head = next(self.head);
        m.store_index(HEAD_OFFSET, self.head);
        Ok(())
    }

    fn defuse(&mut self, m: &impl QueueAccess) -> Result<u32, QueueError> {
        let tail = self.refresh_tail(m)?;
        let mut index = tail;
        while index != self.head {
            m.write(slot_offset(index), &[0; SLOT_BYTES]);
            index = next(index);
        }
        Ok(distance(tail, self.head))
    }
}

impl<M: QueueMemory> Producer<M> {
    /// Takes over a queue as its producer, adopting the indexes found in shared memory.
    pub fn adopt(mem: M) -> Result<Self, QueueError> {
        let ends = mem.access(|m| ProducerEnds::adopt(m))?;
        Ok(Self { mem, ends })
    }

    /// Takes the queue over again from the indexes in shared memory now, as
    /// [`Producer::adopt`] does: for a producer whose consumer started again, which may have
    /// reset its index (or both). Nothing changes if they are out of range.
    pub fn readopt(&mut self) -> Result<(), QueueError> {
        self.ends = self.mem.access(|m| ProducerEnds::adopt(m))?;
        Ok(())
    }

    /// Slots free for [`Producer::push`].
    pub fn free(&mut self) -> Result<u32, QueueError> {
        let ends = &mut self.ends;
        self.mem.access(|m| ends.free(m))
    }

    /// Copies `msg` into the next slot and publishes it. Only the message is written: the rest
    /// of the slot keeps what it held (messages carry their length), and every access to
    /// shared memory that is a device's BAR costs a bus transaction. The consumer's tail is
    /// read only when the tail last seen leaves no room: it only moves forward, so room seen
    /// is room there.
    pub fn push(&mut self, msg: &[u8]) -> Result<(), QueueError> {
        let ends = &mut self.ends;
        self.mem.access(|m| ends.push(m, msg))
    }

    /// Zeroes every slot the consumer has not taken yet, and returns how many: for a
    /// producer that gives up on a consumer that stopped, so that one that wakes up later
    /// finds nothing it can act on (a zeroed slot decodes as no message). The indexes stay
    /// as they are (moving the head back would show the consumer a queue it overtook, whose
    /// stale slots it would read). A consumer reading a slot as it is zeroed gets a mix of
    /// the two: only a consumer that woke up just then.
    pub fn defuse(&mut self) -> Result<u32, QueueError> {
        let ends = &mut self.ends;
        self.mem.access(|m| ends.defuse(m))
    }

    /// Our head.
    pub fn head(&self) -> u32 {
        self.ends.head
    }

    /// The shared memory.
    pub fn memory(&self) -> &M {
        &self.mem
    }
}

/// The consuming side of a queue.
pub struct Consumer<M: QueueMemory> {
    mem: M,
    ends: ConsumerEnds,
}

/// What a consumer knows of the indexes.
struct ConsumerEnds {
    tail: u32,
    /// The producer's head as last seen.
    head: u32,
    /// Our tail when we last read the producer's head (see [`Consumer::take_was_full`]).
    tail_at_look: u32,
    /// The queue may have been full since [`Consumer::take_was_full`] last said so.
    was_full: bool,
}

impl ConsumerEnds {
    /// The indexes in shared memory now.
    fn adopt(m: &impl QueueAccess) -> Result<Self, QueueError> {
        let tail = checked(Index::Tail, m.load_index(TAIL_OFFSET))?;
        let head = checked(Index::Head, m.load_index(HEAD_OFFSET))?;
        Ok(Self {
            tail,
            head,
            tail_at_look: tail,
            was_full: false,
        })
    }

    /// Reads the producer's head and checks it against what it can be.
    ///
    /// Also notes whether the queue may have been full since the previous read: a producer
    /// that finds it full may drop what it wanted to queue (the device model does), and only
    /// the consumer can tell. Between two reads we published tails from `tail_at_look` to
    /// `tail`; a full queue at any moment in between held `CAPACITY - 1` messages past the
    /// tail of that moment, so the head read now is at least `CAPACITY - 1` slots past
    /// `tail_at_look`: what we consumed since (exact, as we consume only what the previous
    /// read announced) plus what waits now. The test errs on the side of "full": it cannot
    /// miss a moment the queue was full.
    fn refresh_head(&mut self, m: &impl QueueAccess) -> Result<u32, QueueError> {
        let head = checked(Index::Head, m.load_index(HEAD_OFFSET))?;
        // The producer only adds: what was available stays available until we consume it.
        if distance(self.tail, head) < distance(self.tail, self.head) {
            return Err(QueueError::HeadBackwards {
                from: self.head,
                to: head,
            });
        }
        let reach = distance(self.tail_at_look, self.tail) + distance(self.tail, head);
        self.was_full |= reach >= CAPACITY - 1;
        self.tail_at_look = self.tail;
        self.head = head;
        Ok(head)
    }

    fn pending(&mut self, m: &impl QueueAccess) -> Result<u32, QueueError> {
        let head = self.refresh_head(m)?;
        Ok(distance(self.tail, head))
    }

    fn pop(
        &mut self,
        m: &impl QueueAccess,
        out: &mut [u8; SLOT_BYTES],
    ) -> Result<bool, QueueError> {
        let head = self.refresh_head(m)?;
        if head == self.tail {
            return Ok(false);
        }
        m.read(slot_offset(self.tail), out);
        self.tail = next(self.tail);
        m.store_index(TAIL_OFFSET, self.tail);
        Ok(true)
    }

    fn drain_sized(
        &mut self,
        m: &impl QueueAccess,
        budget: u32,
        len: impl Fn(&[u8; PREFIX_BYTES]) -> usize,
        mut each: impl FnMut(&[u8; SLOT_BYTES]),
    ) -> Result<bool, QueueError> {
        let mut left = budget;
        loop {
            let head = self.refresh_head(m)?;
            if head == self.tail {
                return Ok(false);
            }
            while self.tail != head {
                if left == 0 {
                    return Ok(true);
                }
                left -= 1;
                let mut slot = [0u8; SLOT_BYTES];
                let at = slot_offset(self.tail);
                if let Some((prefix, rest)) = slot.split_first_chunk_mut::<PREFIX_BYTES>() {
                    m.read(at, prefix);
                    let more = len(prefix).clamp(PREFIX_BYTES, SLOT_BYTES) - PREFIX_BYTES;
                    if let Some(rest) = rest.get_mut(..more) {
                        m.read(at + PREFIX_BYTES, rest);
                    }
                }
                self.tail = next(self.tail);
                m.store_index(TAIL_OFFSET, self.tail);
                each(&slot);
            }
        }
    }

    fn discard(&mut self, m: &impl QueueAccess) -> Result<u32, QueueError> {
        let head = self.refresh_head(m)?;
        let n = distance(self.tail, head);
        self.tail = head;
        m.store_index(TAIL_OFFSET, self.tail);
        // What the producer dropped before is nobody's loss now.
        self.tail_at_look = head;
        self.was_full = false;
        Ok(n)
    }
}

impl<M: QueueMemory> Consumer<M> {
    /// Takes over a queue as its consumer, adopting the indexes found in shared memory.
    pub fn adopt(mem: M) -> Result<Self, QueueError> {
        let ends = mem.access(|m| ConsumerEnds::adopt(m))?;
        Ok(Self { mem, ends })
    }

    /// Takes the queue over again from the indexes in shared memory now, as
    /// [`Consumer::adopt`] does: for a consumer whose producer started again, which may have
    /// reset its index (or both). Nothing changes if they are out of range.
    pub fn readopt(&mut self) -> Result<(), QueueError> {
        self.ends = self.mem.access(|m| ConsumerEnds::adopt(m))?;
        Ok(())
    }

    /// Whether the queue may have been full, so that a producer that drops what does not fit
    /// may have dropped messages, at some moment up to the last read of the producer's head
    /// (since this last returned `true`). Never `false` after such a moment; sometimes `true`
    /// when the queue only came close.
    pub fn take_was_full(&mut self) -> bool {
        core::mem::take(&mut self.ends.was_full)
    }

    /// Messages waiting.
    pub fn pending(&mut self) -> Result<u32, QueueError> {
        let ends = &mut self.ends;
        self.mem.access(|m| ends.pending(m))
    }

    /// Copies the next message out of its slot into `out` and frees the slot. Returns `false`
    /// if the queue is empty.
    pub fn pop(&mut self, out: &mut [u8; SLOT_BYTES]) -> Result<bool, QueueError> {
        let ends = &mut self.ends;
        self.mem.access(|m| ends.pop(m, out))
    }

    /// Hands up to `budget` waiting messages, each copied out of its slot, to `each`, freeing
    /// every slot before `each` looks at it. Returns whether messages are left (the budget ran
    /// out first). The producer's head is read once per batch it announced, not per message.
    pub fn drain(
        &mut self,
        budget: u32,
        each: impl FnMut(&[u8; SLOT_BYTES]),
    ) -> Result<bool, QueueError> {
        self.drain_sized(budget, |_| SLOT_BYTES, each)
    }

    /// As [`Consumer::drain`], copying of each slot only its first [`PREFIX_BYTES`] and as
    /// many more as `len` says from them (the message's own length, say), at most the slot;
    /// the rest of the copy is zeros. Where shared memory is a device's BAR, every access costs
    /// a bus transaction on a real link, so a short message should not cost a whole
    /// slot's worth. `len` sees bytes the producer wrote: it only bounds the copy. `each` runs
    /// within the drain's [`QueueMemory::access`].
    pub fn drain_sized(
        &mut self,
        budget: u32,
        len: impl Fn(&[u8; PREFIX_BYTES]) -> usize,
        each: impl FnMut(&[u8; SLOT_BYTES]),
    ) -> Result<bool, QueueError> {
        let ends = &mut self.ends;
        self.mem.access(|m| ends.drain_sized(m, budget, len, each))
    }

    /// Drops every message waiting (left over from before we took over). Returns how many.
    pub fn discard(&mut self) -> Result<u32, QueueError> {
        let ends = &mut self.ends;
        self.mem.access(|m| ends.discard(m))
    }

    /// Our tail.
    pub fn tail(&self) -> u32 {
        self.ends.tail
    }

    /// The shared memory.
    pub fn memory(&self) -> &M {
        &self.mem
    }
}
