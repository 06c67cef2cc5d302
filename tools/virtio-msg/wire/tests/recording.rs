// SPDX-License-Identifier: GPL-2.0 OR MIT

//! The recording reader against every recording of the device model.

use std::{fs, path::PathBuf};
use virtio_msg_wire::{
    recording::{records, Record},
    Frame,
};

fn recordings() -> Vec<(String, String)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../drivers/virtio/virtio_msg/device-model");
    let mut files: Vec<_> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "txt"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, fs::read_to_string(p).unwrap())
        })
        .collect()
}

#[test]
fn every_line_of_every_recording_parses() {
    let files = recordings();
    assert_eq!(files.len(), 9, "the nine recordings");
    for (name, text) in files {
        let mut requests = 0;
        for record in records(&text) {
            let (line, record) = record.unwrap_or_else(|e| panic!("{name}:{}: {}", e.line, e.what));
            match record {
                Record::Request { msg, .. } => {
                    requests += 1;
                    // Requests carry their msg_size in the header and the line shows exactly
                    // that many bytes (or a whole header if msg_size is below 8).
                    let size = u16::from_le_bytes([msg.as_slice()[6], msg.as_slice()[7]]);
                    assert_eq!(
                        msg.as_slice().len(),
                        usize::from(size).max(8),
                        "{name}:{line}"
                    );
                }
                Record::Reply { msg, .. } => {
                    // Every reply the device model sent decodes with our codec.
                    Frame::decode(msg.as_slice())
                        .unwrap_or_else(|e| panic!("{name}:{line}: {e:?}"));
                }
                Record::Setup(setup) => {
                    assert!(setup.num_fifos().is_some(), "{name}:{line}");
                    assert!(setup.devices().count() >= 1, "{name}:{line}");
                }
                Record::NoReply => {}
            }
        }
        assert!(requests > 0, "{name}");
    }
}

#[test]
fn setup_lines_name_fifos_and_device_numbers() {
    let text = "@ qemu -device virtio-msg-amp-pci,num-fifos=2 -device virtio-rng-device,bus=fifo0/bus5 -drive if=none,id=d0 -device virtio-blk-device,drive=d0,bus=fifo1/bus31\n";
    let Some(Ok((1, Record::Setup(setup)))) = records(text).next() else {
        panic!("no set-up");
    };
    assert_eq!(setup.num_fifos(), Some(2));
    let devices: Vec<_> = setup
        .devices()
        .map(|d| (d.kind, d.fifo, d.dev_num))
        .collect();
    assert_eq!(
        devices,
        [("virtio-rng-device", 0, 5), ("virtio-blk-device", 1, 31)]
    );
}

#[test]
fn malformed_lines_are_named() {
    for (text, what) in [
        ("> fifo=0 00020000010208\n", "message shorter than a header"),
        ("> fifo=x 0002000001020800\n", "no `fifo=N`"),
        ("< fifo=0 000200000102080\n", "odd number of hex digits"),
        ("< fifo=0 00020000010208ZZ\n", "not a lowercase hex digit"),
        ("! what\n", "unknown record"),
    ] {
        let err = records(text).next().unwrap().unwrap_err();
        assert_eq!((err.line, err.what), (1, what), "{text}");
    }
}
