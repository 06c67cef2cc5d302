// SPDX-License-Identifier: GPL-2.0 OR MIT

//! The network device against rings laid out in guest memory by virtio-queue's mock queue,
//! with a socket pair as the host end.

mod rings;

use rings::{desc, kick, state, used, Mem, NEXT, QUEUE_SIZE, WRITE};
use std::{
    io::ErrorKind,
    os::unix::net::UnixDatagram,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};
use virtio_msg_device::{
    net::{default_mac, Endpoint, HostIp, Net, NetOptions, NetStats, PacketIo, SocketIo},
    transport::{QueueState, TransportDevice},
    Backend, Mode,
};
use virtio_msg_wire::{AvailNext, Frame, Message, VqueueConfig, Words};
use virtio_queue::mock::MockSplitQueue;
use vm_memory::{Bytes, GuestAddress};

const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0xab, 0xcd, 0xef];
const HDR: usize = 12;

type Dev = Net<Arc<Mem>>;

fn memory() -> Mem {
    rings::memory(0x20_0000)
}

/// The receive queue at 0x1000 and the transmit queue at 0x2000.
fn queues(mem: &Mem) -> (MockSplitQueue<'_, Mem>, MockSplitQueue<'_, Mem>) {
    (
        MockSplitQueue::create(mem, GuestAddress(0x1000), QUEUE_SIZE),
        MockSplitQueue::create(mem, GuestAddress(0x2000), QUEUE_SIZE),
    )
}

/// A device whose host end is one side of a socket pair; the other side is returned.
fn device(mem: &Mem) -> (Dev, UnixDatagram) {
    let (ours, peer) = UnixDatagram::pair().unwrap();
    peer.set_nonblocking(true).unwrap();
    let io = SocketIo::connected(ours).unwrap();
    (Net::new(Arc::new(mem.clone()), Box::new(io), MAC), peer)
}

fn used_idx(mem: &Mem, q: &MockSplitQueue<'_, Mem>) -> u16 {
    used(mem, q, 0).1
}

fn read(mem: &Mem, addr: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    mem.read_slice(&mut buf, GuestAddress(addr)).unwrap();
    buf
}

/// A frame of `len` bytes whose contents depend on `seed`.
fn frame(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(7).wrapping_add(seed))
        .collect()
}

/// The header the device must write before each received frame.
fn rx_header() -> [u8; HDR] {
    let mut h = [0u8; HDR];
    h[10] = 1;
    h
}

fn nothing_waiting(peer: &UnixDatagram) -> bool {
    let mut buf = [0u8; 16];
    matches!(peer.recv(&mut buf), Err(e) if e.kind() == ErrorKind::WouldBlock)
}

#[test]
fn transmitted_frames_reach_the_peer_without_the_header() {
    let mem = memory();
    let (rxq, txq) = queues(&mem);
    let (mut dev, peer) = device(&mem);
    let a = frame(60, 1);
    let b = frame(1514, 2);
    // Chain 0: header alone, then the frame over two buffers. Chain 3: header and frame in
    // one buffer, a header the driver filled with garbage.
    mem.write_slice(&[0xee; HDR], GuestAddress(0x10_0000))
        .unwrap();
    mem.write_slice(&a[..20], GuestAddress(0x10_1000)).unwrap();
    mem.write_slice(&a[20..], GuestAddress(0x10_2000)).unwrap();
    mem.write_slice(&[0x55; HDR], GuestAddress(0x10_3000))
        .unwrap();
    mem.write_slice(&b, GuestAddress(0x10_3000 + HDR as u64))
        .unwrap();
    let chains = [
        desc(0x10_0000, HDR as u32, NEXT, 1),
        desc(0x10_1000, 20, NEXT, 2),
        desc(0x10_2000, 40, 0, 0),
        desc(0x10_3000, (HDR + b.len()) as u32, 0, 0),
    ];
    txq.add_desc_chains(&chains, 0).unwrap();
    assert!(kick(&mut dev, 1, &state(&txq)));
    assert_eq!(used(&mem, &txq, 0), ((0, 0), 2));
    assert_eq!(used(&mem, &txq, 1).0, (3, 0));
    let mut buf = vec![0u8; 4096];
    let n = peer.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], &a[..]);
    let n = peer.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], &b[..]);
    assert!(nothing_waiting(&peer));
    let stats = dev.stats();
    assert_eq!(
        (stats.tx_packets, stats.tx_bytes, stats.tx_dropped),
        (2, 1574, 0)
    );
    // Nothing new: nothing used; the receive queue was never touched.
    assert!(!kick(&mut dev, 1, &state(&txq)));
    assert_eq!(used_idx(&mem, &rxq), 0);
}

