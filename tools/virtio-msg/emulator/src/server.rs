// SPDX-License-Identifier: GPL-2.0 OR MIT

//! The vfio-user side: what QEMU sees of the device (regions, interrupts, guest memory).
//!
//! The `vfio_user` crate runs the protocol and calls [`ServerBackend`] for each request on the
//! thread that runs the server. Those calls stay short: a NOTIFY write only rings the FIFO's
//! doorbell eventfd, MSI-X eventfds and guest memory maps are handed to the FIFO workers
//! through shared state ([`FifoShared`], [`GuestMemoryAtomic`]), and a device reset is done by
//! the workers themselves (they own the devices) while this thread waits, bounded.

use crate::pci::{self, ConfigSpace, BAR0_SIZE, BAR2_SIZE, CONFIG_SIZE};
use crate::shm::SharedMem;
use crate::worker::{FifoHandle, FifoShared};
use log::{debug, info, warn};
use std::fs::File;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use vfio_bindings::bindings::vfio::{
    vfio_region_info, vfio_region_sparse_mmap_area, VFIO_IRQ_INFO_EVENTFD,
    VFIO_IRQ_SET_ACTION_TRIGGER, VFIO_IRQ_SET_ACTION_TYPE_MASK, VFIO_IRQ_SET_DATA_EVENTFD,
    VFIO_IRQ_SET_DATA_NONE, VFIO_IRQ_SET_DATA_TYPE_MASK, VFIO_PCI_BAR0_REGION_INDEX,
    VFIO_PCI_BAR1_REGION_INDEX, VFIO_PCI_BAR2_REGION_INDEX, VFIO_PCI_CONFIG_REGION_INDEX,
    VFIO_PCI_ERR_IRQ_INDEX, VFIO_PCI_MSIX_IRQ_INDEX, VFIO_PCI_NUM_IRQS, VFIO_PCI_NUM_REGIONS,
    VFIO_REGION_INFO_FLAG_MMAP, VFIO_REGION_INFO_FLAG_READ, VFIO_REGION_INFO_FLAG_WRITE,
};
use vfio_user::{DmaMapFlags, DmaUnmapFlags, IrqInfo, ServerBackend, ServerRegion, SparseArea};
use vm_memory::{
    mmap::MmapRegionError, FileOffset, GuestAddress, GuestAddressSpace, GuestMemoryAtomic,
    GuestMemoryMmap, GuestRegionCollectionError, GuestRegionMmap, MmapRegion,
};

/// The guest's memory as the backends see it; QEMU's DMA_MAP/DMA_UNMAP change it.
pub type GuestMem = GuestMemoryAtomic<GuestMemoryMmap>;

/// How long a reset may take per FIFO before QEMU gets its answer anyway.
const RESET_TIMEOUT: Duration = Duration::from_secs(2);

/// The FIFO workers, shared with whoever stops them (the signal handler thread).
pub type Workers = Arc<Mutex<Vec<FifoHandle>>>;

/// The regions of the device, in vfio-pci order (BAR0..5, ROM, config, VGA).
pub fn regions(bar1: &SharedMem) -> Vec<ServerRegion> {
    let rw = VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE;
    (0..VFIO_PCI_NUM_REGIONS)
        .map(|index| {
            let (size, flags) = match index {
                VFIO_PCI_BAR0_REGION_INDEX => (BAR0_SIZE, rw),
                VFIO_PCI_BAR1_REGION_INDEX => (bar1.len() as u64, rw | VFIO_REGION_INFO_FLAG_MMAP),
                VFIO_PCI_BAR2_REGION_INDEX => (BAR2_SIZE, rw),
                VFIO_PCI_CONFIG_REGION_INDEX => (CONFIG_SIZE as u64, rw),
                _ => (0, 0),
            };
            let mmap = index == VFIO_PCI_BAR1_REGION_INDEX;
            ServerRegion {
                region_info: vfio_region_info {
                    argsz: std::mem::size_of::<vfio_region_info>() as u32,
                    flags,
                    index,
                    cap_offset: 0,
                    size,
                    offset: 0,
                },
                // One area covering all of BAR1: QEMU maps it into the guest, no trapping.
                sparse_areas: if mmap {
                    vec![SparseArea {
                        area: vfio_region_sparse_mmap_area { offset: 0, size },
                    }]
                } else {
                    Vec::new()
                },
                mmap_fd: mmap.then(|| bar1.fd()),
            }
        })
        .collect()
}

