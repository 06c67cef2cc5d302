// SPDX-License-Identifier: GPL-2.0

//! One virtio-msg device: every virtio transport operation as messages.
//!
//! - probe: GET_DEVICE_INFO, first, before the device is registered;
//! - features: GET_DEVICE_FEATURES / SET_DRIVER_FEATURES, in as many 32-bit blocks as fit a
//!   message;
//! - status: SET_DEVICE_STATUS; its response is the status from then on (FEATURES_OK may be
//!   refused);
//! - reset: SET_DEVICE_STATUS 0, then GET_DEVICE_STATUS until the device reads 0;
//! - configuration: GET_CONFIG / SET_CONFIG in chunks that fit a message, never past
//!   `config_size`;
//! - queues: GET_VQUEUE (size limit) then SET_VQUEUE, only once FEATURES_OK was confirmed;
//! - queue reset: RESET_VQUEUE, then SET_VQUEUE again (with VIRTIO_F_RING_RESET);
//! - kick: EVENT_AVAIL, sent at once from atomic context, or by a work item if the bus is full;
//! - interrupts: EVENT_USED runs the queue's callback, EVENT_CONFIG reports a change, both in
//!   the bus's interrupt handler.
//!
//! The status and the configuration generation are cached from the device's answers and
//! events, so reading them costs no message.
//!
//! # Configuration read-ahead while the driver probes
//!
//! Drivers read their configuration space field by field while they probe (virtio-blk asks
//! for a dozen fields of a few bytes each). Until DRIVER_OK, a read that misses asks the device
//! for as much as one GET_CONFIG carries from that offset on, and the next reads that fall in
//! that window are answered from it. The window is only used while it is certainly current:
//! same generation, no EVENT_CONFIG since it was read (QEMU's device model changes its
//! configuration without bumping the generation, but not without the event), no SET_CONFIG or
//! reset since; and never after DRIVER_OK, when the device may change its configuration under
//! a running driver. Nothing is cached across generations or across events.

use kernel::{
    alloc::KVec,
    impl_has_work,
    interrupt::LocalInterruptDisabled,
    io::poll::read_poll_timeout,
    new_mutex, new_work,
    prelude::*,
    sync::{
        atomic::{Atomic, Relaxed},
        rcu::{self, RcuPointer},
        Arc, Mutex,
    },
    time::{delay::fsleep, Delta, Instant, Monotonic},
    virtio::{
        as_interrupt, feature, status,
        transport::{Device, Handle, NotificationData, QueueConfig, ShmRegion, Transport},
        Features,
    },
    workqueue::{self, Work, WorkItem},
};

use crate::{
    bus::BusHandle,
    ratelimit::{RateLimit, Suppressed},
    request::{Failure, Policy, Requester, ESSENTIAL_ATTEMPTS},
    stats::Dropped,
    wire::{self, AvailNext, DeviceInfo, Frame, Header, Kind, Message, VqueueConfig, Words},
};

/// Bytes of an encoded EVENT_AVAIL.
const KICK_BYTES: usize = wire::HEADER_SIZE + 8;
/// Largest configuration space accepted from a device (the virtio PCI limit is 4 KiB).
const MAX_CONFIG_SIZE: u32 = 4096;
/// Largest number of queues accepted from a device (virtio queue indexes are 16 bits).
const MAX_QUEUES: u32 = 65535;
/// Largest virtqueue created (the split ring limit).
const MAX_QUEUE_SIZE: u32 = 32768;
/// SET_CONFIG attempts before giving up on a device whose generation keeps moving.
const SET_CONFIG_ATTEMPTS: usize = 4;
/// Multi-chunk GET_CONFIG attempts before accepting a read across generations.
const GET_CONFIG_ATTEMPTS: usize = 4;
/// Changes of the generation in a row (GET_CONFIG answers or EVENT_CONFIG messages that bring
/// a new one) that the driver is told about. The virtio core reads a field again for as long as
/// the generation changed meanwhile (`__virtio_cread_many()`), holding the device; a device
/// that changes it on every read, in its answers or by an event before each, would keep it
/// there for ever. Past this many, the generation the driver sees stays put (and a warning
/// says why) until the device settles: two GET_CONFIG answers in a row with the same
/// generation and no EVENT_CONFIG between them.
const GENERATION_CHURN_LIMIT: u32 = 8;

/// The status the driver is shown when it wrote `written` and the device reports `reported`:
/// the bits the driver wrote that the device kept, and NEEDS_RESET while DRIVER_OK.
fn driver_visible_status(written: u32, reported: u32) -> u32 {
    let needs_reset = u32::from(status::NEEDS_RESET);
    let mut visible = written & reported & !needs_reset;
    if visible & u32::from(status::DRIVER_OK) != 0 {
        visible |= reported & needs_reset;
    }
    visible
}
/// How often, and how long, GET_DEVICE_STATUS is asked after a reset the device did not
/// complete at once.
const RESET_POLL_EVERY: Delta = Delta::from_millis(10);
const RESET_POLL_FOR: Delta = Delta::from_millis(200);

/// What a device is before GET_DEVICE_INFO answered.
const NO_INFO: DeviceInfo = DeviceInfo {
    device_id: 0,
    vendor_id: 0,
    num_feature_bits: 0,
    config_size: 0,
    max_virtqueues: 0,
    admin_vq_start: 0,
    admin_vq_count: 0,
};

/// Queues beyond this index cannot be used (their kicks have no slot).
const MAX_KICKED_QUEUES: u32 = 1024;
/// How long the kick work waits before it tries again a kick the bus had no room for.
const KICK_RETRY: Delta = Delta::from_millis(1);
/// Largest configuration read-ahead window.
const MAX_CONFIG_WINDOW: usize = 256;

