// SPDX-License-Identifier: GPL-2.0 OR MIT

//! The virtio block device over a raw image file.
//!
//! The image is a plain file (or block device) whose size is a whole number of 512-byte
//! sectors; requests are served synchronously with positioned reads and writes, in bounded
//! chunks, so a request never makes the device allocate more than [`CHUNK`] bytes however large
//! the driver claims it is.
//!
//! Descriptor chains are walked by the rust-vmm `virtio-queue` crate (its `Reader` and `Writer`
//! gather the device-readable and device-writable parts of a chain and check them against guest
//! memory), so nothing here parses rings by hand. Everything in a request is driver-controlled
//! and therefore hostile: a missing status byte, a short header, an odd data length, a sector
//! past the end or a chain outside guest memory ends the request with an error status (or, with
//! no room for a status, with nothing written) and never a panic. The rust-vmm `virtio-blk`
//! crate is not published in a version built on `virtio-queue` 0.18, hence the request handling
//! here.
//!
//! The device offers what QEMU's `virtio-blk-device` offers behind the device model, and its
//! configuration space has the same 57 bytes with the same values for the same image, so that
//! the emulator answers the recorded probe byte for byte and a driver meets the same device:
//! geometry and topology (informative), a write cache the driver can switch
//! (VIRTIO_BLK_F_CONFIG_WCE: with `writeback` 0 every write reaches the image before it
//! completes), discard and write zeroes (one range per request; the range is deallocated in the
//! image where the file system can, and written with zeros where it cannot, so it always reads
//! back as zeros).

use crate::{
    feature,
    transport::{read_config_image, serve_chains, walk_queue, wants_used_event, QueueState},
    Backend, TRANSPORT_FEATURES,
};
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use virtio_bindings::{
    virtio_blk::{
        VIRTIO_BLK_F_BLK_SIZE, VIRTIO_BLK_F_CONFIG_WCE, VIRTIO_BLK_F_DISCARD, VIRTIO_BLK_F_FLUSH,
        VIRTIO_BLK_F_GEOMETRY, VIRTIO_BLK_F_RO, VIRTIO_BLK_F_SEG_MAX, VIRTIO_BLK_F_TOPOLOGY,
        VIRTIO_BLK_F_WRITE_ZEROES, VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK, VIRTIO_BLK_S_UNSUPP,
        VIRTIO_BLK_T_DISCARD, VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_IN,
        VIRTIO_BLK_T_OUT, VIRTIO_BLK_T_WRITE_ZEROES,
    },
    virtio_ids::VIRTIO_ID_BLOCK,
};
use virtio_queue::{DescriptorChain, Queue, Reader, Writer};
use vm_memory::{GuestAddressSpace, GuestMemory};

/// `seg_max` in the configuration is valid.
const F_SEG_MAX: u64 = feature(VIRTIO_BLK_F_SEG_MAX);
/// `geometry` in the configuration is valid.
const F_GEOMETRY: u64 = feature(VIRTIO_BLK_F_GEOMETRY);
/// The disk is read-only.
const F_RO: u64 = feature(VIRTIO_BLK_F_RO);
/// `blk_size` in the configuration is valid.
const F_BLK_SIZE: u64 = feature(VIRTIO_BLK_F_BLK_SIZE);
/// The device handles VIRTIO_BLK_T_FLUSH.
const F_FLUSH: u64 = feature(VIRTIO_BLK_F_FLUSH);
/// The topology fields of the configuration are valid.
const F_TOPOLOGY: u64 = feature(VIRTIO_BLK_F_TOPOLOGY);
/// `writeback` in the configuration can be written.
const F_CONFIG_WCE: u64 = feature(VIRTIO_BLK_F_CONFIG_WCE);
/// The device handles VIRTIO_BLK_T_DISCARD.
const F_DISCARD: u64 = feature(VIRTIO_BLK_F_DISCARD);
/// The device handles VIRTIO_BLK_T_WRITE_ZEROES.
const F_WRITE_ZEROES: u64 = feature(VIRTIO_BLK_F_WRITE_ZEROES);

/// Request types.
const T_IN: u32 = VIRTIO_BLK_T_IN;
const T_OUT: u32 = VIRTIO_BLK_T_OUT;
const T_FLUSH: u32 = VIRTIO_BLK_T_FLUSH;
const T_GET_ID: u32 = VIRTIO_BLK_T_GET_ID;
const T_DISCARD: u32 = VIRTIO_BLK_T_DISCARD;
const T_WRITE_ZEROES: u32 = VIRTIO_BLK_T_WRITE_ZEROES;

