// SPDX-License-Identifier: GPL-2.0 OR MIT

//! The virtio-msg wire format: encoding and decoding of every message.
//!
//! virtio-msg replaces the register accesses of virtio-pci and virtio-mmio by
//! small little-endian messages exchanged over a bus. Every message starts
//! with an 8-byte [`Header`]; its payload is fixed by the message id, with a
//! trailing variable part for a few messages (feature blocks, config data,
//! the GET_DEVICES bitmap).
//!
//! This file is the one definition of that format: the transport and every
//! bus use it from here. It uses `core` only (no other `kernel` crate item,
//! no allocation), so the very same source is also compiled, with `#[path]`,
//! into the userspace crate `tools/virtio-msg/wire` of the project this comes
//! from, where it is unit-tested, property-tested and fuzzed, and which the
//! device emulator of its end-to-end tests uses.
//!
//! Everything decoded here may come from a hostile peer. Decoding therefore
//! never reads outside the given bytes and never panics: every field is read
//! through a bounds-checked reader, every length is checked with
//! overflow-free arithmetic, and every way a message can be malformed has its
//! own [`DecodeError`]. Sizes are exact: a payload one byte too long is as
//! wrong as one byte too short. Reserved bits and fields are written as zero
//! and ignored when read.
//!
//! Decoding borrows variable-length data from the input; a bus must copy a
//! message out of shared memory into private memory before decoding it.
//!
//! Each message is written down once, in the table that defines
//! [`Message`]: its class, kind and id, and its fields in wire order. The
//! id lookup, the encoder, the decoder and the size checks are generated
//! from it, so they cannot disagree: a field's type says how it is written
//! and read, and the same code measures a payload and writes it. The
//! known-answer vectors (`wire_vectors.rs`) pin the table to the byte
//! layouts of the specification, and the property tests check that
//! decoding inverts encoding for every message.

use core::fmt;

/// Size of the message header, in bytes.
pub const HEADER_SIZE: usize = 8;

/// Largest message the 16-bit `msg_size` field can describe.
pub const MAX_MSG_SIZE: usize = u16::MAX as usize;

/// Bit 0 of the header's type byte: the message is a response.
pub const TYPE_RESPONSE: u8 = 1 << 0;
/// Bit 1 of the header's type byte: the message is a bus message.
pub const TYPE_BUS: u8 = 1 << 1;

/// Message ids of transport messages (header type bit 1 clear).
pub mod transport_id {
    /// Device id, vendor id, feature bits, config size, queue count.
    pub const GET_DEVICE_INFO: u8 = 0x02;
    /// A window of the device's feature blocks.
    pub const GET_DEVICE_FEATURES: u8 = 0x03;
    /// A window of the driver's feature blocks.
    pub const SET_DRIVER_FEATURES: u8 = 0x04;
    /// Read from the device configuration space.
    pub const GET_CONFIG: u8 = 0x05;
    /// Write to the device configuration space.
    pub const SET_CONFIG: u8 = 0x06;
    /// Read the device status.
    pub const GET_DEVICE_STATUS: u8 = 0x07;
    /// Write the device status (0 resets the device).
    pub const SET_DEVICE_STATUS: u8 = 0x08;
    /// Read a virtqueue's limits and configuration.
    pub const GET_VQUEUE: u8 = 0x09;
    /// Configure and enable a virtqueue.
    pub const SET_VQUEUE: u8 = 0x0A;
    /// Reset one virtqueue (VIRTIO_F_RING_RESET).
    pub const RESET_VQUEUE: u8 = 0x0B;
    /// Read a shared memory region's location.
    pub const GET_SHM: u8 = 0x0C;
    /// Device to driver: status or configuration changed.
    pub const EVENT_CONFIG: u8 = 0x40;
    /// Driver to device: buffers were made available in a virtqueue.
    pub const EVENT_AVAIL: u8 = 0x41;
    /// Device to driver: buffers were used in a virtqueue.
    pub const EVENT_USED: u8 = 0x42;
}

/// Message ids of bus messages (header type bit 1 set).
pub mod bus_id {
    /// Which device numbers exist, as a bitmap window.
    pub const GET_DEVICES: u8 = 0x02;
    /// Echo a 32-bit value (liveness check).
    pub const PING: u8 = 0x03;
    /// A device number appeared or disappeared.
    pub const EVENT_DEVICE: u8 = 0x40;
}

/// Message ids from this value on are events, which get no response.
const FIRST_EVENT_ID: u8 = 0x40;
/// Message ids from this value on are implementation-defined.
const FIRST_IMPL_DEFINED_ID: u8 = 0x80;

/// Whether a message belongs to the transport or to the bus.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// Transport message, addressed to one device number.
    Transport,
    /// Bus message (enumeration, liveness, hotplug); device number 0.
    Bus,
}

/// Whether a message is a request (or event) or a response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A request, which gets a response, or an event, which does not.
    Request,
    /// The response to a request.
    Response,
}

/// The fixed 8-byte header of every message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Transport or bus message (type bit 1).
    pub class: Class,
    /// Request/event or response (type bit 0).
    pub kind: Kind,
    /// Message id; its meaning depends on `class`.
    pub msg_id: u8,
    /// Device number the message is about (0 for bus messages).
    pub dev_num: u16,
    /// Owned by the bus; opaque to drivers and devices.
    pub token: u16,
    /// Header plus payload, in bytes.
    pub msg_size: u16,
}

