//! Following an MGS's configuration log, sans-IO: what MDTs and clients
//! (the MGC) both run, each with its own driver.
//!
//! Owns: [`ConfigFollower`] — the next record index to apply, the one
//! long-poll read in flight (`MGS_CONFIG_READ` with a wait) and its
//! deadline, and the retry schedule when the MGS does not answer. A read
//! that gets no answer within its wait plus [`FollowSettings::slack`]
//! means the MGS is gone (killed, restarted: a restarted MGS never answers
//! the old read); the follower asks again at once, then backs off
//! (bounded) while the MGS stays unreachable. The MGS's log is persistent
//! and its indices never reused, so asking from the next index after a
//! restart resumes exactly where the follower was.
//!
//! Must not: hand out a record twice or out of order, skip one silently
//! (a gap in the indices is reported: [`FollowerStats::gaps`]), act on the
//! answer to an abandoned read, perform I/O or read a clock.

use std::time::Duration;

use crate::time::Time;
use crate::wire::mgs::{ConfigReadReply, ConfigReadReq, ConfigRecord};

/// Records asked for per read.
pub const READ_BATCH: u32 = 1024;

/// Follower tunables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FollowSettings {
    /// How long the MGS may hold a read waiting for new records.
    pub wait: Duration,
    /// How long past `wait` an answer may take before the read is given
    /// up (the MGS is considered gone).
    pub slack: Duration,
    /// First pause after a failed read.
    pub backoff_min: Duration,
    /// Longest pause between reads while the MGS is unreachable.
    pub backoff_max: Duration,
}

impl Default for FollowSettings {
    fn default() -> FollowSettings {
        FollowSettings {
            wait: Duration::from_secs(2),
            slack: Duration::from_secs(5),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(1),
        }
    }
}

/// A read to send: its id (hand it back with the answer) and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadDue {
    /// Which read this is.
    pub id: u64,
    /// The request.
    pub req: ConfigReadReq,
    /// When it is given up.
    pub deadline: Time,
}

/// Counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FollowerStats {
    /// Reads sent.
    pub reads: u64,
    /// Reads that failed or were given up.
    pub failures: u64,
    /// Records handed out.
    pub applied: u64,
    /// Times the indices jumped (records the MGS no longer has).
    pub gaps: u64,
    /// Answers to abandoned reads, ignored.
    pub stale: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Ready to read at `at`.
    Idle { at: Time },
    /// A read is out.
    Reading { id: u64, deadline: Time },
}

/// One file system's log, followed. See the module docs.
#[derive(Debug, Clone)]
pub struct ConfigFollower {
    fsname: String,
    settings: FollowSettings,
    next: u64,
    state: State,
    ids: u64,
    backoff: Duration,
    stats: FollowerStats,
}

impl ConfigFollower {
    /// Follows `fsname` from record `next` (1: the whole log).
    pub fn new(now: Time, fsname: &str, next: u64, settings: FollowSettings) -> ConfigFollower {
        ConfigFollower {
            fsname: fsname.to_string(),
            settings,
            next: next.max(1),
            state: State::Idle { at: now },
            ids: 0,
            backoff: settings.backoff_min,
            stats: FollowerStats::default(),
        }
    }

    /// The next record index to apply.
    pub fn next(&self) -> u64 {
        self.next
    }

    /// Counters.
    pub fn stats(&self) -> FollowerStats {
        self.stats
    }

    /// The settings in force.
    pub fn settings(&self) -> &FollowSettings {
        &self.settings
    }

    /// The read to send now, if one is due (none while one is out).
    pub fn poll_read(&mut self, now: Time) -> Option<ReadDue> {
        match self.state {
            State::Idle { at } if now >= at => {
                self.ids += 1;
                let deadline = now + self.settings.wait + self.settings.slack;
                self.state = State::Reading { id: self.ids, deadline };
                self.stats.reads += 1;
                let wait_ms = self.settings.wait.as_millis().min(u128::from(u32::MAX)) as u32;
                let req = ConfigReadReq { fsname: self.fsname.clone(), from: self.next, max: READ_BATCH, wait_ms };
                Some(ReadDue { id: self.ids, req, deadline })
            }
            _ => None,
        }
    }

    /// Read `id` was answered: returns the records to apply, in order,
    /// each once.
    pub fn handle_reply(&mut self, now: Time, id: u64, reply: &ConfigReadReply) -> Vec<ConfigRecord> {
        if !matches!(self.state, State::Reading { id: cur, .. } if cur == id) {
            self.stats.stale += 1;
            return Vec::new();
        }
        self.backoff = self.settings.backoff_min;
        self.state = State::Idle { at: now };
        let mut out = Vec::new();
        for r in &reply.records {
            if r.index < self.next {
                continue;
            }
            if r.index > self.next {
                self.stats.gaps += 1;
            }
            self.next = r.index + 1;
            out.push(r.clone());
        }
        self.stats.applied += out.len() as u64;
        out
    }

    /// Read `id` failed (the MGS refused it or could not be reached):
    /// the next one waits a backoff.
    pub fn handle_error(&mut self, now: Time, id: u64) {
        if matches!(self.state, State::Reading { id: cur, .. } if cur == id) {
            self.stats.failures += 1;
            self.retry_later(now);
        }
    }

