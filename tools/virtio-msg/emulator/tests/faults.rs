// SPDX-License-Identifier: GPL-2.0 OR MIT

//! Faults that act on the queues themselves or stand in for the device, seen from the driver's
//! side of BAR1 one doorbell at a time: indexes that move wrong, a slot rewritten after it was
//! published, a device that stops reading the driver queue, device numbers that never answer,
//! answers the device model never gives.

use std::sync::Arc;
use std::time::Instant;
use virtio_msg_device::{bus::FifoBus, Mode};
use virtio_msg_emulator::{
    faults::{BurstAnswer, Faults, BACKWARDS, OVERTAKE},
    pci::bar1_size,
    shm::{QueueWindow, SharedMem},
    tokens::TokenMode,
    worker::Fifo,
};
use virtio_msg_spsc::layout::{DEVICE_QUEUE, DRIVER_QUEUE};
use virtio_msg_spsc::{
    Consumer, Producer, QueueAccess, QueueError, CAPACITY, HEAD_OFFSET, SLOTS_OFFSET, SLOT_BYTES,
    TAIL_OFFSET,
};
use virtio_msg_wire::{AvailNext, DeviceInfo, Frame, Message, VqueueInfo};

mod quiet;
use quiet::Quiet;

/// The driver side of FIFO 0, the FIFO itself, and both queues to look at behind the
/// driver's back.
struct Rig {
    fifo: Fifo,
    tx: Producer<QueueWindow>,
    rx: Consumer<QueueWindow>,
    driver: QueueWindow,
    device: QueueWindow,
}

impl Rig {
    fn new(mode: Mode, devices: &[u16], faults: &[&str]) -> Self {
        let mem = Arc::new(SharedMem::new("faults-bar1", bar1_size(1) as usize).unwrap());
        let mut bus = FifoBus::new(mode);
        for &n in devices {
            bus.attach(n, Box::new(Quiet)).unwrap();
        }
        let mut fifo = Fifo::new(0, bus, mode, TokenMode::Model, mem.clone()).unwrap();
        let specs: Vec<_> = faults.iter().map(|f| f.parse().unwrap()).collect();
        fifo.set_faults(Faults::for_fifo(0, &specs));
        let driver = QueueWindow::new(mem.clone(), 0, DRIVER_QUEUE).unwrap();
        let device = QueueWindow::new(mem, 0, DEVICE_QUEUE).unwrap();
        Self {
            fifo,
            tx: Producer::adopt(driver.clone()).unwrap(),
            rx: Consumer::adopt(device.clone()).unwrap(),
            driver,
            device,
        }
    }

    /// Queues `msg` for device `dev_num` with `token`, without ringing.
    fn put(&mut self, dev_num: u16, token: u16, msg: Message<'_>) {
        let frame = Frame {
            dev_num,
            token,
            msg,
        };
        let mut buf = vec![0u8; frame.encoded_len().unwrap()];
        frame.encode(&mut buf).unwrap();
        self.tx.push(&buf).unwrap();
    }

    /// Asks device 0 for its status `n` times (tokens 1 to `n`) and rings.
    fn ask_status(&mut self, n: u16) {
        for token in 1..=n {
            self.put(0, token, Message::GetDeviceStatus);
        }
        self.fifo.doorbell();
    }

    /// Everything the driver can read now.
    fn replies(&mut self) -> Vec<[u8; SLOT_BYTES]> {
        let mut out = Vec::new();
        let mut slot = [0u8; SLOT_BYTES];
        while self.rx.pop(&mut slot).unwrap() {
            out.push(slot);
        }
        out
    }

    /// The device queue's slot `i`, as it is in memory.
    fn slot(&self, i: u32) -> [u8; SLOT_BYTES] {
        let mut slot = [0u8; SLOT_BYTES];
        self.device
            .read(SLOTS_OFFSET + i as usize * SLOT_BYTES, &mut slot);
        slot
    }
}

fn sleep_until(t: Instant) {
    std::thread::sleep(t.saturating_duration_since(Instant::now()));
}

/// The token of a message.
fn token(slot: &[u8]) -> u16 {
    u16::from_le_bytes([slot[4], slot[5]])
}

