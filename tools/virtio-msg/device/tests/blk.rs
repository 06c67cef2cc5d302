// SPDX-License-Identifier: GPL-2.0 OR MIT

//! The block device against a temporary image and rings laid out in guest memory by
//! virtio-queue's mock queue.

mod rings;

use rings::{desc, kick, state, used, Mem, NEXT, QUEUE_SIZE, WRITE};
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
const T_DISCARD: u32 = 11;
const T_WRITE_ZEROES: u32 = 13;
/// VIRTIO_BLK_T_GET_LIFETIME: a request type the device does not offer.
const T_GET_LIFETIME: u32 = 10;
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
    assert!(kick(&mut dev, 0, &state(&q)));
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
    assert!(kick(&mut dev, 0, &state(&q)));
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
    assert!(kick(&mut dev, 0, &state(&q)));
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
    let unsupported = header(&mem, 2, T_GET_LIFETIME, 0);
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
            desc(unsupported, 16, NEXT, 6),
            desc(DATA + 0x100, 16, NEXT, 7),
            desc(STATUS + 2, 1, WRITE, 0),
        ],
        0,
    )
    .unwrap();
    assert!(kick(&mut dev, 0, &state(&q)));
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
    assert!(kick(&mut dev, 0, &state(&q)));
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
    assert!(kick(&mut dev, 0, &state(&q)));
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
    assert!(kick(&mut dev, 0, &state(&q)));
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
    assert!(kick(&mut dev, 0, &state(&q)));
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
    assert!(!kick(&mut dev, 0, &state(&q)));
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
    // 16 MiB, as the recorded device model's disk: the same 57 bytes.
    let image = Image::new("config", 16 << 20);
    let dev = blk(&mem, &image, false);
    assert_eq!(dev.device_id(), 2);
    assert_eq!(dev.config_size(), 57);
    let mut config = [0xaau8; 57];
    dev.read_config(0, &mut config);
    let recorded = "008000000000000000000000fe0000002000103f0002000000000000\
                    0000000001000100ffff3f000100000001000000ffff3f000100000001";
    let recorded: Vec<u8> = (0..recorded.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&recorded[i..i + 2], 16).unwrap())
        .collect();
    assert_eq!(config[..], recorded[..], "03-probe-blk.txt:33,35,37");
    assert_eq!(
        u32::from_le_bytes(config[12..16].try_into().unwrap()),
        SEG_MAX
    );
    let mut part = [0u8; 4];
    dev.read_config(4, &mut part);
    assert_eq!(part, config[4..8]);
    // As the device model: SEG_MAX, GEOMETRY, BLK_SIZE, FLUSH, TOPOLOGY, CONFIG_WCE, DISCARD,
    // WRITE_ZEROES and the transport features, not RO.
    assert_eq!(dev.features(), 0x0000_0101_3000_6e54);

    // The geometry follows the capacity: 64 sectors is the smallest, 2 cylinders.
    let small = Image::new("config-small", SECTORS * 512);
    blk(&mem, &small, true).read_config(16, &mut part);
    assert_eq!(part, [2, 0, 16, 63]);
    assert_eq!(blk(&mem, &small, true).features() & (1 << 5), 1 << 5, "RO");
}

/// A discard or write-zeroes request of one range at slot `slot`.
fn zeroing(mem: &Mem, slot: u64, request: u32, sector: u64, sectors: u32, flags: u32) -> u64 {
    let hdr = header(mem, slot, request, 0);
    let mut range = [0u8; 16];
    range[..8].copy_from_slice(&sector.to_le_bytes());
    range[8..12].copy_from_slice(&sectors.to_le_bytes());
    range[12..].copy_from_slice(&flags.to_le_bytes());
    mem.write_slice(&range, GuestAddress(DATA + 0x1000 * slot))
        .unwrap();
    hdr
}

