// SPDX-License-Identifier: GPL-2.0 OR MIT

//! Property tests: every message survives encode/decode unchanged, and any
//! bytes at all either decode to a message that re-encodes consistently or
//! are rejected, without panicking.

use proptest::prelude::*;
use virtio_msg_wire::{
    AvailNext, DeviceInfo, DeviceState, Frame, Header, Message, VqueueConfig, VqueueInfo, Words,
    HEADER_SIZE,
};

/// A message with owned variable-length data, from which a borrowed
/// [`Message`] is built.
#[derive(Clone, Debug)]
enum Owned {
    Fixed(Message<'static>),
    SetDriverFeatures(u32, Vec<u32>),
    DeviceFeatures(u32, Vec<u32>),
    SetConfig(u32, u32, Vec<u8>),
    Config(u32, u32, Vec<u8>),
    ConfigSet(u32, u32, u32, Option<Vec<u8>>),
    EventConfig(u32, u32, u32, u32, Option<Vec<u8>>),
    Devices(u16, u16, u16, Vec<u8>),
}

impl Owned {
    fn msg(&self) -> Message<'_> {
        match self {
            Owned::Fixed(m) => *m,
            Owned::SetDriverFeatures(b, w) => Message::SetDriverFeatures {
                block_index: *b,
                features: Words::new(w),
            },
            Owned::DeviceFeatures(b, w) => Message::DeviceFeatures {
                block_index: *b,
                features: Words::new(w),
            },
            Owned::SetConfig(g, o, d) => Message::SetConfig {
                generation: *g,
                offset: *o,
                data: d,
            },
            Owned::Config(g, o, d) => Message::Config {
                generation: *g,
                offset: *o,
                data: d,
            },
            Owned::ConfigSet(g, o, l, e) => Message::ConfigSet {
                generation: *g,
                offset: *o,
                length: *l,
                echo: e.as_deref(),
            },
            Owned::EventConfig(s, g, o, l, d) => Message::EventConfig {
                device_status: *s,
                generation: *g,
                offset: *o,
                length: *l,
                data: d.as_deref(),
            },
            Owned::Devices(o, c, n, b) => Message::Devices {
                offset: *o,
                count: *c,
                next_offset: *n,
                bitmap: b,
            },
        }
    }

    /// Whether the message is itself addressed to the bus (dev_num 0).
    fn is_bus(&self) -> bool {
        self.msg().id().0 == virtio_msg_wire::Class::Bus
    }
}

fn fixed() -> impl Strategy<Value = Message<'static>> {
    let a = any::<u32>;
    prop_oneof![
        Just(Message::GetDeviceInfo),
        (a(), a()).prop_map(|(block_index, num_blocks)| Message::GetDeviceFeatures {
            block_index,
            num_blocks
        }),
        (a(), a()).prop_map(|(offset, length)| Message::GetConfig { offset, length }),
        Just(Message::GetDeviceStatus),
        a().prop_map(|status| Message::SetDeviceStatus { status }),
        a().prop_map(|index| Message::GetVqueue { index }),
        (a(), a(), any::<[u64; 3]>()).prop_map(|(index, size, [d, r, v])| Message::SetVqueue(
            VqueueConfig {
                index,
                size,
                desc_addr: d,
                driver_addr: r,
                device_addr: v
            }
        )),
        a().prop_map(|index| Message::ResetVqueue { index }),
        a().prop_map(|index| Message::GetShm { index }),
        (any::<[u32; 5]>(), any::<u16>(), any::<u16>()).prop_map(|([d, v, f, c, q], s, n)| {
            Message::DeviceInfo(DeviceInfo {
                device_id: d,
                vendor_id: v,
                num_feature_bits: f,
                config_size: c,
                max_virtqueues: q,
                admin_vq_start: s,
                admin_vq_count: n,
            })
        }),
        Just(Message::DriverFeaturesSet),
        a().prop_map(|status| Message::DeviceStatus { status }),
        a().prop_map(|status| Message::DeviceStatusSet { status }),
        (any::<[u32; 3]>(), any::<[u64; 3]>()).prop_map(|([i, m, c], [d, r, v])| Message::Vqueue(
            VqueueInfo {
                index: i,
                max_size: m,
                cur_size: c,
                desc_addr: d,
                driver_addr: r,
                device_addr: v
            }
        )),
        Just(Message::VqueueSet),
        Just(Message::VqueueReset),
        (a(), a(), a()).prop_map(|(index, length, address)| Message::Shm {
            index,
            length,
            address
        }),
        (a(), 0u32..(1 << 31), any::<bool>()).prop_map(|(vq_index, off, wrap)| {
            Message::EventAvail {
                vq_index,
                next: AvailNext::new(off, wrap).unwrap(),
            }
        }),
        a().prop_map(|vq_index| Message::EventUsed { vq_index }),
        (any::<u16>(), any::<u16>())
            .prop_map(|(offset, count)| Message::GetDevices { offset, count }),
        a().prop_map(|data| Message::Ping { data }),
        a().prop_map(|data| Message::Pong { data }),
        (
            any::<u16>(),
            prop_oneof![Just(DeviceState::Ready), Just(DeviceState::Removed)]
        )
            .prop_map(|(device_number, state)| Message::EventDevice {
                device_number,
                state
            }),
    ]
}

