//! `sheen-mds` configuration (TOML, `deny_unknown_fields`, then
//! validated; every error names its key).
//!
//! ```toml
//! fsname = "sheen"
//! data_dir = "/var/lib/sheen/mds0"
//! admin_addr = "127.0.0.1:9310"
//! [lnet]
//! nets = [{ lnd = "tcp", addr = "127.0.0.1", port = 988 }]
//! [mgs]                      # host the MGS here (omit to use mgs_nid)
//! [mdt]                      # host MDT0 here
//! index = 0
//! mgs_nid = "127.0.0.1@tcp"  # when the MGS is elsewhere
//! commit_interval_ms = 1000
//! ```
//!
//! Must not: start anything.

use std::net::SocketAddr;
use std::path::PathBuf;

use lnet::LnetConfig;
use serde::Deserialize;

/// A configuration problem, naming the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("config key '{key}': {why}")]
pub struct ConfigError {
    /// The key.
    pub key: String,
    /// What is wrong.
    pub why: String,
}

/// The daemon's configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MdsConfig {
    /// File system name.
    pub fsname: String,
    /// Where the stores live (`mgs/`, `mdt<index>/`).
    pub data_dir: PathBuf,
    /// The admin HTTP endpoint (`/metrics`, `/faults`).
    pub admin_addr: Option<SocketAddr>,
    /// LNet.
    pub lnet: LnetConfig,
    /// Host the MGS.
    pub mgs: Option<MgsSection>,
    /// Host an MDT.
    pub mdt: Option<MdtSection>,
}

/// `[mgs]`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct MgsSection {
    /// Service threads (config reads long-poll; each holds one).
    pub threads: usize,
}

/// `[mdt]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MdtSection {
    /// Target index (0: the sequence controller).
    #[serde(default)]
    pub index: u32,
    /// The MGS's NID when it is not hosted here.
    pub mgs_nid: Option<String>,
    /// Durable commit interval.
    #[serde(default = "default_commit_ms")]
    pub commit_interval_ms: u64,
    /// Service threads.
    #[serde(default = "default_threads")]
    pub threads: usize,
    /// Default stripe size, bytes.
    #[serde(default = "default_stripe_size")]
    pub stripe_size: u32,
    /// Default stripe count.
    #[serde(default = "default_stripe_count")]
    pub stripe_count: u32,
    /// Objects precreated per OST_CREATE.
    #[serde(default = "default_precreate")]
    pub precreate_batch: u32,
    /// Object ids per OST sequence before the MDT rolls over to a fresh
    /// one (Lustre's `seq.*.width`; default `0xFFFFFFFF`).
    #[serde(default = "default_ost_seq_width")]
    pub ost_seq_width: u64,
    /// Lustre's obd_timeout, seconds: clients ping every quarter of it,
    /// silent exports are evicted after 1.5x, and recovery after a restart
    /// waits for known clients up to 3x (hard limit 9x).
    #[serde(default = "default_obd_timeout")]
    pub obd_timeout_s: f64,
    /// How old the OSTs' space figures may get before the MDT asks them
    /// again, seconds (Lustre's `lod.*.qos_maxage`, 5 there). The same
    /// pass reconnects OSTs the MDT lost, so the default is 1.
    #[serde(default = "default_qos_maxage")]
    pub qos_maxage_s: f64,
}

fn default_qos_maxage() -> f64 {
    1.0
}

fn default_ost_seq_width() -> u64 {
    crate::alloc::OST_SEQ_WIDTH
}

fn default_obd_timeout() -> f64 {
    100.0
}

fn default_commit_ms() -> u64 {
    1000
}
fn default_threads() -> usize {
    4
}
fn default_stripe_size() -> u32 {
    1 << 20
}
fn default_stripe_count() -> u32 {
    1
}
fn default_precreate() -> u32 {
    1024
}

