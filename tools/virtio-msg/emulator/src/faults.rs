// SPDX-License-Identifier: GPL-2.0 OR MIT

//! Faults injected on purpose (`--fault`): a device side that misbehaves, so that tests can
//! prove the driver survives one.
//!
//! A fault acts on what the FIFO puts on its device queue for one device number (or for all of
//! them), which is where a broken device or bus would show: messages that never come, come
//! twice, or come mangled, and a queue index that makes no sense. `after=N` lets the first N
//! messages of the device through untouched, so that a fault can start once the driver is up
//! (the first messages answer the probe).

use std::str::FromStr;
use virtio_msg_wire::{transport_id::GET_CONFIG, TYPE_RESPONSE};

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
}

/// One `--fault FIFO:NUM:KIND[,after=N][,every=N]`.
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
}

impl FromStr for FaultSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let err = |what: &str| format!("--fault {s:?}: {what}");
        let mut parts = s.splitn(3, ':');
        let (Some(fifo), Some(num), Some(rest)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(err("expected FIFO:NUM:KIND[,after=N][,every=N]"));
        };
        let fifo = fifo.parse().map_err(|_| err("FIFO is not a number"))?;
        let dev_num = match num {
            "all" => None,
            n => Some(n.parse().map_err(|_| err("NUM is not a number or 'all'"))?),
        };
        let mut opts = rest.split(',');
        let kind = opts.next().unwrap_or_default();
        let (mut after, mut every) = (0, None);
        for opt in opts {
            let (key, value) = opt.split_once('=').unwrap_or((opt, ""));
            let value: u64 = value
                .parse()
                .map_err(|_| err(&format!("{key} needs a number ({key}=N)")))?;
            match key {
                "after" => after = value,
                "every" if (2..=u64::from(u32::MAX)).contains(&value) => every = Some(value as u32),
                "every" => return Err(err("every=N needs N of 2 or more")),
                _ => return Err(err(&format!("unknown option {key:?}"))),
            }
        }
        let kind = match (kind, every) {
            ("silent", None) => FaultKind::Silent,
            ("drop", Some(n)) => FaultKind::DropEvery(n),
            ("drop", None) => return Err(err("drop needs every=N")),
            ("twice", None) => FaultKind::Twice,
            ("garbage", None) => FaultKind::Garbage,
            ("lying-size", None) => FaultKind::LyingSize,
            ("corrupt-index", None) => FaultKind::CorruptIndex,
            ("generation-churn", None) => FaultKind::GenerationChurn,
            (_, Some(_)) if kind != "drop" => return Err(err("only drop takes every=N")),
            _ => {
                return Err(err(
                    "KIND is silent, drop, twice, garbage, lying-size, corrupt-index or \
                     generation-churn",
                ))
            }
        };
        Ok(Self {
            fifo,
            dev_num,
            kind,
            after,
        })
    }
}

/// A fault in force on one FIFO, with what it has seen.
#[derive(Clone, Debug)]
struct Active {
    spec: FaultSpec,
    /// Messages of its device(s) seen so far.
    seen: u64,
    /// [`FaultKind::CorruptIndex`] has struck.
    struck: bool,
}

/// What a fault makes of one outgoing message.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// The messages to put on the device queue instead (none, the message, or two copies).
    pub msgs: Vec<Vec<u8>>,
    /// Corrupt the device queue's head index now.
    pub corrupt_index: bool,
}

