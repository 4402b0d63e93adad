//! MDS bodies: what clients send the metadata target and what it answers.
//!
//! Owns: [`Fid`] (Lustre's `lu_fid`: sequence, object id, version), the
//! attributes a reply carries ([`MdtAttr`]), layouts ([`Layout`],
//! [`StripeSpec`], [`StripeObj`]), and one request/reply pair per MDS
//! opcode. `MDS_REINT` carries a [`ReintReq`] whose variant is the
//! [`super::ReintOp`]; its reply is a [`ReintReply`] with the pre-op
//! versions of every object it touched (VBR, `seeds/002`). `SEQ_QUERY`
//! ([`SeqQueryReq`], [`SeqRange`]) hands a client sequences to allocate
//! the FIDs of its creates from, so a replayed create recreates its FID.
//! A create or open replayed after an MDT restart carries what its reply
//! said ([`CreateReplay`], [`OpenReplay`]: the layout, so the replay reuses
//! the same OST objects; the open handle, so the MDT restores it):
//! [`reint_replay_fixup`] writes it into the body the client's import
//! keeps for replay.
//! Requests the MDT checks permissions for travel as [`MdsReq`]: the body
//! and the caller's credentials ([`Creds`]: fsuid, fsgid, supplementary
//! groups), as Lustre's `mdt_body` and reint records carry `fsuid`,
//! `fsgid` and `suppgid`.
//!
//! Must not: hold behaviour beyond plain data and small helpers; the MDT
//! (`mdt` crate) gives the bodies meaning. Errors travel as the header's
//! status (a negative errno), never in a body.

use rkyv::{Archive, Deserialize, Serialize};

/// A file identifier: `seq` names a sequence handed to one MDT (or
/// client), `oid` an object within it, `ver` a version (0 today).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[rkyv(derive(Debug, PartialEq, Eq))]
pub struct Fid {
    /// Sequence number.
    pub seq: u64,
    /// Object id within the sequence.
    pub oid: u32,
    /// Version (reserved, 0).
    pub ver: u32,
}

impl Fid {
    /// The root directory's FID (Lustre's `FID_SEQ_ROOT`:1).
    pub const ROOT: Fid = Fid { seq: 0x2_0000_0007, oid: 1, ver: 0 };

    /// The FID as one 128-bit number (seq, oid, ver), for object ids.
    pub const fn as_u128(self) -> u128 {
        ((self.seq as u128) << 64) | ((self.oid as u128) << 32) | self.ver as u128
    }

    /// The inverse of [`Fid::as_u128`].
    pub const fn from_u128(v: u128) -> Fid {
        Fid { seq: (v >> 64) as u64, oid: (v >> 32) as u32, ver: v as u32 }
    }
}

impl std::fmt::Display for Fid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "[{:#x}:{:#x}:{:#x}]", self.seq, self.oid, self.ver)
    }
}

/// A point in time: seconds and nanoseconds since the Unix epoch
/// (`struct timespec`; `nsec < 1_000_000_000`). Ordered by time.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[rkyv(derive(Debug, PartialEq, Eq))]
pub struct Timestamp {
    /// Seconds (negative: before 1970).
    pub sec: i64,
    /// Nanoseconds within the second.
    pub nsec: u32,
}

impl Timestamp {
    /// Whole seconds.
    pub const fn secs(sec: i64) -> Timestamp {
        Timestamp { sec, nsec: 0 }
    }

    /// Nanoseconds since the epoch (as OST objects keep their mtime;
    /// times before 1970 are 0).
    pub fn as_nanos(self) -> u64 {
        u64::try_from(self.sec).map_or(0, |s| s.saturating_mul(1_000_000_000).saturating_add(u64::from(self.nsec)))
    }

    /// The inverse of [`Timestamp::as_nanos`].
    pub fn from_nanos(ns: u64) -> Timestamp {
        Timestamp { sec: (ns / 1_000_000_000) as i64, nsec: (ns % 1_000_000_000) as u32 }
    }
}

/// Flags of [`MdtAttr::flags`].
pub mod attr_flags {
    /// Size on MDT: `size`, `blocks` and `mtime` are exact for a regular
    /// file (the last writer closed cleanly and no open for writing is
    /// left), so its objects need no glimpse.
    pub const SOM_EXACT: u32 = 1;
}

/// An inode's attributes as a reply carries them.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
#[rkyv(derive(Debug))]
pub struct MdtAttr {
    /// The object.
    pub fid: Fid,
    /// `st_mode`: type and permission bits.
    pub mode: u32,
    /// Link count.
    pub nlink: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Device number (devices only).
    pub rdev: u64,
    /// Size in bytes as the MDT knows it (directories: entry count;
    /// symlinks: target length; regular files: the last size set).
    pub size: u64,
    /// Access time.
    pub atime: Timestamp,
    /// Modification time.
    pub mtime: Timestamp,
    /// Change time.
    pub ctime: Timestamp,
    /// The object's version (`epoch << 32 | transno`).
    pub version: u64,
    /// Space used, 512-byte blocks (a regular file's: valid with
    /// [`attr_flags::SOM_EXACT`]).
    pub blocks: u64,
    /// [`attr_flags`].
    pub flags: u32,
}