/// The interrupts: MSI-X, one vector per FIFO. The error notification exists (one eventfd
/// that is never signalled) only because QEMU warns about a device without one.
pub fn irqs(fifos: usize) -> Vec<IrqInfo> {
    (0..VFIO_PCI_NUM_IRQS)
        .map(|index| {
            let count = match index {
                VFIO_PCI_MSIX_IRQ_INDEX => fifos as u32,
                VFIO_PCI_ERR_IRQ_INDEX => 1,
                _ => 0,
            };
            IrqInfo {
                index,
                flags: if count > 0 { VFIO_IRQ_INFO_EVENTFD } else { 0 },
                count,
            }
        })
        .collect()
}

/// The device as the vfio-user server sees it.
pub struct Device {
    fifos: Vec<Arc<FifoShared>>,
    workers: Workers,
    config: ConfigSpace,
    bar1: Arc<SharedMem>,
    mem: GuestMem,
}

impl Device {
    /// The device over running `workers` (one per FIFO, in order), BAR1 `bar1`, and the guest
    /// memory the backends were given.
    pub fn new(workers: Workers, bar1: Arc<SharedMem>, mem: GuestMem) -> Self {
        let fifos: Vec<Arc<FifoShared>> = workers
            .lock()
            .map(|w| w.iter().map(|h| h.shared().clone()).collect())
            .unwrap_or_default();
        let config = ConfigSpace::new(fifos.len(), [BAR0_SIZE, bar1.len() as u64, BAR2_SIZE]);
        Self {
            fifos,
            workers,
            config,
            bar1,
            mem,
        }
    }

    fn map(&self, offset: u64, address: u64, size: u64, file: File) -> Result<(), MapError> {
        let len = usize::try_from(size).map_err(|_| MapError::Size)?;
        // Mapping past the end of the file would make a guest access there kill us (SIGBUS).
        let file_len = file.metadata().map_err(MapError::Fstat)?.len();
        if offset.checked_add(size).is_none_or(|end| end > file_len) {
            return Err(MapError::PastEof(offset, size, file_len));
        }
        let region = MmapRegion::from_file(FileOffset::new(file, offset), len)?;
        let region =
            GuestRegionMmap::new(region, GuestAddress(address)).ok_or(MapError::Overflow)?;
        let guard = self.mem.lock().map_err(|_| MapError::Lock)?;
        guard.replace(self.mem.memory().insert_region(Arc::new(region))?);
        Ok(())
    }

    fn unmap(&self, all: bool, address: u64, size: u64) -> Result<(), MapError> {
        let guard = self.mem.lock().map_err(|_| MapError::Lock)?;
        let map = if all {
            GuestMemoryMmap::new()
        } else {
            self.mem
                .memory()
                .remove_region(GuestAddress(address), size)?
                .0
        };
        guard.replace(map);
        Ok(())
    }
}

