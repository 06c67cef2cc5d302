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
//! This file is the bookkeeping only, with no locking and no I/O, so KUnit can drive it; the
//! FIFO (`fifo.rs`) holds it under a spinlock, sends, waits and runs the barrier.

use crate::{
    layout::MAX_MSG_SIZE,
    wire::{bus_id, HEADER_SIZE, TYPE_BUS, TYPE_RESPONSE},
};

/// A bus request waiting for its reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Awaited {
    /// GET_DEVICES: any GET_DEVICES reply, as the only one in flight.
    Devices,
    /// PING: the reply echoing this data.
    Pong(u32),
}

/// What a received bus message turned out to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Offered {
    /// The awaited reply: the waiter can take it.
    Matched,
    /// A reply to a request that is no longer waited for (timed out, or answered twice).
    Late,
    /// Not a reply to anything the FIFO sends.
    Unexpected,
}

/// The bus request in flight on one FIFO and its reply.
pub(crate) struct BusReplies {
    awaiting: Option<Awaited>,
    reply: Option<[u8; MAX_MSG_SIZE]>,
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

    /// A request waiting for `awaited` is about to be sent.
    pub(crate) fn arm(&mut self, awaited: Awaited) {
        self.awaiting = Some(awaited);
        self.reply = None;
    }

    /// The wait is over: the reply, or `None` if it did not come (then a GET_DEVICES reply
    /// may still be on its way and the FIFO is out of step).
    pub(crate) fn finish(&mut self) -> Option<[u8; MAX_MSG_SIZE]> {
        let awaited = self.awaiting.take();
        let reply = self.reply.take();
        if reply.is_none() && awaited == Some(Awaited::Devices) {
            self.in_step = false;
        }
        reply
    }

    /// A bus message from the device, copied out of its slot. Keeps it if it is the awaited
    /// reply.
    pub(crate) fn offer(&mut self, msg: &[u8; MAX_MSG_SIZE]) -> Offered {
        let is_reply = msg[0] & (TYPE_BUS | TYPE_RESPONSE) == TYPE_BUS | TYPE_RESPONSE;
        let matched = is_reply
            && match (msg[1], self.awaiting) {
                (bus_id::GET_DEVICES, Some(Awaited::Devices)) => true,
                (bus_id::PING, Some(Awaited::Pong(data))) => {
                    msg.get(HEADER_SIZE..HEADER_SIZE + 4) == Some(&data.to_le_bytes()[..])
                }
                _ => false,
            };
        if matched {
            if self.awaiting != Some(Awaited::Devices) {
                // A barrier's answer: everything sent before it has been seen. In step from
                // here, before any later message can be offered.
                self.in_step = true;
            }
            self.awaiting = None;
            self.reply = Some(*msg);
            return Offered::Matched;
        }
        match (is_reply, msg[1]) {
            // The answer to a PING that timed out: it names its request, it does no harm.
            (true, bus_id::PING) => Offered::Late,
            // Late or a second copy: more may follow, so the next GET_DEVICES waits for a
            // barrier.
            (true, bus_id::GET_DEVICES) => {
                self.in_step = false;
                Offered::Late
            }
            _ => Offered::Unexpected,
        }
    }
}
