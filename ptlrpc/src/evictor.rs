//! The server-side evictor: exports that fall silent are reported for
//! eviction.
//!
//! Owns: [`Evictor`], the last time each export was heard from, and the
//! [`EvictorEvent::Evict`] raised when an export has been silent for
//! `evict_after_intervals` ping intervals (150 s by default).
//!
//! Must not: tear exports down itself (the target does, on the event), or
//! read a clock.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use thiserror::Error;

use crate::pinger::PingSettings;
use crate::time::Time;

/// What the evictor tells its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EvictorEvent<K> {
    /// `export` has been silent since `last_seen`; it is no longer tracked.
    Evict {
        /// The export to evict.
        export: K,
        /// When it was last heard from.
        last_seen: Time,
    },
}

/// An export the evictor could not start tracking.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum EvictorError {
    /// The evictor tracks its limit of exports already.
    #[error("evictor tracks {0} exports already")]
    Full(usize),
}

/// Last-heard times of a target's exports, keyed by `K` (the export
/// handle, typically).
#[derive(Debug, Clone)]
pub struct Evictor<K> {
    timeout: Duration,
    last_seen: BTreeMap<K, Time>,
    by_time: BTreeSet<(Time, K)>,
    events: VecDeque<EvictorEvent<K>>,
    max_exports: usize,
}

impl<K: Ord + Copy> Evictor<K> {
    /// An evictor for at most `max_exports` exports.
    pub fn new(settings: &PingSettings, max_exports: usize) -> Evictor<K> {
        Evictor {
            timeout: settings.evict_timeout(),
            last_seen: BTreeMap::new(),
            by_time: BTreeSet::new(),
            events: VecDeque::new(),
            max_exports,
        }
    }

    /// Silence that gets an export evicted.
    pub fn evict_timeout(&self) -> Duration {
        self.timeout
    }

    /// Exports tracked.
    pub fn len(&self) -> usize {
        self.last_seen.len()
    }

    /// No export tracked.
    pub fn is_empty(&self) -> bool {
        self.last_seen.is_empty()
    }

    /// Whether `export` is tracked (connected and not evicted).
    pub fn contains(&self, export: K) -> bool {
        self.last_seen.contains_key(&export)
    }

    /// When `export` was last heard from.
    pub fn last_seen(&self, export: K) -> Option<Time> {
        self.last_seen.get(&export).copied()
    }

    /// Starts tracking `export`, connected at `now` (a reconnect of a
    /// tracked export just refreshes it).
    pub fn add_export(&mut self, now: Time, export: K) -> Result<(), EvictorError> {
        if !self.contains(export) && self.last_seen.len() >= self.max_exports {
            return Err(EvictorError::Full(self.max_exports));
        }
        self.touch(now, export);
        Ok(())
    }

    /// Stops tracking `export` (it disconnected).
    pub fn remove_export(&mut self, export: K) {
        if let Some(t) = self.last_seen.remove(&export) {
            self.by_time.remove(&(t, export));
        }
    }

    /// A request from `export` arrived at `now`. Returns false if the export
    /// is not tracked (unknown or already evicted): the caller answers
    /// -ENOTCONN.
    pub fn handle_request(&mut self, now: Time, export: K) -> bool {
        if !self.contains(export) {
            return false;
        }
        self.touch(now, export);
        true
    }

    fn touch(&mut self, now: Time, export: K) {
        // Never move backwards if events arrive out of order.
        let seen = match self.last_seen.get(&export) {
            Some(&old) => {
                self.by_time.remove(&(old, export));
                old.max(now)
            }
            None => now,
        };
        self.last_seen.insert(export, seen);
        self.by_time.insert((seen, export));
    }

    /// Reports every export silent for the evict timeout at `now`.
    pub fn handle_timeout(&mut self, now: Time) {
        while let Some(&(seen, export)) = self.by_time.first() {
            if seen + self.timeout > now {
                break;
            }
            self.by_time.pop_first();
            self.last_seen.remove(&export);
            self.events.push_back(EvictorEvent::Evict { export, last_seen: seen });
        }
    }

    /// When the next export falls due.
    pub fn poll_timeout(&self) -> Option<Time> {
        self.by_time.first().map(|(seen, _)| *seen + self.timeout)
    }

    /// The next eviction to carry out.
    pub fn poll_event(&mut self) -> Option<EvictorEvent<K>> {
        self.events.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: u64) -> Time {
        Time::from_secs(secs)
    }

    #[test]
    fn silent_exports_are_evicted_after_six_intervals() -> Result<(), EvictorError> {
        let mut e = Evictor::<u32>::new(&PingSettings::default(), 2);
        e.add_export(t(0), 1)?;
        e.add_export(t(10), 2)?;
        assert_eq!(e.add_export(t(10), 3), Err(EvictorError::Full(2)));
        assert_eq!(e.poll_timeout(), Some(t(150)));
        assert!(e.handle_request(t(100), 1));
        assert!(!e.handle_request(t(100), 9));
        assert_eq!(e.poll_timeout(), Some(t(160)));
        e.handle_timeout(t(159));
        assert_eq!(e.poll_event(), None);
        e.handle_timeout(t(160));
        assert_eq!(e.poll_event(), Some(EvictorEvent::Evict { export: 2, last_seen: t(10) }));
        assert!(!e.contains(2));
        assert!(!e.handle_request(t(161), 2), "evicted exports stay evicted");
        e.remove_export(1);
        assert!(e.is_empty());
        assert_eq!(e.poll_timeout(), None);
        Ok(())
    }

    mod props {
        use proptest::prelude::*;

        use super::*;

        proptest! {
            /// Against a model of last-heard times: after every timer run,
            /// an export is evicted iff it was silent for the evict timeout.
            #[test]
            fn evicts_exactly_the_silent(
                ops in prop::collection::vec((0u64..60, 0u32..6, any::<bool>()), 1..200),
            ) {
                let s = PingSettings::default();
                let mut e = Evictor::<u32>::new(&s, 8);
                let mut model: BTreeMap<u32, Time> = BTreeMap::new();
                let mut now = Time::ZERO;
                for (gap, export, connect) in ops {
                    now += Duration::from_secs(gap);
                    if connect {
                        prop_assert!(e.add_export(now, export).is_ok());
                        model.insert(export, now);
                    } else {
                        let known = e.handle_request(now, export);
                        prop_assert_eq!(known, model.contains_key(&export));
                        if known {
                            model.insert(export, now);
                        }
                    }
                    e.handle_timeout(now);
                    while let Some(EvictorEvent::Evict { export, last_seen }) = e.poll_event() {
                        prop_assert_eq!(model.remove(&export), Some(last_seen));
                        prop_assert!(now - last_seen >= s.evict_timeout());
                    }
                    for (x, seen) in &model {
                        prop_assert!(now - *seen < s.evict_timeout(), "{} not evicted", x);
                        prop_assert!(e.contains(*x));
                    }
                    prop_assert_eq!(e.len(), model.len());
                }
            }
        }
    }
}
