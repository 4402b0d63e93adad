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
    /// Reply to a recovering or delayed client: the highest transno of
    /// its own updates the target holds durably (from its record at boot);
    /// every replay entry at or below it is committed.
    pub client_committed: u64,
    /// Reply: the target's boot instance (its epoch), for imperative
    /// recovery and logs.
    pub instance: u32,
    /// Modifying requests in flight at once (Lustre's
    /// `max_mod_rpcs_in_flight`, flag `MULTIMODRPCS`): asked by the
    /// client, the (smaller) number the target keeps reply slots for in
    /// the reply. 0 means 1.
    pub max_mod_rpcs: u32,
    /// Request: the target's name, for a service serving several targets
    /// (an OSS's OSTs); empty when it serves one.
    pub target: String,
    /// The client's UUID; the server keeps one export per UUID.
    pub client_uuid: String,
}
