//! Inodes as stored: attributes, version, layout and a directory's
//! default striping, keyed by FID.
//!
//! Owns: [`Inode`], file types ([`Kind`]), and the conversion to the wire
//! attributes.
//!
//! Must not: change itself; the namespace (`ns`) decides every change.

use ptlrpc::wire::Fid;
use ptlrpc::wire::mds::{Layout, MdtAttr, StripeSpec, Timestamp};
use rkyv::{Archive, Deserialize, Serialize};

/// `S_IFMT`.
pub const S_IFMT: u32 = 0o170000;
/// Directory.
pub const S_IFDIR: u32 = 0o040000;
/// Regular file.
pub const S_IFREG: u32 = 0o100000;
/// Symbolic link.
pub const S_IFLNK: u32 = 0o120000;

/// An inode's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Directory.
    Dir,
    /// Regular file.
    File,
    /// Symbolic link.
    Symlink,
    /// Device, FIFO or socket.
    Special,
}

impl Kind {
    /// The type of `mode`; `None` for a mode with no valid type.
    pub fn of(mode: u32) -> Option<Kind> {
        match mode & S_IFMT {
            S_IFDIR => Some(Kind::Dir),
            S_IFREG => Some(Kind::File),
            S_IFLNK => Some(Kind::Symlink),
            0o020000 | 0o060000 | 0o010000 | 0o140000 => Some(Kind::Special),
            _ => None,
        }
    }
}

/// An inode.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct Inode {
    /// Its FID.
    pub fid: Fid,
    /// A directory's parent (for rename loop checks); a file's first parent.
    pub parent: Fid,
    /// Type and permissions.
    pub mode: u32,
    /// Links (directories: 2 + subdirectories).
    pub nlink: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Device number.
    pub rdev: u64,
    /// Size (files: as last set; symlinks: target length).
    pub size: u64,
    /// Directory entries (directories).
    pub entries: u64,
    /// Access time.
    pub atime: Timestamp,
    /// Modification time.
    pub mtime: Timestamp,
    /// Change time.
    pub ctime: Timestamp,
    /// Version, `epoch << 32 | transno` of the last change that set it.
    pub version: u64,
    /// Symlink target.
    pub symlink: String,
    /// A regular file's layout (None: no objects, e.g. no OSTs yet).
    pub layout: Option<Layout>,
    /// A directory's default striping, inherited by what is created in it.
    pub default_stripe: Option<StripeSpec>,
}

impl Inode {
    /// Its type (an inode with a bad mode reads as special).
    pub fn kind(&self) -> Kind {
        Kind::of(self.mode).unwrap_or(Kind::Special)
    }

    /// A directory.
    pub fn is_dir(&self) -> bool {
        self.kind() == Kind::Dir
    }

    /// The wire attributes.
    pub fn attr(&self) -> MdtAttr {
        MdtAttr {
            fid: self.fid,
            mode: self.mode,
            nlink: self.nlink,
            uid: self.uid,
            gid: self.gid,
            rdev: self.rdev,
            size: if self.is_dir() { self.entries } else { self.size },
            atime: self.atime,
            mtime: self.mtime,
            ctime: self.ctime,
            version: self.version,
            blocks: 0,
            flags: 0,
        }
    }
}
