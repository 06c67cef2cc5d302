// SPDX-License-Identifier: GPL-2.0

//! One FIFO of the AMP PCI device, as a virtio-msg bus.
//!
//! A FIFO is a driver queue (we produce, the device consumes), a device queue (the device
//! produces, we consume), a doorbell and an MSI-X vector. Sending copies a message into the
//! driver queue and rings the doorbell; the device raises the vector after putting messages on
//! the device queue, and the hard interrupt handler ([`FifoIrq`]) drains them and hands each to
//! the transport, which runs the virtqueue callback right there, as virtio-pci does: no thread
//! is woken, no mutex taken, the slot is copied once and decoded once (by the transport).
//! Work per interrupt is bounded: the handler takes at most a queue's worth of messages (all
//! that were there when the device raised the vector; later ones come with their own
//! interrupt) and leaves any rest to the interrupt thread.
//!
//! Everything in the queues is written by the device side and is hostile input: indexes are
//! checked by the shared queue code before use, a message is copied out of its slot before
//! anything looks at it, and the transport hands on only well-formed messages. A device side
//! that corrupts an index has broken the protocol, and one that stops answering is gone: the
//! FIFO stops (sends fail at once, nothing more is read) and its devices are gone:
//! [`DeviceChanges`] tells the transport, which breaks their virtqueues and removes them, as
//! for a device unplugged by surprise, instead of the drivers acting on garbage or waiting for
//! ever. The same work item later takes the FIFO up again if its device side is back
//! ([`Fifo::reattach`]), and tells the transport of the devices the device side adds and
//! removes (EVENT_DEVICE, `hotplug.rs`).
//!
//! The bus messages (GET_DEVICES, PING) are the bus's own: [`Fifo::bus_request`] sends one
//! and waits, with a bound, for the reply that the interrupt handler hands back. Replies are
//! matched without the token (`correlate.rs`); a PING with fresh data is the FIFO's barrier,
//! for its own GET_DEVICES and, as [`Bus::sync`], for the transport after a timeout.

use core::fmt;
use kernel::{
    device::{Bound, Device},
    devres::Devres,
    impl_has_work,
    interrupt::{local_interrupt_disable, LocalInterruptDisabled},
    io::{register::Array, Io},
    irq::{IrqReturn, ThreadedHandler, ThreadedIrqReturn},
    new_exchange, new_mutex, new_spinlock, new_spinlock_irq, new_work, pci,
    prelude::*,
    random,
    sync::{
        aref::ARef,
        atomic::{Atomic, Relaxed},
        Arc, Mutex, SpinLock, SpinLockIrq,
    },
    time::{delay::fsleep, Delta, Instant, Monotonic},
    virtio::{
        as_interrupt,
        msg::{exchange::Exchange, Bus, BusLink},
    },
    workqueue::{self, Work, WorkItem},
};

use crate::{
    correlate::{Awaited, BusReplies, BusReply},
    enumerate::{DeviceSet, DevicesReply, Enumeration},
    hotplug::{self, Change, Event, Events, QUEUED_EVENTS},
    layout::{queue_offset, DEVICE_QUEUE, DRIVER_QUEUE, MAX_MSG_SIZE},
    regs,
    shared::{SharedBar, SharedQueue},
    spsc::{Consumer, Producer, QueueError, CAPACITY, PREFIX_BYTES, SLOT_BYTES},
    wire::{DeviceState, Frame, Message, TYPE_BUS},
};

/// BAR0, mapped.
pub(crate) type RegsBar = Devres<pci::Bar<'static, { regs::BAR0_USED }>>;

/// Most messages the hard interrupt handler takes off the device queue: as many as the queue
/// holds, so all that were there when the device raised the vector. Messages the device adds
/// meanwhile come with an interrupt of their own (MSI-X is latched while the handler runs);
/// if the handler still finds more, it leaves them to the interrupt thread, so that a device
/// that never stops cannot keep a CPU in hard interrupt context.
const HARD_BUDGET: u32 = CAPACITY;
/// Most messages one run of the interrupt thread takes, in batches of [`HARD_BUDGET`].
const THREAD_BUDGET: u32 = 4 * CAPACITY;
/// Doorbells one sender rings for others before it leaves the rest to them (see [`Tx`]).
const RING_ROUNDS: u32 = 8;
/// How long to wait for the answer to PING from a device that has not answered one yet: v1 of
/// the device model never does.
const PING_TIMEOUT_MS: u32 = 250;

/// One doorbell in this many is timed (`doorbell_ns`): enough for the mean, at a sixteenth of
/// the clock reads.
const DOORBELL_TIMED_EVERY: u64 = 16;

/// How long a sender sleeps between looks at a full driver queue.
const FULL_POLL: Delta = Delta::from_micros(200);

/// How much of a slot the interrupt handler copies, from its first bytes (the message
/// header): of a transport message, its `msg_size`, at most [`MAX_MSG_SIZE`] (the transport
/// decodes no further); of a bus message, [`MAX_MSG_SIZE`], since the device model's v1
/// misreports the size of its GET_DEVICES replies (their parser bounds itself by what was
/// copied). Every 4 bytes not copied is one access to BAR1 saved.
fn copied_len(header: &[u8; PREFIX_BYTES]) -> usize {
    let [ty, _, _, _, _, _, size_lo, size_hi] = *header;
    if ty & TYPE_BUS != 0 {
        return MAX_MSG_SIZE;
    }
    usize::from(u16::from_le_bytes([size_lo, size_hi])).min(MAX_MSG_SIZE)
}

