// SPDX-License-Identifier: GPL-2.0

//! KUnit suite `virtio_msg_core`: the transport against a scripted fake device.
//!
//! The fake device is a [`Bus`] that answers synchronously from its state, logs every message
//! it receives, and can be told to misbehave: stay silent on some messages, reject SET_CONFIG,
//! change its configuration generation in the middle of a read, answer with token 0 or with
//! tokens that are not the request's, answer late (the held answer comes before the answer
//! to the next message, as on an ordered bus, or at the barrier) or twice. It can deliver
//! from a hard interrupt ([`in_hard_irq`]), as the AMP PCI bus does.

use core::ops::Range;
use kernel::{
    alloc::KVec,
    bindings, device,
    devres::Devres,
    faux,
    ffi::c_void,
    new_mutex, new_spinlock,
    prelude::*,
    str::CString,
    sync::{
        atomic::{Atomic, Relaxed},
        Arc, Mutex, SpinLock,
    },
    time::{Delta, Instant, Monotonic},
    types::Opaque,
    virtio::{
        as_interrupt,
        msg::{Bus, BusDevices, BusLink, Receiver},
        status,
        transport::{DeviceId, Registration, Unregistered},
        Features,
    },
};

use crate::{
    bus::{BusCore, BusHandle},
    device::{MsgDevice, MsgTransport},
    request::Failure,
    stats::{Dropped, Stats},
    wire::{transport_id as id, DeviceInfo, Frame, Message, VqueueInfo, Words},
};

const MAX_MSG: usize = 48;
const DEV: u16 = 1;
const CONFIG_SIZE: usize = 100;
/// The fake bus's window for shared memory regions.
const SHM_WINDOW_START: u32 = 0x8000_0000;
const SHM_WINDOW_LEN: u64 = 0x10_0000;

/// What the fake puts in the token of its answers.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Tokens {
    /// The request's.
    Echo,
    /// Always 0 (QEMU's device model does this for bus replies).
    Zero,
    /// Never the request's (a bus that rewrites tokens).
    Scramble,
}

/// An answer, encoded.
#[derive(Clone, Copy)]
struct Answer {
    bytes: [u8; MAX_MSG],
    len: usize,
}

struct FakeState {
    info: DeviceInfo,
    tokens: Tokens,
    /// Message ids whose next answer is held back (a device answering late).
    hold: KVec<u8>,
    /// Message ids whose next answer is sent twice.
    twice: KVec<u8>,
    /// Answers held back, sent before the answer to the next message or at the barrier.
    held: KVec<Answer>,
    /// Barriers run.
    syncs: u32,
    /// What the barrier fails with, if it does.
    sync_error: Option<Error>,
    /// Barriers still to fail with `EBUSY`.
    busy_syncs: u32,
    /// The length and address GET_SHM reports.
    shm_length: u32,
    shm_address: u32,
    features: [u32; 8],
    driver_features: [u32; 8],
    status: u32,
    config: [u8; CONFIG_SIZE],
    generation: u32,
    /// Bump the generation after this many more GET_CONFIG answers (0: never).
    bump_generation_after: u32,
    /// Bump the generation after every GET_CONFIG answer.
    churn_generation: bool,
    /// Before every GET_CONFIG answer, bump the generation and say so with an EVENT_CONFIG
    /// (sent ahead of the answer, from `events`).
    churn_by_events: bool,
    events: KVec<Answer>,
    /// EVENT_AVAIL sends still to refuse with `EBUSY` (a full bus).
    busy_kicks: u32,
    /// Requests still to refuse with `EBUSY`.
    busy_requests: u32,
    /// A SET_DEVICE_STATUS to this status gets no answer.
    silent_status: Option<u32>,
    /// Bits every SET_DEVICE_STATUS answer shows besides the device's status (a lying device),
    /// and bits the device does not take (FEATURES_OK: features refused).
    status_extra: u32,
    status_refused: u32,
    /// After SET_DEVICE_STATUS 0, the device still shows its old status to this many
    /// GET_DEVICE_STATUS (the last one finds it reset).
    slow_reset: u32,
    /// GET_CONFIG answers still to give for another offset than asked (decodable nonsense).
    misplaced_config: u32,
    /// SET_CONFIG requests still to reject.
    reject_set_config: u32,
    /// Message ids the device ignores.
    silent: KVec<u8>,
    /// Every message received: (message id, first payload word).
    log: KVec<(u8, u32)>,
}

#[pin_data]
struct Fake {
    #[pin]
    state: Mutex<FakeState>,
    #[pin]
    handle: SpinLock<Option<Arc<BusHandle>>>,
    /// Deliver from a hard interrupt handler.
    hard_irq: Atomic<bool>,
    /// Deliveries that ran in a hard interrupt handler, and ones that should have and did not.
    in_irq: Atomic<u32>,
    not_in_irq: Atomic<u32>,
}

/// Runs `f` in a hard interrupt handler on this CPU (an `irq_work`), and waits for it.
/// Returns whether it really ran in hard interrupt context.
/// Whether `cond` holds within 2 s (what a work item does, seen from the test).
fn wait_until(cond: impl Fn() -> bool) -> bool {
    for _ in 0..200 {
        if cond() {
            return true;
        }
        kernel::time::delay::fsleep(kernel::time::Delta::from_millis(10));
    }
    cond()
}

pub(crate) fn in_hard_irq(f: &mut dyn FnMut()) -> bool {
    #[repr(C)]
    struct Call<'a> {
        work: Opaque<bindings::irq_work>,
        f: &'a mut dyn FnMut(),
        in_hardirq: bool,
    }

    /// # Safety
    ///
    /// `work` is the `work` field of a live `Call`, which nothing else touches meanwhile.
    unsafe extern "C" fn run(work: *mut bindings::irq_work) {
        // SAFETY: `work` is the first field of a `#[repr(C)]` `Call` (`Opaque` is
        // transparent), whose owner waits in `irq_work_sync()` without touching it.
        let call = unsafe { &mut *work.cast::<Call<'_>>() };
        // SAFETY: Reading the context has no preconditions.
        call.in_hardirq = unsafe { bindings::in_hardirq() };
        (call.f)();
    }

    let mut call = Call {
        work: Opaque::zeroed(),
        f,
        in_hardirq: false,
    };
    let call: *mut Call<'_> = &raw mut call;
    // SAFETY: `call` is valid; a zeroed `irq_work` with `func` set is what `init_irq_work()`
    // makes.
    let work = unsafe {
        let work = Opaque::cast_into(&raw const (*call).work);
        (*work).func = Some(run);
        work
    };
    // SAFETY: `work` is initialised and stays alive until `irq_work_sync()` returns, by which
    // time `run` has finished.
    unsafe {
        bindings::irq_work_queue(work);
        bindings::irq_work_sync(work);
    }
    // SAFETY: `run` is done with it.
    unsafe { (*call).in_hardirq }
}

/// Whether lockdep is still checking: it stops at the first problem it reports (a lock taken
/// both in a hard interrupt and with interrupts enabled, say). Always true without lockdep.
pub(crate) fn lockdep_happy() -> bool {
    // SAFETY: A plain read of an `int` that lockdep only ever clears.
    unsafe { core::ptr::read_volatile(&raw const bindings::debug_locks) != 0 }
}

fn first_word(msg: &Message<'_>) -> u32 {
    match *msg {
        Message::GetConfig { offset, .. } | Message::SetConfig { offset, .. } => offset,
        Message::SetDeviceStatus { status } => status,
        Message::GetDeviceFeatures { block_index, .. }
        | Message::SetDriverFeatures { block_index, .. } => block_index,
        Message::GetVqueue { index } | Message::GetShm { index } => index,
        _ => 0,
    }
}

impl Fake {
    fn new() -> Result<Arc<Self>> {
        let mut config = [0u8; CONFIG_SIZE];
        for (i, b) in config.iter_mut().enumerate() {
            *b = i as u8 ^ 0x5a;
        }
        Arc::pin_init(
            pin_init!(Self {
                state <- new_mutex!(FakeState {
                    tokens: Tokens::Echo,
                    hold: KVec::new(),
                    twice: KVec::new(),
                    held: KVec::new(),
                    syncs: 0,
                    sync_error: None,
                    busy_syncs: 0,
                    shm_length: 0x1000,
                    shm_address: SHM_WINDOW_START,
                    info: DeviceInfo {
                        device_id: 0x7fff,
                        vendor_id: 0x554d_4551,
                        num_feature_bits: 160,
                        config_size: CONFIG_SIZE as u32,
                        max_virtqueues: 2,
                        admin_vq_start: 0,
                        admin_vq_count: 0,
                    },
                    // Bits 0, 32 (VERSION_1), 40 (RING_RESET), 100 and 159.
                    features: [1, 1 | 1 << 8, 0, 1 << 4, 1 << 31, 0, 0, 0],
                    driver_features: [0; 8],
                    status: 0,
                    config,
                    generation: 7,
                    bump_generation_after: 0,
                    churn_generation: false,
                    churn_by_events: false,
                    events: KVec::new(),
                    busy_kicks: 0,
                    busy_requests: 0,
                    silent_status: None,
                    status_extra: 0,
                    status_refused: 0,
                    misplaced_config: 0,
                    slow_reset: 0,
                    reject_set_config: 0,
                    silent: KVec::new(),
                    log: KVec::new(),
                }),
                handle <- new_spinlock!(None),
                hard_irq: Atomic::new(false),
                in_irq: Atomic::new(0),
                not_in_irq: Atomic::new(0),
            }),
            GFP_KERNEL,
        )
    }

