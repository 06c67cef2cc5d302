// SPDX-License-Identifier: GPL-2.0 OR MIT

//! One thread per FIFO: moves messages between the FIFO's SPSC queues and its [`FifoBus`].
//!
//! The vfio-user message loop must stay responsive (QEMU waits for it on every trapped
//! access), so a doorbell only signals the FIFO's eventfd and the worker does the work. The
//! worker waits in poll(2) on: a control eventfd (reset, stop), the doorbell, and the host side
//! of every attached backend (a tap device, a console socket). It owns a [`Fifo`]: the bus and
//! both queue ends; what it puts on the device queue in one wake-up is announced with a single
//! MSI-X interrupt. [`Fifo`] works without the thread too, so that tests can ring a doorbell
//! and look at the device queue once it has been answered, as with the device model.
//!
//! The wait is poll(2), not epoll: the backends name their host fd afresh before every wait (a
//! console's listener, then its client; none while input waits for buffers), and a device whose
//! fd was ready but gave nothing is left out until the next doorbell. An epoll set would have
//! to be brought in line with that list on every pass, and epoll drops a registration silently
//! when its fd is closed, even if the number comes back for the next client; a pollfd array
//! built for each wait says exactly what it waits for.
//!
//! The guest owns half of each queue and is not trusted: in strict mode a queue index that
//! makes no sense stops the FIFO (logged once) until the next doorbell adopts the indexes
//! again; compat mode takes indexes modulo the queue size as the device model does (see
//! [`crate::queues`]). Nothing here panics on what the guest wrote.

use crate::faults::{BurstAnswer, Faults, OVERTAKE};
use crate::queues::{DeviceQueue, DriverQueue};
use crate::shm::{QueueWindow, SharedMem};
use crate::tokens::{Stamper, TokenMode};
use log::{debug, info, warn};
use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use virtio_msg_device::{bus::FifoBus, Mode};
use virtio_msg_spsc::layout::{DEVICE_QUEUE, DRIVER_QUEUE};
use virtio_msg_spsc::{
    QueueAccess, QueueError, CAPACITY, HEAD_OFFSET, SLOTS_OFFSET, SLOT_BYTES, TAIL_OFFSET,
};
use virtio_msg_wire::{Frame, Message};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// How often every backend's host side is looked at even without a readable fd.
pub const TICK: Duration = Duration::from_millis(100);
/// Retry interval while a full device queue holds messages back (strict mode).
const RETRY: Duration = Duration::from_millis(10);
/// Driver-queue messages handled per wake-up before other sources get a turn.
pub const BATCH: u32 = 4 * CAPACITY;
/// Device status bit DRIVER_OK.
const DRIVER_OK: u32 = 4;

/// What the vfio-user side shares with a FIFO worker.
pub struct FifoShared {
    doorbell: EventFd,
    control: EventFd,
    irq: Mutex<Option<File>>,
}

impl FifoShared {
    fn new() -> io::Result<Self> {
        Ok(Self {
            doorbell: EventFd::new(EFD_NONBLOCK)?,
            control: EventFd::new(EFD_NONBLOCK)?,
            irq: Mutex::new(None),
        })
    }

    /// The driver wrote the FIFO's NOTIFY register. The eventfd adds the writes up until the
    /// worker reads it, so the worker learns how many doorbells it answers.
    pub fn ring(&self) {
        if let Err(e) = self.doorbell.write(1) {
            warn!("doorbell: {e}");
        }
    }

    /// Sets (or clears) the eventfd that raises the FIFO's MSI-X vector.
    pub fn set_irq(&self, irq: Option<File>) {
        if let Ok(mut slot) = self.irq.lock() {
            *slot = irq;
        }
    }

    /// Raises the MSI-X vector, if the guest enabled it.
    fn raise(&self) {
        let Ok(slot) = self.irq.lock() else { return };
        if let Some(mut f) = slot.as_ref() {
            if let Err(e) = f.write_all(&1u64.to_ne_bytes()) {
                debug!("irq eventfd: {e}");
            }
        }
    }
}