impl MdtAttr {
    /// Whether the size (and space, data mtime) stated is the object's
    /// own: anything but a regular file, or a regular file whose size the
    /// MDT knows exactly ([`attr_flags::SOM_EXACT`]); else the OSTs have it.
    pub fn size_exact(&self) -> bool {
        const S_IFMT: u32 = 0o170_000;
        const S_IFREG: u32 = 0o100_000;
        self.mode & S_IFMT != S_IFREG || self.flags & attr_flags::SOM_EXACT != 0
    }
}

/// One stripe's object: the OST index and the object id on it.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[rkyv(derive(Debug))]
pub struct StripeObj {
    /// OST index.
    pub ost: u32,
    /// The object on that OST.
    pub id: super::OstId,
}

/// What a user asks for (setstripe): 0 means "inherit/default" for size
/// and count; `count == u32::MAX` means every available OST; `offset < 0`
/// lets the allocator choose the first OST.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
#[rkyv(derive(Debug))]
pub struct StripeSpec {
    /// Bytes per stripe (0: inherit).
    pub stripe_size: u32,
    /// Stripes (0: inherit; `u32::MAX`: all).
    pub stripe_count: u32,
    /// First OST index, or -1.
    pub stripe_offset: i32,
    /// OST pool to allocate from ("" : any).
    pub pool: String,
}

/// A file's layout: how its data is striped and on which objects.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
#[rkyv(derive(Debug))]
pub struct Layout {
    /// Bytes per stripe.
    pub stripe_size: u32,
    /// The pool the objects came from ("" : any).
    pub pool: String,
    /// One object per stripe, in stripe order.
    pub objects: Vec<StripeObj>,
}

/// Who a request acts for: the calling process's filesystem user and
/// group ids and its supplementary groups. The default (0, 0, none) is root.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Hash, Default)]
#[rkyv(derive(Debug))]
pub struct Creds {
    /// fsuid.
    pub uid: u32,
    /// fsgid.
    pub gid: u32,
    /// Supplementary groups.
    pub groups: Vec<u32>,
}

impl Creds {
    /// Root (uid 0, gid 0, no supplementary groups).
    pub const ROOT: Creds = Creds { uid: 0, gid: 0, groups: Vec::new() };

    /// Whether `gid` is the caller's group or one of its supplementary ones.
    pub fn in_group(&self, gid: u32) -> bool {
        self.gid == gid || self.groups.contains(&gid)
    }
}

/// A request body with its caller's credentials: `MDS_REINT`
/// (`MdsReq<ReintReq>`), `MDS_GETATTR` (`MdsReq<GetattrReq>`),
/// `MDS_GETATTR_NAME` (`MdsReq<LookupReq>`), `MDS_GETXATTR`
/// (`MdsReq<GetxattrReq>`).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct MdsReq<T> {
    /// The caller.
    pub creds: Creds,
    /// The request.
    pub req: T,
    /// Early lock cancel (Lustre's ELC, the handles an `ldlm_request`
    /// carries): locks of this client's that the change would call back,
    /// given up with the request instead of by a cancel RPC of their own.
    /// The MDT cancels them before it locks what the change touches.
    pub cancels: Vec<u64>,
    /// Locks of this client's the change leaves in place: its locks on a
    /// directory the change adds a name to or removes one from, whose
    /// names (and attributes) the client updates in its own cache. The
    /// MDT's exclusive locks for the change neither wait for them nor
    /// call them back; handles of other clients' locks are ignored.
    pub keeps: Vec<u64>,
}

impl<T> MdsReq<T> {
    /// `req` acting for `creds`, cancelling and keeping nothing.
    pub fn new(creds: Creds, req: T) -> MdsReq<T> {
        MdsReq { creds, req, cancels: Vec::new(), keeps: Vec::new() }
    }
}

/// Access bits of [`GetattrReq::access`] (`access(2)`'s `R_OK`, `W_OK`,
/// `X_OK`).
pub mod access_mask {
    /// Read.
    pub const READ: u32 = 4;
    /// Write.
    pub const WRITE: u32 = 2;
    /// Execute, or search a directory.
    pub const EXEC: u32 = 1;
}

/// `MDS_GETATTR` (and readlink): the object.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct GetattrReq {
    /// The object.
    pub fid: Fid,
    /// [`access_mask`] bits the caller must have on it (`access(2)`,
    /// opendir; EACCES if not), 0 for none.
    pub access: u32,
}

