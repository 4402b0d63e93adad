//! What a target needs from its storage and its service.
//!
//! Owns: [`TargetStore`] (the persistence binding mdt and ost implement:
//! object versions, the per-client table, the server record, atomic
//! transactions and commits), [`TargetService`] (what a request means:
//! which objects it touches and what it changes), and the durable records
//! ([`ClientRecord`], Lustre's `lsd_client_data`; [`ServerRecord`]).
//!
//! Front work: a service may need work done before the target sees a
//! request (an OST write's bulk GET of the client's pages). The driver's
//! front hook (`driver::TargetFront`) does it outside the target's lock
//! and hands the result to [`TargetService::plan`] as the request's
//! [`TargetService::Input`]; the plan moves it into its change, and
//! [`TargetStore::apply`] consumes it. Services without front work use
//! `()`.
//!
//! Commits: [`TargetStore::commit`] makes everything so far durable before
//! it returns (boot, new client records, disconnects);
//! [`TargetStore::commit_async`] only starts one (the periodic commit: a
//! store with a commit thread hands it over and returns at once).
//! [`TargetStore::committed`] must stay truthful either way: it only ever
//! names transnos that are durable.
//!
//! Must not: perform I/O itself; implementations may (a file-backed store
//! in mdt/ost), but the target calls them synchronously, under its lock,
//! and they never block on the network.
//!
//! Records: [`ClientRecord`] and its [`ReplySlot`]s have one byte form,
//! [`ClientRecord::encode`] / [`ClientRecord::decode`]; mdt, ost and the
//! file store keep those bytes as they are.

use rkyv::{Archive, Deserialize, Serialize};

use crate::wire::{ConnectData, Frame, ObjVersion, Op, PRE_VERSIONS, Transno, Xid};

/// An object a request touches (an MDT inode's FID, an OST object id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjId(pub u128);

/// The target's durable identity and transno high-water mark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ServerRecord {
    /// Boot epoch: bumped at each boot; new transnos start at
    /// `epoch << 32` once recovery is over.
    pub epoch: u32,
    /// The highest transno executed (durable as of the last commit).
    pub last_transno: Transno,
}

/// One client's durable record (Lustre's `lsd_client_data` with its
/// `lsd_reply_data` slots), written in the same transaction as every
/// change the client makes, so a resent request's reply can be rebuilt.
/// [`ClientRecord::encode`] is its one on-disk form, for every store.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClientRecord {
    /// The client's UUID.
    pub uuid: String,
    /// The client said every request of its up to this xid had its reply
    /// (`replied_xid` of its requests): slots at or below it are free.
    pub replied_xid: Xid,
    /// The highest transno of the client's updates. Updates run in
    /// transno order and commits are prefixes of it, so as loaded at boot
    /// every update of the client's at or below it is durable.
    pub last_transno: Transno,
    /// The reply of the last update in each slot (tag), by tag, for
    /// reconstruction; a slot the client acknowledged is dropped.
    pub slots: Vec<ReplySlot>,
    /// The first transno missing when recovery ended without this client
    /// (gap information for its delayed recovery).
    pub gap: Option<Transno>,
}

/// The reply to one update, kept in its client's slot (tag).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReplySlot {
    /// The slot (the request's tag).
    pub tag: u16,
    /// The request's xid.
    pub xid: Xid,
    /// Its transno.
    pub transno: Transno,
    /// Its result (0 or a negative errno).
    pub result: i32,
    /// Object versions before it.
    pub pre_versions: [ObjVersion; PRE_VERSIONS],
    /// The version it gave the objects.
    pub post_version: ObjVersion,
    /// The reply body (at most [`MAX_KEPT_REPLY`] bytes, else empty and
    /// the service keeps it): a resent CREATE gets the same objects back.
    pub reply: Vec<u8>,
}

impl ClientRecord {
    /// The slot holding the reply to `xid`.
    pub fn slot_of(&self, xid: Xid) -> Option<&ReplySlot> {
        self.slots.iter().find(|s| s.xid == xid && xid != Xid(0))
    }

    /// Puts `slot` in place of the slot with its tag.
    pub fn set_slot(&mut self, slot: ReplySlot) {
        match self.slots.binary_search_by_key(&slot.tag, |s| s.tag) {
            Ok(i) => self.slots[i] = slot,
            Err(i) => self.slots.insert(i, slot),
        }
    }

    /// The client acknowledged every reply up to `xid`: frees those
    /// slots. Returns whether anything changed.
    pub fn acknowledge(&mut self, xid: Xid) -> bool {
        if xid <= self.replied_xid {
            return false;
        }
        self.replied_xid = xid;
        self.slots.retain(|s| s.xid > xid);
        true
    }

