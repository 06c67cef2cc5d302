// SPDX-License-Identifier: GPL-2.0 OR MIT

//! The device side against every transport and bus message, in both modes.

use virtio_msg_device::{
    bus::FifoBus,
    transport::{QueueState, TransportDevice, QUEUE_MAX_SIZE, VENDOR_QEMU},
    Backend, Mode,
};
use virtio_msg_wire::{
    AvailNext, DeviceInfo, DeviceState, Frame, Message, VqueueConfig, VqueueInfo, Words,
};

const VERSION_1: u64 = 1 << 32;

/// An entropy-like device: one queue, 8 bytes of configuration, VERSION_1 and bit 3.
#[derive(Default)]
struct Fake {
    config: [u8; 8],
    notified: Vec<u32>,
    resets: u32,
}

impl Backend for Fake {
    fn device_id(&self) -> u32 {
        4
    }
    fn features(&self) -> u64 {
        VERSION_1 | 1 << 3
    }
    fn config_size(&self) -> u32 {
        8
    }
    fn read_config(&self, offset: u32, out: &mut [u8]) {
        out.copy_from_slice(&self.config[offset as usize..offset as usize + out.len()]);
    }
    fn write_config(&mut self, offset: u32, data: &[u8]) {
        self.config[offset as usize..offset as usize + data.len()].copy_from_slice(data);
    }
    fn num_queues(&self) -> u32 {
        1
    }
    fn queue_notified(&mut self, index: u32, _queues: &[QueueState]) -> Vec<u32> {
        self.notified.push(index);
        vec![index]
    }
    fn reset(&mut self) {
        self.resets += 1;
    }
}

fn device(mode: Mode) -> TransportDevice<Fake> {
    let fake = Fake {
        config: [1, 2, 3, 4, 5, 6, 7, 8],
        ..Default::default()
    };
    TransportDevice::new(3, fake, mode)
}

/// Sends `msg` with token 0x55 and decodes what comes back.
fn ask(dev: &mut TransportDevice<Fake>, msg: Message<'_>) -> Vec<Vec<u8>> {
    dev.handle(&Frame {
        dev_num: 3,
        token: 0x55,
        msg,
    })
}

/// The single answer to `msg`, decoded; panics if there is not exactly one.
fn answer(dev: &mut TransportDevice<Fake>, msg: Message<'_>, check: impl FnOnce(&Frame<'_>)) {
    let out = ask(dev, msg);
    assert_eq!(out.len(), 1, "expected one answer to {msg:?}");
    let frame = Frame::decode(&out[0]).unwrap();
    check(&frame);
}

fn set_status(dev: &mut TransportDevice<Fake>, status: u32) -> Option<u32> {
    let out = ask(dev, Message::SetDeviceStatus { status });
    out.first().map(|b| match Frame::decode(b).unwrap().msg {
        Message::DeviceStatusSet { status } => status,
        m => panic!("unexpected {m:?}"),
    })
}

fn bring_up(dev: &mut TransportDevice<Fake>) {
    set_status(dev, 1);
    set_status(dev, 3);
    ask(
        dev,
        Message::SetDriverFeatures {
            block_index: 0,
            features: Words::new(&[0, 1]),
        },
    );
    assert_eq!(set_status(dev, 0xb), Some(0xb));
    let q = VqueueConfig {
        index: 0,
        size: 64,
        desc_addr: 0x1000,
        driver_addr: 0x2000,
        device_addr: 0x3000,
    };
    assert_eq!(ask(dev, Message::SetVqueue(q)).len(), 1);
    assert_eq!(set_status(dev, 0xf), Some(0xf));
}

