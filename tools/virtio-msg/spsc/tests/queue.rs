// SPDX-License-Identifier: GPL-2.0 OR MIT

//! The SPSC queue against a model, and against a hostile peer that writes indexes it must not.

use proptest::prelude::*;
use std::{
    cell::{Cell, RefCell},
    collections::VecDeque,
    rc::Rc,
};
use virtio_msg_spsc::{
    Consumer, Index, Producer, QueueAccess, QueueError, CAPACITY, HEAD_OFFSET, PREFIX_BYTES,
    QUEUE_BYTES, SLOT_BYTES, TAIL_OFFSET,
};

/// One queue's shared memory, shared by the two ends of a test, and how many times the
/// producer's head was read.
#[derive(Clone)]
struct Mem(Rc<RefCell<[u8; QUEUE_BYTES]>>, Rc<Cell<u64>>);

impl Mem {
    fn new() -> Self {
        Mem(Rc::new(RefCell::new([0; QUEUE_BYTES])), Rc::default())
    }

    /// Reads of the producer's head so far.
    fn head_reads(&self) -> u64 {
        self.1.get()
    }

    /// What a hostile peer does: write an index behind our back.
    fn poke(&self, offset: usize, value: u32) {
        self.store_index(offset, value);
    }
}

impl QueueAccess for Mem {
    fn load_index(&self, offset: usize) -> u32 {
        if offset == HEAD_OFFSET {
            self.1.set(self.1.get() + 1);
        }
        let m = self.0.borrow();
        u32::from_le_bytes(m[offset..offset + 4].try_into().unwrap())
    }
    fn store_index(&self, offset: usize, value: u32) {
        self.0.borrow_mut()[offset..offset + 4].copy_from_slice(&value.to_le_bytes());
    }
    fn read(&self, offset: usize, out: &mut [u8]) {
        out.copy_from_slice(&self.0.borrow()[offset..offset + out.len()]);
    }
    fn write(&self, offset: usize, data: &[u8]) {
        self.0.borrow_mut()[offset..offset + data.len()].copy_from_slice(data);
    }
}

fn pair() -> (Producer<Mem>, Consumer<Mem>, Mem) {
    let mem = Mem::new();
    (
        Producer::adopt(mem.clone()).unwrap(),
        Consumer::adopt(mem.clone()).unwrap(),
        mem,
    )
}

fn msg(n: u8) -> [u8; 12] {
    [n; 12]
}

#[test]
fn layout() {
    assert_eq!(CAPACITY, 62);
}

#[test]
fn empty_then_one() {
    let (mut p, mut c, _) = pair();
    let mut out = [0u8; SLOT_BYTES];
    assert_eq!(c.pop(&mut out), Ok(false));
    p.push(&msg(7)).unwrap();
    assert_eq!(c.pending(), Ok(1));
    assert_eq!(c.pop(&mut out), Ok(true));
    assert_eq!(&out[..12], &msg(7));
    // The message padded with zeros to 16 bytes, and the fresh slot's zeros after it.
    assert!(out[12..].iter().all(|&b| b == 0));
    assert_eq!(c.pop(&mut out), Ok(false));
}

/// `drain_sized` copies the first PREFIX_BYTES of a slot and as many more as `len` says from
/// them, within the slot whatever it says, and nothing else: the rest of the copy is zeros
/// even where the slot holds data.
#[test]
fn drain_sized_copies_what_the_prefix_says() {
    let (mut p, mut c, _) = pair();
    let lens = [0u8, 3, 8, 12, 48, 64, 200, 255];
    for &l in &lens {
        let mut m = [0xaa_u8; SLOT_BYTES];
        m[PREFIX_BYTES - 1] = l;
        p.push(&m).unwrap();
    }
    let mut got = Vec::new();
    let more = c
        .drain_sized(
            CAPACITY,
            |prefix| usize::from(prefix[PREFIX_BYTES - 1]),
            |slot| got.push(*slot),
        )
        .unwrap();
    assert!(!more);
    assert_eq!(got.len(), lens.len());
    for (slot, &l) in got.iter().zip(&lens) {
        let n = usize::from(l).clamp(PREFIX_BYTES, SLOT_BYTES);
        assert_eq!(slot[PREFIX_BYTES - 1], l);
        assert!(slot[..n]
            .iter()
            .enumerate()
            .all(|(i, &b)| b == 0xaa || i == PREFIX_BYTES - 1));
        assert!(
            slot[n..].iter().all(|&b| b == 0),
            "len {l}: copied past {n}"
        );
    }
}

