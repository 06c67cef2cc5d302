// SPDX-License-Identifier: GPL-2.0

//! Rust virtio-msg loopback sample: a virtio-msg bus whose device side is in the kernel too.
//!
//! The smallest complete example of a virtio-msg bus. It registers the auxiliary device
//! `virtio_msg.bus` (which the `virtio_msg` transport binds to) with a [`BusLink`] over a
//! [`Bus`] whose other end is an in-kernel virtio entropy device: it answers the transport
//! messages, and when the driver makes buffers available it fills them with random bytes.
//! With both modules loaded, the stock virtio-rng driver binds and `/dev/hwrng` works, with no
//! PCI device and no hypervisor.
//!
//! The device side runs in a work item, like a real device that answers later: `send` only
//! queues the message.

use core::{
    ptr::NonNull,
    sync::atomic::{fence, Ordering},
};
use kernel::{
    alloc::KVec,
    auxiliary, bindings,
    device::{Bound, Device},
    faux,
    ffi::c_ulong,
    impl_has_work, new_mutex, new_spinlock, new_work,
    prelude::*,
    sync::{
        atomic::{Acquire, Atomic, Relaxed, Release},
        Arc, Mutex, SpinLock,
    },
    time::{delay::fsleep, Delta},
    types::ForLt,
    virtio::msg::{new_bus_id, Bus, BusLink, AUXILIARY_MODNAME, AUXILIARY_NAME},
    workqueue::{self, Work, WorkItem},
};

/// The virtio-msg wire format, shared with the transport.
#[path = "../../drivers/virtio/virtio_msg/wire.rs"]
pub mod wire;

use wire::{DeviceInfo, Frame, Message, VqueueInfo, Words};

module! {
    type: LoopbackModule,
    name: "rust_virtio_msg_loopback",
    authors: ["virtio-msg developers"],
    description: "Rust virtio-msg loopback sample: an in-kernel virtio-rng device on a virtio-msg bus",
    license: "GPL",
    params: {
        silent_after: u32 {
            default: 0,
            description: "Test fixture: the device stops answering after this many messages (0: never)",
        },
    },
}

/// Device number of the entropy device on the loopback bus.
const DEV_NUM: u16 = 1;
/// Largest message on the bus (the AMP PCI device's limit, so that chunking is exercised).
const MAX_MSG: usize = 48;
/// Messages queued towards the device side before `send` reports the bus busy.
const INBOX_LIMIT: usize = 256;
/// How often, and how long each time, [`Bus::sync`] looks whether the device side caught up.
const SYNC_POLLS: u32 = 1000;
const SYNC_POLL: Delta = Delta::from_millis(1);
/// The entropy device's only queue, and its largest size.
const QUEUE_MAX: u32 = 64;
/// Largest buffer filled at once.
const MAX_FILL: u32 = 4096;

const VIRTIO_ID_RNG: u32 = 4;
const VENDOR_ID: u32 = 0x5453_5552; // "RUST"
const VIRTIO_F_VERSION_1_BLOCK1: u32 = 1; // feature bit 32
const VIRTQ_DESC_F_NEXT: u16 = 1;
const VIRTQ_DESC_F_WRITE: u16 = 2;
const STATUS_DRIVER_OK: u32 = 4;

/// Driver memory mapped for the device side.
///
/// # Invariants
///
/// `ptr` maps `len` bytes of RAM, by `memremap()`, until dropped.
struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: The mapping is plain memory, usable from any thread.
unsafe impl Send for Mapping {}

impl Mapping {
    fn new(addr: u64, len: usize) -> Result<Self> {
        // SAFETY: `memremap()` of RAM the driver gave us; it fails for anything else.
        let ptr = unsafe { bindings::memremap(addr, len, bindings::MEMREMAP_WB as c_ulong) };
        let ptr = NonNull::new(ptr.cast::<u8>()).ok_or(EFAULT)?;
        Ok(Self { ptr, len })
    }

    fn check(&self, offset: usize, size: usize) -> Option<*mut u8> {
        (offset.checked_add(size)? <= self.len).then(|| {
            // SAFETY: `offset + size <= len`, within the mapping.
            unsafe { self.ptr.as_ptr().add(offset) }
        })
    }

    fn read_u16(&self, offset: usize) -> Option<u16> {
        let p = self.check(offset, 2)?;
        // SAFETY: In bounds (checked); the driver may write concurrently, hence volatile.
        Some(u16::from_le(unsafe { p.cast::<u16>().read_volatile() }))
    }

    fn read_u32(&self, offset: usize) -> Option<u32> {
        let p = self.check(offset, 4)?;
        // SAFETY: As above.
        Some(u32::from_le(unsafe { p.cast::<u32>().read_volatile() }))
    }

