//! Message-level tests: encode/parse round trips, malformed input, body
//! golden bytes, and property tests that the decoder never panics.

use std::time::Duration;

use proptest::prelude::*;

use super::*;

fn connect_data() -> ConnectData {
    ConnectData {
        flags: 0x1234,
        version: 1,
        brw_size: 1 << 20,
        grant: 64 << 20,
        cksum_types: 4,
        max_easize: 4096,
        transno: 99,
        max_bytes: 1 << 40,
        client_committed: 7,
        instance: 3,
        max_mod_rpcs: 8,
        client_uuid: "client-0001-uuid".to_string(),
        target: String::new(),
    }
}

fn request(op: Op, xid: u64) -> Header {
    let mut h = Header::new(MsgKind::Request, op.opcode(), Xid(xid));
    h.conn_cnt = ConnCnt(1);
    h.timeout = Duration::from_secs(11);
    h
}

#[test]
fn connect_round_trip_in_place_and_owned() -> Result<(), Box<dyn std::error::Error>> {
    let bytes = encode(&request(Op::MdsConnect, 7), &connect_data())?;
    let frame = Frame::parse(&bytes)?;
    assert_eq!(frame.op(), Op::MdsConnect);
    assert_eq!(frame.header().xid, Xid(7));
    assert_eq!(frame.header().body_len as usize, bytes.len() - HEADER_LEN);
    let archived = frame.access::<ArchivedConnectData>()?;
    assert_eq!(archived.client_uuid.as_str(), "client-0001-uuid");
    assert_eq!(archived.brw_size.to_native(), 1 << 20);
    assert_eq!(frame.deserialize::<ConnectData>()?, connect_data());
    Ok(())
}

#[test]
fn empty_body_round_trip() -> Result<(), Box<dyn std::error::Error>> {
    let bytes = encode(&request(Op::ObdPing, 1), &())?;
    assert_eq!(bytes.len(), HEADER_LEN);
    let frame = Frame::parse(&bytes)?;
    frame.deserialize::<Empty>()?;
    Ok(())
}

#[test]
fn misaligned_body_is_copied_not_misread() -> Result<(), Box<dyn std::error::Error>> {
    let bytes = encode(&request(Op::OstConnect, 3), &connect_data())?;
    let mut shifted = vec![0u8; bytes.len() + 1];
    shifted[1..].copy_from_slice(&bytes);
    let frame = Frame::parse(&shifted[1..])?;
    // Zero-copy access refuses a misaligned body ...
    assert!(matches!(frame.access::<ArchivedConnectData>(), Err(DecodeError::Body { .. })));
    // ... and deserialize copies it into an aligned buffer.
    assert_eq!(frame.deserialize::<ConnectData>()?, connect_data());
    Ok(())
}

#[test]
fn malformed_messages_are_typed_errors() -> Result<(), Box<dyn std::error::Error>> {
    let good = encode(&request(Op::MdsConnect, 9), &connect_data())?.to_vec();

    // Body shorter than declared.
    let short = &good[..good.len() - 1];
    let err = Frame::parse(short).err();
    assert!(matches!(err, Some(DecodeError::BodyLength { .. })));
    assert_eq!(err.and_then(|e| e.reply_xid()), Some(Xid(9)));

    // Unknown opcode: an error reply with -EOPNOTSUPP is possible.
    let mut h = request(Op::MdsConnect, 10);
    h.opcode = Opcode(9999);
    let unknown = encode(&h, &())?;
    let err = Frame::parse(&unknown).err();
    assert_eq!(err, Some(DecodeError::UnknownOpcode { xid: Xid(10), opcode: 9999 }));
    assert_eq!(err.map(|e| e.errno()), Some(errno::EOPNOTSUPP));

    // Oversized declared body.
    let mut big = good.clone();
    big[36..40].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(Frame::parse(&big), Err(DecodeError::BodyTooLarge { .. })));

    // A body that fails validation: a string pointing past the end.
    let mut corrupt = good.clone();
    let len = corrupt.len();
    corrupt[len - 8..].copy_from_slice(&[0x90, 0, 0, 0, 0xe8, 0x03, 0, 0]);
    let aligned = {
        let mut v = rkyv::util::AlignedVec::<16>::new();
        v.extend_from_slice(&corrupt);
        v
    };
    let frame = Frame::parse(&aligned)?;
    let err = frame.access::<ArchivedConnectData>().err();
    assert!(matches!(err, Some(DecodeError::Body { .. })));
    assert_eq!(err.map(|e| e.errno()), Some(errno::EPROTO));

    // Header-level failures cannot be answered.
    assert_eq!(Frame::parse(&good[..10]).err().and_then(|e| e.reply_xid()), None);
    Ok(())
}

