// SPDX-License-Identifier: GPL-2.0 OR MIT

//! The virtio network device: Ethernet frames between the driver's virtqueues and a host
//! packet endpoint (a Linux TAP interface, or a datagram socket used as a userspace cable).
//!
//! The device offers what QEMU's `virtio-net-device` with user networking offers behind the
//! device model, so that the emulator answers the recorded probe byte for byte and a driver
//! meets the same device, but no offloads (no checksum, no segmentation, no multiple queues):
//! every frame travels whole, behind the 12-byte `virtio_net_hdr` of VERSION_1. The device
//! writes a zeroed header before each received frame (with `num_buffers`: how many receive
//! buffers the frame took, always 1 unless the driver negotiated mergeable receive buffers,
//! VIRTIO_NET_F_MRG_RXBUF, and a frame is larger than one buffer) and strips the header of each
//! transmitted one without looking at it.
//!
//! The control queue (VIRTIO_NET_F_CTRL_VQ) acknowledges the receive-mode, MAC table, VLAN,
//! announce and guest-offload commands the features allow; a MAC address set with
//! VIRTIO_NET_CTRL_MAC_ADDR_SET shows in the configuration space until the device is reset.
//! The device filters nothing: every frame goes to the driver, whose network stack drops what is
//! not for it.
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
pub use options::{default_mac, parse_mac, Endpoint, NetOptionError, NetOptions};
pub use tap::{HostIp, Tap};

use crate::{
    feature,
    transport::{read_config_image, rearm, serve_chains, walk_queue, wants_used_event, QueueState},
    Backend, TRANSPORT_FEATURES,
};
use std::io::{Read, Write};
use std::os::fd::RawFd;
use virtio_bindings::{
    virtio_ids::VIRTIO_ID_NET,
    virtio_net::{
        VIRTIO_NET_F_CTRL_GUEST_OFFLOADS, VIRTIO_NET_F_CTRL_MAC_ADDR, VIRTIO_NET_F_CTRL_RX,
        VIRTIO_NET_F_CTRL_RX_EXTRA, VIRTIO_NET_F_CTRL_VLAN, VIRTIO_NET_F_CTRL_VQ,
        VIRTIO_NET_F_GUEST_ANNOUNCE, VIRTIO_NET_F_MAC, VIRTIO_NET_F_MRG_RXBUF, VIRTIO_NET_F_STATUS,
        VIRTIO_NET_S_LINK_UP,
    },
};
use virtio_queue::{DescriptorChain, Queue, QueueOwnedT, QueueT, Reader, Writer};
use vm_memory::{Bytes, GuestAddressSpace, GuestMemory};

/// The driver can switch guest offloads (there are none).
pub const F_CTRL_GUEST_OFFLOADS: u64 = feature(VIRTIO_NET_F_CTRL_GUEST_OFFLOADS);
/// The configuration space holds the MAC address.
pub const F_MAC: u64 = feature(VIRTIO_NET_F_MAC);
/// A received frame may span several receive buffers.
pub const F_MRG_RXBUF: u64 = feature(VIRTIO_NET_F_MRG_RXBUF);
/// The configuration space holds the link status.
pub const F_STATUS: u64 = feature(VIRTIO_NET_F_STATUS);
/// The control queue.
pub const F_CTRL_VQ: u64 = feature(VIRTIO_NET_F_CTRL_VQ);
/// Receive-mode commands.
pub const F_CTRL_RX: u64 = feature(VIRTIO_NET_F_CTRL_RX);
/// VLAN filter commands.
pub const F_CTRL_VLAN: u64 = feature(VIRTIO_NET_F_CTRL_VLAN);
/// More receive-mode commands.
pub const F_CTRL_RX_EXTRA: u64 = feature(VIRTIO_NET_F_CTRL_RX_EXTRA);
/// The driver can be asked to announce itself (never done).
pub const F_GUEST_ANNOUNCE: u64 = feature(VIRTIO_NET_F_GUEST_ANNOUNCE);
/// The driver can set the MAC address.
pub const F_CTRL_MAC_ADDR: u64 = feature(VIRTIO_NET_F_CTRL_MAC_ADDR);
/// What the device offers.
pub const FEATURES: u64 = TRANSPORT_FEATURES
    | F_CTRL_GUEST_OFFLOADS
    | F_MAC
    | F_MRG_RXBUF
    | F_STATUS
    | F_CTRL_VQ
    | F_CTRL_RX
    | F_CTRL_VLAN
    | F_CTRL_RX_EXTRA
    | F_GUEST_ANNOUNCE
    | F_CTRL_MAC_ADDR;
