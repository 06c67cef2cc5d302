// SPDX-License-Identifier: GPL-2.0

//! virtio-msg loopback bus: a virtio-msg bus whose devices are in the kernel too.
//!
//! For tests and benchmarks of the virtio-msg transport with no hardware and no device
//! process: the bus registers the auxiliary device `virtio_msg.bus` (which the `virtio_msg`
//! transport binds to) with a [`BusLink`] over a [`Bus`] whose other end is an entropy
//! device and, with `blk_mib`, a block device backed by memory (the transport's own cost per
//! request, against `null_blk` or `brd`, in `make bench`). `silent_after` makes the devices
//! stop answering, to test the transport's timeouts.
//!
//! This file is the bus, and the smallest complete example of one; the devices are in
//! [`device`]. Their side runs in a work item, as a device that answers later would:
//! [`Bus::send`] only queues the message.

use kernel::{
    alloc::{KVVec, KVec},
    auxiliary, faux, impl_has_work, new_mutex, new_spinlock, new_spinlock_irq, new_work,
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
            wire::{Frame, Message},
            Bus, BusLink, AUXILIARY_MODNAME, AUXILIARY_NAME,
        },
    },
    workqueue::{self, Work, WorkItem},
};

mod blk;
mod device;

use device::{Devices, BLK_DEV_NUM, MAX_MSG, RNG_DEV_NUM};

module! {
    type: LoopbackModule,
    name: "virtio_msg_loopback",
    authors: ["virtio-msg developers"],
    description: "virtio-msg loopback bus with in-kernel devices, for tests and benchmarks",
    license: "GPL",
    params: {
        blk_mib: u32 {
            default: 0,
            description: "MiB of a RAM-backed virtio-blk device number 2, up to 1024 (0: none)",
        },
        silent_after: u32 {
            default: 0,
            description: "Test: the devices stop answering after this many messages (0: never)",
        },
    },
}

/// Messages queued towards the device side before `send` reports the bus busy.
const INBOX_LIMIT: usize = 256;
/// How often, and how long each time, [`Bus::sync`] looks whether the device side caught up.
const SYNC_POLLS: u32 = 1000;
const SYNC_POLL: Delta = Delta::from_millis(1);
/// Largest block device.
const MAX_BLK_MIB: u32 = 1024;

/// One message in flight from the driver side.
struct Msg {
    bytes: [u8; MAX_MSG],
    len: usize,
    /// The device number of an EVENT_AVAIL.
    kick: Option<u16>,
}

/// The loopback bus.
#[pin_data]
struct Loopback {
    /// Filled by `send_atomic`, in any context.
    #[pin]
    inbox: SpinLockIrq<KVec<Msg>>,
    /// The device side, used by the work item only.
    #[pin]
    devices: Mutex<Devices>,
    /// Where answers and events go; `None` once the module is unloading.
    #[pin]
    link: SpinLock<Option<Arc<BusLink>>>,
    /// This bus, to queue its work from `send`; `None` once the module is unloading.
    #[pin]
    me: SpinLockIrq<Option<Arc<Loopback>>>,
    #[pin]
    work: Work<Loopback>,
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
    impl HasWork<Self> for Loopback { self.work }
}

impl WorkItem for Loopback {
    type Pointer = Arc<Loopback>;

    fn run(this: Arc<Loopback>) {
        while let Some(msg) = this.next() {
            if let Some(waiting) = msg.kick.and_then(|d| this.kick_waiting.get(usize::from(d))) {
                // Before the device looks at the queue: a kick from now on is queued again.
                waiting.store(false, Relaxed);
            }
            let link = this.link.lock().clone();
            this.devices
                .lock()
                .handle(msg.bytes.get(..msg.len).unwrap_or(&[]), |frame| {
                    let mut buf = [0u8; MAX_MSG];
                    if let (Some(link), Ok(len)) = (&link, frame.encode(&mut buf)) {
                        // From the device side's work item: as an interrupt handler would.
                        as_interrupt(|irq| link.deliver(buf.get(..len).unwrap_or(&[]), irq));
                    }
                });
            // Release: whoever sees the count sees what `handle` delivered.
            this.handled.fetch_add(1, Release);
        }
    }
}

impl Loopback {
    fn new(devices: Devices) -> impl PinInit<Self> {
        pin_init!(Self {
            inbox <- new_spinlock_irq!(KVec::new()),
            devices <- new_mutex!(devices),
            link <- new_spinlock!(None),
            me <- new_spinlock_irq!(None),
            work <- new_work!("Loopback::work"),
            queued: Atomic::new(0),
            handled: Atomic::new(0),
            kick_waiting: [const { Atomic::new(false) }; 3],
        })
    }

    /// The oldest message of the inbox.
    fn next(&self) -> Option<Msg> {
        let mut inbox = self.inbox.lock();
        (!inbox.is_empty()).then(|| inbox.remove(0).ok()).flatten()
    }
}

impl Bus for Loopback {
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
            }) => Some(dev_num),
            _ => None,
        };
        let waiting = kick.and_then(|d| self.kick_waiting.get(usize::from(d)));
        if waiting.is_some_and(|w| w.xchg(true, Relaxed)) {
            return Ok(());
        }
        let mut bytes = [0u8; MAX_MSG];
        bytes
            .get_mut(..msg.len())
            .ok_or(EMSGSIZE)?
            .copy_from_slice(msg);
        let msg = Msg {
            bytes,
            len: msg.len(),
            kick,
        };
        let mut inbox = self.inbox.lock();
        let pushed = if inbox.len() >= INBOX_LIMIT {
            Err(EBUSY)
        } else {
            inbox.push(msg, GFP_ATOMIC).map_err(Error::from)
        };
        if pushed.is_err() {
            // Not queued after all: the next kick must be.
            if let Some(w) = waiting {
                w.store(false, Relaxed);
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
    /// devices.
    bus: Option<faux::WithDependent>,
    loopback: Arc<Loopback>,
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
        let answers = Some(*module_parameters::silent_after.value()).filter(|&n| n > 0);
        let loopback = Arc::pin_init(Loopback::new(Devices::new(disk, answers)), GFP_KERNEL)?;
        let link = BusLink::new(loopback.clone())?;
        *loopback.link.lock() = Some(link.clone());
        *loopback.me.lock() = Some(loopback.clone());
        // From here on, a failure drops `module`, whose `Drop` breaks the cycles just made.
        let mut module = Self {
            bus: None,
            loopback,
        };
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
        *self.loopback.link.lock() = None;
        *self.loopback.me.lock() = None;
        self.loopback.work.flush();
        pr_info!("virtio-msg loopback bus down\n");
    }
}
