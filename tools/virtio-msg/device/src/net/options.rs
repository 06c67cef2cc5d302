// SPDX-License-Identifier: GPL-2.0 OR MIT

//! The network device's options as the emulator's command line spells them, parsed in one
//! place so that every front end accepts the same strings:
//!
//! - `tap=IFNAME[,host-ip=A.B.C.D/NN][,mac=52:54:00:12:34:56]`: a TAP interface (created if
//!   needed; CAP_NET_ADMIN), optionally given a host address and set up.
//! - `socket=PATH[,peer=PEER][,mac=...]`: a Unix datagram socket bound at PATH, one frame per
//!   datagram, sending to the socket PEER, or without `peer` to whoever sent the last frame.

use super::{HostIp, PacketIo, SocketIo, Tap};
use std::{io, path::PathBuf, str::FromStr};

/// The MAC address of network device `dev_num` on FIFO `fifo` when none is given: different for
/// every device of an emulator, so that several can share a guest.
pub fn default_mac(fifo: u8, dev_num: u16) -> [u8; 6] {
    let [_, num] = dev_num.to_be_bytes();
    [0x52, 0x54, 0x00, 0x4d, fifo, num]
}

/// The host end of a network device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// A TAP interface.
    Tap {
        /// Interface name.
        name: String,
        /// Address given to the interface, which is then set up.
        host_ip: Option<HostIp>,
    },
    /// A Unix datagram socket.
    Socket {
        /// Where the socket is bound.
        path: PathBuf,
        /// Where frames are sent; `None`: to the sender of the last frame received.
        peer: Option<PathBuf>,
    },
}

/// The options of one network device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetOptions {
    /// The host end.
    pub endpoint: Endpoint,
    /// The MAC address offered to the driver; `None`: [`default_mac`].
    pub mac: Option<[u8; 6]>,
}

/// A mistake in the network device's options (or in a value of one, the string quoted).
#[derive(Debug, thiserror::Error)]
pub enum NetOptionError {
    #[error("net option {0:?}: expected key=value")]
    NotKeyValue(String),
    #[error("unknown net option {0:?}")]
    Unknown(String),
    #[error("net option {0:?} given twice")]
    Twice(String),
    #[error("{0:?}: expected a MAC address like 52:54:00:12:34:56")]
    Mac(String),
    #[error("{0:?}: expected A.B.C.D/NN")]
    HostIp(String),
    #[error("{0:?}: bad IPv4 address")]
    Ipv4(String),
    #[error("{0:?}: prefix length must be 0 to 32")]
    Prefix(String),
    #[error("peer= goes with socket=, not tap=")]
    PeerWithTap,
    #[error("host-ip= goes with tap=, not socket=")]
    HostIpWithSocket,
    #[error("a net device needs exactly one of tap=IFNAME, socket=PATH")]
    Endpoint,
}

/// Parses a MAC address written as six hexadecimal bytes separated by colons.
pub fn parse_mac(s: &str) -> Result<[u8; 6], NetOptionError> {
    let bad = || NetOptionError::Mac(s.into());
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for byte in &mut mac {
        let part = parts.next().filter(|p| p.len() == 2).ok_or_else(bad)?;
        *byte = u8::from_str_radix(part, 16).map_err(|_| bad())?;
    }
    if parts.next().is_some() {
        return Err(bad());
    }
    Ok(mac)
}

impl FromStr for NetOptions {
    type Err = NetOptionError;

    /// Parses `key=value` pairs separated by commas (see the module documentation).
    fn from_str(s: &str) -> Result<Self, NetOptionError> {
        let (mut tap, mut socket, mut host_ip, mut peer, mut mac) = (None, None, None, None, None);
        for item in s.split(',') {
            let (key, value) = item
                .split_once('=')
                .ok_or_else(|| NetOptionError::NotKeyValue(item.into()))?;
            let slot_taken = match key {
                "tap" => tap.replace(value.to_string()).is_some(),
                "socket" => socket.replace(PathBuf::from(value)).is_some(),
                "peer" => peer.replace(PathBuf::from(value)).is_some(),
                "host-ip" => host_ip.replace(value.parse::<HostIp>()?).is_some(),
                "mac" => mac.replace(parse_mac(value)?).is_some(),
                _ => return Err(NetOptionError::Unknown(key.into())),
            };
            if slot_taken {
                return Err(NetOptionError::Twice(key.into()));
            }
        }
        let endpoint = match (tap, socket) {
            (Some(name), None) if peer.is_none() => Endpoint::Tap { name, host_ip },
            (None, Some(path)) if host_ip.is_none() => Endpoint::Socket { path, peer },
            (Some(_), None) => return Err(NetOptionError::PeerWithTap),
            (None, Some(_)) => return Err(NetOptionError::HostIpWithSocket),
            _ => return Err(NetOptionError::Endpoint),
        };
        Ok(Self { endpoint, mac })
    }
}

impl NetOptions {
    /// Opens the host end.
    pub fn open(&self) -> io::Result<Box<dyn PacketIo + Send>> {
        Ok(match &self.endpoint {
            Endpoint::Tap { name, host_ip } => Box::new(Tap::open(name, *host_ip)?),
            Endpoint::Socket { path, peer } => Box::new(SocketIo::bind(path, peer.as_deref())?),
        })
    }
}
