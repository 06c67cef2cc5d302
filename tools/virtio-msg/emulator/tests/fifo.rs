// SPDX-License-Identifier: GPL-2.0 OR MIT

//! A FIFO worker driven through BAR1 memory, with the driver side played by the shared SPSC
//! code: round trips, one interrupt per batch, a hostile guest, a full device queue.

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};
use virtio_msg_device::{bus::FifoBus, Mode};
use virtio_msg_emulator::{
    faults::Faults,
    pci::bar1_size,
    shm::{QueueWindow, SharedMem},
    tokens::TokenMode,
    worker::{Down, Fifo, FifoHandle, TICK},
};
use virtio_msg_spsc::layout::{DEVICE_QUEUE, DRIVER_QUEUE};
use virtio_msg_spsc::{
    Consumer, Producer, QueueAccess, CAPACITY, HEAD_OFFSET, SLOTS_OFFSET, SLOT_BYTES,
};
use virtio_msg_wire::{DeviceState, Frame, Message};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

mod quiet;
use quiet::Quiet;

/// The guest: FIFO 0's queues seen from the driver side, and the MSI-X eventfd.
struct Guest {
    mem: Arc<SharedMem>,
    tx: Producer<QueueWindow>,
    rx: Consumer<QueueWindow>,
    irq: EventFd,
    fifo: FifoHandle,
}

fn start(mode: Mode, devices: &[u16]) -> Guest {
    let mem = Arc::new(SharedMem::new("test-bar1", bar1_size(1) as usize).unwrap());
    let mut bus = FifoBus::new(mode);
    for &n in devices {
        bus.attach(n, Box::new(Quiet)).unwrap();
    }
    let fifo = Fifo::new(0, bus, mode, TokenMode::Model, mem.clone()).unwrap();
    let fifo = FifoHandle::spawn(fifo).unwrap();
    let irq = EventFd::new(EFD_NONBLOCK).unwrap();
    // SAFETY: the descriptor is a fresh duplicate that nothing else owns.
    let file = unsafe { File::from_raw_fd(irq.try_clone().unwrap().into_raw_fd()) };
    fifo.shared().set_irq(Some(file));
    Guest {
        tx: Producer::adopt(QueueWindow::new(mem.clone(), 0, DRIVER_QUEUE).unwrap()).unwrap(),
        rx: Consumer::adopt(QueueWindow::new(mem.clone(), 0, DEVICE_QUEUE).unwrap()).unwrap(),
        mem,
        irq,
        fifo,
    }
}

fn encode(token: u16, msg: Message<'_>) -> Vec<u8> {
    let frame = Frame {
        dev_num: 0,
        token,
        msg,
    };
    let mut out = vec![0u8; frame.encoded_len().unwrap()];
    frame.encode(&mut out).unwrap();
    out
}

impl Guest {
    fn ping(&mut self, token: u16, data: u32) {
        self.tx
            .push(&encode(token, Message::Ping { data }))
            .unwrap();
    }

