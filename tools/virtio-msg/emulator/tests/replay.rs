// SPDX-License-Identifier: GPL-2.0 OR MIT

//! The device model recordings, replayed against the emulator's compat mode.
//!
//! `drivers/virtio/virtio_msg/device-model/*.txt` hold what QEMU's own `virtio-msg-amp-pci`
//! answered, byte for byte. Compat mode claims to be that device, so every recorded request is
//! put on the emulator's driver queue exactly as recorded (the whole 64-byte slot: the message,
//! zeros after it, and the stray bytes a note says the slot still held), the doorbell is rung,
//! and what appears on the device queue must be the recorded replies, byte for byte (`msg_size`
//! bytes of each), or nothing where the recording says `= no reply`. A request the device model
//! died on (a note says so, and the next record starts a fresh QEMU) is sent but not compared:
//! the emulator must only survive it.
//!
//! The FIFO level is the most faithful place: [`Fifo`] is what the worker thread runs, over a
//! BAR1 in memory, with the backends the command line would build. The harness plays the
//! driver by writing slots and indexes itself, as the recording harness did, so that it can do
//! what no well-behaved driver does (leave replies unread, zero the indexes). What it does
//! beyond "write, ring, read, drain" is keyed to the notes of the recording that describe it.
//!
//! Each file is a test of its own; a failure lists every line that differs.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use virtio_msg_device::{bus::FifoBus, Mode};
use virtio_msg_emulator::{
    backends,
    cli::Kind,
    pci::bar1_size,
    server::GuestMem,
    shm::{SharedMem, FIFO_WINDOW},
    tokens::TokenMode,
    worker::Fifo,
};
use virtio_msg_spsc::layout::{DEVICE_QUEUE, DRIVER_QUEUE};
use virtio_msg_spsc::{CAPACITY, HEAD_OFFSET, SLOTS_OFFSET, SLOT_BYTES, TAIL_OFFSET};
use virtio_msg_wire::recording::{records, Record, Setup};
use vm_memory::{Bytes, GuestAddress, GuestAddressSpace, GuestMemoryAtomic, GuestMemoryMmap};

/// Where the recordings are, in the kernel tree this workspace belongs to.
const RECORDINGS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../drivers/virtio/virtio_msg/device-model"
);

/// Guest memory of a replay: the recorded rings and buffers all lie below 8 MiB.
const GUEST_RAM: usize = 8 << 20;

/// Size of the raw image behind a recorded `virtio-blk-device` (the recording's `disk16m.img`).
const DISK_BYTES: u64 = 16 << 20;

/// QEMU's MAC address for the first network device that is given none; the recorded net
/// device had none, and its configuration space shows this one.
const QEMU_DEFAULT_MAC: &str = "52:54:00:12:34:56";

/// VIRTQ_DESC_F_WRITE.
const DESC_WRITE: u16 = 2;

/// What the device model did with one request.
#[derive(Debug)]
enum Expect {
    /// These messages, on these FIFOs, in this order (with their line numbers).
    Replies(Vec<(usize, u8, Vec<u8>)>),
    /// Nothing at all.
    Nothing,
    /// QEMU died on it: nothing to compare.
    Died,
}

