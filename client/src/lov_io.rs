//! lov I/O: a striped file's data path. A range is split with
//! [`Stripes::split`] into per-object pieces of at most [`MAX_BRW`], and
//! the pieces go to their OSTs in parallel (bounded in flight); sizes come
//! from the objects (a glimpse), truncates set every object's size.
//!
//! A file this open created (its objects empty, [`StripedFile::created`])
//! also keeps what the replies to its writes said of each object (size,
//! allocation, mtime): [`StripedFile::written`] is then what a glimpse
//! would answer if nobody else wrote, and the close sends it without
//! glimpsing (the MDT keeps it as exact only if nobody else had the file
//! open for writing). A failed write, a truncate, a punch or a utimes
//! through it ends that.
//!
//! Owns: [`StripedFile`]. Must not: cache data, or sizes other than those
//! its own writes were answered.

use std::sync::Arc;

use parking_lot::Mutex;
use ptlrpc::wire::OstBrwReply;
use ptlrpc::wire::mds::Layout;
use ptlrpc::wire::ost::ALLOCATED_UNKNOWN;
use tokio::task::JoinSet;

use crate::error::{ClientError, Result};
use crate::lov::Stripes;
use crate::osc::{MAX_BRW, Osc};

/// BRWs one call keeps in flight at most.
pub const MAX_IN_FLIGHT: usize = 16;

/// A file's objects: the shape and, per stripe, its OST client and object id.
#[derive(Debug, Clone)]
pub struct StripedFile {
    stripes: Stripes,
    objects: Vec<(Arc<Osc>, ptlrpc::wire::OstId)>,
    /// What the writes through this file (and its clones) were answered.
    seen: Arc<Mutex<Seen>>,
}

/// Per object, what the latest replies to writes said.
#[derive(Debug, Default)]
struct Seen {
    /// The objects were empty when this file was opened (its open created
    /// them) and every write since was answered.
    fresh: bool,
    /// (size, allocated, mtime_ns) per object, the largest answered.
    objects: Vec<(u64, u64, u64)>,
}

/// What a glimpse of every object tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Glimpse {
    /// The file's size.
    pub size: u64,
    /// The latest object modification, ns since the epoch.
    pub mtime_ns: u64,
    /// Bytes allocated on the OSTs.
    pub allocated: u64,
}

/// One BRW-sized piece of a request.
#[derive(Debug, Clone, Copy)]
struct Piece {
    stripe: u32,
    obj_off: u64,
    /// Offset within the caller's buffer.
    buf_off: usize,
    len: usize,
}

impl StripedFile {
    /// The striped file `layout` describes; `osc` finds each OST's client.
    pub fn new(layout: &Layout, osc: impl Fn(u32) -> Option<Arc<Osc>>) -> Result<StripedFile> {
        let count = u32::try_from(layout.objects.len()).map_err(|_| ClientError::Invalid("too many stripes".into()))?;
        let stripes = Stripes::new(u64::from(layout.stripe_size), count)?;
        let objects = layout
            .objects
            .iter()
            .map(|o| {
                osc(o.ost)
                    .map(|c| (c, o.id))
                    .ok_or_else(|| ClientError::Config(format!("no OST {} in the config", o.ost)))
            })
            .collect::<Result<Vec<_>>>()?;
        let seen = Seen { fresh: false, objects: vec![(0, 0, 0); objects.len()] };
        Ok(StripedFile { stripes, objects, seen: Arc::new(Mutex::new(seen)) })
    }

    /// The open that made this file created it: its objects are empty.
    pub fn created(&self) {
        self.seen.lock().fresh = true;
    }

    /// What a glimpse would answer if only writes through this file changed
    /// the objects since their creation: `None` unless
    /// [`StripedFile::created`] and nothing ended it since.
    pub fn written(&self) -> Option<Glimpse> {
        let s = self.seen.lock();
        if !s.fresh {
            return None;
        }
        let sizes: Vec<u64> = s.objects.iter().map(|o| o.0).collect();
        let allocated = s.objects.iter().fold(0u64, |a, o| a.saturating_add(o.1));
        let mtime_ns = s.objects.iter().map(|o| o.2).max().unwrap_or(0);
        Some(Glimpse { size: self.stripes.file_size(&sizes), mtime_ns, allocated })
    }

