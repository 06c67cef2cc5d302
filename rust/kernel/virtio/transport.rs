// SPDX-License-Identifier: GPL-2.0

//! Writing a virtio transport in Rust.
//!
//! A transport implements [`Transport`]; [`Unregistered::new`] wraps it in a
//! `struct virtio_device` whose `virtio_config_ops` call the trait's methods, and
//! [`Unregistered::register`] hands the device to the virtio core, which binds the matching
//! virtio driver (virtio-net, virtio-blk, ...). Dropping the [`Registration`] unregisters the
//! device; the memory is freed when the last reference goes away.
//!
//! A virtio device must not outlive the binding of its parent, nor its virtqueues that of the
//! device they are DMA-mapped through, which is named apart: a transport bound to an auxiliary
//! device hangs its virtio devices off that device and maps through the auxiliary device's
//! parent, the hardware. The type system says so: [`Unregistered::new`] takes the parent as a
//! [`device::Device<Bound>`] and the DMA device as the parent or one of its ancestors, and
//! [`Unregistered::register`] returns the [`Registration`] inside a [`Devres`] of the parent,
//! which unregisters the device when the parent unbinds if its owner has not dropped it by
//! then.
//!
//! Virtqueues are created and destroyed here, not by the transport: for each queue the driver
//! asks for, the transport only answers [`Transport::queue_max_size`] and is told the ring's
//! addresses by [`Transport::queue_enable`]. The transport delivers "used buffers" interrupts
//! with [`Handle::queue_interrupt`], which looks the queue up by index in O(1) under RCU (no
//! lock) and runs its callback under that queue's own lock; `del_vqs` takes the queues out
//! and waits for an RCU grace period before it deletes them. A callback therefore never runs
//! after its queue is deleted, whatever the transport does, and callbacks of two queues never
//! wait for each other.
//!
//! A [`Handle`] can be taken before the device is registered, so that a transport can route
//! what its device sends (responses, interrupts) from the very first operation: the virtio core
//! already resets the device and probes the driver inside `register_virtio_device()`.
//!
//! # Contexts
//!
//! The configuration, status, feature and queue set-up operations run in process context and
//! may sleep. [`Transport::notify`] runs in atomic context (drivers kick with spinlocks held).
//! [`Handle::queue_interrupt`] and [`Handle::config_changed`] may be called in any context, the
//! transport's hard interrupt handler included (where virtio-pci runs its callbacks too); from
//! process context the virtqueue callback runs as from an interrupt (see
//! [`as_interrupt`](super::as_interrupt)).
//! So may [`Handle::break_device`], at any point of the device's life: it breaks the queues of
//! the transport's own table, not the virtio core's list (whose lock is not interrupt-safe and
//! which the core only sets up at registration).
//!
//! # Examples
//!
//! ```ignore
//! // `adev: &auxiliary::Device<Bound>`, the device the transport's driver is bound to.
//! let id = DeviceId { device: 4, vendor: 0 };
//! let dev = Unregistered::new(adev.as_ref(), adev.parent(), id, MyTransport::new())?;
//! my_router.insert(dev.handle())?;  // deliver interrupts from now on
//! let registration = dev.register()?;
//! // ... the virtio-rng driver is bound; later:
//! drop(registration);               // unbinds the driver, unregisters the device
//! ```

use super::{feature, Features};
use crate::{
    alloc::{kvec::PushError, KVec},
    bindings,
    device::{self, Bound},
    devres::Devres,
    error::{from_result, VTABLE_DEFAULT_ERROR},
    ffi::{c_char, c_int, c_uint, c_void},
    interrupt::LocalInterruptDisabled,
    new_spinlock_irq,
    page::PAGE_SIZE,
    prelude::*,
    sync::{
        aref::ARef,
        rcu::{self, RcuPointer},
        Arc, SpinLockIrq,
    },
    types::Opaque,
};
use core::{marker::PhantomData, ptr::NonNull};

/// A `struct virtio_device`, as seen by the transport that registered it.
///
/// # Invariants
///
/// `self.0` is a valid `struct virtio_device` allocated by [`Unregistered::new`].
/// Its locks and lists may not be initialised yet (the virtio core calls the status ops on the
/// failure path of `register_virtio_device()` before initialising them), so nothing here uses
/// them; see [`Handle::break_device`] for what does.
#[repr(transparent)]
pub struct Device(Opaque<bindings::virtio_device>);

impl Device {
    /// # Safety
    ///
    /// `ptr` must point to a valid `virtio_device` allocated by [`Unregistered::new`]
    /// that stays valid for `'a`.
    pub(crate) unsafe fn from_raw<'a>(ptr: *mut bindings::virtio_device) -> &'a Self {
        // SAFETY: `Device` is a transparent wrapper of `virtio_device`; validity is guaranteed
        // by the caller.
        unsafe { &*ptr.cast() }
    }

    /// The C `struct virtio_device`.
    pub fn as_raw(&self) -> *mut bindings::virtio_device {
        self.0.get()
    }

    /// Sets feature `bit` in the negotiated features; for transport bits the virtio core leaves
    /// to the transport. Called from `finalize_features`, before the device is told.
    pub(crate) fn set_feature(&self, bit: u32) {
        let mut f = self.features();
        f.set(bit);
        // SAFETY: `as_raw()` is valid by the type invariant, so is the array the helper returns;
        // the virtio core does not touch the features while it waits in `finalize_features`.
        unsafe { *self.features_array() = f.0 };
    }

