//! # mdt — the MGS and the metadata target
//!
//! Owns the management service (target registry, the persistent ordered
//! config log, pools, imperative-recovery notices; [`mgs`]) and the
//! metadata target (FIDs from sequences, the namespace with versions,
//! layouts and OST object allocation, open files, the destroy log,
//! asynchronous commits; [`ns`], [`alloc`], [`txn`]), the MDT on ptlrpc's
//! target framework ([`tgt`]: exports, reply reconstruction, replay and
//! VBR after a restart), the operations it serves ([`service`]), the
//! namespace checker ([`check`]) and the `sheen-mds` daemon's
//! configuration ([`config`]). See `DESIGN.md`,
//! section mdt, and issue 7.
//!
//! Must not: put wire bodies here (they live in `ptlrpc::wire::{mds,mgs}`),
//! or call an OST while holding the namespace's write lock except to
//! precreate objects.
//!
//! ## Code map
//!
//! | module | job |
//! | --- | --- |
//! | `store` | [`store::Kv`] trait, fjall implementation, value codec |
//! | `fid` | FID keys, the MDT's own FID cursor |
//! | `seq` | MDT0's sequence controller, the MDT's sequence server, per-client grants and the create check |
//! | `inode` | the stored inode and file types |
//! | `dir` | hashed directory keys, stable readdir cookies, lookup |
//! | `txn` | epochs, transnos/versions, the commit thread |
//! | `perm` | permission rules with the caller's credentials (POSIX, as Linux answers) |
//! | `ns` | namespace operations (run now, or deferred: validated and built for the target to apply), open handles, orphans, destroy log |
//! | `alloc` | OST table, pools, QoS allocation, precreate, the OST interface |
//! | `mgs` | registry, config log, lifecycle, pools, followers |
//! | `service` | the MDT's operations on decoded bodies, the MGS handler, metrics |
//! | `tgt` | the MDT as a target: store (client records, versions, apply), service (plan), front (reads outside the lock), intent (lock enqueue intents, the locks updates take) |
//! | `locks` | the lock manager run on threads: read locks, local exclusive locks, blocking callbacks to clients, eviction at the callback timeout |
//! | `check` | namespace checker (dirents, inodes, links, objects) |
//! | `stop` | stop signal threads wait on between rounds |
//! | `config` | `sheen-mds` TOML configuration |
//! | `daemon` | lnet, stores, services, follower, commit and housekeeping threads |
//!
//! ## Invariants
//!
//! - One modifying operation = one atomic store batch (the changes, the
//!   cursors, destroy-log records, the new last transno).
//! - `last_committed` never passes a transno whose batch was not persisted.
//! - A sequence is granted once, durably before the grant is used or
//!   answered; a client names only FIDs from its own grants.
//! - An object id is handed out once: OST cursors are written with the
//!   layouts that use them; objects a dropped transaction took go back to
//!   their pool; a replayed create claims its original objects;
//!   precreated-but-unused ids are cleaned up when the MDT reaches the
//!   OST, which after a restart waits for the end of recovery.
//! - Every open and close is a transaction: an open stays on the client's
//!   replay list until its close is committed and is replayed after a
//!   restart (committed or not), restoring its handle; orphans are
//!   destroyed at the end of recovery, not at mount.
//! - An open handle belongs to the export that opened (or replayed) it
//!   and is closed when that export goes (eviction, disconnect).
//! - A readdir cookie stays valid while its entry lives.

//!
//! ## Not yet
//!
//! - A replay refused for good (a replayed open of a file gone since) is
//!   reported lost to the client; a delayed (VBR) replay of a create whose
//!   objects the end-of-recovery cleanup destroyed gets new objects; an
//!   object a lost create took and whose client never returned stays on
//!   the OST below the cursor (what Lustre's lfsck finds).
//! - An object of an older OST sequence (before the previous one) that a
//!   dropped transaction took while the sequence rolled over stays on the
//!   OST (logged; orphan cleanup covers the current and previous
//!   sequence).
//! - With the MGS in the same process as the MDT, clients learn of an MDT
//!   restart only once their MGC noticed the MGS gone and read the restart
//!   record from the new one (~2 s); Lustre has the same limit and
//!   recommends a separate MGS for imperative recovery.
//! - Sequences (`seq`): MDT0's controller hands super-sequences only to
//!   its own sequence server, in process — there is no `SEQ_QUERY`
//!   super-sequence request for other MDTs (there are none yet, DNE is
//!   later). OST object sequences come from this MDT's sequence server
//!   (`alloc`), not from a sequence server on each OST as in Lustre.
//! - A client's grants are forgotten only when more than `GRANTS_KEPT`
//!   runs pile up under one client UUID; an unmounted client's grants
//!   stay in the store (a few bytes per UUID).
//! - Locks are not replayed after an MDT restart: clients drop every lock
//!   when they reconnect. No lock LRU pressure from the MDT (a client's
//!   cache is bounded by the client); no PERM or XATTR bits (permissions
//!   and xattrs are not cached by clients).

#![forbid(unsafe_code)]

pub mod alloc;
pub mod check;
pub mod config;
pub mod daemon;
pub mod dir;
pub mod error;
pub mod fid;
pub mod inode;
pub mod locks;
pub mod mgs;
pub mod ns;
pub mod perm;
pub mod seq;
pub mod service;
pub mod stop;
pub mod store;
pub mod tgt;
pub mod txn;

pub use error::{MdtError, Result};
pub use ns::Namespace;
