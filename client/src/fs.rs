//! The library API: a mounted file system ([`Sheen`]) with path and FID
//! operations, reading and writing into caller-owned buffers.
//!
//! Owns: mounting (config log from the MGS, one mdc, one osc per OST, the
//! MGC following the log into the target table, `crate::targets`),
//! path walking (one lookup per component, nothing cached), open files
//! ([`File`]: the MDT handle and the striped objects), and stat: a regular
//! file's size, space and mtime are the MDT's when it says they are exact
//! (size on MDT: the last writer closed cleanly and nobody has the file
//! open for writing), else the objects' (a glimpse). The close of a handle
//! opened for writing glimpses the objects and hands what it saw to the
//! MDT. An open from before the MDT evicted this client is lost (the MDT
//! closed it with the export): every later use of it — read, write,
//! fsync, close — fails with EIO ([`ClientError::LostOpen`]) and sends
//! nothing; the application opens the file again. Must not: cache
//! anything another client may change.

use std::collections::BTreeMap;
use std::sync::Arc;

use lnet::{Lnet, Nid};
use ptlrpc::wire::ldlm::{LdlmIntent, LdlmLockDesc};
use ptlrpc::wire::mds::{
    AttrReply, DirEntry, Layout, MdtAttr, ReintReq, SomAttr, StripeSpec, Timestamp, access_mask, attr_flags,
    attr_valid, open_flags, xattr_flags,
};
use ptlrpc::wire::{Fid, Xid};

use crate::error::{ClientError, Result};
use crate::lov_io::StripedFile;
use crate::mdc::Mdc;
use crate::mgc::{FsConfig, Mgc, MgcFollower};
use crate::options::MountOptions;
use crate::osc::Osc;
use crate::stream::Stream;
use crate::targets::Targets;

/// `S_IFMT` and the types the client tells apart.
pub const S_IFMT: u32 = 0o170000;
/// Directory.
pub const S_IFDIR: u32 = 0o040000;
/// Regular file.
pub const S_IFREG: u32 = 0o100000;
/// Symbolic link.
pub const S_IFLNK: u32 = 0o120000;

/// Entries asked for per readdir RPC.
const READDIR_BATCH: u32 = 256;
/// Readdir RPCs per directory listing at most (a bound on a looping server).
const READDIR_MAX_RPCS: u32 = 1 << 20;

/// Who the client acts as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cred {
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
}

impl Cred {
    /// This process's fsuid and fsgid (`/proc/self/status`), or root.
    pub fn current() -> Cred {
        let c = crate::creds::process();
        Cred { uid: c.uid, gid: c.gid }
    }
}

/// An object's attributes, with a regular file's size from its objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    /// The MDT's attributes (`size` replaced as said).
    pub attr: MdtAttr,
    /// A regular file's layout.
    pub layout: Option<Layout>,
    /// A directory's default striping.
    pub default_stripe: Option<StripeSpec>,
    /// A symlink's target.
    pub symlink: String,
    /// Space used, 512-byte blocks (a regular file's: what its objects
    /// hold on the OSTs).
    pub blocks: u64,
}

impl Stat {
    /// The FID.
    pub fn fid(&self) -> Fid {
        self.attr.fid
    }
    /// Size in bytes.
    pub fn size(&self) -> u64 {
        self.attr.size
    }
    /// Whether a directory.
    pub fn is_dir(&self) -> bool {
        self.attr.mode & S_IFMT == S_IFDIR
    }
    /// Whether a regular file.
    pub fn is_file(&self) -> bool {
        self.attr.mode & S_IFMT == S_IFREG
    }
}

/// An open file.
#[derive(Debug)]
pub struct File {
    fid: Fid,
    attr: MdtAttr,
    handle: u64,
    /// The open request's xid: its close releases it from replay.
    open_xid: Xid,
    flags: u32,
    data: Option<StripedFile>,
    stream: Stream,
    /// The MDT import's evictions when the open was answered: an open
    /// from before a later eviction is lost.
    evictions: u64,
    /// Locks the open's reply granted (a create asked with
    /// [`open_flags::LOCK`]); whoever asked takes them.
    granted: Vec<LdlmLockDesc>,
}

impl File {
    /// The file's FID.
    pub fn fid(&self) -> Fid {
        self.fid
    }
    /// The attributes the open answered (size as the MDT knows it).
    pub fn attr(&self) -> &MdtAttr {
        &self.attr
    }
    /// The open flags.
    pub fn flags(&self) -> u32 {
        self.flags
    }
    /// The locks the open's reply granted (see [`open_flags::LOCK`]).
    pub fn granted_locks(&self) -> &[LdlmLockDesc] {
        &self.granted
    }
    /// The striped objects (regular files).
    pub fn striped(&self) -> Option<&StripedFile> {
        self.data.as_ref()
    }
    /// Whether opened for writing.
    pub fn writable(&self) -> bool {
        self.flags & (open_flags::WRONLY | open_flags::RDWR) != 0
    }
}

