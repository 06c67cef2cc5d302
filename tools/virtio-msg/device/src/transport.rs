// SPDX-License-Identifier: GPL-2.0 OR MIT

//! One device number: the transport messages, answered on top of a [`Backend`].

use crate::{Backend, Mode};
use virtio_msg_wire::{
    max_config_chunk, max_feature_blocks, DeviceInfo, Frame, Message, VqueueInfo, Words,
};
use virtio_queue::{Queue, QueueT};
use vm_memory::{GuestAddress, GuestMemory};

/// Device status bits.
const DRIVER_OK: u32 = 4;
const FEATURES_OK: u32 = 8;
/// VIRTIO_F_VERSION_1.
const VERSION_1: u64 = 1 << 32;
/// Vendor id the QEMU device model reports ("QEMU").
pub const VENDOR_QEMU: u32 = 0x554d_4551;
/// Feature bits the device model reports.
const FEATURE_BITS: u32 = 64;
/// Largest queue size the device model accepts.
pub const QUEUE_MAX_SIZE: u32 = 1024;
/// Size the device model reports for a queue not set up yet.
pub const QUEUE_DEFAULT_SIZE: u32 = 256;

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
    vq.set_ready(true);
    vq.is_valid(mem).then_some(vq)
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
            queues,
            dead: false,
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

    /// Resets the device as a SET_DEVICE_STATUS of 0 would, and brings a dead device back (the
    /// PCI function was reset); the configuration generation keeps counting.
    pub fn reset(&mut self) {
        self.dead = false;
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
            } if num_blocks as usize <= max_blocks => {
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
            Message::GetConfig { offset, length } if self.config_fits(offset, length as usize) => {
                let mut data = vec![0u8; length as usize];
                self.backend.read_config(offset, &mut data);
                reply(
                    self,
                    Message::Config {
                        generation: self.generation,
                        offset,
                        data: &data,
                    },
                )
            }
            Message::SetConfig {
                generation,
                offset,
                data,
            } if self.config_fits(offset, data.len()) => {
                if self.mode == Mode::Strict && generation != self.generation {
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
                let cur_size = match (q.size, self.mode, max_size) {
                    (0, Mode::Compat, QUEUE_MAX_SIZE) => QUEUE_DEFAULT_SIZE,
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
                };
                reply(self, Message::VqueueSet)
            }
            Message::ResetVqueue { index } => {
                let Some(q) = self.queues.get_mut(index as usize) else {
                    return Vec::new();
                };
                *q = QueueState::default();
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
        if self.status & DRIVER_OK == 0 {
            // The device model reports a notification before DRIVER_OK with an EVENT_CONFIG
            // (without data).
            if self.mode != Mode::Compat {
                return Vec::new();
            }
            let msg = Message::EventConfig {
                device_status: self.status,
                generation: self.generation,
                offset: 0,
                length: 0,
                data: None,
            };
            return self.encode(0, msg).into_iter().collect();
        }
        let Some(q) = self.queues.get(index as usize).copied() else {
            return Vec::new();
        };
        if q.size == 0
            || !self.backend.queue_notified(index, &q)
            || !self.backend.wants_used_event(&q)
        {
            return Vec::new();
        }
        self.encode(0, Message::EventUsed { vq_index: index })
            .into_iter()
            .collect()
    }

    /// The host side of the backend has work (see [`Backend::host_ready`]); returns the
    /// EVENT_USED messages to send. Nothing happens before DRIVER_OK.
    pub fn host_ready(&mut self) -> Vec<Vec<u8>> {
        if self.dead || self.status & DRIVER_OK == 0 {
            return Vec::new();
        }
        let mut used = self.backend.host_ready(&self.queues);
        used.sort_unstable();
        used.dedup();
        used.into_iter()
            .filter(|&vq_index| {
                self.queues
                    .get(vq_index as usize)
                    .is_some_and(|q| self.backend.wants_used_event(q))
            })
            .filter_map(|vq_index| self.encode(0, Message::EventUsed { vq_index }))
            .collect()
    }
}
