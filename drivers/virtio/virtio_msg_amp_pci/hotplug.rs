// SPDX-License-Identifier: GPL-2.0

//! Devices that come and go: the device side's EVENT_DEVICE, and what the FIFO makes of it.
//!
//! A device side adds and removes devices as its own configuration changes, and says so with
//! EVENT_DEVICE (READY or REMOVED, per device number). The interrupt handler only queues the
//! event ([`Events`]); a work item applies the queued events in order, in process context,
//! where the transport can probe or remove the device. What the device side says is checked
//! against what the FIFO knows ([`apply`]): a number past the limit, READY for a device that is
//! there, REMOVED for one that is not, are counted and change nothing. Events that do not fit
//! the queue are not lost silently: the FIFO enumerates again (GET_DEVICES) and brings its
//! devices in line with the answer.

use kernel::virtio::msg::wire::DeviceState;

use crate::enumerate::{DeviceSet, MAX_DEVICE_NUMBER};

/// Events the interrupt handler queues before the work item takes them; past that, the FIFO
/// enumerates again.
pub(crate) const QUEUED_EVENTS: usize = 64;

/// One EVENT_DEVICE.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Event {
    pub(crate) dev_num: u16,
    pub(crate) state: DeviceState,
}

/// EVENT_DEVICE messages waiting for the work item, in the order they came.
pub(crate) struct Events {
    queued: [Event; QUEUED_EVENTS],
    len: usize,
    /// Events came that did not fit: what the FIFO knows may be wrong.
    overflowed: bool,
}

impl Events {
    pub(crate) const fn new() -> Self {
        Self {
            queued: [Event {
                dev_num: 0,
                state: DeviceState::Ready,
            }; QUEUED_EVENTS],
            len: 0,
            overflowed: false,
        }
    }

    /// Queues `event`; returns `false` if it did not fit (the FIFO must enumerate again).
    pub(crate) fn push(&mut self, event: Event) -> bool {
        match self.queued.get_mut(self.len) {
            Some(slot) => {
                *slot = event;
                self.len += 1;
                true
            }
            None => {
                self.overflowed = true;
                false
            }
        }
    }

    /// Takes what is queued, leaving the queue empty.
    pub(crate) fn take(&mut self) -> Self {
        core::mem::replace(self, Self::new())
    }

    /// Whether events came that did not fit.
    pub(crate) fn overflowed(&self) -> bool {
        self.overflowed
    }

    /// The events, oldest first.
    pub(crate) fn iter(&self) -> impl Iterator<Item = Event> + '_ {
        self.queued.iter().take(self.len).copied()
    }
}

/// What an event does to the FIFO's devices.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Change {
    /// A new device: the transport probes it.
    Add(u16),
    /// A device went away: the transport removes it.
    Remove(u16),
    /// Nothing: the event contradicts what the FIFO knows, or names no possible device.
    Ignore,
}

/// Applies `event` to `devices`, the device numbers the FIFO has.
pub(crate) fn apply(devices: &mut DeviceSet, event: Event) -> Change {
    let Event { dev_num, state } = event;
    if dev_num >= MAX_DEVICE_NUMBER {
        return Change::Ignore;
    }
    match state {
        DeviceState::Ready if devices.insert(dev_num) => Change::Add(dev_num),
        DeviceState::Removed if devices.remove(dev_num) => Change::Remove(dev_num),
        _ => Change::Ignore,
    }
}

/// The changes that bring `had` in line with `found`, a fresh enumeration: removals first.
pub(crate) fn resync(had: DeviceSet, found: DeviceSet) -> impl Iterator<Item = Change> {
    let gone = (0..MAX_DEVICE_NUMBER).filter(move |&n| had.contains(n) && !found.contains(n));
    let new = (0..MAX_DEVICE_NUMBER).filter(move |&n| found.contains(n) && !had.contains(n));
    gone.map(Change::Remove).chain(new.map(Change::Add))
}