    fn read_u64(&self, offset: usize) -> Option<u64> {
        let p = self.check(offset, 8)?;
        // SAFETY: As above.
        Some(u64::from_le(unsafe { p.cast::<u64>().read_volatile() }))
    }

    fn write_u16(&self, offset: usize, v: u16) -> Option<()> {
        let p = self.check(offset, 2)?;
        // SAFETY: In bounds (checked); the used ring is ours to write.
        unsafe { p.cast::<u16>().write_volatile(v.to_le()) };
        Some(())
    }

    fn write_u32(&self, offset: usize, v: u32) -> Option<()> {
        let p = self.check(offset, 4)?;
        // SAFETY: As above.
        unsafe { p.cast::<u32>().write_volatile(v.to_le()) };
        Some(())
    }

    /// Fills the mapping with random bytes.
    fn fill_random(&self) {
        // SAFETY: The whole mapping is writable memory of `len` bytes.
        unsafe { bindings::get_random_bytes(self.ptr.as_ptr().cast(), self.len) };
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: Mapped by `memremap()` in `new`, unmapped once.
        unsafe { bindings::memunmap(self.ptr.as_ptr().cast()) };
    }
}

/// A configured split virtqueue.
struct Queue {
    size: u16,
    addrs: (u64, u64, u64),
    desc: Mapping,
    avail: Mapping,
    used: Mapping,
    last_avail: u16,
    used_idx: u16,
}

impl Queue {
    fn new(size: u32, desc: u64, avail: u64, used: u64) -> Result<Self> {
        if size == 0 || size > QUEUE_MAX || !size.is_power_of_two() {
            return Err(EINVAL);
        }
        let n = size as usize;
        Ok(Self {
            size: size as u16,
            addrs: (desc, avail, used),
            desc: Mapping::new(desc, 16 * n)?,
            avail: Mapping::new(avail, 6 + 2 * n)?,
            used: Mapping::new(used, 6 + 8 * n)?,
            last_avail: 0,
            used_idx: 0,
        })
    }

    /// Fills the buffers of one descriptor chain; returns the bytes written, or `None` if the
    /// chain is malformed.
    fn fill_chain(&self, head: u16) -> Option<u32> {
        let mut idx = head;
        let mut written = 0u32;
        for _ in 0..self.size {
            if idx >= self.size {
                return None;
            }
            let d = usize::from(idx) * 16;
            let (addr, len) = (self.desc.read_u64(d)?, self.desc.read_u32(d + 8)?);
            let (flags, next) = (self.desc.read_u16(d + 12)?, self.desc.read_u16(d + 14)?);
            if flags & VIRTQ_DESC_F_WRITE != 0 && len > 0 {
                let len = len.min(MAX_FILL);
                Mapping::new(addr, len as usize).ok()?.fill_random();
                written = written.saturating_add(len);
            }
            if flags & VIRTQ_DESC_F_NEXT == 0 {
                return Some(written);
            }
            idx = next;
        }
        None
    }

    /// Serves every available buffer; returns whether any was used.
    fn process(&mut self) -> bool {
        let mut used_any = false;
        while let Some(avail_idx) = self.avail.read_u16(2) {
            // Read the ring entries only after the index that publishes them.
            fence(Ordering::Acquire);
            if avail_idx == self.last_avail {
                break;
            }
            // `size` is a power of two: masking wraps the free-running indexes.
            let mask = self.size.wrapping_sub(1);
            let slot = usize::from(self.last_avail & mask);
            let Some(head) = self.avail.read_u16(4 + 2 * slot) else {
                break;
            };
            let Some(written) = self.fill_chain(head) else {
                pr_err!("loopback: malformed descriptor chain at {head}, queue stopped\n");
                break;
            };
            let used_slot = usize::from(self.used_idx & mask);
            let _ = self.used.write_u32(4 + 8 * used_slot, head.into());
            let _ = self.used.write_u32(8 + 8 * used_slot, written);
            self.used_idx = self.used_idx.wrapping_add(1);
            // The entry must be visible before the index that publishes it.
            fence(Ordering::Release);
            let _ = self.used.write_u16(2, self.used_idx);
            self.last_avail = self.last_avail.wrapping_add(1);
            used_any = true;
        }
        used_any
    }
}

/// The state of the entropy device.
struct RngState {
    status: u32,
    queue: Option<Queue>,
    /// Messages still answered before the device goes silent (`None`: always).
    answers_left: Option<u32>,
}

/// One message in flight from the driver side.
struct Msg {
    bytes: [u8; MAX_MSG],
    len: usize,
}

