//! Adaptive timeouts (AT), sans-IO: estimators, client deadlines and the
//! server's early-reply schedule.
//!
//! Owns: [`AtSettings`] (Lustre's defaults), [`AtEstimator`] (the worst
//! sample of the last `at_history`, kept in 4 bins), [`ClientAt`] (per-portal
//! service estimates plus network latency, turned into request timeouts and
//! deadlines) and [`ServiceAt`] (a service's pending requests, its early-reply
//! timer and the replies that timer asks for).
//!
//! Must not: read a clock, send anything, or let an early reply enter an
//! estimate's history. Callers pass `now` in and take actions out.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use thiserror::Error;

use crate::time::Time;
use crate::wire::Portal;

/// Number of history bins an estimator keeps.
pub const AT_BINS: usize = 4;

/// Portals one [`ClientAt`] keeps separate estimates for (Lustre's
/// `IMP_AT_MAX_PORTALS`).
pub const AT_MAX_PORTALS: usize = 8;

/// Adaptive-timeout tunables. `Default` gives Lustre's values as DESIGN.md
/// states them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AtSettings {
    /// Smallest service estimate (5 s).
    pub at_min: Duration,
    /// Largest service estimate (600 s).
    pub at_max: Duration,
    /// How long a sample is remembered (600 s, in [`AT_BINS`] bins).
    pub at_history: Duration,
    /// How long before a request's deadline the server sends an early
    /// reply (5 s).
    pub at_early_margin: Duration,
    /// How much an early reply extends a deadline (30 s).
    pub at_extra: Duration,
    /// The fixed term of a request timeout: `estimate + estimate/4 +
    /// timeout_slack` (5 s).
    pub timeout_slack: Duration,
}

impl Default for AtSettings {
    fn default() -> AtSettings {
        AtSettings {
            at_min: Duration::from_secs(5),
            at_max: Duration::from_secs(600),
            at_history: Duration::from_secs(600),
            at_early_margin: Duration::from_secs(5),
            at_extra: Duration::from_secs(30),
            timeout_slack: Duration::from_secs(5),
        }
    }
}

impl AtSettings {
    /// The timeout a client allows the server for a service `estimate`:
    /// `estimate + estimate/4 + timeout_slack`.
    pub fn timeout_for(&self, estimate: Duration) -> Duration {
        estimate + estimate / 4 + self.timeout_slack
    }
}

/// The worst sample seen over the last `history`, kept as [`AT_BINS`] bins
/// of `history / AT_BINS` each, clamped to `[floor, ceiling]`.
#[derive(Debug, Clone)]
pub struct AtEstimator {
    /// `bins[0]` is the current bin, starting at `bin_start`; `bins[i]`
    /// started `i` bin widths earlier.
    bins: [Duration; AT_BINS],
    bin_start: Time,
    bin_width: Duration,
    floor: Duration,
    ceiling: Duration,
}

impl AtEstimator {
    /// An estimator with no samples (its estimate is `floor`).
    pub fn new(now: Time, history: Duration, floor: Duration, ceiling: Duration) -> AtEstimator {
        assert!(floor <= ceiling, "AT floor above ceiling");
        let bin_width = (history / AT_BINS as u32).max(Duration::from_millis(1));
        AtEstimator { bins: [Duration::ZERO; AT_BINS], bin_start: now, bin_width, floor, ceiling }
    }

    /// A service-time estimator per `settings` (`[at_min, at_max]`).
    pub fn service(now: Time, settings: &AtSettings) -> AtEstimator {
        AtEstimator::new(now, settings.at_history, settings.at_min, settings.at_max)
    }

    /// Whole bins elapsed between the current bin's start and `now`.
    fn bins_elapsed(&self, now: Time) -> u128 {
        (now - self.bin_start).as_nanos() / self.bin_width.as_nanos()
    }

    /// Records a sample taken at `now`. Samples above the ceiling are
    /// clamped to it.
    pub fn add(&mut self, now: Time, sample: Duration) {
        let sample = sample.min(self.ceiling);
        let shift = self.bins_elapsed(now);
        if shift >= AT_BINS as u128 {
            self.bins = [Duration::ZERO; AT_BINS];
            self.bin_start = now;
        } else if shift > 0 {
            let shift = shift as usize; // < AT_BINS
            self.bins.rotate_right(shift);
            self.bins[..shift].fill(Duration::ZERO);
            self.bin_start += self.bin_width * shift as u32;
        }
        self.bins[0] = self.bins[0].max(sample);
    }