    /// The features negotiated so far (what the driver accepted, once finalised).
    pub fn features(&self) -> Features {
        // SAFETY: `as_raw()` is valid by the type invariant, so is the array the helper returns;
        // the feature words are plain integers written by the virtio core before it calls into
        // the transport.
        Features(unsafe { *self.features_array() })
    }

    /// The device's feature words (`virtio_device::features_array`, which a union shares with
    /// the first word's older name), through a C helper rather than bindgen's name for the
    /// union.
    fn features_array(&self) -> *mut [u64; Features::WORDS] {
        // SAFETY: `as_raw()` is valid by the type invariant.
        unsafe { bindings::virtio_features_array(self.as_raw()) }.cast()
    }

    /// Whether feature `bit` has been negotiated.
    pub fn has_feature(&self, bit: u32) -> bool {
        self.features().has(bit)
    }
}

impl AsRef<device::Device> for Device {
    fn as_ref(&self) -> &device::Device {
        // SAFETY: `as_raw()` is valid by the type invariant, so is its embedded `struct device`.
        unsafe { device::Device::from_raw(&raw mut (*self.as_raw()).dev) }
    }
}

/// virtio device and vendor ids of a device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceId {
    /// virtio device id: 1 network, 2 block, 3 console, 4 entropy, ...
    pub device: u32,
    /// Vendor id.
    pub vendor: u32,
}

/// Where the rings of an enabled virtqueue live, as the device must address them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueConfig {
    /// Queue index.
    pub index: u16,
    /// Number of descriptors.
    pub size: u32,
    /// DMA address of the descriptor area.
    pub desc: u64,
    /// DMA address of the driver area (available ring).
    pub driver: u64,
    /// DMA address of the device area (used ring).
    pub device: u64,
}

/// The extra data of a notification when `VIRTIO_F_NOTIFICATION_DATA` is negotiated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NotificationData {
    /// Offset of the next available descriptor (15 bits for packed queues, 16 for split).
    pub offset: u16,
    /// Wrap counter (packed queues only).
    pub wrap: bool,
}

/// A shared memory region of a device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShmRegion {
    /// Guest physical address.
    pub addr: u64,
    /// Length in bytes.
    pub len: u64,
}

/// The operations of a virtio transport.
///
/// Methods that cannot report an error to the virtio core (configuration access, status) must
/// still return in bounded time: a transport whose device stopped answering breaks the device
/// ([`Handle::break_device`]) and returns something harmless (zeroes, status 0).
///
/// The last three are optional (`#[vtable]`): `shm_region` and `queue_reset` are left out of
/// the `virtio_config_ops` of a transport that does not implement them, as a C transport would
/// leave the pointer `NULL`.
#[vtable]
pub trait Transport: Send + Sync + 'static {
    /// Reads `buf.len()` bytes of configuration space from `offset`.
    fn get_config(&self, dev: &Device, offset: u32, buf: &mut [u8]);

    /// Writes `buf` to the configuration space at `offset`.
    fn set_config(&self, dev: &Device, offset: u32, buf: &[u8]);

    /// The configuration generation: changes whenever the configuration space does.
    fn generation(&self, dev: &Device) -> u32;

    /// The device status.
    fn get_status(&self, dev: &Device) -> u8;

    /// Sets the device status; never 0 (that is [`Transport::reset`]).
    fn set_status(&self, dev: &Device, status: u8);

    /// Resets the device. Afterwards [`Transport::get_status`] must return 0.
    fn reset(&self, dev: &Device);

    /// The features the device offers.
    fn get_features(&self, dev: &Device) -> Features;

    /// Tells the device which features the driver accepted ([`Device::features`]; the
    /// transport-specific bits were already filtered).
    fn finalize_features(&self, dev: &Device) -> Result;

    /// Largest size of queue `index`, before it is created. An error (typically [`ENOENT`] if
    /// the device has no such queue) fails the driver's `find_vqs()`.
    fn queue_max_size(&self, dev: &Device, index: u16) -> Result<u32>;

    /// Makes the device use the rings of queue `queue.index`.
    fn queue_enable(&self, dev: &Device, queue: &QueueConfig) -> Result;

    /// Called in atomic context when the driver made buffers available in queue `index`.
    /// Returns `false` if the device cannot be notified, which breaks the queue.
    fn notify(&self, index: u16, data: Option<NotificationData>) -> bool;

    /// Makes sure that memory operations done before this call are seen by every queue callback
    /// that runs after it. Optional: the abstraction already waits for the callbacks delivered
    /// through [`Handle::queue_interrupt`] (they run under its lock); a transport with
    /// deliveries of its own implements this too.
    fn synchronize_cbs(&self, _dev: &Device) {
        build_error!(VTABLE_DEFAULT_ERROR)
    }

    /// Shared memory region `id`, if the device has one. Optional: without it, devices have
    /// none.
    fn shm_region(&self, _dev: &Device, _id: u8) -> Option<ShmRegion> {
        build_error!(VTABLE_DEFAULT_ERROR)
    }

    /// Resets queue `index`: the device stops using it and forgets its rings. Its callbacks
    /// are already stopped. Optional: a transport that implements it negotiates
    /// `VIRTIO_F_RING_RESET` when the device offers it, and drivers may then reset and
    /// re-enable a queue (`virtqueue_reset()`, `virtqueue_resize()`): this, then
    /// [`Transport::queue_enable`] with the queue's (possibly new) rings.
    fn queue_reset(&self, _dev: &Device, _index: u16) -> Result {
        build_error!(VTABLE_DEFAULT_ERROR)
    }
}

