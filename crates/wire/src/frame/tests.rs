//! The frame format's unit tests: encode/decode round trips, every header field's
//! checks, checksums and limits.

#![allow(clippy::cast_possible_truncation, reason = "test code")]

use super::*;
use proptest::prelude::*;
use tokio_util::codec::Decoder;

fn encode(frame: &Frame) -> BytesMut {
    let mut buf = BytesMut::new();
    frame.encode(&mut buf).unwrap();
    buf
}

fn round_trip(frame: &Frame) {
    let mut buf = encode(frame);
    let decoded = FrameCodec.decode(&mut buf).unwrap().unwrap();
    assert_eq!(&decoded, frame);
    assert!(buf.is_empty(), "decoder must consume exactly one frame");
}

fn sample_requests() -> Vec<Request> {
    vec![
        Request::Read {
            offset: 4096,
            len: 512,
        },
        Request::Write {
            offset: 7,
            data: Bytes::from_static(b"hello wire"),
            flags: WriteFlags { fua: true },
        },
        Request::Flush,
        Request::WriteZeroes {
            offset: 0,
            len: MAX_RANGE_LEN,
            mode: ZeroMode::Allocate,
            flags: WriteFlags { fua: false },
        },
        Request::Trim {
            offset: 1 << 40,
            len: 1 << 20,
        },
        Request::BlockStatus {
            offset: 100,
            len: 9000,
        },
        Request::Ping,
        Request::Info,
    ]
}

#[test]
fn every_request_kind_round_trips_through_frame_and_request() {
    let requests = sample_requests();
    let kinds: Vec<Kind> = requests.iter().map(Request::kind).collect();
    assert_eq!(kinds, Kind::ALL.to_vec(), "samples cover every kind");
    for (id, request) in requests.into_iter().enumerate() {
        let frame = request.clone().into_frame(id as u64);
        round_trip(&frame);
        assert_eq!(Request::from_frame(frame).unwrap(), request);
    }
}

#[test]
fn every_reply_kind_round_trips() {
    for (id, request) in sample_requests().into_iter().enumerate() {
        let request = request.into_frame(id as u64 + 100);
        let reply = match request.kind {
            Kind::Read => Frame::ok_reply(&request, Bytes::from(vec![0xab; 512])),
            Kind::Info => Frame::info_reply(&request, 10 << 30),
            Kind::BlockStatus => Frame::block_status_reply(
                &request,
                &[
                    Extent {
                        offset: 100,
                        len: 3996,
                        kind: ExtentKind::Data,
                    },
                    Extent {
                        offset: 4096,
                        len: 4096,
                        kind: ExtentKind::Zero,
                    },
                ],
            ),
            _ => Frame::ok_reply(&request, Bytes::new()),
        };
        round_trip(&reply);
        assert_eq!(reply.error("ctx").map(|e| e.to_string()), None);
        let failed = Frame::error_reply(&request, &BlockError::Io("disk on fire".into()));
        round_trip(&failed);
        assert_eq!(
            failed.error("replica x").unwrap().to_string(),
            "I/O error: replica x: disk on fire"
        );
    }
}

#[test]
fn every_error_variant_maps_to_a_status_and_back() {
    let request = Request::Read {
        offset: 10,
        len: 20,
    }
    .into_frame(1);
    let errors = [
        BlockError::OutOfRange {
            offset: 10,
            len: 20,
            size: 16,
        },
        BlockError::InvalidArgument("bad".into()),
        BlockError::NoSpace("full".into()),
        BlockError::ReadOnly("ro".into()),
        BlockError::Io("eio".into()),
    ];
    for error in errors {
        let reply = Frame::error_reply(&request, &error);
        round_trip(&reply);
        let back = reply.error("r").unwrap();
        assert_eq!(Status::of(&back), Status::of(&error));
        match (&back, &error) {
            (
                BlockError::OutOfRange { offset, len, size },
                BlockError::OutOfRange {
                    offset: o,
                    len: l,
                    size: s,
                },
            ) => assert_eq!((offset, len, size), (o, l, s)),
            _ => assert_eq!(
                back.to_string().split(": ").last(),
                error.to_string().split(": ").last()
            ),
        }
    }
}