    /// The answer to `frame`, encoded into `out`; 0 for no answer.
    fn answer(s: &mut FakeState, frame: &Frame<'_>, out: &mut [u8]) -> usize {
        let token = match s.tokens {
            Tokens::Echo => frame.token,
            Tokens::Zero => 0,
            Tokens::Scramble => frame.token ^ 0xa5c3,
        };
        let reply = |msg: Message<'_>, out: &mut [u8]| {
            (Frame {
                dev_num: frame.dev_num,
                token,
                msg,
            })
            .encode(out)
            .unwrap_or(0)
        };
        match frame.msg {
            Message::GetDeviceInfo => reply(Message::DeviceInfo(s.info), out),
            Message::GetDeviceFeatures {
                block_index,
                num_blocks,
            } => {
                let start = block_index as usize;
                let words = s
                    .features
                    .get(start..start + num_blocks as usize)
                    .unwrap_or(&[]);
                reply(
                    Message::DeviceFeatures {
                        block_index,
                        features: Words::new(words),
                    },
                    out,
                )
            }
            Message::SetDriverFeatures {
                block_index,
                features,
            } => {
                for (i, w) in features.iter().enumerate() {
                    if let Some(slot) = s.driver_features.get_mut(block_index as usize + i) {
                        *slot = w;
                    }
                }
                reply(Message::DriverFeaturesSet, out)
            }
            Message::SetDeviceStatus { status } => {
                if status != 0 || s.slow_reset == 0 {
                    s.status = status & !s.status_refused;
                }
                let status = s.status | s.status_extra;
                reply(Message::DeviceStatusSet { status }, out)
            }
            Message::GetDeviceStatus => {
                if s.slow_reset > 0 {
                    s.slow_reset -= 1;
                    if s.slow_reset == 0 {
                        s.status = 0;
                    }
                }
                reply(Message::DeviceStatus { status: s.status }, out)
            }
            Message::GetConfig { offset, length } => {
                let (o, l) = (offset as usize, length as usize);
                if s.config.get(o..o + l).is_none() {
                    return 0;
                }
                if s.churn_by_events {
                    s.generation += 1;
                    let mut event = Answer {
                        bytes: [0u8; MAX_MSG],
                        len: 0,
                    };
                    if let Ok((bytes, len)) = event_config(0, s.generation, 0, 0) {
                        event.bytes = bytes;
                        event.len = len;
                        let _ = s.events.push(event, GFP_KERNEL);
                    }
                }
                let answered = if s.misplaced_config > 0 {
                    s.misplaced_config -= 1;
                    offset.wrapping_add(1)
                } else {
                    offset
                };
                let data = &s.config[o..o + l];
                let n = reply(
                    Message::Config {
                        generation: s.generation,
                        offset: answered,
                        data,
                    },
                    out,
                );
                if s.churn_generation {
                    s.generation += 1;
                }
                if s.bump_generation_after > 0 {
                    s.bump_generation_after -= 1;
                    if s.bump_generation_after == 0 {
                        s.generation += 1;
                    }
                }
                n
            }
            Message::SetConfig {
                generation,
                offset,
                data,
            } => {
                if s.reject_set_config > 0 || generation != s.generation {
                    s.reject_set_config = s.reject_set_config.saturating_sub(1);
                    s.generation += 1;
                    let msg = Message::ConfigSet {
                        generation: s.generation,
                        offset,
                        length: 0,
                        echo: None,
                    };
                    return reply(msg, out);
                }
                let o = offset as usize;
                let Some(dst) = s.config.get_mut(o..o + data.len()) else {
                    return 0;
                };
                dst.copy_from_slice(data);
                s.generation += 1;
                let length = data.len() as u32;
                reply(
                    Message::ConfigSet {
                        generation: s.generation,
                        offset,
                        length,
                        echo: None,
                    },
                    out,
                )
            }
            Message::GetVqueue { index } => {
                let max_size = if index < s.info.max_virtqueues {
                    256
                } else {
                    0
                };
                let q = VqueueInfo {
                    index,
                    max_size,
                    cur_size: 0,
                    desc_addr: 0,
                    driver_addr: 0,
                    device_addr: 0,
                };
                reply(Message::Vqueue(q), out)
            }
            Message::SetVqueue(_) => reply(Message::VqueueSet, out),
            Message::ResetVqueue { .. } => reply(Message::VqueueReset, out),
            Message::GetShm { index } => reply(
                Message::Shm {
                    index,
                    length: s.shm_length,
                    address: s.shm_address,
                },
                out,
            ),
            _ => 0,
        }
    }

    fn log(&self) -> KVec<(u8, u32)> {
        let s = self.state.lock();
        let mut log = KVec::new();
        for e in s.log.iter() {
            let _ = log.push(*e, GFP_KERNEL);
        }
        log
    }

    fn sent(&self, msg_id: u8) -> usize {
        self.state
            .lock()
            .log
            .iter()
            .filter(|e| e.0 == msg_id)
            .count()
    }
}

impl Bus for Fake {
    fn max_msg_size(&self) -> usize {
        MAX_MSG
    }

    fn shm_window(&self) -> Option<Range<u64>> {
        let start = u64::from(SHM_WINDOW_START);
        Some(start..start + SHM_WINDOW_LEN)
    }

    fn send_atomic(&self, _msg: &[u8]) -> Result {
        // Always "full": kicks take the deferred path, which `send` serves.
        Err(EBUSY)
    }

    fn send(&self, msg: &[u8]) -> Result {
        let frame = Frame::decode(msg).map_err(|_| EINVAL)?;
        let (_, _, msg_id) = frame.msg.id();
        {
            let mut s = self.state.lock();
            let busy = if msg_id == id::EVENT_AVAIL {
                &mut s.busy_kicks
            } else {
                &mut s.busy_requests
            };
            if *busy > 0 {
                *busy -= 1;
                return Err(EBUSY);
            }
        }
        let mut answer = Answer {
            bytes: [0u8; MAX_MSG],
            len: 0,
        };
        let (late, copies) = {
            let mut s = self.state.lock();
            s.log.push((msg_id, first_word(&frame.msg)), GFP_KERNEL)?;
            // Whatever was held back is ahead of this message's answer.
            let mut late = core::mem::take(&mut s.held);
            let silent_status = match frame.msg {
                Message::SetDeviceStatus { status } => s.silent_status == Some(status),
                _ => false,
            };
            if !s.silent.contains(&msg_id) && !silent_status {
                answer.len = Self::answer(&mut s, &frame, &mut answer.bytes);
            }
            let mut copies = usize::from(answer.len > 0);
            if let Some(i) = s.hold.iter().position(|&h| h == msg_id) {
                let _ = s.hold.remove(i);
                s.held.push(answer, GFP_KERNEL)?;
                copies = 0;
            } else if let Some(i) = s.twice.iter().position(|&h| h == msg_id) {
                let _ = s.twice.remove(i);
                copies *= 2;
            }
            // Events the answer brought go first too.
            for e in core::mem::take(&mut s.events) {
                late.push(e, GFP_KERNEL)?;
            }
            (late, copies)
        };
        for a in late.iter() {
            self.deliver(a);
        }
        for _ in 0..copies {
            self.deliver(&answer);
        }
        Ok(())
    }

    fn sync(&self) -> Result {
        let late = {
            let mut s = self.state.lock();
            s.syncs += 1;
            if let Some(e) = s.sync_error {
                return Err(e);
            }
            if s.busy_syncs > 0 {
                s.busy_syncs -= 1;
                return Err(EBUSY);
            }
            core::mem::take(&mut s.held)
        };
        for a in late.iter() {
            self.deliver(a);
        }
        Ok(())
    }
}

impl Fake {
    fn deliver(&self, answer: &Answer) {
        let handle = self.handle.lock().clone();
        if let (Some(h), Some(bytes)) = (handle, answer.bytes.get(..answer.len)) {
            if self.hard_irq.load(Relaxed) {
                // A whole slot, as the AMP PCI bus hands it on: junk after `msg_size`.
                let mut slot = [0xa5u8; MAX_MSG];
                slot[..bytes.len()].copy_from_slice(bytes);
                let counter = if in_hard_irq(&mut || as_interrupt(|irq| h.deliver(&slot, irq))) {
                    &self.in_irq
                } else {
                    &self.not_in_irq
                };
                counter.add(1, Relaxed);
            } else {
                as_interrupt(|irq| h.deliver(bytes, irq));
            }
        }
    }
}

/// A bus handle over `bus` as the transport makes one, with its counters, and the faux device
/// that stands in for the bus's device (the parent of what the test registers).
pub(crate) fn test_bus(
    bus: Arc<dyn Bus>,
    timeout_ms: u32,
) -> Result<(faux::Registration, Arc<Stats>, Arc<BusHandle>)> {
    let faux = new_faux(None)?;
    let stats = Arc::new(Stats::new(), GFP_KERNEL)?;
    let dev: &device::Device = faux.as_ref();
    let handle = Arc::pin_init(
        BusHandle::new(bus, dev.into(), timeout_ms, stats.clone()),
        GFP_KERNEL,
    )?;
    Ok((faux, stats, handle))
}