impl Header {
    /// Decodes the header at the start of `buf` and checks `msg_size`
    /// against the real length of `buf`.
    ///
    /// `buf` may be longer than the message (a fixed-size slot, say); it
    /// must not be shorter. Type bits 2-7 are ignored.
    pub fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        let header = Self::read(buf)?;
        let msg_size = header.msg_size;
        if usize::from(msg_size) < HEADER_SIZE {
            return Err(DecodeError::MsgSizeBelowHeader { msg_size });
        }
        if usize::from(msg_size) > buf.len() {
            return Err(DecodeError::MsgSizeBeyondBuffer {
                msg_size,
                len: buf.len(),
            });
        }
        Ok(header)
    }

    /// Reads the header's fields, without checking `msg_size`.
    fn read(buf: &[u8]) -> Result<Self, DecodeError> {
        if buf.len() < HEADER_SIZE {
            return Err(DecodeError::ShortHeader { len: buf.len() });
        }
        let mut r = Reader::new(buf);
        let ty = r.u8()?;
        let msg_id = r.u8()?;
        let dev_num = r.u16()?;
        let token = r.u16()?;
        let msg_size = r.u16()?;
        Ok(Header {
            class: if ty & TYPE_BUS != 0 {
                Class::Bus
            } else {
                Class::Transport
            },
            kind: if ty & TYPE_RESPONSE != 0 {
                Kind::Response
            } else {
                Kind::Request
            },
            msg_id,
            dev_num,
            token,
            msg_size,
        })
    }

    /// Whether this header starts an event (a request-class id that gets no
    /// response).
    #[inline]
    pub fn is_event(&self) -> bool {
        self.kind == Kind::Request && (FIRST_EVENT_ID..FIRST_IMPL_DEFINED_ID).contains(&self.msg_id)
    }

    fn type_byte(&self) -> u8 {
        let mut ty = 0;
        if self.kind == Kind::Response {
            ty |= TYPE_RESPONSE;
        }
        if self.class == Class::Bus {
            ty |= TYPE_BUS;
        }
        ty
    }
}

/// Every way a received message can be malformed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// The buffer is too short to hold a header.
    ShortHeader {
        /// Bytes available.
        len: usize,
    },
    /// `msg_size` is smaller than the header itself.
    MsgSizeBelowHeader {
        /// The `msg_size` field.
        msg_size: u16,
    },
    /// `msg_size` claims more bytes than were received.
    MsgSizeBeyondBuffer {
        /// The `msg_size` field.
        msg_size: u16,
        /// Bytes received.
        len: usize,
    },
    /// The id is not a message of this class and kind (including a
    /// "response" to an event, and implementation-defined ids).
    UnknownId {
        /// Transport or bus.
        class: Class,
        /// Request/event or response.
        kind: Kind,
        /// The message id.
        msg_id: u8,
    },
    /// A bus message addressed to a device number other than 0.
    BusDeviceNumber {
        /// The `dev_num` field.
        dev_num: u16,
    },
    /// The payload is shorter than the message's fixed fields.
    ShortPayload {
        /// Message id.
        msg_id: u8,
        /// Bytes the fixed fields need.
        needed: usize,
        /// Payload bytes present.
        len: usize,
    },
    /// The payload length does not match what its fields announce (a count
    /// or length field disagrees with the bytes that follow).
    PayloadSize {
        /// Message id.
        msg_id: u8,
        /// Payload bytes the fields announce.
        expected: usize,
        /// Payload bytes present.
        len: usize,
    },
    /// EVENT_DEVICE with a state that is neither READY nor REMOVED.
    DeviceState {
        /// The `state` field.
        state: u16,
    },
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::ShortHeader { len } => write!(f, "{len} bytes cannot hold a header"),
            Self::MsgSizeBelowHeader { msg_size } => {
                write!(f, "msg_size {msg_size} is smaller than the header")
            }
            Self::MsgSizeBeyondBuffer { msg_size, len } => {
                write!(f, "msg_size {msg_size} exceeds the {len} bytes received")
            }
            Self::UnknownId {
                class,
                kind,
                msg_id,
            } => {
                write!(f, "unknown {class:?} {kind:?} id {msg_id:#04x}")
            }
            Self::BusDeviceNumber { dev_num } => {
                write!(f, "bus message for device number {dev_num} (must be 0)")
            }
            Self::ShortPayload {
                msg_id,
                needed,
                len,
            } => {
                write!(
                    f,
                    "message {msg_id:#04x}: payload of {len} bytes, fields need {needed}"
                )
            }
            Self::PayloadSize {
                msg_id,
                expected,
                len,
            } => {
                write!(
                    f,
                    "message {msg_id:#04x}: payload of {len} bytes, fields announce {expected}"
                )
            }
            Self::DeviceState { state } => write!(f, "EVENT_DEVICE with unknown state {state}"),
        }
    }
}

/// Every reason a message cannot be encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EncodeError {
    /// The output buffer is smaller than the message.
    BufferTooSmall {
        /// Bytes the message needs.
        needed: usize,
        /// Bytes available.
        len: usize,
    },
    /// The message does not fit the 16-bit `msg_size` field.
    TooLarge {
        /// Bytes the message needs.
        needed: usize,
    },
    /// A bus message must be addressed to device number 0.
    BusDeviceNumber,
    /// A length or count field disagrees with the data given with it.
    Inconsistent,
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::BufferTooSmall { needed, len } => {
                write!(f, "message of {needed} bytes does not fit {len} bytes")
            }
            Self::TooLarge { needed } => write!(f, "message of {needed} bytes exceeds msg_size"),
            Self::BusDeviceNumber => f.write_str("bus message for a device number other than 0"),
            Self::Inconsistent => f.write_str("length field disagrees with the data"),
        }
    }
}

/// A run of little-endian 32-bit words: feature blocks.
///
/// Decoded words borrow the received bytes; words to send borrow a `u32`
/// slice. Both compare equal when they hold the same values.
#[derive(Clone, Copy)]
pub struct Words<'a>(WordsRepr<'a>);

