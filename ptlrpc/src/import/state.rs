//! Import states, their legal edges and the transition history.
//!
//! Owns: [`ImportState`] (each variant owning only its data), the
//! data-free [`ImportStateKind`] used for history, edge checks and
//! reporting, and [`StateHistory`], the last 16 transitions with times.
//!
//! Must not: decide when to move (that is the import); it only asserts an
//! edge is legal and records it. An illegal edge is a programmer's error
//! and panics.

use std::collections::{BTreeMap, VecDeque};

use crate::time::Time;
use crate::wire::{Transno, Xid};

/// Transitions remembered (Lustre's `IMP_STATE_HIST_LEN`).
pub const HISTORY_LEN: usize = 16;

/// One message the import waits on: when it went out and when it times out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    /// Its xid.
    pub xid: Xid,
    /// When it was (last) sent.
    pub sent: Time,
    /// When the import gives up waiting.
    pub deadline: Time,
}

/// Which replay pass the import is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReplayMode {
    /// The target is in recovery: replays in transno order.
    Primary,
    /// The target finished recovery without us: version-checked replays
    /// that get new transnos.
    Delayed,
}

/// The import's state; each variant owns the data only it needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImportState {
    /// Created, never connected.
    New,
    /// A CONNECT is out on path `path`.
    Connecting {
        /// The CONNECT.
        attempt: Sent,
        /// Index into the import's paths.
        path: usize,
    },
    /// Connected: requests flow.
    Full,
    /// Not connected; the next CONNECT goes out at `retry_at`.
    Discon {
        /// When to try again.
        retry_at: Time,
    },
    /// Replaying replied-but-uncommitted requests, one at a time.
    Replay {
        /// Primary or delayed pass.
        mode: ReplayMode,
        /// Replay entries still to send (by transno, their order).
        todo: VecDeque<Transno>,
        /// The replay awaiting its reply, with its transno.
        in_flight: Option<(Sent, Transno)>,
    },
    /// Replaying locks (a placeholder until the lock manager exists: the
    /// import passes straight through).
    ReplayLocks {
        /// The pass that led here.
        mode: ReplayMode,
    },
    /// Replays done; waiting for the target to end recovery (our
    /// "replay done" PING is answered then).
    ReplayWait {
        /// The pass that led here.
        mode: ReplayMode,
        /// The PING with `REQ_REPLAY_DONE`.
        ping: Sent,
    },
    /// Recovered: resending what was in flight, then FULL.
    Recover,
    /// The target evicted us; everything in flight has failed.
    Evicted,
    /// Closed for good.
    Closed,
}

/// An import state without its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ImportStateKind {
    /// See [`ImportState::New`].
    New,
    /// See [`ImportState::Connecting`].
    Connecting,
    /// See [`ImportState::Full`].
    Full,
    /// See [`ImportState::Discon`].
    Discon,
    /// See [`ImportState::Replay`].
    Replay,
    /// See [`ImportState::ReplayLocks`].
    ReplayLocks,
    /// See [`ImportState::ReplayWait`].
    ReplayWait,
    /// See [`ImportState::Recover`].
    Recover,
    /// See [`ImportState::Evicted`].
    Evicted,
    /// See [`ImportState::Closed`].
    Closed,
}

impl ImportState {
    /// The state's kind.
    pub fn kind(&self) -> ImportStateKind {
        match self {
            ImportState::New => ImportStateKind::New,
            ImportState::Connecting { .. } => ImportStateKind::Connecting,
            ImportState::Full => ImportStateKind::Full,
            ImportState::Discon { .. } => ImportStateKind::Discon,
            ImportState::Replay { .. } => ImportStateKind::Replay,
            ImportState::ReplayLocks { .. } => ImportStateKind::ReplayLocks,
            ImportState::ReplayWait { .. } => ImportStateKind::ReplayWait,
            ImportState::Recover => ImportStateKind::Recover,
            ImportState::Evicted => ImportStateKind::Evicted,
            ImportState::Closed => ImportStateKind::Closed,
        }
    }
}

impl ImportStateKind {
    /// Whether `self -> to` is an edge of the state machine.
    pub fn can_move_to(self, to: ImportStateKind) -> bool {
        use ImportStateKind as K;
        if to == K::Closed {
            return self != K::Closed;
        }
        match self {
            K::New => to == K::Connecting,
            K::Connecting => {
                matches!(to, K::Full | K::Replay | K::Recover | K::Discon | K::Evicted | K::Connecting)
            }
            K::Full => matches!(to, K::Discon),
            K::Discon => to == K::Connecting,
            K::Replay => matches!(to, K::ReplayLocks | K::Discon),
            K::ReplayLocks => matches!(to, K::ReplayWait | K::Discon),
            K::ReplayWait => matches!(to, K::Recover | K::Replay | K::Discon),
            K::Recover => matches!(to, K::Full | K::Discon),
            K::Evicted => to == K::Connecting,
            K::Closed => false,
        }
    }

    /// Every kind, for exhaustive tests.
    pub const ALL: [ImportStateKind; 10] = [
        ImportStateKind::New,
        ImportStateKind::Connecting,
        ImportStateKind::Full,
        ImportStateKind::Discon,
        ImportStateKind::Replay,
        ImportStateKind::ReplayLocks,
        ImportStateKind::ReplayWait,
        ImportStateKind::Recover,
        ImportStateKind::Evicted,
        ImportStateKind::Closed,
    ];
}

/// The last [`HISTORY_LEN`] transitions, oldest first, plus a count of
/// every edge ever taken (for tests and metrics).
#[derive(Debug, Clone, Default)]
pub struct StateHistory {
    recent: VecDeque<(Time, ImportStateKind)>,
    edges: BTreeMap<(ImportStateKind, ImportStateKind), u64>,
}

impl StateHistory {
    /// Records entering `to` from `from` at `now`.
    pub fn record(&mut self, now: Time, from: ImportStateKind, to: ImportStateKind) {
        if self.recent.len() == HISTORY_LEN {
            self.recent.pop_front();
        }
        self.recent.push_back((now, to));
        *self.edges.entry((from, to)).or_default() += 1;
    }

    /// The recent transitions: (time entered, state), oldest first.
    pub fn recent(&self) -> impl Iterator<Item = &(Time, ImportStateKind)> {
        self.recent.iter()
    }

    /// How often `from -> to` was taken.
    pub fn count(&self, from: ImportStateKind, to: ImportStateKind) -> u64 {
        self.edges.get(&(from, to)).copied().unwrap_or(0)
    }
}