#[test]
fn device_info_as_the_device_model() {
    let mut dev = device(Mode::Compat);
    answer(&mut dev, Message::GetDeviceInfo, |f| {
        assert_eq!(f.token, 0x55);
        assert_eq!(f.dev_num, 3);
        assert_eq!(
            f.msg,
            Message::DeviceInfo(DeviceInfo {
                device_id: 4,
                vendor_id: VENDOR_QEMU,
                num_feature_bits: 64,
                config_size: 8,
                max_virtqueues: 1,
                admin_vq_start: 0,
                admin_vq_count: 0,
            })
        );
    });
}

#[test]
fn feature_blocks() {
    let mut dev = device(Mode::Compat);
    answer(
        &mut dev,
        Message::GetDeviceFeatures {
            block_index: 0,
            num_blocks: 3,
        },
        |f| {
            assert_eq!(
                f.msg,
                Message::DeviceFeatures {
                    block_index: 0,
                    features: Words::new(&[1 << 3, 1, 0])
                }
            );
        },
    );
    // More than 8 blocks: the device model answers 8 (07-malformed.txt:50), strict mode (with
    // room for 12 in a 64-byte message) nothing.
    answer(
        &mut dev,
        Message::GetDeviceFeatures {
            block_index: 0,
            num_blocks: 9,
        },
        |f| {
            let Message::DeviceFeatures { features, .. } = f.msg else {
                panic!("{f:?}")
            };
            assert_eq!(features.len(), 8);
        },
    );
    assert!(ask(
        &mut device(Mode::Strict),
        Message::GetDeviceFeatures {
            block_index: 0,
            num_blocks: 13
        }
    )
    .is_empty());
    // Blocks far away are zero, without overflow.
    answer(
        &mut dev,
        Message::GetDeviceFeatures {
            block_index: u32::MAX,
            num_blocks: 2,
        },
        |f| {
            assert_eq!(
                f.msg,
                Message::DeviceFeatures {
                    block_index: u32::MAX,
                    features: Words::new(&[0, 0])
                }
            );
        },
    );
    answer(
        &mut dev,
        Message::SetDriverFeatures {
            block_index: 1,
            features: Words::new(&[1]),
        },
        |f| {
            assert_eq!(f.msg, Message::DriverFeaturesSet);
        },
    );
    assert_eq!(dev.driver_features(), VERSION_1);
}

#[test]
fn config_access_is_bounded() {
    for mode in [Mode::Compat, Mode::Strict] {
        let mut dev = device(mode);
        answer(
            &mut dev,
            Message::GetConfig {
                offset: 2,
                length: 4,
            },
            |f| {
                assert_eq!(
                    f.msg,
                    Message::Config {
                        generation: 0,
                        offset: 2,
                        data: &[3, 4, 5, 6]
                    }
                );
            },
        );
        // More than 28 bytes (a 48-byte message's worth) in compat mode, more than the space
        // in strict mode: no answer.
        assert!(ask(
            &mut dev,
            Message::GetConfig {
                offset: 0,
                length: 29,
            },
        )
        .is_empty());
    }

    // Strict: past the configuration space, no answer.
    let mut strict = device(Mode::Strict);
    for (offset, length) in [(6, 4), (u32::MAX, 4)] {
        assert!(ask(&mut strict, Message::GetConfig { offset, length }).is_empty());
    }
    assert!(ask(
        &mut strict,
        Message::SetConfig {
            generation: 0,
            offset: 7,
            data: &[1, 2]
        }
    )
    .is_empty());

    // Compat: the device model reads bytes past the space as 0xff (07-malformed.txt:37) and
    // ignores writes there (the echo still comes back).
    let mut compat = device(Mode::Compat);
    for (offset, length, data) in [
        (6, 4, &[7, 8, 0xff, 0xff][..]),
        (u32::MAX, 2, &[0xff, 0xff][..]),
        (0, 0, &[][..]),
    ] {
        answer(&mut compat, Message::GetConfig { offset, length }, |f| {
            assert_eq!(
                f.msg,
                Message::Config {
                    generation: 0,
                    offset,
                    data
                }
            );
        });
    }
    answer(
        &mut compat,
        Message::SetConfig {
            generation: 0,
            offset: 7,
            data: &[1, 2],
        },
        |f| {
            assert_eq!(
                f.msg,
                Message::ConfigSet {
                    generation: 0,
                    offset: 7,
                    length: 2,
                    echo: Some(&[1, 2])
                }
            );
        },
    );
    assert_eq!(compat.backend().config, [1, 2, 3, 4, 5, 6, 7, 1]);
}

