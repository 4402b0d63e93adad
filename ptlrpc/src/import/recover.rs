//! Connecting and recovering: CONNECT over the paths with backoff, the
//! connect reply's disposition (new, reconnect, recovering, delayed,
//! evicted), replay (primary and delayed), the lock-replay placeholder,
//! waiting for the target's recovery to end, and eviction.
//!
//! Owns: the import's behaviour between losing a connection and being
//! FULL again.
//!
//! Must not: touch requests beyond marking them for resend or failing them
//! on eviction; sending in FULL is `mod.rs`'s.

use super::lists::RequestSpec;
use super::{CONNECT_TIMEOUT_MIN, Import, ImportError, ImportEvent, ImportState, ReplayMode, Sent};
use crate::time::Time;
use crate::wire::{ConnectData, ExportHandle, Frame, Header, MsgFlags, Op, Transno, Xid, errno};

/// Whether a replay answered with `status` (negative errno) is sent
/// again after a reconnect: the connection or the target's recovery was
/// not ready, or the target failed to write it.
fn retry_replay(status: i32) -> bool {
    [errno::ENOTCONN, errno::EAGAIN, errno::EBUSY, errno::ENODEV, errno::EIO, errno::ENOMEM, errno::ETIMEDOUT]
        .contains(&-status)
}

impl Import {
    /// Sends a CONNECT on the current path.
    pub(super) fn start_connect(&mut self, now: Time) {
        self.conn_cnt.0 = self.conn_cnt.0.wrapping_add(1);
        let xid = self.xids.next_xid();
        let mut flags = MsgFlags::EMPTY;
        if !self.had_connection {
            flags.insert(MsgFlags::CONNECT_INITIAL);
            self.remote = ExportHandle::NONE;
        }
        let h = self.header(now, self.cfg.connect_op, xid, flags);
        let mut data = ConnectData {
            client_uuid: self.cfg.client_uuid.clone(),
            transno: self.last_committed.0,
            ..self.cfg.connect_data.clone()
        };
        if self.cfg.max_mod_rpcs > 1 {
            data.flags |= crate::wire::connect_flags::MULTIMODRPCS;
            data.max_mod_rpcs = u32::from(self.cfg.max_mod_rpcs);
        }
        let body = match rkyv::to_bytes::<rkyv::rancor::Error>(&data) {
            Ok(b) => b.to_vec(),
            // Connect data is a few plain fields and a short string; failing
            // to archive it is a programmer's error.
            Err(e) => panic!("archiving connect data: {e}"),
        };
        // As Lustre's import (`INITIAL_CONNECT_TIMEOUT`): a CONNECT gets
        // max(5 s, obd_timeout / 20) plus the network latency, not the
        // service estimate — which may be large, and a reconnect waiting
        // that long for a lost reply lets the target evict the export
        // (after 6 ping intervals) before the next attempt.
        let connect_timeout = CONNECT_TIMEOUT_MIN.max(self.cfg.ping.obd_timeout / 20);
        let deadline = now + connect_timeout + self.at.net_latency(now);
        self.stats.connects += 1;
        self.push(h, body);
        self.set_state(now, ImportState::Connecting { attempt: Sent { xid, sent: now, deadline }, path: self.path });
    }

    /// The CONNECT timed out or was refused: next path, or back off once
    /// every path failed in this round.
    pub(super) fn connect_failed(&mut self, now: Time) {
        let n = self.cfg.paths.len();
        self.path = (self.path + 1) % n;
        self.tried_in_round += 1;
        if self.tried_in_round < n {
            self.start_connect(now);
            return;
        }
        self.tried_in_round = 0;
        let wait = self.backoff + self.rng.jitter(self.backoff / 2);
        self.backoff = (self.backoff * 2).min(self.cfg.backoff_max);
        self.set_state(now, ImportState::Discon { retry_at: now + wait });
    }

