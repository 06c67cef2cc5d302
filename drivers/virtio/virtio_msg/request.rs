// SPDX-License-Identifier: GPL-2.0

//! The request engine of one device: one request in flight, a bounded wait for its response.
//!
//! virtio-msg defines no error message and no timeout, and a device may drop a request it does
//! not like without a word (the QEMU device model does). So every request waits at most the
//! `timeout_ms` module parameter. A device that lets an essential request time out is *broken*:
//! its queues are broken and every later request fails at once, so no driver waits on a device
//! that is gone. An optional request (GET_SHM, which the device model does not implement) only
//! fails.
//!
//! A response is matched by message id and by the token of the request, which is a per-device
//! sequence number: a response that arrives after its request timed out, or one that answers
//! nothing, is counted and dropped, never taken for the answer to a later request.

use kernel::{
    alloc::KVec,
    new_mutex, new_spinlock,
    prelude::*,
    sync::{
        atomic::{Atomic, Relaxed},
        Completion, Mutex, SpinLock,
    },
    time::msecs_to_jiffies,
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
    Waiting { msg_id: u8, token: u16 },
    Done { len: usize },
}

struct Slot {
    state: SlotState,
    /// The response, copied out of the bus's buffer.
    buf: KVec<u8>,
}

/// The request engine of one device.
#[pin_data]
pub(crate) struct Requester {
    /// One request at a time: held from sending to the end of the wait.
    #[pin]
    serial: Mutex<KVec<u8>>,
    #[pin]
    slot: SpinLock<Slot>,
    #[pin]
    done: Completion,
    next_token: Atomic<u32>,
    broken: Atomic<bool>,
    timeout_ms: u32,
}

/// Sends a message on the bus: implemented by the bus handle.
pub(crate) trait Sender {
    fn send(&self, msg: &[u8]) -> Result;
}

impl Requester {
    /// A requester for messages of at most `max_msg_size` bytes.
    pub(crate) fn new(max_msg_size: usize, timeout_ms: u32) -> impl PinInit<Self, Error> {
        try_pin_init!(Self {
            serial <- new_mutex!(KVec::from_elem(0u8, max_msg_size, GFP_KERNEL)?),
            slot <- new_spinlock!(Slot {
                state: SlotState::Idle,
                buf: KVec::from_elem(0u8, max_msg_size, GFP_KERNEL)?,
            }),
            done <- Completion::new(),
            next_token: Atomic::new(1),
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

    /// Sends `msg` to device `dev_num` and waits for its response, which `parse` turns into
    /// the result. On [`Failure::Timeout`] with [`Policy::Essential`], the device is broken.
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
        let token = self.next_token.fetch_add(1, Relaxed) as u16;
        let frame = Frame {
            dev_num,
            token,
            msg,
        };
        let len = frame.encode(&mut tx).map_err(|_| Failure::Send(EMSGSIZE))?;
        let (_, _, msg_id) = msg.id();

        self.slot.lock().state = SlotState::Waiting { msg_id, token };
        // A `complete()` of an earlier, timed-out request may still be counted: forget it.
        self.done.reinit();
        if let Err(e) = sender.send(&tx[..len]) {
            self.slot.lock().state = SlotState::Idle;
            return Err(Failure::Send(e));
        }

        let waited = self
            .done
            .wait_for_completion_timeout(msecs_to_jiffies(self.timeout_ms));
        let mut slot = self.slot.lock();
        let state = core::mem::replace(&mut slot.state, SlotState::Idle);
        match (waited, state) {
            (_, SlotState::Done { len }) => {
                let result = slot
                    .buf
                    .get(..len)
                    .and_then(|b| Frame::decode(b).ok())
                    .and_then(|f| parse(&f.msg));
                result.ok_or(Failure::BadResponse)
            }
            _ => {
                drop(slot);
                if policy == Policy::Essential {
                    self.set_broken();
                }
                Err(Failure::Timeout)
            }
        }
    }

    /// Offers a received response (already decoded, `bytes` is the whole message). Wakes the
    /// waiter if it is the awaited one.
    pub(crate) fn complete(&self, header: &Header, bytes: &[u8]) -> Match {
        let mut slot = self.slot.lock();
        match slot.state {
            SlotState::Waiting { msg_id, token }
                if msg_id == header.msg_id && token == header.token =>
            {
                let Some(dst) = slot.buf.get_mut(..bytes.len()) else {
                    return Match::Dropped(Dropped::Malformed);
                };
                dst.copy_from_slice(bytes);
                slot.state = SlotState::Done { len: bytes.len() };
                // Under the lock: once the waiter saw `Done`, no `complete()` of this response
                // can still be on its way to the next request.
                self.done.complete();
                Match::Matched
            }
            _ => {
                drop(slot);
                // Tokens are handed out in order: one issued already is a late answer.
                let next = self.next_token.load(Relaxed) as u16;
                if next.wrapping_sub(header.token).wrapping_sub(1) < 0x8000 {
                    Match::Dropped(Dropped::Late)
                } else {
                    Match::Dropped(Dropped::Unsolicited)
                }
            }
        }
    }
}
