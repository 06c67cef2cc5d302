// SPDX-License-Identifier: GPL-2.0

//! The device side: the devices of the bus and their answers to the transport's messages.
//!
//! Like QEMU's device model, a device gives no answer at all to a request it does not
//! understand. Each device has one virtqueue, served through [`Vringh`].

use crate::blk;
use kernel::{
    alloc::KVVec,
    prelude::*,
    random,
    virtio::msg::wire::{DeviceInfo, Frame, Message, VqueueInfo, Words},
    vringh::{Chain, Vringh},
};

/// Largest message on the bus (the AMP PCI device's limit, so that chunking is exercised).
pub(crate) const MAX_MSG: usize = 48;
/// Device number of the entropy device.
pub(crate) const RNG_DEV_NUM: u16 = 1;
/// Device number of the block device, if there is one.
pub(crate) const BLK_DEV_NUM: u16 = 2;
/// Each device's only queue: its largest size.
const QUEUE_MAX: u32 = 64;
/// Most bytes of entropy given for one buffer.
const MAX_FILL: usize = 4096;

const VIRTIO_ID_BLK: u32 = 2;
const VIRTIO_ID_RNG: u32 = 4;
const VENDOR_ID: u32 = 0x5453_5552; // "RUST"
/// The only feature offered: VIRTIO_F_VERSION_1, bit 32 (the ring is little-endian).
const FEATURES: u64 = 1 << 32;
const STATUS_DRIVER_OK: u32 = 4;

/// What a device is.
pub(crate) enum Kind {
    Rng,
    /// A block device and its memory.
    Blk(KVVec<u8>),
}

/// A configured virtqueue.
struct Queue {
    size: u32,
    addrs: (u64, u64, u64),
    ring: Vringh,
}

/// One device of the bus.
struct Function {
    kind: Kind,
    status: u32,
    queue: Option<Queue>,
}

impl Function {
    fn info(&self) -> DeviceInfo {
        let (device_id, config_size) = match self.kind {
            Kind::Rng => (VIRTIO_ID_RNG, 0),
            Kind::Blk(_) => (VIRTIO_ID_BLK, blk::CONFIG_SIZE),
        };
        DeviceInfo {
            device_id,
            vendor_id: VENDOR_ID,
            num_feature_bits: 64,
            config_size,
            max_virtqueues: 1,
            admin_vq_start: 0,
            admin_vq_count: 0,
        }
    }

    /// Configuration byte `offset`: a block device's capacity (its first field), zeroes for
    /// the fields of features not offered.
    fn config_byte(&self, offset: u32) -> u8 {
        match &self.kind {
            Kind::Blk(disk) => {
                let capacity = (disk.len() as u64 / blk::SECTOR).to_le_bytes();
                capacity.get(offset as usize).copied().unwrap_or(0)
            }
            Kind::Rng => 0,
        }
    }

    /// Serves the available buffers; returns whether the driver wants to hear of it.
    fn process(&mut self) -> bool {
        if self.status & STATUS_DRIVER_OK == 0 {
            return false;
        }
        let Some(queue) = self.queue.as_mut() else {
            return false;
        };
        let mut used = false;
        loop {
            let mut chain = match queue.ring.next(GFP_KERNEL) {
                Ok(Some(chain)) => chain,
                Ok(None) => break,
                Err(e) => {
                    pr_err!("malformed descriptor chain ({e:?}): queue stopped\n");
                    break;
                }
            };
            let written = match &mut self.kind {
                Kind::Rng => fill_random(&mut chain),
                Kind::Blk(disk) => blk::serve(disk, &mut chain),
            };
            match written.and_then(|n| chain.complete(n)) {
                Ok(()) => used = true,
                Err(e) => {
                    pr_err!("malformed request ({e:?}): queue stopped\n");
                    break;
                }
            }
        }
        used && queue.ring.need_notify().unwrap_or(true)
    }
}

/// Fills the writable buffers of an entropy request with random bytes, up to [`MAX_FILL`].
fn fill_random(chain: &mut Chain<'_>) -> Result<u32> {
    let mut chunk = [0u8; 256];
    let total = chain.writable().min(MAX_FILL);
    let mut left = total;
    while let Some(part) = chunk.get_mut(..left.min(256)).filter(|p| !p.is_empty()) {
        random::fill(part);
        match chain.write(part)? {
            0 => break,
            n => left -= n,
        }
    }
    u32::try_from(total - left).map_err(|_| EINVAL)
}

/// The devices of the bus.
pub(crate) struct Devices {
    rng: Function,
    blk: Option<Function>,
    /// Messages still answered before the devices go silent (`None`: always).
    answers_left: Option<u32>,
}

