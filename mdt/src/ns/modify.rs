//! Modifying operations: create (files, directories, symlinks, devices),
//! link, unlink/rmdir, rename, setattr and xattrs.
//!
//! Each checks its caller's permissions (`crate::perm`) under the write
//! lock, on the inodes it changes; the variants without `_as` (and
//! [`CreateArgs`]/[`SetattrArgs`] with default credentials) act as root.
//! A replayed create is not checked again.
//!
//! Must not: write anything outside the operation's one batch.

use ptlrpc::wire::Fid;
use ptlrpc::wire::mds::{Creds, Layout, StripeSpec, Timestamp, attr_valid, xattr_flags};

use super::{Done, Namespace, Tx, Writer, fid_end, xattr_key};
use crate::dir::{self, Dirent};
use crate::error::{MdtError, Result, errno};
use crate::fid;
use crate::inode::{Inode, Kind, S_IFMT};
use crate::perm;
use crate::store::{Table, scan};

/// A create request.
#[derive(Debug, Clone, Default)]
pub struct CreateArgs {
    /// The caller (default: root).
    pub creds: Creds,
    /// Type and permission bits.
    pub mode: u32,
    /// Device number.
    pub rdev: u64,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Timestamp.
    pub time: Timestamp,
    /// A symlink's target.
    pub symlink: String,
    /// Striping (a file's own, or a new directory's default).
    pub stripe: Option<StripeSpec>,
    /// The FID the client allocated from a sequence granted to it (`None`:
    /// the MDT allocates one from its own sequence).
    pub fid: Option<Fid>,
    /// The client creating (its export UUID; [`super::LOCAL`] embedded):
    /// a FID it names must come from its grants (`crate::seq`).
    pub client: String,
    /// A replay's original layout (`Some(None)`: it had no objects): its
    /// objects are claimed rather than new ones allocated.
    pub replay_layout: Option<Option<Layout>>,
}

/// A setattr request (fields apply per `valid`, [`attr_valid`]).
#[derive(Debug, Clone, Default)]
pub struct SetattrArgs {
    /// The caller (default: root).
    pub creds: Creds,
    /// Which fields.
    pub valid: u32,
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
    /// Change time.
    pub ctime: Timestamp,
    /// A directory's default striping.
    pub default_stripe: Option<StripeSpec>,
}

fn kind_byte(mode: u32) -> u8 {
    ((mode & S_IFMT) >> 12) as u8
}

impl Namespace {
    /// create/mkdir/mknod/symlink: `name` in `parent`. Returns the new
    /// inode and what the transaction did.
    pub fn create(&self, parent: Fid, name: &str, a: &CreateArgs) -> Result<(Inode, Done)> {
        dir::check_name(name)?;
        let kind = Kind::of(a.mode).ok_or_else(|| MdtError::posix(errno::EINVAL, "mode has no file type"))?;
        if kind == Kind::Symlink && (a.symlink.is_empty() || a.symlink.len() > 4096) {
            return Err(MdtError::posix(errno::EINVAL, "symlink target must be 1..=4096 bytes"));
        }
        let mut w = self.w.lock();
        let mut p = self.dir_inode(parent)?;
        let replay = a.replay_layout.is_some();
        if !replay {
            perm::may_lookup(&a.creds, &p)?;
        }
        let cookie = dir::slot_for_new(&*self.kv, parent, name)?;
        if !replay {
            perm::may_create(&a.creds, &p)?;
            perm::may_mknod(&a.creds, a.mode)?;
        }
        let (uid, gid, mode) = perm::new_owner(&a.creds, &p, a.uid, a.gid, a.mode);
        let mut tx = self.begin();
        let layout: Option<Layout> = if kind == Kind::File {
            match &a.replay_layout {
                Some(Some(l)) => Some(self.alloc.claim(l, &mut tx.b, &mut tx.held.taken)?),
                Some(None) => None,
                None => {
                    let spec = self.alloc.resolve(a.stripe.as_ref(), p.default_stripe.as_ref());
                    self.alloc.allocate(&spec, &mut tx.b, &mut tx.held.taken)?
                }
            }
        } else {
            None
        };
        let f = match a.fid {
            Some(f) => {
                self.check_client_fid(&w, &a.client, f, a.replay_layout.is_some())?;
                f
            }
            None => self.own_fid(&mut w)?,
        };
        let mut child = Inode {
            fid: f,
            parent,
            mode,
            nlink: if kind == Kind::Dir { 2 } else { 1 },
            uid,
            gid,
            rdev: a.rdev,
            size: if kind == Kind::Symlink { a.symlink.len() as u64 } else { 0 },
            atime: a.time,
            mtime: a.time,
            ctime: a.time,
            symlink: if kind == Kind::Symlink { a.symlink.clone() } else { String::new() },
            layout,
            default_stripe: if kind == Kind::Dir {
                a.stripe.clone().or_else(|| p.default_stripe.clone())
            } else {
                None
            },
            ..Inode::default()
        };
        tx.version(&mut p);
        tx.version(&mut child);
        p.entries += 1;
        if kind == Kind::Dir {
            p.nlink += 1;
        }
        p.mtime = a.time;
        p.ctime = a.time;
        tx.put_inode(&p);
        tx.put_inode(&child);
        tx.put_dirent(parent, cookie, &Dirent { name: name.to_string(), fid: f, kind: kind_byte(a.mode) });
        let done = self.finish(&mut w, tx)?;
        Ok((child, done))
    }