/// What a FIFO counts; shown in debugfs.
pub(crate) struct FifoStats {
    sent: Atomic<u64>,
    received: Atomic<u64>,
    doorbells: Atomic<u64>,
    /// Doorbells timed: one in [`DOORBELL_TIMED_EVERY`], from the first (reading the clock
    /// twice per doorbell cost about 120 instructions, a fifth of a kick's own work).
    doorbells_timed: Atomic<u64>,
    /// Time spent writing the timed doorbells: the device's (a bus transaction that may stall
    /// the CPU; emulated, a round trip to the device's process), apart from the driver's own.
    doorbell_ns: Atomic<u64>,
    interrupts: Atomic<u64>,
    /// Interrupts that found nothing to take (answered IRQ_NONE).
    spurious: Atomic<u64>,
    threaded: Atomic<u64>,
    queue_full_waits: Atomic<u64>,
    queue_full_failures: Atomic<u64>,
    doorbells_shared: Atomic<u64>,
    unexpected_bus: Atomic<u64>,
    late_bus: Atomic<u64>,
    barriers: Atomic<u64>,
    undelivered: Atomic<u64>,
    index_errors: Atomic<u64>,
    bus_timeouts: Atomic<u64>,
    stale_discarded: Atomic<u64>,
    pings_answered: Atomic<u64>,
    pongs_dropped: Atomic<u64>,
    /// Drains that found the device queue may have been full (see [`Fifo::drain`]).
    device_queue_full: Atomic<u64>,
    keepalive_pings: Atomic<u64>,
    keepalive_misses: Atomic<u64>,
    /// EVENT_DEVICE messages; those that contradicted what the FIFO knew; enumerations again
    /// after more than the queue held.
    device_events: Atomic<u64>,
    device_events_ignored: Atomic<u64>,
    device_resyncs: Atomic<u64>,
    /// Times the FIFO stopped (a device side gone or broken), and came up again.
    stops: Atomic<u64>,
    reattaches: Atomic<u64>,
}

impl FifoStats {
    const fn new() -> Self {
        Self {
            sent: Atomic::new(0),
            received: Atomic::new(0),
            doorbells: Atomic::new(0),
            doorbells_timed: Atomic::new(0),
            doorbell_ns: Atomic::new(0),
            interrupts: Atomic::new(0),
            spurious: Atomic::new(0),
            threaded: Atomic::new(0),
            queue_full_waits: Atomic::new(0),
            queue_full_failures: Atomic::new(0),
            doorbells_shared: Atomic::new(0),
            unexpected_bus: Atomic::new(0),
            late_bus: Atomic::new(0),
            barriers: Atomic::new(0),
            undelivered: Atomic::new(0),
            index_errors: Atomic::new(0),
            bus_timeouts: Atomic::new(0),
            stale_discarded: Atomic::new(0),
            pings_answered: Atomic::new(0),
            pongs_dropped: Atomic::new(0),
            device_queue_full: Atomic::new(0),
            keepalive_pings: Atomic::new(0),
            keepalive_misses: Atomic::new(0),
            device_events: Atomic::new(0),
            device_events_ignored: Atomic::new(0),
            device_resyncs: Atomic::new(0),
            stops: Atomic::new(0),
            reattaches: Atomic::new(0),
        }
    }
}

fn inc(counter: &Atomic<u64>) {
    counter.add(1, Relaxed);
}

/// The producing side of the driver queue, and who rings the doorbell.
///
/// Doorbells trap to the device and are slow (a round trip to another process under
/// emulation). Senders combine them: the first sender to find no doorbell in progress rings
/// it, and keeps ringing while others queued messages meanwhile (`more`); those others return
/// at once. Every message is still followed by a doorbell that starts after it was queued,
/// so the device always sees it, and messages queued during a doorbell share the next one.
/// A sender rings at most [`RING_ROUNDS`] times; then whoever queues next rings. From taking
/// the doorbell to ringing it, the ringer keeps interrupts disabled ([`Fifo::push_and_ring`]).
///
/// Kicks come in any context, interrupt handlers included, so the lock keeps interrupts
/// disabled ([`SpinLockIrq`]).
struct Tx {
    queue: Producer<SharedQueue>,
    ringing: bool,
    more: bool,
}

/// One FIFO.
#[pin_data]
pub(crate) struct Fifo {
    index: u32,
    dev: ARef<Device>,
    regs: Arc<RegsBar>,
    #[pin]
    tx: SpinLockIrq<Tx>,
    /// Taken by the interrupt handler and its thread.
    #[pin]
    rx: SpinLockIrq<Consumer<SharedQueue>>,
    /// The bus request in flight; its replies are offered by the interrupt handler.
    #[pin]
    bus_exchange: Exchange<BusReplies>,
    /// One bus request at a time: held from sending to the end of the wait.
    #[pin]
    bus_serial: Mutex<()>,
    next_token: Atomic<u32>,
    /// Data of the next PING, so that every barrier is told from every earlier one.
    next_ping: Atomic<u32>,
    /// The device side is gone or broke the queue protocol, or the driver is going away:
    /// nothing more moves.
    stopped: Atomic<bool>,
    /// The driver is going away: the FIFO never starts again.
    closed: Atomic<bool>,
    /// The FIFO stopped: [`DeviceChanges`] is to remove its devices.
    lost: Atomic<bool>,
    /// The keepalive asks [`DeviceChanges`] to see whether a stopped FIFO's device side is
    /// back ([`Fifo::reattach`]).
    retry: Atomic<bool>,
    queue_wait_ms: u32,
    bus_timeout_ms: u32,
    stats: FifoStats,
    /// Whether the device answered PING at probe (v1 of the device model does not).
    answers_ping: Atomic<bool>,
    #[pin]
    devices: SpinLock<DeviceSet>,
    /// EVENT_DEVICE messages the interrupt handler queued for [`DeviceChanges`].
    #[pin]
    events: SpinLockIrq<Events>,
    /// What tells the transport of devices that come and go, and that they are all gone when
    /// the FIFO stops; taken away at teardown (it refers to the FIFO).
    #[pin]
    changes: SpinLockIrq<Option<Arc<DeviceChanges>>>,
}

