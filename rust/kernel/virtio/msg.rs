// SPDX-License-Identifier: GPL-2.0

//! The meeting point of virtio-msg buses and the virtio-msg transport.
//!
//! virtio-msg (virtio over messages) is split like its specification: a *bus* moves messages
//! between the driver side and the device side and enumerates device numbers (a FIFO in shared
//! memory, FF-A, a hypervisor channel, ...); the *transport* turns virtio operations into
//! messages and knows nothing about how they travel. Both are modules, and Rust modules can
//! only share what the `kernel` crate defines: this file is that shared part, and nothing else.
//!
//! A bus module registers one auxiliary device per bus, named [`AUXILIARY_MODNAME`].
//! [`AUXILIARY_NAME`], whose registration data is an `Arc<BusLink>` wrapping its [`Bus`] (the
//! bus keeps a clone of the `Arc` to deliver what it receives). The
//! transport module (`virtio_msg`) is an auxiliary driver for that name: it is autoloaded when
//! a bus appears, [`BusLink::connect`]s a [`Receiver`] on probe, and its unbind (which the bus
//! triggers first when it goes away) unregisters the virtio devices before the bus stops.
//!
//! The transport makes its virtio devices children of the auxiliary device it is bound to, and
//! maps their virtqueues through the bus's device, the auxiliary device's parent (a bus
//! registers its auxiliary device under the device that does its DMA);
//! [`Unregistered::new`](super::transport::Unregistered::new) wants both bound. The link lends
//! them, as [`BusDevices`], only to the calls it makes into the receiver (device events, the
//! bus's clock, and the receiver's own deferred work, [`BusLink::defer`]): the [`Connection`]
//! is a [`Devres`] of the auxiliary device, whose drop waits for those calls, so during a call
//! the transport's own binding is still there. Nothing of the bus's driver is relied on.
//!
//! Messages cross the link as encoded bytes, in the format of [`wire`], which both sides use to
//! encode and decode them: the bus needs no knowledge of their meaning beyond what it owns (the
//! header's token, the bus messages it handles itself).

use crate::{
    alloc::KVec,
    device::{Bound, Device},
    devres::Devres,
    impl_has_work,
    interrupt::LocalInterruptDisabled,
    new_condvar, new_mutex, new_work,
    prelude::*,
    sync::{
        aref::ARef,
        atomic::{Atomic, Relaxed},
        rcu::{self, RcuPointer},
        Arc, CondVar, Mutex,
    },
    workqueue::{self, Work, WorkItem},
};
use core::ops::Range;

pub mod exchange;
/// The reader of the device model's recorded exchanges, which the KUnit suites of the
/// transport and of its buses replay (and the userspace tools, from the same file).
#[cfg(CONFIG_KUNIT)]
pub mod recording;
pub mod wire;

/// The `modname` part of the auxiliary device name of every virtio-msg bus.
pub const AUXILIARY_MODNAME: &CStr = c"virtio_msg";

/// The `name` part of the auxiliary device name of every virtio-msg bus.
pub const AUXILIARY_NAME: &CStr = c"bus";

/// A virtio-msg bus, as the transport uses it.
pub trait Bus: Send + Sync {
    /// Largest message, header included, that the bus carries in either direction.
    fn max_msg_size(&self) -> usize;

    /// The physical addresses where the device side's shared memory regions (GET_SHM) may
    /// lie, if the bus has such a window (a BAR, a carve-out shared with the other side). The
    /// transport refuses a region that is not wholly inside, as virtio-pci refuses one past
    /// its BAR: a driver would map whatever address the device names. The default, no window,
    /// refuses every region.
    fn shm_window(&self) -> Option<Range<u64>> {
        None
    }

    /// Sends one encoded message to the device side.
    ///
    /// Called in process context. May sleep for a bounded time waiting for room; must not wait
    /// forever. The header's token is the bus's: it may keep or overwrite it, and the transport
    /// never relies on a response carrying it back.
    fn send(&self, msg: &[u8]) -> Result;

    /// An ordering barrier: returns once every message the device side sent before the call
    /// has been delivered (and so dropped, if the transport no longer waits for it).
    ///
    /// The transport matches a response to its request by device number and message id, as
    /// the token is not its own; after a timeout it calls this before the next request, so a
    /// late response cannot pass for the answer to a later one. A bus whose device side
    /// answers in order implements it with a round trip (a request whose answer it can
    /// recognise, such as PING with fresh data) and, as it is called after a timeout, must
    /// bound the wait. A bus that delivers synchronously returns at once. A bus that cannot
    /// tell returns [`ENOTSUPP`]; any other error means the device side did not answer.
    /// Process context; may sleep.
    fn sync(&self) -> Result;

