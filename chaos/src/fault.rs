//! The faults a run injects and the seeded schedule that picks them.
//!
//! Owns: [`FaultKind`] (the names `--faults` takes), [`Fault`] (one fault
//! with its drawn parameters) and [`Schedule`] (the seeded draw: which
//! fault, where, for how long, after how much workload).
//!
//! Must not: inject anything (the run does).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// What kind of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    /// kill -9 of `sheen-mds` (MGS + MDT), then a restart.
    KillMds,
    /// kill -9 of one `sheen-oss`, then a restart.
    KillOss,
    /// A node's link cut, then restored.
    CutLink,
    /// A client frozen (SIGSTOP) past the eviction timeout, then continued.
    FreezeClient,
    /// ptlrpc `request_drop` / `reply_drop` on a daemon for a while.
    Drop,
    /// ptlrpc `reply_delay` on a daemon for a while.
    Delay,
    /// ptlrpc `bulk_corrupt` on an OSS for a while.
    Corrupt,
}

impl FaultKind {
    /// Every kind.
    pub const ALL: [FaultKind; 7] = [
        FaultKind::KillMds,
        FaultKind::KillOss,
        FaultKind::CutLink,
        FaultKind::FreezeClient,
        FaultKind::Drop,
        FaultKind::Delay,
        FaultKind::Corrupt,
    ];

    /// Its name.
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::KillMds => "kill-mds",
            FaultKind::KillOss => "kill-oss",
            FaultKind::CutLink => "cut-link",
            FaultKind::FreezeClient => "freeze-client",
            FaultKind::Drop => "drop",
            FaultKind::Delay => "delay",
            FaultKind::Corrupt => "corrupt",
        }
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for FaultKind {
    type Err = String;
    fn from_str(s: &str) -> Result<FaultKind, String> {
        FaultKind::ALL.into_iter().find(|k| k.name() == s).ok_or_else(|| {
            let names: Vec<&str> = FaultKind::ALL.iter().map(|k| k.name()).collect();
            format!("unknown fault '{s}' (one of: {})", names.join(", "))
        })
    }
}

/// One fault with its parameters.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "fault", rename_all = "kebab-case")]
pub enum Fault {
    /// kill -9 of `sheen-mds`; restarted after `down`.
    KillMds {
        /// Time dead.
        down: Duration,
    },
    /// kill -9 of `sheen-oss` number `oss`; restarted after `down`.
    KillOss {
        /// Which OSS.
        oss: usize,
        /// Time dead.
        down: Duration,
    },
    /// `node`'s link cut for `length`.
    CutLink {
        /// The node (`mds`, `oss1`, `c0`).
        node: String,
        /// How long.
        length: Duration,
    },
    /// Client `client` stopped for `length`.
    FreezeClient {
        /// Which client.
        client: usize,
        /// How long.
        length: Duration,
    },
    /// A ptlrpc fault point armed on `daemon` for `length`.
    Point {
        /// The kind (drop, delay, corrupt).
        kind: FaultKind,
        /// The daemon (`mds`, `oss0`).
        daemon: String,
        /// The point (`request_drop`, `reply_delay:2`, ...).
        point: String,
        /// The trigger (`random 5`, `every 3`, `once`).
        trigger: String,
        /// How long it stays armed.
        length: Duration,
    },
}

impl Fault {
    /// Its kind.
    pub fn kind(&self) -> FaultKind {
        match self {
            Fault::KillMds { .. } => FaultKind::KillMds,
            Fault::KillOss { .. } => FaultKind::KillOss,
            Fault::CutLink { .. } => FaultKind::CutLink,
            Fault::FreezeClient { .. } => FaultKind::FreezeClient,
            Fault::Point { kind, .. } => *kind,
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = |d: &Duration| d.as_millis();
        match self {
            Fault::KillMds { down } => write!(f, "kill -9 sheen-mds, down {} ms", ms(down)),
            Fault::KillOss { oss, down } => write!(f, "kill -9 sheen-oss{oss}, down {} ms", ms(down)),
            Fault::CutLink { node, length } => write!(f, "cut {node}'s link for {} ms", ms(length)),
            Fault::FreezeClient { client, length } => write!(f, "SIGSTOP client c{client} for {} ms", ms(length)),
            Fault::Point { daemon, point, trigger, length, .. } => {
                write!(f, "{point} '{trigger}' on {daemon} for {} ms", ms(length))
            }
        }
    }
}

/// The shape of the cluster the schedule draws over.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    /// OSSes.
    pub osts: usize,
    /// Clients.
    pub clients: usize,
    /// How long a frozen client stays stopped (past the eviction timeout).
    pub freeze: Duration,
}