/// Configuration bytes read ahead while the driver probes (see the module documentation).
struct ConfigWindow {
    /// Whether `data` may answer reads.
    valid: bool,
    offset: u32,
    data: KVec<u8>,
    generation: u32,
    /// `MsgDevice::config_changes` when the window was read.
    changes: u32,
}

/// The kick state of one queue, touched from atomic context (even hard interrupts): atomics
/// only, no lock.
struct Kick {
    /// A kick could not be sent at once and waits for the kick work.
    pending: Atomic<bool>,
    /// The notification data of the latest kick.
    data: Atomic<u32>,
}

/// What the bus's clock saw at its last look at a device (see [`MsgDevice::tick`]).
struct Liveness {
    /// EVENT_USED received by then.
    events: u32,
    /// Kicks sent by then.
    kicks: u32,
    /// Kicks the device is known to have been alive after: something was announced after
    /// them, or it answered a liveness check.
    answered: u32,
    /// How long the kicks after `answered` have waited with nothing announced.
    waited_ms: u32,
}

/// The state of one device, shared by its transport, its route on the bus and its kick work.
#[pin_data]
pub(crate) struct MsgDevice {
    bus: Arc<BusHandle>,
    dev_num: u16,
    info: DeviceInfo,
    #[pin]
    req: Requester,
    /// The status the device last reported.
    status: Atomic<u32>,
    /// The configuration generation the device last reported.
    generation: Atomic<u32>,
    /// Changes of the generation since the device last settled (saturating), the latest
    /// GET_CONFIG answer's generation, and whether an EVENT_CONFIG came since that answer
    /// (see [`GENERATION_CHURN_LIMIT`]).
    generation_churn: Atomic<u32>,
    last_answered_generation: Atomic<u32>,
    event_since_answer: Atomic<bool>,
    /// EVENT_CONFIG messages received, SET_CONFIG requests and resets sent: each one outdates
    /// the configuration window.
    config_changes: Atomic<u32>,
    #[pin]
    config_window: Mutex<ConfigWindow>,
    /// Set once the device is allocated; cleared when it goes away (breaks the reference cycle
    /// device -> handle -> transport -> device). Borrowed under RCU while an interrupt of the
    /// device runs.
    handle: RcuPointer<KBox<Handle<MsgTransport>>>,
    /// Broken in a way a reset may cure (a timeout), or asked for a reset (DEVICE_NEEDS_RESET):
    /// the bus's recovery removes and probes it again (see `bus.rs`).
    recover: Atomic<bool>,
    /// By queue index.
    kicks: KVec<Kick>,
    /// Sends the kicks that found the bus full (see [`MsgDevice::send_kicks`]).
    #[pin]
    deferred: Work<MsgDevice>,
    /// EVENT_USED messages received, and kicks sent.
    used_events: Atomic<u32>,
    kick_count: Atomic<u32>,
    /// Only the bus's clock takes it.
    #[pin]
    liveness: Mutex<Liveness>,
    /// The configuration space as last read or written whole and consistent: what a read
    /// that fails gives the driver (see [`MsgDevice::get_config`]).
    #[pin]
    config_shadow: Mutex<KVec<u8>>,
    /// For the warnings the device can cause at will.
    warnings: RateLimit,
}

impl_has_work! {
    impl HasWork<Self> for MsgDevice { self.deferred }
}

impl WorkItem for MsgDevice {
    type Pointer = Arc<MsgDevice>;

    fn run(this: Arc<MsgDevice>) {
        this.send_kicks();
    }
}

impl MsgDevice {
    fn new(bus: Arc<BusHandle>, dev_num: u16, info: DeviceInfo) -> Result<Arc<Self>> {
        let (max_msg_size, timeout_ms) = (bus.max_msg_size(), bus.timeout_ms());
        let window = wire::max_config_chunk(max_msg_size).min(MAX_CONFIG_WINDOW);
        let window = ConfigWindow {
            valid: false,
            offset: 0,
            data: KVec::with_capacity(window, GFP_KERNEL)?,
            generation: 0,
            changes: 0,
        };
        let mut shadow = KVec::new();
        shadow.resize(info.config_size as usize, 0, GFP_KERNEL)?;
        let queues = info.max_virtqueues.min(MAX_KICKED_QUEUES) as usize;
        let mut kicks = KVec::with_capacity(queues, GFP_KERNEL)?;
        for _ in 0..queues {
            kicks.push(
                Kick {
                    pending: Atomic::new(false),
                    data: Atomic::new(0),
                },
                GFP_KERNEL,
            )?;
        }
        Arc::pin_init(
            try_pin_init!(Self {
                req <- Requester::new(max_msg_size, timeout_ms),
                bus,
                dev_num,
                info,
                status: Atomic::new(0),
                generation: Atomic::new(0),
                generation_churn: Atomic::new(0),
                last_answered_generation: Atomic::new(0),
                event_since_answer: Atomic::new(false),
                config_changes: Atomic::new(0),
                config_window <- new_mutex!(window),
                handle: RcuPointer::new(None),
                recover: Atomic::new(false),
                kicks,
                deferred <- new_work!("virtio_msg::MsgDevice::deferred"),
                used_events: Atomic::new(0),
                kick_count: Atomic::new(0),
                liveness <- new_mutex!(Liveness {
                    events: 0,
                    kicks: 0,
                    answered: 0,
                    waited_ms: 0,
                }),
                config_shadow <- new_mutex!(shadow),
                warnings: RateLimit::new(),
            }),
            GFP_KERNEL,
        )
    }