    /// link: a new name `parent/name` for `target` (not a directory), as root.
    pub fn link(&self, target: Fid, parent: Fid, name: &str, time: Timestamp) -> Result<Done> {
        self.link_as(&Creds::ROOT, target, parent, name, time)
    }

    /// [`Namespace::link`] for `c`: write and search permission on `parent`.
    pub fn link_as(&self, cr: &Creds, target: Fid, parent: Fid, name: &str, time: Timestamp) -> Result<Done> {
        dir::check_name(name)?;
        let mut w = self.w.lock();
        let mut p = self.dir_inode(parent)?;
        perm::may_lookup(cr, &p)?;
        let mut c = self.inode(target)?;
        let cookie = dir::slot_for_new(&*self.kv, parent, name)?;
        perm::may_create(cr, &p)?;
        if c.is_dir() {
            return Err(MdtError::posix(errno::EPERM, "hard link to a directory"));
        }
        if c.nlink == 0 {
            return Err(MdtError::posix(errno::ENOENT, "link to an unlinked file"));
        }
        let mut tx = self.begin();
        tx.version(&mut p);
        tx.version(&mut c);
        c.nlink += 1;
        c.ctime = time;
        p.entries += 1;
        p.mtime = time;
        p.ctime = time;
        tx.put_inode(&p);
        tx.put_inode(&c);
        tx.put_dirent(parent, cookie, &Dirent { name: name.to_string(), fid: target, kind: kind_byte(c.mode) });
        self.finish(&mut w, tx)
    }

    /// unlink (`dir == false`) or rmdir (`dir == true`) of `parent/name`, as root.
    pub fn unlink(&self, parent: Fid, name: &str, dir: bool, time: Timestamp) -> Result<Done> {
        self.unlink_as(&Creds::ROOT, parent, name, dir, time)
    }

    /// [`Namespace::unlink`] for `cr`: write and search permission on
    /// `parent`, and the sticky-bit rule.
    pub fn unlink_as(&self, cr: &Creds, parent: Fid, name: &str, dir: bool, time: Timestamp) -> Result<Done> {
        let mut w = self.w.lock();
        let mut p = self.dir_inode(parent)?;
        perm::may_lookup(cr, &p)?;
        let (cookie, ent) = dir::lookup(&*self.kv, parent, name)?
            .ok_or_else(|| MdtError::posix(errno::ENOENT, format!("no {name:?} in {parent}")))?;
        let mut c = self.inode(ent.fid)?;
        perm::may_delete(cr, &p, &c)?;
        match (dir, c.is_dir()) {
            (true, false) => return Err(MdtError::posix(errno::ENOTDIR, format!("{name:?} is not a directory"))),
            (false, true) => return Err(MdtError::posix(errno::EISDIR, format!("{name:?} is a directory"))),
            (true, true) if c.entries > 0 => {
                return Err(MdtError::posix(errno::ENOTEMPTY, format!("{name:?} is not empty")));
            }
            _ => {}
        }
        let mut tx = self.begin();
        tx.version(&mut p);
        tx.version(&mut c);
        tx.b.del(Table::Dirents, dir::key(parent, cookie).to_vec());
        p.entries = p.entries.saturating_sub(1);
        if c.is_dir() {
            p.nlink = p.nlink.saturating_sub(1);
        }
        p.mtime = time;
        p.ctime = time;
        tx.put_inode(&p);
        self.drop_link(&mut w, &mut tx, c, time)?;
        self.finish(&mut w, tx)
    }

    /// One name of `c` is gone: a directory or a file's last link is
    /// destroyed (or kept as an orphan while open).
    fn drop_link(&self, w: &mut Writer, tx: &mut Tx, mut c: Inode, time: Timestamp) -> Result<()> {
        c.nlink = if c.is_dir() { 0 } else { c.nlink.saturating_sub(1) };
        c.ctime = time;
        if c.nlink > 0 {
            tx.put_inode(&c);
        } else if self.is_open(c.fid) {
            tx.b.put(Table::Orphans, fid::key(c.fid).to_vec(), Vec::new());
            tx.put_inode(&c);
        } else {
            self.destroy_inode(w, tx, &c)?;
        }
        Ok(())
    }

