//! One client request's life, sans-IO: xids, deadlines, early replies,
//! resends.
//!
//! Owns: [`XidSeq`] (unique, increasing xids) and [`Inflight`], the state
//! of one request between its first send and its final reply: the deadline
//! from [`ClientAt`], extensions from early replies, the bounded resend
//! decision when the deadline passes (same xid, `RESEND` flag), and folding
//! the final reply's service time into the estimates.
//!
//! Must not: send, sleep or read a clock. The driver (`driver::client`)
//! sends what this decides, arms a timer at [`Inflight::deadline`] and
//! passes `now` in.

use std::time::Duration;

use crate::at::ClientAt;
use crate::time::Time;
use crate::wire::{Header, MsgFlags, Portal, Xid};

/// A source of xids: unique and strictly increasing.
#[derive(Debug, Clone)]
pub struct XidSeq {
    next: u64,
}

impl XidSeq {
    /// Starts at `first` (drivers seed it from the wall clock, as Lustre
    /// does, so a restarted client does not reuse its former xids).
    pub fn new(first: u64) -> XidSeq {
        XidSeq { next: first.max(1) }
    }

    /// The next xid.
    pub fn next_xid(&mut self) -> Xid {
        let x = self.next;
        self.next += 1;
        Xid(x)
    }
}

/// What to do when a request's deadline passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeoutAction {
    /// Send it again (same xid, `RESEND` flag) with the new deadline.
    Resend,
    /// Out of sends: fail the request with a timeout.
    GiveUp,
}

/// One request in flight.
#[derive(Debug, Clone)]
pub struct Inflight {
    xid: Xid,
    portal: Portal,
    sent: Time,
    deadline: Time,
    timeout: Duration,
    sends: u32,
    max_sends: u32,
    early_replies: u32,
}

impl Inflight {
    /// A request first sent at `now`; at most `max_sends` sends in all.
    pub fn new(now: Time, xid: Xid, portal: Portal, at: &ClientAt, max_sends: u32) -> Inflight {
        assert!(max_sends >= 1, "a request is sent at least once");
        Inflight {
            xid,
            portal,
            sent: now,
            deadline: at.request_deadline(now, portal),
            timeout: at.request_timeout(now, portal),
            sends: 1,
            max_sends,
            early_replies: 0,
        }
    }

    /// The request's xid.
    pub fn xid(&self) -> Xid {
        self.xid
    }

    /// When the request times out unless a reply or early reply comes.
    pub fn deadline(&self) -> Time {
        self.deadline
    }

    /// The timeout to carry in the request header for the current send.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Sends so far (1 before any resend).
    pub fn sends(&self) -> u32 {
        self.sends
    }

    /// Early replies seen.
    pub fn early_replies(&self) -> u32 {
        self.early_replies
    }

    /// Flags for the current send (`RESEND` after the first).
    pub fn flags(&self) -> MsgFlags {
        if self.sends > 1 { MsgFlags::RESEND } else { MsgFlags::EMPTY }
    }

    /// An early reply arrived: the deadline moves to the server's extended
    /// timeout (never earlier). Early replies never enter the estimates.
    pub fn handle_early_reply(&mut self, now: Time, at: &ClientAt, hdr: &Header) {
        debug_assert!(hdr.flags.contains(MsgFlags::EARLY_REPLY));
        self.early_replies += 1;
        self.deadline = at.early_reply_deadline(now, self.sent, hdr.timeout, self.deadline);
    }

    /// The final reply arrived: its service time enters the portal's
    /// estimate and the rest of the round trip the latency estimate.
    pub fn handle_reply(&self, now: Time, at: &mut ClientAt, hdr: &Header) {
        at.handle_reply(now, self.portal, self.sent, hdr.service_time);
    }

    /// The deadline passed (or the send failed) at `now`: resend while sends
    /// remain, with a fresh deadline, else give up.
    pub fn handle_timeout(&mut self, now: Time, at: &ClientAt) -> TimeoutAction {
        if self.sends >= self.max_sends {
            return TimeoutAction::GiveUp;
        }
        self.sends += 1;
        self.sent = now;
        self.timeout = at.request_timeout(now, self.portal);
        self.deadline = at.request_deadline(now, self.portal);
        TimeoutAction::Resend
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::at::AtSettings;
    use crate::wire::{MsgKind, Opcode};

    fn settings() -> AtSettings {
        AtSettings {
            at_min: Duration::from_secs(1),
            at_max: Duration::from_secs(60),
            at_history: Duration::from_secs(60),
            at_early_margin: Duration::from_secs(1),
            at_extra: Duration::from_secs(5),
            timeout_slack: Duration::from_secs(2),
        }
    }

    #[test]
    fn xids_increase() {
        let mut s = XidSeq::new(0);
        let a = s.next_xid();
        let b = s.next_xid();
        assert!(a.0 >= 1 && b > a);
    }

    #[test]
    fn deadline_resend_early_reply_and_give_up() {
        let at = ClientAt::new(Time::ZERO, settings());
        let t0 = Time::from_secs(10);
        let mut r = Inflight::new(t0, Xid(5), Portal(6), &at, 2);
        // 1 s + 1/4 s + 2 s.
        assert_eq!(r.deadline(), t0 + Duration::from_millis(3250));
        assert_eq!(r.flags(), MsgFlags::EMPTY);
        let mut early = Header::new(MsgKind::Reply, Opcode(400), Xid(5));
        early.flags = MsgFlags::EARLY_REPLY;
        early.timeout = Duration::from_secs(9);
        r.handle_early_reply(t0 + Duration::from_secs(2), &at, &early);
        assert_eq!(r.deadline(), t0 + Duration::from_secs(9));
        // A shorter grant never brings the deadline forward.
        early.timeout = Duration::from_secs(1);
        r.handle_early_reply(t0 + Duration::from_secs(3), &at, &early);
        assert_eq!(r.deadline(), t0 + Duration::from_secs(9));
        let t1 = t0 + Duration::from_secs(9);
        assert_eq!(r.handle_timeout(t1, &at), TimeoutAction::Resend);
        assert_eq!((r.sends(), r.flags(), r.xid()), (2, MsgFlags::RESEND, Xid(5)));
        assert_eq!(r.deadline(), t1 + Duration::from_millis(3250));
        assert_eq!(r.handle_timeout(r.deadline(), &at), TimeoutAction::GiveUp);
    }

    #[test]
    fn reply_folds_service_time() {
        let mut at = ClientAt::new(Time::ZERO, settings());
        let r = Inflight::new(Time::ZERO, Xid(1), Portal(6), &at, 1);
        let mut rep = Header::new(MsgKind::Reply, Opcode(400), Xid(1));
        rep.service_time = Duration::from_secs(4);
        r.handle_reply(Time::from_secs(5), &mut at, &rep);
        assert_eq!(at.service_estimate(Time::from_secs(5), Portal(6)), Duration::from_secs(4));
        assert_eq!(at.net_latency(Time::from_secs(5)), Duration::from_secs(1));
    }
}