#[derive(Clone, Copy)]
enum WordsRepr<'a> {
    /// Little-endian bytes, a multiple of 4 long.
    Wire(&'a [u8]),
    /// Native words.
    Host(&'a [u32]),
}

impl<'a> Words<'a> {
    /// Words to be sent.
    #[inline]
    pub const fn new(words: &'a [u32]) -> Self {
        Self(WordsRepr::Host(words))
    }

    /// Number of words.
    #[inline]
    pub fn len(&self) -> usize {
        match self.0 {
            WordsRepr::Wire(b) => b.len() / 4,
            WordsRepr::Host(w) => w.len(),
        }
    }

    /// Whether there are no words.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Word `i`, if there is one.
    #[inline]
    pub fn get(&self, i: usize) -> Option<u32> {
        match self.0 {
            WordsRepr::Wire(b) => {
                let start = i.checked_mul(4)?;
                let bytes = b.get(start..start.checked_add(4)?)?;
                Some(u32::from_le_bytes(bytes.try_into().ok()?))
            }
            WordsRepr::Host(w) => w.get(i).copied(),
        }
    }

    /// The words, in order.
    #[inline]
    pub fn iter(&self) -> impl Iterator<Item = u32> + 'a {
        let words = *self;
        (0..words.len()).filter_map(move |i| words.get(i))
    }
}

impl PartialEq for Words<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl Eq for Words<'_> {}

impl fmt::Debug for Words<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// GET_DEVICE_INFO response payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceInfo {
    /// virtio device id (1 net, 2 block, 3 console, 4 rng, ...).
    pub device_id: u32,
    /// virtio vendor id.
    pub vendor_id: u32,
    /// Number of feature bits the device implements (a multiple of 32).
    pub num_feature_bits: u32,
    /// Size of the device configuration space, in bytes.
    pub config_size: u32,
    /// Number of virtqueues.
    pub max_virtqueues: u32,
    /// First administration virtqueue.
    pub admin_vq_start: u16,
    /// Number of administration virtqueues.
    pub admin_vq_count: u16,
}

/// SET_VQUEUE request payload: a virtqueue's size and ring addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VqueueConfig {
    /// Virtqueue index.
    pub index: u32,
    /// Number of descriptors.
    pub size: u32,
    /// Bus address of the descriptor area.
    pub desc_addr: u64,
    /// Bus address of the driver area (available ring).
    pub driver_addr: u64,
    /// Bus address of the device area (used ring).
    pub device_addr: u64,
}

/// GET_VQUEUE response payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VqueueInfo {
    /// Virtqueue index.
    pub index: u32,
    /// Largest size the device supports; 0 if the queue does not exist.
    pub max_size: u32,
    /// Current size (0 = unconfigured; some devices report their default).
    pub cur_size: u32,
    /// Bus address of the descriptor area.
    pub desc_addr: u64,
    /// Bus address of the driver area.
    pub driver_addr: u64,
    /// Bus address of the device area.
    pub device_addr: u64,
}

/// EVENT_AVAIL's `next_offset` word (VIRTIO_F_NOTIFICATION_DATA): the
/// offset of the next available entry (31 bits) and the wrap counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AvailNext(u32);

impl AvailNext {
    const WRAP: u32 = 1 << 31;

    /// No notification data (the feature was not negotiated).
    pub const NONE: Self = Self(0);

    /// `offset` must fit in 31 bits.
    #[inline]
    pub const fn new(offset: u32, wrap: bool) -> Option<Self> {
        if offset & Self::WRAP != 0 {
            return None;
        }
        Some(Self(offset | if wrap { Self::WRAP } else { 0 }))
    }

    /// Offset of the next available entry.
    #[inline]
    pub const fn offset(self) -> u32 {
        self.0 & !Self::WRAP
    }

    /// Wrap counter (packed virtqueues).
    #[inline]
    pub const fn wrap(self) -> bool {
        self.0 & Self::WRAP != 0
    }

    /// The word as sent.
    #[inline]
    pub const fn raw(self) -> u32 {
        self.0
    }
}

/// EVENT_DEVICE state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceState {
    /// The device number can be used.
    Ready,
    /// The device number went away.
    Removed,
}

impl DeviceState {
    const READY: u16 = 1;
    const REMOVED: u16 = 2;

    fn raw(self) -> u16 {
        match self {
            Self::Ready => Self::READY,
            Self::Removed => Self::REMOVED,
        }
    }
}

