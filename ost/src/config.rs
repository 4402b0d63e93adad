//! The `sheen-oss` configuration file (TOML).
//!
//! Owns: [`OssConfig`] — the file system UUID, the lnet networks (lnet's
//! own typed config), the service and CPT settings, the admin/metrics
//! address and the targets with their directories — parsed with
//! `deny_unknown_fields` and validated with errors that name the key
//! ([`ConfigError`]).
//!
//! Must not: start anything or touch a target directory.
//!
//! See `ost/sheen-oss.example.toml` (parsed by a test). In short:
//!
//! ```toml
//! fs_uuid = "6f1c0a6e-0000-4000-8000-000000000001"
//! admin = "127.0.0.1:9102"          # /metrics and /faults (optional)
//! mgs = "192.168.1.1@tcp"           # register the targets there (optional)
//!
//! [lnet]
//! nets = [{ lnd = "tcp", addr = "127.0.0.1", port = 988 }]
//!
//! [service]
//! threads_per_cpt = 8
//! cpu_npartitions = 1               # or cpu_pattern = "0[0,1]"
//!
//! [[targets]]
//! name = "sheen-OST0000"
//! index = 0
//! dir = "/srv/sheen/ost0"
//! commit_interval = 1.0             # seconds
//! direct_io = true                  # O_DIRECT for bulk runs (the default)
//! direct_io_min_kib = 64            # smaller runs through the page cache
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use lnet::LnetConfig;
use ptlrpc::cpt::CptSettings;
use serde::Deserialize;

use crate::target::OstConfig;

/// A configuration problem, naming the key.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("config key '{key}': {why}")]
pub struct ConfigError {
    /// The offending key.
    pub key: String,
    /// What is wrong with it.
    pub why: String,
}

fn err(key: impl Into<String>, why: impl Into<String>) -> ConfigError {
    ConfigError { key: key.into(), why: why.into() }
}

/// The service section.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ServiceSection {
    /// Worker threads per CPT.
    pub threads_per_cpt: usize,
    /// Lustre's `cpu_npartitions`.
    pub cpu_npartitions: Option<u32>,
    /// Lustre's `cpu_pattern`.
    pub cpu_pattern: Option<String>,
    /// Request buffers posted.
    pub nbufs: usize,
    /// Lustre's obd_timeout, seconds: clients ping every quarter of it,
    /// silent exports are evicted after 1.5x, recovery after a restart
    /// waits 3x (extended per returning client, at most 9x).
    pub obd_timeout: f64,
}

impl Default for ServiceSection {
    fn default() -> ServiceSection {
        ServiceSection { threads_per_cpt: 8, cpu_npartitions: None, cpu_pattern: None, nbufs: 16, obd_timeout: 100.0 }
    }
}

/// One target.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TargetSection {
    /// `fsname-OSTxxxx`.
    pub name: String,
    /// Index in the file system.
    pub index: u32,
    /// Directory holding the target.
    pub dir: PathBuf,
    /// MiB never promised to clients.
    #[serde(default = "default_reserve")]
    pub reserve_mib: u64,
    /// MiB of grant per export.
    #[serde(default = "default_grant")]
    pub grant_mib: u64,
    /// Largest BRW, KiB.
    #[serde(default = "default_brw")]
    pub brw_size_kib: u32,
    /// Offer CRC32C.
    #[serde(default = "default_true")]
    pub checksums: bool,
    /// Seconds between commits.
    #[serde(default = "default_commit")]
    pub commit_interval: f64,
    /// Bulk object data with `O_DIRECT` (Lustre's OSS read and
    /// writethrough caches off for large I/O); on by default, buffered when
    /// the file system refuses it, logged.
    #[serde(default = "default_true")]
    pub direct_io: bool,
    /// Runs shorter than this (KiB) go through the page cache even with
    /// `direct_io`.
    #[serde(default = "default_direct_min")]
    pub direct_io_min_kib: u32,
}

fn default_direct_min() -> u32 {
    (crate::target::DIRECT_IO_MIN >> 10) as u32
}

fn default_reserve() -> u64 {
    1
}
fn default_grant() -> u64 {
    64
}
fn default_brw() -> u32 {
    4096
}
fn default_true() -> bool {
    true
}
fn default_commit() -> f64 {
    1.0
}