    /// Waits until the device queue holds `n` messages (or a second passed).
    fn wait_pending(&mut self, n: u32) -> u32 {
        let end = Instant::now() + Duration::from_secs(2);
        loop {
            let pending = self.rx.pending().unwrap();
            if pending >= n || Instant::now() > end {
                return pending;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Interrupts raised since the last call (after letting the worker settle).
    fn interrupts(&self) -> u64 {
        std::thread::sleep(TICK + TICK / 2);
        self.irq.read().unwrap_or(0)
    }

    fn pop(&mut self) -> Option<[u8; SLOT_BYTES]> {
        let mut slot = [0u8; SLOT_BYTES];
        self.rx.pop(&mut slot).unwrap().then_some(slot)
    }

    /// The data of the next PING response; like the device model's, it carries token 0.
    fn pong(&mut self) -> Option<u32> {
        let slot = self.pop()?;
        match Frame::decode(&slot).unwrap() {
            Frame {
                token: 0,
                msg: Message::Pong { data },
                ..
            } => Some(data),
            other => panic!("not a PING response with token 0: {other:?}"),
        }
    }
}

#[test]
fn get_devices_and_ping_with_one_interrupt_per_batch() {
    let mut g = start(Mode::Compat, &[0, 5, 17]);
    g.tx.push(&encode(
        7,
        Message::GetDevices {
            offset: 0,
            count: 32,
        },
    ))
    .unwrap();
    g.ping(8, 0xdead_beef);
    g.fifo.shared().ring();
    assert_eq!(g.wait_pending(2), 2);
    assert_eq!(g.interrupts(), 1, "one interrupt for the batch of two");

    let slot = g.pop().unwrap();
    let frame = Frame::decode(&slot).unwrap();
    // Bus replies carry token 0, whatever the request's (01-enumeration.txt).
    assert_eq!(frame.token, 0);
    assert_eq!(
        frame.msg,
        Message::Devices {
            offset: 0,
            count: 32,
            next_offset: 32,
            bitmap: &[0x21, 0x00, 0x02, 0x00],
        }
    );
    assert_eq!(g.pong(), Some(0xdead_beef));
    assert_eq!(g.pop(), None);

    // Nothing new without a doorbell, then one more round trip, one more interrupt.
    g.ping(9, 1);
    assert_eq!(g.interrupts(), 0);
    assert_eq!(g.rx.pending().unwrap(), 0);
    g.fifo.shared().ring();
    assert_eq!(g.wait_pending(1), 1);
    assert_eq!(g.interrupts(), 1);
    assert_eq!(g.pong(), Some(1));
    assert!(g.fifo.reset(Duration::from_secs(2)));
    assert!(g.fifo.stop());
}

#[test]
fn no_interrupt_without_an_eventfd() {
    let mut g = start(Mode::Compat, &[0]);
    g.fifo.shared().set_irq(None);
    g.ping(1, 2);
    g.fifo.shared().ring();
    assert_eq!(g.wait_pending(1), 1);
    assert_eq!(g.interrupts(), 0);
    assert_eq!(g.pong(), Some(2));
    assert!(g.fifo.stop());
}

#[test]
fn strict_mode_stops_on_a_corrupt_index_until_the_next_doorbell() {
    let mut g = start(Mode::Strict, &[0]);
    let driver = QueueWindow::new(g.mem.clone(), 0, DRIVER_QUEUE).unwrap();
    // The guest writes nonsense as its head.
    driver.store_index(HEAD_OFFSET, 1000);
    g.fifo.shared().ring();
    assert_eq!(g.interrupts(), 0);
    assert_eq!(g.rx.pending().unwrap(), 0);

    // Still nonsense at the next doorbell: still nothing, and the worker lives on.
    driver.store_index(HEAD_OFFSET, CAPACITY);
    g.fifo.shared().ring();
    assert_eq!(g.interrupts(), 0);

    // The guest starts over from what is in memory; the next doorbell adopts it.
    driver.store_index(HEAD_OFFSET, 0);
    g.tx = Producer::adopt(driver).unwrap();
    g.ping(3, 4);
    g.fifo.shared().ring();
    assert_eq!(g.wait_pending(1), 1);
    assert_eq!(g.pong(), Some(4));
    assert_eq!(g.interrupts(), 1);

    // A device-queue tail that overtakes the head is not even read while the device queue has
    // room as last seen (the producer reads the tail only for room: nothing acts on it); it
    // is caught once the device needs room (the queue's own tests), and the worker lives on.
    let device = QueueWindow::new(g.mem.clone(), 0, DEVICE_QUEUE).unwrap();
    device.store_index(64, 30);
    g.ping(5, 6);
    g.fifo.shared().ring();
    assert_eq!(g.interrupts(), 1);
    assert!(g.fifo.stop(), "the worker must not panic");
}

#[test]
fn compat_mode_takes_indexes_modulo_the_capacity() {
    // As the device model: an index out of range is not an error, it names the slot it is
    // congruent to, and the worker goes on.
    let mut g = start(Mode::Compat, &[0]);
    let driver = QueueWindow::new(g.mem.clone(), 0, DRIVER_QUEUE).unwrap();
    g.ping(3, 4);
    // Head 1 + 62: the same slot as head 1.
    driver.store_index(HEAD_OFFSET, 1 + CAPACITY);
    g.fifo.shared().ring();
    assert_eq!(g.wait_pending(1), 1);
    assert_eq!(g.pong(), Some(4));
    assert_eq!(driver.load_index(64), 1, "the device's tail, reduced");
    assert!(g.fifo.stop(), "the worker must not panic");
}

/// Fills the device queue (the guest does not read it) and sends `extra` more requests.
fn overflow(mode: Mode, extra: u32) -> Guest {
    let mut g = start(mode, &[0]);
    let room = CAPACITY - 1;
    for i in 0..room {
        g.ping(i as u16, i);
    }
    g.fifo.shared().ring();
    assert_eq!(g.wait_pending(room), room);
    for i in 0..extra {
        g.ping(100 + i as u16, 100 + i);
    }
    g.fifo.shared().ring();
    std::thread::sleep(TICK);
    g
}

#[test]
fn compat_mode_drops_what_does_not_fit() {
    let mut g = overflow(Mode::Compat, 3);
    // The requests were taken and their responses dropped, like the device model does.
    let driver = QueueWindow::new(g.mem.clone(), 0, DRIVER_QUEUE).unwrap();
    assert_eq!(driver.load_index(64), g.tx.head());
    for i in 0..CAPACITY - 1 {
        assert_eq!(g.pong(), Some(i));
    }
    g.fifo.shared().ring();
    std::thread::sleep(TICK);
    assert_eq!(g.pop(), None);
    assert!(g.fifo.stop());
}

#[test]
fn strict_mode_waits_for_room() {
    let mut g = overflow(Mode::Strict, 3);
    // The requests wait in the driver queue (one response is held back by the device).
    let driver = QueueWindow::new(g.mem.clone(), 0, DRIVER_QUEUE).unwrap();
    assert_ne!(driver.load_index(64), g.tx.head());
    for i in 0..CAPACITY - 1 {
        assert_eq!(g.pong(), Some(i));
    }
    // Room again: the rest arrive without another doorbell.
    assert_eq!(g.wait_pending(3), 3);
    for i in 0..3 {
        assert_eq!(g.pong(), Some(100 + i));
    }
    assert_eq!(driver.load_index(64), g.tx.head());
    assert!(g.fifo.stop());
}

impl Guest {
    fn fault(&self, spec: &str) {
        let faults = Faults::for_fifo(0, &[spec.parse().unwrap()]);
        assert!(self.fifo.set_faults(faults));
    }
}

#[test]
fn an_msix_storm_raises_the_vector_with_nothing_on_the_queue() {
    let mut g = start(Mode::Compat, &[0]);
    g.fault("0:all:msix-storm,n=5");
    let raised = g.interrupts();
    assert!(raised >= 5 && raised % 5 == 0, "{raised} interrupts");
    assert_eq!(g.rx.pending().unwrap(), 0);
    // Cleared: quiet again.
    assert!(g.fifo.set_faults(Faults::default()));
    g.interrupts();
    assert_eq!(g.interrupts(), 0);
    assert!(g.fifo.stop());
}

#[test]
fn the_worker_rewrites_a_slot_only_after_its_interrupt() {
    let mut g = start(Mode::Compat, &[0]);
    g.fault("0:all:slot-rewrite,ms=300");
    g.ping(1, 0x1234);
    g.fifo.shared().ring();
    assert_eq!(g.wait_pending(1), 1);
    let device = QueueWindow::new(g.mem.clone(), 0, DEVICE_QUEUE).unwrap();
    let slot = |d: &QueueWindow| {
        let mut s = [0u8; SLOT_BYTES];
        d.read(SLOTS_OFFSET, &mut s);
        s
    };
    assert!(Frame::decode(&slot(&device)).is_ok());
    // The interrupt went, then (with no doorbell or tick needed) the slot was overwritten.
    assert_eq!(g.interrupts(), 1);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(slot(&device), [0xff; SLOT_BYTES]);
    assert!(g.fifo.stop());
}

#[test]
fn a_stopped_device_reads_the_driver_queue_again_by_itself() {
    let mut g = start(Mode::Strict, &[0]);
    g.fault("0:all:stop-consuming,ms=300");
    g.ping(1, 1);
    g.fifo.shared().ring();
    assert_eq!(g.wait_pending(1), 1);
    assert_eq!(g.pong(), Some(1));
    // Stopped: the doorbell is ignored, the request stays in the driver queue.
    g.ping(2, 2);
    g.fifo.shared().ring();
    std::thread::sleep(TICK);
    assert_eq!(g.rx.pending().unwrap(), 0);
    assert_eq!(g.tx.free().unwrap(), CAPACITY - 2);
    // When the stop ends it is answered, without another doorbell.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(g.wait_pending(1), 1);
    assert_eq!(g.pong(), Some(2));
    assert!(g.fifo.stop());
}

/// The device-queue messages that are EVENT_DEVICE, as (number, READY).
fn device_events(g: &mut Guest) -> Vec<(u16, bool)> {
    let mut out = Vec::new();
    while let Some(slot) = g.pop() {
        match Frame::decode(&slot).unwrap().msg {
            Message::EventDevice {
                device_number,
                state,
            } => out.push((device_number, state == DeviceState::Ready)),
            m => panic!("not an EVENT_DEVICE: {m:?}"),
        }
    }
    out
}

#[test]
fn a_device_side_that_is_down_takes_nothing_and_says_so_when_it_is_up() {
    let mut g = start(Mode::Compat, &[0, 3]);
    assert!(g.fifo.down(Down {
        pings: false,
        for_ms: None
    }));
    g.ping(1, 1);
    g.fifo.shared().ring();
    assert_eq!(g.interrupts(), 0);
    assert_eq!(g.rx.pending().unwrap(), 0);
    assert_eq!(g.tx.free().unwrap(), CAPACITY - 2, "the PING is not taken");
    // Up: what waited is dropped, unanswered; every device is said REMOVED, then READY.
    assert!(g.fifo.up());
    assert_eq!(g.wait_pending(4), 4);
    assert_eq!(g.interrupts(), 1);
    assert_eq!(
        device_events(&mut g),
        [(0, false), (0, true), (3, false), (3, true)]
    );
    assert_eq!(g.tx.free().unwrap(), CAPACITY - 1);
    // It answers again.
    g.ping(2, 2);
    g.fifo.shared().ring();
    assert_eq!(g.wait_pending(1), 1);
    assert_eq!(g.pong(), Some(2));
    assert!(g.fifo.stop());
}

#[test]
fn a_reboot_answers_pings_while_down_if_asked_and_ends_by_itself() {
    let mut g = start(Mode::Compat, &[2]);
    assert!(g.fifo.down(Down {
        pings: true,
        for_ms: Some(400)
    }));
    std::thread::sleep(TICK);
    // Its bus answers PING; its device does not answer at all.
    g.ping(1, 7);
    g.tx.push(&encode(
        9,
        Message::GetDevices {
            offset: 0,
            count: 32,
        },
    ))
    .unwrap();
    g.fifo.shared().ring();
    assert_eq!(g.wait_pending(1), 1);
    assert_eq!(g.pong(), Some(7));
    assert_eq!(g.rx.pending().unwrap(), 0);
    // Up again by itself, without a command or a doorbell.
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(g.wait_pending(2), 2);
    assert_eq!(device_events(&mut g), [(2, false), (2, true)]);
    assert!(g.fifo.stop());
}

#[test]
fn bar1_is_one_memfd() {
    let mem = SharedMem::new("t", bar1_size(3) as usize).unwrap();
    assert_eq!(mem.len(), 64 * 1024);
    assert!(mem.fd().as_raw_fd() >= 0);
}
