//! [`LockNamespace`]: the server's lock table — resources, granted and
//! waiting inodebits locks, blocking callbacks and their timeouts.
//!
//! A lock is granted when it conflicts with no granted lock and no lock
//! waiting ahead of it on its resource (first come, first granted, so a
//! stream of readers cannot starve a writer). A blocking enqueue that
//! cannot be granted waits; every conflicting lock held by a remote owner
//! gets one blocking callback ([`LdlmEvent::BlockingAst`], re-sent every
//! `ast_resend` until answered) and must be cancelled within
//! `callback_timeout`, or its owner is evicted ([`LdlmEvent::Evict`]) and
//! all its locks dropped, so a holder that never answers delays others by
//! at most the timeout and never hangs them. A cancel re-processes the
//! resource and grants what has become compatible
//! ([`LdlmEvent::Granted`]). A non-blocking enqueue (the MDT's read
//! intents) is granted at once or not at all, and sends no callbacks.
//!
//! Local locks (the server's own, [`Owner::Local`]) are held for the span
//! of one operation: they get no callbacks and are never evicted.
//!
//! A local lock taken for one client's own change may keep that client's
//! locks ([`LockNamespace::enqueue_keeping`]): granted locks the client
//! named, which then neither block it nor are called back — the client
//! updates what it caches under them itself (a create in a directory
//! whose entries it caches). The exemption is one way: the client's new
//! enqueues still wait for the local lock, and every other owner's locks
//! conflict as ever.
//!
//! Must not: perform I/O, read a clock, or decide what a resource means
//! (callers name resources by FID and choose modes and bits).

use std::collections::{HashMap, VecDeque};
use std::fmt::Debug;
use std::hash::Hash;
use std::time::Duration;

use super::mode::{InodeBits, LockMode, conflicts};
use crate::time::Time;

/// A resource: an MDT object, by its FID packed into 128 bits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub struct ResId(pub u128);

/// A lock's handle (Lustre's lock cookie): unique in this namespace's
/// life, never zero.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub struct LockHandle(pub u64);

/// Who holds a lock.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub enum Owner<O> {
    /// The server itself, for the span of one operation.
    Local,
    /// A client, by the caller's key for it (an export).
    Remote(O),
}

/// Whether an enqueue may wait.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Wait {
    /// Queue behind conflicting locks (and call their holders back).
    Block,
    /// Grant at once or not at all.
    NoWait,
}

/// What an enqueue did.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Enqueued {
    /// Granted now.
    Granted(LockHandle),
    /// Queued; [`LdlmEvent::Granted`] says when it is granted.
    Waiting(LockHandle),
    /// A [`Wait::NoWait`] enqueue that conflicts with something.
    WouldBlock,
}

/// What the namespace asks its driver to do.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum LdlmEvent<O> {
    /// Ask `owner` to give `lock` back (it blocks another lock).
    BlockingAst {
        /// The holder.
        owner: O,
        /// Its lock.
        lock: LockHandle,
        /// The lock's resource.
        res: ResId,
        /// The lock's bits.
        bits: InodeBits,
    },
    /// A waiting lock was granted.
    Granted {
        /// Whose.
        owner: Owner<O>,
        /// Which.
        lock: LockHandle,
    },
    /// `owner` did not cancel `lock` within the callback timeout: evict it.
    /// Its locks are gone from the namespace already.
    Evict {
        /// The holder that did not answer.
        owner: O,
        /// The lock it did not give back.
        lock: LockHandle,
    },
}

/// Errors of the namespace's operations.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LdlmError {
    /// The lock table is at its bound.
    #[error("lock table full ({0} locks)")]
    TooManyLocks(usize),
    /// No such lock (of that owner): cancelled already, or never granted.
    #[error("no lock {0:?}")]
    NoLock(LockHandle),
}

/// The namespace's settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LdlmSettings {
    /// How long a holder has to cancel after its blocking callback.
    pub callback_timeout: Duration,
    /// How often an unanswered blocking callback is sent again.
    pub ast_resend: Duration,
    /// The most locks the table holds.
    pub max_locks: usize,
}

impl Default for LdlmSettings {
    fn default() -> LdlmSettings {
        LdlmSettings {
            callback_timeout: Duration::from_secs(30),
            ast_resend: Duration::from_secs(5),
            max_locks: 1 << 20,
        }
    }
}

