//! Value codec: rkyv archives, validated (bytecheck) when read back.
//!
//! Must not: panic on stored bytes; a value that does not validate is
//! [`StoreError::Corrupt`].

use rkyv::rancor;
use rkyv::util::AlignedVec;

use super::{StoreError, Table};
use ptlrpc::wire::{WireBody, WireDecode};

/// Archives `v`. The types the MDT stores always archive; a failure is a
/// programmer's error and becomes an empty value that fails to decode.
pub fn encode<T>(v: &T) -> Vec<u8>
where
    T: WireBody,
{
    rkyv::to_bytes::<rancor::Error>(v).map(|b| b.to_vec()).unwrap_or_default()
}

/// Validates and deserializes a value of `t`.
pub fn decode<T>(t: Table, bytes: &[u8]) -> Result<T, StoreError>
where
    T: WireDecode,
{
    let mut aligned = AlignedVec::<16>::with_capacity(bytes.len());
    aligned.extend_from_slice(bytes);
    rkyv::from_bytes::<T, rancor::Error>(&aligned)
        .map_err(|e| StoreError::Corrupt { table: t.name(), why: e.to_string() })
}
