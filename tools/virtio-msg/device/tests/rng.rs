// SPDX-License-Identifier: GPL-2.0 OR MIT

//! The entropy device against rings laid out in guest memory by virtio-queue's mock queue.

mod rings;

use rings::{desc, kick, state, used, Mem, NEXT, QUEUE_SIZE, WRITE};
use std::sync::Arc;
use virtio_msg_device::{
    rng::Rng,
    transport::{QueueState, TransportDevice},
    Mode,
};
use virtio_msg_wire::{AvailNext, Frame, Message, VqueueConfig, Words};
use virtio_queue::{desc::RawDescriptor, mock::MockSplitQueue};
use vm_memory::{Bytes, GuestAddress};

fn memory() -> Mem {
    rings::memory(0x20_0000)
}

fn rng(mem: &Mem) -> Rng<Arc<Mem>> {
    Rng::new(
        Arc::new(mem.clone()),
        Box::new(|buf: &mut [u8]| buf.fill(0xab)),
    )
}

fn filled(mem: &Mem, addr: u64, len: usize) -> bool {
    let mut buf = vec![0u8; len];
    mem.read_slice(&mut buf, GuestAddress(addr)).unwrap();
    buf.iter().all(|&b| b == 0xab)
}

#[test]
fn fills_every_writable_buffer_and_reports_its_length() {
    let mem = memory();
    let q = MockSplitQueue::new(&mem, QUEUE_SIZE);
    let chains = [
        desc(0x10_0000, 32, WRITE, 0),
        desc(0x10_1000, 16, WRITE | NEXT, 2),
        desc(0x10_2000, 8, WRITE, 0),
        // A read-only buffer is not written.
        desc(0x10_3000, 8, 0, 0),
    ];
    q.add_desc_chains(&chains, 0).unwrap();
    let mut dev = rng(&mem);
    assert!(kick(&mut dev, 0, &state(&q)));
    assert_eq!(used(&mem, &q, 0), ((0, 32), 3));
    assert_eq!(used(&mem, &q, 1).0, (1, 24));
    assert_eq!(used(&mem, &q, 2).0, (3, 0));
    assert!(filled(&mem, 0x10_0000, 32));
    assert!(filled(&mem, 0x10_1000, 16));
    assert!(filled(&mem, 0x10_2000, 8));
    assert!(!filled(&mem, 0x10_3000, 1));
    // Nothing new: nothing used.
    assert!(!kick(&mut dev, 0, &state(&q)));
}

#[test]
fn at_most_64_kib_per_buffer() {
    let mem = memory();
    let q = MockSplitQueue::new(&mem, QUEUE_SIZE);
    // Four descriptors of 64 KiB in one chain: a guest asking for 256 KiB at once.
    let chain: Vec<RawDescriptor> = (0..4u16)
        .map(|i| {
            let flags = if i < 3 { WRITE | NEXT } else { WRITE };
            desc(0x10_0000 + u64::from(i) * 0x1_0000, 0x1_0000, flags, i + 1)
        })
        .collect();
    q.add_desc_chains(&chain, 0).unwrap();
    let mut dev = rng(&mem);
    assert!(kick(&mut dev, 0, &state(&q)));
    assert_eq!(used(&mem, &q, 0), ((0, 0x1_0000), 1));
    assert!(filled(&mem, 0x10_0000, 0x1_0000));
    assert!(!filled(&mem, 0x11_0000, 1));
}

#[test]
fn buffers_outside_guest_memory_are_skipped() {
    let mem = memory();
    let q = MockSplitQueue::new(&mem, QUEUE_SIZE);
    q.add_desc_chains(&[desc(0x1000_0000, 64, WRITE, 0)], 0)
        .unwrap();
    let mut dev = rng(&mem);
    assert!(kick(&mut dev, 0, &state(&q)));
    assert_eq!(used(&mem, &q, 0), ((0, 0), 1));
}

#[test]
fn rings_outside_guest_memory_are_refused() {
    let mem = memory();
    let mut dev = rng(&mem);
    let bad = QueueState {
        size: 16,
        desc: 0x1000_0000,
        driver: 0x1000_1000,
        device: 0x1000_2000,
        event_idx: false,
    };
    assert!(!kick(&mut dev, 0, &bad));
    assert!(!kick(&mut dev, 1, &bad));
}