/// A faux device under `parent`, if given, with a name of its own: a test that fails an
/// assertion never drops what it set up.
fn new_faux(parent: Option<&device::Device>) -> Result<faux::Registration> {
    static NEXT: Atomic<u32> = Atomic::new(0);
    let name = CString::try_from_fmt(fmt!("virtio-msg-kunit-{}", NEXT.fetch_add(1, Relaxed)))?;
    faux::Registration::new(&name, parent)
}

/// A fake device behind a bus handle, and a probed device on it.
struct Setup {
    fake: Arc<Fake>,
    handle: Arc<BusHandle>,
    stats: Arc<Stats>,
    faux: faux::Registration,
}

impl Setup {
    /// The faux device as the bus's devices: the parent of what the test registers, which maps
    /// its queues itself.
    fn bus_devices(&self) -> BusDevices<'_> {
        let dev = self.faux.bound_device();
        BusDevices {
            parent: dev,
            dma: dev,
        }
    }

    fn new(timeout_ms: u32) -> Result<Self> {
        let fake = Fake::new()?;
        let (faux, stats, handle) = test_bus(fake.clone(), timeout_ms)?;
        *fake.handle.lock() = Some(handle.clone());
        Ok(Self {
            fake,
            handle,
            stats,
            faux,
        })
    }

    /// Probes device `DEV` and routes its messages.
    fn probe(&self) -> Result<Arc<MsgDevice>> {
        let dev = MsgDevice::probe(self.handle.clone(), DEV)?;
        self.handle.add_route(DEV, dev.clone())?;
        Ok(dev)
    }

    /// Makes the fake an entropy device with one queue, probes it and registers it, so that the
    /// stock virtio-rng driver binds and drives it.
    fn bind_rng(&self) -> Result<(Arc<MsgDevice>, Devres<Registration<MsgTransport>>)> {
        self.fake.state.lock().info.device_id = 4;
        self.fake.state.lock().info.max_virtqueues = 1;
        let dev = self.probe()?;
        let id = DeviceId {
            device: 4,
            vendor: 0x554d_4551,
        };
        let parent = self.faux.bound_device();
        let unregistered = Unregistered::new(parent, parent, id, MsgTransport::new(dev.clone()))?;
        dev.set_handle(unregistered.handle())?;
        let registration = unregistered.register()?;
        Ok((dev, registration))
    }

    fn silence(&self, msg_id: u8) -> Result {
        Ok(self.fake.state.lock().silent.push(msg_id, GFP_KERNEL)?)
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        // Break the cycles fake -> handle -> routes -> device -> handle.
        self.handle.remove_route(DEV);
        *self.fake.handle.lock() = None;
    }
}

/// An EVENT_CONFIG of device [`DEV`] with `status` and `generation`, announcing a change of
/// `length` bytes at `offset`.
fn event_config(
    status: u8,
    generation: u32,
    offset: u32,
    length: u32,
) -> Result<([u8; MAX_MSG], usize)> {
    let mut event = [0u8; MAX_MSG];
    let n = Frame {
        dev_num: DEV,
        token: 0,
        msg: Message::EventConfig {
            device_status: u32::from(status),
            generation,
            offset,
            length,
            data: None,
        },
    }
    .encode(&mut event)
    .map_err(|_| EINVAL)?;
    Ok((event, n))
}

/// The first queue of a registered device whose driver created one.
fn first_queue(
    registration: &Devres<Registration<MsgTransport>>,
) -> Result<*mut bindings::virtqueue> {
    let vdev = registration.try_access().ok_or(ENODEV)?.device().as_raw();
    // SAFETY: The device is registered and its driver bound with at least one queue; `list`
    // is the first field of `struct virtqueue`, so the first entry of `vqs` is a queue.
    Ok(unsafe { (*vdev).vqs.next.cast::<bindings::virtqueue>() })
}

/// Plays the device: waits until virtio-rng queued its request for entropy in `vq`, then
/// returns the buffer used (4 bytes), without telling the driver.
fn use_first_buffer(vq: *mut bindings::virtqueue) {
    // SAFETY: `vq` is a live split queue of the bound driver: its rings stay allocated while
    // it is registered.
    let vring = unsafe { &*bindings::virtqueue_get_vring(vq) };
    let (avail, used) = (vring.avail, vring.used);
    // virtio-rng always keeps a request for entropy queued.
    // SAFETY: `avail` points to the queue's driver ring.
    let queued = || unsafe { core::ptr::read_volatile(&raw const (*avail).idx) } != 0;
    assert!(wait_until(queued));
    // (Little-endian: virtio 1.)
    // SAFETY: The rings are the queue's; the fake device never writes them, and the driver
    // reads the used ring only once told.
    unsafe {
        let head = core::ptr::read_volatile((*avail).ring.as_ptr());
        let elem = (*used).ring.as_mut_ptr();
        core::ptr::write_volatile(&raw mut (*elem).id, u32::from(head));
        core::ptr::write_volatile(&raw mut (*elem).len, 4);
        kernel::sync::barrier::smp_wmb();
        core::ptr::write_volatile(&raw mut (*used).idx, 1);
    }
}

/// What `__virtio_cread_many()` does with the 4 bytes at 60 of `dev`'s configuration: reads
/// them until the generation stayed the same across a read. Returns how many reads it took
/// (at most 100).
fn reads_until_settled(dev: &MsgDevice, field: &mut [u8; 4]) -> Result<u32> {
    for reads in 1..100 {
        let before = dev.cached_generation();
        dev.get_config(60, field).map_err(Error::from)?;
        if dev.cached_generation() == before {
            return Ok(reads);
        }
    }
    // Never settled.
    Err(ETIMEDOUT)
}

/// Buffers taken back from a reset queue: the driver (virtio-rng) owns their memory.
///
/// # Safety
///
/// Called by the virtio core with a queue being reset and one of its buffers; it touches
/// neither.
unsafe extern "C" fn recycle(_vq: *mut bindings::virtqueue, _buf: *mut c_void) {}

#[kunit_tests(virtio_msg_core)]
mod cases {
    use super::*;

    #[test]
    fn device_info_is_the_first_message() -> Result {
        let t = Setup::new(1000)?;
        let dev = t.probe()?;
        assert_eq!(t.fake.log().first().map(|e| e.0), Some(id::GET_DEVICE_INFO));
        assert_eq!(dev.info().device_id, 0x7fff);
        assert_eq!(dev.info().config_size, CONFIG_SIZE as u32);
        Ok(())
    }

    #[test]
    fn the_dma_device_is_the_parent_or_an_ancestor() -> Result {
        let t = Setup::new(1000)?;
        // The parent a child of the device that maps, as the transport's auxiliary device is a
        // child of the bus's device.
        let child = new_faux(Some(t.faux.as_ref()))?;
        let dev = t.probe()?;
        let id = DeviceId {
            device: 4,
            vendor: 0,
        };
        let (parent, dma) = (child.bound_device(), t.faux.bound_device());
        let transport = || MsgTransport::new(dev.clone());
        // A descendant of the parent does not stay bound while the parent is: refused.
        let refused = Unregistered::new(dma, child.as_ref(), id, transport());
        assert!(matches!(refused, Err(e) if e == EINVAL));
        let unrelated = Setup::new(1000)?;
        let refused = Unregistered::new(parent, unrelated.faux.as_ref(), id, transport());
        assert!(matches!(refused, Err(e) if e == EINVAL));
        assert!(Unregistered::new(parent, dma, id, transport()).is_ok());
        assert!(Unregistered::new(parent, parent, id, transport()).is_ok());
        dev.stop_work();
        Ok(())
    }

