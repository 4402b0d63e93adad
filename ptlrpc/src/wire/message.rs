//! A whole message: header plus rkyv body.
//!
//! Owns: [`encode`], which archives a body behind a header, and [`Frame`],
//! a parsed message whose body is validated (bytecheck) before anyone reads
//! it. Enforces [`MAX_BODY_LEN`] and the header's body length.
//!
//! Must not: interpret bodies or decide replies; and never panic, whatever
//! the bytes.

use rkyv::rancor;
use rkyv::util::AlignedVec;

use super::header::{HEADER_LEN, Header};
use super::opcode::Op;
use super::{DecodeError, EncodeError};
use crate::wire::{WireArchived, WireBody, WireDecode};

/// The largest body a message may carry (bulk data travels separately).
pub const MAX_BODY_LEN: usize = 1 << 20;

/// Alignment of encoded messages and of the body within them.
pub const BODY_ALIGN: usize = 16;

/// Encodes `header` (its `body_len` is filled in) followed by `body`
/// archived with rkyv. The result is 16-aligned, so a receiver holding it
/// (or any 16-aligned copy) reads the body in place.
pub fn encode<B>(header: &Header, body: &B) -> Result<AlignedVec<BODY_ALIGN>, EncodeError>
where
    B: WireBody,
{
    let archived = rkyv::to_bytes::<rancor::Error>(body)?;
    let too_large = EncodeError::BodyTooLarge { len: archived.len(), max: MAX_BODY_LEN };
    if archived.len() > MAX_BODY_LEN {
        return Err(too_large);
    }
    let body_len = u32::try_from(archived.len()).map_err(|_| too_large)?;
    let mut h = *header;
    h.body_len = body_len;
    let mut out = AlignedVec::<BODY_ALIGN>::with_capacity(HEADER_LEN + archived.len());
    out.extend_from_slice(&h.encode());
    out.extend_from_slice(&archived);
    Ok(out)
}

/// Encodes `header` followed by `body`, a body archived earlier (by
/// [`rkyv::to_bytes`]); used by the sans-IO state machines, which hold
/// bodies as bytes.
pub fn encode_raw(header: &Header, body: &[u8]) -> Result<AlignedVec<BODY_ALIGN>, EncodeError> {
    let too_large = EncodeError::BodyTooLarge { len: body.len(), max: MAX_BODY_LEN };
    if body.len() > MAX_BODY_LEN {
        return Err(too_large);
    }
    let mut h = *header;
    h.body_len = u32::try_from(body.len()).map_err(|_| too_large)?;
    let mut out = AlignedVec::<BODY_ALIGN>::with_capacity(HEADER_LEN + body.len());
    out.extend_from_slice(&h.encode());
    out.extend_from_slice(body);
    Ok(out)
}

/// A message whose header is valid, whose opcode is known and whose body
/// has the declared length. The body is validated when it is read.
#[derive(Debug, Clone, Copy)]
pub struct Frame<'a> {
    header: Header,
    op: Op,
    body: &'a [u8],
}

impl<'a> Frame<'a> {
    /// Parses the header and checks the body length and opcode.
    pub fn parse(bytes: &'a [u8]) -> Result<Frame<'a>, DecodeError> {
        let header = Header::decode(bytes)?;
        let xid = header.xid;
        let body = bytes.get(HEADER_LEN..).unwrap_or_default();
        if header.body_len as usize > MAX_BODY_LEN {
            return Err(DecodeError::BodyTooLarge { xid, len: header.body_len, max: MAX_BODY_LEN });
        }
        if body.len() != header.body_len as usize {
            return Err(DecodeError::BodyLength { xid, declared: header.body_len, actual: body.len() });
        }
        let op = Op::try_from(header.opcode).map_err(|e| DecodeError::UnknownOpcode { xid, opcode: e.0 })?;
        Ok(Frame { header, op, body })
    }

    /// The header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The operation named by the header's opcode.
    pub fn op(&self) -> Op {
        self.op
    }

    /// The raw, not yet validated, body bytes.
    pub fn body_bytes(&self) -> &'a [u8] {
        self.body
    }

    /// Validates the body as `T` and returns it in place (zero copy). A body
    /// that is not aligned in memory fails validation; use
    /// [`Frame::deserialize`] for buffers of unknown alignment.
    pub fn access<T>(&self) -> Result<&'a T, DecodeError>
    where
        T: WireArchived,
    {
        rkyv::access::<T, rancor::Error>(self.body).map_err(|e| self.body_error(&e))
    }

    /// Validates the body and deserializes it into an owned `T`, copying
    /// the bytes to an aligned buffer first if they are misaligned.
    pub fn deserialize<T>(&self) -> Result<T, DecodeError>
    where
        T: WireDecode,
    {
        let aligned = (self.body.as_ptr() as usize).is_multiple_of(BODY_ALIGN);
        let result = if aligned {
            rkyv::from_bytes::<T, rancor::Error>(self.body)
        } else {
            let mut copy = AlignedVec::<BODY_ALIGN>::with_capacity(self.body.len());
            copy.extend_from_slice(self.body);
            rkyv::from_bytes::<T, rancor::Error>(&copy)
        };
        result.map_err(|e| self.body_error(&e))
    }

    fn body_error(&self, e: &rancor::Error) -> DecodeError {
        DecodeError::Body { xid: self.header.xid, reason: e.to_string() }
    }
}