    /// Deletes `c`, its xattrs and orphan mark, and logs its objects for
    /// destruction — all in `tx`.
    pub(super) fn destroy_inode(&self, w: &mut Writer, tx: &mut Tx, c: &Inode) -> Result<()> {
        self.opens.lock().som.changed(c.fid);
        tx.b.del(Table::Inodes, fid::key(c.fid).to_vec());
        tx.b.del(Table::Orphans, fid::key(c.fid).to_vec());
        scan(&*self.kv, Table::Xattrs, &fid::key(c.fid), &fid_end(c.fid), |k, _| {
            tx.b.del(Table::Xattrs, k.to_vec());
            Ok(())
        })?;
        if let Some(l) = &c.layout {
            for o in &l.objects {
                tx.b.put(Table::DestroyLog, w.destroy_seq.to_be_bytes().to_vec(), super::destroy::record(o.ost, o.id));
                w.destroy_seq += 1;
            }
        }
        Ok(())
    }

    /// rename `sp/sn` to `dp/dn`, replacing a compatible target, as root.
    pub fn rename(&self, sp: Fid, sn: &str, dp: Fid, dn: &str, time: Timestamp) -> Result<Done> {
        self.rename_as(&Creds::ROOT, sp, sn, dp, dn, time)
    }

    /// [`Namespace::rename`] for `cr`: the source's name removed and the
    /// target's made or replaced (`perm::may_delete`, `perm::may_create`),
    /// and a directory moved to another parent writable by `cr`.
    pub fn rename_as(&self, cr: &Creds, sp: Fid, sn: &str, dp: Fid, dn: &str, time: Timestamp) -> Result<Done> {
        dir::check_name(dn)?;
        let mut w = self.w.lock();
        let mut src_dir = self.dir_inode(sp)?;
        let mut dst_dir = if dp == sp { None } else { Some(self.dir_inode(dp)?) };
        perm::may_lookup(cr, &src_dir)?;
        perm::may_lookup(cr, dst_dir.as_ref().unwrap_or(&src_dir))?;
        let (scookie, sent) = dir::lookup(&*self.kv, sp, sn)?
            .ok_or_else(|| MdtError::posix(errno::ENOENT, format!("no {sn:?} in {sp}")))?;
        let mut child = self.inode(sent.fid)?;
        let target = dir::lookup(&*self.kv, dp, dn)?;
        if let Some((_, t)) = &target
            && t.fid == sent.fid
        {
            return Ok(Done::default());
        }
        if child.is_dir() && dp != sp {
            let mut cur = dp;
            loop {
                if cur == child.fid {
                    return Err(MdtError::posix(errno::EINVAL, "rename of a directory into itself"));
                }
                if cur == Fid::ROOT {
                    break;
                }
                cur = self.inode(cur)?.parent;
            }
        }
        perm::may_delete(cr, &src_dir, &child)?;
        let dst = dst_dir.as_ref().unwrap_or(&src_dir);
        let mut victim = match &target {
            Some((_, t)) => {
                let v = self.inode(t.fid)?;
                perm::may_delete(cr, dst, &v)?;
                perm::may_move_dir(cr, &child, dp != sp)?;
                if child.is_dir() && !v.is_dir() {
                    return Err(MdtError::posix(errno::ENOTDIR, format!("{dn:?} is not a directory")));
                }
                if !child.is_dir() && v.is_dir() {
                    return Err(MdtError::posix(errno::EISDIR, format!("{dn:?} is a directory")));
                }
                if v.is_dir() && v.entries > 0 {
                    return Err(MdtError::posix(errno::ENOTEMPTY, format!("{dn:?} is not empty")));
                }
                Some(v)
            }
            None => {
                perm::may_create(cr, dst)?;
                perm::may_move_dir(cr, &child, dp != sp)?;
                None
            }
        };
        let dcookie = match &target {
            Some((c, _)) => *c,
            None => dir::free_cookie(&*self.kv, dp, dn)?,
        };
        let mut tx = self.begin();
        tx.version(&mut src_dir);
        if let Some(d) = dst_dir.as_mut() {
            tx.version(d);
        }
        tx.version(&mut child);
        if let Some(v) = victim.as_mut() {
            tx.version(v);
        }
        tx.b.del(Table::Dirents, dir::key(sp, scookie).to_vec());
        tx.put_dirent(dp, dcookie, &Dirent { name: dn.to_string(), fid: child.fid, kind: kind_byte(child.mode) });
        src_dir.entries = src_dir.entries.saturating_sub(1);
        src_dir.mtime = time;
        src_dir.ctime = time;
        {
            let d = dst_dir.as_mut().unwrap_or(&mut src_dir);
            if victim.is_none() {
                d.entries += 1;
            } else if victim.as_ref().is_some_and(Inode::is_dir) {
                d.nlink = d.nlink.saturating_sub(1);
            }
            d.mtime = time;
            d.ctime = time;
        }
        if child.is_dir()
            && let Some(d) = dst_dir.as_mut()
        {
            src_dir.nlink = src_dir.nlink.saturating_sub(1);
            d.nlink += 1;
        }
        child.parent = dp;
        child.ctime = time;
        tx.put_inode(&src_dir);
        if let Some(d) = &dst_dir {
            tx.put_inode(d);
        }
        tx.put_inode(&child);
        if let Some(v) = victim {
            self.drop_link(&mut w, &mut tx, v, time)?;
        }
        self.finish(&mut w, tx)
    }