#[test]
fn index_backwards_takes_the_head_back_once_and_the_device_goes_on_from_there() {
    for mode in [Mode::Compat, Mode::Strict] {
        let mut rig = Rig::new(mode, &[0], &["0:0:index-backwards,after=4"]);
        rig.ask_status(5);
        // Five answers in slots 0 to 4, then the head went back.
        assert_eq!(
            rig.device.load_index(HEAD_OFFSET),
            5 - BACKWARDS,
            "{mode:?}"
        );
        assert_eq!(token(&rig.slot(4)), 5);
        // The next answer overwrites the slot the head points at now, and the head goes on
        // from there, not from where it was.
        rig.ask_status(1);
        assert_eq!(
            rig.device.load_index(HEAD_OFFSET),
            6 - BACKWARDS,
            "{mode:?}"
        );
        assert_eq!(token(&rig.slot(5 - BACKWARDS)), 1);
        // Once: the head moves on by one per answer from now on.
        rig.ask_status(2);
        assert_eq!(
            rig.device.load_index(HEAD_OFFSET),
            8 - BACKWARDS,
            "{mode:?}"
        );
    }
}

#[test]
fn index_jitter_tells_the_driver_of_one_slot_too_many() {
    for mode in [Mode::Compat, Mode::Strict] {
        let mut rig = Rig::new(mode, &[0], &["0:0:index-jitter,every=2"]);
        rig.ask_status(2);
        let got = rig.replies();
        // Two answers, and the slot after the second, which holds nothing new (zeros here).
        assert_eq!(got.len(), 3, "{mode:?}");
        assert_eq!((token(&got[0]), token(&got[1])), (1, 2));
        assert!(Frame::decode(&got[2]).is_err());
        // The device goes on after the slot it skipped; every second message is off.
        rig.ask_status(1);
        let got = rig.replies();
        assert_eq!(got.len(), 1, "{mode:?}");
        assert_eq!(token(&got[0]), 1);
        assert_eq!(rig.device.load_index(HEAD_OFFSET), 4);
    }
}

#[test]
fn index_jitter_never_makes_a_full_queue_look_empty() {
    let mut rig = Rig::new(Mode::Compat, &[0], &["0:0:index-jitter"]);
    // The driver reads nothing: every answer takes two slots until there is one left.
    rig.ask_status(32);
    let head = rig.device.load_index(HEAD_OFFSET);
    assert_eq!(head, CAPACITY - 1, "full, not empty");
    assert_eq!(rig.rx.pending().unwrap(), CAPACITY - 1);
}

#[test]
fn slot_rewrite_overwrites_a_published_slot_afterwards() {
    let mut rig = Rig::new(Mode::Compat, &[0], &["0:0:slot-rewrite"]);
    rig.ask_status(1);
    // Published intact; the worker rewrites only after the interrupt went.
    assert_eq!(token(&rig.slot(0)), 1);
    assert!(Frame::decode(&rig.slot(0)).is_ok());
    assert!(rig.fifo.next_due().is_some());
    rig.fifo.rewrite_slots();
    assert_eq!(rig.slot(0), [0xff; SLOT_BYTES]);
    let got = rig.replies();
    assert_eq!(got.len(), 1);
    assert!(Frame::decode(&got[0]).is_err());
    assert_eq!(rig.fifo.next_due(), None);

    // Later: not before its time; and a slot that holds something else by then is left alone.
    let mut rig = Rig::new(Mode::Strict, &[0], &["0:0:slot-rewrite,ms=30"]);
    rig.ask_status(2);
    rig.fifo.rewrite_slots();
    assert_eq!((token(&rig.slot(0)), token(&rig.slot(1))), (1, 2));
    let other = [0x5a; SLOT_BYTES];
    rig.device.write(SLOTS_OFFSET + SLOT_BYTES, &other);
    sleep_until(rig.fifo.next_due().unwrap());
    rig.fifo.rewrite_slots();
    assert_eq!(rig.slot(0), [0xff; SLOT_BYTES]);
    assert_eq!(rig.slot(1), other);
}

