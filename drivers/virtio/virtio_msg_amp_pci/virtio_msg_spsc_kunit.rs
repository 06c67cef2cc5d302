// SPDX-License-Identifier: GPL-2.0

//! KUnit suite for the SPSC queues of the virtio-msg AMP PCI device.
//!
//! Runs `spsc.rs`, the same file the bus driver compiles, over a queue in ordinary memory
//! that the tests also write behind its back, the way a hostile peer would.

use core::cell::Cell;
use kernel::prelude::*;

/// The queue logic shared with the device emulator.
pub mod spsc;

module! {
    type: SpscKunit,
    name: "virtio_msg_spsc_kunit",
    authors: ["virtio-msg developers"],
    description: "KUnit tests for the virtio-msg AMP PCI SPSC queues",
    license: "GPL",
}

struct SpscKunit;

impl kernel::Module for SpscKunit {
    fn init(_module: &'static ThisModule) -> Result<Self> {
        Ok(SpscKunit)
    }
}

/// One queue's shared memory.
struct Mem([Cell<u8>; spsc::QUEUE_BYTES]);

impl spsc::QueueAccess for &Mem {
    fn load_index(&self, offset: usize) -> u32 {
        let mut b = [0u8; 4];
        self.read(offset, &mut b);
        u32::from_le_bytes(b)
    }

    fn store_index(&self, offset: usize, value: u32) {
        self.write(offset, &value.to_le_bytes());
    }

    fn read(&self, offset: usize, out: &mut [u8]) {
        for (i, b) in out.iter_mut().enumerate() {
            *b = self.0.get(offset + i).map_or(0, Cell::get);
        }
    }

    fn write(&self, offset: usize, data: &[u8]) {
        for (i, b) in data.iter().enumerate() {
            if let Some(cell) = self.0.get(offset + i) {
                cell.set(*b);
            }
        }
    }
}

#[kunit_tests(virtio_msg_spsc)]
mod tests {
    use super::spsc::{
        Consumer, Index, Producer, QueueAccess, QueueError, CAPACITY, HEAD_OFFSET, SLOT_BYTES,
        TAIL_OFFSET,
    };
    use super::Mem;
    use core::cell::Cell;
    use kernel::prelude::*;

    fn mem() -> Result<KBox<Mem>> {
        Ok(KBox::new(
            Mem([const { Cell::new(0) }; super::spsc::QUEUE_BYTES]),
            GFP_KERNEL,
        )?)
    }

    #[test]
    fn empty_full_and_wrap_around() -> Result {
        let m = mem()?;
        let mut p = Producer::adopt(&*m).map_err(|_| EINVAL)?;
        let mut c = Consumer::adopt(&*m).map_err(|_| EINVAL)?;
        let mut out = [0u8; SLOT_BYTES];
        assert_eq!(c.pop(&mut out), Ok(false));
        for round in 0..3u8 {
            for i in 0..CAPACITY - 1 {
                assert_eq!(p.push(&[round ^ i as u8; 12]), Ok(()));
            }
            // One slot always stays empty.
            assert_eq!(p.push(&[0; 12]), Err(QueueError::Full));
            for i in 0..CAPACITY - 1 {
                assert_eq!(c.pop(&mut out), Ok(true));
                assert_eq!(out[0], round ^ i as u8);
                assert!(out[12..].iter().all(|&b| b == 0));
            }
            assert_eq!(c.pop(&mut out), Ok(false));
        }
        assert_eq!(
            p.push(&[0; SLOT_BYTES + 1]),
            Err(QueueError::TooLong {
                len: SLOT_BYTES + 1
            })
        );
        Ok(())
    }

    #[test]
    fn corrupted_indexes_are_refused() -> Result {
        let m = mem()?;
        let mut p = Producer::adopt(&*m).map_err(|_| EINVAL)?;
        let mut c = Consumer::adopt(&*m).map_err(|_| EINVAL)?;
        let mut out = [0u8; SLOT_BYTES];
        for i in 0..5 {
            assert_eq!(p.push(&[i; 8]), Ok(()));
        }
        // The consumer has seen five messages announced.
        assert_eq!(c.pending(), Ok(5));
        // Out of range.
        (&*m).store_index(HEAD_OFFSET, CAPACITY + 3);
        assert_eq!(
            c.pop(&mut out),
            Err(QueueError::OutOfRange {
                index: Index::Head,
                value: CAPACITY + 3
            })
        );
        // Moving backwards: announced messages taken back.
        (&*m).store_index(HEAD_OFFSET, 2);
        assert_eq!(
            c.pop(&mut out),
            Err(QueueError::HeadBackwards { from: 5, to: 2 })
        );
        assert_eq!(c.tail(), 0);
        // The consumer overtaking the producer: found as soon as the producer looks at the
        // tail (for room), and nothing is written with it.
        (&*m).store_index(HEAD_OFFSET, 5);
        (&*m).store_index(TAIL_OFFSET, 9);
        assert_eq!(p.free(), Err(QueueError::TailOvertook { tail: 9, head: 5 }));
        assert_eq!(p.head(), 5);
        Ok(())
    }