/// Request status values.
const S_OK: u8 = VIRTIO_BLK_S_OK as u8;
const S_IOERR: u8 = VIRTIO_BLK_S_IOERR as u8;
const S_UNSUPP: u8 = VIRTIO_BLK_S_UNSUPP as u8;

/// Size of a sector, the unit of `capacity` and of request positions.
pub const SECTOR_SIZE: u64 = 512;
/// Largest number of data segments in one request (`seg_max`): what QEMU reports for its
/// default queue of 256 entries, two of which a request needs for its header and status
/// (drivers use indirect descriptors, which the device offers, for longer requests).
pub const SEG_MAX: u32 = 254;
/// Largest discard or write-zeroes range, in sectors (`max_discard_sectors`,
/// `max_write_zeroes_sectors`), as QEMU reports it.
pub const MAX_ZEROING_SECTORS: u32 = 0x3f_ffff;
/// Bytes of one discard or write-zeroes range: sector le64, num_sectors le32, flags le32.
const RANGE_LEN: usize = 16;
/// VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP: the range may be deallocated.
const FLAG_UNMAP: u32 = 1;
/// Largest data transfer of one request; larger requests fail with an I/O error. Linux sends
/// at most a few MiB per request.
pub const MAX_REQUEST_BYTES: usize = 64 << 20;
/// Length of the serial number GET_ID returns (VIRTIO_BLK_ID_BYTES).
pub const ID_BYTES: usize = 20;
/// Bytes moved between the image and guest memory at a time.
const CHUNK: usize = 128 << 10;
/// Length of the request header: type le32, reserved le32, sector le64.
const HEADER_LEN: usize = 16;

/// Configuration layout (offsets): capacity le64, size_max le32 (0: no limit offered),
/// seg_max le32, geometry (cylinders le16, heads u8, sectors u8), blk_size le32, topology
/// (physical_block_exp u8, alignment_offset u8, min_io_size le16, opt_io_size le32: all 0),
/// writeback u8, a reserved byte, num_queues le16, max_discard_sectors le32,
/// max_discard_seg le32, discard_sector_alignment le32, max_write_zeroes_sectors le32,
/// max_write_zeroes_seg le32, write_zeroes_may_unmap u8.
const CONFIG_SEG_MAX: usize = 12;
const CONFIG_GEOMETRY: usize = 16;
const CONFIG_BLK_SIZE: usize = 20;
const CONFIG_WRITEBACK: usize = 32;
const CONFIG_NUM_QUEUES: usize = 34;
const CONFIG_DISCARD: usize = 36;
const CONFIG_WRITE_ZEROES: usize = 48;
const CONFIG_MAY_UNMAP: usize = 56;
const CONFIG_SIZE: usize = 57;

/// Heads and sectors per track of the geometry QEMU guesses for a disk without a partition
/// table; the cylinders follow from the capacity, between 2 and 16383.
const HEADS: u8 = 16;
const SECTORS_PER_TRACK: u8 = 63;
const MAX_CYLINDERS: u64 = 16383;

/// A virtio block device backed by a raw image, over the driver's memory `M` (an address
/// space, because the memory map can change while the device runs).
pub struct Blk<M> {
    mem: M,
    image: File,
    read_only: bool,
    /// Size of the image in sectors, fixed when the image is opened.
    capacity: u64,
    serial: Vec<u8>,
    /// The driver's request queue as last configured, and the `virtio-queue` state walking it.
    queue: Option<(QueueState, Queue)>,
    /// The write cache is on: writes complete before they reach the image (flushes order
    /// them); off, every write is synced first.
    writeback: bool,
}