/// One lock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lock<O> {
    /// Its resource.
    pub res: ResId,
    /// Its mode.
    pub mode: LockMode,
    /// Its bits.
    pub bits: InodeBits,
    /// Its holder.
    pub owner: Owner<O>,
    /// Whether it is granted (else waiting).
    pub granted: bool,
    /// The callback, when one was sent: (deadline, next resend).
    pub ast: Option<(Time, Time)>,
    /// A local lock's kept locks: granted locks of the client it acts
    /// for that it coexists with ([`LockNamespace::enqueue_keeping`]).
    pub keeps: Vec<LockHandle>,
}

#[derive(Debug, Default)]
struct Resource {
    granted: Vec<LockHandle>,
    waiting: VecDeque<LockHandle>,
}

/// The lock table. `O` keys remote owners (the MDT uses export cookies).
#[derive(Debug)]
pub struct LockNamespace<O> {
    settings: LdlmSettings,
    resources: HashMap<ResId, Resource>,
    locks: HashMap<LockHandle, Lock<O>>,
    /// Locks whose holders were called back, for the timer.
    called_back: Vec<LockHandle>,
    next_cookie: u64,
    events: VecDeque<LdlmEvent<O>>,
}

impl<O: Copy + Eq + Hash + Debug> LockNamespace<O> {
    /// An empty namespace whose lock handles start at `cookie_base`
    /// (random per boot, so a handle from a previous boot names nothing).
    pub fn new(settings: LdlmSettings, cookie_base: u64) -> LockNamespace<O> {
        LockNamespace {
            settings,
            resources: HashMap::new(),
            locks: HashMap::new(),
            called_back: Vec::new(),
            next_cookie: cookie_base,
            events: VecDeque::new(),
        }
    }

    /// The settings.
    pub fn settings(&self) -> &LdlmSettings {
        &self.settings
    }

    /// Locks in the table (granted and waiting).
    pub fn len(&self) -> usize {
        self.locks.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.locks.is_empty()
    }

    /// Locks waiting to be granted.
    pub fn waiting(&self) -> usize {
        self.resources.values().map(|r| r.waiting.len()).sum()
    }

    /// The lock `h`.
    pub fn lock(&self, h: LockHandle) -> Option<&Lock<O>> {
        self.locks.get(&h)
    }

    fn new_handle(&mut self) -> LockHandle {
        loop {
            self.next_cookie = self.next_cookie.wrapping_add(1);
            let h = LockHandle(self.next_cookie);
            if h.0 != 0 && !self.locks.contains_key(&h) {
                return h;
            }
        }
    }

    /// Whether `(mode, bits)` conflicts with nothing granted on `res` but
    /// the locks it `keeps`, and nothing waiting there (ahead of `before`,
    /// or at all when `None`).
    fn grantable(
        &self,
        res: &Resource,
        mode: LockMode,
        bits: InodeBits,
        before: Option<LockHandle>,
        keeps: &[LockHandle],
    ) -> bool {
        let clash = |h: &LockHandle| self.locks.get(h).is_some_and(|l| conflicts((l.mode, l.bits), (mode, bits)));
        if res.granted.iter().any(|h| !keeps.contains(h) && clash(h)) {
            return false;
        }
        res.waiting.iter().take_while(|h| Some(**h) != before).all(|h| !clash(h))
    }

    /// Asks for a lock on `res`.
    pub fn enqueue(
        &mut self,
        now: Time,
        owner: Owner<O>,
        res: ResId,
        mode: LockMode,
        bits: InodeBits,
        wait: Wait,
    ) -> Result<Enqueued, LdlmError> {
        self.admit(now, Lock { res, mode, bits, owner, granted: false, ast: None, keeps: Vec::new() }, wait)
    }

