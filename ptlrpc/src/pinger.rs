//! The client-side pinger: when an import pings its target, and when a
//! missing ping reply means the target is gone.
//!
//! Owns: [`PingSettings`] (obd_timeout and the intervals derived from it)
//! and [`ImportPinger`], one per import: the ping schedule (every
//! `obd_timeout / 4`, every 7 s while the import holds uncommitted
//! requests, postponed by other traffic), the oldest ping in flight, and
//! the [`PingerEvent::Discon`] it raises when that ping's deadline passes.
//!
//! As Lustre's pinger, it pings every interval whether or not an earlier
//! ping is still unanswered: a lost ping reply must not silence the client
//! until that ping's deadline (which can exceed the server's eviction
//! timeout, 6 intervals), or a live client is evicted. The oldest ping in
//! flight is the one watched; its deadline passing disconnects the import.
//!
//! Must not: build or send messages, allocate xids, compute deadlines (the
//! caller takes them from [`crate::at::ClientAt`]), reconnect (the import
//! state machine does), or read a clock.

use std::collections::VecDeque;
use std::time::Duration;

use crate::time::Time;
use crate::wire::Xid;

/// Pinger and evictor tunables; `Default` gives Lustre's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PingSettings {
    /// Lustre's obd_timeout (100 s); the ping interval is a quarter of it.
    pub obd_timeout: Duration,
    /// The ping interval while the import has uncommitted requests (7 s),
    /// so `last_committed` news arrives sooner.
    pub ping_interval_uncommitted: Duration,
    /// Ping intervals of silence after which a server evicts an export (6).
    pub evict_after_intervals: u32,
    /// Lustre's `ping_interval`, when set explicitly (a client's
    /// setting); otherwise `obd_timeout / 4`.
    pub ping_interval: Option<Duration>,
}

impl Default for PingSettings {
    fn default() -> PingSettings {
        PingSettings {
            obd_timeout: Duration::from_secs(100),
            ping_interval_uncommitted: Duration::from_secs(7),
            evict_after_intervals: 6,
            ping_interval: None,
        }
    }
}

impl PingSettings {
    /// The normal ping interval: as set, or `obd_timeout / 4` (25 s).
    pub fn ping_interval(&self) -> Duration {
        self.ping_interval.unwrap_or(self.obd_timeout / 4)
    }

    /// How long an export may stay silent before eviction (150 s).
    pub fn evict_timeout(&self) -> Duration {
        self.ping_interval() * self.evict_after_intervals
    }
}

/// What the pinger tells its import.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PingerEvent {
    /// A ping went unanswered past its deadline: the import should move to
    /// DISCON and reconnect. The pinger stays quiet until
    /// [`ImportPinger::handle_connected`].
    Discon {
        /// The unanswered ping.
        xid: Xid,
        /// When it was sent.
        sent: Time,
    },
}

/// The pinger wants a PING sent now. The caller sends it (with an xid from
/// the import and a deadline from adaptive timeouts) and reports back with
/// [`ImportPinger::handle_ping_sent`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PingDue;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct InFlight {
    xid: Xid,
    sent: Time,
    deadline: Time,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Connected: pinging on schedule.
    Active {
        /// Last time any request (ping or not) went to the target.
        last_sent: Time,
        in_flight: Option<InFlight>,
        /// A PingDue was handed out and not yet reported sent.
        due_handed_out: bool,
    },
    /// A ping failed; waiting for the import to reconnect.
    Discon,
}

/// One import's ping schedule. Sans-IO: feed it `handle_*`, drain
/// `poll_transmit` and `poll_event`, and call `handle_timeout` at
/// `poll_timeout`.
#[derive(Debug, Clone)]
pub struct ImportPinger {
    settings: PingSettings,
    state: State,
    uncommitted: bool,
    /// A ping was asked for now ([`ImportPinger::request_ping`]).
    asap: bool,
    events: VecDeque<PingerEvent>,
}

/// Events the pinger holds at most (one Discon per connection; the bound
/// only guards against a caller that never drains).
const MAX_EVENTS: usize = 16;