/// The seeded draw of faults.
#[derive(Debug)]
pub struct Schedule {
    rng: SmallRng,
    kinds: Vec<FaultKind>,
    shape: Shape,
    round_robin: bool,
    drawn: usize,
}

impl Schedule {
    /// A schedule over `kinds` (not empty) from `seed`.
    pub fn new(seed: u64, kinds: Vec<FaultKind>, shape: Shape) -> Schedule {
        Schedule { rng: SmallRng::seed_from_u64(seed), kinds, shape, round_robin: false, drawn: 0 }
    }

    /// Takes the kinds in turn (parameters still drawn): every kind is
    /// covered by as many cycles as there are kinds.
    pub fn round_robin(mut self) -> Schedule {
        self.round_robin = true;
        self
    }

    /// Workload before the next fault.
    pub fn pause(&mut self) -> Duration {
        Duration::from_millis(self.rng.random_range(300..1500))
    }

    /// The next fault.
    pub fn next_fault(&mut self) -> Fault {
        let r = &mut self.rng;
        let pick = r.random_range(0..self.kinds.len());
        let kind = self.kinds[if self.round_robin { self.drawn % self.kinds.len() } else { pick }];
        self.drawn += 1;
        let ms = |r: &mut SmallRng, lo: u64, hi: u64| Duration::from_millis(r.random_range(lo..hi));
        let oss = |r: &mut SmallRng, n: usize| format!("oss{}", r.random_range(0..n));
        match kind {
            FaultKind::KillMds => Fault::KillMds { down: ms(r, 0, 1500) },
            FaultKind::KillOss => Fault::KillOss { oss: r.random_range(0..self.shape.osts), down: ms(r, 0, 1500) },
            FaultKind::CutLink => {
                let nodes = 1 + self.shape.osts + self.shape.clients;
                let i = r.random_range(0..nodes);
                let node = match i {
                    0 => "mds".to_string(),
                    i if i <= self.shape.osts => format!("oss{}", i - 1),
                    i => format!("c{}", i - 1 - self.shape.osts),
                };
                Fault::CutLink { node, length: ms(r, 500, 4000) }
            }
            FaultKind::FreezeClient => {
                Fault::FreezeClient { client: r.random_range(0..self.shape.clients), length: self.shape.freeze }
            }
            FaultKind::Drop => {
                let daemon = if r.random_bool(0.4) { "mds".to_string() } else { oss(r, self.shape.osts) };
                let point = if r.random_bool(0.5) { "request_drop" } else { "reply_drop" };
                let trigger = format!("random {}", r.random_range(3..10));
                Fault::Point { kind, daemon, point: point.into(), trigger, length: ms(r, 1000, 3000) }
            }
            FaultKind::Delay => {
                let daemon = if r.random_bool(0.4) { "mds".to_string() } else { oss(r, self.shape.osts) };
                let secs = r.random_range(1..=3);
                let trigger = format!("random {}", r.random_range(2..6));
                Fault::Point { kind, daemon, point: format!("reply_delay:{secs}"), trigger, length: ms(r, 1000, 3000) }
            }
            FaultKind::Corrupt => {
                let daemon = oss(r, self.shape.osts);
                let trigger = format!("random {}", r.random_range(2..5));
                Fault::Point { kind, daemon, point: "bulk_corrupt".into(), trigger, length: ms(r, 1000, 3000) }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_gives_one_schedule() {
        let shape = Shape { osts: 2, clients: 2, freeze: Duration::from_secs(5) };
        let draw = |seed| {
            let mut s = Schedule::new(seed, FaultKind::ALL.to_vec(), shape);
            (0..50).map(|_| (s.pause(), s.next_fault())).collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
        let kinds: std::collections::BTreeSet<FaultKind> = draw(7).iter().map(|(_, f)| f.kind()).collect();
        assert_eq!(kinds.len(), FaultKind::ALL.len(), "50 draws reach every kind");
        assert_eq!("cut-link".parse::<FaultKind>(), Ok(FaultKind::CutLink));
        assert!("bogus".parse::<FaultKind>().is_err());
    }
}
