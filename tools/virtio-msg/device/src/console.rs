// SPDX-License-Identifier: GPL-2.0 OR MIT

//! The virtio console device: one port, connected to the host through a unix stream socket or a
//! pseudo-terminal.
//!
//! The device offers what QEMU's `virtio-serial-device` offers behind the device model, with
//! the same configuration space (no size, 31 ports at most, emergency write), so that the
//! emulator answers the recorded probe byte for byte and a driver meets the same device. With
//! VIRTIO_CONSOLE_F_MULTIPORT (which drivers take) the device has 64 queues, but only port 0
//! exists: when the driver says it is ready on the control queue, the device adds port 0, and
//! when the driver has set the port up, the device makes it the console and opens it; other
//! control messages are taken and ignored. A character written to `emerg_wr`
//! (VIRTIO_CONSOLE_F_EMERG_WRITE) goes to the host like output.
//!
//! The device thread must never wait for a person: host input is read only when the host side
//! is readable ([`Backend::host_fd`]), output is written without blocking (a client that does
//! not take it within [`WRITE_STALL`] loses it, counted in [`ConsoleStats::output_dropped`],
//! and later output to the same congested client is dropped at once until a write goes through
//! again), and while input is waiting for receive buffers the device reports no host fd at all,
//! so the worker sleeps until the driver adds buffers instead of polling a readable fd it cannot
//! serve. Input read but not yet delivered is bounded by [`INPUT_MAX`]; beyond that the device
//! stops reading and the kernel's socket or pty buffer holds it (and, once full, makes the
//! writer wait): host input is not dropped, except on a device reset.
//!
//! Socket: the device listens on a path, serves one client at a time (later clients wait in
//! the listen backlog until the current one leaves) and drops output while no client is
//! connected. Pty: the device keeps the terminal's slave side open itself (in raw mode), so the
//! master never reports a hang-up when nobody is attached and output written while nobody reads
//! stays in the terminal's buffer until it is full.
//!
//! Descriptor chains are walked by the rust-vmm `virtio-queue` crate; a chain outside guest
//! memory is consumed with nothing written, and a transmit chain longer than [`TX_MAX`] bytes is
//! cut there (the rest counted as dropped).

use crate::{
    transport::{read_config_image, rearm, serve_chains, walk_queue, wants_used_event, QueueState},
    Backend, TRANSPORT_FEATURES,
};
use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use virtio_bindings::virtio_ids::VIRTIO_ID_CONSOLE;
use virtio_queue::{Queue, QueueT, Reader, Writer};
use vm_memory::GuestAddressSpace;

/// VIRTIO_CONSOLE_F_MULTIPORT (virtio-bindings has no console module: the console's constants
/// are written here): ports, set up through the control queues.
pub const F_MULTIPORT: u64 = 1 << 1;
/// VIRTIO_CONSOLE_F_EMERG_WRITE: `emerg_wr` in the configuration.
pub const F_EMERG_WRITE: u64 = 1 << 2;
/// Ports the configuration allows (`max_nr_ports`), as QEMU's device reports; each has a
/// receive and a transmit queue, and the control queues come after port 0's.
pub const MAX_PORTS: u32 = 31;
/// port 0's receiveq: device -> driver (host input).
const RX: u32 = 0;
/// port 0's transmitq: driver -> device (output).
const TX: u32 = 1;
/// control receiveq: device -> driver (control messages).
const CTRL_RX: u32 = 2;
/// control transmitq: driver -> device.
const CTRL_TX: u32 = 3;
/// Configuration: cols le16, rows le16, max_nr_ports le32, emerg_wr le32.
const CONFIG_MAX_PORTS: usize = 4;
const CONFIG_EMERG_WR: u32 = 8;
const CONFIG_SIZE: usize = 12;
/// A control message: port id le32, event le16, value le16.
const CONTROL_LEN: usize = 8;
/// Control events.
const DEVICE_READY: u16 = 0;
const DEVICE_ADD: u16 = 1;
const PORT_READY: u16 = 3;
const CONSOLE_PORT: u16 = 4;
const PORT_OPEN: u16 = 6;
/// Control messages waiting for control receive buffers, at most (a handful are ever sent).
const CONTROL_BACKLOG: usize = 16;
/// Host input read but not yet delivered to the driver, at most.
pub const INPUT_MAX: usize = 64 << 10;
/// Output bytes taken from one transmit chain, at most.
pub const TX_MAX: usize = 64 << 10;
/// How long output may wait for a slow client before it is dropped.
pub const WRITE_STALL: Duration = Duration::from_millis(50);