    /// Asks device `dev_num` what it is (GET_DEVICE_INFO, its first message) and checks the
    /// answer.
    pub(crate) fn probe(bus: Arc<BusHandle>, dev_num: u16) -> Result<Arc<Self>> {
        // A device object that only knows its number, to carry the request: the route must
        // exist before the request, its response comes back through it.
        let asking = Self::new(bus.clone(), dev_num, NO_INFO)?;
        bus.add_route(dev_num, asking.clone())?;
        let info = asking.request(Message::GetDeviceInfo, Policy::Essential, |m| match *m {
            Message::DeviceInfo(i) => Some(i),
            _ => None,
        });
        bus.remove_route(dev_num);
        let info = info?;
        let d = bus.dev();
        if info.device_id == 0 {
            dev_info!(d, "device {dev_num}: device id 0 (no device), ignored\n");
            return Err(ENODEV);
        }
        if info.num_feature_bits % 32 != 0 {
            dev_warn!(
                d,
                "device {dev_num}: {} feature bits, not a multiple of 32\n",
                info.num_feature_bits
            );
        }
        if info.config_size > MAX_CONFIG_SIZE || info.max_virtqueues > MAX_QUEUES {
            dev_err!(
                d,
                "device {dev_num}: config size {} or queue count {} out of range\n",
                info.config_size,
                info.max_virtqueues
            );
            return Err(EINVAL);
        }
        Self::new(bus, dev_num, info)
    }

    /// The status the device last reported (for tests).
    #[cfg(CONFIG_VIRTIO_MSG_KUNIT_TEST)]
    pub(crate) fn cached_status(&self) -> u32 {
        self.status.load(Relaxed)
    }

    /// The generation the driver sees (for tests).
    #[cfg(CONFIG_VIRTIO_MSG_KUNIT_TEST)]
    pub(crate) fn cached_generation(&self) -> u32 {
        self.generation.load(Relaxed)
    }

    /// The token of the latest request (for tests).
    #[cfg(CONFIG_VIRTIO_MSG_KUNIT_TEST)]
    pub(crate) fn last_token(&self) -> u16 {
        self.req.last_token()
    }

    /// Whether the next request waits for a barrier first (for tests).
    #[cfg(CONFIG_VIRTIO_MSG_KUNIT_TEST)]
    pub(crate) fn out_of_step(&self) -> bool {
        self.req.out_of_step()
    }

    pub(crate) fn info(&self) -> &DeviceInfo {
        &self.info
    }

    pub(crate) fn dev_num(&self) -> u16 {
        self.dev_num
    }

    /// Sets the device's virtio device, which had none.
    pub(crate) fn set_handle(&self, handle: Handle<MsgTransport>) -> Result {
        // Nothing was there: no grace period to wait for.
        drop(self.handle.replace(Some(KBox::new(handle, GFP_KERNEL)?)));
        Ok(())
    }

    /// Lets go of the device's virtio device; on return, no interrupt of the device uses it.
    /// Process context.
    pub(crate) fn clear_handle(&self) {
        // Outside the read side: it may be the last reference to the virtio device.
        drop(self.handle.replace(None));
    }

    fn handle(&self) -> Option<Handle<MsgTransport>> {
        self.handle.get(&rcu::read_lock()).cloned()
    }

    /// The bus said the device is gone: no message goes to it any more, and it fails as
    /// [`Device::fail`] says.
    pub(crate) fn gone(&self) {
        self.req.set_gone();
        self.fail();
    }

    /// The device cannot be used any more (its bus lost it, or it stopped taking messages):
    /// requests fail at once from now on, and its virtqueues are broken.
    pub(crate) fn fail(&self) {
        if self.req.set_broken() {
            self.bus.stats().broken();
        }
        if let Some(h) = self.handle() {
            h.break_device();
        }
    }

    /// Stops the device before the bus removes it to recover it: one that still answers
    /// (it asked for a reset) is reset first, so that it no longer writes its rings, then its
    /// queues are broken. In that order: a broken queue returns no buffer, and a device that
    /// keeps completing buffers on it can keep a stock driver looping on work it never gets
    /// (virtio-net's TX clean-up, before `virtqueue_enable_cb_delayed()` knew broken queues).
    pub(crate) fn stop(&self) {
        if !self.req.is_broken() {
            // Best effort: a device that does not answer is broken below all the same.
            let _ = self.request(
                Message::SetDeviceStatus { status: 0 },
                Policy::BestEffort,
                |m| matches!(m, Message::DeviceStatusSet { .. }).then_some(()),
            );
        }
        self.fail();
    }

    /// Breaks the device, if it was not broken yet, and has it recovered.
    fn break_and_recover(&self) {
        if self.req.set_broken() {
            self.bus.stats().broken();
        }
        if let Some(h) = self.handle() {
            h.break_device();
        }
        self.needs_recovery();
    }

    /// Has the bus remove the (broken) device and probe it again.
    fn needs_recovery(&self) {
        self.recover.store(true, Relaxed);
        self.bus.request_recovery();
    }

    /// Whether the device waits to be recovered.
    pub(crate) fn wants_recovery(&self) -> bool {
        self.recover.load(Relaxed)
    }

    /// Whether the device is broken (for tests).
    #[cfg(CONFIG_VIRTIO_MSG_KUNIT_TEST)]
    pub(crate) fn is_broken(&self) -> bool {
        self.req.is_broken()
    }

    /// Waits until no kick work is queued or running.
    pub(crate) fn flush_kicks(&self) {
        self.deferred.flush();
    }

    /// Waits until no work of the device is queued or running. Called once its queues and
    /// handle are gone, so no new kick can come.
    pub(crate) fn stop_work(&self) {
        self.flush_kicks();
    }

    /// Runs the callbacks of the queues that have used buffers: their EVENT_USED may have
    /// been lost (see [`Receiver::messages_lost`](kernel::virtio::msg::Receiver)). Returns how
    /// many queues had some, and counts them.
    pub(crate) fn poll_queues(&self, irq: &LocalInterruptDisabled) -> u32 {
        let guard = rcu::read_lock();
        let found = self.handle.get(&guard).map_or(0, |h| h.poll_queues(irq));
        if found > 0 {
            self.bus.stats().lost_events(found);
        }
        found
    }

