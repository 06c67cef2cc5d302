// SPDX-License-Identifier: GPL-2.0 OR MIT

//! Turns each `--device` into a virtio backend of the device crate, opening its host side
//! (image, TAP interface, socket) before the emulator starts listening, so that a mistake is
//! reported at once instead of when the guest first touches the device.

use crate::cli::Kind;
use crate::server::GuestMem;
use std::fs::File;
use std::io::Read;
use virtio_msg_device::{rng::Rng, Backend};

/// The host's random source for `rng` devices.
pub const RANDOM_SOURCE: &str = "/dev/urandom";

/// A boxed backend of any kind.
pub type BoxedBackend = Box<dyn Backend + Send>;

/// Builds the backend `kind`, reaching guest memory through `mem`.
pub fn build(kind: &Kind, mem: &GuestMem) -> Result<BoxedBackend, String> {
    match kind {
        Kind::Rng => {
            let mut random =
                File::open(RANDOM_SOURCE).map_err(|e| format!("{RANDOM_SOURCE}: {e}"))?;
            let source = Box::new(move |buf: &mut [u8]| {
                if let Err(e) = random.read_exact(buf) {
                    // Never hand out predictable bytes as entropy: leave the buffer zeroed and
                    // say so.
                    log::error!("{RANDOM_SOURCE}: {e}");
                    buf.fill(0);
                }
            });
            Ok(Box::new(Rng::new(mem.clone(), source)))
        }
        Kind::Blk { .. } => Err(not_available("blk")),
        Kind::Net { .. } => Err(not_available("net")),
        Kind::Console { .. } => Err(not_available("console")),
    }
}

fn not_available(kind: &str) -> String {
    format!("the {kind} backend is not available in this build of the emulator")
}
