//! Fuzz the tcp LND's frame decoder the way a connection uses it: a byte
//! stream cut into headers and the payloads they announce. No input may
//! panic it, and every accepted header must re-encode to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lnet::wire::{HDR_SIZE, LnetHdr, MsgBody};

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    while rest.len() >= HDR_SIZE {
        let Ok(h) = LnetHdr::decode(&rest[..HDR_SIZE], 1 << 20) else { return };
        if !matches!(h.body, MsgBody::Put { .. } | MsgBody::Reply { .. }) {
            assert_eq!(h.payload_len, 0);
        }
        let again = LnetHdr::decode(&h.encode(), 1 << 20).expect("re-encoded header decodes");
        assert_eq!(again, h);
        let skip = HDR_SIZE + h.payload_len as usize;
        if skip > rest.len() {
            return;
        }
        rest = &rest[skip..];
    }
});