/// How long a FIFO waits.
#[derive(Clone, Copy)]
pub(crate) struct Timeouts {
    /// For room in a full driver queue, in milliseconds.
    pub(crate) queue_wait_ms: u32,
    /// For the reply to a bus request, in milliseconds.
    pub(crate) bus_ms: u32,
}

impl Fifo {
    /// FIFO `index`, taking over its queues as they are: the device side keeps its own copies
    /// of the indexes, so they are adopted, never reset, and messages left on the device queue
    /// from before (answers to a previous driver's requests) are discarded.
    pub(crate) fn new(
        index: u32,
        pdev: &pci::Device<Bound>,
        regs: Arc<RegsBar>,
        shm: &Arc<SharedBar>,
        timeouts: Timeouts,
    ) -> Result<impl PinInit<Self, Error>> {
        let dev: &Device<Bound> = pdev.as_ref();
        let adopt_err = |which: &str, e: QueueError| {
            dev_err!(dev, "FIFO {index}: {which} queue unusable: {e:?}\n");
            EIO
        };
        let driver_queue = SharedQueue::new(shm.clone(), queue_offset(index, DRIVER_QUEUE));
        let device_queue = SharedQueue::new(shm.clone(), queue_offset(index, DEVICE_QUEUE));
        let tx = Tx {
            queue: Producer::adopt(driver_queue).map_err(|e| adopt_err("driver", e))?,
            ringing: false,
            more: false,
        };
        let mut rx = Consumer::adopt(device_queue).map_err(|e| adopt_err("device", e))?;
        let stale = rx.discard().map_err(|e| adopt_err("device", e))?;
        if stale > 0 {
            dev_info!(dev, "FIFO {index}: discarded {stale} stale messages\n");
        }
        let stats = FifoStats::new();
        stats.stale_discarded.store(u64::from(stale), Relaxed);
        let dev: ARef<Device> = {
            let dev: &Device = dev;
            dev.into()
        };
        Ok(try_pin_init!(Self {
            index,
            dev,
            regs,
            tx <- new_spinlock_irq!(tx),
            rx <- new_spinlock_irq!(rx),
            bus_exchange <- new_exchange!(BusReplies::new(), "virtio_msg_amp_pci::Fifo::bus"),
            bus_serial <- new_mutex!(()),
            next_token: Atomic::new(0),
            next_ping: Atomic::new(random::get_u32()),
            stopped: Atomic::new(false),
            closed: Atomic::new(false),
            lost: Atomic::new(false),
            retry: Atomic::new(false),
            queue_wait_ms: timeouts.queue_wait_ms,
            bus_timeout_ms: timeouts.bus_ms,
            stats,
            answers_ping: Atomic::new(false),
            devices <- new_spinlock!(DeviceSet::default()),
            events <- new_spinlock_irq!(Events::new()),
            changes <- new_spinlock_irq!(None),
        }? Error))
    }

    /// Stops the FIFO for good, the driver is going away: from now on sends fail and nothing
    /// more is delivered. Process context.
    pub(crate) fn stop(&self) {
        // Not while a device side that came back is being taken up again (see `reattach`).
        let _serial = self.bus_serial.lock();
        self.closed.store(true, Relaxed);
        self.stopped.store(true, Relaxed);
    }

    pub(crate) fn stopped(&self) -> bool {
        self.stopped.load(Relaxed)
    }

    /// Messages received from the device side so far.
    pub(crate) fn received(&self) -> u64 {
        self.stats.received.load(Relaxed)
    }

    /// Whether the device side has answered a PING.
    pub(crate) fn answers_ping(&self) -> bool {
        self.answers_ping.load(Relaxed)
    }

    /// Stops the FIFO and has its devices removed, if that was not done yet; says why, once.
    /// Any context. The keepalive then looks for the device side to come back
    /// ([`Fifo::reattach`]).
    ///
    /// The devices' memory is freed as they are removed, and a device side that only stalled
    /// would act on what it finds in the driver queue when it wakes up: kicks of queues that
    /// are gone, whose rings it would then read and write. So what it has not taken yet is
    /// zeroed first ([`Producer::defuse`]): it wakes up to nothing. (What it does on its own,
    /// a network device receiving into buffers it was given, only an IOMMU can stop.)
    fn give_up(&self, why: fmt::Arguments<'_>) {
        let defused = {
            let mut tx = self.tx.lock();
            // Senders look at `stopped` under the lock: none queues after this. `lost` is set
            // with it, under the same lock as `reattach` looks at both: a FIFO is never taken
            // up again before its devices are removed.
            if self.stopped.xchg(true, Relaxed) {
                return;
            }
            self.lost.store(true, Relaxed);
            // The first look for the device side's return waits for the next period.
            self.retry.store(false, Relaxed);
            tx.queue.defuse().unwrap_or(0)
        };
        inc(&self.stats.stops);
        dev_err!(
            self.dev,
            "FIFO {}: {why}; FIFO stopped, its devices are gone ({defused} withdrawn)\n",
            self.index
        );
        self.queue_changes();
    }