#[test]
fn long_error_messages_are_cut_at_a_character_boundary() {
    let request = Request::Flush.into_frame(3);
    let message = "é".repeat(MAX_ERROR_MESSAGE);
    let reply = Frame::error_reply(&request, &BlockError::Io(message));
    assert!(reply.payload.len() <= MAX_ERROR_MESSAGE);
    round_trip(&reply);
}

#[test]
fn header_fields_sit_at_the_documented_offsets() {
    let frame = Request::Write {
        offset: 0x1122_3344_5566_7788,
        data: Bytes::from_static(b"abc"),
        flags: WriteFlags { fua: true },
    }
    .into_frame(0x0102_0304_0506_0708);
    let bytes = encode(&frame);
    assert_eq!(&bytes[0..4], b"SHWR");
    assert_eq!(
        u32::from_le_bytes(bytes[0..4].try_into().unwrap()),
        0x5257_4853
    );
    assert_eq!(bytes[4], 1);
    assert_eq!(bytes[5], 2);
    assert_eq!(&bytes[6..8], &[1, 0]);
    assert_eq!(&bytes[8..16], &0x0102_0304_0506_0708u64.to_le_bytes());
    assert_eq!(&bytes[16..24], &0x1122_3344_5566_7788u64.to_le_bytes());
    assert_eq!(&bytes[24..32], &3u64.to_le_bytes());
    assert_eq!(&bytes[32..36], &3u32.to_le_bytes());
    assert_eq!(&bytes[36..40], &0u32.to_le_bytes());
    assert_eq!(&bytes[40..44], &crc32c::crc32c(b"abc").to_le_bytes());
    assert_eq!(&bytes[44..48], &crc32c::crc32c(&bytes[..44]).to_le_bytes());
    assert_eq!(&bytes[48..], b"abc");
}

/// The worked example in docs/wire-protocol.md, byte for byte, and the CRC32C check
/// value quoted there, so the document cannot drift from the code.
#[test]
fn documented_example_frame_matches_the_encoder() {
    assert_eq!(crc32c::crc32c(b"123456789"), 0xE306_9283);
    let frame = Request::Write {
        offset: 4096,
        data: Bytes::from_static(b"abc"),
        flags: WriteFlags { fua: true },
    }
    .into_frame(1);
    let expected: [u8; 51] = [
        0x53, 0x48, 0x57, 0x52, 0x01, 0x02, 0x01, 0x00, // magic, version, kind, flags
        0x01, 0, 0, 0, 0, 0, 0, 0, // request_id
        0x00, 0x10, 0, 0, 0, 0, 0, 0, // offset
        0x03, 0, 0, 0, 0, 0, 0, 0, // length
        0x03, 0, 0, 0, // payload_len
        0, 0, 0, 0, // status
        0xb7, 0x3f, 0x4b, 0x36, // payload_crc
        0xaa, 0x07, 0x5f, 0x3a, // header_crc
        0x61, 0x62, 0x63, // payload
    ];
    assert_eq!(&encode(&frame)[..], &expected[..]);
}

fn raw(kind: u8, length: u64, payload_len: u32) -> RawHeader {
    RawHeader {
        magic: MAGIC,
        version: VERSION,
        kind,
        flags: 0,
        request_id: 9,
        offset: 0,
        length,
        payload_len,
        status: 0,
        payload_crc: 0,
    }
}

fn decode_raw(header: RawHeader) -> FrameError {
    let mut buf = BytesMut::from(&header.to_bytes()[..]);
    let len_before = buf.len();
    let err = FrameCodec.decode(&mut buf).unwrap_err();
    assert_eq!(buf.len(), len_before, "a rejected header allocates nothing");
    assert!(buf.capacity() < 1 << 20);
    err
}

