// SPDX-License-Identifier: GPL-2.0 OR MIT

//! Fuzz target: decoding arbitrary bytes never panics, strictly or leniently
//! (overflow checks and debug assertions are on); whatever decodes strictly
//! decodes to the same leniently, and re-encodes to a message that decodes to
//! the same thing and is no longer than the input.

#![no_main]

use libfuzzer_sys::fuzz_target;
use virtio_msg_wire::{Frame, Header};

fuzz_target!(|data: &[u8]| {
    let header = Header::decode(data);
    let lenient = Frame::decode_lenient(data);
    let Ok(frame) = Frame::decode(data) else {
        return;
    };
    assert_eq!(
        lenient,
        Ok(frame),
        "the lenient decoder reads a valid message differently"
    );
    let header = header.expect("a decodable frame has a decodable header");
    let mut out = [0u8; 128];
    let n = frame.encode(&mut out).expect("a decoded frame re-encodes");
    assert_eq!(
        n,
        usize::from(header.msg_size),
        "re-encoded size differs from msg_size"
    );
    assert_eq!(
        Frame::decode(&out[..n]),
        Ok(frame),
        "re-encoded frame decodes differently"
    );
    assert_eq!(
        &out[1..8],
        &data[1..8],
        "only reserved type bits may change in the header"
    );
});
