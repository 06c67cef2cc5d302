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
//! With `blk_mib` set, a second device joins it: a virtio block device backed by that much
//! memory, so that the transport's own cost per request can be measured against the block
//! layer's (`null_blk`, `brd`), with no device process in the path (`make bench`).
//!
//! The device side runs in a work item, like a real device that answers later: `send` only
//! queues the message.

use core::{
    ptr::NonNull,
    sync::atomic::{fence, Ordering},
};
use kernel::{
    alloc::{KVVec, KVec},
    auxiliary, bindings, faux,
    ffi::c_ulong,
    impl_has_work, new_mutex, new_spinlock, new_spinlock_irq, new_work,
    prelude::*,
    sync::{
        atomic::{Acquire, Atomic, Relaxed, Release},
        Arc, Mutex, SpinLock, SpinLockIrq,
    },
    time::{delay::fsleep, Delta},
    types::ForLt,
    virtio::{
        as_interrupt,
        msg::{
            new_bus_id,
            wire::{DeviceInfo, Frame, Message, VqueueInfo, Words},
            Bus, BusLink, AUXILIARY_MODNAME, AUXILIARY_NAME,
        },
    },
    workqueue::{self, Work, WorkItem},
};

module! {
    type: LoopbackModule,
    name: "rust_virtio_msg_loopback",
    authors: ["virtio-msg developers"],
    description: "virtio-msg loopback bus with an in-kernel virtio-rng device (Rust sample)",
    license: "GPL",
    params: {
        silent_after: u32 {
            default: 0,
            description: "Test: the device stops answering after this many messages (0: never)",
        },
        blk_mib: u32 {
            default: 0,
            description: "MiB of a RAM-backed virtio-blk device number 2, up to 1024 (0: none)",
        },
    },
}

/// Device number of the entropy device on the loopback bus.
const RNG_DEV_NUM: u16 = 1;
/// Device number of the block device, if there is one.
const BLK_DEV_NUM: u16 = 2;
/// Largest message on the bus (the AMP PCI device's limit, so that chunking is exercised).
const MAX_MSG: usize = 48;
/// Messages queued towards the device side before `send` reports the bus busy.
const INBOX_LIMIT: usize = 256;
/// How often, and how long each time, [`Bus::sync`] looks whether the device side caught up.
const SYNC_POLLS: u32 = 1000;
const SYNC_POLL: Delta = Delta::from_millis(1);
/// Each device's only queue, and its largest size.
const QUEUE_MAX: u32 = 64;
/// Largest buffer filled at once.
const MAX_FILL: u32 = 4096;
/// Longest descriptor chain served (no indirect descriptors are offered).
const MAX_CHAIN: usize = 8;
/// Largest block device.
const MAX_BLK_MIB: u32 = 1024;

const VIRTIO_ID_BLK: u32 = 2;
const VIRTIO_ID_RNG: u32 = 4;
/// Block device: bytes per sector, the configuration size (`struct virtio_blk_config`), the
/// request types served and the status values.
const SECTOR: u64 = 512;
const BLK_CONFIG_SIZE: u32 = 60;
const VIRTIO_BLK_T_IN: u32 = 0;
const VIRTIO_BLK_T_OUT: u32 = 1;
const VIRTIO_BLK_T_FLUSH: u32 = 4;
const VIRTIO_BLK_T_GET_ID: u32 = 8;
const VIRTIO_BLK_S_OK: u8 = 0;
const VIRTIO_BLK_S_IOERR: u8 = 1;
const VIRTIO_BLK_S_UNSUPP: u8 = 2;
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