/// How a FIFO's device side is stopped (control pipe `down` and `reboot`): as firmware that
/// crashed or is restarting, it takes nothing from the driver queue (PINGs aside, if `pings`),
/// sends nothing and raises no interrupt, until it is started again ([`FifoHandle::up`]), or
/// on its own after `for_ms`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Down {
    /// Its bus still answers PING, while its devices are gone.
    pub pings: bool,
    /// It starts again after this many milliseconds.
    pub for_ms: Option<u64>,
}

enum Control {
    /// Reset every device and adopt the queue indexes again; answer on the channel.
    Reset(mpsc::Sender<()>),
    /// Stop the device side.
    Down(Down),
    /// Start it again (see [`Fifo::restart`]).
    Up,
    /// Take a device off the bus (`false`) or put it back (`true`), telling the driver with
    /// EVENT_DEVICE; answer whether there was such a device.
    Plug(u16, bool, mpsc::Sender<bool>),
    /// Replace the faults (the control socket).
    Faults(Faults),
    Stop,
}

/// One FIFO without its thread: the bus with its devices and the device's ends of both queues.
///
/// The worker thread drives it; tests drive it directly, one doorbell at a time, the way the
/// device model answers a doorbell before the doorbell write returns.
pub struct Fifo {
    index: usize,
    mode: Mode,
    bus: FifoBus,
    rx: DriverQueue,
    tx: DeviceQueue,
    /// A queue index was corrupt (strict mode); reported once, until the queues are adopted
    /// again.
    broken: bool,
    /// Strict mode: messages waiting for room in the device queue.
    outbox: VecDeque<Vec<u8>>,
    /// Messages dropped: the device queue was full (compat mode) or stopped.
    dropped: u64,
    tokens: Stamper,
    /// What `--fault` makes go wrong on this FIFO.
    faults: Faults,
    /// The device queue again, for the faults that write its head or its slots behind the
    /// producer's back ([`crate::faults::FaultKind::CorruptIndex`] and its kin).
    device_window: QueueWindow,
    /// The driver queue again, for [`crate::faults::FaultKind::TailOvertake`].
    driver_window: QueueWindow,
    /// A tail-overtake is due once the device is done with the driver queue for now.
    overtake: bool,
    /// The driver-queue tail a tail-overtake hid, put back before the queue is read again.
    real_tail: Option<u32>,
    /// A stop-consuming left messages in the driver queue: read them when it ends, since the
    /// doorbells that announced them are gone.
    unread: bool,
}

/// What a call on a [`Fifo`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pass {
    /// Messages put on the device queue.
    pub sent: u32,
    /// Whether driver messages may be left for another call.
    pub more: bool,
}

impl Fifo {
    /// FIFO `index` of the device, with its queues in `mem`, answering through `bus`; the
    /// queues run as the device model runs them in compat mode, checked in strict mode, and
    /// `tokens` says what becomes of the tokens of what the device sends.
    pub fn new(
        index: usize,
        bus: FifoBus,
        mode: Mode,
        tokens: TokenMode,
        mem: Arc<SharedMem>,
    ) -> io::Result<Self> {
        let invalid = || io::Error::new(io::ErrorKind::InvalidInput, "FIFO outside BAR1");
        let model = mode == Mode::Compat;
        let driver = QueueWindow::new(mem.clone(), index, DRIVER_QUEUE).ok_or_else(invalid)?;
        let device = QueueWindow::new(mem, index, DEVICE_QUEUE).ok_or_else(invalid)?;
        let mut fifo = Self {
            index,
            mode,
            bus,
            rx: DriverQueue::new(driver.clone(), model),
            tx: DeviceQueue::new(device.clone(), model),
            broken: false,
            outbox: VecDeque::new(),
            dropped: 0,
            tokens: Stamper::new(tokens),
            faults: Faults::default(),
            device_window: device,
            driver_window: driver,
            overtake: false,
            real_tail: None,
            unread: false,
        };
        fifo.adopt();
        Ok(fifo)
    }

    /// Makes `faults` go wrong on this FIFO from now on (none: no more faults; what they
    /// hold back still goes out when due).
    pub fn set_faults(&mut self, faults: Faults) {
        if !faults.is_empty() || !self.faults.is_empty() {
            info!("FIFO {}: faults injected: {faults:?}", self.index);
        }
        self.faults.replace(faults);
        let devices = self
            .bus
            .devices_mut()
            .fold(0u32, |mask, (n, _)| mask | 1 << n);
        self.faults.set_devices(devices);
    }

