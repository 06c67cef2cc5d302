// SPDX-License-Identifier: GPL-2.0 OR MIT

//! One device number: the transport messages, answered on top of a [`Backend`].
//!
//! Strict mode follows the specification. Compat mode answers as QEMU's device model does
//! (recorded in `drivers/virtio/virtio_msg/device-model/`): configuration reads beyond the
//! configuration space give 0xff bytes, SET_CONFIG echoes its data and never checks the
//! generation, a queue that is not set up reports 1024 entries, RESET_VQUEUE is answered for any
//! index, at most 8 feature blocks are answered, and a notification the device cannot take (a
//! queue not set up, or before DRIVER_OK) is a device error: DEVICE_NEEDS_RESET is set (once
//! VERSION_1 is negotiated) and notifications are ignored until the next reset, and one before
//! DRIVER_OK is also answered with EVENT_CONFIG.

use crate::{Backend, Mode, EVENT_IDX, VERSION_1};
use virtio_msg_wire::{
    max_config_chunk, max_feature_blocks, DeviceInfo, Frame, Message, VqueueInfo, Words,
};
use virtio_queue::{DescriptorChain, Queue, QueueT};
use vm_memory::{GuestAddress, GuestMemory};

/// Device status bits.
const DRIVER_OK: u32 = 4;
const FEATURES_OK: u32 = 8;
const NEEDS_RESET: u32 = 0x40;
/// Largest status the device model stores (it keeps a byte, and aborts on more).
const COMPAT_STATUS_MAX: u32 = 0xff;
/// Vendor id the QEMU device model reports ("QEMU").
pub const VENDOR_QEMU: u32 = 0x554d_4551;
/// Feature bits the device model reports.
pub const FEATURE_BITS: u32 = 64;
/// Largest queue size the device model accepts, and the size it reports for a queue not set up.
pub const QUEUE_MAX_SIZE: u32 = 1024;
/// Queue indexes the device model knows (its VIRTIO_QUEUE_MAX); notifications for higher ones
/// are device errors.
const COMPAT_QUEUE_INDEXES: u32 = 1024;
/// Feature blocks the device model answers at most.
const COMPAT_FEATURE_BLOCKS: u32 = 8;
/// What a configuration read beyond the configuration space gives in compat mode.
const CONFIG_BEYOND: u8 = 0xff;

/// A virtqueue as the driver configured it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueState {
    /// Number of descriptors; 0 if not set up.
    pub size: u32,
    /// Guest address of the descriptor area.
    pub desc: u64,
    /// Guest address of the driver area.
    pub driver: u64,
    /// Guest address of the device area.
    pub device: u64,
    /// The driver negotiated VIRTIO_F_EVENT_IDX: the rings carry `used_event` and
    /// `avail_event`.
    pub event_idx: bool,
}

/// Copies `out.len()` bytes at `offset` of a backend's configuration image `config` into
/// `out` ([`crate::Backend::read_config`]; the transport keeps the range within the space).
pub fn read_config_image(config: &[u8], offset: u32, out: &mut [u8]) {
    let start = offset as usize;
    if let Some(src) = start
        .checked_add(out.len())
        .and_then(|end| config.get(start..end))
    {
        out.copy_from_slice(src);
    }
}

/// The `virtio-queue` state walking the driver's queue `q`, kept in `slot`: created anew when
/// the driver set the queue up anew (other size or addresses, or for the first time), and
/// `None` while the queue is not usable (not set up, rings outside guest memory). Every
/// backend keeps one per virtqueue.
pub fn walk_queue<'a, G: GuestMemory>(
    slot: &'a mut Option<(QueueState, Queue)>,
    mem: &G,
    q: &QueueState,
) -> Option<&'a mut Queue> {
    if slot.as_ref().map(|(state, _)| state) != Some(q) {
        *slot = new_queue(mem, q).map(|vq| (*q, vq));
    }
    slot.as_mut().map(|(_, vq)| vq)
}