/// Pins rkyv's archived layout of `ConnectData` (little-endian, 32-bit
/// relative pointers, aligned): a change of rkyv features or field order
/// breaks this test, not the wire.
#[test]
fn connect_data_golden_bytes() -> Result<(), Box<dyn std::error::Error>> {
    let bytes = encode(&request(Op::MdsConnect, 1), &connect_data())?;
    let body = &bytes[HEADER_LEN..];
    #[rustfmt::skip]
    let golden: &[u8] = &[
        // client_uuid's 16 bytes, written before the root
        b'c', b'l', b'i', b'e', b'n', b't', b'-', b'0',
        b'0', b'0', b'1', b'-', b'u', b'u', b'i', b'd',
        0x34, 0x12, 0, 0, 0, 0, 0, 0,       // flags
        1, 0, 0, 0,                         // version
        0, 0, 0x10, 0,                      // brw_size 1 MiB
        0, 0, 0, 0x04, 0, 0, 0, 0,          // grant 64 MiB
        4, 0, 0, 0,                         // cksum_types
        0, 0x10, 0, 0,                      // max_easize 4096
        99, 0, 0, 0, 0, 0, 0, 0,            // transno
        0, 0, 0, 0, 0, 1, 0, 0,             // max_bytes 1 TiB
        7, 0, 0, 0, 0, 0, 0, 0,             // client_committed
        3, 0, 0, 0,                         // instance
        8, 0, 0, 0,                         // max_mod_rpcs
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // target: empty, inline
        0x90, 0, 0, 0, 0xa8, 0xff, 0xff, 0xff, // client_uuid: len 16 tagged out-of-line, offset -88
    ];
    assert_eq!(body, golden);
    Ok(())
}

fn arb_header() -> impl Strategy<Value = Header> {
    (
        prop::sample::select(vec![MsgKind::Request, MsgKind::Reply, MsgKind::Error]),
        prop::sample::select(Op::ALL.to_vec()),
        any::<u64>(),
        any::<i32>(),
        0..=MsgFlags::ALL.bits(),
        any::<u32>(),
        any::<[u64; 3]>(),
        (any::<u32>(), any::<u32>()),
        any::<[u64; 4]>(),
        ("[a-z0-9.]{0,32}", any::<u64>(), any::<u16>()),
    )
        .prop_map(|(kind, op, xid, status, flags, conn, [h, t, lc], (st, to), pv, (job, replied, tag))| {
            let mut hdr = Header::new(kind, op.opcode(), Xid(xid));
            hdr.status = status;
            hdr.flags = MsgFlags::from_bits(flags).unwrap_or_default();
            hdr.conn_cnt = ConnCnt(conn);
            hdr.handle = ExportHandle(h);
            hdr.transno = Transno(t);
            hdr.last_committed = Transno(lc);
            hdr.service_time = Duration::from_micros(u64::from(st));
            hdr.timeout = Duration::from_micros(u64::from(to));
            hdr.pre_versions = pv.map(ObjVersion);
            hdr.jobid = JobId::new(&job);
            hdr.replied_xid = Xid(replied);
            hdr.tag = tag;
            hdr
        })
}

fn arb_connect() -> impl Strategy<Value = ConnectData> {
    (any::<(u64, u32, u32, u64, u32, u32, u64)>(), any::<(u64, u64, u32, u32)>(), ".{0,64}").prop_map(
        |((flags, version, brw, grant, ck, ea, tn), (max_bytes, client_committed, instance, max_mod_rpcs), uuid)| {
            ConnectData {
                flags,
                version,
                brw_size: brw,
                grant,
                cksum_types: ck,
                max_easize: ea,
                transno: tn,
                max_bytes,
                client_committed,
                instance,
                max_mod_rpcs,
                target: uuid.chars().rev().collect(),
                client_uuid: uuid,
            }
        },
    )
}

proptest! {
    #[test]
    fn header_round_trips(h in arb_header()) {
        prop_assert_eq!(Header::decode(&h.encode()), Ok(h));
    }

    #[test]
    fn message_round_trips(h in arb_header(), body in arb_connect()) {
        let bytes = encode(&h, &body).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let frame = Frame::parse(&bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let mut expect = h;
        expect.body_len = frame.header().body_len;
        prop_assert_eq!(*frame.header(), expect);
        prop_assert_eq!(frame.deserialize::<ConnectData>(), Ok(body));
    }

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        if let Ok(frame) = Frame::parse(&bytes) {
            let _ = frame.deserialize::<ConnectData>();
            let _ = frame.access::<ArchivedConnectData>();
        }
    }

    #[test]
    fn mutated_messages_never_panic(
        body in arb_connect(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
    ) {
        let bytes = encode(&request(Op::MdsConnect, 5), &body)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let mut v = rkyv::util::AlignedVec::<16>::new();
        v.extend_from_slice(&bytes);
        for (i, b) in edits {
            let at = i.index(v.len());
            v[at] = b;
        }
        if let Ok(frame) = Frame::parse(&v) {
            let _ = frame.access::<ArchivedConnectData>();
            let _ = frame.deserialize::<ConnectData>();
        }
    }
}
