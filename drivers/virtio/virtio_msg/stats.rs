// SPDX-License-Identifier: GPL-2.0

//! Per-bus counters, shown in debugfs as `virtio_msg/<bus>/stats`.
//!
//! Everything that goes wrong on a bus is counted rather than logged each time: a device that
//! floods the bus with bad messages must not flood the kernel log too.

use core::fmt;
use kernel::sync::atomic::{Atomic, Relaxed};

use crate::wire::transport_id;

/// Transport message ids, in the order they are shown.
const IDS: [(u8, &str); 14] = [
    (transport_id::GET_DEVICE_INFO, "GET_DEVICE_INFO"),
    (transport_id::GET_DEVICE_FEATURES, "GET_DEVICE_FEATURES"),
    (transport_id::SET_DRIVER_FEATURES, "SET_DRIVER_FEATURES"),
    (transport_id::GET_CONFIG, "GET_CONFIG"),
    (transport_id::SET_CONFIG, "SET_CONFIG"),
    (transport_id::GET_DEVICE_STATUS, "GET_DEVICE_STATUS"),
    (transport_id::SET_DEVICE_STATUS, "SET_DEVICE_STATUS"),
    (transport_id::GET_VQUEUE, "GET_VQUEUE"),
    (transport_id::SET_VQUEUE, "SET_VQUEUE"),
    (transport_id::RESET_VQUEUE, "RESET_VQUEUE"),
    (transport_id::GET_SHM, "GET_SHM"),
    (transport_id::EVENT_CONFIG, "EVENT_CONFIG"),
    (transport_id::EVENT_AVAIL, "EVENT_AVAIL"),
    (transport_id::EVENT_USED, "EVENT_USED"),
];

fn slot(msg_id: u8) -> Option<usize> {
    IDS.iter().position(|&(id, _)| id == msg_id)
}

/// What can go wrong with one message; each has its counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dropped {
    /// Did not decode (see `wire::DecodeError`).
    Malformed,
    /// A response nobody waits for (no request of this device with that id in flight).
    Unsolicited,
    /// A response from before the device's latest barrier (its request timed out, or it was
    /// a duplicate), or one whose echoed token names an earlier request.
    Late,
    /// For a device number with no device.
    NoDevice,
    /// EVENT_USED for a queue the device does not have.
    NoQueue,
    /// A message the driver side never receives (a request, EVENT_AVAIL, a bus message).
    WrongDirection,
}

/// Counters of one bus.
pub(crate) struct Stats {
    sent: [Atomic<u64>; IDS.len()],
    received: [Atomic<u64>; IDS.len()],
    malformed: Atomic<u64>,
    unsolicited: Atomic<u64>,
    late: Atomic<u64>,
    no_device: Atomic<u64>,
    no_queue: Atomic<u64>,
    wrong_direction: Atomic<u64>,
    timeouts: Atomic<u64>,
    send_errors: Atomic<u64>,
    broken_devices: Atomic<u64>,
    retries: Atomic<u64>,
    lost_events: Atomic<u64>,
    bus_losses: Atomic<u64>,
    liveness_checks: Atomic<u64>,
    config_retries: Atomic<u64>,
    barriers: Atomic<u64>,
    unprotected: Atomic<u64>,
}

impl Stats {
    pub(crate) const fn new() -> Self {
        Self {
            sent: [const { Atomic::new(0) }; IDS.len()],
            received: [const { Atomic::new(0) }; IDS.len()],
            malformed: Atomic::new(0),
            unsolicited: Atomic::new(0),
            late: Atomic::new(0),
            no_device: Atomic::new(0),
            no_queue: Atomic::new(0),
            wrong_direction: Atomic::new(0),
            timeouts: Atomic::new(0),
            send_errors: Atomic::new(0),
            broken_devices: Atomic::new(0),
            retries: Atomic::new(0),
            lost_events: Atomic::new(0),
            bus_losses: Atomic::new(0),
            liveness_checks: Atomic::new(0),
            config_retries: Atomic::new(0),
            barriers: Atomic::new(0),
            unprotected: Atomic::new(0),
        }
    }

    pub(crate) fn sent(&self, msg_id: u8) {
        if let Some(i) = slot(msg_id) {
            self.sent[i].add(1, Relaxed);
        }
    }

    pub(crate) fn received(&self, msg_id: u8) {
        if let Some(i) = slot(msg_id) {
            self.received[i].add(1, Relaxed);
        }
    }

    /// The counter of messages dropped for `why`.
    fn dropped_counter(&self, why: Dropped) -> &Atomic<u64> {
        match why {
            Dropped::Malformed => &self.malformed,
            Dropped::Unsolicited => &self.unsolicited,
            Dropped::Late => &self.late,
            Dropped::NoDevice => &self.no_device,
            Dropped::NoQueue => &self.no_queue,
            Dropped::WrongDirection => &self.wrong_direction,
        }
    }

    pub(crate) fn dropped(&self, why: Dropped) {
        self.dropped_counter(why).add(1, Relaxed);
    }

