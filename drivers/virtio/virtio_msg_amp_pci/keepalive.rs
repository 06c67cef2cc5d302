// SPDX-License-Identifier: GPL-2.0

//! The keepalive of one FIFO: the bus's clock, and how a device side that died is found.
//!
//! The other side of a FIFO is firmware or another OS, which can crash or hang. A device that
//! holds buffers (a read waiting for its disk, a network receive queue) says nothing while
//! it is fine, so silence alone tells nothing: the FIFO asks. Every period (`keepalive_ms`)
//! in which nothing came from the device side, it sends a PING; a device side that answers
//! none of [`MISSES`] in a row is gone, and the FIFO is stopped and its devices removed, as
//! for a FIFO whose indexes were corrupted. Stopped, for either reason, the FIFO looks once
//! a period whether its device side is back (it restarted, or woke up): if it answers a
//! PING, the FIFO is up again and its devices are found anew (`Fifo::reattach`). While it
//! answers, each period is also the transport's clock ([`BusLink::tick`]): it looks at its
//! devices for used buffers whose notification was lost and for buffers held far longer than
//! its timeout. A FIFO whose device side never answered PING (v1 of QEMU's device model) is
//! not PINGed, and once stopped, stays stopped; its clock still runs.
//!
//! The transport's own timers are none: what makes a device look dead or lose notifications
//! is the bus, so the bus decides when to look. One work item per FIFO, none per kick.

use kernel::{
    impl_has_delayed_work, new_delayed_work, new_spinlock,
    prelude::*,
    sync::{
        atomic::{Atomic, Relaxed},
        Arc, SpinLock,
    },
    time::msecs_to_jiffies,
    virtio::msg::BusLink,
    workqueue::{self, DelayedWork, WorkItem},
};

use crate::fifo::Fifo;

/// PINGs in a row a device side may leave unanswered before it is taken for gone.
pub(crate) const MISSES: u32 = 3;

/// The keepalive of one FIFO.
#[pin_data]
pub(crate) struct Keepalive {
    fifo: Arc<Fifo>,
    link: Arc<BusLink>,
    period_ms: u32,
    /// What the FIFO had received at the end of the previous period, and the PINGs left
    /// unanswered in a row. Only the work item touches them.
    received: Atomic<u64>,
    misses: Atomic<u32>,
    /// Whether the work may be queued: every enqueue happens under this lock, and
    /// [`Keepalive::stop`] closes it before it flushes, so no run outlives it.
    #[pin]
    open: SpinLock<bool>,
    #[pin]
    work: DelayedWork<Keepalive>,
}

impl_has_delayed_work! {
    impl HasDelayedWork<Self> for Keepalive { self.work }
}

impl WorkItem for Keepalive {
    type Pointer = Arc<Keepalive>;

    fn run(this: Arc<Keepalive>) {
        if !*this.open.lock() {
            return;
        }
        if this.fifo.stopped() {
            // Gone or broken: is it back? Counted afresh once it is.
            this.fifo.retry();
            this.misses.store(0, Relaxed);
            this.received.store(this.fifo.received(), Relaxed);
            this.queue();
            return;
        }
        let silent = this.fifo.received() == this.received.load(Relaxed);
        // Something came, or the PING was answered: the device side is alive.
        let alive = !silent || !this.fifo.answers_ping() || this.fifo.keepalive().is_ok();
        if alive {
            this.misses.store(0, Relaxed);
            this.link.tick(this.period_ms);
        } else {
            let misses = this.misses.load(Relaxed) + 1;
            this.misses.store(misses, Relaxed);
            if misses >= MISSES {
                // Stopped now: the next period looks for it to come back.
                this.fifo.peer_gone(misses);
            }
        }
        this.received.store(this.fifo.received(), Relaxed);
        this.queue();
    }
}

impl Keepalive {
    /// Starts the keepalive of `fifo`, the bus of `link`, every `period_ms` milliseconds.
    pub(crate) fn start(fifo: Arc<Fifo>, link: Arc<BusLink>, period_ms: u32) -> Result<Arc<Self>> {
        let received = fifo.received();
        let this = Arc::pin_init(
            pin_init!(Self {
                fifo,
                link,
                period_ms,
                received: Atomic::new(received),
                misses: Atomic::new(0),
                open <- new_spinlock!(true),
                work <- new_delayed_work!("virtio_msg_amp_pci::Keepalive::work"),
            }),
            GFP_KERNEL,
        )?;
        this.queue();
        Ok(this)
    }

    fn queue(self: &Arc<Self>) {
        let open = self.open.lock();
        if *open {
            // Already queued is fine: it does all this one would.
            let _ = workqueue::system_long()
                .enqueue_delayed(self.clone(), msecs_to_jiffies(self.period_ms));
        }
    }

    /// Stops the keepalive; on return it neither runs nor is queued.
    pub(crate) fn stop(&self) {
        *self.open.lock() = false;
        // Not cancelled: a queued run owns a reference to `self`, which only its run gives
        // back (and it returns at once, closed).
        self.work.flush();
    }
}
