// SPDX-License-Identifier: GPL-2.0

//! virtio-msg AMP PCI: the bus driver for the virtio-msg AMP PCI device (10ee:9039).
//!
//! The device connects this side (the driver side of virtio) with a device side that runs
//! elsewhere: another SoC, a device emulator, QEMU's `virtio-msg-amp-pci` model. Between them
//! are up to eight FIFOs in shared memory (BAR1), each with a doorbell (BAR0) and an MSI-X
//! vector. Every FIFO is its own virtio-msg bus with its own device numbers, so this driver
//! registers one `virtio_msg.bus` auxiliary device per FIFO; the `virtio_msg` transport binds
//! to each and registers a virtio device for every device number found behind it.
//!
//! Probe: map the BARs, derive the number of FIFOs from what the device exposes
//! (`layout.rs`), take one MSI-X vector per FIFO, take over each FIFO's queues as they are
//! (`fifo.rs`), ask each FIFO for its devices (`enumerate.rs`), and register the buses.
//! Unbind runs in the opposite order: the buses go first, so the virtio devices are
//! unregistered while the FIFOs still carry their last requests; then the FIFOs stop and the
//! interrupts are freed. See Documentation/driver-api/virtio/virtio_msg_amp_pci.rst.

use core::ops::RangeInclusive;
use kernel::{
    auxiliary,
    debugfs::{Dir, File},
    device::{Bound, Core},
    io::Io,
    irq::{self, ThreadedRegistration},
    pci::{self, IrqType, IrqTypes, IrqVector},
    prelude::*,
    str::CString,
    sync::Arc,
    types::ForLt,
    virtio::msg::{new_bus_id, wire, BusLink, AUXILIARY_MODNAME, AUXILIARY_NAME},
};

mod correlate;
mod enumerate;
mod fifo;
mod hotplug;
mod keepalive;
/// The layout of BAR1, shared with the device emulator.
pub mod layout;
mod regs;
mod shared;
/// The queues in shared memory, shared with the device emulator.
pub mod spsc;
#[cfg(CONFIG_VIRTIO_MSG_AMP_PCI_KUNIT_TEST)]
mod tests;

use fifo::{DeviceChanges, Fifo, FifoIrq, RegsBar, Timeouts};
use keepalive::Keepalive;
use shared::SharedBar;

kernel::module_pci_driver! {
    type: AmpPciDriver,
    name: "virtio_msg_amp_pci",
    authors: ["virtio-msg developers"],
    description: "virtio-msg AMP PCI bus: virtio devices behind FIFOs in shared memory",
    license: "GPL",
    params: {
        bus_timeout_ms: u32 {
            default: 1000,
            description: "Bus message (GET_DEVICES, PING) reply timeout in ms, 10 to 60000",
        },
        queue_wait_ms: u32 {
            default: 100,
            description: "How long a send waits for room in a full queue, in ms, 1 to 10000",
        },
        keepalive_ms: u32 {
            default: 1000,
            description: "PING period of a silent or stopped FIFO in ms, 100 to 60000, 0 for none",
        },
    },
}

struct AmpPciDriver;

kernel::pci_device_table!(
    PCI_TABLE,
    MODULE_PCI_TABLE,
    <AmpPciDriver as pci::Driver>::IdInfo,
    [(pci::DeviceId::from_id(pci::Vendor::XILINX, 0x9039), ())]
);

/// The auxiliary device that makes one FIFO a virtio-msg bus.
type BusRegistration<'bound> = auxiliary::Registration<'bound, ForLt!(Arc<BusLink>)>;

/// A bound AMP PCI device.
struct AmpPci<'bound> {
    /// One keepalive per FIFO, unless turned off. Stopped first (see `Drop`).
    keepalives: KVec<Arc<Keepalive>>,
    /// One virtio-msg bus per FIFO. Unregistered next.
    buses: KVec<BusRegistration<'bound>>,
    /// One interrupt handler per FIFO, freed after the buses are gone.
    irqs: KVec<Pin<KBox<ThreadedRegistration<FifoIrq>>>>,
    fifos: KVec<Arc<Fifo>>,
    /// debugfs: `virtio_msg_amp_pci-<PCI device>/fifoN`.
    _files: KVec<Pin<KBox<File<Arc<Fifo>>>>>,
    _debugfs: Dir,
}

