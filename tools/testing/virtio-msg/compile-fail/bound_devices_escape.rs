// SPDX-License-Identifier: GPL-2.0

//! Must not compile with `--cfg keep_for_later` (`make lint`, `compile-fail.sh`).
//!
//! A transport is lent the bus's devices, bound, only for a call of its link ([`BusDevices`]).
//! Keeping a device made with them to register it later, from a work item say, after the
//! transport may have unbound, is what the types must refuse: an [`Unregistered`] device
//! borrows its parent for as long as the call that lent it. Built without the cfg, the same
//! code, kept within the call, compiles: the failure is that one.

use kernel::{
    prelude::*,
    virtio::{
        msg::BusDevices,
        transport::{DeviceId, Transport, Unregistered},
    },
};

/// Registers a device made on `bus` within the call that lent `bus`.
#[allow(dead_code)]
fn register_now<T: Transport>(bus: &BusDevices<'_>, id: DeviceId, t: T) -> Result {
    let dev = Unregistered::new(bus.parent, bus.dma, id, t)?;
    // The registration is a `Devres` of the parent: that one may be kept.
    let _registration = dev.register()?;
    Ok(())
}

/// Keeps a device made on `bus` for a later registration, past the call that lent `bus`.
#[cfg(keep_for_later)]
#[allow(dead_code)]
fn keep<T: Transport>(
    bus: &BusDevices<'_>,
    id: DeviceId,
    t: T,
    later: &mut Option<Unregistered<'static, T>>,
) -> Result {
    *later = Some(Unregistered::new(bus.parent, bus.dma, id, t)?); // ESCAPES
    Ok(())
}

module! {
    type: Check,
    name: "bound_devices_escape",
    authors: ["virtio-msg developers"],
    description: "compile-fail check, never loaded",
    license: "GPL",
}

struct Check;

impl kernel::Module for Check {
    fn init(_module: &'static ThisModule) -> Result<Self> {
        Ok(Check)
    }
}