/// Space of one target (`sheen df`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TargetSpace {
    /// `fsname-MDT0000` / `fsname-OST0001`.
    pub name: String,
    /// Capacity, KiB.
    pub kbytes: u64,
    /// Used, KiB.
    pub used_kb: u64,
    /// Available, KiB.
    pub avail_kb: u64,
    /// Inodes or objects in use.
    pub files: u64,
    /// Whether it answered.
    pub ok: bool,
}

/// A mounted Sheen file system.
#[derive(Debug)]
pub struct Sheen {
    fsname: String,
    mgc: Mgc,
    mdc: Mdc,
    targets: Targets,
    follower: MgcFollower,
    opts: MountOptions,
    cred: Cred,
}

/// This node's clock now (the time a change carries to the MDT).
pub fn now() -> Timestamp {
    match std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => Timestamp { sec: d.as_secs() as i64, nsec: d.subsec_nanos() },
        Err(_) => Timestamp::default(),
    }
}

/// The components of an absolute or root-relative path (`.` dropped;
/// `..` refused: the client keeps no parent map).
pub fn components(path: &str) -> Result<Vec<&str>> {
    let mut out = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => return Err(ClientError::Invalid(format!("{path}: '..' is not supported"))),
            c => out.push(c),
        }
    }
    Ok(out)
}

/// `path` split into its parent's components and its last name.
fn parent_and_name(path: &str) -> Result<(Vec<&str>, &str)> {
    let mut c = components(path)?;
    let name = c.pop().ok_or_else(|| ClientError::Invalid(format!("{path}: no name")))?;
    Ok((c, name))
}

impl Sheen {
    /// Mounts `fsname` whose MGS is at `mgs`, over `lnet`, with Lustre's
    /// default timeouts: see [`Sheen::mount_with`].
    pub async fn mount(lnet: &Lnet, mgs: Nid, fsname: &str) -> Result<Sheen> {
        Sheen::mount_with(lnet, mgs, fsname, MountOptions::default()).await
    }

    /// Mounts `fsname` whose MGS is at `mgs`, over `lnet`, with `opts`'s
    /// timeouts: reads the config log, connects to MDT0 and (lazily, on
    /// first use) to each OST, then follows the log (OSTs added,
    /// deactivated, removed; targets restarted).
    pub async fn mount_with(lnet: &Lnet, mgs: Nid, fsname: &str, opts: MountOptions) -> Result<Sheen> {
        let uuid = format!("sheen-client-{}-{}", lnet.nid(), std::process::id());
        let mgc = Mgc::new(lnet, mgs);
        let config = mgc.config(fsname).await?;
        let mdt = config
            .mdts
            .get(&0)
            .and_then(|t| t.nids.first().copied())
            .ok_or_else(|| ClientError::Config(format!("{fsname} has no MDT0 in its config log")))?;
        let mdc = Mdc::with_options(lnet, mdt, &uuid, &opts)?;
        mdc.connect().await?;
        let next = config.next;
        let targets = Targets::new(lnet, fsname, &uuid, opts, mdc.import().clone(), config);
        let t = targets.clone();
        let follower = mgc.follow(fsname, next, opts.follow(), move |rec| t.apply(rec));
        Ok(Sheen { fsname: fsname.to_string(), mgc, mdc, targets, follower, opts, cred: Cred::current() })
    }

    /// Leaves the file system: stops following the config log; the MDT
    /// and the OSTs drop this client's record (so their restarts do not
    /// wait for it to replay).
    pub async fn unmount(&self) {
        self.follower.stop();
        for osc in self.oscs().values() {
            osc.disconnect().await;
        }
        self.mdc.disconnect().await;
    }

    /// Acts as `cred` (with no supplementary groups) from now on: creates
    /// are its, and the MDT checks permissions for it.
    pub fn set_cred(&mut self, cred: Cred) {
        self.cred = cred;
        self.mdc.set_creds(crate::creds::Creds { uid: cred.uid, gid: cred.gid, groups: Vec::new() });
    }

    /// The file system's name.
    pub fn fsname(&self) -> &str {
        &self.fsname
    }

    /// The configuration: read at mount, and every record followed since.
    pub fn config(&self) -> FsConfig {
        self.targets.config()
    }

    /// The mount's timeouts.
    pub fn options(&self) -> &MountOptions {
        &self.opts
    }

    /// The MGC's config-log follower (how far it got, its counters).
    pub fn follower(&self) -> &MgcFollower {
        &self.follower
    }

    /// Waits (at most `bound`) until the followed configuration satisfies
    /// `pred`; returns whether it did.
    pub async fn wait_config(&self, bound: std::time::Duration, pred: impl Fn(&FsConfig) -> bool) -> bool {
        let mut rx = self.follower.subscribe();
        let until = async {
            while !pred(&self.config()) {
                if rx.changed().await.is_err() {
                    return false;
                }
            }
            true
        };
        tokio::time::timeout(bound, until).await.unwrap_or(false)
    }

    /// The target table the config log keeps current.
    pub fn targets(&self) -> &Targets {
        &self.targets
    }

    /// The metadata client.
    pub fn mdc(&self) -> &Mdc {
        &self.mdc
    }

    /// The MGS client.
    pub fn mgc(&self) -> &Mgc {
        &self.mgc
    }