    /// Has [`DeviceChanges`] run; already queued is fine: that run does all this one would.
    fn queue_changes(&self) {
        if let Some(changes) = self.changes.lock().clone() {
            let _ = workqueue::system_long().enqueue(changes);
        }
    }

    /// Has [`DeviceChanges`] see whether the device side of this stopped FIFO is back (see
    /// [`Fifo::reattach`]): the keepalive asks once per period.
    pub(crate) fn retry(&self) {
        self.retry.store(true, Relaxed);
        self.queue_changes();
    }

    /// Takes a stopped FIFO up again if its device side is back; returns whether it is. Called
    /// by [`DeviceChanges`] after the devices of the FIFO were removed, so that nothing from
    /// before the stop can reach the device side that answers now.
    ///
    /// A device side that restarted may have reset its own indexes, or kept them (QEMU's
    /// device model keeps what it cached, `09-reload-indexes.txt`): both queues are taken over
    /// again from what shared memory holds now, what waits on the device queue from before is
    /// discarded, and every driver-queue slot the device side would read before our next
    /// message is zeroed (one that reset its tail would otherwise run our old requests again).
    /// No index is moved back or reset. Then a PING: answered, the FIFO is up (and the caller
    /// enumerates); not, it stops again and the PING is withdrawn. A device side whose indexes
    /// are out of range, or whose driver queue is full, is not back: nothing is sent.
    fn reattach(&self) -> bool {
        let _serial = self.bus_serial.lock();
        if self.closed.load(Relaxed) {
            return false;
        }
        let taken = {
            let mut rx = self.rx.lock();
            rx.readopt().and_then(|()| rx.discard())
        };
        if taken.is_err() {
            return false;
        }
        // Events from before the stop are about devices that are gone.
        let _ = self.events.lock().take();
        {
            let mut tx = self.tx.lock();
            // Not before the devices are removed (see `give_up`).
            if self.lost.load(Relaxed) {
                return false;
            }
            tx.more = false;
            let room = tx.queue.readopt().and_then(|()| {
                tx.queue.defuse()?;
                tx.queue.free()
            });
            if !matches!(room, Ok(1..)) {
                return false;
            }
            self.stopped.store(false, Relaxed);
        }
        if self.barrier().is_ok() {
            inc(&self.stats.reattaches);
            dev_info!(
                self.dev,
                "FIFO {}: device side answers again; enumerating its devices\n",
                self.index
            );
            return true;
        }
        // Unless it broke the queues meanwhile, which stopped it already.
        let mut tx = self.tx.lock();
        if !self.stopped.xchg(true, Relaxed) {
            let _ = tx.queue.defuse();
        }
        false
    }

    /// The device corrupted a queue index: count it, stop the FIFO, and have its devices
    /// removed. Any context.
    fn index_error(&self, queue: &str, e: QueueError) {
        inc(&self.stats.index_errors);
        self.give_up(format_args!("device corrupted the {queue} queue ({e:?})"));
    }

    /// The device side answered none of the last `misses` keepalive PINGs: it is gone (see
    /// `keepalive.rs`).
    pub(crate) fn peer_gone(&self, misses: u32) {
        self.give_up(format_args!(
            "device side answered none of {misses} keepalive PINGs in a row"
        ));
    }

    /// One keepalive PING (see `keepalive.rs`): whether the device side answered it.
    pub(crate) fn keepalive(&self) -> Result {
        let _serial = self.bus_serial.lock();
        inc(&self.stats.keepalive_pings);
        self.barrier()
            .inspect_err(|_| inc(&self.stats.keepalive_misses))
    }

    /// Sets what tells the transport of the devices that come and go, and that they are all
    /// gone if the FIFO stops.
    pub(crate) fn set_changes(&self, changes: Option<Arc<DeviceChanges>>) {
        let old = core::mem::replace(&mut *self.changes.lock(), changes);
        // Outside the lock: it may be the last reference.
        if let Some(old) = old {
            old.flush();
        }
    }

    /// Copies `msg` into the driver queue. Returns whether the caller must ring the doorbell
    /// (with [`Fifo::ring`]); otherwise a doorbell in progress elsewhere will cover it.
    fn push(&self, msg: &[u8], irq: &LocalInterruptDisabled) -> Result<bool> {
        if msg.len() > MAX_MSG_SIZE {
            return Err(EMSGSIZE);
        }
        let pushed = {
            let mut tx = self.tx.lock_with(irq);
            // Under the lock: once `give_up` withdrew what was queued, nothing is added.
            if self.stopped() {
                return Err(ENODEV);
            }
            tx.queue.push(msg).map(|()| {
                let ring = !tx.ringing;
                tx.ringing = true;
                tx.more |= !ring;
                ring
            })
        };
        match pushed {
            Ok(ring) => {
                inc(&self.stats.sent);
                if !ring {
                    inc(&self.stats.doorbells_shared);
                }
                Ok(ring)
            }
            Err(QueueError::Full) => Err(EBUSY),
            Err(QueueError::TooLong { .. }) => Err(EMSGSIZE),
            Err(e) => {
                self.index_error("driver", e);
                Err(EIO)
            }
        }
    }

