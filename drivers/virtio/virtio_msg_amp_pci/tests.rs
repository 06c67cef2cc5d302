// SPDX-License-Identifier: GPL-2.0

//! KUnit suite `virtio_msg_amp_pci`: what the bus driver makes of what the device reports.
//!
//! GET_DEVICES replies are built byte by byte the way each version of QEMU's device model
//! sends them (see `enumerate.rs`), plus hostile ones; the FIFO count is checked against the
//! BAR1 sizes a device can have. The queues themselves are covered by `virtio_msg_spsc`.

use kernel::prelude::*;

use crate::{
    enumerate::{DevicesReply, Enumeration, ReplyError, MAX_DEVICE_NUMBER, MAX_WINDOWS, WINDOW},
    fifo::MAX_MSG_SIZE,
    layout::{fifos_in_bar, LayoutError, FIFO_WINDOW},
};

/// A GET_DEVICES reply as copied out of a slot: `msg_size` as given (the device may lie),
/// the bitmap bytes as given, the rest of the slot zero.
fn reply(msg_size: u16, offset: u16, count: u16, next: u16, bitmap: &[u8]) -> [u8; MAX_MSG_SIZE] {
    let mut slot = [0u8; MAX_MSG_SIZE];
    slot[0] = 0b11;
    slot[1] = 0x02;
    slot[4..6].copy_from_slice(&7u16.to_le_bytes());
    slot[6..8].copy_from_slice(&msg_size.to_le_bytes());
    slot[8..10].copy_from_slice(&offset.to_le_bytes());
    slot[10..12].copy_from_slice(&count.to_le_bytes());
    slot[12..14].copy_from_slice(&next.to_le_bytes());
    for (dst, &src) in slot[14..].iter_mut().zip(bitmap) {
        *dst = src;
    }
    slot
}

fn parse(slot: &[u8]) -> Result<DevicesReply> {
    DevicesReply::parse(slot).map_err(|_| EINVAL)
}

/// Runs an enumeration against `device`, which answers a request (offset, count) with a
/// reply; returns the device numbers found and the requests made.
fn walk(device: impl Fn(u16, u16) -> [u8; MAX_MSG_SIZE]) -> Result<(KVec<u16>, KVec<(u16, u16)>)> {
    let mut e = Enumeration::new();
    let mut requests = KVec::new();
    while let Some((offset, count)) = e.request() {
        requests.push((offset, count), GFP_KERNEL)?;
        e.reply(&parse(&device(offset, count))?);
        if requests.len() > 64 {
            return Err(EINVAL);
        }
    }
    let mut found = KVec::new();
    for n in e.found().iter() {
        found.push(n, GFP_KERNEL)?;
    }
    Ok((found, requests))
}

#[kunit_tests(virtio_msg_amp_pci)]
mod tests {
    use super::*;

    /// v2: the window asked for, clipped to the 32 slots, next_offset = offset + count.
    #[test]
    fn v2_windows() -> Result {
        // Devices 0, 5 and 31.
        let slots: u32 = 1 | 1 << 5 | 1 << 31;
        let (found, requests) = walk(|offset, count| {
            let count = count.min(32u16.saturating_sub(offset));
            let bits = if offset == 0 {
                slots.to_le_bytes()
            } else {
                [0; 4]
            };
            let len = usize::from(count).div_ceil(8);
            reply(14 + len as u16, offset, count, offset + count, &bits[..len])
        })?;
        assert_eq!(&found[..], &[0, 5, 31]);
        // The second window is past the slots: an empty answer ends the walk.
        assert_eq!(&requests[..], &[(0, WINDOW), (32, WINDOW)]);
        Ok(())
    }