    #[test]
    fn init_order_with_the_virtio_rng_driver() -> Result {
        let t = Setup::new(1000)?;
        let (dev, registration) = t.bind_rng()?;

        let log = t.fake.log();
        let status = |s| (id::SET_DEVICE_STATUS, s);
        let expected = [
            (id::GET_DEVICE_INFO, 0),
            status(0), // reset
            status(1), // ACKNOWLEDGE
            status(3), // DRIVER
            (id::GET_DEVICE_FEATURES, 0),
            (id::SET_DRIVER_FEATURES, 0),
            status(0xb),         // FEATURES_OK, confirmed by the response...
            (id::GET_VQUEUE, 0), // ...before the queue is touched
            (id::SET_VQUEUE, 0),
            status(0xf), // DRIVER_OK, last
        ];
        for (i, e) in expected.iter().enumerate() {
            if log.get(i) != Some(e) {
                pr_err!("message {i}: expected {e:?}, got {:?}\n", log.get(i));
            }
        }
        assert!(log.get(..expected.len()) == Some(&expected[..]));
        // Only the transport features the kernel implements were written back: VERSION_1, and
        // RING_RESET, which the transport offers on top of the rings' own.
        assert_eq!(
            t.fake.state.lock().driver_features[..4],
            [0, 1 | 1 << 8, 0, 0]
        );

        // Reset the driver's live queue through the virtio core, as virtio-net does to resize.
        let vq = first_queue(&registration)?;
        let before = t.fake.log().len();
        // SAFETY: `vq` is a live queue of a bound driver; `recycle` only drops the buffers.
        let ret = unsafe { bindings::virtqueue_reset(vq, Some(recycle), None) };
        assert_eq!(ret, 0);
        let log = t.fake.log();
        let reset = [(id::RESET_VQUEUE, 0), (id::SET_VQUEUE, 0)];
        // The driver's first request for entropy may still be kicked from the kick work as the
        // reset begins: an EVENT_AVAIL before it is not the reset's (one between its two
        // messages, for the queue being reset, would be wrong).
        let after = log.get(before..).unwrap_or(&[]);
        let first = after
            .iter()
            .position(|&(msg_id, _)| msg_id != id::EVENT_AVAIL)
            .unwrap_or(after.len());
        let got = after.get(first..first + 2);
        if got != Some(&reset[..]) {
            pr_err!("queue reset: expected {reset:?}, got {got:?}\n");
        }
        assert!(got == Some(&reset[..]));

        drop(registration);
        dev.clear_handle();
        dev.stop_work();
        // The driver's removal reset the device, then the virtio core acknowledged it again.
        let log = t.fake.log();
        let after = log.get(expected.len()..).unwrap_or(&[]);
        let reset = after.iter().position(|&e| e == status(0));
        assert!(reset.is_some());
        assert_eq!(reset.and_then(|r| after.get(r + 1)), Some(&status(1)));
        Ok(())
    }

    #[test]
    fn features_beyond_64_bits() -> Result {
        let t = Setup::new(1000)?;
        let dev = t.probe()?;
        let f = dev.get_features().map_err(Error::from)?;
        assert!(f.has(0));
        assert!(f.has(32));
        assert!(f.has(100));
        assert!(!f.has(101));
        // Linux negotiates 128 bits: block 4 (bit 159) is never asked for.
        assert!(t
            .fake
            .log()
            .iter()
            .all(|&(i, b)| i != id::GET_DEVICE_FEATURES || b < 4));

        let mut driver = Features::empty();
        driver.set(32);
        driver.set(100);
        dev.set_features(&driver).map_err(Error::from)?;
        let written = t.fake.state.lock().driver_features;
        assert_eq!(written[..5], [0, 1, 0, 1 << 4, 0]);
        Ok(())
    }

    #[test]
    fn config_read_is_chunked_and_bounded() -> Result {
        let t = Setup::new(1000)?;
        let dev = t.probe()?;
        let mut buf = [0u8; CONFIG_SIZE];
        dev.get_config(0, &mut buf).map_err(Error::from)?;
        assert!(buf.iter().enumerate().all(|(i, &b)| b == i as u8 ^ 0x5a));
        // 28 bytes fit a 48-byte message: 100 bytes take 4 GET_CONFIG.
        assert_eq!(t.fake.sent(id::GET_CONFIG), 4);

        // Past the end of the configuration space: refused without a message.
        let mut tail = [0u8; 8];
        assert_eq!(dev.get_config(96, &mut tail), Err(Failure::BadResponse));
        assert_eq!(
            dev.get_config(u32::MAX, &mut tail),
            Err(Failure::BadResponse)
        );
        assert_eq!(dev.set_config(99, &[1, 2]), Err(Failure::BadResponse));
        assert_eq!(t.fake.sent(id::GET_CONFIG), 4);
        assert_eq!(t.fake.sent(id::SET_CONFIG), 0);
        Ok(())
    }

    #[test]
    fn config_fields_read_while_probing_share_a_window() -> Result {
        let t = Setup::new(1000)?;
        let dev = t.probe()?;
        let expected = |offset: u32| (offset as u8) ^ 0x5a;
        // Field by field, as a driver probes: one GET_CONFIG for a 28-byte window.
        let mut field = [0u8; 4];
        for offset in (0..28).step_by(4) {
            dev.get_config(offset, &mut field).map_err(Error::from)?;
            assert_eq!(field[0], expected(offset));
        }
        assert_eq!(t.fake.sent(id::GET_CONFIG), 1);
        // Past the window: a new one from there.
        dev.get_config(26, &mut field).map_err(Error::from)?;
        assert_eq!(field, [26, 27, 28, 29].map(expected));
        assert_eq!(t.fake.sent(id::GET_CONFIG), 2);

        // The device changes a field and says so, keeping its generation (as QEMU's device
        // model does): the window is outdated.
        t.fake.state.lock().config[30] = 0x11;
        let (event, n) = event_config(0, 7, 30, 1)?;
        assert!(in_hard_irq(&mut || as_interrupt(|irq| t
            .handle
            .deliver(&event[..n], irq))));
        dev.get_config(30, &mut field[..1]).map_err(Error::from)?;
        assert_eq!(field[0], 0x11);
        assert_eq!(t.fake.sent(id::GET_CONFIG), 3);

        // Our own write outdates it too.
        dev.set_config(31, &[0x22]).map_err(Error::from)?;
        dev.get_config(31, &mut field[..1]).map_err(Error::from)?;
        assert_eq!(field[0], 0x22);
        assert_eq!(t.fake.sent(id::GET_CONFIG), 4);

        // Once the driver is running, every read asks the device.
        let ok = u32::from(status::DRIVER_OK | status::FEATURES_OK);
        assert_eq!(dev.set_status(ok).map_err(Error::from)?, ok);
        dev.get_config(32, &mut field).map_err(Error::from)?;
        dev.get_config(32, &mut field).map_err(Error::from)?;
        assert_eq!(field, [32, 33, 34, 35].map(expected));
        assert_eq!(t.fake.sent(id::GET_CONFIG), 6);
        Ok(())
    }

    #[test]
    fn config_read_across_a_generation_change_is_retried() -> Result {
        let t = Setup::new(1000)?;
        let dev = t.probe()?;
        t.fake.state.lock().bump_generation_after = 2;
        let mut buf = [0u8; 60];
        dev.get_config(0, &mut buf).map_err(Error::from)?;
        // 3 chunks torn by the change after the 2nd, then 3 consistent ones.
        assert_eq!(t.fake.sent(id::GET_CONFIG), 6);
        Ok(())
    }

    #[test]
    fn a_failed_config_read_gives_the_last_values_never_zeros_nor_two_generations() -> Result {
        let t = Setup::new(30)?;
        let dev = t.probe()?;
        let ok = u32::from(status::DRIVER_OK | status::FEATURES_OK);
        assert_eq!(dev.set_status(ok).map_err(Error::from)?, ok);
        let old = |i: usize| i as u8 ^ 0x5a;
        let mut buf = [0u8; 60];
        dev.get_config(0, &mut buf).map_err(Error::from)?;
        assert!(buf.iter().enumerate().all(|(i, &b)| b == old(i)));
        // New values, and a generation that changes with every answer: each read of the
        // three chunks is torn. After the attempts, the last consistent values, not a mix.
        {
            let mut s = t.fake.state.lock();
            s.config.fill(0xee);
            s.churn_generation = true;
        }
        assert_eq!(dev.get_config(0, &mut buf), Err(Failure::BadResponse));
        assert!(buf.iter().enumerate().all(|(i, &b)| b == old(i)));
        assert!(!dev.is_broken());
        // A device that no longer answers: broken, and still the last values, not zeros.
        t.fake.state.lock().churn_generation = false;
        t.silence(id::GET_CONFIG)?;
        let mut field = [0u8; 8];
        assert_eq!(dev.get_config(8, &mut field), Err(Failure::Timeout));
        assert!(dev.is_broken());
        assert_eq!(field, core::array::from_fn(|i| old(8 + i)));
        // Broken: at once, the same.
        field.fill(0);
        assert!(dev.get_config(8, &mut field).is_err());
        assert_eq!(field, core::array::from_fn(|i| old(8 + i)));
        Ok(())
    }

    #[test]
    fn a_generation_that_never_settles_does_not_keep_the_driver_reading() -> Result {
        let t = Setup::new(1000)?;
        let dev = t.probe()?;
        // Running: every read goes to the device (no read-ahead window).
        let ok = u32::from(status::DRIVER_OK | status::FEATURES_OK);
        assert_eq!(dev.set_status(ok).map_err(Error::from)?, ok);
        t.fake.state.lock().churn_generation = true;
        let mut field = [0u8; 4];
        assert!(reads_until_settled(&dev, &mut field)? <= 9);
        assert_eq!(field, [60, 61, 62, 63].map(|o: u8| o ^ 0x5a));
        // A device that settles is listened to again.
        t.fake.state.lock().churn_generation = false;
        dev.get_config(60, &mut field).map_err(Error::from)?;
        dev.get_config(64, &mut field).map_err(Error::from)?;
        assert_eq!(dev.cached_generation(), t.fake.state.lock().generation);
        Ok(())
    }

