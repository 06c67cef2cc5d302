// SPDX-License-Identifier: GPL-2.0 OR MIT

//! One FIFO of the AMP PCI device: a virtio-msg bus with up to 32 device numbers.
//!
//! Strict mode decodes every message with the shared codec and drops what does not decode.
//! Compat mode reads messages the way QEMU's device model does (recorded in
//! `drivers/virtio/virtio_msg/device-model/`), because that is the device drivers meet:
//!
//! - a bus message (type bit 1) is recognised by its id alone and its fields are read from the
//!   slot whatever `msg_size`, `dev_num` and the response bit say, so a PING of 8 bytes is
//!   answered with the data the slot still holds; other bus ids are dropped;
//! - a transport message is dropped if it is a response, has an unknown id, is shorter than
//!   its fields need, longer than 48 bytes, or addressed to device number 32 or above; bytes
//!   after what its fields need are ignored;
//! - a device number below 32 with no device behind it still answers the getters (as a
//!   device with id 0 and nothing else) and SET_CONFIG and SET_DRIVER_FEATURES, but not
//!   SET_DEVICE_STATUS, SET_VQUEUE, RESET_VQUEUE or EVENT_AVAIL;
//! - GET_DEVICES clamps its window to the 32 device numbers, the offset included.
//!
//! Bus replies carry token 0 and device number 0 in both modes, as the device model's do
//! (the bus owns the token; the FIFO may rewrite it, see the emulator's `--tokens`).

use crate::{transport::TransportDevice, Backend, Mode};
use virtio_msg_wire::{
    bitmap_len, bus_id, max_config_chunk, transport_id, Class, DeviceInfo, DeviceState, Frame,
    Message, VqueueInfo, Words, HEADER_SIZE, TYPE_BUS, TYPE_RESPONSE,
};

/// Device numbers per FIFO in the QEMU device model.
pub const DEVICES_PER_FIFO: u16 = 32;

/// Feature blocks the device model answers at most, whatever the driver asks for.
const COMPAT_FEATURE_BLOCKS: u32 = 8;

/// Counters of what the device side dropped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BusStats {
    /// Messages that did not decode.
    pub malformed: u64,
    /// Transport messages for a device number with no device that were not answered.
    pub no_device: u64,
}

/// The device side of one FIFO.
pub struct FifoBus {
    mode: Mode,
    devices: Vec<Option<TransportDevice<Box<dyn Backend + Send>>>>,
    /// By device number: devices taken off the bus ([`FifoBus::unplug`]), with their
    /// backends, until they come back.
    unplugged: Vec<Option<TransportDevice<Box<dyn Backend + Send>>>>,
    stats: BusStats,
}

/// Little-endian u16 at `at` of `bytes` (0 past the end).
fn le16(bytes: &[u8], at: usize) -> u16 {
    match bytes.get(at..at + 2) {
        Some(b) => u16::from_le_bytes([b[0], b[1]]),
        None => 0,
    }
}

/// Little-endian u32 at `at` of `bytes` (0 past the end).
fn le32(bytes: &[u8], at: usize) -> u32 {
    match bytes.get(at..at + 4) {
        Some(b) => u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
        None => 0,
    }
}

/// The length a transport request has to the device model: header and fixed fields, plus what
/// its count or length field announces; `None` for what it drops whatever the length (unknown
/// ids, events other than EVENT_AVAIL, GET_SHM, a SET_DRIVER_FEATURES of no or more than 8
/// blocks, a SET_CONFIG of more than 28 bytes).
fn compat_request_len(bytes: &[u8]) -> Option<usize> {
    use transport_id as t;
    let payload = match *bytes.get(1)? {
        t::GET_DEVICE_INFO | t::GET_DEVICE_STATUS => 0,
        t::GET_DEVICE_FEATURES | t::GET_CONFIG | t::EVENT_AVAIL => 8,
        t::SET_DEVICE_STATUS | t::GET_VQUEUE | t::RESET_VQUEUE => 4,
        t::SET_VQUEUE => 40,
        t::SET_DRIVER_FEATURES => {
            let blocks = le32(bytes, HEADER_SIZE + 4);
            if blocks == 0 || blocks > COMPAT_FEATURE_BLOCKS {
                return None;
            }
            8 + 4 * blocks as usize
        }
        t::SET_CONFIG => {
            let length = le32(bytes, HEADER_SIZE + 8) as usize;
            if length > max_config_chunk(Mode::Compat.max_msg_size()) {
                return None;
            }
            12 + length
        }
        _ => return None,
    };
    Some(HEADER_SIZE + payload)
}

impl FifoBus {
    /// An empty bus.
    pub fn new(mode: Mode) -> Self {
        Self {
            mode,
            devices: (0..DEVICES_PER_FIFO).map(|_| None).collect(),
            unplugged: (0..DEVICES_PER_FIFO).map(|_| None).collect(),
            stats: BusStats::default(),
        }
    }

