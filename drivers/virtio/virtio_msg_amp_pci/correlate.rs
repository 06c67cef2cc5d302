// SPDX-License-Identifier: GPL-2.0

//! Which bus reply answers which bus request, without trusting the token.
//!
//! QEMU's device model answers every bus request (GET_DEVICES, PING) with token 0, whatever
//! the request carried, and the specification leaves the token to the bus anyway. So a FIFO
//! matches the reply to its one bus request in flight by what the reply says:
//!
//! - a PING reply by the data it echoes: a fresh value per PING names its request exactly;
//! - a GET_DEVICES reply by its id alone, which cannot tell a late reply (its request timed
//!   out) or a second copy from the answer to the next request. So after a GET_DEVICES timed
//!   out, or a GET_DEVICES reply came that nobody waited for, the FIFO is *out of step*, and
//!   before its next GET_DEVICES it sends a PING with fresh data as a barrier: the device
//!   answers in order, so when the barrier's answer is in, every reply to what was sent before
//!   it has been seen (and dropped).
//!
//! This file is the rules only ([`Correlate`]), with no locking and no I/O, so KUnit can drive
//! them; the FIFO (`fifo.rs`) decodes what it receives once, and runs its requests, the
//! barrier included, through an [`Exchange`](kernel::virtio::msg::exchange::Exchange) with
//! these rules, as the transport runs its own with the transport's.

use kernel::virtio::msg::exchange::Correlate;

use crate::{
    enumerate::DevicesReply,
    wire::{Frame, Message},
};

/// A bus reply from the device, decoded and copied out of its slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BusReply {
    /// A GET_DEVICES reply.
    Devices(DevicesReply),
    /// A PING reply, with the data it echoes.
    Pong(u32),
}

impl BusReply {
    /// The bus reply `frame` carries, if it is one. `frame` comes from
    /// [`Frame::decode_lenient`], which is how the device model's GET_DEVICES replies must be
    /// read (see `enumerate.rs`).
    pub(crate) fn from_frame(frame: &Frame<'_>) -> Option<Self> {
        match frame.msg {
            Message::Devices {
                offset,
                count,
                next_offset,
                bitmap,
            } => Some(Self::Devices(DevicesReply::new(
                offset,
                count,
                next_offset,
                bitmap,
            ))),
            Message::Pong { data } => Some(Self::Pong(data)),
            _ => None,
        }
    }
}

/// A bus request waiting for its reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Awaited {
    /// GET_DEVICES: any GET_DEVICES reply, as the only one in flight.
    Devices,
    /// PING: the reply echoing this data.
    Pong(u32),
}

/// A bus reply to a request that is no longer waited for (timed out, or answered twice).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Late;

/// The bus request in flight on one FIFO and its reply.
pub(crate) struct BusReplies {
    awaiting: Option<Awaited>,
    reply: Option<BusReply>,
    /// No GET_DEVICES reply from before the latest request can still arrive.
    in_step: bool,
}

impl BusReplies {
    /// Out of step: a previous driver may have left a request in flight.
    pub(crate) const fn new() -> Self {
        Self {
            awaiting: None,
            reply: None,
            in_step: false,
        }
    }

    /// Whether a GET_DEVICES must wait for a barrier first.
    pub(crate) fn needs_barrier(&self) -> bool {
        !self.in_step
    }

    /// There is no way to get a barrier's answer: take the FIFO as it is.
    pub(crate) fn set_in_step(&mut self) {
        self.in_step = true;
    }
}

impl Correlate for BusReplies {
    type Awaited = Awaited;
    type Offer<'a> = BusReply;
    type Reply = BusReply;
    type Refused = Late;

    fn arm(&mut self, awaited: Awaited) {
        self.awaiting = Some(awaited);
        self.reply = None;
    }

    fn cancel(&mut self) {
        self.awaiting = None;
    }

    /// Keeps `reply` if it is the awaited one.
    fn offer(&mut self, reply: BusReply) -> Result<(), Late> {
        let matched = match (reply, self.awaiting) {
            (BusReply::Devices(_), Some(Awaited::Devices)) => true,
            (BusReply::Pong(echoed), Some(Awaited::Pong(data))) => echoed == data,
            _ => false,
        };
        if matched {
            if let BusReply::Pong(_) = reply {
                // A barrier's answer: everything sent before it has been seen. In step from
                // here, before any later message can be offered.
                self.in_step = true;
            }
            self.awaiting = None;
            self.reply = Some(reply);
            return Ok(());
        }
        if let BusReply::Devices(_) = reply {
            // Late or a second copy: more may follow, so the next GET_DEVICES waits for a
            // barrier.
            self.in_step = false;
        }
        // The answer to a PING that timed out names its request: it does no harm.
        Err(Late)
    }

    /// The reply, or `None` if it did not come (then a GET_DEVICES reply may still be on its
    /// way and the FIFO is out of step).
    fn finish(&mut self) -> Option<BusReply> {
        let awaited = self.awaiting.take();
        let reply = self.reply.take();
        if reply.is_none() && awaited == Some(Awaited::Devices) {
            self.in_step = false;
        }
        reply
    }
}