    /// Asks for a local lock on `res` for a change of client `client`'s
    /// own that leaves `keeps` in place: those of them that are
    /// `client`'s granted locks on `res` neither block it nor are called
    /// back (see the module docs). Handles of other owners, of other
    /// resources or unknown are ignored.
    #[allow(clippy::too_many_arguments)]
    pub fn enqueue_keeping(
        &mut self,
        now: Time,
        client: O,
        res: ResId,
        mode: LockMode,
        bits: InodeBits,
        wait: Wait,
        keeps: &[LockHandle],
    ) -> Result<Enqueued, LdlmError> {
        let keeps: Vec<LockHandle> = keeps
            .iter()
            .copied()
            .filter(|h| {
                self.locks.get(h).is_some_and(|l| l.granted && l.res == res && l.owner == Owner::Remote(client))
            })
            .collect();
        self.admit(now, Lock { res, mode, bits, owner: Owner::Local, granted: false, ast: None, keeps }, wait)
    }

    /// Grants `lock` (not granted yet) now, queues it, or (`NoWait`)
    /// refuses it.
    fn admit(&mut self, now: Time, mut lock: Lock<O>, wait: Wait) -> Result<Enqueued, LdlmError> {
        if self.locks.len() >= self.settings.max_locks {
            return Err(LdlmError::TooManyLocks(self.locks.len()));
        }
        let res = lock.res;
        let ok = self.resources.get(&res).is_none_or(|r| self.grantable(r, lock.mode, lock.bits, None, &lock.keeps));
        if !ok && wait == Wait::NoWait {
            return Ok(Enqueued::WouldBlock);
        }
        let h = self.new_handle();
        lock.granted = ok;
        self.locks.insert(h, lock);
        let r = self.resources.entry(res).or_default();
        if ok {
            r.granted.push(h);
            return Ok(Enqueued::Granted(h));
        }
        r.waiting.push_back(h);
        self.call_back_blockers(now, res, h);
        Ok(Enqueued::Waiting(h))
    }

    /// Sends a callback to every remote holder of a granted lock on `res`
    /// that conflicts with the waiting lock `w` (and is not one it keeps)
    /// and was not called back yet.
    fn call_back_blockers(&mut self, now: Time, res: ResId, w: LockHandle) {
        let (Some(r), Some(wl)) = (self.resources.get(&res), self.locks.get(&w)) else {
            return;
        };
        let (mode, bits) = (wl.mode, wl.bits);
        let blockers: Vec<LockHandle> = r
            .granted
            .iter()
            .copied()
            .filter(|h| {
                !wl.keeps.contains(h)
                    && self.locks.get(h).is_some_and(|l| {
                        l.ast.is_none()
                            && matches!(l.owner, Owner::Remote(_))
                            && conflicts((l.mode, l.bits), (mode, bits))
                    })
            })
            .collect();
        let deadline = now.saturating_add(self.settings.callback_timeout);
        let resend = now.saturating_add(self.settings.ast_resend);
        for h in blockers {
            if let Some(l) = self.locks.get_mut(&h)
                && let Owner::Remote(owner) = l.owner
            {
                l.ast = Some((deadline, resend));
                self.called_back.push(h);
                self.events.push_back(LdlmEvent::BlockingAst { owner, lock: h, res, bits: l.bits });
            }
        }
    }

    /// `owner` gives `lock` back (granted or still waiting).
    pub fn cancel(&mut self, now: Time, owner: Owner<O>, lock: LockHandle) -> Result<(), LdlmError> {
        match self.locks.get(&lock) {
            Some(l) if l.owner == owner => {}
            _ => return Err(LdlmError::NoLock(lock)),
        }
        self.remove(now, lock);
        Ok(())
    }

    /// Drops every lock of `owner` (an evicted or disconnected client;
    /// the MDT after a restart has none). Returns how many.
    pub fn cancel_owner(&mut self, now: Time, owner: O) -> usize {
        let mine: Vec<LockHandle> =
            self.locks.iter().filter(|(_, l)| l.owner == Owner::Remote(owner)).map(|(h, _)| *h).collect();
        for h in &mine {
            self.remove(now, *h);
        }
        mine.len()
    }

    fn remove(&mut self, now: Time, h: LockHandle) {
        let Some(l) = self.locks.remove(&h) else {
            return;
        };
        if l.ast.is_some() {
            self.called_back.retain(|c| *c != h);
        }
        let res = l.res;
        if let Some(r) = self.resources.get_mut(&res) {
            r.granted.retain(|g| *g != h);
            r.waiting.retain(|w| *w != h);
        }
        self.reprocess(now, res);
    }

