// SPDX-License-Identifier: GPL-2.0 OR MIT

//! The device side against every transport and bus message, in both modes.

use virtio_msg_device::{
    bus::FifoBus,
    transport::{QueueState, TransportDevice, QUEUE_DEFAULT_SIZE, QUEUE_MAX_SIZE, VENDOR_QEMU},
    Backend, Mode,
};
use virtio_msg_wire::{AvailNext, DeviceInfo, Frame, Message, VqueueConfig, VqueueInfo, Words};

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
    fn queue_notified(&mut self, index: u32, _queue: &QueueState) -> bool {
        self.notified.push(index);
        true
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
    // More than 8 blocks do not fit a 48-byte message: the device model does not answer.
    assert!(ask(
        &mut dev,
        Message::GetDeviceFeatures {
            block_index: 0,
            num_blocks: 9
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
    let mut dev = device(Mode::Compat);
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
    // Past the configuration space, or more than 28 bytes: no answer.
    assert!(ask(
        &mut dev,
        Message::GetConfig {
            offset: 6,
            length: 4
        }
    )
    .is_empty());
    assert!(ask(
        &mut dev,
        Message::GetConfig {
            offset: u32::MAX,
            length: 4
        }
    )
    .is_empty());
    assert!(ask(
        &mut dev,
        Message::GetConfig {
            offset: 0,
            length: 29
        }
    )
    .is_empty());
    assert!(ask(
        &mut dev,
        Message::SetConfig {
            generation: 0,
            offset: 7,
            data: &[1, 2]
        }
    )
    .is_empty());
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
                    echo: None
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
    // Not set up yet: the device model reports its default size, not 0.
    answer(&mut dev, Message::GetVqueue { index: 0 }, |f| {
        let Message::Vqueue(VqueueInfo {
            max_size, cur_size, ..
        }) = f.msg
        else {
            panic!()
        };
        assert_eq!((max_size, cur_size), (QUEUE_MAX_SIZE, QUEUE_DEFAULT_SIZE));
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

#[test]
fn notifications() {
    let mut dev = device(Mode::Compat);
    // Before DRIVER_OK the device model answers a kick with EVENT_CONFIG (without data).
    let out = ask(
        &mut dev,
        Message::EventAvail {
            vq_index: 0,
            next: AvailNext::NONE,
        },
    );
    assert_eq!(out.len(), 1);
    let f = Frame::decode(&out[0]).unwrap();
    assert_eq!(f.token, 0);
    assert!(matches!(f.msg, Message::EventConfig { data: None, .. }));
    assert!(dev.backend().notified.is_empty());

    bring_up(&mut dev);
    let out = ask(
        &mut dev,
        Message::EventAvail {
            vq_index: 0,
            next: AvailNext::NONE,
        },
    );
    assert_eq!(
        Frame::decode(&out[0]).unwrap().msg,
        Message::EventUsed { vq_index: 0 }
    );
    assert_eq!(dev.backend().notified, [0]);
    // A kick for a queue the device lacks is ignored.
    assert!(ask(
        &mut dev,
        Message::EventAvail {
            vq_index: 7,
            next: AvailNext::NONE
        }
    )
    .is_empty());

    // Strict mode: nothing before DRIVER_OK.
    let mut strict = device(Mode::Strict);
    assert!(ask(
        &mut strict,
        Message::EventAvail {
            vq_index: 0,
            next: AvailNext::NONE
        }
    )
    .is_empty());
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
    let out = bus_ask(
        &mut bus,
        Message::GetDevices {
            offset: 40,
            count: 8,
        },
    );
    assert_eq!(
        Frame::decode(&out[0]).unwrap().msg,
        Message::Devices {
            offset: 40,
            count: 0,
            next_offset: 40,
            bitmap: &[]
        }
    );
    assert_eq!(Frame::decode(&out[0]).unwrap().token, 9);
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
    // Garbage and unknown device numbers are counted and dropped.
    assert!(bus.handle(&[1, 2, 3]).is_empty());
    let mut buf = [0u8; 16];
    let n = Frame {
        dev_num: 5,
        token: 1,
        msg: Message::GetDeviceInfo,
    }
    .encode(&mut buf)
    .unwrap();
    assert!(bus.handle(&buf[..n]).is_empty());
    assert_eq!(bus.stats().malformed, 1);
    assert_eq!(bus.stats().no_device, 1);
}

/// Requests the device cannot parse get no answer at all (the device model's behaviour, which
/// the driver must survive with a timeout), are counted, and change nothing.
#[test]
fn malformed_requests_get_no_answer() {
    let mut bus = FifoBus::new(Mode::Compat);
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