#[test]
fn invalid_headers_are_typed_errors() {
    let mut bad_magic = raw(1, 0, 0);
    bad_magic.magic = *b"NBD!";
    assert!(matches!(decode_raw(bad_magic), FrameError::BadMagic { .. }));

    let mut bad_version = raw(1, 0, 0);
    bad_version.version = 2;
    assert!(matches!(
        decode_raw(bad_version),
        FrameError::UnsupportedVersion { found: 2 }
    ));

    assert!(matches!(
        decode_raw(raw(0x42, 0, 0)),
        FrameError::UnknownKind { found: 0x42, .. }
    ));
    assert!(matches!(
        decode_raw(raw(0, 0, 0)),
        FrameError::UnknownKind { .. }
    ));

    // A huge write: rejected from the header alone, before any payload is buffered.
    assert!(matches!(
        decode_raw(raw(Kind::Write as u8, u64::from(u32::MAX), u32::MAX)),
        FrameError::PayloadTooLarge { .. }
    ));
    assert!(matches!(
        decode_raw(raw(Kind::Read as u8, u64::MAX, 0)),
        FrameError::RangeTooLarge { .. }
    ));
    assert!(matches!(
        decode_raw(raw(Kind::Trim as u8, MAX_RANGE_LEN + 1, 0)),
        FrameError::RangeTooLarge { .. }
    ));

    let mut bad_flags = raw(Kind::Read as u8, 10, 0);
    bad_flags.flags = Flags::FUA.0;
    assert!(matches!(decode_raw(bad_flags), FrameError::BadFlags { .. }));
    let mut unknown_flag = raw(Kind::WriteZeroes as u8, 10, 0);
    unknown_flag.flags = 0x8000;
    assert!(matches!(
        decode_raw(unknown_flag),
        FrameError::BadFlags { .. }
    ));

    let mut request_with_status = raw(Kind::Read as u8, 10, 0);
    request_with_status.status = 5;
    assert!(matches!(
        decode_raw(request_with_status),
        FrameError::BadStatus { .. }
    ));
    let mut unknown_status = raw(Kind::Read as u8 | RESPONSE_BIT, 0, 0);
    unknown_status.status = 77;
    assert!(matches!(
        decode_raw(unknown_status),
        FrameError::BadStatus { found: 77, .. }
    ));

    // A write whose payload does not match its length.
    assert!(matches!(
        decode_raw(raw(Kind::Write as u8, 10, 4)),
        FrameError::Malformed { .. }
    ));
    // A read reply whose payload does not match its length.
    assert!(matches!(
        decode_raw(raw(Kind::Read as u8 | RESPONSE_BIT, 10, 4)),
        FrameError::Malformed { .. }
    ));
}

#[test]
fn malformed_block_status_payloads_are_rejected() {
    let request = Request::BlockStatus {
        offset: 0,
        len: 8192,
    }
    .into_frame(5);
    let data = |offset, len| Extent {
        offset,
        len,
        kind: ExtentKind::Data,
    };
    for bad in [
        vec![],
        vec![data(1, 10)],
        vec![data(0, 4096), data(4097, 10)],
        vec![data(0, 0)],
        vec![data(0, 8193)],
        vec![data(0, 4096), data(4096, u64::MAX)],
    ] {
        let reply = Frame::block_status_reply(&request, &bad);
        assert!(reply.validate().is_err(), "{bad:?}");
        let mut buf = BytesMut::new();
        buf.put_slice(&reply.raw_header().to_bytes());
        buf.put_slice(&reply.payload);
        assert!(
            matches!(
                FrameCodec.decode(&mut buf),
                Err(FrameError::Malformed { .. })
            ),
            "{bad:?}"
        );
    }
    // Count that disagrees with the payload length, and an unknown extent kind.
    for payload in [
        {
            let mut p = BytesMut::new();
            p.put_u32_le(2);
            p.put_u64_le(0);
            p.put_u64_le(8192);
            p.put_u32_le(0);
            p
        },
        {
            let mut p = BytesMut::new();
            p.put_u32_le(1);
            p.put_u64_le(0);
            p.put_u64_le(8192);
            p.put_u32_le(7);
            p
        },
    ] {
        let reply = Frame::ok_reply(&request, payload.freeze());
        assert!(matches!(
            reply.validate(),
            Err(FrameError::Malformed { .. })
        ));
    }
    // A prefix of the range is a valid reply.
    let prefix = Frame::block_status_reply(&request, &[data(0, 4096)]);
    round_trip(&prefix);
    assert_eq!(prefix.extents().unwrap(), vec![data(0, 4096)]);
}