    /// v1: the offset is ignored, at least 32 slots are reported from 0, next_offset is 0 and
    /// msg_size is wrong. One request, and the bitmap is read from what was received.
    #[test]
    fn v1_replies() -> Result {
        let (found, requests) = walk(|_, _| reply(8, 0, 64, 0, &[0b10, 0, 0, 0x80, 0, 0, 0, 0]))?;
        assert_eq!(&found[..], &[1, 31]);
        assert_eq!(requests.len(), 1);

        // A msg_size beyond the slot does not make the parser read beyond it either.
        let r = parse(&reply(0xffff, 0, 0xffff, 0, &[0xff; 34]))?;
        assert_eq!(r.present().count(), (MAX_MSG_SIZE - 14) * 8);
        Ok(())
    }

    /// Bits beyond `count` mean nothing, and `count` beyond the bitmap reads no further.
    #[test]
    fn bitmap_bounded_by_count_and_received_bytes() -> Result {
        let r = parse(&reply(16, 8, 3, 0, &[0xff, 0xff]))?;
        let mut present = KVec::new();
        for n in r.present() {
            present.push(n, GFP_KERNEL)?;
        }
        assert_eq!(&present[..], &[8, 9, 10]);

        // 10 bytes received in all: 14 needed before the bitmap even starts.
        assert_eq!(
            DevicesReply::parse(&[0b11, 2, 0, 0, 0, 0, 0, 0, 0, 0]),
            Err(ReplyError::Short)
        );
        // Not a bus response.
        let mut slot = reply(16, 0, 8, 0, &[1]);
        slot[0] = 0b10;
        assert_eq!(DevicesReply::parse(&slot), Err(ReplyError::NotDevices));
        slot[0] = 0b11;
        slot[1] = 0x03;
        assert_eq!(DevicesReply::parse(&slot), Err(ReplyError::NotDevices));
        Ok(())
    }

    /// A device that keeps pointing back, or forward for ever, cannot keep the driver busy,
    /// and cannot make it register device numbers beyond the limit.
    #[test]
    fn hostile_walks_end() -> Result {
        // next_offset pointing at itself.
        let (_, requests) = walk(|offset, _| reply(18, offset, 32, offset, &[1, 0, 0, 0]))?;
        assert_eq!(requests.len(), 1);

        // Moving forward by one each time: bounded by the window limit.
        let (found, requests) = walk(|offset, _| reply(15, offset, 8, offset + 1, &[1]))?;
        assert_eq!(requests.len(), MAX_WINDOWS as usize);
        assert_eq!(found.len(), MAX_WINDOWS as usize);

        // A window that starts near the end of the numbers: nothing at or beyond the limit.
        let mut e = Enumeration::new();
        e.reply(&parse(&reply(
            18,
            MAX_DEVICE_NUMBER - 8,
            32,
            0,
            &[0xff; 4],
        ))?);
        assert_eq!(e.found().len(), 8);
        assert_eq!(e.ignored(), 24);
        assert_eq!(e.request(), None);
        Ok(())
    }

    /// A device that does not answer: the walk ends with what was found.
    #[test]
    fn abort_keeps_what_was_found() -> Result {
        let mut e = Enumeration::new();
        e.reply(&parse(&reply(18, 0, 32, 32, &[0b100, 0, 0, 0]))?);
        assert_eq!(e.request(), Some((32, WINDOW)));
        e.abort();
        assert_eq!(e.request(), None);
        assert!(e.found().contains(2));
        assert_eq!(e.found().len(), 1);
        Ok(())
    }

    /// BAR1 holds 16 KiB per FIFO, rounded up to a power of two; at most 8 FIFOs are used.
    #[test]
    fn fifo_count_from_bar1() -> Result {
        assert_eq!(fifos_in_bar(FIFO_WINDOW), Ok(1));
        assert_eq!(fifos_in_bar(4 * FIFO_WINDOW), Ok(4));
        assert_eq!(fifos_in_bar(1 << 30), Ok(8));
        assert_eq!(fifos_in_bar(FIFO_WINDOW / 2), Err(LayoutError::TooSmall));
        assert_eq!(fifos_in_bar(0), Err(LayoutError::TooSmall));
        assert_eq!(
            fifos_in_bar(FIFO_WINDOW + 4096),
            Err(LayoutError::Unaligned)
        );
        Ok(())
    }
}
