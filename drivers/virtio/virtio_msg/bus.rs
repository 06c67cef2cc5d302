// SPDX-License-Identifier: GPL-2.0

//! One virtio-msg bus, seen from the transport: its devices, and the routing of what it
//! delivers.
//!
//! [`BusHandle`] is what every device of the bus shares: the bus itself (taken away at
//! shutdown, after which sending fails with `ENODEV`), the routing table from device number to
//! device, and the counters. [`BusCore`] is the [`Receiver`] connected to the bus's link: it
//! decodes what the bus delivers and registers or unregisters virtio devices as the bus finds
//! or loses them.
//!
//! # Recovery
//!
//! A device that stopped answering is broken at once (its virtqueues fail what is in flight);
//! one that asks for a reset (DEVICE_NEEDS_RESET) is reset, then broken, by the recovery, the
//! deferred call of the bus's link ([`Receiver::deferred`], in process context, with the bus's
//! devices lent bound), reset first so that it stops writing its rings. Then the recovery
//! removes its virtio device and
//! probes the device number again, as if the bus had reported it gone and back: a device that
//! works again gets a fresh driver, one that stays silent fails its probe and is left out. A
//! remove and re-add rather than the virtio core's `reset_prepare`/`reset_done`, which only
//! virtio-blk implements; every driver handles removal. At most [`MAX_RECOVERIES`] times per
//! device number while the transport is bound, so a device that keeps failing cannot keep its
//! driver cycling.

use kernel::{
    alloc::{kvec::PushError, KVec},
    device,
    devres::Devres,
    interrupt::LocalInterruptDisabled,
    new_mutex,
    prelude::*,
    revocable::Revocable,
    sync::{
        aref::ARef,
        atomic::{Atomic, Relaxed},
        rcu::{self, RcuPointer},
        Arc, Mutex,
    },
    virtio::{
        msg::{Bus, BusDevices, BusLink, Receiver},
        transport::{DeviceId, Registration, Unregistered},
    },
};

use crate::{
    device::{MsgDevice, MsgTransport},
    request::Sender,
    stats::{Dropped, Stats},
    wire::{Class, Frame},
};

/// Device numbers at or above this are refused: the routing table has a slot for each (the
/// AMP PCI bus enumerates that many at most).
const MAX_DEV_NUM: u16 = 256;
/// Recoveries of one device number while the transport is bound (see the module docs).
pub(crate) const MAX_RECOVERIES: u32 = 3;
/// Listed device numbers in a row that do not answer their probe, after which the others
/// listed are not probed (see [`BusCore::probe_listed`]).
pub(crate) const MAX_SILENT_PROBES: u32 = 4;

/// What the devices of one bus share.
#[pin_data]
pub(crate) struct BusHandle {
    /// The bus; `None` once the transport let go of it. Only held to take a reference.
    #[pin]
    bus: Mutex<Option<Arc<dyn Bus>>>,
    /// The bus again, for kicks sent from atomic context (RCU, no lock); revoked together with
    /// `bus`.
    #[pin]
    atomic_bus: Revocable<Arc<dyn Bus>>,
    max_msg_size: usize,
    timeout_ms: u32,
    /// Device for messages: the bus's auxiliary device.
    dev: ARef<device::Device>,
    /// Devices by device number, borrowed under RCU while a device handles what the bus
    /// delivered, in the bus's interrupt handler. Set under `routes_update`.
    routes: KVec<RcuPointer<Arc<MsgDevice>>>,
    #[pin]
    routes_update: Mutex<()>,
    stats: Arc<Stats>,
    /// The bus's link, whose deferred call removes and probes again the devices that need it;
    /// taken away at shutdown (it refers to the bus's core, which refers to this).
    link: RcuPointer<Arc<BusLink>>,
}

impl BusHandle {
    pub(crate) fn new(
        bus: Arc<dyn Bus>,
        dev: ARef<device::Device>,
        timeout_ms: u32,
        stats: Arc<Stats>,
    ) -> impl PinInit<Self, Error> {
        let max_msg_size = bus.max_msg_size();
        let mut routes = KVec::new();
        let table = routes.reserve(MAX_DEV_NUM.into(), GFP_KERNEL);
        for _ in 0..MAX_DEV_NUM {
            // Cannot fail: room was reserved (if it was not, `table` says so below).
            let _ = routes.push_within_capacity(RcuPointer::new(None));
        }
        try_pin_init!(Self {
            atomic_bus <- Revocable::new(bus.clone()),
            bus <- new_mutex!(Some(bus)),
            max_msg_size,
            timeout_ms,
            dev,
            routes: {
                table?;
                routes
            },
            routes_update <- new_mutex!(()),
            stats,
            link: RcuPointer::new(None),
        })
    }

