//! The operation log: one JSON line per operation a workload client ran,
//! with its outcome, written as the operation returns.
//!
//! Owns: [`Rec`], [`Op`], [`Outcome`], [`Found`] (the shapes shared by the
//! worker that writes the log and the verifier that reads it), [`now_us`]
//! (the wall clock the controller and the workers share: one machine) and
//! [`read_log`].
//!
//! Must not: interpret records (the model does).

use std::path::Path;

use serde::{Deserialize, Serialize};

/// Microseconds since the UNIX epoch: one clock for every process of a run.
pub fn now_us() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

/// What an operation did, with the arguments the verifier needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// The client mounted and made its own directory.
    Mount {
        /// The client's directory.
        root: String,
        /// Through a FUSE mount (writes return once copied: they are
        /// known to have landed only after a successful fsync or close).
        #[serde(default)]
        fuse: bool,
    },
    /// mkdir.
    Mkdir {
        /// Path.
        path: String,
    },
    /// rmdir.
    Rmdir {
        /// Path.
        path: String,
    },
    /// Exclusive create (kept open for writing).
    Create {
        /// Path.
        path: String,
        /// The file id its blocks carry.
        file: u32,
        /// Stripe count asked for.
        stripes: u32,
    },
    /// One block written through the open handle.
    Write {
        /// File id.
        file: u32,
        /// Block index.
        blk: u32,
        /// Generation (unique per client).
        generation: u32,
    },
    /// One block read back through the open handle and checked.
    Read {
        /// File id.
        file: u32,
        /// Block index.
        blk: u32,
        /// What the block was.
        found: Found,
    },
    /// fsync of the open file (OSTs commit, then the MDT commits).
    Fsync {
        /// File id.
        file: u32,
    },
    /// rename of a file.
    Rename {
        /// From.
        from: String,
        /// To.
        to: String,
        /// The file id.
        file: u32,
    },
    /// unlink of a file (its handle closed first).
    Unlink {
        /// Path.
        path: String,
        /// The file id.
        file: u32,
    },
    /// chmod (setattr of the mode).
    Chmod {
        /// Path.
        path: String,
        /// Permission bits.
        mode: u32,
    },
    /// open of an existing file (a handle an earlier failure lost).
    Open {
        /// Path.
        path: String,
        /// File id.
        file: u32,
    },
    /// close of an open handle.
    Close {
        /// File id.
        file: u32,
    },
    /// After a failed namespace operation: what the server says is at
    /// `path` now (the workload goes on from what is really there).
    Resolve {
        /// Path.
        path: String,
        /// What is there.
        found: Option<Entry>,
        /// The file id the worker takes a found file to be.
        file: Option<u32>,
    },
    /// One of the client's imports changed state.
    Import {
        /// The target.
        target: String,
        /// The new state.
        state: String,
    },
}

/// What a read found in a block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "is", rename_all = "snake_case")]
pub enum Found {
    /// Zeroes.
    Hole,
    /// A valid block of this client's file and block, generation `generation`.
    Gen {
        /// The generation.
        generation: u32,
    },
    /// A valid block that belongs elsewhere.
    Misplaced {
        /// Its client.
        client: u32,
        /// Its file.
        file: u32,
        /// Its block.
        blk: u32,
        /// Its generation.
        generation: u32,
    },
    /// A checksum or magic mismatch.
    Corrupt {
        /// The stored CRC.
        stored: u32,
        /// The computed CRC.
        computed: u32,
    },
}

/// What a lookup found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// A directory (else a regular file).
    pub dir: bool,
    /// Permission bits.
    pub mode: u32,
}

/// How an operation ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "res", rename_all = "snake_case")]
pub enum Outcome {
    /// It returned success.
    Ok,
    /// It returned an error.
    Err {
        /// The errno the client maps the error to.
        errno: i32,
        /// The error's text.
        msg: String,
        /// Why, when the client knows it was an eviction's doing.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cause: Option<Cause>,
    },
}

/// What an eviction did to a failed call, as the client reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cause {
    /// The request was in flight when the target evicted the client: the
    /// client cannot know whether it took effect (the harness looks).
    Evicted,
    /// The call used an open from before the MDT evicted the client: the
    /// open was lost with the export (nothing was sent).
    LostOpen,
}

/// One log line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rec {
    /// The client.
    pub client: u32,
    /// Its sequence number in the client's log.
    pub seq: u64,
    /// Start, µs since the epoch.
    pub t0: u64,
    /// End, µs since the epoch.
    pub t1: u64,
    /// The operation.
    #[serde(flatten)]
    pub op: Op,
    /// Its outcome.
    #[serde(flatten)]
    pub outcome: Outcome,
}

impl Rec {
    /// Whether it returned success.
    pub fn ok(&self) -> bool {
        self.outcome == Outcome::Ok
    }
}

/// Reads a client's log; a torn last line (the worker was killed while
/// writing it) is ignored, any other bad line is an error naming it.
pub fn read_log(path: &Path) -> anyhow::Result<Vec<Rec>> {
    let text = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::with_capacity(lines.len());
    for (i, l) in lines.iter().enumerate() {
        match serde_json::from_str::<Rec>(l) {
            Ok(r) => out.push(r),
            Err(_) if i + 1 == lines.len() && !text.ends_with('\n') => {}
            Err(e) => anyhow::bail!("{}:{}: {e}", path.display(), i + 1),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_as_flat_json() {
        let r = Rec {
            client: 1,
            seq: 9,
            t0: 10,
            t1: 20,
            op: Op::Write { file: 3, blk: 2, generation: 77 },
            outcome: Outcome::Err { errno: 5, msg: "eio".into(), cause: None },
        };
        let s = serde_json::to_string(&r).unwrap_or_default();
        assert!(s.contains(r#""op":"write""#) && s.contains(r#""res":"err""#), "{s}");
        assert!(!s.contains("cause"), "{s}");
        assert_eq!(serde_json::from_str::<Rec>(&s).ok(), Some(r.clone()));
        let e = Rec { outcome: Outcome::Err { errno: 5, msg: "eio".into(), cause: Some(Cause::LostOpen) }, ..r };
        let s = serde_json::to_string(&e).unwrap_or_default();
        assert!(s.contains(r#""cause":"lost_open""#), "{s}");
        assert_eq!(serde_json::from_str::<Rec>(&s).ok(), Some(e));
        let f = Rec {
            op: Op::Read { file: 1, blk: 0, found: Found::Gen { generation: 4 } },
            outcome: Outcome::Ok,
            seq: 1,
            client: 0,
            t0: 0,
            t1: 0,
        };
        let s = serde_json::to_string(&f).unwrap_or_default();
        assert_eq!(serde_json::from_str::<Rec>(&s).ok(), Some(f));
    }
}
