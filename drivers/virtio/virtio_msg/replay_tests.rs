// SPDX-License-Identifier: GPL-2.0

//! KUnit suite `virtio_msg_replay`: the transport against QEMU's device model, as recorded.
//!
//! The bus of this suite answers every request with the replies the device model gave to the
//! same request in a recording (`device-model/*.txt`), byte for byte: with the recorded
//! tokens, which are never the tokens this transport sends (and 0 in bus replies and events).
//! So a device coming up here shows that the transport works with what the device really
//! says, not with what we believe it says, and that it does not depend on the token.
//!
//! A request is looked up from where the previous one was found onwards, so that answers that
//! depend on the device's state (GET_DEVICE_STATUS) come from the same point of the recorded
//! session, and from the start of the session if it is not found there (a reset brings the device
//! back to where it started). It is compared with the recorded requests without its token and
//! without the values the driver chooses itself: the ring addresses and size in SET_VQUEUE, the
//! feature bits in SET_DRIVER_FEATURES (the replies of both are header-only). A request the
//! recording does not have goes unanswered and is counted, as the device model would stay silent on
//! something it cannot handle.

use kernel::{
    faux, new_mutex,
    prelude::*,
    sync::{Arc, Mutex},
    virtio::{
        as_interrupt,
        msg::{
            recording::{records, Record},
            Bus,
        },
        transport::{DeviceId, Unregistered},
    },
};

use crate::{
    bus::BusHandle,
    device::{MsgDevice, MsgTransport},
    stats::Stats,
    tests::test_bus,
    wire::{transport_id as id, HEADER_SIZE},
};

const RNG: &str = include_str!("device-model/02-probe-rng.txt");
const BLK: &str = include_str!("device-model/03-probe-blk.txt");
const NET: &str = include_str!("device-model/04-probe-net.txt");
const CONSOLE: &str = include_str!("device-model/05-probe-console.txt");

/// The device model's message limit.
const MAX_MSG: usize = 48;

struct ReplayState {
    /// Line of the recording after which the next request is looked up.
    cursor: usize,
    /// Requests the recording has no answer for.
    unanswered: u32,
    /// Feature blocks offered in the replies handed out so far.
    offered: [u32; 8],
}

impl ReplayState {
    /// Whether the device offered every feature SET_DRIVER_FEATURES `sent` writes.
    fn offers(&self, sent: &[u8]) -> bool {
        (0..le32(sent, HEADER_SIZE + 4) as usize).all(|i| {
            let block = le32(sent, HEADER_SIZE) as usize + i;
            let word = le32(sent, HEADER_SIZE + 8 + 4 * i);
            word & !self.offered.get(block).copied().unwrap_or(0) == 0
        })
    }
}

#[pin_data]
struct ReplayBus {
    recording: &'static str,
    #[pin]
    state: Mutex<ReplayState>,
    #[pin]
    handle: Mutex<Option<Arc<BusHandle>>>,
}

/// Whether `sent` asks what `recorded` asked: equal but for the token and the values the
/// driver chooses itself (see the module documentation).
fn same_request(sent: &[u8], recorded: &[u8]) -> bool {
    let (Some(s), Some(r)) = (sent.get(..HEADER_SIZE), recorded.get(..HEADER_SIZE)) else {
        return false;
    };
    // Type, id and device number; the token (4..6) is the sender's.
    if s[..4] != r[..4] {
        return false;
    }
    let (sent_payload, recorded_payload) = (&sent[HEADER_SIZE..], &recorded[HEADER_SIZE..]);
    match (s[0] & 0b10 == 0).then_some(s[1]) {
        // The queue index; addresses and size are the driver's.
        Some(id::SET_VQUEUE) => sent_payload.get(..4) == recorded_payload.get(..4),
        // Block index and count; the features are checked against the offer (`offered`).
        Some(id::SET_DRIVER_FEATURES) => sent_payload.get(..8) == recorded_payload.get(..8),
        // All of it: msg_size and payload.
        _ => s[6..8] == r[6..8] && sent_payload == recorded_payload,
    }
}

/// The little-endian 32-bit word at byte `at` of `bytes` (0 beyond its end).
fn le32(bytes: &[u8], at: usize) -> u32 {
    bytes
        .get(at..at + 4)
        .map_or(0, |w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]))
}

impl ReplayBus {
    fn new(recording: &'static str) -> Result<Arc<Self>> {
        Arc::pin_init(
            try_pin_init!(Self {
                recording,
                state <- new_mutex!(ReplayState {
                    cursor: 0,
                    unanswered: 0,
                    offered: [0; 8],
                }),
                handle <- new_mutex!(None),
            }),
            GFP_KERNEL,
        )
    }