    /// Grants the waiting locks of `res` that have become grantable, in
    /// order, and calls back the holders that block the rest.
    fn reprocess(&mut self, now: Time, res: ResId) {
        let Some(r) = self.resources.get(&res) else {
            return;
        };
        if r.granted.is_empty() && r.waiting.is_empty() {
            self.resources.remove(&res);
            return;
        }
        let waiting: Vec<LockHandle> = r.waiting.iter().copied().collect();
        for h in waiting {
            let Some(l) = self.locks.get(&h) else {
                continue;
            };
            let (mode, bits, owner) = (l.mode, l.bits, l.owner);
            let ok = self.resources.get(&res).is_some_and(|r| self.grantable(r, mode, bits, Some(h), &l.keeps));
            if ok {
                if let Some(r) = self.resources.get_mut(&res) {
                    r.waiting.retain(|w| *w != h);
                    r.granted.push(h);
                }
                if let Some(l) = self.locks.get_mut(&h) {
                    l.granted = true;
                }
                self.events.push_back(LdlmEvent::Granted { owner, lock: h });
            } else {
                self.call_back_blockers(now, res, h);
            }
        }
    }

    /// Time has come: re-sends unanswered callbacks, evicts holders past
    /// their callback deadline.
    pub fn handle_timeout(&mut self, now: Time) {
        let mut expired = Vec::new();
        for h in self.called_back.clone() {
            let Some(l) = self.locks.get_mut(&h) else {
                continue;
            };
            let (Some((deadline, resend)), Owner::Remote(owner)) = (l.ast, l.owner) else {
                continue;
            };
            if deadline <= now {
                expired.push((owner, h));
            } else if resend <= now {
                l.ast = Some((deadline, now.saturating_add(self.settings.ast_resend).min(deadline)));
                self.events.push_back(LdlmEvent::BlockingAst { owner, lock: h, res: l.res, bits: l.bits });
            }
        }
        for (owner, lock) in expired {
            if self.locks.contains_key(&lock) {
                self.events.push_back(LdlmEvent::Evict { owner, lock });
                self.cancel_owner(now, owner);
            }
        }
    }

    /// When [`LockNamespace::handle_timeout`] next has work.
    pub fn poll_timeout(&self) -> Option<Time> {
        self.called_back
            .iter()
            .filter_map(|h| self.locks.get(h).and_then(|l| l.ast))
            .map(|(deadline, resend)| deadline.min(resend))
            .min()
    }

    /// The next thing for the driver to do.
    pub fn poll_event(&mut self) -> Option<LdlmEvent<O>> {
        self.events.pop_front()
    }

    /// Checks the table's invariants: no two granted locks on a resource
    /// conflict (but a local lock and those it keeps); every lock is on
    /// its resource's list exactly once.
    pub fn check(&self) -> Result<(), String> {
        let mut listed = 0;
        for (res, r) in &self.resources {
            for (i, a) in r.granted.iter().enumerate() {
                let la = self.locks.get(a).ok_or_else(|| format!("{a:?} granted on {res:?} but unknown"))?;
                if !la.granted || la.res != *res {
                    return Err(format!("{a:?} listed granted on {res:?}: {la:?}"));
                }
                for b in &r.granted[i + 1..] {
                    let lb = self.locks.get(b).ok_or_else(|| format!("{b:?} unknown"))?;
                    let kept = la.keeps.contains(b) || lb.keeps.contains(a);
                    if !kept && conflicts((la.mode, la.bits), (lb.mode, lb.bits)) {
                        return Err(format!("conflicting locks granted on {res:?}: {la:?} and {lb:?}"));
                    }
                }
            }
            for w in &r.waiting {
                let lw = self.locks.get(w).ok_or_else(|| format!("{w:?} waiting on {res:?} but unknown"))?;
                if lw.granted || lw.res != *res {
                    return Err(format!("{w:?} listed waiting on {res:?}: {lw:?}"));
                }
            }
            listed += r.granted.len() + r.waiting.len();
        }
        if listed != self.locks.len() {
            return Err(format!("{} locks, {listed} listed", self.locks.len()));
        }
        Ok(())
    }

    /// Every lock of `owner`, granted or not.
    pub fn locks_of(&self, owner: Owner<O>) -> Vec<(LockHandle, &Lock<O>)> {
        self.locks.iter().filter(|(_, l)| l.owner == owner).map(|(h, l)| (*h, l)).collect()
    }
}
