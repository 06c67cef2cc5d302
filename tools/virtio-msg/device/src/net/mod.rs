// SPDX-License-Identifier: GPL-2.0 OR MIT

//! The virtio network device: Ethernet frames between the driver's virtqueues and a host
//! packet endpoint (a Linux TAP interface, or a datagram socket used as a userspace cable).
//!
//! The device offers no offloads (no checksum, segmentation, mergeable buffers, control or
//! multiple queues), so every frame travels whole, behind the 12-byte `virtio_net_hdr` of
//! VERSION_1: the device writes a zeroed header (num_buffers = 1) before each received frame
//! and strips the header of each transmitted one without looking at it.
//!
//! Receiving is driven by the host: [`Backend::host_fd`] is the endpoint's descriptor and
//! [`Backend::host_ready`] moves frames into receive buffers. A frame read while the driver
//! has no receive buffer is kept (one frame, in the receive buffer of the device) and the
//! descriptor is withdrawn until the driver notifies the receive queue, so the worker never
//! spins on a readable descriptor and frames keep their order. The descriptor is also withheld
//! until the driver first notifies the receive queue after a reset: before that, frames wait
//! in the host endpoint.
//!
//! Descriptor chains are walked by `virtio-queue` over guest memory seen through `vm-memory`;
//! every length the driver wrote is bounded before it sizes anything.

mod io;
mod options;
mod tap;

pub use io::{PacketIo, SocketIo};
pub use options::{default_mac, parse_mac, Endpoint, NetOptions};
pub use tap::{HostIp, Tap};

use crate::{
    transport::{walk_queue, QueueState},
    Backend,
};
use std::os::fd::RawFd;
use virtio_queue::{DescriptorChain, Queue, QueueOwnedT, QueueT};
use vm_memory::{Bytes, GuestAddressSpace, GuestMemory};

/// virtio device id of a network device.
const VIRTIO_ID_NET: u32 = 1;
/// VIRTIO_NET_F_MAC: the configuration space holds the MAC address.
pub const F_MAC: u64 = 1 << 5;
/// VIRTIO_NET_F_STATUS: the configuration space holds the link status.
pub const F_STATUS: u64 = 1 << 16;
/// VIRTIO_F_VERSION_1.
const VERSION_1: u64 = 1 << 32;
/// VIRTIO_NET_S_LINK_UP.
pub const LINK_UP: u16 = 1;
/// Size of `virtio_net_hdr` (VERSION_1 layout, num_buffers included).
pub const HDR_LEN: usize = 12;
/// Configuration space: mac[6], status le16.
const CONFIG_SIZE: usize = 8;
/// Shortest Ethernet frame passed on (destination, source, type).
pub const MIN_FRAME: usize = 14;
/// Longest frame passed on, in either direction.
pub const MAX_FRAME: usize = 64 * 1024;
/// Frames moved from the host per [`Backend::host_ready`] call, so a flood cannot hold the
/// worker (the descriptor stays readable and the worker comes back).
const RX_BUDGET: usize = 256;
/// Queue indexes.
const RX_QUEUE: u32 = 0;
const TX_QUEUE: u32 = 1;

/// Counters of the traffic the device moved and dropped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetStats {
    /// Frames delivered to the driver.
    pub rx_packets: u64,
    /// Bytes of those frames (headers not counted).
    pub rx_bytes: u64,
    /// Frames from the host that were dropped: too long or too short, no room in the receive
    /// buffer, a receive buffer outside guest memory, or pending when the device was reset.
    pub rx_dropped: u64,
    /// Errors reading the host endpoint; after one the device stops reading it.
    pub rx_errors: u64,
    /// Frames sent to the host.
    pub tx_packets: u64,
    /// Bytes of those frames (headers not counted).
    pub tx_bytes: u64,
    /// Frames from the driver that were dropped: chain shorter than the header plus an Ethernet
    /// header, longer than [`MAX_FRAME`] plus the header, outside guest memory, or refused by
    /// the host endpoint.
    pub tx_dropped: u64,
}

/// What became of a received frame offered to a receive buffer.
enum Delivery {
    /// Written; the used length (header included).
    Written(u32),
    /// The buffer is too small for the frame: the buffer stays available, the frame goes.
    TooSmall,
    /// The buffer is not in guest memory: it is returned empty, the frame goes.
    Fault,
}