    /// Sends one encoded event (a virtqueue notification) from atomic context: drivers kick
    /// their queues with spinlocks held, even from interrupt handlers. Must not sleep; returns
    /// [`EBUSY`] if there is no room right now (the transport then sends it later with
    /// [`Bus::send`]). May run concurrently with [`Bus::send`], and in any context: a bus that
    /// serialises its producer with a lock takes it with interrupts disabled
    /// ([`SpinLockIrq`](crate::sync::SpinLockIrq)), or a kick from an interrupt handler on the
    /// same CPU would spin on it for ever.
    fn send_atomic(&self, msg: &[u8]) -> Result;
}

/// A new id for the auxiliary device of a bus, unique among all virtio-msg buses of every bus
/// module (the auxiliary bus refuses two devices with the same `modname.name.id`).
pub fn new_bus_id() -> u32 {
    static NEXT: Atomic<u32> = Atomic::new(0);
    NEXT.fetch_add(1, Relaxed)
}

/// What a bus delivers to: implemented by the transport.
pub trait Receiver: Send + Sync {
    /// One message from the device side, copied out of the bus into memory the device cannot
    /// change; it may be followed by the rest of the bus's slot (the header's `msg_size` says where
    /// the message ends). Called with interrupts disabled (`irq`), from the bus's hard interrupt
    /// handler or as from one ([`as_interrupt`](super::as_interrupt)): must not sleep, and
    /// should be short (it runs virtqueue callbacks, as virtio-pci's interrupt handler does).
    fn receive(&self, msg: &[u8], irq: &LocalInterruptDisabled);

    /// The device side may have dropped messages meant for the driver side: its queue was
    /// full, and it is a device that drops what does not fit (the AMP PCI device model does).
    /// Lost responses are asked again on their timeout; a lost EVENT_USED would leave a
    /// driver waiting for ever, so the receiver looks at its queues for used buffers. As
    /// [`Receiver::receive`]: interrupts disabled, must not sleep. Called after every message
    /// that came before the loss has been delivered.
    fn messages_lost(&self, irq: &LocalInterruptDisabled);

    /// The bus's clock, for a bus whose device side can fall silent or lose notifications
    /// other than by a full queue: called every `period_ms` milliseconds while the device side
    /// answers the bus (its keepalive). The receiver checks its devices: used buffers nobody
    /// was told about, buffers held far longer than the device should take. Process context;
    /// may sleep (at most a few of the receiver's timeouts). A bus that delivers everything
    /// and whose device side cannot die alone (a loopback) never calls it.
    fn tick(&self, period_ms: u32);

    /// Device number `dev_num` appeared on the bus, whose devices are `bus`. Process context;
    /// may sleep (the transport probes the device, so the bus must not call this from the
    /// context that delivers the device's responses).
    fn device_added(&self, bus: &BusDevices<'_>, dev_num: u16);

    /// The work the receiver asked for with [`BusLink::defer`] (probing devices again, say),
    /// with the bus's devices. Process context; may sleep.
    fn deferred(&self, bus: &BusDevices<'_>);

    /// Device number `dev_num` went away. Process context; may sleep.
    fn device_removed(&self, dev_num: u16);

    /// Device numbers `dev_nums` went away together (the bus lost them all at once). Process
    /// context; may sleep. A receiver should stop them all before it removes any: a driver's
    /// removal may wait for the device, and the others would wait behind it.
    fn devices_removed(&self, dev_nums: &[u16]) {
        for &dev_num in dev_nums {
            self.device_removed(dev_num);
        }
    }
}

/// The devices of a bus, for as long as the call that lends them: the transport's virtio
/// devices are children of `parent`, bound, and map their virtqueues through `dma`.
pub struct BusDevices<'a> {
    /// The bus's auxiliary device, which the transport is bound to.
    pub parent: &'a Device<Bound>,
    /// The bus's device, the auxiliary device's parent, which does the bus's DMA (bound while
    /// `parent` is, as the parent of a bound auxiliary device always is).
    pub dma: &'a Device,
}

struct LinkState {
    /// The auxiliary device the connection is a resource of and its parent; `Some` while a
    /// receiver is connected.
    devices: Option<(ARef<Device>, ARef<Device>)>,
    /// Calls into the receiver other than those from the bus's interrupt path, in progress.
    in_flight: usize,
    /// Device numbers the bus has found, in the order it found them.
    found: KVec<u16>,
}

/// The registration data of a virtio-msg bus's auxiliary device.
#[pin_data]
pub struct BusLink {
    bus: Arc<dyn Bus>,
    /// The connected receiver. [`BusLink::deliver`] borrows it under RCU while the receiver
    /// runs, from the bus's interrupt handler: no lock is taken and no reference count touched
    /// on that path, and once it is replaced, no delivery is running or will run.
    receiver: RcuPointer<KBox<Arc<dyn Receiver>>>,
    /// Device events (which may sleep) and the devices found.
    #[pin]
    state: Mutex<LinkState>,
    /// Signalled when `in_flight` drops to 0.
    #[pin]
    idle: CondVar,
    /// Runs [`Receiver::deferred`] (see [`BusLink::defer`]).
    #[pin]
    work: Work<BusLink>,
}

impl_has_work! {
    impl HasWork<Self> for BusLink { self.work }
}

impl WorkItem for BusLink {
    type Pointer = Arc<BusLink>;