#[test]
fn received_frames_land_after_a_zeroed_header() {
    let mem = memory();
    let (rxq, txq) = queues(&mem);
    let (mut dev, peer) = device(&mem);
    // Dirty buffers, to see that the header is written as zeroes.
    mem.write_slice(&[0xff; 4096], GuestAddress(0x10_0000))
        .unwrap();
    // Chain 0: one buffer. Chain 1: the header split over two buffers, then the frame.
    let chains = [
        desc(0x10_0000, 2048, WRITE, 0),
        desc(0x11_0000, 10, WRITE | NEXT, 2),
        desc(0x11_1000, 30, WRITE | NEXT, 3),
        desc(0x11_2000, 2000, WRITE, 0),
    ];
    rxq.add_desc_chains(&chains, 0).unwrap();
    // Before the driver notified the receive queue, the device does not listen.
    assert_eq!(dev.host_fd(), None);
    // Notified with nothing waiting: nothing used, and now it listens.
    assert!(!kick(&mut dev, 0, &state(&rxq)));
    assert!(dev.host_fd().is_some());
    let a = frame(60, 3);
    let b = frame(1514, 4);
    peer.send(&a).unwrap();
    peer.send(&b).unwrap();
    assert_eq!(dev.host_ready(&[state(&rxq), state(&txq)]), vec![0]);
    assert_eq!(used(&mem, &rxq, 0), ((0, (HDR + a.len()) as u32), 2));
    assert_eq!(used(&mem, &rxq, 1).0, (1, (HDR + b.len()) as u32));
    assert_eq!(read(&mem, 0x10_0000, HDR), rx_header());
    assert_eq!(read(&mem, 0x10_0000 + HDR as u64, a.len()), a);
    // Past the frame, the buffer is untouched.
    assert_eq!(read(&mem, 0x10_0000 + (HDR + a.len()) as u64, 4), [0xff; 4]);
    let mut got = read(&mem, 0x11_0000, 10);
    got.extend(read(&mem, 0x11_1000, 30));
    got.extend(read(&mem, 0x11_2000, 2000));
    assert_eq!(&got[..HDR], rx_header());
    assert_eq!(&got[HDR..HDR + b.len()], &b[..]);
    let stats = dev.stats();
    assert_eq!(
        (stats.rx_packets, stats.rx_bytes, stats.rx_dropped),
        (2, 1574, 0)
    );
    // Nothing more waiting: nothing used.
    assert!(dev.host_ready(&[state(&rxq), state(&txq)]).is_empty());
}

#[test]
fn a_frame_without_a_receive_buffer_waits_for_the_driver() {
    let mem = memory();
    let (rxq, txq) = queues(&mem);
    let (mut dev, peer) = device(&mem);
    assert!(!kick(&mut dev, 0, &state(&rxq)));
    let fd = dev.host_fd();
    assert!(fd.is_some());
    let a = frame(100, 5);
    let b = frame(200, 6);
    peer.send(&a).unwrap();
    peer.send(&b).unwrap();
    // No receive buffer: the first frame is kept and the device stops listening.
    assert!(dev.host_ready(&[state(&rxq), state(&txq)]).is_empty());
    assert!(dev.has_pending());
    assert_eq!(dev.host_fd(), None);
    // Called again: still nothing to deliver into.
    assert!(!dev.host_ready(&[state(&rxq), state(&txq)]).contains(&0));
    assert_eq!(dev.stats(), NetStats::default());
    // The driver adds two buffers: both frames arrive, in order.
    let chains = [
        desc(0x10_0000, 2048, WRITE, 0),
        desc(0x10_1000, 2048, WRITE, 0),
    ];
    rxq.add_desc_chains(&chains, 0).unwrap();
    assert!(kick(&mut dev, 0, &state(&rxq)));
    assert_eq!(used(&mem, &rxq, 0), ((0, (HDR + a.len()) as u32), 2));
    assert_eq!(used(&mem, &rxq, 1).0, (1, (HDR + b.len()) as u32));
    assert_eq!(read(&mem, 0x10_0000 + HDR as u64, a.len()), a);
    assert_eq!(read(&mem, 0x10_1000 + HDR as u64, b.len()), b);
    assert!(!dev.has_pending());
    assert_eq!(dev.host_fd(), fd);
    assert_eq!(dev.stats().rx_packets, 2);
}