#[test]
fn tail_overtake_shows_the_driver_a_tail_past_its_head_but_the_device_is_not_fooled() {
    for mode in [Mode::Compat, Mode::Strict] {
        let mut rig = Rig::new(mode, &[0], &["0:all:tail-overtake"]);
        rig.ask_status(1);
        assert_eq!(rig.replies().len(), 1);
        let head = rig.tx.head();
        assert_eq!(rig.driver.load_index(TAIL_OFFSET), head + OVERTAKE);
        assert!(matches!(
            rig.tx.free(),
            Err(QueueError::TailOvertook { .. })
        ));
        // A driver that takes the queue over as it finds it can still send; the device
        // reads from where it really was, once, and nothing stale is run.
        rig.tx = Producer::adopt(rig.driver.clone()).unwrap();
        rig.put(0, 9, Message::GetDeviceStatus);
        rig.fifo.doorbell();
        let got = rig.replies();
        assert_eq!(got.len(), 1, "{mode:?}");
        assert_eq!(token(&got[0]), 9);
        assert_eq!(rig.driver.load_index(TAIL_OFFSET), head + 1);
    }
}

#[test]
fn stop_consuming_fills_the_driver_queue_then_reads_it_without_a_doorbell() {
    let mut rig = Rig::new(Mode::Compat, &[0], &["0:all:stop-consuming,ms=100,after=1"]);
    rig.ask_status(3);
    // The second answer set it off, and went out; the third request waits.
    let got = rig.replies();
    assert_eq!(got.iter().map(|s| token(s)).collect::<Vec<_>>(), [1, 2]);
    let due = rig.fifo.next_due().expect("the end of the stop");
    // The driver queue fills up; doorbells change nothing.
    while rig.tx.free().unwrap() > 0 {
        rig.put(0, 100, Message::GetDeviceStatus);
    }
    rig.fifo.doorbell();
    assert_eq!(rig.fifo.timed(false), 0);
    assert!(rig.replies().is_empty());
    assert_eq!(rig.tx.free().unwrap(), 0);
    sleep_until(due);
    assert_eq!(rig.fifo.timed(false), CAPACITY - 1);
    assert_eq!(rig.replies().len() as u32, CAPACITY - 1);
    assert_eq!(rig.tx.free().unwrap(), CAPACITY - 1);

    // For good, until the fault is cleared.
    let mut rig = Rig::new(Mode::Strict, &[0], &["0:all:stop-consuming"]);
    rig.ask_status(2);
    assert_eq!(rig.replies().len(), 1);
    rig.fifo.doorbell();
    assert_eq!(rig.fifo.timed(true), 0);
    assert_eq!(rig.fifo.next_due(), None);
    rig.fifo.set_faults(Faults::default());
    assert_eq!(rig.fifo.timed(false), 1);
    assert_eq!(token(&rig.replies()[0]), 2);
}

/// A stop set off outside a doorbell (here by the EVENT_CONFIG answering a kick that a stalled
/// backend takes late) that runs out with nothing unread is no longer due afterwards: the
/// worker, which waits for what is due, would spin on it.
#[test]
fn a_stop_that_ran_out_is_no_longer_due() {
    let mut rig = Rig::new(
        Mode::Compat,
        &[0],
        &["0:0:stall,ms=10", "0:all:stop-consuming,ms=20,msg=0x40"],
    );
    let kick = Message::EventAvail {
        vq_index: 0,
        next: AvailNext::NONE,
    };
    rig.put(0, 1, kick);
    rig.fifo.doorbell();
    assert!(rig.replies().is_empty());
    sleep_until(rig.fifo.next_due().unwrap());
    assert_eq!(rig.fifo.timed(false), 1);
    let due = rig.fifo.next_due().expect("the end of the stop");
    sleep_until(due);
    assert_eq!(rig.fifo.timed(false), 0);
    assert_eq!(rig.fifo.next_due(), None);
}

#[test]
fn silent_numbers_are_enumerated_and_never_answer() {
    let info = |rig: &mut Rig, n: u16| {
        rig.put(n, 1, Message::GetDeviceInfo);
        rig.fifo.doorbell();
        rig.replies().len()
    };
    let mut rig = Rig::new(Mode::Compat, &[0, 5], &[]);
    // Without the fault, the device model answers an empty number below 32.
    assert_eq!(info(&mut rig, 6), 1);

    let mut rig = Rig::new(Mode::Compat, &[0, 5], &["0:all:silent-numbers,n=2"]);
    rig.put(
        0,
        0,
        Message::GetDevices {
            offset: 0,
            count: 32,
        },
    );
    rig.fifo.doorbell();
    let got = rig.replies();
    match Frame::decode(&got[0]).unwrap().msg {
        Message::Devices { bitmap, .. } => assert_eq!(bitmap, [0xe1, 0, 0, 0]),
        other => panic!("{other:?}"),
    }
    assert_eq!(info(&mut rig, 6), 0);
    assert_eq!(info(&mut rig, 7), 0);
    assert_eq!(info(&mut rig, 5), 1);
    assert_eq!(info(&mut rig, 4), 1, "an empty number that is not listed");
}