    pub(super) fn connect_reply(&mut self, now: Time, frame: &Frame<'_>) {
        let h = *frame.header();
        if h.status != 0 {
            self.connect_failed(now);
            return;
        }
        let data = match frame.deserialize::<ConnectData>() {
            Ok(d) => d,
            Err(_) => {
                self.stats.malformed += 1;
                self.connect_failed(now);
                return;
            }
        };
        if let ImportState::Connecting { attempt, .. } = &self.state {
            self.at.handle_reply(now, self.cfg.portal, attempt.sent, h.service_time);
        }
        self.tried_in_round = 0;
        self.backoff = self.cfg.backoff_min;
        self.remote = h.handle;
        self.generation += 1;
        self.stats.connected += 1;
        self.pinger.handle_connected(now);
        self.replay.prune_client_committed(Transno(data.client_committed));
        let recovering = h.flags.contains(MsgFlags::CONNECT_RECOVERING);
        let delayed = h.flags.contains(MsgFlags::CONNECT_DELAYED);
        let reconnect = h.flags.contains(MsgFlags::CONNECT_RECONNECT);
        self.events.push_back(ImportEvent::Connected {
            generation: self.generation,
            flags: h.flags,
            data: data.clone(),
        });
        self.negotiated = Some(data);
        if !recovering && !delayed && !reconnect && self.had_connection {
            // A new export although we had one: the target forgot us.
            self.evict(now);
            return;
        }
        self.had_connection = true;
        self.vbr_failed = false;
        if recovering {
            self.note_committed(h.last_committed);
            let todo = self.replay.todo(false);
            self.set_state(now, ImportState::Replay { mode: ReplayMode::Primary, todo, in_flight: None });
        } else if delayed || self.replay.has_pending() {
            self.replay.mark_all_pending();
            let todo = self.replay.todo(true);
            self.set_state(now, ImportState::Replay { mode: ReplayMode::Delayed, todo, in_flight: None });
        } else if reconnect {
            self.note_committed(h.last_committed);
            self.set_state(now, ImportState::Recover);
        } else {
            self.note_committed(h.last_committed);
            self.set_state(now, ImportState::Full);
        }
    }

    /// Sends the next replay, or moves on to lock replay when none is left.
    pub(super) fn replay_next(&mut self, now: Time) {
        let ImportState::Replay { mode, todo, in_flight: None } = &mut self.state else { return };
        let mode = *mode;
        let next = loop {
            match todo.pop_front() {
                Some(t) => {
                    if let Some(e) = self.replay.get(t) {
                        break Some((t, e.xid, e.spec.clone(), e.pre_versions, e.tag, todo.is_empty()));
                    }
                }
                None => break None,
            }
        };
        let Some((t, xid, spec, pre, tag, last)) = next else {
            self.set_state(now, ImportState::ReplayLocks { mode });
            return;
        };
        let RequestSpec { op, portal, body, jobid, .. } = spec;
        let mut flags = MsgFlags::REPLAY;
        if mode == ReplayMode::Delayed {
            flags |= MsgFlags::VERSION_REPLAY | MsgFlags::DELAY_REPLAY;
        }
        if last {
            flags |= MsgFlags::LAST_REPLAY;
        }
        let mut h = self.header(now, op, xid, flags);
        h.jobid = jobid.unwrap_or(self.cfg.jobid);
        h.transno = t;
        h.pre_versions = pre;
        h.tag = tag;
        h.timeout = self.at.request_timeout(now, portal);
        let deadline = self.at.request_deadline(now, portal);
        if let ImportState::Replay { in_flight, .. } = &mut self.state {
            *in_flight = Some((Sent { xid, sent: now, deadline }, t));
        }
        self.stats.replays += 1;
        self.push(h, body);
    }