#[test]
fn set_config_generation_only_checked_in_strict_mode() {
    let mut compat = device(Mode::Compat);
    compat.config_changed();
    answer(
        &mut compat,
        Message::SetConfig {
            generation: 0,
            offset: 0,
            data: &[9],
        },
        |f| {
            assert_eq!(
                f.msg,
                Message::ConfigSet {
                    generation: 1,
                    offset: 0,
                    length: 1,
                    echo: Some(&[9])
                }
            );
        },
    );
    assert_eq!(compat.backend().config[0], 9);

    let mut strict = device(Mode::Strict);
    strict.config_changed();
    answer(
        &mut strict,
        Message::SetConfig {
            generation: 0,
            offset: 0,
            data: &[9],
        },
        |f| {
            assert_eq!(
                f.msg,
                Message::ConfigSet {
                    generation: 1,
                    offset: 0,
                    length: 0,
                    echo: None
                }
            );
        },
    );
    assert_eq!(strict.backend().config[0], 1);
    answer(
        &mut strict,
        Message::SetConfig {
            generation: 1,
            offset: 0,
            data: &[9],
        },
        |f| {
            assert_eq!(
                f.msg,
                Message::ConfigSet {
                    generation: 1,
                    offset: 0,
                    length: 1,
                    echo: None
                }
            );
        },
    );
}

#[test]
fn status_and_features_ok() {
    let mut dev = device(Mode::Strict);
    answer(&mut dev, Message::GetDeviceStatus, |f| {
        assert_eq!(f.msg, Message::DeviceStatus { status: 0 })
    });
    // Features the device does not offer: FEATURES_OK is refused (strict) ...
    ask(
        &mut dev,
        Message::SetDriverFeatures {
            block_index: 0,
            features: Words::new(&[1 << 4, 1]),
        },
    );
    assert_eq!(set_status(&mut dev, 0xb), Some(0x3));

    // ... and the device model aborts (compat): the emulated device goes silent.
    let mut dev = device(Mode::Compat);
    ask(
        &mut dev,
        Message::SetDriverFeatures {
            block_index: 0,
            features: Words::new(&[1 << 4, 1]),
        },
    );
    assert_eq!(set_status(&mut dev, 0xb), None);
    assert!(dev.is_dead());
    assert!(ask(&mut dev, Message::GetDeviceInfo).is_empty());
}

#[test]
fn queues() {
    let mut dev = device(Mode::Compat);
    // Not set up yet: the device model reports its largest size, not 0 (it reported 256 in no
    // recording: 02-probe-rng.txt:39 says 1024).
    answer(&mut dev, Message::GetVqueue { index: 0 }, |f| {
        let Message::Vqueue(VqueueInfo {
            max_size, cur_size, ..
        }) = f.msg
        else {
            panic!()
        };
        assert_eq!((max_size, cur_size), (QUEUE_MAX_SIZE, QUEUE_MAX_SIZE));
    });
    // A queue the device lacks: max_size 0.
    answer(&mut dev, Message::GetVqueue { index: 1 }, |f| {
        let Message::Vqueue(VqueueInfo { max_size, .. }) = f.msg else {
            panic!()
        };
        assert_eq!(max_size, 0);
    });
    // SET_VQUEUE of a queue out of range, or too large: no answer.
    let q = VqueueConfig {
        index: 1,
        size: 64,
        desc_addr: 1,
        driver_addr: 2,
        device_addr: 3,
    };
    assert!(ask(&mut dev, Message::SetVqueue(q)).is_empty());
    let q = VqueueConfig {
        index: 0,
        size: QUEUE_MAX_SIZE * 2,
        desc_addr: 1,
        driver_addr: 2,
        device_addr: 3,
    };
    assert!(ask(&mut dev, Message::SetVqueue(q)).is_empty());

    bring_up(&mut dev);
    answer(&mut dev, Message::GetVqueue { index: 0 }, |f| {
        assert_eq!(
            f.msg,
            Message::Vqueue(VqueueInfo {
                index: 0,
                max_size: QUEUE_MAX_SIZE,
                cur_size: 64,
                desc_addr: 0x1000,
                driver_addr: 0x2000,
                device_addr: 0x3000,
            })
        );
    });
    answer(&mut dev, Message::ResetVqueue { index: 0 }, |f| {
        assert_eq!(f.msg, Message::VqueueReset)
    });
    assert_eq!(dev.queue(0), Some(&QueueState::default()));
}