    /// setattr. The version changes unless only times or size change.
    pub fn setattr(&self, f: Fid, a: &SetattrArgs) -> Result<(Inode, Done)> {
        let mut w = self.w.lock();
        let mut i = self.inode(f)?;
        let ask = perm::SetattrAsk { valid: a.valid, mode: a.mode, uid: a.uid, gid: a.gid };
        perm::may_setattr(&a.creds, &i, &ask)?;
        let new_gid = if a.valid & attr_valid::GID != 0 { a.gid } else { i.gid };
        let mode = perm::mode_after_setattr(&a.creds, &i, &ask, new_gid);
        let mut tx = self.begin();
        let versioned = attr_valid::MODE | attr_valid::UID | attr_valid::GID | attr_valid::DEFAULT_STRIPE;
        if a.valid & versioned != 0 {
            tx.version(&mut i);
        } else {
            tx.pre.push(i.version);
        }
        i.mode = mode;
        if a.valid & attr_valid::UID != 0 {
            i.uid = a.uid;
        }
        if a.valid & attr_valid::GID != 0 {
            i.gid = a.gid;
        }
        if a.valid & attr_valid::SIZE != 0 {
            if i.is_dir() {
                return Err(MdtError::posix(errno::EISDIR, "truncate of a directory"));
            }
            i.size = a.size;
        }
        if a.valid & attr_valid::ATIME != 0 {
            i.atime = a.atime;
        }
        if a.valid & attr_valid::MTIME != 0 {
            i.mtime = a.mtime;
        }
        if a.valid & attr_valid::CTIME != 0 {
            i.ctime = a.ctime;
        }
        if a.valid & (attr_valid::SIZE | attr_valid::MTIME) != 0 && i.kind() == Kind::File {
            // The objects change outside any write handle (truncate,
            // utimes, punch): the size on MDT is not exact any more.
            self.opens.lock().som.changed(f);
        }
        if a.valid & attr_valid::DEFAULT_STRIPE != 0 {
            if !i.is_dir() {
                return Err(MdtError::posix(errno::ENOTDIR, "default striping is for directories"));
            }
            i.default_stripe = a.default_stripe.clone();
        }
        tx.put_inode(&i);
        let done = self.finish(&mut w, tx)?;
        Ok((i, done))
    }

    /// setxattr / removexattr ([`xattr_flags`]), as root.
    pub fn setxattr(&self, f: Fid, name: &str, value: &[u8], flags: u32) -> Result<Done> {
        self.setxattr_as(&Creds::ROOT, f, name, value, flags)
    }

    /// [`Namespace::setxattr`] for `c` (`perm::may_xattr`).
    pub fn setxattr_as(&self, c: &Creds, f: Fid, name: &str, value: &[u8], flags: u32) -> Result<Done> {
        if name.is_empty() || name.len() > 255 {
            return Err(MdtError::posix(errno::EINVAL, "xattr name must be 1..=255 bytes"));
        }
        if value.len() > 64 << 10 {
            return Err(MdtError::posix(errno::EINVAL, "xattr value larger than 64 KiB"));
        }
        let mut w = self.w.lock();
        let mut i = self.inode(f)?;
        perm::may_xattr(c, &i, name, true)?;
        let key = xattr_key(f, name);
        let exists = self.kv.get(Table::Xattrs, &key)?.is_some();
        if flags & xattr_flags::REMOVE != 0 || flags & xattr_flags::REPLACE != 0 {
            if !exists {
                return Err(MdtError::posix(errno::ENODATA, format!("no xattr {name:?}")));
            }
        } else if flags & xattr_flags::CREATE != 0 && exists {
            return Err(MdtError::posix(errno::EEXIST, format!("xattr {name:?} exists")));
        }
        let mut tx = self.begin();
        tx.version(&mut i);
        if flags & xattr_flags::REMOVE != 0 {
            tx.b.del(Table::Xattrs, key);
        } else {
            tx.b.put(Table::Xattrs, key, value.to_vec());
        }
        tx.put_inode(&i);
        self.finish(&mut w, tx)
    }
}