    pub(crate) fn max_msg_size(&self) -> usize {
        self.max_msg_size
    }

    /// Where the device's shared memory regions may lie (see [`Bus::shm_window`]); `None`
    /// once the transport let go of the bus.
    pub(crate) fn shm_window(&self) -> Option<core::ops::Range<u64>> {
        self.bus.lock().as_ref().and_then(|bus| bus.shm_window())
    }

    pub(crate) fn timeout_ms(&self) -> u32 {
        self.timeout_ms
    }

    pub(crate) fn dev(&self) -> &device::Device {
        &self.dev
    }

    pub(crate) fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Routes what the bus delivers for `dev_num` to `dev`.
    pub(crate) fn add_route(&self, dev_num: u16, dev: Arc<MsgDevice>) -> Result {
        let slot = self.routes.get(usize::from(dev_num)).ok_or(ERANGE)?;
        let _update = self.routes_update.lock();
        if slot.get(&rcu::read_lock()).is_some() {
            return Err(EEXIST);
        }
        // Nothing was there: no grace period to wait for.
        let _ = slot.replace(Some(dev));
        Ok(())
    }

    /// Stops routing to `dev_num`; on return, no delivery to it runs any more. Process
    /// context.
    pub(crate) fn remove_route(&self, dev_num: u16) {
        if let Some(slot) = self.routes.get(usize::from(dev_num)) {
            let old = {
                let _update = self.routes_update.lock();
                slot.replace(None)
            };
            drop(old);
        }
    }

    /// Sends `msg`, whose message id is `msg_id`, and counts it. The bus may sleep while it
    /// waits for room: no lock is held meanwhile.
    fn send_counted(&self, msg: &[u8], msg_id: u8) -> Result {
        let bus = self.bus.lock().clone().ok_or(ENODEV)?;
        let result = bus.send(msg);
        match result {
            Ok(()) => self.stats.sent(msg_id),
            Err(_) => self.stats.send_error(),
        }
        result
    }

    /// Sends an event (no response expected).
    pub(crate) fn send_event(&self, msg: &[u8], msg_id: u8) -> Result {
        self.send_counted(msg, msg_id)
    }

    /// Sends an event from atomic context; [`EBUSY`] if the bus has no room right now.
    pub(crate) fn send_event_atomic(&self, msg: &[u8], msg_id: u8) -> Result {
        let result = self
            .atomic_bus
            .try_access_with(|bus| bus.send_atomic(msg))
            .unwrap_or(Err(ENODEV));
        if result.is_ok() {
            self.stats.sent(msg_id);
        }
        result
    }

    /// Has the devices that asked for it recovered (see the module docs). Any context.
    pub(crate) fn request_recovery(&self) {
        let guard = rcu::read_lock();
        if let Some(link) = self.link.get(&guard) {
            // Under the read side, so that the reference dropped here is never the last (the
            // pointer keeps one until a grace period after it is cleared).
            Arc::from(link).defer();
        }
    }

    /// Lets go of the bus: nothing is sent any more.
    fn close(&self) {
        self.atomic_bus.revoke();
        let bus = self.bus.lock().take();
        drop(bus);
    }

    /// Decodes and routes one delivered message (`bytes` may run past its `msg_size`: a bus
    /// may hand on a whole slot). With interrupts disabled (`irq`): the bus's interrupt
    /// handler, or as from one.
    pub(crate) fn deliver(&self, bytes: &[u8], irq: &LocalInterruptDisabled) {
        let Ok((header, frame)) = Frame::decode_with_header(bytes) else {
            return self.stats.dropped(Dropped::Malformed);
        };
        if header.class == Class::Bus {
            // Bus messages belong to the bus, which must not pass them on.
            return self.stats.dropped(Dropped::WrongDirection);
        }
        self.stats.received(header.msg_id);
        let len = usize::from(header.msg_size).min(bytes.len());
        let guard = rcu::read_lock();
        let route = self.routes.get(usize::from(header.dev_num));
        match route.and_then(|slot| slot.get(&guard)) {
            Some(dev) => dev.receive(&header, &frame, bytes.get(..len).unwrap_or(bytes), irq),
            None => self.stats.dropped(Dropped::NoDevice),
        }
    }

