// SPDX-License-Identifier: GPL-2.0

//! One request in flight and a bounded wait for its reply.
//!
//! The virtio-msg transport asks each device one thing at a time, and a bus asks its device
//! side for enumeration and barriers the same way: arm, send, then wait at most a timeout for
//! the reply that the bus delivers, possibly from its hard interrupt handler. What answers what
//! is each user's own business, its [`Correlate`] rules: the transport matches per device and
//! message id, learning whether the device echoes tokens; the AMP PCI bus matches GET_DEVICES
//! by id and PING by the data it echoes. The two races of every such exchange are settled here,
//! once:
//!
//! - A reply that comes as the wait times out. Whether the request was answered is decided
//!   under the lock, after the wait, by [`Correlate::finish`], never by what the wait returned.
//! - The completion of an earlier request that timed out, still counted when the next request
//!   waits. It is forgotten under the lock while arming, before a reply to the new request can
//!   be taken; and a reply is taken and the waiter woken under the same lock, so no completion
//!   for it can reach a later request.

use crate::{
    interrupt::LocalInterruptDisabled,
    prelude::*,
    sync::{Completion, LockClassKey, SpinLockIrq, SpinLockIrqGuard},
    time::Delta,
};

/// The matching rules of an [`Exchange`]: what the request in flight waits for, and whether a
/// reply answers it.
///
/// Called with the exchange's spinlock held and interrupts disabled: keep it short, never sleep.
/// Rules are plain data, changed in place under the lock (hence `Unpin`).
pub trait Correlate: Unpin {
    /// What a request waits for.
    type Awaited;
    /// A reply as the bus delivers it.
    type Offer<'a>;
    /// What the waiter gets back.
    type Reply;
    /// Why an offered reply was not taken.
    type Refused;

    /// A request waiting for `awaited` is about to be sent.
    fn arm(&mut self, awaited: Self::Awaited);

    /// The armed request could not be sent: nothing will answer it.
    fn cancel(&mut self);

    /// Takes `offer` if it answers the request in flight, or says why not.
    fn offer(&mut self, offer: Self::Offer<'_>) -> Result<(), Self::Refused>;

    /// The wait is over: the reply taken, or `None` if none was (the request timed out, and
    /// its reply may still come).
    fn finish(&mut self) -> Option<Self::Reply>;
}

/// Creates an [`Exchange`] initialiser following `rules`, with its lock named `name`.
#[macro_export]
macro_rules! new_exchange {
    ($rules:expr, $name:literal $(,)?) => {
        $crate::virtio::msg::exchange::Exchange::new(
            $rules,
            $crate::optional_name!($name),
            $crate::static_lock_class!(),
        )
    };
}
pub use new_exchange;

/// One request in flight at a time and its reply, matched by the rules `C`.
///
/// # Examples
///
/// A device side that answers at once, from within `send` (a real bus delivers from its
/// interrupt handler):
///
/// ```
/// use kernel::{
///     new_exchange,
///     prelude::*,
///     time::Delta,
///     virtio::{as_interrupt, msg::exchange::Correlate}, //
/// };
///
/// /// Replies echo a number; a request waits for its own.
/// struct Echo {
///     awaited: Option<u32>,
///     reply: Option<u32>,
/// }
///
/// impl Correlate for Echo {
///     type Awaited = u32;
///     type Offer<'a> = u32;
///     type Reply = u32;
///     type Refused = ();
///
///     fn arm(&mut self, n: u32) {
///         self.awaited = Some(n);
///         self.reply = None;
///     }
///
///     fn cancel(&mut self) {
///         self.awaited = None;
///     }
///
///     fn offer(&mut self, n: u32) -> Result<(), ()> {
///         self.awaited.take_if(|a| *a == n).ok_or(())?;
///         self.reply = Some(n);
///         Ok(())
///     }
///
///     fn finish(&mut self) -> Option<u32> {
///         self.awaited = None;
///         self.reply.take()
///     }
/// }
///
/// let exchange = KBox::pin_init(
///     new_exchange!(Echo { awaited: None, reply: None }, "doc"),
///     GFP_KERNEL,
/// )?;
/// let answered = exchange.request(
///     7,
///     || {
///         // A late reply to an earlier request is refused; the awaited one is taken. A bus
///         // offers from its interrupt handler; here, as from one.
///         as_interrupt(|irq| {
///             assert_eq!(exchange.offer(6, irq), Err(()));
///             assert_eq!(exchange.offer(7, irq), Ok(()));
///         });
///         Ok(())
///     },
///     Delta::from_millis(100),
/// )?;
/// assert_eq!(answered, Some(7));
/// // Nobody answers: `None` once the timeout has passed.
/// assert_eq!(exchange.request(8, || Ok(()), Delta::from_millis(10))?, None);
/// # Ok::<(), Error>(())
/// ```
#[pin_data]
pub struct Exchange<C: Correlate> {
    #[pin]
    rules: SpinLockIrq<C>,
    #[pin]
    done: Completion,
}

impl<C: Correlate> Exchange<C> {
    /// An exchange with nothing in flight, following `rules`; [`new_exchange!`] names its lock.
    pub fn new(
        rules: C,
        name: &'static CStr,
        key: Pin<&'static LockClassKey>,
    ) -> impl PinInit<Self> {
        pin_init!(Self {
            rules <- SpinLockIrq::new(rules, name, key),
            done <- Completion::new(),
        })
    }

    /// The rules, locked, for what their owner keeps in them besides the request in flight.
    pub fn rules(&self) -> SpinLockIrqGuard<'_, C> {
        self.rules.lock()
    }

    /// Arms the exchange for `awaited`, sends the request with `send`, and waits up to
    /// `timeout` for the reply: `None` if none came in time.
    ///
    /// Process context; sleeps. One request at a time: the caller serialises its requests.
    pub fn request(
        &self,
        awaited: C::Awaited,
        send: impl FnOnce() -> Result,
        timeout: Delta,
    ) -> Result<Option<C::Reply>> {
        {
            let mut rules = self.rules.lock();
            self.done.reinit();
            rules.arm(awaited);
        }
        if let Err(e) = send() {
            self.rules.lock().cancel();
            return Err(e);
        }
        // Timed out or not, `finish` decides.
        let _ = self.done.wait_for_completion_timeout(timeout);
        Ok(self.rules.lock().finish())
    }

    /// Offers a reply and wakes the waiter if the rules take it. With interrupts disabled
    /// (`irq`): from the bus's hard interrupt handler, or as from one.
    pub fn offer(
        &self,
        offer: C::Offer<'_>,
        irq: &LocalInterruptDisabled,
    ) -> Result<(), C::Refused> {
        let mut rules = self.rules.lock_with(irq);
        rules.offer(offer)?;
        self.done.complete();
        Ok(())
    }
}
