// SPDX-License-Identifier: GPL-2.0

//! The device side of a virtio split ring, served in the kernel.
//!
//! A device emulated in the kernel (a loopback bus, a simulator) reads the buffers a virtio
//! driver makes available and returns them used. `vringh` does that in C for vhost and vDPA
//! simulators; this module wraps its IOTLB flavour, in which every address the ring holds
//! (the ring's own three areas and the buffers its descriptors name) is translated through a
//! table before it is touched, and never dereferenced as a pointer.
//!
//! The table here maps every address to the same physical address: it serves a driver whose
//! DMA addresses are physical addresses (a device without an IOMMU). Which memory that is,
//! is the driver's to say; hence [`Vringh::new`] is `unsafe`.
//!
//! C header: [`include/linux/vringh.h`](srctree/include/linux/vringh.h)

use crate::{
    alloc::Flags,
    bindings,
    error::{to_result, Result},
    prelude::*,
    types::Opaque,
};
use core::ptr::NonNull;

/// Buffers of a chain described without an allocation, each way; `vringh` allocates for
/// longer chains (and [`Vringh`] frees that when dropped).
const INLINE_BUFFERS: usize = 8;

/// The C state, at an address that does not change: `vringh` keeps pointers to the lock and
/// the buffer arrays.
struct Inner {
    vrh: Opaque<bindings::vringh>,
    iotlb_lock: Opaque<bindings::spinlock_t>,
    riov: Opaque<bindings::vringh_kiov>,
    wiov: Opaque<bindings::vringh_kiov>,
    rvec: Opaque<[bindings::kvec; INLINE_BUFFERS]>,
    wvec: Opaque<[bindings::kvec; INLINE_BUFFERS]>,
}

/// The device side of one split virtqueue.
///
/// # Invariants
///
/// `inner.vrh` is initialised for the ring given to [`Vringh::new`] and translates through
/// `iotlb`, which maps every address to the same physical address and which this owns;
/// `inner.riov` and `inner.wiov` are initialised on `inner.rvec` and `inner.wvec`.
pub struct Vringh {
    inner: KBox<Inner>,
    iotlb: NonNull<bindings::vhost_iotlb>,
}

// SAFETY: The ring state and its table are owned by this value and used by one thread at a
// time (every method takes `&mut self`); `vringh` has no ties to the thread that set it up.
unsafe impl Send for Vringh {}

impl Vringh {
    /// Serves the split ring of `num` entries (a power of two) whose descriptor table, driver
    /// area and device area are at `desc`, `avail` and `used`, for a driver that negotiated
    /// `features` (`VIRTIO_F_VERSION_1` makes it little-endian).
    ///
    /// # Safety
    ///
    /// For as long as the returned value lives, `desc`, `avail` and `used`, and every buffer
    /// address the driver puts in the descriptor table, are physical addresses of memory the
    /// driver mapped for this device to access (what the DMA API gives for a device without
    /// an IOMMU), and stay mapped.
    pub unsafe fn new(features: u64, num: u32, desc: u64, avail: u64, used: u64) -> Result<Self> {
        // SAFETY: No preconditions. Two entries: the identity map of the whole address space
        // takes two (its size would not fit a `u64`).
        let iotlb = NonNull::new(unsafe { bindings::vhost_iotlb_alloc(2, 0) }).ok_or(ENOMEM)?;
        let this = Self {
            inner: KBox::new(
                Inner {
                    vrh: Opaque::zeroed(),
                    iotlb_lock: Opaque::zeroed(),
                    riov: Opaque::zeroed(),
                    wiov: Opaque::zeroed(),
                    rvec: Opaque::zeroed(),
                    wvec: Opaque::zeroed(),
                },
                GFP_KERNEL,
            )
            .inspect_err(|_| {
                // SAFETY: Allocated above and not used since.
                unsafe { bindings::vhost_iotlb_free(iotlb.as_ptr()) }
            })?,
            iotlb,
        };
        let inner = &this.inner;
        // SAFETY: `iotlb` is valid; the whole address space maps to itself, readable and
        // writable (the caller guarantees which addresses the ring will use).
        to_result(unsafe {
            bindings::vhost_iotlb_add_range(iotlb.as_ptr(), 0, u64::MAX, 0, bindings::VHOST_MAP_RW)
        })?;
        // SAFETY: The lock and the two buffer arrays live in `inner`, which does not move and
        // outlives every use `vringh` makes of them (it is freed after the ring, in `drop`).
        unsafe {
            bindings::__spin_lock_init(
                inner.iotlb_lock.get(),
                c"vringh_iotlb".as_char_ptr(),
                crate::static_lock_class!().as_ptr(),
            );
            bindings::vringh_kiov_init(
                inner.riov.get(),
                inner.rvec.get().cast(),
                INLINE_BUFFERS as u32,
            );
            bindings::vringh_kiov_init(
                inner.wiov.get(),
                inner.wvec.get().cast(),
                INLINE_BUFFERS as u32,
            );
        }
        // SAFETY: `vrh` is ours; the three areas are addresses for the table, not pointers
        // (the IOTLB flavour translates them before every access); the caller guarantees
        // what they name. Weak barriers: driver and device are CPUs of one machine.
        to_result(unsafe {
            bindings::vringh_init_iotlb(
                inner.vrh.get(),
                features,
                num,
                true,
                desc as usize as *mut bindings::vring_desc,
                avail as usize as *mut bindings::vring_avail,
                used as usize as *mut bindings::vring_used,
            )
        })?;
        // SAFETY: `vrh` is initialised; the table and the lock outlive it (see `drop`).
        unsafe {
            bindings::vringh_set_iotlb(inner.vrh.get(), iotlb.as_ptr(), inner.iotlb_lock.get())
        };
        Ok(this)
    }