#[test]
fn full_keeps_one_slot_empty_and_wraps() {
    let (mut p, mut c, _) = pair();
    let mut out = [0u8; SLOT_BYTES];
    for round in 0..5u8 {
        for i in 0..CAPACITY - 1 {
            p.push(&msg(round.wrapping_add(i as u8))).unwrap();
        }
        assert_eq!(p.free(), Ok(0));
        assert_eq!(p.push(&msg(0)), Err(QueueError::Full));
        for i in 0..CAPACITY - 1 {
            assert_eq!(c.pop(&mut out), Ok(true));
            assert_eq!(out[0], round.wrapping_add(i as u8));
        }
        assert_eq!(c.pop(&mut out), Ok(false));
        assert_eq!(p.free(), Ok(CAPACITY - 1));
    }
}

#[test]
fn too_long() {
    let (mut p, _, _) = pair();
    assert_eq!(
        p.push(&[0; SLOT_BYTES + 1]),
        Err(QueueError::TooLong {
            len: SLOT_BYTES + 1
        })
    );
    assert_eq!(p.push(&[0; SLOT_BYTES]), Ok(()));
}

#[test]
fn out_of_range_indexes_are_refused() {
    let (mut p, mut c, mem) = pair();
    let mut out = [0u8; SLOT_BYTES];
    mem.poke(HEAD_OFFSET, CAPACITY);
    assert_eq!(
        c.pop(&mut out),
        Err(QueueError::OutOfRange {
            index: Index::Head,
            value: CAPACITY
        })
    );
    mem.poke(HEAD_OFFSET, 0);
    mem.poke(TAIL_OFFSET, 0xffff_ffff);
    // The producer reads the tail when it needs to know the room.
    assert_eq!(
        p.free(),
        Err(QueueError::OutOfRange {
            index: Index::Tail,
            value: 0xffff_ffff
        })
    );
    // Adoption refuses them too.
    assert!(Producer::adopt(mem.clone()).is_err());
}

#[test]
fn head_moving_backwards_is_detected() {
    let (mut p, mut c, mem) = pair();
    for i in 0..5 {
        p.push(&msg(i)).unwrap();
    }
    assert_eq!(c.pending(), Ok(5));
    // The producer "takes back" two announced messages.
    mem.poke(HEAD_OFFSET, 3);
    let mut out = [0u8; SLOT_BYTES];
    assert_eq!(
        c.pop(&mut out),
        Err(QueueError::HeadBackwards { from: 5, to: 3 })
    );
    // Nothing was consumed.
    assert_eq!(c.tail(), 0);
}

#[test]
fn tail_overtaking_head_is_detected() {
    let (mut p, _, mem) = pair();
    for i in 0..3 {
        p.push(&msg(i)).unwrap();
    }
    // The consumer claims to have read 10 messages of the 3 produced: found as soon as the
    // producer looks at the tail, and nothing is written with it.
    mem.poke(TAIL_OFFSET, 10);
    assert_eq!(
        p.free(),
        Err(QueueError::TailOvertook { tail: 10, head: 3 })
    );
    assert_eq!(p.head(), 3);
}

/// A push into a queue with room, as last seen, does not read the tail (a read of a device's
/// BAR is a bus round trip); one into a queue that looks full does, and checks it.
#[test]
fn push_reads_the_tail_only_for_room() {
    let (mut p, _, mem) = pair();
    mem.poke(TAIL_OFFSET, 0xffff_ffff);
    for i in 0..CAPACITY - 1 {
        p.push(&msg(i as u8)).unwrap();
    }
    assert_eq!(
        p.push(&msg(0)),
        Err(QueueError::OutOfRange {
            index: Index::Tail,
            value: 0xffff_ffff
        })
    );
    mem.poke(TAIL_OFFSET, 5);
    assert_eq!(p.push(&msg(0)), Ok(()));
}

