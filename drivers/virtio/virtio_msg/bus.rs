// SPDX-License-Identifier: GPL-2.0

//! One virtio-msg bus, seen from the transport: its devices, and the routing of what it
//! delivers.
//!
//! [`BusHandle`] is what every device of the bus shares: the bus itself (taken away at
//! shutdown, after which sending fails with `ENODEV`), the routing table from device number to
//! device, and the counters. [`BusCore`] is the [`Receiver`] connected to the bus's link: it
//! decodes what the bus delivers and registers or unregisters virtio devices as the bus finds
//! or loses them.

use kernel::{
    alloc::KVec,
    device, new_mutex, new_spinlock_irqsave,
    prelude::*,
    revocable::Revocable,
    sync::{
        aref::ARef,
        atomic::{Atomic, Relaxed},
        Arc, Mutex, SpinLockIrqSave,
    },
    virtio::{
        msg::{Bus, Receiver},
        transport::{DeviceId, Registration, Unregistered},
    },
};

use crate::{
    device::{MsgDevice, MsgTransport},
    request::Sender,
    stats::{Dropped, Stats},
    wire::{Class, Frame},
};

/// Device numbers at or above this are refused (the routing table is indexed by them).
const MAX_DEV_NUM: u16 = 4096;

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
    /// Devices by device number. Held while a device handles what the bus delivered, in the
    /// bus's interrupt handler.
    #[pin]
    routes: SpinLockIrqSave<KVec<Option<Arc<MsgDevice>>>>,
    stats: Arc<Stats>,
}

impl BusHandle {
    pub(crate) fn new(
        bus: Arc<dyn Bus>,
        dev: ARef<device::Device>,
        timeout_ms: u32,
        stats: Arc<Stats>,
    ) -> impl PinInit<Self, Error> {
        let max_msg_size = bus.max_msg_size();
        try_pin_init!(Self {
            atomic_bus <- Revocable::new(bus.clone()),
            bus <- new_mutex!(Some(bus)),
            max_msg_size,
            timeout_ms,
            dev,
            routes <- new_spinlock_irqsave!(KVec::new()),
            stats,
        })
    }

    pub(crate) fn max_msg_size(&self) -> usize {
        self.max_msg_size
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
        if dev_num >= MAX_DEV_NUM {
            return Err(ERANGE);
        }
        let mut routes = self.routes.lock();
        while routes.len() <= usize::from(dev_num) {
            routes.push(None, GFP_ATOMIC)?;
        }
        match routes.get_mut(usize::from(dev_num)) {
            Some(slot @ None) => {
                *slot = Some(dev);
                Ok(())
            }
            _ => Err(EEXIST),
        }
    }

