//! `reply_drop` on a target under the simulator, with the real import and
//! target: clients whose request deadlines exceed the eviction timeout
//! (as after a stalled process fed a 20 s round trip into the network
//! latency estimate) lose a third of their replies and must not be
//! evicted: the pinger keeps pinging while a ping reply is missing, and a
//! reconnect waits for its CONNECT reply the connect timeout, not the
//! service estimate. The fault is armed 3 s in every 40 s, as sheen-chaos
//! arms it (a target dropping a third of its replies for good evicts, in
//! Lustre too: three CONNECT replies lost in a row outlast 6 pings). (The soak found both: a live client evicted under
//! `reply_drop` on the MDS.)

use std::time::Duration;

use ptlrpc::Time;
use ptlrpc::at::AtSettings;
use ptlrpc::pinger::PingSettings;
use ptlrpc::sim::{NodeId, World, run_seeds};
use ptlrpc::target::{TargetConfig, TargetEvent};

use crate::kv::{Client, Server, SimNode, check_store, target_config};
use crate::msg;

fn reply_drop_run(seed: u64, trace: bool) -> Result<(), String> {
    let ping = PingSettings { obd_timeout: Duration::from_secs(10), ..PingSettings::default() };
    let at = AtSettings { at_min: Duration::from_secs(20), ..AtSettings::default() };
    let mut w: World<SimNode> = World::new(seed);
    w.set_trace(trace);
    w.set_message_formatter(msg::describe);
    let now = w.now();
    let cfg = TargetConfig { ping, ..target_config() };
    let srv = Server::with(now, w.rng(), cfg, 0.0);
    let server = w.add_node("mds0", SimNode::Server(Box::new(srv)));
    let mut clients: Vec<NodeId> = Vec::new();
    for i in 0..2 {
        let c = Client::with(now, i, vec![server], 15, 2, w.rng(), |cfg| {
            cfg.ping = ping;
            cfg.at = at;
            // The mount's reconnect backoffs (client::MountOptions).
            cfg.backoff_min = Duration::from_millis(100);
            cfg.backoff_max = Duration::from_secs(1);
        });
        clients.push(w.add_node(&format!("c{i}"), SimNode::Client(Box::new(c))));
    }
    for k in 0..15u64 {
        let start = Time::from_secs(10 + 40 * k);
        w.run_until(start);
        w.with_node(server, |n, _| n.server_mut().reply_drop = 1.0 / 3.0);
        w.run_until(start + Duration::from_secs(3));
        w.with_node(server, |n, _| n.server_mut().reply_drop = 0.0);
    }
    w.run_until(Time::from_secs(1500));
    let s = w.node(server).server();
    if s.dropped == 0 {
        return Err("no reply was dropped".into());
    }
    let evicted: Vec<_> = s.events.iter().filter(|(_, e)| matches!(e, TargetEvent::Evicted { .. })).collect();
    if !evicted.is_empty() {
        return Err(format!("live clients evicted under reply_drop: {evicted:?}"));
    }
    for &c in &clients {
        let c = w.node(c).client();
        if !c.lost.is_empty() || !c.failed.is_empty() || !c.errors.is_empty() {
            return Err(format!("{}: lost {:?} failed {:?} errors {:?}", c.uuid, c.lost, c.failed, c.errors));
        }
        if !c.idle() {
            return Err(format!("{} did not finish its workload ({} left)", c.uuid, c.ops_left));
        }
    }
    let all: Vec<&Client> = clients.iter().map(|&c| w.node(c).client()).collect();
    check_store(w.node(server).server(), &all, false, true)
}

#[test]
fn reply_drop_does_not_evict_live_clients_300_seeds() {
    run_seeds("reply_drop_does_not_evict_live_clients_300_seeds", 300, reply_drop_run);
}
