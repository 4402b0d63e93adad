//! # client — what users touch: the library API, the `sheen` CLI and (where
//! built) the FUSE mount
//!
//! Owns the client side of the file system:
//!
//! | module | job |
//! | --- | --- |
//! | [`lov`] | striping arithmetic (pure) |
//! | [`lov_io`] | a striped file's I/O: split, parallel BRWs, glimpse, truncate, sync |
//! | [`mgc`] | config log -> target table; MGS admin requests |
//! | [`mdc`] | one call per MDS opcode |
//! | [`osc`] | one OST's client (`ost::client::OstClient` behind a lazy connect) |
//! | [`fs`] | the library API: [`Sheen`] mount, path/FID operations, [`File`] |
//! | [`error`] | [`ClientError`] and the one errno mapping |
//! | [`cli`] | the `sheen` command's output helpers and `ping` |
//! | [`up`] | `sheen up` / `down`: a one-node file system of child daemons |
//!
//! Must not: hold server-side logic, or cache what another client may
//! change (until the lock manager exists). Known gaps: written data is not
//! kept for replay after an OST restart; `..` in paths is refused.

pub mod cli;
pub mod cli_fs;
pub mod error;
pub mod fs;
pub mod fuse;
pub mod lov;
pub mod lov_io;
pub mod mdc;
pub mod mgc;
pub mod osc;
mod rpc;
pub mod up;

pub use error::{ClientError, Result};
pub use fs::{Cred, File, Sheen, Stat};
