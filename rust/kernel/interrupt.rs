// SPDX-License-Identifier: GPL-2.0

//! Local interrupt disabling, counted.
//!
//! C header: [`include/linux/interrupt_rc.h`](srctree/include/linux/interrupt_rc.h)
//!
//! `local_irq_save()` and `local_irq_restore()` must pair up strictly inside out, which Rust
//! values do not: guards can be dropped in any order. [`local_interrupt_disable`] disables
//! interrupts on the local CPU and counts the sections open on it; the last one to close, in
//! whatever order they close, restores the interrupt state the first one found.
//!
//! On PREEMPT_RT, interrupt handlers run in threads and [`SpinLockIrq`](crate::sync::SpinLockIrq)
//! is a sleeping lock, so a section leaves interrupts enabled there (as `spin_lock_irq()` does):
//! it only keeps the task on its CPU.

use crate::{bindings, types::NotThreadSafe};
use core::ptr::NonNull;

/// Interrupts are disabled on the local CPU for as long as this token lives (on PREEMPT_RT: the
/// task stays on its CPU, see the [module docs](self)).
///
/// Owned, from [`local_interrupt_disable`], it keeps them disabled until it is dropped; borrowed,
/// from [`LocalInterruptDisabled::assume_disabled`], it is a proof that they are, for code that
/// already runs with them disabled (a hard interrupt handler). Locks that interrupt handlers
/// take ([`SpinLockIrq`](crate::sync::SpinLockIrq)) are taken cheaply with it:
/// [`SpinLockIrq::lock_with`](crate::sync::SpinLockIrq::lock_with).
///
/// Neither [`Send`] nor [`Sync`]: interrupts are disabled on one CPU, the one whose context
/// created it.
///
/// # Invariants
///
/// Interrupts are disabled on the local CPU while the token exists (on PREEMPT_RT, an owned token
/// keeps the task on its CPU instead); an owned token holds one section of
/// `local_interrupt_disable()` open.
pub struct LocalInterruptDisabled(NotThreadSafe);

/// Disables interrupts on the local CPU until the returned token is dropped, in any order with
/// respect to the other tokens and [`SpinLockIrq`](crate::sync::SpinLockIrq) guards of the CPU.
///
/// # Examples
///
/// ```
/// use kernel::interrupt::local_interrupt_disable;
///
/// // SAFETY: Reading the interrupt state has no preconditions.
/// let disabled = || unsafe { kernel::bindings::irqs_disabled() };
/// let first = local_interrupt_disable();
/// let second = local_interrupt_disable();
/// drop(first);
/// // On PREEMPT_RT a section leaves interrupts enabled.
/// assert!(disabled() || cfg!(CONFIG_PREEMPT_RT));
/// drop(second);
/// ```
#[inline]
pub fn local_interrupt_disable() -> LocalInterruptDisabled {
    // SAFETY: Allowed in every context but NMI, where Rust code does not run; the section is
    // closed by the token's drop.
    unsafe { bindings::local_interrupt_disable() };
    // INVARIANT: The section was opened above, with interrupts disabled (or, on PREEMPT_RT,
    // migration).
    LocalInterruptDisabled(NotThreadSafe)
}

impl Drop for LocalInterruptDisabled {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: By the type invariants, an owned token holds a section open, on this CPU as the
        // token does not leave its context.
        unsafe { bindings::local_interrupt_enable() };
    }
}

impl LocalInterruptDisabled {
    /// A token for code that runs with interrupts disabled already.
    ///
    /// # Safety
    ///
    /// Interrupts must be disabled on the local CPU, and stay disabled for `'a`. On PREEMPT_RT,
    /// where [`SpinLockIrq`](crate::sync::SpinLockIrq) sleeps, the token must not be used to
    /// take one ([`SpinLockIrq::lock_with`](crate::sync::SpinLockIrq::lock_with)): no lock that
    /// sleeps can be taken with interrupts disabled, as with `spin_lock()` in C.
    #[inline]
    pub unsafe fn assume_disabled<'a>() -> &'a LocalInterruptDisabled {
        // SAFETY: Reading the interrupt state has no preconditions.
        debug_assert!(unsafe { bindings::irqs_disabled() });
        // SAFETY: `Self` is a zero-sized type, for which any aligned non-null pointer is valid.
        // INVARIANT: The caller guarantees interrupts are disabled for `'a`; the reference is not
        // dropped, so it closes no section.
        unsafe { NonNull::dangling().as_ref() }
    }
}