/// Defines [`Message`] from its table (below): each message once, with its
/// class, kind and id and its payload's fields in wire order, from which
/// [`Message::id`], the encoder (`encode_payload`), the decoder
/// (`decode_payload`) and the fixed sizes (`Message::fixed_len`) are all
/// generated.
///
/// A field's type says how it is written ([`Field`]); two kinds of trailing
/// data depend on an earlier field instead: `= optional(LEN)`, bytes that
/// are either absent or exactly `LEN` long, and `= sized(LEN)`, exactly
/// `LEN` bytes.
macro_rules! messages {
    (
        <$lt:lifetime>
        $(
            $(#[doc = $doc:literal])*
            $name:ident
            $( ( $tuple_field:ident : $tuple:ty ) )?
            $( {
                $(
                    $(#[doc = $field_doc:literal])*
                    $field:ident : $ty:ty $( = $how:ident($len:expr) )?
                ),* $(,)?
            } )?
            = $class:ident $kind:ident $id:path;
        )*
    ) => {
        /// Every virtio-msg message, with its payload.
        ///
        /// Variant names say the direction: requests are verbs, their
        /// responses are nouns or participles, events start with `Event`.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum Message<$lt> {
            $(
                $(#[doc = $doc])*
                $name
                $( ($tuple) )?
                $( { $( $(#[doc = $field_doc])* $field: $ty ),* } )?,
            )*
        }

        impl<$lt> Message<$lt> {
            /// Class, kind and id of this message.
            #[inline]
            pub fn id(&self) -> (Class, Kind, u8) {
                match self {
                    $( Self::$name { .. } => (Class::$class, Kind::$kind, $id), )*
                }
            }

            /// Bytes of the fixed fields of the payload of message `id` of
            /// `class` and `kind`: its whole payload if it has no trailing
            /// data.
            const fn fixed_len(class: Class, kind: Kind, id: u8) -> Option<usize> {
                match (class, kind, id) {
                    $(
                        (Class::$class, Kind::$kind, $id) => Some(
                            0 $( + <$tuple as Field<$lt>>::FIXED )?
                            $( $( + messages!(@fixed $ty $(= $how($len))?) )* )?
                        ),
                    )*
                    _ => None,
                }
            }
        }

        /// Writes the payload of `msg` to `w`, checking that its length
        /// fields agree with its data: the same code measures a payload
        /// (with a [`Counter`]) and writes it (with a [`Writer`]).
        fn encode_payload(msg: &Message<'_>, w: &mut impl Sink) -> Result<(), EncodeError> {
            match *msg {
                $(
                    Message::$name {
                        $( 0: $tuple_field, )?
                        $( $( $field, )* )?
                    } => {
                        $( Field::put($tuple_field, w)?; )?
                        $( $( messages!(@put w, $field, $ty $(= $how($len))?); )* )?
                    }
                )*
            }
            Ok(())
        }

        /// Decodes payload `p` of the message that header `h` announces.
        fn decode_payload<$lt>(h: &Header, p: &$lt [u8]) -> Result<Message<$lt>, DecodeError> {
            let id = h.msg_id;
            match (h.class, h.kind, id) {
                $(
                    (Class::$class, Kind::$kind, $id) => {
                        let fixed = 0
                            $( + <$tuple as Field<$lt>>::FIXED )?
                            $( $( + messages!(@fixed $ty $(= $how($len))?) )* )?;
                        let trailing = false
                            $( || <$tuple as Field<$lt>>::TRAILING )?
                            $( $( || messages!(@trailing $ty $(= $how($len))?) )* )?;
                        #[allow(unused_mut, unused_variables)]
                        let mut r = if trailing {
                            at_least(id, p, fixed)?
                        } else {
                            exact(id, p, fixed)?
                        };
                        $( let $tuple_field = <$tuple as Field<$lt>>::get(&mut r, id)?; )?
                        $( $(
                            let $field: $ty = messages!(@get r, id, $ty $(= $how($len))?);
                        )* )?
                        Ok(Message::$name {
                            $( 0: $tuple_field, )?
                            $( $( $field, )* )?
                        })
                    }
                )*
                (class, kind, msg_id) => Err(DecodeError::UnknownId { class, kind, msg_id }),
            }
        }
    };

    (@fixed $ty:ty) => { <$ty as Field<'_>>::FIXED };
    (@fixed $ty:ty = $how:ident($len:expr)) => { 0 };
    (@trailing $ty:ty) => { <$ty as Field<'_>>::TRAILING };
    (@trailing $ty:ty = $how:ident($len:expr)) => { true };
    (@put $w:ident, $v:ident, $ty:ty) => { Field::put($v, $w)? };
    (@put $w:ident, $v:ident, $ty:ty = optional($len:expr)) => {{
        check_optional($len, $v)?;
        $w.bytes($v.unwrap_or(&[]))?
    }};
    (@put $w:ident, $v:ident, $ty:ty = sized($len:expr)) => {{
        if u32::try_from($v.len()) != Ok($len) {
            return Err(EncodeError::Inconsistent);
        }
        $w.bytes($v)?
    }};
    (@get $r:ident, $id:ident, $ty:ty) => { Field::get(&mut $r, $id)? };
    (@get $r:ident, $id:ident, $ty:ty = optional($len:expr)) => { optional_tail($id, &$r, $len)? };
    (@get $r:ident, $id:ident, $ty:ty = sized($len:expr)) => { tail($id, &$r, $len, 1)? };
}

messages! {
    <'a>
    // Transport requests (driver to device).
    /// GET_DEVICE_INFO request.
    GetDeviceInfo = Transport Request transport_id::GET_DEVICE_INFO;
    /// GET_DEVICE_FEATURES request.
    GetDeviceFeatures {
        /// First 32-bit feature block.
        block_index: u32,
        /// Number of blocks wanted.
        num_blocks: u32,
    } = Transport Request transport_id::GET_DEVICE_FEATURES;
    /// SET_DRIVER_FEATURES request.
    SetDriverFeatures {
        /// First 32-bit feature block.
        block_index: u32,
        /// The blocks, from `block_index` on.
        features: Words<'a>,
    } = Transport Request transport_id::SET_DRIVER_FEATURES;
    /// GET_CONFIG request.
    GetConfig {
        /// Offset in the configuration space.
        offset: u32,
        /// Bytes wanted.
        length: u32,
    } = Transport Request transport_id::GET_CONFIG;
    /// SET_CONFIG request.
    SetConfig {
        /// Latest configuration generation seen by the driver.
        generation: u32,
        /// Offset in the configuration space.
        offset: u32,
        /// Bytes to write.
        data: &'a [u8],
    } = Transport Request transport_id::SET_CONFIG;
    /// GET_DEVICE_STATUS request.
    GetDeviceStatus = Transport Request transport_id::GET_DEVICE_STATUS;
    /// SET_DEVICE_STATUS request.
    SetDeviceStatus {
        /// New status (0 resets the device).
        status: u32,
    } = Transport Request transport_id::SET_DEVICE_STATUS;
    /// GET_VQUEUE request.
    GetVqueue {
        /// Virtqueue index.
        index: u32,
    } = Transport Request transport_id::GET_VQUEUE;
    /// SET_VQUEUE request.
    SetVqueue(config: VqueueConfig) = Transport Request transport_id::SET_VQUEUE;
    /// RESET_VQUEUE request.
    ResetVqueue {
        /// Virtqueue index.
        index: u32,
    } = Transport Request transport_id::RESET_VQUEUE;
    /// GET_SHM request.
    GetShm {
        /// Shared memory region id.
        index: u32,
    } = Transport Request transport_id::GET_SHM;

    // Transport responses (device to driver).
    /// GET_DEVICE_INFO response.
    DeviceInfo(info: DeviceInfo) = Transport Response transport_id::GET_DEVICE_INFO;
    /// GET_DEVICE_FEATURES response.
    DeviceFeatures {
        /// First 32-bit feature block.
        block_index: u32,
        /// The blocks (zero beyond the implemented bits).
        features: Words<'a>,
    } = Transport Response transport_id::GET_DEVICE_FEATURES;
    /// SET_DRIVER_FEATURES response (no payload).
    DriverFeaturesSet = Transport Response transport_id::SET_DRIVER_FEATURES;
    /// GET_CONFIG response.
    Config {
        /// Configuration generation the data belongs to.
        generation: u32,
        /// Offset in the configuration space.
        offset: u32,
        /// The bytes read.
        data: &'a [u8],
    } = Transport Response transport_id::GET_CONFIG;
    /// SET_CONFIG response.
    ConfigSet {
        /// Configuration generation after the write.
        generation: u32,
        /// Offset in the configuration space.
        offset: u32,
        /// Bytes written; 0 if the write was rejected (stale generation).
        length: u32,
        /// Optional echo of the bytes now in the configuration space; when
        /// present, exactly `length` bytes.
        echo: Option<&'a [u8]> = optional(length),
    } = Transport Response transport_id::SET_CONFIG;
    /// GET_DEVICE_STATUS response.
    DeviceStatus {
        /// Current status.
        status: u32,
    } = Transport Response transport_id::GET_DEVICE_STATUS;
    /// SET_DEVICE_STATUS response.
    DeviceStatusSet {
        /// Resulting status (FEATURES_OK may have been cleared).
        status: u32,
    } = Transport Response transport_id::SET_DEVICE_STATUS;
    /// GET_VQUEUE response.
    Vqueue(info: VqueueInfo) = Transport Response transport_id::GET_VQUEUE;
    /// SET_VQUEUE response (no payload).
    VqueueSet = Transport Response transport_id::SET_VQUEUE;
    /// RESET_VQUEUE response (no payload).
    VqueueReset = Transport Response transport_id::RESET_VQUEUE;
    /// GET_SHM response.
    Shm {
        /// Shared memory region id.
        index: u32,
        /// Length of the region; 0 if there is no such region.
        length: u32,
        /// Address of the region.
        address: u32,
    } = Transport Response transport_id::GET_SHM;

    // Transport events.
    /// EVENT_CONFIG (device to driver).
    EventConfig {
        /// Current device status.
        device_status: u32,
        /// Current configuration generation.
        generation: u32,
        /// Offset of the change in the configuration space.
        offset: u32,
        /// Length of the change.
        length: u32,
        /// Optional new bytes; when present, exactly `length` bytes.
        data: Option<&'a [u8]> = optional(length),
    } = Transport Request transport_id::EVENT_CONFIG;
    /// EVENT_AVAIL (driver to device).
    EventAvail {
        /// Virtqueue index.
        vq_index: u32,
        /// Notification data, or [`AvailNext::NONE`].
        next: AvailNext,
    } = Transport Request transport_id::EVENT_AVAIL;
    /// EVENT_USED (device to driver).
    EventUsed {
        /// Virtqueue index.
        vq_index: u32,
    } = Transport Request transport_id::EVENT_USED;

    // Bus messages.
    /// GET_DEVICES request.
    GetDevices {
        /// First device number of the window.
        offset: u16,
        /// Device numbers in the window.
        count: u16,
    } = Bus Request bus_id::GET_DEVICES;
    /// GET_DEVICES response.
    Devices {
        /// First device number of the window.
        offset: u16,
        /// Device numbers in the window.
        count: u16,
        /// Where the next window starts; 0 when enumeration is complete.
        next_offset: u16,
        /// One bit per device number, `ceil(count / 8)` bytes; the least
        /// significant bit of byte 0 is device number `offset`.
        bitmap: &'a [u8] = sized(u32::from(count).div_ceil(8)),
    } = Bus Response bus_id::GET_DEVICES;
    /// PING request.
    Ping {
        /// Value to echo.
        data: u32,
    } = Bus Request bus_id::PING;
    /// PING response.
    Pong {
        /// The echoed value.
        data: u32,
    } = Bus Response bus_id::PING;
    /// EVENT_DEVICE (device side to driver side).
    EventDevice {
        /// The device number concerned.
        device_number: u16,
        /// What happened to it.
        state: DeviceState,
    } = Bus Request bus_id::EVENT_DEVICE;
}

/// How a payload field is written and read: the field types of the message
/// table.
trait Field<'a>: Sized {
    /// Bytes it takes, up to any trailing data.
    const FIXED: usize;
    /// Whether trailing data of a length it says follows (the last field).
    const TRAILING: bool = false;

    fn put(self, w: &mut impl Sink) -> Result<(), EncodeError>;

    /// Reads the field; the payload's size was checked against the fixed
    /// fields of its message.
    fn get(r: &mut Reader<'a>, msg_id: u8) -> Result<Self, DecodeError>;
}

/// Little-endian integers, with the [`Sink`] and `Reader` method of their width.
macro_rules! integer_fields {
    ($($ty:ident),*) => {$(
        impl Field<'_> for $ty {
            const FIXED: usize = core::mem::size_of::<$ty>();

            fn put(self, w: &mut impl Sink) -> Result<(), EncodeError> {
                w.$ty(self)
            }

            fn get(r: &mut Reader<'_>, _: u8) -> Result<Self, DecodeError> {
                r.$ty()
            }
        }
    )*};
}

integer_fields!(u16, u32, u64);

/// Feature blocks: their number, then the words.
impl<'a> Field<'a> for Words<'a> {
    const FIXED: usize = 4;
    const TRAILING: bool = true;

    fn put(self, w: &mut impl Sink) -> Result<(), EncodeError> {
        w.u32(len_u32(self.len())?)?;
        self.iter().try_for_each(|word| w.u32(word))
    }

    fn get(r: &mut Reader<'a>, msg_id: u8) -> Result<Self, DecodeError> {
        let count = r.u32()?;
        Ok(Words(WordsRepr::Wire(tail(msg_id, r, count, 4)?)))
    }
}

/// Configuration bytes: their length, then the bytes.
impl<'a> Field<'a> for &'a [u8] {
    const FIXED: usize = 4;
    const TRAILING: bool = true;

    fn put(self, w: &mut impl Sink) -> Result<(), EncodeError> {
        w.u32(len_u32(self.len())?)?;
        w.bytes(self)
    }

    fn get(r: &mut Reader<'a>, msg_id: u8) -> Result<Self, DecodeError> {
        let length = r.u32()?;
        tail(msg_id, r, length, 1)
    }
}

impl Field<'_> for AvailNext {
    const FIXED: usize = 4;

    fn put(self, w: &mut impl Sink) -> Result<(), EncodeError> {
        w.u32(self.raw())
    }

    fn get(r: &mut Reader<'_>, _: u8) -> Result<Self, DecodeError> {
        Ok(AvailNext(r.u32()?))
    }
}

impl Field<'_> for DeviceState {
    const FIXED: usize = 2;

    fn put(self, w: &mut impl Sink) -> Result<(), EncodeError> {
        w.u16(self.raw())
    }

    fn get(r: &mut Reader<'_>, _: u8) -> Result<Self, DecodeError> {
        match r.u16()? {
            Self::READY => Ok(Self::Ready),
            Self::REMOVED => Ok(Self::Removed),
            state => Err(DecodeError::DeviceState { state }),
        }
    }
}

impl Field<'_> for DeviceInfo {
    const FIXED: usize = 24;

    fn put(self, w: &mut impl Sink) -> Result<(), EncodeError> {
        w.u32(self.device_id)?;
        w.u32(self.vendor_id)?;
        w.u32(self.num_feature_bits)?;
        w.u32(self.config_size)?;
        w.u32(self.max_virtqueues)?;
        w.u16(self.admin_vq_start)?;
        w.u16(self.admin_vq_count)
    }

    fn get(r: &mut Reader<'_>, _: u8) -> Result<Self, DecodeError> {
        Ok(Self {
            device_id: r.u32()?,
            vendor_id: r.u32()?,
            num_feature_bits: r.u32()?,
            config_size: r.u32()?,
            max_virtqueues: r.u32()?,
            admin_vq_start: r.u16()?,
            admin_vq_count: r.u16()?,
        })
    }
}

/// With two reserved words, written as zero and ignored when read.
impl Field<'_> for VqueueConfig {
    const FIXED: usize = 40;

    fn put(self, w: &mut impl Sink) -> Result<(), EncodeError> {
        w.u32(self.index)?;
        w.u32(0)?;
        w.u32(self.size)?;
        w.u32(0)?;
        w.u64(self.desc_addr)?;
        w.u64(self.driver_addr)?;
        w.u64(self.device_addr)
    }

    fn get(r: &mut Reader<'_>, _: u8) -> Result<Self, DecodeError> {
        let index = r.u32()?;
        let _reserved = r.u32()?;
        let size = r.u32()?;
        let _reserved = r.u32()?;
        Ok(Self {
            index,
            size,
            desc_addr: r.u64()?,
            driver_addr: r.u64()?,
            device_addr: r.u64()?,
        })
    }
}

/// With a reserved word, written as zero and ignored when read.
impl Field<'_> for VqueueInfo {
    const FIXED: usize = 40;

    fn put(self, w: &mut impl Sink) -> Result<(), EncodeError> {
        w.u32(self.index)?;
        w.u32(self.max_size)?;
        w.u32(self.cur_size)?;
        w.u32(0)?;
        w.u64(self.desc_addr)?;
        w.u64(self.driver_addr)?;
        w.u64(self.device_addr)
    }

    fn get(r: &mut Reader<'_>, _: u8) -> Result<Self, DecodeError> {
        let index = r.u32()?;
        let max_size = r.u32()?;
        let cur_size = r.u32()?;
        let _reserved = r.u32()?;
        Ok(Self {
            index,
            max_size,
            cur_size,
            desc_addr: r.u64()?,
            driver_addr: r.u64()?,
            device_addr: r.u64()?,
        })
    }
}

