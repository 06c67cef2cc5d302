// SPDX-License-Identifier: GPL-2.0 OR MIT

//! Faults injected on purpose (`--fault`): a device side that misbehaves, so that tests can
//! prove the driver survives one.
//!
//! A fault acts on what the FIFO puts on its device queue for one device number (or for all of
//! them), which is where a broken device or bus would show: messages that never come, come
//! twice, late, out of order or mangled, answers that decode but lie, a queue index that makes
//! no sense or points at the wrong slot, a slot rewritten after it was published, events and
//! interrupts nobody asked for, device numbers that never answer; and on what the device takes
//! from the driver queue (a stalled backend, a device that stops reading the queue at all, a
//! tail index past the driver's head). `after=N` lets the first N messages of the device
//! through untouched, so that a fault can start once the driver is up (the first messages
//! answer the probe); `count=N` ends it after N messages.
//!
//! Faults can also be switched while the guest runs, through the control socket
//! ([`crate::control`]).

use std::collections::VecDeque;
use std::ops::RangeInclusive;
use std::str::FromStr;
use std::time::{Duration, Instant};
use virtio_msg_device::bus::DEVICES_PER_FIFO;
use virtio_msg_wire::{
    bus_id::{GET_DEVICES, PING},
    transport_id::{
        EVENT_AVAIL, GET_CONFIG, GET_DEVICE_INFO, GET_SHM, GET_VQUEUE, SET_DEVICE_STATUS,
    },
    Frame, Message, HEADER_SIZE, TYPE_BUS, TYPE_RESPONSE,
};

/// Byte offset of `msg_size` in the header.
const MSG_SIZE: usize = 6;
/// What a lying header claims: more than any slot holds.
const LYING_MSG_SIZE: u16 = 200;
/// Byte offset of the generation in a GET_CONFIG answer (the first payload word).
const GENERATION: usize = virtio_msg_wire::HEADER_SIZE;

/// What goes wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultKind {
    /// Nothing more is sent: a device that stopped answering.
    Silent,
    /// Every `n`th message is dropped (as the device model drops when its queue is full).
    DropEvery(u32),
    /// Every message is sent twice.
    Twice,
    /// Every message keeps its type and device number; every other byte becomes `0xff` (an
    /// unknown message id, a `msg_size` past the slot): it decodes as nothing.
    Garbage,
    /// Every message claims a `msg_size` larger than a slot.
    LyingSize,
    /// Once: the device queue's head index is set out of range, which breaks the queue
    /// protocol for good.
    CorruptIndex,
    /// Every GET_CONFIG answer carries a new configuration generation.
    GenerationChurn,
    /// The same, and an EVENT_CONFIG announcing that generation goes just before each answer
    /// (so that no two answers in a row look alike to the driver).
    GenerationChurnEvent,
    /// Every message is held back for this many milliseconds (longer than the driver's
    /// timeout, say), and what follows it waits behind it.
    Late(u32),
    /// Every message waits for the next message of another device and goes after it (or for
    /// [`REORDER_WAIT`] if none comes).
    Reorder,
    /// Once: an EVENT_CONFIG with DEVICE_NEEDS_RESET in the device status.
    NeedsReset,
    /// Every SET_DEVICE_STATUS answer shows DRIVER_OK and DEVICE_NEEDS_RESET on top of the
    /// status: the answer to ACKNOWLEDGE claims the driver runs, the answer to a reset that
    /// the device needs one.
    StatusLie,
    /// This many EVENT_USED for queue 0 per tick, on top of the real ones.
    FloodUsed(u32),
    /// This many EVENT_CONFIG per tick, with nothing changed.
    FloodConfig(u32),
    /// Once: from the first EVENT_AVAIL on, the device's backend takes nothing from the driver
    /// for this many milliseconds (its buffers wait, as behind a stalled disk).
    Stall(u32),
    /// The device PINGs the driver every tick and counts the echoes (bus messages: NUM must be
    /// `all`).
    Ping,
    /// Every tick, the FIFO's MSI-X vector is raised this many times with nothing new on the
    /// device queue: an interrupt storm (NUM must be `all`: the vector is the FIFO's). Back to
    /// back raises may reach the guest as fewer interrupts; that is up to the interrupt path.
    MsixStorm(u32),
    /// Once: this many device PINGs go on the device queue at once, more than the driver
    /// queue has room for echoes if the number is large; the echoes are counted as for
    /// [`FaultKind::Ping`] (NUM must be `all`). PINGs that find the device queue full are lost
    /// (compat mode) or wait for room (strict mode), and only those that made it count as sent.
    /// The doorbells the driver rings until the last echo comes are counted too (see
    /// [`BurstAnswer`]): one per echo, or one per batch of them.
    PingBurst(u32),
    /// Once: right after a message is published, the device queue's head moves back by
    /// [`BACKWARDS`] slots and the device goes on producing from there. A driver that had not
    /// read the last messages yet sees them taken back; one that had sees a queue that looks
    /// almost full, of stale slots.
    IndexBackwards,
    /// After every `n`th message (1: every message), the device queue's head is published
    /// one slot too far: in range, but the driver is told of one slot that holds nothing new
    /// (whatever an earlier message left there, or zeros), and the device goes on from there.
    /// Left out while the queue has no free slot (one slot too far would make it look empty).
    IndexJitter(u32),
    /// After this many milliseconds (0: right after the interrupt that announces it), the slot
    /// of every published message is overwritten with `0xff` bytes, as a device that reuses a
    /// slot too early would; the driver may be copying it just then. A slot that holds
    /// another message by then is left alone, and so are messages that waited for room
    /// (strict mode).
    SlotRewrite(u32),
    /// Once: the device publishes a driver-queue tail [`OVERTAKE`] slots past the driver's head
    /// (it claims to have read messages the driver never wrote), once it is done with the
    /// driver queue for the moment. Its own reading is not fooled: the next time it looks at
    /// the driver queue, it puts the real tail back first.
    TailOvertake,
    /// Once: the device stops taking messages from the driver queue (all of them, whatever
    /// NUM: it is one queue) for this many milliseconds, or for good (`None`, until the fault
    /// is cleared), so that the driver queue fills up. The message that sets it off still
    /// goes out. Unlike [`FaultKind::Stall`], nothing is read at all, bus messages included.
    StopConsuming(Option<u32>),
    /// Enumeration (GET_DEVICES answers) lists this many more device numbers than there are
    /// devices: free numbers after the highest real one, then free numbers below it, up to the
    /// bus's 32. Nothing ever answers for them, not even what the device model answers for an
    /// empty number (NUM must be `all`).
    SilentNumbers(u32),
    /// GET_CONFIG answers lie in turn about where and how much: the first says the data is
    /// from an offset [`CONFIG_SKEW`] bytes further on, the next carries one byte less than
    /// asked for (one byte more if none was asked for), and so on. Every answer decodes.
    WrongConfig,
    /// GET_SHM is answered with a region of 0x10000 bytes at 0xfeed0000, where no driver
    /// should map anything; the device model does not answer GET_SHM at all, and the
    /// emulator's strict mode answers that there is no region. `after=N` and `count=N` count
    /// GET_SHM requests here.
    ShmLie,
    /// GET_VQUEUE answers give a maximum queue size of 0x8000, 1000 and 0 in turn: the
    /// largest size a virtqueue can have, one that is not a power of two, and "no such queue"
    /// for a queue the device has.
    VqueueLie,
    /// GET_DEVICE_INFO answers claim 0xffff bytes of configuration space and 0xffff queues.
    InfoLie,
}

/// How long a reordered message waits for one of another device.
pub const REORDER_WAIT: Duration = Duration::from_millis(50);
/// Device status of the DEVICE_NEEDS_RESET event: running (ACKNOWLEDGE, DRIVER, DRIVER_OK,
/// FEATURES_OK) and needing a reset.
const NEEDS_RESET_STATUS: u32 = 0x0f | NEEDS_RESET;
/// The DEVICE_NEEDS_RESET status bit.
const NEEDS_RESET: u32 = 0x40;
/// What a lying SET_DEVICE_STATUS answer adds: DRIVER_OK and DEVICE_NEEDS_RESET.
const LIE_STATUS: u32 = 0x04 | NEEDS_RESET;
/// Byte offset of the status in a SET_DEVICE_STATUS answer (the first payload word).
const STATUS: usize = virtio_msg_wire::HEADER_SIZE;
/// Slots an [`FaultKind::IndexBackwards`] head moves back: more than one answer, so that it
/// lands on slots the driver may have read already as well as on ones it has not.
pub const BACKWARDS: u32 = 3;
/// Slots past the driver's head that an [`FaultKind::TailOvertake`] tail is put.
pub const OVERTAKE: u32 = 3;
/// Bytes a [`FaultKind::WrongConfig`] offset is off by: a whole field further on in every
/// configuration layout, so that the lie cannot pass for the truth.
pub const CONFIG_SKEW: u32 = 4;
/// Byte offsets in a GET_CONFIG answer: offset and length (after the generation), then data.
const CONFIG_OFFSET: usize = HEADER_SIZE + 4;
const CONFIG_LENGTH: usize = HEADER_SIZE + 8;
/// Byte offset of max_size in a GET_VQUEUE answer (after the index).
const VQUEUE_MAX_SIZE: usize = HEADER_SIZE + 4;
/// What [`FaultKind::VqueueLie`] answers, in turn.
pub const VQUEUE_LIES: [u32; 3] = [0x8000, 1000, 0];
/// Byte offsets of config_size and max_virtqueues in a GET_DEVICE_INFO answer.
const INFO_CONFIG_SIZE: usize = HEADER_SIZE + 12;
const INFO_QUEUES: usize = HEADER_SIZE + 16;
/// What [`FaultKind::InfoLie`] claims for both.
pub const INFO_LIE: u32 = 0xffff;
/// The region [`FaultKind::ShmLie`] offers: length and address.
pub const SHM_LIE: (u32, u32) = (0x10000, 0xfeed_0000);
/// Byte offsets in a GET_DEVICES answer: window offset and count, then (after next_offset)
/// the bitmap.
const DEVICES_OFFSET: usize = HEADER_SIZE;
const DEVICES_COUNT: usize = HEADER_SIZE + 2;
const DEVICES_BITMAP: usize = HEADER_SIZE + 6;

