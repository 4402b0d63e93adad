//! Identifier newtypes carried in the message header.
//!
//! Owns: [`Xid`], [`Transno`], [`ConnCnt`], [`ExportHandle`],
//! [`ObjVersion`], [`JobId`] and [`Portal`] — plain values with no behaviour
//! beyond ordering, printing and the conversions the codec needs.
//!
//! Must not: allocate xids or transnos (imports and targets do that), or know
//! about the byte layout (that is `header`).

use std::fmt;

macro_rules! id_newtype {
    ($(#[$doc:meta])* $name:ident($inner:ty)) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
        pub struct $name(pub $inner);

        impl $name {
            /// The raw value as carried on the wire.
            pub const fn get(self) -> $inner {
                self.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl From<$inner> for $name {
            fn from(v: $inner) -> Self {
                $name(v)
            }
        }
    };
}

id_newtype!(
    /// Transfer id: unique and increasing per import; a resend keeps its xid.
    Xid(u64)
);
id_newtype!(
    /// Transaction number a target gives a modifying request.
    Transno(u64)
);
impl Transno {
    /// Whether a target that holds its client's updates durable up to
    /// `bound` (a client's `last_transno` or a target's committed transno
    /// as loaded at boot) holds this one: both from the same boot epoch
    /// (the top 32 bits) and this one at or below. Across epochs nothing
    /// follows (an update of an older boot may have been lost in its
    /// crash while the client went on later).
    pub fn covered_by(self, bound: Transno) -> bool {
        self.0 != 0 && self.0 >> 32 == bound.0 >> 32 && self <= bound
    }
}

id_newtype!(
    /// Connection count: bumped on each reconnect; requests carrying a stale
    /// one are dropped by the server.
    ConnCnt(u32)
);
id_newtype!(
    /// Object version before a modifying request (`epoch << 32 | transno`),
    /// used by version-based recovery.
    ObjVersion(u64)
);
id_newtype!(
    /// The lnet portal a request is addressed to. Client-side adaptive
    /// timeouts keep one service estimate per portal.
    Portal(u32)
);

/// The random cookie naming a server-side export (0 before CONNECT).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ExportHandle(pub u64);

impl ExportHandle {
    /// No export yet (the handle a CONNECT request carries).
    pub const NONE: ExportHandle = ExportHandle(0);

    /// The cookie as carried on the wire.
    pub const fn cookie(self) -> u64 {
        self.0
    }
}

impl fmt::Debug for ExportHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ExportHandle({:#018x})", self.0)
    }
}

/// Length of the job id field in the header.
pub const JOBID_LEN: usize = 32;

/// Job id the client tagged a request with (from SLURM_JOB_ID and friends),
/// NUL-padded to [`JOBID_LEN`] bytes. Longer ids are truncated.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct JobId([u8; JOBID_LEN]);

impl JobId {
    /// The empty job id.
    pub const EMPTY: JobId = JobId([0; JOBID_LEN]);

    /// Wraps raw header bytes.
    pub const fn from_bytes(bytes: [u8; JOBID_LEN]) -> JobId {
        JobId(bytes)
    }

    /// Builds a job id from text, truncated to [`JOBID_LEN`] bytes (at a
    /// character boundary).
    pub fn new(text: &str) -> JobId {
        let mut end = text.len().min(JOBID_LEN);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        let mut bytes = [0; JOBID_LEN];
        bytes[..end].copy_from_slice(&text.as_bytes()[..end]);
        JobId(bytes)
    }

    /// The raw bytes as carried on the wire.
    pub const fn as_bytes(&self) -> &[u8; JOBID_LEN] {
        &self.0
    }

    /// The id up to the first NUL, if it is UTF-8.
    pub fn as_str(&self) -> Option<&str> {
        let end = self.0.iter().position(|&b| b == 0).unwrap_or(JOBID_LEN);
        std::str::from_utf8(&self.0[..end]).ok()
    }
}

impl fmt::Debug for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.as_str() {
            Some(s) => write!(f, "JobId({s:?})"),
            None => write!(f, "JobId({:?})", &self.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobid_truncates_at_char_boundary() {
        let long = "é".repeat(20); // 40 bytes
        let id = JobId::new(&long);
        assert_eq!(id.as_str().map(str::len), Some(32));
        assert_eq!(JobId::new("slurm.42").as_str(), Some("slurm.42"));
        assert_eq!(JobId::EMPTY.as_str(), Some(""));
    }
}
