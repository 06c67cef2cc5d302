// SPDX-License-Identifier: GPL-2.0 OR MIT

//! The SPSC queues of the virtio-msg AMP PCI device, for userspace.
//!
//! Compiles the kernel's own `drivers/virtio/virtio_msg_amp_pci/spsc.rs` (pure `core`), so that the
//! device emulator runs the queue logic the driver runs, and cargo tests it.

#![no_std]
#![forbid(unsafe_code)]

#[path = "../../../../drivers/virtio/virtio_msg_amp_pci/spsc.rs"]
mod spsc;

pub use spsc::*;