/// Bytes of the fixed fields of message `id` of `class` and `kind`, for
/// constants (a message that does not exist does not compile).
const fn fixed(class: Class, kind: Kind, id: u8) -> usize {
    match Message::fixed_len(class, kind, id) {
        Some(len) => len,
        None => panic!("no such message"),
    }
}

/// GET_CONFIG response (and SET_CONFIG request) payload up to the data.
const CONFIG_FIXED: usize = fixed(Class::Transport, Kind::Response, transport_id::GET_CONFIG);
/// GET_DEVICE_FEATURES response (and SET_DRIVER_FEATURES request) payload up
/// to the blocks.
const FEATURES_FIXED: usize = fixed(
    Class::Transport,
    Kind::Response,
    transport_id::GET_DEVICE_FEATURES,
);
/// GET_DEVICES response payload up to the bitmap.
const DEVICES_FIXED: usize = fixed(Class::Bus, Kind::Response, bus_id::GET_DEVICES);

/// Most configuration bytes one GET_CONFIG response (or SET_CONFIG request)
/// can carry on a bus whose messages are at most `max_msg_size` bytes.
#[inline]
pub const fn max_config_chunk(max_msg_size: usize) -> usize {
    max_msg_size.saturating_sub(HEADER_SIZE + CONFIG_FIXED)
}

