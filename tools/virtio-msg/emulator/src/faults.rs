// SPDX-License-Identifier: GPL-2.0 OR MIT

//! Faults injected on purpose (`--fault`): a device side that misbehaves, so that tests can
//! prove the driver survives one.
//!
//! A fault acts on what the FIFO puts on its device queue for one device number (or for all of
//! them), which is where a broken device or bus would show: messages that never come, come
//! twice, late, out of order or mangled, a queue index that makes no sense, events nobody
//! asked for; and on what the device takes from the driver queue (a stalled backend).
//! `after=N` lets the first N messages of the device through untouched, so that a fault can
//! start once the driver is up (the first messages answer the probe); `count=N` ends it after
//! N messages.
//!
//! Faults can also be switched while the guest runs, through the control socket
//! ([`crate::control`]).

use std::collections::VecDeque;
use std::str::FromStr;
use std::time::{Duration, Instant};
use virtio_msg_wire::{
    bus_id::PING,
    transport_id::{EVENT_AVAIL, GET_CONFIG, SET_DEVICE_STATUS},
    Frame, Message, TYPE_BUS, TYPE_RESPONSE,
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

impl FaultKind {
    /// Whether the fault acts on tick, not on messages.
    fn on_tick(self) -> bool {
        matches!(self, Self::FloodUsed(_) | Self::FloodConfig(_) | Self::Ping)
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
    stall (ms=N), ping";

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
    #[error("every=N is for drop, ms=N for late and stall, n=N for floods")]
    Misplaced,
    #[error("ping and reorder act on the whole FIFO: NUM must be 'all'")]
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
            _ => return Err(err(Problem::Kind)),
        };
        if every.is_some() || ms.is_some() || n.is_some() {
            return Err(err(Problem::Misplaced));
        }
        let bus_wide = matches!(kind, FaultKind::Ping | FaultKind::Reorder);
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
    /// [`FaultKind::Stall`]) has struck.
    struck: bool,
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
    /// PINGs sent, and echoes that came back right.
    pings: u32,
    pongs: u32,
}

fn dev_num_of(msg: &[u8]) -> Option<u16> {
    msg.get(2..4).map(|b| u16::from_le_bytes([b[0], b[1]]))
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
                })
                .collect(),
            ..Self::default()
        }
    }

    /// Replaces the faults with `other`'s; what is held back still goes out, when due.
    pub fn replace(&mut self, other: Faults) {
        self.active = other.active;
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
        (self.pings, self.pongs)
    }

    /// When something held back is due next.
    pub fn next_due(&self) -> Option<Instant> {
        // Each queue goes out in order: its front decides.
        let first = |q: &VecDeque<(Instant, Vec<u8>)>| q.front().map(|(t, _)| *t);
        match (first(&self.delayed), first(&self.stalled)) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Applies the faults to `msg`, an encoded message the device sends, at `now`.
    pub fn apply(&mut self, msg: Vec<u8>, now: Instant) -> Outcome {
        let dev_num = dev_num_of(&msg);
        let msg_id = msg.get(1).copied();
        let mut out = Outcome {
            msgs: vec![msg],
            corrupt_index: false,
        };
        let (mut delay, mut reorder) = (None, false);
        for a in &mut self.active {
            if a.spec.kind.on_tick()
                || matches!(a.spec.kind, FaultKind::Stall(_))
                || (a.spec.dev_num.is_some() && a.spec.dev_num != dev_num)
                || a.spec.msg_id.is_some_and(|id| msg_id != Some(id))
                || !a.acts()
            {
                continue;
            }
            let before = out.msgs.clone();
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
                FaultKind::NeedsReset
                | FaultKind::FloodUsed(_)
                | FaultKind::FloodConfig(_)
                | FaultKind::Stall(_)
                | FaultKind::Ping => {}
            }
            if out.msgs != before || out.corrupt_index || delay.is_some() || reorder {
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

    /// What the tick faults send now (floods, PINGs).
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
                _ => {}
            }
        }
        self.injected += out.len() as u64;
        out
    }

    /// Outgoing messages whose delay is over at `now`, in order.
    pub fn due(&mut self, now: Instant) -> Vec<Vec<u8>> {
        take_due(&mut self.delayed, now)
    }

    /// A message from the driver: whether a fault takes it (a stalled backend holds
    /// EVENT_AVAIL back; the echo of the device's PING is counted).
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
        ] {
            let e = bad.parse::<FaultSpec>().unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
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
}