    pub(crate) fn remove_route(&self, dev_num: u16) {
        let old = self
            .routes
            .lock()
            .get_mut(usize::from(dev_num))
            .and_then(Option::take);
        drop(old);
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

    /// Lets go of the bus: nothing is sent any more.
    fn close(&self) {
        self.atomic_bus.revoke();
        let bus = self.bus.lock().take();
        drop(bus);
    }

    /// Decodes and routes one delivered message (`bytes` may run past its `msg_size`: a bus
    /// may hand on a whole slot). Any context, the bus's interrupt handler included.
    pub(crate) fn deliver(&self, bytes: &[u8]) {
        let Ok((header, frame)) = Frame::decode_with_header(bytes) else {
            return self.stats.dropped(Dropped::Malformed);
        };
        if header.class == Class::Bus {
            // Bus messages belong to the bus, which must not pass them on.
            return self.stats.dropped(Dropped::WrongDirection);
        }
        self.stats.received(header.msg_id);
        let len = usize::from(header.msg_size).min(bytes.len());
        let routes = self.routes.lock();
        match routes.get(usize::from(header.dev_num)) {
            Some(Some(dev)) => dev.receive(&header, &frame, bytes.get(..len).unwrap_or(bytes)),
            _ => self.stats.dropped(Dropped::NoDevice),
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
}

/// A registered virtio device of the bus.
struct Entry {
    dev: Arc<MsgDevice>,
    registration: Registration<MsgTransport>,
}

/// The transport's side of one bus.
#[pin_data]
pub(crate) struct BusCore {
    handle: Arc<BusHandle>,
    /// Parent of the virtio devices, and the device their queues are DMA-mapped through.
    parent: ARef<device::Device>,
    /// Held while adding or removing a device.
    #[pin]
    devices: Mutex<Devices>,
    closed: Atomic<bool>,
}

impl BusCore {
    pub(crate) fn new(handle: Arc<BusHandle>, parent: ARef<device::Device>) -> impl PinInit<Self> {
        pin_init!(Self {
            handle,
            parent,
            devices <- new_mutex!(Devices { registered: KVec::new(), removed_early: KVec::new() }),
            closed: Atomic::new(false),
        })
    }

    /// Probes device `dev_num` and registers it with the virtio core.
    fn add(&self, dev_num: u16) -> Result<Entry> {
        let dev = MsgDevice::probe(self.handle.clone(), dev_num)?;
        let info = *dev.info();
        let id = DeviceId {
            device: info.device_id,
            vendor: info.vendor_id,
        };
        let unregistered = Unregistered::new(&self.parent, id, MsgTransport::new(dev.clone()))?;
        dev.set_handle(Some(unregistered.handle()));
        if let Err(e) = self.handle.add_route(dev_num, dev.clone()) {
            dev.set_handle(None);
            return Err(e);
        }
        match unregistered.register() {
            Ok(registration) => Ok(Entry { dev, registration }),
            Err(e) => {
                self.handle.remove_route(dev_num);
                dev.set_handle(None);
                Err(e)
            }
        }
    }

    /// Unregisters a device (its driver is removed, which resets the device and deletes its
    /// queues), then stops routing to it.
    fn remove(&self, entry: Entry) {
        let Entry { dev, registration } = entry;
        drop(registration);
        self.handle.remove_route(dev.dev_num());
        dev.set_handle(None);
        dev.flush_kicks();
    }

    /// Unregisters every device and lets go of the bus. Nothing is added afterwards.
    pub(crate) fn shutdown(&self) {
        self.closed.store(true, Relaxed);
        let mut devices = self.devices.lock();
        while let Some(entry) = devices.registered.pop() {
            self.remove(entry);
        }
        drop(devices);
        self.handle.close();
    }
}

impl BusCore {
    /// Probes a device the bus listed when the transport connected, unless it was reported
    /// removed since.
    pub(crate) fn add_initial(&self, dev_num: u16) {
        let mut devices = self.devices.lock();
        if !devices.removed_early.contains(&dev_num) {
            self.add_locked(&mut devices, dev_num);
        }
    }

    fn add_locked(&self, devices: &mut Devices, dev_num: u16) {
        let registered = &mut devices.registered;
        if self.closed.load(Relaxed) || registered.iter().any(|e| e.dev.dev_num() == dev_num) {
            return;
        }
        if registered.reserve(1, GFP_KERNEL).is_err() {
            dev_err!(self.handle.dev(), "device {dev_num}: out of memory\n");
            return;
        }
        match self.add(dev_num) {
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
            }
            Err(e) => dev_warn!(self.handle.dev(), "device {dev_num}: not added ({e:?})\n"),
        }
    }
}

impl Receiver for BusCore {
    fn receive(&self, msg: &[u8]) {
        self.handle.deliver(msg);
    }

    fn device_added(&self, dev_num: u16) {
        let mut devices = self.devices.lock();
        devices.removed_early.retain(|d| *d != dev_num);
        self.add_locked(&mut devices, dev_num);
    }

    fn device_removed(&self, dev_num: u16) {
        let mut devices = self.devices.lock();
        let pos = devices
            .registered
            .iter()
            .position(|e| e.dev.dev_num() == dev_num);
        match pos.map(|p| devices.registered.remove(p)) {
            Some(Ok(entry)) => {
                dev_info!(self.handle.dev(), "device {dev_num}: gone\n");
                // Before its driver is removed: the device will not answer its last requests
                // nor complete what it was given, and drivers fail in-flight requests of a
                // broken device when they are removed (virtio-blk does).
                entry.dev.fail();
                self.remove(entry);
            }
            _ => {
                if !devices.removed_early.contains(&dev_num) {
                    let _ = devices.removed_early.push(dev_num, GFP_KERNEL);
                }
            }
        }
    }
}