    /// The recorded replies to `sent`, looked up from line `from` on; moves the cursor past
    /// them. Returns whether the request was found.
    fn lookup_from(
        &self,
        state: &mut ReplayState,
        from: usize,
        sent: &[u8],
        replies: &mut KVec<[u8; MAX_MSG]>,
    ) -> Result<bool> {
        let mut found = false;
        for record in records(self.recording) {
            let (line, record) = record.map_err(|_| EINVAL)?;
            if line <= from {
                continue;
            }
            match record {
                Record::Request { msg, .. } if !found => {
                    if same_request(sent, msg.as_slice()) {
                        found = true;
                        state.cursor = line;
                    }
                }
                Record::Reply { msg, .. } if found => {
                    let mut slot = [0u8; MAX_MSG];
                    slot.get_mut(..msg.as_slice().len())
                        .ok_or(EINVAL)?
                        .copy_from_slice(msg.as_slice());
                    replies.push(slot, GFP_KERNEL)?;
                    state.cursor = line;
                }
                // The next request, or a fresh device: this request's replies are all in.
                Record::Request { .. } | Record::Setup(_) | Record::NoReply if found => break,
                _ => {}
            }
        }
        Ok(found)
    }

    /// The recorded replies to `sent` (see the module documentation). Features written that
    /// the device did not offer (the device model aborts on them) get no answer.
    fn lookup(&self, sent: &[u8], replies: &mut KVec<[u8; MAX_MSG]>) -> Result<bool> {
        let mut state = self.state.lock();
        if sent.get(1) == Some(&id::SET_DRIVER_FEATURES) && !state.offers(sent) {
            pr_err!("replay: features written that the device did not offer\n");
            state.unanswered += 1;
            return Ok(false);
        }
        let cursor = state.cursor;
        let found = self.lookup_from(&mut state, cursor, sent, replies)?
            || self.lookup_from(&mut state, 0, sent, replies)?;
        for reply in replies.iter().filter(|r| r[0] & 0b11 == 0b01) {
            if reply[1] == id::GET_DEVICE_FEATURES {
                for i in 0..le32(reply, HEADER_SIZE + 4) as usize {
                    let block = le32(reply, HEADER_SIZE) as usize + i;
                    if let Some(w) = state.offered.get_mut(block) {
                        *w = le32(reply, HEADER_SIZE + 8 + 4 * i);
                    }
                }
            }
        }
        if !found {
            state.unanswered += 1;
        }
        Ok(found)
    }
}

impl Bus for ReplayBus {
    fn max_msg_size(&self) -> usize {
        MAX_MSG
    }

    fn send_atomic(&self, _msg: &[u8]) -> Result {
        // Kicks take the deferred path, which `send` serves.
        Err(EBUSY)
    }

    fn send(&self, msg: &[u8]) -> Result {
        // Events (EVENT_AVAIL) have no reply; the recordings of probes have none either.
        if msg.get(1).is_some_and(|&m| m >= 0x40) {
            return Ok(());
        }
        let mut replies = KVec::new();
        if !self.lookup(msg, &mut replies)? {
            pr_err!("replay: no recorded answer to {:02x?}\n", msg);
        }
        let handle = self.handle.lock().clone();
        if let Some(h) = handle {
            for reply in replies.iter() {
                let len = usize::from(u16::from_le_bytes([reply[6], reply[7]])).min(MAX_MSG);
                as_interrupt(|irq| h.deliver(&reply[..len], irq));
            }
        }
        Ok(())
    }

    fn sync(&self) -> Result {
        // Answers are delivered before `send` returns: nothing can be in flight.
        Ok(())
    }
}

/// A replay bus for `recording` behind a bus handle, and the recorded device probed.
struct Replay {
    bus: Arc<ReplayBus>,
    handle: Arc<BusHandle>,
    stats: Arc<Stats>,
    dev: Arc<MsgDevice>,
    faux: faux::Registration,
}

impl Replay {
    fn new(recording: &'static str) -> Result<Self> {
        let bus = ReplayBus::new(recording)?;
        // Answers come before `send` returns; only a recorded silence waits this long.
        let (faux, stats, handle) = test_bus(bus.clone(), 100)?;
        *bus.handle.lock() = Some(handle.clone());
        // The device number the recording placed its device at.
        let dev_num = records(recording)
            .find_map(|r| match r {
                Ok((_, Record::Setup(setup))) => setup.devices().next(),
                _ => None,
            })
            .ok_or(EINVAL)?
            .dev_num;
        let dev = MsgDevice::probe(handle.clone(), dev_num)?;
        handle.add_route(dev_num, dev.clone())?;
        Ok(Self {
            bus,
            handle,
            stats,
            dev,
            faux,
        })
    }

    fn unanswered(&self) -> u32 {
        self.bus.state.lock().unanswered
    }

