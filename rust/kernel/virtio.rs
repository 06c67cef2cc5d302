// SPDX-License-Identifier: GPL-2.0

//! Virtio devices, seen from the transport side.
//!
//! A virtio *transport* (virtio-pci, virtio-mmio, virtio-msg, ...) is what carries the virtio
//! operations (configuration space, status, feature negotiation, virtqueue set-up and
//! notifications) between the virtio drivers and a device. [`transport`] lets a transport be
//! written in Rust: it registers a `struct virtio_device` whose `virtio_config_ops` are the
//! methods of a [`transport::Transport`], and the unmodified virtio drivers bind to it.
//!
//! C headers: [`include/linux/virtio.h`](srctree/include/linux/virtio.h),
//! [`include/linux/virtio_config.h`](srctree/include/linux/virtio_config.h),
//! [`include/linux/virtio_ring.h`](srctree/include/linux/virtio_ring.h)

use crate::{
    bindings,
    interrupt::{local_interrupt_disable, LocalInterruptDisabled},
    types::NotThreadSafe,
};

pub mod transport;

#[cfg(CONFIG_AUXILIARY_BUS)]
pub mod msg;

/// Runs `f` the way an interrupt handler runs: with interrupts disabled and, when called from
/// process context, with bottom halves disabled around it, so that what `f` raises (a NAPI
/// poll, say) runs as soon as it returns rather than whenever `ksoftirqd` gets to it. `f` gets
/// the token of the disabled interrupts, to take interrupt-safe locks with
/// ([`SpinLockIrq::lock_with`](crate::sync::SpinLockIrq::lock_with)).
///
/// A transport delivers the device's interrupts (virtqueue callbacks, configuration changes)
/// from its hard interrupt handler, which has the token already
/// ([`LocalInterruptDisabled::assume_disabled`]); a transport or test that delivers from process
/// context (or from a threaded handler) wraps the delivery in this.
pub fn as_interrupt<R>(f: impl FnOnce(&LocalInterruptDisabled) -> R) -> R {
    // SAFETY: Reading the interrupt state has no preconditions.
    if unsafe { bindings::irqs_disabled() } {
        // SAFETY: Interrupts are disabled, and `f`, which runs as an interrupt handler runs,
        // does not enable them.
        return f(unsafe { LocalInterruptDisabled::assume_disabled() });
    }
    let bh = BottomHalvesDisabled::new();
    let irq = local_interrupt_disable();
    let result = f(&irq);
    // Interrupts first: bottom halves are enabled with interrupts enabled, as
    // `local_bh_enable()` requires.
    drop(irq);
    drop(bh);
    result
}

/// Bottom halves disabled on the local CPU (`local_bh_disable()`) until dropped.
///
/// # Invariants
///
/// Created with interrupts enabled, and dropped in the same context (the guard is neither `Send`
/// nor `Sync`) with interrupts enabled: [`as_interrupt`] restores the interrupts it disabled
/// before it drops the guard.
struct BottomHalvesDisabled(NotThreadSafe);

impl BottomHalvesDisabled {
    fn new() -> Self {
        // SAFETY: Allowed in every context; undone by `drop`, in this context.
        unsafe { bindings::local_bh_disable() };
        Self(NotThreadSafe)
    }
}

impl Drop for BottomHalvesDisabled {
    fn drop(&mut self) {
        // SAFETY: By the type invariants, bottom halves were disabled in this context, which
        // has interrupts enabled.
        unsafe { bindings::local_bh_enable() };
    }
}

/// Device status bits (virtio specification, "Device Status Field").
pub mod status {
    /// The driver has noticed the device.
    pub const ACKNOWLEDGE: u8 = bindings::VIRTIO_CONFIG_S_ACKNOWLEDGE as u8;
    /// The driver knows how to drive the device.
    pub const DRIVER: u8 = bindings::VIRTIO_CONFIG_S_DRIVER as u8;
    /// The driver is set up and ready to drive the device.
    pub const DRIVER_OK: u8 = bindings::VIRTIO_CONFIG_S_DRIVER_OK as u8;
    /// Feature negotiation is complete.
    pub const FEATURES_OK: u8 = bindings::VIRTIO_CONFIG_S_FEATURES_OK as u8;
    /// The device has hit an error it cannot recover from without a reset.
    pub const NEEDS_RESET: u8 = bindings::VIRTIO_CONFIG_S_NEEDS_RESET as u8;
    /// The driver has given up on the device.
    pub const FAILED: u8 = bindings::VIRTIO_CONFIG_S_FAILED as u8;
}

