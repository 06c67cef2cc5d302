// SPDX-License-Identifier: GPL-2.0

//! KUnit suite for the virtio-msg wire format.
//!
//! Runs the shared known-answer vectors (`virtio_msg/wire_vectors.rs`)
//! against the codec (`kernel::virtio::msg::wire`) as compiled for the kernel, and
//! adds kernel-side checks of the limits the drivers derive from the bus's
//! maximum message size.
//!
//! Built as a module, loading it runs the suite; built in, it runs at boot
//! (and under `kunit.py run`).

use kernel::{prelude::*, virtio::msg::wire};

pub mod wire_vectors;

module! {
    type: WireKunit,
    name: "virtio_msg_wire_kunit",
    authors: ["virtio-msg developers"],
    description: "KUnit tests for the virtio-msg wire format",
    license: "GPL",
}

struct WireKunit;

impl kernel::Module for WireKunit {
    fn init(_module: &'static ThisModule) -> Result<Self> {
        Ok(WireKunit)
    }
}

#[kunit_tests(virtio_msg_wire)]
mod tests {
    use super::wire::{
        max_config_chunk, max_devices_bitmap, max_feature_blocks, AvailNext, Frame, Message,
        HEADER_SIZE,
    };
    use super::wire_vectors::{
        check_device_model_malformed, check_device_model_reply, check_exact, check_lenient,
        check_malformed, check_unencodable, Vector, BUS, DEVICE_MODEL_MALFORMED,
        DEVICE_MODEL_REPLIES, LENIENT, MALFORMED, TRANSPORT_EVENTS, TRANSPORT_REQUESTS,
        TRANSPORT_RESPONSES, UNENCODABLE,
    };
    use kernel::prelude::*;

    /// Runs `check` on every vector, names each failure in the log, and
    /// returns how many failed.
    fn failures<T>(
        vectors: &[T],
        name: impl Fn(&T) -> &'static str,
        check: impl Fn(&T) -> Result<(), &'static str>,
    ) -> usize {
        let mut failed = 0;
        for v in vectors {
            if let Err(why) = check(v) {
                pr_err!("vector \"{}\": {}\n", name(v), why);
                failed += 1;
            }
        }
        failed
    }

    fn exact_failures(vectors: &[Vector]) -> usize {
        failures(vectors, |v| v.name, check_exact)
    }

    #[test]
    fn transport_requests_known_answers() {
        assert_eq!(TRANSPORT_REQUESTS.len(), 11);
        assert_eq!(exact_failures(TRANSPORT_REQUESTS), 0);
    }

    #[test]
    fn transport_responses_known_answers() {
        assert_eq!(exact_failures(TRANSPORT_RESPONSES), 0);
    }

    #[test]
    fn transport_events_known_answers() {
        assert_eq!(exact_failures(TRANSPORT_EVENTS), 0);
    }

    #[test]
    fn bus_known_answers() {
        assert_eq!(exact_failures(BUS), 0);
    }

    #[test]
    fn reserved_bits_and_padding_ignored() {
        assert_eq!(failures(LENIENT, |v| v.name, check_lenient), 0);
    }

    #[test]
    fn device_model_replies_read_leniently() {
        let read = failures(DEVICE_MODEL_REPLIES, |v| v.name, check_device_model_reply);
        let rejected = failures(
            DEVICE_MODEL_MALFORMED,
            |v| v.name,
            check_device_model_malformed,
        );
        assert_eq!(read + rejected, 0);
    }

    #[test]
    fn malformed_rejected() {
        assert_eq!(failures(MALFORMED, |v| v.name, check_malformed), 0);
    }

    #[test]
    fn unencodable_refused() {
        assert_eq!(failures(UNENCODABLE, |v| v.name, check_unencodable), 0);
    }

    #[test]
    fn every_truncation_rejected() {
        // Cutting any valid message short must fail to decode, never read
        // past the end and never succeed with a different message.
        let mut bad = 0;
        let groups = [
            TRANSPORT_REQUESTS,
            TRANSPORT_RESPONSES,
            TRANSPORT_EVENTS,
            BUS,
        ];
        for v in groups.iter().flat_map(|group| group.iter()) {
            for len in 0..v.bytes.len() {
                if Frame::decode(&v.bytes[..len]).is_ok() {
                    pr_err!("vector \"{}\" cut to {} bytes decoded\n", v.name, len);
                    bad += 1;
                }
            }
        }
        assert_eq!(bad, 0);
    }

    #[test]
    fn limits_of_the_amp_pci_device() {
        // The QEMU device model copies 48 bytes per FIFO slot.
        assert_eq!(max_config_chunk(48), 28);
        assert_eq!(max_feature_blocks(48), 8);
        assert_eq!(max_devices_bitmap(48), 34);
        assert_eq!(max_config_chunk(HEADER_SIZE), 0);
        assert_eq!(max_feature_blocks(0), 0);
        assert_eq!(max_devices_bitmap(HEADER_SIZE), 0);
    }

    #[test]
    fn notification_data_fits_31_bits() {
        assert!(AvailNext::new(1 << 31, false).is_none());
        let next = AvailNext::new(0x7fff_ffff, true);
        assert!(next.is_some());
        if let Some(next) = next {
            assert_eq!(next.offset(), 0x7fff_ffff);
            assert!(next.wrap());
            assert_eq!(next.raw(), 0xffff_ffff);
        }
    }

    #[test]
    fn encode_reports_length() -> Result {
        let frame = Frame {
            dev_num: 1,
            token: 2,
            msg: Message::GetVqueue { index: 3 },
        };
        let mut slot = [0u8; 64];
        let len = frame.encode(&mut slot).map_err(|_| EINVAL)?;
        assert_eq!(len, 12);
        assert_eq!(frame.encoded_len(), Ok(12));
        assert!(slot[12..].iter().all(|&b| b == 0));
        Ok(())
    }
}
