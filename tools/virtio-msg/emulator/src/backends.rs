// SPDX-License-Identifier: GPL-2.0 OR MIT

//! Turns each `--device` into a virtio backend of the device crate, opening its host side
//! (image, TAP interface, socket) before the emulator starts listening, so that a mistake is
//! reported at once instead of when the guest first touches the device.

use crate::cli::Kind;
use crate::server::GuestMem;
use std::fs::File;
use std::io::{self, Read};
use std::path::PathBuf;
use virtio_msg_device::{
    blk::Blk,
    console::{Console, ConsoleHost},
    net::{default_mac, Endpoint, Net},
    rng::Rng,
    Backend,
};

/// The host's random source for `rng` devices.
pub const RANDOM_SOURCE: &str = "/dev/urandom";

/// A boxed backend of any kind.
pub type BoxedBackend = Box<dyn Backend + Send>;

/// The host side of a device that could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("{RANDOM_SOURCE}: {0}", RANDOM_SOURCE = RANDOM_SOURCE)]
    Random(#[source] io::Error),
    #[error("blk image {path}: {1}", path = .0.display())]
    Blk(PathBuf, #[source] io::Error),
    #[error("net tap {0:?}: {1} (a TAP interface needs root or CAP_NET_ADMIN)")]
    Tap(String, #[source] io::Error),
    #[error("net socket {path}: {1}", path = .0.display())]
    NetSocket(PathBuf, #[source] io::Error),
    #[error("console socket {path}: {1}", path = .0.display())]
    ConsoleSocket(PathBuf, #[source] io::Error),
    #[error("console pty: {0}")]
    ConsolePty(#[source] io::Error),
}

/// Builds the backend `kind` for device number `num` of FIFO `fifo`, reaching guest memory
/// through `mem`.
pub fn build(
    kind: &Kind,
    fifo: usize,
    num: u16,
    mem: &GuestMem,
) -> Result<BoxedBackend, BackendError> {
    match kind {
        Kind::Rng => {
            let mut random = File::open(RANDOM_SOURCE).map_err(BackendError::Random)?;
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
        Kind::Blk {
            file,
            read_only,
            serial,
        } => {
            let blk = Blk::open(mem.clone(), file, *read_only)
                .map_err(|e| BackendError::Blk(file.clone(), e))?;
            Ok(match serial {
                Some(s) => Box::new(blk.with_serial(s)),
                None => Box::new(blk),
            })
        }
        Kind::Net(opts) => {
            let io = opts.open().map_err(|e| match &opts.endpoint {
                Endpoint::Tap { name, .. } => BackendError::Tap(name.clone(), e),
                Endpoint::Socket { path, .. } => BackendError::NetSocket(path.clone(), e),
            })?;
            let mac = opts.mac.unwrap_or_else(|| default_mac(fifo as u8, num));
            Ok(Box::new(Net::new(mem.clone(), io, mac)))
        }
        Kind::Console { socket } => {
            let host = match socket {
                Some(path) => ConsoleHost::Socket(path.clone()),
                None => ConsoleHost::Pty,
            };
            let console = Console::new(mem.clone(), host).map_err(|e| match socket {
                Some(path) => BackendError::ConsoleSocket(path.clone(), e),
                None => BackendError::ConsolePty(e),
            })?;
            Ok(Box::new(console))
        }
    }
}
