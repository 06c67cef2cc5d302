// SPDX-License-Identifier: GPL-2.0

//! Where the FIFOs are: the layout of BAR1 and how many FIFOs a device has.
//!
//! The device does not report its number of FIFOs anywhere. It shows in two places: BAR1 holds
//! 16 KiB per FIFO (rounded up to a power of two, as every BAR size is), and the MSI-X table
//! has one vector per FIFO. This file turns those into a validated FIFO count; the driver then
//! uses every FIFO it counted.
//!
//! Like `spsc.rs`, it uses `core` only: the device emulator (`tools/virtio-msg`) lays out its
//! BAR1 with these same constants.

/// Bytes of BAR1 per FIFO.
pub const FIFO_WINDOW: u64 = 16 * 1024;
/// Offset of a FIFO's driver queue (driver to device) within its window.
pub const DRIVER_QUEUE: usize = 0x1000;
/// Offset of a FIFO's device queue (device to driver) within its window.
pub const DEVICE_QUEUE: usize = 0x2000;
/// Most FIFOs one device has.
pub const MAX_FIFOS: u32 = 8;
/// Largest message, header included: the device model copies 48 bytes of each slot.
pub const MAX_MSG_SIZE: usize = 48;

/// Why a device's BAR1 cannot hold FIFOs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayoutError {
    /// BAR1 is smaller than one FIFO window.
    TooSmall,
    /// BAR1 is not a whole number of FIFO windows.
    Unaligned,
}

/// FIFOs whose windows fit in a BAR1 of `len` bytes (at most [`MAX_FIFOS`]).
pub fn fifos_in_bar(len: u64) -> Result<u32, LayoutError> {
    if len < FIFO_WINDOW {
        return Err(LayoutError::TooSmall);
    }
    if len % FIFO_WINDOW != 0 {
        return Err(LayoutError::Unaligned);
    }
    Ok(u32::try_from(len / FIFO_WINDOW)
        .unwrap_or(u32::MAX)
        .min(MAX_FIFOS))
}

/// Offset in BAR1 of queue `queue` ([`DRIVER_QUEUE`] or [`DEVICE_QUEUE`]) of FIFO `fifo`.
pub const fn queue_offset(fifo: u32, queue: usize) -> usize {
    fifo as usize * FIFO_WINDOW as usize + queue
}
