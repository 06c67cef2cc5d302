// SPDX-License-Identifier: GPL-2.0 OR MIT

//! The SPSC queues of the virtio-msg AMP PCI device and the layout of its BAR1, for userspace.
//!
//! Compiles the kernel's own `drivers/virtio/virtio_msg_amp_pci/spsc.rs` and `layout.rs` (pure
//! `core`), so that the device emulator runs the queue logic the driver runs and lays out BAR1
//! where the driver looks, and cargo tests them.

#![no_std]
#![forbid(unsafe_code)]

#[path = "../../../../drivers/virtio/virtio_msg_amp_pci/spsc.rs"]
mod spsc;

pub use spsc::*;

/// The layout of BAR1: FIFO windows and the queues in them.
#[path = "../../../../drivers/virtio/virtio_msg_amp_pci/layout.rs"]
pub mod layout;
