// SPDX-License-Identifier: GPL-2.0 OR MIT

//! The device side of virtio-msg, for the device emulator.
//!
//! [`transport::TransportDevice`] answers the transport messages of one device number on top of
//! a [`Backend`] (the virtio device proper: entropy, block, network, console);
//! [`bus::FifoBus`] answers the bus messages of one FIFO and routes transport messages to its
//! devices. Both default to [`Mode::Compat`]: the observable behaviour of the QEMU device
//! model `virtio-msg-amp-pci` (v2), quirks included, so that a driver that passes against the
//! emulator passes against what users run.
//!
//! Everything the driver sends is untrusted: messages are decoded by the shared codec, and a
//! request the device cannot serve gets no answer, exactly like the device model (whose
//! silence the driver must survive with a timeout).

pub mod blk;
pub mod bus;
pub mod console;
pub mod net;
pub mod rng;
pub mod transport;

use virtio_bindings::{virtio_config, virtio_ring};

/// How closely to follow the QEMU device model rather than the specification.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// The QEMU device model (v2), as recorded in `drivers/virtio/virtio_msg/device-model/`:
    /// 48-byte messages, silence for what it cannot parse, no GET_SHM, no SET_CONFIG
    /// generation check, EVENT_CONFIG only for a notification before DRIVER_OK, and its other
    /// quirks (see [`bus`] and [`transport`]).
    Compat,
    /// The specification: larger messages, every message answered, generations checked.
    Strict,
}

impl Mode {
    /// Largest message the device side sends or accepts.
    pub const fn max_msg_size(self) -> usize {
        match self {
            Mode::Compat => 48,
            Mode::Strict => 64,
        }
    }
}

/// A virtio device, without its transport.
pub trait Backend {
    /// virtio device id (1 network, 2 block, 3 console, 4 entropy).
    fn device_id(&self) -> u32;
    /// Features the device offers (device-specific and transport bits, VERSION_1 included).
    fn features(&self) -> u64;
    /// Size of the configuration space.
    fn config_size(&self) -> u32;
    /// Reads configuration bytes; the range is within [`Backend::config_size`].
    fn read_config(&self, offset: u32, out: &mut [u8]);
    /// Writes configuration bytes; the range is within [`Backend::config_size`].
    fn write_config(&mut self, offset: u32, data: &[u8]);
    /// Number of virtqueues.
    fn num_queues(&self) -> u32;
    /// The driver accepted `features` (FEATURES_OK was set with them), before any queue is set
    /// up. Backends whose behaviour depends on negotiated features keep them from here.
    fn set_driver_features(&mut self, _features: u64) {}
    /// The driver made buffers available in queue `index` (the device is DRIVER_OK and the
    /// queue set up); `queues` are all the virtqueues as the driver set them up (serving one
    /// queue may use buffers of another: a console answers control messages on its control
    /// receive queue). Returns the queues to send an EVENT_USED for: buffers were used and the
    /// driver wants to hear of it ([`transport::wants_used_event`]). Before it stops taking
    /// buffers from a queue, the backend calls [`transport::rearm`].
    fn queue_notified(&mut self, index: u32, queues: &[transport::QueueState]) -> Vec<u32>;
    /// The device was reset.
    fn reset(&mut self);
    /// A file descriptor that becomes readable when the host side has work for the device (a
    /// packet arrived, console input); `None` for a device that only acts when notified, and
    /// while the device cannot make progress on host work (input waiting for receive buffers),
    /// so that the worker does not spin on a readable fd. Asked again before every wait (the
    /// answer changes with notifications and [`Backend::host_ready`]).
    fn host_fd(&self) -> Option<std::os::fd::RawFd> {
        None
    }
    /// The host side has work ([`Backend::host_fd`] is readable, or a poll interval passed).
    /// `queues` are the virtqueues as the driver set them up (the device is DRIVER_OK). Returns
    /// the indexes of the queues to send an EVENT_USED for (used buffers the driver wants to
    /// hear of, as for [`Backend::queue_notified`]).
    fn host_ready(&mut self, _queues: &[transport::QueueState]) -> Vec<u32> {
        Vec::new()
    }
}

/// The feature mask of feature bit `bit` (the specification's numbers come from
/// `virtio-bindings`, as bit numbers).
pub(crate) const fn feature(bit: u32) -> u64 {
    1 << bit
}

/// VIRTIO_F_INDIRECT_DESC: descriptor tables in a descriptor (walked by `virtio-queue`).
pub const INDIRECT_DESC: u64 = feature(virtio_ring::VIRTIO_RING_F_INDIRECT_DESC);
/// VIRTIO_F_EVENT_IDX: `used_event` and `avail_event` ([`transport::rearm`],
/// [`transport::wants_used_event`]).
pub const EVENT_IDX: u64 = feature(virtio_ring::VIRTIO_RING_F_EVENT_IDX);
/// VIRTIO_F_VERSION_1.
pub const VERSION_1: u64 = feature(virtio_config::VIRTIO_F_VERSION_1);
/// VIRTIO_F_RING_RESET: RESET_VQUEUE.
pub const RING_RESET: u64 = feature(virtio_config::VIRTIO_F_RING_RESET);
/// The transport features every device offers, as every device of the device model does.
pub const TRANSPORT_FEATURES: u64 = INDIRECT_DESC | EVENT_IDX | VERSION_1 | RING_RESET;

/// Whether the driver of `queue` (without EVENT_IDX) wants to be told about the used buffers
/// just added: the `flags` of its available ring, read after them (a ring outside guest
/// memory: yes). Drivers set VRING_AVAIL_F_NO_INTERRUPT while they poll a queue, and the device
/// model then stays quiet. (`virtio-queue`'s `needs_notification` answers only for EVENT_IDX:
/// without it, it always says yes.)
fn driver_wants_interrupt<M: vm_memory::GuestMemory>(
    mem: &M,
    queue: &transport::QueueState,
) -> bool {
    use vm_memory::Bytes;
    // The used ring entries are written before the driver's flags are looked at.
    std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
    mem.read_obj::<u16>(vm_memory::GuestAddress(queue.driver))
        .map_or(true, |flags| {
            u32::from(u16::from_le(flags)) & virtio_ring::VRING_AVAIL_F_NO_INTERRUPT == 0
        })
}

/// A boxed backend is a backend, so that one bus can hold devices of every kind.
impl<B: Backend + ?Sized> Backend for Box<B> {
    fn device_id(&self) -> u32 {
        (**self).device_id()
    }
    fn features(&self) -> u64 {
        (**self).features()
    }
    fn config_size(&self) -> u32 {
        (**self).config_size()
    }
    fn read_config(&self, offset: u32, out: &mut [u8]) {
        (**self).read_config(offset, out)
    }
    fn write_config(&mut self, offset: u32, data: &[u8]) {
        (**self).write_config(offset, data)
    }
    fn num_queues(&self) -> u32 {
        (**self).num_queues()
    }
    fn set_driver_features(&mut self, features: u64) {
        (**self).set_driver_features(features)
    }
    fn queue_notified(&mut self, index: u32, queues: &[transport::QueueState]) -> Vec<u32> {
        (**self).queue_notified(index, queues)
    }
    fn reset(&mut self) {
        (**self).reset()
    }
    fn host_fd(&self) -> Option<std::os::fd::RawFd> {
        (**self).host_fd()
    }
    fn host_ready(&mut self, queues: &[transport::QueueState]) -> Vec<u32> {
        (**self).host_ready(queues)
    }
}