fn owned() -> impl Strategy<Value = Owned> {
    let a = any::<u32>;
    let bytes = || prop::collection::vec(any::<u8>(), 0..300);
    let words = || prop::collection::vec(any::<u32>(), 0..80);
    prop_oneof![
        fixed().prop_map(Owned::Fixed),
        (a(), words()).prop_map(|(b, w)| Owned::SetDriverFeatures(b, w)),
        (a(), words()).prop_map(|(b, w)| Owned::DeviceFeatures(b, w)),
        (a(), a(), bytes()).prop_map(|(g, o, d)| Owned::SetConfig(g, o, d)),
        (a(), a(), bytes()).prop_map(|(g, o, d)| Owned::Config(g, o, d)),
        (a(), a(), bytes(), any::<bool>()).prop_map(|(g, o, d, echo)| {
            Owned::ConfigSet(
                g,
                o,
                d.len() as u32,
                if echo && !d.is_empty() { Some(d) } else { None },
            )
        }),
        (a(), a(), a(), bytes(), any::<bool>()).prop_map(|(s, g, o, d, with)| {
            Owned::EventConfig(
                s,
                g,
                o,
                d.len() as u32,
                if with && !d.is_empty() { Some(d) } else { None },
            )
        }),
        (any::<u16>(), 0u16..2048, any::<u16>()).prop_flat_map(|(o, c, n)| {
            prop::collection::vec(any::<u8>(), c.div_ceil(8) as usize)
                .prop_map(move |b| Owned::Devices(o, c, n, b))
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(20_000))]

    /// encode then decode gives back the same frame, with a header that
    /// describes it exactly.
    #[test]
    fn round_trip(m in owned(), dev in any::<u16>(), token in any::<u16>()) {
        let frame = Frame { dev_num: if m.is_bus() { 0 } else { dev }, token, msg: m.msg() };
        let mut out = vec![0u8; HEADER_SIZE + 700];
        let n = frame.encode(&mut out).unwrap();
        prop_assert_eq!(Ok(n), frame.encoded_len());
        let header = Header::decode(&out[..n]).unwrap();
        prop_assert_eq!(usize::from(header.msg_size), n);
        prop_assert_eq!(Frame::decode(&out[..n]), Ok(frame));
        // Trailing bytes after msg_size (a slot) change nothing.
        prop_assert_eq!(Frame::decode(&out), Ok(frame));
        // Every truncation is rejected.
        for len in 0..n {
            prop_assert!(Frame::decode(&out[..len]).is_err());
        }
    }

    /// Any bytes: rejected, or a frame that re-encodes to a message decoding
    /// to the same frame.
    #[test]
    fn arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..120)) {
        if let Ok(frame) = Frame::decode(&bytes) {
            let mut out = vec![0u8; 200];
            let n = frame.encode(&mut out).unwrap();
            prop_assert!(n <= bytes.len());
            prop_assert_eq!(Frame::decode(&out[..n]), Ok(frame));
            // Only reserved bits and fields may differ from the input.
            prop_assert_eq!(&out[1..8], &bytes[1..8]);
        }
    }

    /// Mutating a valid message never panics, whatever it does to it.
    #[test]
    fn mutated_messages(m in owned(), flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4)) {
        let frame = Frame { dev_num: 0, token: 1, msg: m.msg() };
        let mut out = vec![0u8; HEADER_SIZE + 700];
        let n = frame.encode(&mut out).unwrap();
        let buf = &mut out[..n];
        for (i, b) in flips {
            let i = i.index(n);
            buf[i] ^= b;
        }
        let _ = Frame::decode(buf);
    }
}