/// Where the host end of the console is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConsoleHost {
    /// Listen on a unix stream socket at this path (a stale socket there is replaced) and
    /// serve one client at a time.
    Socket(PathBuf),
    /// A new pseudo-terminal; its path is printed on stderr and given by
    /// [`Console::host_path`].
    Pty,
}

/// Counters of what the console passed on, and could not.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConsoleStats {
    /// Transmit chains taken from the driver.
    pub output_chains: u64,
    /// Output bytes dropped: no client, a client too slow or gone, or a chain over [`TX_MAX`].
    pub output_dropped: u64,
    /// Input bytes dropped because the device was reset before delivering them.
    pub input_dropped: u64,
}

/// The host end.
enum Host {
    Socket {
        listener: UnixListener,
        path: PathBuf,
        client: Option<UnixStream>,
    },
    Pty {
        master: File,
        /// Held open so that the master never sees a hang-up.
        _slave: File,
        path: PathBuf,
    },
}

/// A virtio console over the driver's memory `M` (an address space, because the memory map can
/// change while the device runs).
pub struct Console<M> {
    mem: M,
    host: Host,
    /// Host input not delivered yet (at most [`INPUT_MAX`] bytes).
    pending: VecDeque<u8>,
    /// The receive queue ran out of buffers with input pending: wait for a notification.
    starved: bool,
    /// The client did not take output within [`WRITE_STALL`]: drop at once until it does.
    congested: bool,
    stats: ConsoleStats,
    /// A notification of the transmit queue found it unusable (said once).
    told_tx_unusable: bool,
    /// The driver's queues as last configured, and the `virtio-queue` state walking them.
    rx: Option<(QueueState, Queue)>,
    tx: Option<(QueueState, Queue)>,
    ctrl_rx: Option<(QueueState, Queue)>,
    ctrl_tx: Option<(QueueState, Queue)>,
    /// The driver negotiated VIRTIO_CONSOLE_F_MULTIPORT.
    multiport: bool,
    /// Control messages for the driver, waiting for control receive buffers.
    control_out: VecDeque<[u8; CONTROL_LEN]>,
}

impl<M: GuestAddressSpace> Console<M> {
    /// A console with the driver's memory `mem` and its host end at `host` (the socket is bound
    /// or the pseudo-terminal opened here).
    pub fn new(mem: M, host: ConsoleHost) -> io::Result<Self> {
        let host = match host {
            ConsoleHost::Socket(path) => {
                remove_stale_socket(&path)?;
                let listener = UnixListener::bind(&path)?;
                listener.set_nonblocking(true)?;
                Host::Socket {
                    listener,
                    path,
                    client: None,
                }
            }
            ConsoleHost::Pty => {
                let (master, slave, path) = open_pty()?;
                eprintln!("virtio-msg console: pty {}", path.display());
                Host::Pty {
                    master,
                    _slave: slave,
                    path,
                }
            }
        };
        Ok(Self {
            mem,
            host,
            pending: VecDeque::new(),
            starved: false,
            congested: false,
            stats: ConsoleStats::default(),
            told_tx_unusable: false,
            rx: None,
            tx: None,
            ctrl_rx: None,
            ctrl_tx: None,
            multiport: false,
            control_out: VecDeque::new(),
        })
    }

    /// The socket path or the pseudo-terminal's path.
    pub fn host_path(&self) -> &Path {
        match &self.host {
            Host::Socket { path, .. } | Host::Pty { path, .. } => path,
        }
    }

    /// Whether a socket client is connected (always true for a pseudo-terminal).
    pub fn is_connected(&self) -> bool {
        match &self.host {
            Host::Socket { client, .. } => client.is_some(),
            Host::Pty { .. } => true,
        }
    }