/// Feature bits the virtio core and transports deal with.
pub mod feature {
    /// First feature bit reserved for transports.
    pub const TRANSPORT_START: u32 = bindings::VIRTIO_TRANSPORT_F_START;
    /// One past the last transport feature bit.
    pub const TRANSPORT_END: u32 = bindings::VIRTIO_TRANSPORT_F_END;
    /// Compliance with version 1.0 of the specification (no legacy interface).
    pub const VERSION_1: u32 = bindings::VIRTIO_F_VERSION_1;
    /// Packed virtqueue layout.
    pub const RING_PACKED: u32 = bindings::VIRTIO_F_RING_PACKED;
    /// The driver passes extra data (the next available position) in notifications.
    pub const NOTIFICATION_DATA: u32 = bindings::VIRTIO_F_NOTIFICATION_DATA;
    /// Individual virtqueues can be reset.
    pub const RING_RESET: u32 = bindings::VIRTIO_F_RING_RESET;
}

/// A set of feature bits, as wide as the virtio core supports (128 bits in this kernel).
///
/// Transports exchange features in 32-bit blocks (virtio-msg, virtio-pci); bits past
/// [`Features::BITS`] are ignored rather than wrapped.
///
/// # Examples
///
/// ```
/// use kernel::virtio::{feature, Features};
///
/// let mut f = Features::empty();
/// f.set(feature::VERSION_1);
/// f.set(100);
/// assert!(f.has(32));
/// assert_eq!(f.block(1), 1);
/// assert_eq!(f.block(3), 1 << 4);
/// assert_eq!(f.low64(), 1 << 32);
///
/// f.set_block(3, 0xffff_0000);
/// assert!(!f.has(100));
/// assert!(f.has(127));
///
/// // Beyond what this kernel negotiates: ignored.
/// f.set(Features::BITS);
/// assert!(!f.has(Features::BITS));
/// assert_eq!(f.block(Features::blocks()), 0);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(transparent)]
pub struct Features([u64; Features::WORDS]);

impl Features {
    /// Number of 64-bit words.
    const WORDS: usize = bindings::VIRTIO_FEATURES_U64S as usize;

    /// Number of feature bits the virtio core supports.
    pub const BITS: u32 = bindings::VIRTIO_FEATURES_BITS;

    /// No features.
    pub const fn empty() -> Self {
        Self([0; Self::WORDS])
    }

    /// Whether `bit` is set; bits past [`Features::BITS`] are never set.
    pub fn has(&self, bit: u32) -> bool {
        let word = (bit / 64) as usize;
        self.0.get(word).is_some_and(|w| w & (1 << (bit % 64)) != 0)
    }

    /// Sets `bit`; bits past [`Features::BITS`] are ignored.
    pub fn set(&mut self, bit: u32) {
        if let Some(w) = self.0.get_mut((bit / 64) as usize) {
            *w |= 1 << (bit % 64);
        }
    }

    /// Clears `bit`.
    pub fn clear(&mut self, bit: u32) {
        if let Some(w) = self.0.get_mut((bit / 64) as usize) {
            *w &= !(1 << (bit % 64));
        }
    }

    /// The 32-bit block `index` (bits `32 * index` to `32 * index + 31`); 0 past the end.
    pub fn block(&self, index: usize) -> u32 {
        let word = self.0.get(index / 2).copied().unwrap_or(0);
        (word >> (32 * (index % 2))) as u32
    }

    /// Sets the 32-bit block `index`; blocks past the end are ignored.
    pub fn set_block(&mut self, index: usize, value: u32) {
        if let Some(w) = self.0.get_mut(index / 2) {
            let shift = 32 * (index % 2);
            *w = (*w & !(0xffff_ffffu64 << shift)) | (u64::from(value) << shift);
        }
    }

    /// Number of 32-bit blocks that hold [`Features::BITS`] bits.
    pub const fn blocks() -> usize {
        Self::BITS as usize / 32
    }

    /// The first 64 bits.
    pub fn low64(&self) -> u64 {
        self.0[0]
    }
}