/// VIRTIO_NET_S_LINK_UP.
pub const LINK_UP: u16 = VIRTIO_NET_S_LINK_UP as u16;
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
const CTRL_QUEUE: u32 = 2;
/// Offset of `num_buffers` in `virtio_net_hdr`.
const NUM_BUFFERS: usize = 10;

/// Control commands: (class, command) and the length of their data (`None`: any).
const CTRL_RX: u8 = 0;
const CTRL_MAC: u8 = 1;
const CTRL_VLAN: u8 = 2;
const CTRL_ANNOUNCE: u8 = 3;
const CTRL_GUEST_OFFLOADS: u8 = 5;
/// VIRTIO_NET_CTRL_MAC_ADDR_SET.
const CTRL_MAC_ADDR_SET: u8 = 1;
/// Acknowledgements.
const CTRL_OK: u8 = 0;
const CTRL_ERR: u8 = 1;
/// Longest control command read (two MAC tables of a few dozen entries fit easily).
const CTRL_MAX: usize = 4096;

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

/// What became of a received frame offered to the receive buffers.
enum Delivery {
    /// Written.
    Written,
    /// The buffer is too small for the frame: the buffer stays available, the frame goes.
    TooSmall,
    /// A buffer is not in guest memory: it is returned empty, the frame goes.
    Fault,
}

/// A virtio network device over the driver's memory `M` (an address space, because the memory
/// map can change while the device runs) and a host packet endpoint.
pub struct Net<M> {
    mem: M,
    io: Box<dyn PacketIo + Send>,
    /// The MAC address given at creation, and the one in use (the driver may set it).
    own_mac: [u8; 6],
    mac: [u8; 6],
    /// The driver negotiated mergeable receive buffers.
    mergeable: bool,
    /// The queues as last configured, and the `virtio-queue` state walking them.
    rx: Option<(QueueState, Queue)>,
    tx: Option<(QueueState, Queue)>,
    ctrl: Option<(QueueState, Queue)>,
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
            own_mac: mac,
            mac,
            mergeable: false,
            rx: None,
            tx: None,
            ctrl: None,
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

