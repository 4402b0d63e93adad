//! A mount's timeouts and lock LRU limits, under Lustre's names: what the library API
//! ([`crate::Sheen::mount_with`]) and `sheen mount -o` accept, so a client
//! can run with the same short timeouts as its servers.
//!
//! Owns: [`MountOptions`] and its parsing (`obd_timeout=10,ping_interval=2`),
//! and the settings derived from it for the imports (ping, adaptive
//! timeouts) and the MGC's config-log follower. Must not: hold anything
//! but settings.

use std::time::Duration;

use ptlrpc::at::AtSettings;
use ptlrpc::config_log::FollowSettings;
use ptlrpc::pinger::PingSettings;

use crate::error::{ClientError, Result};

/// The longest wait the MGC asks the MGS to hold a config read.
const MGC_WAIT: Duration = Duration::from_secs(1);

/// Client timeouts. `Default` is Lustre's (obd_timeout 100 s, pings every
/// 25 s, at_min 5 s, at_max 600 s).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MountOptions {
    /// Lustre's `obd_timeout` (`timeout`): pings every quarter of it
    /// unless `ping_interval` is set.
    pub obd_timeout: Duration,
    /// Lustre's `ping_interval`.
    pub ping_interval: Option<Duration>,
    /// Lustre's `at_min`: the floor of adaptive timeouts.
    pub at_min: Option<Duration>,
    /// Lustre's `at_max`.
    pub at_max: Option<Duration>,
    /// Lustre's `lru_size`: the most MDT locks the FUSE mount keeps
    /// (least recently used given up first).
    pub lru_size: usize,
    /// Lustre's `lru_max_age`: a lock unused this long is given up.
    pub lru_max_age: Duration,
}

impl Default for MountOptions {
    fn default() -> MountOptions {
        MountOptions {
            obd_timeout: PingSettings::default().obd_timeout,
            ping_interval: None,
            at_min: None,
            at_max: None,
            lru_size: crate::locks::MAX_LOCKS,
            lru_max_age: crate::locks::LRU_MAX_AGE,
        }
    }
}

/// The longest `lru_max_age` taken (30 days).
const LRU_MAX_AGE_CAP: f64 = 30.0 * 86400.0;

fn lru_size(v: &str) -> Result<usize> {
    match v.parse::<usize>() {
        Ok(0) => Err(ClientError::Invalid(
            "mount option lru_size=0: Lustre's dynamic LRU is not supported; give a number of locks (default 16384)"
                .into(),
        )),
        Ok(n) if n <= 1 << 24 => Ok(n),
        _ => Err(ClientError::Invalid(format!("mount option lru_size={v}: must be 1 ..= 16777216 locks"))),
    }
}

/// `lru_max_age`: seconds, or with a unit (`ms`, `s`), as Lustre takes it.
fn lru_max_age(v: &str) -> Result<Duration> {
    let (num, scale) = match v.strip_suffix("ms") {
        Some(n) => (n, 0.001),
        None => (v.strip_suffix('s').unwrap_or(v), 1.0),
    };
    let secs = num.trim().parse::<f64>().map(|n| n * scale).ok().filter(|s| (1.0..=LRU_MAX_AGE_CAP).contains(s));
    secs.map(Duration::from_secs_f64).ok_or_else(|| {
        ClientError::Invalid(format!(
            "mount option lru_max_age={v}: must be 1 s ..= 30 days (seconds, or with a unit: 3900s, 3900000ms)"
        ))
    })
}

fn seconds(key: &str, v: &str) -> Result<Duration> {
    let s: f64 = v.parse().map_err(|_| ClientError::Invalid(format!("mount option {key}={v}: not a number")))?;
    if !(0.1..=3600.0).contains(&s) {
        return Err(ClientError::Invalid(format!("mount option {key}={v}: must be 0.1 ..= 3600 seconds")));
    }
    Ok(Duration::from_secs_f64(s))
}