/// EVENT_AVAIL for queue `vq_index`.
fn kick(dev: &mut TransportDevice<Fake>, vq_index: u32) -> Vec<Vec<u8>> {
    ask(
        dev,
        Message::EventAvail {
            vq_index,
            next: AvailNext::NONE,
        },
    )
}

fn status(dev: &mut TransportDevice<Fake>) -> u32 {
    let out = ask(dev, Message::GetDeviceStatus);
    match Frame::decode(&out[0]).unwrap().msg {
        Message::DeviceStatus { status } => status,
        m => panic!("unexpected {m:?}"),
    }
}

#[test]
fn notifications() {
    let mut dev = device(Mode::Compat);
    // Before DRIVER_OK the device model answers a kick with EVENT_CONFIG (without data), and
    // the device is broken until it is reset (06-rng-data.txt, part C).
    let out = kick(&mut dev, 0);
    assert_eq!(out.len(), 1);
    let f = Frame::decode(&out[0]).unwrap();
    assert_eq!(f.token, 0);
    assert!(matches!(f.msg, Message::EventConfig { data: None, .. }));
    assert!(dev.backend().notified.is_empty());
    bring_up(&mut dev);
    assert!(kick(&mut dev, 0).is_empty(), "broken until reset");
    assert!(dev.backend().notified.is_empty());

    assert_eq!(set_status(&mut dev, 0), Some(0));
    bring_up(&mut dev);
    let out = kick(&mut dev, 0);
    assert_eq!(
        Frame::decode(&out[0]).unwrap().msg,
        Message::EventUsed { vq_index: 0 }
    );
    assert_eq!(dev.backend().notified, [0]);
    // A kick for a queue the device lacks: no answer, DEVICE_NEEDS_RESET, and the device takes
    // no more notifications (06-rng-data.txt, part B).
    assert!(kick(&mut dev, 7).is_empty());
    assert_eq!(status(&mut dev), 0x4f);
    assert!(kick(&mut dev, 0).is_empty());
    assert_eq!(dev.backend().notified, [0]);
    assert_eq!(set_status(&mut dev, 0), Some(0));
    bring_up(&mut dev);
    assert_eq!(kick(&mut dev, 0).len(), 1);

    // After FEATURES_OK a kick before DRIVER_OK sets DEVICE_NEEDS_RESET too, and reports it.
    let mut dev = device(Mode::Compat);
    set_status(&mut dev, 3);
    ask(
        &mut dev,
        Message::SetDriverFeatures {
            block_index: 0,
            features: Words::new(&[0, 1]),
        },
    );
    set_status(&mut dev, 0xb);
    let out = kick(&mut dev, 0);
    assert!(matches!(
        Frame::decode(&out[0]).unwrap().msg,
        Message::EventConfig {
            device_status: 0x4b,
            ..
        }
    ));

    // Strict mode: nothing before DRIVER_OK, nothing for a queue the device lacks, and neither
    // breaks the device.
    let mut strict = device(Mode::Strict);
    assert!(kick(&mut strict, 0).is_empty());
    bring_up(&mut strict);
    assert!(kick(&mut strict, 7).is_empty());
    assert_eq!(status(&mut strict), 0xf);
    assert_eq!(kick(&mut strict, 0).len(), 1);
}

