// SPDX-License-Identifier: GPL-2.0 OR MIT

//! `--tokens`: what the FIFO does to the token of a transport response, a bus reply and an
//! event, in each mode and with each device mode, one doorbell at a time.

use std::sync::Arc;
use virtio_msg_device::{bus::FifoBus, Mode};
use virtio_msg_emulator::{
    pci::bar1_size,
    shm::{QueueWindow, SharedMem},
    tokens::TokenMode,
    worker::Fifo,
};
use virtio_msg_spsc::layout::{DEVICE_QUEUE, DRIVER_QUEUE};
use virtio_msg_spsc::{Consumer, Producer, SLOT_BYTES};
use virtio_msg_wire::{AvailNext, Frame, Message};

mod quiet;
use quiet::Quiet;

/// The driver side of FIFO 0 and the FIFO itself.
struct Rig {
    fifo: Fifo,
    tx: Producer<QueueWindow>,
    rx: Consumer<QueueWindow>,
}

impl Rig {
    fn new(mode: Mode, tokens: TokenMode) -> Self {
        let mem = Arc::new(SharedMem::new("tokens-bar1", bar1_size(1) as usize).unwrap());
        let mut bus = FifoBus::new(mode);
        bus.attach(0, Box::new(Quiet)).unwrap();
        Self {
            fifo: Fifo::new(0, bus, mode, tokens, mem.clone()).unwrap(),
            tx: Producer::adopt(QueueWindow::new(mem.clone(), 0, DRIVER_QUEUE).unwrap()).unwrap(),
            rx: Consumer::adopt(QueueWindow::new(mem, 0, DEVICE_QUEUE).unwrap()).unwrap(),
        }
    }

    /// Sends `msg` with `token`, rings, and returns the tokens of what came back, with the
    /// messages' ids.
    fn ask(&mut self, token: u16, msg: Message<'_>) -> Vec<(u8, u16)> {
        let frame = Frame {
            dev_num: 0,
            token,
            msg,
        };
        let mut buf = vec![0u8; frame.encoded_len().unwrap()];
        frame.encode(&mut buf).unwrap();
        self.tx.push(&buf).unwrap();
        self.fifo.doorbell();
        let mut out = Vec::new();
        let mut slot = [0u8; SLOT_BYTES];
        while self.rx.pop(&mut slot).unwrap() {
            out.push((slot[1], u16::from_le_bytes([slot[4], slot[5]])));
        }
        out
    }

    /// A transport response, a bus reply and an event (EVENT_CONFIG, for a notification
    /// before DRIVER_OK in compat mode; strict mode sends none), each asked with `token`.
    fn three(&mut self, token: u16) -> (u16, u16, Option<u16>) {
        let status = self.ask(token, Message::GetDeviceStatus);
        let pong = self.ask(token, Message::Ping { data: 7 });
        let event = self.ask(
            token,
            Message::EventAvail {
                vq_index: 0,
                next: AvailNext::NONE,
            },
        );
        assert_eq!(status.len(), 1);
        assert_eq!(pong.len(), 1);
        (status[0].1, pong[0].1, event.first().map(|e| e.1))
    }
}

#[test]
fn model_echoes_transport_tokens_only() {
    let mut rig = Rig::new(Mode::Compat, TokenMode::Model);
    assert_eq!(rig.three(0x1234), (0x1234, 0, Some(0)));
    assert_eq!(rig.three(0xffff), (0xffff, 0, Some(0)));
    let mut strict = Rig::new(Mode::Strict, TokenMode::Model);
    assert_eq!(strict.three(0x1234), (0x1234, 0, None));
}

#[test]
fn zero_sends_zero_everywhere() {
    for mode in [Mode::Compat, Mode::Strict] {
        let mut rig = Rig::new(mode, TokenMode::Zero);
        let (status, pong, event) = rig.three(0x1234);
        assert_eq!((status, pong), (0, 0), "{mode:?}");
        assert!(event.is_none_or(|t| t == 0));
    }
}

#[test]
fn scramble_never_returns_the_request_token() {
    let mut rig = Rig::new(Mode::Compat, TokenMode::Scramble);
    let mut seen = std::collections::HashSet::new();
    for token in [0u16, 1, 0x1234, 0xffff].into_iter().cycle().take(200) {
        let (status, pong, event) = rig.three(token);
        assert_ne!(status, token, "a transport response carries another token");
        assert_ne!(pong, token, "a bus reply carries another token");
        seen.extend([status, pong]);
        seen.extend(event);
    }
    // The same request token gets different tokens back from message to message.
    assert!(seen.len() > 400, "only {} distinct tokens", seen.len());
}