    /// Brings the device up with the transport's own operations, in the order of the virtio
    /// core: reset, ACKNOWLEDGE, DRIVER, features, FEATURES_OK (confirmed), reading the whole
    /// configuration space as a driver's probe does, DRIVER_OK. Returns the features the
    /// device offered and its configuration space.
    fn bring_up(&self) -> Result<(u64, KVec<u8>)> {
        let dev = &self.dev;
        dev.reset();
        assert_eq!(dev.set_status(1).map_err(Error::from)?, 1);
        assert_eq!(dev.set_status(3).map_err(Error::from)?, 3);
        let offered = dev.get_features().map_err(Error::from)?;
        dev.set_features(&offered).map_err(Error::from)?;
        assert_eq!(dev.set_status(0xb).map_err(Error::from)?, 0xb);
        let mut config = KVec::from_elem(0u8, dev.info().config_size as usize, GFP_KERNEL)?;
        dev.get_config(0, &mut config).map_err(Error::from)?;
        assert_eq!(dev.set_status(0xf).map_err(Error::from)?, 0xf);
        Ok((offered.low64(), config))
    }
}

impl Drop for Replay {
    fn drop(&mut self) {
        // Break the cycles bus -> handle -> routes -> device -> handle.
        self.handle.remove_route(self.dev.dev_num());
        *self.bus.handle.lock() = None;
    }
}

#[kunit_tests(virtio_msg_replay)]
mod tests {
    use super::*;

    #[test]
    fn recorded_rng_binds_the_virtio_rng_driver() -> Result {
        let t = Replay::new(RNG)?;
        assert_eq!(t.dev.info().device_id, 4);
        assert_eq!(t.dev.info().max_virtqueues, 1);
        let dev = t.dev.clone();
        let id = DeviceId {
            device: 4,
            vendor: dev.info().vendor_id,
        };
        let parent = t.faux.bound_device();
        let unregistered = Unregistered::new(parent, parent, id, MsgTransport::new(dev.clone()))?;
        dev.set_handle(unregistered.handle())?;
        let registration = unregistered.register()?;
        // The stock driver bound: its queue set up after the recorded GET_VQUEUE, DRIVER_OK
        // confirmed by the recorded reply, nothing asked that the device model did not answer.
        assert_eq!(dev.cached_status(), 0xf);
        assert_eq!(t.unanswered(), 0);
        assert_eq!(t.stats.timeout_count(), 0);
        drop(registration);
        dev.clear_handle();
        dev.stop_work();
        Ok(())
    }

    #[test]
    fn recorded_blk_comes_up() -> Result {
        let t = Replay::new(BLK)?;
        assert_eq!(t.dev.info().device_id, 2);
        let (features, config) = t.bring_up()?;
        assert_eq!(features, 0x0000_0101_3000_6e54);
        // 57 bytes in three GET_CONFIG; the capacity of the recorded 16 MiB image in sectors.
        assert_eq!(config.len(), 57);
        assert_eq!(config[..8], 0x8000u64.to_le_bytes());
        assert_eq!(t.stats.sent_count(id::GET_CONFIG), 3);
        assert_eq!(t.unanswered(), 0);
        assert_eq!(t.stats.timeout_count(), 0);
        Ok(())
    }

    #[test]
    fn recorded_net_comes_up() -> Result {
        let t = Replay::new(NET)?;
        assert_eq!(t.dev.info().device_id, 1);
        assert_eq!(t.dev.info().max_virtqueues, 3);
        let (features, config) = t.bring_up()?;
        assert_eq!(features, 0x0000_0101_30bf_8024);
        // The MAC address QEMU gives its first NIC, and link up.
        assert_eq!(config[..], [0x52, 0x54, 0x00, 0x12, 0x34, 0x56, 0x01, 0x00]);
        assert_eq!(t.unanswered(), 0);
        assert_eq!(t.stats.timeout_count(), 0);
        Ok(())
    }

    #[test]
    fn recorded_console_comes_up() -> Result {
        let t = Replay::new(CONSOLE)?;
        assert_eq!(t.dev.info().device_id, 3);
        assert_eq!(t.dev.info().max_virtqueues, 64);
        let (features, config) = t.bring_up()?;
        assert_eq!(features, 0x0000_0101_3000_0006);
        // 31 ports at most (MULTIPORT), no size given.
        assert_eq!(config[4..8], 31u32.to_le_bytes());
        assert_eq!(t.unanswered(), 0);
        assert_eq!(t.stats.timeout_count(), 0);
        Ok(())
    }

    #[test]
    fn recorded_silence_is_a_timeout_not_a_hang() -> Result {
        let t = Replay::new(RNG)?;
        // The device model never answers GET_SHM: the transport gives up after its timeout,
        // the device is not broken, and after a barrier the next request is answered.
        assert!(t.dev.shm_region(0).is_none());
        assert_eq!(t.stats.timeout_count(), 1);
        assert_eq!(t.dev.set_status(0).map_err(Error::from)?, 0);
        assert_eq!(t.stats.barrier_count(), 1);
        assert_eq!(t.unanswered(), 0);
        Ok(())
    }
}