    /// Has every device look for used buffers whose EVENT_USED the bus lost (see
    /// [`Receiver::messages_lost`]).
    fn poll_devices(&self, irq: &LocalInterruptDisabled) {
        let guard = rcu::read_lock();
        for dev in self.routes.iter().filter_map(|slot| slot.get(&guard)) {
            dev.poll_queues(irq);
        }
    }
}

impl Sender for BusHandle {
    fn send(&self, msg: &[u8], msg_id: u8) -> Result {
        self.send_counted(msg, msg_id)
    }

    fn sync(&self) -> Result {
        // Not under the lock: the barrier waits for the device, and sends go on meanwhile.
        let bus = self.bus.lock().clone().ok_or(ENODEV)?;
        bus.sync()
    }

    fn synced(&self, supported: bool) {
        if self.stats.barrier(supported) == 0 && !supported {
            dev_warn!(
                self.dev(),
                "bus has no barrier: after a timeout, a late response may be taken for a later one\n"
            );
        }
    }
}

/// The devices of a bus, and device numbers removed before their initial probe.
struct Devices {
    registered: KVec<Entry>,
    /// Reported removed while not registered: the devices listed at connection time may be
    /// gone by the time their initial probe runs.
    removed_early: KVec<u16>,
    /// Listed by the bus when the transport connected, and not probed yet.
    listed: KVec<u16>,
}

/// A registered virtio device of the bus.
struct Entry {
    dev: Arc<MsgDevice>,
    registration: Devres<Registration<MsgTransport>>,
    /// Times its device number was recovered before.
    recoveries: u32,
}

/// The transport's side of one bus.
#[pin_data]
pub(crate) struct BusCore {
    handle: Arc<BusHandle>,
    /// Held while adding or removing a device.
    #[pin]
    devices: Mutex<Devices>,
    closed: Atomic<bool>,
}

impl BusCore {
    pub(crate) fn new(handle: Arc<BusHandle>) -> impl PinInit<Self> {
        pin_init!(Self {
            handle,
            devices <- new_mutex!(Devices {
                registered: KVec::new(),
                removed_early: KVec::new(),
                listed: KVec::new(),
            }),
            closed: Atomic::new(false),
        })
    }

    /// Lets the bus's devices be recovered (see the module docs) until [`BusCore::shutdown`];
    /// `link` is the bus's link, which this is connected to: the recovery is its deferred call
    /// ([`Receiver::deferred`]).
    pub(crate) fn enable_recovery(&self, link: Arc<BusLink>) {
        // Nothing was there before: no grace period to wait for.
        let _ = self.handle.link.replace(Some(link));
    }

    /// Removes every device that needs recovering and probes its device number again, on the
    /// bus's devices `bus`.
    ///
    /// The device is removed without the `devices` lock: a driver's removal may wait long
    /// (7.2's virtio-blk waits for its requests in flight), and the bus's other devices must
    /// still come and go meanwhile.
    fn recover(&self, bus: &BusDevices<'_>) {
        while !self.closed.load(Relaxed) {
            let entry = {
                let mut devices = self.devices.lock();
                let pos = devices
                    .registered
                    .iter()
                    .position(|e| e.dev.wants_recovery());
                match pos.map(|p| devices.registered.remove(p)) {
                    Some(Ok(entry)) => entry,
                    _ => break,
                }
            };
            let dev_num = entry.dev.dev_num();
            let recoveries = entry.recoveries + 1;
            entry.dev.stop();
            self.remove(entry);
            let mut devices = self.devices.lock();
            if self.closed.load(Relaxed) {
                break;
            }
            if devices.removed_early.contains(&dev_num) {
                // Reported gone by the bus meanwhile: not probed again, but the other devices
                // that need recovering still are.
                continue;
            }
            if recoveries > MAX_RECOVERIES {
                dev_err!(
                    self.handle.dev(),
                    "device {dev_num}: failed after {MAX_RECOVERIES} recoveries, removed for good\n"
                );
                continue;
            }
            let max = MAX_RECOVERIES;
            dev_info!(
                self.handle.dev(),
                "device {dev_num}: removed to recover it, probing again ({recoveries} of {max})\n"
            );
            // What the device still had to say for its old driver arrives before the barrier's
            // answer and is dropped: nothing of it can answer the new probe.
            let _ = self.handle.sync();
            // A failure said so.
            let _ = self.add_locked(bus, &mut devices, dev_num, recoveries);
        }
    }