/// `MDS_GETATTR_NAME` (lookup): a name in a directory.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct LookupReq {
    /// The directory.
    pub parent: Fid,
    /// The name.
    pub name: String,
}

/// Reply to getattr and lookup.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
#[rkyv(derive(Debug))]
pub struct AttrReply {
    /// The attributes.
    pub attr: MdtAttr,
    /// A regular file's layout.
    pub layout: Option<Layout>,
    /// A directory's default striping.
    pub default_stripe: Option<StripeSpec>,
    /// A symlink's target.
    pub symlink: String,
}

/// Which fields of [`ReintReq::Setattr`] to apply (Lustre's `ATTR_*`).
pub mod attr_valid {
    /// `mode` (permission bits only).
    pub const MODE: u32 = 1 << 0;
    /// `uid`.
    pub const UID: u32 = 1 << 1;
    /// `gid`.
    pub const GID: u32 = 1 << 2;
    /// `size`.
    pub const SIZE: u32 = 1 << 3;
    /// `atime`.
    pub const ATIME: u32 = 1 << 4;
    /// `mtime`.
    pub const MTIME: u32 = 1 << 5;
    /// `ctime`.
    pub const CTIME: u32 = 1 << 6;
    /// A directory's default striping (`default_stripe`).
    pub const DEFAULT_STRIPE: u32 = 1 << 7;
    /// `atime`/`mtime` are "now" (`UTIME_NOW`, `utime(NULL)`): write
    /// permission suffices, where explicit times need the owner.
    pub const TIMES_NOW: u32 = 1 << 8;
    /// Through a handle open for writing (`ftruncate`): no permission
    /// check (Lustre's `MDS_ATTR_FROM_OPEN`).
    pub const FROM_OPEN: u32 = 1 << 9;
}

/// `open` flags the MDT understands (Linux values).
pub mod open_flags {
    /// Create if missing.
    pub const CREAT: u32 = 0o100;
    /// With `CREAT`: fail if it exists.
    pub const EXCL: u32 = 0o200;
    /// Truncate to 0.
    pub const TRUNC: u32 = 0o1000;
    /// Write access.
    pub const WRONLY: u32 = 0o1;
    /// Read and write access.
    pub const RDWR: u32 = 0o2;
    /// An open for `execve` (Linux's `__FMODE_EXEC`): execute permission
    /// is checked instead of read.
    pub const EXEC: u32 = 0o40;
    /// The client has a callback service and wants a protected-read
    /// LOOKUP|UPDATE lock on the file if this open creates it (Lustre's
    /// open lock, `MDS_OPEN_LOCK`): its name and attributes may then be
    /// cached from the create's reply. Not a Linux flag.
    pub const LOCK: u32 = 0o4_000_000_000;
}

/// `setxattr` flags (Linux values) plus removal.
pub mod xattr_flags {
    /// Fail if it exists.
    pub const CREATE: u32 = 1;
    /// Fail if it does not exist.
    pub const REPLACE: u32 = 2;
    /// Remove the attribute.
    pub const REMOVE: u32 = 0x100;
}