#[test]
fn a_frame_too_long_for_the_buffer_is_dropped_and_the_buffer_kept() {
    let mem = memory();
    let (rxq, txq) = queues(&mem);
    let (mut dev, peer) = device(&mem);
    rxq.add_desc_chains(&[desc(0x10_0000, (HDR + 40) as u32, WRITE, 0)], 0)
        .unwrap();
    assert!(!kick(&mut dev, 0, &state(&rxq)));
    let long = frame(41, 7);
    let short = frame(40, 8);
    peer.send(&long).unwrap();
    peer.send(&short).unwrap();
    // The long frame goes; the short one takes the buffer.
    assert_eq!(dev.host_ready(&[state(&rxq), state(&txq)]), vec![0]);
    assert_eq!(used(&mem, &rxq, 0), ((0, (HDR + 40) as u32), 1));
    assert_eq!(read(&mem, 0x10_0000 + HDR as u64, 40), short);
    let stats = dev.stats();
    assert_eq!((stats.rx_packets, stats.rx_dropped), (1, 1));
}

#[test]
fn frames_of_a_bad_length_from_the_host_are_dropped() {
    let mem = memory();
    let (rxq, txq) = queues(&mem);
    let (mut dev, peer) = device(&mem);
    rxq.add_desc_chains(&[desc(0x10_0000, 0x1_2000, WRITE, 0)], 0)
        .unwrap();
    assert!(!kick(&mut dev, 0, &state(&rxq)));
    // Shorter than an Ethernet header, and longer than 64 KiB.
    peer.send(&frame(13, 9)).unwrap();
    peer.send(&frame(64 * 1024 + 1, 10)).unwrap();
    let ok = frame(64 * 1024, 11);
    peer.send(&ok).unwrap();
    assert_eq!(dev.host_ready(&[state(&rxq), state(&txq)]), vec![0]);
    assert_eq!(used(&mem, &rxq, 0), ((0, (HDR + ok.len()) as u32), 1));
    assert_eq!(read(&mem, 0x10_0000 + HDR as u64, ok.len()), ok);
    let stats = dev.stats();
    assert_eq!((stats.rx_packets, stats.rx_dropped), (1, 2));
}

#[test]
fn a_receive_buffer_outside_guest_memory_is_returned_empty() {
    let mem = memory();
    let (rxq, txq) = queues(&mem);
    let (mut dev, peer) = device(&mem);
    let chains = [
        desc(0x1000_0000, 2048, WRITE, 0),
        desc(0x10_0000, 2048, WRITE, 0),
    ];
    rxq.add_desc_chains(&chains, 0).unwrap();
    assert!(!kick(&mut dev, 0, &state(&rxq)));
    let a = frame(64, 12);
    let b = frame(64, 13);
    peer.send(&a).unwrap();
    peer.send(&b).unwrap();
    assert_eq!(dev.host_ready(&[state(&rxq), state(&txq)]), vec![0]);
    assert_eq!(used(&mem, &rxq, 0), ((0, 0), 2));
    assert_eq!(used(&mem, &rxq, 1).0, (1, (HDR + b.len()) as u32));
    assert_eq!(read(&mem, 0x10_0000 + HDR as u64, b.len()), b);
    let stats = dev.stats();
    assert_eq!((stats.rx_packets, stats.rx_dropped), (1, 1));
}

