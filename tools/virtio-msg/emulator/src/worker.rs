// SPDX-License-Identifier: GPL-2.0 OR MIT

//! One thread per FIFO: moves messages between the FIFO's SPSC queues and its [`FifoBus`].
//!
//! The vfio-user message loop must stay responsive (QEMU waits for it on every trapped
//! access), so a doorbell only signals the FIFO's eventfd and the worker does the work. The
//! worker waits in poll(2) on: a control eventfd (reset, stop), the doorbell, and the host side
//! of every attached backend (a tap device, a console socket). It owns the bus and both queue
//! ends; what it puts on the device queue in one wake-up is announced with a single MSI-X
//! interrupt.
//!
//! The guest owns half of each queue and is not trusted: a queue index that makes no sense
//! stops the FIFO (logged once) until the next doorbell adopts the indexes again; nothing here
//! panics on what the guest wrote.

use crate::shm::{QueueWindow, SharedMem, DEVICE_QUEUE, DRIVER_QUEUE};
use log::{debug, info, warn};
use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use virtio_msg_device::{bus::FifoBus, Mode};
use virtio_msg_spsc::{Consumer, Producer, QueueError, CAPACITY, SLOT_BYTES};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// How often every backend's host side is looked at even without a readable fd.
pub const TICK: Duration = Duration::from_millis(100);
/// Retry interval while a full device queue holds messages back (strict mode).
const RETRY: Duration = Duration::from_millis(10);
/// Driver-queue messages handled per wake-up before other sources get a turn.
const BATCH: u32 = 4 * CAPACITY;
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

    /// The driver wrote the FIFO's NOTIFY register.
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

enum Control {
    /// Reset every device and adopt the queue indexes again; answer on the channel.
    Reset(mpsc::Sender<()>),
    Stop,
}

/// A running FIFO worker.
pub struct FifoHandle {
    index: usize,
    shared: Arc<FifoShared>,
    ctl: mpsc::Sender<Control>,
    thread: Option<JoinHandle<()>>,
}

impl FifoHandle {
    /// Starts the worker of FIFO `index` over `bus`, with the queues in `mem`.
    pub fn spawn(index: usize, bus: FifoBus, mode: Mode, mem: Arc<SharedMem>) -> io::Result<Self> {
        let invalid = || io::Error::new(io::ErrorKind::InvalidInput, "FIFO outside BAR1");
        let driver = QueueWindow::new(mem.clone(), index, DRIVER_QUEUE).ok_or_else(invalid)?;
        let device = QueueWindow::new(mem, index, DEVICE_QUEUE).ok_or_else(invalid)?;
        let shared = Arc::new(FifoShared::new()?);
        let (ctl, rx) = mpsc::channel();
        let mut worker = Worker {
            index,
            mode,
            bus,
            driver,
            device,
            rx: None,
            tx: None,
            broken: false,
            outbox: VecDeque::new(),
            dropped: 0,
            shared: shared.clone(),
            ctl: rx,
            muted: Vec::new(),
        };
        worker.adopt();
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
    index: usize,
    mode: Mode,
    bus: FifoBus,
    driver: QueueWindow,
    device: QueueWindow,
    /// Driver queue (we consume), device queue (we produce); `None` while broken.
    rx: Option<Consumer<QueueWindow>>,
    tx: Option<Producer<QueueWindow>>,
    /// A queue index was corrupt; reported once, until the queues are adopted again.
    broken: bool,
    /// Strict mode: messages waiting for room in the device queue.
    outbox: VecDeque<Vec<u8>>,
    /// Compat mode: messages dropped because the device queue was full.
    dropped: u64,
    shared: Arc<FifoShared>,
    ctl: mpsc::Receiver<Control>,
    /// Devices whose host fd was ready but gave nothing: left out of poll until the next
    /// doorbell or tick, so that a fd that stays readable cannot make the worker spin.
    muted: Vec<u16>,
}

/// Outcome of one wake-up.
#[derive(Default)]
struct Batch {
    /// Messages put on the device queue.
    sent: u32,
}

impl Worker {
    /// Takes over both queues with the indexes found in shared memory.
    fn adopt(&mut self) {
        match (
            Consumer::adopt(self.driver.clone()),
            Producer::adopt(self.device.clone()),
        ) {
            (Ok(rx), Ok(tx)) => {
                if self.broken {
                    info!("FIFO {}: queues adopted again", self.index);
                }
                self.rx = Some(rx);
                self.tx = Some(tx);
                self.broken = false;
            }
            (Err(e), _) | (_, Err(e)) => self.fail(e),
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
        self.rx = None;
        self.tx = None;
        self.outbox.clear();
    }

    fn run(mut self) {
        let mut more = false;
        let mut last_tick = Instant::now();
        loop {
            let mut fds = vec![
                pollfd(self.shared.control.as_raw_fd()),
                pollfd(self.shared.doorbell.as_raw_fd()),
            ];
            let mut owners = Vec::new();
            for (n, dev) in self.bus.devices_mut() {
                if dev.status() & DRIVER_OK == 0 || self.muted.contains(&n) {
                    continue;
                }
                if let Some(fd) = dev.backend().host_fd() {
                    fds.push(pollfd(fd));
                    owners.push(n);
                }
            }
            let wait = if !self.outbox.is_empty() {
                RETRY
            } else if more {
                Duration::ZERO
            } else {
                TICK.saturating_sub(last_tick.elapsed())
            };
            let nfds = fds.len() as libc::nfds_t;
            // SAFETY: `fds` is a live, initialised array of `nfds` pollfd structures.
            let r = unsafe { libc::poll(fds.as_mut_ptr(), nfds, wait.as_millis() as i32) };
            if r < 0 {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    warn!("FIFO {}: poll: {e}", self.index);
                    std::thread::sleep(RETRY);
                }
                continue;
            }
            let mut batch = Batch::default();
            if fds[0].revents != 0 {
                let _ = self.shared.control.read();
                if !self.control() {
                    return;
                }
            }
            let rung = fds[1].revents != 0;
            if rung {
                let _ = self.shared.doorbell.read();
                self.muted.clear();
                if self.broken {
                    self.adopt();
                }
            }
            self.flush(&mut batch);
            if rung || more {
                more = self.drain(&mut batch);
            }
            for (pfd, n) in fds[2..].iter().zip(owners) {
                if pfd.revents != 0 {
                    let msgs = self.host_ready(n);
                    if msgs.is_empty() {
                        self.muted.push(n);
                    }
                    self.send(msgs, &mut batch);
                }
            }
            if last_tick.elapsed() >= TICK {
                last_tick = Instant::now();
                self.muted.clear();
                let nums: Vec<u16> = self.bus.devices_mut().map(|(n, _)| n).collect();
                for n in nums {
                    let msgs = self.host_ready(n);
                    self.send(msgs, &mut batch);
                }
            }
            if batch.sent > 0 {
                self.shared.raise();
            }
        }
    }

