//! Connect flags: the feature bits of [`super::ConnectData::flags`]
//! (Lustre's `OBD_CONNECT_*`, same bit numbers).
//!
//! Owns: the names of the bits a client may ask for. A flag also says
//! whether the matching connect-data field is meaningful.
//!
//! Must not: negotiate; the target answers the subset it honours
//! (`target::connect`) and the import reads it back (`import`).

/// The bits, as plain `u64` constants (the body stores a `u64`).
pub mod connect_flags {
    /// `version` is meaningful.
    pub const VERSION: u64 = 0x20;
    /// `grant` is meaningful (OST clients).
    pub const GRANT: u64 = 0x8;
    /// `transno` is meaningful: replay starts after it.
    pub const TRANSNO: u64 = 0x800;
    /// `brw_size` is meaningful: the largest bulk RPC.
    pub const BRW_SIZE: u64 = 0x4_0000;
    /// The client uses adaptive timeouts.
    pub const AT: u64 = 0x100_0000;
    /// `cksum_types` is meaningful.
    pub const CKSUM: u64 = 0x2000_0000;
    /// Version-based recovery.
    pub const VBR: u64 = 0x8000_0000;
    /// `max_easize` is meaningful: the largest layout.
    pub const MAX_EASIZE: u64 = 0x8_0000_0000;
    /// `max_bytes` is meaningful: the largest object.
    pub const MAXBYTES: u64 = 0x80_0000_0000;
    /// Imperative recovery: the client reconnects when told the target
    /// restarted.
    pub const IMP_RECOV: u64 = 0x100_0000_0000;
    /// `max_mod_rpcs` is meaningful: several modifying requests in flight,
    /// each in its own reply slot (Lustre's `OBD_CONNECT_MULTIMODRPCS`).
    pub const MULTIMODRPCS: u64 = 0x200_0000_0000_0000;
    /// Short I/O: small writes carry their data in the request
    /// (`OstBrw::inline`), no bulk transfer.
    pub const SHORTIO: u64 = 0x2000_0000_0000_0000;
    /// Every flag this build knows.
    pub const ALL: u64 = VERSION
        | GRANT
        | TRANSNO
        | BRW_SIZE
        | AT
        | CKSUM
        | VBR
        | MAX_EASIZE
        | MAXBYTES
        | IMP_RECOV
        | MULTIMODRPCS
        | SHORTIO;
}