    /// The OST clients by index (OSTs removed from the file system left
    /// out).
    pub fn oscs(&self) -> BTreeMap<u32, Arc<Osc>> {
        self.targets.oscs()
    }

    fn striped(&self, layout: &Layout) -> Result<StripedFile> {
        StripedFile::new(layout, |i| self.targets.osc(i))
    }

    /// The objects to glimpse for a stat: a regular file's, unless the MDT
    /// knows its size exactly.
    fn needs_glimpse(r: &AttrReply) -> Option<&Layout> {
        r.layout.as_ref().filter(|l| !r.attr.size_exact() && !l.objects.is_empty())
    }

    async fn to_stat(&self, r: AttrReply) -> Result<Stat> {
        let g = match Self::needs_glimpse(&r) {
            Some(l) => Some(self.striped(l)?.glimpse().await?),
            None => None,
        };
        Ok(Self::with_glimpse(r, g))
    }

    /// The MDT's attributes completed by the objects': size, mtime and
    /// space are the objects' (Lustre's glimpse) unless the MDT knows them
    /// exactly; the MDT's mtime counts when it is later (a utimes).
    fn with_glimpse(r: AttrReply, g: Option<crate::lov_io::Glimpse>) -> Stat {
        let mut attr = r.attr;
        let mut blocks = if attr.flags & attr_flags::SOM_EXACT != 0 { attr.blocks } else { attr.size.div_ceil(512) };
        if let Some(g) = g {
            attr.size = g.size;
            let obj_mtime = Timestamp::from_nanos(g.mtime_ns);
            attr.mtime = attr.mtime.max(obj_mtime);
            attr.ctime = attr.ctime.max(obj_mtime);
            blocks = g.allocated.div_ceil(512);
        }
        Stat { attr, layout: r.layout, default_stripe: r.default_stripe, symlink: r.symlink, blocks }
    }

    /// The directory `comps` names (walked from the root).
    async fn walk(&self, comps: &[&str]) -> Result<Fid> {
        let mut fid = Fid::ROOT;
        for c in comps {
            fid = self.mdc.lookup(fid, c).await?.attr.fid;
        }
        Ok(fid)
    }

    /// The FID `path` names.
    pub async fn resolve(&self, path: &str) -> Result<Fid> {
        self.walk(&components(path)?).await
    }

    /// stat by FID: the MDT, then (when its size is not exact) the objects.
    pub async fn stat_fid(&self, fid: Fid) -> Result<Stat> {
        let r = self.mdc.getattr(fid).await?;
        self.to_stat(r).await
    }

    /// stat of a file through `f`, an open of it: when `f` is open for
    /// writing the MDT cannot know the size exactly, so the MDT and the
    /// objects are asked at once (the MDT's answer still decides).
    pub async fn stat_open(&self, f: &File) -> Result<Stat> {
        match &f.data {
            Some(d) if f.writable() => {
                let (r, g) = tokio::join!(self.mdc.getattr(f.fid), d.glimpse());
                let r = r?;
                let g = if Self::needs_glimpse(&r).is_some() { Some(g?) } else { None };
                Ok(Self::with_glimpse(r, g))
            }
            _ => self.stat_fid(f.fid).await,
        }
    }

    /// stat by FID through a lock enqueue: the stat (objects glimpsed when
    /// the MDT's size is not exact) and the locks granted with it.
    pub async fn stat_locked(&self, fid: Fid) -> Result<(Stat, Vec<LdlmLockDesc>)> {
        let intent = LdlmIntent::Getattr(ptlrpc::wire::mds::GetattrReq { fid, access: 0 });
        let r = self.mdc.enqueue(intent).await?;
        Ok((self.to_stat(r.attr).await?, r.locks))
    }

    /// `parent/name` through a lock enqueue, with the MDT's attributes only
    /// (as [`Sheen::lookup_mdt`]), and the locks granted with it.
    pub async fn lookup_locked(&self, parent: Fid, name: &str) -> Result<(Stat, Vec<LdlmLockDesc>)> {
        let intent = LdlmIntent::Lookup(ptlrpc::wire::mds::LookupReq { parent, name: name.into() });
        let r = self.mdc.enqueue(intent).await?;
        Ok((Self::with_glimpse(r.attr, None), r.locks))
    }

    /// stat of `parent/name`.
    pub async fn lookup(&self, parent: Fid, name: &str) -> Result<Stat> {
        let r = self.mdc.lookup(parent, name).await?;
        self.to_stat(r).await
    }

    /// `parent/name` with the MDT's attributes only: a regular file's size,
    /// mtime and blocks are the MDT's record, exact or not (for callers
    /// that ask for fresh attributes next anyway, as FUSE's kernel side does
    /// with zero attribute TTLs).
    pub async fn lookup_mdt(&self, parent: Fid, name: &str) -> Result<Stat> {
        let r = self.mdc.lookup(parent, name).await?;
        Ok(Self::with_glimpse(r, None))
    }

    /// stat of `path`.
    pub async fn stat(&self, path: &str) -> Result<Stat> {
        let comps = components(path)?;
        match comps.split_last() {
            None => self.stat_fid(Fid::ROOT).await,
            Some((name, dirs)) => {
                let parent = self.walk(dirs).await?;
                self.lookup(parent, name).await
            }
        }
    }