/// Most feature blocks one GET_DEVICE_FEATURES response (or
/// SET_DRIVER_FEATURES request) can carry on a bus whose messages are at
/// most `max_msg_size` bytes.
#[inline]
pub const fn max_feature_blocks(max_msg_size: usize) -> usize {
    max_msg_size.saturating_sub(HEADER_SIZE + FEATURES_FIXED) / 4
}

/// Most bitmap bytes one GET_DEVICES response can carry on a bus whose
/// messages are at most `max_msg_size` bytes.
#[inline]
pub const fn max_devices_bitmap(max_msg_size: usize) -> usize {
    max_msg_size.saturating_sub(HEADER_SIZE + DEVICES_FIXED)
}

/// A whole message: addressing plus content.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frame<'a> {
    /// Device number (0 for bus messages).
    pub dev_num: u16,
    /// Bus token (opaque to transport code).
    pub token: u16,
    /// The message.
    pub msg: Message<'a>,
}

impl<'a> Frame<'a> {
    /// Decodes one message from `buf`.
    ///
    /// `buf` holds what was received; it may extend past `msg_size` (a slot
    /// of fixed size) and the extra bytes are ignored. The message itself
    /// must be exactly as long as its fields say.
    pub fn decode(buf: &'a [u8]) -> Result<Self, DecodeError> {
        Self::decode_with_header(buf).map(|(_, frame)| frame)
    }

