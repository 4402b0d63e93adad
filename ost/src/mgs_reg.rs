//! Registering the OSS's targets with the MGS.
//!
//! Owns: [`register_all`] — one `MGS_TARGET_REG` per target (file system
//! name, index, this node's NIDs, the target's boot epoch as its instance,
//! so the MGS announces a restart to the MDTs and clients), retried with a
//! bounded backoff until the MGS answers each one, and [`fsname_of`] (the
//! file system name in a `fsname-OSTxxxx` target name).
//!
//! Must not: give up while the MGS is unreachable (an OSS started before
//! its MGS registers once the MGS comes up), or retry a registration the
//! MGS refused (a refusal is a configuration error: returned).

use std::sync::Arc;
use std::time::Duration;

use lnet::{Lnet, Nid};
use ptlrpc::driver::{Client, ClientConfig, RpcError};
use ptlrpc::fault::FaultInjector;
use ptlrpc::portals::MGS_REQUEST_PORTAL;
use ptlrpc::wire::Op;
use ptlrpc::wire::mgs::{TargetKind, TargetRegReply, TargetRegReq};

/// One attempt's bound (the driver resends within it).
const ATTEMPT_BOUND: Duration = Duration::from_secs(10);
/// The longest pause between attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// What registration can fail with.
#[derive(Debug, thiserror::Error)]
pub enum RegError {
    /// The target's name has no `fsname-OST` prefix.
    #[error("target {0}: name is not fsname-OSTxxxx")]
    Name(String),
    /// The MGS refused the registration.
    #[error("MGS refused {target}: errno {errno}")]
    Refused {
        /// The target.
        target: String,
        /// Its answer.
        errno: i32,
    },
}

/// The file system name of target `name` (`sheen-OST0001` -> `sheen`).
pub fn fsname_of(name: &str) -> Option<&str> {
    let (fs, rest) = name.rsplit_once("-OST")?;
    (!fs.is_empty() && !rest.is_empty()).then_some(fs)
}

/// One target to register.
#[derive(Debug, Clone)]
pub struct RegTarget {
    /// `fsname-OSTxxxx`.
    pub name: String,
    /// Its index.
    pub index: u32,
    /// Its boot epoch.
    pub instance: u32,
}

/// Registers every target with the MGS at `mgs`, retrying each until the
/// MGS answers. Returns the log records the MGS wrote.
pub async fn register_all(lnet: &Lnet, mgs: Nid, targets: &[RegTarget]) -> Result<Vec<TargetRegReply>, RegError> {
    let client =
        Client::new(lnet, mgs, MGS_REQUEST_PORTAL, ClientConfig::default(), Arc::new(FaultInjector::default()));
    // Peers reach this node on its real networks; 0@lo would mean "myself".
    let nids: Vec<String> =
        lnet.nids().iter().filter(|n| n.net.kind != lnet::NetType::Lo).map(ToString::to_string).collect();
    let mut out = Vec::with_capacity(targets.len());
    for t in targets {
        let fsname = fsname_of(&t.name).ok_or_else(|| RegError::Name(t.name.clone()))?;
        let req = TargetRegReq {
            fsname: fsname.to_string(),
            kind: TargetKind::Ost,
            index: t.index,
            nids: nids.clone(),
            failover: vec![],
            instance: t.instance,
        };
        let mut backoff = Duration::from_millis(100);
        loop {
            match tokio::time::timeout(ATTEMPT_BOUND, client.start(Op::MgsTargetReg, &req)).await {
                Ok(Ok(reply)) => match reply.body::<TargetRegReply>() {
                    Ok(r) => {
                        tracing::info!(target_name = %t.name, %mgs, record = r.record, added = r.added,
                            "registered with the MGS");
                        out.push(r);
                        break;
                    }
                    Err(e) => tracing::warn!(target_name = %t.name, error = %e, "bad MGS reply; retrying"),
                },
                Ok(Err(RpcError::Server { errno, .. })) => {
                    return Err(RegError::Refused { target: t.name.clone(), errno });
                }
                Ok(Err(e)) => tracing::warn!(target_name = %t.name, %mgs, error = %e, "MGS not answering; retrying"),
                Err(_) => tracing::warn!(target_name = %t.name, %mgs, "MGS not answering; retrying"),
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fsname_comes_from_the_target_name() {
        assert_eq!(fsname_of("sheen-OST0001"), Some("sheen"));
        assert_eq!(fsname_of("my-fs-OST000a"), Some("my-fs"));
        assert_eq!(fsname_of("OST0001"), None);
        assert_eq!(fsname_of("sheen-OST"), None);
    }
}