    /// mkdir `parent/name` as `cred`.
    pub async fn mkdir_at(&self, cred: Cred, parent: Fid, name: &str, mode: u32) -> Result<Stat> {
        self.mkdir_locked(cred, parent, name, mode, false).await.map(|(st, _)| st)
    }

    /// [`Sheen::mkdir_at`]; `lock`, for a client with a callback
    /// service: the new directory comes back with a LOOKUP|UPDATE lock on
    /// it, returned with its attributes (the caller enters it in its lock
    /// cache).
    pub async fn mkdir_locked(
        &self,
        cred: Cred,
        parent: Fid,
        name: &str,
        mode: u32,
        lock: bool,
    ) -> Result<(Stat, Vec<ptlrpc::wire::ldlm::LdlmLockDesc>)> {
        let req = ReintReq::Create {
            parent,
            name: name.into(),
            mode: S_IFDIR | (mode & 0o7777),
            rdev: 0,
            uid: cred.uid,
            gid: cred.gid,
            time: now(),
            symlink: String::new(),
            stripe: None,
            fid: Some(self.mdc.new_fid().await?),
            replay: None,
            lock,
        };
        let r = self.mdc.reint("mkdir", &req).await?;
        let attr = r.attr.ok_or_else(|| ClientError::Invalid("mkdir reply without attributes".into()))?;
        Ok((Stat { attr, layout: None, default_stripe: None, symlink: String::new(), blocks: 0 }, r.locks))
    }

    /// mkdir `path`.
    pub async fn mkdir(&self, path: &str, mode: u32) -> Result<Stat> {
        let (dirs, name) = parent_and_name(path)?;
        let parent = self.walk(&dirs).await?;
        self.mkdir_at(self.cred, parent, name, mode).await
    }

    /// Creates `parent/name` of type and mode `mode` (`S_IFLNK` with a
    /// `symlink` target, a device with `rdev`, a FIFO, a socket, or a
    /// regular file with the directory's default striping) as `cred`.
    pub async fn create_node_at(
        &self,
        cred: Cred,
        parent: Fid,
        name: &str,
        mode: u32,
        rdev: u64,
        symlink: &str,
    ) -> Result<Stat> {
        let req = ReintReq::Create {
            parent,
            name: name.into(),
            mode,
            rdev,
            uid: cred.uid,
            gid: cred.gid,
            time: now(),
            symlink: symlink.into(),
            stripe: None,
            fid: Some(self.mdc.new_fid().await?),
            replay: None,
            lock: false,
        };
        let what = if mode & S_IFMT == S_IFLNK { "symlink" } else { "mknod" };
        let r = self.mdc.reint(what, &req).await?;
        let attr = r.attr.ok_or_else(|| ClientError::Invalid(format!("{what} reply without attributes")))?;
        let blocks = attr.size.div_ceil(512);
        Ok(Stat { attr, layout: r.layout, default_stripe: None, symlink: symlink.into(), blocks })
    }

    /// symlink: `parent/name` pointing at `target`.
    pub async fn symlink_at(&self, cred: Cred, parent: Fid, name: &str, target: &str) -> Result<Stat> {
        self.create_node_at(cred, parent, name, S_IFLNK | 0o777, 0, target).await
    }

    /// symlink `path` -> `target`.
    pub async fn symlink(&self, target: &str, path: &str) -> Result<Stat> {
        let (dirs, name) = parent_and_name(path)?;
        let parent = self.walk(&dirs).await?;
        self.symlink_at(self.cred, parent, name, target).await
    }

    /// The target of the symlink `fid` (EINVAL when not a symlink).
    pub async fn readlink_fid(&self, fid: Fid) -> Result<String> {
        let r = self.mdc.getattr(fid).await?;
        if r.attr.mode & S_IFMT != S_IFLNK {
            return Err(ClientError::posix(format!("{fid}: not a symlink"), libc::EINVAL));
        }
        Ok(r.symlink)
    }

    /// The target of the symlink `path`.
    pub async fn readlink(&self, path: &str) -> Result<String> {
        self.readlink_fid(self.resolve(path).await?).await
    }

    /// link: a new name `parent/name` for `fid` (not a directory).
    pub async fn link_at(&self, fid: Fid, parent: Fid, name: &str) -> Result<Stat> {
        let req = ReintReq::Link { fid, parent, name: name.into(), time: now() };
        self.mdc.reint("link", &req).await?;
        self.stat_fid(fid).await
    }

    /// link `from` as `to`.
    pub async fn link(&self, from: &str, to: &str) -> Result<Stat> {
        let fid = self.resolve(from).await?;
        let (dirs, name) = parent_and_name(to)?;
        let parent = self.walk(&dirs).await?;
        self.link_at(fid, parent, name).await
    }

    /// The value of extended attribute `name` of `fid` (ENODATA if none).
    pub async fn getxattr(&self, fid: Fid, name: &str) -> Result<Vec<u8>> {
        self.mdc.getxattr(fid, name).await
    }

