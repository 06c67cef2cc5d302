// SPDX-License-Identifier: GPL-2.0 OR MIT

//! The vfio-user backend without QEMU: what QEMU would call, checked against what the guest
//! would see (regions, config space, doorbells through BAR0, MSI-X eventfds, DMA maps).

use std::fs::File;
use std::os::fd::{FromRawFd, IntoRawFd};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use vfio_bindings::bindings::vfio::{
    VFIO_IRQ_SET_ACTION_TRIGGER, VFIO_IRQ_SET_DATA_EVENTFD, VFIO_IRQ_SET_DATA_NONE,
    VFIO_PCI_MSIX_IRQ_INDEX, VFIO_REGION_INFO_FLAG_MMAP,
};
use vfio_user::{DmaMapFlags, DmaUnmapFlags, ServerBackend};
use virtio_msg_device::{bus::FifoBus, Mode};
use virtio_msg_emulator::{
    backends,
    cli::Kind,
    pci::bar1_size,
    server::{irqs, regions, Device, GuestMem},
    shm::{QueueWindow, SharedMem},
    tokens::TokenMode,
    worker::{Fifo, FifoHandle},
};
use virtio_msg_spsc::layout::{DEVICE_QUEUE, DRIVER_QUEUE};
use virtio_msg_spsc::{Consumer, Producer, SLOT_BYTES};
use virtio_msg_wire::{Frame, Message};
use vm_memory::{GuestAddressSpace, GuestMemoryAtomic, GuestMemoryBackend, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

const FIFOS: usize = 2;

fn device() -> (Device, Arc<SharedMem>, GuestMem) {
    let mem: GuestMem = GuestMemoryAtomic::new(GuestMemoryMmap::new());
    let bar1 = Arc::new(SharedMem::new("bar1", bar1_size(FIFOS) as usize).unwrap());
    let handles = (0..FIFOS)
        .map(|n| {
            let mut bus = FifoBus::new(Mode::Compat);
            bus.attach(1, backends::build(&Kind::Rng, 0, 1, &mem).unwrap())
                .unwrap();
            let fifo = Fifo::new(n, bus, Mode::Compat, TokenMode::Model, bar1.clone()).unwrap();
            FifoHandle::spawn(fifo).unwrap()
        })
        .collect();
    let dev = Device::new(Arc::new(Mutex::new(handles)), bar1.clone(), mem.clone());
    (dev, bar1, mem)
}

fn eventfd_file() -> (EventFd, File) {
    let efd = EventFd::new(EFD_NONBLOCK).unwrap();
    // SAFETY: a fresh duplicate that nothing else owns.
    let file = unsafe { File::from_raw_fd(efd.try_clone().unwrap().into_raw_fd()) };
    (efd, file)
}

#[test]
fn regions_and_config_space() {
    let bar1 = SharedMem::new("bar1", bar1_size(3) as usize).unwrap();
    let r = regions(&bar1);
    assert_eq!(r.len(), 9);
    assert_eq!(r[0].region_info.size, 16 * 1024);
    assert_eq!(r[1].region_info.size, 64 * 1024);
    assert_ne!(r[1].region_info.flags & VFIO_REGION_INFO_FLAG_MMAP, 0);
    assert_eq!(r[1].sparse_areas.len(), 1);
    assert_eq!(r[1].sparse_areas[0].area.size, 64 * 1024);
    assert_eq!(r[1].mmap_fd, Some(bar1.fd()));
    assert_eq!(r[7].region_info.size, 256);
    assert!(r
        .iter()
        .enumerate()
        .all(|(i, x)| x.region_info.index == i as u32));
    let msix = &irqs(3)[VFIO_PCI_MSIX_IRQ_INDEX as usize];
    assert_eq!(msix.count, 3);

    let (mut dev, _, _) = device();
    let mut id = [0u8; 4];
    dev.region_read(7, 0, &mut id).unwrap();
    assert_eq!(u32::from_le_bytes(id), 0x9039_10ee);
    let mut version = [0u8; 4];
    dev.region_read(0, 0, &mut version).unwrap();
    assert_eq!(u32::from_le_bytes(version), 1);
}

#[test]
fn a_notify_write_reaches_the_fifo_and_msix_fires() {
    let (mut dev, bar1, _) = device();
    let (irq1, file1) = eventfd_file();
    let flags = VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER;
    dev.set_irqs(VFIO_PCI_MSIX_IRQ_INDEX, flags, 1, 1, vec![file1])
        .unwrap();

    // The guest puts a GET_DEVICES on FIFO 1 and writes NOTIFY 1.
    let mut tx = Producer::adopt(QueueWindow::new(bar1.clone(), 1, DRIVER_QUEUE).unwrap()).unwrap();
    let mut rx = Consumer::adopt(QueueWindow::new(bar1.clone(), 1, DEVICE_QUEUE).unwrap()).unwrap();
    let req = Frame {
        dev_num: 0,
        token: 3,
        msg: Message::GetDevices {
            offset: 0,
            count: 8,
        },
    };
    let mut buf = vec![0u8; req.encoded_len().unwrap()];
    req.encode(&mut buf).unwrap();
    tx.push(&buf).unwrap();
    dev.region_write(0, 0x24, &1u32.to_le_bytes()).unwrap();

    let end = Instant::now() + Duration::from_secs(2);
    while rx.pending().unwrap() == 0 && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(2));
    }
    let mut slot = [0u8; SLOT_BYTES];
    assert!(rx.pop(&mut slot).unwrap());
    let reply = Frame::decode(&slot).unwrap();
    assert_eq!(
        reply.msg,
        Message::Devices {
            offset: 0,
            count: 8,
            next_offset: 8,
            bitmap: &[0b10],
        }
    );
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(irq1.read().unwrap(), 1);

    // MSI-X disabled: no eventfd to signal, nothing breaks.
    dev.set_irqs(
        VFIO_PCI_MSIX_IRQ_INDEX,
        VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_TRIGGER,
        0,
        0,
        Vec::new(),
    )
    .unwrap();
    tx.push(&buf).unwrap();
    dev.region_write(0, 0x24, &[1]).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(rx.pending().unwrap(), 1);
    assert!(
        irq1.read().is_err(),
        "no interrupt after MSI-X was disabled"
    );

    // Writes elsewhere in BAR0 and vectors out of range are ignored; reset is answered.
    dev.region_write(0, 0x100, &[1, 2, 3, 4]).unwrap();
    let (_, file) = eventfd_file();
    dev.set_irqs(VFIO_PCI_MSIX_IRQ_INDEX, flags, 7, 1, vec![file])
        .unwrap();
    dev.reset().unwrap();
}

