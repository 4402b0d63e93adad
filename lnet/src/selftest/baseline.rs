//! The raw TCP baseline: the selftest's traffic pattern over plain sockets.
//!
//! Owns a listener in the server process and the client's connections, one
//! per in-flight slot, each doing synchronous request/response with the
//! same 64-byte messages as the LNet path: ping writes a request and reads
//! a reply; BRW WRITE writes the request and `size` bytes, then reads the
//! reply; BRW READ writes the request, then reads `size` bytes and the
//! reply. Sockets use TCP_NODELAY and every buffer is reused.

use std::io::IoSlice;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use anyhow::{Context, anyhow, bail};
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::proto::{self, FLAG_CHECK, MAX_BULK, MSG_SIZE, Op, Reply, Request};
use super::{Phases, RunSpec, Sample, WAIT_MAX, phases};

/// Writes every byte of `bufs` with vectored writes.
async fn write_all_v<W: AsyncWrite + Unpin>(w: &mut W, bufs: &mut [IoSlice<'_>]) -> std::io::Result<()> {
    let mut bufs = bufs;
    while !bufs.is_empty() {
        let n = w.write_vectored(bufs).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut bufs, n);
    }
    Ok(())
}

/// Binds the raw listener of a server process and serves it in the background.
pub async fn serve(addr: Ipv4Addr, port: u16) -> anyhow::Result<()> {
    let l = TcpListener::bind(SocketAddrV4::new(addr, port))
        .await
        .with_context(|| format!("binding the raw TCP baseline port {addr}:{port}"))?;
    tokio::spawn(async move {
        loop {
            match l.accept().await {
                Ok((s, from)) => {
                    tokio::spawn(async move {
                        if let Err(e) = serve_conn(s).await {
                            tracing::debug!(%from, err = %e, "raw connection ended");
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!(err = %e, "raw accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
        }
    });
    Ok(())
}

async fn serve_conn(mut s: TcpStream) -> anyhow::Result<()> {
    s.set_nodelay(true)?;
    let mut data = Vec::new();
    let mut b = [0u8; MSG_SIZE];
    loop {
        match s.read_exact(&mut b).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e.into()),
        }
        let t_in = proto::wall_ns();
        let req = Request::decode(&b).map_err(|why| anyhow!("bad raw request: {why}"))?;
        let size = req.size as usize;
        if data.len() < size {
            data.resize(size, 0);
        }
        match req.op {
            Op::Ping => s.write_all(&Reply::to(&req, 0).stamped(t_in).encode()).await?,
            Op::BrwWrite => {
                s.read_exact(&mut data[..size]).await?;
                let ok = !req.check() || proto::verify(&data[..size], 0, req.seed);
                let st = if ok { 0 } else { proto::STATUS_BAD_DATA };
                s.write_all(&Reply::to(&req, st).stamped(t_in).encode()).await?;
            }
            Op::BrwRead => {
                if req.check() {
                    proto::fill(&mut data[..size], 0, req.seed);
                }
                let rep = Reply::to(&req, 0).stamped(t_in).encode();
                write_all_v(&mut s, &mut [IoSlice::new(&data[..size]), IoSlice::new(&rep)]).await?;
            }
        }
    }
}

async fn raw_round(s: &mut TcpStream, data: &mut [u8], req: &Request) -> anyhow::Result<Phases> {
    let t0 = proto::wall_ns();
    let hdr = req.encode();
    let size = req.size as usize;
    match req.op {
        Op::Ping => s.write_all(&hdr).await?,
        Op::BrwWrite => {
            if req.check() {
                proto::fill(&mut data[..size], 0, req.seed);
            }
            write_all_v(s, &mut [IoSlice::new(&hdr), IoSlice::new(&data[..size])]).await?;
        }
        Op::BrwRead => s.write_all(&hdr).await?,
    }
    let t_put = proto::wall_ns();
    if req.op == Op::BrwRead {
        s.read_exact(&mut data[..size]).await?;
        if req.check() && !proto::verify(&data[..size], 0, req.seed) {
            bail!("raw bulk read data does not match the pattern");
        }
    }
    let mut b = [0u8; MSG_SIZE];
    s.read_exact(&mut b).await?;
    let rep = Reply::decode(&b).map_err(|why| anyhow!("bad raw reply: {why}"))?;
    if rep.xid != req.xid {
        bail!("raw reply for xid {:#x}, expected {:#x}", rep.xid, req.xid);
    }
    if rep.status != 0 {
        bail!("raw server failed the request: {} ({})", proto::status_name(rep.status), rep.status);
    }
    Ok(phases(t0, t_put, &rep, proto::wall_ns()))
}

async fn raw_slot(mut s: TcpStream, id: u64, spec: RunSpec, until: Instant) -> anyhow::Result<Sample> {
    let mut data = vec![0u8; spec.size];
    let mut out = Sample::default();
    let mut seq = 0u64;
    while Instant::now() < until {
        seq += 1;
        let xid = (id << 40) | seq;
        let req = Request {
            op: spec.op,
            xid,
            bulk_bits: 0,
            reply_portal: 0,
            bulk_portal: 0,
            size: spec.size as u32,
            flags: if spec.check { FLAG_CHECK } else { 0 },
            seed: xid,
        };
        let t = Instant::now();
        let ph = tokio::time::timeout(WAIT_MAX, raw_round(&mut s, &mut data, &req))
            .await
            .map_err(|_| anyhow!("raw TCP peer did not answer within {WAIT_MAX:?}"))??;
        out.lat_ns.push(t.elapsed().as_nanos() as u64);
        out.phases.push(ph);
        out.ops += 1;
        if spec.op.is_bulk() {
            out.bytes += spec.size as u64;
        }
    }
    Ok(out)
}

/// Runs one test over raw TCP against the baseline listener at `addr`,
/// from local address `from`.
pub async fn run(addr: SocketAddr, from: Ipv4Addr, spec: &RunSpec) -> anyhow::Result<Sample> {
    if spec.size > MAX_BULK as usize {
        bail!("size {} is above {MAX_BULK}", spec.size);
    }
    let mut conns = Vec::with_capacity(spec.concurrency);
    for _ in 0..spec.concurrency {
        let sock = tokio::net::TcpSocket::new_v4()?;
        sock.bind(SocketAddr::V4(SocketAddrV4::new(from, 0))).with_context(|| format!("binding {from}"))?;
        let s = tokio::time::timeout(WAIT_MAX, sock.connect(addr))
            .await
            .map_err(|_| anyhow!("connecting to the raw baseline at {addr} timed out"))?
            .with_context(|| format!("connecting to the raw baseline at {addr}"))?;
        s.set_nodelay(true)?;
        conns.push(s);
    }
    let start = Instant::now();
    let until = start + spec.duration;
    let mut set = JoinSet::new();
    for (i, s) in conns.into_iter().enumerate() {
        set.spawn(raw_slot(s, i as u64 + 1, spec.clone(), until));
    }
    let mut total = Sample::default();
    while let Some(r) = set.join_next().await {
        match r {
            Ok(Ok(s)) => total.merge(s),
            Ok(Err(e)) => {
                set.abort_all();
                return Err(e.context("raw TCP baseline"));
            }
            Err(e) => {
                set.abort_all();
                bail!("a raw baseline slot died: {e}");
            }
        }
    }
    total.elapsed = start.elapsed();
    Ok(total)
}