    #[test]
    fn a_generation_changed_by_an_event_before_every_answer_does_not_keep_the_driver_reading(
    ) -> Result {
        let t = Setup::new(1000)?;
        let dev = t.probe()?;
        let ok = u32::from(status::DRIVER_OK | status::FEATURES_OK);
        assert_eq!(dev.set_status(ok).map_err(Error::from)?, ok);
        // Each answer carries the generation an EVENT_CONFIG announced just before it, so
        // that no two answers in a row look alike.
        t.fake.state.lock().churn_by_events = true;
        let mut field = [0u8; 4];
        assert!(reads_until_settled(&dev, &mut field)? <= 9);
        // Settled: two answers alike with no event between them.
        t.fake.state.lock().churn_by_events = false;
        dev.get_config(60, &mut field).map_err(Error::from)?;
        dev.get_config(64, &mut field).map_err(Error::from)?;
        assert_eq!(dev.cached_generation(), t.fake.state.lock().generation);
        Ok(())
    }

    #[test]
    fn a_device_that_times_out_while_its_driver_probes_is_broken_with_its_queue() -> Result {
        let t = Setup::new(100)?;
        // DRIVER_OK, the last step of the virtio-rng driver's probe, gets no answer.
        t.fake.state.lock().silent_status = Some(0xf);
        let (dev, registration) = t.bind_rng()?;
        assert!(dev.is_broken());
        let vq = first_queue(&registration)?;
        // SAFETY: `vq` is a live queue of the bound driver.
        assert!(unsafe { bindings::virtqueue_is_broken(vq) });
        drop(registration);
        dev.clear_handle();
        dev.stop_work();
        Ok(())
    }

    #[test]
    fn a_kick_the_bus_has_no_room_for_is_retried_never_lost() -> Result {
        let t = Setup::new(200)?;
        let dev = t.probe()?;
        // The fake's `send_atomic` is always full: every kick takes the deferred path.
        t.fake.state.lock().busy_kicks = 5;
        assert!(dev.notify(1, None));
        dev.flush_kicks();
        assert_eq!(t.fake.sent(id::EVENT_AVAIL), 1);
        assert_eq!(t.fake.state.lock().busy_kicks, 0);
        assert!(!dev.is_broken());
        // A bus that stays full: after the timeout the device is broken, not left waiting.
        t.fake.state.lock().busy_kicks = u32::MAX;
        assert!(dev.notify(1, None));
        dev.flush_kicks();
        assert_eq!(t.fake.sent(id::EVENT_AVAIL), 1);
        assert!(dev.is_broken());
        // Broken: nothing more is sent, and a kick reports the queue broken.
        assert!(!dev.notify(0, None));
        Ok(())
    }

    #[test]
    fn rejected_config_write_is_retried_with_the_new_generation() -> Result {
        let t = Setup::new(1000)?;
        let dev = t.probe()?;
        t.fake.state.lock().reject_set_config = 1;
        dev.set_config(10, &[0xaa, 0xbb]).map_err(Error::from)?;
        assert_eq!(t.fake.sent(id::SET_CONFIG), 2);
        assert_eq!(t.fake.state.lock().config[10..12], [0xaa, 0xbb]);
        Ok(())
    }

    #[test]
    fn status_comes_from_the_set_response() -> Result {
        let t = Setup::new(1000)?;
        let dev = t.probe()?;
        assert_eq!(dev.set_status(0x0b).map_err(Error::from)?, 0x0b);
        dev.reset();
        assert_eq!(t.fake.state.lock().status, 0);
        assert_eq!(dev.cached_status(), 0);
        Ok(())
    }

    #[test]
    fn the_driver_sees_no_status_bit_it_did_not_write() -> Result {
        let t = Setup::new(1000)?;
        let dev = t.probe()?;
        let (ack, driver) = (u32::from(status::ACKNOWLEDGE), u32::from(status::DRIVER));
        let (ok, needs_reset) = (u32::from(status::DRIVER_OK), u32::from(status::NEEDS_RESET));
        // DRIVER_OK and NEEDS_RESET in the answer to ACKNOWLEDGE: the driver sees ACKNOWLEDGE.
        t.fake.state.lock().status_extra = ok | needs_reset;
        dev.reset();
        assert_eq!(dev.cached_status(), 0);
        dev.set_status(ack).map_err(Error::from)?;
        assert_eq!(dev.cached_status(), ack);
        // NEEDS_RESET while the driver runs is news the driver must see.
        let running = ack | driver | u32::from(status::FEATURES_OK) | ok;
        dev.set_status(running).map_err(Error::from)?;
        assert_eq!(dev.cached_status(), running | needs_reset);
        // A device that refuses the features clears FEATURES_OK; the driver sees that.
        t.fake.state.lock().status_extra = 0;
        t.fake.state.lock().status_refused = u32::from(status::FEATURES_OK);
        dev.set_status(ack | driver | u32::from(status::FEATURES_OK))
            .map_err(Error::from)?;
        assert_eq!(dev.cached_status(), ack | driver);
        Ok(())
    }

    #[test]
    fn nonsense_is_asked_again_and_a_device_that_keeps_answering_it_is_broken() -> Result {
        let t = Setup::new(1000)?;
        let dev = t.probe()?;
        let ok = u32::from(status::DRIVER_OK | status::FEATURES_OK);
        assert_eq!(dev.set_status(ok).map_err(Error::from)?, ok);
        let mut field = [0u8; 4];
        // One answer for another offset: asked again, the second answer is taken.
        t.fake.state.lock().misplaced_config = 1;
        let asked = t.fake.sent(id::GET_CONFIG);
        dev.get_config(60, &mut field).map_err(Error::from)?;
        assert_eq!(t.fake.sent(id::GET_CONFIG) - asked, 2);
        assert_eq!(field, [60, 61, 62, 63].map(|o: u8| o ^ 0x5a));
        assert!(!dev.is_broken());
        // Nonsense every time: no made-up bytes, the device is broken (and nothing more
        // is asked of it).
        t.fake.state.lock().misplaced_config = u32::MAX;
        assert!(dev.get_config(60, &mut field).is_err());
        assert!(dev.is_broken());
        assert_eq!(t.stats.broken_count(), 1);
        let asked = t.fake.sent(id::GET_CONFIG);
        assert!(dev.get_config(60, &mut field).is_err());
        assert_eq!(t.fake.sent(id::GET_CONFIG), asked);
        Ok(())
    }

    #[test]
    fn a_slow_reset_is_polled_until_it_completes() -> Result {
        let t = Setup::new(1000)?;
        let dev = t.probe()?;
        dev.set_status(0x0b).map_err(Error::from)?;
        t.fake.state.lock().slow_reset = 3;
        let polls = t.fake.sent(id::GET_DEVICE_STATUS);
        dev.reset();
        assert_eq!(t.fake.sent(id::GET_DEVICE_STATUS) - polls, 3);
        assert_eq!(t.fake.state.lock().status, 0);
        assert_eq!(dev.cached_status(), 0);
        Ok(())
    }

    #[test]
    fn a_reset_that_never_completes_is_polled_for_a_bounded_time() -> Result {
        let t = Setup::new(1000)?;
        let dev = t.probe()?;
        dev.set_status(0x0b).map_err(Error::from)?;
        t.fake.state.lock().slow_reset = u32::MAX;
        let polls = t.fake.sent(id::GET_DEVICE_STATUS);
        let start = Instant::<Monotonic>::now();
        dev.reset();
        // Every 10 ms for 200 ms, then given up: the device is alive, so not broken, and the
        // virtio core gets the status 0 it requires.
        let asked = t.fake.sent(id::GET_DEVICE_STATUS) - polls;
        assert!((2..=21).contains(&asked));
        assert!(start.elapsed() < Delta::from_secs(2));
        assert_eq!(t.fake.state.lock().status, 0x0b);
        assert_eq!(dev.cached_status(), 0);
        assert_eq!(t.stats.broken_count(), 0);
        Ok(())
    }

    #[test]
    fn silent_device_times_out_and_is_broken() -> Result {
        let t = Setup::new(30)?;
        let dev = t.probe()?;
        t.silence(id::SET_DEVICE_STATUS)?;
        assert_eq!(dev.set_status(1), Err(Failure::Timeout));
        // Asked three times: a lost answer is not a dead device.
        assert_eq!(t.stats.timeout_count(), 3);
        assert_eq!(t.stats.retry_count(), 2);
        assert_eq!(t.fake.sent(id::SET_DEVICE_STATUS), 3);
        assert!(dev.wants_recovery());
        // Broken: later requests fail at once, without a message.
        let sent = t.fake.log().len();
        assert_eq!(dev.set_status(1), Err(Failure::Broken));
        let mut buf = [0u8; 4];
        assert_eq!(dev.get_config(0, &mut buf), Err(Failure::Broken));
        assert_eq!(t.fake.log().len(), sent);
        // A reset of a broken device completes locally, as the virtio core needs.
        dev.reset();
        assert_eq!(dev.cached_status(), 0);
        Ok(())
    }

    #[test]
    fn optional_request_timeout_does_not_break() -> Result {
        let t = Setup::new(30)?;
        let dev = t.probe()?;
        t.silence(id::GET_SHM)?;
        assert!(dev.shm_region(0).is_none());
        assert_eq!(t.stats.timeout_count(), 1);
        assert_eq!(dev.set_status(1).map_err(Error::from)?, 1);
        Ok(())
    }