#[test]
fn reset_clears_everything_but_the_generation() {
    let mut dev = device(Mode::Compat);
    bring_up(&mut dev);
    dev.config_changed();
    assert_eq!(set_status(&mut dev, 0), Some(0));
    assert_eq!(dev.status(), 0);
    assert_eq!(dev.driver_features(), 0);
    assert_eq!(dev.queue(0), Some(&QueueState::default()));
    assert_eq!(dev.backend().resets, 1);
    answer(
        &mut dev,
        Message::GetConfig {
            offset: 0,
            length: 1,
        },
        |f| {
            assert!(matches!(f.msg, Message::Config { generation: 1, .. }));
        },
    );
}

#[test]
fn shared_memory_only_in_strict_mode() {
    assert!(ask(&mut device(Mode::Compat), Message::GetShm { index: 0 }).is_empty());
    answer(
        &mut device(Mode::Strict),
        Message::GetShm { index: 2 },
        |f| {
            assert_eq!(
                f.msg,
                Message::Shm {
                    index: 2,
                    length: 0,
                    address: 0
                }
            );
        },
    );
}

#[test]
fn responses_from_the_driver_are_ignored() {
    let mut dev = device(Mode::Compat);
    assert!(ask(&mut dev, Message::DeviceStatus { status: 1 }).is_empty());
    assert!(ask(&mut dev, Message::EventUsed { vq_index: 0 }).is_empty());
}

/// Sends `msg` on the bus with token 9 and returns what comes back, encoded.
fn bus_ask(bus: &mut FifoBus, msg: Message<'_>) -> Vec<Vec<u8>> {
    let mut buf = [0u8; 64];
    let dev_num = if msg.id().0 == virtio_msg_wire::Class::Bus {
        0
    } else {
        3
    };
    let n = Frame {
        dev_num,
        token: 9,
        msg,
    }
    .encode(&mut buf)
    .unwrap();
    bus.handle(&buf[..n])
}

#[test]
fn bus_get_devices_windows() {
    let mut bus = FifoBus::new(Mode::Compat);
    bus.attach(0, Box::new(Fake::default())).unwrap();
    bus.attach(3, Box::new(Fake::default())).unwrap();
    bus.attach(31, Box::new(Fake::default())).unwrap();
    assert!(bus.attach(32, Box::new(Fake::default())).is_err());
    assert!(bus.attach(3, Box::new(Fake::default())).is_err());

    let out = bus_ask(
        &mut bus,
        Message::GetDevices {
            offset: 0,
            count: 32,
        },
    );
    assert_eq!(
        Frame::decode(&out[0]).unwrap().msg,
        Message::Devices {
            offset: 0,
            count: 32,
            next_offset: 32,
            bitmap: &[0x09, 0, 0, 0x80]
        }
    );
    // The window is clipped to the 32 slots.
    let out = bus_ask(
        &mut bus,
        Message::GetDevices {
            offset: 24,
            count: 16,
        },
    );
    assert_eq!(
        Frame::decode(&out[0]).unwrap().msg,
        Message::Devices {
            offset: 24,
            count: 8,
            next_offset: 32,
            bitmap: &[0x80]
        }
    );
    // Beyond the slots: the device model clamps the offset too (01-enumeration.txt:28), and
    // answers with token 0 whatever the request's.
    let out = bus_ask(
        &mut bus,
        Message::GetDevices {
            offset: 40,
            count: 8,
        },
    );
    let f = Frame::decode(&out[0]).unwrap();
    assert_eq!(
        f.msg,
        Message::Devices {
            offset: 32,
            count: 0,
            next_offset: 32,
            bitmap: &[]
        }
    );
    assert_eq!((f.token, f.dev_num), (0, 0));

    // Strict mode echoes the offset and ends the walk with next_offset 0 once the window
    // reaches the last device number.
    let mut strict = FifoBus::new(Mode::Strict);
    strict.attach(31, Box::new(Fake::default())).unwrap();
    for (offset, count, answer) in [(0, 16, (16, 16)), (24, 16, (8, 0)), (40, 8, (0, 0))] {
        let out = bus_ask(&mut strict, Message::GetDevices { offset, count });
        let f = Frame::decode(&out[0]).unwrap();
        let Message::Devices {
            offset: o,
            count,
            next_offset,
            ..
        } = f.msg
        else {
            panic!("{f:?}")
        };
        assert_eq!((o, (count, next_offset)), (offset, answer));
        assert_eq!(f.token, 0);
    }
}