#[test]
fn guest_memory_follows_dma_maps() {
    let (mut dev, _, mem) = device();
    let ram = SharedMem::new("ram", 0x20000).unwrap();
    // A file QEMU would pass: the memfd of guest RAM.
    let fd = ram_file(&ram);
    dev.dma_map(
        DmaMapFlags::READ_WRITE,
        0x10000,
        0x4000_0000,
        0x10000,
        Some(fd),
    )
    .unwrap();
    dev.dma_map(DmaMapFlags::READ_WRITE, 0, 0xfee0_0000, 0x1000, None)
        .unwrap();
    {
        let guard = mem.memory();
        let m: &GuestMemoryMmap = &guard;
        assert_eq!(m.num_regions(), 1);
        assert!(m.address_in_range(vm_memory::GuestAddress(0x4000_ffff)));
        assert!(!m.address_in_range(vm_memory::GuestAddress(0x4001_0000)));
    }
    dev.dma_unmap(DmaUnmapFlags::empty(), 0x4000_0000, 0x10000)
        .unwrap();
    assert_eq!(GuestMemoryBackend::num_regions(&*mem.memory()), 0);
    // Unmapping what was never mapped is only logged.
    dev.dma_unmap(DmaUnmapFlags::empty(), 0x1234_0000, 0x1000)
        .unwrap();
}

fn ram_file(ram: &SharedMem) -> File {
    // SAFETY: dup() of a descriptor `ram` keeps open; the result is checked and then owned by
    // nothing else.
    let fd = unsafe { libc::dup(ram.fd()) };
    assert!(fd >= 0);
    // SAFETY: as above.
    unsafe { File::from_raw_fd(fd) }
}
