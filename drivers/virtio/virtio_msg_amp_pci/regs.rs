// SPDX-License-Identifier: GPL-2.0

//! BAR0 of the AMP PCI device: a few 32-bit registers, described once here.
//!
//! Reads and writes of BAR0 trap to the device, so they are expensive: the driver reads
//! [`VERSION`] once at probe and otherwise only writes doorbells.

use kernel::io::register;

register! {
    /// Version of the register interface; this driver knows version 1.
    pub(crate) VERSION(u32) @ 0x00 {
        31:0 version;
    }

    /// Optional features of the device; version 1 defines none.
    pub(crate) FEATURES(u32) @ 0x04 {
        31:0 features;
    }

    /// Doorbell of FIFO n: any write tells the device that FIFO n's driver queue has messages.
    pub(crate) NOTIFY(u32)[8] @ 0x20 {
        31:0 value;
    }
}

/// The register interface this driver implements.
pub(crate) const SUPPORTED_VERSION: u32 = 1;

/// Bytes of BAR0 the registers above use.
pub(crate) const BAR0_USED: usize = 0x40;
