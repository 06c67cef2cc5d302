// SPDX-License-Identifier: GPL-2.0 OR MIT

//! The block device against a temporary image and rings laid out in guest memory by
//! virtio-queue's mock queue.

mod rings;

use rings::{desc, state, used, Mem, NEXT, QUEUE_SIZE, WRITE};
use std::path::PathBuf;
use std::sync::Arc;
use virtio_msg_device::{
    blk::{Blk, ID_BYTES, SEG_MAX},
    transport::TransportDevice,
    Backend, Mode,
};
use virtio_msg_wire::{Frame, Message};
use virtio_queue::mock::MockSplitQueue;
use vm_memory::{Bytes, GuestAddress};

const SECTORS: u64 = 64;

const T_IN: u32 = 0;
const T_OUT: u32 = 1;
const T_FLUSH: u32 = 4;
const T_GET_ID: u32 = 8;
const S_OK: u8 = 0;
const S_IOERR: u8 = 1;
const S_UNSUPP: u8 = 2;

/// Guest addresses of request headers, data and status bytes.
const HDR: u64 = 0x10_0000;
const DATA: u64 = 0x11_0000;
const STATUS: u64 = 0x18_0000;

fn memory() -> Mem {
    rings::memory(0x20_0000)
}

/// A temporary image file, removed on drop.
struct Image(PathBuf);

impl Image {
    fn new(name: &str, len: u64) -> Self {
        let path =
            std::env::temp_dir().join(format!("virtio-msg-blk-{}-{name}.img", std::process::id()));
        let file = std::fs::File::create(&path).unwrap();
        file.set_len(len).unwrap();
        Self(path)
    }

    fn bytes(&self) -> Vec<u8> {
        std::fs::read(&self.0).unwrap()
    }
}

