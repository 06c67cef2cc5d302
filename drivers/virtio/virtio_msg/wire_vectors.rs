// SPDX-License-Identifier: GPL-2.0 OR MIT

//! Known-answer vectors for the virtio-msg wire format.
//!
//! Byte layouts written out by hand from the message tables of the
//! virtio-msg transport (header, transport messages, bus messages), so that
//! the codec is checked against the format rather than against itself. The
//! file is shared, like `wire.rs`: the KUnit suite `virtio_msg_wire` and the
//! cargo tests of `tools/virtio-msg/wire` both run every vector.

use super::wire::{
    AvailNext, Class, DecodeError, DeviceInfo, DeviceState, EncodeError, Frame, Kind, Message,
    VqueueConfig, VqueueInfo, Words,
};

/// A message and its exact encoding: decoding `bytes` gives `frame`, and
/// encoding `frame` gives `bytes`.
pub struct Vector {
    /// What the vector shows.
    pub name: &'static str,
    /// The encoding.
    pub bytes: &'static [u8],
    /// The message.
    pub frame: Frame<'static>,
}

/// Received bytes that decode to `frame` but are not what the encoder
/// writes (reserved bits set, slot padding after the message).
pub type Lenient = Vector;

/// Received bytes that must be rejected with `error`.
pub struct Malformed {
    /// What is wrong with the bytes.
    pub name: &'static str,
    /// The bytes.
    pub bytes: &'static [u8],
    /// The error decoding must return.
    pub error: DecodeError,
}

/// A message the encoder must refuse with `error`.
pub struct Unencodable {
    /// What is wrong with the message.
    pub name: &'static str,
    /// The message.
    pub frame: Frame<'static>,
    /// Size of the output buffer.
    pub out_len: usize,
    /// The error encoding must return.
    pub error: EncodeError,
}

