// SPDX-License-Identifier: GPL-2.0 OR MIT

//! The console device against rings laid out in guest memory by virtio-queue's mock queue, with
//! real host ends: a listening socket in a temporary directory, and a pseudo-terminal.

mod rings;

use rings::{desc, kick, state, used, Mem, NEXT, QUEUE_SIZE, WRITE};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use virtio_msg_device::{
    console::{Console, ConsoleHost, INPUT_MAX, WRITE_STALL},
    transport::{QueueState, TransportDevice},
    Backend, Mode,
};
use virtio_msg_wire::{Frame, Message};
use virtio_queue::mock::MockSplitQueue;
use vm_memory::{Bytes, GuestAddress};

/// Receive buffers and transmit data.
const RX_BUF: u64 = 0x10_0000;
const TX_BUF: u64 = 0x20_0000;

fn memory() -> Mem {
    rings::memory(0x40_0000)
}

fn read_guest(mem: &Mem, addr: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    mem.read_slice(&mut buf, GuestAddress(addr)).unwrap();
    buf
}

/// A socket path in a fresh temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("virtio-msg-console-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap();
        Self(dir)
    }

    fn socket(&self) -> PathBuf {
        self.0.join("console.sock")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Guest memory with the receive queue at 0 and the transmit queue at 64 KiB.
struct Rings<'a> {
    mem: &'a Mem,
    rx: MockSplitQueue<'a, Mem>,
    tx: MockSplitQueue<'a, Mem>,
    /// Next free descriptor of each queue.
    rx_next: u16,
    tx_next: u16,
}

impl<'a> Rings<'a> {
    fn new(mem: &'a Mem) -> Self {
        Self {
            mem,
            rx: MockSplitQueue::create(mem, GuestAddress(0), QUEUE_SIZE),
            tx: MockSplitQueue::create(mem, GuestAddress(0x1_0000), QUEUE_SIZE),
            rx_next: 0,
            tx_next: 0,
        }
    }

    fn queues(&self) -> [QueueState; 2] {
        [state(&self.rx), state(&self.tx)]
    }

    /// Makes one receive buffer of `len` bytes available; returns its head and address.
    fn add_rx(&mut self, len: u32) -> (u16, u64) {
        let head = self.rx_next;
        let addr = RX_BUF + 0x1_0000 * u64::from(head);
        self.rx
            .add_desc_chains(&[desc(addr, len, WRITE, 0)], head)
            .unwrap();
        self.rx_next += 1;
        (head, addr)
    }

    /// Makes one transmit chain available, one descriptor per part.
    fn add_tx(&mut self, parts: &[&[u8]]) -> u16 {
        let head = self.tx_next;
        let descs: Vec<_> = parts
            .iter()
            .enumerate()
            .map(|(i, part)| {
                let index = head + i as u16;
                let addr = TX_BUF + 0x1_0000 * u64::from(index);
                self.mem.write_slice(part, GuestAddress(addr)).unwrap();
                let last = i + 1 == parts.len();
                let flags = if last { 0 } else { NEXT };
                desc(addr, part.len() as u32, flags, index + 1)
            })
            .collect();
        self.tx.add_desc_chains(&descs, head).unwrap();
        self.tx_next += parts.len() as u16;
        head
    }
}

fn console(mem: &Mem, host: ConsoleHost) -> Console<Arc<Mem>> {
    Console::new(Arc::new(mem.clone()), host).unwrap()
}

/// Waits until `fd` is readable, as the emulator's worker does.
fn wait_readable(fd: RawFd) {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: `pfd` is one valid pollfd for the duration of the call.
    let rc = unsafe { libc::poll(&mut pfd, 1, 5000) };
    assert_eq!(rc, 1, "fd {fd} did not become readable");
}

/// One round of the worker: wait for the host fd, then let the device work.
fn host_round(dev: &mut Console<Arc<Mem>>, rings: &Rings<'_>) -> Vec<u32> {
    let fd = dev.host_fd().expect("the console waits for host work");
    wait_readable(fd);
    dev.host_ready(&rings.queues())
}

fn read_exactly(stream: &mut impl Read, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    stream.read_exact(&mut buf).unwrap();
    buf
}

