//! Typed configuration: which networks to bring up and the tunables.
//!
//! Owns parsing (serde, `deny_unknown_fields`) and validation with errors
//! that name the offending key. Starting anything is the core's job.

use std::net::Ipv4Addr;
use std::time::Duration;

use serde::Deserialize;

use crate::nid::{Net, NetType};

/// One network interface to bring up.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(tag = "lnd", rename_all = "lowercase", deny_unknown_fields)]
pub enum NetConfig {
    /// An in-process node `addr@lo` (`0@lo`, the local NI, always exists).
    Lo {
        /// The node number, unique within the process (not 0).
        addr: u32,
    },
    /// A TCP network.
    Tcp(TcpConfig),
    /// An InfiniBand / RoCE network (verbs; needs the `o2ib` feature).
    O2ib(O2ibConfig),
}

impl NetConfig {
    /// The network this config brings up.
    pub fn net(&self) -> Net {
        match self {
            NetConfig::Lo { .. } => Net::new(NetType::Lo, 0),
            NetConfig::Tcp(t) => Net::new(NetType::Tcp, t.net_num),
            NetConfig::O2ib(o) => Net::new(NetType::O2ib, o.net_num),
        }
    }
}

/// The tcp LND's settings.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TcpConfig {
    /// The IPv4 address to listen on; it is also this node's NID address.
    pub addr: Ipv4Addr,
    /// The port every node of the network listens on (Lustre's `accept_port`).
    pub port: u16,
    /// The network number (`tcp1` is 1).
    pub net_num: u16,
    /// Accept connections from peers (Lustre's `accept`). A node that only
    /// talks to servers (a client, a `sheen` command) may set it false: its
    /// replies come back over the connections it opens.
    pub accept: bool,
    /// Time allowed to connect and exchange HELLOs.
    #[serde(with = "secs")]
    pub connect_timeout: Duration,
    /// First delay before reconnecting to a peer that failed.
    #[serde(with = "secs")]
    pub reconnect_min: Duration,
    /// Largest delay between reconnect attempts.
    #[serde(with = "secs")]
    pub reconnect_max: Duration,
}

impl Default for TcpConfig {
    fn default() -> Self {
        TcpConfig {
            addr: Ipv4Addr::LOCALHOST,
            port: 988,
            net_num: 0,
            accept: true,
            connect_timeout: Duration::from_secs(5),
            reconnect_min: Duration::from_secs(1),
            reconnect_max: Duration::from_secs(64),
        }
    }
}

/// The o2ib LND's settings (ko2iblnd's module parameters).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct O2ibConfig {
    /// The IPv4 address of the RDMA interface (IPoIB or the RoCE netdev);
    /// it is also this node's NID address.
    pub addr: Ipv4Addr,
    /// The rdma_cm port every node of the network listens on (ko2iblnd uses 987).
    pub port: u16,
    /// The network number (`o2ib1` is 1).
    pub net_num: u16,
    /// Receive buffers per connection = send credits of the peer (`peer_credits`).
    pub queue_depth: u16,
    /// Payloads up to this size travel inside the message (copied); larger
    /// ones by RDMA straight into the receiver's pages.
    pub max_immediate: u32,
    /// Time allowed to resolve, connect and be accepted.
    #[serde(with = "secs")]
    pub connect_timeout: Duration,
    /// First delay before reconnecting to a peer that failed.
    #[serde(with = "secs")]
    pub reconnect_min: Duration,
    /// Largest delay between reconnect attempts.
    #[serde(with = "secs")]
    pub reconnect_max: Duration,
    /// A rendezvous (PUT_REQ waiting for its ACK, or a sink waiting for
    /// DONE) older than this kills the connection (ko2iblnd `timeout`).
    #[serde(with = "secs")]
    pub timeout: Duration,
    /// RC transport retries before a send fails (`retry_count`, at most 7).
    pub retry_count: u8,
    /// Receiver-not-ready retries (`rnr_retry_count`, 7 = forever).
    pub rnr_retry_count: u8,
    /// Poll the completion queue in a loop instead of sleeping on the
    /// completion channel (lower latency, burns a core).
    pub busy_poll: bool,
}

impl Default for O2ibConfig {
    fn default() -> Self {
        O2ibConfig {
            addr: Ipv4Addr::LOCALHOST,
            port: 987,
            net_num: 0,
            queue_depth: 8,
            max_immediate: 4096,
            connect_timeout: Duration::from_secs(10),
            reconnect_min: Duration::from_secs(1),
            reconnect_max: Duration::from_secs(64),
            timeout: Duration::from_secs(50),
            retry_count: 5,
            rnr_retry_count: 6,
            busy_poll: false,
        }
    }
}

impl O2ibConfig {
    fn validate(&self, i: usize) -> Result<(), ConfigError> {
        let err = |key: &str, why: &str| Err(ConfigError { key: format!("nets[{i}].{key}"), why: why.to_string() });
        if self.queue_depth < 2 {
            return err("queue_depth", "must be at least 2 (one credit is kept for returning credits)");
        }
        if self.queue_depth > 1024 {
            return err("queue_depth", "must be at most 1024");
        }
        if self.max_immediate > 64 << 10 {
            return err("max_immediate", "must be at most 64 KiB");
        }
        if self.reconnect_min > self.reconnect_max {
            return err("reconnect_min", "larger than reconnect_max");
        }
        if self.connect_timeout.is_zero() || self.timeout.is_zero() {
            return err("timeout", "timeouts must be positive");
        }
        if self.retry_count > 7 || self.rnr_retry_count > 7 {
            return err("retry_count", "retry counts are at most 7");
        }
        Ok(())
    }
}