fn new_queue<G: GuestMemory>(mem: &G, q: &QueueState) -> Option<Queue> {
    let size = u16::try_from(q.size).ok()?;
    let mut vq = Queue::new(size).ok()?;
    vq.set_size(size);
    vq.try_set_desc_table_address(GuestAddress(q.desc)).ok()?;
    vq.try_set_avail_ring_address(GuestAddress(q.driver)).ok()?;
    vq.try_set_used_ring_address(GuestAddress(q.device)).ok()?;
    vq.set_event_idx(q.event_idx);
    vq.set_ready(true);
    vq.is_valid(mem).then_some(vq)
}

/// Publishes how far the device got in `vq` (with EVENT_IDX: `avail_event`, so that the
/// driver notifies for the next buffer it adds) and says whether buffers were added meanwhile,
/// which the device must then take without waiting for a notification. Backends call it when
/// they stop taking buffers from a queue.
pub fn rearm<G: GuestMemory>(vq: &mut Queue, mem: &G) -> bool {
    vq.enable_notification(mem).unwrap_or(false)
}

/// Chains a backend serves in one go at most, across re-checks after [`rearm`]: a guest that
/// keeps adding buffers as fast as they are used cannot hold the device forever (what it adds
/// beyond waits for its next notification).
pub const CHAIN_BUDGET: usize = 1 << 16;