    /// The registered device `dev_num` (for tests).
    #[cfg(CONFIG_VIRTIO_MSG_KUNIT_TEST)]
    pub(crate) fn device(&self, dev_num: u16) -> Option<Arc<MsgDevice>> {
        let devices = self.devices.lock();
        let entry = devices
            .registered
            .iter()
            .find(|e| e.dev.dev_num() == dev_num);
        entry.map(|e| e.dev.clone())
    }

    /// Probes device `dev_num` and registers it with the virtio core, on the bus's devices
    /// `bus`.
    fn add(&self, bus: &BusDevices<'_>, dev_num: u16, recoveries: u32) -> Result<Entry> {
        let dev = MsgDevice::probe(self.handle.clone(), dev_num)?;
        let info = *dev.info();
        let id = DeviceId {
            device: info.device_id,
            vendor: info.vendor_id,
        };
        let transport = MsgTransport::new(dev.clone());
        let unregistered = Unregistered::new(bus.parent, bus.dma, id, transport)?;
        dev.set_handle(unregistered.handle())?;
        if let Err(e) = self.handle.add_route(dev_num, dev.clone()) {
            dev.clear_handle();
            dev.stop_work();
            return Err(e);
        }
        match unregistered.register() {
            Ok(registration) => Ok(Entry {
                dev,
                registration,
                recoveries,
            }),
            Err(e) => {
                self.handle.remove_route(dev_num);
                dev.clear_handle();
                // No work of the device may outlive it (and the module).
                dev.stop_work();
                Err(e)
            }
        }
    }

    /// Unregisters a device (its driver is removed, which resets the device and deletes its
    /// queues), then stops routing to it.
    fn remove(&self, entry: Entry) {
        let Entry {
            dev, registration, ..
        } = entry;
        drop(registration);
        self.handle.remove_route(dev.dev_num());
        dev.clear_handle();
        dev.stop_work();
    }

    /// Unregisters every device and lets go of the bus. Nothing is added afterwards.
    pub(crate) fn shutdown(&self) {
        self.closed.store(true, Relaxed);
        // A deferred call running now sees `closed`; the connection's drop, next, waits for it.
        drop(self.handle.link.replace(None));
        let mut devices = self.devices.lock();
        while let Some(entry) = devices.registered.pop() {
            self.remove(entry);
        }
        drop(devices);
        self.handle.close();
    }
}

impl BusCore {
    /// Has the devices the bus listed when the transport connected probed, by the deferred call
    /// that recovers devices ([`BusCore::enable_recovery`] must have run).
    ///
    /// Not here: the transport's probe would hold the bus's auxiliary device, and with it the
    /// bus's removal and rmmod, for as long as the probes take, which a bus listing many
    /// silent device numbers makes hours.
    pub(crate) fn add_listed(&self, dev_nums: KVec<u16>) {
        self.devices.lock().listed = dev_nums;
        self.handle.request_recovery();
    }

    /// Probes the listed devices (see [`BusCore::add_listed`]) one by one, in their order,
    /// unless reported removed since, until the transport unbinds: each costs at most the
    /// three timeouts of a silent device, so unbinding waits for one at most. After
    /// [`MAX_SILENT_PROBES`] silent ones in a row, the others are not probed: a bus that
    /// lists numbers nobody answers is not worth hours of probes.
    pub(crate) fn probe_listed(&self, bus: &BusDevices<'_>) {
        let mut silent = 0;
        loop {
            let mut devices = self.devices.lock();
            if self.closed.load(Relaxed) || devices.listed.is_empty() {
                return;
            }
            let Ok(dev_num) = devices.listed.remove(0) else {
                return;
            };
            if devices.removed_early.contains(&dev_num) {
                continue;
            }
            if self.add_locked(bus, &mut devices, dev_num, 0) != Err(ETIMEDOUT) {
                silent = 0;
                continue;
            }
            silent += 1;
            if silent == MAX_SILENT_PROBES {
                let left = core::mem::take(&mut devices.listed);
                if !left.is_empty() {
                    dev_err!(
                        self.handle.dev(),
                        "{silent} listed devices in a row did not answer: {} more not probed\n",
                        left.len()
                    );
                }
                return;
            }
        }
    }