    pub(super) fn replay_reply(&mut self, now: Time, h: &Header, sent: Sent, t: Transno) {
        let mode = match &self.state {
            ImportState::Replay { mode, .. } => *mode,
            _ => return,
        };
        if h.status == 0 {
            self.at.handle_reply(now, self.cfg.portal, sent.sent, h.service_time);
            if mode == ReplayMode::Delayed && h.transno > Transno(0) {
                self.replay.rekey(t, h.transno);
            }
            self.note_committed(h.last_committed);
        } else if h.status == -errno::EOVERFLOW {
            self.vbr_failed = true;
            if let Some(e) = self.replay.remove(t) {
                self.events.push_back(ImportEvent::ReplayLost {
                    xid: e.xid,
                    transno: e.transno,
                    error: ImportError::VersionMismatch,
                });
            }
        } else if !retry_replay(h.status) {
            // Refused for good (an open of a file that is gone): trying
            // again would get the same answer until recovery gives up on
            // us. Lustre logs such a replay and goes on; so do we.
            if let Some(e) = self.replay.remove(t) {
                self.events.push_back(ImportEvent::ReplayLost {
                    xid: e.xid,
                    transno: e.transno,
                    error: ImportError::ReplayRefused(-h.status),
                });
            }
        } else {
            self.disconnect(now);
            return;
        }
        if let ImportState::Replay { in_flight, .. } = &mut self.state {
            *in_flight = None;
        }
    }

    /// Lock replay (nothing to replay until the lock manager exists), then
    /// tell the target our replays are done and wait for its recovery.
    pub(super) fn send_done_ping(&mut self, now: Time, mode: ReplayMode) {
        let xid = self.xids.next_xid();
        let deadline = self.at.request_deadline(now, self.cfg.portal);
        self.set_state(now, ImportState::ReplayWait { mode, ping: Sent { xid, sent: now, deadline } });
        self.push_done_ping(now, xid, mode, MsgFlags::EMPTY);
    }

    fn push_done_ping(&mut self, now: Time, xid: Xid, mode: ReplayMode, extra: MsgFlags) {
        let mut flags = MsgFlags::REQ_REPLAY_DONE | MsgFlags::LOCK_REPLAY_DONE | extra;
        if mode == ReplayMode::Delayed {
            flags |= MsgFlags::DELAY_REPLAY;
        }
        let h = self.header(now, Op::ObdPing, xid, flags);
        self.push(h, Vec::new());
    }

    /// The target holds the done PING until recovery ends; a lost copy is
    /// resent (same xid) rather than taken as a dead target.
    pub(super) fn resend_done_ping(&mut self, now: Time) {
        let ImportState::ReplayWait { mode, ping } = &mut self.state else { return };
        let mode = *mode;
        ping.sent = now;
        ping.deadline = self.at.request_deadline(now, self.cfg.portal);
        let xid = ping.xid;
        self.stats.resends += 1;
        self.push_done_ping(now, xid, mode, MsgFlags::RESEND);
    }

    pub(super) fn replay_wait_reply(&mut self, now: Time, h: &Header) {
        let ImportState::ReplayWait { mode, .. } = &self.state else { return };
        let mode = *mode;
        if h.status != 0 {
            self.disconnect(now);
            return;
        }
        self.note_committed(h.last_committed);
        if mode == ReplayMode::Primary && self.replay.has_pending() {
            let todo = self.replay.todo(true);
            self.set_state(now, ImportState::Replay { mode: ReplayMode::Delayed, todo, in_flight: None });
        } else {
            self.set_state(now, ImportState::Recover);
        }
    }

    /// The target evicted us: fail what was in flight, report every lost
    /// replay entry, invalidate the import; it reconnects as a new client.
    pub(super) fn evict(&mut self, now: Time) {
        self.stats.evictions += 1;
        for (xid, _) in self.requests.drain_sending() {
            self.events.push_back(ImportEvent::Failed { xid, error: ImportError::Evicted });
        }
        for e in self.replay.drain() {
            self.events.push_back(ImportEvent::ReplayLost {
                xid: e.xid,
                transno: e.transno,
                error: ImportError::Evicted,
            });
        }
        self.pings.clear();
        self.had_connection = false;
        self.vbr_failed = false;
        self.remote = ExportHandle::NONE;
        self.pinger.set_uncommitted(false);
        self.set_state(now, ImportState::Evicted);
    }
}