#[test]
fn bad_transmit_chains_are_consumed_without_sending() {
    let mem = memory();
    let (_rxq, txq) = queues(&mem);
    let (mut dev, peer) = device(&mem);
    let chains = [
        // Shorter than the header.
        desc(0x10_0000, 8, 0, 0),
        // The header and 13 bytes: no Ethernet frame.
        desc(0x10_1000, (HDR + 13) as u32, 0, 0),
        // Only a writable buffer.
        desc(0x10_2000, 100, WRITE, 0),
        // Longer than 64 KiB after the header.
        desc(0x10_0000, (HDR + 64 * 1024 + 1) as u32, 0, 0),
        // Outside guest memory.
        desc(0x1000_0000, 100, 0, 0),
        // Ring-looping chain: descriptor 5 names itself as next (cut after 16 descriptors).
        desc(0x10_3000, 1, NEXT, 5),
    ];
    txq.add_desc_chains(&chains, 0).unwrap();
    assert!(kick(&mut dev, 1, &state(&txq)));
    assert_eq!(used_idx(&mem, &txq), 6);
    for i in 0..6 {
        assert_eq!(used(&mem, &txq, i).0, (i as u32, 0));
    }
    assert!(nothing_waiting(&peer));
    let stats = dev.stats();
    assert_eq!((stats.tx_packets, stats.tx_dropped), (0, 6));
}

#[test]
fn a_refused_send_is_dropped_and_counted() {
    let mem = memory();
    let (_rxq, txq) = queues(&mem);
    let (mut dev, peer) = device(&mem);
    drop(peer);
    txq.add_desc_chains(&[desc(0x10_0000, (HDR + 60) as u32, 0, 0)], 0)
        .unwrap();
    assert!(kick(&mut dev, 1, &state(&txq)));
    assert_eq!(used(&mem, &txq, 0), ((0, 0), 1));
    let stats = dev.stats();
    assert_eq!((stats.tx_packets, stats.tx_dropped), (0, 1));
}

#[test]
fn reset_drops_the_pending_frame_and_stops_listening() {
    let mem = memory();
    let (rxq, txq) = queues(&mem);
    let (mut dev, peer) = device(&mem);
    assert!(!kick(&mut dev, 0, &state(&rxq)));
    peer.send(&frame(60, 14)).unwrap();
    assert!(dev.host_ready(&[state(&rxq), state(&txq)]).is_empty());
    assert!(dev.has_pending());
    dev.reset();
    assert!(!dev.has_pending());
    assert_eq!(dev.host_fd(), None);
    assert_eq!(dev.stats().rx_dropped, 1);
    // Not listening: host_ready does nothing until the receive queue is notified again.
    peer.send(&frame(60, 15)).unwrap();
    rxq.add_desc_chains(&[desc(0x10_0000, 2048, WRITE, 0)], 0)
        .unwrap();
    assert!(dev.host_ready(&[state(&rxq), state(&txq)]).is_empty());
    assert!(kick(&mut dev, 0, &state(&rxq)));
    assert_eq!(read(&mem, 0x10_0000 + HDR as u64, 60), frame(60, 15));
}

#[test]
fn unusable_rings_are_refused() {
    let mem = memory();
    let (mut dev, peer) = device(&mem);
    let bad = QueueState {
        size: 16,
        desc: 0x1000_0000,
        driver: 0x1000_1000,
        device: 0x1000_2000,
        event_idx: false,
    };
    assert!(!kick(&mut dev, 0, &bad));
    assert!(!kick(&mut dev, 1, &bad));
    assert!(!kick(&mut dev, 2, &bad));
    // A frame arriving meanwhile waits, and the device stops listening.
    peer.send(&frame(60, 16)).unwrap();
    assert!(dev.host_ready(&[bad, bad]).is_empty());
    assert!(dev.host_ready(&[]).is_empty());
    assert_eq!(dev.host_fd(), None);
}

/// Sends `msg` to device number 1 and returns the decoded answers.
fn ask(dev: &mut TransportDevice<Dev>, msg: Message<'_>) -> Vec<Vec<u8>> {
    dev.handle(&Frame {
        dev_num: 1,
        token: 7,
        msg,
    })
}