#[test]
fn restart_adopts_indexes_and_discards_stale_messages() {
    let (mut p, mut c, mem) = pair();
    let mut out = [0u8; SLOT_BYTES];
    for i in 0..70u8 {
        p.push(&msg(i)).unwrap();
        assert_eq!(c.pop(&mut out), Ok(true));
    }
    p.push(&msg(100)).unwrap();
    p.push(&msg(101)).unwrap();
    // A new consumer (driver reload) adopts the indexes, never zeroes them...
    let mut c2 = Consumer::adopt(mem.clone()).unwrap();
    assert_eq!(c2.tail(), 70 % CAPACITY);
    // ...and drops what was left from before it.
    assert_eq!(c2.discard(), Ok(2));
    assert_eq!(mem.load_index(TAIL_OFFSET), 72 % CAPACITY);
    assert_eq!(c2.pop(&mut out), Ok(false));
    // The producer, which kept its position, goes on.
    p.push(&msg(102)).unwrap();
    assert_eq!(c2.pop(&mut out), Ok(true));
    assert_eq!(out[0], 102);
}

#[test]
fn both_ends_take_over_again_after_the_other_side_restarted() {
    let (mut p, mut c, mem) = pair();
    let mut out = [0u8; SLOT_BYTES];
    for i in 0..10u8 {
        p.push(&msg(i)).unwrap();
    }
    for _ in 0..4 {
        assert_eq!(c.pop(&mut out), Ok(true));
    }
    // The other side restarted and reset the indexes; taken over again, both ends go on
    // from there, and nothing from before is left.
    mem.poke(HEAD_OFFSET, 0);
    mem.poke(TAIL_OFFSET, 0);
    c.readopt().unwrap();
    p.readopt().unwrap();
    assert_eq!((p.head(), c.tail()), (0, 0));
    assert_eq!(c.pop(&mut out), Ok(false));
    p.push(&msg(50)).unwrap();
    assert_eq!(c.pop(&mut out), Ok(true));
    assert_eq!(out[0], 50);
    assert!(!c.take_was_full());
    // Out of range: refused, and the ends keep what they had.
    mem.poke(HEAD_OFFSET, CAPACITY);
    assert!(matches!(
        c.readopt(),
        Err(QueueError::OutOfRange {
            index: Index::Head,
            ..
        })
    ));
    assert!(matches!(
        p.readopt(),
        Err(QueueError::OutOfRange {
            index: Index::Head,
            ..
        })
    ));
    assert_eq!((p.head(), c.tail()), (1, 1));
}

#[derive(Clone, Debug)]
enum Op {
    Push(u8),
    Pop,
    Drain(u32),
}