const fn frame(dev_num: u16, token: u16, msg: Message<'static>) -> Frame<'static> {
    Frame {
        dev_num,
        token,
        msg,
    }
}

/// Transport requests, driver to device (device 3, token 0x1234).
pub static TRANSPORT_REQUESTS: &[Vector] = &[
    Vector {
        name: "GET_DEVICE_INFO request",
        bytes: &[0x00, 0x02, 0x03, 0x00, 0x34, 0x12, 0x08, 0x00],
        frame: frame(3, 0x1234, Message::GetDeviceInfo),
    },
    Vector {
        name: "GET_DEVICE_FEATURES request",
        bytes: &[
            0x00, 0x03, 0x03, 0x00, 0x34, 0x12, 0x10, 0x00, //
            0x00, 0x00, 0x00, 0x00, // block_index 0
            0x02, 0x00, 0x00, 0x00, // num_blocks 2
        ],
        frame: frame(
            3,
            0x1234,
            Message::GetDeviceFeatures {
                block_index: 0,
                num_blocks: 2,
            },
        ),
    },
    Vector {
        name: "SET_DRIVER_FEATURES request",
        bytes: &[
            0x00, 0x04, 0x03, 0x00, 0x34, 0x12, 0x18, 0x00, //
            0x01, 0x00, 0x00, 0x00, // block_index 1
            0x02, 0x00, 0x00, 0x00, // num_blocks 2
            0x01, 0x00, 0x00, 0x00, // bit 32: VIRTIO_F_VERSION_1
            0x00, 0x00, 0x00, 0x80, // bit 95
        ],
        frame: frame(
            3,
            0x1234,
            Message::SetDriverFeatures {
                block_index: 1,
                features: Words::new(&[1, 0x8000_0000]),
            },
        ),
    },
    Vector {
        name: "GET_CONFIG request",
        bytes: &[
            0x00, 0x05, 0x03, 0x00, 0x34, 0x12, 0x10, 0x00, //
            0x04, 0x00, 0x00, 0x00, // offset 4
            0x1c, 0x00, 0x00, 0x00, // length 28
        ],
        frame: frame(
            3,
            0x1234,
            Message::GetConfig {
                offset: 4,
                length: 28,
            },
        ),
    },
    Vector {
        name: "SET_CONFIG request",
        bytes: &[
            0x00, 0x06, 0x03, 0x00, 0x34, 0x12, 0x16, 0x00, //
            0x07, 0x00, 0x00, 0x00, // generation 7
            0x10, 0x00, 0x00, 0x00, // offset 16
            0x02, 0x00, 0x00, 0x00, // length 2
            0xab, 0xcd, // data
        ],
        frame: frame(
            3,
            0x1234,
            Message::SetConfig {
                generation: 7,
                offset: 16,
                data: &[0xab, 0xcd],
            },
        ),
    },
    Vector {
        name: "GET_DEVICE_STATUS request",
        bytes: &[0x00, 0x07, 0x03, 0x00, 0x34, 0x12, 0x08, 0x00],
        frame: frame(3, 0x1234, Message::GetDeviceStatus),
    },
    Vector {
        name: "SET_DEVICE_STATUS request",
        bytes: &[
            0x00, 0x08, 0x03, 0x00, 0x34, 0x12, 0x0c, 0x00, //
            0x0b, 0x00, 0x00, 0x00, // ACKNOWLEDGE | DRIVER | FEATURES_OK
        ],
        frame: frame(3, 0x1234, Message::SetDeviceStatus { status: 0x0b }),
    },
    Vector {
        name: "GET_VQUEUE request",
        bytes: &[
            0x00, 0x09, 0x03, 0x00, 0x34, 0x12, 0x0c, 0x00, //
            0x01, 0x00, 0x00, 0x00, // index 1
        ],
        frame: frame(3, 0x1234, Message::GetVqueue { index: 1 }),
    },
    Vector {
        name: "SET_VQUEUE request (48 bytes, reserved words zero)",
        bytes: &[
            0x00, 0x0a, 0x03, 0x00, 0x34, 0x12, 0x30, 0x00, //
            0x01, 0x00, 0x00, 0x00, // index 1
            0x00, 0x00, 0x00, 0x00, // reserved
            0x00, 0x01, 0x00, 0x00, // size 256
            0x00, 0x00, 0x00, 0x00, // reserved
            0x00, 0x10, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, // desc 0x1_0000_1000
            0x00, 0x20, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // driver 0x2000
            0x00, 0x30, 0x00, 0x00, 0x00, 0x00, 0x00, 0x80, // device 0x8000_0000_0000_3000
        ],
        frame: frame(
            3,
            0x1234,
            Message::SetVqueue(VqueueConfig {
                index: 1,
                size: 256,
                desc_addr: 0x1_0000_1000,
                driver_addr: 0x2000,
                device_addr: 0x8000_0000_0000_3000,
            }),
        ),
    },
    Vector {
        name: "RESET_VQUEUE request",
        bytes: &[
            0x00, 0x0b, 0x03, 0x00, 0x34, 0x12, 0x0c, 0x00, //
            0x02, 0x00, 0x00, 0x00, // index 2
        ],
        frame: frame(3, 0x1234, Message::ResetVqueue { index: 2 }),
    },
    Vector {
        name: "GET_SHM request",
        bytes: &[
            0x00, 0x0c, 0x03, 0x00, 0x34, 0x12, 0x0c, 0x00, //
            0x00, 0x00, 0x00, 0x00, // index 0
        ],
        frame: frame(3, 0x1234, Message::GetShm { index: 0 }),
    },
];

/// Transport responses, device to driver (device 3, token 0x1234).
pub static TRANSPORT_RESPONSES: &[Vector] = &[
    Vector {
        name: "GET_DEVICE_INFO response",
        bytes: &[
            0x01, 0x02, 0x03, 0x00, 0x34, 0x12, 0x20, 0x00, //
            0x04, 0x00, 0x00, 0x00, // device_id 4 (rng)
            0x51, 0x45, 0x4d, 0x55, // vendor_id "QEMU"
            0x40, 0x00, 0x00, 0x00, // num_feature_bits 64
            0x00, 0x01, 0x00, 0x00, // config_size 256
            0x01, 0x00, 0x00, 0x00, // max_virtqueues 1
            0x05, 0x00, // admin_vq_start 5
            0x02, 0x00, // admin_vq_count 2
        ],
        frame: frame(
            3,
            0x1234,
            Message::DeviceInfo(DeviceInfo {
                device_id: 4,
                vendor_id: 0x554d_4551,
                num_feature_bits: 64,
                config_size: 256,
                max_virtqueues: 1,
                admin_vq_start: 5,
                admin_vq_count: 2,
            }),
        ),
    },
    Vector {
        name: "GET_DEVICE_FEATURES response",
        bytes: &[
            0x01, 0x03, 0x03, 0x00, 0x34, 0x12, 0x18, 0x00, //
            0x00, 0x00, 0x00, 0x00, // block_index 0
            0x02, 0x00, 0x00, 0x00, // num_blocks 2
            0x20, 0x00, 0x00, 0x10, // bits 5 and 28
            0x01, 0x00, 0x00, 0x00, // bit 32
        ],
        frame: frame(
            3,
            0x1234,
            Message::DeviceFeatures {
                block_index: 0,
                features: Words::new(&[0x1000_0020, 1]),
            },
        ),
    },
    Vector {
        name: "SET_DRIVER_FEATURES response (empty)",
        bytes: &[0x01, 0x04, 0x03, 0x00, 0x34, 0x12, 0x08, 0x00],
        frame: frame(3, 0x1234, Message::DriverFeaturesSet),
    },
    Vector {
        name: "GET_CONFIG response",
        bytes: &[
            0x01, 0x05, 0x03, 0x00, 0x34, 0x12, 0x17, 0x00, //
            0x09, 0x00, 0x00, 0x00, // generation 9
            0x04, 0x00, 0x00, 0x00, // offset 4
            0x03, 0x00, 0x00, 0x00, // length 3
            0xaa, 0xbb, 0xcc, // data
        ],
        frame: frame(
            3,
            0x1234,
            Message::Config {
                generation: 9,
                offset: 4,
                data: &[0xaa, 0xbb, 0xcc],
            },
        ),
    },
    Vector {
        name: "SET_CONFIG response with echo",
        bytes: &[
            0x01, 0x06, 0x03, 0x00, 0x34, 0x12, 0x16, 0x00, //
            0x08, 0x00, 0x00, 0x00, // generation 8
            0x10, 0x00, 0x00, 0x00, // offset 16
            0x02, 0x00, 0x00, 0x00, // length 2
            0xab, 0xcd, // echo
        ],
        frame: frame(
            3,
            0x1234,
            Message::ConfigSet {
                generation: 8,
                offset: 16,
                length: 2,
                echo: Some(&[0xab, 0xcd]),
            },
        ),
    },
    Vector {
        name: "SET_CONFIG response, rejected (length 0)",
        bytes: &[
            0x01, 0x06, 0x03, 0x00, 0x34, 0x12, 0x14, 0x00, //
            0x0a, 0x00, 0x00, 0x00, // generation 10
            0x10, 0x00, 0x00, 0x00, // offset 16
            0x00, 0x00, 0x00, 0x00, // length 0: rejected
        ],
        frame: frame(
            3,
            0x1234,
            Message::ConfigSet {
                generation: 10,
                offset: 16,
                length: 0,
                echo: None,
            },
        ),
    },
    Vector {
        name: "SET_CONFIG response without echo",
        bytes: &[
            0x01, 0x06, 0x03, 0x00, 0x34, 0x12, 0x14, 0x00, //
            0x08, 0x00, 0x00, 0x00, // generation 8
            0x10, 0x00, 0x00, 0x00, // offset 16
            0x02, 0x00, 0x00, 0x00, // length 2, no echo
        ],
        frame: frame(
            3,
            0x1234,
            Message::ConfigSet {
                generation: 8,
                offset: 16,
                length: 2,
                echo: None,
            },
        ),
    },
    Vector {
        name: "GET_DEVICE_STATUS response",
        bytes: &[
            0x01, 0x07, 0x03, 0x00, 0x34, 0x12, 0x0c, 0x00, //
            0x0f, 0x00, 0x00, 0x00, // status 0x0f
        ],
        frame: frame(3, 0x1234, Message::DeviceStatus { status: 0x0f }),
    },
    Vector {
        name: "SET_DEVICE_STATUS response (FEATURES_OK cleared)",
        bytes: &[
            0x01, 0x08, 0x03, 0x00, 0x34, 0x12, 0x0c, 0x00, //
            0x03, 0x00, 0x00, 0x00, // status 0x03
        ],
        frame: frame(3, 0x1234, Message::DeviceStatusSet { status: 0x03 }),
    },
    Vector {
        name: "GET_VQUEUE response",
        bytes: &[
            0x01, 0x09, 0x03, 0x00, 0x34, 0x12, 0x30, 0x00, //
            0x01, 0x00, 0x00, 0x00, // index 1
            0x00, 0x04, 0x00, 0x00, // max_size 1024
            0x00, 0x01, 0x00, 0x00, // cur_size 256
            0x00, 0x00, 0x00, 0x00, // reserved
            0x00, 0x10, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // desc 0x1000
            0x00, 0x20, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // driver 0x2000
            0x00, 0x30, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // device 0x3000
        ],
        frame: frame(
            3,
            0x1234,
            Message::Vqueue(VqueueInfo {
                index: 1,
                max_size: 1024,
                cur_size: 256,
                desc_addr: 0x1000,
                driver_addr: 0x2000,
                device_addr: 0x3000,
            }),
        ),
    },
    Vector {
        name: "SET_VQUEUE response (empty)",
        bytes: &[0x01, 0x0a, 0x03, 0x00, 0x34, 0x12, 0x08, 0x00],
        frame: frame(3, 0x1234, Message::VqueueSet),
    },
    Vector {
        name: "RESET_VQUEUE response (empty)",
        bytes: &[0x01, 0x0b, 0x03, 0x00, 0x34, 0x12, 0x08, 0x00],
        frame: frame(3, 0x1234, Message::VqueueReset),
    },
    Vector {
        name: "GET_SHM response",
        bytes: &[
            0x01, 0x0c, 0x03, 0x00, 0x34, 0x12, 0x14, 0x00, //
            0x00, 0x00, 0x00, 0x00, // index 0
            0x00, 0x10, 0x00, 0x00, // length 0x1000
            0x00, 0x00, 0x00, 0x80, // address 0x8000_0000
        ],
        frame: frame(
            3,
            0x1234,
            Message::Shm {
                index: 0,
                length: 0x1000,
                address: 0x8000_0000,
            },
        ),
    },
];

/// Transport events (token 0: events carry no token).
pub static TRANSPORT_EVENTS: &[Vector] = &[
    Vector {
        name: "EVENT_CONFIG without data",
        bytes: &[
            0x00, 0x40, 0x03, 0x00, 0x00, 0x00, 0x18, 0x00, //
            0x0f, 0x00, 0x00, 0x00, // device_status
            0x09, 0x00, 0x00, 0x00, // generation 9
            0x00, 0x00, 0x00, 0x00, // offset 0
            0x00, 0x00, 0x00, 0x00, // length 0
        ],
        frame: frame(
            3,
            0,
            Message::EventConfig {
                device_status: 0x0f,
                generation: 9,
                offset: 0,
                length: 0,
                data: None,
            },
        ),
    },
    Vector {
        name: "EVENT_CONFIG announcing a change, data omitted",
        bytes: &[
            0x00, 0x40, 0x03, 0x00, 0x00, 0x00, 0x18, 0x00, //
            0x4f, 0x00, 0x00, 0x00, // device_status, DEVICE_NEEDS_RESET set
            0x0a, 0x00, 0x00, 0x00, // generation 10
            0x08, 0x00, 0x00, 0x00, // offset 8
            0x04, 0x00, 0x00, 0x00, // length 4
        ],
        frame: frame(
            3,
            0,
            Message::EventConfig {
                device_status: 0x4f,
                generation: 10,
                offset: 8,
                length: 4,
                data: None,
            },
        ),
    },
    Vector {
        name: "EVENT_CONFIG with data",
        bytes: &[
            0x00, 0x40, 0x03, 0x00, 0x00, 0x00, 0x1a, 0x00, //
            0x0f, 0x00, 0x00, 0x00, // device_status
            0x0b, 0x00, 0x00, 0x00, // generation 11
            0x02, 0x00, 0x00, 0x00, // offset 2
            0x02, 0x00, 0x00, 0x00, // length 2
            0x05, 0x06, // data
        ],
        frame: frame(
            3,
            0,
            Message::EventConfig {
                device_status: 0x0f,
                generation: 11,
                offset: 2,
                length: 2,
                data: Some(&[5, 6]),
            },
        ),
    },
    Vector {
        name: "EVENT_AVAIL without notification data",
        bytes: &[
            0x00, 0x41, 0x03, 0x00, 0x00, 0x00, 0x10, 0x00, //
            0x00, 0x00, 0x00, 0x00, // vq_index 0
            0x00, 0x00, 0x00, 0x00, // next_offset 0
        ],
        frame: frame(
            3,
            0,
            Message::EventAvail {
                vq_index: 0,
                next: AvailNext::NONE,
            },
        ),
    },
    Vector {
        name: "EVENT_AVAIL with offset and wrap",
        bytes: &[
            0x00, 0x41, 0x03, 0x00, 0x00, 0x00, 0x10, 0x00, //
            0x02, 0x00, 0x00, 0x00, // vq_index 2
            0x05, 0x00, 0x00, 0x80, // offset 5, wrap
        ],
        frame: frame(
            3,
            0,
            Message::EventAvail {
                vq_index: 2,
                next: match AvailNext::new(5, true) {
                    Some(next) => next,
                    None => AvailNext::NONE,
                },
            },
        ),
    },
    Vector {
        name: "EVENT_USED",
        bytes: &[
            0x00, 0x42, 0x03, 0x00, 0x00, 0x00, 0x0c, 0x00, //
            0x01, 0x00, 0x00, 0x00, // vq_index 1
        ],
        frame: frame(3, 0, Message::EventUsed { vq_index: 1 }),
    },
];

/// Bus messages (device number 0).
pub static BUS: &[Vector] = &[
    Vector {
        name: "GET_DEVICES request",
        bytes: &[
            0x02, 0x02, 0x00, 0x00, 0x07, 0x00, 0x0c, 0x00, //
            0x00, 0x00, // offset 0
            0x20, 0x00, // count 32
        ],
        frame: frame(
            0,
            7,
            Message::GetDevices {
                offset: 0,
                count: 32,
            },
        ),
    },
    Vector {
        name: "GET_DEVICES response, devices 0, 2 and 31",
        bytes: &[
            0x03, 0x02, 0x00, 0x00, 0x07, 0x00, 0x12, 0x00, //
            0x00, 0x00, // offset 0
            0x20, 0x00, // count 32
            0x00, 0x00, // next_offset 0: done
            0x05, 0x00, 0x00, 0x80, // bitmap
        ],
        frame: frame(
            0,
            7,
            Message::Devices {
                offset: 0,
                count: 32,
                next_offset: 0,
                bitmap: &[0x05, 0, 0, 0x80],
            },
        ),
    },
    Vector {
        name: "GET_DEVICES response, window 8..16 of more",
        bytes: &[
            0x03, 0x02, 0x00, 0x00, 0x08, 0x00, 0x0f, 0x00, //
            0x08, 0x00, // offset 8
            0x08, 0x00, // count 8
            0x10, 0x00, // next_offset 16
            0x01, // device 8
        ],
        frame: frame(
            0,
            8,
            Message::Devices {
                offset: 8,
                count: 8,
                next_offset: 16,
                bitmap: &[0x01],
            },
        ),
    },
    Vector {
        name: "PING request",
        bytes: &[
            0x02, 0x03, 0x00, 0x00, 0x09, 0x00, 0x0c, 0x00, //
            0xef, 0xbe, 0xad, 0xde, // data
        ],
        frame: frame(0, 9, Message::Ping { data: 0xdead_beef }),
    },
    Vector {
        name: "PING response",
        bytes: &[
            0x03, 0x03, 0x00, 0x00, 0x09, 0x00, 0x0c, 0x00, //
            0xef, 0xbe, 0xad, 0xde, // data
        ],
        frame: frame(0, 9, Message::Pong { data: 0xdead_beef }),
    },
    Vector {
        name: "EVENT_DEVICE ready",
        bytes: &[
            0x02, 0x40, 0x00, 0x00, 0x00, 0x00, 0x0c, 0x00, //
            0x05, 0x00, // device 5
            0x01, 0x00, // READY
        ],
        frame: frame(
            0,
            0,
            Message::EventDevice {
                device_number: 5,
                state: DeviceState::Ready,
            },
        ),
    },
    Vector {
        name: "EVENT_DEVICE removed",
        bytes: &[
            0x02, 0x40, 0x00, 0x00, 0x00, 0x00, 0x0c, 0x00, //
            0x1f, 0x00, // device 31
            0x02, 0x00, // REMOVED
        ],
        frame: frame(
            0,
            0,
            Message::EventDevice {
                device_number: 31,
                state: DeviceState::Removed,
            },
        ),
    },
];

/// Bytes a receiver must accept although the encoder never writes them.
pub static LENIENT: &[Lenient] = &[
    Vector {
        name: "reserved type bits 2-7 are ignored",
        bytes: &[
            0xfd, 0x07, 0x03, 0x00, 0x34, 0x12, 0x0c, 0x00, //
            0x01, 0x00, 0x00, 0x00,
        ],
        frame: frame(3, 0x1234, Message::DeviceStatus { status: 1 }),
    },
    Vector {
        name: "reserved words of SET_VQUEUE are ignored",
        bytes: &[
            0x00, 0x0a, 0x03, 0x00, 0x34, 0x12, 0x30, 0x00, //
            0x00, 0x00, 0x00, 0x00, // index 0
            0xff, 0xff, 0xff, 0xff, // reserved
            0x40, 0x00, 0x00, 0x00, // size 64
            0x11, 0x22, 0x33, 0x44, // reserved
            0x00, 0x10, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, //
            0x00, 0x20, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, //
            0x00, 0x30, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        ],
        frame: frame(
            3,
            0x1234,
            Message::SetVqueue(VqueueConfig {
                index: 0,
                size: 64,
                desc_addr: 0x1000,
                driver_addr: 0x2000,
                device_addr: 0x3000,
            }),
        ),
    },
    Vector {
        name: "reserved word of the GET_VQUEUE response is ignored",
        bytes: &[
            0x01, 0x09, 0x03, 0x00, 0x34, 0x12, 0x30, 0x00, //
            0x00, 0x00, 0x00, 0x00, // index 0
            0x00, 0x00, 0x00, 0x00, // max_size 0: no such queue
            0x00, 0x00, 0x00, 0x00, // cur_size 0
            0xaa, 0xaa, 0xaa, 0xaa, // reserved
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, //
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, //
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        ],
        frame: frame(
            3,
            0x1234,
            Message::Vqueue(VqueueInfo {
                index: 0,
                max_size: 0,
                cur_size: 0,
                desc_addr: 0,
                driver_addr: 0,
                device_addr: 0,
            }),
        ),
    },
    Vector {
        name: "bytes after msg_size (slot padding) are ignored",
        bytes: &[
            0x01, 0x07, 0x03, 0x00, 0x34, 0x12, 0x0c, 0x00, //
            0x02, 0x00, 0x00, 0x00, // status 2
            0xde, 0xad, 0xbe, 0xef, 0x00, 0x00, 0x00, 0x00, // rest of the slot
        ],
        frame: frame(3, 0x1234, Message::DeviceStatus { status: 2 }),
    },
];

/// Bytes a receiver must reject, and why.
pub static MALFORMED: &[Malformed] = &[
    Malformed {
        name: "empty buffer",
        bytes: &[],
        error: DecodeError::ShortHeader { len: 0 },
    },
    Malformed {
        name: "7 bytes: no room for a header",
        bytes: &[0x01, 0x07, 0x03, 0x00, 0x34, 0x12, 0x0c],
        error: DecodeError::ShortHeader { len: 7 },
    },
    Malformed {
        name: "msg_size smaller than the header",
        bytes: &[0x01, 0x07, 0x03, 0x00, 0x34, 0x12, 0x04, 0x00, 0, 0, 0, 0],
        error: DecodeError::MsgSizeBelowHeader { msg_size: 4 },
    },
    Malformed {
        name: "msg_size beyond the bytes received",
        bytes: &[0x01, 0x07, 0x03, 0x00, 0x34, 0x12, 0x0c, 0x00, 0x0f, 0x00],
        error: DecodeError::MsgSizeBeyondBuffer {
            msg_size: 12,
            len: 10,
        },
    },
    Malformed {
        name: "msg_size 0xffff",
        bytes: &[0x00, 0x02, 0x03, 0x00, 0x34, 0x12, 0xff, 0xff],
        error: DecodeError::MsgSizeBeyondBuffer {
            msg_size: 0xffff,
            len: 8,
        },
    },
    Malformed {
        name: "GET_DEVICE_INFO request with a payload",
        bytes: &[0x00, 0x02, 0x03, 0x00, 0x34, 0x12, 0x0c, 0x00, 0, 0, 0, 0],
        error: DecodeError::PayloadSize {
            msg_id: 0x02,
            expected: 0,
            len: 4,
        },
    },
    Malformed {
        name: "GET_DEVICE_INFO response one byte short",
        bytes: &[
            0x01, 0x02, 0x03, 0x00, 0x34, 0x12, 0x1f, 0x00, //
            0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ],
        error: DecodeError::PayloadSize {
            msg_id: 0x02,
            expected: 24,
            len: 23,
        },
    },
    Malformed {
        name: "GET_DEVICE_STATUS response with 3 status bytes",
        bytes: &[
            0x01, 0x07, 0x03, 0x00, 0x34, 0x12, 0x0b, 0x00, 0x0f, 0x00, 0x00,
        ],
        error: DecodeError::PayloadSize {
            msg_id: 0x07,
            expected: 4,
            len: 3,
        },
    },
    Malformed {
        name: "SET_VQUEUE of 44 bytes (no reserved word at payload offset 12)",
        bytes: &[
            0x00, 0x0a, 0x03, 0x00, 0x34, 0x12, 0x2c, 0x00, //
            0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, //
            0x00, 0x10, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, //
            0x00, 0x20, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, //
            0x00, 0x30, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        ],
        error: DecodeError::PayloadSize {
            msg_id: 0x0a,
            expected: 40,
            len: 36,
        },
    },
    Malformed {
        name: "GET_DEVICE_FEATURES response announcing 3 blocks, carrying 2",
        bytes: &[
            0x01, 0x03, 0x03, 0x00, 0x34, 0x12, 0x18, 0x00, //
            0x00, 0x00, 0x00, 0x00, 0x03, 0x00, 0x00, 0x00, //
            0x01, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00,
        ],
        error: DecodeError::PayloadSize {
            msg_id: 0x03,
            expected: 20,
            len: 16,
        },
    },
    Malformed {
        name: "GET_DEVICE_FEATURES response announcing 2^30 blocks",
        bytes: &[
            0x01, 0x03, 0x03, 0x00, 0x34, 0x12, 0x10, 0x00, //
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x40,
        ],
        error: DecodeError::PayloadSize {
            msg_id: 0x03,
            expected: 8 + (1 << 32),
            len: 8,
        },
    },
    Malformed {
        name: "GET_DEVICE_FEATURES response with a partial block",
        bytes: &[
            0x01, 0x03, 0x03, 0x00, 0x34, 0x12, 0x13, 0x00, //
            0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, //
            0x01, 0x00, 0x00,
        ],
        error: DecodeError::PayloadSize {
            msg_id: 0x03,
            expected: 12,
            len: 11,
        },
    },
    Malformed {
        name: "SET_DRIVER_FEATURES request without num_blocks",
        bytes: &[
            0x00, 0x04, 0x03, 0x00, 0x34, 0x12, 0x0c, 0x00, 0x00, 0x00, 0x00, 0x00,
        ],
        error: DecodeError::ShortPayload {
            msg_id: 0x04,
            needed: 8,
            len: 4,
        },
    },
    Malformed {
        name: "GET_CONFIG response shorter than its fixed fields",
        bytes: &[
            0x01, 0x05, 0x03, 0x00, 0x34, 0x12, 0x10, 0x00, //
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        ],
        error: DecodeError::ShortPayload {
            msg_id: 0x05,
            needed: 12,
            len: 8,
        },
    },
    Malformed {
        name: "GET_CONFIG response announcing 100 bytes, carrying 4",
        bytes: &[
            0x01, 0x05, 0x03, 0x00, 0x34, 0x12, 0x18, 0x00, //
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x64, 0x00, 0x00, 0x00, //
            0x01, 0x02, 0x03, 0x04,
        ],
        error: DecodeError::PayloadSize {
            msg_id: 0x05,
            expected: 112,
            len: 16,
        },
    },
    Malformed {
        name: "GET_CONFIG response with more data than announced",
        bytes: &[
            0x01, 0x05, 0x03, 0x00, 0x34, 0x12, 0x16, 0x00, //
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, //
            0x01, 0x02,
        ],
        error: DecodeError::PayloadSize {
            msg_id: 0x05,
            expected: 13,
            len: 14,
        },
    },
    Malformed {
        name: "SET_CONFIG response with a partial echo",
        bytes: &[
            0x01, 0x06, 0x03, 0x00, 0x34, 0x12, 0x16, 0x00, //
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, //
            0x01, 0x02,
        ],
        error: DecodeError::PayloadSize {
            msg_id: 0x06,
            expected: 16,
            len: 14,
        },
    },
    Malformed {
        name: "EVENT_CONFIG with partial data",
        bytes: &[
            0x00, 0x40, 0x03, 0x00, 0x00, 0x00, 0x19, 0x00, //
            0x0f, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, //
            0x00, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, //
            0x01,
        ],
        error: DecodeError::PayloadSize {
            msg_id: 0x40,
            expected: 20,
            len: 17,
        },
    },
    Malformed {
        name: "GET_DEVICES response announcing 32 devices with a 2-byte bitmap",
        bytes: &[
            0x03, 0x02, 0x00, 0x00, 0x07, 0x00, 0x10, 0x00, //
            0x00, 0x00, 0x20, 0x00, 0x00, 0x00, 0x01, 0x00,
        ],
        error: DecodeError::PayloadSize {
            msg_id: 0x02,
            expected: 10,
            len: 8,
        },
    },
    Malformed {
        name: "EVENT_DEVICE with state 3",
        bytes: &[
            0x02, 0x40, 0x00, 0x00, 0x00, 0x00, 0x0c, 0x00, 0x05, 0x00, 0x03, 0x00,
        ],
        error: DecodeError::DeviceState { state: 3 },
    },
    Malformed {
        name: "bus message for device number 1",
        bytes: &[
            0x02, 0x03, 0x01, 0x00, 0x09, 0x00, 0x0c, 0x00, 0x00, 0x00, 0x00, 0x00,
        ],
        error: DecodeError::BusDeviceNumber { dev_num: 1 },
    },
    Malformed {
        name: "transport id 0x00",
        bytes: &[0x00, 0x00, 0x03, 0x00, 0x34, 0x12, 0x08, 0x00],
        error: DecodeError::UnknownId {
            class: Class::Transport,
            kind: Kind::Request,
            msg_id: 0x00,
        },
    },
    Malformed {
        name: "transport request id 0x0d",
        bytes: &[0x00, 0x0d, 0x03, 0x00, 0x34, 0x12, 0x08, 0x00],
        error: DecodeError::UnknownId {
            class: Class::Transport,
            kind: Kind::Request,
            msg_id: 0x0d,
        },
    },
    Malformed {
        name: "a response to an event",
        bytes: &[
            0x01, 0x42, 0x03, 0x00, 0x34, 0x12, 0x0c, 0x00, 0x00, 0x00, 0x00, 0x00,
        ],
        error: DecodeError::UnknownId {
            class: Class::Transport,
            kind: Kind::Response,
            msg_id: 0x42,
        },
    },
    Malformed {
        name: "implementation-defined id 0x80",
        bytes: &[0x00, 0x80, 0x03, 0x00, 0x34, 0x12, 0x08, 0x00],
        error: DecodeError::UnknownId {
            class: Class::Transport,
            kind: Kind::Request,
            msg_id: 0x80,
        },
    },
    Malformed {
        name: "bus request id 0x04",
        bytes: &[0x02, 0x04, 0x00, 0x00, 0x00, 0x00, 0x08, 0x00],
        error: DecodeError::UnknownId {
            class: Class::Bus,
            kind: Kind::Request,
            msg_id: 0x04,
        },
    },
    Malformed {
        name: "bus PING of 16 bytes (would run as GET_DEVICE_FEATURES on a v1 device)",
        bytes: &[
            0x02, 0x03, 0x00, 0x00, 0x09, 0x00, 0x10, 0x00, //
            0x00, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00,
        ],
        error: DecodeError::PayloadSize {
            msg_id: 0x03,
            expected: 4,
            len: 8,
        },
    },
];

/// Messages the encoder must refuse.
pub static UNENCODABLE: &[Unencodable] = &[
    Unencodable {
        name: "output buffer one byte short",
        frame: frame(3, 1, Message::SetDeviceStatus { status: 1 }),
        out_len: 11,
        error: EncodeError::BufferTooSmall {
            needed: 12,
            len: 11,
        },
    },
    Unencodable {
        name: "bus message for device number 2",
        frame: frame(2, 1, Message::Ping { data: 1 }),
        out_len: 64,
        error: EncodeError::BusDeviceNumber,
    },
    Unencodable {
        name: "GET_DEVICES bitmap shorter than count",
        frame: frame(
            0,
            1,
            Message::Devices {
                offset: 0,
                count: 32,
                next_offset: 0,
                bitmap: &[1, 2],
            },
        ),
        out_len: 64,
        error: EncodeError::Inconsistent,
    },
    Unencodable {
        name: "SET_CONFIG echo length differs from length",
        frame: frame(
            3,
            1,
            Message::ConfigSet {
                generation: 1,
                offset: 0,
                length: 4,
                echo: Some(&[1]),
            },
        ),
        out_len: 64,
        error: EncodeError::Inconsistent,
    },
    Unencodable {
        name: "EVENT_CONFIG data length differs from length",
        frame: frame(
            3,
            0,
            Message::EventConfig {
                device_status: 0,
                generation: 0,
                offset: 0,
                length: 1,
                data: Some(&[]),
            },
        ),
        out_len: 64,
        error: EncodeError::Inconsistent,
    },
];

/// Bus responses as QEMU's device model sends them, which
/// [`Frame::decode_lenient`] must read (v1 of the model misreports the
/// size fields of GET_DEVICES responses); [`Frame::decode`] rejects the
/// first four.
pub static DEVICE_MODEL_REPLIES: &[Lenient] = &[
    Vector {
        name: "GET_DEVICES, v1: msg_size 8, bitmap in the slot",
        bytes: &[
            0x03, 0x02, 0x00, 0x00, 0x00, 0x00, 0x08, 0x00, //
            0x00, 0x00, 0x40, 0x00, 0x00, 0x00, // offset 0, count 64, next 0
            0x02, 0x00, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00, 0xee,
        ],
        frame: frame(
            0,
            0,
            Message::Devices {
                offset: 0,
                count: 64,
                next_offset: 0,
                bitmap: &[0x02, 0x00, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00],
            },
        ),
    },
    Vector {
        name: "GET_DEVICES: msg_size beyond what was received",
        bytes: &[
            0x03, 0x02, 0x00, 0x00, 0x07, 0x00, 0xff, 0xff, //
            0x08, 0x00, 0x10, 0x00, 0x18, 0x00, // offset 8, count 16, next 24
            0xaa, 0x55, 0x77,
        ],
        frame: frame(
            0,
            7,
            Message::Devices {
                offset: 8,
                count: 16,
                next_offset: 24,
                bitmap: &[0xaa, 0x55],
            },
        ),
    },
    Vector {
        name: "GET_DEVICES: bitmap shorter than count needs",
        bytes: &[
            0x03, 0x02, 0x00, 0x00, 0x00, 0x00, 0x12, 0x00, //
            0x00, 0x00, 0x20, 0x00, 0x20, 0x00, // offset 0, count 32, next 32
            0x01, 0x02,
        ],
        frame: frame(
            0,
            0,
            Message::Devices {
                offset: 0,
                count: 32,
                next_offset: 32,
                bitmap: &[0x01, 0x02],
            },
        ),
    },
    Vector {
        name: "GET_DEVICES: device number not looked at",
        bytes: &[
            0x03, 0x02, 0x05, 0x00, 0x09, 0x00, 0x0f, 0x00, //
            0x00, 0x00, 0x08, 0x00, 0x08, 0x00, 0x21,
        ],
        frame: frame(
            0,
            9,
            Message::Devices {
                offset: 0,
                count: 8,
                next_offset: 8,
                bitmap: &[0x21],
            },
        ),
    },
    Vector {
        name: "PING response, decoded exactly",
        bytes: &[
            0x03, 0x03, 0x00, 0x00, 0x00, 0x00, 0x0c, 0x00, //
            0x44, 0x33, 0x22, 0x11, 0x00, 0x00,
        ],
        frame: frame(0, 0, Message::Pong { data: 0x1122_3344 }),
    },
];

/// Bus responses that [`Frame::decode_lenient`] must reject all the same.
pub static DEVICE_MODEL_MALFORMED: &[Malformed] = &[
    Malformed {
        name: "GET_DEVICES without its fixed fields",
        bytes: &[
            0x03, 0x02, 0x00, 0x00, 0x00, 0x00, 0x0e, 0x00, //
            0x00, 0x00, 0x20, 0x00,
        ],
        error: DecodeError::ShortPayload {
            msg_id: 0x02,
            needed: 6,
            len: 4,
        },
    },
    Malformed {
        name: "PING response with a wrong msg_size",
        bytes: &[
            0x03, 0x03, 0x00, 0x00, 0x00, 0x00, 0x08, 0x00, //
            0x44, 0x33, 0x22, 0x11,
        ],
        error: DecodeError::PayloadSize {
            msg_id: 0x03,
            expected: 4,
            len: 0,
        },
    },
];

/// A decoder under test: [`Frame::decode`] or [`Frame::decode_lenient`].
type Decoder = fn(&'static [u8]) -> Result<Frame<'static>, DecodeError>;

/// Checks that `decode` reads `v` as its message.
fn decodes_to(v: &Vector, decode: Decoder) -> Result<(), &'static str> {
    match decode(v.bytes) {
        Ok(f) if f == v.frame => Ok(()),
        Ok(_) => Err("decoded to a different message"),
        Err(_) => Err("failed to decode"),
    }
}

/// Checks that `decode` rejects `v` with its error.
fn rejects(v: &Malformed, decode: Decoder) -> Result<(), &'static str> {
    match decode(v.bytes) {
        Err(e) if e == v.error => Ok(()),
        Err(_) => Err("rejected with a different error"),
        Ok(_) => Err("accepted"),
    }
}