#[test]
fn discard_and_write_zeroes() {
    let mem = memory();
    let image = Image::new("zeroes", SECTORS * 512);
    std::fs::write(&image.0, vec![0x5au8; SECTORS as usize * 512]).unwrap();
    let q = MockSplitQueue::new(&mem, QUEUE_SIZE);
    let mut dev = blk(&mem, &image, false);
    let cases = [
        // Write zeroes over sectors 2..4 (may unmap), discard of sectors 10..11.
        (T_WRITE_ZEROES, 2, 2, 1, S_OK),
        (T_DISCARD, 10, 1, 0, S_OK),
        // Write zeroes without unmap over sector 20.
        (T_WRITE_ZEROES, 20, 1, 0, S_OK),
        // Past the end; the unmap flag on a discard (a flag the request does not know).
        (T_WRITE_ZEROES, SECTORS - 1, 2, 0, S_IOERR),
        (T_DISCARD, 0, 1, 1, S_UNSUPP),
    ];
    let mut chains = Vec::new();
    for (slot, &(request, sector, sectors, flags, _)) in cases.iter().enumerate() {
        let slot = slot as u64;
        let hdr = zeroing(&mem, slot, request, sector, sectors, flags);
        let first = 3 * slot as u16;
        chains.extend([
            desc(hdr, 16, NEXT, first + 1),
            desc(DATA + 0x1000 * slot, 16, NEXT, first + 2),
            desc(STATUS + slot, 1, WRITE, 0),
        ]);
    }
    q.add_desc_chains(&chains, 0).unwrap();
    assert!(kick(&mut dev, 0, &state(&q)));
    for (slot, &(.., want)) in cases.iter().enumerate() {
        assert_eq!(status(&mem, slot as u64), want, "case {slot}");
    }
    let bytes = image.bytes();
    let sector = |n: usize| &bytes[n * 512..(n + 1) * 512];
    assert!(sector(1).iter().all(|&b| b == 0x5a));
    assert!(sector(2).iter().chain(sector(3)).all(|&b| b == 0));
    assert!(sector(4).iter().all(|&b| b == 0x5a));
    assert!(sector(20).iter().all(|&b| b == 0));
    // A discarded range reads back as whatever the image gives: zeros where the file system
    // deallocated it, the old data where it could not. Either is allowed.
    assert!(sector(10).iter().all(|&b| b == 0) || sector(10).iter().all(|&b| b == 0x5a));
    assert_eq!(
        bytes.len(),
        SECTORS as usize * 512,
        "the image keeps its size"
    );

    // A read-only disk refuses both.
    let ro = Image::new("zeroes-ro", SECTORS * 512);
    let mut dev = blk(&mem, &ro, true);
    let q = MockSplitQueue::new(&mem, QUEUE_SIZE);
    let hdr = zeroing(&mem, 0, T_WRITE_ZEROES, 0, 1, 0);
    q.add_desc_chains(
        &[
            desc(hdr, 16, NEXT, 1),
            desc(DATA, 16, NEXT, 2),
            desc(STATUS, 1, WRITE, 0),
        ],
        0,
    )
    .unwrap();
    assert!(kick(&mut dev, 0, &state(&q)));
    assert_eq!(status(&mem, 0), S_IOERR);
}

#[test]
fn the_write_cache_can_be_switched() {
    let mem = memory();
    let image = Image::new("wce", SECTORS * 512);
    let mut dev = blk(&mem, &image, false);
    let writeback = |dev: &Blk<Arc<Mem>>| {
        let mut b = [9u8];
        dev.read_config(32, &mut b);
        b[0]
    };
    assert_eq!(writeback(&dev), 1);
    assert!(dev.writeback());
    dev.write_config(32, &[0]);
    assert_eq!(writeback(&dev), 0);
    // Only that byte is writable.
    dev.write_config(0, &[1, 2, 3, 4]);
    let mut cap = [0u8; 8];
    dev.read_config(0, &mut cap);
    assert_eq!(u64::from_le_bytes(cap), SECTORS);
    dev.write_config(31, &[7, 1]);
    assert!(dev.writeback());
    // A driver without CONFIG_WCE: the cache follows FLUSH.
    dev.set_driver_features(1 << 32);
    assert!(!dev.writeback());
    dev.set_driver_features((1 << 32) | (1 << 9));
    assert!(dev.writeback());
    dev.write_config(32, &[0]);
    dev.reset();
    assert!(dev.writeback(), "a reset turns the cache back on");
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
            assert_eq!(info.config_size, 57);
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
