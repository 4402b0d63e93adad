//! Named fault-injection points, armed at run time.
//!
//! Owns: [`FaultPoint`] (what goes wrong), [`Trigger`] (when: once, every
//! Nth time, at random one time in N) and [`FaultInjector`], the shared
//! table that services and clients consult at each point. Tests arm it
//! directly; the admin interface will arm it later. Typed names, not
//! Lustre's hex `fail_loc` codes.
//!
//! Must not: perform the fault itself (the driver drops, delays or corrupts
//! when [`FaultInjector::check`] says so), read a clock or draw unseeded
//! randomness: random triggers use the injector's seeded RNG.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// A place where the driver can be told to misbehave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultPoint {
    /// The service drops an incoming request before queueing it.
    RequestDrop,
    /// The service drops a final reply instead of sending it.
    ReplyDrop,
    /// The service holds a final reply back for the given time.
    ReplyDelay(Duration),
    /// A byte of bulk data is flipped on arrival (server for writes, client
    /// for reads), before the checksum is verified.
    BulkCorrupt,
}

/// A fault point without its argument: the key the injector is armed by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FaultKind {
    /// [`FaultPoint::RequestDrop`].
    RequestDrop,
    /// [`FaultPoint::ReplyDrop`].
    ReplyDrop,
    /// [`FaultPoint::ReplyDelay`].
    ReplyDelay,
    /// [`FaultPoint::BulkCorrupt`].
    BulkCorrupt,
}

impl FaultPoint {
    /// The point's kind.
    pub const fn kind(self) -> FaultKind {
        match self {
            FaultPoint::RequestDrop => FaultKind::RequestDrop,
            FaultPoint::ReplyDrop => FaultKind::ReplyDrop,
            FaultPoint::ReplyDelay(_) => FaultKind::ReplyDelay,
            FaultPoint::BulkCorrupt => FaultKind::BulkCorrupt,
        }
    }
}

/// When an armed point fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// The next time it is reached, then it disarms.
    Once,
    /// The next N times it is reached (N >= 1), then it disarms.
    Times(u32),
    /// Every Nth time it is reached (N >= 1).
    EveryN(u32),
    /// Each time with probability 1/N (N >= 1), from the injector's seed.
    Random1InN(u32),
}

#[derive(Debug)]
struct Armed {
    point: FaultPoint,
    trigger: Trigger,
    reached: u64,
}

#[derive(Debug)]
struct State {
    armed: Vec<Armed>,
    fired: Vec<(FaultKind, u64)>,
    rng: SmallRng,
}

/// The table of armed fault points, shared (behind an `Arc`) by every
/// service and client of a node. Unarmed, a check is one atomic load.
pub struct FaultInjector {
    any_armed: AtomicBool,
    state: Mutex<State>,
}

impl fmt::Debug for FaultInjector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = self.state.lock();
        f.debug_struct("FaultInjector").field("armed", &st.armed).field("fired", &st.fired).finish()
    }
}

impl Default for FaultInjector {
    fn default() -> FaultInjector {
        FaultInjector::new(0)
    }
}

impl FaultInjector {
    /// An injector with nothing armed; `seed` drives random triggers.
    pub fn new(seed: u64) -> FaultInjector {
        FaultInjector {
            any_armed: AtomicBool::new(false),
            state: Mutex::new(State { armed: Vec::new(), fired: Vec::new(), rng: SmallRng::seed_from_u64(seed) }),
        }
    }

    /// Arms `point` with `trigger`, replacing any arming of the same kind.
    pub fn set(&self, point: FaultPoint, trigger: Trigger) {
        let trigger = match trigger {
            Trigger::EveryN(n) => Trigger::EveryN(n.max(1)),
            Trigger::Random1InN(n) => Trigger::Random1InN(n.max(1)),
            Trigger::Once => Trigger::Once,
            Trigger::Times(n) => Trigger::Times(n.max(1)),
        };
        let mut st = self.state.lock();
        st.armed.retain(|a| a.point.kind() != point.kind());
        st.armed.push(Armed { point, trigger, reached: 0 });
        self.any_armed.store(true, Ordering::Release);
    }

    /// Disarms `kind`.
    pub fn clear(&self, kind: FaultKind) {
        let mut st = self.state.lock();
        st.armed.retain(|a| a.point.kind() != kind);
        self.any_armed.store(!st.armed.is_empty(), Ordering::Release);
    }

    /// Disarms everything.
    pub fn clear_all(&self) {
        self.state.lock().armed.clear();
        self.any_armed.store(false, Ordering::Release);
    }

    /// The point is reached: returns it (with its argument) if it fires.
    pub fn check(&self, kind: FaultKind) -> Option<FaultPoint> {
        if !self.any_armed.load(Ordering::Acquire) {
            return None;
        }
        let mut guard = self.state.lock();
        let st = &mut *guard;
        let i = st.armed.iter().position(|a| a.point.kind() == kind)?;
        let a = &mut st.armed[i];
        a.reached += 1;
        let fire = match a.trigger {
            Trigger::Once | Trigger::Times(_) => true,
            Trigger::EveryN(n) => a.reached.is_multiple_of(u64::from(n)),
            Trigger::Random1InN(n) => st.rng.random_ratio(1, n),
        };
        if !fire {
            return None;
        }
        let point = a.point;
        let last = match a.trigger {
            Trigger::Once => true,
            Trigger::Times(n) => a.reached >= u64::from(n),
            _ => false,
        };
        if last {
            st.armed.remove(i);
            self.any_armed.store(!st.armed.is_empty(), Ordering::Release);
        }
        match st.fired.iter_mut().find(|(k, _)| *k == kind) {
            Some((_, n)) => *n += 1,
            None => st.fired.push((kind, 1)),
        }
        Some(point)
    }

    /// How many times `kind` has fired.
    pub fn fired(&self, kind: FaultKind) -> u64 {
        self.state.lock().fired.iter().find(|(k, _)| *k == kind).map_or(0, |(_, n)| *n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn triggers() {
        let f = FaultInjector::new(7);
        assert_eq!(f.check(FaultKind::ReplyDrop), None);
        f.set(FaultPoint::ReplyDrop, Trigger::Once);
        assert_eq!(f.check(FaultKind::RequestDrop), None);
        assert_eq!(f.check(FaultKind::ReplyDrop), Some(FaultPoint::ReplyDrop));
        assert_eq!(f.check(FaultKind::ReplyDrop), None);
        f.set(FaultPoint::ReplyDelay(Duration::from_millis(5)), Trigger::EveryN(3));
        let fired: Vec<bool> = (0..6).map(|_| f.check(FaultKind::ReplyDelay).is_some()).collect();
        assert_eq!(fired, [false, false, true, false, false, true]);
        f.set(FaultPoint::RequestDrop, Trigger::Times(2));
        let fired: Vec<bool> = (0..4).map(|_| f.check(FaultKind::RequestDrop).is_some()).collect();
        assert_eq!(fired, [true, true, false, false]);
        f.set(FaultPoint::BulkCorrupt, Trigger::Random1InN(4));
        let n = (0..4000).filter(|_| f.check(FaultKind::BulkCorrupt).is_some()).count();
        assert!((800..1200).contains(&n), "{n}");
        f.clear_all();
        assert_eq!(f.check(FaultKind::BulkCorrupt), None);
        assert_eq!(f.fired(FaultKind::ReplyDrop), 1);
        assert_eq!(f.fired(FaultKind::ReplyDelay), 2);
    }
}
