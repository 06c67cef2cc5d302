// SPDX-License-Identifier: GPL-2.0

//! Enumeration of the device numbers behind a FIFO with GET_DEVICES.
//!
//! The driver asks for a window of device numbers (`offset`, `count`) and the device answers
//! with a bitmap and where the next window starts (`next_offset`, 0 when there is none). Two
//! versions of QEMU's device model are in use and they answer differently:
//!
//! - v2 answers the window asked for, clipped to its 32 slots, with `next_offset = offset +
//!   count`; asked past its slots it answers an empty window.
//! - v1 ignores the offset, reports at least 32 slots from 0, sets `next_offset` to 0 and may
//!   misreport `msg_size`.
//!
//! So a reply is decoded leniently (`Frame::decode_lenient()` of the codec) and bounded by
//! what was really received, not by its own size fields: the bitmap is `ceil(count / 8)`
//! bytes but never more than the received bytes hold, `msg_size` is not trusted, and the
//! window the reply claims is what its bits mean. The walk stops when the device says so,
//! when a reply makes no progress, after [`MAX_WINDOWS`] windows, or at
//! [`MAX_DEVICE_NUMBER`]: a hostile device cannot keep the driver enumerating, nor make it
//! register thousands of devices.

use crate::{layout::MAX_MSG_SIZE, wire::max_devices_bitmap};

/// Device numbers asked for per GET_DEVICES request (the device model has 32 per FIFO).
pub(crate) const WINDOW: u16 = 32;
/// Device numbers from this one on are ignored.
pub(crate) const MAX_DEVICE_NUMBER: u16 = 256;
/// Most GET_DEVICES requests per enumeration.
pub(crate) const MAX_WINDOWS: u32 = 16;

/// Bitmap bytes that fit a slot.
const MAX_BITMAP: usize = max_devices_bitmap(MAX_MSG_SIZE);

/// A GET_DEVICES reply, copied out of the decoded message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct DevicesReply {
    /// First device number of the window the bitmap describes.
    pub(crate) offset: u16,
    /// Device numbers in that window.
    pub(crate) count: u16,
    /// Where the next window starts; 0 when enumeration is complete.
    pub(crate) next_offset: u16,
    bitmap: [u8; MAX_BITMAP],
    /// Bitmap bytes really received.
    bitmap_len: usize,
}

impl DevicesReply {
    /// The reply with these fields and (what was received of) `bitmap`, of which the bytes
    /// beyond a slot's worth are left out.
    pub(crate) fn new(offset: u16, count: u16, next_offset: u16, bitmap: &[u8]) -> Self {
        let mut copy = [0u8; MAX_BITMAP];
        let bitmap_len = bitmap.len().min(MAX_BITMAP);
        copy[..bitmap_len].copy_from_slice(&bitmap[..bitmap_len]);
        Self {
            offset,
            count,
            next_offset,
            bitmap: copy,
            bitmap_len,
        }
    }

    /// The device numbers present, in increasing order: bits within `count` and within the
    /// received bitmap only.
    pub(crate) fn present(&self) -> impl Iterator<Item = u16> + '_ {
        let bits = usize::from(self.count).min(self.bitmap_len * 8);
        (0..bits)
            .filter(|&bit| {
                self.bitmap
                    .get(bit / 8)
                    .is_some_and(|byte| byte & (1 << (bit % 8)) != 0)
            })
            .filter_map(|bit| self.offset.checked_add(u16::try_from(bit).ok()?))
    }
}

/// Device numbers found so far, as a bitmap.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct DeviceSet([u64; MAX_DEVICE_NUMBER as usize / 64]);

impl DeviceSet {
    /// The word of the bitmap that holds `dev_num` (`None` from [`MAX_DEVICE_NUMBER`] on),
    /// and its bit there.
    fn word_mut(&mut self, dev_num: u16) -> Option<(&mut u64, u64)> {
        let word = self.0.get_mut(usize::from(dev_num) / 64)?;
        Some((word, 1 << (dev_num % 64)))
    }

    /// Adds `dev_num`; numbers from [`MAX_DEVICE_NUMBER`] on are ignored. Returns whether it
    /// was added (`false`: out of range, or already there).
    pub(crate) fn insert(&mut self, dev_num: u16) -> bool {
        self.word_mut(dev_num).is_some_and(|(word, bit)| {
            let added = *word & bit == 0;
            *word |= bit;
            added
        })
    }

    /// Takes `dev_num` out; returns whether it was there.
    pub(crate) fn remove(&mut self, dev_num: u16) -> bool {
        self.word_mut(dev_num).is_some_and(|(word, bit)| {
            let had = *word & bit != 0;
            *word &= !bit;
            had
        })
    }

    /// Whether `dev_num` is in the set.
    pub(crate) fn contains(&self, dev_num: u16) -> bool {
        self.0
            .get(usize::from(dev_num) / 64)
            .is_some_and(|word| word & (1 << (dev_num % 64)) != 0)
    }

    /// The device numbers, in increasing order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = u16> + '_ {
        (0..MAX_DEVICE_NUMBER).filter(|&n| self.contains(n))
    }

    /// How many device numbers the set holds.
    pub(crate) fn len(&self) -> u32 {
        self.0.iter().map(|word| word.count_ones()).sum()
    }
}

/// The state of one enumeration: which window to ask for next, and what was found.
#[derive(Debug)]
pub(crate) struct Enumeration {
    /// The window to ask for next; `None` when done.
    next: Option<u16>,
    windows: u32,
    found: DeviceSet,
    /// Device numbers a reply reported beyond [`MAX_DEVICE_NUMBER`].
    ignored: u32,
}

impl Enumeration {
    /// An enumeration that starts at device number 0.
    pub(crate) fn new() -> Self {
        Self {
            next: Some(0),
            windows: 0,
            found: DeviceSet::default(),
            ignored: 0,
        }
    }

    /// The next GET_DEVICES request to send, as (`offset`, `count`); `None` when done.
    pub(crate) fn request(&self) -> Option<(u16, u16)> {
        self.next.map(|offset| (offset, WINDOW))
    }

    /// Takes the reply to the request last returned by [`Enumeration::request`].
    pub(crate) fn reply(&mut self, reply: &DevicesReply) {
        let Some(asked) = self.next else {
            return;
        };
        for dev_num in reply.present() {
            if dev_num >= MAX_DEVICE_NUMBER {
                self.ignored += 1;
            } else {
                self.found.insert(dev_num);
            }
        }
        self.windows += 1;
        let next = reply.next_offset;
        // Done: the device says so (v1 always does), or it answered an empty window (v2 past
        // its slots), or the reply would not move forward (a loop), or the limits are reached.
        self.next = (next != 0
            && reply.count != 0
            && next > asked
            && next < MAX_DEVICE_NUMBER
            && self.windows < MAX_WINDOWS)
            .then_some(next);
    }

    /// Gives up: the device did not answer.
    pub(crate) fn abort(&mut self) {
        self.next = None;
    }

    /// What was found.
    pub(crate) fn found(&self) -> &DeviceSet {
        &self.found
    }

    /// Device numbers reported beyond [`MAX_DEVICE_NUMBER`] (and ignored).
    pub(crate) fn ignored(&self) -> u32 {
        self.ignored
    }
}