impl FaultKind {
    /// Whether the fault acts on tick, not on messages.
    fn on_tick(self) -> bool {
        matches!(
            self,
            Self::FloodUsed(_)
                | Self::FloodConfig(_)
                | Self::Ping
                | Self::MsixStorm(_)
                | Self::PingBurst(_)
        )
    }

    /// Whether the fault acts on what the driver sends, not on what the device sends.
    fn on_requests(self) -> bool {
        matches!(self, Self::Stall(_) | Self::ShmLie)
    }
}

/// One `--fault FIFO:NUM:KIND[,after=N][,count=N][,msg=ID][,every=N][,ms=N][,n=N]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FaultSpec {
    /// FIFO index.
    pub fifo: usize,
    /// Device number, or `None` for every device of the FIFO (`NUM` is `all`).
    pub dev_num: Option<u16>,
    /// What goes wrong.
    pub kind: FaultKind,
    /// Messages of the device let through before the fault starts.
    pub after: u64,
    /// Messages (or ticks) the fault acts on, then it ends; `None`: for ever.
    pub count: Option<u64>,
    /// Only messages with this message id (a response has its request's) are counted and acted
    /// on (`msg=ID`): a device that, say, stops answering resets and nothing else.
    pub msg_id: Option<u8>,
}

/// The syntax, for error messages.
const SYNTAX: &str = "FIFO:NUM:KIND[,after=N][,count=N][,msg=ID][,every=N][,ms=N][,n=N]";
/// The kinds, for error messages.
const KINDS: &str = "silent, drop (every=N), twice, garbage, lying-size, corrupt-index, \
    generation-churn, generation-churn-event, late (ms=N), reorder, needs-reset, status-lie, flood-used (n=N), flood-config (n=N), \
    stall (ms=N), ping, msix-storm (n=N), ping-burst (n=N), index-backwards, index-jitter \
    [every=N], slot-rewrite [ms=N], tail-overtake, stop-consuming [ms=N], silent-numbers (n=N), \
    wrong-config, shm-lie, vqueue-lie, info-lie";

/// A `--fault` specification that does not parse, and why.
#[derive(Debug, thiserror::Error)]
#[error("--fault {0:?}: {1}")]
pub struct FaultParseError(String, Problem);

/// What is wrong with a `--fault` specification.
#[derive(Debug, thiserror::Error)]
enum Problem {
    #[error("expected {SYNTAX}", SYNTAX = SYNTAX)]
    Syntax,
    #[error("FIFO is not a number")]
    Fifo,
    #[error("NUM is not a number or 'all'")]
    Num,
    #[error("{0} needs a number ({0}=N)")]
    NotANumber(String),
    #[error("{0}=N too large")]
    TooLarge(String),
    #[error("{0}=N needs N of {1} or more")]
    TooSmall(&'static str, u64),
    #[error("msg=ID is one byte")]
    MsgId,
    #[error("unknown option {0:?}")]
    UnknownOption(String),
    #[error("{0} needs {1}")]
    KindNeeds(String, &'static str),
    #[error("KIND is one of: {KINDS}", KINDS = KINDS)]
    Kind,
    #[error(
        "every=N is for drop and index-jitter, ms=N for late, stall, slot-rewrite and \
        stop-consuming, n=N for floods, msix-storm, ping-burst and silent-numbers"
    )]
    Misplaced,
    #[error(
        "ping, ping-burst, msix-storm, silent-numbers and reorder act on the whole FIFO: NUM \
        must be 'all'"
    )]
    BusWide,
    #[error("this fault needs a device number, not 'all'")]
    OneDevice,
}

impl FromStr for FaultSpec {
    type Err = FaultParseError;

    fn from_str(s: &str) -> Result<Self, FaultParseError> {
        let err = |problem| FaultParseError(s.into(), problem);
        let mut parts = s.splitn(3, ':');
        let (Some(fifo), Some(num), Some(rest)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(err(Problem::Syntax));
        };
        let fifo = fifo.parse().map_err(|_| err(Problem::Fifo))?;
        let dev_num = match num {
            "all" => None,
            n => Some(n.parse().map_err(|_| err(Problem::Num))?),
        };
        let mut opts = rest.split(',');
        let kind = opts.next().unwrap_or_default();
        let (mut after, mut count, mut every, mut ms, mut n) = (0, None, None, None, None);
        let mut msg_id = None;
        for opt in opts {
            let (key, value) = opt.split_once('=').unwrap_or((opt, ""));
            let value = match value.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => value.parse(),
            }
            .map_err(|_| err(Problem::NotANumber(key.into())))?;
            let small = || u32::try_from(value).map_err(|_| err(Problem::TooLarge(key.into())));
            match key {
                "after" => after = value,
                "count" if value > 0 => count = Some(value),
                "count" => return Err(err(Problem::TooSmall("count", 1))),
                "every" if value >= 2 => every = Some(small()?),
                "every" => return Err(err(Problem::TooSmall("every", 2))),
                "ms" => ms = Some(small()?),
                "n" if value > 0 => n = Some(small()?),
                "n" => return Err(err(Problem::TooSmall("n", 1))),
                "msg" => msg_id = Some(u8::try_from(value).map_err(|_| err(Problem::MsgId))?),
                _ => return Err(err(Problem::UnknownOption(key.into()))),
            }
        }
        let needs = |what| err(Problem::KindNeeds(kind.into(), what));
        let kind = match kind {
            "silent" => FaultKind::Silent,
            "drop" => FaultKind::DropEvery(every.take().ok_or_else(|| needs("every=N"))?),
            "twice" => FaultKind::Twice,
            "garbage" => FaultKind::Garbage,
            "lying-size" => FaultKind::LyingSize,
            "corrupt-index" => FaultKind::CorruptIndex,
            "generation-churn" => FaultKind::GenerationChurn,
            "generation-churn-event" => FaultKind::GenerationChurnEvent,
            "late" => FaultKind::Late(ms.take().ok_or_else(|| needs("ms=N"))?),
            "reorder" => FaultKind::Reorder,
            "needs-reset" => FaultKind::NeedsReset,
            "status-lie" => FaultKind::StatusLie,
            "flood-used" => FaultKind::FloodUsed(n.take().ok_or_else(|| needs("n=N"))?),
            "flood-config" => FaultKind::FloodConfig(n.take().ok_or_else(|| needs("n=N"))?),
            "stall" => FaultKind::Stall(ms.take().ok_or_else(|| needs("ms=N"))?),
            "ping" => FaultKind::Ping,
            "msix-storm" => FaultKind::MsixStorm(n.take().ok_or_else(|| needs("n=N"))?),
            "ping-burst" => FaultKind::PingBurst(n.take().ok_or_else(|| needs("n=N"))?),
            "index-backwards" => FaultKind::IndexBackwards,
            "index-jitter" => FaultKind::IndexJitter(every.take().unwrap_or(1)),
            "slot-rewrite" => FaultKind::SlotRewrite(ms.take().unwrap_or(0)),
            "tail-overtake" => FaultKind::TailOvertake,
            "stop-consuming" => FaultKind::StopConsuming(ms.take()),
            "silent-numbers" => FaultKind::SilentNumbers(n.take().ok_or_else(|| needs("n=N"))?),
            "wrong-config" => FaultKind::WrongConfig,
            "shm-lie" => FaultKind::ShmLie,
            "vqueue-lie" => FaultKind::VqueueLie,
            "info-lie" => FaultKind::InfoLie,
            _ => return Err(err(Problem::Kind)),
        };
        if every.is_some() || ms.is_some() || n.is_some() {
            return Err(err(Problem::Misplaced));
        }
        let bus_wide = matches!(
            kind,
            FaultKind::Ping
                | FaultKind::Reorder
                | FaultKind::MsixStorm(_)
                | FaultKind::PingBurst(_)
                | FaultKind::SilentNumbers(_)
        );
        let one_device = matches!(
            kind,
            FaultKind::NeedsReset
                | FaultKind::Stall(_)
                | FaultKind::FloodUsed(_)
                | FaultKind::FloodConfig(_)
        );
        if bus_wide && dev_num.is_some() {
            return Err(err(Problem::BusWide));
        }
        if one_device && dev_num.is_none() {
            return Err(err(Problem::OneDevice));
        }
        Ok(Self {
            fifo,
            dev_num,
            kind,
            after,
            count,
            msg_id,
        })
    }
}