    /// The record's bytes as every store keeps them: a format byte, then
    /// the rkyv archive of [`StoredClient`]. The UUID is inside (stores
    /// may key by it as well).
    pub fn encode(&self) -> Vec<u8> {
        let stored = StoredClient::from(self);
        let mut out = vec![RECORD_FORMAT];
        match rkyv::to_bytes::<rkyv::rancor::Error>(&stored) {
            Ok(b) => out.extend_from_slice(&b),
            // A few integers, a string and byte vectors: archiving cannot
            // fail short of allocation failure.
            Err(e) => panic!("archiving a client record: {e}"),
        }
        out
    }

    /// Decodes [`ClientRecord::encode`]'s bytes (disk input: validated).
    pub fn decode(bytes: &[u8]) -> Result<ClientRecord, RecordError> {
        let (&format, rest) = bytes.split_first().ok_or(RecordError::Empty)?;
        if format != RECORD_FORMAT {
            return Err(RecordError::Format(format));
        }
        let mut aligned = rkyv::util::AlignedVec::<16>::with_capacity(rest.len());
        aligned.extend_from_slice(rest);
        let s = rkyv::from_bytes::<StoredClient, rkyv::rancor::Error>(&aligned)
            .map_err(|e| RecordError::Body(e.to_string()))?;
        Ok(ClientRecord::from(s))
    }
}

/// The format byte of [`ClientRecord::encode`].
pub const RECORD_FORMAT: u8 = 2;

/// Why a stored client record did not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// No bytes.
    #[error("empty client record")]
    Empty,
    /// An unknown format byte.
    #[error("client record format {0} (this build reads {RECORD_FORMAT})")]
    Format(u8),
    /// The archive did not validate.
    #[error("client record: {0}")]
    Body(String),
}

/// A [`ReplySlot`] as archived.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
struct StoredSlot {
    tag: u16,
    xid: u64,
    transno: u64,
    result: i32,
    pre_versions: [u64; PRE_VERSIONS],
    post_version: u64,
    reply: Vec<u8>,
}

/// A [`ClientRecord`] as archived.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
struct StoredClient {
    uuid: String,
    replied_xid: u64,
    last_transno: u64,
    gap: Option<u64>,
    slots: Vec<StoredSlot>,
}

impl From<&ClientRecord> for StoredClient {
    fn from(r: &ClientRecord) -> StoredClient {
        StoredClient {
            uuid: r.uuid.clone(),
            replied_xid: r.replied_xid.0,
            last_transno: r.last_transno.0,
            gap: r.gap.map(|t| t.0),
            slots: r
                .slots
                .iter()
                .map(|s| StoredSlot {
                    tag: s.tag,
                    xid: s.xid.0,
                    transno: s.transno.0,
                    result: s.result,
                    pre_versions: s.pre_versions.map(|v| v.0),
                    post_version: s.post_version.0,
                    reply: s.reply.clone(),
                })
                .collect(),
        }
    }
}

impl From<StoredClient> for ClientRecord {
    fn from(s: StoredClient) -> ClientRecord {
        let mut slots: Vec<ReplySlot> = s
            .slots
            .into_iter()
            .map(|s| ReplySlot {
                tag: s.tag,
                xid: Xid(s.xid),
                transno: Transno(s.transno),
                result: s.result,
                pre_versions: s.pre_versions.map(ObjVersion),
                post_version: ObjVersion(s.post_version),
                reply: s.reply,
            })
            .collect();
        slots.sort_by_key(|s| s.tag);
        slots.dedup_by_key(|s| s.tag);
        ClientRecord {
            uuid: s.uuid,
            replied_xid: Xid(s.replied_xid),
            last_transno: Transno(s.last_transno),
            slots,
            gap: s.gap.map(Transno),
        }
    }
}

/// The largest reply body kept in a [`ReplySlot`] for reconstruction.
pub const MAX_KEPT_REPLY: usize = 512;

/// What one transaction writes, atomically: the service's change, the
/// new version of every touched object, the client's record and the
/// server record.
#[derive(Debug, Clone)]
pub struct Txn<C> {
    /// The transaction number.
    pub transno: Transno,
    /// The version the touched objects get.
    pub version: ObjVersion,
    /// The touched objects (at most [`PRE_VERSIONS`]).
    pub objects: Vec<ObjId>,
    /// Their versions before (for journals and checks).
    pub pre_versions: [ObjVersion; PRE_VERSIONS],
    /// The service's change.
    pub change: C,
    /// The request's xid.
    pub xid: Xid,
    /// The request's slot (its tag).
    pub tag: u16,
    /// The client's record after this transaction.
    pub client: ClientRecord,
    /// The server record after this transaction.
    pub server: ServerRecord,
    /// Whether this is a replay (primary or delayed).
    pub replay: bool,
}