    /// When something a fault holds back is due next: a message, a stalled request, the end of
    /// a stop (see [`Fifo::timed`]), a slot rewrite (see [`Fifo::rewrite_slots`]).
    pub fn next_due(&self) -> Option<Instant> {
        self.faults.next_due()
    }

    /// What faults do in time: held-back messages whose delay is over go out, a stalled
    /// backend takes what waited for it, a device that stopped reading the driver queue reads
    /// it again, and with `tick`, floods and PINGs are sent. Returns the messages put on the
    /// device queue.
    pub fn timed(&mut self, tick: bool) -> u32 {
        let now = Instant::now();
        let mut sent = 0;
        for msg in self.faults.due(now) {
            self.queue(msg, &mut sent);
        }
        for request in self.faults.unstalled(now) {
            self.answer(&request, &mut sent);
        }
        // Asked every time, so that a stop that ran out is no longer due.
        if self.faults.consuming(now) && self.unread {
            self.unread = false;
            // A full batch leaves the rest for the next call; a new stop sets it again.
            self.unread |= self.drain(&mut sent);
        }
        if tick {
            let msgs = self.faults.tick();
            for msg in msgs {
                self.queue(msg, &mut sent);
            }
        }
        self.overtake_tail();
        sent
    }

    /// MSI-X raises an interrupt storm owes, beyond the one for what [`Fifo::timed`] sent.
    pub fn storm(&mut self) -> u32 {
        self.faults.storm()
    }

    /// Overwrites the device-queue slots a fault wants rewritten by now. Called before
    /// anything else is put on the queue, so that whatever is overwritten was announced by
    /// an interrupt already.
    pub fn rewrite_slots(&mut self) {
        for (slot, msg) in self.faults.rewrites_due(Instant::now()) {
            let offset = SLOTS_OFFSET + slot as usize * SLOT_BYTES;
            let mut held = [0u8; SLOT_BYTES];
            self.device_window.read(offset, &mut held);
            // A slot the queue has come round to again holds a message the fault is not about.
            if held.get(..msg.len()) == Some(&msg[..]) {
                self.device_window.write(offset, &[0xff; SLOT_BYTES]);
            }
        }
    }

    /// The device PINGs the `ping` and `ping-burst` faults put on the device queue, and the
    /// echoes that came back.
    pub fn pings(&self) -> (u32, u32) {
        self.faults.pings()
    }

    /// How the driver answered the last `ping-burst`: the PINGs that went out, their echoes,
    /// and the doorbells it rang meanwhile ([`Faults::burst`]).
    pub fn burst(&self) -> Option<BurstAnswer> {
        self.faults.burst()
    }

    /// The bus and its devices.
    pub fn bus_mut(&mut self) -> &mut FifoBus {
        &mut self.bus
    }

    /// Takes over both queues with the indexes found in shared memory.
    fn adopt(&mut self) {
        self.restore_tail();
        match self.rx.adopt().and_then(|()| self.tx.adopt()) {
            Ok(()) => {
                if self.broken {
                    info!("FIFO {}: queues adopted again", self.index);
                }
                self.broken = false;
            }
            Err(e) => self.fail(e),
        }
    }

    /// The guest corrupted a queue: stop until the next doorbell.
    fn fail(&mut self, e: QueueError) {
        if !self.broken {
            warn!(
                "FIFO {}: queue error {e:?}: stopped until the next doorbell",
                self.index
            );
        } else {
            debug!("FIFO {}: still broken: {e:?}", self.index);
        }
        self.broken = true;
        self.rx.stop();
        self.tx.stop();
        self.clear_outbox();
    }

    /// Drops what waits for room in the device queue.
    fn clear_outbox(&mut self) {
        for msg in self.outbox.drain(..) {
            self.faults.lost(&msg);
        }
    }

