// SPDX-License-Identifier: GPL-2.0

//! KUnit suite `virtio_msg_amp_pci`: what the bus driver makes of what the device reports.
//!
//! GET_DEVICES replies are built byte by byte the way each version of QEMU's device model
//! sends them (see `enumerate.rs`), plus hostile ones, and replayed from the recording of the
//! device model's answers (`virtio_msg/device-model/01-enumeration.txt`) through the same
//! reply matching as the FIFO uses; the FIFO count is checked against the BAR1 sizes a device
//! can have; the device side's EVENT_DEVICE is checked against what the FIFO knows. The
//! queues themselves are covered by `virtio_msg_spsc`.

use core::cell::Cell;
use kernel::{
    prelude::*,
    virtio::msg::{
        exchange::Correlate,
        recording::{records, Record},
    },
};

use crate::{
    correlate::{Awaited, BusReplies, BusReply, Late},
    enumerate::{DeviceSet, DevicesReply, Enumeration, MAX_DEVICE_NUMBER, MAX_WINDOWS, WINDOW},
    hotplug::{self, apply, Change, Event, Events, QUEUED_EVENTS},
    keepalive::{Verdict, Watch, MAX_BACKOFF, MISSES, STABLE},
    layout::{fifos_in_bar, LayoutError, FIFO_WINDOW, MAX_MSG_SIZE},
    wire::{
        DecodeError,
        DeviceState::{Ready, Removed},
        Frame, Message,
    },
};

/// The device model's answers to GET_DEVICES windows and PING on two FIFOs.
const ENUMERATION: &str = include_str!("../virtio_msg/device-model/01-enumeration.txt");

/// The replies `recording` has on FIFO `fifo` to the GET_DEVICES window (`offset`, `count`).
///
/// The recorded requests carry their own tokens, so requests are compared with the token
/// left out. A window the recording does not have exactly is answered as the device model
/// answers every window: the recorded reply for the same offset whose window, clipped to its
/// 32 device numbers, is the same (`None` if there is none: the device stays silent).
fn recorded_devices_reply(
    recording: &str,
    fifo: u8,
    offset: u16,
    count: u16,
) -> Result<Option<[u8; MAX_MSG_SIZE]>> {
    let clipped = count.min(32u16.saturating_sub(offset));
    let mut asked = None;
    let mut found = None;
    for record in records(recording) {
        let (_, record) = record.map_err(|_| EINVAL)?;
        match record {
            Record::Request { fifo: f, msg } if f == fifo => {
                asked = match Frame::decode(msg.as_slice()) {
                    Ok(Frame {
                        msg:
                            Message::GetDevices {
                                offset: o,
                                count: c,
                            },
                        ..
                    }) if o == offset => Some(c),
                    _ => None,
                };
            }
            Record::Reply { fifo: f, msg } if f == fifo => {
                let Some(c) = asked.take() else { continue };
                let reply = parse(msg.as_slice())?;
                if c == count || (found.is_none() && reply.count == clipped) {
                    let mut slot = [0u8; MAX_MSG_SIZE];
                    slot.get_mut(..msg.as_slice().len())
                        .ok_or(EINVAL)?
                        .copy_from_slice(msg.as_slice());
                    found = Some(slot);
                    if c == count {
                        break;
                    }
                }
            }
            Record::NoReply => asked = None,
            _ => {}
        }
    }
    Ok(found)
}