    /// Something other than an answered write changed (or may have
    /// changed) the objects.
    fn forget_written(&self) {
        self.seen.lock().fresh = false;
    }

    /// A write to stripe `i` was answered `r`.
    fn saw(&self, i: u32, r: &OstBrwReply) {
        let mut s = self.seen.lock();
        if r.allocated == ALLOCATED_UNKNOWN {
            s.fresh = false;
            return;
        }
        if let Some(o) = s.objects.get_mut(i as usize) {
            *o = (o.0.max(r.size), o.1.max(r.allocated), o.2.max(r.mtime_ns));
        }
    }

    /// The shape.
    pub fn stripes(&self) -> Stripes {
        self.stripes
    }

    fn pieces(&self, off: u64, len: usize) -> Vec<Piece> {
        let mut out = Vec::new();
        for e in self.stripes.split(off, len as u64) {
            let mut done = 0;
            while done < e.len {
                let n = (e.len - done).min(MAX_BRW);
                out.push(Piece {
                    stripe: e.stripe,
                    obj_off: e.obj_off + done,
                    buf_off: (e.file_off + done - off) as usize,
                    len: n as usize,
                });
                done += n;
            }
        }
        out
    }

    fn object(&self, stripe: u32) -> (Arc<Osc>, ptlrpc::wire::OstId) {
        let (c, id) = &self.objects[stripe as usize];
        (Arc::clone(c), *id)
    }

    /// Writes `data` at file offset `off`; all of it or an error.
    pub async fn write(&self, off: u64, data: &[u8]) -> Result<usize> {
        let r = self.write_pieces(off, data).await;
        if r.is_err() {
            // What landed of it is not known.
            self.forget_written();
        }
        r
    }

    async fn write_pieces(&self, off: u64, data: &[u8]) -> Result<usize> {
        let pieces = self.pieces(off, data.len());
        if let [p] = pieces.as_slice() {
            // One object: written from the caller's task (sent from its
            // thread when it polls), no task of its own.
            self.piece_write(p, data)?.await?;
            return Ok(data.len());
        }
        let mut set = JoinSet::new();
        for p in &pieces {
            if set.len() >= MAX_IN_FLIGHT {
                join_one(&mut set).await?;
            }
            set.spawn(crate::jobid::carry(self.piece_write(p, data)?));
        }
        while !set.is_empty() {
            join_one(&mut set).await?;
        }
        Ok(data.len())
    }