    /// One period of the bus's clock (see [`Receiver::tick`](kernel::virtio::msg::Receiver)):
    /// looks at the device once.
    ///
    /// - **Lost notifications.** Used buffers whose EVENT_USED never came (a device that
    ///   loses them other than by a full queue, which the bus reports at once) are found and
    ///   their callbacks run: the stock drivers wait for a buffer without a timeout
    ///   (virtio-rng, virtio-blk).
    /// - **Dead devices.** A device that takes buffers and never returns them cannot be told
    ///   from a slow one by its queues, and no request is pending to time out. So once kicks
    ///   have waited twice the timeout with nothing announced, the device is asked for its
    ///   status: one that answers is alive (slow, or holding buffers for data to come, as a
    ///   network device's receive queue does) and those kicks are not asked about again; one
    ///   that does not is broken and recovered like any device that stops answering.
    ///
    /// A device that announced something since the previous look was alive after the kicks
    /// made before that look. An idle device costs a look at its queues per period, no
    /// message.
    pub(crate) fn tick(&self, period_ms: u32) {
        if self.req.is_broken() {
            return;
        }
        let kicks = self.kick_count.load(Relaxed);
        let found = as_interrupt(|irq| self.poll_queues(irq));
        let events = self.used_events.load(Relaxed);
        let mut l = self.liveness.lock();
        let before = core::mem::replace(&mut l.kicks, kicks);
        if found > 0 || events != l.events {
            l.events = events;
            l.answered = before;
            l.waited_ms = 0;
            return;
        }
        if l.answered == kicks {
            return;
        }
        l.waited_ms = l.waited_ms.saturating_add(period_ms);
        if l.waited_ms < 2 * self.bus.timeout_ms() {
            return;
        }
        l.answered = kicks;
        l.waited_ms = 0;
        drop(l);
        self.bus.stats().liveness_check();
        // Failing breaks the device and has it recovered (see `request`).
        let _ = self.request(Message::GetDeviceStatus, Policy::Essential, |m| match *m {
            Message::DeviceStatus { status } => Some(status),
            _ => None,
        });
    }