    /// Writes the doorbell register; one in [`DOORBELL_TIMED_EVERY`] is timed: the time is the
    /// device's, counted apart from the driver's own (`doorbell_ns`).
    fn doorbell(&self) {
        if let (Some(loc), Some(bar)) = (
            regs::NOTIFY::try_at(self.index as usize),
            self.regs.try_access(),
        ) {
            let rung = self.stats.doorbells.fetch_add(1, Relaxed);
            if rung % DOORBELL_TIMED_EVERY != 0 {
                bar.write(loc, regs::NOTIFY::zeroed());
                return;
            }
            let start = Instant::<Monotonic>::now();
            bar.write(loc, regs::NOTIFY::zeroed());
            let ns = u64::try_from(start.elapsed().as_nanos()).unwrap_or(0);
            self.stats.doorbell_ns.add(ns, Relaxed);
            inc(&self.stats.doorbells_timed);
        }
    }

    /// Rings the doorbell, again as long as other senders queued messages meanwhile (see
    /// [`Tx`]): the device looks at the driver queue after the last of them.
    fn ring(&self, irq: &LocalInterruptDisabled) {
        for round in 1.. {
            self.doorbell();
            let (again, more) = {
                let mut tx = self.tx.lock_with(irq);
                let more = core::mem::take(&mut tx.more);
                // Past the last round, give up the doorbell: whoever queues next rings.
                tx.ringing = more && round < RING_ROUNDS;
                (tx.ringing, more)
            };
            if !again {
                if more {
                    // Messages queued during the last doorbell: one more covers them.
                    self.doorbell();
                }
                return;
            }
        }
    }

    /// Queues `msg` and rings the doorbell if that falls to this sender (see [`Tx`]), with
    /// interrupts disabled from the one to the other. A sender that finds the doorbell taken
    /// returns at once, trusting the taker to ring it: were the taker preempted in between, a
    /// sender on the same CPU that then spins for the device's answer (virtio-console waits
    /// for its buffer with interrupts off) would wait for a doorbell that never comes.
    fn push_and_ring(&self, msg: &[u8]) -> Result {
        let irq = local_interrupt_disable();
        if self.push(msg, &irq)? {
            self.ring(&irq);
        }
        Ok(())
    }

    /// Rings the doorbell for the PING answers a drain queued in a row, if they took it (see
    /// [`Fifo::push`]): one doorbell covers them all, and whatever senders that found it taken
    /// queued meanwhile. Rung before anything else of the drain runs: a delivery may print,
    /// and a console on a virtio-msg device spins, interrupts off, until its buffer comes
    /// back, which it would not without the doorbell.
    fn ring_pending(&self, ring: &mut bool, irq: &LocalInterruptDisabled) {
        if core::mem::take(ring) {
            self.tx.lock_with(irq).more = false;
            self.ring(irq);
        }
    }

    /// Takes up to `budget` messages off the device queue and hands each on: transport
    /// messages to `link`, bus replies to the waiting [`Fifo::bus_request`], PINGs answered
    /// (one doorbell for answers in a row). Called by the interrupt handler and its thread.
    ///
    /// A device side that finds the device queue full may drop what it wanted to queue (QEMU's
    /// device model does, EVENT_USED included: `08-full-queue.txt`), and a lost EVENT_USED
    /// would leave a driver waiting for ever. Only we can tell it happened: if the queue may
    /// have been full since the last drain (see `spsc::Consumer::take_was_full`), the
    /// transport is told, once per drain, after every message before the loss was handed on
    /// and the slots were freed, so after the loss itself: a device drops only while it
    /// still sees the queue full, before it sees our tail move.
    fn drain(&self, link: &BusLink, budget: u32, irq: &LocalInterruptDisabled) -> Drained {
        if self.stopped() {
            return Drained::Nothing;
        }
        let (mut any, mut ring) = (false, false);
        // The slot copy in `drain` is the one copy out of shared memory: nothing reads a slot
        // in place.
        let mut rx = self.rx.lock_with(irq);
        let drained = rx.drain_sized(budget, copied_len, |slot| {
            any = true;
            self.dispatch(link, slot, &mut ring, irq);
        });
        // Under `rx`, with interrupts off: nothing can run between the answers and their
        // doorbell on this CPU.
        self.ring_pending(&mut ring, irq);
        let was_full = rx.take_was_full();
        drop(rx);
        if was_full {
            inc(&self.stats.device_queue_full);
            link.report_lost(irq);
        }
        match drained {
            Ok(true) => Drained::More,
            Ok(false) if any => Drained::All,
            Ok(false) => Drained::Nothing,
            Err(e) => {
                self.index_error("device", e);
                Drained::All
            }
        }
    }

    /// One message copied out of the device queue. Only its first [`MAX_MSG_SIZE`] bytes can
    /// be a message; the transport decodes them (the header's `msg_size` says where the
    /// message ends) and counts what is malformed. `ring`: PING answers wait for a doorbell
    /// (see [`Fifo::ring_pending`]).
    fn dispatch(
        &self,
        link: &BusLink,
        slot: &[u8; SLOT_BYTES],
        ring: &mut bool,
        irq: &LocalInterruptDisabled,
    ) {
        inc(&self.stats.received);
        let Some(msg) = slot.first_chunk::<MAX_MSG_SIZE>() else {
            return;
        };
        if msg[0] & TYPE_BUS != 0 {
            self.bus_message(msg, ring, irq);
            return;
        }
        self.ring_pending(ring, irq);
        if !link.deliver(msg, irq) {
            inc(&self.stats.undelivered);
        }
    }