    pub(crate) fn timeout(&self) {
        self.timeouts.add(1, Relaxed);
    }

    pub(crate) fn send_error(&self) {
        self.send_errors.add(1, Relaxed);
    }

    pub(crate) fn broken(&self) {
        self.broken_devices.add(1, Relaxed);
    }

    /// An essential request is tried again (it timed out, or the bus was full).
    pub(crate) fn retry(&self) {
        self.retries.add(1, Relaxed);
    }

    /// Queues found with used buffers whose EVENT_USED never came.
    pub(crate) fn lost_events(&self, queues: u32) {
        self.lost_events.add(u64::from(queues), Relaxed);
    }

    /// The bus reported messages the device side may have dropped.
    pub(crate) fn bus_loss(&self) {
        self.bus_losses.add(1, Relaxed);
    }

    /// A device that announced nothing long after a kick is asked whether it is alive.
    pub(crate) fn liveness_check(&self) {
        self.liveness_checks.add(1, Relaxed);
    }

    pub(crate) fn config_retry(&self) {
        self.config_retries.add(1, Relaxed);
    }

    /// A requester was out of step: it ran the bus's barrier (`supported`), or the bus has
    /// none and its request went out unprotected. Returns the count before this one.
    pub(crate) fn barrier(&self, supported: bool) -> u64 {
        let counter = if supported {
            &self.barriers
        } else {
            &self.unprotected
        };
        counter.fetch_add(1, Relaxed)
    }

    /// Requests sent out of step without a barrier so far (for tests).
    #[cfg(CONFIG_VIRTIO_MSG_KUNIT_TEST)]
    pub(crate) fn unprotected_count(&self) -> u64 {
        self.unprotected.load(Relaxed)
    }

    /// Barriers run so far (for tests).
    #[cfg(CONFIG_VIRTIO_MSG_KUNIT_TEST)]
    pub(crate) fn barrier_count(&self) -> u64 {
        self.barriers.load(Relaxed)
    }

    /// Messages of `msg_id` sent so far (for tests).
    #[cfg(CONFIG_VIRTIO_MSG_KUNIT_TEST)]
    pub(crate) fn sent_count(&self, msg_id: u8) -> u64 {
        slot(msg_id).map_or(0, |i| self.sent[i].load(Relaxed))
    }

    /// Messages dropped for `why` so far (for tests).
    #[cfg(CONFIG_VIRTIO_MSG_KUNIT_TEST)]
    pub(crate) fn dropped_count(&self, why: Dropped) -> u64 {
        self.dropped_counter(why).load(Relaxed)
    }

    /// Requests tried again so far (for tests).
    #[cfg(CONFIG_VIRTIO_MSG_KUNIT_TEST)]
    pub(crate) fn retry_count(&self) -> u64 {
        self.retries.load(Relaxed)
    }

    /// Queues found with used buffers nobody was told about (for tests).
    #[cfg(CONFIG_VIRTIO_MSG_KUNIT_TEST)]
    pub(crate) fn lost_events_count(&self) -> u64 {
        self.lost_events.load(Relaxed)
    }

    /// Liveness checks so far (for tests).
    #[cfg(CONFIG_VIRTIO_MSG_KUNIT_TEST)]
    pub(crate) fn liveness_check_count(&self) -> u64 {
        self.liveness_checks.load(Relaxed)
    }

    /// Broken devices so far (for tests).
    #[cfg(CONFIG_VIRTIO_MSG_KUNIT_TEST)]
    pub(crate) fn broken_count(&self) -> u64 {
        self.broken_devices.load(Relaxed)
    }

    /// Timeouts so far (for tests).
    #[cfg(CONFIG_VIRTIO_MSG_KUNIT_TEST)]
    pub(crate) fn timeout_count(&self) -> u64 {
        self.timeouts.load(Relaxed)
    }
}

impl fmt::Debug for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{:<22}{:>12}{:>12}", "message", "sent", "received")?;
        for (i, (_, name)) in IDS.iter().enumerate() {
            let (s, r) = (self.sent[i].load(Relaxed), self.received[i].load(Relaxed));
            writeln!(f, "{name:<22}{s:>12}{r:>12}")?;
        }
        let counters = [
            ("malformed", &self.malformed),
            ("unsolicited", &self.unsolicited),
            ("late", &self.late),
            ("no_device", &self.no_device),
            ("no_queue", &self.no_queue),
            ("wrong_direction", &self.wrong_direction),
            ("timeouts", &self.timeouts),
            ("send_errors", &self.send_errors),
            ("broken_devices", &self.broken_devices),
            ("retries", &self.retries),
            ("lost_events_found", &self.lost_events),
            ("bus_losses", &self.bus_losses),
            ("liveness_checks", &self.liveness_checks),
            ("config_retries", &self.config_retries),
            ("barriers", &self.barriers),
            ("unprotected_requests", &self.unprotected),
        ];
        for (name, c) in counters {
            writeln!(f, "{name}: {}", c.load(Relaxed))?;
        }
        Ok(())
    }
}