/// A device taken off the bus is neither listed nor answered, and EVENT_DEVICE says so; put
/// back, it is listed again, reset, with the same backend.
#[test]
fn bus_unplug_and_plug() {
    let mut bus = FifoBus::new(Mode::Strict);
    bus.attach(3, Box::new(Fake::default())).unwrap();
    let listed = |bus: &mut FifoBus| {
        let out = bus_ask(
            bus,
            Message::GetDevices {
                offset: 0,
                count: 8,
            },
        );
        match Frame::decode(&out[0]).unwrap().msg {
            Message::Devices { bitmap, .. } => bitmap[0],
            m => panic!("{m:?}"),
        }
    };
    assert_eq!(listed(&mut bus), 0x08);
    // Under way: a driver acknowledged it.
    bus_ask(&mut bus, Message::SetDeviceStatus { status: 1 });

    let event = bus.unplug(3).unwrap();
    let f = Frame::decode(&event).unwrap();
    assert_eq!(
        f.msg,
        Message::EventDevice {
            device_number: 3,
            state: DeviceState::Removed
        }
    );
    assert_eq!((f.dev_num, f.token), (0, 0));
    assert_eq!(listed(&mut bus), 0);
    assert!(bus_ask(&mut bus, Message::GetDeviceInfo).is_empty());
    assert_eq!(bus.unplug(3), None);
    assert_eq!(bus.plug(4), None);

    let event = bus.plug(3).unwrap();
    assert_eq!(
        Frame::decode(&event).unwrap().msg,
        Message::EventDevice {
            device_number: 3,
            state: DeviceState::Ready
        }
    );
    assert_eq!(listed(&mut bus), 0x08);
    // Back reset: a driver starts from status 0.
    let out = bus_ask(&mut bus, Message::GetDeviceStatus);
    assert_eq!(
        Frame::decode(&out[0]).unwrap().msg,
        Message::DeviceStatus { status: 0 }
    );
    assert_eq!(bus.plug(3), None);
}

/// A device side that started again says REMOVED then READY for each device it has, in
/// order, and nothing of one it took off.
#[test]
fn bus_restart_announces_every_device() {
    let mut bus = FifoBus::new(Mode::Compat);
    for n in [1, 4, 9] {
        bus.attach(n, Box::new(Fake::default())).unwrap();
    }
    bus.unplug(4).unwrap();
    let events = bus.restarted();
    let said: Vec<_> = events
        .iter()
        .map(|m| {
            let f = Frame::decode(m).unwrap();
            assert_eq!((f.dev_num, f.token), (0, 0));
            f.msg
        })
        .collect();
    let ev = |device_number, state| Message::EventDevice {
        device_number,
        state,
    };
    assert_eq!(
        said,
        [
            ev(1, DeviceState::Removed),
            ev(1, DeviceState::Ready),
            ev(9, DeviceState::Removed),
            ev(9, DeviceState::Ready)
        ]
    );
}

