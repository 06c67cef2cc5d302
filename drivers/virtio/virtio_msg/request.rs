// SPDX-License-Identifier: GPL-2.0

//! The request engine of one device: one request in flight, a bounded wait for its response.
//!
//! virtio-msg defines no error message and no timeout, and a device may drop a request it does
//! not like without a word (the QEMU device model does). So every request waits at most the
//! `timeout_ms` module parameter. A device that lets an essential request time out (or finds
//! the bus full) on every attempt (`device.rs`) is *broken*: its queues are broken and
//! every later request fails at once, so no driver waits on a device that is gone. An optional
//! request (GET_SHM, which the device model does not implement) only fails.
//!
//! The waiting itself is `kernel::virtio::msg::exchange`'s, which the buses use for their own
//! requests too; what is here are the rules that say which response answers the request in
//! flight ([`Slot`]).
//!
//! # Correlation without trusting the token
//!
//! The token belongs to the bus: the specification lets a bus insert or overwrite it and
//! forbids a driver to rely on its value, and QEMU's device model answers bus requests with
//! token 0. So a response is matched by what the device cannot get wrong without breaking the
//! protocol: it is for this device (the bus routed it by device number), it is a response, and
//! its message id is the id of the one request in flight. That alone cannot tell a late
//! response (its request timed out) or a duplicate from the answer to a later request of the
//! same id, so two mechanisms keep the two apart:
//!
//! - **Barrier.** Whenever a response may still be on its way that is not the answer to the
//!   next request (after a timeout, after a response nobody waited for), the requester is *out
//!   of step*. Before its next request it calls the bus's [`Sender::sync`], an ordering barrier:
//!   once it returns, everything the device side sent before it has been delivered (and dropped
//!   here as late). The requester is in step again.
//! - **Tokens as a bonus.** The requester still puts a sequence number in the token. Once
//!   [`TRUSTED_ECHOES`] responses in a row carried their request's token back, the device is
//!   taken to echo tokens: from then on a response with a non-zero token that is not the
//!   awaited one is dropped as late at once, and an answer carrying the awaited token puts the
//!   requester back in step without a barrier (on a bus that has none, too). A device that
//!   answers with 0 or with other values (a bus that rewrites tokens) is matched by id alone,
//!   and the barrier keeps it right. What the device does with tokens is learnt anew after
//!   every barrier.

use kernel::{
    alloc::KVec,
    interrupt::LocalInterruptDisabled,
    new_exchange, new_mutex,
    prelude::*,
    sync::{
        atomic::{Atomic, Relaxed},
        Mutex,
    },
    time::Delta,
    virtio::msg::exchange::{Correlate, Exchange},
};

use crate::{
    stats::Dropped,
    wire::{Frame, Header, Message},
};

/// What a timeout means for the device.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Policy {
    /// The device must answer: a timeout breaks it.
    Essential,
    /// The device may legitimately ignore the request: a timeout only fails it.
    Optional,
    /// Sent even to a broken device (a last reset); a timeout only fails it.
    BestEffort,
}

/// Why a request failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Failure {
    /// No response in time.
    Timeout,
    /// The device is broken; nothing was sent.
    Broken,
    /// The bus could not send the request.
    Send(Error),
    /// The response did not make sense for the request.
    BadResponse,
}

impl From<Failure> for Error {
    fn from(f: Failure) -> Error {
        match f {
            Failure::Timeout => ETIMEDOUT,
            Failure::Broken | Failure::BadResponse => EIO,
            Failure::Send(e) => e,
        }
    }
}

enum SlotState {
    Idle,
    /// Waiting for the bus's barrier: whatever arrives predates it.
    Syncing,
    Waiting {
        msg_id: u8,
        token: u16,
    },
    Done {
        len: usize,
    },
}

/// What the device's tokens are worth, as learnt since the last barrier.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Tokens {
    /// This many responses in a row carried their request's token.
    Learning(u8),
    /// [`TRUSTED_ECHOES`] responses in a row carried their request's token: a different
    /// non-zero token means a late response.
    Echoed,
    /// A response carried another token (0, or a bus's own): tokens are ignored.
    Opaque,
}