    /// The extended attribute names of `fid`.
    pub async fn listxattr(&self, fid: Fid) -> Result<Vec<String>> {
        self.mdc.listxattr(fid).await
    }

    /// Sets extended attribute `name` of `fid` (`flags`: `xattr_flags`
    /// CREATE / REPLACE, or 0).
    pub async fn setxattr(&self, fid: Fid, name: &str, value: &[u8], flags: u32) -> Result<()> {
        let req = ReintReq::Setxattr { fid, name: name.into(), value: value.to_vec(), flags };
        self.mdc.reint("setxattr", &req).await.map(drop)
    }

    /// Removes extended attribute `name` of `fid` (ENODATA if none).
    pub async fn removexattr(&self, fid: Fid, name: &str) -> Result<()> {
        let req = ReintReq::Setxattr { fid, name: name.into(), value: Vec::new(), flags: xattr_flags::REMOVE };
        self.mdc.reint("removexattr", &req).await.map(drop)
    }

    /// Opens (with `open_flags::CREAT`, creates as `cred`) `parent/name`.
    /// A create uses `stripe`, or the directory's default.
    pub async fn open_at(
        &self,
        cred: Cred,
        parent: Fid,
        name: &str,
        flags: u32,
        mode: u32,
        stripe: Option<StripeSpec>,
    ) -> Result<File> {
        let req = ReintReq::Open {
            parent,
            name: name.into(),
            by_fid: None,
            flags,
            mode: S_IFREG | (mode & 0o7777),
            uid: cred.uid,
            gid: cred.gid,
            time: now(),
            stripe,
            fid: if flags & open_flags::CREAT != 0 { Some(self.mdc.new_fid().await?) } else { None },
            replay: None,
        };
        let new_fid = match &req {
            ReintReq::Open { fid, .. } => *fid,
            _ => None,
        };
        let rep = self.mdc.open(&req).await?;
        // Created by this open (it has the FID this client chose): its
        // objects are new and empty, an O_TRUNC has nothing to cut.
        let created = new_fid.is_some() && rep.0.attr.as_ref().map(|a| a.fid) == new_fid;
        let file = self.opened(if created { flags & !open_flags::TRUNC } else { flags }, rep).await?;
        if let (true, Some(d)) = (created, &file.data) {
            // Its close can tell the MDT what the writes' replies said.
            d.created();
        }
        Ok(file)
    }

    /// Opens the file `fid`.
    pub async fn open_fid(&self, fid: Fid, flags: u32) -> Result<File> {
        let req = ReintReq::Open {
            parent: fid,
            name: String::new(),
            by_fid: Some(fid),
            flags: flags & !(open_flags::CREAT | open_flags::EXCL),
            mode: 0,
            uid: self.cred.uid,
            gid: self.cred.gid,
            time: now(),
            stripe: None,
            fid: None,
            replay: None,
        };
        self.opened(flags, self.mdc.open(&req).await?).await
    }

    async fn opened(&self, flags: u32, (r, open_xid): (ptlrpc::wire::mds::ReintReply, Xid)) -> Result<File> {
        let attr = r.attr.ok_or_else(|| ClientError::Invalid("open reply without attributes".into()))?;
        let data = match r.layout.as_ref().filter(|l| !l.objects.is_empty()) {
            Some(l) => Some(self.striped(l)?),
            None => None,
        };
        let evictions = self.mdc_evictions();
        let file = File {
            fid: attr.fid,
            attr,
            handle: r.handle,
            open_xid,
            flags,
            data,
            stream: Stream::default(),
            evictions,
            granted: r.locks,
        };
        let writes = flags & (open_flags::WRONLY | open_flags::RDWR) != 0;
        if writes
            && flags & open_flags::TRUNC != 0
            && let Some(d) = &file.data
            && let Err(e) = d.truncate(0).await
        {
            let _ = self.mdc.close(file.handle, file.open_xid, None).await;
            return Err(e);
        }
        Ok(file)
    }

    /// Opens `path`; with `CREAT`, creates it (mode `mode`, striping
    /// `stripe` or the directory's default).
    pub async fn open(&self, path: &str, flags: u32, mode: u32, stripe: Option<StripeSpec>) -> Result<File> {
        let (dirs, name) = parent_and_name(path)?;
        let parent = self.walk(&dirs).await?;
        self.open_at(self.cred, parent, name, flags, mode, stripe).await
    }

    /// Creates `path` (exclusive) for reading and writing.
    pub async fn create(&self, path: &str, mode: u32, stripe: Option<StripeSpec>) -> Result<File> {
        let flags = open_flags::CREAT | open_flags::EXCL | open_flags::RDWR;
        self.open(path, flags, mode, stripe).await
    }

    /// Evictions of this mount by the MDT so far.
    fn mdc_evictions(&self) -> u64 {
        self.mdc.import().import_stats().evictions
    }

