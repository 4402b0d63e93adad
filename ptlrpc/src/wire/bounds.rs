//! The rkyv bounds a wire body needs, named once: [`WireBody`] (archives
//! with rkyv's high-level serializer), [`WireArchived`] (an archived body
//! validated in place) and [`WireDecode`] (validated and deserialized).
//! Each is a trait with a blanket impl, so any type meeting the bounds has
//! it; generic code across the crates writes `B: WireBody` instead of
//! spelling out rkyv's serializer, validator and deserializer types.
//!
//! Must not: add bounds of its own beyond rkyv's.

use rkyv::api::high::{HighDeserializer, HighSerializer, HighValidator};
use rkyv::bytecheck::CheckBytes;
use rkyv::rancor;
use rkyv::ser::allocator::ArenaHandle;
use rkyv::util::AlignedVec;
use rkyv::{Archive, Deserialize, Portable, Serialize};

/// A body that archives with rkyv's high-level serializer
/// (`rkyv::to_bytes`): what a request or reply carries.
pub trait WireBody: for<'a> Serialize<HighSerializer<AlignedVec, ArenaHandle<'a>, rancor::Error>> {}

impl<T> WireBody for T where T: ?Sized + for<'a> Serialize<HighSerializer<AlignedVec, ArenaHandle<'a>, rancor::Error>> {}

/// An archived body that validates in place (`rkyv::access`).
pub trait WireArchived: Portable + for<'b> CheckBytes<HighValidator<'b, rancor::Error>> {}

impl<T> WireArchived for T where T: ?Sized + Portable + for<'b> CheckBytes<HighValidator<'b, rancor::Error>> {}

/// A body whose archive validates and deserializes back into it
/// (`rkyv::from_bytes`).
pub trait WireDecode:
    Archive<
        Archived: for<'b> CheckBytes<HighValidator<'b, rancor::Error>>
                      + Deserialize<Self, HighDeserializer<rancor::Error>>,
    > + Sized
{
}

impl<T> WireDecode for T
where
    T: Archive,
    T::Archived: for<'b> CheckBytes<HighValidator<'b, rancor::Error>> + Deserialize<T, HighDeserializer<rancor::Error>>,
{
}
