//! The MGS's request handler (`MGS_*` opcodes on the MGS portal).
//!
//! `MGS_CONFIG_READ` long-polls: it holds a worker up to the wait asked
//! for (capped by [`crate::mgs::MAX_WAIT`]), so the MGS service runs with
//! enough workers for its followers.
//!
//! Must not: change anything except through [`Mgs`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use ptlrpc::driver::{Errno, Handler, Reply, ReqCtx, Request};
use ptlrpc::wire::mgs::{ConfigReadReq, MgsAdminReq, TargetRegReq};
use ptlrpc::wire::{ConnectData, Op};

use super::metrics::MdtMetrics;
use crate::mgs::Mgs;

/// The MGS handler.
#[derive(Debug)]
pub struct MgsHandler {
    mgs: Arc<Mgs>,
    metrics: Arc<MdtMetrics>,
}

impl MgsHandler {
    /// A handler over `mgs`.
    pub fn new(mgs: Arc<Mgs>, metrics: Arc<MdtMetrics>) -> MgsHandler {
        MgsHandler { mgs, metrics }
    }

    fn dispatch(&self, req: &Request, ctx: &ReqCtx<'_>) -> Result<Reply, Errno> {
        match req.op() {
            Op::ObdPing | Op::MgsDisconnect => Ok(Reply::empty()),
            Op::MgsConnect => {
                let cd: ConnectData = req.body()?;
                Reply::new(&ConnectData { client_uuid: cd.client_uuid, version: cd.version, ..ConnectData::default() })
            }
            Op::MgsTargetReg => {
                let r: TargetRegReq = req.body()?;
                Reply::new(&self.mgs.register(&r)?)
            }
            Op::MgsConfigRead => {
                let r: ConfigReadReq = req.body()?;
                // The long poll waits without holding a running slot of
                // the service (see ptlrpc's `ReqCtx::blocking`).
                let wait = Duration::from_millis(u64::from(r.wait_ms));
                Reply::new(&ctx.blocking(|| self.mgs.read(&r.fsname, r.from, r.max, wait)))
            }
            Op::MgsSetInfo => {
                let r: MgsAdminReq = req.body()?;
                Reply::new(&self.mgs.admin(&r)?)
            }
            _ => Err(Errno::EOPNOTSUPP),
        }
    }
}

fn name(op: Op) -> &'static str {
    match op {
        Op::MgsTargetReg => "target_reg",
        Op::MgsConfigRead => "config_read",
        Op::MgsSetInfo => "admin",
        Op::MgsConnect => "connect",
        Op::ObdPing => "ping",
        _ => "other",
    }
}

impl Handler for MgsHandler {
    fn handle(&self, req: &Request, ctx: &mut ReqCtx<'_>) -> Result<Reply, Errno> {
        let start = Instant::now();
        let res = self.dispatch(req, ctx);
        self.metrics.observe("mgs", name(req.op()), start.elapsed(), res.is_err());
        res
    }
}