/// Checks one [`Vector`] both ways; on failure returns what went wrong.
pub fn check_exact(v: &Vector) -> Result<(), &'static str> {
    decodes_to(v, Frame::decode)?;
    let mut out = [0u8; 128];
    match v.frame.encode(&mut out) {
        Ok(n) if out.get(..n) == Some(v.bytes) => Ok(()),
        Ok(_) => Err("encoded to different bytes"),
        Err(_) => Err("failed to encode"),
    }
}

/// Checks one [`Lenient`] vector: it decodes to its message.
pub fn check_lenient(v: &Lenient) -> Result<(), &'static str> {
    decodes_to(v, Frame::decode)
}

/// Checks one [`DEVICE_MODEL_REPLIES`] vector: the lenient decoder reads
/// it as its message.
pub fn check_device_model_reply(v: &Lenient) -> Result<(), &'static str> {
    decodes_to(v, Frame::decode_lenient)
}

/// Checks one [`DEVICE_MODEL_MALFORMED`] vector: the lenient decoder
/// rejects it with its error.
pub fn check_device_model_malformed(v: &Malformed) -> Result<(), &'static str> {
    rejects(v, Frame::decode_lenient)
}

/// Checks one [`Malformed`] vector: it is rejected with its error.
pub fn check_malformed(v: &Malformed) -> Result<(), &'static str> {
    rejects(v, Frame::decode)
}

/// Checks one [`Unencodable`] vector: encoding fails with its error and
/// leaves the output buffer untouched.
pub fn check_unencodable(v: &Unencodable) -> Result<(), &'static str> {
    let mut out = [0x5au8; 64];
    let Some(out) = out.get_mut(..v.out_len) else {
        return Err("out_len larger than the test buffer");
    };
    match v.frame.encode(out) {
        Err(e) if e == v.error => {}
        Err(_) => return Err("refused with a different error"),
        Ok(_) => return Err("encoded"),
    }
    if out.iter().any(|&b| b != 0x5a) {
        return Err("wrote to the output buffer");
    }
    Ok(())
}
