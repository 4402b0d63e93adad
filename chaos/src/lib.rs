//! # chaos — the failure-injection harness (`sheen-chaos`)
//!
//! Real daemons and clients, each in its own network namespace, a
//! verifying workload, faults at seeded random points, and a verdict that
//! names every lost, corrupt or extra thing and every failed call.
//!
//! | module | job |
//! | --- | --- |
//! | [`netns`] | namespaces, veths, the hub bridge; cutting and restoring a link |
//! | [`cluster`] | daemon configs, spawning in a namespace, kill -9, restart, SIGSTOP/SIGCONT |
//! | [`admin`] | the daemons' admin endpoint: fault points, `/metrics` (recovery, evictions) |
//! | [`block`] | self-describing checksummed blocks |
//! | [`oplog`] | the operation log the clients write |
//! | [`worker`] | a workload client (`sheen-chaos worker`, library API) |
//! | [`model`] | a client's log replayed into what must exist; the comparison |
//! | [`verify`] | reading back every client's directory at the end |
//! | [`fault`] | fault kinds and the seeded schedule |
//! | [`run`] | the controller: cycles of fault, settle, figures |
//! | [`report`] | findings judged per cycle; the table and `--json` |
//!
//! Must not: weaken a check to make a run pass, or leave namespaces
//! behind (they are removed at the end, and a crashed run's at the next
//! start).
//!
//! Not yet: clients use the library API, not FUSE mounts; the clients'
//! own timeouts cannot be shortened (the library has no setting), so the
//! targets run with obd_timeout 10 s rather than a few seconds.

pub mod admin;
pub mod block;
pub mod cluster;
pub mod fault;
pub mod model;
pub mod netns;
pub mod oplog;
pub mod report;
pub mod run;
pub mod verify;
pub mod worker;