#[test]
fn device_info_features_and_config_through_the_transport() {
    let mem = memory();
    let (net, _peer) = device(&mem);
    let mut dev = TransportDevice::new(1, net, Mode::Compat);
    let out = ask(&mut dev, Message::GetDeviceInfo);
    let Message::DeviceInfo(info) = Frame::decode(&out[0]).unwrap().msg else {
        panic!("not a device info");
    };
    // As the device model's virtio-net-device (04-probe-net.txt:6): receive, transmit and
    // control queues.
    assert_eq!(
        (info.device_id, info.config_size, info.max_virtqueues),
        (1, 8, 3)
    );
    let out = ask(
        &mut dev,
        Message::GetDeviceFeatures {
            block_index: 0,
            num_blocks: 2,
        },
    );
    let Message::DeviceFeatures { features, .. } = Frame::decode(&out[0]).unwrap().msg else {
        panic!("not features");
    };
    let words: Vec<u32> = features.iter().collect();
    // As the device model's (04-probe-net.txt:16): the control queue and its commands,
    // mergeable receive buffers, MAC, STATUS and the transport features; no offload, no
    // multiqueue.
    assert_eq!(words, vec![0x30bf_8024, 0x101]);
    let out = ask(
        &mut dev,
        Message::GetConfig {
            offset: 0,
            length: 8,
        },
    );
    let Message::Config { data, .. } = Frame::decode(&out[0]).unwrap().msg else {
        panic!("not config");
    };
    assert_eq!(data, [0x52, 0x54, 0x00, 0xab, 0xcd, 0xef, 1, 0]);
    // The status alone, and a read past the end (0xff there, like the device model).
    let out = ask(
        &mut dev,
        Message::GetConfig {
            offset: 6,
            length: 2,
        },
    );
    let Message::Config { data, .. } = Frame::decode(&out[0]).unwrap().msg else {
        panic!("not config");
    };
    assert_eq!(data, [1, 0]);
    let out = ask(
        &mut dev,
        Message::GetConfig {
            offset: 6,
            length: 4,
        },
    );
    let Message::Config { data, .. } = Frame::decode(&out[0]).unwrap().msg else {
        panic!("not config");
    };
    assert_eq!(data, [1, 0, 0xff, 0xff]);
}

/// Runs control commands (class, command, data) through a control queue at `ring`; their
/// acknowledgements.
fn control(dev: &mut Dev, mem: &Mem, ring: u64, commands: &[&[u8]]) -> Vec<u8> {
    let ctrl = MockSplitQueue::create(mem, GuestAddress(ring), QUEUE_SIZE);
    let mut descs = Vec::new();
    for (i, cmd) in commands.iter().enumerate() {
        let addr = 0x18_0000 + 0x100 * i as u64;
        mem.write_slice(cmd, GuestAddress(addr)).unwrap();
        let first = 2 * i as u16;
        descs.push(desc(addr, cmd.len() as u32, NEXT, first + 1));
        descs.push(desc(0x19_0000 + i as u64, 1, WRITE, 0));
        mem.write_obj(0xaau8, GuestAddress(0x19_0000 + i as u64))
            .unwrap();
    }
    ctrl.add_desc_chains(&descs, 0).unwrap();
    assert!(kick(dev, 2, &state(&ctrl)));
    (0..commands.len())
        .map(|i| {
            assert_eq!(
                used(mem, &ctrl, i as u64).0 .1,
                1,
                "command {i} used, 1 byte"
            );
            read(mem, 0x19_0000 + i as u64, 1)[0]
        })
        .collect()
}

#[test]
fn control_commands_are_acknowledged() {
    const OK: u8 = 0;
    const ERR: u8 = 1;
    let mem = memory();
    let (mut dev, _peer) = device(&mem);
    let new_mac = [0x52, 0x54, 0x00, 1, 2, 3];
    let mut mac_set = vec![1u8, 1];
    mac_set.extend(new_mac);
    // Two MAC tables: one unicast address, two multicast ones.
    let mut tables = vec![1u8, 0, 1, 0, 0, 0];
    tables.extend([2, 0, 0, 0, 0, 1]);
    tables.extend([2, 0, 0, 0]);
    tables.extend([0x01, 0, 0x5e, 0, 0, 1, 0x33, 0x33, 0, 0, 0, 1]);
    let acks = control(
        &mut dev,
        &mem,
        0x3000,
        &[
            &[0, 0, 1],                      // promiscuous on
            &[0, 1, 0],                      // all-multicast off
            &[0, 5, 1],                      // no-broadcast (CTRL_RX_EXTRA)
            &tables,                         // MAC tables
            &mac_set,                        // the MAC address
            &[2, 0, 5, 0],                   // VLAN 5 added
            &[3, 0],                         // announce acknowledged
            &[5, 0, 0, 0, 0, 0, 0, 0, 0, 0], // no guest offloads
        ],
    );
    assert_eq!(acks, [OK; 8]);
    assert_eq!(dev.mac(), new_mac);
    let mut config = [0u8; 8];
    dev.read_config(0, &mut config);
    assert_eq!(config[..6], new_mac);

    // A queue set up anew (other rings).
    let acks = control(
        &mut dev,
        &mem,
        0x4000,
        &[
            &[0, 0],                         // no data
            &[0, 9, 1],                      // unknown receive-mode command
            &[1, 0, 5, 0, 0, 0],             // a table shorter than its count
            &[1, 1, 1, 2, 3],                // a short address
            &[4, 0, 1, 0],                   // multiqueue: not offered
            &[5, 0, 1, 0, 0, 0, 0, 0, 0, 0], // a guest offload that is not offered
            &[9],                            // nothing at all
        ],
    );
    assert_eq!(acks, [ERR; 7]);
    // A reset restores the MAC address the device was given.
    dev.reset();
    assert_eq!(dev.mac(), MAC);
}