#[test]
fn output_reaches_the_client() {
    let dir = TempDir::new("output");
    let mem = memory();
    let mut rings = Rings::new(&mem);
    let mut dev = console(&mem, ConsoleHost::Socket(dir.socket()));
    assert_eq!(dev.host_path(), dir.socket());

    // Without a client, output is dropped and counted.
    rings.add_tx(&[b"lost"]);
    assert!(kick(&mut dev, 1, &rings.queues()[1]));
    assert_eq!(dev.stats().output_dropped, 4);

    let mut client = UnixStream::connect(dir.socket()).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let head = rings.add_tx(&[b"hello, ", b"wor", b"ld\n"]);
    let binary: Vec<u8> = (0..=255).collect();
    let second = rings.add_tx(&[&binary]);
    assert!(kick(&mut dev, 1, &rings.queues()[1]));
    assert!(dev.is_connected());
    assert_eq!(used(&mem, &rings.tx, 1), ((u32::from(head), 0), 3));
    assert_eq!(used(&mem, &rings.tx, 2).0, (u32::from(second), 0));
    let mut expected = b"hello, world\n".to_vec();
    expected.extend(&binary);
    assert_eq!(read_exactly(&mut client, expected.len()), expected);
    assert_eq!(dev.stats().output_dropped, 4);
    // Nothing new: nothing used.
    assert!(!kick(&mut dev, 1, &rings.queues()[1]));
}

#[test]
fn input_fills_receive_buffers() {
    let dir = TempDir::new("input");
    let mem = memory();
    let mut rings = Rings::new(&mem);
    let mut dev = console(&mem, ConsoleHost::Socket(dir.socket()));
    // Before the driver notified the receive queue there is nothing to watch.
    assert_eq!(dev.host_fd(), None);
    let (b0, a0) = rings.add_rx(4);
    let (b1, a1) = rings.add_rx(64);
    // No input yet: buffers stay available.
    assert!(!kick(&mut dev, 0, &rings.queues()[0]));
    assert!(dev.host_fd().is_some());

    let mut client = UnixStream::connect(dir.socket()).unwrap();
    // The first round accepts the client (and reads what it already sent, if any).
    assert_eq!(host_round(&mut dev, &rings), Vec::<u32>::new());
    assert!(dev.is_connected());
    client.write_all(b"ls -l\n").unwrap();
    assert_eq!(host_round(&mut dev, &rings), vec![0]);
    assert_eq!(used(&mem, &rings.rx, 0), ((u32::from(b0), 4), 2));
    assert_eq!(used(&mem, &rings.rx, 1).0, (u32::from(b1), 2));
    assert_eq!(read_guest(&mem, a0, 4), b"ls -");
    assert_eq!(read_guest(&mem, a1, 2), b"l\n");
    assert_eq!(dev.pending_input(), 0);
}

#[test]
fn input_waits_for_buffers_without_polling() {
    let dir = TempDir::new("wait");
    let mem = memory();
    let mut rings = Rings::new(&mem);
    let mut dev = console(&mem, ConsoleHost::Socket(dir.socket()));
    // The driver set the queue up but has no buffer available now.
    assert!(!kick(&mut dev, 0, &rings.queues()[0]));

    let mut client = UnixStream::connect(dir.socket()).unwrap();
    client.write_all(b"early input").unwrap();
    assert_eq!(host_round(&mut dev, &rings), Vec::<u32>::new());
    if dev.pending_input() == 0 {
        // Accepted first, the data came in the next round.
        assert_eq!(host_round(&mut dev, &rings), Vec::<u32>::new());
    }
    assert_eq!(dev.pending_input(), 11);
    // Blocked on the driver: the worker must not poll the (readable) client.
    client.write_all(b"!").unwrap();
    assert_eq!(dev.host_fd(), None);

    let (head, addr) = rings.add_rx(64);
    assert!(kick(&mut dev, 0, &rings.queues()[0]));
    assert_eq!(used(&mem, &rings.rx, 0), ((u32::from(head), 11), 1));
    assert_eq!(read_guest(&mem, addr, 11), b"early input");
    assert_eq!(dev.pending_input(), 0);
    // Unblocked: the rest is read in the next round.
    let (head, addr) = rings.add_rx(64);
    assert!(!kick(&mut dev, 0, &rings.queues()[0]));
    assert_eq!(host_round(&mut dev, &rings), vec![0]);
    assert_eq!(used(&mem, &rings.rx, 1), ((u32::from(head), 1), 2));
    assert_eq!(read_guest(&mem, addr, 1), b"!");
}