/// A virtio network device over the driver's memory `M` (an address space, because the memory
/// map can change while the device runs) and a host packet endpoint.
pub struct Net<M> {
    mem: M,
    io: Box<dyn PacketIo + Send>,
    mac: [u8; 6],
    /// The queues as last configured, and the `virtio-queue` state walking them.
    rx: Option<(QueueState, Queue)>,
    tx: Option<(QueueState, Queue)>,
    /// Receive buffer of the device: the header to write, then the frame (the pending frame, if
    /// any).
    rx_buf: Vec<u8>,
    /// Length of a frame in `rx_buf` that waits for a receive buffer.
    pending: Option<usize>,
    /// Whether the driver notified the receive queue since the last reset.
    rx_armed: bool,
    /// Reading the host endpoint failed; it is not read any more.
    rx_stopped: bool,
    /// Transmit gather buffer.
    tx_buf: Vec<u8>,
    stats: NetStats,
}

impl<M: GuestAddressSpace> Net<M> {
    /// A network device with the driver's memory `mem`, the host endpoint `io`, and the MAC
    /// address `mac` (reported to the driver in the configuration space).
    pub fn new(mem: M, io: Box<dyn PacketIo + Send>, mac: [u8; 6]) -> Self {
        Self {
            mem,
            io,
            mac,
            rx: None,
            tx: None,
            rx_buf: rx_buffer(),
            pending: None,
            rx_armed: false,
            rx_stopped: false,
            tx_buf: vec![0; MAX_FRAME + HDR_LEN],
            stats: NetStats::default(),
        }
    }

    /// Traffic counters.
    pub fn stats(&self) -> NetStats {
        self.stats
    }

    /// The MAC address offered to the driver.
    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    /// Whether a received frame waits for a receive buffer.
    pub fn has_pending(&self) -> bool {
        self.pending.is_some()
    }

    /// Whether reading the host endpoint failed (see [`NetStats::rx_errors`]).
    pub fn rx_stopped(&self) -> bool {
        self.rx_stopped
    }

    /// Moves frames from the host into receive buffers: the pending frame first, then what the
    /// endpoint has, until it is empty, the driver has no buffer left, or the budget is spent.
    /// Returns whether a used ring entry was added.
    fn pump_rx(&mut self, q: &QueueState) -> bool {
        let guard = self.mem.memory();
        let mem: &M::M = &guard;
        let mut used = false;
        for _ in 0..RX_BUDGET {
            let len = match self.pending.take() {
                Some(len) => len,
                None if self.rx_stopped => break,
                None => match self.io.recv(&mut self.rx_buf[HDR_LEN..]) {
                    Ok(Some(len)) if (MIN_FRAME..=MAX_FRAME).contains(&len) => len,
                    Ok(Some(_)) => {
                        self.stats.rx_dropped += 1;
                        continue;
                    }
                    Ok(None) => break,
                    Err(_) => {
                        self.stats.rx_errors += 1;
                        self.rx_stopped = true;
                        break;
                    }
                },
            };
            let Some(vq) = walk_queue(&mut self.rx, mem, q) else {
                self.pending = Some(len);
                break;
            };
            let Some(chain) = vq.pop_descriptor_chain(mem) else {
                self.pending = Some(len);
                break;
            };
            let head = chain.head_index();
            let data = self.rx_buf.get(..HDR_LEN + len).unwrap_or_default();
            match write_frame(mem, chain, data) {
                Delivery::Written(n) => {
                    if vq.add_used(mem, head, n).is_err() {
                        self.stats.rx_dropped += 1;
                        break;
                    }
                    used = true;
                    self.stats.rx_packets += 1;
                    self.stats.rx_bytes += len as u64;
                }
                Delivery::TooSmall => {
                    vq.go_to_previous_position();
                    self.stats.rx_dropped += 1;
                }
                Delivery::Fault => {
                    self.stats.rx_dropped += 1;
                    if vq.add_used(mem, head, 0).is_err() {
                        break;
                    }
                    used = true;
                }
            }
        }
        used
    }

    /// Sends every frame the driver made available in the transmit queue. Returns whether a
    /// used ring entry was added.
    fn pump_tx(&mut self, q: &QueueState) -> bool {
        let guard = self.mem.memory();
        let mem: &M::M = &guard;
        let Some(vq) = walk_queue(&mut self.tx, mem, q) else {
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
            match gather(mem, chain, &mut self.tx_buf).and_then(|len| self.tx_buf.get(..len)) {
                Some(data) if data.len() >= HDR_LEN + MIN_FRAME => {
                    let frame = data.get(HDR_LEN..).unwrap_or_default();
                    match self.io.send(frame) {
                        Ok(()) => {
                            self.stats.tx_packets += 1;
                            self.stats.tx_bytes += frame.len() as u64;
                        }
                        Err(_) => self.stats.tx_dropped += 1,
                    }
                }
                _ => self.stats.tx_dropped += 1,
            }
            if vq.add_used(mem, head, 0).is_err() {
                break;
            }
            used = true;
        }
        used
    }
}

