//! NIDs and networks.
//!
//! Owns the `ADDR@NET[N]` syntax (`192.168.1.2@tcp`, `10.0.0.1@o2ib1`,
//! `0@lo`), its ordering and hashing, and the 64-bit wire encoding used by
//! the LNet header. Knows nothing about LNDs or sockets.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// The kind of network a NID lives on; each kind is served by one LND.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NetType {
    /// In-process loopback (`0@lo` is the local NI; `N@lo` other in-process nodes).
    Lo,
    /// TCP sockets (ksocklnd's counterpart).
    Tcp,
    /// InfiniBand / RoCE verbs (o2iblnd's counterpart).
    O2ib,
}

impl NetType {
    /// The name used in NIDs and configuration.
    pub fn name(self) -> &'static str {
        match self {
            NetType::Lo => "lo",
            NetType::Tcp => "tcp",
            NetType::O2ib => "o2ib",
        }
    }

    fn code(self) -> u16 {
        // Lustre's LND numbers, so the wire encoding reads the same in a dump.
        match self {
            NetType::Lo => 9,
            NetType::Tcp => 2,
            NetType::O2ib => 5,
        }
    }

    fn from_code(code: u16) -> Option<NetType> {
        match code {
            9 => Some(NetType::Lo),
            2 => Some(NetType::Tcp),
            5 => Some(NetType::O2ib),
            _ => None,
        }
    }
}

/// A network: a type plus a number (`tcp`, `tcp1`, `o2ib3`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Net {
    /// Which LND serves the network.
    pub kind: NetType,
    /// The network number; `tcp` is `tcp0`.
    pub num: u16,
}

impl Net {
    /// A network from its parts.
    pub const fn new(kind: NetType, num: u16) -> Net {
        Net { kind, num }
    }
}

impl fmt::Display for Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.num == 0 { f.write_str(self.kind.name()) } else { write!(f, "{}{}", self.kind.name(), self.num) }
    }
}

/// Why a NID or network name did not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NidError {
    /// No `@` separating address and network.
    #[error("'{0}': a NID is ADDR@NET (e.g. 192.168.1.2@tcp, 0@lo), but there is no '@'")]
    MissingAt(String),
    /// The network part is empty or names no known network type.
    #[error("'{0}': unknown network type (expected tcp, o2ib or lo, optionally numbered)")]
    UnknownNet(String),
    /// The network number is not a number or too large.
    #[error("'{0}': network number must be 0..=65535")]
    BadNetNum(String),
    /// The address part is not valid for the network type.
    #[error("'{addr}' is not a valid address for {net}: {why}")]
    BadAddr {
        /// The address text.
        addr: String,
        /// The network it was given for.
        net: String,
        /// What is wrong with it.
        why: &'static str,
    },
}

impl FromStr for Net {
    type Err = NidError;

    fn from_str(s: &str) -> Result<Net, NidError> {
        let (kind, num) = [NetType::O2ib, NetType::Tcp, NetType::Lo]
            .into_iter()
            .find_map(|k| s.strip_prefix(k.name()).map(|rest| (k, rest)))
            .ok_or_else(|| NidError::UnknownNet(s.to_string()))?;
        if num.starts_with(|c: char| c.is_ascii_alphabetic()) {
            return Err(NidError::UnknownNet(s.to_string()));
        }
        let num = if num.is_empty() {
            0
        } else {
            // Reject signs, spaces and leading '+' that u16::from_str would allow.
            if !num.bytes().all(|b| b.is_ascii_digit()) {
                return Err(NidError::BadNetNum(s.to_string()));
            }
            num.parse::<u16>().map_err(|_| NidError::BadNetNum(s.to_string()))?
        };
        Ok(Net { kind, num })
    }
}

/// A network identifier: an address on a network.
///
/// For `tcp` and `o2ib` the address is an IPv4 address; for `lo` it is a
/// small number naming an in-process node (`0@lo` is always "myself").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Nid {
    /// The network.
    pub net: Net,
    /// The address within the network (IPv4 as a big-endian u32, or the lo number).
    pub addr: u32,
}

impl Nid {
    /// The local loopback NID, `0@lo`.
    pub const LO: Nid = Nid { net: Net::new(NetType::Lo, 0), addr: 0 };

    /// A NID for an IPv4 address on `net`.
    pub fn ip(addr: Ipv4Addr, net: Net) -> Nid {
        Nid { net, addr: u32::from(addr) }
    }

    /// The IPv4 address of a `tcp` or `o2ib` NID.
    pub fn ipv4(&self) -> Option<Ipv4Addr> {
        match self.net.kind {
            NetType::Tcp | NetType::O2ib => Some(Ipv4Addr::from(self.addr)),
            NetType::Lo => None,
        }
    }