impl ImportPinger {
    /// A pinger for an import that connected at `now`.
    pub fn new(now: Time, settings: PingSettings) -> ImportPinger {
        ImportPinger {
            settings,
            state: State::Active { last_sent: now, in_flight: None, due_handed_out: false },
            uncommitted: false,
            asap: false,
            events: VecDeque::new(),
        }
    }

    /// The settings in force.
    pub fn settings(&self) -> &PingSettings {
        &self.settings
    }

    /// The interval in force now.
    pub fn interval(&self) -> Duration {
        if self.uncommitted {
            self.settings.ping_interval_uncommitted.min(self.settings.ping_interval())
        } else {
            self.settings.ping_interval()
        }
    }

    /// Whether the pinger considers the import disconnected.
    pub fn is_discon(&self) -> bool {
        self.state == State::Discon
    }

    /// When the next ping is due (`None` while disconnected), whether or
    /// not an earlier ping is unanswered.
    pub fn next_ping(&self) -> Option<Time> {
        match self.state {
            State::Active { .. } if self.asap => Some(Time::ZERO),
            State::Active { last_sent, .. } => Some(last_sent + self.interval()),
            State::Discon => None,
        }
    }

    /// Makes a ping due now (unless one is in flight already): the import
    /// needs the target's `last_committed` at once (its replay list is
    /// full).
    pub fn request_ping(&mut self) {
        if matches!(self.state, State::Active { in_flight: None, .. }) {
            self.asap = true;
        }
    }

    /// The import has (or no longer has) replied-but-uncommitted requests.
    pub fn set_uncommitted(&mut self, uncommitted: bool) {
        self.uncommitted = uncommitted;
    }

    /// Some other request went to the target at `now`; it postpones the
    /// next ping (the reply will prove liveness as well as a ping would).
    pub fn handle_request_sent(&mut self, now: Time) {
        if let State::Active { last_sent, .. } = &mut self.state {
            *last_sent = (*last_sent).max(now);
        }
    }

    /// The PING the last [`PingDue`] asked for went out at `now` as `xid`
    /// and times out at `deadline`.
    pub fn handle_ping_sent(&mut self, now: Time, xid: Xid, deadline: Time) {
        if let State::Active { last_sent, in_flight, due_handed_out } = &mut self.state {
            *last_sent = (*last_sent).max(now);
            // The oldest unanswered ping stays the one watched.
            if in_flight.is_none() {
                *in_flight = Some(InFlight { xid, sent: now, deadline });
            }
            *due_handed_out = false;
            self.asap = false;
        }
    }

    /// A reply to ping `xid` arrived. Replies to older pings are ignored.
    pub fn handle_ping_reply(&mut self, _now: Time, xid: Xid) {
        if let State::Active { in_flight, .. } = &mut self.state
            && in_flight.is_some_and(|p| p.xid == xid)
        {
            *in_flight = None;
        }
    }

    /// The import reconnected at `now`: pinging resumes on schedule.
    pub fn handle_connected(&mut self, now: Time) {
        self.state = State::Active { last_sent: now, in_flight: None, due_handed_out: false };
        self.asap = false;
    }

    /// Checks the in-flight ping's deadline at `now`.
    pub fn handle_timeout(&mut self, now: Time) {
        if let State::Active { in_flight: Some(p), .. } = self.state
            && now >= p.deadline
        {
            self.state = State::Discon;
            if self.events.len() < MAX_EVENTS {
                self.events.push_back(PingerEvent::Discon { xid: p.xid, sent: p.sent });
            }
        }
    }

    /// Asks for a PING when one is due at `now` (even while an earlier one is unanswered).
    pub fn poll_transmit(&mut self, now: Time) -> Option<PingDue> {
        let due = self.next_ping().is_some_and(|t| now >= t);
        match &mut self.state {
            State::Active { due_handed_out, .. } if due && !*due_handed_out => {
                *due_handed_out = true;
                Some(PingDue)
            }
            _ => None,
        }
    }