#[test]
fn bus_ping_and_routing() {
    let mut bus = FifoBus::new(Mode::Compat);
    bus.attach(3, Box::new(Fake::default())).unwrap();
    let out = bus_ask(&mut bus, Message::Ping { data: 0xdead_beef });
    assert_eq!(
        Frame::decode(&out[0]).unwrap().msg,
        Message::Pong { data: 0xdead_beef }
    );
    let out = bus_ask(&mut bus, Message::GetDeviceStatus);
    let f = Frame::decode(&out[0]).unwrap();
    assert_eq!(f.msg, Message::DeviceStatus { status: 0 });
    assert_eq!(f.dev_num, 3);
    // Garbage is counted and dropped.
    assert!(bus.handle(&[1, 2, 3]).is_empty());
    assert_eq!(bus.stats().malformed, 1);
    let request = |dev_num: u16, msg: Message<'_>| {
        let mut buf = [0u8; 64];
        let n = Frame {
            dev_num,
            token: 1,
            msg,
        }
        .encode(&mut buf)
        .unwrap();
        buf[..n].to_vec()
    };
    // A device number below 32 without a device: the device model answers the getters as a
    // device of id 0 (07-malformed.txt:121) but not SET_DEVICE_STATUS (07-malformed.txt:132).
    let out = bus.handle(&request(5, Message::GetDeviceInfo));
    let f = Frame::decode(&out[0]).unwrap();
    assert_eq!((f.dev_num, f.token), (5, 1));
    assert!(matches!(
        f.msg,
        Message::DeviceInfo(DeviceInfo {
            device_id: 0,
            vendor_id: VENDOR_QEMU,
            num_feature_bits: 64,
            ..
        })
    ));
    assert!(bus
        .handle(&request(5, Message::SetDeviceStatus { status: 1 }))
        .is_empty());
    assert_eq!(bus.stats().no_device, 1);
    // 32 and above: nothing.
    assert!(bus.handle(&request(32, Message::GetDeviceInfo)).is_empty());
    // Strict mode answers no device number without a device.
    let mut strict = FifoBus::new(Mode::Strict);
    assert!(strict
        .handle(&request(5, Message::GetDeviceInfo))
        .is_empty());
    assert_eq!(strict.stats().no_device, 1);
}

/// Requests the device cannot parse get no answer at all (which the driver must survive with a
/// timeout), are counted, and change nothing. Strict mode: everything the codec refuses.
#[test]
fn malformed_requests_get_no_answer() {
    let mut bus = FifoBus::new(Mode::Strict);
    bus.attach(0, Box::new(Fake::default())).unwrap();
    let encode = |msg: Message<'_>| {
        let mut buf = [0u8; 64];
        let n = Frame {
            dev_num: 0,
            token: 9,
            msg,
        }
        .encode(&mut buf)
        .unwrap();
        buf[..n].to_vec()
    };
    let info = encode(Message::GetDeviceInfo);
    let set_vqueue = encode(Message::SetVqueue(VqueueConfig {
        index: 0,
        size: 64,
        desc_addr: 0x1000,
        driver_addr: 0x2000,
        device_addr: 0x3000,
    }));
    let with_size = |bytes: &[u8], size: u16| {
        let mut b = bytes.to_vec();
        b[6..8].copy_from_slice(&size.to_le_bytes());
        b
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", vec![]),
        ("short header", info[..7].to_vec()),
        ("msg_size below the header", with_size(&info, 7)),
        ("msg_size beyond what arrived", with_size(&info, 9)),
        ("payload where none belongs", {
            let mut b = with_size(&info, 12);
            b.extend_from_slice(&[0; 4]);
            b
        }),
        ("unknown transport id", {
            let mut b = info.clone();
            b[1] = 0x3f;
            b
        }),
        ("bus message for a device number", {
            let mut b = encode(Message::Ping { data: 1 });
            b[2] = 1;
            b
        }),
        // The C prototype's SET_VQUEUE without its reserved field (44 bytes): the device
        // model drops it, and so do we.
        ("SET_VQUEUE of 44 bytes", {
            let mut b = set_vqueue[..44].to_vec();
            b[6..8].copy_from_slice(&44u16.to_le_bytes());
            b
        }),
        ("truncated GET_CONFIG", {
            let mut b = encode(Message::GetConfig {
                offset: 0,
                length: 4,
            });
            b.truncate(12);
            b[6..8].copy_from_slice(&12u16.to_le_bytes());
            b
        }),
    ];
    for (what, bytes) in &cases {
        assert!(bus.handle(bytes).is_empty(), "{what}: answered");
    }
    assert_eq!(bus.stats().malformed, cases.len() as u64);
    // The queue was not set up by the short SET_VQUEUE.
    assert_eq!(bus.device(0).unwrap().queue(0).unwrap().size, 0);
    // Well-formed requests still work afterwards.
    assert_eq!(bus.handle(&info).len(), 1);
}