    /// The worst sample still inside the history window at `now`, clamped
    /// to `[floor, ceiling]`.
    pub fn estimate(&self, now: Time) -> Duration {
        let shift = self.bins_elapsed(now).min(AT_BINS as u128) as usize;
        let worst = self.bins[..AT_BINS - shift].iter().copied().max().unwrap_or(Duration::ZERO);
        worst.clamp(self.floor, self.ceiling)
    }
}

/// A client's (import's) adaptive timeouts: a service estimate per portal
/// and one network-latency estimate.
#[derive(Debug, Clone)]
pub struct ClientAt {
    settings: AtSettings,
    portals: Vec<(Portal, AtEstimator)>,
    net_latency: AtEstimator,
}

impl ClientAt {
    /// Fresh estimates (service at `at_min`, network latency zero).
    pub fn new(now: Time, settings: AtSettings) -> ClientAt {
        ClientAt {
            settings,
            portals: Vec::with_capacity(AT_MAX_PORTALS),
            net_latency: AtEstimator::new(now, settings.at_history, Duration::ZERO, settings.at_max),
        }
    }

    /// The settings in force.
    pub fn settings(&self) -> &AtSettings {
        &self.settings
    }

    /// The service estimate for `portal`.
    pub fn service_estimate(&self, now: Time, portal: Portal) -> Duration {
        match self.portals.iter().find(|(p, _)| *p == portal) {
            Some((_, est)) => est.estimate(now),
            None => self.settings.at_min,
        }
    }

    /// The network latency estimate (round trip minus service time).
    pub fn net_latency(&self, now: Time) -> Duration {
        self.net_latency.estimate(now)
    }

    /// The timeout to put in a request's header: how long the server may
    /// take before the client gives up (`estimate + estimate/4 + 5 s`).
    pub fn request_timeout(&self, now: Time, portal: Portal) -> Duration {
        self.settings.timeout_for(self.service_estimate(now, portal))
    }

    /// When a request sent at `now` to `portal` times out at the client:
    /// the request timeout plus the network latency estimate.
    pub fn request_deadline(&self, now: Time, portal: Portal) -> Time {
        now + self.request_timeout(now, portal) + self.net_latency(now)
    }

    /// Folds a (final) reply into the estimates: the server's reported
    /// service time into the portal's estimate, and the rest of the round
    /// trip into the network latency.
    pub fn handle_reply(&mut self, now: Time, portal: Portal, sent: Time, service_time: Duration) {
        let round_trip = now - sent;
        self.net_latency.add(now, round_trip.saturating_sub(service_time));
        let settings = self.settings;
        let at = match self.portals.iter().position(|(p, _)| *p == portal) {
            Some(i) => i,
            None if self.portals.len() < AT_MAX_PORTALS => {
                self.portals.push((portal, AtEstimator::service(now, &settings)));
                self.portals.len() - 1
            }
            // More portals than any import uses: share the last slot rather
            // than grow without bound.
            None => AT_MAX_PORTALS - 1,
        };
        if let Some((_, est)) = self.portals.get_mut(at) {
            est.add(now, service_time);
        }
    }

    /// The new deadline of a request sent at `sent` after an early reply
    /// granting `timeout` in total. Early replies never enter the history
    /// and never bring a deadline forward.
    pub fn early_reply_deadline(&self, now: Time, sent: Time, timeout: Duration, old: Time) -> Time {
        (sent + timeout + self.net_latency(now)).max(old)
    }
}

/// A request the service could not track.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum AtError {
    /// The service already tracks its limit of pending requests.
    #[error("service tracks {0} pending requests already")]
    Full(usize),
    /// The key is already pending.
    #[error("request already pending")]
    Duplicate,
}

/// An early reply the service should send now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EarlyReply<K> {
    /// Which request.
    pub key: K,
    /// The request's new total timeout, counted from its arrival (goes in
    /// the early reply's `timeout` field).
    pub timeout: Duration,
    /// The service's current estimate (goes in `service_time`).
    pub service_estimate: Duration,
}

#[derive(Debug, Clone, Copy)]
struct Pending {
    arrival: Time,
    deadline: Time,
    /// Still eligible for early replies (in `by_deadline`).
    extendable: bool,
}

/// A service's adaptive timeouts: its service-time estimate and the early
/// replies that keep slow requests from timing out at their clients.
///
/// `K` names a request (typically peer and xid). The timer is armed at the
/// earliest pending deadline minus `at_early_margin`; when it fires, each
/// due request gets an early reply extending its deadline by `at_extra`,
/// as long as its total timeout stays within `at_max`.
#[derive(Debug, Clone)]
pub struct ServiceAt<K> {
    settings: AtSettings,
    estimate: AtEstimator,
    pending: BTreeMap<K, Pending>,
    by_deadline: BTreeSet<(Time, K)>,
    early: VecDeque<EarlyReply<K>>,
    max_pending: usize,
}

