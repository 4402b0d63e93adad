//! Fuzz the message decoder: no input may panic it. The bytes are copied to
//! a 16-aligned buffer so the zero-copy path is exercised too.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ptlrpc::wire::{ArchivedConnectData, ConnectData, Frame};

fuzz_target!(|data: &[u8]| {
    let _ = Frame::parse(data).map(|f| f.deserialize::<ConnectData>());
    let mut aligned = rkyv::util::AlignedVec::<16>::with_capacity(data.len());
    aligned.extend_from_slice(data);
    if let Ok(frame) = Frame::parse(&aligned) {
        let _ = frame.access::<ArchivedConnectData>();
        let _ = frame.deserialize::<ConnectData>();
        let _ = frame.header().flags;
    }
});
