// SPDX-License-Identifier: GPL-2.0 OR MIT

//! The PCI face of the AMP PCI device: configuration space and the layout of its BARs.
//!
//! A vfio-user server answers configuration space accesses itself (region 7), so this module
//! holds the 256 bytes QEMU reads at start-up (IDs, class, BAR types, an MSI-X capability) and
//! applies writes through a mask, like hardware would. QEMU emulates the BAR addresses and the
//! MSI-X table on its side; it takes BAR sizes from the region sizes and the BAR types and the
//! MSI-X layout from here.

/// PCI vendor id (Xilinx, as the QEMU device model).
pub const VENDOR_ID: u16 = 0x10ee;
/// PCI device id.
pub const DEVICE_ID: u16 = 0x9039;
/// Class code: system peripheral, other.
pub const CLASS: u16 = 0x0880;
/// Revision.
pub const REVISION: u8 = 1;
/// Bytes of configuration space.
pub const CONFIG_SIZE: usize = 256;

/// BAR0: registers.
pub const BAR0_SIZE: u64 = 16 * 1024;
/// BAR0 VERSION register and its value.
pub const REG_VERSION: u64 = 0x00;
/// Value of VERSION.
pub const VERSION: u32 = 1;
/// BAR0 FEATURES register (reads 0).
pub const REG_FEATURES: u64 = 0x04;
/// BAR0 NOTIFY register of FIFO 0; FIFO n's is 4 bytes further per n.
pub const REG_NOTIFY: u64 = 0x20;
/// BAR2: the MSI-X table (offset 0) and PBA.
pub const BAR2_SIZE: u64 = 4096;
/// Offset of the PBA in BAR2.
pub const PBA_OFFSET: u32 = 0x800;
/// Most FIFOs (MSI-X vectors) one device has: as many as the driver uses.
pub const MAX_FIFOS: usize = virtio_msg_spsc::layout::MAX_FIFOS as usize;

const CAP_MSIX: u8 = 0x40;
const PCI_CAP_ID_MSIX: u8 = 0x11;
const STATUS_CAP_LIST: u16 = 1 << 4;
/// Command register bits the driver may change: I/O, memory, bus master, INTx disable.
const COMMAND_WRITABLE: u16 = 0x0001 | 0x0002 | 0x0004 | 0x0400;
/// BAR type bits: 32-bit memory, prefetchable.
const BAR_PREFETCH: u32 = 1 << 3;

/// Size of BAR1 for `fifos` FIFOs: 16 KiB each, rounded up to a power of two (PCI BAR sizes
/// are powers of two; the windows beyond the last FIFO are unused).
pub fn bar1_size(fifos: usize) -> u64 {
    ((fifos.max(1) * crate::shm::FIFO_WINDOW) as u64).next_power_of_two()
}

/// The FIFO whose NOTIFY register is at BAR0 `offset` (any byte of it), if below `fifos`.
pub fn notify_fifo(offset: u64, fifos: usize) -> Option<usize> {
    let n = usize::try_from(offset.checked_sub(REG_NOTIFY)? / 4).ok()?;
    (n < fifos).then_some(n)
}

/// The value of the BAR0 register at aligned `offset`.
pub fn bar0_register(offset: u64) -> u32 {
    match offset {
        REG_VERSION => VERSION,
        // FEATURES, NOTIFY (write-only) and the rest read 0.
        _ => 0,
    }
}

/// Reads `out.len()` bytes of 32-bit registers at `offset` through `reg` (any size, any
/// alignment: each byte comes from the register that holds it).
pub fn read_registers(offset: u64, out: &mut [u8], reg: impl Fn(u64) -> u32) {
    for (i, b) in out.iter_mut().enumerate() {
        let at = offset.wrapping_add(i as u64);
        *b = reg(at & !3).to_le_bytes()[(at & 3) as usize];
    }
}

/// The configuration space.
pub struct ConfigSpace {
    bytes: [u8; CONFIG_SIZE],
    writable: [u8; CONFIG_SIZE],
}

impl ConfigSpace {
    /// Configuration space of a device with `fifos` FIFOs (one MSI-X vector each) and the BAR
    /// sizes given.
    pub fn new(fifos: usize, bar_sizes: [u64; 3]) -> Self {
        let mut c = Self {
            bytes: [0; CONFIG_SIZE],
            writable: [0; CONFIG_SIZE],
        };
        c.put16(0x00, VENDOR_ID);
        c.put16(0x02, DEVICE_ID);
        c.put16(0x06, STATUS_CAP_LIST);
        c.bytes[0x08] = REVISION;
        c.put16(0x0a, CLASS);
        c.put16(0x2c, VENDOR_ID);
        c.put16(0x2e, DEVICE_ID);
        c.bytes[0x34] = CAP_MSIX;
        c.writable[0x04..0x06].copy_from_slice(&COMMAND_WRITABLE.to_le_bytes());
        // Interrupt line: scratch for firmware. Interrupt pin 0: no INTx.
        c.writable[0x3c] = 0xff;
        for (i, size) in bar_sizes.iter().enumerate() {
            let off = 0x10 + 4 * i;
            let flags = if i == 1 { BAR_PREFETCH } else { 0 };
            c.put32(off, flags);
            let mask = (!(*size as u32).wrapping_sub(1)) & !0xf;
            c.writable[off..off + 4].copy_from_slice(&mask.to_le_bytes());
        }
        let vectors = fifos.clamp(1, MAX_FIFOS) as u16;
        let cap = usize::from(CAP_MSIX);
        c.bytes[cap] = PCI_CAP_ID_MSIX;
        c.bytes[cap + 1] = 0; // end of the list
        c.put16(cap + 2, vectors - 1);
        // MSI-X enable and function mask.
        c.writable[cap + 3] = 0xc0;
        // Table at BAR2 offset 0, PBA at BAR2 offset PBA_OFFSET.
        c.put32(cap + 4, 2);
        c.put32(cap + 8, PBA_OFFSET | 2);
        c
    }