/// The faults of one FIFO.
#[derive(Clone, Debug, Default)]
pub struct Faults {
    active: Vec<Active>,
    /// Messages a fault dropped, doubled or mangled.
    injected: u64,
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
            injected: 0,
        }
    }

    /// Whether any fault is configured.
    pub fn is_empty(&self) -> bool {
        self.active.is_empty()
    }

    /// Messages a fault dropped, doubled or mangled so far.
    pub fn injected(&self) -> u64 {
        self.injected
    }

    /// Applies the faults to `msg`, an encoded message the device sends.
    pub fn apply(&mut self, msg: Vec<u8>) -> Outcome {
        let dev_num = msg.get(2..4).map(|b| u16::from_le_bytes([b[0], b[1]]));
        let mut out = Outcome {
            msgs: vec![msg],
            corrupt_index: false,
        };
        for a in &mut self.active {
            if a.spec.dev_num.is_some() && a.spec.dev_num != dev_num {
                continue;
            }
            a.seen += 1;
            if a.seen <= a.spec.after {
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
                FaultKind::GenerationChurn => {
                    for m in &mut out.msgs {
                        let is_config = m.get(..2) == Some(&[TYPE_RESPONSE, GET_CONFIG]);
                        if let Some(generation) = m.get_mut(GENERATION..GENERATION + 4) {
                            if is_config {
                                generation.copy_from_slice(&(a.seen as u32).to_le_bytes());
                            }
                        }
                    }
                }
            }
            if out.msgs != before || out.corrupt_index {
                self.injected += 1;
            }
        }
        out
    }
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
                after: 10
            }
        );
        let f: FaultSpec = "0:all:corrupt-index".parse().unwrap();
        assert_eq!((f.dev_num, f.kind), (None, FaultKind::CorruptIndex));
        for (bad, why) in [
            ("0:1", "expected FIFO:NUM:KIND"),
            ("x:1:silent", "FIFO is not a number"),
            ("0:y:silent", "NUM is not a number"),
            ("0:1:drop", "drop needs every=N"),
            ("0:1:drop,every=1", "every=N needs N of 2 or more"),
            ("0:1:silent,every=3", "only drop takes every=N"),
            ("0:1:silent,after=x", "after needs a number"),
            ("0:1:silent,when=3", "unknown option"),
            ("0:1:melt", "KIND is silent"),
        ] {
            let e = bad.parse::<FaultSpec>().unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn silent_after_n_and_only_for_its_device() {
        let mut f = faults("0:5:silent,after=2");
        assert_eq!(f.apply(msg(5, 1)).msgs, [msg(5, 1)]);
        assert_eq!(f.apply(msg(6, 2)).msgs, [msg(6, 2)]);
        assert_eq!(f.apply(msg(5, 3)).msgs, [msg(5, 3)]);
        assert!(f.apply(msg(5, 4)).msgs.is_empty());
        assert_eq!(f.apply(msg(6, 5)).msgs, [msg(6, 5)]);
        assert_eq!(f.injected(), 1);
    }

    #[test]
    fn drop_every_nth_and_twice() {
        let mut f = faults("0:all:drop,every=3");
        let kept: Vec<usize> = (0..9u8).map(|i| f.apply(msg(1, i)).msgs.len()).collect();
        assert_eq!(kept, [1, 1, 0, 1, 1, 0, 1, 1, 0]);
        let mut f = faults("0:1:twice");
        assert_eq!(f.apply(msg(1, 7)).msgs, [msg(1, 7), msg(1, 7)]);
        assert_eq!(f.apply(msg(2, 7)).msgs, [msg(2, 7)]);
    }

    #[test]
    fn garbage_and_lying_size_mangle_what_the_driver_decodes() {
        let mut f = faults("0:4:garbage");
        let out = f.apply(msg(4, 9)).msgs;
        assert_eq!(out[0][..4], [0x01, 0xff, 4, 0]);
        assert!(out[0][4..].iter().all(|&b| b == 0xff));
        assert!(virtio_msg_wire::Frame::decode(&out[0]).is_err());
        let mut f = faults("0:4:lying-size");
        let out = f.apply(msg(4, 9)).msgs;
        assert_eq!(out[0][6..8], 200u16.to_le_bytes());
        assert!(virtio_msg_wire::Frame::decode(&out[0]).is_err());
    }

    #[test]
    fn generation_churn_changes_config_answers_only() {
        let mut f = faults("0:1:generation-churn");
        let mut config = msg(1, 0);
        config[1] = GET_CONFIG;
        let a = f.apply(config.clone()).msgs;
        let b = f.apply(config.clone()).msgs;
        assert_ne!(a[0][8..12], b[0][8..12]);
        assert_eq!(a[0][12..], config[12..]);
        assert_eq!(f.apply(msg(1, 5)).msgs, [msg(1, 5)]);
    }

    #[test]
    fn corrupt_index_strikes_once() {
        let mut f = faults("0:1:corrupt-index,after=1");
        assert!(!f.apply(msg(1, 0)).corrupt_index);
        let out = f.apply(msg(1, 1));
        assert!(out.corrupt_index);
        assert_eq!(out.msgs, [msg(1, 1)]);
        assert!(!f.apply(msg(1, 2)).corrupt_index);
        assert_eq!(f.injected(), 1);
    }
}