#[test]
fn input_is_bounded_and_not_lost() {
    let dir = TempDir::new("bound");
    let mem = memory();
    let mut rings = Rings::new(&mem);
    let mut dev = console(&mem, ConsoleHost::Socket(dir.socket()));
    assert!(!kick(&mut dev, 0, &rings.queues()[0]));
    let mut client = UnixStream::connect(dir.socket()).unwrap();
    let total = INPUT_MAX + 40_000;
    let input: Vec<u8> = (0..total).map(|i| (i % 251) as u8).collect();
    let writer = {
        let input = input.clone();
        std::thread::spawn(move || client.write_all(&input).map(|()| client))
    };
    let mut received = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while received.len() < total {
        assert!(
            Instant::now() < deadline,
            "input stalled at {}",
            received.len()
        );
        match dev.host_fd() {
            Some(_) => {
                host_round(&mut dev, &rings);
                assert!(dev.pending_input() <= INPUT_MAX);
            }
            // Blocked: the driver adds a buffer.
            None => {
                let slot = rings.rx_next;
                let (_, addr) = rings.add_rx(32 * 1024);
                assert!(kick(&mut dev, 0, &rings.queues()[0]));
                let ((_, len), _) = used(&mem, &rings.rx, u64::from(slot));
                received.extend(read_guest(&mem, addr, len as usize));
            }
        }
    }
    let _client = writer.join().unwrap().unwrap();
    assert_eq!(received, input);
    assert_eq!(dev.stats().input_dropped, 0);
}

#[test]
fn client_disconnects_and_reconnects() {
    let dir = TempDir::new("reconnect");
    let mem = memory();
    let mut rings = Rings::new(&mem);
    let mut dev = console(&mem, ConsoleHost::Socket(dir.socket()));
    let (_, a0) = rings.add_rx(64);
    assert!(!kick(&mut dev, 0, &rings.queues()[0]));

    let mut first = UnixStream::connect(dir.socket()).unwrap();
    first.write_all(b"one").unwrap();
    let mut rounds = 0;
    while dev.pending_input() == 0 && used(&mem, &rings.rx, 0).1 == 0 {
        host_round(&mut dev, &rings);
        rounds += 1;
        assert!(rounds < 5);
    }
    assert_eq!(read_guest(&mem, a0, 3), b"one");
    drop(first);
    // The hang-up is noticed; the device listens again.
    host_round(&mut dev, &rings);
    assert!(!dev.is_connected());
    rings.add_tx(&[b"nobody"]);
    assert!(kick(&mut dev, 1, &rings.queues()[1]));
    assert_eq!(dev.stats().output_dropped, 6);

    let mut second = UnixStream::connect(dir.socket()).unwrap();
    second
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    second.write_all(b"two").unwrap();
    let (_, a1) = rings.add_rx(64);
    assert!(!kick(&mut dev, 0, &rings.queues()[0]));
    let mut rounds = 0;
    while used(&mem, &rings.rx, 0).1 < 2 {
        host_round(&mut dev, &rings);
        rounds += 1;
        assert!(rounds < 5);
    }
    assert!(dev.is_connected());
    assert_eq!(used(&mem, &rings.rx, 1).0 .1, 3);
    assert_eq!(read_guest(&mem, a1, 3), b"two");
    rings.add_tx(&[b"back"]);
    assert!(kick(&mut dev, 1, &rings.queues()[1]));
    assert_eq!(read_exactly(&mut second, 4), b"back");
}

#[test]
fn slow_client_does_not_block_the_device() {
    let dir = TempDir::new("slow");
    let mem = memory();
    let mut rings = Rings::new(&mem);
    let mut dev = console(&mem, ConsoleHost::Socket(dir.socket()));
    let client = UnixStream::connect(dir.socket()).unwrap();
    let chunk = vec![b'x'; 60_000];
    let start = Instant::now();
    // Far more than a socket buffer holds, and the client reads nothing.
    for _ in 0..15 {
        rings.add_tx(&[&chunk]);
    }
    assert!(kick(&mut dev, 1, &rings.queues()[1]));
    assert_eq!(used(&mem, &rings.tx, 0).1, 15);
    // One stall of WRITE_STALL, then the congested client loses output at once (waiting for
    // each of the chains the socket buffer cannot hold would take twice as long as allowed).
    assert!(start.elapsed() < 6 * WRITE_STALL, "{:?}", start.elapsed());
    let dropped = dev.stats().output_dropped;
    assert!(dropped > 0 && dropped < 15 * 60_000, "{dropped}");
    drop(client);
}