    /// What could not be passed on so far.
    pub fn stats(&self) -> ConsoleStats {
        self.stats
    }

    /// Host input waiting for receive buffers, in bytes.
    pub fn pending_input(&self) -> usize {
        self.pending.len()
    }

    /// Takes a waiting client, if there is none yet.
    fn accept(&mut self) {
        if let Host::Socket {
            listener,
            client: client @ None,
            ..
        } = &mut self.host
        {
            if let Ok((stream, _)) = listener.accept() {
                if stream.set_nonblocking(true).is_ok() {
                    log::info!("console: host client connected");
                    *client = Some(stream);
                    self.congested = false;
                }
            }
        }
    }

    fn disconnect(&mut self) {
        if let Host::Socket { client, .. } = &mut self.host {
            if client.take().is_some() {
                log::info!(
                    "console: host client gone ({} bytes of output dropped so far)",
                    self.stats.output_dropped
                );
            }
        }
        self.congested = false;
    }

    /// Reads what the host end has, up to [`INPUT_MAX`] pending bytes.
    fn read_input(&mut self) {
        let mut buf = [0u8; 4096];
        loop {
            let room = INPUT_MAX.saturating_sub(self.pending.len()).min(buf.len());
            if room == 0 {
                return;
            }
            let result = match &mut self.host {
                Host::Socket {
                    client: Some(c), ..
                } => c.read(&mut buf[..room]),
                Host::Socket { client: None, .. } => return,
                Host::Pty { master, .. } => master.read(&mut buf[..room]),
            };
            match result {
                Ok(0) => return self.disconnect(),
                Ok(n) => self.pending.extend(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) => return self.disconnect(),
            }
        }
    }

    /// Moves pending input into port 0's receive buffers; returns whether to send an
    /// EVENT_USED for the queue (`q`).
    fn deliver(&mut self, mem: &M::M, q: &QueueState) -> bool {
        let Some((_, vq)) = self.rx.as_mut() else {
            return false;
        };
        let mut used = false;
        let mut retried = false;
        // At most a ring's worth per call, even if the guest offers buffers that hold nothing.
        for _ in 0..vq.size() {
            if self.pending.is_empty() {
                break;
            }
            let Some(chain) = vq.pop_descriptor_chain(mem) else {
                // The driver is told to notify when it adds a buffer; if it added some
                // meanwhile they are taken at once.
                if !retried && rearm(vq, mem) {
                    retried = true;
                    continue;
                }
                self.starved = true;
                break;
            };
            let head = chain.head_index();
            let mut written = 0;
            if let Ok(mut out) = Writer::new(mem, chain) {
                let len = out.available_bytes().min(self.pending.len());
                let (front, back) = self.pending.as_slices();
                let back_len = len.saturating_sub(front.len());
                let front_len = len - back_len;
                if out.write_all(&front[..front_len]).is_ok()
                    && out.write_all(&back[..back_len]).is_ok()
                {
                    written = len;
                    self.pending.drain(..len);
                }
            }
            // At most INPUT_MAX bytes.
            let written = u32::try_from(written).unwrap_or(u32::MAX);
            if vq.add_used(mem, head, written).is_err() {
                break;
            }
            used = true;
        }
        rearm(vq, mem);
        used && wants_used_event(vq, mem, q)
    }

    /// Moves waiting control messages into control receive buffers; returns whether to send an
    /// EVENT_USED for the queue (`q`, if the driver set it up).
    fn deliver_control(&mut self, mem: &M::M, q: Option<&QueueState>) -> bool {
        let Some(vq) = q.and_then(|q| walk_queue(&mut self.ctrl_rx, mem, q)) else {
            return false;
        };
        let mut used = false;
        let mut retried = false;
        while let Some(&msg) = self.control_out.front() {
            let Some(chain) = vq.pop_descriptor_chain(mem) else {
                if !retried && rearm(vq, mem) {
                    retried = true;
                    continue;
                }
                break;
            };
            let head = chain.head_index();
            // A buffer too small for a control message is returned empty; the message waits
            // for the next.
            let written = match Writer::new(mem, chain) {
                Ok(mut out) if out.available_bytes() >= CONTROL_LEN => {
                    out.write_all(&msg).map_or(0, |()| CONTROL_LEN as u32)
                }
                _ => 0,
            };
            if written > 0 {
                self.control_out.pop_front();
            }
            if vq.add_used(mem, head, written).is_err() {
                break;
            }
            used = true;
        }
        rearm(vq, mem);
        q.is_some_and(|q| used && wants_used_event(vq, mem, q))
    }

