// SPDX-License-Identifier: GPL-2.0

//! A spinlock that disables interrupts on the local CPU while held.
//!
//! The Rust counterpart of `spin_lock_irqsave()`/`spin_unlock_irqrestore()`, for data shared
//! with a hard interrupt handler: a [`SpinLock`](super::spinlock::SpinLock) taken in process
//! context with interrupts enabled would deadlock as soon as the handler ran on the same CPU
//! and tried to take it. The interrupt state is saved when the lock is taken and restored when
//! the guard is dropped, so it may be taken in any context, with interrupts enabled or not.

use crate::bindings;
use crate::ffi::c_ulong;

/// Creates a [`SpinLockIrqSave`] initialiser with the given name and a newly-created lock
/// class.
///
/// It uses the name if one is given, otherwise it generates one based on the file name and
/// line number.
#[macro_export]
macro_rules! new_spinlock_irqsave {
    ($inner:expr $(, $name:literal)? $(,)?) => {
        $crate::sync::SpinLockIrqSave::new(
            $inner, $crate::optional_name!($($name)?), $crate::static_lock_class!())
    };
}
pub use new_spinlock_irqsave;

/// A spinlock that keeps interrupts disabled on the local CPU while it is held.
///
/// Exposes the kernel's [`spinlock_t`] taken with `spin_lock_irqsave()`. Use it for data that a
/// hard interrupt handler shares with other contexts.
///
/// # Examples
///
/// ```
/// use kernel::sync::{new_spinlock_irqsave, Arc, SpinLockIrqSave};
///
/// let events = Arc::pin_init(new_spinlock_irqsave!(0u64), GFP_KERNEL)?;
/// // In the interrupt handler and elsewhere alike:
/// *events.lock() += 1;
/// assert_eq!(*events.lock(), 1);
/// # Ok::<(), Error>(())
/// ```
///
/// [`spinlock_t`]: srctree/include/linux/spinlock.h
pub type SpinLockIrqSave<T> = super::Lock<T, SpinLockIrqSaveBackend>;

/// A kernel `spinlock_t` lock backend that saves and disables interrupts while it is held.
pub struct SpinLockIrqSaveBackend;

/// A [`Guard`](super::Guard) acquired from locking a [`SpinLockIrqSave`].
pub type SpinLockIrqSaveGuard<'a, T> = super::Guard<'a, T, SpinLockIrqSaveBackend>;

// SAFETY: The underlying kernel `spinlock_t` object ensures mutual exclusion. `relock` uses the
// default implementation that always calls the same locking method.
unsafe impl super::Backend for SpinLockIrqSaveBackend {
    type State = bindings::spinlock_t;
    /// The interrupt flags saved when the lock was taken.
    type GuardState = c_ulong;

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
        // SAFETY: Saving and disabling interrupts is allowed in every context.
        let flags = unsafe { bindings::local_irq_save() };
        // SAFETY: The safety requirements of this function ensure that `ptr` points to valid
        // memory, and that it has been initialised before.
        unsafe { bindings::spin_lock(ptr) };
        flags
    }

    #[inline]
    unsafe fn unlock(ptr: *mut Self::State, guard_state: &Self::GuardState) {
        // SAFETY: The safety requirements of this function ensure that `ptr` is valid and that
        // the caller is the owner of the spinlock.
        unsafe { bindings::spin_unlock(ptr) };
        // SAFETY: `guard_state` holds the flags saved by `lock` (or `try_lock`) in this context.
        unsafe { bindings::local_irq_restore(*guard_state) };
    }

    #[inline]
    unsafe fn try_lock(ptr: *mut Self::State) -> Option<Self::GuardState> {
        // SAFETY: Saving and disabling interrupts is allowed in every context.
        let flags = unsafe { bindings::local_irq_save() };
        // SAFETY: The safety requirements of this function ensure that `ptr` points to valid
        // memory, and that it has been initialised before.
        if unsafe { bindings::spin_trylock(ptr) } != 0 {
            Some(flags)
        } else {
            // SAFETY: `flags` were saved above, in this context.
            unsafe { bindings::local_irq_restore(flags) };
            None
        }
    }

    #[inline]
    unsafe fn assert_is_held(ptr: *mut Self::State) {
        // SAFETY: The `ptr` pointer is guaranteed to be valid and initialized before use.
        unsafe { bindings::spin_assert_is_held(ptr) }
    }
}

/// Runs `f` with interrupts disabled on the local CPU (`local_irq_save()`), and restores them
/// as they were.
///
/// For a short section that must not be interrupted or preempted between two steps, when no
/// lock is needed: another context on the same CPU cannot run in between.
///
/// # Examples
///
/// ```
/// use kernel::sync::lock::spinlock_irqsave::with_local_irqs_disabled;
///
/// // SAFETY: Reading the interrupt state has no preconditions.
/// let disabled = with_local_irqs_disabled(|| unsafe { kernel::bindings::irqs_disabled() });
/// assert!(disabled);
/// ```
pub fn with_local_irqs_disabled<R>(f: impl FnOnce() -> R) -> R {
    // SAFETY: Saving and disabling interrupts is allowed in every context.
    let flags = unsafe { bindings::local_irq_save() };
    let r = f();
    // SAFETY: `flags` were saved above, in this context.
    unsafe { bindings::local_irq_restore(flags) };
    r
}