    /// When to call [`ImportPinger::handle_timeout`] (or `poll_transmit`)
    /// next: the in-flight ping's deadline or the next ping time.
    pub fn poll_timeout(&self) -> Option<Time> {
        match self.state {
            State::Active { in_flight, due_handed_out, .. } => {
                // A PingDue is out: no ping time to wait for until it is
                // reported sent (so a driver never spins on a past one).
                let next = if due_handed_out { None } else { self.next_ping() };
                match (in_flight.map(|p| p.deadline), next) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                }
            }
            State::Discon => None,
        }
    }

    /// The next event for the import.
    pub fn poll_event(&mut self) -> Option<PingerEvent> {
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
    fn defaults_follow_obd_timeout() {
        let s = PingSettings::default();
        assert_eq!(s.ping_interval(), Duration::from_secs(25));
        assert_eq!(s.evict_timeout(), Duration::from_secs(150));
    }

    #[test]
    fn pings_on_schedule_and_faster_when_uncommitted() {
        let mut p = ImportPinger::new(t(0), PingSettings::default());
        assert_eq!(p.poll_timeout(), Some(t(25)));
        assert_eq!(p.poll_transmit(t(24)), None);
        assert_eq!(p.poll_transmit(t(25)), Some(PingDue));
        assert_eq!(p.poll_transmit(t(25)), None, "handed out once");
        assert_eq!(p.poll_timeout(), None, "waits for the ping to be sent");
        p.handle_ping_sent(t(25), Xid(1), t(36));
        assert_eq!(p.poll_timeout(), Some(t(36)), "the reply's deadline comes before the next ping");
        p.handle_ping_reply(t(25), Xid(1));
        assert_eq!(p.poll_timeout(), Some(t(50)));
        p.set_uncommitted(true);
        assert_eq!(p.poll_timeout(), Some(t(32)));
        p.handle_request_sent(t(40));
        assert_eq!(p.poll_timeout(), Some(t(47)));
        assert_eq!(p.poll_event(), None);
    }

    #[test]
    fn pings_go_on_while_a_reply_is_missing() {
        // A deadline past the eviction timeout (6 intervals of 2.5 s = 15 s):
        // the client must not fall silent waiting for it.
        let s = PingSettings { obd_timeout: Duration::from_secs(10), ..PingSettings::default() };
        let mut p = ImportPinger::new(t(0), s);
        let ms = |v: u64| Time::from_millis(v);
        assert_eq!(p.poll_transmit(ms(2500)), Some(PingDue));
        p.handle_ping_sent(ms(2500), Xid(1), t(33)); // its reply is lost
        assert_eq!(p.poll_timeout(), Some(ms(5000)), "the next ping is due before the lost one's deadline");
        assert_eq!(p.poll_transmit(ms(5000)), Some(PingDue));
        p.handle_ping_sent(ms(5000), Xid(2), t(36));
        p.handle_ping_reply(ms(5010), Xid(2)); // a later ping answered: the first is still watched
        for k in 3..=12u64 {
            assert_eq!(p.poll_transmit(ms(2500 * k)), Some(PingDue), "ping {k}");
            p.handle_ping_sent(ms(2500 * k), Xid(k), t(60));
        }
        p.handle_timeout(ms(32_999));
        assert_eq!(p.poll_event(), None);
        p.handle_timeout(t(33));
        assert_eq!(p.poll_event(), Some(PingerEvent::Discon { xid: Xid(1), sent: ms(2500) }));
    }

    #[test]
    fn missed_reply_means_discon_until_reconnected() {
        let mut p = ImportPinger::new(t(0), PingSettings::default());
        assert_eq!(p.poll_transmit(t(25)), Some(PingDue));
        p.handle_ping_sent(t(25), Xid(7), t(36));
        p.handle_ping_reply(t(30), Xid(6)); // stale: ignored
        p.handle_timeout(t(35));
        assert_eq!(p.poll_event(), None);
        p.handle_timeout(t(36));
        assert_eq!(p.poll_event(), Some(PingerEvent::Discon { xid: Xid(7), sent: t(25) }));
        assert!(p.is_discon());
        assert_eq!(p.poll_timeout(), None);
        assert_eq!(p.poll_transmit(t(100)), None);
        p.handle_connected(t(100));
        assert_eq!(p.poll_timeout(), Some(t(125)));
    }
}