/// The whole file.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OssConfig {
    /// The file system's UUID (written by format, checked at start).
    pub fs_uuid: String,
    /// Where `/metrics` and `/faults` are served (none: not served).
    #[serde(default)]
    pub admin: Option<SocketAddr>,
    /// The MGS's NID: at start every target registers there (file system
    /// name from the target name, index, this node's NIDs), retrying until
    /// the MGS answers. None: nothing registers (a standalone OSS).
    #[serde(default)]
    pub mgs: Option<String>,
    /// Networks and tunables.
    #[serde(default)]
    pub lnet: LnetConfig,
    /// The OST service.
    #[serde(default)]
    pub service: ServiceSection,
    /// The targets this OSS serves.
    pub targets: Vec<TargetSection>,
}

impl OssConfig {
    /// Parses and validates a TOML document.
    pub fn from_toml(text: &str) -> Result<OssConfig, ConfigError> {
        let cfg: OssConfig = toml::from_str(text).map_err(|e| {
            let key =
                e.span().and_then(|s| text.get(s)).map(|s| s.chars().take(40).collect::<String>()).unwrap_or_default();
            err(key, e.message())
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Reads and parses a file.
    pub fn load(path: &std::path::Path) -> Result<OssConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| err(path.display().to_string(), e.to_string()))?;
        OssConfig::from_toml(&text)
    }

    /// The ping settings of `service.obd_timeout`.
    pub fn ping_settings(&self) -> ptlrpc::pinger::PingSettings {
        let obd_timeout = std::time::Duration::from_secs_f64(self.service.obd_timeout.clamp(1.0, 3600.0));
        ptlrpc::pinger::PingSettings { obd_timeout, ..ptlrpc::pinger::PingSettings::default() }
    }

    /// Checks values that parse but make no sense.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.fs_uuid.is_empty() || self.fs_uuid.len() > 64 {
            return Err(err("fs_uuid", "must be 1..=64 characters"));
        }
        self.lnet.validate().map_err(|e| err(format!("lnet.{}", e.key), e.why))?;
        if self.lnet.nets.is_empty() {
            return Err(err("lnet.nets", "at least one network is needed"));
        }
        let s = &self.service;
        if !(1.0..=3600.0).contains(&s.obd_timeout) {
            return Err(err("service.obd_timeout", "must be 1..=3600 seconds"));
        }
        if s.threads_per_cpt == 0 || s.threads_per_cpt > 256 {
            return Err(err("service.threads_per_cpt", "must be 1..=256"));
        }
        if s.nbufs == 0 || s.nbufs > 1024 {
            return Err(err("service.nbufs", "must be 1..=1024"));
        }
        self.cpt_settings().validate().map_err(|e| {
            let key = if s.cpu_pattern.is_some() { "service.cpu_pattern" } else { "service.cpu_npartitions" };
            err(key, e.to_string())
        })?;
        if self.targets.is_empty() {
            return Err(err("targets", "at least one target is needed"));
        }
        if let Some(m) = &self.mgs {
            m.parse::<lnet::Nid>().map_err(|e| err("mgs", format!("not a NID: {e}")))?;
            for (i, t) in self.targets.iter().enumerate() {
                if crate::mgs_reg::fsname_of(&t.name).is_none() {
                    return Err(err(format!("targets[{i}].name"), "must be fsname-OSTxxxx to register with the MGS"));
                }
            }
        }
        for (i, t) in self.targets.iter().enumerate() {
            let k = |f: &str| format!("targets[{i}].{f}");
            if t.name.is_empty() || t.name.len() > 64 || t.name.contains(char::is_whitespace) {
                return Err(err(k("name"), "must be 1..=64 characters without spaces"));
            }
            if !t.dir.is_absolute() {
                return Err(err(k("dir"), "must be an absolute path"));
            }
            if t.brw_size_kib < 4 || t.brw_size_kib > 4096 || !t.brw_size_kib.is_power_of_two() {
                return Err(err(k("brw_size_kib"), "must be a power of two in 4..=4096"));
            }
            if !(0.01..=600.0).contains(&t.commit_interval) {
                return Err(err(k("commit_interval"), "must be 0.01..=600 seconds"));
            }
            if t.grant_mib > 1 << 20 {
                return Err(err(k("grant_mib"), "must be at most 1 TiB"));
            }
            for (j, u) in self.targets.iter().enumerate().take(i) {
                if u.name == t.name || u.index == t.index {
                    return Err(err(k("name"), format!("same name or index as targets[{j}]")));
                }
                if u.dir == t.dir {
                    return Err(err(k("dir"), format!("same directory as targets[{j}]")));
                }
            }
        }
        Ok(())
    }

    /// The MGS's NID, if one is configured (validated).
    pub fn mgs_nid(&self) -> Option<lnet::Nid> {
        self.mgs.as_deref().and_then(|m| m.parse().ok())
    }

    /// The CPT settings.
    pub fn cpt_settings(&self) -> CptSettings {
        CptSettings { npartitions: self.service.cpu_npartitions, pattern: self.service.cpu_pattern.clone() }
    }

    /// Whether CPTs were asked for.
    pub fn wants_cpts(&self) -> bool {
        self.service.cpu_npartitions.is_some() || self.service.cpu_pattern.is_some()
    }

    /// The targets' runtime configs.
    pub fn target_configs(&self) -> Vec<OstConfig> {
        self.targets
            .iter()
            .map(|t| OstConfig {
                fs_uuid: Some(self.fs_uuid.clone()),
                reserve_bytes: t.reserve_mib << 20,
                grant_per_export: t.grant_mib << 20,
                brw_size: t.brw_size_kib << 10,
                checksums: t.checksums,
                commit_interval: Duration::from_secs_f64(t.commit_interval),
                direct_io: t.direct_io,
                direct_io_min: (t.direct_io_min_kib as usize) << 10,
                ..OstConfig::new(t.name.clone(), t.index, t.dir.clone())
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
fs_uuid = "u1"
admin = "127.0.0.1:9102"
[lnet]
nets = [{ lnd = "tcp", addr = "127.0.0.1", port = 988 }]
[[targets]]
name = "sheen-OST0000"
index = 0
dir = "/srv/ost0"
"#;

    #[test]
    fn a_good_config_parses() {
        let c = OssConfig::from_toml(GOOD).expect("parses");
        assert_eq!(c.targets.len(), 1);
        assert_eq!(c.target_configs()[0].brw_size, 4 << 20);
        assert!(c.target_configs()[0].direct_io);
        assert_eq!(c.target_configs()[0].direct_io_min, 64 << 10);
        let d =
            OssConfig::from_toml(&GOOD.replace("index = 0", "index = 0\ndirect_io = false\ndirect_io_min_kib = 256"))
                .expect("parses");
        assert!(!d.target_configs()[0].direct_io);
        assert_eq!(d.target_configs()[0].direct_io_min, 256 << 10);
        let e = OssConfig::from_toml(&GOOD.replace("index = 0", "index = 0\ndirect_io = \"yes\""))
            .expect_err("not a boolean");
        assert!(e.to_string().contains("direct_io") || e.to_string().contains("bool"), "{e}");
    }

    #[test]
    fn an_mgs_nid_is_checked() {
        let c = OssConfig::from_toml(&format!("mgs = \"10.0.0.1@tcp\"\n{GOOD}")).expect("parses");
        assert!(c.mgs_nid().is_some());
        let e = OssConfig::from_toml(&format!("mgs = \"nonsense\"\n{GOOD}")).expect_err("bad NID");
        assert_eq!(e.key, "mgs");
        let bad_name = GOOD.replace("sheen-OST0000", "ost0");
        let e = OssConfig::from_toml(&format!("mgs = \"10.0.0.1@tcp\"\n{bad_name}")).expect_err("bad name");
        assert_eq!(e.key, "targets[0].name");
    }

    #[test]
    fn the_example_config_parses() {
        let c = OssConfig::from_toml(include_str!("../sheen-oss.example.toml")).expect("parses");
        assert_eq!(c.service.threads_per_cpt, 8);
        assert_eq!(c.targets[0].name, "sheen-OST0000");
    }

    #[test]
    fn errors_name_the_key() {
        let e = OssConfig::from_toml(&GOOD.replace("index = 0", "index = 0\nbogus = 1")).expect_err("unknown key");
        assert!(e.to_string().contains("bogus"), "{e}");
        let e = OssConfig::from_toml(&GOOD.replace("/srv/ost0", "rel/ost0")).expect_err("relative dir");
        assert_eq!(e.key, "targets[0].dir");
        let e = OssConfig::from_toml(&GOOD.replace("[[targets]]", "[service]\nthreads_per_cpt = 0\n[[targets]]"))
            .expect_err("zero threads");
        assert_eq!(e.key, "service.threads_per_cpt");
        let e = OssConfig::from_toml(&GOOD.replace("[[targets]]", "[service]\ncpu_pattern = \"0[\"\n[[targets]]"))
            .expect_err("bad pattern");
        assert_eq!(e.key, "service.cpu_pattern");
    }
}