/// An `MDS_REINT` request: a modifying operation.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub enum ReintReq {
    /// Create a file, directory, symlink or device node under `parent`.
    Create {
        /// The directory.
        parent: Fid,
        /// The new name.
        name: String,
        /// Type and permission bits (`S_IFREG | 0o644`, ...).
        mode: u32,
        /// Device number (devices only).
        rdev: u64,
        /// Owner.
        uid: u32,
        /// Group.
        gid: u32,
        /// Timestamp.
        time: Timestamp,
        /// A symlink's target.
        symlink: String,
        /// Striping for a regular file or a new directory's default.
        stripe: Option<StripeSpec>,
        /// The new object's FID, allocated by the client from a sequence
        /// MDT0 granted it (`SEQ_QUERY`); `None`: the MDT picks one.
        fid: Option<Fid>,
        /// Set in a replay: what the original reply said.
        replay: Option<CreateReplay>,
        /// The client has a callback service and wants a protected-read
        /// LOOKUP|UPDATE lock on the directory this creates: while it
        /// holds it, it knows every name in the directory (it made them
        /// all) and answers lookups of others itself.
        lock: bool,
    },
    /// Change attributes.
    Setattr {
        /// The object.
        fid: Fid,
        /// Which fields apply ([`attr_valid`]).
        valid: u32,
        /// Permission bits.
        mode: u32,
        /// Owner.
        uid: u32,
        /// Group.
        gid: u32,
        /// Size.
        size: u64,
        /// Access time.
        atime: Timestamp,
        /// Modification time.
        mtime: Timestamp,
        /// Change time.
        ctime: Timestamp,
        /// A directory's default striping.
        default_stripe: Option<StripeSpec>,
    },
    /// Add a hard link to `fid` as `parent/name`.
    Link {
        /// The object.
        fid: Fid,
        /// The directory.
        parent: Fid,
        /// The new name.
        name: String,
        /// Timestamp.
        time: Timestamp,
    },
    /// Remove `parent/name` (a file, or an empty directory when `dir`).
    Unlink {
        /// The directory.
        parent: Fid,
        /// The name.
        name: String,
        /// rmdir (the name must be a directory) rather than unlink.
        dir: bool,
        /// Timestamp.
        time: Timestamp,
    },
    /// Rename `src_parent/src_name` to `dst_parent/dst_name`, replacing a
    /// compatible target.
    Rename {
        /// Source directory.
        src_parent: Fid,
        /// Source name.
        src_name: String,
        /// Target directory.
        dst_parent: Fid,
        /// Target name.
        dst_name: String,
        /// Timestamp.
        time: Timestamp,
    },
    /// Open `parent/name` (by name) or `fid` (when `by_fid`), creating it
    /// with `CREAT`.
    Open {
        /// The directory.
        parent: Fid,
        /// The name.
        name: String,
        /// Open by FID instead of by name.
        by_fid: Option<Fid>,
        /// [`open_flags`].
        flags: u32,
        /// Mode for a create.
        mode: u32,
        /// Owner for a create.
        uid: u32,
        /// Group for a create.
        gid: u32,
        /// Timestamp.
        time: Timestamp,
        /// Striping for a create.
        stripe: Option<StripeSpec>,
        /// The FID a create gives the file (client-allocated, as
        /// [`ReintReq::Create`]'s); `None`: the MDT picks one.
        fid: Option<Fid>,
        /// Set in a replay: what the original reply said.
        replay: Option<OpenReplay>,
    },
    /// Set or remove an extended attribute.
    Setxattr {
        /// The object.
        fid: Fid,
        /// The attribute's name.
        name: String,
        /// Its value.
        value: Vec<u8>,
        /// [`xattr_flags`].
        flags: u32,
    },
}

impl ReintReq {
    /// A plain create of `parent/name` with `mode` as root (no symlink
    /// target, default striping), with the FID `fid` the client chose or
    /// the MDT's; time 1 s (tools and tests).
    pub fn plain_create(parent: Fid, name: impl Into<String>, mode: u32, fid: Option<Fid>) -> ReintReq {
        ReintReq::Create {
            parent,
            name: name.into(),
            mode,
            rdev: 0,
            uid: 0,
            gid: 0,
            time: Timestamp::secs(1),
            symlink: String::new(),
            stripe: None,
            fid,
            replay: None,
            lock: false,
        }
    }

    /// The reint sub-operation this request is.
    pub fn op(&self) -> super::ReintOp {
        use super::ReintOp;
        match self {
            ReintReq::Create { .. } => ReintOp::Create,
            ReintReq::Setattr { .. } => ReintOp::Setattr,
            ReintReq::Link { .. } => ReintOp::Link,
            ReintReq::Unlink { .. } => ReintOp::Unlink,
            ReintReq::Rename { .. } => ReintOp::Rename,
            ReintReq::Open { .. } => ReintOp::Open,
            ReintReq::Setxattr { .. } => ReintOp::Setxattr,
        }
    }
}

/// What a replayed create carries from its original reply.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
#[rkyv(derive(Debug))]
pub struct CreateReplay {
    /// The layout the MDT gave the file: a replay that has to create the
    /// file again reuses these objects instead of allocating new ones.
    pub layout: Option<Layout>,
}

/// What a replayed open carries from its original reply.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
#[rkyv(derive(Debug))]
pub struct OpenReplay {
    /// The file opened: the replay opens it by FID when it exists (it may
    /// have been renamed or unlinked since), else creates it again (with
    /// `CREAT`).
    pub fid: Fid,
    /// The open handle the MDT answered: the replay restores it, so the
    /// client's later close still names it.
    pub handle: u64,
    /// The file's layout as answered (reused if the file is created again).
    pub layout: Option<Layout>,
}