/// The client table and server record as found at mount.
#[derive(Debug, Clone, Default)]
pub struct Persisted {
    /// The server record (default on a fresh target).
    pub server: ServerRecord,
    /// Every known client.
    pub clients: Vec<ClientRecord>,
}

/// The storage binding of a target. Every method sees the current
/// (volatile) state; what survives a crash is what was there at the last
/// [`TargetStore::commit`].
pub trait TargetStore {
    /// A service's change, applied atomically with the records.
    type Change;

    /// The persistent state at mount.
    fn load(&self) -> Persisted;
    /// The current version of `obj` (zero if it does not exist).
    fn version(&self, obj: ObjId) -> ObjVersion;
    /// Applies `txn` atomically. `Err` (a positive errno: the data write
    /// failed) means nothing of it was recorded; the target answers the
    /// request with that errno and forgets the transno.
    fn apply(&mut self, txn: Txn<Self::Change>) -> Result<(), i32>;
    /// Writes (adds or replaces) a client record on its own.
    fn put_client(&mut self, rec: ClientRecord);
    /// Removes a client record (eviction, disconnect).
    fn remove_client(&mut self, uuid: &str);
    /// Writes the server record on its own.
    fn put_server(&mut self, rec: ServerRecord);
    /// Makes everything so far durable (a transaction-group commit) before
    /// returning.
    fn commit(&mut self);
    /// Starts a commit of everything so far and returns without waiting
    /// for it (the periodic commit). [`TargetStore::committed`] advances
    /// once it is durable. Default: [`TargetStore::commit`].
    fn commit_async(&mut self) {
        self.commit();
    }
    /// The highest transno that is durable.
    fn committed(&self) -> Transno;
}

/// What a request means to the service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan<C> {
    /// A read: answer with `body`, no transaction.
    Read {
        /// The reply body.
        body: Vec<u8>,
    },
    /// An update of `objects` (at most [`PRE_VERSIONS`]) by `change`;
    /// answer with `body` once applied.
    Update {
        /// The objects touched, in the order of the header's pre-versions.
        objects: Vec<ObjId>,
        /// The change.
        change: C,
        /// The reply body.
        body: Vec<u8>,
    },
}

/// A service on a target (mdt, ost, the test key-value service): turns a
/// request into a [`Plan`] against the current state. Must be
/// deterministic: a replay plans the same objects as the original.
pub trait TargetService {
    /// The store it runs on.
    type Store: TargetStore;
    /// What the driver's front hook hands over with a request (an OST
    /// write's pages); `()` for services without front work. Dropped
    /// unused when the request is refused, reconstructed or a duplicate.
    type Input;

    /// Plans `op` of client `uuid` (the export that sent it) with the
    /// front hook's `input`. `Err` carries a (positive) errno the target
    /// answers with, without a transaction.
    fn plan(
        &mut self,
        store: &Self::Store,
        uuid: &str,
        op: Op,
        req: &Frame<'_>,
        input: Self::Input,
    ) -> Result<Plan<<Self::Store as TargetStore>::Change>, i32>;

    /// A client (re)connected: `asked` is its connect data, `negotiated`
    /// what the target answers (flags and limits already cut to what the
    /// target supports); the service may lower limits or fill its own
    /// fields (an OST's grant from free space). Default: nothing.
    fn connected(&mut self, _store: &Self::Store, _uuid: &str, _asked: &ConnectData, _negotiated: &mut ConnectData) {}

    /// The export of `uuid` is gone (disconnect, eviction, the end of
    /// recovery without it): the service drops what it kept for it
    /// (grants) and may write to the store what that takes (an MDT closes
    /// the export's open handles), after the target removed the client
    /// record. Default: nothing.
    fn export_gone(&mut self, _store: &mut Self::Store, _uuid: &str) {}

    /// A replay of a request the target says ran already (its reply was
    /// lost, or it was committed before the restart and the client keeps
    /// it anyway: Lustre's open replay) is answered without running it
    /// again; first the service may restore what it keeps only in memory
    /// for that request (an MDT's open handle, owned by `uuid`). Must
    /// change nothing durable. Default: nothing.
    fn replay_executed(&mut self, _store: &Self::Store, _uuid: &str, _op: Op, _req: &Frame<'_>) {}

    /// The body of a reconstructed reply to resent request `req` of
    /// `uuid`, from its slot (default: the kept reply body). The service
    /// may first restore what it keeps only in memory for that request
    /// and a restart lost (an MDT's open handle: Lustre's
    /// `mdt_reconstruct_open` opens again). Must change nothing durable.
    fn reconstruct(&mut self, _uuid: &str, slot: &ReplySlot, _req: &Frame<'_>) -> Vec<u8> {
        slot.reply.clone()
    }
}