    /// Like [`Frame::decode`], and also returns the header it decoded
    /// (for the token, kind and `msg_size` of a received message).
    pub fn decode_with_header(buf: &'a [u8]) -> Result<(Header, Self), DecodeError> {
        let header = Header::decode(buf)?;
        let payload = buf.get(HEADER_SIZE..usize::from(header.msg_size)).ok_or(
            DecodeError::MsgSizeBeyondBuffer {
                msg_size: header.msg_size,
                len: buf.len(),
            },
        )?;
        if header.class == Class::Bus && header.dev_num != 0 {
            return Err(DecodeError::BusDeviceNumber {
                dev_num: header.dev_num,
            });
        }
        let msg = decode_payload(&header, payload)?;
        let frame = Frame {
            dev_num: header.dev_num,
            token: header.token,
            msg,
        };
        Ok((header, frame))
    }

    /// Decodes a bus response the way a driver must read those of QEMU's
    /// device model: as [`Frame::decode`] does, except a GET_DEVICES
    /// response, whose size fields v1 of the model gets wrong.
    ///
    /// A GET_DEVICES response is read from all of `buf` (what was received,
    /// a slot, say), whatever its `msg_size` says, and its device number is
    /// not looked at; its fixed fields must be there, and its bitmap is the
    /// first `ceil(count / 8)` bytes after them, or as many as `buf` holds.
    /// So the bitmap may be shorter than `count` needs: bits it does not
    /// hold were not received, and mean nothing.
    pub fn decode_lenient(buf: &'a [u8]) -> Result<Self, DecodeError> {
        let header = Header::read(buf)?;
        let id = header.msg_id;
        if (header.class, header.kind, id) != (Class::Bus, Kind::Response, bus_id::GET_DEVICES) {
            return Self::decode(buf);
        }
        let payload = buf.get(HEADER_SIZE..).unwrap_or_default();
        let mut r = at_least(id, payload, DEVICES_FIXED)?;
        let offset = r.u16()?;
        let count = r.u16()?;
        let next_offset = r.u16()?;
        let rest = r.rest();
        Ok(Frame {
            dev_num: 0,
            token: header.token,
            msg: Message::Devices {
                offset,
                count,
                next_offset,
                bitmap: rest.get(..bitmap_len(count)).unwrap_or(rest),
            },
        })
    }

    /// Number of bytes [`Frame::encode`] writes.
    pub fn encoded_len(&self) -> Result<usize, EncodeError> {
        let mut payload = Counter(0);
        encode_payload(&self.msg, &mut payload)?;
        let len = HEADER_SIZE.saturating_add(payload.0);
        if len > MAX_MSG_SIZE {
            return Err(EncodeError::TooLarge { needed: len });
        }
        Ok(len)
    }

    /// Encodes the message at the start of `out` and returns its length.
    ///
    /// Reserved bits and fields are written as zero; the rest of `out` is
    /// left untouched, and all of it if encoding fails (the message is
    /// measured, and so checked, before anything is written).
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, EncodeError> {
        let len = self.encoded_len()?;
        let (class, kind, msg_id) = self.msg.id();
        if class == Class::Bus && self.dev_num != 0 {
            return Err(EncodeError::BusDeviceNumber);
        }
        let available = out.len();
        let out = out.get_mut(..len).ok_or(EncodeError::BufferTooSmall {
            needed: len,
            len: available,
        })?;
        let header = Header {
            class,
            kind,
            msg_id,
            dev_num: self.dev_num,
            token: self.token,
            // `encoded_len` checked that `len` fits.
            msg_size: len as u16,
        };
        let mut w = Writer::new(out);
        w.u8(header.type_byte())?;
        w.u8(msg_id)?;
        w.u16(header.dev_num)?;
        w.u16(header.token)?;
        w.u16(header.msg_size)?;
        encode_payload(&self.msg, &mut w)?;
        Ok(len)
    }
}