    /// Queues a control message for the driver.
    fn control(&mut self, event: u16, value: u16) {
        if self.control_out.len() >= CONTROL_BACKLOG {
            return;
        }
        let mut msg = [0u8; CONTROL_LEN];
        // Port 0 is the only port.
        msg[4..6].copy_from_slice(&event.to_le_bytes());
        msg[6..].copy_from_slice(&value.to_le_bytes());
        self.control_out.push_back(msg);
    }

    /// Takes the driver's control messages; returns whether to send an EVENT_USED for the
    /// control transmit queue (`q`).
    fn take_control(&mut self, mem: &M::M, q: &QueueState) -> bool {
        walk_queue(&mut self.ctrl_tx, mem, q);
        let Some((state, mut vq)) = self.ctrl_tx.take() else {
            return false;
        };
        let mut received = Vec::new();
        let used = serve_chains(&mut vq, mem, |chain| {
            let mut msg = [0u8; CONTROL_LEN];
            if let Ok(mut r) = Reader::new(mem, chain) {
                if r.read_exact(&mut msg).is_ok() {
                    received.push(msg);
                }
            }
            0
        });
        let notify = used && wants_used_event(&mut vq, mem, q);
        self.ctrl_tx = Some((state, vq));
        for msg in received {
            let [i0, i1, i2, i3, e0, e1, v0, v1] = msg;
            let port = u32::from_le_bytes([i0, i1, i2, i3]);
            let (event, value) = (u16::from_le_bytes([e0, e1]), u16::from_le_bytes([v0, v1]));
            match event {
                // The driver is set up: here is the one port.
                DEVICE_READY if value == 1 => self.control(DEVICE_ADD, 1),
                // Port 0 is set up: it is the console, and the host end is open.
                PORT_READY if port == 0 && value == 1 => {
                    self.control(CONSOLE_PORT, 1);
                    self.control(PORT_OPEN, 1);
                }
                // The driver opened or closed the port, or failed to set something up.
                _ => {}
            }
        }
        notify
    }

    /// Sends `data` to the host end without blocking for long; what it does not take is
    /// dropped and counted.
    fn send(&mut self, data: &[u8]) {
        let fd = match &self.host {
            Host::Socket {
                client: Some(c), ..
            } => c.as_raw_fd(),
            Host::Socket { client: None, .. } => {
                if self.stats.output_dropped == 0 {
                    log::info!("console: output with no host client connected is dropped");
                }
                self.stats.output_dropped += data.len() as u64;
                return;
            }
            Host::Pty { master, .. } => master.as_raw_fd(),
        };
        let is_socket = matches!(self.host, Host::Socket { .. });
        let deadline = Instant::now() + WRITE_STALL;
        let mut done = 0;
        let mut gone = false;
        while done < data.len() {
            let rest = &data[done..];
            let result = if is_socket {
                // SAFETY: `rest` is valid for reading `rest.len()` bytes for the whole call, and
                // `fd` is the client socket, open as long as `self.host` holds it.
                unsafe {
                    libc::send(
                        fd,
                        rest.as_ptr().cast(),
                        rest.len(),
                        libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
                    )
                }
            } else {
                // SAFETY: as above, with the pseudo-terminal master (non-blocking).
                unsafe { libc::write(fd, rest.as_ptr().cast(), rest.len()) }
            };
            match usize::try_from(result) {
                Ok(0) => break,
                Ok(n) => {
                    done += n;
                    continue;
                }
                Err(_) => {}
            }
            match io::Error::last_os_error().kind() {
                io::ErrorKind::Interrupted => {}
                io::ErrorKind::WouldBlock => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if self.congested || left.is_zero() || !wait_writable(fd, left) {
                        break;
                    }
                }
                _ => {
                    gone = true;
                    break;
                }
            }
        }
        let lost = data.len() - done;
        self.stats.output_dropped += lost as u64;
        if gone && is_socket {
            self.disconnect();
        } else {
            self.congested = lost > 0;
        }
    }

    /// Passes every transmit chain on to the host end; returns whether to send an EVENT_USED
    /// for the queue (`q`).
    fn transmit(&mut self, mem: &M::M, q: &QueueState) -> bool {
        let Some((state, mut vq)) = self.tx.take() else {
            return false;
        };
        self.accept();
        let used = serve_chains(&mut vq, mem, |chain| {
            if let Ok(mut data) = Reader::new(mem, chain) {
                let total = data.available_bytes();
                let mut bytes = vec![0u8; total.min(TX_MAX)];
                match data.read_exact(&mut bytes) {
                    Ok(()) => {
                        if self.stats.output_chains == 0 {
                            log::info!("console: first output from the driver");
                        }
                        self.stats.output_chains += 1;
                        self.stats.output_dropped += (total - bytes.len()) as u64;
                        self.send(&bytes);
                    }
                    Err(_) => self.stats.output_dropped += total as u64,
                }
            }
            0
        });
        let notify = used && wants_used_event(&mut vq, mem, q);
        self.tx = Some((state, vq));
        notify
    }
}