    fn run(this: Arc<BusLink>) {
        // Nothing if no receiver is connected any more.
        this.with_receiver(|r, bus| r.deferred(bus));
    }
}

impl BusLink {
    /// A link for `bus`, with no device and no transport connected yet.
    ///
    /// Built here, not in the caller: the lock class of each lock is a static of this crate
    /// named by a string, and lockdep wants one name per class. An initialiser returned to
    /// the caller would be compiled into each bus module with its own copy of the name, and
    /// the second module to create a link would trip lockdep's check.
    #[inline(never)]
    pub fn new(bus: Arc<dyn Bus>) -> Result<Arc<Self>> {
        Arc::pin_init(
            pin_init!(Self {
                bus,
                receiver: RcuPointer::new(None),
                state <- new_mutex!(
                    LinkState { devices: None, in_flight: 0, found: KVec::new() },
                    "virtio::msg::BusLink::state"
                ),
                idle <- new_condvar!("virtio::msg::BusLink::idle"),
                work <- new_work!("virtio::msg::BusLink::work"),
            }),
            GFP_KERNEL,
        )
    }

    /// The bus.
    pub fn bus(&self) -> &Arc<dyn Bus> {
        &self.bus
    }

    /// Runs `f`, which may sleep, with the connected receiver and the bus's devices, if a
    /// receiver is connected, without holding a lock. [`Connection`]'s drop waits for such calls
    /// to end.
    fn with_receiver<R>(&self, f: impl FnOnce(&dyn Receiver, &BusDevices<'_>) -> R) -> Option<R> {
        let (receiver, (parent, dma)) = {
            let mut state = self.state.lock();
            let receiver = self.receiver.get(&rcu::read_lock()).map(|r| (*r).clone())?;
            let devices = state.devices.clone()?;
            state.in_flight += 1;
            (receiver, devices)
        };
        // SAFETY: `parent` is the auxiliary device that the connection is a resource of (see
        // `BusLink::connect`), and a receiver was connected when `in_flight` was raised under
        // `state`: the connection's drop, which takes the receiver under `state` and then waits
        // for `in_flight` to drop back, had not begun. That drop runs at the latest in the
        // auxiliary device's devres release, which waits for it: the device is not unbound
        // before `f` returns.
        let parent = unsafe { parent.as_bound() };
        let bus = BusDevices { parent, dma: &dma };
        let result = f(&*receiver, &bus);
        drop(receiver);
        let mut state = self.state.lock();
        state.in_flight -= 1;
        if state.in_flight == 0 {
            self.idle.notify_all();
        }
        Some(result)
    }

    /// Transport side: has [`Receiver::deferred`] called from a work item, once (a request
    /// while one is queued is covered by it). Any context. Nothing is called once the receiver
    /// is disconnected.
    pub fn defer(self: &Arc<Self>) {
        // Already queued is fine: the queued call covers this request.
        let _ = workqueue::system_long().enqueue(self.clone());
    }

    /// Bus side: delivers a message from the device side. Returns `false` if no transport is
    /// connected (the message is dropped; the bus should count it).
    ///
    /// With interrupts disabled (`irq`): from the bus's hard interrupt handler, which has the
    /// token already, or as from one ([`as_interrupt`](super::as_interrupt)).
    pub fn deliver(&self, msg: &[u8], irq: &LocalInterruptDisabled) -> bool {
        let guard = rcu::read_lock();
        match self.receiver.get(&guard) {
            Some(receiver) => {
                receiver.receive(msg, irq);
                true
            }
            None => false,
        }
    }

    /// Bus side: the device side may have dropped messages (see [`Receiver::messages_lost`]).
    /// Interrupts disabled (`irq`), after delivering every message received before the loss
    /// was seen.
    pub fn report_lost(&self, irq: &LocalInterruptDisabled) {
        if let Some(receiver) = self.receiver.get(&rcu::read_lock()) {
            receiver.messages_lost(irq);
        }
    }

    /// Bus side: one period of the bus's keepalive passed, and the device side answers (see
    /// [`Receiver::tick`]). Process context; may sleep.
    pub fn tick(&self, period_ms: u32) {
        self.with_receiver(|r, _| r.tick(period_ms));
    }

    /// Bus side: device number `dev_num` exists. Tells the transport, if one is connected.
    pub fn add_device(&self, dev_num: u16) -> Result {
        {
            let mut state = self.state.lock();
            if state.found.contains(&dev_num) {
                return Ok(());
            }
            state.found.push(dev_num, GFP_KERNEL)?;
        }
        self.with_receiver(|r, bus| r.device_added(bus, dev_num));
        Ok(())
    }

    /// Bus side: device number `dev_num` is gone. Tells the transport, if one is connected.
    pub fn remove_device(&self, dev_num: u16) {
        {
            let mut state = self.state.lock();
            let Some(pos) = state.found.iter().position(|&d| d == dev_num) else {
                return;
            };
            let _ = state.found.remove(pos);
        }
        self.with_receiver(|r, _| r.device_removed(dev_num));
    }

    /// Bus side: device numbers `dev_nums` are gone together (the bus lost them all). Tells
    /// the transport, if one is connected, in one call.
    pub fn remove_devices(&self, dev_nums: &[u16]) -> Result {
        let mut gone = KVec::with_capacity(dev_nums.len(), GFP_KERNEL)?;
        {
            let mut state = self.state.lock();
            for &dev_num in dev_nums {
                if let Some(pos) = state.found.iter().position(|&d| d == dev_num) {
                    let _ = state.found.remove(pos);
                    gone.push(dev_num, GFP_KERNEL)?;
                }
            }
        }
        self.with_receiver(|r, _| r.devices_removed(&gone));
        Ok(())
    }

    /// Transport side: connects `receiver`, which gets every message and device event from now
    /// on. Returns the connection and the devices already found.
    ///
    /// `bus.parent` is the auxiliary device the transport is bound to (the parent of the virtio
    /// devices it registers), `bus.dma` its parent. The connection is a resource of
    /// `bus.parent`: dropping the connection disconnects the receiver, and so does the
    /// transport's unbinding if it comes first.
    ///
    /// Fails with [`EBUSY`] if a receiver is already connected.
    pub fn connect(
        self: &Arc<Self>,
        bus: &BusDevices<'_>,
        receiver: Arc<dyn Receiver>,
    ) -> Result<(Devres<Connection>, KVec<u16>)> {
        let found = {
            let mut state = self.state.lock();
            if state.devices.is_some() {
                return Err(EBUSY);
            }
            let mut found = KVec::with_capacity(state.found.len(), GFP_KERNEL)?;
            found.extend_from_slice(&state.found, GFP_KERNEL)?;
            state.devices = Some((bus.parent.into(), bus.dma.into()));
            found
        };
        // Before the receiver is connected. On failure the connection is dropped, which
        // resets `devices`.
        let connection = Devres::new(bus.parent, Connection { link: self.clone() })?;
        // Nothing was connected: no grace period to wait for.
        self.receiver
            .replace(Some(KBox::new(receiver, GFP_KERNEL)?));
        Ok((connection, found))
    }
}

/// A connected [`Receiver`]; dropping it disconnects the receiver and waits until no call into
/// it is in progress and no deferred call is queued, so that the receiver (and the module that
/// implements it) can go away.
///
/// Only handed out inside a [`Devres`] of the auxiliary device the transport is bound to (see
/// [`BusLink::connect`]).
pub struct Connection {
    link: Arc<BusLink>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        let receiver = {
            let mut state = self.link.state.lock();
            // Returns once no delivery runs any more.
            let receiver = self.link.receiver.replace(None);
            while state.in_flight > 0 {
                self.link.idle.wait(&mut state);
            }
            state.devices = None;
            receiver
        };
        // A deferred call queued before finds no receiver; not under `state`, which it takes.
        self.link.work.flush();
        // Outside the locks: it may be the last reference.
        drop(receiver);
    }
}
