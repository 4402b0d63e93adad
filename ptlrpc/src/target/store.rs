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

/// One client's durable record, written in the same transaction as every
/// change the client makes, so a resent request's reply can be rebuilt.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClientRecord {
    /// The client's UUID.
    pub uuid: String,
    /// xid of the client's last modifying request.
    pub last_xid: Xid,
    /// Its transno.
    pub last_transno: Transno,
    /// Its result (0 or a negative errno).
    pub last_result: i32,
    /// Object versions before it.
    pub pre_versions: [ObjVersion; PRE_VERSIONS],
    /// The version it gave the objects.
    pub post_version: ObjVersion,
    /// xid of the client's last close (closes have their own slot).
    pub last_close_xid: Xid,
    /// Its transno.
    pub last_close_transno: Transno,
    /// Its result.
    pub last_close_result: i32,
    /// The first transno missing when recovery ended without this client
    /// (gap information for its delayed recovery).
    pub gap: Option<Transno>,
    /// The reply body of the last modifying request (at most
    /// [`MAX_KEPT_REPLY`] bytes, else empty), for reconstruction: a resent
    /// CREATE gets the same objects back.
    pub last_reply: Vec<u8>,
}

/// The largest reply body kept in a [`ClientRecord`] for reconstruction.
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

    /// Plans `op` with the front hook's `input`. `Err` carries a
    /// (positive) errno the target answers with, without a transaction.
    fn plan(
        &mut self,
        store: &Self::Store,
        op: Op,
        req: &Frame<'_>,
        input: Self::Input,
    ) -> Result<Plan<<Self::Store as TargetStore>::Change>, i32>;

    /// A client (re)connected: `asked` is its connect data, `negotiated`
    /// what the target answers (flags and limits already cut to what the
    /// target supports); the service may lower limits or fill its own
    /// fields (an OST's grant from free space). Default: nothing.
    fn connected(&mut self, _store: &Self::Store, _uuid: &str, _asked: &ConnectData, _negotiated: &mut ConnectData) {}

    /// The export of `uuid` is gone (disconnect, eviction): the service
    /// drops what it kept for it (grants). Default: nothing.
    fn export_gone(&mut self, _uuid: &str) {}

    /// The body of a reconstructed reply to a resent request, from the
    /// client's record (default: the kept reply body).
    fn reconstruct(&self, rec: &ClientRecord) -> Vec<u8> {
        rec.last_reply.clone()
    }
}