#[test]
fn reset_drops_pending_input_and_queues() {
    let dir = TempDir::new("reset");
    let mem = memory();
    let rings = Rings::new(&mem);
    let mut dev = console(&mem, ConsoleHost::Socket(dir.socket()));
    assert!(!kick(&mut dev, 0, &rings.queues()[0]));
    let mut client = UnixStream::connect(dir.socket()).unwrap();
    client.write_all(b"typed").unwrap();
    while dev.pending_input() == 0 {
        host_round(&mut dev, &rings);
    }
    dev.reset();
    assert_eq!(dev.pending_input(), 0);
    assert_eq!(dev.stats().input_dropped, 5);
    assert_eq!(dev.host_fd(), None);
}

#[test]
fn pseudo_terminal_both_ways() {
    let mem = memory();
    let mut rings = Rings::new(&mem);
    let mut dev = console(&mem, ConsoleHost::Pty);
    let path = dev.host_path().to_path_buf();
    assert!(path.starts_with("/dev/pts"), "{}", path.display());
    let mut term = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();

    rings.add_tx(&[b"login: "]);
    assert!(kick(&mut dev, 1, &rings.queues()[1]));
    wait_readable(term.as_raw_fd());
    assert_eq!(read_exactly(&mut term, 7), b"login: ");

    let (head, addr) = rings.add_rx(64);
    assert!(!kick(&mut dev, 0, &rings.queues()[0]));
    term.write_all(b"root\r").unwrap();
    let mut rounds = 0;
    while used(&mem, &rings.rx, 0).1 == 0 {
        host_round(&mut dev, &rings);
        rounds += 1;
        assert!(rounds < 5);
    }
    // Raw mode: bytes pass unchanged, and nothing is echoed back.
    assert_eq!(used(&mem, &rings.rx, 0).0, (u32::from(head), 5));
    assert_eq!(read_guest(&mem, addr, 5), b"root\r");
    assert_eq!(dev.stats().output_dropped, 0);
}

#[test]
fn stale_socket_is_replaced_and_other_files_are_not() {
    let dir = TempDir::new("stale");
    let mem = memory();
    drop(std::os::unix::net::UnixListener::bind(dir.socket()).unwrap());
    let dev = console(&mem, ConsoleHost::Socket(dir.socket()));
    drop(dev);
    assert!(!dir.socket().exists());
    std::fs::write(dir.socket(), b"precious").unwrap();
    assert!(Console::new(Arc::new(mem), ConsoleHost::Socket(dir.socket())).is_err());
    assert_eq!(std::fs::read(dir.socket()).unwrap(), b"precious");
}

#[test]
fn through_the_transport() {
    let dir = TempDir::new("transport");
    let mem = memory();
    let dev = console(&mem, ConsoleHost::Socket(dir.socket()));
    let mut dev = TransportDevice::new(2, dev, Mode::Compat);
    let out = dev.handle(&Frame {
        dev_num: 2,
        token: 5,
        msg: Message::GetDeviceInfo,
    });
    assert_eq!(out.len(), 1);
    match Frame::decode(&out[0]).unwrap().msg {
        Message::DeviceInfo(info) => {
            // As the device model's virtio-serial-device (05-probe-console.txt:6).
            assert_eq!(info.device_id, 3);
            assert_eq!(info.config_size, 12);
            assert_eq!(info.max_virtqueues, 64);
        }
        other => panic!("unexpected {other:?}"),
    }
    // Before DRIVER_OK nothing is delivered.
    assert!(dev.host_ready().is_empty());
}

#[test]
fn config_space_and_emergency_write() {
    let dir = TempDir::new("config");
    let mem = memory();
    let mut dev = console(&mem, ConsoleHost::Socket(dir.socket()));
    // MULTIPORT, EMERG_WRITE and the transport features (05-probe-console.txt:16).
    assert_eq!(dev.features(), 0x0000_0101_3000_0006);
    let mut config = [0xaau8; 12];
    dev.read_config(0, &mut config);
    assert_eq!(config, [0, 0, 0, 0, 31, 0, 0, 0, 0, 0, 0, 0]);

    let mut client = UnixStream::connect(dir.socket()).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    // The driver writes emerg_wr as a 32-bit field; its low byte goes out.
    dev.write_config(8, &[b'!', 0, 0, 0]);
    dev.write_config(4, &[9, 9, 9, 9, b'?']);
    // Writes that miss emerg_wr's low byte do nothing.
    dev.write_config(9, &[b'x', 0, 0]);
    dev.write_config(0, &[1, 2]);
    assert_eq!(read_exactly(&mut client, 2), b"!?");
    dev.read_config(0, &mut config);
    assert_eq!(config, [0, 0, 0, 0, 31, 0, 0, 0, 0, 0, 0, 0]);
}

