// SPDX-License-Identifier: GPL-2.0 OR MIT

//! The known-answer vectors shared with the KUnit suite, one test each, so
//! a failure names its vector.

use virtio_msg_wire::wire_vectors::{
    check_device_model_malformed, check_device_model_reply, check_exact, check_lenient,
    check_malformed, check_unencodable, BUS, DEVICE_MODEL_MALFORMED, DEVICE_MODEL_REPLIES, LENIENT,
    MALFORMED, TRANSPORT_EVENTS, TRANSPORT_REQUESTS, TRANSPORT_RESPONSES, UNENCODABLE,
};
use virtio_msg_wire::{EncodeError, Frame, Message, Words, MAX_MSG_SIZE};

#[test]
fn known_answers() {
    let all = TRANSPORT_REQUESTS
        .iter()
        .chain(TRANSPORT_RESPONSES)
        .chain(TRANSPORT_EVENTS)
        .chain(BUS);
    let mut n = 0;
    for v in all {
        assert_eq!(check_exact(v), Ok(()), "vector {:?}", v.name);
        n += 1;
    }
    // Every message of the protocol has at least one vector.
    assert!(n >= 30, "only {n} vectors");
}

#[test]
fn lenient() {
    for v in LENIENT {
        assert_eq!(check_lenient(v), Ok(()), "vector {:?}", v.name);
    }
}

#[test]
fn malformed() {
    for v in MALFORMED {
        assert_eq!(
            check_malformed(v),
            Ok(()),
            "vector {:?}: got {:?}",
            v.name,
            Frame::decode(v.bytes)
        );
    }
}

#[test]
fn device_model_replies() {
    for v in DEVICE_MODEL_REPLIES {
        assert_eq!(check_device_model_reply(v), Ok(()), "vector {:?}", v.name);
    }
    // What the strict decoder refuses: the GET_DEVICES replies, not the PING one.
    let strict: Vec<_> = DEVICE_MODEL_REPLIES
        .iter()
        .map(|v| Frame::decode(v.bytes).is_ok())
        .collect();
    assert_eq!(strict, [false, false, false, false, true]);
    for v in DEVICE_MODEL_MALFORMED {
        assert_eq!(
            check_device_model_malformed(v),
            Ok(()),
            "vector {:?}: got {:?}",
            v.name,
            Frame::decode_lenient(v.bytes)
        );
    }
}

#[test]
fn unencodable() {
    for v in UNENCODABLE {
        assert_eq!(check_unencodable(v), Ok(()), "vector {:?}", v.name);
    }
}

#[test]
fn every_message_id_has_a_vector() {
    let mut ids: Vec<_> = TRANSPORT_REQUESTS
        .iter()
        .chain(TRANSPORT_RESPONSES)
        .chain(TRANSPORT_EVENTS)
        .chain(BUS)
        .map(|v| v.frame.msg.id())
        .collect();
    ids.sort_by_key(|&(c, k, id)| (c as u8, k as u8, id));
    ids.dedup();
    // 11 transport requests, 11 responses, 3 events, 3 bus requests/events, 2 bus responses.
    assert_eq!(ids.len(), 30, "{ids:?}");
}

#[test]
fn too_large_for_msg_size() {
    let data = vec![0u8; MAX_MSG_SIZE];
    let f = Frame {
        dev_num: 1,
        token: 1,
        msg: Message::SetConfig {
            generation: 0,
            offset: 0,
            data: &data,
        },
    };
    assert_eq!(
        f.encoded_len(),
        Err(EncodeError::TooLarge {
            needed: 8 + 12 + MAX_MSG_SIZE
        })
    );
    let mut out = vec![0u8; 2 * MAX_MSG_SIZE];
    assert_eq!(
        f.encode(&mut out),
        Err(EncodeError::TooLarge {
            needed: 8 + 12 + MAX_MSG_SIZE
        })
    );

    // The largest message msg_size can describe still works.
    let data = vec![7u8; MAX_MSG_SIZE - 20];
    let f = Frame {
        dev_num: 1,
        token: 1,
        msg: Message::SetConfig {
            generation: 0,
            offset: 0,
            data: &data,
        },
    };
    assert_eq!(f.encode(&mut out), Ok(MAX_MSG_SIZE));
    assert_eq!(Frame::decode(&out), Ok(f));
}

#[test]
fn feature_words_compare_by_value() {
    let bytes = [
        0x00, 0x04, 0x01, 0x00, 0x00, 0x00, 0x18, 0x00, 1, 0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 0, 0,
        0, 0x80,
    ];
    let Ok(Frame {
        msg: Message::SetDriverFeatures {
            block_index,
            features,
        },
        ..
    }) = Frame::decode(&bytes)
    else {
        panic!("not decoded");
    };
    assert_eq!(block_index, 1);
    assert_eq!(features, Words::new(&[1, 0x8000_0000]));
    assert_ne!(features, Words::new(&[1]));
    assert_eq!(features.get(1), Some(0x8000_0000));
    assert_eq!(features.get(2), None);
    assert_eq!(features.iter().collect::<Vec<_>>(), [1, 0x8000_0000]);
}