    /// Resets every device and takes the queues over again; requests queued before the reset
    /// are dropped (they are not for the device after it; the device model answers them
    /// inside the doorbell write, so none is left there).
    pub fn reset(&mut self) {
        self.bus.reset();
        self.clear_outbox();
        self.adopt();
        match self.rx.discard() {
            Ok(0) => {}
            Ok(n) => info!(
                "FIFO {}: {n} requests from before the reset dropped",
                self.index
            ),
            Err(e) => self.fail(e),
        }
    }

    /// The driver rang the doorbell once: [`Fifo::doorbells`].
    pub fn doorbell(&mut self) -> Pass {
        self.doorbells(1)
    }

    /// The driver rang the doorbell `times` times since the last call (the worker wakes up
    /// once for several; the eventfd adds them up). They are counted first, for the figures of
    /// a ping burst ([`Fifo::burst`]): the echoes they announce are taken after them. Then
    /// queues stopped by a bad index are adopted again, and [`Fifo::work`].
    pub fn doorbells(&mut self, times: u64) -> Pass {
        self.faults.rung(times);
        if self.broken {
            self.adopt();
        }
        self.work()
    }

    /// Retries what a full device queue held back, then handles what waits in the driver
    /// queue, up to [`BATCH`] messages.
    pub fn work(&mut self) -> Pass {
        let mut pass = Pass {
            sent: self.flush(),
            more: false,
        };
        pass.more = self.drain(&mut pass.sent);
        self.overtake_tail();
        pass
    }

    /// The host side of device `n` has work (or a tick passed); returns whether it produced
    /// messages, and how many were put on the device queue.
    pub fn host_ready(&mut self, n: u16) -> (bool, u32) {
        let msgs = self
            .bus
            .device(n)
            .map(|dev| dev.host_ready())
            .unwrap_or_default();
        let produced = !msgs.is_empty();
        let mut sent = 0;
        self.send(msgs, None, &mut sent);
        self.overtake_tail();
        (produced, sent)
    }

    /// Handles driver messages, up to [`BATCH`]; returns whether there may be more to do.
    fn drain(&mut self, sent: &mut u32) -> bool {
        self.restore_tail();
        let len = self.mode.max_msg_size().min(SLOT_BYTES);
        for _ in 0..BATCH {
            if !self.outbox.is_empty() {
                // Strict mode, device queue full: leave requests where they are.
                return true;
            }
            if !self.faults.consuming(Instant::now()) {
                // Until the stop ends; then [`Fifo::timed`] reads on.
                self.unread = true;
                return false;
            }
            let mut slot = [0u8; SLOT_BYTES];
            match self.rx.pop(&mut slot) {
                Ok(true) => {}
                Ok(false) => return false,
                Err(e) => {
                    self.fail(e);
                    return false;
                }
            }
            let request = &slot[..len];
            if self.faults.intercept(request, Instant::now()) {
                continue;
            }
            match self.faults.answer(request) {
                Some(lie) => self.send(vec![lie], token_of(request), sent),
                None => self.answer(request, sent),
            }
        }
        true
    }

    /// tail-overtake, once the device is done with the driver queue for now: a tail
    /// [`OVERTAKE`] slots past the driver's head is published, the real one kept for
    /// [`Fifo::restore_tail`]. The device model reads its tail back from shared memory, so it
    /// would otherwise run every stale slot in between again.
    fn overtake_tail(&mut self) {
        if !std::mem::take(&mut self.overtake) || self.broken || self.real_tail.is_some() {
            return;
        }
        let head = self.driver_window.load_index(HEAD_OFFSET) % CAPACITY;
        self.real_tail = Some(self.driver_window.load_index(TAIL_OFFSET));
        self.driver_window
            .store_index(TAIL_OFFSET, (head + OVERTAKE) % CAPACITY);
    }

    /// Puts back the driver-queue tail a tail-overtake hid, before the queue is read.
    fn restore_tail(&mut self) {
        if let Some(tail) = self.real_tail.take() {
            self.driver_window.store_index(TAIL_OFFSET, tail);
        }
    }

