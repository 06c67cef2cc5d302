// SPDX-License-Identifier: GPL-2.0 OR MIT

//! Host packet endpoints of the network device: where transmitted frames go and received
//! frames come from, one whole Ethernet frame per call.
//!
//! Besides the TAP interface ([`super::Tap`]), a Unix datagram socket carries one frame per
//! datagram: the tests drive the device through a socket pair, and a bound socket serves as a
//! userspace "cable" between the emulator and another program (or a second emulator) without
//! any privilege.

use std::{
    fs, io,
    os::{
        fd::{AsRawFd, RawFd},
        unix::{
            fs::FileTypeExt,
            net::{SocketAddr, UnixDatagram},
        },
    },
    path::{Path, PathBuf},
};

/// A host packet endpoint. Implementations are non-blocking.
pub trait PacketIo {
    /// Receives one frame into `buf`: `Ok(None)` if none is waiting, else its length (a frame
    /// longer than `buf` may be cut to `buf.len()`). An error means the endpoint is broken: the
    /// device stops reading it.
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<Option<usize>>;
    /// Sends one frame (an error drops it).
    fn send(&mut self, frame: &[u8]) -> io::Result<()>;
    /// A descriptor that polls readable when a frame is waiting.
    fn fd(&self) -> RawFd;
}

/// Where a [`SocketIo`] sends.
enum Peer {
    /// The socket is connected.
    Connected,
    /// A fixed socket path.
    Path(PathBuf),
    /// The sender of the last datagram received from a named socket, if any yet.
    Learned(Option<SocketAddr>),
}

/// A Unix datagram socket carrying one Ethernet frame per datagram.
pub struct SocketIo {
    sock: UnixDatagram,
    peer: Peer,
}

impl SocketIo {
    /// A connected socket, e.g. one end of [`UnixDatagram::pair`]; made non-blocking.
    pub fn connected(sock: UnixDatagram) -> io::Result<Self> {
        sock.set_nonblocking(true)?;
        Ok(Self {
            sock,
            peer: Peer::Connected,
        })
    }

    /// A socket bound at `path` (a stale socket left there is replaced; any other file is an
    /// error), sending to the socket at `peer`, or without `peer` to the sender of the last
    /// datagram received (frames sent before anything was received are dropped).
    pub fn bind(path: &Path, peer: Option<&Path>) -> io::Result<Self> {
        match fs::symlink_metadata(path) {
            Ok(meta) if meta.file_type().is_socket() => fs::remove_file(path)?,
            Ok(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{} exists and is not a socket", path.display()),
                ))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let sock = UnixDatagram::bind(path)?;
        sock.set_nonblocking(true)?;
        let peer = match peer {
            Some(p) => Peer::Path(p.to_path_buf()),
            None => Peer::Learned(None),
        };
        Ok(Self { sock, peer })
    }
}

impl PacketIo for SocketIo {
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        loop {
            let got = match &mut self.peer {
                Peer::Learned(last) => self.sock.recv_from(buf).map(|(len, from)| {
                    if from.as_pathname().is_some() {
                        *last = Some(from);
                    }
                    len
                }),
                _ => self.sock.recv(buf),
            };
            return match got {
                Ok(len) => Ok(Some(len)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => Err(e),
            };
        }
    }

    fn send(&mut self, frame: &[u8]) -> io::Result<()> {
        let sent = match &self.peer {
            Peer::Connected => self.sock.send(frame),
            Peer::Path(path) => self.sock.send_to(frame, path),
            Peer::Learned(Some(addr)) => self.sock.send_to_addr(frame, addr),
            Peer::Learned(None) => Err(io::ErrorKind::NotConnected.into()),
        }?;
        if sent == frame.len() {
            Ok(())
        } else {
            Err(io::ErrorKind::WriteZero.into())
        }
    }

    fn fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }
}