#[test]
fn mergeable_buffers_take_a_frame_in_pieces() {
    let mem = memory();
    let (rxq, _txq) = queues(&mem);
    let (mut dev, peer) = device(&mem);
    dev.set_driver_features((1 << 32) | (1 << 15));
    // Three buffers of 1000 bytes: a 2500-byte frame (with its header) takes all three.
    rxq.add_desc_chains(
        &[
            desc(0x10_0000, 1000, WRITE, 0),
            desc(0x11_0000, 1000, WRITE, 0),
            desc(0x12_0000, 1000, WRITE, 0),
        ],
        0,
    )
    .unwrap();
    assert!(!kick(&mut dev, 0, &state(&rxq)));
    let a = frame(2500 - HDR, 3);
    peer.send(&a).unwrap();
    assert_eq!(dev.host_ready(&[state(&rxq)]), vec![0]);
    assert_eq!(used(&mem, &rxq, 0), ((0, 1000), 3));
    assert_eq!(used(&mem, &rxq, 1).0, (1, 1000));
    assert_eq!(used(&mem, &rxq, 2).0, (2, 500));
    let mut header = [0u8; HDR];
    header[10] = 3;
    assert_eq!(read(&mem, 0x10_0000, HDR), header, "num_buffers 3");
    let mut got = read(&mem, 0x10_0000 + HDR as u64, 1000 - HDR);
    got.extend(read(&mem, 0x11_0000, 1000));
    got.extend(read(&mem, 0x12_0000, 500));
    assert_eq!(got, a);

    // Too few buffers: none is taken, the frame waits for more.
    rxq.add_desc_chains(&[desc(0x13_0000, 1000, WRITE, 0)], 3)
        .unwrap();
    peer.send(&a).unwrap();
    assert!(dev.host_ready(&[state(&rxq)]).is_empty());
    assert!(dev.has_pending());
    assert_eq!(used_idx(&mem, &rxq), 3);
    rxq.add_desc_chains(
        &[
            desc(0x14_0000, 1000, WRITE, 0),
            desc(0x15_0000, 1000, WRITE, 0),
        ],
        4,
    )
    .unwrap();
    assert!(kick(&mut dev, 0, &state(&rxq)));
    assert_eq!(used_idx(&mem, &rxq), 6);
    assert!(!dev.has_pending());

    // A small frame takes one buffer and says so.
    rxq.add_desc_chains(&[desc(0x16_0000, 1000, WRITE, 0)], 6)
        .unwrap();
    peer.send(&frame(60, 4)).unwrap();
    assert_eq!(dev.host_ready(&[state(&rxq)]), vec![0]);
    assert_eq!(used(&mem, &rxq, 6).0, (6, (HDR + 60) as u32));
    assert_eq!(read(&mem, 0x16_0000, HDR), rx_header());
}