    #[test]
    fn drain_is_bounded_and_copies_whole_slots() -> Result {
        let m = mem()?;
        let mut p = Producer::adopt(&*m).map_err(|_| EINVAL)?;
        let mut c = Consumer::adopt(&*m).map_err(|_| EINVAL)?;
        for i in 0..CAPACITY - 1 {
            assert_eq!(p.push(&[i as u8; SLOT_BYTES]), Ok(()));
        }
        // The budget holds even with the queue full: the rest waits for the next drain.
        let mut seen = KVec::new();
        let more = c.drain(10, |slot| {
            // Freed before it is handed on, and a copy: the peer may rewrite the slot now.
            assert_eq!(
                (&*m).load_index(TAIL_OFFSET),
                (seen.len() as u32 + 1) % CAPACITY
            );
            (&*m).write(super::spsc::SLOTS_OFFSET, &[0xee; SLOT_BYTES]);
            assert!(slot.iter().all(|&b| b == slot[0]));
            let _ = seen.push(slot[0], GFP_KERNEL);
        });
        assert_eq!(more, Ok(true));
        assert_eq!(seen, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
        assert_eq!(c.pending(), Ok(CAPACITY - 11));
        let mut n = 0;
        assert_eq!(c.drain(CAPACITY, |_| n += 1), Ok(false));
        assert_eq!(n, CAPACITY - 11);
        assert_eq!(c.drain(CAPACITY, |_| n += 1), Ok(false));
        assert_eq!(n, CAPACITY - 11);
        // A corrupted head stops the drain before any slot is read.
        assert_eq!(p.push(&[1; 8]), Ok(()));
        (&*m).store_index(HEAD_OFFSET, CAPACITY);
        assert_eq!(
            c.drain(CAPACITY, |_| n += 1),
            Err(QueueError::OutOfRange {
                index: Index::Head,
                value: CAPACITY
            })
        );
        assert_eq!(n, CAPACITY - 11);
        Ok(())
    }

    #[test]
    fn restart_adopts_indexes_and_discards_stale_messages() -> Result {
        let m = mem()?;
        let mut p = Producer::adopt(&*m).map_err(|_| EINVAL)?;
        let mut c = Consumer::adopt(&*m).map_err(|_| EINVAL)?;
        let mut out = [0u8; SLOT_BYTES];
        for i in 0..70u8 {
            assert_eq!(p.push(&[i; 4]), Ok(()));
            assert_eq!(c.pop(&mut out), Ok(true));
        }
        assert_eq!(p.push(&[100; 4]), Ok(()));
        assert_eq!(p.push(&[101; 4]), Ok(()));
        // A reloaded driver adopts what it finds, never zeroes it, and drops the leftovers.
        let mut c2 = Consumer::adopt(&*m).map_err(|_| EINVAL)?;
        assert_eq!(c2.tail(), 70 % CAPACITY);
        assert_eq!(c2.discard(), Ok(2));
        assert_eq!((&*m).load_index(TAIL_OFFSET), 72 % CAPACITY);
        assert_eq!(p.push(&[102; 4]), Ok(()));
        assert_eq!(c2.pop(&mut out), Ok(true));
        assert_eq!(out[0], 102);
        Ok(())
    }

    #[test]
    fn a_queue_that_was_full_is_reported_once() -> Result {
        let m = mem()?;
        let mut p = Producer::adopt(&*m).map_err(|_| EINVAL)?;
        let mut c = Consumer::adopt(&*m).map_err(|_| EINVAL)?;
        // Half a queue, drained: never full.
        for _ in 0..CAPACITY / 2 {
            assert_eq!(p.push(&[1; 4]), Ok(()));
        }
        assert_eq!(c.drain(CAPACITY, |_| {}), Ok(false));
        assert!(!c.take_was_full());
        // Filled while the consumer looks away, and one more dropped.
        for _ in 0..CAPACITY - 1 {
            assert_eq!(p.push(&[2; 4]), Ok(()));
        }
        assert_eq!(p.push(&[3; 4]), Err(QueueError::Full));
        assert_eq!(c.drain(CAPACITY, |_| {}), Ok(false));
        assert!(c.take_was_full());
        assert!(!c.take_was_full());
        // Filled again during a drain, after the first slot was freed: seen at the drain's
        // next look at the head, in the same drain.
        assert_eq!(p.push(&[4; 4]), Ok(()));
        let mut filled = false;
        assert_eq!(
            c.drain(CAPACITY, |_| {
                while !filled && p.push(&[5; 4]).is_ok() {}
                filled = true;
            }),
            Ok(false)
        );
        assert!(c.take_was_full());
        Ok(())
    }
}