/// Where the device is in its life.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Life {
    /// Allocated, not registered yet. Configuration changes reported by the transport are
    /// remembered and reported once the device is registered.
    New { config_changed: bool },
    /// Registered with the virtio core.
    Registered,
    /// Unregistered (or registration failed): nothing is reported any more.
    Gone,
}

/// A virtqueue created by `find_vqs`.
///
/// # Invariants
///
/// Points to a live `struct virtqueue` of the device, created by `vring_create_virtqueue()`,
/// for as long as it exists: only `delete_queues` deletes it, consuming it, once no callback
/// can reach it (never published, or taken out of [`Inner::queues`] an RCU grace period
/// before, so that every borrow from there has ended).
struct QueuePtr(NonNull<bindings::virtqueue>);

// SAFETY: By the type invariant the pointer is a live `virtqueue`, which may be used from any
// thread: the virtio core serialises what needs it, and the callbacks run under their queue's
// lock.
unsafe impl Send for QueuePtr {}

// SAFETY: As for `Send`: shared, the pointer is only handed to the C functions that the virtio
// core and the queue's lock serialise.
unsafe impl Sync for QueuePtr {}

/// A queue of the device. Its lock is held while its callback runs, and says whether it may
/// run (not while the queue is reset): each queue has its own, so the callbacks of two queues
/// never wait for each other.
#[pin_data]
struct Queue {
    vq: QueuePtr,
    #[pin]
    active: SpinLockIrq<bool>,
}

/// The queues of a device, by queue index.
type Queues = KVec<Pin<KBox<Queue>>>;

/// The allocation behind a device: the C `struct virtio_device`, the transport, and the state
/// that makes callbacks safe.
///
/// Reference-counted: one reference belongs to the `struct device` (dropped by its release
/// callback), the others to [`Handle`]s, [`Unregistered`] and [`Registration`].
///
/// # Invariants
///
/// `vdev` is initialised by [`Unregistered::new`] before any other thread can reach it, and
/// from then on it is only changed by the virtio core under its own locking, or by this module
/// under `life` (registration) or a queue's lock (breaking it); `queues` holds only live
/// queues of `vdev`.
#[repr(C)]
#[pin_data]
struct Inner<T: Transport> {
    /// Must stay the first field: `container_of` from the C callbacks relies on it.
    #[pin]
    vdev: Opaque<bindings::virtio_device>,
    /// The queues created by `find_vqs`, borrowed under RCU in the transport's interrupt
    /// handler; set by `find_vqs`, taken out by `del_vqs`.
    queues: RcuPointer<KBox<Queues>>,
    /// Taken in the transport's interrupt handler (configuration changes).
    #[pin]
    life: SpinLockIrq<Life>,
    /// The device the virtqueues are allocated and DMA-mapped through.
    dma: ARef<device::Device>,
    transport: T,
}

// SAFETY: By the type invariants the C part is only changed under the virtio core's locking
// or under `life`; the Rust parts are `Send`/`Sync` themselves (`T: Transport` is
// `Send + Sync`).
unsafe impl<T: Transport> Send for Inner<T> {}
// SAFETY: See above.
unsafe impl<T: Transport> Sync for Inner<T> {}

impl<T: Transport> Inner<T> {
    /// The queue at `index`, borrowed for as long as `guard` is held.
    fn queue<'a>(&'a self, guard: &'a rcu::Guard, index: u16) -> Option<&'a Queue> {
        self.queues
            .get(guard)
            .and_then(|queues| queues.get(usize::from(index)))
            .map(|q| &**q)
    }

    /// Every queue, borrowed for as long as `guard` is held.
    fn each_queue<'a>(&'a self, guard: &'a rcu::Guard) -> impl Iterator<Item = &'a Queue> {
        self.queues.get(guard).into_iter().flatten().map(|q| &**q)
    }

    /// # Safety
    ///
    /// `vdev` must be the `vdev` field of a live `Inner<T>`.
    unsafe fn from_vdev<'a>(vdev: *mut bindings::virtio_device) -> &'a Self {
        // SAFETY: `vdev` is the first field of a `#[repr(C)]` `Inner<T>` and `Opaque` is
        // transparent, so the pointers are equal; the caller guarantees it is alive.
        unsafe { &*vdev.cast::<Self>() }
    }

    fn vdev(&self) -> *mut bindings::virtio_device {
        self.vdev.get()
    }

    /// The device, for the transport's methods.
    ///
    /// # Safety
    ///
    /// `self` must be alive for the returned lifetime (true in its config ops).
    unsafe fn device(&self) -> &Device {
        // SAFETY: Guaranteed by the caller.
        unsafe { Device::from_raw(self.vdev()) }
    }
}

/// A reference to a device, for routing what the device sends back to it.
///
/// Valid before, during and after registration; once the device is unregistered its methods
/// do nothing.
pub struct Handle<T: Transport>(Arc<Inner<T>>);

impl<T: Transport> Clone for Handle<T> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<T: Transport> Handle<T> {
    /// The transport.
    pub fn transport(&self) -> &T {
        &self.0.transport
    }

    /// Runs the callback of queue `index` for its used buffers. Returns whether the queue
    /// exists (`false`: no such queue, or not created yet, or already deleted).
    ///
    /// With interrupts disabled (`irq`): from the transport's interrupt handler or as from one
    /// ([`as_interrupt`](super::as_interrupt); see the module documentation).
    pub fn queue_interrupt(&self, index: u16, irq: &LocalInterruptDisabled) -> bool {
        let guard = rcu::read_lock();
        self.0
            .queue(&guard, index)
            .is_some_and(|q| q.interrupt(irq).is_some())
    }