impl Drop for Image {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn header(mem: &Mem, slot: u64, request: u32, sector: u64) -> u64 {
    let addr = HDR + 0x100 * slot;
    let mut h = [0u8; 16];
    h[..4].copy_from_slice(&request.to_le_bytes());
    h[8..].copy_from_slice(&sector.to_le_bytes());
    mem.write_slice(&h, GuestAddress(addr)).unwrap();
    addr
}

fn status(mem: &Mem, slot: u64) -> u8 {
    mem.read_obj(GuestAddress(STATUS + slot)).unwrap()
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn blk(mem: &Mem, image: &Image, read_only: bool) -> Blk<Arc<Mem>> {
    Blk::open(Arc::new(mem.clone()), &image.0, read_only).unwrap()
}

#[test]
fn write_then_read_back() {
    let mem = memory();
    let image = Image::new("rw", SECTORS * 512);
    let q = MockSplitQueue::new(&mem, QUEUE_SIZE);
    let mut dev = blk(&mem, &image, false);
    assert_eq!(dev.capacity(), SECTORS);

    // OUT of 3 sectors at sector 5, the data split over two descriptors.
    let data = pattern(1536, 7);
    mem.write_slice(&data, GuestAddress(DATA)).unwrap();
    let h = header(&mem, 0, T_OUT, 5);
    q.add_desc_chains(
        &[
            desc(h, 16, NEXT, 1),
            desc(DATA, 1024, NEXT, 2),
            desc(DATA + 1024, 512, NEXT, 3),
            desc(STATUS, 1, WRITE, 0),
        ],
        0,
    )
    .unwrap();
    mem.write_obj(0xffu8, GuestAddress(STATUS)).unwrap();
    assert!(dev.queue_notified(0, &state(&q)));
    assert_eq!(used(&mem, &q, 0), ((0, 1), 1));
    assert_eq!(status(&mem, 0), S_OK);
    let on_disk = image.bytes();
    assert_eq!(&on_disk[5 * 512..8 * 512], &data[..]);
    assert!(on_disk[..5 * 512].iter().all(|&b| b == 0));
    assert!(on_disk[8 * 512..].iter().all(|&b| b == 0));

    // IN of 4 sectors at sector 4: one zero sector, then the pattern.
    let h = header(&mem, 1, T_IN, 4);
    let back = DATA + 0x1_0000;
    q.add_desc_chains(
        &[
            desc(h, 16, NEXT, 5),
            desc(back, 1536, WRITE | NEXT, 6),
            desc(back + 1536, 512, WRITE | NEXT, 7),
            desc(STATUS + 1, 1, WRITE, 0),
        ],
        4,
    )
    .unwrap();
    assert!(dev.queue_notified(0, &state(&q)));
    assert_eq!(used(&mem, &q, 1), ((4, 2049), 2));
    assert_eq!(status(&mem, 1), S_OK);
    let mut read = vec![0u8; 2048];
    mem.read_slice(&mut read, GuestAddress(back)).unwrap();
    assert!(read[..512].iter().all(|&b| b == 0));
    assert_eq!(&read[512..], &data[..]);
}

#[test]
fn large_request_crosses_chunks() {
    let mem = memory();
    let image = Image::new("large", 2048 * 512);
    let q = MockSplitQueue::new(&mem, QUEUE_SIZE);
    let mut dev = blk(&mem, &image, false);
    let len = 300 * 1024;
    let data = pattern(len, 3);
    mem.write_slice(&data, GuestAddress(0x2_0000)).unwrap();
    let h = header(&mem, 0, T_OUT, 100);
    q.add_desc_chains(
        &[
            desc(h, 16, NEXT, 1),
            desc(0x2_0000, len as u32, NEXT, 2),
            desc(STATUS, 1, WRITE, 0),
        ],
        0,
    )
    .unwrap();
    assert!(dev.queue_notified(0, &state(&q)));
    assert_eq!(status(&mem, 0), S_OK);
    assert_eq!(&image.bytes()[100 * 512..100 * 512 + len], &data[..]);
}

#[test]
fn flush_get_id_and_unsupported() {
    let mem = memory();
    let image = Image::new("misc", SECTORS * 512);
    let q = MockSplitQueue::new(&mem, QUEUE_SIZE);
    let mut dev = blk(&mem, &image, false).with_serial("disk-serial-0123456789-extra");
    assert_eq!(dev.serial(), b"disk-serial-01234567");

    let flush = header(&mem, 0, T_FLUSH, 0);
    let get_id = header(&mem, 1, T_GET_ID, 0);
    let discard = header(&mem, 2, 11, 0);
    for slot in 0..3 {
        mem.write_obj(0xffu8, GuestAddress(STATUS + slot)).unwrap();
    }
    q.add_desc_chains(
        &[
            desc(flush, 16, NEXT, 1),
            desc(STATUS, 1, WRITE, 0),
            desc(get_id, 16, NEXT, 3),
            desc(DATA, ID_BYTES as u32, WRITE | NEXT, 4),
            desc(STATUS + 1, 1, WRITE, 0),
            desc(discard, 16, NEXT, 6),
            desc(DATA + 0x100, 16, NEXT, 7),
            desc(STATUS + 2, 1, WRITE, 0),
        ],
        0,
    )
    .unwrap();
    assert!(dev.queue_notified(0, &state(&q)));
    assert_eq!(used(&mem, &q, 0), ((0, 1), 3));
    assert_eq!(status(&mem, 0), S_OK);
    assert_eq!(used(&mem, &q, 1).0, (2, ID_BYTES as u32 + 1));
    assert_eq!(status(&mem, 1), S_OK);
    let mut id = [0u8; ID_BYTES];
    mem.read_slice(&mut id, GuestAddress(DATA)).unwrap();
    assert_eq!(&id, b"disk-serial-01234567");
    assert_eq!(used(&mem, &q, 2).0, (5, 1));
    assert_eq!(status(&mem, 2), S_UNSUPP);
}

#[test]
fn default_serial_identifies_the_image() {
    let mem = memory();
    let a = Image::new("serial-a", 512);
    let b = Image::new("serial-b", 512);
    let (a, b) = (blk(&mem, &a, true), blk(&mem, &b, true));
    assert!(!a.serial().is_empty() && a.serial().len() <= ID_BYTES);
    assert_ne!(a.serial(), b.serial());
}

#[test]
fn out_of_range_and_odd_lengths_fail() {
    let mem = memory();
    let image = Image::new("range", SECTORS * 512);
    let q = MockSplitQueue::new(&mem, QUEUE_SIZE);
    let mut dev = blk(&mem, &image, false);
    let cases = [
        // Past the end by one sector.
        (T_IN, SECTORS - 1, 1024, WRITE),
        // Starting past the end.
        (T_OUT, SECTORS, 512, 0),
        // A sector number that overflows when multiplied.
        (T_IN, u64::MAX, 512, WRITE),
        // Not whole sectors.
        (T_OUT, 0, 100, 0),
    ];
    let mut descs = Vec::new();
    for (slot, &(request, sector, len, flags)) in cases.iter().enumerate() {
        let h = header(&mem, slot as u64, request, sector);
        let base = (slot * 3) as u16;
        descs.push(desc(h, 16, NEXT, base + 1));
        descs.push(desc(DATA, len, flags | NEXT, base + 2));
        descs.push(desc(STATUS + slot as u64, 1, WRITE, 0));
    }
    q.add_desc_chains(&descs, 0).unwrap();
    assert!(dev.queue_notified(0, &state(&q)));
    for slot in 0..cases.len() as u64 {
        assert_eq!(status(&mem, slot), S_IOERR, "case {slot}");
        assert_eq!(used(&mem, &q, slot).0, (slot as u32 * 3, 1), "case {slot}");
    }
    assert!(image.bytes().iter().all(|&b| b == 0));
    // The last sector itself is fine.
    let h = header(&mem, 5, T_IN, SECTORS - 1);
    q.add_desc_chains(
        &[
            desc(h, 16, NEXT, 13),
            desc(DATA, 512, WRITE | NEXT, 14),
            desc(STATUS + 5, 1, WRITE, 0),
        ],
        12,
    )
    .unwrap();
    assert!(dev.queue_notified(0, &state(&q)));
    assert_eq!(status(&mem, 5), S_OK);
}

#[test]
fn read_only_disk_refuses_writes() {
    let mem = memory();
    let image = Image::new("ro", SECTORS * 512);
    let q = MockSplitQueue::new(&mem, QUEUE_SIZE);
    let mut dev = blk(&mem, &image, true);
    assert!(dev.is_read_only());
    assert_ne!(dev.features() & (1 << 5), 0);
    mem.write_slice(&pattern(512, 1), GuestAddress(DATA))
        .unwrap();
    let out = header(&mem, 0, T_OUT, 0);
    let read = header(&mem, 1, T_IN, 0);
    q.add_desc_chains(
        &[
            desc(out, 16, NEXT, 1),
            desc(DATA, 512, NEXT, 2),
            desc(STATUS, 1, WRITE, 0),
            desc(read, 16, NEXT, 4),
            desc(DATA + 0x1000, 512, WRITE | NEXT, 5),
            desc(STATUS + 1, 1, WRITE, 0),
        ],
        0,
    )
    .unwrap();
    assert!(dev.queue_notified(0, &state(&q)));
    assert_eq!(status(&mem, 0), S_IOERR);
    assert_eq!(status(&mem, 1), S_OK);
    assert_eq!(used(&mem, &q, 1), ((3, 513), 2));
    assert!(image.bytes().iter().all(|&b| b == 0));
}

#[test]
fn malformed_chains_are_consumed() {
    let mem = memory();
    let image = Image::new("bad", SECTORS * 512);
    let q = MockSplitQueue::new(&mem, QUEUE_SIZE);
    let mut dev = blk(&mem, &image, false);
    let h = header(&mem, 0, T_IN, 0);
    mem.write_slice(&[0xff; 5], GuestAddress(STATUS)).unwrap();
    q.add_desc_chains(
        &[
            // No writable byte at all: nothing can be reported.
            desc(h, 16, 0, 0),
            // A header of 8 bytes: too short.
            desc(h, 8, NEXT, 2),
            desc(STATUS, 1, WRITE, 0),
            // Only a status byte: no header at all.
            desc(STATUS + 1, 1, WRITE, 0),
            // Data outside guest memory.
            desc(h, 16, NEXT, 5),
            desc(0x1000_0000, 512, WRITE | NEXT, 6),
            desc(STATUS + 2, 1, WRITE, 0),
            // A readable part running out of guest memory (a header with a huge length).
            desc(h, 0x1000_0000, NEXT, 8),
            desc(STATUS + 3, 1, WRITE, 0),
            // A chain longer than 4 GiB in total: virtio-queue stops walking it before the
            // status byte.
            desc(h, u32::MAX, NEXT, 10),
            desc(STATUS + 4, 1, WRITE, 0),
        ],
        0,
    )
    .unwrap();
    assert!(dev.queue_notified(0, &state(&q)));
    assert_eq!(used(&mem, &q, 0), ((0, 0), 6));
    assert_eq!(used(&mem, &q, 1).0, (1, 1));
    assert_eq!(status(&mem, 0), S_IOERR);
    assert_eq!(used(&mem, &q, 2).0, (3, 1));
    assert_eq!(status(&mem, 1), S_IOERR);
    assert_eq!(used(&mem, &q, 3).0, (4, 0));
    assert_eq!(status(&mem, 2), 0xff);
    assert_eq!(used(&mem, &q, 4).0, (7, 1));
    assert_eq!(status(&mem, 3), S_IOERR);
    assert_eq!(used(&mem, &q, 5).0, (9, 0));
    assert_eq!(status(&mem, 4), 0xff);
    assert!(!dev.queue_notified(0, &state(&q)));
}

#[test]
fn image_size_must_be_whole_sectors() {
    let mem = memory();
    let image = Image::new("odd", 1000);
    let err = Blk::open(Arc::new(mem), &image.0, false)
        .err()
        .expect("an image of 1000 bytes is refused");
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    assert!(err.to_string().contains("multiple of 512"), "{err}");
}

#[test]
fn config_space() {
    let mem = memory();
    let image = Image::new("config", SECTORS * 512);
    let dev = blk(&mem, &image, false);
    assert_eq!(dev.device_id(), 2);
    assert_eq!(dev.config_size(), 24);
    let mut config = [0xaau8; 24];
    dev.read_config(0, &mut config);
    assert_eq!(u64::from_le_bytes(config[..8].try_into().unwrap()), SECTORS);
    assert_eq!(
        u32::from_le_bytes(config[12..16].try_into().unwrap()),
        SEG_MAX
    );
    assert_eq!(u32::from_le_bytes(config[20..24].try_into().unwrap()), 512);
    let mut part = [0u8; 4];
    dev.read_config(4, &mut part);
    assert_eq!(part, config[4..8]);
    // VERSION_1, SEG_MAX, BLK_SIZE and FLUSH, not RO.
    assert_eq!(dev.features(), (1 << 32) | (1 << 2) | (1 << 6) | (1 << 9));
}

#[test]
fn through_the_transport() {
    let mem = memory();
    let image = Image::new("transport", SECTORS * 512);
    let mut dev = TransportDevice::new(3, blk(&mem, &image, false), Mode::Compat);
    let mut send = |msg: Message<'_>| {
        let out = dev.handle(&Frame {
            dev_num: 3,
            token: 9,
            msg,
        });
        assert_eq!(out.len(), 1);
        out.into_iter().next().unwrap()
    };
    let info = send(Message::GetDeviceInfo);
    match Frame::decode(&info).unwrap().msg {
        Message::DeviceInfo(info) => {
            assert_eq!(info.device_id, 2);
            assert_eq!(info.config_size, 24);
            assert_eq!(info.max_virtqueues, 1);
        }
        other => panic!("unexpected {other:?}"),
    }
    let config = send(Message::GetConfig {
        offset: 0,
        length: 8,
    });
    match Frame::decode(&config).unwrap().msg {
        Message::Config { offset, data, .. } => {
            assert_eq!(offset, 0);
            assert_eq!(data, &SECTORS.to_le_bytes()[..]);
        }
        other => panic!("unexpected {other:?}"),
    }
}