/// Why a guest memory map (or unmap) QEMU asked for is not followed.
#[derive(Debug, thiserror::Error)]
enum MapError {
    #[error("size too large")]
    Size,
    #[error("fstat: {0}")]
    Fstat(#[source] io::Error),
    #[error("file offset {0:#x}+{1:#x} beyond the file ({2:#x} bytes)")]
    PastEof(u64, u64, u64),
    #[error("mmap: {0}")]
    Mmap(#[from] MmapRegionError),
    #[error("address range overflows")]
    Overflow,
    #[error("memory map lock")]
    Lock,
    #[error(transparent)]
    Regions(#[from] GuestRegionCollectionError),
}

fn offset_usize(offset: u64) -> usize {
    usize::try_from(offset).unwrap_or(usize::MAX)
}

impl ServerBackend for Device {
    fn region_read(&mut self, region: u32, offset: u64, data: &mut [u8]) -> io::Result<()> {
        match region {
            VFIO_PCI_BAR0_REGION_INDEX => pci::read_registers(offset, data, pci::bar0_register),
            // Normally mapped into the guest; this is QEMU reading through the socket.
            VFIO_PCI_BAR1_REGION_INDEX => self.bar1.read(offset_usize(offset), data),
            VFIO_PCI_CONFIG_REGION_INDEX => self.config.read(offset, data),
            // BAR2: QEMU emulates the MSI-X table; nothing is ever pending in the PBA.
            _ => data.fill(0),
        }
        Ok(())
    }

    fn region_write(&mut self, region: u32, offset: u64, data: &[u8]) -> io::Result<()> {
        match region {
            VFIO_PCI_BAR0_REGION_INDEX => match pci::notify_fifo(offset, self.fifos.len()) {
                Some(n) => self.fifos[n].ring(),
                None => debug!("BAR0 write to {offset:#x} ignored"),
            },
            VFIO_PCI_BAR1_REGION_INDEX => self.bar1.write(offset_usize(offset), data),
            VFIO_PCI_CONFIG_REGION_INDEX => self.config.write(offset, data),
            _ => debug!("region {region} write at {offset:#x} ignored"),
        }
        Ok(())
    }

    fn dma_map(
        &mut self,
        flags: DmaMapFlags,
        offset: u64,
        address: u64,
        size: u64,
        fd: Option<File>,
    ) -> io::Result<()> {
        let range = format!("{address:#x}+{size:#x}");
        match fd {
            None => debug!("DMA_MAP {range} ({flags:?}) without a file: not reachable by DMA"),
            Some(file) => match self.map(offset, address, size, file) {
                Ok(()) => debug!("DMA_MAP {range} (file offset {offset:#x})"),
                // A map QEMU made that we cannot follow only limits what the devices reach.
                Err(e) => warn!("DMA_MAP {range}: {e}"),
            },
        }
        Ok(())
    }

    fn dma_unmap(&mut self, flags: DmaUnmapFlags, address: u64, size: u64) -> io::Result<()> {
        let all = flags.contains(DmaUnmapFlags::UNMAP_ALL);
        match self.unmap(all, address, size) {
            Ok(()) => debug!("DMA_UNMAP {address:#x}+{size:#x}"),
            // Ranges QEMU mapped without a file were never in the map.
            Err(e) => debug!("DMA_UNMAP {address:#x}+{size:#x}: {e}"),
        }
        Ok(())
    }

    fn reset(&mut self) -> io::Result<()> {
        info!("device reset");
        if let Ok(workers) = self.workers.lock() {
            for (n, w) in workers.iter().enumerate() {
                if !w.reset(RESET_TIMEOUT) {
                    warn!("FIFO {n}: reset not acknowledged");
                }
            }
        }
        Ok(())
    }

    fn set_irqs(
        &mut self,
        index: u32,
        flags: u32,
        start: u32,
        count: u32,
        fds: Vec<File>,
    ) -> io::Result<()> {
        let action = flags & VFIO_IRQ_SET_ACTION_TYPE_MASK;
        let data = flags & VFIO_IRQ_SET_DATA_TYPE_MASK;
        if index != VFIO_PCI_MSIX_IRQ_INDEX || action != VFIO_IRQ_SET_ACTION_TRIGGER {
            debug!("SET_IRQS index {index} flags {flags:#x} ignored");
            return Ok(());
        }
        if data == VFIO_IRQ_SET_DATA_NONE && count == 0 {
            info!("MSI-X disabled");
            self.fifos.iter().for_each(|f| f.set_irq(None));
        } else if data == VFIO_IRQ_SET_DATA_EVENTFD {
            let mut fds = fds.into_iter();
            // Vectors beyond the FIFOs do not exist: no need to walk up to `count` of them.
            let end = start.saturating_add(count).min(self.fifos.len() as u32);
            if start.saturating_add(count) > end {
                warn!(
                    "SET_IRQS for vectors {start}+{count}: only {} exist",
                    self.fifos.len()
                );
            }
            for n in start..end {
                let fd = fds.next();
                debug!(
                    "MSI-X vector {n}: {}",
                    if fd.is_some() { "set" } else { "cleared" }
                );
                match self.fifos.get(n as usize) {
                    Some(f) => f.set_irq(fd),
                    None => warn!("SET_IRQS for vector {n}: no such vector"),
                }
            }
        }
        Ok(())
    }
}