impl<M: GuestAddressSpace> Blk<M> {
    /// A block device serving the raw image at `path` (opened read-only if `read_only`), with
    /// the driver's memory `mem`. Fails if the image cannot be opened or its size is not a
    /// multiple of [`SECTOR_SIZE`].
    pub fn open(mem: M, path: &Path, read_only: bool) -> io::Result<Self> {
        let mut image = OpenOptions::new().read(true).write(!read_only).open(path)?;
        // Seeking to the end measures block devices too, where the metadata says 0.
        let size = image.seek(SeekFrom::End(0))?;
        if size % SECTOR_SIZE != 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{}: image size {size} is not a multiple of {SECTOR_SIZE} bytes",
                    path.display()
                ),
            ));
        }
        // A serial that is stable for one image: where the file lives.
        let meta = image.metadata()?;
        let serial = format!("vmsg{:x}-{:x}", meta.dev(), meta.ino());
        let mut blk = Self {
            mem,
            image,
            read_only,
            capacity: size / SECTOR_SIZE,
            serial: Vec::new(),
            queue: None,
            writeback: true,
        };
        blk.set_serial(&serial);
        Ok(blk)
    }

    /// Replaces the serial number GET_ID reports (at most [`ID_BYTES`] bytes are kept).
    pub fn with_serial(mut self, serial: &str) -> Self {
        self.set_serial(serial);
        self
    }

    fn set_serial(&mut self, serial: &str) {
        let bytes = serial.as_bytes();
        self.serial = bytes[..bytes.len().min(ID_BYTES)].to_vec();
    }

    /// The serial number GET_ID reports.
    pub fn serial(&self) -> &[u8] {
        &self.serial
    }

    /// Size of the disk in sectors.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Whether the disk refuses writes.
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    /// Whether the write cache is on (see [`Blk`]'s module documentation).
    pub fn writeback(&self) -> bool {
        self.writeback
    }

    /// Serves one request; returns the number of bytes written into the driver's buffers.
    fn serve<T>(&self, mem: &M::M, chain: DescriptorChain<T>) -> u32
    where
        T: std::ops::Deref + Clone,
        T::Target: GuestMemory + Sized,
    {
        // The last device-writable byte is the status; without one there is nothing to report.
        let Ok(mut data_out) = Writer::new(mem, chain.clone()) else {
            return 0;
        };
        let Some(data_len) = data_out.available_bytes().checked_sub(1) else {
            return 0;
        };
        let Ok(mut status_out) = data_out.split_at(data_len) else {
            return 0;
        };
        let status = match Reader::new(mem, chain) {
            Ok(mut data_in) => self.execute(&mut data_in, &mut data_out),
            Err(_) => S_IOERR,
        };
        let status_len = usize::from(status_out.write_all(&[status]).is_ok());
        // Bounded by MAX_REQUEST_BYTES or ID_BYTES, plus the status byte.
        u32::try_from(data_out.bytes_written() + status_len).unwrap_or(u32::MAX)
    }

    /// Runs the request whose header starts `data_in`; returns its status.
    fn execute<B, C>(&self, data_in: &mut Reader<'_, B>, data_out: &mut Writer<'_, C>) -> u8
    where
        B: vm_memory::bitmap::BitmapSlice,
        C: vm_memory::bitmap::BitmapSlice,
    {
        let mut header = [0u8; HEADER_LEN];
        if data_in.read_exact(&mut header).is_err() {
            return S_IOERR;
        }
        let [t0, t1, t2, t3, _, _, _, _, s0, s1, s2, s3, s4, s5, s6, s7] = header;
        let request = u32::from_le_bytes([t0, t1, t2, t3]);
        let sector = u64::from_le_bytes([s0, s1, s2, s3, s4, s5, s6, s7]);
        let result = match request {
            T_IN => self
                .range(sector, data_out.available_bytes())
                .and_then(|offset| self.read_into(offset, data_out)),
            T_OUT | T_DISCARD | T_WRITE_ZEROES if self.read_only => None,
            T_OUT => self
                .range(sector, data_in.available_bytes())
                .and_then(|offset| self.write_from(offset, data_in))
                .and_then(|()| self.write_through()),
            T_FLUSH => self.image.sync_data().ok(),
            T_GET_ID => {
                let len = self.serial.len().min(data_out.available_bytes());
                data_out.write_all(&self.serial[..len]).ok()
            }
            T_DISCARD | T_WRITE_ZEROES => {
                let mut range = [0u8; RANGE_LEN];
                // One range per request (max_discard_seg, max_write_zeroes_seg).
                if data_in.available_bytes() != RANGE_LEN || data_in.read_exact(&mut range).is_err()
                {
                    return S_UNSUPP;
                }
                return self.zero_range(request, range);
            }
            _ => return S_UNSUPP,
        };
        match result {
            Some(()) => S_OK,
            None => S_IOERR,
        }
    }

    /// Without the write cache, a write is on the image before it completes.
    fn write_through(&self) -> Option<()> {
        if self.writeback {
            Some(())
        } else {
            self.image.sync_data().ok()
        }
    }

    /// VIRTIO_BLK_T_DISCARD or VIRTIO_BLK_T_WRITE_ZEROES of the range `range` (sector le64,
    /// num_sectors le32, flags le32). A discard only allows the device to forget the data;
    /// both deallocate the range where the file system can, and write zeroes also writes zeros
    /// where it cannot, so that the range reads as zeros either way.
    fn zero_range(&self, request: u32, range: [u8; RANGE_LEN]) -> u8 {
        let [s0, s1, s2, s3, s4, s5, s6, s7, n0, n1, n2, n3, f0, f1, f2, f3] = range;
        let sector = u64::from_le_bytes([s0, s1, s2, s3, s4, s5, s6, s7]);
        let sectors = u32::from_le_bytes([n0, n1, n2, n3]);
        let flags = u32::from_le_bytes([f0, f1, f2, f3]);
        let allowed_flags = if request == T_WRITE_ZEROES {
            FLAG_UNMAP
        } else {
            0
        };
        if flags & !allowed_flags != 0 {
            return S_UNSUPP;
        }
        let Some(offset) = self.range(sector, 0).filter(|_| {
            sectors <= MAX_ZEROING_SECTORS
                && sector.saturating_add(u64::from(sectors)) <= self.capacity
        }) else {
            return S_IOERR;
        };
        let len = u64::from(sectors) * SECTOR_SIZE;
        let punched = punch_hole(&self.image, offset, len);
        let done = match request {
            T_DISCARD => true,
            _ => punched || self.write_zeros(offset, len).is_some(),
        };
        match done && self.write_through().is_some() {
            true => S_OK,
            false => S_IOERR,
        }
    }

    /// Writes `len` zero bytes at `offset`, a chunk at a time.
    fn write_zeros(&self, mut offset: u64, len: u64) -> Option<()> {
        let zeros = vec![0u8; CHUNK];
        let end = offset.checked_add(len)?;
        while offset < end {
            let n = (end - offset).min(CHUNK as u64) as usize;
            self.image.write_all_at(&zeros[..n], offset).ok()?;
            offset += n as u64;
        }
        Some(())
    }

    /// The byte offset of a transfer of `len` bytes at `sector`, if it is whole sectors, within
    /// the disk and not too large.
    fn range(&self, sector: u64, len: usize) -> Option<u64> {
        if len > MAX_REQUEST_BYTES || len as u64 % SECTOR_SIZE != 0 {
            return None;
        }
        let end = sector.checked_add(len as u64 / SECTOR_SIZE)?;
        (end <= self.capacity).then_some(sector * SECTOR_SIZE)
    }

    /// Copies the image from `offset` into the driver's buffers until they are full.
    fn read_into<B: vm_memory::bitmap::BitmapSlice>(
        &self,
        mut offset: u64,
        out: &mut Writer<'_, B>,
    ) -> Option<()> {
        let mut buf = vec![0u8; out.available_bytes().min(CHUNK)];
        while out.available_bytes() > 0 {
            let len = out.available_bytes().min(buf.len());
            let chunk = &mut buf[..len];
            self.image.read_exact_at(chunk, offset).ok()?;
            out.write_all(chunk).ok()?;
            offset += len as u64;
        }
        Some(())
    }

    /// Copies the driver's buffers into the image from `offset`.
    fn write_from<B: vm_memory::bitmap::BitmapSlice>(
        &self,
        mut offset: u64,
        data: &mut Reader<'_, B>,
    ) -> Option<()> {
        let mut buf = vec![0u8; data.available_bytes().min(CHUNK)];
        while data.available_bytes() > 0 {
            let len = data.available_bytes().min(buf.len());
            let chunk = &mut buf[..len];
            data.read_exact(chunk).ok()?;
            self.image.write_all_at(chunk, offset).ok()?;
            offset += len as u64;
        }
        Some(())
    }

    fn config(&self) -> [u8; CONFIG_SIZE] {
        let mut config = [0u8; CONFIG_SIZE];
        let mut put = |at: usize, bytes: &[u8]| config[at..at + bytes.len()].copy_from_slice(bytes);
        put(0, &self.capacity.to_le_bytes());
        put(CONFIG_SEG_MAX, &SEG_MAX.to_le_bytes());
        let cylinders = (self.capacity / (u64::from(HEADS) * u64::from(SECTORS_PER_TRACK)))
            .clamp(2, MAX_CYLINDERS) as u16;
        put(CONFIG_GEOMETRY, &cylinders.to_le_bytes());
        put(CONFIG_GEOMETRY + 2, &[HEADS, SECTORS_PER_TRACK]);
        put(CONFIG_BLK_SIZE, &(SECTOR_SIZE as u32).to_le_bytes());
        put(CONFIG_WRITEBACK, &[u8::from(self.writeback)]);
        put(CONFIG_NUM_QUEUES, &1u16.to_le_bytes());
        // Discard and write zeroes: one range of up to MAX_ZEROING_SECTORS; discards aligned
        // to a sector (the alignment is counted in sectors).
        put(CONFIG_DISCARD, &MAX_ZEROING_SECTORS.to_le_bytes());
        put(CONFIG_DISCARD + 4, &1u32.to_le_bytes());
        put(CONFIG_DISCARD + 8, &1u32.to_le_bytes());
        put(CONFIG_WRITE_ZEROES, &MAX_ZEROING_SECTORS.to_le_bytes());
        put(CONFIG_WRITE_ZEROES + 4, &1u32.to_le_bytes());
        put(CONFIG_MAY_UNMAP, &[1]);
        config
    }
}