    /// A bus message from the device, decoded once: a PING is answered, otherwise only replies
    /// to our own request are expected.
    fn bus_message(&self, msg: &[u8; MAX_MSG_SIZE], ring: &mut bool, irq: &LocalInterruptDisabled) {
        let frame = Frame::decode_lenient(msg);
        if let Ok(Frame {
            token,
            msg: Message::Ping { data },
            ..
        }) = frame
        {
            *ring |= self.pong(token, data, irq);
            return;
        }
        self.ring_pending(ring, irq);
        if let Ok(Frame {
            msg:
                Message::EventDevice {
                    device_number,
                    state,
                },
            ..
        }) = frame
        {
            return self.device_event(device_number, state, irq);
        }
        let Some(reply) = frame.as_ref().ok().and_then(BusReply::from_frame) else {
            return inc(&self.stats.unexpected_bus);
        };
        if self.bus_exchange.offer(reply, irq).is_err() {
            inc(&self.stats.late_bus);
        }
    }

    /// The device side added or removed a device: queued for [`DeviceChanges`], which tells
    /// the transport in process context (see `hotplug.rs`).
    fn device_event(&self, dev_num: u16, state: DeviceState, irq: &LocalInterruptDisabled) {
        inc(&self.stats.device_events);
        // One that does not fit is not lost: the queue remembers it overflowed.
        self.events.lock_with(irq).push(Event { dev_num, state });
        if let Some(changes) = self.changes.lock_with(irq).clone() {
            // Already queued is fine: the queued run takes this event too.
            let _ = workqueue::system_long().enqueue(changes);
        }
    }

    /// Tells the transport what the queued EVENT_DEVICE messages changed, in order; after
    /// events that did not fit the queue, enumerates again and tells what differs. Process
    /// context.
    fn apply_events(&self, link: &BusLink) {
        let events = self.events.lock().take();
        for event in events.iter() {
            let change = hotplug::apply(&mut self.devices.lock(), event);
            self.change(link, change);
        }
        if events.overflowed() {
            inc(&self.stats.device_resyncs);
            dev_warn!(
                self.dev,
                "FIFO {}: more than {QUEUED_EVENTS} device events at once, enumerating again\n",
                self.index
            );
            let had = *self.devices.lock();
            let found = *self.enumerate().found();
            for change in hotplug::resync(had, found) {
                self.change(link, change);
            }
        }
    }

    /// Removes every device of the FIFO, which stopped.
    fn remove_all(&self, link: &BusLink) {
        let devices = core::mem::take(&mut *self.devices.lock());
        let mut gone = KVec::new();
        let all: Result = devices
            .iter()
            .try_for_each(|d| gone.push(d, GFP_KERNEL).map_err(Error::from));
        // Together, so that the transport stops them all before it removes any.
        if all.and_then(|()| link.remove_devices(&gone)).is_err() {
            // Out of memory: one by one, then.
            for dev_num in devices.iter() {
                link.remove_device(dev_num);
            }
        }
    }

    /// Enumerates the FIFO whose device side came back, and adds what it has.
    fn rediscover(&self, link: &BusLink) {
        let found = *self.enumerate().found();
        for change in hotplug::resync(DeviceSet::default(), found) {
            self.change(link, change);
        }
    }

    fn change(&self, link: &BusLink, change: Change) {
        match change {
            Change::Add(dev_num) => {
                dev_info!(self.dev, "FIFO {}: device {dev_num} added\n", self.index);
                if let Err(e) = link.add_device(dev_num) {
                    dev_err!(
                        self.dev,
                        "FIFO {}: device {dev_num} not added ({e:?})\n",
                        self.index
                    );
                }
            }
            Change::Remove(dev_num) => {
                dev_info!(self.dev, "FIFO {}: device {dev_num} removed\n", self.index);
                link.remove_device(dev_num);
            }
            Change::Ignore => inc(&self.stats.device_events_ignored),
        }
    }

    /// Queues the answer to the device's PING: the echo, with its token. Returns whether the
    /// doorbell falls to the caller. Called from the interrupt handler, so it cannot wait for
    /// room: with the driver queue full the answer is dropped (counted), as the device model
    /// drops replies when its own queue is full.
    fn pong(&self, token: u16, data: u32, irq: &LocalInterruptDisabled) -> bool {
        let mut buf = [0u8; MAX_MSG_SIZE];
        let frame = Frame {
            dev_num: 0,
            token,
            msg: Message::Pong { data },
        };
        let queued = frame
            .encode(&mut buf)
            .map_err(|_| EINVAL)
            .and_then(|len| self.push(buf.get(..len).unwrap_or_default(), irq));
        match queued {
            Ok(ring) => {
                inc(&self.stats.pings_answered);
                ring
            }
            Err(_) => {
                inc(&self.stats.pongs_dropped);
                false
            }
        }
    }

    /// Sends bus request `msg` and waits up to `timeout_ms` for the reply `awaited`. The
    /// caller holds `bus_serial`.
    fn bus_request(&self, msg: Message<'_>, awaited: Awaited, timeout_ms: u32) -> Result<BusReply> {
        // Our own sequence, for whoever reads the queues; nothing depends on it coming back.
        let token = (self.next_token.fetch_add(1, Relaxed) % u32::from(u16::MAX)) as u16 + 1;
        let mut buf = [0u8; MAX_MSG_SIZE];
        let frame = Frame {
            dev_num: 0,
            token,
            msg,
        };
        let len = frame.encode(&mut buf).map_err(|_| EINVAL)?;
        let send = || self.send(buf.get(..len).unwrap_or_default());
        let timeout = Delta::from_millis(timeout_ms.into());
        self.bus_exchange
            .request(awaited, send, timeout)?
            .ok_or_else(|| {
                inc(&self.stats.bus_timeouts);
                ETIMEDOUT
            })
    }

