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
    impl_has_delayed_work, new_delayed_work, new_mutex, new_spinlock,
    prelude::*,
    sync::{Arc, Mutex, SpinLock},
    time::msecs_to_jiffies,
    virtio::msg::BusLink,
    workqueue::{self, DelayedWork, WorkItem},
};

use crate::fifo::Fifo;

/// PINGs in a row a device side may leave unanswered before it is taken for gone.
pub(crate) const MISSES: u32 = 3;

/// Periods a FIFO taken up again must stay up for its next stop to be taken as a new one;
/// one that stops sooner is looked for half as often as before (see [`Watch::period`]).
pub(crate) const STABLE: u32 = 10;
/// Most periods between two looks for a stopped FIFO's device side.
pub(crate) const MAX_BACKOFF: u32 = 64;

/// What the keepalive makes of one period.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// The FIFO is stopped: see whether its device side is back.
    Retry,
    /// The FIFO is stopped, and this period is not one to look.
    Down,
    /// Something came from the device side, or it answered the PING (or cannot be asked).
    Alive,
    /// The PING went unanswered, fewer than [`MISSES`] in a row.
    Missed,
    /// [`MISSES`] in a row: the device side is gone.
    Gone,
}

/// A FIFO's device side over the keepalive's periods: what it had received at the end of
/// the last one, the PINGs it left unanswered in a row, and, for a FIFO that stopped, how
/// often to look for its return.
pub(crate) struct Watch {
    received: u64,
    misses: u32,
    /// Whether the FIFO was stopped at the last period.
    stopped: bool,
    /// Periods it has been up since it last came back (from [`STABLE`] at the start).
    up_for: u32,
    /// Periods between looks while it is stopped, and those left until the next look.
    backoff: u32,
    wait: u32,
}

impl Watch {
    /// Watching from now, when the FIFO has received `received` messages.
    pub(crate) fn new(received: u64) -> Self {
        Self {
            received,
            misses: 0,
            stopped: false,
            up_for: STABLE,
            backoff: 1,
            wait: 0,
        }
    }

    /// One period of a FIFO that is `stopped` or not, which has `received()` messages so far;
    /// `ping` asks its device side (only when nothing came since the last period) and says
    /// whether it answered. A stopped FIFO's count starts afresh when it is up again, and
    /// what the PING brought back does not count for the next period.
    ///
    /// A stopped FIFO is looked for every period; but one that stops again within [`STABLE`]
    /// periods of coming back (a device side that answers a PING, then breaks its queues at
    /// once) is looked for every 2, 4, ... [`MAX_BACKOFF`] periods, so that it cannot make the
    /// FIFO probe and remove its devices at the keepalive's pace.
    pub(crate) fn period(
        &mut self,
        stopped: bool,
        received: impl Fn() -> u64,
        ping: impl FnOnce() -> bool,
    ) -> Verdict {
        if stopped && !self.stopped {
            self.backoff = if self.up_for < STABLE {
                (self.backoff * 2).min(MAX_BACKOFF)
            } else {
                1
            };
            self.wait = self.backoff - 1;
        } else if !stopped && self.stopped {
            self.up_for = 0;
        }
        self.stopped = stopped;
        let verdict = if stopped {
            self.misses = 0;
            if self.wait == 0 {
                self.wait = self.backoff - 1;
                Verdict::Retry
            } else {
                self.wait -= 1;
                Verdict::Down
            }
        } else if received() != self.received || ping() {
            self.misses = 0;
            Verdict::Alive
        } else {
            self.misses += 1;
            if self.misses >= MISSES {
                self.misses = 0;
                Verdict::Gone
            } else {
                Verdict::Missed
            }
        };
        self.up_for = self.up_for.saturating_add(u32::from(!stopped));
        self.received = received();
        verdict
    }
}

/// The keepalive of one FIFO.
#[pin_data]
pub(crate) struct Keepalive {
    fifo: Arc<Fifo>,
    link: Arc<BusLink>,
    period_ms: u32,
    /// Only the work item takes it (and holds it while it PINGs).
    #[pin]
    watch: Mutex<Watch>,
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
        let fifo = &this.fifo;
        let verdict = this.watch.lock().period(
            fifo.stopped(),
            || fifo.received(),
            // A side that never answered PING (v1 of the device model) is not asked.
            || !fifo.answers_ping() || fifo.keepalive().is_ok(),
        );
        match verdict {
            // A side that never answered PING (v1 of the device model) cannot say it is back.
            Verdict::Retry if fifo.answers_ping() => fifo.retry(),
            Verdict::Alive => this.link.tick(this.period_ms),
            Verdict::Retry | Verdict::Down | Verdict::Missed => {}
            // Stopped now: the next period looks for it to come back.
            Verdict::Gone => fifo.peer_gone(MISSES),
        }
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
                watch <- new_mutex!(Watch::new(received)),
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