/// Serves every chain the driver made available in `vq`: `serve` handles one and returns how
/// many bytes it wrote into it, and the chain goes to the used ring. Re-checks after
/// [`rearm`], so that buffers added meanwhile are not left waiting for a notification that
/// the driver (with EVENT_IDX) will not send; a re-check that finds nothing to take twice in a
/// row (an available index that makes no sense) ends it. Returns whether chains were used.
pub fn serve_chains<'m, G, F>(vq: &mut Queue, mem: &'m G, mut serve: F) -> bool
where
    G: GuestMemory,
    F: FnMut(DescriptorChain<&'m G>) -> u32,
{
    let mut used = false;
    let mut budget = CHAIN_BUDGET;
    let mut idle_rounds = 0;
    loop {
        let mut served = false;
        while let Some(chain) = vq.pop_descriptor_chain(mem) {
            let head = chain.head_index();
            let len = serve(chain);
            if vq.add_used(mem, head, len).is_err() {
                return used;
            }
            used = true;
            served = true;
            budget -= 1;
            if budget == 0 {
                rearm(vq, mem);
                return used;
            }
        }
        idle_rounds = if served { 0 } else { idle_rounds + 1 };
        if idle_rounds > 1 || !rearm(vq, mem) {
            return used;
        }
    }
}

/// Whether the driver wants an EVENT_USED for the buffers the device just used in `vq` (`q` as
/// the driver set it up): with EVENT_IDX its `used_event` says so, without it its
/// VRING_AVAIL_F_NO_INTERRUPT flag.
pub fn wants_used_event<G: GuestMemory>(vq: &mut Queue, mem: &G, q: &QueueState) -> bool {
    if q.event_idx {
        vq.needs_notification(mem).unwrap_or(true)
    } else {
        crate::driver_wants_interrupt(mem, q)
    }
}

/// The device side of one device number.
pub struct TransportDevice<B> {
    backend: B,
    mode: Mode,
    dev_num: u16,
    status: u32,
    driver_features: u64,
    generation: u32,
    queues: Vec<QueueState>,
    /// Compat mode: the device model aborts on some driver errors; the emulated device goes
    /// silent instead.
    dead: bool,
    /// Compat mode: a notification the device could not take; the device ignores notifications
    /// and does no queue work until it is reset.
    broken: bool,
    /// Queues notified since the reset, and whether a dropped notification was logged: the
    /// first of each is logged (diagnostics for the e2e console tests, whose output once never
    /// reached the host).
    notified: Vec<bool>,
    told_dropped: bool,
}

impl<B: Backend> TransportDevice<B> {
    /// Device number `dev_num` with `backend` behind it.
    pub fn new(dev_num: u16, backend: B, mode: Mode) -> Self {
        let queues = vec![QueueState::default(); backend.num_queues() as usize];
        Self {
            backend,
            mode,
            dev_num,
            status: 0,
            driver_features: 0,
            generation: 0,
            notified: vec![false; queues.len()],
            queues,
            dead: false,
            broken: false,
            told_dropped: false,
        }
    }

    /// The virtio device.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// The virtio device.
    pub fn backend_mut(&mut self) -> &mut B {
        &mut self.backend
    }

    /// The device status.
    pub fn status(&self) -> u32 {
        self.status
    }

    /// The features the driver accepted.
    pub fn driver_features(&self) -> u64 {
        self.driver_features
    }

    /// Queue `index`, if the device has it.
    pub fn queue(&self, index: u32) -> Option<&QueueState> {
        self.queues.get(index as usize)
    }

    /// Whether the device stopped answering (compat mode, after a driver error the device model
    /// aborts on).
    pub fn is_dead(&self) -> bool {
        self.dead
    }

    /// The configuration changed on the device side: a new generation.
    pub fn config_changed(&mut self) {
        self.generation = self.generation.wrapping_add(1);
    }

    /// Encodes `msg` as a message of this device; `None` if it does not fit a message.
    fn encode(&self, token: u16, msg: Message<'_>) -> Option<Vec<u8>> {
        let frame = Frame {
            dev_num: self.dev_num,
            token,
            msg,
        };
        let len = frame.encoded_len().ok()?;
        if len > self.mode.max_msg_size() {
            return None;
        }
        let mut out = vec![0u8; len];
        frame.encode(&mut out).ok()?;
        Some(out)
    }

    fn config_fits(&self, offset: u32, length: usize) -> bool {
        length <= max_config_chunk(self.mode.max_msg_size())
            && u64::from(offset) + length as u64 <= u64::from(self.backend.config_size())
    }

    /// The part of `offset..offset + length` that lies in the configuration space, as a range
    /// relative to `offset` (compat mode reads and writes byte by byte, and bytes beyond the
    /// space read as 0xff and take no writes).
    fn config_part(&self, offset: u32, length: usize) -> std::ops::Range<usize> {
        let size = u64::from(self.backend.config_size());
        let inside = size.saturating_sub(u64::from(offset)).min(length as u64);
        0..inside as usize
    }

    /// Compat mode: what the device model does with a notification it cannot take: it sets
    /// DEVICE_NEEDS_RESET (once VERSION_1 is negotiated) and stops working until it is reset.
    fn device_error(&mut self) {
        if self.status & FEATURES_OK != 0 && self.driver_features & VERSION_1 != 0 {
            self.status |= NEEDS_RESET;
        }
        self.broken = true;
    }

    /// Resets the device as a SET_DEVICE_STATUS of 0 would, and brings a dead device back (the
    /// PCI function was reset); the configuration generation keeps counting.
    pub fn reset(&mut self) {
        self.dead = false;
        self.broken = false;
        self.notified.iter_mut().for_each(|n| *n = false);
        self.told_dropped = false;
        self.status = 0;
        self.driver_features = 0;
        self.queues
            .iter_mut()
            .for_each(|q| *q = QueueState::default());
        self.backend.reset();
    }

    fn set_status(&mut self, status: u32) -> u32 {
        if status == 0 {
            self.reset();
            return 0;
        }
        if self.mode == Mode::Compat && status > COMPAT_STATUS_MAX {
            // The device model stores a byte and aborts when it does not read back as written.
            self.dead = true;
            return self.status;
        }
        let newly_ok = status & FEATURES_OK != 0 && self.status & FEATURES_OK == 0;
        let acceptable = self.driver_features & !self.backend.features() == 0
            && self.driver_features & VERSION_1 != 0;
        self.status = status;
        if newly_ok && !acceptable {
            match self.mode {
                // The device model aborts when the status would not read back as written.
                Mode::Compat => self.dead = true,
                Mode::Strict => self.status &= !FEATURES_OK,
            }
        } else if newly_ok {
            self.backend.set_driver_features(self.driver_features);
        }
        self.status
    }

    /// Handles one transport message addressed to this device and returns what the device
    /// sends back: the response (with the request's token), events (token 0), or nothing.
    pub fn handle(&mut self, frame: &Frame<'_>) -> Vec<Vec<u8>> {
        if self.dead {
            return Vec::new();
        }
        let token = frame.token;
        let reply = |this: &Self, msg: Message<'_>| this.encode(token, msg).into_iter().collect();
        let max_blocks = max_feature_blocks(self.mode.max_msg_size());
        let compat = self.mode == Mode::Compat;
        match frame.msg {
            Message::GetDeviceInfo => {
                let info = DeviceInfo {
                    device_id: self.backend.device_id(),
                    vendor_id: VENDOR_QEMU,
                    num_feature_bits: FEATURE_BITS,
                    config_size: self.backend.config_size(),
                    max_virtqueues: self.backend.num_queues(),
                    admin_vq_start: 0,
                    admin_vq_count: 0,
                };
                reply(self, Message::DeviceInfo(info))
            }
            Message::GetDeviceFeatures {
                block_index,
                num_blocks,
            } if compat || num_blocks as usize <= max_blocks => {
                // The device model answers more than 8 blocks with 8.
                let num_blocks = num_blocks.min(COMPAT_FEATURE_BLOCKS);
                let features = self.backend.features();
                let words: Vec<u32> = (0..num_blocks)
                    .map(|i| match block_index.checked_add(i) {
                        Some(0) => features as u32,
                        Some(1) => (features >> 32) as u32,
                        _ => 0,
                    })
                    .collect();
                reply(
                    self,
                    Message::DeviceFeatures {
                        block_index,
                        features: Words::new(&words),
                    },
                )
            }
            Message::SetDriverFeatures {
                block_index,
                features,
            } if features.len() <= max_blocks => {
                for (i, w) in features.iter().enumerate() {
                    let shift = match block_index.checked_add(i as u32) {
                        Some(0) => 0,
                        Some(1) => 32,
                        _ => continue,
                    };
                    self.driver_features =
                        (self.driver_features & !(0xffff_ffff << shift)) | (u64::from(w) << shift);
                }
                reply(self, Message::DriverFeaturesSet)
            }
            // Compat: bytes beyond the space read as 0xff; strict: a read beyond is not answered
            // (and one within it reads no 0xff).
            Message::GetConfig { offset, length }
                if length as usize <= max_config_chunk(self.mode.max_msg_size())
                    && (compat || self.config_fits(offset, length as usize)) =>
            {
                let mut data = vec![CONFIG_BEYOND; length as usize];
                let inside = self.config_part(offset, data.len());
                if !inside.is_empty() {
                    self.backend.read_config(offset, &mut data[inside]);
                }
                reply(
                    self,
                    Message::Config {
                        generation: self.generation,
                        offset,
                        data: &data,
                    },
                )
            }
            Message::SetConfig { offset, data, .. }
                if compat && data.len() <= max_config_chunk(self.mode.max_msg_size()) =>
            {
                // No generation check, and the data comes back.
                let inside = self.config_part(offset, data.len());
                if !inside.is_empty() {
                    self.backend.write_config(offset, &data[inside]);
                }
                let msg = Message::ConfigSet {
                    generation: self.generation,
                    offset,
                    length: data.len() as u32,
                    echo: Some(data),
                };
                reply(self, msg)
            }
            Message::SetConfig {
                generation,
                offset,
                data,
            } if self.config_fits(offset, data.len()) => {
                if generation != self.generation {
                    let msg = Message::ConfigSet {
                        generation: self.generation,
                        offset,
                        length: 0,
                        echo: None,
                    };
                    return reply(self, msg);
                }
                self.backend.write_config(offset, data);
                let msg = Message::ConfigSet {
                    generation: self.generation,
                    offset,
                    length: data.len() as u32,
                    echo: None,
                };
                reply(self, msg)
            }
            Message::GetDeviceStatus => reply(
                self,
                Message::DeviceStatus {
                    status: self.status,
                },
            ),
            Message::SetDeviceStatus { status } => {
                let status = self.set_status(status);
                if self.dead {
                    return Vec::new();
                }
                reply(self, Message::DeviceStatusSet { status })
            }
            Message::GetVqueue { index } => {
                let (max_size, q) = match self.queue(index) {
                    Some(q) => (QUEUE_MAX_SIZE, *q),
                    None => (0, QueueState::default()),
                };
                // The device model reports a queue that is not set up at its largest size.
                let cur_size = match (q.size, self.mode, max_size) {
                    (0, Mode::Compat, QUEUE_MAX_SIZE) => QUEUE_MAX_SIZE,
                    (size, _, _) => size,
                };
                let info = VqueueInfo {
                    index,
                    max_size,
                    cur_size,
                    desc_addr: q.desc,
                    driver_addr: q.driver,
                    device_addr: q.device,
                };
                reply(self, Message::Vqueue(info))
            }
            Message::SetVqueue(c) if c.size > 0 && c.size <= QUEUE_MAX_SIZE => {
                let Some(q) = self.queues.get_mut(c.index as usize) else {
                    return Vec::new();
                };
                *q = QueueState {
                    size: c.size,
                    desc: c.desc_addr,
                    driver: c.driver_addr,
                    device: c.device_addr,
                    event_idx: self.driver_features & EVENT_IDX != 0,
                };
                reply(self, Message::VqueueSet)
            }
            Message::ResetVqueue { index } => {
                match self.queues.get_mut(index as usize) {
                    Some(q) => *q = QueueState::default(),
                    // The device model answers for a queue it does not have too.
                    None if compat => {}
                    None => return Vec::new(),
                }
                reply(self, Message::VqueueReset)
            }
            Message::GetShm { index } if self.mode == Mode::Strict => reply(
                self,
                Message::Shm {
                    index,
                    length: 0,
                    address: 0,
                },
            ),
            Message::EventAvail { vq_index, .. } => self.notified(vq_index),
            // Everything else: not understood, or not for a device. The device model answers
            // nothing, and neither do we.
            _ => Vec::new(),
        }
    }

    /// EVENT_AVAIL for queue `index`.
    fn notified(&mut self, index: u32) -> Vec<Vec<u8>> {
        if let Some(first @ false) = self.notified.get_mut(index as usize) {
            *first = true;
            log::info!(
                "device {}: first notification of queue {index}",
                self.dev_num
            );
        }
        if self.mode == Mode::Compat {
            return self.notified_compat(index);
        }
        if self.status & DRIVER_OK == 0 {
            return Vec::new();
        }
        match self.queues.get(index as usize) {
            Some(q) if q.size > 0 => self.take_buffers(index),
            _ => Vec::new(),
        }
    }

    /// Logs the first notification dropped since the reset, and why.
    fn tell_dropped(&mut self, index: u32, why: &str) {
        if !std::mem::replace(&mut self.told_dropped, true) {
            log::info!(
                "device {}: notification of queue {index} dropped ({why})",
                self.dev_num
            );
        }
    }

    /// EVENT_AVAIL as the device model takes it.
    fn notified_compat(&mut self, index: u32) -> Vec<Vec<u8>> {
        if self.status & DRIVER_OK == 0 {
            // A device error, reported with an EVENT_CONFIG (without data) each time.
            self.device_error();
            let msg = Message::EventConfig {
                device_status: self.status,
                generation: self.generation,
                offset: 0,
                length: 0,
                data: None,
            };
            return self.encode(0, msg).into_iter().collect();
        }
        let set_up = index < COMPAT_QUEUE_INDEXES
            && self.queues.get(index as usize).is_some_and(|q| q.size > 0);
        if !set_up {
            self.tell_dropped(index, "queue not set up");
            self.device_error();
            Vec::new()
        } else if self.broken {
            self.tell_dropped(index, "device broken");
            Vec::new()
        } else {
            self.take_buffers(index)
        }
    }

    /// Lets the backend take the buffers of queue `index`; the EVENT_USED messages it asks for.
    fn take_buffers(&mut self, index: u32) -> Vec<Vec<u8>> {
        let used = self.backend.queue_notified(index, &self.queues);
        self.used_events(used)
    }

    /// EVENT_USED for each of `queues`, once.
    fn used_events(&self, mut queues: Vec<u32>) -> Vec<Vec<u8>> {
        queues.sort_unstable();
        queues.dedup();
        queues
            .into_iter()
            .filter_map(|vq_index| self.encode(0, Message::EventUsed { vq_index }))
            .collect()
    }

    /// The host side of the backend has work (see [`Backend::host_ready`]); returns the
    /// EVENT_USED messages to send. Nothing happens before DRIVER_OK, nor while the device is
    /// broken.
    pub fn host_ready(&mut self) -> Vec<Vec<u8>> {
        if self.dead || self.broken || self.status & DRIVER_OK == 0 {
            return Vec::new();
        }
        let used = self.backend.host_ready(&self.queues);
        self.used_events(used)
    }
}
