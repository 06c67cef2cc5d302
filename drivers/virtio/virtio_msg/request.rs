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
    new_mutex, new_spinlock_irqsave,
    prelude::*,
    sync::{
        atomic::{Atomic, Relaxed},
        Completion, Mutex, SpinLockIrqSave,
    },
    time::Delta,
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

/// What a received response turned out to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Match {
    /// The awaited response; the waiter was woken.
    Matched,
    /// Not awaited.
    Dropped(Dropped),
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

struct Slot {
    state: SlotState,
    /// No response from before the latest request can still arrive (see the module docs).
    in_step: bool,
    tokens: Tokens,
    /// The response, copied out of the bus's buffer.
    buf: KVec<u8>,
}

/// The request engine of one device.
#[pin_data]
pub(crate) struct Requester {
    /// One request at a time: held from sending to the end of the wait.
    #[pin]
    serial: Mutex<KVec<u8>>,
    /// Completed from the bus's interrupt handler.
    #[pin]
    slot: SpinLockIrqSave<Slot>,
    #[pin]
    done: Completion,
    next_token: Atomic<u32>,
    broken: Atomic<bool>,
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
            slot <- new_spinlock_irqsave!(Slot {
                state: SlotState::Idle,
                in_step: true,
                tokens: Tokens::Learning(0),
                buf: KVec::from_elem(0u8, max_msg_size, GFP_KERNEL)?,
            }),
            done <- Completion::new(),
            next_token: Atomic::new(NEXT_SEQUENCE.fetch_add(0x1_0000 + 0x1337, Relaxed)),
            broken: Atomic::new(false),
            timeout_ms,
        })
    }

    pub(crate) fn is_broken(&self) -> bool {
        self.broken.load(Relaxed)
    }

    /// Marks the device broken. Returns `true` the first time.
    pub(crate) fn set_broken(&self) -> bool {
        !self.broken.xchg(true, Relaxed)
    }

    /// The token of the latest request (for tests).
    #[cfg(CONFIG_VIRTIO_MSG_KUNIT_TEST)]
    pub(crate) fn last_token(&self) -> u16 {
        self.next_token.load(Relaxed).wrapping_sub(1) as u16
    }

    /// Whether a barrier is due before the next request (for tests).
    #[cfg(CONFIG_VIRTIO_MSG_KUNIT_TEST)]
    pub(crate) fn out_of_step(&self) -> bool {
        !self.slot.lock().in_step
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
            let mut slot = self.slot.lock();
            if slot.in_step {
                return Ok(());
            }
            slot.state = SlotState::Syncing;
        }
        let synced = sender.sync();
        let mut slot = self.slot.lock();
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
        if self.is_broken() && policy != Policy::BestEffort {
            return Err(Failure::Broken);
        }
        let mut tx = self.serial.lock();
        self.sync(sender).and_then(|()| {
            let token = self.token();
            let frame = Frame {
                dev_num,
                token,
                msg,
            };
            let len = frame.encode(&mut tx).map_err(|_| Failure::Send(EMSGSIZE))?;
            self.exchange(sender, &tx[..len], msg.id().2, token, parse)
        })
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
        {
            let mut slot = self.slot.lock();
            // A `complete()` of an earlier, timed-out request may still be counted: forget it,
            // under the lock, before a response can match.
            self.done.reinit();
            slot.state = SlotState::Waiting { msg_id, token };
        }
        if let Err(e) = sender.send(bytes, msg_id) {
            self.slot.lock().state = SlotState::Idle;
            return Err(Failure::Send(e));
        }

        // Whether it timed out is decided below, under the lock: the response may arrive
        // right after the wait ended.
        let _ = self
            .done
            .wait_for_completion_timeout(Delta::from_millis(self.timeout_ms.into()));
        let mut slot = self.slot.lock();
        match core::mem::replace(&mut slot.state, SlotState::Idle) {
            SlotState::Done { len } => slot
                .buf
                .get(..len)
                .and_then(|b| Frame::decode(b).ok())
                .and_then(|f| parse(&f.msg))
                .ok_or(Failure::BadResponse),
            _ => {
                // The response may still come, and must not answer the next request.
                slot.in_step = false;
                Err(Failure::Timeout)
            }
        }
    }

    /// Offers a received response (already decoded, `bytes` is the whole message). Wakes the
    /// waiter if it is the awaited one.
    pub(crate) fn complete(&self, header: &Header, bytes: &[u8]) -> Match {
        let mut slot = self.slot.lock();
        let (awaited, token) = match slot.state {
            SlotState::Waiting { msg_id, token } => (msg_id, token),
            // From before the barrier, or from before a timeout that still awaits its barrier.
            SlotState::Syncing => return Match::Dropped(Dropped::Late),
            SlotState::Idle | SlotState::Done { .. } if !slot.in_step => {
                return Match::Dropped(Dropped::Late)
            }
            // Nothing asked for it (a duplicate, say): whatever sent it may send more, so the
            // next request waits for a barrier first.
            SlotState::Idle | SlotState::Done { .. } => {
                slot.in_step = false;
                return Match::Dropped(Dropped::Unsolicited);
            }
        };
        if header.msg_id != awaited {
            let why = if slot.in_step {
                Dropped::Unsolicited
            } else {
                Dropped::Late
            };
            slot.in_step = false;
            return Match::Dropped(why);
        }
        if slot.tokens == Tokens::Echoed && header.token != 0 && header.token != token {
            // An echoing device answering an earlier request.
            return Match::Dropped(Dropped::Late);
        }
        let Some(dst) = slot.buf.get_mut(..bytes.len()) else {
            return Match::Dropped(Dropped::Malformed);
        };
        dst.copy_from_slice(bytes);
        slot.state = SlotState::Done { len: bytes.len() };
        slot.tokens = match (slot.tokens, header.token == token) {
            (Tokens::Learning(n), true) if n + 1 >= TRUSTED_ECHOES => Tokens::Echoed,
            (Tokens::Learning(n), true) => Tokens::Learning(n + 1),
            (Tokens::Echoed, _) => Tokens::Echoed,
            _ => Tokens::Opaque,
        };
        if slot.tokens == Tokens::Echoed && header.token == token {
            // The device answers in order: the answer to this request, named by its token,
            // comes after every answer to earlier ones. Back in step without a barrier.
            slot.in_step = true;
        }
        // Under the lock: once the waiter saw `Done`, no `complete()` of this response can
        // still be on its way to the next request.
        self.done.complete();
        Match::Matched
    }
}