/// Responses in a row that must echo their request's token before tokens are trusted: a bus
/// that puts its own counter in the token may match ours now and then, never for long.
const TRUSTED_ECHOES: u8 = 4;

/// Where the next requester's tokens start, so that requesters do not run in step with each
/// other or with a bus's own counter.
static NEXT_SEQUENCE: Atomic<u32> = Atomic::new(0x4d53_0000);

/// The request in flight and what is known of the device's answers: the rules of the
/// requester's [`Exchange`].
struct Slot {
    state: SlotState,
    /// No response from before the latest request can still arrive (see the module docs).
    in_step: bool,
    tokens: Tokens,
    /// The response, copied out of the bus's buffer.
    buf: KVec<u8>,
}

impl Correlate for Slot {
    /// Message id and token of the request.
    type Awaited = (u8, u16);
    /// The header of a decoded response, and the whole message.
    type Offer<'a> = (&'a Header, &'a [u8]);
    /// Length of the response in `buf`.
    type Reply = usize;
    type Refused = Dropped;

    fn arm(&mut self, (msg_id, token): (u8, u16)) {
        self.state = SlotState::Waiting { msg_id, token };
    }

    fn cancel(&mut self) {
        self.state = SlotState::Idle;
    }

    fn offer(&mut self, (header, bytes): (&Header, &[u8])) -> Result<(), Dropped> {
        let (awaited, token) = match self.state {
            SlotState::Waiting { msg_id, token } => (msg_id, token),
            // From before the barrier, or from before a timeout that still awaits its barrier.
            SlotState::Syncing => return Err(Dropped::Late),
            SlotState::Idle | SlotState::Done { .. } if !self.in_step => return Err(Dropped::Late),
            // Nothing asked for it (a duplicate, say): whatever sent it may send more, so the
            // next request waits for a barrier first.
            SlotState::Idle | SlotState::Done { .. } => {
                self.in_step = false;
                return Err(Dropped::Unsolicited);
            }
        };
        if header.msg_id != awaited {
            let why = if self.in_step {
                Dropped::Unsolicited
            } else {
                Dropped::Late
            };
            self.in_step = false;
            return Err(why);
        }
        if self.tokens == Tokens::Echoed && header.token != 0 && header.token != token {
            // An echoing device answering an earlier request.
            return Err(Dropped::Late);
        }
        let dst = self.buf.get_mut(..bytes.len()).ok_or(Dropped::Malformed)?;
        dst.copy_from_slice(bytes);
        self.state = SlotState::Done { len: bytes.len() };
        self.tokens = match (self.tokens, header.token == token) {
            (Tokens::Learning(n), true) if n + 1 >= TRUSTED_ECHOES => Tokens::Echoed,
            (Tokens::Learning(n), true) => Tokens::Learning(n + 1),
            (Tokens::Echoed, _) => Tokens::Echoed,
            _ => Tokens::Opaque,
        };
        if self.tokens == Tokens::Echoed && header.token == token {
            // The device answers in order: the answer to this request, named by its token,
            // comes after every answer to earlier ones. Back in step without a barrier.
            self.in_step = true;
        }
        Ok(())
    }

    fn finish(&mut self) -> Option<usize> {
        match core::mem::replace(&mut self.state, SlotState::Idle) {
            SlotState::Done { len } => Some(len),
            _ => {
                // The response may still come, and must not answer the next request.
                self.in_step = false;
                None
            }
        }
    }
}

/// Attempts of an essential request before the device is broken. A response can be lost
/// without the device being dead (the device model drops what does not fit its full queue, and
/// the bus may have had no room for the request), so a timeout or a full bus is tried again,
/// after the barrier that keeps the late answer out; every request is idempotent. A device
/// that stays silent costs `ESSENTIAL_ATTEMPTS` timeouts once, then is broken: the timeouts
/// are counted for the device, whichever callers waited them ([`Requester::silent`]).
pub(crate) const ESSENTIAL_ATTEMPTS: u32 = 3;