    fn put16(&mut self, off: usize, v: u16) {
        self.bytes[off..off + 2].copy_from_slice(&v.to_le_bytes());
    }

    fn put32(&mut self, off: usize, v: u32) {
        self.bytes[off..off + 4].copy_from_slice(&v.to_le_bytes());
    }

    /// Reads; bytes beyond the space read 0.
    pub fn read(&self, offset: u64, out: &mut [u8]) {
        for (i, b) in out.iter_mut().enumerate() {
            *b = usize::try_from(offset.saturating_add(i as u64))
                .ok()
                .and_then(|o| self.bytes.get(o).copied())
                .unwrap_or(0);
        }
    }

    /// Writes through the mask of writable bits; bytes beyond the space are ignored.
    pub fn write(&mut self, offset: u64, data: &[u8]) {
        for (i, v) in data.iter().enumerate() {
            let Some(o) = usize::try_from(offset.saturating_add(i as u64))
                .ok()
                .filter(|o| *o < CONFIG_SIZE)
            else {
                continue;
            };
            let m = self.writable[o];
            self.bytes[o] = (self.bytes[o] & !m) | (v & m);
        }
    }

    /// Whether memory decoding is enabled (command register bit 1).
    pub fn memory_enabled(&self) -> bool {
        self.bytes[0x04] & 2 != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read32(c: &ConfigSpace, off: u64) -> u32 {
        let mut b = [0u8; 4];
        c.read(off, &mut b);
        u32::from_le_bytes(b)
    }

    #[test]
    fn identity_and_msix() {
        let c = ConfigSpace::new(3, [BAR0_SIZE, bar1_size(3), BAR2_SIZE]);
        assert_eq!(read32(&c, 0), 0x9039_10ee);
        assert_eq!(read32(&c, 8), 0x0880_0001);
        assert_eq!(read32(&c, 0x14), BAR_PREFETCH);
        assert_eq!(bar1_size(3), 64 * 1024);
        let mut cap = [0u8; 12];
        c.read(0x40, &mut cap);
        assert_eq!(cap[0], PCI_CAP_ID_MSIX);
        assert_eq!(u16::from_le_bytes([cap[2], cap[3]]), 2);
        assert_eq!(read32(&c, 0x48), PBA_OFFSET | 2);
        // Past the end reads 0 and does not panic.
        let mut tail = [0xffu8; 8];
        c.read(252, &mut tail);
        assert_eq!(&tail[4..], &[0, 0, 0, 0]);
        c.read(u64::MAX, &mut tail);
    }

    #[test]
    fn writes_go_through_the_mask() {
        let mut c = ConfigSpace::new(1, [BAR0_SIZE, bar1_size(1), BAR2_SIZE]);
        // Sizing a BAR: all ones read back as the size mask.
        c.write(0x10, &[0xff; 4]);
        assert_eq!(read32(&c, 0x10), !(BAR0_SIZE as u32 - 1));
        c.write(0x14, &[0xff; 4]);
        assert_eq!(read32(&c, 0x14), !(16 * 1024 - 1) | BAR_PREFETCH);
        // IDs are read-only; the command register takes the memory bit.
        c.write(0, &[0; 4]);
        assert_eq!(read32(&c, 0), 0x9039_10ee);
        assert!(!c.memory_enabled());
        c.write(4, &[0xff, 0xff]);
        assert!(c.memory_enabled());
        assert_eq!(read32(&c, 4) & 0xffff, u32::from(COMMAND_WRITABLE));
        c.write(u64::MAX - 1, &[1, 2, 3]);
    }

    #[test]
    fn bar0_layout() {
        assert_eq!(notify_fifo(0x20, 2), Some(0));
        assert_eq!(notify_fifo(0x27, 2), Some(1));
        assert_eq!(notify_fifo(0x28, 2), None);
        assert_eq!(notify_fifo(0x1c, 2), None);
        let mut b = [0u8; 8];
        read_registers(0, &mut b, bar0_register);
        assert_eq!(b, [1, 0, 0, 0, 0, 0, 0, 0]);
        let mut b = [0u8; 2];
        read_registers(u64::MAX, &mut b, bar0_register);
    }
}
