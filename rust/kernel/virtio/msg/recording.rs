// SPDX-License-Identifier: GPL-2.0 OR MIT

//! Reader of the device model recordings (`drivers/virtio/virtio_msg/device-model/*.txt`).
//!
//! The recordings are byte-exact exchanges with QEMU's `virtio-msg-amp-pci`: a request put on a
//! FIFO's driver queue, one doorbell, and every reply the device model put on the device queue
//! for it (or none). They are the ground truth about the device, and two test suites replay
//! them: the emulator's compat mode must give the same replies (cargo), and the drivers must
//! bring the recorded devices up when a fake bus answers with them (KUnit).
//!
//! Pure `core`, no allocation: the kernel's KUnit suites and the userspace tools compile this
//! same file. Line format (see `device-model/README`):
//!
//! ```text
//! # note                                  ignored
//! @ qemu -device ...                      a fresh device set-up
//! > fifo=F HHHHHHHHHHHHHHHH PPPP ; label  a request on FIFO F, then one doorbell
//! < fifo=F HHHHHHHHHHHHHHHH PPPP ; decode one reply to it
//! = no reply                              the request got no reply
//! ```

/// Largest message a recording holds (a queue slot).
pub const MAX_BYTES: usize = 64;

/// The bytes of one recorded message.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Bytes {
    buf: [u8; MAX_BYTES],
    len: usize,
}

impl Bytes {
    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or_default()
    }
}

impl core::fmt::Debug for Bytes {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        for b in self.as_slice() {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// One record of a recording.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Record<'a> {
    /// A fresh device model with this set-up (the QEMU arguments after `qemu`).
    Setup(Setup<'a>),
    /// A request written to a FIFO's driver queue, followed by one doorbell.
    Request {
        /// The FIFO.
        fifo: u8,
        /// The request, `msg_size` bytes (a whole header if that is less).
        msg: Bytes,
    },
    /// One reply on a FIFO's device queue to the latest request.
    Reply {
        /// The FIFO.
        fifo: u8,
        /// The reply, `msg_size` bytes.
        msg: Bytes,
    },
    /// The latest request got no reply.
    NoReply,
}

/// A line that is not in the recording format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParseError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong with it.
    pub what: &'static str,
}

/// The records of `text`, each with its 1-based line number; notes and blank lines skipped.
pub fn records(text: &str) -> impl Iterator<Item = Result<(usize, Record<'_>), ParseError>> {
    text.lines().enumerate().filter_map(|(i, line)| {
        let line_no = i + 1;
        parse_line(line)
            .map_err(|what| ParseError {
                line: line_no,
                what,
            })
            .map(|r| r.map(|r| (line_no, r)))
            .transpose()
    })
}

fn parse_line(line: &str) -> Result<Option<Record<'_>>, &'static str> {
    // Everything after " ; " is a human note.
    let line = line.split(" ; ").next().unwrap_or_default().trim_end();
    let Some(first) = line.chars().next() else {
        return Ok(None);
    };
    match first {
        '#' => Ok(None),
        '@' => {
            let args = line[1..]
                .trim_start()
                .strip_prefix("qemu")
                .ok_or("set-up line without `qemu`")?;
            Ok(Some(Record::Setup(Setup { args: args.trim() })))
        }
        '=' if line == "= no reply" => Ok(Some(Record::NoReply)),
        '>' | '<' => {
            let mut words = line[1..].split_ascii_whitespace();
            let fifo = words
                .next()
                .and_then(|w| w.strip_prefix("fifo="))
                .and_then(|f| f.parse::<u8>().ok())
                .ok_or("no `fifo=N`")?;
            let mut msg = Bytes {
                buf: [0; MAX_BYTES],
                len: 0,
            };
            for word in words {
                append_hex(&mut msg, word)?;
            }
            if msg.len < 8 {
                return Err("message shorter than a header");
            }
            Ok(Some(if first == '>' {
                Record::Request { fifo, msg }
            } else {
                Record::Reply { fifo, msg }
            }))
        }
        _ => Err("unknown record"),
    }
}

fn append_hex(msg: &mut Bytes, word: &str) -> Result<(), &'static str> {
    let digits = word.as_bytes();
    if digits.len() % 2 != 0 {
        return Err("odd number of hex digits");
    }
    for pair in digits.chunks_exact(2) {
        let byte = (hex_digit(pair[0])? << 4) | hex_digit(pair[1])?;
        let dst = msg
            .buf
            .get_mut(msg.len)
            .ok_or("message longer than a slot")?;
        *dst = byte;
        msg.len += 1;
    }
    Ok(())
}

fn hex_digit(c: u8) -> Result<u8, &'static str> {
    match c {
        b'0'..=b'9' => Ok(c - b'0'),
        b'a'..=b'f' => Ok(c - b'a' + 10),
        _ => Err("not a lowercase hex digit"),
    }
}

/// The device set-up of a recording: QEMU's arguments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Setup<'a> {
    args: &'a str,
}

/// A virtio device of a [`Setup`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SetupDevice<'a> {
    /// QEMU's device type (`virtio-rng-device`, `virtio-blk-device`, ...).
    pub kind: &'a str,
    /// The FIFO it sits behind.
    pub fifo: u8,
    /// Its device number on that FIFO.
    pub dev_num: u16,
}

impl<'a> Setup<'a> {
    fn devices_args(&self) -> impl Iterator<Item = &'a str> {
        let mut words = self.args.split_ascii_whitespace();
        core::iter::from_fn(move || loop {
            if words.next()? == "-device" {
                return words.next();
            }
        })
    }

    /// The FIFO count of the AMP PCI device (its `num-fifos`, 1 if not given).
    pub fn num_fifos(&self) -> Option<u8> {
        let amp = self
            .devices_args()
            .find(|d| d.split(',').next() == Some("virtio-msg-amp-pci"))?;
        match amp.split(',').find_map(|p| p.strip_prefix("num-fifos=")) {
            Some(n) => n.parse().ok(),
            None => Some(1),
        }
    }

    /// The virtio devices and where they sit (`bus=fifoF/busN`; devices without one are
    /// skipped).
    pub fn devices(&self) -> impl Iterator<Item = SetupDevice<'a>> {
        self.devices_args().filter_map(|d| {
            let mut props = d.split(',');
            let kind = props.next()?;
            let bus = props.find_map(|p| p.strip_prefix("bus="))?;
            let (fifo, dev) = bus.strip_prefix("fifo")?.split_once("/bus")?;
            Some(SetupDevice {
                kind,
                fifo: fifo.parse().ok()?,
                dev_num: dev.parse().ok()?,
            })
        })
    }
}