impl<M> Drop for Console<M> {
    /// The socket path goes away with the console.
    fn drop(&mut self) {
        if let Host::Socket { path, .. } = &self.host {
            let _ = std::fs::remove_file(path);
        }
    }
}

impl<M: GuestAddressSpace> Backend for Console<M> {
    fn device_id(&self) -> u32 {
        VIRTIO_ID_CONSOLE
    }

    fn features(&self) -> u64 {
        TRANSPORT_FEATURES | F_MULTIPORT | F_EMERG_WRITE
    }

    fn set_driver_features(&mut self, features: u64) {
        self.multiport = features & F_MULTIPORT != 0;
    }

    fn config_size(&self) -> u32 {
        CONFIG_SIZE as u32
    }

    /// No size (cols, rows 0), [`MAX_PORTS`] ports, `emerg_wr` reads as 0.
    fn read_config(&self, offset: u32, out: &mut [u8]) {
        let mut config = [0u8; CONFIG_SIZE];
        config[CONFIG_MAX_PORTS..CONFIG_MAX_PORTS + 4].copy_from_slice(&MAX_PORTS.to_le_bytes());
        read_config_image(&config, offset, out);
    }

    /// A write that reaches the low byte of `emerg_wr` sends that character to the host; the
    /// rest of the configuration is read-only.
    fn write_config(&mut self, offset: u32, data: &[u8]) {
        let byte = CONFIG_EMERG_WR.checked_sub(offset);
        if let Some(&c) = byte.and_then(|i| data.get(i as usize)) {
            self.accept();
            self.send(&[c]);
        }
    }

    /// Port 0's two queues, the control queues, and two for each further port.
    fn num_queues(&self) -> u32 {
        2 * (MAX_PORTS + 1)
    }

    fn queue_notified(&mut self, index: u32, queues: &[QueueState]) -> Vec<u32> {
        let guard = self.mem.memory();
        let mem: &M::M = &guard;
        let Some(q) = queues.get(index as usize) else {
            return Vec::new();
        };
        let mut notify = Vec::new();
        match index {
            RX => {
                walk_queue(&mut self.rx, mem, q);
                // New buffers: pending input may go on, and the host end is watched again.
                self.starved = false;
                if self.deliver(mem, q) {
                    notify.push(RX);
                }
            }
            TX => {
                if walk_queue(&mut self.tx, mem, q).is_none() && !self.told_tx_unusable {
                    // Diagnostics for the e2e console tests: output that never reaches the
                    // host end was either never announced or announced on a ring this side
                    // cannot use.
                    self.told_tx_unusable = true;
                    log::info!("console: transmit queue notified but not usable ({q:?})");
                }
                if self.transmit(mem, q) {
                    notify.push(TX);
                }
            }
            CTRL_TX if self.multiport => {
                if self.take_control(mem, q) {
                    notify.push(CTRL_TX);
                }
                if self.deliver_control(mem, queues.get(CTRL_RX as usize)) {
                    notify.push(CTRL_RX);
                }
            }
            CTRL_RX if self.multiport && self.deliver_control(mem, Some(q)) => {
                notify.push(CTRL_RX);
            }
            // Ports that do not exist.
            _ => {}
        }
        notify
    }