    /// The barrier: a PING with data not used before (the sequence starts at a random value
    /// per FIFO, so a reload does not repeat it), and its answer. The device answers in order,
    /// so once it is back, every reply to what was sent before it has been handed on (or
    /// dropped). A device that never answered PING (v1 of the device model) is given the
    /// short [`PING_TIMEOUT_MS`] to show it does now; otherwise the barrier fails with
    /// [`ENOTSUPP`]. The caller holds `bus_serial`.
    fn barrier(&self) -> Result {
        let answers = self.answers_ping.load(Relaxed);
        let timeout_ms = if answers {
            self.bus_timeout_ms
        } else {
            PING_TIMEOUT_MS
        };
        let data = self.next_ping.fetch_add(1, Relaxed);
        inc(&self.stats.barriers);
        match self.bus_request(Message::Ping { data }, Awaited::Pong(data), timeout_ms) {
            Ok(_) => {
                self.answers_ping.store(true, Relaxed);
                Ok(())
            }
            Err(e) if e == ETIMEDOUT && !answers => Err(ENOTSUPP),
            Err(e) => Err(e),
        }
    }

    /// Sends GET_DEVICES for the window (`offset`, `count`) and returns its reply, after a
    /// barrier if a GET_DEVICES reply may still be on its way.
    fn get_devices(&self, offset: u16, count: u16) -> Result<DevicesReply> {
        let _serial = self.bus_serial.lock();
        if self.bus_exchange.rules().needs_barrier() {
            // Without one (v1 of the device model), nothing can put the FIFO back in step.
            self.barrier()?;
        }
        let reply = self.bus_request(
            Message::GetDevices { offset, count },
            Awaited::Devices,
            self.bus_timeout_ms,
        )?;
        match reply {
            BusReply::Devices(devices) => Ok(devices),
            // Not matched to GET_DEVICES (see `correlate.rs`).
            BusReply::Pong(_) => Err(EINVAL),
        }
    }

    /// Checks the device answers PING, which is also the FIFO's first barrier. v1 of the
    /// device model does not answer, which is fine: then replies left from a previous driver
    /// were discarded at adoption, and what comes later cannot be told apart.
    pub(crate) fn ping(&self) -> bool {
        let _serial = self.bus_serial.lock();
        let answered = self.barrier().is_ok();
        if !answered {
            // Nothing better to go on: take the FIFO as it is.
            self.bus_exchange.rules().set_in_step();
        }
        answered
    }

    /// Enumerates the device numbers behind this FIFO with GET_DEVICES windows.
    pub(crate) fn enumerate(&self) -> Enumeration {
        let mut walk = Enumeration::new();
        while let Some((offset, count)) = walk.request() {
            match self.get_devices(offset, count) {
                Ok(reply) => walk.reply(&reply),
                Err(e) => {
                    dev_warn!(
                        self.dev,
                        "FIFO {}: GET_DEVICES at {offset} failed ({e:?})\n",
                        self.index
                    );
                    walk.abort();
                }
            }
        }
        *self.devices.lock() = *walk.found();
        walk
    }
}

impl Bus for Fifo {
    fn max_msg_size(&self) -> usize {
        MAX_MSG_SIZE
    }