    /// The write of piece `p` of `data`: its pages copied now, sent when
    /// the future is polled, its reply entered in what this file saw.
    fn piece_write(&self, p: &Piece, data: &[u8]) -> Result<impl Future<Output = Result<()>> + Send + 'static> {
        let (osc, oid) = self.object(p.stripe);
        let buf = osc.pages(&data[p.buf_off..p.buf_off + p.len])?;
        let (me, stripe, obj_off) = (self.clone(), p.stripe, p.obj_off);
        Ok(async move {
            let r = osc.write(oid, obj_off, buf).await?;
            me.saw(stripe, &r);
            Ok(())
        })
    }

    /// Reads into `buf` from file offset `off`, up to `size` (the file's
    /// size); returns the bytes read.
    pub async fn read(&self, off: u64, buf: &mut [u8], size: u64) -> Result<usize> {
        if off >= size {
            return Ok(0);
        }
        let len = (size - off).min(buf.len() as u64) as usize;
        let mut set: JoinSet<Result<(Piece, Vec<u8>)>> = JoinSet::new();
        let fill = |r: Option<Joined<(Piece, Vec<u8>)>>, buf: &mut [u8]| -> Result<()> {
            if let Some(r) = r {
                let (p, data) = r.map_err(|e| ClientError::Local(format!("read task: {e}")))??;
                let n = data.len().min(p.len);
                buf[p.buf_off..p.buf_off + n].copy_from_slice(&data[..n]);
            }
            Ok(())
        };
        for p in self.pieces(off, len) {
            if set.len() >= MAX_IN_FLIGHT {
                fill(set.join_next().await, buf)?;
            }
            let (osc, oid) = self.object(p.stripe);
            let n = u32::try_from(p.len).map_err(|_| ClientError::Invalid("piece over 4 GiB".into()))?;
            set.spawn(crate::jobid::carry(async move { osc.read(oid, p.obj_off, n).await.map(|d| (p, d)) }));
        }
        while !set.is_empty() {
            fill(set.join_next().await, buf)?;
        }
        Ok(len)
    }

    /// The file's size from its objects' sizes (asked in parallel).
    pub async fn size(&self) -> Result<u64> {
        Ok(self.glimpse().await?.size)
    }

    /// Size, latest data modification and space used, from every object
    /// (asked in parallel).
    pub async fn glimpse(&self) -> Result<Glimpse> {
        let mut set = JoinSet::new();
        for (i, (osc, oid)) in self.objects.iter().enumerate() {
            let (osc, oid) = (Arc::clone(osc), *oid);
            set.spawn(crate::jobid::carry(async move { osc.getattr(oid).await.map(|a| (i, a)) }));
        }
        let mut sizes = vec![0; self.objects.len()];
        let (mut mtime_ns, mut allocated) = (0, 0u64);
        while let Some(r) = set.join_next().await {
            let (i, a) = r.map_err(|e| ClientError::Local(format!("getattr task: {e}")))??;
            sizes[i] = a.size;
            mtime_ns = a.mtime_ns.max(mtime_ns);
            allocated = allocated.saturating_add(a.allocated);
        }
        Ok(Glimpse { size: self.stripes.file_size(&sizes), mtime_ns, allocated })
    }

    /// Sets every object's modification time (what stat reports as the
    /// file's mtime after a utimes).
    pub async fn set_mtime(&self, mtime_ns: u64) -> Result<()> {
        self.forget_written();
        let mut set = JoinSet::new();
        for (osc, oid) in &self.objects {
            let (osc, oid) = (Arc::clone(osc), *oid);
            set.spawn(crate::jobid::carry(async move { osc.set_mtime(oid, mtime_ns).await.map(drop) }));
        }
        while !set.is_empty() {
            join_one(&mut set).await?;
        }
        Ok(())
    }

    /// Deallocates the file range `[off, off + len)` (it reads as zeros;
    /// the size is unchanged). A contiguous file range is one contiguous
    /// range on each object: the bytes of the object below `off + len`
    /// less those below `off`.
    pub async fn punch_hole(&self, off: u64, len: u64) -> Result<()> {
        self.forget_written();
        let end = off.saturating_add(len);
        let mut set = JoinSet::new();
        for (i, (osc, oid)) in self.objects.iter().enumerate() {
            let from = self.stripes.object_size(i as u32, off);
            let to = self.stripes.object_size(i as u32, end);
            if to > from {
                let (osc, oid) = (Arc::clone(osc), *oid);
                set.spawn(crate::jobid::carry(async move { osc.punch_hole(oid, from, to - from).await.map(drop) }));
            }
        }
        while !set.is_empty() {
            join_one(&mut set).await?;
        }
        Ok(())
    }

    /// Sets the file's size: each object to its share.
    pub async fn truncate(&self, size: u64) -> Result<()> {
        self.forget_written();
        let mut set = JoinSet::new();
        for (i, (osc, oid)) in self.objects.iter().enumerate() {
            let (osc, oid) = (Arc::clone(osc), *oid);
            let s = self.stripes.object_size(i as u32, size);
            set.spawn(crate::jobid::carry(async move { osc.set_size(oid, s).await.map(drop) }));
        }
        while !set.is_empty() {
            join_one(&mut set).await?;
        }
        Ok(())
    }

    /// SYNC on every OST holding an object (each waits for its commit).
    pub async fn sync(&self) -> Result<()> {
        let mut seen = std::collections::BTreeSet::new();
        let mut set = JoinSet::new();
        for (osc, _) in &self.objects {
            if seen.insert(osc.index()) {
                let osc = Arc::clone(osc);
                set.spawn(crate::jobid::carry(async move { osc.sync().await.map(drop) }));
            }
        }
        while !set.is_empty() {
            join_one(&mut set).await?;
        }
        Ok(())
    }
}

/// What `JoinSet::join_next` yields for a task returning `Result<T>`.
type Joined<T> = std::result::Result<Result<T>, tokio::task::JoinError>;

async fn join_one(set: &mut JoinSet<Result<()>>) -> Result<()> {
    match set.join_next().await {
        Some(r) => r.map_err(|e| ClientError::Local(format!("I/O task: {e}")))?,
        None => Ok(()),
    }
}