/// Bytes of a GET_DEVICES bitmap covering `count` device numbers.
#[inline]
pub const fn bitmap_len(count: u16) -> usize {
    (count as usize).div_ceil(8)
}

fn len_u32(len: usize) -> Result<u32, EncodeError> {
    u32::try_from(len).map_err(|_| EncodeError::TooLarge { needed: len })
}

/// Checks that optional data, when present, is `length` bytes long.
fn check_optional(length: u32, data: Option<&[u8]>) -> Result<(), EncodeError> {
    match data {
        Some(d) if u32::try_from(d.len()) != Ok(length) => Err(EncodeError::Inconsistent),
        _ => Ok(()),
    }
}

/// Checks that a payload of fixed size has exactly `expected` bytes.
fn exact(msg_id: u8, payload: &[u8], expected: usize) -> Result<Reader<'_>, DecodeError> {
    if payload.len() != expected {
        return Err(DecodeError::PayloadSize {
            msg_id,
            expected,
            len: payload.len(),
        });
    }
    Ok(Reader::new(payload))
}

/// Checks that a payload holds at least its `fixed` fields.
fn at_least(msg_id: u8, payload: &[u8], fixed: usize) -> Result<Reader<'_>, DecodeError> {
    if payload.len() < fixed {
        return Err(DecodeError::ShortPayload {
            msg_id,
            needed: fixed,
            len: payload.len(),
        });
    }
    Ok(Reader::new(payload))
}

/// The rest of a payload after its fixed fields, which must be exactly
/// `count * unit` bytes long.
fn tail<'a>(msg_id: u8, r: &Reader<'a>, count: u32, unit: usize) -> Result<&'a [u8], DecodeError> {
    let rest = r.rest();
    let payload_len = r.pos + rest.len();
    let expected = usize::try_from(count)
        .ok()
        .and_then(|c| c.checked_mul(unit))
        .and_then(|n| n.checked_add(r.pos));
    match expected {
        Some(e) if e == payload_len => Ok(rest),
        // An announced size too large for `usize` cannot match what is here.
        Some(e) => Err(DecodeError::PayloadSize {
            msg_id,
            expected: e,
            len: payload_len,
        }),
        None => Err(DecodeError::PayloadSize {
            msg_id,
            expected: usize::MAX,
            len: payload_len,
        }),
    }
}

/// Like [`tail`], but the data may also be absent altogether.
fn optional_tail<'a>(
    msg_id: u8,
    r: &Reader<'a>,
    length: u32,
) -> Result<Option<&'a [u8]>, DecodeError> {
    if r.rest().is_empty() {
        return Ok(None);
    }
    tail(msg_id, r, length, 1).map(Some)
}

/// Bounds-checked little-endian reader over a payload.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    fn take<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let end = self.pos.checked_add(N);
        let bytes = end.and_then(|end| self.buf.get(self.pos..end));
        match bytes.and_then(|b| <[u8; N]>::try_from(b).ok()) {
            Some(array) => {
                self.pos += N;
                Ok(array)
            }
            // Callers check sizes first; this is the backstop.
            None => Err(DecodeError::ShortPayload {
                msg_id: 0,
                needed: self.pos.saturating_add(N),
                len: self.buf.len(),
            }),
        }
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.take()?))
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.take()?))
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.take()?))
    }

    fn rest(&self) -> &'a [u8] {
        self.buf.get(self.pos..).unwrap_or(&[])
    }
}

/// Where a payload is encoded to: little-endian fields on top of bytes.
trait Sink {
    fn bytes(&mut self, data: &[u8]) -> Result<(), EncodeError>;

    fn u8(&mut self, v: u8) -> Result<(), EncodeError> {
        self.bytes(&[v])
    }

    fn u16(&mut self, v: u16) -> Result<(), EncodeError> {
        self.bytes(&v.to_le_bytes())
    }

    fn u32(&mut self, v: u32) -> Result<(), EncodeError> {
        self.bytes(&v.to_le_bytes())
    }

    fn u64(&mut self, v: u64) -> Result<(), EncodeError> {
        self.bytes(&v.to_le_bytes())
    }
}

/// A [`Sink`] that only counts the bytes.
struct Counter(usize);

impl Sink for Counter {
    fn bytes(&mut self, data: &[u8]) -> Result<(), EncodeError> {
        self.0 = self
            .0
            .checked_add(data.len())
            .ok_or(EncodeError::TooLarge { needed: usize::MAX })?;
        Ok(())
    }
}

/// Bounds-checked little-endian writer.
struct Writer<'a> {
    buf: &'a mut [u8],
    pos: usize,
}

impl<'a> Writer<'a> {
    fn new(buf: &'a mut [u8]) -> Self {
        Self { buf, pos: 0 }
    }
}

impl Sink for Writer<'_> {
    fn bytes(&mut self, data: &[u8]) -> Result<(), EncodeError> {
        let len = self.buf.len();
        let end = self
            .pos
            .checked_add(data.len())
            .ok_or(EncodeError::TooLarge { needed: usize::MAX })?;
        let dst = self
            .buf
            .get_mut(self.pos..end)
            .ok_or(EncodeError::BufferTooSmall { needed: end, len })?;
        dst.copy_from_slice(data);
        self.pos = end;
        Ok(())
    }
}