// SAFETY: By the type invariant the mapping is plain RAM, usable from any thread.
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

    /// Copies `out.len()` bytes from `offset` on.
    fn read(&self, offset: usize, out: &mut [u8]) -> Option<()> {
        let p = self.check(offset, out.len())?;
        // SAFETY: In bounds (checked); `out` is ours, distinct from driver memory.
        unsafe { core::ptr::copy_nonoverlapping(p, out.as_mut_ptr(), out.len()) };
        Some(())
    }

    /// Copies `data` to `offset` on.
    fn write(&self, offset: usize, data: &[u8]) -> Option<()> {
        let p = self.check(offset, data.len())?;
        // SAFETY: In bounds (checked); the buffer is device-writable, `data` is ours.
        unsafe { core::ptr::copy_nonoverlapping(data.as_ptr(), p, data.len()) };
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

    /// The descriptor chain starting at `head`, copied out of the ring; `None` if it is
    /// malformed or longer than [`MAX_CHAIN`].
    fn read_chain(&self, head: u16) -> Option<Chain> {
        let mut chain = Chain {
            descs: [Desc::default(); MAX_CHAIN],
            len: 0,
        };
        let mut idx = head;
        for slot in chain.descs.iter_mut() {
            if idx >= self.size {
                return None;
            }
            let d = usize::from(idx) * 16;
            let (flags, next) = (self.desc.read_u16(d + 12)?, self.desc.read_u16(d + 14)?);
            *slot = Desc {
                addr: self.desc.read_u64(d)?,
                len: self.desc.read_u32(d + 8)?,
                writable: flags & VIRTQ_DESC_F_WRITE != 0,
            };
            chain.len += 1;
            if flags & VIRTQ_DESC_F_NEXT == 0 {
                return Some(chain);
            }
            idx = next;
        }
        None
    }

    /// Serves every available buffer with `serve`, which returns the bytes it wrote into the
    /// chain (`None`: malformed). Returns whether any buffer was used.
    fn process(&mut self, mut serve: impl FnMut(&[Desc]) -> Option<u32>) -> bool {
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
            let Some(written) = self.read_chain(head).and_then(|c| serve(c.descs())) else {
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

/// One descriptor of a chain.
#[derive(Clone, Copy, Default)]
struct Desc {
    addr: u64,
    len: u32,
    writable: bool,
}

/// A descriptor chain, copied out of the descriptor table.
struct Chain {
    descs: [Desc; MAX_CHAIN],
    len: usize,
}

impl Chain {
    fn descs(&self) -> &[Desc] {
        self.descs.get(..self.len).unwrap_or_default()
    }
}

/// Fills the device-writable buffers of an entropy request with random bytes.
fn serve_rng(chain: &[Desc]) -> Option<u32> {
    let mut written = 0u32;
    for d in chain.iter().filter(|d| d.writable && d.len > 0) {
        let len = d.len.min(MAX_FILL);
        Mapping::new(d.addr, len as usize).ok()?.fill_random();
        written = written.saturating_add(len);
    }
    Some(written)
}

/// Serves a block request: a readable header (type, reserved, sector), data buffers, and a
/// writable status byte, as the virtio specification lays them out.
fn serve_blk(disk: &mut [u8], chain: &[Desc]) -> Option<u32> {
    let (header, rest) = chain.split_first()?;
    let (status, data) = rest.split_last()?;
    if header.writable || header.len < 16 || !status.writable || status.len < 1 {
        return None;
    }
    let mut h = [0u8; 16];
    Mapping::new(header.addr, 16).ok()?.read(0, &mut h)?;
    let kind = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
    let sector = u64::from_le_bytes([h[8], h[9], h[10], h[11], h[12], h[13], h[14], h[15]]);
    let mut written = 0u32;
    let result = match kind {
        VIRTIO_BLK_T_IN | VIRTIO_BLK_T_OUT => {
            let total: u64 = data.iter().map(|d| u64::from(d.len)).sum();
            let start = sector.checked_mul(SECTOR);
            let in_disk = start
                .and_then(|s| s.checked_add(total))
                .is_some_and(|end| end <= disk.len() as u64);
            let reading = kind == VIRTIO_BLK_T_IN;
            match start {
                Some(start) if in_disk && data.iter().all(|d| d.writable == reading) => {
                    let mut at = start as usize;
                    for d in data {
                        let len = d.len as usize;
                        let map = Mapping::new(d.addr, len).ok()?;
                        let part = disk.get_mut(at..at + len)?;
                        if reading {
                            map.write(0, part)?;
                            written = written.saturating_add(d.len);
                        } else {
                            map.read(0, part)?;
                        }
                        at += len;
                    }
                    VIRTIO_BLK_S_OK
                }
                _ => VIRTIO_BLK_S_IOERR,
            }
        }
        VIRTIO_BLK_T_FLUSH => VIRTIO_BLK_S_OK,
        VIRTIO_BLK_T_GET_ID => match data.first() {
            Some(d) if d.writable => {
                let id = b"virtio-msg-loopback\0";
                let len = id.len().min(d.len as usize);
                Mapping::new(d.addr, len).ok()?.write(0, &id[..len])?;
                written = len as u32;
                VIRTIO_BLK_S_OK
            }
            _ => VIRTIO_BLK_S_IOERR,
        },
        _ => VIRTIO_BLK_S_UNSUPP,
    };
    Mapping::new(status.addr, 1).ok()?.write(0, &[result])?;
    Some(written + 1)
}

/// What a device of the bus is.
enum Kind {
    Rng,
    /// A block device and its memory.
    Blk(KVVec<u8>),
}

/// One device of the bus.
struct Function {
    kind: Kind,
    status: u32,
    queue: Option<Queue>,
}

impl Function {
    fn new(kind: Kind) -> Self {
        Self {
            kind,
            status: 0,
            queue: None,
        }
    }

    fn info(&self) -> DeviceInfo {
        let (device_id, config_size) = match self.kind {
            Kind::Rng => (VIRTIO_ID_RNG, 0),
            Kind::Blk(_) => (VIRTIO_ID_BLK, BLK_CONFIG_SIZE),
        };
        DeviceInfo {
            device_id,
            vendor_id: VENDOR_ID,
            num_feature_bits: 64,
            config_size,
            max_virtqueues: 1,
            admin_vq_start: 0,
            admin_vq_count: 0,
        }
    }

    /// Configuration byte `offset`: a block device's capacity (the first field), zeroes for
    /// the fields of features not offered.
    fn config_byte(&self, offset: u32) -> u8 {
        match &self.kind {
            Kind::Blk(disk) => {
                let capacity = (disk.len() as u64 / SECTOR).to_le_bytes();
                capacity.get(offset as usize).copied().unwrap_or(0)
            }
            Kind::Rng => 0,
        }
    }

    /// Serves the available buffers; returns whether any was used.
    fn process(&mut self) -> bool {
        if self.status & STATUS_DRIVER_OK == 0 {
            return false;
        }
        let Some(queue) = self.queue.as_mut() else {
            return false;
        };
        match &mut self.kind {
            Kind::Rng => queue.process(serve_rng),
            Kind::Blk(disk) => queue.process(|chain| serve_blk(disk, chain)),
        }
    }
}

/// The device side of the bus.
struct Devices {
    rng: Function,
    blk: Option<Function>,
    /// Messages still answered before the devices go silent (`None`: always).
    answers_left: Option<u32>,
}

impl Devices {
    fn get(&mut self, dev_num: u16) -> Option<&mut Function> {
        match dev_num {
            RNG_DEV_NUM => Some(&mut self.rng),
            BLK_DEV_NUM => self.blk.as_mut(),
            _ => None,
        }
    }
}

/// One message in flight from the driver side.
struct Msg {
    bytes: [u8; MAX_MSG],
    len: usize,
}

/// The device side of the loopback bus: a virtio entropy device.
#[pin_data]
struct LoopbackDevice {
    /// Filled by `send_atomic`, in any context.
    #[pin]
    inbox: SpinLockIrq<KVec<Msg>>,
    #[pin]
    state: Mutex<Devices>,
    /// Where responses and events go; `None` once the module is unloading.
    #[pin]
    link: SpinLock<Option<Arc<BusLink>>>,
    /// This device, to queue its work from `send`; `None` once the module is unloading.
    #[pin]
    me: SpinLockIrq<Option<Arc<LoopbackDevice>>>,
    #[pin]
    work: Work<LoopbackDevice>,
    /// Messages queued by `send`, and messages the device side has handled: they are handled
    /// in order, so once `handled` reaches a value `queued` had, every answer to what was
    /// queued until then has been delivered (see [`Bus::sync`]).
    queued: Atomic<u64>,
    handled: Atomic<u64>,
    /// By device number: an EVENT_AVAIL is waiting in the inbox. Like a doorbell, a kick
    /// only says "look at the queue": one waiting covers any number sent after it, so those
    /// are not queued (a busy driver would otherwise fill the inbox with them).
    kick_waiting: [Atomic<bool>; 3],
}

impl_has_work! {
    impl HasWork<Self> for LoopbackDevice { self.work }
}

impl WorkItem for LoopbackDevice {
    type Pointer = Arc<LoopbackDevice>;

    fn run(this: Arc<LoopbackDevice>) {
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

impl LoopbackDevice {
    fn new(blk: Option<KVVec<u8>>) -> impl PinInit<Self> {
        pin_init!(Self {
            inbox <- new_spinlock_irq!(KVec::new()),
            state <- new_mutex!(Devices {
                rng: Function::new(Kind::Rng),
                blk: blk.map(|disk| Function::new(Kind::Blk(disk))),
                answers_left: match *module_parameters::silent_after.value() {
                    0 => None,
                    n => Some(n),
                },
            }),
            link <- new_spinlock!(None),
            me <- new_spinlock_irq!(None),
            work <- new_work!("LoopbackDevice::work"),
            queued: Atomic::new(0),
            handled: Atomic::new(0),
            kick_waiting: [const { Atomic::new(false) }; 3],
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
            // From the device side's work item: as an interrupt handler would.
            as_interrupt(|irq| link.deliver(bytes, irq));
        }
    }

    /// Answers one message from the driver side. Like the QEMU device model, a request it
    /// does not understand gets no answer at all.
    fn handle(&self, bytes: &[u8]) {
        let Ok(frame) = Frame::decode(bytes) else {
            return;
        };
        let (dev, token) = (frame.dev_num, frame.token);
        let mut state = self.state.lock();
        match state.answers_left {
            Some(0) => return,
            Some(ref mut n) => *n -= 1,
            None => {}
        }
        let Some(f) = state.get(dev) else {
            return;
        };
        let mut config = [0u8; MAX_MSG];
        let reply = match frame.msg {
            Message::GetDeviceInfo => Message::DeviceInfo(f.info()),
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
            Message::GetDeviceStatus => Message::DeviceStatus { status: f.status },
            Message::SetDeviceStatus { status } => {
                if status == 0 {
                    f.status = 0;
                    f.queue = None;
                } else {
                    f.status = status;
                }
                Message::DeviceStatusSet { status: f.status }
            }
            Message::GetConfig { offset, length } => {
                let end = offset.checked_add(length);
                let Some(data) = config
                    .get_mut(..length as usize)
                    .filter(|_| end.is_some_and(|end| end <= f.info().config_size))
                else {
                    return;
                };
                for (at, b) in (offset..).zip(data.iter_mut()) {
                    *b = f.config_byte(at);
                }
                Message::Config {
                    generation: 0,
                    offset,
                    data,
                }
            }
            Message::GetVqueue { index } => {
                let (max_size, cur_size, (d, a, u)) = match (&f.queue, index) {
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
                    Ok(q) => f.queue = Some(q),
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
                // Before looking at the queue: a kick from now on is queued again.
                if let Some(waiting) = self.kick_waiting.get(usize::from(dev)) {
                    waiting.store(false, Relaxed);
                }
                let used = f.process();
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

impl Bus for LoopbackDevice {
    fn max_msg_size(&self) -> usize {
        MAX_MSG
    }

    fn send_atomic(&self, msg: &[u8]) -> Result {
        // `send` only takes interrupt-safe spinlocks and allocates with GFP_ATOMIC.
        self.send(msg)
    }

    fn send(&self, msg: &[u8]) -> Result {
        let kick = match Frame::decode(msg) {
            Ok(Frame {
                dev_num,
                msg: Message::EventAvail { .. },
                ..
            }) => self.kick_waiting.get(usize::from(dev_num)),
            _ => None,
        };
        if kick.is_some_and(|waiting| waiting.xchg(true, Relaxed)) {
            return Ok(());
        }
        let mut bytes = [0u8; MAX_MSG];
        bytes
            .get_mut(..msg.len())
            .ok_or(EMSGSIZE)?
            .copy_from_slice(msg);
        let mut inbox = self.inbox.lock();
        let pushed = if inbox.len() >= INBOX_LIMIT {
            Err(EBUSY)
        } else {
            inbox
                .push(
                    Msg {
                        bytes,
                        len: msg.len(),
                    },
                    GFP_ATOMIC,
                )
                .map_err(Error::from)
        };
        if pushed.is_err() {
            // Not queued after all: the next kick must be.
            if let Some(waiting) = kick {
                waiting.store(false, Relaxed);
            }
        }
        pushed?;
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

struct LoopbackModule {
    /// The faux device and, under it, the bus's auxiliary device with its link as
    /// registration data. Dropped first: unbinding the transport unregisters the virtio
    /// device.
    bus: Option<faux::WithDependent>,
    device: Arc<LoopbackDevice>,
}

impl kernel::Module for LoopbackModule {
    fn init(_module: &'static ThisModule) -> Result<Self> {
        let blk_mib = *module_parameters::blk_mib.value();
        if blk_mib > MAX_BLK_MIB {
            pr_err!("blk_mib {blk_mib} is more than {MAX_BLK_MIB}\n");
            return Err(EINVAL);
        }
        let disk = match blk_mib {
            0 => None,
            mib => Some(KVVec::from_elem(0u8, (mib as usize) << 20, GFP_KERNEL)?),
        };
        let device = Arc::pin_init(LoopbackDevice::new(disk), GFP_KERNEL)?;
        let link = BusLink::new(device.clone())?;
        *device.link.lock() = Some(link.clone());
        *device.me.lock() = Some(device.clone());
        // From here on, a failure drops `module`, whose `Drop` breaks the cycles just made.
        let mut module = Self { bus: None, device };
        let bus = faux::Registration::new_with_dependent(c"virtio-msg-loopback", None, |parent| {
            let bus = auxiliary::Registration::<ForLt!(Arc<BusLink>)>::new(
                parent,
                AUXILIARY_NAME,
                new_bus_id(),
                AUXILIARY_MODNAME,
                link.clone(),
            )?;
            Ok(KBox::new(bus, GFP_KERNEL)?)
        })?;
        module.bus = Some(bus);
        link.add_device(RNG_DEV_NUM)?;
        pr_info!("virtio-msg loopback bus up, entropy device on device number {RNG_DEV_NUM}\n");
        if blk_mib > 0 {
            link.add_device(BLK_DEV_NUM)?;
            pr_info!("block device of {blk_mib} MiB on device number {BLK_DEV_NUM}\n");
        }
        Ok(module)
    }
}

impl Drop for LoopbackModule {
    fn drop(&mut self) {
        drop(self.bus.take());
        // Break the cycles through `link` and `me`, then let queued work finish.
        *self.device.link.lock() = None;
        *self.device.me.lock() = None;
        self.device.work.flush();
        pr_info!("virtio-msg loopback bus down\n");
    }
}