/// Deallocates `len` bytes at `offset` of `image`, which then read as zeros; whether the file
/// system did it (block devices and some file systems cannot).
fn punch_hole(image: &File, offset: u64, len: u64) -> bool {
    let (Ok(offset), Ok(len)) = (libc::off_t::try_from(offset), libc::off_t::try_from(len)) else {
        return false;
    };
    if len == 0 {
        return true;
    }
    // SAFETY: fallocate takes no pointers; the descriptor is the open image.
    let rc = unsafe {
        libc::fallocate(
            image.as_raw_fd(),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            offset,
            len,
        )
    };
    rc == 0
}

impl<M: GuestAddressSpace> Backend for Blk<M> {
    fn device_id(&self) -> u32 {
        VIRTIO_ID_BLOCK
    }

    fn features(&self) -> u64 {
        let ro = if self.read_only { F_RO } else { 0 };
        TRANSPORT_FEATURES
            | F_SEG_MAX
            | F_GEOMETRY
            | F_BLK_SIZE
            | F_FLUSH
            | F_TOPOLOGY
            | F_CONFIG_WCE
            | F_DISCARD
            | F_WRITE_ZEROES
            | ro
    }

    /// Without VIRTIO_BLK_F_CONFIG_WCE the write cache is on exactly when flushes were
    /// negotiated (a driver that cannot flush gets every write synced).
    fn set_driver_features(&mut self, features: u64) {
        if features & F_CONFIG_WCE == 0 {
            self.writeback = features & F_FLUSH != 0;
        }
    }