    /// Timers: a read out past its deadline is given up and asked again
    /// at once (the MGS may have restarted); one that already failed so
    /// waits its backoff.
    pub fn handle_timeout(&mut self, now: Time) {
        if let State::Reading { deadline, .. } = self.state
            && now >= deadline
        {
            self.stats.failures += 1;
            self.state = State::Idle { at: now };
        }
    }

    /// When to call [`ConfigFollower::handle_timeout`] or
    /// [`ConfigFollower::poll_read`] next.
    pub fn poll_timeout(&self) -> Time {
        match self.state {
            State::Idle { at } => at,
            State::Reading { deadline, .. } => deadline,
        }
    }

    fn retry_later(&mut self, now: Time) {
        self.state = State::Idle { at: now + self.backoff };
        self.backoff = (self.backoff * 2).min(self.settings.backoff_max);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::mgs::ConfigCmd;

    fn t(ms: u64) -> Time {
        Time::from_millis(ms)
    }

    fn rec(index: u64) -> ConfigRecord {
        ConfigRecord { index, cmd: ConfigCmd::SetParam { key: "a.b".into(), value: index.to_string() } }
    }

    fn reply(from: u64, to: u64) -> ConfigReadReply {
        ConfigReadReply { records: (from..=to).map(rec).collect(), next: to + 1 }
    }

    fn indices(r: &[ConfigRecord]) -> Vec<u64> {
        r.iter().map(|r| r.index).collect()
    }

    #[test]
    fn follows_in_order_each_record_once() {
        let mut f = ConfigFollower::new(t(0), "fs", 1, FollowSettings::default());
        let r = f.poll_read(t(0)).unwrap();
        assert_eq!(r.req.from, 1);
        assert!(f.poll_read(t(0)).is_none(), "one read at a time");
        assert_eq!(indices(&f.handle_reply(t(1), r.id, &reply(1, 3))), vec![1, 2, 3]);
        let r = f.poll_read(t(1)).unwrap();
        assert_eq!(r.req.from, 4);
        // An MGS answering from before (overlap) repeats nothing.
        assert_eq!(indices(&f.handle_reply(t(2), r.id, &reply(2, 5))), vec![4, 5]);
        assert_eq!(f.next(), 6);
        assert_eq!(f.stats().applied, 5);
    }

    #[test]
    fn a_lost_read_is_given_up_and_the_follower_resumes_where_it_was() {
        let s = FollowSettings::default();
        let mut f = ConfigFollower::new(t(0), "fs", 1, s);
        let r = f.poll_read(t(0)).unwrap();
        assert_eq!(indices(&f.handle_reply(t(1), r.id, &reply(1, 2))), vec![1, 2]);
        // The MGS dies holding this read.
        let lost = f.poll_read(t(1)).unwrap();
        assert_eq!(f.poll_timeout(), t(1) + s.wait + s.slack);
        f.handle_timeout(lost.deadline);
        // Asked again at once; the restarted MGS refuses a few times.
        let now = lost.deadline;
        let a = f.poll_read(now).unwrap();
        assert_eq!(a.req.from, 3);
        f.handle_error(now, a.id);
        assert_eq!(f.poll_timeout(), now + s.backoff_min);
        assert!(f.poll_read(now).is_none(), "waits its backoff");
        let now = f.poll_timeout();
        let b = f.poll_read(now).unwrap();
        f.handle_error(now, b.id);
        assert_eq!(f.poll_timeout(), now + s.backoff_min * 2, "backoff doubles");
        // The answer to the abandoned read arrives late: ignored.
        assert!(f.handle_reply(now, lost.id, &reply(3, 9)).is_empty());
        assert_eq!(f.stats().stale, 1);
        let now = f.poll_timeout();
        let c = f.poll_read(now).unwrap();
        assert_eq!(c.req.from, 3);
        assert_eq!(indices(&f.handle_reply(now, c.id, &reply(3, 4))), vec![3, 4]);
        assert_eq!(f.poll_timeout(), now, "reads again at once");
        assert_eq!(f.stats().failures, 3);
    }

    #[test]
    fn backoff_is_bounded_and_resets() {
        let s = FollowSettings::default();
        let mut f = ConfigFollower::new(t(0), "fs", 7, s);
        let mut now = t(0);
        for _ in 0..20 {
            let r = f.poll_read(now).unwrap();
            f.handle_error(now, r.id);
            assert!(f.poll_timeout().saturating_since(now) <= s.backoff_max);
            now = f.poll_timeout();
        }
        let r = f.poll_read(now).unwrap();
        assert_eq!(r.req.from, 7);
        assert!(f.handle_reply(now, r.id, &ConfigReadReply { records: vec![], next: 7 }).is_empty());
        let r = f.poll_read(now).unwrap();
        f.handle_error(now, r.id);
        assert_eq!(f.poll_timeout(), now + s.backoff_min);
    }

    #[test]
    fn a_gap_is_counted_not_hidden() {
        let mut f = ConfigFollower::new(t(0), "fs", 1, FollowSettings::default());
        let r = f.poll_read(t(0)).unwrap();
        let rep = ConfigReadReply { records: vec![rec(1), rec(4)], next: 5 };
        assert_eq!(indices(&f.handle_reply(t(0), r.id, &rep)), vec![1, 4]);
        assert_eq!(f.stats().gaps, 1);
    }
}
