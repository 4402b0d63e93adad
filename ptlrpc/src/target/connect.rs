//! CONNECT on the target: finding or creating the client's export,
//! negotiating connect data, and telling the client how to go on
//! (new, reconnect, recovering, delayed).
//!
//! Owns: [`negotiate`] and `Target::handle_connect`.
//!
//! Must not: replay or execute anything; a CONNECT only (re)binds an
//! export to a connection.

use super::{ClientRecord, Export, ExportStage, PeerId, Reply, Target, TargetService, TargetStore};
use crate::time::Time;
use crate::wire::{ConnectData, Frame, Header, MsgFlags, MsgKind, Transno, connect_flags as cf, errno};

/// The subset of `client`'s request the target honours, given what it
/// supports (`server`): flags are intersected, limits take the smaller
/// value, fields whose flag was refused are zero.
pub fn negotiate(client: &ConnectData, server: &ConnectData) -> ConnectData {
    let flags = client.flags & server.flags;
    let on = |f: u64| flags & f != 0;
    let min_nonzero = |a: u32, b: u32| if a == 0 { b } else { a.min(b) };
    ConnectData {
        flags,
        version: if on(cf::VERSION) { server.version } else { 0 },
        brw_size: if on(cf::BRW_SIZE) { min_nonzero(client.brw_size, server.brw_size) } else { 0 },
        grant: if on(cf::GRANT) { client.grant.min(server.grant) } else { 0 },
        cksum_types: if on(cf::CKSUM) { client.cksum_types & server.cksum_types } else { 0 },
        max_easize: if on(cf::MAX_EASIZE) { server.max_easize } else { 0 },
        max_bytes: if on(cf::MAXBYTES) { server.max_bytes } else { 0 },
        transno: 0,
        client_committed: 0,
        instance: 0,
        max_mod_rpcs: if on(cf::MULTIMODRPCS) { client.max_mod_rpcs.clamp(1, server.max_mod_rpcs.max(1)) } else { 1 },
        client_uuid: client.client_uuid.clone(),
        target: client.target.clone(),
    }
}

impl<S: TargetService> Target<S> {
    pub(super) fn handle_connect(&mut self, now: Time, from: PeerId, frame: &Frame<'_>) {
        let h = *frame.header();
        let data = match frame.deserialize::<ConnectData>() {
            Ok(d) => d,
            Err(_) => {
                self.stats.malformed += 1;
                self.reply_error(from, &h, errno::EPROTO);
                return;
            }
        };
        let uuid = data.client_uuid.clone();
        if uuid.is_empty() {
            self.reply_error(from, &h, errno::EINVAL);
            return;
        }
        let recovering = self.recovery.is_some();
        let mut fresh = false;
        let (flags, client_committed) = match self.exports.get_mut(&uuid) {
            Some(e) if e.connecting => {
                self.stats.dropped_connecting += 1;
                return;
            }
            Some(e) if h.conn_cnt < e.conn_cnt => {
                self.stats.dropped_stale += 1;
                return;
            }
            Some(e) => match e.stage {
                ExportStage::Recovering { connected, .. } => {
                    let window_open = self.recovery.as_ref().is_some_and(|r| !r.window_closed());
                    if !connected && !window_open {
                        // Too late for primary recovery: come back for
                        // delayed recovery once it is over.
                        self.reply_error(from, &h, errno::EBUSY);
                        return;
                    }
                    e.stage = ExportStage::Recovering { connected: true, done: false };
                    e.held_ping = None;
                    let own = e.boot_transno.unwrap_or(Transno(0));
                    if let Some(r) = self.recovery.as_mut().filter(|_| !connected) {
                        r.client_connected(now);
                    }
                    (MsgFlags::CONNECT_RECOVERING, own)
                }
                ExportStage::Retained { .. } | ExportStage::Delayed if recovering => {
                    self.reply_error(from, &h, errno::EBUSY);
                    return;
                }
                ExportStage::Retained { .. } | ExportStage::Delayed => {
                    e.stage = ExportStage::Delayed;
                    let (handle, own) = (e.handle, e.boot_transno.unwrap_or(Transno(0)));
                    let _ = self.evictor.add_export(now, handle);
                    (MsgFlags::CONNECT_DELAYED, own)
                }
                ExportStage::Normal => {
                    // A first CONNECT on a newer connection: a new process
                    // of this client (an MDT's imports keep their UUID
                    // across its restarts). Its xids start over, so the old
                    // process's replies and acknowledgements must not
                    // answer for them.
                    if h.flags.contains(MsgFlags::CONNECT_INITIAL) && h.conn_cnt > e.conn_cnt {
                        e.done.clear();
                        fresh = true;
                    }
                    let flags = if h.handle == e.handle { MsgFlags::CONNECT_RECONNECT } else { MsgFlags::EMPTY };
                    let handle = e.handle;
                    let _ = self.evictor.add_export(now, handle);
                    (flags, Transno(0))
                }
            },
            None => {
                if recovering || self.exports.len() >= self.cfg.max_exports {
                    self.reply_error(from, &h, errno::EBUSY);
                    return;
                }
                let handle = self.new_handle();
                self.exports.insert(Export::new(&uuid, handle, from, ExportStage::Normal));
                let rec = ClientRecord { uuid: uuid.clone(), ..ClientRecord::default() };
                self.records.insert(uuid.clone(), rec.clone());
                // A new client's record is written synchronously, so a
                // restart knows to wait for it.
                self.store.put_client(rec);
                self.store.commit();
                let _ = self.evictor.add_export(now, handle);
                (MsgFlags::EMPTY, Transno(0))
            }
        };
        if fresh {
            let rec = ClientRecord { uuid: uuid.clone(), ..ClientRecord::default() };
            self.records.insert(uuid.clone(), rec.clone());
            self.store.put_client(rec);
            self.store.commit();
        }
        let mut reply_data = negotiate(&data, &self.cfg.supported);
        self.service.connected(&self.store, &uuid, &data, &mut reply_data);
        reply_data.transno = self.store.committed().0;
        reply_data.client_committed = client_committed.0;
        reply_data.instance = self.epoch;
        let Some(e) = self.exports.get_mut(&uuid) else { return };
        e.conn_cnt = h.conn_cnt;
        e.peer = from;
        e.data = reply_data.clone();
        e.connecting = true;
        let mut rh = Header::new(MsgKind::Reply, h.opcode, h.xid);
        rh.flags = flags;
        rh.conn_cnt = h.conn_cnt;
        rh.handle = e.handle;
        let handle = e.handle;
        rh.last_committed = self.exports.committed_for(handle, self.store.committed());
        let body = match rkyv::to_bytes::<rkyv::rancor::Error>(&reply_data) {
            Ok(b) => b.to_vec(),
            Err(e) => panic!("archiving connect data: {e}"),
        };
        self.outbox.push_back((Reply { to: from, header: rh, body }, Some(uuid)));
    }
}
