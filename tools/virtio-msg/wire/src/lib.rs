// SPDX-License-Identifier: GPL-2.0 OR MIT

//! The virtio-msg wire format for userspace.
//!
//! The codec is not written here: this crate compiles the kernel's own
//! `rust/kernel/virtio/msg/wire.rs` (pure `core`), so the device emulator
//! and the tests use byte for byte the code the drivers run, and the cargo
//! tests, property tests and fuzzing of this crate exercise it.

#![no_std]
#![forbid(unsafe_code)]

#[path = "../../../../rust/kernel/virtio/msg/wire.rs"]
mod wire;

pub use wire::*;

/// The known-answer vectors shared with the KUnit suite `virtio_msg_wire`.
#[path = "../../../../drivers/virtio/virtio_msg/wire_vectors.rs"]
pub mod wire_vectors;

/// Reader of the device model recordings, shared with the KUnit replay suites.
#[path = "../../../../rust/kernel/virtio/msg/recording.rs"]
pub mod recording;