    /// The next available descriptor chain, if the driver made one available. Allocates with
    /// `flags` only for a chain of more than eight buffers in one direction.
    ///
    /// A chain dropped without [`Chain::complete`] is never returned to the driver, as with a
    /// device that stopped.
    pub fn next(&mut self, flags: Flags) -> Result<Option<Chain<'_>>> {
        let mut head = 0u16;
        let inner = &self.inner;
        // SAFETY: By the type invariants `vrh`, `riov` and `wiov` are initialised; `&mut self`
        // makes this the only user.
        let ret = unsafe {
            bindings::vringh_getdesc_iotlb(
                inner.vrh.get(),
                inner.riov.get(),
                inner.wiov.get(),
                &mut head,
                flags.as_raw(),
            )
        };
        to_result(ret)?;
        Ok((ret > 0).then_some(Chain { ring: self, head }))
    }

    /// Whether the driver wants to hear of the buffers completed since the last call.
    pub fn need_notify(&mut self) -> Result<bool> {
        // SAFETY: `vrh` is initialised (type invariants), and only used here.
        let ret = unsafe { bindings::vringh_need_notify_iotlb(self.inner.vrh.get()) };
        to_result(ret)?;
        Ok(ret > 0)
    }
}

impl Drop for Vringh {
    fn drop(&mut self) {
        // SAFETY: Initialised in `new` (type invariants); frees what `vringh` allocated for
        // long chains, if anything. The table goes last: nothing translates after this.
        unsafe {
            bindings::vringh_kiov_cleanup(self.inner.riov.get());
            bindings::vringh_kiov_cleanup(self.inner.wiov.get());
            bindings::vhost_iotlb_free(self.iotlb.as_ptr());
        }
    }
}

/// A descriptor chain the driver made available: device-readable buffers, then
/// device-writable ones, each read or written in order.
pub struct Chain<'a> {
    ring: &'a mut Vringh,
    head: u16,
}

impl Chain<'_> {
    /// Bytes of the device-readable buffers not read yet.
    pub fn readable(&self) -> usize {
        // SAFETY: `riov` is initialised and describes this chain (type invariants of `Vringh`).
        unsafe { bindings::vringh_kiov_length(self.ring.inner.riov.get()) }
    }

    /// Bytes of the device-writable buffers not written yet.
    pub fn writable(&self) -> usize {
        // SAFETY: As above, for `wiov`.
        unsafe { bindings::vringh_kiov_length(self.ring.inner.wiov.get()) }
    }

    /// Copies the next `dst.len()` readable bytes, or as many as are left; returns how many.
    pub fn read(&mut self, dst: &mut [u8]) -> Result<usize> {
        let inner = &self.ring.inner;
        // SAFETY: `vrh` and `riov` are initialised (type invariants); `dst` is valid for
        // writes of its length.
        let n = unsafe {
            bindings::vringh_iov_pull_iotlb(
                inner.vrh.get(),
                inner.riov.get(),
                dst.as_mut_ptr().cast(),
                dst.len(),
            )
        };
        usize::try_from(n).map_err(|_| Error::from_errno(n as i32))
    }

    /// Copies `src` to the next writable bytes, or as much of it as fits; returns how much.
    pub fn write(&mut self, src: &[u8]) -> Result<usize> {
        let inner = &self.ring.inner;
        // SAFETY: `vrh` and `wiov` are initialised (type invariants); `src` is valid for reads
        // of its length.
        let n = unsafe {
            bindings::vringh_iov_push_iotlb(
                inner.vrh.get(),
                inner.wiov.get(),
                src.as_ptr().cast(),
                src.len(),
            )
        };
        usize::try_from(n).map_err(|_| Error::from_errno(n as i32))
    }

    /// Leaves the next `len` writable bytes (or as many as are left) as they are: the device
    /// writes what follows them, such as a status after a data buffer it did not fill.
    pub fn skip_writable(&mut self, len: usize) {
        // SAFETY: `wiov` is initialised (type invariants of `Vringh`); advancing stops at its
        // end.
        unsafe { bindings::vringh_kiov_advance(self.ring.inner.wiov.get(), len) }
    }

    /// Returns the chain to the driver, saying that the device wrote `written` bytes.
    pub fn complete(self, written: u32) -> Result {
        // SAFETY: `vrh` is initialised (type invariants); `head` came from it.
        to_result(unsafe {
            bindings::vringh_complete_iotlb(self.ring.inner.vrh.get(), self.head, written)
        })
    }
}
