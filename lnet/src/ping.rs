//! LNet ping (`lctl ping`): every node answers GETs on the reserved portal
//! with its list of NIDs, so any node can check that a peer is up and which
//! NIDs it has, without any service above LNet.
//!
//! Owns the ping buffer's format (magic, version, count, NIDs as u64 wire
//! NIDs, little endian), the responder MD attached at start-up, and
//! [`Lnet::ping`]. Uses only the public LNet API.

use std::time::Duration;

use tokio::time::Instant;

use crate::api::{Lnet, Target};
use crate::error::{LnetError, Result};
use crate::event::{EventKind, EventQueue};
use crate::md::{MdBuffer, MdOptions, MdSpec, Threshold};
use crate::nid::Nid;
use crate::portal::MatchSpec;

/// LNet's reserved portal: pings are answered here.
pub const PING_PORTAL: u32 = 0;
const MAGIC: u32 = 0x474e_5053; // "SPNG"
const VERSION: u32 = 1;
/// NIDs a ping reply can carry.
const MAX_NIDS: usize = 32;
const BUF_LEN: usize = 12 + 8 * MAX_NIDS;

/// What a ping learned.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct PingInfo {
    /// The peer's NIDs, as it lists them.
    pub nids: Vec<Nid>,
    /// Round trip, microseconds.
    pub rtt_us: u64,
}

fn encode(nids: &[Nid]) -> Vec<u8> {
    let nids = &nids[..nids.len().min(MAX_NIDS)];
    let mut b = Vec::with_capacity(BUF_LEN);
    b.extend_from_slice(&MAGIC.to_le_bytes());
    b.extend_from_slice(&VERSION.to_le_bytes());
    b.extend_from_slice(&(nids.len() as u32).to_le_bytes());
    for n in nids {
        b.extend_from_slice(&n.to_u64().to_le_bytes());
    }
    b
}

fn decode(b: &[u8], peer: Nid) -> Result<Vec<Nid>> {
    let bad = |why: &str| LnetError::Proto { peer: peer.to_string(), why: format!("ping reply: {why}") };
    let word = |o: usize| -> Option<u32> { Some(u32::from_le_bytes(b.get(o..o + 4)?.try_into().ok()?)) };
    if word(0) != Some(MAGIC) {
        return Err(bad("bad magic"));
    }
    if word(4) != Some(VERSION) {
        return Err(bad("unsupported version"));
    }
    let n = word(8).ok_or_else(|| bad("short"))? as usize;
    if n > MAX_NIDS {
        return Err(bad("too many NIDs"));
    }
    (0..n)
        .map(|i| {
            let o = 12 + 8 * i;
            let v = b.get(o..o + 8).and_then(|s| s.try_into().ok()).map(u64::from_le_bytes);
            v.and_then(Nid::from_u64).ok_or_else(|| bad("bad NID"))
        })
        .collect()
}

/// Attaches the responder: a persistent GET-only MD on the reserved portal.
pub(crate) fn serve(lnet: &Lnet) -> Result<()> {
    let buf = encode(&lnet.nids());
    lnet.attach_internal(
        PING_PORTAL,
        MatchSpec::any(),
        MdSpec::new(MdBuffer::Inline(buf), crate::event::EventHandler::None)
            .options(MdOptions::OP_GET | MdOptions::MANAGE_REMOTE)
            .threshold(Threshold::Infinite),
    )?;
    Ok(())
}

impl Lnet {
    /// Pings `nid`: its NID list and the round trip, or why it failed.
    pub async fn ping(&self, nid: Nid, timeout: Duration) -> Result<PingInfo> {
        let q = EventQueue::new();
        let md = self.bind(MdSpec::new(MdBuffer::Inline(vec![0; BUF_LEN]), q.clone()))?;
        let t0 = Instant::now();
        self.get(&md, Target::new(nid, PING_PORTAL, 0))?;
        let outcome = tokio::time::timeout(timeout, async {
            loop {
                let e = q.next().await;
                if e.status.is_err() || e.kind == EventKind::Reply {
                    return e;
                }
            }
        })
        .await;
        let e = match outcome {
            Ok(e) => e,
            Err(_) => {
                let _ = self.unlink(&md);
                return Err(LnetError::Timeout(nid));
            }
        };
        e.status.clone()?;
        let rtt_us = t0.elapsed().as_micros() as u64;
        let mut b = vec![0u8; e.mlength as usize];
        md.lock().read_at(0, &mut b);
        Ok(PingInfo { nids: decode(&b, nid)?, rtt_us })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffer_round_trips_and_rejects_garbage() {
        let nids: Vec<Nid> = vec![Nid::LO, "10.0.0.1@tcp".parse().unwrap(), "10.1.0.1@o2ib1".parse().unwrap()];
        assert_eq!(decode(&encode(&nids), Nid::LO).unwrap(), nids);
        assert!(decode(&[1, 2, 3], Nid::LO).is_err());
        let mut b = encode(&nids);
        b[8] = 200;
        assert!(decode(&b, Nid::LO).is_err());
        b[8] = 3;
        b.truncate(20);
        assert!(decode(&b, Nid::LO).is_err());
    }

    #[tokio::test]
    async fn pings_itself_and_fails_fast_on_a_missing_node() {
        let a = Lnet::start(crate::LnetConfig::default()).await.unwrap();
        let info = a.ping(Nid::LO, Duration::from_secs(5)).await.unwrap();
        assert_eq!(info.nids, vec![Nid::LO]);
        let missing: Nid = "4242@lo".parse().unwrap();
        assert!(a.ping(missing, Duration::from_secs(5)).await.is_err());
    }
}