impl Drop for AmpPci<'_> {
    fn drop(&mut self) {
        for keepalive in &self.keepalives {
            keepalive.stop();
        }
        // The transport unbinds from each bus and unregisters its virtio devices; their last
        // requests (a reset, queue teardown) still travel over the running FIFOs.
        self.buses.clear();
        // Nothing uses the FIFOs now; stop them, let go of what would report a stopped FIFO's
        // devices gone (waiting for it if it runs), then free the interrupts (which waits for
        // a running handler).
        for fifo in &self.fifos {
            fifo.stop();
            fifo.set_changes(None);
        }
        self.irqs.clear();
    }
}

/// Takes one MSI-X vector per FIFO: as many as the device has (its MSI-X table has one per
/// FIFO), up to `fifos`.
fn msix_vectors(pdev: &pci::Device<Bound>, fifos: u32) -> Result<RangeInclusive<IrqVector<'_>>> {
    pdev.alloc_irq_vectors(1, fifos, IrqTypes::default().with(IrqType::MsiX))
}

impl AmpPciDriver {
    fn timeouts(dev: &kernel::device::Device) -> Timeouts {
        let bus = *module_parameters::bus_timeout_ms.value();
        let queue = *module_parameters::queue_wait_ms.value();
        let timeouts = Timeouts {
            bus_ms: bus.clamp(10, 60_000),
            queue_wait_ms: queue.clamp(1, 10_000),
        };
        if timeouts.bus_ms != bus || timeouts.queue_wait_ms != queue {
            dev_warn!(dev, "timeout parameters out of range, clamped\n");
        }
        timeouts
    }

    /// The keepalive period, if there is one.
    fn keepalive_ms(dev: &kernel::device::Device) -> Option<u32> {
        let ms = *module_parameters::keepalive_ms.value();
        let clamped = ms.clamp(100, 60_000);
        if ms != 0 && ms != clamped {
            dev_warn!(dev, "keepalive_ms out of range, using {clamped}\n");
        }
        (ms != 0).then_some(clamped)
    }
}

impl pci::Driver for AmpPciDriver {
    type IdInfo = ();
    type Data<'bound> = AmpPci<'bound>;

    const ID_TABLE: pci::IdTable<Self::IdInfo> = &PCI_TABLE;

    fn probe<'bound>(
        pdev: &'bound pci::Device<Core<'_>>,
        _info: &'bound Self::IdInfo,
    ) -> impl PinInit<Self::Data<'bound>, Error> + 'bound {
        Self::setup(pdev)
    }
}

