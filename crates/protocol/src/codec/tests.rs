use bytes::BytesMut;
use proptest::prelude::*;
use tokio_util::codec::{Decoder, Encoder};

use super::*;
use crate::{
    ChatMessage, Event, GenerateRequest, Input, RequestBody, Role, SamplingParams, PROTOCOL_VERSION,
};

fn sample_request() -> Frame {
    let request = GenerateRequest {
        model: "m".into(),
        input: Input::Chat(vec![ChatMessage::new("user", "hi")]),
        params: SamplingParams {
            max_tokens: Some(5),
            stop: vec!["\n".into()],
            ..Default::default()
        },
    };
    let worker = crate::tls::Identity::generate().unwrap().fingerprint();
    let key = crate::SealingKey::generate();
    let (sealed, _) = crate::sealed::seal(
        &request,
        &[crate::SealTo::at_base_price(worker, key.public())],
        1,
    )
    .unwrap();
    Frame::Request {
        id: 7,
        body: RequestBody::Generate(sealed),
    }
}

#[test]
fn frame_round_trip() {
    for frame in [
        sample_request(),
        Frame::Event {
            id: 1,
            event: Event::Delta {
                text: "héllo".into(),
                tokens: 2,
            },
        },
        Frame::Cancel { id: u64::MAX },
        Frame::Ping(3),
        Frame::Goodbye {
            reason: "bye".into(),
        },
    ] {
        let bytes = encode_frame(&frame).unwrap();
        assert_eq!(decode_frame(&bytes).unwrap(), frame);
    }
}

#[test]
fn hello_round_trip_and_version_check() {
    let hello = Hello {
        role: Role::Worker,
        software: "test".into(),
    };
    let bytes = write_hello(&hello).unwrap();
    assert_eq!(read_hello(&bytes).unwrap(), hello);

    let mut other = bytes.to_vec();
    let peer = PROTOCOL_VERSION + 1;
    other[4..6].copy_from_slice(&peer.to_be_bytes());
    let err = read_hello(&other).unwrap_err();
    assert!(
        matches!(err, ProtocolError::VersionMismatch { peer: p, ours } if p == peer && ours == PROTOCOL_VERSION),
        "{err}"
    );
    assert!(err.to_string().contains(&format!("version {peer}")));

    let err = read_hello(b"GET / HTTP/1.1").unwrap_err();
    assert!(matches!(err, ProtocolError::BadMagic));
}

#[test]
fn truncated_frame_is_rejected() {
    let mut codec = length_codec(1024);
    let mut buf = BytesMut::new();
    codec
        .encode(encode_frame(&sample_request()).unwrap(), &mut buf)
        .unwrap();
    let mut partial = BytesMut::from(&buf[..buf.len() - 3]);
    assert!(
        codec.decode(&mut partial).unwrap().is_none(),
        "incomplete frame must wait"
    );
    let err = codec.decode_eof(&mut partial).unwrap_err();
    assert!(matches!(framing_error(err, 1024), ProtocolError::Truncated));
}

#[test]
fn oversize_frame_is_rejected() {
    let mut codec = length_codec(16);
    let mut buf = BytesMut::new();
    buf.extend_from_slice(&1000u32.to_be_bytes());
    buf.extend_from_slice(&[0u8; 20]);
    let err = codec.decode(&mut buf).unwrap_err();
    assert!(matches!(
        framing_error(err, 16),
        ProtocolError::FrameTooLarge { max: 16, .. }
    ));

    let mut out = BytesMut::new();
    assert!(codec.encode(Bytes::from(vec![0u8; 17]), &mut out).is_err());
}

#[test]
fn garbage_body_is_malformed_not_panic() {
    assert!(matches!(
        decode_frame(&[0xff, 0xff, 0xff]),
        Err(ProtocolError::Malformed(_))
    ));
    assert!(decode_frame(&[]).is_err());
}

proptest! {
    #[test]
    fn any_bytes_decode_without_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = decode_frame(&bytes);
        let _ = read_hello(&bytes);
    }

    #[test]
    fn delta_round_trips(id in any::<u64>(), text in ".*", tokens in any::<u32>()) {
        let frame = Frame::Event { id, event: Event::Delta { text, tokens } };
        prop_assert_eq!(decode_frame(&encode_frame(&frame).unwrap()).unwrap(), frame);
    }

    #[test]
    fn request_round_trips(id in any::<u64>(), model in ".{0,40}",
                           max_tokens in proptest::option::of(any::<u32>()),
                           request_id in any::<[u8; 16]>(), sent_at_ms in any::<u64>(),
                           worker in any::<[u8; 32]>(),
                           enc in proptest::collection::vec(any::<u8>(), 0..40),
                           ciphertext in proptest::collection::vec(any::<u8>(), 0..300),
                           affinity in any::<bool>(), price_coefficient in any::<u32>()) {
        let frame = Frame::Request { id, body: RequestBody::Generate(crate::SealedRequest {
            sort: crate::Sort::default(),
            affinity,
            header: crate::SealHeader { request_id, model, max_tokens, sent_at_ms },
            recipients: vec![crate::sealed::Recipient {
                since: 0,
                worker: crate::tls::Fingerprint(worker), enc: enc.clone(), sealed_key: enc,
                price_coefficient,
            }],
            ciphertext,
        })};
        prop_assert_eq!(decode_frame(&encode_frame(&frame).unwrap()).unwrap(), frame);
    }
}

proptest::proptest! {
    #[test]
    fn hex_is_hex_encode_and_fingerprints_read_back(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..80), fp in proptest::array::uniform32(proptest::num::u8::ANY)) {
        proptest::prop_assert_eq!(crate::to_hex(&bytes), hex::encode(&bytes));
        let fingerprint = crate::tls::Fingerprint(fp);
        let text = fingerprint.to_string();
        proptest::prop_assert_eq!(&text, &format!("sha256:{}", hex::encode(fp)));
        proptest::prop_assert_eq!(text.parse::<crate::tls::Fingerprint>().unwrap(), fingerprint);
    }
}

/// A worker refuses stop sequences longer than its receipts can account
/// for (a dishonest client node could otherwise make an honest worker's
/// receipt refused, and be served unbilled).
#[test]
fn a_worker_refuses_stop_sequences_its_receipt_cannot_account_for() {
    let request = |stop: &str| GenerateRequest {
        model: "m".into(),
        input: Input::Chat(vec![ChatMessage::new("user", "hi")]),
        params: SamplingParams {
            stop: vec![stop.into()],
            ..Default::default()
        },
    };
    let served = crate::Features::default();
    let max = crate::receipt::MAX_STOP_BYTES;
    assert!(request(&"x".repeat(max)).check_served(&served, "w").is_ok());
    let refused = request(&"x".repeat(max + 1))
        .check_served(&served, "w")
        .unwrap_err();
    assert_eq!(refused.kind, crate::ErrorKind::InvalidRequest);
    assert!(
        refused.message.contains("stop sequence"),
        "{}",
        refused.message
    );
}