    /// The MAC address in the configuration space.
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
    /// Returns whether to send an EVENT_USED for the receive queue.
    fn pump_rx(&mut self, q: &QueueState) -> bool {
        let guard = self.mem.memory();
        let mem: &M::M = &guard;
        let mut used = false;
        let mut retried = false;
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
            let data = self.rx_buf.get_mut(..HDR_LEN + len).unwrap_or_default();
            let delivery = if self.mergeable {
                write_merged(mem, vq, data)
            } else {
                write_single(mem, vq, data)
            };
            match delivery {
                Some(Delivery::Written) => {
                    used = true;
                    self.stats.rx_packets += 1;
                    self.stats.rx_bytes += len as u64;
                }
                Some(Delivery::TooSmall) => self.stats.rx_dropped += 1,
                Some(Delivery::Fault) => {
                    used = true;
                    self.stats.rx_dropped += 1;
                }
                None => {
                    // No buffer (or too few): the frame waits, the driver is told to notify
                    // when it adds one, and if it added some meanwhile they are tried once.
                    self.pending = Some(len);
                    if !retried && rearm(vq, mem) {
                        retried = true;
                        continue;
                    }
                    break;
                }
            }
        }
        match walk_queue(&mut self.rx, mem, q) {
            Some(vq) => {
                rearm(vq, mem);
                used && wants_used_event(vq, mem, q)
            }
            None => false,
        }
    }

    /// Sends every frame the driver made available in the transmit queue. Returns whether to
    /// send an EVENT_USED for it.
    fn pump_tx(&mut self, q: &QueueState) -> bool {
        let Self {
            mem,
            io,
            tx,
            tx_buf,
            stats,
            ..
        } = self;
        let guard = mem.memory();
        let mem: &M::M = &guard;
        let Some(vq) = walk_queue(tx, mem, q) else {
            return false;
        };
        let used = serve_chains(vq, mem, |chain| {
            match gather(mem, chain, tx_buf).and_then(|len| tx_buf.get(..len)) {
                Some(data) if data.len() >= HDR_LEN + MIN_FRAME => {
                    let frame = data.get(HDR_LEN..).unwrap_or_default();
                    match io.send(frame) {
                        Ok(()) => {
                            stats.tx_packets += 1;
                            stats.tx_bytes += frame.len() as u64;
                        }
                        Err(_) => stats.tx_dropped += 1,
                    }
                }
                _ => stats.tx_dropped += 1,
            }
            0
        });
        used && wants_used_event(vq, mem, q)
    }

    /// Answers every command in the control queue. Returns whether to send an EVENT_USED for
    /// it.
    fn pump_ctrl(&mut self, q: &QueueState) -> bool {
        let guard = self.mem.memory();
        let mem: &M::M = &guard;
        walk_queue(&mut self.ctrl, mem, q);
        // Out of `self` while commands are served: a command can change the device.
        let Some((state, mut vq)) = self.ctrl.take() else {
            return false;
        };
        let used = serve_chains(&mut vq, mem, |chain| {
            let (Ok(mut command), Ok(mut ack)) =
                (Reader::new(mem, chain.clone()), Writer::new(mem, chain))
            else {
                return 0;
            };
            let mut bytes = vec![0u8; command.available_bytes().min(CTRL_MAX)];
            let status = match command.read_exact(&mut bytes) {
                Ok(()) => self.control(&bytes),
                Err(_) => CTRL_ERR,
            };
            u32::from(ack.write_all(&[status]).is_ok())
        });
        let notify = used && wants_used_event(&mut vq, mem, q);
        self.ctrl = Some((state, vq));
        notify
    }

    /// One control command (class, command, data); its acknowledgement.
    fn control(&mut self, bytes: &[u8]) -> u8 {
        let [class, command, data @ ..] = bytes else {
            return CTRL_ERR;
        };
        let known = match (*class, *command) {
            // Promiscuous, all-multicast (one byte: on or off); with CTRL_RX_EXTRA also
            // all-unicast, no-multicast, no-unicast, no-broadcast.
            (CTRL_RX, 0..=5) => data.len() == 1,
            // The unicast and multicast tables: a count and that many addresses each.
            (CTRL_MAC, 0) => mac_tables_fit(data),
            (CTRL_MAC, CTRL_MAC_ADDR_SET) => match <[u8; 6]>::try_from(data) {
                Ok(mac) => {
                    self.mac = mac;
                    true
                }
                Err(_) => false,
            },
            // Add or remove a VLAN id.
            (CTRL_VLAN, 0 | 1) => data.len() == 2,
            // The driver announced itself.
            (CTRL_ANNOUNCE, 0) => data.is_empty(),
            // Guest offloads: none are offered, so only "none" can be set.
            (CTRL_GUEST_OFFLOADS, 0) => data == [0; 8],
            _ => false,
        };
        if known {
            CTRL_OK
        } else {
            CTRL_ERR
        }
    }
}

/// Whether `data` is two MAC tables (le32 count, then count addresses of 6 bytes) and nothing
/// else.
fn mac_tables_fit(data: &[u8]) -> bool {
    let mut rest = data;
    for _ in 0..2 {
        let Some((count, tail)) = rest.split_first_chunk::<4>() else {
            return false;
        };
        let bytes = (u32::from_le_bytes(*count) as usize).checked_mul(6);
        match bytes.and_then(|n| tail.get(n..)) {
            Some(after) => rest = after,
            None => return false,
        }
    }
    rest.is_empty()
}

/// The receive buffer of the device: a zeroed `virtio_net_hdr`, then room for one byte more
/// than the longest frame (to tell a frame that filled it).
fn rx_buffer() -> Vec<u8> {
    vec![0; HDR_LEN + MAX_FRAME + 1]
}

/// Bytes the writable buffers of `chain` hold, counted up to `enough`.
fn room<T>(chain: &DescriptorChain<T>, enough: usize) -> usize
where
    T: std::ops::Deref + Clone,
    T::Target: GuestMemory,
{
    let mut room = 0usize;
    for desc in chain.clone().writable() {
        room = room.saturating_add(desc.len() as usize);
        if room >= enough {
            break;
        }
    }
    room
}

/// Writes `data` into the writable buffers of `chain`, in order; whether it all went in
/// guest memory.
fn write_chain<G, T>(mem: &G, chain: DescriptorChain<T>, data: &[u8]) -> bool
where
    G: GuestMemory,
    T: std::ops::Deref + Clone,
    T::Target: GuestMemory,
{
    let mut rest = data;
    for desc in chain.writable() {
        if rest.is_empty() {
            break;
        }
        let (piece, tail) = rest.split_at((desc.len() as usize).min(rest.len()));
        if mem.write_slice(piece, desc.addr()).is_err() {
            return false;
        }
        rest = tail;
    }
    true
}