#[test]
fn a_received_frame_raises_used_through_the_transport() {
    let mem = memory();
    let (rxq, txq) = queues(&mem);
    rxq.add_desc_chains(&[desc(0x10_0000, 2048, WRITE, 0)], 0)
        .unwrap();
    let (net, peer) = device(&mem);
    let mut dev = TransportDevice::new(1, net, Mode::Compat);
    ask(&mut dev, Message::SetDeviceStatus { status: 3 });
    ask(
        &mut dev,
        Message::SetDriverFeatures {
            block_index: 0,
            features: Words::new(&[(1 << 5) | (1 << 16), 1]),
        },
    );
    ask(&mut dev, Message::SetDeviceStatus { status: 0xb });
    for (index, q) in [(0, &rxq), (1, &txq)] {
        let s = state(q);
        ask(
            &mut dev,
            Message::SetVqueue(VqueueConfig {
                index,
                size: s.size,
                desc_addr: s.desc,
                driver_addr: s.driver,
                device_addr: s.device,
            }),
        );
    }
    ask(&mut dev, Message::SetDeviceStatus { status: 0xf });
    assert_eq!(dev.status(), 0xf);
    // The driver posts its receive buffer; nothing has arrived yet.
    let out = ask(
        &mut dev,
        Message::EventAvail {
            vq_index: 0,
            next: AvailNext::NONE,
        },
    );
    assert!(out.is_empty());
    assert!(dev.backend().host_fd().is_some());
    let a = frame(98, 17);
    peer.send(&a).unwrap();
    let out = dev.host_ready();
    assert_eq!(out.len(), 1);
    assert_eq!(
        Frame::decode(&out[0]).unwrap().msg,
        Message::EventUsed { vq_index: 0 }
    );
    assert_eq!(read(&mem, 0x10_0000 + HDR as u64, a.len()), a);
    // The guest answers.
    let b = frame(70, 18);
    mem.write_slice(&b, GuestAddress(0x10_8000 + HDR as u64))
        .unwrap();
    txq.add_desc_chains(&[desc(0x10_8000, (HDR + b.len()) as u32, 0, 0)], 0)
        .unwrap();
    let out = ask(
        &mut dev,
        Message::EventAvail {
            vq_index: 1,
            next: AvailNext::NONE,
        },
    );
    assert_eq!(
        Frame::decode(&out[0]).unwrap().msg,
        Message::EventUsed { vq_index: 1 }
    );
    let mut buf = [0u8; 256];
    let n = peer.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], &b[..]);
}