#[test]
fn defuse_zeroes_what_the_consumer_did_not_take() {
    let (mut p, mut c, _) = pair();
    let mut out = [0u8; SLOT_BYTES];
    for i in 1..=5 {
        p.push(&msg(i)).unwrap();
    }
    assert!(c.pop(&mut out).unwrap());
    assert_eq!(out[0], 1);
    assert_eq!(p.defuse(), Ok(4));
    // The consumer that wakes up takes four zeroed slots, then nothing.
    for _ in 0..4 {
        assert!(c.pop(&mut out).unwrap());
        assert_eq!(out, [0; SLOT_BYTES]);
    }
    assert!(!c.pop(&mut out).unwrap());
    assert_eq!(p.defuse(), Ok(0));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    /// Any interleaving of pushes and pops behaves like a bounded FIFO.
    #[test]
    fn behaves_like_a_bounded_fifo(ops in prop::collection::vec(prop_oneof![
        3 => any::<u8>().prop_map(Op::Push),
        1 => Just(Op::Pop),
        1 => (0..2 * CAPACITY).prop_map(Op::Drain),
    ], 0..400)) {
        let (mut p, mut c, _) = pair();
        let mut model = VecDeque::new();
        let mut out = [0u8; SLOT_BYTES];
        for op in ops {
            match op {
                Op::Push(v) => {
                    let r = p.push(&[v; 5]);
                    if model.len() == (CAPACITY - 1) as usize {
                        prop_assert_eq!(r, Err(QueueError::Full));
                    } else {
                        prop_assert_eq!(r, Ok(()));
                        model.push_back(v);
                    }
                }
                Op::Pop => {
                    let got = c.pop(&mut out).unwrap();
                    match model.pop_front() {
                        Some(v) => { prop_assert!(got); prop_assert_eq!(out[0], v); }
                        None => prop_assert!(!got),
                    }
                }
                Op::Drain(budget) => {
                    let mut got = Vec::new();
                    let more = c.drain(budget, |slot| got.push(slot[0])).unwrap();
                    let n = model.len().min(budget as usize);
                    let want: Vec<u8> = model.drain(..n).collect();
                    prop_assert_eq!(got, want);
                    // More is reported exactly when the budget left messages behind.
                    prop_assert_eq!(more, !model.is_empty());
                }
            }
            prop_assert_eq!(c.pending(), Ok(model.len() as u32));
        }
    }

    /// A producer that drops what finds the queue full (as the device model does) can never
    /// drop unseen: once the consumer read the head after a drop, `take_was_full` says so,
    /// however pushes, drops and partial drains interleave (pushes also run inside a drain,
    /// after each slot is freed).
    #[test]
    fn every_drop_is_seen_at_the_next_look(ops in prop::collection::vec(prop_oneof![
        2 => (1..2 * CAPACITY).prop_map(Op::Drain),
        1 => Just(Op::Pop),
        3 => any::<u8>().prop_map(Op::Push),
    ], 0..300), inside in prop::collection::vec(0..4u32, 1..20)) {
        let (mut p, mut c, mem) = pair();
        let mut out = [0u8; SLOT_BYTES];
        // The head reads done when each drop not yet seen happened.
        let mut unseen: Vec<u64> = Vec::new();
        let push = |p: &mut Producer<Mem>, unseen: &mut Vec<u64>, v: u8| {
            if p.push(&[v; 5]) == Err(QueueError::Full) {
                unseen.push(mem.head_reads());
            }
        };
        let mut turn = 0;
        for op in ops {
            match op {
                Op::Push(v) => {
                    for _ in 0..=v % 70 {
                        push(&mut p, &mut unseen, v);
                    }
                }
                Op::Pop => {
                    c.pop(&mut out).unwrap();
                }
                Op::Drain(budget) => {
                    c.drain(budget, |_| {
                        turn += 1;
                        for _ in 0..inside[turn % inside.len()] {
                            push(&mut p, &mut unseen, 0);
                        }
                    })
                    .unwrap();
                }
            }
            let reads = mem.head_reads();
            let full = c.take_was_full();
            // Every drop followed by a read of the head is seen.
            prop_assert!(full || unseen.iter().all(|&at| at >= reads));
            unseen.retain(|&at| at >= reads);
        }
    }

    /// A consumer that keeps up is never told its queue was full.
    #[test]
    fn a_queue_never_near_full_is_never_reported_full(batches in prop::collection::vec(0..(CAPACITY / 2), 1..200)) {
        let (mut p, mut c, _) = pair();
        for n in batches {
            for _ in 0..n {
                p.push(&msg(1)).unwrap();
            }
            c.drain(CAPACITY, |_| {}).unwrap();
            prop_assert!(!c.take_was_full());
        }
    }

    /// Whatever a hostile peer writes into the indexes, nothing panics and nothing is read or
    /// written outside the queue (the memory accessor would panic).
    #[test]
    fn hostile_indexes_never_panic(pokes in prop::collection::vec((any::<bool>(), any::<u32>()), 1..50)) {
        let (mut p, mut c, mem) = pair();
        let mut out = [0u8; SLOT_BYTES];
        for (head, value) in pokes {
            mem.poke(if head { HEAD_OFFSET } else { TAIL_OFFSET }, value);
            let _ = p.push(&msg(1));
            let _ = p.free();
            let _ = c.pop(&mut out);
            let _ = c.pending();
            let _ = c.drain(CAPACITY, |_| {});
        }
    }
}