    /// Handles control messages; returns `false` to stop.
    fn control(&mut self) -> bool {
        loop {
            match self.ctl.try_recv() {
                Ok(Control::Stop) | Err(mpsc::TryRecvError::Disconnected) => return false,
                Ok(Control::Reset(ack)) => {
                    self.bus.reset();
                    self.outbox.clear();
                    self.muted.clear();
                    self.adopt();
                    // Requests queued before the reset are not for the device after it (the
                    // device model answers them inside the doorbell write, so none is left).
                    if let Some(Ok(n)) = self.rx.as_mut().map(|rx| rx.discard()) {
                        if n > 0 {
                            info!(
                                "FIFO {}: {n} requests from before the reset dropped",
                                self.index
                            );
                        }
                    }
                    let _ = ack.send(());
                }
                Err(mpsc::TryRecvError::Empty) => return true,
            }
        }
    }

    fn host_ready(&mut self, n: u16) -> Vec<Vec<u8>> {
        self.bus
            .device(n)
            .map(|dev| dev.host_ready())
            .unwrap_or_default()
    }

    /// Handles what waits in the driver queue, up to [`BATCH`] messages; returns whether there
    /// may be more to do.
    fn drain(&mut self, batch: &mut Batch) -> bool {
        let len = self.mode.max_msg_size().min(SLOT_BYTES);
        for _ in 0..BATCH {
            if !self.outbox.is_empty() {
                // Strict mode, device queue full: leave requests where they are.
                return true;
            }
            let Some(rx) = self.rx.as_mut() else {
                return false;
            };
            let mut slot = [0u8; SLOT_BYTES];
            match rx.pop(&mut slot) {
                Ok(true) => {}
                Ok(false) => return false,
                Err(e) => {
                    self.fail(e);
                    return false;
                }
            }
            let replies = self.bus.handle(&slot[..len]);
            self.send(replies, batch);
        }
        true
    }

    /// Puts messages on the device queue.
    fn send(&mut self, msgs: Vec<Vec<u8>>, batch: &mut Batch) {
        for msg in msgs {
            if !self.outbox.is_empty() {
                self.outbox.push_back(msg);
                continue;
            }
            self.push(msg, batch);
        }
    }

    /// Retries what a full device queue held back.
    fn flush(&mut self, batch: &mut Batch) {
        while let Some(msg) = self.outbox.pop_front() {
            let left = self.outbox.len();
            self.push(msg, batch);
            if self.outbox.len() > left {
                // It went back to the front: still full.
                return;
            }
        }
    }

    fn push(&mut self, msg: Vec<u8>, batch: &mut Batch) {
        let Some(tx) = self.tx.as_mut() else {
            self.dropped += 1;
            return;
        };
        match tx.push(&msg) {
            Ok(()) => batch.sent += 1,
            Err(QueueError::Full) => match self.mode {
                Mode::Compat => {
                    self.dropped += 1;
                    debug!(
                        "FIFO {}: device queue full, message dropped ({} so far)",
                        self.index, self.dropped
                    );
                }
                Mode::Strict => self.outbox.push_front(msg),
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
    }
}

fn pollfd(fd: i32) -> libc::pollfd {
    libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }
}