    /// Wire form: `net type (16) | net num (16) | addr (32)`, as Lustre packs NIDs.
    pub fn to_u64(self) -> u64 {
        (u64::from(self.net.kind.code()) << 48) | (u64::from(self.net.num) << 32) | u64::from(self.addr)
    }

    /// Decodes the wire form; `None` for an unknown network type.
    pub fn from_u64(v: u64) -> Option<Nid> {
        let kind = NetType::from_code((v >> 48) as u16)?;
        Some(Nid { net: Net::new(kind, (v >> 32) as u16), addr: v as u32 })
    }
}

impl fmt::Display for Nid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.net.kind {
            NetType::Lo => write!(f, "{}@{}", self.addr, self.net),
            NetType::Tcp | NetType::O2ib => write!(f, "{}@{}", Ipv4Addr::from(self.addr), self.net),
        }
    }
}

impl FromStr for Nid {
    type Err = NidError;

    fn from_str(s: &str) -> Result<Nid, NidError> {
        let (addr, net) = s.rsplit_once('@').ok_or_else(|| NidError::MissingAt(s.to_string()))?;
        let net: Net = net.parse()?;
        let bad = |why| NidError::BadAddr { addr: addr.to_string(), net: net.to_string(), why };
        let addr = match net.kind {
            NetType::Lo => {
                if addr.is_empty() || !addr.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(bad("lo addresses are decimal numbers (0@lo is the local node)"));
                }
                addr.parse::<u32>().map_err(|_| bad("lo address does not fit in 32 bits"))?
            }
            NetType::Tcp | NetType::O2ib => {
                let ip: Ipv4Addr = addr.parse().map_err(|_| bad("expected an IPv4 address like 192.168.1.2"))?;
                u32::from(ip)
            }
        };
        Ok(Nid { net, addr })
    }
}

impl serde::Serialize for Nid {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Nid {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Nid, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl<'de> serde::Deserialize<'de> for Net {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Net, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl serde::Serialize for Net {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_the_documented_forms() {
        let n: Nid = "192.168.1.2@tcp".parse().unwrap();
        assert_eq!(n.net, Net::new(NetType::Tcp, 0));
        assert_eq!(n.ipv4(), Some(Ipv4Addr::new(192, 168, 1, 2)));
        let n: Nid = "10.0.0.1@o2ib1".parse().unwrap();
        assert_eq!(n.net, Net::new(NetType::O2ib, 1));
        assert_eq!("0@lo".parse::<Nid>().unwrap(), Nid::LO);
        assert_eq!(n.to_string(), "10.0.0.1@o2ib1");
    }

    #[test]
    fn bad_forms_say_what_is_wrong() {
        let e = |s: &str| s.parse::<Nid>().unwrap_err().to_string();
        assert!(e("192.168.1.2").contains("no '@'"));
        assert!(e("1.2.3.4@eth").contains("unknown network type"));
        assert!(e("1.2.3.4@").contains("unknown network type"));
        assert!(e("1.2.3.4@tcp99999").contains("0..=65535"));
        assert!(e("1.2.3.4@tcp-1").contains("0..=65535"));
        assert!(e("1.2.3@tcp").contains("IPv4"));
        assert!(e("x@lo").contains("decimal"));
        assert!(e("@lo").contains("decimal"));
    }

    #[test]
    fn orders_by_net_then_address() {
        let a: Nid = "10.0.0.9@tcp".parse().unwrap();
        let b: Nid = "10.0.0.10@tcp".parse().unwrap();
        let c: Nid = "10.0.0.1@tcp1".parse().unwrap();
        assert!(a < b && b < c);
    }

    proptest! {
        #[test]
        fn display_parse_round_trip(kind in 0u8..3, num in any::<u16>(), addr in any::<u32>()) {
            let kind = [NetType::Lo, NetType::Tcp, NetType::O2ib][kind as usize];
            let nid = Nid { net: Net::new(kind, num), addr };
            prop_assert_eq!(nid.to_string().parse::<Nid>().unwrap(), nid);
            prop_assert_eq!(Nid::from_u64(nid.to_u64()), Some(nid));
        }

        #[test]
        fn arbitrary_text_never_panics(s in "\\PC{0,40}") {
            let _ = s.parse::<Nid>();
        }

        #[test]
        fn nidlike_text_round_trips_or_errors(a in 0u16..400, b in 0u16..300, net in "(tcp|o2ib|lo|eth)[0-9]{0,6}") {
            let s = format!("{a}.{b}.0.1@{net}");
            if let Ok(nid) = s.parse::<Nid>() {
                prop_assert_eq!(nid.to_string().parse::<Nid>().unwrap(), nid);
            }
        }
    }
}