impl Devices {
    /// The entropy device, with a block device on `disk` if there is one; silent after
    /// `answers` messages if that is given.
    pub(crate) fn new(disk: Option<KVVec<u8>>, answers: Option<u32>) -> Self {
        let function = |kind| Function {
            kind,
            status: 0,
            queue: None,
        };
        Self {
            rng: function(Kind::Rng),
            blk: disk.map(|disk| function(Kind::Blk(disk))),
            answers_left: answers,
        }
    }

    fn get(&mut self, dev_num: u16) -> Option<&mut Function> {
        match dev_num {
            RNG_DEV_NUM => Some(&mut self.rng),
            BLK_DEV_NUM => self.blk.as_mut(),
            _ => None,
        }
    }

    /// Handles one message from the driver side, passing what the device sends back to
    /// `send`: the answer, or an EVENT_USED after buffers were used.
    pub(crate) fn handle(&mut self, bytes: &[u8], mut send: impl FnMut(Frame<'_>)) {
        let Ok(frame) = Frame::decode(bytes) else {
            return;
        };
        match self.answers_left {
            Some(0) => return,
            Some(ref mut n) => *n -= 1,
            None => {}
        }
        let (dev_num, token) = (frame.dev_num, frame.token);
        let Some(f) = self.get(dev_num) else {
            return;
        };
        let mut answer = |msg| {
            send(Frame {
                dev_num,
                token,
                msg,
            })
        };
        let mut config = [0u8; MAX_MSG];
        let mut words = [0u32; 8];
        match frame.msg {
            Message::GetDeviceInfo => answer(Message::DeviceInfo(f.info())),
            Message::GetDeviceFeatures {
                block_index,
                num_blocks,
            } => {
                let Some(features) = words.get_mut(..num_blocks as usize) else {
                    return;
                };
                for (block, w) in (block_index..).zip(features.iter_mut()) {
                    *w = (FEATURES.checked_shr(block.saturating_mul(32)).unwrap_or(0)) as u32;
                }
                answer(Message::DeviceFeatures {
                    block_index,
                    features: Words::new(features),
                });
            }
            Message::SetDriverFeatures { .. } => answer(Message::DriverFeaturesSet),
            Message::GetDeviceStatus => answer(Message::DeviceStatus { status: f.status }),
            Message::SetDeviceStatus { status } => {
                if status == 0 {
                    f.queue = None;
                }
                f.status = status;
                answer(Message::DeviceStatusSet { status });
            }
            Message::GetConfig { offset, length } => {
                let in_space = offset
                    .checked_add(length)
                    .is_some_and(|end| end <= f.info().config_size);
                let Some(data) = config.get_mut(..length as usize).filter(|_| in_space) else {
                    return;
                };
                for (at, b) in (offset..).zip(data.iter_mut()) {
                    *b = f.config_byte(at);
                }
                answer(Message::Config {
                    generation: 0,
                    offset,
                    data,
                });
            }
            Message::GetVqueue { index } => {
                let (max_size, cur_size, (d, a, u)) = match (&f.queue, index) {
                    (Some(q), 0) => (QUEUE_MAX, q.size, q.addrs),
                    (None, 0) => (QUEUE_MAX, 0, (0, 0, 0)),
                    _ => (0, 0, (0, 0, 0)),
                };
                answer(Message::Vqueue(VqueueInfo {
                    index,
                    max_size,
                    cur_size,
                    desc_addr: d,
                    driver_addr: a,
                    device_addr: u,
                }));
            }
            Message::SetVqueue(c) if c.index == 0 && c.size <= QUEUE_MAX => {
                // SAFETY: The only driver of this bus is the virtio-msg transport, which puts
                // in SET_VQUEUE the addresses of a ring it made with the DMA API on the bus's
                // faux device (no IOMMU: physical addresses), whose buffers are mapped the same
                // way, and frees it only after this device is reset, which drops the queue
                // first: the loopback device is in its driver's trust domain.
                let ring = unsafe {
                    Vringh::new(FEATURES, c.size, c.desc_addr, c.driver_addr, c.device_addr)
                };
                let ring = match ring {
                    Ok(ring) => ring,
                    Err(e) => {
                        pr_err!("device {dev_num}: queue of {} not set up ({e:?})\n", c.size);
                        return;
                    }
                };
                f.queue = Some(Queue {
                    size: c.size,
                    addrs: (c.desc_addr, c.driver_addr, c.device_addr),
                    ring,
                });
                answer(Message::VqueueSet);
            }
            Message::GetShm { index } => answer(Message::Shm {
                index,
                length: 0,
                address: 0,
            }),
            Message::EventAvail { vq_index: 0, .. } => {
                if f.process() {
                    send(Frame {
                        dev_num,
                        token: 0,
                        msg: Message::EventUsed { vq_index: 0 },
                    });
                }
            }
            _ => {}
        }
    }
}