/// Writes `data` (a `virtio_net_hdr` and a frame) into the next receive buffer of `vq`, which
/// must hold it all; `None` if the driver has no buffer.
fn write_single<G: GuestMemory>(mem: &G, vq: &mut Queue, data: &mut [u8]) -> Option<Delivery> {
    let chain = vq.pop_descriptor_chain(mem)?;
    let head = chain.head_index();
    // Check the room first (a chain is at most 64 Ki descriptors long: `virtio-queue` stops
    // it there), so that a buffer too small is given back untouched.
    if room(&chain, data.len()) < data.len() {
        vq.go_to_previous_position();
        return Some(Delivery::TooSmall);
    }
    data[NUM_BUFFERS..HDR_LEN].copy_from_slice(&1u16.to_le_bytes());
    // At most HDR_LEN + MAX_FRAME bytes.
    let len = u32::try_from(data.len()).unwrap_or(u32::MAX);
    let (delivery, used) = if write_chain(mem, chain, data) {
        (Delivery::Written, len)
    } else {
        (Delivery::Fault, 0)
    };
    vq.add_used(mem, head, used).ok()?;
    Some(delivery)
}

/// Mergeable receive buffers: writes `data` (a `virtio_net_hdr` and a frame) across as many
/// receive buffers of `vq` as it needs, the header saying how many; `None` (and no buffer
/// taken) if the driver has too few.
fn write_merged<G: GuestMemory>(mem: &G, vq: &mut Queue, data: &mut [u8]) -> Option<Delivery> {
    let mut chains = Vec::new();
    let mut total = 0usize;
    while total < data.len() {
        let Some(chain) = vq.pop_descriptor_chain(mem) else {
            chains.iter().for_each(|_| vq.go_to_previous_position());
            return None;
        };
        let n = room(&chain, data.len() - total);
        if n == 0 {
            // A buffer that holds nothing is given back used and empty.
            vq.add_used(mem, chain.head_index(), 0).ok()?;
            continue;
        }
        total += n;
        chains.push((chain, n));
    }
    let count = u16::try_from(chains.len()).unwrap_or(u16::MAX);
    data[NUM_BUFFERS..HDR_LEN].copy_from_slice(&count.to_le_bytes());
    let mut delivery = Delivery::Written;
    let mut rest: &[u8] = data;
    for (chain, n) in chains {
        let head = chain.head_index();
        let (piece, tail) = rest.split_at(n.min(rest.len()));
        rest = tail;
        let len = if write_chain(mem, chain, piece) {
            piece.len()
        } else {
            delivery = Delivery::Fault;
            0
        };
        vq.add_used(mem, head, u32::try_from(len).unwrap_or(u32::MAX))
            .ok()?;
    }
    Some(delivery)
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
    fn device_id(&self) -> u32 {
        VIRTIO_ID_NET
    }

    fn features(&self) -> u64 {
        FEATURES
    }

    fn set_driver_features(&mut self, features: u64) {
        self.mergeable = features & F_MRG_RXBUF != 0;
    }

    fn config_size(&self) -> u32 {
        CONFIG_SIZE as u32
    }

    fn read_config(&self, offset: u32, out: &mut [u8]) {
        let mut config = [0u8; CONFIG_SIZE];
        config[..6].copy_from_slice(&self.mac);
        config[6..].copy_from_slice(&LINK_UP.to_le_bytes());
        read_config_image(&config, offset, out);
    }

    /// The configuration is read-only for a VERSION_1 driver (the MAC address changes through
    /// the control queue): writes are ignored.
    fn write_config(&mut self, _offset: u32, _data: &[u8]) {}

    fn num_queues(&self) -> u32 {
        3
    }

    fn queue_notified(&mut self, index: u32, queues: &[QueueState]) -> Vec<u32> {
        let Some(q) = queues.get(index as usize) else {
            return Vec::new();
        };
        let notify = match index {
            RX_QUEUE => {
                self.rx_armed = true;
                self.pump_rx(q)
            }
            TX_QUEUE => self.pump_tx(q),
            CTRL_QUEUE => self.pump_ctrl(q),
            _ => false,
        };
        if notify {
            vec![index]
        } else {
            Vec::new()
        }
    }

    fn reset(&mut self) {
        if self.pending.take().is_some() {
            self.stats.rx_dropped += 1;
        }
        self.rx = None;
        self.tx = None;
        self.ctrl = None;
        self.rx_armed = false;
        self.mergeable = false;
        self.mac = self.own_mac;
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