/// LNet tunables (module parameters in Lustre), with o2iblnd's defaults.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Tunables {
    /// Messages in flight to one peer before further ones queue (`peer_credits`).
    pub peer_credits: u32,
    /// Messages in flight on one NI before further ones queue (`credits`).
    pub credits: u32,
    /// Time to wait for an ACK or REPLY before failing the operation
    /// (`lnet_transaction_timeout`).
    #[serde(with = "secs")]
    pub transaction_timeout: Duration,
    /// Largest payload accepted on the wire.
    pub max_payload: u32,
}

impl Default for Tunables {
    fn default() -> Self {
        Tunables { peer_credits: 8, credits: 256, transaction_timeout: Duration::from_secs(50), max_payload: 4 << 20 }
    }
}

/// Everything LNet is started with.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LnetConfig {
    /// Networks, in order of preference for this node's primary NID.
    pub nets: Vec<NetConfig>,
    /// Tunables.
    pub tunables: Tunables,
}

/// A configuration problem, naming the key.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("config key '{key}': {why}")]
pub struct ConfigError {
    /// The offending key.
    pub key: String,
    /// What is wrong with it.
    pub why: String,
}

impl LnetConfig {
    /// Parses a TOML document and validates it.
    pub fn from_toml(text: &str) -> Result<LnetConfig, ConfigError> {
        let cfg: LnetConfig = toml::from_str(text).map_err(|e| ConfigError {
            key: e.span().map(|s| text[s].chars().take(40).collect()).unwrap_or_default(),
            why: e.message().to_string(),
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks values that parse but make no sense.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |key: &str, why: &str| ConfigError { key: key.to_string(), why: why.to_string() };
        let t = &self.tunables;
        if t.peer_credits == 0 {
            return Err(err("tunables.peer_credits", "must be at least 1"));
        }
        if t.credits < t.peer_credits {
            return Err(err("tunables.credits", "must be at least peer_credits"));
        }
        if t.transaction_timeout.is_zero() {
            return Err(err("tunables.transaction_timeout", "must be positive"));
        }
        if t.max_payload < 4096 || t.max_payload > crate::wire::MAX_PAYLOAD_HARD {
            return Err(err("tunables.max_payload", "must be between 4096 and 64 MiB"));
        }
        let mut seen = Vec::new();
        for (i, n) in self.nets.iter().enumerate() {
            if seen.contains(&n.net()) {
                return Err(err(&format!("nets[{i}]"), &format!("network {} configured twice", n.net())));
            }
            seen.push(n.net());
            match n {
                NetConfig::Lo { addr: 0 } => {
                    return Err(err(&format!("nets[{i}].addr"), "0@lo is the local NI; pick another number"));
                }
                NetConfig::Tcp(tc) if tc.reconnect_min > tc.reconnect_max => {
                    return Err(err(&format!("nets[{i}].reconnect_min"), "larger than reconnect_max"));
                }
                NetConfig::Tcp(tc) if tc.connect_timeout.is_zero() => {
                    return Err(err(&format!("nets[{i}].connect_timeout"), "must be positive"));
                }
                NetConfig::O2ib(oc) => oc.validate(i)?,
                _ => {}
            }
        }
        Ok(())
    }
}

mod secs {
    //! Durations in config files are seconds (fractions allowed).
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let v = f64::deserialize(d)?;
        Duration::try_from_secs_f64(v).map_err(|e| serde::de::Error::custom(format!("bad duration {v}: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_full_config() {
        let c = LnetConfig::from_toml(
            r#"
            [[nets]]
            lnd = "tcp"
            addr = "127.0.0.2"
            port = 9988
            net_num = 1
            [[nets]]
            lnd = "lo"
            addr = 3
            [tunables]
            peer_credits = 16
            transaction_timeout = 2.5
            "#,
        )
        .unwrap();
        assert_eq!(c.nets[0].net().to_string(), "tcp1");
        assert_eq!(c.tunables.peer_credits, 16);
        assert_eq!(c.tunables.credits, 256);
        assert_eq!(c.tunables.transaction_timeout, Duration::from_millis(2500));
    }

    #[test]
    fn errors_name_the_key() {
        let e = LnetConfig::from_toml("[tunables]\npeer_credit = 3\n").unwrap_err();
        assert!(e.why.contains("unknown field"), "{e}");
        let e = LnetConfig::from_toml("[tunables]\npeer_credits = 0\n").unwrap_err();
        assert_eq!(e.key, "tunables.peer_credits");
        let e = LnetConfig::from_toml("[[nets]]\nlnd = \"lo\"\naddr = 0\n").unwrap_err();
        assert_eq!(e.key, "nets[0].addr");
        let e = LnetConfig::from_toml("[[nets]]\nlnd = \"ib\"\n").unwrap_err();
        assert!(e.why.contains("unknown variant"), "{e}");
        let e = LnetConfig::from_toml("[tunables]\ntransaction_timeout = -1\n").unwrap_err();
        assert!(e.why.contains("bad duration"), "{e}");
    }
}

#[cfg(test)]
mod example {
    #[test]
    fn the_deploy_example_parses() {
        let text = include_str!("../../deploy/lnet.example.toml");
        let c = super::LnetConfig::from_toml(text).unwrap();
        assert_eq!(c.nets.len(), 1);
    }
}