#[test]
fn invalid_error_messages_are_rejected() {
    let request = Request::Ping.into_frame(1);
    let mut reply = Frame::error_reply(&request, &BlockError::Io("x".into()));
    reply.payload = Bytes::from_static(&[0xff, 0xfe]);
    assert!(matches!(
        reply.validate(),
        Err(FrameError::Malformed { .. })
    ));
    reply.status = Status::OutOfRange;
    reply.payload = Bytes::from_static(&[1, 2]);
    assert!(matches!(
        reply.validate(),
        Err(FrameError::Malformed { .. })
    ));
}

#[test]
fn garbage_is_reported_as_bad_magic_before_a_whole_header_arrives() {
    let mut buf = BytesMut::from(&b"GET / HTTP/1.1"[..2]);
    assert!(matches!(
        FrameCodec.decode(&mut buf),
        Err(FrameError::BadMagic { .. })
    ));
    let mut partial_magic = BytesMut::from(&b"SH"[..]);
    assert!(FrameCodec.decode(&mut partial_magic).unwrap().is_none());
}

#[test]
fn back_to_back_frames_decode_one_at_a_time_and_decode_eof_rejects_leftovers() {
    let a = Request::Ping.into_frame(1);
    let b = Request::Write {
        offset: 0,
        data: Bytes::from_static(b"xyz"),
        flags: WriteFlags::default(),
    }
    .into_frame(2);
    let mut buf = encode(&a);
    buf.extend_from_slice(&encode(&b));
    assert_eq!(FrameCodec.decode(&mut buf).unwrap().unwrap(), a);
    assert_eq!(FrameCodec.decode(&mut buf).unwrap().unwrap(), b);
    assert!(FrameCodec.decode(&mut buf).unwrap().is_none());
    buf.put_slice(b"SHW");
    assert!(FrameCodec.decode_eof(&mut buf).is_err());
}

fn arb_extents(offset: u64, len: u64) -> impl Strategy<Value = Vec<Extent>> {
    proptest::collection::vec((1u64..5000, any::<bool>()), 1..20).prop_map(move |parts| {
        let mut extents = Vec::new();
        let end = offset + len;
        let mut at = offset;
        for (part, data) in parts {
            if at == end {
                break;
            }
            let l = part.min(end - at);
            extents.push(Extent {
                offset: at,
                len: l,
                kind: if data {
                    ExtentKind::Data
                } else {
                    ExtentKind::Zero
                },
            });
            at += l;
        }
        extents
    })
}

fn arb_request() -> impl Strategy<Value = Request> {
    let offset = 0u64..(1 << 50);
    prop_oneof![
        (offset.clone(), 0u64..70_000).prop_map(|(offset, len)| Request::Read { offset, len }),
        (
            offset.clone(),
            proptest::collection::vec(any::<u8>(), 0..3000),
            any::<bool>()
        )
            .prop_map(|(offset, data, fua)| Request::Write {
                offset,
                data: Bytes::from(data),
                flags: WriteFlags { fua },
            }),
        Just(Request::Flush),
        (
            offset.clone(),
            0..=MAX_RANGE_LEN,
            any::<bool>(),
            any::<bool>()
        )
            .prop_map(|(offset, len, alloc, fua)| Request::WriteZeroes {
                offset,
                len,
                mode: if alloc {
                    ZeroMode::Allocate
                } else {
                    ZeroMode::MayUnmap
                },
                flags: WriteFlags { fua },
            }),
        (offset.clone(), 0..=MAX_RANGE_LEN).prop_map(|(offset, len)| Request::Trim { offset, len }),
        (offset, 0..=MAX_RANGE_LEN).prop_map(|(offset, len)| Request::BlockStatus { offset, len }),
        Just(Request::Ping),
        Just(Request::Info),
    ]
}