impl MdsConfig {
    /// Parses and validates.
    pub fn from_toml(text: &str) -> Result<MdsConfig, ConfigError> {
        let cfg: MdsConfig = toml::from_str(text).map_err(|e| ConfigError {
            key: e.span().map(|s| text.get(s).unwrap_or_default().chars().take(40).collect()).unwrap_or_default(),
            why: e.message().to_string(),
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks values that parse but make no sense.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |key: &str, why: &str| Err(ConfigError { key: key.into(), why: why.into() });
        if self.fsname.is_empty()
            || self.fsname.len() > 8
            || !self.fsname.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            return err("fsname", "1 to 8 of [A-Za-z0-9_]");
        }
        self.lnet.validate().map_err(|e| ConfigError { key: format!("lnet.{}", e.key), why: e.why })?;
        if self.mgs.is_none() && self.mdt.is_none() {
            return err("mgs", "host an [mgs], an [mdt], or both");
        }
        if let Some(m) = &self.mgs
            && m.threads > 256
        {
            return err("mgs.threads", "at most 256");
        }
        if let Some(m) = &self.mdt {
            if self.mgs.is_none() && m.mgs_nid.is_none() {
                return err("mdt.mgs_nid", "needed when this daemon does not host the MGS");
            }
            if let Some(n) = &m.mgs_nid
                && n.parse::<lnet::Nid>().is_err()
            {
                return err("mdt.mgs_nid", "not a NID (ADDR@NET)");
            }
            if m.commit_interval_ms == 0 || m.commit_interval_ms > 60_000 {
                return err("mdt.commit_interval_ms", "1 ..= 60000");
            }
            if !(0.1..=3600.0).contains(&m.obd_timeout_s) {
                return err("mdt.obd_timeout_s", "0.1 ..= 3600");
            }
            if !(0.1..=3600.0).contains(&m.qos_maxage_s) {
                return err("mdt.qos_maxage_s", "0.1 ..= 3600");
            }
            if m.threads == 0 || m.threads > 256 {
                return err("mdt.threads", "1 ..= 256");
            }
            if m.stripe_size == 0 || m.stripe_size % 65536 != 0 {
                return err("mdt.stripe_size", "a positive multiple of 64 KiB");
            }
            if m.precreate_batch == 0 {
                return err("mdt.precreate_batch", "at least 1");
            }
            if m.ost_seq_width == 0 || m.ost_seq_width > crate::alloc::OST_SEQ_WIDTH {
                return err("mdt.ost_seq_width", "1 ..= 0xFFFFFFFF");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &str = r#"
fsname = "sheen"
data_dir = "/tmp/x"
[lnet]
nets = [{ lnd = "tcp", addr = "127.0.0.1", port = 988 }]
[mgs]
[mdt]
index = 0
"#;

    #[test]
    fn parses_and_names_bad_keys() {
        let c = MdsConfig::from_toml(OK).expect("valid");
        assert_eq!(c.mdt.as_ref().map(|m| m.commit_interval_ms), Some(1000));
        let e = MdsConfig::from_toml(&OK.replace("index = 0", "index = 0\nbogus = 1")).expect_err("unknown key");
        assert!(e.to_string().contains("bogus"), "{e}");
        let e = MdsConfig::from_toml(&OK.replace("index = 0", "commit_interval_ms = 0")).expect_err("zero");
        assert_eq!(e.key, "mdt.commit_interval_ms");
        let e = MdsConfig::from_toml(&OK.replace("[mgs]\n", "")).expect_err("no mgs");
        assert_eq!(e.key, "mdt.mgs_nid");
        assert_eq!(c.mdt.as_ref().map(|m| m.qos_maxage_s), Some(1.0));
        let c = MdsConfig::from_toml(&OK.replace("index = 0", "index = 0\nqos_maxage_s = 5")).expect("valid");
        assert_eq!(c.mdt.as_ref().map(|m| m.qos_maxage_s), Some(5.0));
        let e = MdsConfig::from_toml(&OK.replace("index = 0", "qos_maxage_s = 0")).expect_err("zero");
        assert_eq!(e.key, "mdt.qos_maxage_s");
    }
}