    fn config_size(&self) -> u32 {
        CONFIG_SIZE as u32
    }

    fn read_config(&self, offset: u32, out: &mut [u8]) {
        let config = self.config();
        read_config_image(&config, offset, out);
    }

    /// Only `writeback` is writable (VIRTIO_BLK_F_CONFIG_WCE); the rest ignores writes.
    fn write_config(&mut self, offset: u32, data: &[u8]) {
        let at = (CONFIG_WRITEBACK as u32).checked_sub(offset);
        if let Some(&value) = at.and_then(|i| data.get(i as usize)) {
            if !self.writeback || value != 0 {
                // Switching the cache off first puts what it holds on the image.
                let _ = self.image.sync_data();
            }
            self.writeback = value != 0;
        }
    }

    fn num_queues(&self) -> u32 {
        1
    }

    fn queue_notified(&mut self, index: u32, queues: &[QueueState]) -> Vec<u32> {
        let Some(q) = queues.first().filter(|_| index == 0) else {
            return Vec::new();
        };
        let guard = self.mem.memory();
        let mem: &M::M = &guard;
        walk_queue(&mut self.queue, mem, q);
        let Some((state, mut vq)) = self.queue.take() else {
            return Vec::new();
        };
        let used = serve_chains(&mut vq, mem, |chain| self.serve(mem, chain));
        let notify = used && wants_used_event(&mut vq, mem, q);
        self.queue = Some((state, vq));
        if notify {
            vec![0]
        } else {
            Vec::new()
        }
    }

    fn reset(&mut self) {
        self.queue = None;
        self.writeback = true;
    }
}