    fn send(&self, msg: &[u8]) -> Result {
        let mut waited_us = 0u64;
        loop {
            match self.push_and_ring(msg) {
                Ok(()) => return Ok(()),
                Err(e) if e == EBUSY => {
                    if waited_us == 0 {
                        inc(&self.stats.queue_full_waits);
                    }
                    if waited_us >= u64::from(self.queue_wait_ms) * 1000 {
                        inc(&self.stats.queue_full_failures);
                        return Err(EBUSY);
                    }
                    fsleep(FULL_POLL);
                    waited_us += FULL_POLL.as_micros_ceil() as u64;
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn send_atomic(&self, msg: &[u8]) -> Result {
        self.push_and_ring(msg)
    }

    fn sync(&self) -> Result {
        let _serial = self.bus_serial.lock();
        self.barrier()
    }
}

impl fmt::Debug for Fifo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.stats;
        writeln!(f, "fifo: {}", self.index)?;
        writeln!(f, "stopped: {}", self.stopped())?;
        writeln!(f, "answers_ping: {}", self.answers_ping.load(Relaxed))?;
        write!(f, "devices:")?;
        let devices = *self.devices.lock();
        for dev_num in devices.iter() {
            write!(f, " {dev_num}")?;
        }
        writeln!(f)?;
        let counters = [
            ("sent", &s.sent),
            ("received", &s.received),
            ("doorbells", &s.doorbells),
            ("doorbells_timed", &s.doorbells_timed),
            ("doorbell_ns", &s.doorbell_ns),
            ("doorbells_shared", &s.doorbells_shared),
            ("interrupts", &s.interrupts),
            ("spurious", &s.spurious),
            ("threaded", &s.threaded),
            ("queue_full_waits", &s.queue_full_waits),
            ("queue_full_failures", &s.queue_full_failures),
            ("unexpected_bus", &s.unexpected_bus),
            ("late_bus", &s.late_bus),
            ("barriers", &s.barriers),
            ("undelivered", &s.undelivered),
            ("index_errors", &s.index_errors),
            ("timeouts", &s.bus_timeouts),
            ("stale_discarded", &s.stale_discarded),
            ("pings_answered", &s.pings_answered),
            ("pongs_dropped", &s.pongs_dropped),
            ("device_queue_full", &s.device_queue_full),
            ("keepalive_pings", &s.keepalive_pings),
            ("keepalive_misses", &s.keepalive_misses),
            ("device_events", &s.device_events),
            ("device_events_ignored", &s.device_events_ignored),
            ("device_resyncs", &s.device_resyncs),
            ("stops", &s.stops),
            ("reattaches", &s.reattaches),
        ];
        for (name, c) in counters {
            writeln!(f, "{name}: {}", c.load(Relaxed))?;
        }
        // Both queue ends, each under its lock (the interrupt handler's, briefly).
        let (tx_reads, tx_writes) = self.tx.lock().queue.memory().accesses().get();
        let (rx_reads, rx_writes) = self.rx.lock().memory().accesses().get();
        writeln!(f, "bar1_reads: {}", tx_reads.wrapping_add(rx_reads))?;
        writeln!(f, "bar1_writes: {}", tx_writes.wrapping_add(rx_writes))?;
        Ok(())
    }
}

/// Tells the transport of a FIFO's devices that the device side added or removed
/// (EVENT_DEVICE), that every device is gone (the FIFO stopped), or, once its device side is
/// back, what it has now. Runs as a work item, in process context (the transport probes
/// devices, and removes their drivers).
#[pin_data]
pub(crate) struct DeviceChanges {
    fifo: Arc<Fifo>,
    link: Arc<BusLink>,
    #[pin]
    work: Work<DeviceChanges>,
}

impl_has_work! {
    impl HasWork<Self> for DeviceChanges { self.work }
}

impl WorkItem for DeviceChanges {
    type Pointer = Arc<DeviceChanges>;

    /// One run does, in order: removes the devices of a FIFO that stopped; sees whether the
    /// device side of a stopped FIFO is back, and finds its devices if so; applies the
    /// EVENT_DEVICE messages that came. One at a time (a work item does not run beside
    /// itself), so a device side that is back never meets a device from before.
    fn run(this: Arc<DeviceChanges>) {
        let (fifo, link) = (&this.fifo, &*this.link);
        if fifo.lost.xchg(false, Relaxed) {
            fifo.remove_all(link);
        }
        if fifo.stopped() {
            if !(fifo.retry.xchg(false, Relaxed) && fifo.reattach()) {
                return;
            }
            fifo.rediscover(link);
        }
        fifo.apply_events(link);
    }
}

impl DeviceChanges {
    /// What removes the devices of `fifo` from `link`; the FIFO is told with
    /// [`Fifo::set_changes`].
    pub(crate) fn new(fifo: Arc<Fifo>, link: Arc<BusLink>) -> Result<Arc<Self>> {
        Arc::pin_init(
            pin_init!(Self {
                fifo,
                link,
                work <- new_work!("virtio_msg_amp_pci::DeviceChanges::work"),
            }),
            GFP_KERNEL,
        )
    }

    /// Waits until the work is neither queued nor running.
    fn flush(&self) {
        self.work.flush();
    }
}

/// What one pass over the device queue found.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Drained {
    /// Nothing: the interrupt was not for this FIFO, or it is stopped.
    Nothing,
    /// Messages, and the queue is empty now.
    All,
    /// Messages, and more than the budget: some are left.
    More,
}

/// The interrupt handler of one FIFO: the only consumer of its device queue.
pub(crate) struct FifoIrq {
    fifo: Arc<Fifo>,
    link: Arc<BusLink>,
}

impl FifoIrq {
    /// The handler of `fifo`, delivering to `link`.
    pub(crate) fn new(fifo: Arc<Fifo>, link: Arc<BusLink>) -> Self {
        Self { fifo, link }
    }
}

impl ThreadedHandler for FifoIrq {
    /// Drains what the device queued: responses wake their requester, EVENT_USED runs the
    /// virtqueue callback, here in hard interrupt context.
    /// An interrupt that finds nothing (a stopped FIFO, an empty queue) is not ours: a
    /// device that keeps raising it is then a storm the kernel's spurious interrupt
    /// detection ends.
    fn handle(&self, _dev: &Device<Bound>) -> ThreadedIrqReturn {
        // SAFETY: A hard interrupt handler runs with interrupts disabled, until it returns (the
        // driver does not depend on PREEMPT_RT, where it would be a thread).
        let irq = unsafe { LocalInterruptDisabled::assume_disabled() };
        inc(&self.fifo.stats.interrupts);
        match self.fifo.drain(&self.link, HARD_BUDGET, irq) {
            Drained::More => {
                inc(&self.fifo.stats.threaded);
                ThreadedIrqReturn::WakeThread
            }
            Drained::All => ThreadedIrqReturn::Handled,
            Drained::Nothing => {
                inc(&self.fifo.stats.spurious);
                ThreadedIrqReturn::None
            }
        }
    }

    /// Only for a device that keeps the queue full: drains the rest in batches, with
    /// interrupts enabled in between.
    fn handle_threaded(&self, _dev: &Device<Bound>) -> IrqReturn {
        for _ in 0..THREAD_BUDGET / HARD_BUDGET {
            if as_interrupt(|irq| self.fifo.drain(&self.link, HARD_BUDGET, irq)) != Drained::More {
                break;
            }
        }
        IrqReturn::Handled
    }
}