    /// Looks at every queue for used buffers whose notification never came, and runs the
    /// callbacks of those that have some, as [`Handle::queue_interrupt`] does. Returns how
    /// many queues had used buffers.
    ///
    /// For a transport whose notifications can be lost. With interrupts disabled (`irq`), as
    /// [`Handle::queue_interrupt`].
    pub fn poll_queues(&self, irq: &LocalInterruptDisabled) -> u32 {
        let guard = rcu::read_lock();
        let handled = self
            .0
            .each_queue(&guard)
            .filter(|q| q.interrupt(irq) == Some(bindings::irqreturn_IRQ_HANDLED));
        handled.count() as u32
    }

    /// Tells the driver that the configuration space changed.
    ///
    /// Before registration the change is remembered and reported when the device registers.
    /// Any context.
    pub fn config_changed(&self) {
        let mut life = self.0.life.lock();
        match *life {
            Life::New { .. } => {
                *life = Life::New {
                    config_changed: true,
                }
            }
            // SAFETY: The device is registered: its `config_lock` is initialised. It stays
            // registered while `life` is locked (`Registration::drop` takes the lock first).
            Life::Registered => unsafe { bindings::virtio_config_changed(self.0.vdev()) },
            Life::Gone => {}
        }
    }

    /// Marks every virtqueue broken, so that drivers stop waiting for the device: what they
    /// queue fails, and their callbacks see no more used buffers.
    ///
    /// Any context, and also while the driver probes or is removed (a device that stops
    /// answering then must not leave its queues usable). Queues created afterwards are not
    /// broken: the transport refuses to set them up for a broken device.
    pub fn break_device(&self) {
        let guard = rcu::read_lock();
        for q in self.0.each_queue(&guard) {
            // Not while its callback runs.
            let _active = q.active.lock();
            // SAFETY: The queue is alive while `q` is (the type invariant of `QueuePtr`).
            // Breaking a queue only marks it so.
            unsafe { bindings::__virtqueue_break(q.vq.0.as_ptr()) };
        }
    }
}

impl Queue {
    /// Runs the queue's callback if it is active (`vring_interrupt()`), and returns what it
    /// returned; `None` if the queue is not active.
    fn interrupt(&self, irq: &LocalInterruptDisabled) -> Option<bindings::irqreturn_t> {
        let active = self.active.lock_with(irq);
        if !*active {
            return None;
        }
        // SAFETY: The queue is alive while `self` is (the type invariant of `QueuePtr`). Its
        // callbacks run under `active`, one at a time.
        Some(unsafe { bindings::vring_interrupt(0, self.vq.0.as_ptr().cast()) })
    }
}

/// A device that is allocated but not registered yet, as a child of a parent bound for `'a`.
///
/// It cannot be kept past that binding (its lifetime is the parent's borrow: the compiler
/// rejects code that keeps one for later), so a device is only ever registered while its
/// parent is bound.
pub struct Unregistered<'a, T: Transport> {
    inner: Arc<Inner<T>>,
    /// The reference that the `struct device` owns once registration starts.
    device_ref: Arc<Inner<T>>,
    /// `vdev.dev.parent`, bound (and so alive) for as long as `self` exists.
    parent: &'a device::Device<Bound>,
}

impl<'a, T: Transport> Unregistered<'a, T> {
    /// Allocates a device with `transport` behind it, as a child of `parent`; its virtqueues
    /// are allocated and DMA-mapped through `dma`, which must be `parent` or one of its
    /// ancestors ([`EINVAL`] otherwise), and should stay bound while `parent` is, as the
    /// parent of an auxiliary device does (the device holds a reference to it).
    pub fn new(
        parent: &'a device::Device<Bound>,
        dma: &'a device::Device,
        id: DeviceId,
        transport: T,
    ) -> Result<Self> {
        let mut ancestor = parent.as_raw();
        while ancestor != dma.as_raw() {
            if ancestor.is_null() {
                return Err(EINVAL);
            }
            // SAFETY: `ancestor` is `parent` or one of its ancestors: a device holds a reference
            // to its parent, and `parent` is alive.
            ancestor = unsafe { (*ancestor).parent };
        }
        let inner = Arc::pin_init(
            try_pin_init!(Inner::<T> {
                vdev <- Opaque::ffi_init(|vdev: *mut bindings::virtio_device| {
                    // SAFETY: `vdev` is valid for writes; an all-zero `virtio_device` is its
                    // documented initial state (transports allocate it with `kzalloc`).
                    unsafe {
                        vdev.write_bytes(0, 1);
                        (*vdev).dev.parent = parent.as_raw();
                        (*vdev).dev.release = Some(release::<T>);
                        (*vdev).config = &OpsTable::<T>::OPS;
                        (*vdev).id.device = id.device;
                        (*vdev).id.vendor = id.vendor;
                    }
                }),
                queues: RcuPointer::new(None),
                life <- new_spinlock_irq!(
                    Life::New { config_changed: false },
                    "virtio::transport::Inner::life"
                ),
                dma: dma.into(),
                transport,
            }),
            GFP_KERNEL,
        )?;
        Ok(Self {
            device_ref: inner.clone(),
            inner,
            parent,
        })
    }

    /// A handle to route the device's messages, interrupts and configuration changes.
    pub fn handle(&self) -> Handle<T> {
        Handle(self.inner.clone())
    }

