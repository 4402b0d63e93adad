//! A seeded generator for protocol randomness: export handle cookies,
//! reconnect jitter.
//!
//! Owns: [`SeededRng`] (splitmix64), tiny and deterministic, so the same
//! seed gives the same cookies and backoffs in the simulator.
//!
//! Must not: seed itself from anything but the value it is given (drivers
//! pass a seed drawn from the OS once at start-up; the simulator passes one
//! derived from the run's seed).

use std::time::Duration;

/// splitmix64: good enough for cookies and jitter, not for cryptography
/// (export cookies guard against stale messages, not attackers).
#[derive(Debug, Clone)]
pub struct SeededRng {
    state: u64,
}

impl SeededRng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> SeededRng {
        SeededRng { state: seed }
    }

    /// The next 64 bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A duration uniform in `0..=max` at millisecond resolution.
    pub fn jitter(&mut self, max: Duration) -> Duration {
        let ms = u64::try_from(max.as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(self.next_u64() % ms.saturating_add(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_bounded() {
        let mut a = SeededRng::new(5);
        let mut b = SeededRng::new(5);
        assert_eq!(a.next_u64(), b.next_u64());
        for _ in 0..100 {
            assert!(a.jitter(Duration::from_secs(2)) <= Duration::from_secs(2));
        }
        assert_eq!(a.jitter(Duration::ZERO), Duration::ZERO);
    }
}