    fn add_locked(
        &self,
        bus: &BusDevices<'_>,
        devices: &mut Devices,
        dev_num: u16,
        recoveries: u32,
    ) -> Result {
        let registered = &mut devices.registered;
        if self.closed.load(Relaxed) || registered.iter().any(|e| e.dev.dev_num() == dev_num) {
            return Ok(());
        }
        if let Err(e) = registered.reserve(1, GFP_KERNEL) {
            dev_err!(self.handle.dev(), "device {dev_num}: out of memory\n");
            return Err(e.into());
        }
        match self.add(bus, dev_num, recoveries) {
            Ok(entry) => {
                let info = *entry.dev.info();
                dev_info!(
                    self.handle.dev(),
                    "device {dev_num}: virtio device id {}, vendor {:#x}, {} queues\n",
                    info.device_id,
                    info.vendor_id,
                    info.max_virtqueues
                );
                // Cannot fail: room was reserved above.
                let _ = registered.push(entry, GFP_KERNEL);
                Ok(())
            }
            Err(e) => {
                dev_warn!(self.handle.dev(), "device {dev_num}: not added ({e:?})\n");
                Err(e)
            }
        }
    }
}

impl Receiver for BusCore {
    fn receive(&self, msg: &[u8], irq: &LocalInterruptDisabled) {
        self.handle.deliver(msg, irq);
    }

    fn messages_lost(&self, irq: &LocalInterruptDisabled) {
        self.handle.stats.bus_loss();
        self.handle.poll_devices(irq);
    }

    /// Each registered device is looked at once (see [`MsgDevice::tick`]), outside the
    /// `devices` lock: a device that does not answer takes a few timeouts, and devices must
    /// still come and go meanwhile. Nor does it wait for the lock: a probe holds it for as long
    /// as its device takes to answer, and the bus's unbind would wait behind this; the next
    /// tick looks instead.
    fn tick(&self, period_ms: u32) {
        let devices: KVec<Arc<MsgDevice>> = {
            let Some(devices) = self.devices.try_lock() else {
                return;
            };
            let mut list =
                KVec::with_capacity(devices.registered.len(), GFP_KERNEL).unwrap_or_default();
            for entry in devices.registered.iter() {
                if list.push_within_capacity(entry.dev.clone()).is_err() {
                    // Out of memory: the others are looked at next time.
                    break;
                }
            }
            list
        };
        for dev in devices {
            if self.closed.load(Relaxed) {
                return;
            }
            dev.tick(period_ms);
        }
    }

    fn device_added(&self, bus: &BusDevices<'_>, dev_num: u16) {
        let mut devices = self.devices.lock();
        devices.removed_early.retain(|d| *d != dev_num);
        // A failure said so.
        let _ = self.add_locked(bus, &mut devices, dev_num, 0);
    }

    /// The devices listed at connection are probed, then the devices that need it recovered.
    fn deferred(&self, bus: &BusDevices<'_>) {
        self.probe_listed(bus);
        self.recover(bus);
    }

    fn device_removed(&self, dev_num: u16) {
        self.devices_removed(&[dev_num]);
    }

    /// Every device is failed first, under the `devices` lock (which never waits for a
    /// device), then removed one by one without it: a removal may still wait for its driver,
    /// and neither the others nor recovery, rmmod or unbind must wait behind it.
    fn devices_removed(&self, dev_nums: &[u16]) {
        // Reserved first: the entries are moved out under the lock, removed after it.
        let mut gone = KVec::with_capacity(dev_nums.len(), GFP_KERNEL).unwrap_or_default();
        {
            let mut devices = self.devices.lock();
            for &dev_num in dev_nums {
                let pos = devices
                    .registered
                    .iter()
                    .position(|e| e.dev.dev_num() == dev_num);
                match pos.map(|p| devices.registered.remove(p)) {
                    Some(Ok(entry)) => {
                        dev_info!(self.handle.dev(), "device {dev_num}: gone\n");
                        // Before its driver is removed: the device will not answer its last
                        // requests nor complete what it was given, and drivers fail in-flight
                        // requests of a broken device when they are removed (virtio-blk does).
                        // Gone: its removal sends it nothing (no last reset to wait for).
                        entry.dev.gone();
                        if let Err(PushError(entry)) = gone.push_within_capacity(entry) {
                            // Out of memory for the list: removed here, then.
                            self.remove(entry);
                        }
                    }
                    _ => {
                        if !devices.removed_early.contains(&dev_num) {
                            let _ = devices.removed_early.push(dev_num, GFP_KERNEL);
                        }
                    }
                }
            }
        }
        for entry in gone {
            self.remove(entry);
        }
    }
}