impl<K: Ord + Copy> ServiceAt<K> {
    /// A service tracking at most `max_pending` requests at once.
    pub fn new(now: Time, settings: AtSettings, max_pending: usize) -> ServiceAt<K> {
        ServiceAt {
            settings,
            estimate: AtEstimator::service(now, &settings),
            pending: BTreeMap::new(),
            by_deadline: BTreeSet::new(),
            early: VecDeque::new(),
            max_pending,
        }
    }

    /// The service-time estimate.
    pub fn service_estimate(&self, now: Time) -> Duration {
        self.estimate.estimate(now)
    }

    /// Requests being tracked.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// A request arrived at `now` allowing `client_timeout` (from its
    /// header; zero means the client sent none, and the service's own
    /// estimate is used). Returns the request's deadline.
    pub fn handle_request(&mut self, now: Time, key: K, client_timeout: Duration) -> Result<Time, AtError> {
        if self.pending.contains_key(&key) {
            return Err(AtError::Duplicate);
        }
        if self.pending.len() >= self.max_pending {
            return Err(AtError::Full(self.max_pending));
        }
        let timeout = if client_timeout.is_zero() {
            self.settings.timeout_for(self.service_estimate(now))
        } else {
            client_timeout
        };
        let deadline = now + timeout;
        self.pending.insert(key, Pending { arrival: now, deadline, extendable: true });
        self.by_deadline.insert((deadline, key));
        Ok(deadline)
    }

    /// The final reply to `key` is sent at `now`: its service time enters
    /// the history and is returned (for the reply's `service_time` field).
    /// `None` if the request was not pending.
    pub fn handle_reply_sent(&mut self, now: Time, key: K) -> Option<Duration> {
        let p = self.pending.remove(&key)?;
        self.by_deadline.remove(&(p.deadline, key));
        self.early.retain(|e| e.key != key);
        let service_time = now - p.arrival;
        self.estimate.add(now, service_time);
        Some(service_time)
    }

    /// A request that arrived at `arrival` was answered at `now` without
    /// ever being tracked (served at once, on its receive path): its
    /// service time enters the history and is returned, as
    /// [`ServiceAt::handle_reply_sent`] does for tracked requests.
    pub fn handle_served(&mut self, now: Time, arrival: Time) -> Duration {
        let service_time = now - arrival;
        self.estimate.add(now, service_time);
        service_time
    }

    /// Forgets `key` without measuring it (the request was dropped or its
    /// client evicted).
    pub fn forget(&mut self, key: K) {
        if let Some(p) = self.pending.remove(&key) {
            self.by_deadline.remove(&(p.deadline, key));
            self.early.retain(|e| e.key != key);
        }
    }

    /// When the early-reply timer fires: the earliest extendable deadline
    /// minus `at_early_margin`.
    pub fn poll_timeout(&self) -> Option<Time> {
        self.by_deadline.first().map(|(deadline, _)| deadline.saturating_sub(self.settings.at_early_margin))
    }

    /// Queues an early reply for every request within `at_early_margin` of
    /// its deadline, extending each deadline by `at_extra`. A request whose
    /// total timeout would pass `at_max` gets no more early replies.
    pub fn handle_timeout(&mut self, now: Time) {
        let margin = self.settings.at_early_margin;
        let estimate = self.service_estimate(now);
        while let Some(&(deadline, key)) = self.by_deadline.first() {
            if deadline.saturating_sub(margin) > now {
                break;
            }
            self.by_deadline.pop_first();
            let Some(p) = self.pending.get_mut(&key) else {
                continue;
            };
            let new_deadline = p.deadline + self.settings.at_extra;
            let total = new_deadline - p.arrival;
            if total > self.settings.at_max {
                p.extendable = false;
                continue;
            }
            p.deadline = new_deadline;
            self.by_deadline.insert((new_deadline, key));
            self.early.push_back(EarlyReply { key, timeout: total, service_estimate: estimate });
        }
    }

    /// The next early reply to send.
    pub fn poll_early_reply(&mut self) -> Option<EarlyReply<K>> {
        self.early.pop_front()
    }

    /// Whether `key` is pending and still eligible for early replies.
    pub fn is_extendable(&self, key: K) -> bool {
        self.pending.get(&key).is_some_and(|p| p.extendable)
    }
}

#[cfg(test)]
mod tests;