    /// Registers the device with the virtio core, which resets it, acknowledges it and binds
    /// a driver if one matches, before returning.
    ///
    /// The registration is a resource of the parent: dropping it unregisters the device, and so
    /// does the parent's unbinding if it comes first.
    pub fn register(self) -> Result<Devres<Registration<T>>> {
        let Self {
            inner,
            device_ref,
            parent,
        } = self;
        // Registered as the data of the allocated `Devres`: once registered, the device is
        // always owned by what unregisters it.
        Devres::new(
            parent,
            try_init!(Registration {
                inner: register_device(inner, device_ref)?,
            }),
        )
    }
}

/// Registers the device of `inner` with the virtio core, which then owns `device_ref`.
fn register_device<T: Transport>(
    inner: Arc<Inner<T>>,
    device_ref: Arc<Inner<T>>,
) -> Result<Arc<Inner<T>>> {
    let vdev = inner.vdev();
    // From here on, the `struct device` owns `device_ref`: its release callback drops it.
    let _ = Arc::into_raw(device_ref);
    // SAFETY: `vdev` is a fully initialised, unregistered `virtio_device` whose ops are
    // implemented by `T`, and it lives as long as its `struct device` holds its reference.
    let ret = unsafe { bindings::register_virtio_device(vdev) };
    if ret != 0 {
        *inner.life.lock() = Life::Gone;
        // SAFETY: On failure the caller must drop the device reference with `put_device()`
        // (which runs `release`), never free the device directly.
        unsafe { bindings::put_device(&raw mut (*vdev).dev) };
        return Err(Error::from_errno(ret));
    }
    let config_changed = {
        let mut life = inner.life.lock();
        let pending = matches!(
            *life,
            Life::New {
                config_changed: true
            }
        );
        *life = Life::Registered;
        pending
    };
    if config_changed {
        Handle(inner.clone()).config_changed();
    }
    Ok(inner)
}

/// A device registered with the virtio core; dropping it unregisters the device.
///
/// Only handed out inside a [`Devres`] of the parent (see [`Unregistered::register`]).
pub struct Registration<T: Transport> {
    inner: Arc<Inner<T>>,
}

impl<T: Transport> Registration<T> {
    /// A handle to route the device's messages, interrupts and configuration changes.
    pub fn handle(&self) -> Handle<T> {
        Handle(self.inner.clone())
    }

    /// The transport.
    pub fn transport(&self) -> &T {
        &self.inner.transport
    }

    /// The registered device.
    pub fn device(&self) -> &Device {
        // SAFETY: The device is registered and alive while `self.inner` holds its reference.
        unsafe { self.inner.device() }
    }
}

impl<T: Transport> Drop for Registration<T> {
    fn drop(&mut self) {
        // No configuration change is reported from here on (see `Handle::config_changed`).
        *self.inner.life.lock() = Life::Gone;
        // SAFETY: The device is registered (type invariant of `Registration`) and this is the
        // only place that unregisters it. The driver's `remove` runs here and deletes the
        // queues; the memory stays valid while `self.inner` holds its reference.
        unsafe { bindings::unregister_virtio_device(self.inner.vdev()) };
    }
}

/// `dev.release` of the `struct device`: drops the device's reference.
///
/// # Safety
///
/// Only called by the driver core, once, for a device allocated by [`Unregistered::new`] for
/// `T`.
unsafe extern "C" fn release<T: Transport>(dev: *mut bindings::device) {
    // SAFETY: `dev` is embedded in the `vdev` field of an `Inner<T>` (see `Unregistered::new`).
    let vdev = unsafe { crate::container_of!(dev, bindings::virtio_device, dev) };
    // SAFETY: The `struct device` owns the reference leaked in `Unregistered::register`, and
    // `release` runs once.
    drop(unsafe { Arc::from_raw(vdev.cast::<Inner<T>>().cast_const()) });
}

struct OpsTable<T: Transport>(PhantomData<T>);

impl<T: Transport> OpsTable<T> {
    const OPS: bindings::virtio_config_ops = bindings::virtio_config_ops {
        get: Some(Self::get),
        set: Some(Self::set),
        generation: Some(Self::generation),
        get_status: Some(Self::get_status),
        set_status: Some(Self::set_status),
        reset: Some(Self::reset),
        find_vqs: Some(Self::find_vqs),
        del_vqs: Some(Self::del_vqs),
        // Always: the queue lock is a cheaper barrier than the core's `synchronize_rcu()`.
        synchronize_cbs: Some(Self::synchronize_cbs),
        get_features: Some(Self::get_features),
        get_extended_features: Some(Self::get_extended_features),
        finalize_features: Some(Self::finalize_features),
        bus_name: None,
        set_vq_affinity: None,
        get_vq_affinity: None,
        get_shm_region: if T::HAS_SHM_REGION {
            Some(Self::get_shm_region)
        } else {
            None
        },
        disable_vq_and_reset: if T::HAS_QUEUE_RESET {
            Some(Self::disable_vq_and_reset)
        } else {
            None
        },
        enable_vq_after_reset: if T::HAS_QUEUE_RESET {
            Some(Self::enable_vq_after_reset)
        } else {
            None
        },
    };