    /// Moves the device queue's head by `shift` slots, staying in range, and makes the device
    /// produce from there as if it had got there itself (index-backwards, index-jitter).
    fn shift_head(&mut self, shift: i32, sent: &mut u32) {
        if self.broken || shift == 0 {
            return;
        }
        let head = self.device_window.load_index(HEAD_OFFSET) % CAPACITY;
        let tail = self.device_window.load_index(TAIL_OFFSET) % CAPACITY;
        let free = (tail + CAPACITY - head - 1) % CAPACITY;
        if shift > 0 && shift.unsigned_abs() > free {
            // It would reach the tail: the queue would look empty, not off by a slot.
            return;
        }
        let to = (i64::from(head) + i64::from(shift)).rem_euclid(i64::from(CAPACITY));
        self.device_window.store_index(HEAD_OFFSET, to as u32);
        match self.tx.adopt() {
            // The driver has to look again, even if no message went out with it.
            Ok(()) => *sent = (*sent).max(1),
            Err(e) => self.fail(e),
        }
    }

    /// Hands one driver message (at most a message's worth of its slot) to the bus and puts
    /// what it answers on the device queue, with the request's token as the token mode says.
    fn answer(&mut self, request: &[u8], sent: &mut u32) {
        let replies = self.bus.handle(request);
        self.send(replies, token_of(request), sent);
    }

    /// Puts messages on the device queue, answering the request with `request_token` (`None`
    /// for what the host side produced).
    fn send(&mut self, msgs: Vec<Vec<u8>>, request_token: Option<u16>, sent: &mut u32) {
        let mut corrupt = false;
        for mut msg in msgs {
            self.tokens.stamp(&mut msg, request_token);
            let now = Instant::now();
            let out = self.faults.apply(msg, now);
            corrupt |= out.corrupt_index;
            self.overtake |= out.overtake_tail;
            for msg in out.msgs {
                let kept = out.rewrite.map(|after| (msg.clone(), after));
                if !self.queue(msg, sent) {
                    continue;
                }
                if let Some((msg, after)) = kept {
                    // The slot just published: the one before the head.
                    let head = self.device_window.load_index(HEAD_OFFSET) % CAPACITY;
                    let slot = (head + CAPACITY - 1) % CAPACITY;
                    self.faults.rewrite_later(slot, msg, after, now);
                }
            }
            self.shift_head(out.head_shift, sent);
        }
        if corrupt {
            // After the pushes, which write the head too, and before the interrupt: past the
            // last slot, so the driver must stop reading this queue.
            self.device_window.store_index(HEAD_OFFSET, CAPACITY + 7);
            *sent += 1;
        }
    }

    /// Puts one message on the device queue, behind what waits for room; returns whether it
    /// is on the queue now.
    fn queue(&mut self, msg: Vec<u8>, sent: &mut u32) -> bool {
        if self.outbox.is_empty() {
            self.push(msg, sent)
        } else {
            self.outbox.push_back(msg);
            false
        }
    }

    /// Takes device `dev_num` off the bus (`present` false) or puts it back, and queues the
    /// EVENT_DEVICE that says so; returns how many messages went on the device queue, or
    /// `None` if there is no such device to take off or put back.
    pub fn plug(&mut self, dev_num: u16, present: bool) -> Option<u32> {
        let event = if present {
            self.bus.plug(dev_num)
        } else {
            self.bus.unplug(dev_num)
        }?;
        info!(
            "FIFO {}: device {dev_num} {}",
            self.index,
            if present { "added" } else { "removed" }
        );
        let mut sent = 0;
        self.send(vec![event], None, &mut sent);
        Some(sent)
    }

    /// The device side starts again, after [`Down`]: every device reset with its backend kept
    /// (a disk's image, a MAC address, a console's socket), the queues taken over as they are,
    /// what waits in the driver queue dropped (it was for the device side that stopped), and
    /// REMOVED then READY said for every device ([`FifoBus::restarted`]): a driver side that
    /// saw nothing of the stop replaces its devices. Returns the messages queued.
    pub fn restart(&mut self) -> u32 {
        self.reset();
        let events = self.bus.restarted();
        let mut sent = 0;
        self.send(events, None, &mut sent);
        info!("FIFO {}: device side started again", self.index);
        sent
    }