/// One thing to do, in file order.
enum Step<'a> {
    Setup(usize, Setup<'a>),
    Request {
        line: usize,
        fifo: u8,
        /// The whole slot as the recording harness wrote it.
        slot: [u8; SLOT_BYTES],
        expect: Expect,
        label: &'a str,
    },
    Note(usize, &'a str),
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The stray bytes a note says a request's slot carried after `msg_size`: "(the slot also
/// carries N non-zero byte(s) after msg_size: HEX)".
fn stray_bytes(note: &str) -> Option<Vec<u8>> {
    let (_, rest) = note.split_once("after msg_size: ")?;
    unhex(rest.trim_end_matches(')').trim())
}

/// The steps of a recording, each request with what followed it.
fn steps(text: &str) -> Vec<Step<'_>> {
    let lines: Vec<&str> = text.lines().collect();
    let mut by_line = HashMap::new();
    for r in records(text) {
        let (line, record) = r.unwrap_or_else(|e| panic!("line {}: {}", e.line, e.what));
        by_line.insert(line, record);
    }
    let mut steps = Vec::new();
    for (i, raw) in lines.iter().enumerate() {
        let line = i + 1;
        if let Some(note) = raw.strip_prefix('#') {
            steps.push(Step::Note(line, note.trim()));
            continue;
        }
        match by_line.get(&line) {
            Some(Record::Setup(s)) => steps.push(Step::Setup(line, *s)),
            Some(Record::Request { fifo, msg }) => {
                let bytes = msg.as_slice();
                let mut slot = [0u8; SLOT_BYTES];
                slot[..bytes.len()].copy_from_slice(bytes);
                // What followed: notes, then replies or "no reply", up to the next request or
                // set-up (none: QEMU died on this request).
                let mut replies = Vec::new();
                let mut nothing = false;
                for (j, next) in lines.iter().enumerate().skip(line) {
                    match by_line.get(&(j + 1)) {
                        Some(Record::Reply { fifo, msg }) => {
                            replies.push((j + 1, *fifo, msg.as_slice().to_vec()))
                        }
                        Some(Record::NoReply) => nothing = true,
                        Some(_) => break,
                        None => {
                            if let Some(stray) = next.strip_prefix('#').and_then(stray_bytes) {
                                let end = bytes.len() + stray.len();
                                slot[bytes.len()..end].copy_from_slice(&stray);
                            }
                        }
                    }
                }
                // A request with neither replies nor "no reply" is only one QEMU died on, and a
                // note must say so: anything else is a recording that lost a line.
                let died = lines
                    .iter()
                    .skip(line)
                    .take_while(|l| l.starts_with('#'))
                    .any(|l| l.contains("QEMU DIED"));
                let expect = match (replies.is_empty(), nothing) {
                    (false, false) => Expect::Replies(replies),
                    (true, true) => Expect::Nothing,
                    (true, false) if died => Expect::Died,
                    (true, false) => {
                        panic!("line {line}: no reply, no \"no reply\", no note that QEMU died")
                    }
                    (false, true) => panic!("line {line}: replies and \"no reply\""),
                };
                let label = raw.split_once(" ; ").map_or("", |(_, l)| l.trim());
                steps.push(Step::Request {
                    line,
                    fifo: *fifo,
                    slot,
                    expect,
                    label,
                });
            }
            _ => {}
        }
    }
    steps
}

/// A fresh device as a set-up line describes it.
struct Rig {
    bar1: Arc<SharedMem>,
    mem: GuestMem,
    fifos: Vec<Fifo>,
    /// Per FIFO: the device-queue index up to which the harness has read.
    seen: Vec<u32>,
    /// The rings of the latest SET_VQUEUE: descriptors, available ring, used ring, size.
    rings: Option<(u64, u64, u64, u16)>,
    /// The buffer of the first descriptor a note wrote.
    buffer: Option<u64>,
    /// Checks the notes asked for so far.
    note_checks: usize,
    _scratch: Scratch,
}

/// A directory for the host sides of the devices, removed with the rig.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Rig {
    fn new(file: &str, line: usize, setup: &Setup<'_>) -> Self {
        let dir =
            std::env::temp_dir().join(format!("vmsg-replay-{}-{file}-{line}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let scratch = Scratch(dir);
        let nfifos = usize::from(setup.num_fifos().expect("set-up without an AMP PCI device"));
        let mem: GuestMem = GuestMemoryAtomic::new(
            GuestMemoryMmap::from_ranges(&[(GuestAddress(0), GUEST_RAM)]).unwrap(),
        );
        let mut buses: Vec<FifoBus> = (0..nfifos).map(|_| FifoBus::new(Mode::Compat)).collect();
        for (i, d) in setup.devices().enumerate() {
            let kind = kind(d.kind, &scratch.0, i);
            let fifo = usize::from(d.fifo);
            let backend = backends::build(&kind, fifo, d.dev_num, &mem).unwrap();
            buses[fifo].attach(d.dev_num, backend).unwrap();
        }
        let bar1 = Arc::new(SharedMem::new("replay-bar1", bar1_size(nfifos) as usize).unwrap());
        let fifos = buses
            .into_iter()
            .enumerate()
            .map(|(n, bus)| {
                Fifo::new(n, bus, Mode::Compat, TokenMode::Model, bar1.clone()).unwrap()
            })
            .collect();
        Self {
            bar1,
            mem,
            fifos,
            seen: vec![0; nfifos],
            rings: None,
            buffer: None,
            note_checks: 0,
            _scratch: scratch,
        }
    }

    fn index(&self, fifo: usize, queue: usize, which: usize) -> u32 {
        self.bar1.load_u32(fifo * FIFO_WINDOW + queue + which)
    }

    fn set_index(&self, fifo: usize, queue: usize, which: usize, value: u32) {
        self.bar1
            .store_u32(fifo * FIFO_WINDOW + queue + which, value);
    }

    fn slot(fifo: usize, queue: usize, index: u32) -> usize {
        fifo * FIFO_WINDOW + queue + SLOTS_OFFSET + index as usize * SLOT_BYTES
    }

    /// Puts `slot` on FIFO `fifo`'s driver queue at the head found there, as the recording
    /// harness did, and rings the doorbell.
    fn request(&mut self, fifo: usize, slot: &[u8; SLOT_BYTES]) {
        let head = self.index(fifo, DRIVER_QUEUE, HEAD_OFFSET) % CAPACITY;
        self.bar1.write(Self::slot(fifo, DRIVER_QUEUE, head), slot);
        self.set_index(fifo, DRIVER_QUEUE, HEAD_OFFSET, (head + 1) % CAPACITY);
        self.fifos[fifo].doorbell();
    }

    /// The messages that appeared on FIFO `fifo`'s device queue since the harness last looked
    /// (`msg_size` bytes of each, a whole header at least).
    fn new_messages(&mut self, fifo: usize) -> Vec<Vec<u8>> {
        let head = self.index(fifo, DEVICE_QUEUE, HEAD_OFFSET) % CAPACITY;
        let mut out = Vec::new();
        while self.seen[fifo] != head {
            let mut slot = [0u8; SLOT_BYTES];
            self.bar1
                .read(Self::slot(fifo, DEVICE_QUEUE, self.seen[fifo]), &mut slot);
            let size = usize::from(u16::from_le_bytes([slot[6], slot[7]])).clamp(8, SLOT_BYTES);
            // The device model leaves nothing after msg_size in the 48 bytes it writes (no
            // recording notes any), even in reused slots: bytes there show in the comparison.
            let end = if slot[size..]
                .iter()
                .take(48usize.saturating_sub(size))
                .any(|&b| b != 0)
            {
                48
            } else {
                size
            };
            out.push(slot[..end].to_vec());
            self.seen[fifo] = (self.seen[fifo] + 1) % CAPACITY;
        }
        out
    }

    /// Consumes everything on FIFO `fifo`'s device queue.
    fn drain(&mut self, fifo: usize) {
        let head = self.index(fifo, DEVICE_QUEUE, HEAD_OFFSET);
        self.set_index(fifo, DEVICE_QUEUE, TAIL_OFFSET, head);
    }

    fn read_u16(&self, addr: u64) -> u16 {
        self.mem.memory().read_obj(GuestAddress(addr)).unwrap()
    }

    fn read_u32(&self, addr: u64) -> u32 {
        self.mem.memory().read_obj(GuestAddress(addr)).unwrap()
    }

    fn write_u16(&self, addr: u64, v: u16) {
        self.mem.memory().write_obj(v, GuestAddress(addr)).unwrap();
    }

    /// Writes descriptor `i` of the latest queue set up.
    fn write_desc(&self, i: u16, addr: u64, len: u32, flags: u16, next: u16) {
        let (desc, ..) = self
            .rings
            .expect("no SET_VQUEUE before the ring was written");
        let mut d = [0u8; 16];
        d[..8].copy_from_slice(&addr.to_le_bytes());
        d[8..12].copy_from_slice(&len.to_le_bytes());
        d[12..14].copy_from_slice(&flags.to_le_bytes());
        d[14..].copy_from_slice(&next.to_le_bytes());
        let at = GuestAddress(desc + 16 * u64::from(i));
        self.mem.memory().write_slice(&d, at).unwrap();
    }
}

/// The emulator's device for a QEMU device type of a set-up line; `i` tells apart the host
/// ends of several devices.
fn kind(qemu: &str, dir: &Path, i: usize) -> Kind {
    match qemu {
        "virtio-rng-device" => Kind::Rng,
        "virtio-blk-device" => {
            let file = dir.join(format!("disk{i}.img"));
            std::fs::File::create(&file)
                .and_then(|f| f.set_len(DISK_BYTES))
                .unwrap();
            Kind::Blk {
                file,
                read_only: false,
                serial: None,
            }
        }
        "virtio-net-device" => {
            // A datagram socket needs no privileges, unlike a TAP interface.
            let sock = dir.join(format!("net{i}.sock"));
            let spec = format!("socket={},mac={QEMU_DEFAULT_MAC}", sock.display());
            Kind::Net(spec.parse().unwrap())
        }
        "virtio-serial-device" => Kind::Console {
            socket: Some(dir.join(format!("console{i}.sock"))),
        },
        other => panic!("no emulator device for {other}"),
    }
}

/// Parses "head H tail T" (commas and parentheses allowed) in `text`.
fn head_tail(text: &str) -> Option<(u32, u32)> {
    let words: Vec<&str> = text
        .split(|c: char| c.is_whitespace() || c == ',' || c == '(' || c == ')')
        .filter(|w| !w.is_empty())
        .collect();
    let at = words
        .windows(4)
        .position(|w| w[0] == "head" && w[2] == "tail")?;
    Some((words[at + 1].parse().ok()?, words[at + 3].parse().ok()?))
}

/// The queue indexes a note states ("driver queue head 7 tail 7; device queue head 7 tail 6"),
/// as (queue offset, queue name, head, tail).
fn stated_indexes(note: &str) -> Vec<(usize, &'static str, u32, u32)> {
    let mut out = Vec::new();
    for (name, queue) in [
        ("driver queue", DRIVER_QUEUE),
        ("device queue", DEVICE_QUEUE),
    ] {
        for (i, _) in note.match_indices(name) {
            let clause = note[i..].split(';').next().unwrap_or_default();
            if let Some((head, tail)) = head_tail(clause) {
                out.push((queue, name, head, tail));
            }
        }
    }
    out
}

/// Replays `file`; panics with every difference found.
fn replay(file: &str) {
    let path = Path::new(RECORDINGS).join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut failures = Vec::new();
    let mut rig: Option<Rig> = None;
    let mut note_checks = 0;
    // 08-full-queue: the device queue is only looked at until a note says it was drained.
    let mut peek_only = false;
    let (mut compared, mut skipped) = (0, 0);
    for step in steps(&text) {
        match step {
            Step::Setup(line, setup) => {
                note_checks += rig.as_ref().map_or(0, |r| r.note_checks);
                rig = Some(Rig::new(file, line, &setup));
            }
            Step::Request {
                line,
                fifo,
                slot,
                expect,
                label,
            } => {
                let rig = rig.as_mut().expect("request before any set-up");
                let fifo = usize::from(fifo);
                // SET_VQUEUE: remember the rings, for notes that write into them.
                if slot[1] == 0x0a && slot[0] & 3 == 0 {
                    let word = |at: usize| u64::from_le_bytes(slot[at..at + 8].try_into().unwrap());
                    let size = u16::from_le_bytes([slot[16], slot[17]]);
                    rig.rings = Some((word(24), word(32), word(40), size));
                }
                rig.request(fifo, &slot);
                let got: Vec<(u8, Vec<u8>)> = (0..rig.fifos.len())
                    .flat_map(|f| {
                        let msgs = rig.new_messages(f);
                        msgs.into_iter().map(move |m| (f as u8, m))
                    })
                    .collect();
                match expect {
                    Expect::Died => {
                        println!(
                            "{file}:{line}: QEMU died on this request ({label}): not compared, \
                             the emulator survived it"
                        );
                        skipped += 1;
                    }
                    Expect::Nothing => {
                        compared += 1;
                        for (f, m) in &got {
                            failures.push(format!(
                                "{file}:{line}: expected no reply to {label:?}, got fifo={f} {}",
                                hex(m)
                            ));
                        }
                    }
                    Expect::Replies(want) => {
                        compared += 1;
                        for i in 0..want.len().max(got.len()) {
                            match (want.get(i), got.get(i)) {
                                (Some((l, wf, w)), Some((gf, g))) if (wf, w) != (gf, g) => failures
                                    .push(format!(
                                        "{file}:{l}: reply to {label:?}: expected fifo={wf} {}, \
                                         got fifo={gf} {}",
                                        hex(w),
                                        hex(g)
                                    )),
                                (Some((l, wf, w)), None) => failures.push(format!(
                                    "{file}:{l}: reply to {label:?}: expected fifo={wf} {}, got \
                                     nothing",
                                    hex(w)
                                )),
                                (None, Some((gf, g))) => failures.push(format!(
                                    "{file}:{line}: {label:?}: unexpected extra reply fifo={gf} \
                                     {}",
                                    hex(g)
                                )),
                                _ => {}
                            }
                        }
                    }
                }
                // 08: a driver that never reads its device queue; 09: replies the old driver
                // left unread, which the notes' index states count on.
                if !peek_only && !label.contains("reply left unread") {
                    (0..rig.fifos.len()).for_each(|f| rig.drain(f));
                }
            }
            Step::Note(line, note) => {
                // 08-full-queue, before its set-up: "After each doorbell we only PEEK at new
                // device-queue slots".
                if note.contains("only PEEK") {
                    peek_only = true;
                }
                if let Some(rig) = rig.as_mut() {
                    note_action(rig, file, line, note, &mut peek_only, &mut failures);
                }
            }
        }
    }
    note_checks += rig.as_ref().map_or(0, |r| r.note_checks);
    println!(
        "{file}: {compared} requests compared, {skipped} not (QEMU died), {note_checks} checks \
         from notes"
    );
    // Every request of the file was sent; only those QEMU died on went uncompared.
    let requests = records(&text)
        .filter(|r| matches!(r, Ok((_, Record::Request { .. }))))
        .count();
    let died = text.lines().filter(|l| l.contains("QEMU DIED")).count();
    assert_eq!(compared + skipped, requests, "{file}: requests replayed");
    assert_eq!(skipped, died, "{file}: requests QEMU died on");
    assert!(
        failures.is_empty(),
        "{} difference(s) from the device model:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// What a note of a recording tells the harness to do or to check.
fn note_action(
    rig: &mut Rig,
    file: &str,
    line: usize,
    note: &str,
    peek_only: &mut bool,
    failures: &mut Vec<String>,
) {
    let mut checks = 0;
    let mut check = |what: &str, want: u64, got: u64| {
        checks += 1;
        if want != got {
            failures.push(format!("{file}:{line}: {what}: expected {want}, got {got}"));
        }
    };
    // 08-full-queue: "drained (tail := head = 61); one more request".
    if note.contains("drained (tail := head") {
        rig.drain(0);
        *peek_only = false;
    }
    // 09-reload-indexes (a): the new driver discards what the old one left on the device
    // queue by moving its tail, keeping every other index.
    if note.contains("device-queue tail := head") {
        rig.drain(0);
    }
    // 09-reload-indexes (b): the next driver rewrites all four indexes to 0 (and starts
    // reading the device queue from slot 0 again).
    if note.starts_with("after zeroing") {
        for queue in [DRIVER_QUEUE, DEVICE_QUEUE] {
            rig.set_index(0, queue, HEAD_OFFSET, 0);
            rig.set_index(0, queue, TAIL_OFFSET, 0);
        }
        rig.seen[0] = 0;
    }
    // 08, 09: the queue indexes as the recording harness saw them.
    for (queue, name, head, tail) in stated_indexes(note) {
        check(
            &format!("{name} head"),
            head.into(),
            rig.index(0, queue, HEAD_OFFSET).into(),
        );
        check(
            &format!("{name} tail"),
            tail.into(),
            rig.index(0, queue, TAIL_OFFSET).into(),
        );
    }
    // 06-rng-data: the driver side of a real split ring, written into guest memory before the
    // EVENT_AVAIL that follows, and what the device did with it read back after.
    if let Some(rest) = note.strip_prefix("wrote desc[0] = {addr ") {
        let (addr, rest) = rest.split_once(", len ").unwrap();
        let (len, _) = rest.split_once(',').unwrap();
        let addr = u64::from_str_radix(addr.trim_start_matches("0x"), 16).unwrap();
        rig.write_desc(0, addr, len.parse().unwrap(), DESC_WRITE, 0);
        rig.buffer = Some(addr);
        let (_, avail, ..) = rig.rings.unwrap();
        // avail = {flags 0, idx 1, ring[0] 0}
        rig.write_u16(avail, 0);
        rig.write_u16(avail + 4, 0);
        rig.write_u16(avail + 2, 1);
    }
    if note.starts_with("used ring at ") && note.contains("is all zero") {
        let (_, _, used, size) = rig.rings.unwrap();
        let bytes = 4 + 8 * u64::from(size) + 2;
        let nonzero = (0..bytes).step_by(2).any(|o| rig.read_u16(used + o) != 0);
        check("used ring not zero", 0, u64::from(nonzero));
    }
    if let Some(rest) = note.strip_prefix("used ring read back: ") {
        // "flags 0 idx 1 ring[0] = {id 0, len 16}; avail_event 1"
        let (_, _, used, size) = rig.rings.unwrap();
        let number = |key: &str| -> u64 {
            let after = rest.split_once(key).unwrap().1.trim_start();
            let digits: String = after.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().unwrap()
        };
        check("used flags", number("flags"), rig.read_u16(used).into());
        check("used idx", number("idx"), rig.read_u16(used + 2).into());
        check(
            "used ring[0].id",
            number("{id"),
            rig.read_u32(used + 4).into(),
        );
        check(
            "used ring[0].len",
            number("len"),
            rig.read_u32(used + 8).into(),
        );
        let avail_event = used + 4 + 8 * u64::from(size);
        check(
            "avail_event",
            number("avail_event"),
            rig.read_u16(avail_event).into(),
        );
    }
    if note.starts_with("buffer now holds") {
        // The random bytes differ on every run; the device must have written some.
        println!("{file}:{line}: the random bytes themselves are not compared");
        let mut buf = [0u8; 16];
        let addr = rig.buffer.expect("no buffer was written");
        rig.mem
            .memory()
            .read_slice(&mut buf, GuestAddress(addr))
            .unwrap();
        check("random buffer all zero", 0, u64::from(buf == [0; 16]));
    }
    if note.starts_with("posted a second buffer (desc[1], avail idx 2)") {
        // The note gives no address: the 16 bytes after the first buffer.
        let (_, avail, ..) = rig.rings.unwrap();
        let addr = rig.buffer.expect("no first buffer") + 16;
        rig.write_desc(1, addr, 16, DESC_WRITE, 0);
        rig.write_u16(avail + 4 + 2, 1);
        rig.write_u16(avail + 2, 2);
    }
    if let Some(rest) = note.strip_prefix("used idx now ") {
        let (_, _, used, _) = rig.rings.unwrap();
        let want: u64 = rest.split_whitespace().next().unwrap().parse().unwrap();
        check("used idx", want, rig.read_u16(used + 2).into());
    }
    rig.note_checks += checks;
}

#[test]
fn replay_01_enumeration() {
    replay("01-enumeration.txt");
}

#[test]
fn replay_02_probe_rng() {
    replay("02-probe-rng.txt");
}

#[test]
fn replay_03_probe_blk() {
    replay("03-probe-blk.txt");
}

#[test]
fn replay_04_probe_net() {
    replay("04-probe-net.txt");
}

#[test]
fn replay_05_probe_console() {
    replay("05-probe-console.txt");
}

#[test]
fn replay_06_rng_data() {
    replay("06-rng-data.txt");
}

#[test]
fn replay_07_malformed() {
    replay("07-malformed.txt");
}

#[test]
fn replay_08_full_queue() {
    replay("08-full-queue.txt");
}

#[test]
fn replay_09_reload_indexes() {
    replay("09-reload-indexes.txt");
}

#[test]
fn every_recording_is_replayed() {
    // A new recording needs a test above.
    let mut files: Vec<String> = std::fs::read_dir(RECORDINGS)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".txt"))
        .collect();
    files.sort();
    assert_eq!(
        files,
        [
            "01-enumeration.txt",
            "02-probe-rng.txt",
            "03-probe-blk.txt",
            "04-probe-net.txt",
            "05-probe-console.txt",
            "06-rng-data.txt",
            "07-malformed.txt",
            "08-full-queue.txt",
            "09-reload-indexes.txt",
        ]
    );
}
