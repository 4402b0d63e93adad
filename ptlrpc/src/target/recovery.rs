//! Target recovery after a restart.
//!
//! Owns: [`Recovery`] — the recovery window (soft limit 3x obd_timeout,
//! extended on each reconnect, never past the hard limit 9x; closed early
//! once every known client is back), the replay queue run in transno
//! order, gap detection (every connected client has a replay queued or is
//! done, yet the next transno is missing: skip it and note the gap; VBR
//! guards every replay anyway), the lock-replay stage (empty until the lock
//! manager exists), and the end of recovery: VBR-failed and unfinished
//! clients evicted, missing ones retained with the gap for delayed
//! recovery, the new epoch started.
//!
//! Must not: execute a replay itself (the target's `execute` does, with
//! version checks) or read a clock.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::{EvictReason, ExportStage, Mode, PeerId, Target, TargetConfig, TargetEvent, TargetService, TargetStore};
use crate::time::Time;
use crate::wire::{Frame, MsgFlags, Transno, encode_raw, errno};

/// A replay waiting for its turn.
#[derive(Debug, Clone)]
struct Queued {
    uuid: String,
    from: PeerId,
    /// The whole message, re-parsed when it runs.
    bytes: Vec<u8>,
}

/// Primary recovery's state.
#[derive(Debug, Clone)]
pub(super) struct Recovery {
    started: Time,
    window_end: Time,
    hard_end: Time,
    extend: Duration,
    window_closed: bool,
    boot_committed: Transno,
    next: Transno,
    queue: BTreeMap<Transno, Queued>,
    first_gap: Option<Transno>,
    max_queued: usize,
}

impl Recovery {
    pub(super) fn new(now: Time, cfg: &TargetConfig, committed: Transno) -> Recovery {
        Recovery {
            started: now,
            window_end: now + cfg.recovery_soft(),
            hard_end: now + cfg.recovery_hard(),
            extend: cfg.ping.obd_timeout,
            window_closed: false,
            boot_committed: committed,
            next: Transno(committed.0 + 1),
            queue: BTreeMap::new(),
            first_gap: None,
            max_queued: cfg.max_queued_replays,
        }
    }

    /// The durable transno at boot: replays at or below it were done.
    pub(super) fn boot_committed(&self) -> Transno {
        self.boot_committed
    }

    pub(super) fn window_closed(&self) -> bool {
        self.window_closed
    }

    /// A known client came back for the first time since boot: give it
    /// time to replay (obd_timeout from now), within the hard limit.
    /// Reconnects of a client already back do not extend the window.
    pub(super) fn client_connected(&mut self, now: Time) {
        if !self.window_closed {
            self.window_end = self.window_end.max(now + self.extend).min(self.hard_end);
        }
    }

    /// `uuid` was evicted: its queued replays go; returns their transnos.
    pub(super) fn forget(&mut self, uuid: &str) -> Vec<Transno> {
        let gone: Vec<Transno> = self.queue.iter().filter(|(_, q)| q.uuid == uuid).map(|(t, _)| *t).collect();
        self.queue.retain(|_, q| q.uuid != uuid);
        gone
    }

    pub(super) fn next_deadline(&self) -> Option<Time> {
        if self.window_closed { Some(self.hard_end) } else { Some(self.window_end.min(self.hard_end)) }
    }
}

impl<S: TargetService> Target<S> {
    /// A replay from a recovering client: answered at once if it is known
    /// to be done, queued otherwise.
    pub(super) fn queue_replay(&mut self, from: PeerId, uuid: &str, frame: &Frame<'_>, input: S::Input) {
        let h = *frame.header();
        let done_before = self.prior(uuid, &h, true) != super::Prior::No;
        let Some(r) = &mut self.recovery else { return };
        if done_before {
            // Executed already (its reply was lost) or committed before the
            // crash: `execute` answers from the record without running it.
            self.execute(from, uuid, frame, Mode::Primary, input);
            return;
        }
        if r.queue.len() >= r.max_queued && !r.queue.contains_key(&h.transno) {
            self.reply_error(from, &h, errno::EBUSY);
            return;
        }
        let Ok(bytes) = encode_raw(&h, frame.body_bytes()) else {
            self.reply_error(from, &h, errno::EPROTO);
            return;
        };
        // A resent replay replaces its queued copy (newer conn_cnt, peer).
        r.queue.insert(h.transno, Queued { uuid: uuid.to_string(), from, bytes: bytes.to_vec() });
        self.replay_inputs.insert(h.transno, input);
    }