    /// EIO when `f` was opened before the MDT evicted this client: the
    /// MDT closed that open with the export, and it is not replayed.
    ///
    /// EIO, not EBADF: the descriptor is the application's and still
    /// valid; what failed is the state behind it, lost by the eviction —
    /// Lustre reports I/O lost to an eviction as EIO, and an application
    /// handles EIO as "this file's operation failed" (EBADF would say it
    /// passed a bad descriptor, a bug of its own).
    pub fn check_open(&self, f: &File, what: &'static str) -> Result<()> {
        if self.mdc_evictions() > f.evictions { Err(ClientError::LostOpen { what }) } else { Ok(()) }
    }

    fn data<'f>(&self, f: &'f File) -> Result<&'f StripedFile> {
        f.data.as_ref().ok_or_else(|| ClientError::posix(format!("{}: no data objects", f.fid), libc::EINVAL))
    }

    /// Reads into `buf` from `off`; returns the bytes read (0 at or past
    /// the end of the file).
    pub async fn read(&self, f: &File, off: u64, buf: &mut [u8]) -> Result<usize> {
        if f.flags & open_flags::WRONLY != 0 {
            return Err(ClientError::posix("read of a write-only open", libc::EBADF));
        }
        self.check_open(f, "read")?;
        let Some(d) = f.data.as_ref() else { return Ok(0) };
        // A read sees this open's own writes (a failure of theirs is left
        // for the write, fsync or close that reports it).
        if f.stream.writing() {
            f.stream.settle().await?;
        }
        f.stream.read(d, off, buf).await
    }

    /// Writes `data` at `off` and waits until the OSTs have it; returns
    /// the bytes written (all of them).
    pub async fn write(&self, f: &File, off: u64, data: &[u8]) -> Result<usize> {
        if f.flags & (open_flags::WRONLY | open_flags::RDWR) == 0 {
            return Err(ClientError::posix("write to a read-only open", libc::EBADF));
        }
        if data.is_empty() {
            return Ok(0);
        }
        self.check_open(f, "write")?;
        f.stream.invalidate();
        f.stream.flush().await?;
        self.data(f)?.write(off, data).await
    }

    /// Writes `data` at `off` behind the caller: returns once the data is
    /// copied, the BRWs run on (bounded in flight, see [`crate::stream`]);
    /// a failure comes back from a later write, [`Sheen::flush`],
    /// [`Sheen::fsync`] or [`Sheen::close`].
    pub async fn write_behind(&self, f: &File, off: u64, data: &[u8]) -> Result<usize> {
        if f.flags & (open_flags::WRONLY | open_flags::RDWR) == 0 {
            return Err(ClientError::posix("write to a read-only open", libc::EBADF));
        }
        if data.is_empty() {
            return Ok(0);
        }
        self.check_open(f, "write")?;
        f.stream.write_behind(self.data(f)?, off, data).await
    }

    /// Waits until every write behind of `f` reached the OSTs.
    pub async fn flush(&self, f: &File) -> Result<()> {
        f.stream.flush().await
    }

    /// Waits until `f`'s writes in flight reached the OSTs, leaving any
    /// failure to be reported to `f`'s writer (a stat of the file sees
    /// what was written through every open of this client).
    pub async fn settle(&self, f: &File) -> Result<()> {
        f.stream.settle().await
    }

    /// Drops `f`'s readahead (another open of this client changed the file).
    pub fn drop_readahead(&self, f: &File) {
        f.stream.invalidate();
    }

    /// Whether `f` has writes in flight.
    pub fn writing(&self, f: &File) -> bool {
        f.stream.writing()
    }

    /// The open file's size.
    pub async fn size(&self, f: &File) -> Result<u64> {
        if f.stream.writing() {
            f.stream.settle().await?;
        }
        match &f.data {
            Some(d) => d.size().await,
            None => Ok(0),
        }
    }

    /// fsync: every OST holding the file commits (SYNC waits for the
    /// commit), then the MDT commits.
    pub async fn fsync(&self, f: &File) -> Result<()> {
        self.check_open(f, "fsync")?;
        f.stream.flush().await?;
        if let Some(d) = &f.data {
            d.sync().await?;
        }
        self.mdc.sync().await
    }

    /// Closes the MDT's open handle.
    pub async fn close(&self, f: File) -> Result<()> {
        self.close_ref(&f).await.map(|_| ())
    }

    /// Closes the MDT's open handle of `f` (the FUSE release path, where
    /// the file may still be shared). A handle opened for writing tells the
    /// MDT what the objects hold once its writes landed (size on MDT).
    /// Returns the file's stat after the close when the MDT now knows its
    /// size exactly (what a getattr would answer).
    pub(crate) async fn close_ref(&self, f: &File) -> Result<Option<Stat>> {
        if self.check_open(f, "close").is_err() {
            // Nothing to send: the MDT closed it when it evicted us. What
            // was written behind is waited for, and failed or not, the
            // open was lost.
            let _ = f.stream.flush().await;
            f.stream.invalidate();
            return Err(ClientError::LostOpen { what: "close" });
        }
        let flushed = f.stream.flush().await;
        f.stream.invalidate();
        let som = match (&flushed, &f.data) {
            (Ok(()), Some(d)) if f.flags & (open_flags::WRONLY | open_flags::RDWR) != 0 => {
                // A file this open created: what its writes were answered
                // (what a glimpse would see unless someone else wrote, and
                // then the MDT does not keep it). Else a glimpse; a failed
                // one only leaves the size to later glimpses.
                let seen = match d.written() {
                    Some(g) => Some(g),
                    None => d.glimpse().await.ok(),
                };
                seen.map(|g| SomAttr {
                    size: g.size,
                    blocks: g.allocated.div_ceil(512),
                    mtime: Timestamp::from_nanos(g.mtime_ns),
                })
            }
            _ => None,
        };
        match self.mdc.close(f.handle, f.open_xid, som).await {
            // The MDT has no such open: it closed it with our evicted
            // export (an eviction noticed after this open was answered).
            Err(e) if e.errno() == libc::ESTALE => Err(ClientError::LostOpen { what: "close" }),
            Err(e) => Err(e),
            Ok(rep) => flushed.map(|()| {
                rep.attr.filter(MdtAttr::size_exact).map(|attr| {
                    let r = AttrReply { attr, layout: None, default_stripe: None, symlink: String::new() };
                    Self::with_glimpse(r, None)
                })
            }),
        }
    }

    /// Sets the size of `fid` (the MDT's record and every object).
    pub async fn truncate_fid(&self, fid: Fid, size: u64) -> Result<Stat> {
        self.truncate_as(fid, size, false).await
    }

    /// [`Sheen::truncate_fid`]; `from_open`: through a handle open for
    /// writing (`ftruncate`), else the caller's write permission is
    /// checked (by the getattr it starts with) before the objects are
    /// touched.
    pub async fn truncate_as(&self, fid: Fid, size: u64, from_open: bool) -> Result<Stat> {
        let mask = if from_open { 0 } else { access_mask::WRITE };
        let st = self.to_stat(self.mdc.access(fid, mask).await?).await?;
        if !st.is_file() {
            return Err(ClientError::posix(format!("{fid}: not a regular file"), libc::EINVAL));
        }
        if let Some(l) = st.layout.as_ref().filter(|l| !l.objects.is_empty()) {
            self.striped(l)?.truncate(size).await?;
        }
        let valid = attr_valid::SIZE | attr_valid::MTIME | attr_valid::TIMES_NOW;
        let valid = if from_open { valid | attr_valid::FROM_OPEN } else { valid };
        self.setattr(fid, valid, SetAttr { size, mtime: now(), ..SetAttr::default() }).await?;
        self.stat_fid(fid).await
    }

    /// Changes attributes named by `valid` ([`attr_valid`]) on the MDT.
    pub async fn setattr(&self, fid: Fid, valid: u32, a: SetAttr) -> Result<MdtAttr> {
        // Every change of attributes changes the ctime.
        let req = ReintReq::Setattr {
            fid,
            valid: valid | attr_valid::CTIME,
            mode: a.mode,
            uid: a.uid,
            gid: a.gid,
            size: a.size,
            atime: a.atime,
            mtime: a.mtime,
            ctime: now(),
            default_stripe: a.default_stripe,
        };
        let r = self.mdc.reint("setattr", &req).await?;
        let attr = r.attr.ok_or_else(|| ClientError::Invalid("setattr reply without attributes".into()))?;
        // A utimes of a file also sets its objects' mtime (stat takes the
        // latest of the MDT's and the objects'); a truncate just set them.
        if valid & attr_valid::MTIME != 0 && valid & attr_valid::SIZE == 0 && attr.mode & S_IFMT == S_IFREG {
            let r = self.mdc.getattr(fid).await?;
            if let Some(l) = r.layout.as_ref().filter(|l| !l.objects.is_empty()) {
                self.striped(l)?.set_mtime(a.mtime.as_nanos()).await?;
            }
        }
        Ok(attr)
    }

    /// fallocate: mode 0 makes the file at least `off + len` bytes long
    /// (objects stay sparse: space is not reserved on the OSTs); with
    /// `punch` the range is deallocated and reads as zeros, the size kept.
    pub async fn fallocate_fid(&self, fid: Fid, off: u64, len: u64, punch: bool) -> Result<()> {
        let st = self.stat_fid(fid).await?;
        if !st.is_file() {
            return Err(ClientError::posix(format!("{fid}: not a regular file"), libc::ENODEV));
        }
        let Some(l) = st.layout.as_ref().filter(|l| !l.objects.is_empty()) else { return Ok(()) };
        let end = off.checked_add(len).ok_or_else(|| ClientError::posix("fallocate past 2^64", libc::EFBIG))?;
        if punch {
            let end = end.min(st.size());
            if end > off {
                self.striped(l)?.punch_hole(off, end - off).await?;
                // The data changed outside a write handle: the MDT forgets
                // the exact size (and space) it may know, and the file's
                // times move as a write's would.
                let a = SetAttr { mtime: now(), ..SetAttr::default() };
                let valid = attr_valid::MTIME | attr_valid::TIMES_NOW | attr_valid::FROM_OPEN;
                self.setattr(fid, valid, a).await?;
            }
            Ok(())
        } else if end > st.size() {
            self.truncate_as(fid, end, true).await.map(drop)
        } else {
            Ok(())
        }
    }

    /// Removes `parent/name` (a directory when `dir`).
    pub async fn unlink_at(&self, parent: Fid, name: &str, dir: bool) -> Result<()> {
        let req = ReintReq::Unlink { parent, name: name.into(), dir, time: now() };
        self.mdc.reint(if dir { "rmdir" } else { "unlink" }, &req).await.map(drop)
    }

    /// unlink `path`.
    pub async fn unlink(&self, path: &str) -> Result<()> {
        let (dirs, name) = parent_and_name(path)?;
        self.unlink_at(self.walk(&dirs).await?, name, false).await
    }

    /// rmdir `path`.
    pub async fn rmdir(&self, path: &str) -> Result<()> {
        let (dirs, name) = parent_and_name(path)?;
        self.unlink_at(self.walk(&dirs).await?, name, true).await
    }

    /// Renames `sp/sn` to `dp/dn`.
    pub async fn rename_at(&self, sp: Fid, sn: &str, dp: Fid, dn: &str) -> Result<()> {
        let req =
            ReintReq::Rename { src_parent: sp, src_name: sn.into(), dst_parent: dp, dst_name: dn.into(), time: now() };
        self.mdc.reint("rename", &req).await.map(drop)
    }

    /// Renames `from` to `to`.
    pub async fn rename(&self, from: &str, to: &str) -> Result<()> {
        let (sd, sn) = parent_and_name(from)?;
        let (dd, dn) = parent_and_name(to)?;
        self.rename_at(self.walk(&sd).await?, sn, self.walk(&dd).await?, dn).await
    }

    /// One batch of entries of `dir` from `cookie`: (entries, next cookie, end).
    pub async fn readdir_page(&self, dir: Fid, cookie: u64) -> Result<(Vec<DirEntry>, u64, bool)> {
        let r = self.mdc.readdir(dir, cookie, READDIR_BATCH).await?;
        Ok((r.entries, r.next, r.end))
    }

    /// Every entry of the directory `dir`.
    pub async fn readdir_fid(&self, dir: Fid) -> Result<Vec<DirEntry>> {
        let mut out = Vec::new();
        let mut cookie = 0;
        for _ in 0..READDIR_MAX_RPCS {
            let (mut e, next, end) = self.readdir_page(dir, cookie).await?;
            out.append(&mut e);
            if end || next == cookie {
                return Ok(out);
            }
            cookie = next;
        }
        Err(ClientError::posix(format!("{dir}: readdir does not end"), libc::EIO))
    }

    /// Every entry of the directory `path`.
    pub async fn readdir(&self, path: &str) -> Result<Vec<DirEntry>> {
        self.readdir_fid(self.resolve(path).await?).await
    }

    /// Sets a directory's default striping (what new files in it get).
    pub async fn setstripe_dir(&self, path: &str, spec: StripeSpec) -> Result<()> {
        let fid = self.resolve(path).await?;
        let a = SetAttr { default_stripe: Some(spec), ..SetAttr::default() };
        self.setattr(fid, attr_valid::DEFAULT_STRIPE, a).await.map(drop)
    }

    /// The file system's space: the MDT, then every OST (like `lfs df`).
    pub async fn df(&self) -> Vec<TargetSpace> {
        let mut out = Vec::new();
        match self.mdc.statfs().await {
            Ok(s) => out.push(TargetSpace {
                name: format!("{}-MDT0000", self.fsname),
                kbytes: 0,
                used_kb: 0,
                avail_kb: 0,
                files: s.files,
                ok: true,
            }),
            Err(_) => out.push(TargetSpace {
                name: format!("{}-MDT0000", self.fsname),
                kbytes: 0,
                used_kb: 0,
                avail_kb: 0,
                files: 0,
                ok: false,
            }),
        }
        for osc in self.oscs().values() {
            let name = osc.name().to_string();
            out.push(match osc.statfs().await {
                Ok(s) => {
                    let kb = |b: u64| b.saturating_mul(u64::from(s.bsize)) / 1024;
                    TargetSpace {
                        name,
                        kbytes: kb(s.blocks),
                        used_kb: kb(s.blocks.saturating_sub(s.bfree)),
                        avail_kb: kb(s.bavail),
                        files: s.objects,
                        ok: true,
                    }
                }
                Err(_) => TargetSpace { name, kbytes: 0, used_kb: 0, avail_kb: 0, files: 0, ok: false },
            });
        }
        out
    }
}

/// Fields for [`Sheen::setattr`] (only those `valid` names are applied).
#[derive(Debug, Clone, Default)]
pub struct SetAttr {
    /// Permission bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Size.
    pub size: u64,
    /// Access time.
    pub atime: Timestamp,
    /// Modification time.
    pub mtime: Timestamp,
    /// A directory's default striping.
    pub default_stripe: Option<StripeSpec>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_split_into_components() {
        assert_eq!(components("/a//b/./c/").unwrap(), vec!["a", "b", "c"]);
        assert!(components("/").unwrap().is_empty());
        assert!(components("/a/../b").is_err());
        assert!(parent_and_name("/").is_err());
        assert_eq!(parent_and_name("x/y").unwrap(), (vec!["x"], "y"));
    }
}