/// The request engine of one device.
#[pin_data]
pub(crate) struct Requester {
    /// One request at a time: held from sending to the end of the wait.
    #[pin]
    serial: Mutex<KVec<u8>>,
    /// Responses are offered from the bus's interrupt handler.
    #[pin]
    exchange: Exchange<Slot>,
    next_token: Atomic<u32>,
    broken: Atomic<bool>,
    /// The bus said the device is gone: nothing is sent to it any more, not even a last
    /// reset (nobody would answer, and each would cost a timeout).
    gone: Atomic<bool>,
    /// Essential requests in a row, of any caller, that got no answer. Written under
    /// `serial`.
    unanswered: Atomic<u32>,
    timeout_ms: u32,
}

/// The bus as the requester uses it: implemented by the bus handle.
pub(crate) trait Sender {
    /// Sends one encoded message, whose message id is `msg_id`.
    fn send(&self, msg: &[u8], msg_id: u8) -> Result;

    /// The bus's ordering barrier (`kernel::virtio::msg::Bus::sync`): returns once everything
    /// the device side sent before the call has been delivered. [`ENOTSUPP`] if the bus
    /// cannot tell.
    fn sync(&self) -> Result;

    /// Counts one barrier, and one request sent out of step because the bus has none.
    fn synced(&self, supported: bool);
}

impl Requester {
    /// A requester for messages of at most `max_msg_size` bytes.
    pub(crate) fn new(max_msg_size: usize, timeout_ms: u32) -> impl PinInit<Self, Error> {
        try_pin_init!(Self {
            serial <- new_mutex!(KVec::from_elem(0u8, max_msg_size, GFP_KERNEL)?),
            exchange <- new_exchange!(
                Slot {
                    state: SlotState::Idle,
                    in_step: true,
                    tokens: Tokens::Learning(0),
                    buf: KVec::from_elem(0u8, max_msg_size, GFP_KERNEL)?,
                },
                "virtio_msg::Requester::exchange"
            ),
            next_token: Atomic::new(NEXT_SEQUENCE.fetch_add(0x1_0000 + 0x1337, Relaxed)),
            broken: Atomic::new(false),
            gone: Atomic::new(false),
            unanswered: Atomic::new(0),
            timeout_ms,
        })
    }

    /// Whether the device used up its attempts: [`ESSENTIAL_ATTEMPTS`] essential requests in
    /// a row got no answer. Essential requests are then refused, as from a broken device
    /// (which the caller that saw the last timeout makes it).
    pub(crate) fn silent(&self) -> bool {
        self.unanswered.load(Relaxed) >= ESSENTIAL_ATTEMPTS
    }

    pub(crate) fn is_broken(&self) -> bool {
        self.broken.load(Relaxed)
    }

    /// Marks the device broken. Returns `true` the first time.
    pub(crate) fn set_broken(&self) -> bool {
        !self.broken.xchg(true, Relaxed)
    }

    /// Marks the device gone (the bus said so): every request is refused from now on, even
    /// a best-effort one. Break it too ([`Requester::set_broken`]).
    pub(crate) fn set_gone(&self) {
        self.gone.store(true, Relaxed);
    }

    /// The token of the latest request (for tests).
    #[cfg(CONFIG_VIRTIO_MSG_KUNIT_TEST)]
    pub(crate) fn last_token(&self) -> u16 {
        self.next_token.load(Relaxed).wrapping_sub(1) as u16
    }

    /// Whether a barrier is due before the next request (for tests).
    #[cfg(CONFIG_VIRTIO_MSG_KUNIT_TEST)]
    pub(crate) fn out_of_step(&self) -> bool {
        !self.exchange.rules().in_step
    }

    /// A fresh token; never 0, which devices use for "no token".
    fn token(&self) -> u16 {
        loop {
            let token = self.next_token.fetch_add(1, Relaxed) as u16;
            if token != 0 {
                return token;
            }
        }
    }