/// Enumerates FIFO `fifo` of `recording` as the FIFO does: each request armed, each recorded
/// reply decoded and offered to the reply matching, the matched one taken. Returns the device
/// numbers found and how the walk went.
fn replay_enumeration(recording: &str, fifo: u8) -> Result<(KVec<u16>, u32)> {
    let mut walk = Enumeration::new();
    let mut replies = BusReplies::new();
    replies.set_in_step();
    let mut windows = 0;
    while let Some((offset, count)) = walk.request() {
        replies.arm(Awaited::Devices);
        if let Some(slot) = recorded_devices_reply(recording, fifo, offset, count)? {
            // Recorded with token 0, never the request's: matched all the same.
            assert_eq!(&slot[4..6], &[0, 0]);
            assert_eq!(replies.offer(bus_reply(&slot)?), Ok(()));
        }
        match replies.finish() {
            Some(BusReply::Devices(reply)) => walk.reply(&reply),
            _ => walk.abort(),
        }
        windows += 1;
    }
    let mut found = KVec::new();
    for n in walk.found().iter() {
        found.push(n, GFP_KERNEL)?;
    }
    Ok((found, windows))
}

/// A bus reply slot: `ty`, `msg_id`, token `token`, then `payload`.
fn bus_slot(ty: u8, msg_id: u8, token: u16, payload: &[u8]) -> [u8; MAX_MSG_SIZE] {
    let mut slot = [0u8; MAX_MSG_SIZE];
    slot[0] = ty;
    slot[1] = msg_id;
    slot[4..6].copy_from_slice(&token.to_le_bytes());
    slot[6..8].copy_from_slice(&(8 + payload.len() as u16).to_le_bytes());
    for (dst, &src) in slot[8..].iter_mut().zip(payload) {
        *dst = src;
    }
    slot
}

/// A GET_DEVICES reply as copied out of a slot: `msg_size` as given (the device may lie),
/// the bitmap bytes as given (as many as the slot holds), the rest of the slot zero.
fn reply(msg_size: u16, offset: u16, count: u16, next: u16, bitmap: &[u8]) -> [u8; MAX_MSG_SIZE] {
    let mut payload = [0u8; MAX_MSG_SIZE - 8];
    payload[0..2].copy_from_slice(&offset.to_le_bytes());
    payload[2..4].copy_from_slice(&count.to_le_bytes());
    payload[4..6].copy_from_slice(&next.to_le_bytes());
    for (dst, &src) in payload[6..].iter_mut().zip(bitmap) {
        *dst = src;
    }
    let mut slot = bus_slot(0b11, 0x02, 7, &payload);
    slot[6..8].copy_from_slice(&msg_size.to_le_bytes());
    slot
}

/// The bus reply in `slot`, decoded as the FIFO decodes it.
fn bus_reply(slot: &[u8]) -> Result<BusReply> {
    let frame = Frame::decode_lenient(slot).map_err(|_| EINVAL)?;
    BusReply::from_frame(&frame).ok_or(EINVAL)
}

/// The GET_DEVICES reply in `slot`, decoded as the FIFO decodes it.
fn parse(slot: &[u8]) -> Result<DevicesReply> {
    match bus_reply(slot)? {
        BusReply::Devices(reply) => Ok(reply),
        BusReply::Pong(_) => Err(EINVAL),
    }
}

/// The device numbers an enumeration found, and the requests (offset, count) it made.
type Walk = (KVec<u16>, KVec<(u16, u16)>);