/// The import's replay fixup for `MDS_REINT` (`ptlrpc::import::ReplayFixup`;
/// bodies are `MdsReq<ReintReq>`, replayed with their original caller): a create's or open's kept body gets [`CreateReplay`] or [`OpenReplay`]
/// from its reply; other requests are replayed as sent (`None`).
pub fn reint_replay_fixup(request: &[u8], reply: &[u8]) -> Option<Vec<u8>> {
    let decode = |b: &[u8]| {
        let mut a = rkyv::util::AlignedVec::<{ crate::wire::BODY_ALIGN }>::with_capacity(b.len());
        a.extend_from_slice(b);
        a
    };
    let mut req = rkyv::from_bytes::<MdsReq<ReintReq>, rkyv::rancor::Error>(&decode(request)).ok()?;
    let rep = rkyv::from_bytes::<ReintReply, rkyv::rancor::Error>(&decode(reply)).ok()?;
    match &mut req.req {
        ReintReq::Create { replay, .. } => *replay = Some(CreateReplay { layout: rep.layout }),
        ReintReq::Open { replay, .. } => {
            *replay = Some(OpenReplay { fid: rep.attr?.fid, handle: rep.handle, layout: rep.layout });
        }
        _ => return None,
    }
    rkyv::to_bytes::<rkyv::rancor::Error>(&req).ok().map(|b| b.to_vec())
}

/// Reply to `MDS_REINT`.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
#[rkyv(derive(Debug))]
pub struct ReintReply {
    /// The created, opened or changed object's attributes.
    pub attr: Option<MdtAttr>,
    /// A regular file's layout (create, open).
    pub layout: Option<Layout>,
    /// The open handle (open), 0 otherwise.
    pub handle: u64,
    /// The objects' versions before the operation (parent first).
    pub pre_versions: Vec<u64>,
    /// The version the operation gave them.
    pub post_version: u64,
    /// Locks granted with it: on a file an open created when the open
    /// asked ([`open_flags::LOCK`]). Never in a reconstructed reply.
    pub locks: Vec<super::ldlm::LdlmLockDesc>,
}

/// What the closer of a handle opened for writing saw of the file's
/// objects after its writes landed (a glimpse): the MDT keeps it as the
/// exact size when this was the last writer (size on MDT).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[rkyv(derive(Debug))]
pub struct SomAttr {
    /// The file's size.
    pub size: u64,
    /// Space used, 512-byte blocks.
    pub blocks: u64,
    /// The objects' latest modification.
    pub mtime: Timestamp,
}

/// `MDS_CLOSE`.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct CloseReq {
    /// The open handle.
    pub handle: u64,
    /// A write handle's view of the objects at close (`None`: a read
    /// handle, or the closer could not tell).
    pub som: Option<SomAttr>,
}

/// `MDS_READPAGE`: entries of `fid` from `cookie` on.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct ReaddirReq {
    /// The directory.
    pub fid: Fid,
    /// Where to continue (0: the start; else a previous reply's `next`).
    pub cookie: u64,
    /// Entries wanted at most.
    pub max_entries: u32,
}

/// One directory entry.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct DirEntry {
    /// The name.
    pub name: String,
    /// The object.
    pub fid: Fid,
    /// Its type (`mode >> 12`, as in `S_IFMT`).
    pub kind: u8,
    /// This entry's stable cookie.
    pub cookie: u64,
}

/// Reply to `MDS_READPAGE`.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
#[rkyv(derive(Debug))]
pub struct ReaddirReply {
    /// The entries, in cookie order.
    pub entries: Vec<DirEntry>,
    /// The cookie to continue from.
    pub next: u64,
    /// No entries follow.
    pub end: bool,
}

/// Reply to `MDS_STATFS`.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
#[rkyv(derive(Debug))]
pub struct StatfsReply {
    /// Inodes in use.
    pub files: u64,
    /// Inodes free (an estimate: the store is not bounded by inodes).
    pub ffree: u64,
    /// OST space, KiB.
    pub kbytes: u64,
    /// OST space free, KiB.
    pub kbytes_free: u64,
    /// OSTs that take new objects.
    pub osts_active: u32,
}

/// `MDS_GETXATTR`: one attribute, or the list when `name` is empty.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct GetxattrReq {
    /// The object.
    pub fid: Fid,
    /// The attribute ("" lists names).
    pub name: String,
}

/// Reply to `MDS_GETXATTR`.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
#[rkyv(derive(Debug))]
pub struct XattrReply {
    /// The value (get).
    pub value: Vec<u8>,
    /// The names (list).
    pub names: Vec<String>,
}

/// `MDS_GET_INFO`: a named value of the MDT, optionally waiting (bounded)
/// until it reaches `at_least`. Keys: `config_applied` (config-log records
/// applied, waits), `osts_usable` (OSTs taking objects, waits until exactly
/// `at_least`), `last_committed`, `process_destroys` (sends the logged OST
/// destroys now; the value is what is still pending).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct GetInfoReq {
    /// The key.
    pub key: String,
    /// Wait until the value is at least this.
    pub at_least: u64,
    /// For at most this long (ms).
    pub wait_ms: u32,
}

/// An OST as an MDT sees it.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct MdtOstState {
    /// OST index.
    pub index: u32,
    /// Activated in the config log.
    pub active: bool,
    /// Reached (space known).
    pub connected: bool,
    /// The object sequence this MDT creates in on it (0: none yet).
    pub seq: u64,
    /// Last object id allocated in that sequence.
    pub last_used: u64,
}