/// Compat mode reads requests as the device model does: from a slot, by what their fields
/// need (07-malformed.txt, 01-enumeration.txt).
#[test]
fn compat_mode_reads_slots_as_the_device_model() {
    let mut bus = FifoBus::new(Mode::Compat);
    bus.attach(0, Box::new(Fake::default())).unwrap();
    let slot = |bytes: &[u8]| {
        let mut s = [0u8; 48];
        s[..bytes.len()].copy_from_slice(bytes);
        s
    };
    let cases: &[(&str, &[u8], bool)] = &[
        (
            "GET_DEVICE_STATUS, msg_size 48",
            &[0, 7, 0, 0, 1, 0, 48, 0],
            true,
        ),
        (
            "GET_DEVICE_STATUS, msg_size 49",
            &[0, 7, 0, 0, 1, 0, 49, 0],
            false,
        ),
        (
            "GET_DEVICE_STATUS, msg_size 7",
            &[0, 7, 0, 0, 1, 0, 7, 0],
            false,
        ),
        (
            "GET_DEVICE_STATUS, type bits 2-7",
            &[0xfc, 7, 0, 0, 1, 0, 8, 0],
            true,
        ),
        (
            "GET_DEVICE_STATUS, response bit",
            &[1, 7, 0, 0, 1, 0, 8, 0],
            false,
        ),
        (
            "GET_CONFIG, msg_size 12",
            &[0, 5, 0, 0, 1, 0, 12, 0, 0, 0, 0, 0, 4],
            false,
        ),
        ("GET_SHM", &[0, 0x0c, 0, 0, 1, 0, 12, 0], false),
        (
            "EVENT_CONFIG to the device",
            &[0, 0x40, 0, 0, 1, 0, 16, 0],
            false,
        ),
        (
            "SET_DRIVER_FEATURES of 0 blocks",
            &[0, 4, 0, 0, 1, 0, 16, 0],
            false,
        ),
        (
            "PING, msg_size 8",
            &[2, 3, 0, 0, 1, 0, 8, 0, 1, 2, 3, 4],
            true,
        ),
        (
            "GET_DEVICES, dev_num 5, response bit",
            &[3, 2, 5, 0, 1, 0, 12, 0, 0, 0, 32, 0],
            true,
        ),
        (
            "EVENT_DEVICE to the device",
            &[2, 0x40, 0, 0, 1, 0, 12, 0, 0, 0, 1, 0],
            false,
        ),
        ("bus id 5", &[2, 5, 0, 0, 1, 0, 12, 0], false),
    ];
    for (what, bytes, answered) in cases {
        let out = bus.handle(&slot(bytes));
        assert_eq!(!out.is_empty(), *answered, "{what}");
    }
    // The PING's data came from the slot, beyond its msg_size.
    let out = bus.handle(&slot(&[2, 3, 0, 0, 1, 0, 8, 0, 1, 2, 3, 4]));
    assert_eq!(
        Frame::decode(&out[0]).unwrap().msg,
        Message::Pong { data: 0x0403_0201 }
    );
}
