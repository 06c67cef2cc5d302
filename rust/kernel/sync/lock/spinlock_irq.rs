// SPDX-License-Identifier: GPL-2.0

//! A spinlock that keeps interrupts disabled on the local CPU while it is held.
//!
//! C header: [`include/linux/interrupt_rc.h`](srctree/include/linux/interrupt_rc.h)
//!
//! For data shared with a hard interrupt handler: a [`SpinLock`](super::spinlock::SpinLock)
//! taken in process context with interrupts enabled deadlocks as soon as the handler runs on the
//! same CPU and tries to take it. The guard keeps no saved interrupt state: taking the lock opens
//! a counted section of [`local_interrupt_disable`](crate::interrupt::local_interrupt_disable),
//! dropping the guard closes it, so guards of several such locks (and tokens) may be dropped in
//! any order and interrupts come back on only when the last one goes.
//!
//! On PREEMPT_RT, as `spin_lock_irq()` there, it is a sleeping lock that leaves interrupts enabled
//! (interrupt handlers run in threads): see [`interrupt`](crate::interrupt).

use super::{Guard, Lock};
use crate::{bindings, interrupt::LocalInterruptDisabled};

/// Creates a [`SpinLockIrq`] initialiser with the given name and a newly-created lock class.
///
/// It uses the name if one is given, otherwise it generates one based on the file name and
/// line number.
#[macro_export]
macro_rules! new_spinlock_irq {
    ($inner:expr $(, $name:literal)? $(,)?) => {
        $crate::sync::SpinLockIrq::new(
            $inner, $crate::optional_name!($($name)?), $crate::static_lock_class!())
    };
}
pub use new_spinlock_irq;

/// A spinlock that keeps interrupts disabled on the local CPU while it is held.
///
/// Exposes the kernel's [`spinlock_t`], taken with `spin_lock_irq_disable()`. Use it for data
/// that a hard interrupt handler shares with other contexts. Code that already holds a
/// [`LocalInterruptDisabled`] token (the handler itself) takes it with
/// [`SpinLockIrq::lock_with`], which leaves the interrupt state alone.
///
/// # Examples
///
/// Guards dropped in any order:
///
/// ```
/// use kernel::sync::{new_spinlock_irq, SpinLockIrq};
///
/// let a = KBox::pin_init(new_spinlock_irq!(0u32), GFP_KERNEL)?;
/// let b = KBox::pin_init(new_spinlock_irq!(0u32), GFP_KERNEL)?;
/// let mut first = a.lock();
/// let mut second = b.lock();
/// *first += 1;
/// drop(first);
/// // Interrupts are still disabled: `second` holds its own section.
/// *second += 1;
/// drop(second);
/// # Ok::<(), Error>(())
/// ```
///
/// With a token:
///
/// ```
/// use kernel::interrupt::{local_interrupt_disable, LocalInterruptDisabled};
/// use kernel::sync::{new_spinlock_irq, SpinLockIrq};
///
/// fn count(events: &SpinLockIrq<u64>, irq: &LocalInterruptDisabled) {
///     *events.lock_with(irq) += 1;
/// }
///
/// let events = KBox::pin_init(new_spinlock_irq!(0u64), GFP_KERNEL)?;
/// let irq = local_interrupt_disable();
/// count(&events, &irq);
/// count(&events, &irq);
/// drop(irq);
/// assert_eq!(*events.lock(), 2);
/// # Ok::<(), Error>(())
/// ```
///
/// [`spinlock_t`]: srctree/include/linux/spinlock.h
pub type SpinLockIrq<T> = Lock<T, SpinLockIrqBackend>;

/// A kernel `spinlock_t` lock backend whose lock is held in a counted interrupt-disabled section.
pub struct SpinLockIrqBackend;

/// A [`Guard`] acquired from locking a [`SpinLockIrq`].
pub type SpinLockIrqGuard<'a, T> = Guard<'a, T, SpinLockIrqBackend>;

// SAFETY: The underlying kernel `spinlock_t` object ensures mutual exclusion. `relock` takes the
// lock the way the guard had taken it (with or without a section of its own), as `unlock` released
// it.
unsafe impl super::Backend for SpinLockIrqBackend {
    type State = bindings::spinlock_t;
    /// Whether the guard holds a section of its own (taken by `lock`, not `lock_with`).
    type GuardState = bool;

    #[inline]
    unsafe fn init(
        ptr: *mut Self::State,
        name: *const crate::ffi::c_char,
        key: *mut bindings::lock_class_key,
    ) {
        // SAFETY: The safety requirements ensure that `ptr` is valid for writes, and `name` and
        // `key` are valid for read indefinitely.
        unsafe { bindings::__spin_lock_init(ptr, name, key) }
    }

    #[inline]
    unsafe fn lock(ptr: *mut Self::State) -> Self::GuardState {
        // SAFETY: The safety requirements of this function ensure that `ptr` points to valid
        // memory, and that it has been initialised before.
        unsafe { bindings::spin_lock_irq_disable(ptr) };
        true
    }