    #[test]
    fn requests_answered_from_a_hard_interrupt() -> Result {
        let t = Setup::new(1000)?;
        t.fake.hard_irq.store(true, Relaxed);
        let dev = t.probe()?;
        assert_eq!(dev.set_status(1).map_err(Error::from)?, 1);
        let mut buf = [0u8; 40];
        dev.get_config(10, &mut buf).map_err(Error::from)?;
        assert!(buf
            .iter()
            .enumerate()
            .all(|(i, &b)| b == (10 + i) as u8 ^ 0x5a));
        assert!(t.fake.in_irq.load(Relaxed) >= 3);
        assert_eq!(t.fake.not_in_irq.load(Relaxed), 0);
        assert_eq!(t.stats.dropped_count(Dropped::Malformed), 0);
        // Every lock on the way is taken with interrupts disabled elsewhere too.
        assert!(lockdep_happy());
        Ok(())
    }

    #[test]
    fn hostile_slots_in_a_hard_interrupt_are_counted_and_dropped() -> Result {
        let t = Setup::new(1000)?;
        let dev = t.probe()?;
        let encode = |dev_num: u16, msg: Message<'_>| -> Result<[u8; MAX_MSG]> {
            let mut slot = [0x5au8; MAX_MSG];
            let frame = Frame {
                dev_num,
                token: 0,
                msg,
            };
            frame.encode(&mut slot).map_err(|_| EINVAL)?;
            Ok(slot)
        };
        let used = encode(DEV, Message::EventUsed { vq_index: 0 })?;
        let mut too_long = used;
        too_long[6..8].copy_from_slice(&200u16.to_le_bytes());
        let mut too_short = used;
        too_short[6..8].copy_from_slice(&3u16.to_le_bytes());
        let slots = [
            (too_long, Dropped::Malformed),
            (too_short, Dropped::Malformed),
            ([0xff; MAX_MSG], Dropped::Malformed),
            (
                encode(0, Message::Pong { data: 1 })?,
                Dropped::WrongDirection,
            ),
            (
                encode(DEV, Message::GetDeviceInfo)?,
                Dropped::WrongDirection,
            ),
            (
                encode(DEV, Message::EventUsed { vq_index: 7 })?,
                Dropped::NoQueue,
            ),
            (
                encode(DEV, Message::EventUsed { vq_index: 1 << 20 })?,
                Dropped::NoQueue,
            ),
            (used, Dropped::NoQueue),
            (
                encode(999, Message::EventUsed { vq_index: 0 })?,
                Dropped::NoDevice,
            ),
        ];
        for (slot, why) in slots {
            let before = t.stats.dropped_count(why);
            assert!(in_hard_irq(&mut || as_interrupt(|irq| t
                .handle
                .deliver(&slot, irq))));
            assert_eq!(t.stats.dropped_count(why), before + 1);
        }
        // Nothing was taken for an answer: the device still works.
        assert_eq!(dev.set_status(3).map_err(Error::from)?, 3);
        assert!(lockdep_happy());
        Ok(())
    }

    #[test]
    fn bad_late_and_unsolicited_messages_are_counted() -> Result {
        let t = Setup::new(30)?;
        let dev = t.probe()?;
        // Garbage.
        as_interrupt(|irq| t.handle.deliver(&[0xff, 0x01, 0x02], irq));
        as_interrupt(|irq| {
            t.handle
                .deliver(&[0x01, 0x07, 0x01, 0x00, 0x00, 0x00, 0x30, 0x00], irq)
        });
        assert_eq!(t.stats.dropped_count(Dropped::Malformed), 2);

        // A response nobody asked for.
        let mut out = [0u8; MAX_MSG];
        let unsolicited = Frame {
            dev_num: DEV,
            token: 0x7000,
            msg: Message::DeviceStatus { status: 1 },
        };
        let n = unsolicited.encode(&mut out).map_err(|_| EINVAL)?;
        as_interrupt(|irq| t.handle.deliver(&out[..n], irq));
        assert_eq!(t.stats.dropped_count(Dropped::Unsolicited), 1);

        // A response to a request that timed out: arrives late, is dropped, and the next
        // request gets its own answer.
        t.silence(id::GET_SHM)?;
        assert!(dev.shm_region(3).is_none());
        let late = Frame {
            dev_num: DEV,
            token: dev.last_token(),
            msg: Message::Shm {
                index: 3,
                length: 64,
                address: 0,
            },
        };
        let n = late.encode(&mut out).map_err(|_| EINVAL)?;
        as_interrupt(|irq| t.handle.deliver(&out[..n], irq));
        assert_eq!(t.stats.dropped_count(Dropped::Late), 1);
        assert_eq!(dev.set_status(3).map_err(Error::from)?, 3);

        // For a device number with no device.
        let stray = Frame {
            dev_num: 9,
            token: 1,
            msg: Message::EventUsed { vq_index: 0 },
        };
        let n = stray.encode(&mut out).map_err(|_| EINVAL)?;
        as_interrupt(|irq| t.handle.deliver(&out[..n], irq));
        assert_eq!(t.stats.dropped_count(Dropped::NoDevice), 1);

        // EVENT_USED for a device without queues.
        let used = Frame {
            dev_num: DEV,
            token: 0,
            msg: Message::EventUsed { vq_index: 0 },
        };
        let n = used.encode(&mut out).map_err(|_| EINVAL)?;
        as_interrupt(|irq| t.handle.deliver(&out[..n], irq));
        assert_eq!(t.stats.dropped_count(Dropped::NoQueue), 1);
        Ok(())
    }

    #[test]
    fn responses_are_matched_whatever_their_token() -> Result {
        for tokens in [Tokens::Zero, Tokens::Scramble, Tokens::Echo] {
            let t = Setup::new(1000)?;
            t.fake.state.lock().tokens = tokens;
            let dev = t.probe()?;
            assert_eq!(dev.set_status(1).map_err(Error::from)?, 1);
            let mut buf = [0u8; 40];
            dev.get_config(10, &mut buf).map_err(Error::from)?;
            assert!(buf
                .iter()
                .enumerate()
                .all(|(i, &b)| b == (i as u8 + 10) ^ 0x5a));
            assert_eq!(dev.shm_region(2).map(|r| r.len), Some(0x1000));
            assert_eq!(t.stats.timeout_count(), 0);
            assert_eq!(t.stats.dropped_count(Dropped::Late), 0);
            assert_eq!(t.stats.dropped_count(Dropped::Unsolicited), 0);
            assert_eq!(t.fake.state.lock().syncs, 0);
        }
        Ok(())
    }

    #[test]
    fn late_response_never_answers_a_later_request() -> Result {
        // With token 0 nothing but the barrier tells the late answer from the next one: without
        // it, the late answer (first in line at the next request) would be taken.
        for tokens in [Tokens::Zero, Tokens::Scramble, Tokens::Echo] {
            let t = Setup::new(30)?;
            t.fake.state.lock().tokens = tokens;
            let dev = t.probe()?;
            // GET_SHM may go unanswered (optional): its answer comes only after the timeout.
            t.fake.state.lock().hold.push(id::GET_SHM, GFP_KERNEL)?;
            assert!(dev.shm_region(0).is_none());
            assert_eq!(t.stats.timeout_count(), 1);
            // The device changed its mind meanwhile; the next answer says so.
            t.fake.state.lock().shm_length = 0x2000;
            assert_eq!(dev.shm_region(0).map(|r| r.len), Some(0x2000));
            assert_eq!(t.fake.state.lock().syncs, 1);
            assert_eq!(t.stats.barrier_count(), 1);
            assert_eq!(t.stats.dropped_count(Dropped::Late), 1);
            // In step again: no more barriers.
            assert_eq!(dev.set_status(1).map_err(Error::from)?, 1);
            assert_eq!(t.fake.state.lock().syncs, 1);
        }
        Ok(())
    }

    #[test]
    fn duplicate_response_is_dropped_and_resynchronises() -> Result {
        let t = Setup::new(1000)?;
        t.fake.state.lock().tokens = Tokens::Zero;
        let dev = t.probe()?;
        t.fake.state.lock().twice.push(id::GET_SHM, GFP_KERNEL)?;
        assert_eq!(dev.shm_region(0).map(|r| r.len), Some(0x1000));
        assert_eq!(t.stats.dropped_count(Dropped::Unsolicited), 1);
        assert!(dev.out_of_step());
        // A second copy may mean more to come: the next request waits for a barrier.
        t.fake.state.lock().shm_length = 0x3000;
        assert_eq!(dev.shm_region(0).map(|r| r.len), Some(0x3000));
        assert_eq!(t.fake.state.lock().syncs, 1);
        assert!(!dev.out_of_step());
        Ok(())
    }

    #[test]
    fn echoed_tokens_drop_an_earlier_answer_at_once() -> Result {
        let t = Setup::new(1000)?;
        let dev = t.probe()?;
        // The device echoed the token of four answers in a row: tokens are trusted from now on.
        for _ in 0..4 {
            assert_eq!(dev.set_status(1).map_err(Error::from)?, 1);
        }
        // An answer naming an earlier request sits ahead of the next answer, with nothing
        // to tell the requester it is out of step: the token alone drops it.
        let mut stale = Answer {
            bytes: [0u8; MAX_MSG],
            len: 0,
        };
        stale.len = (Frame {
            dev_num: DEV,
            token: dev.last_token(),
            msg: Message::DeviceStatusSet { status: 0x40 },
        })
        .encode(&mut stale.bytes)
        .map_err(|_| EINVAL)?;
        t.fake.state.lock().held.push(stale, GFP_KERNEL)?;
        assert_eq!(dev.set_status(3).map_err(Error::from)?, 3);
        assert_eq!(t.stats.dropped_count(Dropped::Late), 1);
        Ok(())
    }

    #[test]
    fn a_bus_counter_in_the_token_is_not_taken_for_echoes() -> Result {
        let t = Setup::new(30)?;
        let dev = t.probe()?;
        // Three answers happen to carry their request's token, then the bus's own: tokens are
        // ignored from then on, and an answer with a foreign token is taken all the same.
        for _ in 0..3 {
            assert_eq!(dev.set_status(1).map_err(Error::from)?, 1);
        }
        t.fake.state.lock().tokens = Tokens::Scramble;
        for status in [3, 7] {
            assert_eq!(dev.set_status(status).map_err(Error::from)?, status);
        }
        t.fake.state.lock().tokens = Tokens::Echo;
        assert_eq!(dev.set_status(0xb).map_err(Error::from)?, 0xb);
        assert_eq!(t.stats.timeout_count(), 0);
        assert_eq!(t.stats.dropped_count(Dropped::Late), 0);
        Ok(())
    }

    #[test]
    fn failed_barrier() -> Result {
        // The device does not answer the barrier: like any essential request, broken.
        let t = Setup::new(30)?;
        let dev = t.probe()?;
        t.silence(id::GET_SHM)?;
        assert!(dev.shm_region(0).is_none());
        t.fake.state.lock().sync_error = Some(ETIMEDOUT);
        assert_eq!(dev.set_status(1), Err(Failure::Timeout));
        assert_eq!(dev.set_status(1), Err(Failure::Broken));

        // The bus cannot send the barrier (full, say): the request is tried again, barrier
        // first; a bus that stays full through every attempt breaks the device (nothing goes
        // on with a made-up answer) and has it recovered.
        let t = Setup::new(30)?;
        let dev = t.probe()?;
        t.silence(id::GET_SHM)?;
        assert!(dev.shm_region(0).is_none());
        t.fake.state.lock().sync_error = Some(EBUSY);
        assert_eq!(dev.set_status(1), Err(Failure::Send(EBUSY)));
        assert_eq!(t.fake.state.lock().syncs, 3);
        assert!(dev.is_broken());
        let t = Setup::new(30)?;
        let dev = t.probe()?;
        t.silence(id::GET_SHM)?;
        assert!(dev.shm_region(0).is_none());
        t.fake.state.lock().busy_syncs = 2;
        assert_eq!(dev.set_status(1).map_err(Error::from)?, 1);
        assert_eq!(t.fake.state.lock().syncs, 3);
        assert_eq!(t.stats.barrier_count(), 1);
        assert_eq!(t.stats.retry_count(), 2);
        assert!(!dev.is_broken());
        Ok(())
    }

    #[test]
    fn bus_without_barrier_relies_on_echoed_tokens() -> Result {
        let t = Setup::new(30)?;
        t.fake.state.lock().sync_error = Some(ENOTSUPP);
        let dev = t.probe()?;
        for _ in 0..4 {
            assert_eq!(dev.set_status(1).map_err(Error::from)?, 1);
        }
        // A late answer comes ahead of the next one; the bus has no barrier, the request goes
        // out unprotected and is counted, and the stale token gives the late answer away.
        t.fake.state.lock().hold.push(id::GET_SHM, GFP_KERNEL)?;
        assert!(dev.shm_region(0).is_none());
        t.fake.state.lock().shm_length = 0x2000;
        assert_eq!(dev.shm_region(0).map(|r| r.len), Some(0x2000));
        assert_eq!(t.stats.unprotected_count(), 1);
        assert_eq!(t.stats.dropped_count(Dropped::Late), 1);
        // The echoed token of that answer shows every earlier one is in: in step again.
        assert!(!dev.out_of_step());
        Ok(())
    }

    #[test]
    fn device_removed_before_its_initial_probe_is_not_added() -> Result {
        let t = Setup::new(1000)?;
        let bus = t.bus_devices();
        let core = Arc::pin_init(BusCore::new(t.handle.clone()), GFP_KERNEL)?;
        // Listed at connection time, then removed before the initial probe ran.
        let mut listed = KVec::new();
        listed.push(DEV, GFP_KERNEL)?;
        core.add_listed(listed);
        core.device_removed(DEV);
        core.probe_listed(&bus);
        assert_eq!(t.fake.sent(id::GET_DEVICE_INFO), 0);
        // Announced again later: probed and registered.
        core.device_added(&bus, DEV);
        assert_eq!(t.fake.sent(id::GET_DEVICE_INFO), 1);
        core.shutdown();
        Ok(())
    }

    #[test]
    fn shared_memory_outside_the_bus_window_is_refused() -> Result {
        let t = Setup::new(1000)?;
        let dev = t.probe()?;
        let start = SHM_WINDOW_START;
        let len = SHM_WINDOW_LEN as u32;
        let region = |address: u32, length: u32| {
            let mut s = t.fake.state.lock();
            (s.shm_address, s.shm_length) = (address, length);
            drop(s);
            dev.shm_region(0).map(|r| (r.addr, r.len))
        };
        // The whole window, and a page at its end: used as named.
        assert_eq!(region(start, len), Some((start.into(), len.into())));
        let last = start + len - 0x1000;
        assert_eq!(region(last, 0x1000), Some((last.into(), 0x1000)));
        // Starting before it, running past its end, past the address space, or elsewhere.
        assert!(region(start - 0x1000, 0x2000).is_none());
        assert!(region(last, 0x2000).is_none());
        assert!(region(u32::MAX - 0xfff, u32::MAX).is_none());
        assert!(region(0x1000, 0x1000).is_none());
        // None of that breaks the device.
        assert!(!dev.is_broken());
        Ok(())
    }

    #[test]
    fn callers_queued_behind_a_silent_device_share_its_attempts() -> Result {
        let t = Setup::new(100)?;
        let dev = t.probe()?;
        t.silence(id::SET_DEVICE_STATUS)?;
        // Four callers at once; each would try three times on its own.
        let done = Arc::new(Atomic::new(0u32), GFP_KERNEL)?;
        for _ in 0..4 {
            let (dev, done) = (dev.clone(), done.clone());
            kernel::workqueue::system_unbound().try_spawn(GFP_KERNEL, move || {
                let _ = dev.set_status(1);
                done.add(1, Relaxed);
            })?;
        }
        assert!(wait_until(|| done.load(Relaxed) == 4));
        // Three timeouts in a row, whoever waited, and the device is broken; the others
        // give up then instead of paying theirs.
        assert!(dev.is_broken());
        assert_eq!(t.fake.sent(id::SET_DEVICE_STATUS), 3);
        Ok(())
    }

    #[test]
    fn a_bus_listing_silent_devices_is_probed_in_bounded_time() -> Result {
        let t = Setup::new(20)?;
        let bus = t.bus_devices();
        let core = Arc::pin_init(BusCore::new(t.handle.clone()), GFP_KERNEL)?;
        // 200 listed numbers, none of which answers: each silent probe tries three times,
        // and after MAX_SILENT_PROBES of them in a row the rest are left alone.
        t.silence(id::GET_DEVICE_INFO)?;
        let mut listed = KVec::new();
        for n in 0..200 {
            listed.push(n, GFP_KERNEL)?;
        }
        core.add_listed(listed);
        core.probe_listed(&bus);
        let tries = (crate::bus::MAX_SILENT_PROBES * crate::request::ESSENTIAL_ATTEMPTS) as usize;
        assert_eq!(t.fake.sent(id::GET_DEVICE_INFO), tries);
        assert!(core.device(0).is_none());
        // Nothing is left to probe.
        core.probe_listed(&bus);
        assert_eq!(t.fake.sent(id::GET_DEVICE_INFO), tries);
        core.shutdown();
        Ok(())
    }

    #[test]
    fn messages_are_counted_per_type() -> Result {
        let t = Setup::new(1000)?;
        let dev = t.probe()?;
        let mut buf = [0u8; 10];
        dev.get_config(0, &mut buf).map_err(Error::from)?;
        assert_eq!(t.stats.sent_count(id::GET_DEVICE_INFO), 1);
        assert_eq!(t.stats.sent_count(id::GET_CONFIG), 1);
        Ok(())
    }

    #[test]
    fn a_lost_answer_is_asked_again_and_the_device_goes_on() -> Result {
        for tokens in [Tokens::Zero, Tokens::Echo] {
            let t = Setup::new(30)?;
            t.fake.state.lock().tokens = tokens;
            let dev = t.probe()?;
            // The answer comes only after the timeout (as from a device whose queue was full):
            // the request is sent again, after the barrier that drops the late answer.
            t.fake
                .state
                .lock()
                .hold
                .push(id::SET_DEVICE_STATUS, GFP_KERNEL)?;
            assert_eq!(dev.set_status(3).map_err(Error::from)?, 3);
            assert_eq!(t.fake.sent(id::SET_DEVICE_STATUS), 2);
            assert_eq!(t.stats.timeout_count(), 1);
            assert_eq!(t.stats.retry_count(), 1);
            assert_eq!(t.stats.dropped_count(Dropped::Late), 1);
            assert!(!dev.is_broken());
            assert!(!dev.wants_recovery());
        }
        Ok(())
    }

    #[test]
    fn a_request_the_bus_has_no_room_for_is_retried_then_breaks() -> Result {
        let t = Setup::new(30)?;
        let dev = t.probe()?;
        t.fake.state.lock().busy_requests = 2;
        let mut buf = [0u8; 4];
        dev.get_config(4, &mut buf).map_err(Error::from)?;
        assert_eq!(buf, [4, 5, 6, 7].map(|i: u8| i ^ 0x5a));
        assert_eq!(t.stats.retry_count(), 2);
        assert!(!dev.is_broken());
        // Full for good (past the read-ahead window of the first read): the read fails and the
        // device is broken, instead of a read of zeros that a driver would take for the
        // device's configuration.
        t.fake.state.lock().busy_requests = u32::MAX;
        assert_eq!(dev.get_config(90, &mut buf), Err(Failure::Send(EBUSY)));
        assert!(dev.is_broken());
        assert!(dev.wants_recovery());
        assert_eq!(t.stats.broken_count(), 1);
        Ok(())
    }

    #[test]
    fn a_device_that_needs_a_reset_is_removed_and_probed_again() -> Result {
        let t = Setup::new(100)?;
        let bus = t.bus_devices();
        let core = Arc::pin_init(BusCore::new(t.handle.clone()), GFP_KERNEL)?;
        // Recovery probes again through the bus's link, connected as the transport does it.
        let link = BusLink::new(t.fake.clone())?;
        let (connection, _) = link.connect(&bus, core.clone())?;
        core.enable_recovery(link);
        core.device_added(&bus, DEV);
        assert_eq!(t.fake.sent(id::GET_DEVICE_INFO), 1);
        let needs_reset = || -> Result {
            let (event, n) = event_config(status::NEEDS_RESET, 7, 0, 0)?;
            assert!(in_hard_irq(&mut || as_interrupt(|irq| t
                .handle
                .deliver(&event[..n], irq))));
            Ok(())
        };
        // Each time: reset, then broken (in that order: a broken queue must not be written
        // any more), then a fresh probe (GET_DEVICE_INFO) of the device number, which the
        // device answers, so it is registered again and works.
        for round in 1..=crate::bus::MAX_RECOVERIES {
            let old = core.device(DEV).ok_or(ENODEV)?;
            let from = t.fake.log().len();
            needs_reset()?;
            assert!(wait_until(|| old.is_broken()));
            assert!(wait_until(
                || t.fake.sent(id::GET_DEVICE_INFO) == 1 + round as usize
            ));
            assert!(wait_until(|| core
                .device(DEV)
                .is_some_and(|d| !Arc::ptr_eq(&d, &old))));
            let new = core.device(DEV).ok_or(ENODEV)?;
            assert!(!new.is_broken());
            // Reset before the new probe: by the recovery, before it broke the device.
            let log = t.fake.log();
            let since = log.get(from..).unwrap_or(&[]);
            let reset = since.iter().position(|e| *e == (id::SET_DEVICE_STATUS, 0));
            let probe = since.iter().position(|e| e.0 == id::GET_DEVICE_INFO);
            assert!(reset.is_some_and(|r| probe.is_some_and(|p| r < p)));
            assert_eq!(new.set_status(1).map_err(Error::from)?, 1);
        }
        // Once more than that: removed for good.
        needs_reset()?;
        assert!(wait_until(|| core.device(DEV).is_none()));
        assert_eq!(
            t.fake.sent(id::GET_DEVICE_INFO),
            1 + crate::bus::MAX_RECOVERIES as usize
        );
        core.shutdown();
        drop(connection);
        Ok(())
    }

    #[test]
    fn a_broken_queue_whose_device_used_buffers_leaves_no_driver_polling() -> Result {
        let t = Setup::new(1000)?;
        let (dev, registration) = t.bind_rng()?;
        let vq = first_queue(&registration)?;
        use_first_buffer(vq);
        // The device is then found dead. A driver that re-enables callbacks after taking its
        // buffers (virtio-net's TX clean-up) asks again as long as the device used more than
        // it took; a broken queue gives nothing, so it must say there is nothing more.
        dev.fail();
        // SAFETY: `vq` is live; virtio-rng does not use it meanwhile (no callback comes).
        unsafe {
            assert!(bindings::virtqueue_is_broken(vq));
            assert!(bindings::virtqueue_get_buf(vq, &mut 0).is_null());
            assert!(bindings::virtqueue_enable_cb_delayed(vq));
        }
        drop(registration);
        dev.clear_handle();
        dev.stop_work();
        Ok(())
    }

    #[test]
    fn a_device_the_bus_reported_gone_is_sent_nothing_more() -> Result {
        let t = Setup::new(1000)?;
        let (dev, registration) = t.bind_rng()?;
        let before = t.fake.sent(id::SET_DEVICE_STATUS);
        // A device that is only broken still gets a last reset when its driver goes (it may
        // be slow); one the bus said is gone gets nothing: nobody would answer, and the
        // removal would wait a timeout for it (EVENT_DEVICE REMOVED, a dead FIFO).
        dev.gone();
        drop(registration);
        assert_eq!(t.fake.sent(id::SET_DEVICE_STATUS), before);
        dev.clear_handle();
        dev.stop_work();
        Ok(())
    }

    #[test]
    fn a_device_keeping_a_kicked_buffer_is_asked_on_the_bus_clock_if_it_is_alive() -> Result {
        let t = Setup::new(30)?;
        // The fake takes the buffers virtio-rng gives it and never returns them.
        let (dev, registration) = t.bind_rng()?;
        assert!(dev.notify(0, None));
        dev.flush_kicks();
        assert!(t.fake.sent(id::EVENT_AVAIL) >= 1);
        // Nothing announced: asked once the kicks waited twice the timeout (60 ms) of the
        // bus's clock, not before; it answers, so it is alive.
        for _ in 0..5 {
            dev.tick(10);
        }
        assert_eq!(t.stats.liveness_check_count(), 0);
        dev.tick(10);
        assert_eq!(t.stats.liveness_check_count(), 1);
        assert!(t.fake.sent(id::GET_DEVICE_STATUS) >= 1);
        assert!(!dev.is_broken());
        // Those kicks are not asked about again.
        for _ in 0..20 {
            dev.tick(10);
        }
        assert_eq!(t.stats.liveness_check_count(), 1);
        // A new kick is; once the device does not answer that either, it is broken and to be
        // recovered.
        t.silence(id::GET_DEVICE_STATUS)?;
        assert!(dev.notify(0, None));
        dev.flush_kicks();
        for _ in 0..6 {
            dev.tick(10);
        }
        assert_eq!(t.stats.liveness_check_count(), 2);
        assert!(dev.is_broken());
        assert!(dev.wants_recovery());
        drop(registration);
        dev.clear_handle();
        dev.stop_work();
        Ok(())
    }

    #[test]
    fn a_device_that_announces_something_is_not_asked() -> Result {
        let t = Setup::new(30)?;
        let (dev, registration) = t.bind_rng()?;
        let vq = first_queue(&registration)?;
        assert!(dev.notify(0, None));
        dev.flush_kicks();
        for _ in 0..3 {
            dev.tick(10);
        }
        // Used buffers nobody was told about are found on the clock: the device is alive.
        use_first_buffer(vq);
        dev.tick(10);
        assert_eq!(t.stats.lost_events_count(), 1);
        for _ in 0..5 {
            dev.tick(10);
        }
        assert_eq!(t.stats.liveness_check_count(), 0);
        drop(registration);
        dev.clear_handle();
        dev.stop_work();
        Ok(())
    }

    #[test]
    fn a_loss_the_bus_reports_finds_the_used_buffers_at_once() -> Result {
        let t = Setup::new(1000)?;
        let core = Arc::pin_init(BusCore::new(t.handle.clone()), GFP_KERNEL)?;
        let (dev, registration) = t.bind_rng()?;
        let vq = first_queue(&registration)?;
        // The device uses the buffer; its EVENT_USED is lost in a full queue.
        use_first_buffer(vq);
        assert_eq!(t.stats.lost_events_count(), 0);
        // SAFETY: `vq` is live; the callback has not run (nothing told the driver).
        assert!(unsafe { bindings::virtqueue_poll(vq, 0) });
        // The bus says it may have lost messages: the queue's callback runs, from the
        // interrupt path, without waiting for any clock.
        as_interrupt(|irq| core.messages_lost(irq));
        assert_eq!(t.stats.lost_events_count(), 1);
        // The driver took the buffer: a second report finds nothing new.
        as_interrupt(|irq| core.messages_lost(irq));
        assert_eq!(t.stats.lost_events_count(), 1);
        drop(registration);
        dev.clear_handle();
        dev.stop_work();
        Ok(())
    }
}
