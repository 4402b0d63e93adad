//! # client — what users touch: the library API, the `sheen` CLI and the
//! FUSE mount
//!
//! Owns the client side of the file system:
//!
//! | module | job |
//! | --- | --- |
//! | [`lov`] | striping arithmetic (pure) |
//! | [`lov_io`] | a striped file's I/O: split, parallel BRWs, glimpse, truncate, sync |
//! | [`mgc`] | config log read at mount and followed live; MGS admin requests |
//! | [`targets`] | the mount's target table, changed by each followed record (OSTs added/deactivated/removed, restart notices to the imports) |
//! | [`options`] | client timeouts under Lustre's names (`obd_timeout`, `ping_interval`, `at_min`, `at_max`) |
//! | [`mdc`] | one call per MDS opcode |
//! | [`osc`] | one OST's client (`ost::client::OstClient` behind a lazy connect) |
//! | [`stream`] | one open's readahead window and write-behind |
//! | [`fs`] | the library API: [`Sheen`] mount, path/FID operations, [`File`] |
//! | [`fuse`] | the FUSE mount (fuser, direct I/O; kernel TTLs only under MDT locks, callbacks invalidate) over [`fs`] |
//! | [`locks`] | the MDT locks this client holds (granted, called back, given up early, dropped on reconnect) |
//! | [`jobid`] | the job id in every request header (`SHEEN_JOBID_VAR`; a FUSE caller's own, by pid) |
//! | [`creds`] | the caller's credentials (fsuid, fsgid, groups) in every MDS request the MDT checks permissions for (a FUSE caller's own, groups from `/proc/PID/status`) |
//! | [`error`] | [`ClientError`] and the one errno mapping |
//! | [`cli`], [`cli_fs`] | the `sheen` command's subcommands and their tables / `--json` |
//! | [`up`] | `sheen up` / `down`: a one-node file system of child daemons |
//! | [`progress`] | the CLI's long steps on a terminal's stderr, with elapsed times |
//!
//! Must not: hold server-side logic, or cache what another client may
//! change except under a lock the MDT granted ([`locks`]).
//!
//! Not done yet: the MGC has no import of its own to the MGS (it notices
//! an MGS restart from an unanswered read, see [`mgc`]);
//! I/O copies through lnet pages (the caller-registered zero-copy path
//! is not built); `..` in library paths is refused; the servers keep no
//! per-job statistics of the job ids requests carry yet; FUSE has no POSIX locks of its own (the kernel's are node-local),
//! RENAME_EXCHANGE, or fallocate that reserves space (mode 0 only extends
//! the size; punching holes works); mmap of a file is not possible
//! (direct I/O). Size on MDT is in the MDT's memory only: after an MDT
//! restart, and for files whose writer crashed or was evicted (its handle
//! is never closed), stats glimpse the objects; a truncate or utimes also
//! leaves the size to glimpses until the next clean close of a lone writer.
//! Caching under MDT locks (FUSE): names that do not exist are not cached
//! (a negative entry would have to be invalidated under its directory's
//! kernel lock, which the kernel may hold while it waits for the MDT);
//! names are cached only in directories searchable by everyone (no kernel
//! permission checks on this mount), file sizes only when the MDT knows
//! them exactly (no OST extent locks); data is never cached (direct I/O).

pub mod cli;
pub mod cli_fs;
pub mod creds;
pub mod error;
pub mod fs;
pub mod fuse;
pub mod jobid;
pub mod locks;
pub mod lov;
pub mod lov_io;
pub mod mdc;
pub mod mgc;
pub mod options;
pub mod osc;
pub mod progress;
mod rpc;
pub mod stream;
pub mod targets;
pub mod up;

pub use error::{ClientError, Result};
pub use fs::{Cred, File, Sheen, Stat};
pub use options::MountOptions;