/// The receive buffer of the device: a zeroed `virtio_net_hdr` with num_buffers = 1, then room
/// for one byte more than the longest frame (to tell a frame that filled it).
fn rx_buffer() -> Vec<u8> {
    let mut buf = vec![0; HDR_LEN + MAX_FRAME + 1];
    buf[10..HDR_LEN].copy_from_slice(&1u16.to_le_bytes());
    buf
}

/// A `virtio-queue` queue walking the rings of `q`, if they are in guest memory.
/// Writes `data` (a `virtio_net_hdr` and a frame) into the writable buffers of `chain`.
fn write_frame<G, T>(mem: &G, chain: DescriptorChain<T>, data: &[u8]) -> Delivery
where
    G: GuestMemory,
    T: std::ops::Deref + Clone,
    T::Target: GuestMemory,
{
    // Check the room first (a chain is at most 64 Ki descriptors long: `virtio-queue` stops
    // it there), so that a buffer too small is given back untouched.
    let mut room = 0usize;
    for desc in chain.clone().writable() {
        room = room.saturating_add(desc.len() as usize);
        if room >= data.len() {
            break;
        }
    }
    if room < data.len() {
        return Delivery::TooSmall;
    }
    let mut rest = data;
    for desc in chain.writable() {
        if rest.is_empty() {
            break;
        }
        let (piece, tail) = rest.split_at((desc.len() as usize).min(rest.len()));
        if mem.write_slice(piece, desc.addr()).is_err() {
            return Delivery::Fault;
        }
        rest = tail;
    }
    // At most HDR_LEN + MAX_FRAME bytes.
    Delivery::Written(u32::try_from(data.len()).unwrap_or(u32::MAX))
}

/// Copies the readable buffers of `chain` into `buf`; `None` if they do not fit or are not in
/// guest memory. Returns the number of bytes copied.
fn gather<G, T>(mem: &G, chain: DescriptorChain<T>, buf: &mut [u8]) -> Option<usize>
where
    G: GuestMemory,
    T: std::ops::Deref,
    T::Target: GuestMemory,
{
    let mut len = 0usize;
    for desc in chain.readable() {
        let n = desc.len() as usize;
        let dst = buf.get_mut(len..len.checked_add(n)?)?;
        mem.read_slice(dst, desc.addr()).ok()?;
        len += n;
    }
    Some(len)
}

impl<M: GuestAddressSpace> Backend for Net<M> {
    fn wants_used_event(&self, queue: &QueueState) -> bool {
        crate::driver_wants_interrupt(&*self.mem.memory(), queue)
    }

    fn device_id(&self) -> u32 {
        VIRTIO_ID_NET
    }

    fn features(&self) -> u64 {
        VERSION_1 | F_MAC | F_STATUS
    }

    fn config_size(&self) -> u32 {
        CONFIG_SIZE as u32
    }

    fn read_config(&self, offset: u32, out: &mut [u8]) {
        let mut config = [0u8; CONFIG_SIZE];
        config[..6].copy_from_slice(&self.mac);
        config[6..].copy_from_slice(&LINK_UP.to_le_bytes());
        let start = offset as usize;
        if let Some(src) = start
            .checked_add(out.len())
            .and_then(|end| config.get(start..end))
        {
            out.copy_from_slice(src);
        }
    }

    /// The configuration is read-only without VIRTIO_NET_F_CTRL_MAC_ADDR: writes are ignored.
    fn write_config(&mut self, _offset: u32, _data: &[u8]) {}

    fn num_queues(&self) -> u32 {
        2
    }

    fn queue_notified(&mut self, index: u32, q: &QueueState) -> bool {
        match index {
            RX_QUEUE => {
                self.rx_armed = true;
                self.pump_rx(q)
            }
            TX_QUEUE => self.pump_tx(q),
            _ => false,
        }
    }

    fn reset(&mut self) {
        if self.pending.take().is_some() {
            self.stats.rx_dropped += 1;
        }
        self.rx = None;
        self.tx = None;
        self.rx_armed = false;
    }

    fn host_fd(&self) -> Option<RawFd> {
        (self.rx_armed && self.pending.is_none() && !self.rx_stopped).then(|| self.io.fd())
    }

    fn host_ready(&mut self, queues: &[QueueState]) -> Vec<u32> {
        match queues.get(RX_QUEUE as usize) {
            Some(q) if self.rx_armed && self.pump_rx(q) => vec![RX_QUEUE],
            _ => Vec::new(),
        }
    }
}