    /// # Safety
    ///
    /// `vdev` must be a device allocated by [`Unregistered::new`] for `T` whose registration
    /// has started (true of every op the virtio core calls).
    unsafe fn parts<'a>(vdev: *mut bindings::virtio_device) -> (&'a T, &'a Device) {
        // SAFETY: Guaranteed by the caller.
        let inner = unsafe { Inner::<T>::from_vdev(vdev) };
        // SAFETY: Registration has started.
        (&inner.transport, unsafe { inner.device() })
    }

    /// # Safety
    ///
    /// Only called by the virtio core, on a device allocated by [`Unregistered::new`] for `T`.
    unsafe extern "C" fn get(
        vdev: *mut bindings::virtio_device,
        offset: c_uint,
        buf: *mut c_void,
        len: c_uint,
    ) {
        // SAFETY: Called by the virtio core on our device.
        let (t, dev) = unsafe { Self::parts(vdev) };
        // SAFETY: The virtio core passes a buffer of `len` writable bytes.
        let buf = unsafe { core::slice::from_raw_parts_mut(buf.cast::<u8>(), len as usize) };
        t.get_config(dev, offset, buf);
    }

    /// # Safety
    ///
    /// Only called by the virtio core, on a device allocated by [`Unregistered::new`] for `T`.
    unsafe extern "C" fn set(
        vdev: *mut bindings::virtio_device,
        offset: c_uint,
        buf: *const c_void,
        len: c_uint,
    ) {
        // SAFETY: Called by the virtio core on our device.
        let (t, dev) = unsafe { Self::parts(vdev) };
        // SAFETY: The virtio core passes a buffer of `len` readable bytes.
        let buf = unsafe { core::slice::from_raw_parts(buf.cast::<u8>(), len as usize) };
        t.set_config(dev, offset, buf);
    }

    /// # Safety
    ///
    /// Only called by the virtio core, on a device allocated by [`Unregistered::new`] for `T`.
    unsafe extern "C" fn generation(vdev: *mut bindings::virtio_device) -> u32 {
        // SAFETY: Called by the virtio core on our device.
        let (t, dev) = unsafe { Self::parts(vdev) };
        t.generation(dev)
    }

    /// # Safety
    ///
    /// Only called by the virtio core, on a device allocated by [`Unregistered::new`] for `T`.
    unsafe extern "C" fn get_status(vdev: *mut bindings::virtio_device) -> u8 {
        // SAFETY: Called by the virtio core on our device.
        let (t, dev) = unsafe { Self::parts(vdev) };
        t.get_status(dev)
    }

    /// # Safety
    ///
    /// Only called by the virtio core, on a device allocated by [`Unregistered::new`] for `T`.
    unsafe extern "C" fn set_status(vdev: *mut bindings::virtio_device, status: u8) {
        // SAFETY: Called by the virtio core on our device.
        let (t, dev) = unsafe { Self::parts(vdev) };
        t.set_status(dev, status);
    }

    /// # Safety
    ///
    /// Only called by the virtio core, on a device allocated by [`Unregistered::new`] for `T`.
    unsafe extern "C" fn reset(vdev: *mut bindings::virtio_device) {
        // SAFETY: Called by the virtio core on our device.
        let (t, dev) = unsafe { Self::parts(vdev) };
        t.reset(dev);
    }

    /// # Safety
    ///
    /// Only called by the virtio core, on a device allocated by [`Unregistered::new`] for `T`.
    unsafe extern "C" fn get_features(vdev: *mut bindings::virtio_device) -> u64 {
        // SAFETY: Called by the virtio core on our device.
        let (t, dev) = unsafe { Self::parts(vdev) };
        t.get_features(dev).low64()
    }

    /// # Safety
    ///
    /// Only called by the virtio core, on a device allocated by [`Unregistered::new`] for `T`.
    unsafe extern "C" fn get_extended_features(
        vdev: *mut bindings::virtio_device,
        features: *mut u64,
    ) {
        // SAFETY: Called by the virtio core on our device.
        let (t, dev) = unsafe { Self::parts(vdev) };
        let f = t.get_features(dev);
        // SAFETY: The virtio core passes an array of `VIRTIO_FEATURES_U64S` words.
        unsafe { features.cast::<Features>().write_unaligned(f) };
    }

    /// # Safety
    ///
    /// Only called by the virtio core, on a device allocated by [`Unregistered::new`] for `T`.
    unsafe extern "C" fn finalize_features(vdev: *mut bindings::virtio_device) -> c_int {
        // SAFETY: Called by the virtio core on our device.
        let (t, dev) = unsafe { Self::parts(vdev) };
        let ring_reset = T::HAS_QUEUE_RESET && dev.has_feature(feature::RING_RESET);
        // SAFETY: `vdev` is valid; this clears the transport feature bits this kernel's rings
        // do not implement, among them RING_RESET, which is the transport's to offer.
        unsafe { bindings::vring_transport_features(vdev) };
        if ring_reset {
            dev.set_feature(feature::RING_RESET);
        }
        from_result(|| {
            t.finalize_features(dev)?;
            Ok(0)
        })
    }

    /// # Safety
    ///
    /// Only called by the virtio core, on a device allocated by [`Unregistered::new`] for `T`.
    unsafe extern "C" fn get_shm_region(
        vdev: *mut bindings::virtio_device,
        region: *mut bindings::virtio_shm_region,
        id: u8,
    ) -> bool {
        // SAFETY: Called by the virtio core on our device.
        let (t, dev) = unsafe { Self::parts(vdev) };
        match t.shm_region(dev, id) {
            Some(r) => {
                // SAFETY: The virtio core passes a valid `virtio_shm_region` to fill.
                unsafe {
                    (*region).addr = r.addr;
                    (*region).len = r.len;
                }
                true
            }
            None => false,
        }
    }

    /// # Safety
    ///
    /// Only called by the virtio core, on a device allocated by [`Unregistered::new`] for `T`.
    unsafe extern "C" fn synchronize_cbs(vdev: *mut bindings::virtio_device) {
        // SAFETY: Called by the virtio core on our device.
        let inner = unsafe { Inner::<T>::from_vdev(vdev) };
        // Every callback run by `Handle::queue_interrupt` holds its queue's lock.
        let guard = rcu::read_lock();
        for q in inner.each_queue(&guard) {
            drop(q.active.lock());
        }
        drop(guard);
        if T::HAS_SYNCHRONIZE_CBS {
            // SAFETY: Called by the virtio core on our device.
            let (t, dev) = unsafe { Self::parts(vdev) };
            t.synchronize_cbs(dev);
        }
    }

    /// # Safety
    ///
    /// Only called by the virtio core, on a device allocated by [`Unregistered::new`] for `T`.
    unsafe extern "C" fn notify(vq: *mut bindings::virtqueue) -> bool {
        // SAFETY: `vq` is one of our queues, alive while the virtio core notifies it.
        let (vdev, index) = unsafe { ((*vq).vdev, (*vq).index) };
        // SAFETY: `vdev` is our device, whose queues are being used.
        let (t, dev) = unsafe { Self::parts(vdev) };
        let Ok(index) = u16::try_from(index) else {
            return false;
        };
        let data = dev.has_feature(feature::NOTIFICATION_DATA).then(|| {
            // SAFETY: `vq` is a valid queue.
            let next = unsafe { bindings::vring_notification_data(vq) } >> 16;
            if dev.has_feature(feature::RING_PACKED) {
                NotificationData {
                    offset: (next & 0x7fff) as u16,
                    wrap: next & 0x8000 != 0,
                }
            } else {
                NotificationData {
                    offset: next as u16,
                    wrap: false,
                }
            }
        });
        t.notify(index, data)
    }

    /// # Safety
    ///
    /// Only called by the virtio core, on a device allocated by [`Unregistered::new`] for `T`.
    unsafe extern "C" fn find_vqs(
        vdev: *mut bindings::virtio_device,
        nvqs: c_uint,
        vqs: *mut *mut bindings::virtqueue,
        infos: *mut bindings::virtqueue_info,
        _desc: *mut bindings::irq_affinity,
    ) -> c_int {
        // SAFETY: Called by the virtio core on our device.
        let inner = unsafe { Inner::<T>::from_vdev(vdev) };
        from_result(|| {
            let mut created = KBox::new(Queues::new(), GFP_KERNEL)?;
            created.reserve(nvqs as usize, GFP_KERNEL)?;
            // SAFETY: Called by the virtio core, with `nvqs` entries in `infos` and `vqs`.
            if let Err(e) = unsafe { Self::create_queues(inner, nvqs, vqs, infos, &mut created) } {
                // Never published: none of them can have a callback running.
                Self::delete_queues(KBox::into_inner(created));
                return Err(e);
            }
            // Nothing was there (`del_vqs` took the last ones out): no grace period.
            drop(inner.queues.replace(Some(created)));
            Ok(0)
        })
    }

    /// Creates the queues `find_vqs` asks for into `created` (which has room for `nvqs`), and
    /// fills `vqs`. On failure the caller deletes what is in `created`.
    ///
    /// # Safety
    ///
    /// Called from `find_vqs` of `inner`'s device, with its `nvqs`, `vqs` and `infos`.
    unsafe fn create_queues(
        inner: &Inner<T>,
        nvqs: c_uint,
        vqs: *mut *mut bindings::virtqueue,
        infos: *mut bindings::virtqueue_info,
        created: &mut Queues,
    ) -> Result {
        for i in 0..nvqs as usize {
            // SAFETY: The virtio core passes `nvqs` entries in `infos` and `vqs`.
            let (info, slot) = unsafe { (&*infos.add(i), &mut *vqs.add(i)) };
            *slot = core::ptr::null_mut();
            // Queues the driver does not use have no name and take no index.
            if info.name.is_null() {
                continue;
            }
            let index = u16::try_from(created.len()).map_err(|_| EINVAL)?;
            // SAFETY: `info` describes a queue of our device, we are in `find_vqs`.
            let queue = unsafe { Self::create_queue(inner, index, info) }?;
            *slot = queue.vq.0.as_ptr();
            // Room was reserved for every queue.
            if let Err(PushError(queue)) = created.push_within_capacity(queue) {
                Self::delete_queues([queue]);
                return Err(ENOMEM);
            }
        }
        Ok(())
    }

    /// # Safety
    ///
    /// Called from `find_vqs` of `inner`'s device, with `info` from the virtio core.
    unsafe fn create_queue(
        inner: &Inner<T>,
        index: u16,
        info: &bindings::virtqueue_info,
    ) -> Result<Pin<KBox<Queue>>> {
        // SAFETY: Registration has started (we are in an op).
        let dev = unsafe { inner.device() };
        let t = &inner.transport;
        let max = t.queue_max_size(dev, index)?;
        if max == 0 {
            return Err(ENOENT);
        }
        let map = bindings::virtio_map {
            dma_dev: inner.dma.as_raw(),
        };
        // SAFETY: All pointers are valid; `info.name` and `info.callback` come from the driver
        // and outlive the queue. The rings are allocated and mapped through `inner.dma`, which
        // lives as long as `inner`.
        let vq = unsafe {
            bindings::vring_create_virtqueue_map(
                index.into(),
                max,
                PAGE_SIZE as u32,
                inner.vdev(),
                true,
                true,
                info.ctx,
                Some(Self::notify),
                info.callback,
                info.name.cast::<c_char>(),
                map,
            )
        };
        let vq = QueuePtr(NonNull::new(vq).ok_or(ENOMEM)?);
        let ptr = vq.0.as_ptr();
        // SAFETY: `ptr` is the valid queue just created.
        unsafe { (*ptr).num_max = max };
        // SAFETY: As above.
        let config = unsafe { Self::queue_config(ptr, index) };
        let queue = t.queue_enable(dev, &config).and_then(|()| {
            KBox::pin_init(
                pin_init!(Queue {
                    vq,
                    active <- new_spinlock_irq!(true, "virtio::transport::Queue::active"),
                }),
                GFP_KERNEL,
            )
        });
        if queue.is_err() {
            // SAFETY: Not published anywhere yet.
            unsafe { bindings::vring_del_virtqueue(ptr) };
        }
        queue
    }

    /// Where the rings of `vq` are.
    ///
    /// # Safety
    ///
    /// `vq` must be a valid queue created by `create_queue`.
    unsafe fn queue_config(vq: *mut bindings::virtqueue, index: u16) -> QueueConfig {
        // SAFETY: Guaranteed by the caller; the getters only read the queue.
        unsafe {
            QueueConfig {
                index,
                size: bindings::virtqueue_get_vring_size(vq),
                desc: bindings::virtqueue_get_desc_addr(vq),
                driver: bindings::virtqueue_get_avail_addr(vq),
                device: bindings::virtqueue_get_used_addr(vq),
            }
        }
    }

    /// Marks the queue at `index` active or not; returns `false` if there is no such queue.
    /// Once inactive, its callback neither runs nor will run.
    fn set_active(inner: &Inner<T>, index: u16, active: bool) -> bool {
        let guard = rcu::read_lock();
        match inner.queue(&guard, index) {
            Some(q) => {
                *q.active.lock() = active;
                true
            }
            None => false,
        }
    }

    /// # Safety
    ///
    /// Only called by the virtio core, on a queue of a device allocated by
    /// [`Unregistered::new`] for `T`.
    unsafe extern "C" fn disable_vq_and_reset(vq: *mut bindings::virtqueue) -> c_int {
        // SAFETY: `vq` is one of our queues.
        let (vdev, index) = unsafe { ((*vq).vdev, (*vq).index) };
        // SAFETY: `vdev` is our device.
        let inner = unsafe { Inner::<T>::from_vdev(vdev) };
        // SAFETY: As above.
        let (t, dev) = unsafe { Self::parts(vdev) };
        from_result(|| {
            let index = u16::try_from(index).map_err(|_| EINVAL)?;
            if !dev.has_feature(feature::RING_RESET) {
                return Err(ENOENT);
            }
            if !Self::set_active(inner, index, false) {
                return Err(ENOENT);
            }
            if let Err(e) = t.queue_reset(dev, index) {
                Self::set_active(inner, index, true);
                return Err(e);
            }
            // SAFETY: `vq` is valid; `reset` tells the virtio core the queue is in reset.
            unsafe { (*vq).reset = true };
            Ok(0)
        })
    }

    /// # Safety
    ///
    /// Only called by the virtio core, on a queue of a device allocated by
    /// [`Unregistered::new`] for `T`.
    unsafe extern "C" fn enable_vq_after_reset(vq: *mut bindings::virtqueue) -> c_int {
        // SAFETY: `vq` is one of our queues.
        let (vdev, index, reset) = unsafe { ((*vq).vdev, (*vq).index, (*vq).reset) };
        // SAFETY: `vdev` is our device.
        let inner = unsafe { Inner::<T>::from_vdev(vdev) };
        // SAFETY: As above.
        let (t, dev) = unsafe { Self::parts(vdev) };
        from_result(|| {
            let index = u16::try_from(index).map_err(|_| EINVAL)?;
            if !reset {
                return Err(EBUSY);
            }
            // The rings may be new (`virtqueue_resize()`): tell the device where they are now.
            // SAFETY: `vq` is a valid queue of ours.
            let config = unsafe { Self::queue_config(vq, index) };
            t.queue_enable(dev, &config)?;
            Self::set_active(inner, index, true);
            // SAFETY: `vq` is valid.
            unsafe { (*vq).reset = false };
            Ok(0)
        })
    }

    /// Deletes `queues`, which no callback can reach: never published, or taken out of
    /// `Inner::queues` a grace period ago.
    fn delete_queues(queues: impl IntoIterator<Item = Pin<KBox<Queue>>>) {
        for q in queues {
            // SAFETY: The queue was created by `create_queue` and is no longer reachable
            // through `Inner::queues`, so no callback can run on it.
            unsafe { bindings::vring_del_virtqueue(q.vq.0.as_ptr()) };
        }
    }

    /// # Safety
    ///
    /// Only called by the virtio core, on a device allocated by [`Unregistered::new`] for `T`.
    unsafe extern "C" fn del_vqs(vdev: *mut bindings::virtio_device) {
        // SAFETY: Called by the virtio core on our device.
        let inner = unsafe { Inner::<T>::from_vdev(vdev) };
        // Once out of the table, no callback can start on a queue; `replace` returns once none
        // is running (they run under the RCU read side).
        if let Some(queues) = inner.queues.replace(None) {
            Self::delete_queues(KBox::into_inner(queues));
        }
    }
}
