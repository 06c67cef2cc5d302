// SPDX-License-Identifier: GPL-2.0 OR MIT

//! BAR1: the FIFO windows, a memfd shared with QEMU and mapped straight into the guest.
//!
//! The guest reads and writes this memory while the emulator does, so nothing here ever forms
//! a Rust reference to its bytes: the mapping is a `vm-memory` region, indexes are accessed as
//! atomics (acquire/release, the ordering the SPSC protocol needs), slots are copied with
//! volatile accesses, and every offset is checked against the mapping. What the guest wrote is
//! then handled by the shared SPSC code ([`virtio_msg_spsc`]), which validates the indexes.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use virtio_msg_spsc::{layout, QueueAccess, QUEUE_BYTES};
use vm_memory::{Bytes, FileOffset, MmapRegion, VolatileMemory};

/// Bytes of one FIFO's window in BAR1 (the driver's [`layout::FIFO_WINDOW`]).
pub const FIFO_WINDOW: usize = layout::FIFO_WINDOW as usize;

/// A shared memory file mapped read-write into this process.
pub struct SharedMem {
    region: MmapRegion,
}

impl SharedMem {
    /// A new zero-filled memfd of `len` bytes (named `name` for /proc), mapped shared.
    pub fn new(name: &str, len: usize) -> io::Result<Self> {
        let cname = std::ffi::CString::new(name).map_err(|_| io::ErrorKind::InvalidInput)?;
        // SAFETY: memfd_create reads a NUL-terminated string that lives across the call.
        let fd = unsafe { libc::memfd_create(cname.as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a new descriptor that nothing else owns.
        let file = unsafe { File::from_raw_fd(fd) };
        file.set_len(len as u64)?;
        let region = MmapRegion::from_file(FileOffset::new(file, 0), len)
            .map_err(|e| io::Error::other(format!("mapping BAR1: {e}")))?;
        Ok(Self { region })
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.region.size()
    }

    /// Whether the mapping is empty (never, in practice).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The memfd, for handing to QEMU.
    pub fn fd(&self) -> RawFd {
        self.region
            .file_offset()
            .map_or(-1, |f| f.file().as_raw_fd())
    }

    /// Whether `len` bytes at `offset` lie within the mapping.
    fn fits(&self, offset: usize, len: usize) -> bool {
        offset.checked_add(len).is_some_and(|end| end <= self.len())
    }

    /// Loads the little-endian u32 at `offset` (acquire); 0 when out of bounds or unaligned.
    pub fn load_u32(&self, offset: usize) -> u32 {
        self.region
            .as_volatile_slice()
            .load::<u32>(offset, Ordering::Acquire)
            .map_or(0, u32::from_le)
    }

    /// Stores a little-endian u32 at `offset` (release); ignored out of bounds or unaligned.
    pub fn store_u32(&self, offset: usize, value: u32) {
        let _ = self
            .region
            .as_volatile_slice()
            .store(value.to_le(), offset, Ordering::Release);
    }

    /// Copies bytes out; out of bounds reads give zeros.
    pub fn read(&self, offset: usize, out: &mut [u8]) {
        if self
            .region
            .as_volatile_slice()
            .read_slice(out, offset)
            .is_err()
        {
            out.fill(0);
        }
    }

    /// Copies bytes in; out of bounds writes are ignored.
    pub fn write(&self, offset: usize, data: &[u8]) {
        let _ = self.region.as_volatile_slice().write_slice(data, offset);
    }
}

/// One 4 KiB SPSC queue inside a [`SharedMem`], for the shared SPSC code.
#[derive(Clone)]
pub struct QueueWindow {
    mem: Arc<SharedMem>,
    base: usize,
}

impl QueueWindow {
    /// The queue at `queue` (one of [`layout::DRIVER_QUEUE`], [`layout::DEVICE_QUEUE`]) of FIFO
    /// `fifo`; `None`
    /// if it lies outside the memory.
    pub fn new(mem: Arc<SharedMem>, fifo: usize, queue: usize) -> Option<Self> {
        let base = fifo.checked_mul(FIFO_WINDOW)?.checked_add(queue)?;
        mem.fits(base, QUEUE_BYTES).then_some(Self { mem, base })
    }

    /// The offset within the queue, if below [`QUEUE_BYTES`] with `len` bytes.
    fn at(&self, offset: usize, len: usize) -> Option<usize> {
        (offset.checked_add(len)? <= QUEUE_BYTES).then_some(self.base + offset)
    }
}

impl QueueAccess for QueueWindow {
    fn load_index(&self, offset: usize) -> u32 {
        self.at(offset, 4).map_or(0, |o| self.mem.load_u32(o))
    }

    fn store_index(&self, offset: usize, value: u32) {
        if let Some(o) = self.at(offset, 4) {
            self.mem.store_u32(o, value);
        }
    }

    fn read(&self, offset: usize, out: &mut [u8]) {
        match self.at(offset, out.len()) {
            Some(o) => self.mem.read(o, out),
            None => out.fill(0),
        }
    }

    fn write(&self, offset: usize, data: &[u8]) {
        if let Some(o) = self.at(offset, data.len()) {
            self.mem.write(o, data);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use virtio_msg_spsc::layout::{DEVICE_QUEUE, DRIVER_QUEUE};

    #[test]
    fn bounds_are_checked() {
        let mem = Arc::new(SharedMem::new("test", FIFO_WINDOW).unwrap());
        mem.store_u32(8, 0x1234_5678);
        assert_eq!(mem.load_u32(8), 0x1234_5678);
        let mut b = [0u8; 4];
        mem.read(8, &mut b);
        assert_eq!(b, 0x1234_5678u32.to_le_bytes());
        // Out of bounds or unaligned: nothing happens, zeros come back.
        mem.store_u32(FIFO_WINDOW, 1);
        assert_eq!(mem.load_u32(FIFO_WINDOW - 2), 0);
        assert_eq!(mem.load_u32(9), 0);
        let mut big = [0xffu8; 8];
        mem.read(FIFO_WINDOW - 4, &mut big);
        assert_eq!(big, [0; 8]);
        assert!(QueueWindow::new(mem.clone(), 1, DRIVER_QUEUE).is_none());
        let q = QueueWindow::new(mem.clone(), 0, DEVICE_QUEUE).unwrap();
        q.store_index(64, 7);
        assert_eq!(mem.load_u32(DEVICE_QUEUE + 64), 7);
        q.write(QUEUE_BYTES - 2, &[1, 2, 3, 4]);
        assert_eq!(mem.load_u32(DEVICE_QUEUE + QUEUE_BYTES - 4), 0);
    }
}