#[test]
fn shm_lie_answers_where_the_device_model_is_silent() {
    let mut rig = Rig::new(Mode::Compat, &[0], &[]);
    rig.put(0, 7, Message::GetShm { index: 1 });
    rig.fifo.doorbell();
    assert!(rig.replies().is_empty());

    let mut rig = Rig::new(Mode::Compat, &[0], &["0:0:shm-lie"]);
    rig.put(0, 7, Message::GetShm { index: 1 });
    rig.fifo.doorbell();
    let got = rig.replies();
    assert_eq!(
        Frame::decode(&got[0]).unwrap(),
        Frame {
            dev_num: 0,
            token: 7,
            msg: Message::Shm {
                index: 1,
                length: 0x10000,
                address: 0xfeed_0000,
            },
        }
    );
}

#[test]
fn lies_reach_the_driver_in_the_devices_own_answers() {
    let mut rig = Rig::new(
        Mode::Compat,
        &[0],
        &["0:0:info-lie", "0:0:vqueue-lie", "0:0:wrong-config"],
    );
    rig.put(0, 1, Message::GetDeviceInfo);
    rig.put(0, 2, Message::GetVqueue { index: 0 });
    rig.put(
        0,
        3,
        Message::GetConfig {
            offset: 0,
            length: 4,
        },
    );
    rig.fifo.doorbell();
    let got = rig.replies();
    let msgs: Vec<_> = got.iter().map(|s| Frame::decode(s).unwrap().msg).collect();
    assert!(matches!(
        msgs[0],
        Message::DeviceInfo(DeviceInfo {
            device_id: 4,
            config_size: 0xffff,
            max_virtqueues: 0xffff,
            ..
        })
    ));
    assert!(matches!(
        msgs[1],
        Message::Vqueue(VqueueInfo {
            index: 0,
            max_size: 0x8000,
            ..
        })
    ));
    // The device model reads 0xff past a config space (this one has none).
    assert!(matches!(
        msgs[2],
        Message::Config {
            offset: 4,
            data: [0xff, 0xff, 0xff, 0xff],
            ..
        }
    ));
}

#[test]
fn ping_burst_fills_the_device_queue_at_once_and_counts_only_what_went_out() {
    let mut rig = Rig::new(Mode::Compat, &[0], &["0:all:ping-burst,n=70,after=1"]);
    assert_eq!(rig.fifo.timed(true), 0, "after=1: the first tick passes");
    assert_eq!(rig.fifo.timed(true), CAPACITY - 1);
    assert_eq!(rig.fifo.timed(true), 0, "once");
    // The device queue holds 61; the other 9 are lost, as the device model loses messages.
    assert_eq!(rig.fifo.pings(), (CAPACITY - 1, 0));
    let got = rig.replies();
    for slot in &got[..3] {
        let Message::Ping { data } = Frame::decode(slot).unwrap().msg else {
            panic!("not a PING");
        };
        rig.put(0, 0, Message::Pong { data });
    }
    rig.fifo.doorbell();
    assert_eq!(rig.fifo.pings(), (CAPACITY - 1, 3));
    assert!(rig.replies().is_empty(), "echoes are taken, not answered");
    // The doorbell that announced the echoes answered the burst; four more that the worker
    // reads at once later did not.
    rig.fifo.doorbells(4);
    let answer = BurstAnswer {
        sent: CAPACITY - 1,
        echoed: 3,
        doorbells: 1,
    };
    assert_eq!(rig.fifo.burst(), Some(answer), "later ones not counted");
}

#[test]
fn msix_storm_owes_raises_and_sends_nothing() {
    let mut rig = Rig::new(Mode::Compat, &[0], &["0:all:msix-storm,n=5"]);
    assert_eq!(rig.fifo.timed(true), 0);
    assert_eq!(rig.fifo.storm(), 5);
    assert_eq!(rig.fifo.timed(false), 0);
    assert_eq!(rig.fifo.storm(), 0, "on ticks only");
    // The worker raises what storm() owes (tests/fifo.rs); nothing goes on the queue.
    assert!(rig.replies().is_empty());
}
