//! Protocol time: a point on a monotonic timeline that the caller supplies.
//!
//! Owns: [`Time`], an instant measured as a [`Duration`] since an arbitrary
//! epoch, and the [`Clock`] trait that drivers implement.
//!
//! Must not: read a real clock. Every state machine in this crate takes
//! `now: Time` as an argument; only a driver (tokio in production, the
//! simulator in tests) turns a real or virtual clock into `Time` values.

use std::fmt;
use std::ops::{Add, AddAssign, Sub};
use std::time::Duration;

/// An instant on a monotonic timeline, as the time elapsed since an epoch
/// chosen by whoever drives the state machines.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Time(Duration);

impl Time {
    /// The epoch itself.
    pub const ZERO: Time = Time(Duration::ZERO);

    /// The instant `since_epoch` after the epoch.
    pub const fn from_epoch(since_epoch: Duration) -> Time {
        Time(since_epoch)
    }

    /// The instant `secs` seconds after the epoch.
    pub const fn from_secs(secs: u64) -> Time {
        Time(Duration::from_secs(secs))
    }

    /// The instant `ms` milliseconds after the epoch.
    pub const fn from_millis(ms: u64) -> Time {
        Time(Duration::from_millis(ms))
    }

    /// Time elapsed since the epoch.
    pub const fn since_epoch(self) -> Duration {
        self.0
    }

    /// `self - earlier`, or zero if `earlier` is later than `self`.
    pub fn saturating_since(self, earlier: Time) -> Duration {
        self.0.saturating_sub(earlier.0)
    }

    /// `self - d`, or `None` before the epoch.
    pub fn checked_sub(self, d: Duration) -> Option<Time> {
        self.0.checked_sub(d).map(Time)
    }

    /// `self - d`, clamped at the epoch.
    pub fn saturating_sub(self, d: Duration) -> Time {
        Time(self.0.saturating_sub(d))
    }

    /// `self + d`, saturating at the far future instead of overflowing.
    pub fn saturating_add(self, d: Duration) -> Time {
        Time(self.0.saturating_add(d))
    }
}

impl Add<Duration> for Time {
    type Output = Time;
    fn add(self, d: Duration) -> Time {
        self.saturating_add(d)
    }
}

impl AddAssign<Duration> for Time {
    fn add_assign(&mut self, d: Duration) {
        *self = *self + d;
    }
}

impl Sub<Time> for Time {
    type Output = Duration;
    /// Saturating: an earlier minus a later instant is zero.
    fn sub(self, earlier: Time) -> Duration {
        self.saturating_since(earlier)
    }
}

impl fmt::Debug for Time {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "T+{:.6}s", self.0.as_secs_f64())
    }
}

impl fmt::Display for Time {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// A source of [`Time`]. Drivers own one; protocol logic never does.
pub trait Clock {
    /// The current instant.
    fn now(&self) -> Time;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates() {
        let t = Time::from_secs(10);
        assert_eq!(t + Duration::from_secs(5), Time::from_secs(15));
        assert_eq!(Time::from_secs(3) - t, Duration::ZERO);
        assert_eq!(t - Time::from_secs(3), Duration::from_secs(7));
        assert_eq!(t.checked_sub(Duration::from_secs(11)), None);
        assert_eq!(t.saturating_sub(Duration::from_secs(11)), Time::ZERO);
        let far = Time::from_epoch(Duration::MAX);
        assert_eq!(far + Duration::from_secs(1), far);
    }
}
