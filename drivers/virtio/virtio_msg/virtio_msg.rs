// SPDX-License-Identifier: GPL-2.0

//! virtio-msg: the virtio transport over message buses.
//!
//! Instead of trapped register accesses (virtio-pci, virtio-mmio), the driver and the device
//! exchange small messages over a bus. This module is the transport: it turns every virtio
//! operation into messages (`device.rs`), waits for the answers with a bound (`request.rs`),
//! and registers a virtio device for every device number its buses report, so that the stock
//! virtio drivers bind unchanged.
//!
//! It knows nothing about how messages travel. Each bus (a PCI device with shared-memory
//! FIFOs, a hypervisor channel, the loopback test bus, ...) registers an auxiliary device named
//! `virtio_msg.bus` with a [`kernel::virtio::msg::BusLink`] as registration data; this module
//! is the auxiliary driver for that name (`bus.rs`). See
//! Documentation/driver-api/virtio/virtio_msg.rst.

use kernel::{
    auxiliary,
    debugfs::{Dir, File},
    device::{Bound, Core},
    devres::Devres,
    prelude::*,
    str::CString,
    sync::Arc,
    types::ForLt,
    virtio::msg::{
        wire, BusDevices, BusLink, Connection, Receiver, AUXILIARY_MODNAME, AUXILIARY_NAME,
    },
};

mod bus;
mod device;
mod ratelimit;
#[cfg(CONFIG_VIRTIO_MSG_KUNIT_TEST)]
mod replay_tests;
mod request;
mod stats;
#[cfg(CONFIG_VIRTIO_MSG_KUNIT_TEST)]
mod tests;

use bus::{BusCore, BusHandle};
use stats::Stats;

kernel::module_auxiliary_driver! {
    type: VirtioMsgDriver,
    name: "virtio_msg",
    authors: ["virtio-msg developers"],
    description: "virtio-msg transport: virtio devices over message buses",
    license: "GPL",
    params: {
        timeout_ms: u32 {
            default: 2000,
            description: "Response timeout in ms, 10 to 60000; a device past it is broken",
        },
    },
}

/// Bounds of the `timeout_ms` parameter: long enough for a slow peer, short enough that a
/// dead one cannot stall a driver for long.
const MIN_TIMEOUT_MS: u32 = 10;
const MAX_TIMEOUT_MS: u32 = 60_000;

struct VirtioMsgDriver;

kernel::auxiliary_device_table!(
    AUX_TABLE,
    MODULE_AUX_TABLE,
    <VirtioMsgDriver as auxiliary::Driver>::IdInfo,
    [(
        auxiliary::DeviceId::new(AUXILIARY_MODNAME, AUXILIARY_NAME),
        ()
    )]
);

/// The transport bound to one bus.
#[pin_data(PinnedDrop)]
struct BusBinding {
    core: Arc<BusCore>,
    /// Disconnected after `core` shut down (see `drop`).
    _connection: Devres<Connection>,
    _debugfs: Dir,
    #[pin]
    _stats: File<Arc<Stats>>,
}

#[pinned_drop]
impl PinnedDrop for BusBinding {
    fn drop(self: Pin<&mut Self>) {
        // Unregister the virtio devices while the bus still carries their last requests.
        self.core.shutdown();
    }
}

impl auxiliary::Driver for VirtioMsgDriver {
    type IdInfo = ();
    type Data<'bound> = BusBinding;

    const ID_TABLE: auxiliary::IdTable<Self::IdInfo> = &AUX_TABLE;

    fn probe<'bound>(
        adev: &'bound auxiliary::Device<Core<'_>>,
        _info: &'bound Self::IdInfo,
    ) -> impl PinInit<Self::Data<'bound>, Error> + 'bound {
        pin_init::pin_init_scope(move || {
            let link: &Arc<BusLink> = adev.registration_data::<ForLt!(Arc<BusLink>)>()?.get_ref();
            let dev: &kernel::device::Device<Bound> = adev.as_ref();
            // The virtio devices are children of the device we are bound to, and map their
            // queues through its parent, the bus's device.
            let devices = BusDevices {
                parent: dev,
                dma: adev.parent(),
            };
            let bus = link.bus().clone();
            if bus.max_msg_size() < wire::HEADER_SIZE + 40 {
                dev_err!(
                    dev,
                    "maximum message size {} too small for virtio-msg\n",
                    bus.max_msg_size()
                );
                return Err(EINVAL);
            }
            let stats = Arc::new(Stats::new(), GFP_KERNEL)?;
            let timeout =
                (*module_parameters::timeout_ms.value()).clamp(MIN_TIMEOUT_MS, MAX_TIMEOUT_MS);
            if timeout != *module_parameters::timeout_ms.value() {
                dev_warn!(dev, "timeout_ms out of range, using {timeout}\n");
            }
            let handle = Arc::pin_init(
                BusHandle::new(bus, dev.into(), timeout, stats.clone()),
                GFP_KERNEL,
            )?;
            let core = Arc::pin_init(BusCore::new(handle), GFP_KERNEL)?;
            let debugfs = Dir::new(&CString::try_from_fmt(fmt!("virtio_msg-{}", dev.name()))?);
            // Whatever an earlier transport left in flight arrives before the barrier's answer,
            // while no receiver is connected, and is dropped. A bus without a barrier, or one
            // whose device side is silent, shows itself on the first request instead.
            let _ = link.bus().sync();
            let receiver: Arc<dyn Receiver> = core.clone();
            let (connection, listed) = link.connect(&devices, receiver)?;
            Ok(try_pin_init!(BusBinding {
                _stats <- debugfs.read_only_file(c"stats", stats),
                core,
                _connection: connection,
                _debugfs: debugfs,
            })
            .pin_chain(move |binding| {
                // Here, where `drop` (`BusCore::shutdown`) undoes it.
                binding.core.enable_recovery(link.clone());
                // The devices the bus found before we connected, probed by the link's deferred
                // call; later ones arrive through `Receiver::device_added`.
                binding.core.add_listed(listed);
                Ok(())
            }))
        })
    }
}
