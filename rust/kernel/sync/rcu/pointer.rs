// SPDX-License-Identifier: GPL-2.0

//! A pointer that readers follow under RCU and writers replace.
//!
//! The Rust form of a pointer published with `rcu_assign_pointer()`, read with
//! `rcu_dereference()` and freed after `synchronize_rcu()`: for data that is read far more
//! often than it changes, by readers that must not take a lock (interrupt handlers on a hot
//! path), and whose writers may sleep.
//!
//! C header: [`include/linux/rcupdate.h`](srctree/include/linux/rcupdate.h)

use crate::{
    bindings,
    ffi::c_void,
    sync::atomic::{Acquire, Atomic, Full, Relaxed},
    types::ForeignOwnable,
};
use core::{marker::PhantomData, ptr};

use super::Guard;

/// An owned `P`, or nothing, that readers borrow under RCU and writers replace.
///
/// Readers ([`RcuPointer::get`]) take no lock and never wait: they borrow the value for as
/// long as they hold an RCU read-side [`Guard`]. Writers ([`RcuPointer::replace`]) swap in
/// the new value at once and get the old one back after an RCU grace period, so they sleep;
/// concurrent writers need no lock among themselves (each gets back what it took out).
///
/// # Examples
///
/// ```
/// use kernel::sync::{rcu::{self, RcuPointer}, Arc};
///
/// let slot = RcuPointer::new(Some(Arc::new(1u32, GFP_KERNEL)?));
/// {
///     let guard = rcu::read_lock();
///     assert_eq!(slot.get(&guard).map(|v| *v), Some(1));
/// }
/// // The old value comes back once no reader can see it any more.
/// let old = slot.replace(Some(Arc::new(2u32, GFP_KERNEL)?));
/// assert_eq!(old.map(|v| *v), Some(1));
/// assert_eq!(slot.get(&rcu::read_lock()).map(|v| *v), Some(2));
/// assert!(slot.replace(None).is_some());
/// assert!(slot.get(&rcu::read_lock()).is_none());
/// # Ok::<(), Error>(())
/// ```
///
/// # Invariants
///
/// `ptr` is null or a pointer returned by `P::into_foreign`, whose value this owns; a value
/// taken out by [`RcuPointer::replace`] is given back (with `P::from_foreign`) only after an
/// RCU grace period that began after it was taken out.
pub struct RcuPointer<P: ForeignOwnable> {
    ptr: Atomic<*mut c_void>,
    _owns: PhantomData<P>,
}

// SAFETY: The value is handed to readers on any CPU (as `P::Borrowed`, hence `Sync`) and given
// back to, or dropped by, whichever thread replaces it (hence `Send`).
unsafe impl<P: ForeignOwnable + Send + Sync> Send for RcuPointer<P> {}

// SAFETY: As for `Send`: shared, it lends the value to readers and lets writers take it.
unsafe impl<P: ForeignOwnable + Send + Sync> Sync for RcuPointer<P> {}

fn into_raw<P: ForeignOwnable>(value: Option<P>) -> *mut c_void {
    value.map_or(ptr::null_mut(), P::into_foreign)
}

impl<P: ForeignOwnable> RcuPointer<P> {
    /// A pointer to `value`.
    pub fn new(value: Option<P>) -> Self {
        // INVARIANT: Null, or from `into_foreign`.
        Self {
            ptr: Atomic::new(into_raw(value)),
            _owns: PhantomData,
        }
    }

    /// The current value, borrowed while `guard` is held (`rcu_dereference()`).
    #[inline]
    pub fn get<'a>(&'a self, _guard: &'a Guard) -> Option<P::Borrowed<'a>> {
        // Acquire: pairs with the exchange in `replace`, so that what the writer initialised
        // before publishing the value is seen.
        let ptr = self.ptr.load(Acquire);
        if ptr.is_null() {
            return None;
        }
        // SAFETY: By the type invariant `ptr` came from `into_foreign` and is owned by `self`
        // or by a `replace` in progress, which gives it back only after a grace period that
        // began after it took it out: the RCU read-side critical section of `guard`, held for
        // `'a`, began before, so that grace period cannot end before `'a` does. Nobody gets
        // the value back meanwhile.
        Some(unsafe { P::borrow(ptr) })
    }

    /// Replaces the value with `value`, and returns the old one once no reader can still be
    /// borrowing it (after `synchronize_rcu()`: sleeps, unless there was none).
    pub fn replace(&self, value: Option<P>) -> Option<P> {
        // Full: the new value's initialisation is ordered before its publication (release),
        // and the old one is taken out before it is given back (acquire).
        let old = self.ptr.xchg(into_raw(value), Full);
        if old.is_null() {
            return None;
        }
        // SAFETY: An FFI call; this function is documented to sleep.
        unsafe { bindings::synchronize_rcu() };
        // SAFETY: By the type invariant `old` came from `into_foreign`; the exchange took it
        // out, so nothing else gives it back, and every reader that could see it has left its
        // RCU read-side critical section.
        Some(unsafe { P::from_foreign(old) })
    }
}

impl<P: ForeignOwnable> Drop for RcuPointer<P> {
    fn drop(&mut self) {
        let ptr = self.ptr.load(Relaxed);
        if !ptr.is_null() {
            // SAFETY: By the type invariant `ptr` came from `into_foreign` and is owned by
            // `self`; no reader borrows it, as borrows last at most as long as `&self`.
            drop(unsafe { P::from_foreign(ptr) });
        }
    }
}
