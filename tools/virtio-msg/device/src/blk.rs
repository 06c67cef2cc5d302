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

use crate::{
    transport::{walk_queue, QueueState},
    Backend,
};
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use virtio_queue::{DescriptorChain, Queue, QueueT, Reader, Writer};
use vm_memory::{GuestAddressSpace, GuestMemory};

/// virtio device id of a block device.
const VIRTIO_ID_BLOCK: u32 = 2;
/// VIRTIO_F_VERSION_1.
const VERSION_1: u64 = 1 << 32;
/// VIRTIO_BLK_F_SEG_MAX: `seg_max` in the configuration is valid.
const F_SEG_MAX: u64 = 1 << 2;
/// VIRTIO_BLK_F_RO: the disk is read-only.
const F_RO: u64 = 1 << 5;
/// VIRTIO_BLK_F_BLK_SIZE: `blk_size` in the configuration is valid.
const F_BLK_SIZE: u64 = 1 << 6;
/// VIRTIO_BLK_F_FLUSH: the device handles VIRTIO_BLK_T_FLUSH.
const F_FLUSH: u64 = 1 << 9;

/// Request types.
const T_IN: u32 = 0;
const T_OUT: u32 = 1;
const T_FLUSH: u32 = 4;
const T_GET_ID: u32 = 8;

/// Request status values.
const S_OK: u8 = 0;
const S_IOERR: u8 = 1;
const S_UNSUPP: u8 = 2;

/// Size of a sector, the unit of `capacity` and of request positions.
pub const SECTOR_SIZE: u64 = 512;
/// Largest number of data segments in one request (`seg_max`): two descriptors of a request
/// are its header and status, and a queue of 128 entries (without indirect descriptors) must
/// hold a whole request.
pub const SEG_MAX: u32 = 126;
/// Largest data transfer of one request; larger requests fail with an I/O error. Linux sends
/// at most a few MiB per request.
pub const MAX_REQUEST_BYTES: usize = 64 << 20;
/// Length of the serial number GET_ID returns (VIRTIO_BLK_ID_BYTES).
pub const ID_BYTES: usize = 20;
/// Bytes moved between the image and guest memory at a time.
const CHUNK: usize = 128 << 10;
/// Length of the request header: type le32, reserved le32, sector le64.
const HEADER_LEN: usize = 16;

/// Configuration layout: capacity le64 at 0, size_max le32 at 8, seg_max le32 at 12, geometry
/// (cylinders le16, heads u8, sectors u8) at 16, blk_size le32 at 20. Later fields belong to
/// features not offered.
const CONFIG_SEG_MAX: usize = 12;
const CONFIG_BLK_SIZE: usize = 20;
const CONFIG_SIZE: usize = 24;

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
            T_OUT if self.read_only => None,
            T_OUT => self
                .range(sector, data_in.available_bytes())
                .and_then(|offset| self.write_from(offset, data_in)),
            T_FLUSH => self.image.sync_data().ok(),
            T_GET_ID => {
                let len = self.serial.len().min(data_out.available_bytes());
                data_out.write_all(&self.serial[..len]).ok()
            }
            _ => return S_UNSUPP,
        };
        match result {
            Some(()) => S_OK,
            None => S_IOERR,
        }
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
        config[..8].copy_from_slice(&self.capacity.to_le_bytes());
        config[CONFIG_SEG_MAX..CONFIG_SEG_MAX + 4].copy_from_slice(&SEG_MAX.to_le_bytes());
        config[CONFIG_BLK_SIZE..CONFIG_BLK_SIZE + 4]
            .copy_from_slice(&(SECTOR_SIZE as u32).to_le_bytes());
        config
    }
}

impl<M: GuestAddressSpace> Backend for Blk<M> {
    fn wants_used_event(&self, queue: &QueueState) -> bool {
        crate::driver_wants_interrupt(&*self.mem.memory(), queue)
    }

    fn device_id(&self) -> u32 {
        VIRTIO_ID_BLOCK
    }

    fn features(&self) -> u64 {
        let ro = if self.read_only { F_RO } else { 0 };
        VERSION_1 | F_SEG_MAX | F_BLK_SIZE | F_FLUSH | ro
    }

    fn config_size(&self) -> u32 {
        CONFIG_SIZE as u32
    }

    fn read_config(&self, offset: u32, out: &mut [u8]) {
        let config = self.config();
        let start = offset as usize;
        if let Some(src) = start
            .checked_add(out.len())
            .and_then(|end| config.get(start..end))
        {
            out.copy_from_slice(src);
        }
    }

    /// Nothing in the configuration is writable (VIRTIO_BLK_F_CONFIG_WCE is not offered).
    fn write_config(&mut self, _offset: u32, _data: &[u8]) {}

    fn num_queues(&self) -> u32 {
        1
    }

    fn queue_notified(&mut self, index: u32, q: &QueueState) -> bool {
        if index != 0 {
            return false;
        }
        let guard = self.mem.memory();
        let mem: &M::M = &guard;
        walk_queue(&mut self.queue, mem, q);
        let Some((state, mut vq)) = self.queue.take() else {
            return false;
        };
        let mut used = false;
        // At most a ring's worth per call: a guest that keeps making buffers available cannot
        // keep the device here (what it adds meanwhile comes with its next notification).
        for _ in 0..vq.size() {
            let Some(chain) = vq.pop_descriptor_chain(mem) else {
                break;
            };
            let head = chain.head_index();
            let len = self.serve(mem, chain);
            if vq.add_used(mem, head, len).is_err() {
                break;
            }
            used = true;
        }
        self.queue = Some((state, vq));
        used
    }

    fn reset(&mut self) {
        self.queue = None;
    }
}