/// The device side of the loopback bus: a virtio entropy device.
#[pin_data]
struct RngDevice {
    #[pin]
    inbox: SpinLock<KVec<Msg>>,
    #[pin]
    state: Mutex<RngState>,
    /// Where responses and events go; `None` once the module is unloading.
    #[pin]
    link: SpinLock<Option<Arc<BusLink>>>,
    /// This device, to queue its work from `send`; `None` once the module is unloading.
    #[pin]
    me: SpinLock<Option<Arc<RngDevice>>>,
    #[pin]
    work: Work<RngDevice>,
    /// Messages queued by `send`, and messages the device side has handled: they are handled
    /// in order, so once `handled` reaches a value `queued` had, every answer to what was
    /// queued until then has been delivered (see [`Bus::sync`]).
    queued: Atomic<u64>,
    handled: Atomic<u64>,
}

impl_has_work! {
    impl HasWork<Self> for RngDevice { self.work }
}

impl WorkItem for RngDevice {
    type Pointer = Arc<RngDevice>;

    fn run(this: Arc<RngDevice>) {
        loop {
            let msg = {
                let mut inbox = this.inbox.lock();
                if inbox.is_empty() {
                    break;
                }
                match inbox.remove(0) {
                    Ok(msg) => msg,
                    Err(_) => break,
                }
            };
            this.handle(msg.bytes.get(..msg.len).unwrap_or(&[]));
            // Release: whoever sees the count sees what `handle` delivered.
            this.handled.fetch_add(1, Release);
        }
    }
}

impl RngDevice {
    fn new() -> impl PinInit<Self> {
        pin_init!(Self {
            inbox <- new_spinlock!(KVec::new()),
            state <- new_mutex!(RngState {
                status: 0,
                queue: None,
                answers_left: match *module_parameters::silent_after.value() {
                    0 => None,
                    n => Some(n),
                },
            }),
            link <- new_spinlock!(None),
            me <- new_spinlock!(None),
            work <- new_work!("RngDevice::work"),
            queued: Atomic::new(0),
            handled: Atomic::new(0),
        })
    }

    fn deliver(&self, dev_num: u16, token: u16, msg: Message<'_>) {
        let mut buf = [0u8; MAX_MSG];
        let Ok(len) = (Frame {
            dev_num,
            token,
            msg,
        })
        .encode(&mut buf) else {
            return;
        };
        let link = self.link.lock().clone();
        if let (Some(link), Some(bytes)) = (link, buf.get(..len)) {
            link.deliver(bytes);
        }
    }

    /// Answers one message from the driver side. Like the QEMU device model, a request it
    /// does not understand gets no answer at all.
    fn handle(&self, bytes: &[u8]) {
        let Ok(frame) = Frame::decode(bytes) else {
            return;
        };
        let (dev, token) = (frame.dev_num, frame.token);
        if dev != DEV_NUM {
            return;
        }
        let mut state = self.state.lock();
        match state.answers_left {
            Some(0) => return,
            Some(ref mut n) => *n -= 1,
            None => {}
        }
        let reply = match frame.msg {
            Message::GetDeviceInfo => Message::DeviceInfo(DeviceInfo {
                device_id: VIRTIO_ID_RNG,
                vendor_id: VENDOR_ID,
                num_feature_bits: 64,
                config_size: 0,
                max_virtqueues: 1,
                admin_vq_start: 0,
                admin_vq_count: 0,
            }),
            Message::GetDeviceFeatures {
                block_index,
                num_blocks,
            } if num_blocks <= 8 => {
                let mut words = [0u32; 8];
                for (i, w) in words.iter_mut().take(num_blocks as usize).enumerate() {
                    if block_index as usize + i == 1 {
                        *w = VIRTIO_F_VERSION_1_BLOCK1;
                    }
                }
                drop(state);
                let features = Words::new(words.get(..num_blocks as usize).unwrap_or(&[]));
                self.deliver(
                    dev,
                    token,
                    Message::DeviceFeatures {
                        block_index,
                        features,
                    },
                );
                return;
            }
            Message::SetDriverFeatures { .. } => Message::DriverFeaturesSet,
            Message::GetDeviceStatus => Message::DeviceStatus {
                status: state.status,
            },
            Message::SetDeviceStatus { status } => {
                if status == 0 {
                    state.status = 0;
                    state.queue = None;
                } else {
                    state.status = status;
                }
                Message::DeviceStatusSet {
                    status: state.status,
                }
            }
            Message::GetConfig {
                offset: 0,
                length: 0,
            } => Message::Config {
                generation: 0,
                offset: 0,
                data: &[],
            },
            Message::GetVqueue { index } => {
                let (max_size, cur_size, (d, a, u)) = match (&state.queue, index) {
                    (Some(q), 0) => (QUEUE_MAX, q.size.into(), q.addrs),
                    (None, 0) => (QUEUE_MAX, 0, (0, 0, 0)),
                    _ => (0, 0, (0, 0, 0)),
                };
                Message::Vqueue(VqueueInfo {
                    index,
                    max_size,
                    cur_size,
                    desc_addr: d,
                    driver_addr: a,
                    device_addr: u,
                })
            }
            Message::SetVqueue(c) if c.index == 0 => {
                match Queue::new(c.size, c.desc_addr, c.driver_addr, c.device_addr) {
                    Ok(q) => state.queue = Some(q),
                    Err(_) => return,
                }
                Message::VqueueSet
            }
            Message::GetShm { index } => Message::Shm {
                index,
                length: 0,
                address: 0,
            },
            Message::EventAvail { vq_index: 0, .. } => {
                let ready = state.status & STATUS_DRIVER_OK != 0;
                let used = ready && state.queue.as_mut().is_some_and(Queue::process);
                drop(state);
                if used {
                    self.deliver(dev, 0, Message::EventUsed { vq_index: 0 });
                }
                return;
            }
            _ => return,
        };
        drop(state);
        self.deliver(dev, token, reply);
    }
}