/// A fault in force on one FIFO, with what it has seen.
#[derive(Clone, Debug)]
struct Active {
    spec: FaultSpec,
    /// Messages (or ticks) of its device(s) seen so far.
    seen: u64,
    /// A once-only fault ([`FaultKind::CorruptIndex`], [`FaultKind::NeedsReset`],
    /// [`FaultKind::Stall`], [`FaultKind::PingBurst`], [`FaultKind::IndexBackwards`],
    /// [`FaultKind::TailOvertake`], [`FaultKind::StopConsuming`]) has struck.
    struck: bool,
    /// Lies told so far: which one comes next, for the faults that take turns
    /// ([`FaultKind::WrongConfig`], [`FaultKind::VqueueLie`]).
    told: u64,
}

impl Active {
    /// Counts one more message (or tick); whether the fault acts on it.
    fn acts(&mut self) -> bool {
        self.seen += 1;
        let n = self.seen.saturating_sub(self.spec.after);
        n > 0 && self.spec.count.is_none_or(|c| n <= c)
    }
}

/// What a fault makes of one outgoing message.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// The messages to put on the device queue instead (none, the message, or two copies).
    pub msgs: Vec<Vec<u8>>,
    /// Corrupt the device queue's head index now.
    pub corrupt_index: bool,
    /// Slots to move the device queue's head by once the messages are on it (negative:
    /// backwards); the device goes on from there.
    pub head_shift: i32,
    /// Overwrite the slots of the messages this long after the interrupt announcing them.
    pub rewrite: Option<Duration>,
    /// Publish a driver-queue tail past the driver's head once the device is done with the
    /// driver queue for now.
    pub overtake_tail: bool,
}

/// Whether the device takes messages from the driver queue ([`FaultKind::StopConsuming`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Consuming {
    #[default]
    Yes,
    /// Not before then.
    Until(Instant),
    /// Not while the fault is in force.
    Never,
}

/// The faults of one FIFO, and what they hold back.
#[derive(Clone, Debug, Default)]
pub struct Faults {
    active: Vec<Active>,
    /// Messages a fault dropped, doubled, mangled, delayed or added.
    injected: u64,
    /// Outgoing messages held back, with when they go out (late, reordered).
    delayed: VecDeque<(Instant, Vec<u8>)>,
    /// Driver messages a stalled backend has not taken yet, and when it takes them.
    stalled: VecDeque<(Instant, Vec<u8>)>,
    /// PINGs made, those of them the device queue had no room for, and echoes that came
    /// back right.
    pings: u32,
    lost_pings: u32,
    pongs: u32,
    /// Doorbells the driver rang so far, as the worker counted them ([`Faults::rung`]).
    doorbells: u64,
    /// The last [`FaultKind::PingBurst`] sent, and how the driver answered it.
    burst: Option<Burst>,
    /// MSI-X raises owed to a storm.
    storm: u32,
    /// Whether the device reads the driver queue.
    consuming: Consuming,
    /// Device-queue slots to overwrite, when, and the message each should still hold then.
    rewrites: Vec<(Instant, u32, Vec<u8>)>,
    /// Device numbers with a device behind them (bit n: number n), for the numbers that
    /// [`FaultKind::SilentNumbers`] adds.
    devices: u32,
}

/// A [`FaultKind::PingBurst`] that went out, and how the driver answered it.
///
/// What it is for: a driver that rings the doorbell once per PONG rings about as many times
/// as the burst has echoes, one that rings once per batch it drained rings a handful of times.
/// The window is from the moment the burst goes on the device queue until its last echo comes
/// (or the last one that came, if some never do), so that whatever the driver rings later for
/// other traffic is left out; what it rings for other traffic inside the window is counted.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Burst {
    /// The data of its PINGs (PINGs are numbered from 1 across all the FIFO's PINGs, so
    /// that echoes of a [`FaultKind::Ping`] are told apart).
    pings: RangeInclusive<u32>,
    /// Those of them the device queue had no room for.
    lost: u32,
    /// Echoes of them that came back.
    echoes: u32,
    /// The doorbell count when the burst went on the device queue, and when its last echo
    /// came.
    rung_at_start: u64,
    rung_at_last_echo: u64,
}

impl Burst {
    /// A burst of PINGs with data `pings`, sent when the driver had rung `rung` times.
    fn new(pings: RangeInclusive<u32>, rung: u64) -> Self {
        Self {
            pings,
            lost: 0,
            echoes: 0,
            rung_at_start: rung,
            rung_at_last_echo: rung,
        }
    }

    /// The echo of PING `data` came when the driver had rung `rung` times.
    fn echo(&mut self, data: u32, rung: u64) {
        if self.pings.contains(&data) {
            self.echoes += 1;
            self.rung_at_last_echo = rung;
        }
    }

    /// PING `data` found no room on the device queue.
    fn lose(&mut self, data: u32) {
        if self.pings.contains(&data) {
            self.lost += 1;
        }
    }

    /// The figures so far.
    fn answer(&self) -> BurstAnswer {
        let made = self.pings.end() + 1 - self.pings.start();
        BurstAnswer {
            sent: made.saturating_sub(self.lost),
            echoed: self.echoes,
            doorbells: self.rung_at_last_echo - self.rung_at_start,
        }
    }
}

/// How the driver answered a [`FaultKind::PingBurst`] ([`Faults::burst`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BurstAnswer {
    /// PINGs of the burst that went on the device queue.
    pub sent: u32,
    /// Echoes of them that came back.
    pub echoed: u32,
    /// Doorbells the driver rang from the moment the burst went on the device queue until its
    /// last echo came (none if no echo came). A doorbell rung after the echo it announces was
    /// taken (the worker may drain the driver queue while the driver still writes it) is not
    /// counted if that echo was the last: at most one too few.
    pub doorbells: u64,
}

fn dev_num_of(msg: &[u8]) -> Option<u16> {
    le16(msg, 2)
}

fn le16(msg: &[u8], at: usize) -> Option<u16> {
    msg.get(at..at + 2)
        .map(|b| u16::from_le_bytes([b[0], b[1]]))
}