impl MountOptions {
    /// Parses `key=value[,key=value...]` (seconds): `obd_timeout` (or
    /// `timeout`), `ping_interval`, `at_min`, `at_max`; and the FUSE
    /// mount's lock LRU, `lru_size` (locks) and `lru_max_age` (seconds, or
    /// `ms`/`s` suffixed). Unknown keys are refused by name.
    pub fn parse(s: &str) -> Result<MountOptions> {
        let mut o = MountOptions::default();
        for kv in s.split(',').map(str::trim).filter(|kv| !kv.is_empty()) {
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| ClientError::Invalid(format!("mount option {kv:?}: expected key=value")))?;
            match k {
                "obd_timeout" | "timeout" => o.obd_timeout = seconds(k, v)?,
                "ping_interval" => o.ping_interval = Some(seconds(k, v)?),
                "at_min" => o.at_min = Some(seconds(k, v)?),
                "at_max" => o.at_max = Some(seconds(k, v)?),
                "lru_size" => o.lru_size = lru_size(v)?,
                "lru_max_age" => o.lru_max_age = lru_max_age(v)?,
                _ => {
                    return Err(ClientError::Invalid(format!(
                        "unknown mount option {k:?} (known: obd_timeout, ping_interval, at_min, at_max, lru_size, \
                         lru_max_age)"
                    )));
                }
            }
        }
        if let (Some(a), Some(b)) = (o.at_min, o.at_max)
            && a > b
        {
            return Err(ClientError::Invalid("mount options: at_min is larger than at_max".into()));
        }
        Ok(o)
    }

    /// The imports' ping settings.
    pub fn ping(&self) -> PingSettings {
        let mut p = PingSettings {
            obd_timeout: self.obd_timeout,
            ping_interval: self.ping_interval,
            ..PingSettings::default()
        };
        p.ping_interval_uncommitted = p.ping_interval_uncommitted.min(p.ping_interval());
        p
    }

    /// The longest pause between an import's reconnect rounds: a ping
    /// interval, at most 5 s (a target evicts after 6 silent intervals).
    pub fn reconnect_max(&self) -> Duration {
        self.ping().ping_interval().clamp(Duration::from_secs(1), Duration::from_secs(5))
    }

    /// The FUSE mount's lock LRU.
    pub fn lru(&self) -> crate::locks::LruLimits {
        crate::locks::LruLimits { size: self.lru_size, max_age: self.lru_max_age }
    }

    /// The imports' adaptive-timeout settings.
    pub fn at(&self) -> AtSettings {
        let d = AtSettings::default();
        let at_min = self.at_min.unwrap_or(d.at_min);
        AtSettings { at_min, at_max: self.at_max.unwrap_or(d.at_max).max(at_min), ..d }
    }

    /// The MGC's follower: reads held up to 1 s; a read unanswered half a
    /// ping interval (at most 1 s, at least 0.5 s) past that is given up
    /// (the MGS restarted); retries back off to 1 s at most. An idle
    /// client so asks the MGS about once a second, and notices an MGS
    /// restart within 2 s.
    pub fn follow(&self) -> FollowSettings {
        let interval = self.ping().ping_interval();
        FollowSettings {
            wait: MGC_WAIT,
            slack: (interval / 2).clamp(Duration::from_millis(500), Duration::from_secs(1)),
            backoff_min: Duration::from_millis(100),
            backoff_max: interval.clamp(Duration::from_millis(200), Duration::from_secs(1)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_parse_under_lustres_names() {
        let o = MountOptions::parse("obd_timeout=10, ping_interval=1.5,at_min=1").unwrap();
        assert_eq!(o.obd_timeout, Duration::from_secs(10));
        assert_eq!(o.ping().ping_interval(), Duration::from_millis(1500));
        assert_eq!(o.ping().ping_interval_uncommitted, Duration::from_millis(1500));
        assert_eq!(o.at().at_min, Duration::from_secs(1));
        assert_eq!(o.reconnect_max(), Duration::from_millis(1500));
        assert_eq!(MountOptions::default().reconnect_max(), Duration::from_secs(5));
        assert_eq!(MountOptions::parse("timeout=8").unwrap().ping().ping_interval(), Duration::from_secs(2));
        assert_eq!(MountOptions::parse("").unwrap(), MountOptions::default());
        assert_eq!(MountOptions::default().ping().ping_interval(), Duration::from_secs(25));
        for bad in ["obd_timeout", "obd_timeout=x", "obd_timeout=0", "grant=5", "at_min=9,at_max=2"] {
            assert!(MountOptions::parse(bad).is_err(), "{bad}");
        }
        assert!(MountOptions::parse("grant=5").unwrap_err().to_string().contains("grant"));
    }

    #[test]
    fn the_lock_lru_takes_lustres_names_and_units() {
        let d = MountOptions::default().lru();
        assert_eq!((d.size, d.max_age), (16384, Duration::from_secs(3900)));
        let o = MountOptions::parse("lru_size=100,lru_max_age=600").unwrap().lru();
        assert_eq!((o.size, o.max_age), (100, Duration::from_secs(600)));
        assert_eq!(MountOptions::parse("lru_max_age=3900000ms").unwrap().lru_max_age, Duration::from_secs(3900));
        assert_eq!(MountOptions::parse("lru_max_age=90s").unwrap().lru_max_age, Duration::from_secs(90));
        for bad in ["lru_size=0", "lru_size=-1", "lru_size=x", "lru_max_age=0", "lru_max_age=5ms", "lru_max_age=1y"] {
            let e = MountOptions::parse(bad).expect_err(bad).to_string();
            assert!(e.contains(bad.split('=').next().unwrap()), "{e}");
        }
    }

    #[test]
    fn the_mgc_gives_a_read_up_sooner_with_short_timeouts() {
        let short = MountOptions::parse("ping_interval=1").unwrap().follow();
        assert_eq!(short.slack, Duration::from_millis(500));
        assert_eq!(MountOptions::default().follow().slack, Duration::from_secs(1));
    }
}