/// Runs an enumeration against `device`, which answers a request (offset, count) with a
/// reply.
fn walk(device: impl Fn(u16, u16) -> [u8; MAX_MSG_SIZE]) -> Result<Walk> {
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
mod cases {
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
            Frame::decode_lenient(&[0b11, 2, 0, 0, 0, 0, 0, 0, 0, 0]),
            Err(DecodeError::ShortPayload {
                msg_id: 2,
                needed: 6,
                len: 2
            })
        );
        // Not a bus response, or not to GET_DEVICES: no GET_DEVICES reply.
        let mut slot = reply(16, 0, 8, 0, &[1]);
        slot[0] = 0b10;
        assert!(parse(&slot).is_err());
        slot[0] = 0b11;
        slot[1] = 0x03;
        assert!(parse(&slot).is_err());
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

    #[test]
    fn recorded_enumeration_finds_every_device() -> Result {
        let Some(Ok((_, Record::Setup(setup)))) = records(ENUMERATION).next() else {
            return Err(EINVAL);
        };
        let fifos = setup.num_fifos().ok_or(EINVAL)?;
        assert_eq!(fifos, 2);
        for fifo in 0..fifos {
            // The devices the recording placed behind this FIFO (in increasing order there).
            let mut placed = KVec::new();
            for d in setup.devices().filter(|d| d.fifo == fifo) {
                placed.push(d.dev_num, GFP_KERNEL)?;
            }
            let (found, windows) = replay_enumeration(ENUMERATION, fifo)?;
            assert!(!found.is_empty());
            assert_eq!(found, placed);
            // One window for the device model's 32 numbers, one empty window past them.
            assert_eq!(windows, 2);
        }
        Ok(())
    }

    #[test]
    fn recorded_malformed_enumerations_end() -> Result {
        // No reply at all: nothing found, no second request.
        let silent = "> fifo=0 0202000001010c00 00002000\n= no reply\n";
        let (found, windows) = replay_enumeration(silent, 0)?;
        assert!(found.is_empty());
        assert_eq!(windows, 1);
        // Short windows: asked for 32, answered 8 at a time (next_offset never 0), then
        // silence; what was found before the silence is kept.
        let short = "\
> fifo=0 0202000001010c00 00002000
< fifo=0 0302000000000f00 00000800080021
> fifo=0 0202000002010c00 08002000
< fifo=0 0302000000000f00 08000800100001
> fifo=0 0202000003010c00 10002000
= no reply
";
        let (found, windows) = replay_enumeration(short, 0)?;
        assert_eq!(&found[..], &[0, 5, 8]);
        assert_eq!(windows, 3);
        // A reply whose next_offset stops moving on: no loop.
        let stuck = "\
> fifo=0 0202000001010c00 00002000
< fifo=0 0302000000000f00 00000800080001
> fifo=0 0202000002010c00 08002000
< fifo=0 0302000000000f00 08000800080001
";
        let (found, windows) = replay_enumeration(stuck, 0)?;
        assert_eq!(&found[..], &[0, 8]);
        assert_eq!(windows, 2);
        Ok(())
    }

    #[test]
    fn bus_replies_are_matched_without_the_token() -> Result {
        let mut replies = BusReplies::new();
        replies.set_in_step();
        // GET_DEVICES by id, whatever the token (the device model sends 0).
        for token in [0, 0x1234] {
            replies.arm(Awaited::Devices);
            let reply = bus_reply(&bus_slot(0b11, 0x02, token, &[0, 0, 8, 0, 8, 0, 1]))?;
            assert_eq!(replies.offer(reply), Ok(()));
            assert_eq!(replies.finish(), Some(reply));
        }
        // PING by the data it echoes.
        replies.arm(Awaited::Pong(0x1122_3344));
        let other = bus_reply(&bus_slot(0b11, 0x03, 0, &0x1122_3343u32.to_le_bytes()))?;
        assert_eq!(replies.offer(other), Err(Late));
        let pong = bus_reply(&bus_slot(0b11, 0x03, 0, &0x1122_3344u32.to_le_bytes()))?;
        assert_eq!(pong, BusReply::Pong(0x1122_3344));
        assert_eq!(replies.offer(pong), Ok(()));
        assert_eq!(replies.finish(), Some(pong));
        // A late PING answer does not put GET_DEVICES out of step; requests and events are
        // no replies.
        assert!(!replies.needs_barrier());
        assert!(bus_reply(&bus_slot(0b10, 0x02, 0, &[0, 0, 8, 0])).is_err());
        assert!(bus_reply(&bus_slot(0b10, 0x40, 0, &[0, 0, 1, 0])).is_err());
        Ok(())
    }

    #[test]
    fn late_or_doubled_get_devices_reply_needs_a_barrier() -> Result {
        let reply = bus_reply(&bus_slot(0b11, 0x02, 0, &[0, 0, 8, 0, 8, 0, 1]))?;
        // A new FIFO may have a previous driver's request in flight.
        let mut replies = BusReplies::new();
        assert!(replies.needs_barrier());
        replies.set_in_step();
        // Timed out: its reply arrives later, is dropped, and the next GET_DEVICES must wait
        // for a barrier, during which GET_DEVICES replies are not taken.
        replies.arm(Awaited::Devices);
        assert_eq!(replies.finish(), None);
        assert!(replies.needs_barrier());
        replies.arm(Awaited::Pong(7));
        assert_eq!(replies.offer(reply), Err(Late));
        assert_eq!(replies.offer(BusReply::Pong(7)), Ok(()));
        // The barrier's answer itself puts the FIFO back in step.
        assert!(!replies.needs_barrier());
        assert!(replies.finish().is_some());
        // Answered twice: the second copy is dropped and a barrier is due.
        replies.arm(Awaited::Devices);
        assert_eq!(replies.offer(reply), Ok(()));
        assert_eq!(replies.finish(), Some(reply));
        assert!(!replies.needs_barrier());
        assert_eq!(replies.offer(reply), Err(Late));
        assert!(replies.needs_barrier());
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

    /// The device side's EVENT_DEVICE against what the FIFO knows: present, gone, back; a
    /// repeated or contradicting event and a number past the limit change nothing.
    #[test]
    fn device_events_follow_present_gone_back() -> Result {
        let ev = |dev_num, state| Event { dev_num, state };
        let mut devices = DeviceSet::default();
        assert_eq!(apply(&mut devices, ev(3, Ready)), Change::Add(3));
        assert_eq!(apply(&mut devices, ev(3, Ready)), Change::Ignore);
        assert_eq!(apply(&mut devices, ev(3, Removed)), Change::Remove(3));
        assert!(!devices.contains(3));
        assert_eq!(apply(&mut devices, ev(3, Removed)), Change::Ignore);
        assert_eq!(apply(&mut devices, ev(3, Ready)), Change::Add(3));
        // Removal of a device never added, and numbers the bus cannot have.
        assert_eq!(apply(&mut devices, ev(7, Removed)), Change::Ignore);
        for n in [MAX_DEVICE_NUMBER, u16::MAX] {
            assert_eq!(apply(&mut devices, ev(n, Ready)), Change::Ignore);
            assert_eq!(apply(&mut devices, ev(n, Removed)), Change::Ignore);
        }
        assert_eq!(devices.len(), 1);
        Ok(())
    }

    /// Events are applied in the order they came, and what did not fit the queue makes the
    /// FIFO enumerate again: the resync removes what is gone before it adds what is new.
    #[test]
    fn device_events_in_order_and_overflow_resyncs() -> Result {
        let mut q = Events::new();
        for i in 0..QUEUED_EVENTS as u16 {
            let state = if i % 2 == 0 { Ready } else { Removed };
            assert!(q.push(Event {
                dev_num: i / 2,
                state
            }));
        }
        assert!(!q.push(Event {
            dev_num: 1,
            state: Ready
        }));
        let events = q.take();
        assert!(events.overflowed());
        // Every device added, then removed, in that order: none left.
        let mut devices = DeviceSet::default();
        let changes: KVec<Change> = {
            let mut v = KVec::new();
            for e in events.iter() {
                v.push(apply(&mut devices, e), GFP_KERNEL)?;
            }
            v
        };
        assert_eq!(changes.first(), Some(&Change::Add(0)));
        assert_eq!(changes.get(1), Some(&Change::Remove(0)));
        assert_eq!(devices.len(), 0);
        // Taken: the queue is empty and no longer overflowed.
        let rest = q.take();
        assert_eq!((rest.iter().count(), rest.overflowed()), (0, false));

        let (mut had, mut found) = (DeviceSet::default(), DeviceSet::default());
        had.insert(1);
        had.insert(2);
        found.insert(2);
        found.insert(5);
        let mut resync = hotplug::resync(had, found);
        assert_eq!(resync.next(), Some(Change::Remove(1)));
        assert_eq!(resync.next(), Some(Change::Add(5)));
        assert_eq!(resync.next(), None);
        Ok(())
    }

    /// The keepalive over a FIFO's life: a device side that answers is alive; one that answers
    /// none of three PINGs in a row is gone; stopped, the FIFO looks for it once a period; up
    /// again, the count starts afresh.
    #[test]
    fn keepalive_present_gone_back() -> Result {
        let mut w = Watch::new(10);
        // Silent but answering: alive; the PING's own answer is not news next period.
        assert_eq!(w.period(false, || 10, || true), Verdict::Alive);
        for _ in 1..MISSES {
            assert_eq!(w.period(false, || 10, || false), Verdict::Missed);
        }
        assert_eq!(w.period(false, || 10, || false), Verdict::Gone);
        // Stopped: asked whether it is back, never PINGed from here.
        let pinged = Cell::new(false);
        for _ in 0..5 {
            assert_eq!(
                w.period(true, || 10, || pinged.replace(true)),
                Verdict::Retry
            );
        }
        assert!(!pinged.get());
        // Up again (it answered the reattach PING): one miss is not enough to drop it.
        assert_eq!(w.period(false, || 12, || false), Verdict::Alive);
        assert_eq!(w.period(false, || 12, || false), Verdict::Missed);
        assert_eq!(w.period(false, || 12, || true), Verdict::Alive);
        assert_eq!(w.period(false, || 12, || false), Verdict::Missed);
        Ok(())
    }

    /// Traffic is life: a period in which something came does not PING, and ends a run of
    /// misses; a device side that only answers every other PING is never gone.
    #[test]
    fn keepalive_traffic_and_answers_reset_the_misses() -> Result {
        let mut w = Watch::new(0);
        assert_eq!(w.period(false, || 0, || false), Verdict::Missed);
        assert_eq!(w.period(false, || 0, || false), Verdict::Missed);
        let pinged = Cell::new(false);
        assert_eq!(
            w.period(false, || 7, || pinged.replace(true)),
            Verdict::Alive
        );
        assert!(!pinged.get());
        for i in 0..10u32 {
            let verdict = w.period(false, || 7, || i % 2 == 1);
            assert_ne!(verdict, Verdict::Gone);
        }
        Ok(())
    }

    /// A device side that comes back and stops again at once is looked for less and less
    /// often (every 2, 4, ... periods, at most `MAX_BACKOFF`); one that stays up `STABLE`
    /// periods is looked for every period again at its next stop.
    #[test]
    fn keepalive_backs_off_from_a_side_that_keeps_failing() -> Result {
        let mut w = Watch::new(0);
        // Stable since the load: every period.
        for _ in 0..3 {
            assert_eq!(w.period(true, || 0, || true), Verdict::Retry);
        }
        let mut gap = 1;
        for _ in 0..10 {
            // Back for one period, then stopped again.
            assert_eq!(w.period(false, || 0, || true), Verdict::Alive);
            gap = (gap * 2).min(MAX_BACKOFF);
            for _ in 0..2 {
                for _ in 1..gap {
                    assert_eq!(w.period(true, || 0, || true), Verdict::Down);
                }
                assert_eq!(w.period(true, || 0, || true), Verdict::Retry);
            }
        }
        assert_eq!(gap, MAX_BACKOFF);
        // Up long enough: the next stop is looked for every period.
        for _ in 0..STABLE {
            assert_eq!(w.period(false, || 0, || true), Verdict::Alive);
        }
        assert_eq!(w.period(true, || 0, || true), Verdict::Retry);
        assert_eq!(w.period(true, || 0, || true), Verdict::Retry);
        Ok(())
    }
}