    #[inline]
    unsafe fn unlock(ptr: *mut Self::State, guard_state: &Self::GuardState) {
        if *guard_state {
            // SAFETY: The safety requirements of this function ensure that `ptr` is valid and that
            // the caller is the owner of the lock, taken by `spin_lock_irq_disable()`.
            unsafe { bindings::spin_unlock_irq_enable(ptr) }
        } else {
            // SAFETY: As above; the lock was taken by `spin_lock()` in the section of a token that
            // outlives the guard.
            unsafe { bindings::spin_unlock(ptr) }
        }
    }

    #[inline]
    unsafe fn try_lock(ptr: *mut Self::State) -> Option<Self::GuardState> {
        // SAFETY: The safety requirements of this function ensure that `ptr` points to valid
        // memory, and that it has been initialised before.
        (unsafe { bindings::spin_trylock_irq_disable(ptr) } != 0).then_some(true)
    }

    #[inline]
    unsafe fn relock(ptr: *mut Self::State, guard_state: &mut Self::GuardState) {
        if *guard_state {
            // SAFETY: The safety requirements of this function ensure that `ptr` is valid and
            // initialised.
            unsafe { bindings::spin_lock_irq_disable(ptr) }
        } else {
            // SAFETY: As above; the token the lock was taken with outlives the guard.
            unsafe { bindings::spin_lock(ptr) }
        }
    }

    #[inline]
    unsafe fn assert_is_held(ptr: *mut Self::State) {
        // SAFETY: The `ptr` pointer is guaranteed to be valid and initialized before use.
        unsafe { bindings::spin_assert_is_held(ptr) }
    }
}

impl<T: ?Sized> Lock<T, SpinLockIrqBackend> {
    /// Takes the lock in the interrupt-disabled section `irq` already holds, without opening
    /// another: the guard cannot outlive the token.
    #[inline]
    pub fn lock_with<'a>(&'a self, irq: &'a LocalInterruptDisabled) -> SpinLockIrqGuard<'a, T> {
        let _ = irq;
        // SAFETY: The lock was initialised by `Lock::new`; interrupts are disabled for as long as
        // `irq` lives, which the guard cannot outlive.
        unsafe { bindings::spin_lock(self.state.get()) };
        // SAFETY: The lock was just taken; `false` makes the guard release it with `spin_unlock()`,
        // leaving the section to `irq`.
        unsafe { Guard::new(self, false) }
    }
}

// On PREEMPT_RT a section leaves interrupts enabled (see `interrupt_rc.h`): what these check
// is the behaviour of every other configuration.
#[cfg(not(CONFIG_PREEMPT_RT))]
#[macros::kunit_tests(rust_kernel_spinlock_irq)]
mod tests {
    use super::*;
    use crate::{interrupt::local_interrupt_disable, prelude::*};

    fn irqs_disabled() -> bool {
        // SAFETY: Reading the interrupt state has no preconditions.
        unsafe { bindings::irqs_disabled() }
    }

    #[test]
    fn guards_dropped_out_of_order_keep_interrupts_disabled() -> Result {
        let a = KBox::pin_init(new_spinlock_irq!(0u32), GFP_KERNEL)?;
        let b = KBox::pin_init(new_spinlock_irq!(0u32), GFP_KERNEL)?;
        assert!(!irqs_disabled());
        let first = a.lock();
        let second = b.lock();
        drop(first);
        assert!(irqs_disabled());
        drop(second);
        assert!(!irqs_disabled());
        Ok(())
    }

    #[test]
    fn a_token_dropped_before_a_guard_keeps_interrupts_disabled() -> Result {
        let a = KBox::pin_init(new_spinlock_irq!(0u32), GFP_KERNEL)?;
        let irq = local_interrupt_disable();
        let guard = a.lock();
        drop(irq);
        assert!(irqs_disabled());
        drop(guard);
        assert!(!irqs_disabled());
        Ok(())
    }

    #[test]
    fn lock_with_leaves_the_section_to_the_token() -> Result {
        let a = KBox::pin_init(new_spinlock_irq!(0u32), GFP_KERNEL)?;
        let irq = local_interrupt_disable();
        {
            let mut guard = a.lock_with(&irq);
            *guard += 1;
        }
        assert!(irqs_disabled());
        drop(irq);
        assert!(!irqs_disabled());
        assert_eq!(*a.lock(), 1);
        Ok(())
    }

    #[test]
    fn a_section_restores_the_state_it_found() {
        // SAFETY: Saved and restored below, in this context.
        let flags = unsafe { bindings::local_irq_save() };
        drop(local_interrupt_disable());
        assert!(irqs_disabled());
        // SAFETY: `flags` were saved above, in this context.
        unsafe { bindings::local_irq_restore(flags) };
        assert!(!irqs_disabled());
    }

    #[test]
    fn a_failed_try_lock_leaves_no_section_open() -> Result {
        let a = KBox::pin_init(new_spinlock_irq!(0u32), GFP_KERNEL)?;
        let held = a.lock();
        assert!(a.try_lock().is_none());
        drop(held);
        assert!(!irqs_disabled());
        assert!(a.try_lock().is_some());
        Ok(())
    }
}