fn arb_error() -> impl Strategy<Value = BlockError> {
    prop_oneof![
        (any::<u64>(), any::<u64>(), any::<u64>())
            .prop_map(|(offset, len, size)| BlockError::OutOfRange { offset, len, size }),
        ".{0,40}".prop_map(BlockError::InvalidArgument),
        ".{0,40}".prop_map(BlockError::NoSpace),
        ".{0,40}".prop_map(BlockError::ReadOnly),
        ".{0,40}".prop_map(BlockError::Io),
    ]
}

/// Any valid frame: a request, a successful reply to it, or an error reply.
fn arb_frame() -> impl Strategy<Value = Frame> {
    (
        arb_request(),
        any::<u64>(),
        0u8..3,
        arb_error(),
        any::<u64>(),
    )
        .prop_flat_map(|(request, id, shape, error, size)| {
            let request = request.into_frame(id);
            match shape {
                0 => Just(request).boxed(),
                1 => Just(Frame::error_reply(&request, &error)).boxed(),
                _ => match request.kind {
                    Kind::Read => {
                        let len = request.length as usize;
                        let data: Vec<u8> = (0..len).map(|i| i as u8 ^ 0x5a).collect();
                        Just(Frame::ok_reply(&request, Bytes::from(data))).boxed()
                    }
                    Kind::BlockStatus if request.length > 0 => {
                        arb_extents(request.offset, request.length)
                            .prop_map(move |extents| Frame::block_status_reply(&request, &extents))
                            .boxed()
                    }
                    Kind::BlockStatus => Just(Frame::block_status_reply(&request, &[])).boxed(),
                    Kind::Info => Just(Frame::info_reply(&request, size)).boxed(),
                    _ => Just(Frame::ok_reply(&request, Bytes::new())).boxed(),
                },
            }
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn random_frames_round_trip(frame in arb_frame()) {
        let mut buf = encode(&frame);
        let decoded = FrameCodec.decode(&mut buf).unwrap().unwrap();
        prop_assert_eq!(decoded, frame);
        prop_assert!(buf.is_empty());
    }

    #[test]
    fn any_single_flipped_bit_is_detected(frame in arb_frame(), bit in any::<prop::sample::Index>()) {
        let mut bytes = encode(&frame);
        let bit = bit.index(bytes.len() * 8);
        bytes[bit / 8] ^= 1 << (bit % 8);
        let mut buf = bytes.clone();
        let result = FrameCodec.decode(&mut buf);
        prop_assert!(result.is_err(), "bit {} flipped went undetected: {:?}", bit, result);
        if bit / 8 >= HEADER_LEN {
            let is_payload_crc = matches!(result, Err(FrameError::PayloadCrc { .. }));
            prop_assert!(is_payload_crc, "{:?}", result);
        }
    }

    #[test]
    fn truncated_input_waits_for_more_bytes(frame in arb_frame(), cut in any::<prop::sample::Index>()) {
        let bytes = encode(&frame);
        let cut = cut.index(bytes.len());
        let mut buf = BytesMut::from(&bytes[..cut]);
        prop_assert!(FrameCodec.decode(&mut buf).unwrap().is_none());
        prop_assert_eq!(buf.len(), cut, "a partial frame is not consumed");
        buf.extend_from_slice(&bytes[cut..]);
        prop_assert_eq!(FrameCodec.decode(&mut buf).unwrap().unwrap(), frame);
    }
}