    /// A stopped device side whose bus still answers PING: takes everything from the driver
    /// queue, answers the PINGs, drops the rest. Returns the answers queued.
    pub fn answer_pings(&mut self) -> u32 {
        let mut sent = 0;
        let mut slot = [0u8; SLOT_BYTES];
        let len = self.mode.max_msg_size().min(SLOT_BYTES);
        loop {
            match self.rx.pop(&mut slot) {
                Ok(true) => {}
                Ok(false) => return sent,
                Err(e) => {
                    self.fail(e);
                    return sent;
                }
            }
            let request = &slot[..len];
            let ping = matches!(
                Frame::decode_lenient(request),
                Ok(Frame {
                    msg: Message::Ping { .. },
                    ..
                })
            );
            if ping {
                self.answer(request, &mut sent);
            }
        }
    }

    /// Retries what a full device queue held back; returns how many went out.
    pub fn flush(&mut self) -> u32 {
        let mut sent = 0;
        while let Some(msg) = self.outbox.pop_front() {
            let left = self.outbox.len();
            self.push(msg, &mut sent);
            if self.outbox.len() > left {
                // It went back to the front: still full.
                break;
            }
        }
        sent
    }

    /// Whether messages wait for room in the device queue.
    pub fn held_back(&self) -> bool {
        !self.outbox.is_empty()
    }

    /// Puts one message on the device queue now; returns whether it is there.
    fn push(&mut self, msg: Vec<u8>, sent: &mut u32) -> bool {
        match self.tx.push(&msg) {
            Ok(true) => {
                *sent += 1;
                return true;
            }
            Ok(false) => self.dropped += 1,
            Err(QueueError::Full) => match self.mode {
                Mode::Compat => {
                    self.dropped += 1;
                    debug!(
                        "FIFO {}: device queue full, message dropped ({} so far)",
                        self.index, self.dropped
                    );
                }
                Mode::Strict => {
                    self.outbox.push_front(msg);
                    return false;
                }
            },
            Err(QueueError::TooLong { len }) => {
                self.dropped += 1;
                debug!(
                    "FIFO {}: {len}-byte message does not fit a slot",
                    self.index
                );
            }
            Err(e) => self.fail(e),
        }
        self.faults.lost(&msg);
        false
    }
}

/// A running FIFO worker.
pub struct FifoHandle {
    index: usize,
    shared: Arc<FifoShared>,
    ctl: mpsc::Sender<Control>,
    thread: Option<JoinHandle<()>>,
}

impl FifoHandle {
    /// Starts a worker thread for `fifo`.
    pub fn spawn(fifo: Fifo) -> io::Result<Self> {
        let index = fifo.index;
        let shared = Arc::new(FifoShared::new()?);
        let (ctl, rx) = mpsc::channel();
        let worker = Worker {
            fifo,
            shared: shared.clone(),
            ctl: rx,
            muted: Vec::new(),
            down: None,
        };
        let thread = std::thread::Builder::new()
            .name(format!("fifo{index}"))
            .spawn(move || worker.run())?;
        Ok(Self {
            index,
            shared,
            ctl,
            thread: Some(thread),
        })
    }

    /// What the vfio-user side uses to reach the worker.
    pub fn shared(&self) -> &Arc<FifoShared> {
        &self.shared
    }

    fn send(&self, c: Control) -> bool {
        self.ctl.send(c).is_ok() && self.shared.control.write(1).is_ok()
    }

    /// Resets the FIFO's devices; waits up to `timeout` for the worker to do it.
    pub fn reset(&self, timeout: Duration) -> bool {
        let (ack, done) = mpsc::channel();
        self.send(Control::Reset(ack)) && done.recv_timeout(timeout).is_ok()
    }

    /// Takes device `dev_num` off the bus or puts it back (see [`Fifo::plug`]); `Some(false)`
    /// if there is no such device, `None` if the worker did not answer within `timeout`.
    pub fn plug(&self, dev_num: u16, present: bool, timeout: Duration) -> Option<bool> {
        let (ack, done) = mpsc::channel();
        if !self.send(Control::Plug(dev_num, present, ack)) {
            return None;
        }
        done.recv_timeout(timeout).ok()
    }

    /// Stops the device side (see [`Down`]).
    pub fn down(&self, down: Down) -> bool {
        self.send(Control::Down(down))
    }