    /// Runs whatever recovery can do now: window and limits, queued
    /// replays in order, the end of recovery.
    pub(super) fn recovery_progress(&mut self, now: Time) {
        loop {
            let Some(r) = &self.recovery else { return };
            let all_back =
                self.exports.iter().all(|e| !matches!(e.stage, ExportStage::Recovering { connected: false, .. }));
            if !r.window_closed && (all_back || now >= r.window_end) {
                if let Some(r) = &mut self.recovery {
                    r.window_closed = true;
                }
                continue;
            }
            if now >= r.hard_end {
                self.abort_unfinished();
            }
            let Some(r) = &self.recovery else { return };
            let waiting: BTreeSet<&str> = self
                .exports
                .iter()
                .filter(|e| matches!(e.stage, ExportStage::Recovering { connected: true, done: false }))
                .map(|e| e.uuid.as_str())
                .collect();
            if let Some((&t, _)) = r.queue.first_key_value() {
                let queued: BTreeSet<&str> = r.queue.values().map(|q| q.uuid.as_str()).collect();
                let everyone_queued = waiting.iter().all(|u| queued.contains(u));
                if t <= r.next || (r.window_closed && everyone_queued) {
                    self.run_queued(t);
                    continue;
                }
                return;
            }
            if r.window_closed && waiting.is_empty() {
                self.finish_recovery(now);
            }
            return;
        }
    }

    fn run_queued(&mut self, t: Transno) {
        let Some(r) = &mut self.recovery else { return };
        let Some(q) = r.queue.remove(&t) else { return };
        if t > r.next && r.first_gap.is_none() {
            r.first_gap = Some(r.next);
            let gap = r.next;
            self.events.push_back(TargetEvent::Gap { transno: gap });
        }
        if let Some(r) = &mut self.recovery {
            r.next = Transno(t.0 + 1);
        }
        let input = self.replay_inputs.remove(&t);
        if let (Ok(frame), Some(input)) = (Frame::parse(&q.bytes), input) {
            self.execute(q.from, &q.uuid, &frame, Mode::Primary, input);
        }
    }

    /// The hard limit passed: clients still replaying are evicted, missing
    /// ones will be retained.
    fn abort_unfinished(&mut self) {
        let stuck: Vec<String> = self
            .exports
            .iter()
            .filter(|e| matches!(e.stage, ExportStage::Recovering { connected: true, done: false }))
            .map(|e| e.uuid.clone())
            .collect();
        for u in stuck {
            self.evict(&u, EvictReason::RecoveryAborted);
        }
        if let Some(r) = &mut self.recovery {
            r.window_closed = true;
        }
    }

    /// Lock replay (nothing yet), then evict VBR failures, retain the
    /// missing, answer the held PINGs and start the new epoch.
    fn finish_recovery(&mut self, now: Time) {
        let Some(r) = self.recovery.take() else { return };
        self.replay_inputs.clear();
        let (mut recovered, mut evicted, mut retained) = (0, 0, 0);
        let uuids: Vec<String> = self.exports.iter().map(|e| e.uuid.clone()).collect();
        for u in uuids {
            let Some(e) = self.exports.get_mut(&u) else { continue };
            match e.stage {
                ExportStage::Recovering { connected: true, .. } if e.vbr_failed => {
                    evicted += 1;
                    self.evict(&u, EvictReason::VersionMismatch);
                }
                ExportStage::Recovering { connected: true, .. } => {
                    recovered += 1;
                    e.stage = ExportStage::Normal;
                    let (handle, peer, held) = (e.handle, e.peer, e.held_ping.take());
                    let _ = self.evictor.add_export(now, handle);
                    if let Some(h) = held {
                        self.reply(peer, &h, 0, Transno(0), None, MsgFlags::EMPTY, Vec::new());
                    }
                }
                ExportStage::Recovering { connected: false, .. } => {
                    retained += 1;
                    e.stage = ExportStage::Retained { gap: r.first_gap, since: now };
                    if let Some(rec) = self.records.get_mut(&u) {
                        rec.gap = r.first_gap;
                        self.store.put_client(rec.clone());
                    }
                }
                _ => {}
            }
        }
        while let Some(u) = self.exports.retained_over(self.cfg.max_retained) {
            self.evict(&u, EvictReason::RetainedOverflow);
            retained -= 1;
        }
        self.start_epoch();
        self.events.push_back(TargetEvent::RecoveryDone {
            at: now,
            duration: now - r.started,
            recovered,
            evicted,
            retained,
        });
    }
}