    /// Brings the requester back in step with the device, if it is not: runs the bus's barrier,
    /// dropping whatever arrives meanwhile. A bus without one is noted and the request goes
    /// ahead unprotected; a barrier that fails is a device that does not answer.
    fn sync(&self, sender: &dyn Sender) -> Result<(), Failure> {
        {
            let mut slot = self.exchange.rules();
            if slot.in_step {
                return Ok(());
            }
            slot.state = SlotState::Syncing;
        }
        let synced = sender.sync();
        let mut slot = self.exchange.rules();
        slot.state = SlotState::Idle;
        match synced {
            Ok(()) => {
                slot.in_step = true;
                slot.tokens = Tokens::Learning(0);
                drop(slot);
                sender.synced(true);
                Ok(())
            }
            Err(e) if e == ENOTSUPP => {
                drop(slot);
                sender.synced(false);
                Ok(())
            }
            // The device side did not answer the barrier.
            Err(e) if e == ETIMEDOUT => Err(Failure::Timeout),
            // The bus could not send it (full, stopped, gone): nothing was asked of the device.
            Err(e) => Err(Failure::Send(e)),
        }
    }

    /// Sends `msg` to device `dev_num` and waits for its response, which `parse` turns into
    /// the result. Whether a failure breaks the device is the caller's decision
    /// ([`Requester::set_broken`]): it may try again first.
    pub(crate) fn request<R>(
        &self,
        sender: &dyn Sender,
        dev_num: u16,
        msg: Message<'_>,
        policy: Policy,
        parse: impl FnOnce(&Message<'_>) -> Option<R>,
    ) -> Result<R, Failure> {
        let refused = || {
            self.gone.load(Relaxed)
                || (self.is_broken() && policy != Policy::BestEffort)
                || (self.silent() && policy == Policy::Essential)
        };
        if refused() {
            return Err(Failure::Broken);
        }
        let mut tx = self.serial.lock();
        // Again: callers queued behind the requests that used up the device's attempts must
        // not each pay a barrier and a timeout of their own.
        if refused() {
            return Err(Failure::Broken);
        }
        let result = self.sync(sender).and_then(|()| {
            let token = self.token();
            let frame = Frame {
                dev_num,
                token,
                msg,
            };
            let len = frame.encode(&mut tx).map_err(|_| Failure::Send(EMSGSIZE))?;
            self.exchange(sender, &tx[..len], msg.id().2, token, parse)
        });
        // Under `serial`: the next caller sees the count.
        match result {
            Ok(_) => self.unanswered.store(0, Relaxed),
            Err(Failure::Timeout) if policy == Policy::Essential => self.unanswered.add(1, Relaxed),
            _ => {}
        }
        result
    }

    /// Sends the encoded request `bytes` and waits for the response.
    fn exchange<R>(
        &self,
        sender: &dyn Sender,
        bytes: &[u8],
        msg_id: u8,
        token: u16,
        parse: impl FnOnce(&Message<'_>) -> Option<R>,
    ) -> Result<R, Failure> {
        let timeout = Delta::from_millis(self.timeout_ms.into());
        let len = self
            .exchange
            .request((msg_id, token), || sender.send(bytes, msg_id), timeout)
            .map_err(Failure::Send)?
            .ok_or(Failure::Timeout)?;
        // Nothing writes `buf` again before the next request is armed.
        let slot = self.exchange.rules();
        slot.buf
            .get(..len)
            .and_then(|b| Frame::decode(b).ok())
            .and_then(|f| parse(&f.msg))
            .ok_or(Failure::BadResponse)
    }

    /// Offers a received response (already decoded, `bytes` is the whole message). Wakes the
    /// waiter if it is the awaited one; otherwise says why it was dropped.
    pub(crate) fn complete(
        &self,
        header: &Header,
        bytes: &[u8],
        irq: &LocalInterruptDisabled,
    ) -> Result<(), Dropped> {
        self.exchange.offer((header, bytes), irq)
    }
}