impl Bus for RngDevice {
    fn max_msg_size(&self) -> usize {
        MAX_MSG
    }

    fn send_atomic(&self, msg: &[u8]) -> Result {
        // `send` only takes spinlocks and allocates with GFP_ATOMIC.
        self.send(msg)
    }

    fn send(&self, msg: &[u8]) -> Result {
        let mut bytes = [0u8; MAX_MSG];
        bytes
            .get_mut(..msg.len())
            .ok_or(EMSGSIZE)?
            .copy_from_slice(msg);
        let mut inbox = self.inbox.lock();
        if inbox.len() >= INBOX_LIMIT {
            return Err(EBUSY);
        }
        inbox.push(
            Msg {
                bytes,
                len: msg.len(),
            },
            GFP_ATOMIC,
        )?;
        self.queued.add(1, Relaxed);
        drop(inbox);
        if let Some(me) = self.me.lock().clone() {
            // Already queued is fine: the queued run sees this message too.
            let _ = workqueue::system_long().enqueue(me);
        }
        Ok(())
    }

    fn sync(&self) -> Result {
        let target = self.queued.load(Relaxed);
        for _ in 0..SYNC_POLLS {
            if self.handled.load(Acquire) >= target {
                return Ok(());
            }
            fsleep(SYNC_POLL);
        }
        Err(ETIMEDOUT)
    }
}

/// The auxiliary device of the bus, with its link as registration data.
type BusRegistration = auxiliary::Registration<'static, ForLt!(Arc<BusLink>)>;

struct LoopbackModule {
    /// Dropped first: unbinding the transport unregisters the virtio device.
    bus: Option<BusRegistration>,
    device: Arc<RngDevice>,
    /// Dropped last: the parent of everything above.
    _faux: faux::Registration,
}

impl kernel::Module for LoopbackModule {
    fn init(_module: &'static ThisModule) -> Result<Self> {
        let faux = faux::Registration::new(c"virtio-msg-loopback", None)?;
        let parent: &Device<Bound> = faux.bound_device();
        // SAFETY: The reference points into the C `faux_device`, not into `faux`, and the
        // device stays bound until `faux` is dropped, which `LoopbackModule` does after
        // dropping `bus`, the only user of this reference (field order and `Drop` below).
        let parent: &'static Device<Bound> = unsafe { &*core::ptr::from_ref(parent) };

        let device = Arc::pin_init(RngDevice::new(), GFP_KERNEL)?;
        let link = BusLink::new(device.clone())?;
        *device.link.lock() = Some(link.clone());
        *device.me.lock() = Some(device.clone());
        let bus = auxiliary::Registration::new(
            parent,
            AUXILIARY_NAME,
            new_bus_id(),
            AUXILIARY_MODNAME,
            link.clone(),
        )?;
        link.add_device(DEV_NUM)?;
        pr_info!("virtio-msg loopback bus up, entropy device on device number {DEV_NUM}\n");
        Ok(Self {
            bus: Some(bus),
            device,
            _faux: faux,
        })
    }
}

impl Drop for LoopbackModule {
    fn drop(&mut self) {
        drop(self.bus.take());
        // Break the cycles through `link` and `me`, then let queued work finish.
        *self.device.link.lock() = None;
        *self.device.me.lock() = None;
        // SAFETY: `work` is a valid, initialised work item that lives as long as `device`.
        unsafe { bindings::flush_work(Work::raw_get(&self.device.work)) };
        pr_info!("virtio-msg loopback bus down\n");
    }
}