    /// Sends `msg` and waits for its response. An essential request is tried up to
    /// [`ESSENTIAL_ATTEMPTS`] times; if it still gets no answer, or cannot be sent, the device
    /// is broken (once, with a message) and recovered (see [`MsgDevice::needs_recovery`]):
    /// nothing goes on with a made-up value.
    fn request<R>(
        &self,
        msg: Message<'_>,
        policy: Policy,
        mut parse: impl FnMut(&Message<'_>) -> Option<R>,
    ) -> Result<R, Failure> {
        let attempts = if policy == Policy::Essential {
            ESSENTIAL_ATTEMPTS
        } else {
            1
        };
        let mut attempt = 1;
        let result = loop {
            let result = self
                .req
                .request(&*self.bus, self.dev_num, msg, policy, &mut parse);
            let again = match result {
                Err(Failure::Timeout) => {
                    self.bus.stats().timeout();
                    // The attempts are the device's, not the caller's (see
                    // `Requester::request`): none left, it is broken below.
                    !self.req.silent()
                }
                Err(Failure::Send(e)) => e == EBUSY,
                // An answer that decodes but makes no sense (another offset, length or
                // size than asked for): asked again; a device that keeps answering so is
                // broken below, as `virtio_ring` breaks a device that corrupts its ring.
                Err(Failure::BadResponse) => true,
                _ => false,
            };
            if !again || attempt == attempts {
                break result;
            }
            self.bus.stats().retry();
            attempt += 1;
        };
        match result {
            Err(failure @ (Failure::Timeout | Failure::Send(_) | Failure::BadResponse))
                if policy == Policy::Essential =>
            {
                if self.req.set_broken() {
                    self.bus.stats().broken();
                    let (dev_num, id) = (self.dev_num, msg.id().2);
                    let why = match failure {
                        Failure::Send(e) => e,
                        _ => ETIMEDOUT,
                    };
                    if failure == Failure::BadResponse {
                        dev_err!(
                            self.bus.dev(),
                            "device {dev_num}: message {id:#04x} answered with nonsense {attempt} times, device marked broken\n"
                        );
                    } else {
                        dev_err!(
                            self.bus.dev(),
                            "device {dev_num}: message {id:#04x} failed {attempt} times ({why:?}, {} ms timeout), device marked broken\n",
                            self.bus.timeout_ms()
                        );
                    }
                    if let Some(h) = self.handle() {
                        h.break_device();
                    }
                    self.needs_recovery();
                }
            }
            Err(Failure::BadResponse) => {
                if let Some(n) = self.warnings.allow() {
                    dev_warn!(
                        self.bus.dev(),
                        "device {}: nonsensical response to {:#04x}{}\n",
                        self.dev_num,
                        msg.id().2,
                        Suppressed(n)
                    );
                }
            }
            _ => {}
        }
        result
    }

    /// A transport message for this device, from the bus: in its interrupt handler, or as
    /// from one (interrupts disabled, `irq`; must not sleep).
    pub(crate) fn receive(
        &self,
        header: &Header,
        frame: &Frame<'_>,
        bytes: &[u8],
        irq: &LocalInterruptDisabled,
    ) {
        let stats = self.bus.stats();
        if header.kind == Kind::Response {
            if let Err(why) = self.req.complete(header, bytes, irq) {
                stats.dropped(why);
            }
            return;
        }
        match frame.msg {
            Message::EventUsed { vq_index } => {
                self.used_events.add(1, Relaxed);
                let ran = u16::try_from(vq_index).is_ok_and(|i| {
                    let guard = rcu::read_lock();
                    self.handle
                        .get(&guard)
                        .is_some_and(|h| h.queue_interrupt(i, irq))
                });
                if !ran {
                    stats.dropped(Dropped::NoQueue);
                }
            }
            Message::EventConfig {
                device_status,
                generation,
                ..
            } => {
                // An event may predate a reset: take only what a device raises on its own.
                self.event_since_answer.store(true, Relaxed);
                self.note_generation(generation);
                self.config_changes.add(1, Relaxed);
                let guard = rcu::read_lock();
                let Some(h) = self.handle.get(&guard) else {
                    return;
                };
                if device_status & u32::from(status::NEEDS_RESET) != 0 {
                    let current = self.status.load(Relaxed);
                    self.status.store(
                        driver_visible_status(current, current | device_status),
                        Relaxed,
                    );
                    // Not broken here: the device still writes its rings, and a broken queue
                    // whose device completes buffers can keep a driver looping (see
                    // `MsgDevice::stop`). The recovery resets it first. Once: a device may
                    // keep saying so.
                    if !self.recover.xchg(true, Relaxed) {
                        dev_err!(
                            self.bus.dev(),
                            "device {}: device needs a reset, reset and recovered\n",
                            self.dev_num
                        );
                        self.bus.request_recovery();
                    }
                }
                // A device about to be recovered, or broken, has its driver left alone: every
                // read of the new configuration may fail (a virtio-blk capacity of 0 would
                // resize the disk).
                if !self.wants_recovery() && !self.req.is_broken() {
                    h.config_changed();
                }
            }
            _ => stats.dropped(Dropped::WrongDirection),
        }
    }

    fn features_per_message(&self) -> usize {
        wire::max_feature_blocks(self.bus.max_msg_size()).max(1)
    }

    /// The 32-bit feature blocks this kernel negotiates: the device's, up to what Linux knows.
    fn feature_blocks(&self) -> usize {
        (self.info.num_feature_bits as usize)
            .div_ceil(32)
            .min(Features::blocks())
    }

    pub(crate) fn get_features(&self) -> Result<Features, Failure> {
        let mut features = Features::empty();
        let per_msg = self.features_per_message();
        let total = self.feature_blocks();
        let mut block = 0;
        while block < total {
            let n = per_msg.min(total - block);
            let (index, count) = (block as u32, n as u32);
            self.request(
                Message::GetDeviceFeatures {
                    block_index: index,
                    num_blocks: count,
                },
                Policy::Essential,
                |m| match *m {
                    Message::DeviceFeatures {
                        block_index,
                        features: words,
                    } if block_index == index && words.len() == n => {
                        for (i, w) in words.iter().enumerate() {
                            features.set_block(block + i, w);
                        }
                        Some(())
                    }
                    _ => None,
                },
            )?;
            block += n;
        }
        Ok(features)
    }

    pub(crate) fn set_features(&self, features: &Features) -> Result<(), Failure> {
        let per_msg = self.features_per_message();
        let total = self.feature_blocks();
        let mut block = 0;
        while block < total {
            let n = per_msg.min(total - block);
            let mut words = [0u32; Features::blocks()];
            for (i, w) in words.iter_mut().take(n).enumerate() {
                *w = features.block(block + i);
            }
            let msg = Message::SetDriverFeatures {
                block_index: block as u32,
                features: Words::new(&words[..n]),
            };
            self.request(msg, Policy::Essential, |m| {
                matches!(m, Message::DriverFeaturesSet).then_some(())
            })?;
            block += n;
        }
        Ok(())
    }

    /// Writes the status; returns what the device answered. What is cached (what the driver
    /// reads back) is only what the driver wrote and the device kept (a device clears
    /// FEATURES_OK to refuse the features), plus NEEDS_RESET while DRIVER_OK: a bit the driver
    /// never set would trip the virtio core (`virtio_device_ready()` warns if DRIVER_OK is
    /// already set, `virtio_dev_remove()` if a reset device is not 0).
    pub(crate) fn set_status(&self, value: u32) -> Result<u32, Failure> {
        let answer = self.request(
            Message::SetDeviceStatus { status: value },
            Policy::Essential,
            |m| match *m {
                Message::DeviceStatusSet { status } => Some(status),
                _ => None,
            },
        )?;
        self.status
            .store(driver_visible_status(value, answer), Relaxed);
        Ok(answer)
    }

    pub(crate) fn reset(&self) {
        self.config_changes.add(1, Relaxed);
        // No kick may follow the reset: drop the pending ones and wait for a running one.
        self.clear_kicks();
        self.flush_kicks();
        if self.req.is_broken() {
            // The device may only be slow: ask it once more to stop using the rings the
            // driver is about to free, but do not wait for it again if it stays silent.
            let _ = self.request(
                Message::SetDeviceStatus { status: 0 },
                Policy::BestEffort,
                |m| matches!(m, Message::DeviceStatusSet { .. }).then_some(()),
            );
            self.status.store(0, Relaxed);
            return;
        }
        if matches!(self.set_status(0), Ok(s) if s != 0) {
            let polled = read_poll_timeout(
                || {
                    self.request(Message::GetDeviceStatus, Policy::Essential, |m| match *m {
                        Message::DeviceStatus { status } => Some(status),
                        _ => None,
                    })
                    .map_err(Error::from)
                },
                |status| *status == 0,
                RESET_POLL_EVERY,
                RESET_POLL_FOR,
            );
            // A request that failed said so, and broke the device.
            if polled.is_err_and(|e| e == ETIMEDOUT) {
                dev_err!(
                    self.bus.dev(),
                    "device {}: reset not completed within {} ms\n",
                    self.dev_num,
                    RESET_POLL_FOR.as_millis()
                );
            }
        }
        // The virtio core requires status 0 after a reset, whatever the device did.
        self.status.store(0, Relaxed);
    }

    /// Checks that `[offset, offset + len)` lies within the configuration space; warns and
    /// fails the `access` ("read" or "write") otherwise.
    fn check_config_range(&self, access: &str, offset: u32, len: usize) -> Result<(), Failure> {
        let end = u64::from(offset) + len as u64;
        if end <= u64::from(self.info.config_size) {
            return Ok(());
        }
        dev_warn!(
            self.bus.dev(),
            "device {}: config {access} of {len} bytes at {offset} beyond config size {}\n",
            self.dev_num,
            self.info.config_size
        );
        Err(Failure::BadResponse)
    }

    fn config_chunk(&self) -> usize {
        wire::max_config_chunk(self.bus.max_msg_size()).max(1)
    }

    /// One GET_CONFIG; returns the generation the data belongs to.
    fn read_config_chunk(&self, offset: u32, buf: &mut [u8]) -> Result<u32, Failure> {
        let length = buf.len() as u32;
        let generation = self.request(
            Message::GetConfig { offset, length },
            Policy::Essential,
            |m| match *m {
                Message::Config {
                    generation,
                    offset: o,
                    data,
                } if o == offset && data.len() == buf.len() => {
                    buf.copy_from_slice(data);
                    Some(generation)
                }
                _ => None,
            },
        )?;
        self.learn_generation(generation);
        Ok(generation)
    }

    /// Takes the generation of a GET_CONFIG answer: the device settled if it is the previous
    /// answer's and no EVENT_CONFIG came between them.
    fn learn_generation(&self, generation: u32) {
        let previous = self.last_answered_generation.xchg(generation, Relaxed);
        let event = self.event_since_answer.xchg(false, Relaxed);
        if generation == previous && !event {
            self.generation_churn.store(0, Relaxed);
            self.generation.store(generation, Relaxed);
        } else {
            self.note_generation(generation);
        }
    }

    /// Takes a generation the device reported, unless it has changed it too often since it
    /// last settled (see [`GENERATION_CHURN_LIMIT`]).
    fn note_generation(&self, generation: u32) {
        if generation == self.generation.load(Relaxed) {
            return;
        }
        // Racy between an event and an answer, but bounded: it only counts.
        let churn = self.generation_churn.load(Relaxed).saturating_add(1);
        self.generation_churn.store(churn, Relaxed);
        if churn < GENERATION_CHURN_LIMIT {
            self.generation.store(generation, Relaxed);
        } else if churn == GENERATION_CHURN_LIMIT {
            if let Some(n) = self.warnings.allow() {
                dev_warn!(
                    self.bus.dev(),
                    "device {}: configuration generation changed {churn} times in a row; ignoring its changes until it settles{}\n",
                    self.dev_num,
                    Suppressed(n)
                );
            }
        }
    }

    /// Answers a read from the configuration window, reading a new window if it misses.
    /// Returns `false` if the window cannot be used (see the module documentation).
    fn read_config_window(&self, offset: u32, buf: &mut [u8]) -> Result<bool, Failure> {
        let changes = self.config_changes.load(Relaxed);
        let size = {
            let mut window = self.config_window.lock();
            if self.status.load(Relaxed) & u32::from(status::DRIVER_OK) != 0
                || buf.len() > window.data.capacity()
            {
                return Ok(false);
            }
            let current = window.valid
                && window.changes == changes
                && window.generation == self.generation.load(Relaxed);
            let start = offset.checked_sub(window.offset).map(|s| s as usize);
            let hit = start.and_then(|s| window.data.get(s..s + buf.len()));
            if let (true, Some(data)) = (current, hit) {
                buf.copy_from_slice(data);
                return Ok(true);
            }
            window.valid = false;
            window.data.capacity()
        };
        // Not under the lock: the request sleeps. Within the configuration space (checked by
        // the caller), and at least `buf` long.
        let len = (self.info.config_size.saturating_sub(offset) as usize).min(size);
        let mut data = [0u8; MAX_CONFIG_WINDOW];
        let data = data.get_mut(..len).ok_or(Failure::BadResponse)?;
        let generation = self.read_config_chunk(offset, data)?;
        buf.copy_from_slice(data.get(..buf.len()).ok_or(Failure::BadResponse)?);
        let mut window = self.config_window.lock();
        window.data.clear();
        if window.data.extend_from_slice(data, GFP_KERNEL).is_ok() {
            window.valid = true;
            window.offset = offset;
            window.generation = generation;
            window.changes = changes;
        }
        Ok(true)
    }

    /// Reads `buf.len()` bytes of the configuration space at `offset`.
    ///
    /// The virtio core's `get` cannot fail, so `buf` always gets bytes the device reported
    /// (but for a read past the configuration space, a driver's mistake: zeros):
    /// when the read fails (the device is broken, or kept changing the configuration while
    /// it was read across several messages), the configuration as last read or written whole
    /// and consistent. So a driver never sees made-up values: a configuration work that
    /// runs after the device broke finds nothing changed (virtio-blk does not resize the disk
    /// to 0) instead of zeros, and never bytes of two generations.
    pub(crate) fn get_config(&self, offset: u32, buf: &mut [u8]) -> Result<(), Failure> {
        if let Err(e) = self.check_config_range("read", offset, buf.len()) {
            // The driver's mistake: there is nothing there.
            buf.fill(0);
            return Err(e);
        }
        let start = offset as usize;
        let result = self.read_config(offset, buf);
        let mut shadow = self.config_shadow.lock();
        // Within the configuration space: checked above.
        if let Some(kept) = shadow.get_mut(start..start + buf.len()) {
            match result {
                Ok(()) => kept.copy_from_slice(buf),
                Err(_) => buf.copy_from_slice(kept),
            }
        }
        result
    }

    fn read_config(&self, offset: u32, buf: &mut [u8]) -> Result<(), Failure> {
        if self.read_config_window(offset, buf)? {
            return Ok(());
        }
        let chunk = self.config_chunk();
        for _ in 0..GET_CONFIG_ATTEMPTS {
            let mut first = None;
            let mut torn = false;
            for (i, part) in buf.chunks_mut(chunk).enumerate() {
                let generation = self.read_config_chunk(offset + (i * chunk) as u32, part)?;
                torn |= first.is_some_and(|g| g != generation);
                first.get_or_insert(generation);
            }
            if !torn {
                return Ok(());
            }
            self.bus.stats().config_retry();
        }
        if let Some(n) = self.warnings.allow() {
            dev_warn!(
                self.bus.dev(),
                "device {}: configuration changed during each of {GET_CONFIG_ATTEMPTS} reads of {} bytes at {offset}; the last consistent one is used{}\n",
                self.dev_num,
                buf.len(),
                Suppressed(n)
            );
        }
        Err(Failure::BadResponse)
    }

    pub(crate) fn set_config(&self, offset: u32, buf: &[u8]) -> Result<(), Failure> {
        self.check_config_range("write", offset, buf.len())?;
        self.config_changes.add(1, Relaxed);
        let chunk = self.config_chunk();
        for (i, part) in buf.chunks(chunk).enumerate() {
            let at = offset + (i * chunk) as u32;
            let mut accepted = false;
            for _ in 0..SET_CONFIG_ATTEMPTS {
                let generation = self.generation.load(Relaxed);
                let msg = Message::SetConfig {
                    generation,
                    offset: at,
                    data: part,
                };
                let (new_generation, length) =
                    self.request(msg, Policy::Essential, |m| match *m {
                        Message::ConfigSet {
                            generation,
                            offset: o,
                            length,
                            ..
                        } if o == at => Some((generation, length)),
                        _ => None,
                    })?;
                self.generation.store(new_generation, Relaxed);
                if length as usize == part.len() {
                    accepted = true;
                    break;
                }
                // Rejected: our generation was stale. Re-read to learn the current one.
                self.bus.stats().config_retry();
                let mut scratch = [0u8; 1];
                self.read_config_chunk(at, &mut scratch)?;
            }
            if !accepted {
                dev_warn!(
                    self.bus.dev(),
                    "device {}: config write at {at} rejected\n",
                    self.dev_num
                );
                return Err(Failure::BadResponse);
            }
        }
        Ok(())
    }

    fn queue_max_size(&self, dev: &Device, index: u16) -> Result<u32> {
        // The queues are only touched once the device confirmed FEATURES_OK.
        if dev.has_feature(feature::VERSION_1)
            && self.status.load(Relaxed) & u32::from(status::FEATURES_OK) == 0
        {
            dev_err!(
                self.bus.dev(),
                "device {}: queue set-up before FEATURES_OK\n",
                self.dev_num
            );
            return Err(EIO);
        }
        if u32::from(index) >= self.info.max_virtqueues {
            return Err(ENOENT);
        }
        let index32 = u32::from(index);
        let max = self.request(
            Message::GetVqueue { index: index32 },
            Policy::Essential,
            |m| match *m {
                Message::Vqueue(q) if q.index == index32 => Some(q.max_size),
                _ => None,
            },
        )?;
        // Split rings need a power of two.
        let max = max.min(MAX_QUEUE_SIZE);
        Ok(if max == 0 { 0 } else { 1 << max.ilog2() })
    }

    fn queue_enable(&self, q: &QueueConfig) -> Result {
        if usize::from(q.index) >= self.kicks.len() {
            dev_err!(
                self.bus.dev(),
                "device {}: queue {} not supported\n",
                self.dev_num,
                q.index
            );
            return Err(ENOSPC);
        }
        let msg = Message::SetVqueue(VqueueConfig {
            index: q.index.into(),
            size: q.size,
            desc_addr: q.desc,
            driver_addr: q.driver,
            device_addr: q.device,
        });
        self.request(msg, Policy::Essential, |m| {
            matches!(m, Message::VqueueSet).then_some(())
        })?;
        Ok(())
    }

    /// EVENT_AVAIL for queue `index` with notification data `raw`.
    fn encode_kick(&self, index: usize, raw: u32, buf: &mut [u8; KICK_BYTES]) -> Option<usize> {
        let next =
            AvailNext::new(raw & 0x7fff_ffff, raw & 0x8000_0000 != 0).unwrap_or(AvailNext::NONE);
        let msg = Message::EventAvail {
            vq_index: index as u32,
            next,
        };
        (Frame {
            dev_num: self.dev_num,
            token: 0,
            msg,
        })
        .encode(buf)
        .ok()
    }

    /// A kick, in atomic context: sent at once if the bus has room, else left to the kick work
    /// (on an unbound queue: the CPU that kicked may spin until the device answers, as
    /// virtio-console does with interrupts off, and must not be the one to send it).
    /// A bus that stopped for good (`ENODEV`) breaks the queue: the virtio core marks it
    /// broken when this returns `false`.
    pub(crate) fn notify(self: &Arc<Self>, index: u16, data: Option<NotificationData>) -> bool {
        if self.req.is_broken() {
            return false;
        }
        let i = usize::from(index);
        let Some(kick) = self.kicks.get(i) else {
            return false;
        };
        let raw = data
            .and_then(|d| AvailNext::new(u32::from(d.offset), d.wrap))
            .unwrap_or(AvailNext::NONE)
            .raw();
        kick.data.store(raw, Relaxed);
        let mut buf = [0u8; KICK_BYTES];
        if let Some(len) = self.encode_kick(i, raw, &mut buf) {
            match self
                .bus
                .send_event_atomic(&buf[..len], wire::transport_id::EVENT_AVAIL)
            {
                Ok(()) => {
                    self.kick_count.add(1, Relaxed);
                    return true;
                }
                Err(e) if e == ENODEV => return false,
                Err(_) => {}
            }
        }
        kick.pending.store(true, Relaxed);
        // Already queued is fine: the pending work sends this kick too.
        let _ = workqueue::system_dfl().enqueue(self.clone());
        true
    }

    fn clear_kicks(&self) {
        for kick in self.kicks.iter() {
            kick.pending.store(false, Relaxed);
        }
    }

    /// Sends the EVENT_AVAIL of every queue whose kick could not be sent at once.
    ///
    /// A kick is never dropped: while the bus has no room, it is tried again, for at most the
    /// transport's timeout. A bus that stays full that long belongs to a device that stopped
    /// taking messages, and one that cannot send at all has lost the device: either way the
    /// device is broken, so that its driver stops waiting for it, as for a device that does
    /// not answer.
    fn send_kicks(self: &Arc<Self>) {
        let start = Instant::<Monotonic>::now();
        for (i, kick) in self.kicks.iter().enumerate() {
            if !kick.pending.xchg(false, Relaxed) {
                continue;
            }
            while !self.req.is_broken() {
                let mut buf = [0u8; KICK_BYTES];
                let Some(len) = self.encode_kick(i, kick.data.load(Relaxed), &mut buf) else {
                    break;
                };
                let result = self
                    .bus
                    .send_event(&buf[..len], wire::transport_id::EVENT_AVAIL);
                let waited = start.elapsed().as_millis();
                match result {
                    Ok(()) => {
                        self.kick_count.add(1, Relaxed);
                        break;
                    }
                    Err(e) if e == EBUSY && waited < i64::from(self.bus.timeout_ms()) => {
                        fsleep(KICK_RETRY);
                    }
                    Err(e) => {
                        dev_err!(
                            self.bus.dev(),
                            "device {}: kick of queue {i} not sent in {waited} ms ({e:?}), device marked broken\n",
                            self.dev_num
                        );
                        if e == EBUSY {
                            // Still there, but not taking messages: a reset may cure it.
                            self.break_and_recover();
                        } else {
                            self.fail();
                        }
                    }
                }
            }
        }
    }

    /// RESET_VQUEUE: the device forgets queue `index` (VIRTIO_F_RING_RESET).
    fn queue_reset(&self, index: u16) -> Result {
        if let Some(kick) = self.kicks.get(usize::from(index)) {
            kick.pending.store(false, Relaxed);
        }
        // A kick the work already took (it may be retrying one the bus had no room for) must
        // not reach the device after RESET_VQUEUE.
        self.flush_kicks();
        self.request(
            Message::ResetVqueue {
                index: index.into(),
            },
            Policy::Essential,
            |m| matches!(m, Message::VqueueReset).then_some(()),
        )?;
        Ok(())
    }

    pub(crate) fn shm_region(&self, id: u8) -> Option<ShmRegion> {
        let index = u32::from(id);
        self.request(Message::GetShm { index }, Policy::Optional, |m| match *m {
            Message::Shm {
                index: i,
                length,
                address,
            } if i == index => Some((length, address)),
            _ => None,
        })
        .ok()
        .filter(|&(length, _)| length != 0)
        .and_then(|(length, address)| {
            let (addr, len) = (u64::from(address), u64::from(length));
            let window = self.bus.shm_window();
            let end = addr.checked_add(len);
            let inside = window
                .as_ref()
                .is_some_and(|w| addr >= w.start && end.is_some_and(|end| end <= w.end));
            if !inside {
                if let Some(n) = self.warnings.allow() {
                    dev_warn!(
                        self.bus.dev(),
                        "device {}: shared memory region {id} at {addr:#x}, {len:#x} bytes, is outside the bus's window ({window:x?}); not used{}\n",
                        self.dev_num,
                        Suppressed(n)
                    );
                }
                return None;
            }
            Some(ShmRegion { addr, len })
        })
    }
}

/// The [`Transport`] of a virtio-msg device.
pub(crate) struct MsgTransport {
    dev: Arc<MsgDevice>,
}

impl MsgTransport {
    pub(crate) fn new(dev: Arc<MsgDevice>) -> Self {
        Self { dev }
    }
}

#[vtable]
impl Transport for MsgTransport {
    fn get_config(&self, _dev: &Device, offset: u32, buf: &mut [u8]) {
        // A failure still filled `buf` (see `MsgDevice::get_config`).
        let _ = self.dev.get_config(offset, buf);
    }