    /// Starts a stopped device side again (see [`Fifo::restart`]); nothing if it runs.
    pub fn up(&self) -> bool {
        self.send(Control::Up)
    }

    /// Makes `faults` go wrong on the FIFO from now on.
    pub fn set_faults(&self, faults: Faults) -> bool {
        self.send(Control::Faults(faults))
    }

    /// Stops the worker and waits for it; `false` if it had panicked.
    pub fn stop(mut self) -> bool {
        self.send(Control::Stop);
        let clean = self.thread.take().is_none_or(|t| t.join().is_ok());
        if !clean {
            warn!("FIFO {}: worker panicked", self.index);
        }
        clean
    }
}

struct Worker {
    fifo: Fifo,
    shared: Arc<FifoShared>,
    ctl: mpsc::Receiver<Control>,
    /// Devices whose host fd was ready but gave nothing: left out of poll until the next
    /// doorbell or tick, so that a fd that stays readable cannot make the worker spin.
    muted: Vec<u16>,
    /// The device side is stopped: how, and until when.
    down: Option<(Down, Option<Instant>)>,
}

impl Worker {
    fn run(mut self) {
        let mut more = false;
        let mut last_tick = Instant::now();
        loop {
            if let Some((_, until)) = self.down {
                if !self.stay_down(until) {
                    return;
                }
                last_tick = Instant::now();
                continue;
            }
            let mut fds = vec![
                pollfd(self.shared.control.as_raw_fd()),
                pollfd(self.shared.doorbell.as_raw_fd()),
            ];
            let mut owners = Vec::new();
            for (n, dev) in self.fifo.bus_mut().devices_mut() {
                if dev.status() & DRIVER_OK == 0 || self.muted.contains(&n) {
                    continue;
                }
                if let Some(fd) = dev.backend().host_fd() {
                    fds.push(pollfd(fd));
                    owners.push(n);
                }
            }
            let mut wait = if self.fifo.held_back() {
                RETRY
            } else if more {
                Duration::ZERO
            } else {
                TICK.saturating_sub(last_tick.elapsed())
            };
            if let Some(due) = self.fifo.next_due() {
                wait = wait.min(due.saturating_duration_since(Instant::now()));
            }
            let nfds = fds.len() as libc::nfds_t;
            // SAFETY: `fds` is a live, initialised array of `nfds` pollfd structures.
            let r = unsafe { libc::poll(fds.as_mut_ptr(), nfds, wait.as_millis() as i32) };
            if r < 0 {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    warn!("FIFO {}: poll: {e}", self.fifo.index);
                    std::thread::sleep(RETRY);
                }
                continue;
            }
            // Before anything new goes on the device queue: what is overwritten now was
            // announced by the last interrupt.
            self.fifo.rewrite_slots();
            let mut sent = 0;
            if fds[0].revents != 0 {
                let _ = self.shared.control.read();
                if !self.control() {
                    return;
                }
                if self.down.is_some() {
                    // Stopped: not even what woke it up together with the command.
                    continue;
                }
            }
            let pass = if fds[1].revents != 0 {
                // The doorbells rung since the last read; nothing (EAGAIN) is none.
                let times = self.shared.doorbell.read().unwrap_or(0);
                self.muted.clear();
                self.fifo.doorbells(times)
            } else if more {
                self.fifo.work()
            } else {
                Pass {
                    sent: self.fifo.flush(),
                    more: false,
                }
            };
            sent += pass.sent;
            more = pass.more;
            for (pfd, n) in fds[2..].iter().zip(owners) {
                if pfd.revents != 0 {
                    let (produced, n_sent) = self.fifo.host_ready(n);
                    if !produced {
                        self.muted.push(n);
                    }
                    sent += n_sent;
                }
            }
            let tick = last_tick.elapsed() >= TICK;
            if tick {
                last_tick = Instant::now();
                self.muted.clear();
                let nums: Vec<u16> = self.fifo.bus_mut().devices_mut().map(|(n, _)| n).collect();
                for n in nums {
                    sent += self.fifo.host_ready(n).1;
                }
            }
            sent += self.fifo.timed(tick);
            if sent > 0 {
                self.shared.raise();
            }
            for _ in 0..self.fifo.storm() {
                self.shared.raise();
            }
        }
    }

    /// One wait of a stopped device side: only the control eventfd and the doorbell count
    /// (doorbells are taken, PINGs answered if the bus still answers them); at `until` it
    /// starts again (waits are at most a [`TICK`], so that any `until` is met). Returns
    /// `false` to stop the worker.
    fn stay_down(&mut self, until: Option<Instant>) -> bool {
        let mut fds = [
            pollfd(self.shared.control.as_raw_fd()),
            pollfd(self.shared.doorbell.as_raw_fd()),
        ];
        let wait = until.map_or(TICK, |t| {
            t.saturating_duration_since(Instant::now()).min(TICK)
        });
        // SAFETY: `fds` is a live, initialised array of two pollfd structures.
        let r = unsafe { libc::poll(fds.as_mut_ptr(), 2, wait.as_millis() as i32) };
        if r < 0 {
            std::thread::sleep(RETRY);
            return true;
        }
        if fds[0].revents != 0 {
            let _ = self.shared.control.read();
            if !self.control() {
                return false;
            }
        }
        // As the control messages left it: a doorbell that came with an `up` is the running
        // worker's, which finds it still pending.
        let Some((down, _)) = self.down else {
            return true;
        };
        if fds[1].revents != 0 {
            let _ = self.shared.doorbell.read();
            if down.pings && self.fifo.answer_pings() > 0 {
                self.shared.raise();
            }
        }
        // As the control messages left it.
        if let Some((_, Some(until))) = self.down {
            if Instant::now() >= until {
                self.start_again();
            }
        }
        true
    }

    /// The stopped device side starts again (see [`Fifo::restart`]).
    fn start_again(&mut self) {
        self.down = None;
        self.muted.clear();
        if self.fifo.restart() > 0 {
            self.shared.raise();
        }
    }

    /// Handles control messages; returns `false` to stop.
    fn control(&mut self) -> bool {
        loop {
            match self.ctl.try_recv() {
                Ok(Control::Stop) | Err(mpsc::TryRecvError::Disconnected) => {
                    let (pings, echoes) = self.fifo.pings();
                    if pings > 0 {
                        info!(
                            "FIFO {}: device PINGs sent {pings}, echoed {echoes}",
                            self.fifo.index
                        );
                    }
                    self.log_burst();
                    return false;
                }
                Ok(Control::Faults(faults)) => self.fifo.set_faults(faults),
                Ok(Control::Plug(dev_num, present, ack)) => {
                    let done = self.fifo.plug(dev_num, present);
                    if done.is_some_and(|sent| sent > 0) {
                        self.shared.raise();
                    }
                    self.muted.retain(|&n| n != dev_num);
                    let _ = ack.send(done.is_some());
                }
                Ok(Control::Down(down)) => {
                    info!("FIFO {}: device side stopped ({down:?})", self.fifo.index);
                    // A time too far to tell is no time: down until told.
                    let until = down
                        .for_ms
                        .and_then(|ms| Instant::now().checked_add(Duration::from_millis(ms)));
                    self.down = Some((down, until));
                }
                Ok(Control::Up) => {
                    if self.down.is_some() {
                        self.start_again();
                    }
                }
                Ok(Control::Reset(ack)) => {
                    self.fifo.reset();
                    self.muted.clear();
                    let _ = ack.send(());
                }
                Err(mpsc::TryRecvError::Empty) => return true,
            }
        }
    }

    /// How the driver answered a ping burst, for host/faults.sh: one doorbell per echo, or
    /// one per batch of them.
    fn log_burst(&self) {
        if let Some(b) = self.fifo.burst() {
            info!(
                "FIFO {}: PING burst of {}: {} echoed with {} doorbells",
                self.fifo.index, b.sent, b.echoed, b.doorbells
            );
        }
    }
}

/// The token of a driver message.
fn token_of(request: &[u8]) -> Option<u16> {
    request.get(4..6).map(|t| u16::from_le_bytes([t[0], t[1]]))
}

fn pollfd(fd: i32) -> libc::pollfd {
    libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }
}