#[test]
fn through_the_transport() {
    let mem = memory();
    let q = MockSplitQueue::new(&mem, QUEUE_SIZE);
    q.add_desc_chains(&[desc(0x10_0000, 32, WRITE, 0)], 0)
        .unwrap();
    let mut dev = TransportDevice::new(1, rng(&mem), Mode::Compat);
    let mut send = |msg: Message<'_>| {
        dev.handle(&Frame {
            dev_num: 1,
            token: 7,
            msg,
        })
    };
    send(Message::SetDeviceStatus { status: 3 });
    send(Message::SetDriverFeatures {
        block_index: 1,
        features: Words::new(&[1]),
    });
    send(Message::SetDeviceStatus { status: 0xb });
    let s = state(&q);
    let cfg = VqueueConfig {
        index: 0,
        size: s.size,
        desc_addr: s.desc,
        driver_addr: s.driver,
        device_addr: s.device,
    };
    send(Message::SetVqueue(cfg));
    send(Message::SetDeviceStatus { status: 0xf });
    let out = send(Message::EventAvail {
        vq_index: 0,
        next: AvailNext::NONE,
    });
    assert_eq!(out.len(), 1);
    assert_eq!(
        Frame::decode(&out[0]).unwrap().msg,
        Message::EventUsed { vq_index: 0 }
    );
    assert!(filled(&mem, 0x10_0000, 32));

    // A driver that polls (VRING_AVAIL_F_NO_INTERRUPT) gets its buffers filled, but no event.
    mem.write_obj(1u16.to_le(), q.avail_addr()).unwrap();
    q.add_desc_chains(&[desc(0x10_1000, 16, WRITE, 0)], 1)
        .unwrap();
    let out = send(Message::EventAvail {
        vq_index: 0,
        next: AvailNext::NONE,
    });
    assert!(out.is_empty());
    assert!(filled(&mem, 0x10_1000, 16));
    assert_eq!(used(&mem, &q, 1), ((1, 16), 2));
}

#[test]
fn an_available_index_that_makes_no_sense_does_not_hold_the_device() {
    let mem = memory();
    let q = MockSplitQueue::new(&mem, QUEUE_SIZE);
    q.add_desc_chains(&[desc(0x10_0000, 16, WRITE, 0)], 0)
        .unwrap();
    let mut dev = rng(&mem);
    assert!(kick(&mut dev, 0, &state(&q)));
    // The driver claims 1000 more buffers in a ring of 16: nothing is taken, and the call ends.
    mem.write_obj(1001u16, GuestAddress(q.avail_addr().0 + 2))
        .unwrap();
    assert!(!kick(&mut dev, 0, &state(&q)));
    assert_eq!(used(&mem, &q, 0).1, 1);
}

#[test]
fn with_event_idx_the_rings_say_when_to_notify() {
    // Rings laid out by hand, with room for used_event and avail_event (the mock queue has
    // none): descriptors at 0x1000, available ring at 0x2000, used ring at 0x3000.
    let mem = memory();
    let size = QUEUE_SIZE;
    let s = QueueState {
        size: size.into(),
        desc: 0x1000,
        driver: 0x2000,
        device: 0x3000,
        event_idx: true,
    };
    let used_event = GuestAddress(0x2000 + 4 + 2 * u64::from(size));
    let avail_event = GuestAddress(0x3000 + 4 + 8 * u64::from(size));
    let used_idx = |mem: &Mem| mem.read_obj::<u16>(GuestAddress(0x3002)).unwrap();
    // Buffer `i` (8 bytes at 0x10_0000 + 0x1000 * i) made available as entry `i`.
    let post = |mem: &Mem, i: u16| {
        let mut d = [0u8; 16];
        d[..8].copy_from_slice(&(0x10_0000 + 0x1000 * u64::from(i)).to_le_bytes());
        d[8..12].copy_from_slice(&8u32.to_le_bytes());
        d[12..14].copy_from_slice(&WRITE.to_le_bytes());
        mem.write_slice(&d, GuestAddress(0x1000 + 16 * u64::from(i)))
            .unwrap();
        mem.write_obj(i, GuestAddress(0x2004 + 2 * u64::from(i)))
            .unwrap();
        mem.write_obj(i + 1, GuestAddress(0x2002)).unwrap();
    };
    let mut dev = rng(&mem);
    // Two buffers; the driver wants to hear once the first is used (used_event 0).
    post(&mem, 0);
    post(&mem, 1);
    assert!(kick(&mut dev, 0, &s));
    assert_eq!(used_idx(&mem), 2);
    // The device tells the driver to notify from the next buffer on.
    assert_eq!(mem.read_obj::<u16>(avail_event).unwrap(), 2);
    // The driver asks to hear only after its fourth buffer: no EVENT_USED for the third.
    mem.write_obj(3u16, used_event).unwrap();
    post(&mem, 2);
    assert!(!kick(&mut dev, 0, &s));
    assert_eq!(used_idx(&mem), 3);
    assert_eq!(mem.read_obj::<u16>(avail_event).unwrap(), 3);
    post(&mem, 3);
    assert!(kick(&mut dev, 0, &s));
    assert_eq!(used_idx(&mem), 4);
}