fn le32(msg: &[u8], at: usize) -> Option<u32> {
    msg.get(at..at + 4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

fn put_le32(msg: &mut [u8], at: usize, value: u32) {
    if let Some(word) = msg.get_mut(at..at + 4) {
        word.copy_from_slice(&value.to_le_bytes());
    }
}

fn in_mask(mask: u32, n: u16) -> bool {
    u32::from(n) < u32::BITS && mask & (1 << n) != 0
}

/// The `n` numbers [`FaultKind::SilentNumbers`] adds to `devices` (bit n: number n): free
/// numbers after the highest real one first, because a driver walking the bus in order
/// meets them after the devices it knows; then free ones below it.
fn silent_numbers(devices: u32, n: u32) -> u32 {
    let after = (u32::BITS - devices.leading_zeros()) as u16;
    (after..DEVICES_PER_FIFO)
        .chain(0..after)
        .filter(|&d| !in_mask(devices, d))
        .take(n as usize)
        .fold(0, |mask, d| mask | 1 << d)
}

/// Sets the bits of the numbers in `silent` that fall into the window of `msg`, if it is a
/// GET_DEVICES answer. The window is the one the answer states, which is what the driver
/// reads the bitmap against.
fn list_numbers(msg: &mut [u8], silent: u32) {
    if msg.get(..2) != Some(&[TYPE_BUS | TYPE_RESPONSE, GET_DEVICES]) {
        return;
    }
    let (Some(offset), Some(count)) = (le16(msg, DEVICES_OFFSET), le16(msg, DEVICES_COUNT)) else {
        return;
    };
    for d in (0..DEVICES_PER_FIFO).filter(|&d| in_mask(silent, d)) {
        let Some(bit) = d.checked_sub(offset).filter(|&b| b < count) else {
            continue;
        };
        if let Some(byte) = msg.get_mut(DEVICES_BITMAP + usize::from(bit / 8)) {
            *byte |= 1 << (bit % 8);
        }
    }
}

/// A GET_CONFIG answer that says its data is from further on than it is.
fn skew_config_offset(msg: &mut [u8]) {
    if let Some(offset) = le32(msg, CONFIG_OFFSET) {
        put_le32(msg, CONFIG_OFFSET, offset.wrapping_add(CONFIG_SKEW));
    }
}

/// A GET_CONFIG answer with one byte less data than asked for, or one byte more if none was:
/// length and msg_size stay consistent, so it decodes.
fn resize_config_data(msg: &mut Vec<u8>) {
    let (Some(length), Some(size)) = (le32(msg, CONFIG_LENGTH), le16(msg, MSG_SIZE)) else {
        return;
    };
    // On top of a header another fault made lie, this one would not decode either.
    if usize::from(size) != msg.len() {
        return;
    }
    let (length, size) = match length.checked_sub(1) {
        Some(shorter) => (shorter, size - 1),
        None => (1, size + 1),
    };
    msg.resize(usize::from(size), 0);
    put_le32(msg, CONFIG_LENGTH, length);
    msg[MSG_SIZE..MSG_SIZE + 2].copy_from_slice(&size.to_le_bytes());
}

fn encode(dev_num: u16, msg: Message<'_>) -> Vec<u8> {
    let mut out = vec![0u8; 64];
    let frame = Frame {
        dev_num,
        token: 0,
        msg,
    };
    let len = frame.encode(&mut out).unwrap_or(0);
    out.truncate(len);
    out
}

impl Faults {
    /// The faults of `specs` that are for FIFO `fifo`.
    pub fn for_fifo(fifo: usize, specs: &[FaultSpec]) -> Self {
        Self {
            active: specs
                .iter()
                .filter(|s| s.fifo == fifo)
                .map(|&spec| Active {
                    spec,
                    seen: 0,
                    struck: false,
                    told: 0,
                })
                .collect(),
            ..Self::default()
        }
    }

    /// Replaces the faults with `other`'s; what is held back still goes out, when due. A
    /// device that stopped reading the driver queue for good reads it again once no
    /// [`FaultKind::StopConsuming`] is left (the only way to end that stop); a timed stop
    /// runs out.
    pub fn replace(&mut self, other: Faults) {
        let stops = |f: &Faults| {
            f.active
                .iter()
                .any(|a| matches!(a.spec.kind, FaultKind::StopConsuming(_)))
        };
        if self.consuming == Consuming::Never && !stops(&other) {
            self.consuming = Consuming::Yes;
        }
        self.active = other.active;
    }

    /// Tells the faults which device numbers have a device (bit n: number n).
    pub fn set_devices(&mut self, devices: u32) {
        self.devices = devices;
    }

    /// Whether any fault is configured.
    pub fn is_empty(&self) -> bool {
        self.active.is_empty()
    }

    /// Messages a fault dropped, doubled, mangled, delayed or added so far.
    pub fn injected(&self) -> u64 {
        self.injected
    }

    /// PINGs sent to the driver and echoes received.
    pub fn pings(&self) -> (u32, u32) {
        (self.pings.saturating_sub(self.lost_pings), self.pongs)
    }

    /// A message the device meant to send did not make it onto the device queue: a PING
    /// of ours is not counted as sent.
    pub fn lost(&mut self, msg: &[u8]) {
        if msg.get(..2) != Some(&[TYPE_BUS, PING]) {
            return;
        }
        self.lost_pings += 1;
        let Some(burst) = &mut self.burst else { return };
        if let Ok(Frame {
            msg: Message::Ping { data },
            ..
        }) = Frame::decode(msg)
        {
            burst.lose(data);
        }
    }

    /// The driver rang the doorbell `times` more times: counted for [`Faults::burst`].
    pub fn rung(&mut self, times: u64) {
        self.doorbells = self.doorbells.saturating_add(times);
    }

    /// How the driver answered the last [`FaultKind::PingBurst`], if one was sent.
    pub fn burst(&self) -> Option<BurstAnswer> {
        self.burst.as_ref().map(Burst::answer)
    }

    /// When something held back (or a stop, or a slot rewrite) is due next.
    pub fn next_due(&self) -> Option<Instant> {
        // Each queue goes out in order: its front decides.
        let first = |q: &VecDeque<(Instant, Vec<u8>)>| q.front().map(|(t, _)| *t);
        let stop = match self.consuming {
            Consuming::Until(t) => Some(t),
            _ => None,
        };
        let rewrite = self.rewrites.iter().map(|(t, _, _)| *t).min();
        [first(&self.delayed), first(&self.stalled), stop, rewrite]
            .into_iter()
            .flatten()
            .min()
    }

    /// Whether the device reads the driver queue at `now` (a stop may just have run out).
    pub fn consuming(&mut self, now: Instant) -> bool {
        if let Consuming::Until(t) = self.consuming {
            if t <= now {
                self.consuming = Consuming::Yes;
            }
        }
        self.consuming == Consuming::Yes
    }

    /// MSI-X raises a storm asks for since the last call.
    pub fn storm(&mut self) -> u32 {
        std::mem::take(&mut self.storm)
    }

    /// Device-queue slot `slot` was published at `now` holding `msg`, and a fault wants it
    /// overwritten `after` that.
    pub fn rewrite_later(&mut self, slot: u32, msg: Vec<u8>, after: Duration, now: Instant) {
        self.rewrites.push((now + after, slot, msg));
    }

    /// The slots to overwrite at `now`, each with the message it should still hold.
    pub fn rewrites_due(&mut self, now: Instant) -> Vec<(u32, Vec<u8>)> {
        let (due, later) = std::mem::take(&mut self.rewrites)
            .into_iter()
            .partition(|(t, _, _)| *t <= now);
        self.rewrites = later;
        due.into_iter().map(|(_, slot, msg)| (slot, msg)).collect()
    }

    /// Applies the faults to `msg`, an encoded message the device sends, at `now`.
    pub fn apply(&mut self, msg: Vec<u8>, now: Instant) -> Outcome {
        let dev_num = dev_num_of(&msg);
        let msg_id = msg.get(1).copied();
        let mut out = Outcome {
            msgs: vec![msg],
            ..Outcome::default()
        };
        let (mut delay, mut reorder) = (None, false);
        for a in &mut self.active {
            if a.spec.kind.on_tick()
                || a.spec.kind.on_requests()
                || (a.spec.dev_num.is_some() && a.spec.dev_num != dev_num)
                || a.spec.msg_id.is_some_and(|id| msg_id != Some(id))
                || !a.acts()
            {
                continue;
            }
            let before = out.msgs.clone();
            // Acted other than on the messages.
            let mut struck = false;
            match a.spec.kind {
                FaultKind::Silent => out.msgs.clear(),
                FaultKind::DropEvery(n) => {
                    if (a.seen - a.spec.after) % u64::from(n) == 0 {
                        out.msgs.clear();
                    }
                }
                FaultKind::Twice => {
                    let copies: Vec<_> = out
                        .msgs
                        .iter()
                        .flat_map(|m| [m.clone(), m.clone()])
                        .collect();
                    out.msgs = copies;
                }
                FaultKind::Garbage => {
                    for m in &mut out.msgs {
                        m.iter_mut()
                            .enumerate()
                            .filter(|(i, _)| !matches!(i, 0 | 2 | 3))
                            .for_each(|(_, b)| *b = 0xff);
                    }
                }
                FaultKind::LyingSize => {
                    for m in &mut out.msgs {
                        if let Some(size) = m.get_mut(MSG_SIZE..MSG_SIZE + 2) {
                            size.copy_from_slice(&LYING_MSG_SIZE.to_le_bytes());
                        }
                    }
                }
                FaultKind::CorruptIndex => {
                    out.corrupt_index |= !a.struck;
                    a.struck = true;
                }
                FaultKind::GenerationChurn | FaultKind::GenerationChurnEvent => {
                    let generation = a.seen as u32;
                    let mut events = Vec::new();
                    for m in &mut out.msgs {
                        if m.get(..2) != Some(&[TYPE_RESPONSE, GET_CONFIG]) {
                            continue;
                        }
                        if let Some(g) = m.get_mut(GENERATION..GENERATION + 4) {
                            g.copy_from_slice(&generation.to_le_bytes());
                        }
                        if a.spec.kind == FaultKind::GenerationChurnEvent {
                            let event = Message::EventConfig {
                                device_status: 0,
                                generation,
                                offset: 0,
                                length: 0,
                                data: None,
                            };
                            events.push(encode(dev_num.unwrap_or(0), event));
                        }
                    }
                    events.append(&mut out.msgs);
                    out.msgs = events;
                }
                FaultKind::StatusLie => {
                    for m in &mut out.msgs {
                        if m.get(..2) != Some(&[TYPE_RESPONSE, SET_DEVICE_STATUS]) {
                            continue;
                        }
                        if let Some(word) = m.get_mut(STATUS..STATUS + 4) {
                            let status = u32::from_le_bytes([word[0], word[1], word[2], word[3]]);
                            word.copy_from_slice(&(status | LIE_STATUS).to_le_bytes());
                        }
                    }
                }
                FaultKind::Late(ms) => delay = Some(Duration::from_millis(ms.into())),
                FaultKind::Reorder => reorder = true,
                FaultKind::NeedsReset if !a.struck => {
                    a.struck = true;
                    let event = Message::EventConfig {
                        device_status: NEEDS_RESET_STATUS,
                        generation: 0,
                        offset: 0,
                        length: 0,
                        data: None,
                    };
                    out.msgs.push(encode(dev_num.unwrap_or(0), event));
                }
                FaultKind::IndexBackwards if !a.struck => {
                    a.struck = true;
                    struck = true;
                    out.head_shift -= BACKWARDS as i32;
                }
                FaultKind::IndexJitter(n) => {
                    if (a.seen - a.spec.after) % u64::from(n) == 0 {
                        struck = true;
                        out.head_shift += 1;
                    }
                }
                FaultKind::SlotRewrite(ms) => {
                    struck = !out.msgs.is_empty();
                    out.rewrite = Some(Duration::from_millis(ms.into()));
                }
                FaultKind::TailOvertake if !a.struck => {
                    a.struck = true;
                    struck = true;
                    out.overtake_tail = true;
                }
                FaultKind::StopConsuming(ms) if !a.struck => {
                    a.struck = true;
                    struck = true;
                    self.consuming = match ms {
                        Some(ms) => Consuming::Until(now + Duration::from_millis(ms.into())),
                        None => Consuming::Never,
                    };
                }
                FaultKind::SilentNumbers(n) => {
                    let silent = silent_numbers(self.devices, n);
                    // Transport messages only: bus replies carry device number 0 whoever
                    // asked.
                    out.msgs.retain(|m| {
                        let transport = m.first().is_some_and(|ty| ty & TYPE_BUS == 0);
                        !transport || dev_num_of(m).is_none_or(|d| !in_mask(silent, d))
                    });
                    for m in &mut out.msgs {
                        list_numbers(m, silent);
                    }
                }
                FaultKind::WrongConfig => {
                    for m in &mut out.msgs {
                        if m.get(..2) != Some(&[TYPE_RESPONSE, GET_CONFIG]) {
                            continue;
                        }
                        if a.told % 2 == 0 {
                            skew_config_offset(m);
                        } else {
                            resize_config_data(m);
                        }
                        a.told += 1;
                    }
                }
                FaultKind::VqueueLie => {
                    for m in &mut out.msgs {
                        if m.get(..2) != Some(&[TYPE_RESPONSE, GET_VQUEUE]) {
                            continue;
                        }
                        let lie = VQUEUE_LIES[(a.told % VQUEUE_LIES.len() as u64) as usize];
                        put_le32(m, VQUEUE_MAX_SIZE, lie);
                        a.told += 1;
                    }
                }
                FaultKind::InfoLie => {
                    for m in &mut out.msgs {
                        if m.get(..2) == Some(&[TYPE_RESPONSE, GET_DEVICE_INFO]) {
                            put_le32(m, INFO_CONFIG_SIZE, INFO_LIE);
                            put_le32(m, INFO_QUEUES, INFO_LIE);
                        }
                    }
                }
                FaultKind::NeedsReset
                | FaultKind::IndexBackwards
                | FaultKind::TailOvertake
                | FaultKind::StopConsuming(_)
                | FaultKind::FloodUsed(_)
                | FaultKind::FloodConfig(_)
                | FaultKind::Stall(_)
                | FaultKind::Ping
                | FaultKind::MsixStorm(_)
                | FaultKind::PingBurst(_)
                | FaultKind::ShmLie => {}
            }
            if out.msgs != before || out.corrupt_index || delay.is_some() || reorder || struck {
                self.injected += 1;
            }
        }
        if reorder && !out.msgs.is_empty() {
            // Behind the next message of another device, or alone after a while.
            match self
                .delayed
                .iter()
                .position(|(_, m)| dev_num_of(m) != dev_num)
                .and_then(|i| self.delayed.remove(i))
            {
                Some((_, held)) => out.msgs.push(held),
                None => delay = Some(REORDER_WAIT),
            }
        }
        // A late message holds back what follows it, as a slow device would: the device side
        // answers in order (the driver's barrier relies on it).
        let behind = !reorder && !self.delayed.is_empty();
        if let Some(due) = delay.map(|d| now + d).or(behind.then_some(now)) {
            for m in out.msgs.drain(..) {
                self.delayed.push_back((due, m));
            }
        }
        out
    }

    /// What the tick faults send now (floods, PINGs); a storm's raises are counted for
    /// [`Faults::storm`].
    pub fn tick(&mut self) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for a in &mut self.active {
            if !a.spec.kind.on_tick() || !a.acts() {
                continue;
            }
            let dev_num = a.spec.dev_num.unwrap_or(0);
            match a.spec.kind {
                FaultKind::FloodUsed(n) => {
                    let event = encode(dev_num, Message::EventUsed { vq_index: 0 });
                    out.extend((0..n).map(|_| event.clone()));
                }
                FaultKind::FloodConfig(n) => {
                    let event = Message::EventConfig {
                        device_status: 0x0f,
                        generation: 0,
                        offset: 0,
                        length: 0,
                        data: None,
                    };
                    let event = encode(dev_num, event);
                    out.extend((0..n).map(|_| event.clone()));
                }
                FaultKind::Ping => {
                    self.pings += 1;
                    out.push(encode(0, Message::Ping { data: self.pings }));
                }
                FaultKind::PingBurst(n) if !a.struck => {
                    a.struck = true;
                    let first = self.pings + 1;
                    for _ in 0..n {
                        self.pings += 1;
                        out.push(encode(0, Message::Ping { data: self.pings }));
                    }
                    // The doorbells counted from here on answer the burst (or other traffic).
                    self.burst = Some(Burst::new(first..=self.pings, self.doorbells));
                }
                FaultKind::MsixStorm(n) => self.storm = self.storm.saturating_add(n),
                _ => {}
            }
        }
        self.injected += out.len() as u64;
        out
    }

    /// The answer a lying device gives to `request` (a message from the driver) in place of
    /// its own, if any: [`FaultKind::ShmLie`], which has to answer requests because the device
    /// model sends nothing it could change.
    pub fn answer(&mut self, request: &[u8]) -> Option<Vec<u8>> {
        // Read as the device model reads fields: whatever msg_size says.
        let ty = request.first()?;
        if ty & (TYPE_BUS | TYPE_RESPONSE) != 0 || request.get(1) != Some(&GET_SHM) {
            return None;
        }
        let dev_num = dev_num_of(request).filter(|&n| n < DEVICES_PER_FIFO)?;
        let index = le32(request, HEADER_SIZE)?;
        for a in &mut self.active {
            if a.spec.kind != FaultKind::ShmLie
                || a.spec.dev_num.is_some_and(|n| n != dev_num)
                || a.spec.msg_id.is_some_and(|id| id != GET_SHM)
                || !a.acts()
            {
                continue;
            }
            self.injected += 1;
            let (length, address) = SHM_LIE;
            let shm = Message::Shm {
                index,
                length,
                address,
            };
            let mut lie = encode(dev_num, shm);
            // As the device side answers: the request's token (`--tokens` may change it).
            if let (Some(to), Some(from)) = (lie.get_mut(4..6), request.get(4..6)) {
                to.copy_from_slice(from);
            }
            return Some(lie);
        }
        None
    }

    /// Outgoing messages whose delay is over at `now`, in order.
    pub fn due(&mut self, now: Instant) -> Vec<Vec<u8>> {
        take_due(&mut self.delayed, now)
    }

    /// A message from the driver: whether a fault takes it (a stalled backend holds
    /// EVENT_AVAIL back; the echo of the device's PING is counted, and for a ping burst, with
    /// the doorbells rung by then).
    pub fn intercept(&mut self, slot: &[u8], now: Instant) -> bool {
        let (ty, id) = (slot.first().copied(), slot.get(1).copied());
        if ty == Some(TYPE_BUS | TYPE_RESPONSE) && id == Some(PING) {
            if let Ok(Frame {
                msg: Message::Pong { data },
                ..
            }) = Frame::decode(slot)
            {
                if data <= self.pings {
                    self.pongs += 1;
                    if let Some(burst) = &mut self.burst {
                        burst.echo(data, self.doorbells);
                    }
                    return true;
                }
            }
            return false;
        }
        if ty != Some(0) || id != Some(EVENT_AVAIL) {
            return false;
        }
        let dev_num = dev_num_of(slot);
        // Behind one held back, the device's next ones wait too: order is kept.
        if let Some(&(due, _)) = self
            .stalled
            .iter()
            .rev()
            .find(|(_, m)| dev_num_of(m) == dev_num)
        {
            self.stalled.push_back((due, slot.to_vec()));
            return true;
        }
        for a in &mut self.active {
            if let FaultKind::Stall(ms) = a.spec.kind {
                if a.spec.dev_num == dev_num && !a.struck && a.acts() {
                    a.struck = true;
                    self.injected += 1;
                    let due = now + Duration::from_millis(ms.into());
                    self.stalled.push_back((due, slot.to_vec()));
                    return true;
                }
            }
        }
        false
    }

    /// Driver messages a stalled backend takes at `now`, in order.
    pub fn unstalled(&mut self, now: Instant) -> Vec<Vec<u8>> {
        take_due(&mut self.stalled, now)
    }
}

/// Takes the messages due at `now` off `q`, stopping at the first that is not (order kept).
fn take_due(q: &mut VecDeque<(Instant, Vec<u8>)>, now: Instant) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while q.front().is_some_and(|(t, _)| *t <= now) {
        if let Some((_, m)) = q.pop_front() {
            out.push(m);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use virtio_msg_wire::{DeviceInfo, VqueueInfo};

    /// A 16-byte message of device `dev_num` with `tag` in its last byte.
    fn msg(dev_num: u16, tag: u8) -> Vec<u8> {
        let mut m = vec![0x01, 0x03, 0, 0, 0, 0, 16, 0, 0, 0, 0, 0, 0, 0, 0, tag];
        m[2..4].copy_from_slice(&dev_num.to_le_bytes());
        m
    }

    impl Faults {
        fn apply_now(&mut self, msg: Vec<u8>) -> Outcome {
            self.apply(msg, Instant::now())
        }
    }

    fn faults(spec: &str) -> Faults {
        Faults::for_fifo(0, &[spec.parse().unwrap()])
    }

    #[test]
    fn specs_parse_and_mistakes_are_explained() {
        let f: FaultSpec = "1:3:drop,every=4,after=10".parse().unwrap();
        assert_eq!(
            f,
            FaultSpec {
                fifo: 1,
                dev_num: Some(3),
                kind: FaultKind::DropEvery(4),
                after: 10,
                count: None,
                msg_id: None,
            }
        );
        let f: FaultSpec = "0:1:silent,count=3,msg=0x08".parse().unwrap();
        assert_eq!((f.count, f.msg_id), (Some(3), Some(0x08)));
        let f: FaultSpec = "0:all:corrupt-index".parse().unwrap();
        assert_eq!((f.dev_num, f.kind), (None, FaultKind::CorruptIndex));
        for (bad, why) in [
            ("0:1", "expected FIFO:NUM:KIND"),
            ("x:1:silent", "FIFO is not a number"),
            ("0:y:silent", "NUM is not a number"),
            ("0:1:drop", "drop needs every=N"),
            ("0:1:drop,every=1", "every=N needs N of 2 or more"),
            ("0:1:silent,every=3", "every=N is for drop"),
            ("0:1:late", "late needs ms=N"),
            ("0:1:flood-used", "flood-used needs n=N"),
            ("0:1:ping", "NUM must be 'all'"),
            ("0:all:needs-reset", "needs a device number"),
            ("0:1:silent,count=0", "count=N needs N of 1"),
            ("0:1:silent,after=x", "after needs a number"),
            ("0:1:silent,when=3", "unknown option"),
            ("0:1:silent,msg=0x100", "msg=ID is one byte"),
            ("0:1:melt", "KIND is one of"),
            ("0:all:msix-storm", "msix-storm needs n=N"),
            ("0:2:msix-storm,n=3", "NUM must be 'all'"),
            ("0:all:ping-burst", "ping-burst needs n=N"),
            ("0:1:ping-burst,n=3", "NUM must be 'all'"),
            ("0:all:silent-numbers", "silent-numbers needs n=N"),
            ("0:1:silent-numbers,n=3", "NUM must be 'all'"),
            ("0:1:index-jitter,every=1", "every=N needs N of 2"),
            (
                "0:1:index-backwards,every=2",
                "every=N is for drop and index-jitter",
            ),
            (
                "0:all:stop-consuming,n=2",
                "ms=N for late, stall, slot-rewrite",
            ),
            ("0:1:wrong-config,ms=2", "ms=N for late"),
        ] {
            let e = bad.parse::<FaultSpec>().unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn new_kinds_parse_with_their_defaults() {
        let kind = |s: &str| s.parse::<FaultSpec>().unwrap().kind;
        assert_eq!(kind("0:all:msix-storm,n=7"), FaultKind::MsixStorm(7));
        assert_eq!(kind("0:all:ping-burst,n=100"), FaultKind::PingBurst(100));
        assert_eq!(kind("0:1:index-backwards"), FaultKind::IndexBackwards);
        assert_eq!(kind("0:1:index-jitter"), FaultKind::IndexJitter(1));
        assert_eq!(
            kind("0:all:index-jitter,every=3"),
            FaultKind::IndexJitter(3)
        );
        assert_eq!(kind("0:1:slot-rewrite"), FaultKind::SlotRewrite(0));
        assert_eq!(kind("0:1:slot-rewrite,ms=5"), FaultKind::SlotRewrite(5));
        assert_eq!(kind("0:all:tail-overtake"), FaultKind::TailOvertake);
        assert_eq!(kind("0:all:stop-consuming"), FaultKind::StopConsuming(None));
        assert_eq!(
            kind("0:2:stop-consuming,ms=500"),
            FaultKind::StopConsuming(Some(500))
        );
        assert_eq!(
            kind("0:all:silent-numbers,n=2"),
            FaultKind::SilentNumbers(2)
        );
        assert_eq!(kind("0:1:wrong-config"), FaultKind::WrongConfig);
        assert_eq!(kind("0:1:shm-lie"), FaultKind::ShmLie);
        assert_eq!(kind("0:1:vqueue-lie"), FaultKind::VqueueLie);
        assert_eq!(kind("0:all:info-lie"), FaultKind::InfoLie);
    }

    #[test]
    fn silent_after_n_and_only_for_its_device() {
        let mut f = faults("0:5:silent,after=2");
        assert_eq!(f.apply_now(msg(5, 1)).msgs, [msg(5, 1)]);
        assert_eq!(f.apply_now(msg(6, 2)).msgs, [msg(6, 2)]);
        assert_eq!(f.apply_now(msg(5, 3)).msgs, [msg(5, 3)]);
        assert!(f.apply_now(msg(5, 4)).msgs.is_empty());
        assert_eq!(f.apply_now(msg(6, 5)).msgs, [msg(6, 5)]);
        assert_eq!(f.injected(), 1);
    }

    #[test]
    fn a_message_filter_counts_and_acts_only_on_that_message() {
        let mut f = faults("0:1:silent,count=2,msg=0x08");
        let status = |tag| {
            let mut m = msg(1, tag);
            m[1] = 0x08;
            m
        };
        // Other messages of the device neither count nor are dropped.
        assert_eq!(f.apply_now(msg(1, 1)).msgs, [msg(1, 1)]);
        assert!(f.apply_now(status(2)).msgs.is_empty());
        assert_eq!(f.apply_now(msg(1, 3)).msgs, [msg(1, 3)]);
        assert!(f.apply_now(status(4)).msgs.is_empty());
        assert_eq!(f.apply_now(status(5)).msgs, [status(5)]);
        assert_eq!(f.injected(), 2);
    }

    #[test]
    fn drop_every_nth_and_twice() {
        let mut f = faults("0:all:drop,every=3");
        let kept: Vec<usize> = (0..9u8)
            .map(|i| f.apply_now(msg(1, i)).msgs.len())
            .collect();
        assert_eq!(kept, [1, 1, 0, 1, 1, 0, 1, 1, 0]);
        let mut f = faults("0:1:twice");
        assert_eq!(f.apply_now(msg(1, 7)).msgs, [msg(1, 7), msg(1, 7)]);
        assert_eq!(f.apply_now(msg(2, 7)).msgs, [msg(2, 7)]);
    }

    #[test]
    fn garbage_and_lying_size_mangle_what_the_driver_decodes() {
        let mut f = faults("0:4:garbage");
        let out = f.apply_now(msg(4, 9)).msgs;
        assert_eq!(out[0][..4], [0x01, 0xff, 4, 0]);
        assert!(out[0][4..].iter().all(|&b| b == 0xff));
        assert!(virtio_msg_wire::Frame::decode(&out[0]).is_err());
        let mut f = faults("0:4:lying-size");
        let out = f.apply_now(msg(4, 9)).msgs;
        assert_eq!(out[0][6..8], 200u16.to_le_bytes());
        assert!(virtio_msg_wire::Frame::decode(&out[0]).is_err());
    }

    #[test]
    fn generation_churn_changes_config_answers_only() {
        let mut f = faults("0:1:generation-churn");
        let mut config = msg(1, 0);
        config[1] = GET_CONFIG;
        let a = f.apply_now(config.clone()).msgs;
        let b = f.apply_now(config.clone()).msgs;
        assert_ne!(a[0][8..12], b[0][8..12]);
        assert_eq!(a[0][12..], config[12..]);
        assert_eq!(f.apply_now(msg(1, 5)).msgs, [msg(1, 5)]);
    }

    #[test]
    fn generation_churn_event_announces_each_new_generation_first() {
        let mut f = faults("0:1:generation-churn-event");
        let mut config = msg(1, 0);
        config[1] = GET_CONFIG;
        for _ in 0..2 {
            let out = f.apply_now(config.clone()).msgs;
            assert_eq!(out.len(), 2);
            let event = virtio_msg_wire::Frame::decode(&out[0]).unwrap();
            let virtio_msg_wire::Message::EventConfig { generation, .. } = event.msg else {
                panic!("not an EVENT_CONFIG: {:?}", event.msg);
            };
            assert_eq!(event.dev_num, 1);
            assert_eq!(out[1][8..12], generation.to_le_bytes());
            assert_eq!(out[1][12..], config[12..]);
        }
        assert_eq!(f.apply_now(msg(1, 5)).msgs, [msg(1, 5)]);
    }

    #[test]
    fn status_lie_adds_driver_ok_and_needs_reset_to_status_answers_only() {
        let mut f = faults("0:1:status-lie");
        let mut answer = msg(1, 0);
        answer[1] = SET_DEVICE_STATUS;
        answer[8] = 0x01;
        let out = f.apply_now(answer.clone()).msgs;
        assert_eq!(out[0][8..12], 0x45u32.to_le_bytes());
        assert_eq!(out[0][12..], answer[12..]);
        assert_eq!(f.apply_now(msg(1, 5)).msgs, [msg(1, 5)]);
    }

    #[test]
    fn corrupt_index_strikes_once() {
        let mut f = faults("0:1:corrupt-index,after=1");
        assert!(!f.apply_now(msg(1, 0)).corrupt_index);
        let out = f.apply_now(msg(1, 1));
        assert!(out.corrupt_index);
        assert_eq!(out.msgs, [msg(1, 1)]);
        assert!(!f.apply_now(msg(1, 2)).corrupt_index);
        assert_eq!(f.injected(), 1);
    }

    #[test]
    fn count_ends_a_fault() {
        let mut f = faults("0:1:silent,after=1,count=2");
        let kept: Vec<usize> = (0..5u8)
            .map(|i| f.apply_now(msg(1, i)).msgs.len())
            .collect();
        assert_eq!(kept, [1, 0, 0, 1, 1]);
    }

    #[test]
    fn late_messages_go_out_when_due_in_order() {
        let mut f = faults("0:1:late,ms=100");
        let t0 = Instant::now();
        assert!(f.apply(msg(1, 1), t0).msgs.is_empty());
        assert!(f.apply(msg(1, 2), t0).msgs.is_empty());
        // Another device's message waits behind them: the device side answers in order.
        assert!(f.apply(msg(2, 3), t0).msgs.is_empty());
        assert_eq!(f.next_due(), Some(t0 + Duration::from_millis(100)));
        assert!(f.due(t0 + Duration::from_millis(99)).is_empty());
        assert_eq!(
            f.due(t0 + Duration::from_millis(100)),
            [msg(1, 1), msg(1, 2), msg(2, 3)]
        );
        assert_eq!(f.next_due(), None);
        assert_eq!(f.apply(msg(2, 4), t0).msgs, [msg(2, 4)]);
    }

    #[test]
    fn reorder_swaps_messages_of_different_devices() {
        let mut f = faults("0:all:reorder");
        let t0 = Instant::now();
        assert!(f.apply(msg(1, 1), t0).msgs.is_empty());
        // The next one of another device goes first, then the held one.
        assert_eq!(f.apply(msg(2, 2), t0).msgs, [msg(2, 2), msg(1, 1)]);
        // Alone, it goes out after the wait.
        assert!(f.apply(msg(3, 3), t0).msgs.is_empty());
        assert_eq!(f.due(t0 + REORDER_WAIT), [msg(3, 3)]);
    }

    #[test]
    fn needs_reset_adds_one_event() {
        let mut f = faults("0:4:needs-reset,after=1");
        assert_eq!(f.apply_now(msg(4, 0)).msgs.len(), 1);
        let out = f.apply_now(msg(4, 1)).msgs;
        assert_eq!(out.len(), 2);
        assert_eq!(out[0], msg(4, 1));
        match Frame::decode(&out[1]).unwrap() {
            Frame {
                dev_num: 4,
                msg: Message::EventConfig { device_status, .. },
                ..
            } => assert_ne!(device_status & NEEDS_RESET, 0),
            other => panic!("{other:?}"),
        }
        assert_eq!(f.apply_now(msg(4, 2)).msgs.len(), 1);
    }

    #[test]
    fn floods_and_pings_come_on_ticks() {
        let mut f = Faults::for_fifo(
            0,
            &[
                "0:2:flood-used,n=5,after=1".parse().unwrap(),
                "0:all:ping".parse().unwrap(),
            ],
        );
        // First tick: the flood waits for `after`; the PING goes.
        assert_eq!(f.tick().len(), 1);
        let out = f.tick();
        assert_eq!(out.len(), 6);
        assert!(matches!(
            Frame::decode(&out[0]).unwrap().msg,
            Message::EventUsed { vq_index: 0 }
        ));
        // The driver's echo of the second PING is taken and counted.
        let pong = encode(0, Message::Pong { data: 2 });
        assert!(f.intercept(&pong, Instant::now()));
        assert_eq!(f.pings(), (2, 1));
    }

    #[test]
    fn stall_holds_a_devices_kicks_then_lets_them_through_in_order() {
        let mut f = faults("0:3:stall,ms=100");
        let t0 = Instant::now();
        let kick = |n: u16, i: u32| {
            let next = virtio_msg_wire::AvailNext::new(i, false).unwrap();
            encode(n, Message::EventAvail { vq_index: 0, next })
        };
        assert!(f.intercept(&kick(3, 1), t0));
        assert!(f.intercept(&kick(3, 2), t0));
        // Other devices, and other messages, are not held.
        assert!(!f.intercept(&kick(4, 1), t0));
        assert!(f.unstalled(t0 + Duration::from_millis(50)).is_empty());
        assert_eq!(
            f.unstalled(t0 + Duration::from_millis(100)),
            [kick(3, 1), kick(3, 2)]
        );
        // Once only.
        assert!(!f.intercept(&kick(3, 3), t0));
    }
    #[test]
    fn msix_storm_raises_every_tick_and_sends_nothing() {
        let mut f = faults("0:all:msix-storm,n=4,after=1");
        assert!(f.tick().is_empty());
        assert_eq!(f.storm(), 0, "after=1 lets the first tick pass");
        for _ in 0..3 {
            assert!(f.tick().is_empty());
            assert_eq!(f.storm(), 4);
        }
        // Owed raises add up until the worker takes them.
        f.tick();
        f.tick();
        assert_eq!(f.storm(), 8);
        assert_eq!(f.storm(), 0);
        assert_eq!(f.injected(), 0, "interrupts are not messages");
    }

    #[test]
    fn ping_burst_sends_n_pings_once_and_counts_echoes_and_losses() {
        let mut f = faults("0:all:ping-burst,n=70");
        let out = f.tick();
        assert_eq!(out.len(), 70);
        for (i, m) in out.iter().enumerate() {
            match Frame::decode(m).unwrap() {
                Frame {
                    dev_num: 0,
                    msg: Message::Ping { data },
                    ..
                } => assert_eq!(data, i as u32 + 1),
                other => panic!("{other:?}"),
            }
        }
        assert!(f.tick().is_empty(), "once");
        // The device queue had room for 61 of them.
        for m in &out[61..] {
            f.lost(m);
        }
        for data in [1, 2, 61] {
            assert!(f.intercept(&encode(0, Message::Pong { data }), Instant::now()));
        }
        assert_eq!(f.pings(), (61, 3));
        // Other messages lost are not PINGs.
        f.lost(&msg(1, 0));
        assert_eq!(f.pings(), (61, 3));
    }

    /// Answers the PINGs with data `pings` as the worker sees a driver answer them: the
    /// doorbell first (the worker reads it, then the driver queue), then the echoes it
    /// announced; `per_doorbell` echoes to a doorbell.
    fn answer_pings(f: &mut Faults, pings: RangeInclusive<u32>, per_doorbell: usize) {
        let pings: Vec<u32> = pings.collect();
        for batch in pings.chunks(per_doorbell) {
            f.rung(1);
            for &data in batch {
                assert!(f.intercept(&encode(0, Message::Pong { data }), Instant::now()));
            }
        }
    }

    #[test]
    fn ping_burst_counts_the_doorbells_until_its_last_echo() {
        let burst = |per_doorbell| {
            let mut f = faults("0:all:ping-burst,n=64");
            // Doorbells before the burst are not its own.
            f.rung(7);
            assert_eq!(f.burst(), None, "no burst yet");
            assert_eq!(f.tick().len(), 64);
            answer_pings(&mut f, 1..=64, per_doorbell);
            // Nor are those after its last echo.
            f.rung(5);
            f.burst()
        };
        // A driver that drains the burst in two batches and rings once for each.
        let answer = BurstAnswer {
            sent: 64,
            echoed: 64,
            doorbells: 2,
        };
        assert_eq!(burst(32), Some(answer));
        // One that rings once per PONG.
        let answer = BurstAnswer {
            doorbells: 64,
            ..answer
        };
        assert_eq!(burst(1), Some(answer));
    }

    #[test]
    fn ping_burst_figures_leave_out_lost_pings_and_other_echoes() {
        let mut f = Faults::for_fifo(
            0,
            &[
                "0:all:ping".parse().unwrap(),
                "0:all:ping-burst,n=10".parse().unwrap(),
            ],
        );
        // PING 1 of the ping fault, then the burst: 2 to 11, of which 10 and 11 find no room.
        let out = f.tick();
        assert_eq!(out.len(), 11);
        for m in &out[9..] {
            f.lost(m);
        }
        answer_pings(&mut f, 2..=9, 4);
        // A ping-fault echo that comes later, with a doorbell, does not extend the window.
        answer_pings(&mut f, 1..=1, 1);
        let want = BurstAnswer {
            sent: 8,
            echoed: 8,
            doorbells: 2,
        };
        assert_eq!(f.burst(), Some(want));
        assert_eq!(f.pings(), (9, 9));

        // A burst nobody answers: no doorbell is its own.
        let mut f = faults("0:all:ping-burst,n=3");
        f.tick();
        f.rung(4);
        let want = BurstAnswer {
            sent: 3,
            echoed: 0,
            doorbells: 0,
        };
        assert_eq!(f.burst(), Some(want));
        f.replace(Faults::default());
        assert_eq!(f.burst(), Some(want), "kept when cleared");
    }

    #[test]
    fn index_faults_move_the_head_back_once_or_on_every_nth_message() {
        let mut f = faults("0:1:index-backwards,after=1");
        let shifts: Vec<i32> = (0..4u8)
            .map(|i| f.apply_now(msg(1, i)).head_shift)
            .collect();
        assert_eq!(shifts, [0, -(BACKWARDS as i32), 0, 0]);
        assert_eq!(f.injected(), 1);

        let mut f = faults("0:1:index-jitter,every=2");
        let shifts: Vec<i32> = (0..6u8)
            .map(|i| f.apply_now(msg(1, i)).head_shift)
            .collect();
        assert_eq!(shifts, [0, 1, 0, 1, 0, 1]);
        let mut f = faults("0:1:index-jitter");
        assert_eq!(f.apply_now(msg(1, 0)).head_shift, 1);
        assert_eq!(f.apply_now(msg(1, 1)).head_shift, 1);
        assert_eq!(f.apply_now(msg(2, 2)).head_shift, 0, "another device");
    }

    #[test]
    fn slot_rewrites_fall_due_after_their_delay() {
        let mut f = faults("0:1:slot-rewrite,ms=20");
        let out = f.apply_now(msg(1, 1));
        assert_eq!(out.msgs, [msg(1, 1)]);
        assert_eq!(out.rewrite, Some(Duration::from_millis(20)));
        assert_eq!(f.apply_now(msg(2, 1)).rewrite, None);
        let t0 = Instant::now();
        f.rewrite_later(5, msg(1, 1), Duration::from_millis(20), t0);
        f.rewrite_later(6, msg(1, 2), Duration::from_millis(40), t0);
        assert_eq!(f.next_due(), Some(t0 + Duration::from_millis(20)));
        assert!(f.rewrites_due(t0).is_empty());
        assert_eq!(
            f.rewrites_due(t0 + Duration::from_millis(30)),
            [(5, msg(1, 1))]
        );
        assert_eq!(f.next_due(), Some(t0 + Duration::from_millis(40)));
        assert_eq!(
            f.rewrites_due(t0 + Duration::from_millis(40)),
            [(6, msg(1, 2))]
        );
        assert_eq!(f.next_due(), None);
    }

    #[test]
    fn tail_overtake_strikes_once() {
        let mut f = faults("0:all:tail-overtake,after=2");
        let hits: Vec<bool> = (0..5u8)
            .map(|i| f.apply_now(msg(1, i)).overtake_tail)
            .collect();
        assert_eq!(hits, [false, false, true, false, false]);
    }

    #[test]
    fn stop_consuming_for_a_while_or_until_cleared() {
        let mut f = faults("0:all:stop-consuming,ms=100,after=1");
        let t0 = Instant::now();
        assert_eq!(f.apply(msg(1, 1), t0).msgs, [msg(1, 1)]);
        assert!(f.consuming(t0));
        // The message that sets it off still goes out.
        assert_eq!(f.apply(msg(1, 2), t0).msgs, [msg(1, 2)]);
        assert!(!f.consuming(t0));
        assert_eq!(f.next_due(), Some(t0 + Duration::from_millis(100)));
        assert!(!f.consuming(t0 + Duration::from_millis(99)));
        assert!(f.consuming(t0 + Duration::from_millis(100)));
        // Once.
        f.apply(msg(1, 3), t0);
        assert!(f.consuming(t0));

        let mut f = faults("0:1:stop-consuming");
        f.apply_now(msg(2, 0));
        assert!(
            f.consuming(Instant::now()),
            "device 1's messages set it off"
        );
        f.apply_now(msg(1, 0));
        assert!(!f.consuming(Instant::now() + Duration::from_secs(3600)));
        assert_eq!(f.next_due(), None);
        // Other faults come and go: the stop stays while the fault does.
        f.replace(Faults::for_fifo(
            0,
            &[
                "0:1:stop-consuming".parse().unwrap(),
                "0:2:twice".parse().unwrap(),
            ],
        ));
        assert!(!f.consuming(Instant::now()));
        f.replace(faults("0:2:twice"));
        assert!(f.consuming(Instant::now()));
    }

    /// A GET_DEVICES answer for the window `offset`, `count` with `bitmap`.
    fn devices(offset: u16, count: u16, bitmap: &[u8]) -> Vec<u8> {
        let answer = Message::Devices {
            offset,
            count,
            next_offset: offset + count,
            bitmap,
        };
        encode(0, answer)
    }

    #[test]
    fn silent_numbers_follow_the_real_ones_and_fit_the_bus() {
        // Devices 0 and 5: 6, 7, 8 next.
        assert_eq!(silent_numbers(0b10_0001, 3), 0b1_1100_0000);
        // No device at all: from 0.
        assert_eq!(silent_numbers(0, 2), 0b11);
        // Device 30: 31, then the free ones from 0.
        assert_eq!(silent_numbers(1 << 30, 3), 1 << 31 | 0b11);
        // Never more than the bus has.
        assert_eq!(silent_numbers(u32::MAX >> 1, 5), 1 << 31);
        assert_eq!(silent_numbers(0, 100), u32::MAX);
    }

    #[test]
    fn silent_numbers_are_listed_and_never_answer() {
        let mut f = faults("0:all:silent-numbers,n=2");
        f.set_devices(0b10_0001);
        let out = f.apply_now(devices(0, 32, &[0x21, 0, 0, 0])).msgs;
        assert_eq!(out, [devices(0, 32, &[0xe1, 0, 0, 0])]);
        // A window is filled as it states, whatever part it covers.
        let out = f.apply_now(devices(4, 4, &[0x02])).msgs;
        assert_eq!(out, [devices(4, 4, &[0x0e])]);
        assert_eq!(f.apply_now(devices(8, 8, &[0])).msgs, [devices(8, 8, &[0])]);
        // What a silent number would get is dropped; real devices and bus replies go out.
        assert!(f.apply_now(msg(6, 1)).msgs.is_empty());
        assert!(f.apply_now(msg(7, 1)).msgs.is_empty());
        assert_eq!(f.apply_now(msg(5, 1)).msgs, [msg(5, 1)]);
        let pong = encode(0, Message::Pong { data: 1 });
        assert_eq!(f.apply_now(pong.clone()).msgs, [pong]);
    }

    /// A GET_CONFIG answer of device 1: `data` from `offset`.
    fn config(offset: u32, data: &[u8]) -> Vec<u8> {
        let answer = Message::Config {
            generation: 0,
            offset,
            data,
        };
        encode(1, answer)
    }

    #[test]
    fn wrong_config_lies_about_offset_and_length_in_turn_and_still_decodes() {
        let mut f = faults("0:1:wrong-config");
        let decoded = |m: &[u8]| match Frame::decode(m).unwrap().msg {
            Message::Config { offset, data, .. } => (offset, data.to_vec()),
            other => panic!("{other:?}"),
        };
        let out = f.apply_now(config(8, &[1, 2, 3, 4])).msgs;
        assert_eq!(decoded(&out[0]), (8 + CONFIG_SKEW, vec![1, 2, 3, 4]));
        let out = f.apply_now(config(8, &[1, 2, 3, 4])).msgs;
        assert_eq!(decoded(&out[0]), (8, vec![1, 2, 3]));
        // Other messages neither change nor take a turn.
        assert_eq!(f.apply_now(msg(1, 5)).msgs, [msg(1, 5)]);
        let out = f.apply_now(config(0, &[])).msgs;
        assert_eq!(decoded(&out[0]).0, CONFIG_SKEW);
        let out = f.apply_now(config(0, &[])).msgs;
        assert_eq!(decoded(&out[0]), (0, vec![0]));
    }

    #[test]
    fn vqueue_and_info_lies_change_only_their_fields() {
        let mut f = faults("0:1:vqueue-lie");
        let info = VqueueInfo {
            index: 0,
            max_size: 1024,
            cur_size: 1024,
            desc_addr: 0,
            driver_addr: 0,
            device_addr: 0,
        };
        let answer = encode(1, Message::Vqueue(info));
        for want in [0x8000, 1000, 0, 0x8000] {
            let out = f.apply_now(answer.clone()).msgs;
            let lie = VqueueInfo {
                max_size: want,
                ..info
            };
            assert_eq!(Frame::decode(&out[0]).unwrap().msg, Message::Vqueue(lie));
        }
        assert_eq!(f.apply_now(msg(1, 5)).msgs, [msg(1, 5)]);

        let mut f = faults("0:1:info-lie");
        let info = DeviceInfo {
            device_id: 4,
            vendor_id: 0x554d_4551,
            num_feature_bits: 64,
            config_size: 0,
            max_virtqueues: 1,
            admin_vq_start: 0,
            admin_vq_count: 0,
        };
        let out = f.apply_now(encode(1, Message::DeviceInfo(info))).msgs;
        let lie = DeviceInfo {
            config_size: 0xffff,
            max_virtqueues: 0xffff,
            ..info
        };
        assert_eq!(
            Frame::decode(&out[0]).unwrap().msg,
            Message::DeviceInfo(lie)
        );
        let other = encode(2, Message::DeviceInfo(info));
        assert_eq!(f.apply_now(other.clone()).msgs, [other]);
    }

    #[test]
    fn shm_lie_answers_get_shm_for_its_device() {
        let mut f = faults("0:3:shm-lie,after=1");
        let get_shm = |n: u16, index| {
            let mut m = encode(n, Message::GetShm { index });
            m[4] = 0x77;
            m
        };
        assert_eq!(f.answer(&get_shm(3, 0)), None, "after=1");
        let lie = f.answer(&get_shm(3, 2)).unwrap();
        assert_eq!(
            Frame::decode(&lie).unwrap(),
            Frame {
                dev_num: 3,
                token: 0x77,
                msg: Message::Shm {
                    index: 2,
                    length: 0x10000,
                    address: 0xfeed_0000,
                },
            }
        );
        assert_eq!(f.answer(&get_shm(4, 0)), None);
        assert_eq!(f.answer(&msg(3, 0)), None);
        let mut f = faults("0:all:shm-lie");
        assert!(f.answer(&get_shm(31, 0)).is_some());
        assert_eq!(f.answer(&get_shm(32, 0)), None, "no such number on the bus");
        let mut f = faults("0:3:shm-lie");
        // It counts GET_SHM only, not the device's other messages.
        f.apply_now(msg(3, 0));
        assert!(f.answer(&get_shm(3, 0)).is_some());
    }
}