#[test]
fn a_bound_socket_answers_the_last_sender_or_its_peer() {
    let dir = std::env::temp_dir().join(format!("vmsg-net-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (ours, theirs, other) = (dir.join("dev"), dir.join("peer"), dir.join("other"));
    // Without a peer: nothing to send to until something was received.
    let mut io = SocketIo::bind(&ours, None).unwrap();
    assert!(io.send(&frame(60, 19)).is_err());
    let peer = UnixDatagram::bind(&theirs).unwrap();
    peer.send_to(&frame(60, 20), &ours).unwrap();
    let mut buf = vec![0u8; 128];
    assert_eq!(io.recv(&mut buf).unwrap(), Some(60));
    assert_eq!(&buf[..60], &frame(60, 20)[..]);
    assert_eq!(io.recv(&mut buf).unwrap(), None);
    io.send(&frame(61, 21)).unwrap();
    assert_eq!(peer.recv(&mut buf).unwrap(), 61);
    assert_eq!(&buf[..61], &frame(61, 21)[..]);
    drop(io);
    // With a peer, rebinding over the stale socket.
    let other_sock = UnixDatagram::bind(&other).unwrap();
    let mut io = SocketIo::bind(&ours, Some(&other)).unwrap();
    peer.send_to(&frame(60, 22), &ours).unwrap();
    assert_eq!(io.recv(&mut buf).unwrap(), Some(60));
    io.send(&frame(62, 23)).unwrap();
    assert_eq!(other_sock.recv(&mut buf).unwrap(), 62);
    // A file that is not a socket is not replaced.
    let plain = dir.join("plain");
    std::fs::write(&plain, b"x").unwrap();
    assert!(SocketIo::bind(&plain, None).is_err());
    assert_eq!(std::fs::read(&plain).unwrap(), b"x");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn options_parse() {
    let o: NetOptions = "tap=vmsg0,host-ip=10.77.0.1/24,mac=52:54:00:aa:bb:0c"
        .parse()
        .unwrap();
    assert_eq!(
        o,
        NetOptions {
            endpoint: Endpoint::Tap {
                name: "vmsg0".into(),
                host_ip: Some(HostIp {
                    addr: [10, 77, 0, 1].into(),
                    prefix: 24
                }),
            },
            mac: Some([0x52, 0x54, 0, 0xaa, 0xbb, 0x0c]),
        }
    );
    let o: NetOptions = "socket=/tmp/a,peer=/tmp/b".parse().unwrap();
    assert_eq!(
        o,
        NetOptions {
            endpoint: Endpoint::Socket {
                path: PathBuf::from("/tmp/a"),
                peer: Some(PathBuf::from("/tmp/b")),
            },
            mac: None,
        }
    );
    assert_ne!(default_mac(0, 3), default_mac(1, 3));
    assert_ne!(default_mac(0, 3), default_mac(0, 4));
    for bad in [
        "",
        "tap=a,socket=b",
        "tap=a,tap=b",
        "tap=a,peer=b",
        "socket=a,host-ip=10.0.0.1/24",
        "tap=a,host-ip=10.0.0.1",
        "tap=a,host-ip=10.0.0.1/33",
        "tap=a,mac=52:54:00:aa:bb",
        "tap=a,mac=52:54:00:aa:bb:cc:dd",
        "tap=a,mac=52:54:00:aa:bb:zz",
        "tap=a,speed=10",
        "tap",
    ] {
        assert!(bad.parse::<NetOptions>().is_err(), "{bad:?} accepted");
    }
    let ip: HostIp = "192.168.7.1/20".parse().unwrap();
    assert_eq!(ip.netmask(), std::net::Ipv4Addr::new(255, 255, 240, 0));
    assert_eq!(ip.to_string(), "192.168.7.1/20");
    let zero: HostIp = "0.0.0.0/0".parse().unwrap();
    assert_eq!(zero.netmask(), std::net::Ipv4Addr::UNSPECIFIED);
}

/// An ARP request from 10.77.7.2 (our MAC) for 10.77.7.1.
fn arp_request() -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend(MAC);
    f.extend([0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
    f.extend(MAC);
    f.extend([10, 77, 7, 2]);
    f.extend([0; 6]);
    f.extend([10, 77, 7, 1]);
    f
}

/// Needs CAP_NET_ADMIN and /dev/net/tun: run with `cargo test -p virtio-msg-device --test net
/// -- --ignored`. The host side of a TAP interface the device created and configured answers
/// an ARP request the guest sends.
#[test]
#[ignore = "needs CAP_NET_ADMIN and /dev/net/tun"]
fn a_tap_interface_with_a_host_address_answers_arp() {
    let opts: NetOptions = "tap=vmsgtest0,host-ip=10.77.7.1/24".parse().unwrap();
    let io = opts.open().expect("open the tap (CAP_NET_ADMIN?)");
    let mem = memory();
    let (rxq, txq) = queues(&mem);
    let mut dev = Net::new(Arc::new(mem.clone()), io, MAC);
    let chains: Vec<_> = (0..8)
        .map(|i| desc(0x10_0000 + 0x1000 * i, 2048, WRITE, 0))
        .collect();
    rxq.add_desc_chains(&chains, 0).unwrap();
    // Whatever the host sent already (router solicitations, ...) lands first.
    kick(&mut dev, 0, &state(&rxq));
    let req = arp_request();
    let mut buf = vec![0u8; HDR];
    buf.extend(&req);
    mem.write_slice(&buf, GuestAddress(0x18_0000)).unwrap();
    txq.add_desc_chains(&[desc(0x18_0000, buf.len() as u32, 0, 0)], 0)
        .unwrap();
    assert!(kick(&mut dev, 1, &state(&txq)));
    assert_eq!(dev.stats().tx_packets, 1);
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut seen = 0;
    loop {
        dev.host_ready(&[state(&rxq), state(&txq)]);
        let idx = used_idx(&mem, &rxq);
        while seen < idx {
            let ((id, len), _) = used(&mem, &rxq, seen.into());
            let data = read(&mem, 0x10_0000 + 0x1000 * u64::from(id), len as usize);
            assert_eq!(data[..HDR], rx_header());
            let f = &data[HDR..];
            // An ARP reply (opcode 2) to our MAC, from 10.77.7.1.
            if f.len() >= 42 && f[12..14] == [8, 6] && f[20..22] == [0, 2] {
                assert_eq!(f[..6], MAC);
                assert_eq!(f[28..32], [10, 77, 7, 1]);
                return;
            }
            seen += 1;
        }
        assert!(Instant::now() < deadline, "no ARP reply from the host");
        assert!(seen < 8, "receive buffers used up without an ARP reply");
        std::thread::sleep(Duration::from_millis(20));
    }
}
