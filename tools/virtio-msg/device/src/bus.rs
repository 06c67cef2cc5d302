// SPDX-License-Identifier: GPL-2.0 OR MIT

//! One FIFO of the AMP PCI device: a virtio-msg bus with up to 32 device numbers.

use crate::{transport::TransportDevice, Backend, Mode};
use virtio_msg_wire::{bitmap_len, Class, Frame, Message};

/// Device numbers per FIFO in the QEMU device model.
pub const DEVICES_PER_FIFO: u16 = 32;

/// Counters of what the device side dropped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BusStats {
    /// Messages that did not decode.
    pub malformed: u64,
    /// Transport messages for a device number with no device.
    pub no_device: u64,
}

/// The device side of one FIFO.
pub struct FifoBus {
    mode: Mode,
    devices: Vec<Option<TransportDevice<Box<dyn Backend + Send>>>>,
    stats: BusStats,
}

impl FifoBus {
    /// An empty bus.
    pub fn new(mode: Mode) -> Self {
        Self {
            mode,
            devices: (0..DEVICES_PER_FIFO).map(|_| None).collect(),
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

    fn reply(&self, token: u16, msg: Message<'_>) -> Vec<Vec<u8>> {
        let frame = Frame {
            dev_num: 0,
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
        let Ok(frame) = Frame::decode(bytes) else {
            self.stats.malformed += 1;
            return Vec::new();
        };
        if frame.msg.id().0 == Class::Bus {
            return self.handle_bus(&frame);
        }
        match self
            .devices
            .get_mut(usize::from(frame.dev_num))
            .and_then(Option::as_mut)
        {
            Some(dev) => dev.handle(&frame),
            None => {
                self.stats.no_device += 1;
                Vec::new()
            }
        }
    }

    fn handle_bus(&mut self, frame: &Frame<'_>) -> Vec<Vec<u8>> {
        match frame.msg {
            Message::GetDevices { offset, count } => {
                // As the device model (v2): the requested window, clipped to the FIFO's slots.
                let count = count.min(DEVICES_PER_FIFO.saturating_sub(offset));
                let mut bitmap = vec![0u8; bitmap_len(count)];
                for n in 0..count {
                    if self
                        .devices
                        .get(usize::from(offset + n))
                        .is_some_and(Option::is_some)
                    {
                        bitmap[usize::from(n / 8)] |= 1 << (n % 8);
                    }
                }
                let next_offset = offset.saturating_add(count);
                self.reply(
                    frame.token,
                    Message::Devices {
                        offset,
                        count,
                        next_offset,
                        bitmap: &bitmap,
                    },
                )
            }
            Message::Ping { data } => self.reply(frame.token, Message::Pong { data }),
            _ => Vec::new(),
        }
    }
}