/// A control message: port, event, value.
fn control(port: u32, event: u16, value: u16) -> [u8; 8] {
    let mut m = [0u8; 8];
    m[..4].copy_from_slice(&port.to_le_bytes());
    m[4..6].copy_from_slice(&event.to_le_bytes());
    m[6..].copy_from_slice(&value.to_le_bytes());
    m
}

#[test]
fn multiport_brings_up_port_0_as_the_console() {
    const CTRL_BUF: u64 = 0x30_0000;
    const DEVICE_READY: u16 = 0;
    const DEVICE_ADD: u16 = 1;
    const PORT_READY: u16 = 3;
    const CONSOLE_PORT: u16 = 4;
    const PORT_OPEN: u16 = 6;
    let dir = TempDir::new("multiport");
    let mem = memory();
    let rings = Rings::new(&mem);
    let c_rx = MockSplitQueue::create(&mem, GuestAddress(0x2_0000), QUEUE_SIZE);
    let c_tx = MockSplitQueue::create(&mem, GuestAddress(0x3_0000), QUEUE_SIZE);
    let mut dev = console(&mem, ConsoleHost::Socket(dir.socket()));
    dev.set_driver_features((1 << 32) | (1 << 1));
    let [rx, tx] = rings.queues();
    let queues = [rx, tx, state(&c_rx), state(&c_tx)];
    let received = |i: u64| read_guest(&mem, CTRL_BUF + 0x100 * i, 8);
    // The queues the device asks an EVENT_USED for, in any order.
    let notify = |dev: &mut Console<Arc<Mem>>, index: u32| {
        let mut used = dev.queue_notified(index, &queues);
        used.sort_unstable();
        used
    };

    // The driver gives control receive buffers: nothing to say yet.
    let bufs: Vec<_> = (0..4)
        .map(|i| desc(CTRL_BUF + 0x100 * i, 8, WRITE, 0))
        .collect();
    for (i, d) in bufs.iter().enumerate() {
        c_rx.add_desc_chains(&[*d], i as u16).unwrap();
    }
    assert!(notify(&mut dev, 2).is_empty());

    // DEVICE_READY: the device adds port 0.
    let send = |slot: u16, msg: [u8; 8]| {
        let addr = TX_BUF + 0x100 * u64::from(slot);
        mem.write_slice(&msg, GuestAddress(addr)).unwrap();
        c_tx.add_desc_chains(&[desc(addr, 8, 0, 0)], slot).unwrap();
    };
    send(0, control(u32::MAX, DEVICE_READY, 1));
    assert_eq!(notify(&mut dev, 3), vec![2, 3]);
    assert_eq!(used(&mem, &c_tx, 0), ((0, 0), 1));
    assert_eq!(used(&mem, &c_rx, 0), ((0, 8), 1));
    assert_eq!(received(0), control(0, DEVICE_ADD, 1));

    // PORT_READY for port 0: it becomes the console, open on the host side.
    send(1, control(0, PORT_READY, 1));
    assert_eq!(notify(&mut dev, 3), vec![2, 3]);
    assert_eq!(received(1), control(0, CONSOLE_PORT, 1));
    assert_eq!(received(2), control(0, PORT_OPEN, 1));
    assert_eq!(used(&mem, &c_rx, 2), ((2, 8), 3));

    // The driver opening the port, or anything about other ports: taken, no answer.
    send(2, control(0, PORT_OPEN, 1));
    send(3, control(5, PORT_READY, 1));
    assert_eq!(notify(&mut dev, 3), vec![3]);
    assert_eq!(used(&mem, &c_tx, 3).1, 4);

    // A reset forgets it all; without MULTIPORT the control queues are not served.
    dev.reset();
    send(4, control(u32::MAX, DEVICE_READY, 1));
    assert!(notify(&mut dev, 3).is_empty());
}