    /// Puts `backend` on device number `dev_num` (below [`DEVICES_PER_FIFO`]).
    pub fn attach(
        &mut self,
        dev_num: u16,
        backend: Box<dyn Backend + Send>,
    ) -> Result<(), &'static str> {
        let slot = self
            .devices
            .get_mut(usize::from(dev_num))
            .ok_or("device number out of range")?;
        if slot.is_some() {
            return Err("device number already in use");
        }
        *slot = Some(TransportDevice::new(dev_num, backend, self.mode));
        Ok(())
    }

    /// Takes device `dev_num` off the bus, as a device side that removes it does: from now on
    /// it is not listed and does not answer, and its backend (a disk's image, a network
    /// device's MAC address) waits for [`FifoBus::plug`]. Returns the EVENT_DEVICE (REMOVED)
    /// that tells the driver side, or `None` if no device is on that number.
    pub fn unplug(&mut self, dev_num: u16) -> Option<Vec<u8>> {
        let i = usize::from(dev_num);
        let mut dev = self.devices.get_mut(i)?.take()?;
        dev.reset();
        self.unplugged[i] = Some(dev);
        self.event_device(dev_num, DeviceState::Removed)
    }

    /// Puts back a device [`FifoBus::unplug`] took off, reset, as a device side that adds it:
    /// listed and answering again, with the same backend. Returns the EVENT_DEVICE (READY)
    /// that tells the driver side, or `None` if no device of that number is off the bus.
    pub fn plug(&mut self, dev_num: u16) -> Option<Vec<u8>> {
        let i = usize::from(dev_num);
        let dev = self.unplugged.get_mut(i)?.take()?;
        self.devices[i] = Some(dev);
        self.event_device(dev_num, DeviceState::Ready)
    }

    /// What a device side that started again says of its devices: REMOVED, then READY, for
    /// each device on the bus, so that a driver side that did not see it stop replaces them
    /// (one that did has stopped listening, and enumerates).
    pub fn restarted(&self) -> Vec<Vec<u8>> {
        (0..DEVICES_PER_FIFO)
            .zip(&self.devices)
            .filter(|(_, d)| d.is_some())
            .flat_map(|(n, _)| [DeviceState::Removed, DeviceState::Ready].map(|s| (n, s)))
            .filter_map(|(n, state)| self.event_device(n, state))
            .collect()
    }

    /// An EVENT_DEVICE about `dev_num`: a bus message, device number and token 0 as the bus's
    /// own messages.
    fn event_device(&self, device_number: u16, state: DeviceState) -> Option<Vec<u8>> {
        self.encode(
            0,
            0,
            Message::EventDevice {
                device_number,
                state,
            },
        )
        .pop()
    }

    /// The device on `dev_num`.
    pub fn device(
        &mut self,
        dev_num: u16,
    ) -> Option<&mut TransportDevice<Box<dyn Backend + Send>>> {
        self.devices.get_mut(usize::from(dev_num))?.as_mut()
    }

    /// Every device with its number, for polling their host sides.
    pub fn devices_mut(
        &mut self,
    ) -> impl Iterator<Item = (u16, &mut TransportDevice<Box<dyn Backend + Send>>)> {
        (0..DEVICES_PER_FIFO)
            .zip(self.devices.iter_mut())
            .filter_map(|(n, d)| Some((n, d.as_mut()?)))
    }

    /// Resets every device (the PCI function was reset).
    pub fn reset(&mut self) {
        self.devices_mut().for_each(|(_, d)| d.reset());
    }

    /// What was dropped so far.
    pub fn stats(&self) -> BusStats {
        self.stats
    }

    fn encode(&self, dev_num: u16, token: u16, msg: Message<'_>) -> Vec<Vec<u8>> {
        let frame = Frame {
            dev_num,
            token,
            msg,
        };
        match frame.encoded_len() {
            Ok(len) if len <= self.mode.max_msg_size() => {
                let mut out = vec![0u8; len];
                frame
                    .encode(&mut out)
                    .map(|_| vec![out])
                    .unwrap_or_default()
            }
            _ => Vec::new(),
        }
    }

    /// Handles one message from the driver queue (at most a slot's worth of bytes) and returns
    /// what to put on the device queue.
    pub fn handle(&mut self, bytes: &[u8]) -> Vec<Vec<u8>> {
        match self.mode {
            Mode::Strict => self.handle_strict(bytes),
            Mode::Compat => self.handle_compat(bytes),
        }
    }

    fn handle_strict(&mut self, bytes: &[u8]) -> Vec<Vec<u8>> {
        let Ok(frame) = Frame::decode(bytes) else {
            self.stats.malformed += 1;
            return Vec::new();
        };
        match frame.msg {
            Message::GetDevices { offset, count } => self.devices_window(offset, count),
            Message::Ping { data } => self.encode(0, 0, Message::Pong { data }),
            _ if frame.msg.id().0 == Class::Bus => {
                self.stats.malformed += 1;
                Vec::new()
            }
            _ => match self.device(frame.dev_num) {
                Some(dev) => dev.handle(&frame),
                None => {
                    self.stats.no_device += 1;
                    Vec::new()
                }
            },
        }
    }

    fn handle_compat(&mut self, bytes: &[u8]) -> Vec<Vec<u8>> {
        let ty = bytes.first().copied().unwrap_or(0);
        if ty & TYPE_BUS != 0 {
            // Only the id counts; the fields come from the slot, whatever msg_size says.
            return match bytes.get(1).copied() {
                Some(bus_id::GET_DEVICES) => {
                    self.devices_window(le16(bytes, HEADER_SIZE), le16(bytes, HEADER_SIZE + 2))
                }
                Some(bus_id::PING) => self.encode(
                    0,
                    0,
                    Message::Pong {
                        data: le32(bytes, HEADER_SIZE),
                    },
                ),
                _ => {
                    self.stats.malformed += 1;
                    Vec::new()
                }
            };
        }
        let msg_size = usize::from(le16(bytes, 6));
        let needed = compat_request_len(bytes);
        let Some(needed) = needed.filter(|&n| {
            ty & TYPE_RESPONSE == 0
                && msg_size >= n
                && msg_size <= Mode::Compat.max_msg_size()
                && bytes.len() >= n
        }) else {
            self.stats.malformed += 1;
            return Vec::new();
        };
        // What the fields need, as a message of exactly that size for the codec.
        let mut exact = bytes[..needed].to_vec();
        exact[0] &= TYPE_BUS | TYPE_RESPONSE;
        exact[6..8].copy_from_slice(&(needed as u16).to_le_bytes());
        let Ok(frame) = Frame::decode(&exact) else {
            self.stats.malformed += 1;
            return Vec::new();
        };
        if frame.dev_num >= DEVICES_PER_FIFO {
            self.stats.malformed += 1;
            return Vec::new();
        }
        match self.device(frame.dev_num) {
            Some(dev) => dev.handle(&frame),
            None => self.absent_device(&frame),
        }
    }

    /// GET_DEVICES: the window clamped to the FIFO's device numbers. The device model never
    /// ends a walk with `next_offset` 0; strict mode does, once the window reaches the last
    /// device number (and echoes an offset beyond them).
    fn devices_window(&self, offset: u16, count: u16) -> Vec<Vec<u8>> {
        let first = offset.min(DEVICES_PER_FIFO);
        let count = count.min(DEVICES_PER_FIFO - first);
        let mut bitmap = vec![0u8; bitmap_len(count)];
        for n in 0..count {
            if self
                .devices
                .get(usize::from(first + n))
                .is_some_and(Option::is_some)
            {
                bitmap[usize::from(n / 8)] |= 1 << (n % 8);
            }
        }
        let (offset, next_offset) = match self.mode {
            Mode::Compat => (first, first + count),
            Mode::Strict if first + count >= DEVICES_PER_FIFO => (offset, 0),
            Mode::Strict => (offset, first + count),
        };
        self.encode(
            0,
            0,
            Message::Devices {
                offset,
                count,
                next_offset,
                bitmap: &bitmap,
            },
        )
    }

    /// Compat mode: what the device model answers for a device number with nothing behind it
    /// (it looks the device up per message and answers the getters with zeros).
    fn absent_device(&mut self, frame: &Frame<'_>) -> Vec<Vec<u8>> {
        let zeros = [0u32; COMPAT_FEATURE_BLOCKS as usize];
        let config = [0u8; 32];
        let msg = match frame.msg {
            Message::GetDeviceInfo => Message::DeviceInfo(DeviceInfo {
                device_id: 0,
                vendor_id: crate::transport::VENDOR_QEMU,
                num_feature_bits: crate::transport::FEATURE_BITS,
                config_size: 0,
                max_virtqueues: 0,
                admin_vq_start: 0,
                admin_vq_count: 0,
            }),
            Message::GetDeviceFeatures {
                block_index,
                num_blocks,
            } => Message::DeviceFeatures {
                block_index,
                features: Words::new(&zeros[..num_blocks.min(COMPAT_FEATURE_BLOCKS) as usize]),
            },
            Message::SetDriverFeatures { .. } => Message::DriverFeaturesSet,
            Message::GetDeviceStatus => Message::DeviceStatus { status: 0 },
            Message::GetConfig { offset, length } => match config.get(..length as usize) {
                Some(data) if data.len() <= max_config_chunk(self.mode.max_msg_size()) => {
                    Message::Config {
                        generation: 0,
                        offset,
                        data,
                    }
                }
                _ => {
                    self.stats.no_device += 1;
                    return Vec::new();
                }
            },
            Message::SetConfig { offset, data, .. } => Message::ConfigSet {
                generation: 0,
                offset,
                length: data.len() as u32,
                echo: Some(data),
            },
            Message::GetVqueue { index } => Message::Vqueue(VqueueInfo {
                index,
                max_size: 0,
                cur_size: 0,
                desc_addr: 0,
                driver_addr: 0,
                device_addr: 0,
            }),
            // SET_DEVICE_STATUS, SET_VQUEUE, RESET_VQUEUE, EVENT_AVAIL: nothing.
            _ => {
                self.stats.no_device += 1;
                return Vec::new();
            }
        };
        self.encode(frame.dev_num, frame.token, msg)
    }
}
