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
//! | [`worker`] | a workload client (`sheen-chaos worker`, its own FUSE mount) |
//! | [`io`] | the workload's calls through the FUSE mount (or the library) |
//! | [`sys`] | close(2) with its error (the crate's one unsafe module) |
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
//! The workers mount with the targets' obd_timeout (`--obd-timeout`,
//! 10 s by default: pings every 2.5 s) and get the MGS's restart notices
//! (imperative recovery), so a restarted target has its clients back
//! within a second or two.
//!
//! The workers run their workload on FUSE mounts (`--library`: the
//! library API), keeping the library for what FUSE cannot express.

pub mod admin;
pub mod block;
pub mod cluster;
pub mod fault;
pub mod io;
pub mod model;
pub mod netns;
pub mod oplog;
pub mod report;
pub mod run;
pub mod sys;
pub mod verify;
pub mod worker;