    fn set_config(&self, _dev: &Device, offset: u32, buf: &[u8]) {
        let _ = self.dev.set_config(offset, buf);
    }

    fn generation(&self, _dev: &Device) -> u32 {
        self.dev.generation.load(Relaxed)
    }

    fn get_status(&self, _dev: &Device) -> u8 {
        self.dev.status.load(Relaxed) as u8
    }

    fn set_status(&self, _dev: &Device, status: u8) {
        let _ = self.dev.set_status(status.into());
    }

    fn reset(&self, _dev: &Device) {
        self.dev.reset();
    }

    fn get_features(&self, _dev: &Device) -> Features {
        self.dev.get_features().unwrap_or_default()
    }

    fn finalize_features(&self, dev: &Device) -> Result {
        if !dev.has_feature(feature::VERSION_1) {
            dev_err!(
                self.dev.bus.dev(),
                "device {}: VERSION_1 not negotiated\n",
                self.dev.dev_num
            );
            return Err(EINVAL);
        }
        Ok(self.dev.set_features(&dev.features())?)
    }

    fn queue_max_size(&self, dev: &Device, index: u16) -> Result<u32> {
        self.dev.queue_max_size(dev, index)
    }

    fn queue_enable(&self, _dev: &Device, queue: &QueueConfig) -> Result {
        self.dev.queue_enable(queue)
    }

    fn notify(&self, index: u16, data: Option<NotificationData>) -> bool {
        self.dev.notify(index, data)
    }

    fn shm_region(&self, _dev: &Device, id: u8) -> Option<ShmRegion> {
        self.dev.shm_region(id)
    }

    fn queue_reset(&self, _dev: &Device, index: u16) -> Result {
        self.dev.queue_reset(index)
    }
}
