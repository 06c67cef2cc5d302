// SPDX-License-Identifier: GPL-2.0 OR MIT

//! The virtio-msg AMP PCI device (PCI 10ee:9039) outside QEMU: a vfio-user server that a stock
//! QEMU (10.1 or later, `-device vfio-user-pci`) plugs into its guest as a PCI function.
//!
//! - [`pci`]: configuration space and BAR layout;
//! - [`shm`]: BAR1, the FIFO queues, shared with the guest through a memfd;
//! - [`server`]: the vfio-user requests (BAR accesses, MSI-X eventfds, guest memory maps);
//! - [`worker`]: one thread per FIFO running the SPSC queues ([`queues`]) and the virtio-msg
//!   bus of the device crate, with the tokens of what it sends set as [`tokens`] says;
//! - [`faults`]: what `--fault` makes go wrong, for tests that prove the driver copes, and
//!   [`control`], the pipe that switches faults while the guest runs;
//! - [`backends`], [`cli`], [`logger`]: the program around them.
//!
//! The split between the vfio-user thread and the workers keeps every guest-visible reaction
//! off the protocol thread: QEMU blocks on each trapped access until the server answers.

pub mod backends;
pub mod cli;
pub mod control;
pub mod faults;
pub mod logger;
pub mod pci;
pub mod queues;
pub mod server;
pub mod shm;
pub mod tokens;
pub mod worker;