    fn reset(&mut self) {
        self.rx = None;
        self.tx = None;
        self.ctrl_rx = None;
        self.ctrl_tx = None;
        self.multiport = false;
        self.control_out.clear();
        self.starved = false;
        self.stats.input_dropped += self.pending.len() as u64;
        self.pending.clear();
    }

    /// The listener while no client is connected, else the client (or the pty master); `None`
    /// until the driver has notified the receive queue, and while input waits for receive
    /// buffers.
    fn host_fd(&self) -> Option<RawFd> {
        if self.rx.is_none() || self.starved {
            return None;
        }
        Some(match &self.host {
            Host::Socket {
                client: Some(c), ..
            } => c.as_raw_fd(),
            Host::Socket { listener, .. } => listener.as_raw_fd(),
            Host::Pty { master, .. } => master.as_raw_fd(),
        })
    }

    fn host_ready(&mut self, queues: &[QueueState]) -> Vec<u32> {
        let guard = self.mem.memory();
        let mem: &M::M = &guard;
        let Some(q) = queues.get(RX as usize) else {
            return Vec::new();
        };
        walk_queue(&mut self.rx, mem, q);
        if self.rx.is_none() || self.starved {
            return Vec::new();
        }
        self.accept();
        self.read_input();
        if self.deliver(mem, q) {
            vec![RX]
        } else {
            Vec::new()
        }
    }
}

/// Removes a socket left at `path` by an earlier run; anything else there is an error.
fn remove_stale_socket(path: &Path) -> io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => std::fs::remove_file(path),
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{}: exists and is not a socket", path.display()),
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Opens a pseudo-terminal: the master (non-blocking), the slave (in raw mode) and the slave's
/// path.
fn open_pty() -> io::Result<(File, File, PathBuf)> {
    let master = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY | libc::O_NONBLOCK)
        .open("/dev/ptmx")?;
    let fd = master.as_raw_fd();
    // SAFETY: `fd` is the open master of a pseudo-terminal; these calls take no pointers.
    if unsafe { libc::grantpt(fd) } != 0 || unsafe { libc::unlockpt(fd) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut name = [0u8; 128];
    // SAFETY: `name` is valid for writing `name.len()` bytes; ptsname_r writes a NUL-terminated
    // string of at most that length.
    let rc = unsafe { libc::ptsname_r(fd, name.as_mut_ptr().cast(), name.len()) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    let len = name.iter().position(|&b| b == 0).unwrap_or(name.len());
    let path = PathBuf::from(std::str::from_utf8(&name[..len]).map_err(io::Error::other)?);
    let slave = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open(&path)?;
    // Raw mode: no echo of output back as input, no line editing, no newline translation.
    // SAFETY: `libc::termios` is plain integers and arrays, valid when zeroed.
    let mut termios: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: `termios` is valid for writing; the fd is open.
    if unsafe { libc::tcgetattr(slave.as_raw_fd(), &mut termios) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `termios` is a valid termios.
    unsafe { libc::cfmakeraw(&mut termios) };
    // SAFETY: `termios` is valid for reading; the fd is open.
    if unsafe { libc::tcsetattr(slave.as_raw_fd(), libc::TCSANOW, &termios) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((master, slave, path))
}

/// Waits up to `timeout` for `fd` to take more output; whether it can.
fn wait_writable(fd: RawFd, timeout: Duration) -> bool {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLOUT,
        revents: 0,
    };
    let ms = libc::c_int::try_from(timeout.as_millis().max(1)).unwrap_or(libc::c_int::MAX);
    // SAFETY: `pfd` is one valid pollfd for the duration of the call.
    let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
    rc > 0 && pfd.revents & libc::POLLOUT != 0
}
