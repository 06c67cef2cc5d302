// SPDX-License-Identifier: GPL-2.0 OR MIT

//! A Linux TAP interface as the host end of the network device, optionally given an IPv4
//! address and brought up by the emulator itself, so that a test only has to start the
//! emulator and can then reach the guest from the host.
//!
//! The interface is created through `/dev/net/tun` (TUNSETIFF with IFF_TAP | IFF_NO_PI: plain
//! Ethernet frames, no packet information prefix) and lives as long as the [`Tap`]. Creating
//! it and configuring it need CAP_NET_ADMIN; the errors say so.

use super::{NetOptionError, PacketIo};
use std::{
    ffi::c_char,
    fmt,
    fs::{File, OpenOptions},
    io::{self, Read, Write},
    net::Ipv4Addr,
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
        unix::fs::OpenOptionsExt,
    },
    str::FromStr,
};

/// The clone device of the TUN/TAP driver.
const TUN_PATH: &str = "/dev/net/tun";

/// An IPv4 address with its prefix length, `A.B.C.D/NN`: the host side of a TAP interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostIp {
    /// The address.
    pub addr: Ipv4Addr,
    /// The prefix length (0 to 32).
    pub prefix: u8,
}

impl HostIp {
    /// The network mask of the prefix.
    pub fn netmask(&self) -> Ipv4Addr {
        let bits = u32::MAX
            .checked_shl(32 - u32::from(self.prefix.min(32)))
            .unwrap_or(0);
        Ipv4Addr::from(bits)
    }
}

impl FromStr for HostIp {
    type Err = NetOptionError;

    fn from_str(s: &str) -> Result<Self, NetOptionError> {
        let (addr, prefix) = s
            .split_once('/')
            .ok_or_else(|| NetOptionError::HostIp(s.into()))?;
        let addr = addr.parse().map_err(|_| NetOptionError::Ipv4(s.into()))?;
        let prefix = prefix
            .parse()
            .ok()
            .filter(|p| *p <= 32)
            .ok_or_else(|| NetOptionError::Prefix(s.into()))?;
        Ok(Self { addr, prefix })
    }
}

impl fmt::Display for HostIp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// An open TAP interface, removed when dropped.
pub struct Tap {
    file: File,
    name: String,
}

/// An `ifreq` for interface `name` (checked to fit, NUL-terminated).
fn ifreq(name: &str) -> io::Result<libc::ifreq> {
    // SAFETY: `ifreq` is plain data (bytes, integers, a pointer in a union) for which all zero
    // bytes is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    if name.len() >= ifr.ifr_name.len() || name.bytes().any(|b| b == 0 || b == b'/') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "bad interface name {name:?} (at most {} bytes)",
                ifr.ifr_name.len() - 1
            ),
        ));
    }
    for (dst, src) in ifr.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as c_char;
    }
    Ok(ifr)
}

/// The error of a failed ioctl `what` on `name`, explaining EPERM.
fn ioctl_error(what: &str, name: &str) -> io::Error {
    let err = io::Error::last_os_error();
    let hint = if err.raw_os_error() == Some(libc::EPERM) {
        " (needs CAP_NET_ADMIN: run as root or grant the capability)"
    } else {
        ""
    };
    io::Error::new(err.kind(), format!("{what} on {name}: {err}{hint}"))
}

/// A `sockaddr` holding the IPv4 address `addr` (port 0).
fn sockaddr_in(addr: Ipv4Addr) -> libc::sockaddr {
    let mut sa = libc::sockaddr {
        sa_family: libc::AF_INET as libc::sa_family_t,
        sa_data: [0; 14],
    };
    // sockaddr_in: sin_port (2 bytes), then sin_addr in network order.
    for (dst, src) in sa.sa_data[2..6].iter_mut().zip(addr.octets()) {
        *dst = src as c_char;
    }
    sa
}

/// Gives interface `name` the address `ip` and sets it up.
fn configure(name: &str, ip: HostIp) -> io::Result<()> {
    // SAFETY: socket() takes no pointers; the result is checked before use.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor that nothing else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    let set = |request, what: &str, ifr: &mut libc::ifreq| {
        // SAFETY: the interface requests used here read and write one `ifreq`, which `ifr`
        // points to for the duration of the call.
        let rc = unsafe { libc::ioctl(sock.as_raw_fd(), request, ifr as *mut libc::ifreq) };
        if rc < 0 {
            Err(ioctl_error(what, name))
        } else {
            Ok(())
        }
    };
    let mut ifr = ifreq(name)?;
    ifr.ifr_ifru.ifru_addr = sockaddr_in(ip.addr);
    set(libc::SIOCSIFADDR as _, "SIOCSIFADDR", &mut ifr)?;
    let mut ifr = ifreq(name)?;
    ifr.ifr_ifru.ifru_netmask = sockaddr_in(ip.netmask());
    set(libc::SIOCSIFNETMASK as _, "SIOCSIFNETMASK", &mut ifr)?;
    let mut ifr = ifreq(name)?;
    set(libc::SIOCGIFFLAGS as _, "SIOCGIFFLAGS", &mut ifr)?;
    // SAFETY: SIOCGIFFLAGS filled in the flags member of the union.
    let flags = unsafe { ifr.ifr_ifru.ifru_flags };
    ifr.ifr_ifru.ifru_flags = flags | libc::IFF_UP as libc::c_short;
    set(libc::SIOCSIFFLAGS as _, "SIOCSIFFLAGS", &mut ifr)
}

impl Tap {
    /// Creates (or attaches to) the TAP interface `name` (empty: the kernel picks `tapN`),
    /// non-blocking; with `host_ip`, gives the interface that address and sets it up.
    pub fn open(name: &str, host_ip: Option<HostIp>) -> io::Result<Self> {
        let mut ifr = ifreq(name)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(TUN_PATH)
            .map_err(|e| io::Error::new(e.kind(), format!("{TUN_PATH}: {e}")))?;
        ifr.ifr_ifru.ifru_flags = (libc::IFF_TAP | libc::IFF_NO_PI) as libc::c_short;
        // SAFETY: TUNSETIFF reads and writes one `ifreq`, which `ifr` is, for the duration of
        // the call.
        let rc = unsafe {
            libc::ioctl(
                file.as_raw_fd(),
                libc::TUNSETIFF as _,
                &mut ifr as *mut libc::ifreq,
            )
        };
        let shown = if name.is_empty() { "tap" } else { name };
        if rc < 0 {
            return Err(ioctl_error("TUNSETIFF", shown));
        }
        // The kernel wrote back the name it used (NUL-terminated).
        let name: String = ifr
            .ifr_name
            .iter()
            .take_while(|&&c| c != 0)
            .map(|&c| char::from(c as u8))
            .collect();
        if let Some(ip) = host_ip {
            configure(&name, ip)?;
        }
        Ok(Self { file, name })
    }

    /// The interface name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl PacketIo for Tap {
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        loop {
            return match self.file.read(buf) {
                Ok(len) => Ok(Some(len)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => Err(e),
            };
        }
    }

    fn send(&mut self, frame: &[u8]) -> io::Result<()> {
        let sent = self.file.write(frame)?;
        if sent == frame.len() {
            Ok(())
        } else {
            Err(io::ErrorKind::WriteZero.into())
        }
    }

    fn fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}