/// Reply to `MDS_GET_INFO`.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
#[rkyv(derive(Debug))]
pub struct GetInfoReply {
    /// The value.
    pub value: u64,
    /// The MDT's OSTs.
    pub osts: Vec<MdtOstState>,
    /// Pools and their OSTs, as `name` and indices.
    pub pools: Vec<(String, Vec<u32>)>,
    /// `check`: every inconsistency found, one line each (the value is
    /// their count).
    pub problems: Vec<String>,
}

/// `SEQ_QUERY` operations (Lustre's `seq_op`).
pub mod seq_op {
    /// A sequence range for a client's (or an MDT's) FIDs.
    pub const ALLOC_META: u32 = 1;
}

/// `SEQ_QUERY`: ask MDT0's sequence controller for `count` sequences.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct SeqQueryReq {
    /// [`seq_op`].
    pub op: u32,
    /// Sequences wanted (the controller may grant fewer, never 0).
    pub count: u32,
}

/// Reply to `SEQ_QUERY` (Lustre's `lu_seq_range`): the sequences
/// `start..end`, each holding object ids `1..width`. Granted durably:
/// never handed out again, also across an MDT crash.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[rkyv(derive(Debug))]
pub struct SeqRange {
    /// First sequence.
    pub start: u64,
    /// One past the last sequence.
    pub end: u64,
    /// Object ids per sequence.
    pub width: u32,
    /// The granting MDT's index.
    pub mdt_index: u32,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Frame, Header, MsgKind, Op, WireBody, Xid, encode};

    fn frame_of<B>(op: Op, body: &B) -> rkyv::util::AlignedVec<{ crate::wire::BODY_ALIGN }>
    where
        B: WireBody,
    {
        encode(&Header::new(MsgKind::Request, op.opcode(), Xid(1)), body).expect("encodes")
    }

    #[test]
    fn only_a_regular_file_without_som_has_its_size_elsewhere() {
        let f = |mode, flags| MdtAttr { mode, flags, ..MdtAttr::default() }.size_exact();
        assert!(!f(0o100_644, 0), "a file: the OSTs know");
        assert!(f(0o100_644, attr_flags::SOM_EXACT), "a file whose size the MDT knows");
        assert!(f(0o040_755, 0) && f(0o120_777, 0), "a directory, a symlink");
    }

    #[test]
    fn fid_is_pinned_and_round_trips_through_u128() {
        assert_eq!(size_of::<ArchivedFid>(), 16);
        let f = Fid { seq: 0x0102_0304_0506_0708, oid: 0x0a0b_0c0d, ver: 1 };
        let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(&f).expect("archives");
        #[rustfmt::skip]
        let golden: [u8; 16] = [8, 7, 6, 5, 4, 3, 2, 1,  0x0d, 0x0c, 0x0b, 0x0a,  1, 0, 0, 0];
        assert_eq!(&bytes[..], &golden[..]);
        assert_eq!(Fid::from_u128(f.as_u128()), f);
        assert!(Fid::ROOT.as_u128() < Fid { seq: 0x2_0000_0400, oid: 1, ver: 0 }.as_u128());
    }

    #[test]
    fn reint_round_trips_and_truncation_is_rejected() {
        let reqs = [
            ReintReq::Create {
                parent: Fid::ROOT,
                name: "a".into(),
                mode: 0o100644,
                rdev: 0,
                uid: 1,
                gid: 2,
                time: Timestamp::secs(3),
                symlink: String::new(),
                stripe: Some(StripeSpec { stripe_size: 1 << 20, stripe_count: 2, stripe_offset: -1, pool: "p".into() }),
                fid: Some(Fid { seq: 0x2_0000_0401, oid: 3, ver: 0 }),
                replay: Some(CreateReplay { layout: None }),
                lock: false,
            },
            ReintReq::Rename {
                src_parent: Fid::ROOT,
                src_name: "a".into(),
                dst_parent: Fid { seq: 9, oid: 1, ver: 0 },
                dst_name: "b".into(),
                time: Timestamp { sec: 4, nsec: 5 },
            },
            ReintReq::Setxattr {
                fid: Fid::ROOT,
                name: "user.x".into(),
                value: vec![1, 2, 3],
                flags: xattr_flags::CREATE,
            },
        ];
        for r in reqs {
            let bytes = frame_of(Op::MdsReint, &r);
            let f = Frame::parse(&bytes).expect("parses");
            assert_eq!(f.deserialize::<ReintReq>().expect("validates"), r);
            let short = &f.body_bytes()[..f.body_bytes().len() - 3];
            assert!(rkyv::from_bytes::<ReintReq, rkyv::rancor::Error>(short).is_err());
        }
        assert_eq!(
            ReintReq::Unlink { parent: Fid::ROOT, name: "x".into(), dir: true, time: Timestamp::default() }.op(),
            crate::wire::ReintOp::Unlink
        );
    }

    #[test]
    fn the_replay_fixup_writes_the_reply_into_creates_and_opens() {
        let layout = Layout {
            stripe_size: 1 << 20,
            pool: String::new(),
            objects: vec![StripeObj { ost: 1, id: crate::wire::OstId::new(0x2_0000_0401, 7) }],
        };
        let fid = Fid { seq: 0x2_0000_0401, oid: 3, ver: 0 };
        let rep = ReintReply {
            attr: Some(MdtAttr { fid, mode: 0o100644, nlink: 1, ..MdtAttr::default() }),
            layout: Some(layout.clone()),
            handle: 42,
            ..ReintReply::default()
        };
        let creds = Creds { uid: 7, gid: 8, groups: vec![9] };
        let bytes = |b: &ReintReq| {
            let r = MdsReq::new(creds.clone(), b.clone());
            rkyv::to_bytes::<rkyv::rancor::Error>(&r).expect("archives").to_vec()
        };
        let rep = rkyv::to_bytes::<rkyv::rancor::Error>(&rep).expect("archives").to_vec();
        let open = ReintReq::Open {
            parent: Fid::ROOT,
            name: "f".into(),
            by_fid: None,
            flags: open_flags::CREAT,
            mode: 0o100644,
            uid: 0,
            gid: 0,
            time: Timestamp::secs(1),
            stripe: None,
            fid: Some(fid),
            replay: None,
        };
        let fixed = reint_replay_fixup(&bytes(&open), &rep).expect("an open is rewritten");
        let mut a = rkyv::util::AlignedVec::<16>::new();
        a.extend_from_slice(&fixed);
        let fixed = rkyv::from_bytes::<MdsReq<ReintReq>, rkyv::rancor::Error>(&a).expect("decodes");
        assert_eq!(fixed.creds, creds, "replayed as the original caller");
        match fixed.req {
            ReintReq::Open { replay: Some(r), name, .. } => {
                assert_eq!((r.fid, r.handle, r.layout), (fid, 42, Some(layout)));
                assert_eq!(name, "f");
            }
            other => panic!("{other:?}"),
        }
        let unlink = ReintReq::Unlink { parent: Fid::ROOT, name: "f".into(), dir: false, time: Timestamp::secs(0) };
        assert_eq!(reint_replay_fixup(&bytes(&unlink), &rep), None, "replayed as sent");
    }

    #[test]
    fn replies_round_trip() {
        let rep = ReintReply {
            attr: Some(MdtAttr { fid: Fid::ROOT, mode: 0o40755, nlink: 2, ..MdtAttr::default() }),
            layout: Some(Layout {
                stripe_size: 1 << 20,
                pool: String::new(),
                objects: vec![StripeObj { ost: 1, id: crate::wire::OstId::new(0x2_0000_0401, 7) }],
            }),
            handle: 5,
            pre_versions: vec![1, 2],
            post_version: 3,
            locks: vec![crate::wire::ldlm::LdlmLockDesc { handle: 9, res: Fid::ROOT, mode: 4, bits: 3 }],
        };
        let bytes = frame_of(Op::MdsReint, &rep);
        assert_eq!(Frame::parse(&bytes).expect("parses").deserialize::<ReintReply>().expect("validates"), rep);
        let rd = ReaddirReply {
            entries: vec![DirEntry { name: "n".into(), fid: Fid::ROOT, kind: 4, cookie: 99 }],
            next: 100,
            end: true,
        };
        let bytes = frame_of(Op::MdsReadpage, &rd);
        assert_eq!(Frame::parse(&bytes).expect("parses").deserialize::<ReaddirReply>().expect("validates"), rd);
    }

    #[test]
    fn times_and_close_are_pinned() {
        assert_eq!(size_of::<ArchivedTimestamp>(), 16);
        let t = Timestamp { sec: 0x0102_0304_0506_0708, nsec: 999_999_999 };
        let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(&t).expect("archives");
        #[rustfmt::skip]
        let golden: [u8; 16] = [8, 7, 6, 5, 4, 3, 2, 1,  0xff, 0xc9, 0x9a, 0x3b,  0, 0, 0, 0];
        assert_eq!(&bytes[..], &golden[..]);
        let recent = Timestamp { sec: 1_795_000_000, nsec: 123_456_789 };
        assert_eq!(Timestamp::from_nanos(recent.as_nanos()), recent);
        assert!(Timestamp { sec: 1, nsec: 5 } < Timestamp { sec: 1, nsec: 6 });
        assert!(Timestamp { sec: 1, nsec: 999 } < Timestamp::secs(2));
        assert_eq!(Timestamp::secs(-1).as_nanos(), 0);

        let c = CloseReq {
            handle: 0x11,
            som: Some(SomAttr { size: 0x22, blocks: 0x33, mtime: Timestamp { sec: 0x44, nsec: 0x55 } }),
        };
        let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(&c).expect("archives");
        #[rustfmt::skip]
        let golden: [u8; 48] = [
            0x11, 0, 0, 0, 0, 0, 0, 0,                  // handle
            1, 0, 0, 0, 0, 0, 0, 0,                     // Some
            0x22, 0, 0, 0, 0, 0, 0, 0,                  // size
            0x33, 0, 0, 0, 0, 0, 0, 0,                  // blocks
            0x44, 0, 0, 0, 0, 0, 0, 0,  0x55, 0, 0, 0,  0, 0, 0, 0, // mtime
        ];
        assert_eq!(&bytes[..], &golden[..]);
        let f = frame_of(Op::MdsClose, &c);
        assert_eq!(Frame::parse(&f).expect("parses").deserialize::<CloseReq>().expect("validates"), c);
    }

    #[test]
    fn attr_layout_is_pinned() {
        // fid 16, mode nlink uid gid 16, rdev size 16, three times 48,
        // version blocks 16, flags 4 + padding 4.
        assert_eq!(size_of::<ArchivedMdtAttr>(), 120);
        let a = MdtAttr {
            fid: Fid { seq: 1, oid: 2, ver: 3 },
            mtime: Timestamp { sec: 7, nsec: 8 },
            blocks: 9,
            flags: attr_flags::SOM_EXACT,
            ..MdtAttr::default()
        };
        let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(&a).expect("archives");
        assert_eq!(bytes.len(), 120);
        assert_eq!(&bytes[64..80], &[7, 0, 0, 0, 0, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0][..], "mtime");
        assert_eq!(&bytes[104..112], &[9, 0, 0, 0, 0, 0, 0, 0][..], "blocks");
        assert_eq!(&bytes[112..116], &[1, 0, 0, 0][..], "flags");
    }

    #[test]
    fn creds_and_the_request_wrapper_are_pinned() {
        let c = Creds { uid: 0x0102_0304, gid: 0x0506_0708, groups: vec![0x0a, 0x0b] };
        assert!(c.in_group(0x0506_0708) && c.in_group(0x0b) && !c.in_group(0x0c));
        let r = MdsReq::new(c.clone(), GetattrReq { fid: Fid { seq: 1, oid: 2, ver: 3 }, access: 5 });
        let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(&r).expect("archives");
        #[rustfmt::skip]
        let golden: [u8; 64] = [
            0x0a, 0, 0, 0,  0x0b, 0, 0, 0,              // the groups (out of line, first)
            4, 3, 2, 1,  8, 7, 6, 5,                    // uid, gid
            0xf0, 0xff, 0xff, 0xff,  2, 0, 0, 0,        // groups: relative pointer -16, length 2
            1, 0, 0, 0, 0, 0, 0, 0,  2, 0, 0, 0,  3, 0, 0, 0, // fid
            5, 0, 0, 0,  0, 0, 0, 0,                    // access, padding
            0xd8, 0xff, 0xff, 0xff,  0, 0, 0, 0,        // early lock cancels: none
            0xd0, 0xff, 0xff, 0xff,  0, 0, 0, 0,        // locks kept: none
        ];
        assert_eq!(&bytes[..], &golden[..]);
        let f = frame_of(Op::MdsGetattr, &r);
        assert_eq!(Frame::parse(&f).expect("parses").deserialize::<MdsReq<GetattrReq>>().expect("validates"), r);
        assert_eq!(Creds::default(), Creds::ROOT);
    }

    #[test]
    fn seq_bodies_are_pinned() {
        let q = SeqQueryReq { op: seq_op::ALLOC_META, count: 2 };
        let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(&q).expect("archives");
        assert_eq!(&bytes[..], &[1, 0, 0, 0, 2, 0, 0, 0][..]);
        let r = SeqRange { start: 0x0102_0304_0506_0708, end: 0x0102_0304_0506_070a, width: 0x2_0000, mdt_index: 1 };
        let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(&r).expect("archives");
        #[rustfmt::skip]
        let golden: [u8; 24] = [
            8, 7, 6, 5, 4, 3, 2, 1,
            0x0a, 7, 6, 5, 4, 3, 2, 1,
            0, 0, 2, 0,
            1, 0, 0, 0,
        ];
        assert_eq!(&bytes[..], &golden[..]);
        let f = frame_of(Op::SeqQuery, &r);
        assert_eq!(Frame::parse(&f).expect("parses").deserialize::<SeqRange>().expect("validates"), r);
    }
}
