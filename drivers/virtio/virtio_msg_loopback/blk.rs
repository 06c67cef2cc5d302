// SPDX-License-Identifier: GPL-2.0

//! The block device: requests served from memory.
//!
//! A request is laid out as the virtio specification says: a device-readable header (type,
//! reserved, sector), the data (readable for a write, writable for a read) and a writable
//! status byte, last.

use kernel::{prelude::*, vringh::Chain};

/// Bytes per sector.
pub(crate) const SECTOR: u64 = 512;
/// The configuration size, `struct virtio_blk_config`.
pub(crate) const CONFIG_SIZE: u32 = 60;

const T_IN: u32 = 0;
const T_OUT: u32 = 1;
const T_FLUSH: u32 = 4;
const T_GET_ID: u32 = 8;
const S_OK: u8 = 0;
const S_IOERR: u8 = 1;
const S_UNSUPP: u8 = 2;
/// The serial number, `VIRTIO_BLK_ID_BYTES` at most.
const ID: &[u8] = b"virtio-msg-loopback";

/// Serves one request on `disk`; returns the bytes written into the chain (the status byte
/// and the data before it). An error is a malformed chain (no header, no room for the status).
pub(crate) fn serve(disk: &mut [u8], chain: &mut Chain<'_>) -> Result<u32> {
    let mut header = [0u8; 16];
    if chain.read(&mut header)? != header.len() {
        return Err(EINVAL);
    }
    // The status byte is the last writable one: what comes before it is data.
    let data_out = chain.readable();
    let data_in = chain.writable().checked_sub(1).ok_or(EINVAL)?;
    let [t0, t1, t2, t3, _, _, _, _, s @ ..] = header;
    let kind = u32::from_le_bytes([t0, t1, t2, t3]);
    let sector = u64::from_le_bytes(s);
    let mut written = 0;
    let status = match kind {
        T_IN | T_OUT => {
            let len = if kind == T_IN { data_in } else { data_out };
            match range(disk.len(), sector, len).and_then(|r| disk.get_mut(r)) {
                Some(part) if kind == T_IN => {
                    written = chain.write(part)?;
                    S_OK
                }
                Some(part) => {
                    chain.read(part)?;
                    S_OK
                }
                None => S_IOERR,
            }
        }
        T_FLUSH => S_OK,
        T_GET_ID => {
            written = chain.write(ID.get(..data_in.min(ID.len())).unwrap_or(ID))?;
            S_OK
        }
        _ => S_UNSUPP,
    };
    chain.skip_writable(data_in - written);
    if chain.write(&[status])? != 1 {
        return Err(EINVAL);
    }
    u32::try_from(written + 1).map_err(|_| EINVAL)
}

/// The bytes of a disk of `disk_len` bytes that `len` bytes from `sector` on cover, if they
/// are all on it.
fn range(disk_len: usize, sector: u64, len: usize) -> Option<core::ops::Range<usize>> {
    let start = usize::try_from(sector.checked_mul(SECTOR)?).ok()?;
    let end = start.checked_add(len)?;
    (end <= disk_len).then_some(start..end)
}
