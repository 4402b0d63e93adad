//! Message bodies shared by every service.
//!
//! Owns: the rkyv-archived bodies of the generic RPCs (CONNECT's connect
//! data); per-service bodies (MDS, OST, MGS) join this module, or siblings
//! of it, as those services land.
//!
//! Must not: hold behaviour beyond plain data; negotiation lives with the
//! import and export.

use rkyv::{Archive, Deserialize, Serialize};

/// The body of a PING and of replies that carry nothing: rkyv archives the
/// unit type to zero bytes.
pub type Empty = ();

/// Connect data: what a client asks for in CONNECT and the subset the
/// server honours in the reply (Lustre's `obd_connect_data`).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
#[rkyv(derive(Debug))]
pub struct ConnectData {
    /// `OBD_CONNECT_*`-style feature bits.
    pub flags: u64,
    /// Protocol version of the sender.
    pub version: u32,
    /// Largest bulk RPC in bytes.
    pub brw_size: u32,
    /// Grant requested or given, in bytes.
    pub grant: u64,
    /// Checksum types supported (bit set).
    pub cksum_types: u32,
    /// Largest extended-attribute/layout size in bytes.
    pub max_easize: u32,
    /// Request: the target's last transno as the client knows it. Reply:
    /// the target's last committed transno (where replay starts).
    pub transno: u64,
    /// Reply: the largest object (stripe) size the target stores.
    pub max_bytes: u64,
    /// Reply: the last xid of this client's that the target holds durably;
    /// every modifying request of the client's up to it is committed.
    pub committed_xid: u64,
    /// Reply: the target's boot instance (its epoch), for imperative
    /// recovery and logs.
    pub instance: u32,
    /// Request: the target's name, for a service serving several targets
    /// (an OSS's OSTs); empty when it serves one.
    pub target: String,
    /// The client's UUID; the server keeps one export per UUID.
    pub client_uuid: String,
}