impl AmpPciDriver {
    fn setup<'bound>(pdev: &'bound pci::Device<Core<'_>>) -> Result<AmpPci<'bound>> {
        let dev: &kernel::device::Device = pdev.as_ref();
        pdev.enable_device_mem()?;
        pdev.set_master();

        let regs = pdev.iomap_region_sized::<{ regs::BAR0_USED }>(0, c"virtio_msg_amp_pci")?;
        let version = regs.read(regs::VERSION).version().get();
        if version != regs::SUPPORTED_VERSION {
            dev_err!(
                dev,
                "register interface version {version}, only 1 is supported\n"
            );
            return Err(ENODEV);
        }
        let features = regs.read(regs::FEATURES).features().get();
        let regs: Arc<RegsBar> = Arc::new(regs.into_devres()?, GFP_KERNEL)?;

        let shm_len = pdev.resource_len(1)?;
        let in_bar = layout::fifos_in_bar(shm_len).map_err(|e| {
            dev_err!(dev, "BAR1 of {shm_len} bytes holds no FIFOs ({e:?})\n");
            ENODEV
        })?;
        let shm = pdev.iomap_region(1, c"virtio_msg_amp_pci")?;
        let shm: Arc<SharedBar> = Arc::new(shm.into_devres()?, GFP_KERNEL)?;
        let vectors = msix_vectors(pdev, in_bar).inspect_err(|e| {
            dev_err!(
                dev,
                "no MSI-X vectors ({e:?}); the device signals with MSI-X only\n"
            );
        })?;
        let nfifos = IrqVector::all(&vectors).count();
        dev_info!(
            dev,
            "version {version}, features {features:#x}, {nfifos} FIFOs ({} KiB shared memory)\n",
            shm_len / 1024
        );

        let debugfs = Dir::new(&CString::try_from_fmt(fmt!(
            "virtio_msg_amp_pci-{}",
            dev.name()
        ))?);
        let timeouts = Self::timeouts(dev);
        let keepalive_ms = Self::keepalive_ms(dev);
        let mut data = AmpPci {
            keepalives: KVec::with_capacity(nfifos, GFP_KERNEL)?,
            buses: KVec::with_capacity(nfifos, GFP_KERNEL)?,
            irqs: KVec::with_capacity(nfifos, GFP_KERNEL)?,
            fifos: KVec::with_capacity(nfifos, GFP_KERNEL)?,
            _files: KVec::with_capacity(nfifos, GFP_KERNEL)?,
            _debugfs: debugfs,
        };
        // On an error below, dropping `data` undoes what was done so far, in order.
        for (index, vector) in (0u32..).zip(IrqVector::all(&vectors)) {
            let fifo = Arc::pin_init(
                Fifo::new(index, pdev, regs.clone(), &shm, timeouts)?,
                GFP_KERNEL,
            )?;
            let link = BusLink::new(fifo.clone())?;
            let handler = Ok::<_, Error>(FifoIrq::new(fifo.clone(), link.clone()));
            let irq = pdev.request_threaded_irq(
                vector,
                irq::Flags::TRIGGER_NONE,
                c"virtio_msg_amp_pci",
                handler,
            );
            data.irqs
                .push(KBox::pin_init(irq, GFP_KERNEL)?, GFP_KERNEL)?;
            data.fifos.push(fifo.clone(), GFP_KERNEL)?;
            // Only once in `data`: its drop takes it away again (a reference cycle).
            fifo.set_changes(Some(DeviceChanges::new(fifo.clone(), link.clone())?));
            let name = CString::try_from_fmt(fmt!("fifo{index}"))?;
            let file = KBox::pin_init(
                data._debugfs.read_only_file(&name, fifo.clone()),
                GFP_KERNEL,
            )?;
            data._files.push(file, GFP_KERNEL)?;

            // PING first: its answer is also the barrier behind which whatever a previous
            // driver left in flight has been dropped (see `Fifo::sync`).
            let answers_ping = fifo.ping();
            let walk = fifo.enumerate();
            for dev_num in walk.found().iter() {
                link.add_device(dev_num)?;
            }
            if walk.ignored() > 0 {
                dev_warn!(
                    dev,
                    "FIFO {index}: ignored {} device numbers from {} on\n",
                    walk.ignored(),
                    enumerate::MAX_DEVICE_NUMBER
                );
            }
            dev_info!(
                dev,
                "FIFO {index}: {} devices, PING {}\n",
                walk.found().len(),
                if answers_ping {
                    "answered"
                } else {
                    "not answered"
                }
            );
            if let Some(ms) = keepalive_ms {
                let keepalive = Keepalive::start(fifo.clone(), link.clone(), ms)?;
                // Room was reserved: never fails, and `data`'s drop stops it.
                if let Err(e) = data.keepalives.push_within_capacity(keepalive) {
                    e.0.stop();
                }
            }
            let bus = auxiliary::Registration::new(
                pdev.as_ref(),
                AUXILIARY_NAME,
                new_bus_id(),
                AUXILIARY_MODNAME,
                link,
            )?;
            data.buses.push(bus, GFP_KERNEL)?;
        }
        Ok(data)
    }
}
