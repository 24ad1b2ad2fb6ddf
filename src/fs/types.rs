//! Records and keys of the namespace in the index (format: docs/FORMAT.md,
//! "Index schema v1"). Every record starts with a version byte.

use serde::{Deserialize, Serialize};

use super::error::{FsError, FsResult};
use crate::ces::ChunkId;

/// Inode number of the root directory.
pub const ROOT_INO: Ino = Ino(1);
/// Longest name in a directory, in bytes.
pub const NAME_MAX: usize = 255;
/// Default size of a file's chunks.
pub const DEFAULT_CHUNK_SIZE: u32 = 4 << 20;
/// Largest file size (2^63 − 1 would overflow offsets in places; 8 EiB − 1 chunk).
pub const MAX_FILE_SIZE: u64 = i64::MAX as u64 - (DEFAULT_CHUNK_SIZE as u64);
/// Most hard links to one inode.
pub const LINK_MAX: u32 = 65_000;

const RECORD_VERSION: u8 = 1;

/// What an inode is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FileKind {
    File,
    Dir,
    Symlink,
    Fifo,
    Socket,
    CharDev,
    BlockDev,
}

impl FileKind {
    /// From the S_IFMT bits of a mode.
    pub fn from_mode(mode: u32) -> Option<FileKind> {
        use nix::libc;
        Some(match mode & libc::S_IFMT {
            libc::S_IFREG | 0 => FileKind::File,
            libc::S_IFDIR => FileKind::Dir,
            libc::S_IFLNK => FileKind::Symlink,
            libc::S_IFIFO => FileKind::Fifo,
            libc::S_IFSOCK => FileKind::Socket,
            libc::S_IFCHR => FileKind::CharDev,
            libc::S_IFBLK => FileKind::BlockDev,
            _ => return None,
        })
    }

    /// The S_IFMT bits.
    pub fn mode_bits(self) -> u32 {
        use nix::libc;
        match self {
            FileKind::File => libc::S_IFREG,
            FileKind::Dir => libc::S_IFDIR,
            FileKind::Symlink => libc::S_IFLNK,
            FileKind::Fifo => libc::S_IFIFO,
            FileKind::Socket => libc::S_IFSOCK,
            FileKind::CharDev => libc::S_IFCHR,
            FileKind::BlockDev => libc::S_IFBLK,
        }
    }

    fn code(self) -> u8 {
        self as u8
    }

    fn from_code(c: u8) -> Option<FileKind> {
        [
            FileKind::File,
            FileKind::Dir,
            FileKind::Symlink,
            FileKind::Fifo,
            FileKind::Socket,
            FileKind::CharDev,
            FileKind::BlockDev,
        ]
        .get(usize::from(c))
        .copied()
    }
}

/// A timestamp: seconds and nanoseconds since the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Serialize, Deserialize)]
pub struct Time {
    pub secs: i64,
    pub nanos: u32,
}

impl Time {
    pub fn now() -> Time {
        Time::from_system(std::time::SystemTime::now())
    }

    pub fn from_system(t: std::time::SystemTime) -> Time {
        match t.duration_since(std::time::UNIX_EPOCH) {
            Ok(d) => Time {
                secs: d.as_secs() as i64,
                nanos: d.subsec_nanos(),
            },
            Err(e) => {
                let d = e.duration();
                if d.subsec_nanos() == 0 {
                    Time {
                        secs: -(d.as_secs() as i64),
                        nanos: 0,
                    }
                } else {
                    Time {
                        secs: -(d.as_secs() as i64) - 1,
                        nanos: 1_000_000_000 - d.subsec_nanos(),
                    }
                }
            }
        }
    }

    pub fn to_system(self) -> std::time::SystemTime {
        let base = std::time::UNIX_EPOCH;
        if self.secs >= 0 {
            base + std::time::Duration::new(self.secs as u64, self.nanos)
        } else {
            base - std::time::Duration::from_secs(self.secs.unsigned_abs())
                + std::time::Duration::from_nanos(self.nanos.into())
        }
    }
}

/// An inode number. Displays as the number.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Ino(pub u64);

impl std::fmt::Display for Ino {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&self.0, f)
    }
}

/// An inode: the attributes of a file, directory, symlink or special file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inode {
    pub ino: Ino,
    pub kind: FileKind,
    /// Permission bits incl. setuid, setgid and sticky (mode & 0o7777).
    pub perm: u16,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u32,
    pub size: u64,
    pub atime: Time,
    pub mtime: Time,
    pub ctime: Time,
    pub crtime: Time,
    pub rdev: u32,
    /// Symlink target.
    pub target: Vec<u8>,
    /// Directories: the next readdir cookie to hand out.
    pub next_cookie: u64,
    /// Directories: the parent directory (the root is its own parent).
    pub parent: Ino,
    /// Files: the size of this file's chunks.
    pub chunk_size: u32,
}

impl Inode {
    /// `st_mode`.
    pub fn mode(&self) -> u32 {
        self.kind.mode_bits() | u32::from(self.perm)
    }

    /// 512-byte blocks, as `du` sees them.
    pub fn blocks(&self) -> u64 {
        match self.kind {
            FileKind::File | FileKind::Symlink => self.size.div_ceil(512),
            FileKind::Dir => 8,
            _ => 0,
        }
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = vec![RECORD_VERSION];
        // Serializing a plain struct into a Vec cannot fail.
        if let Ok(body) = postcard::to_allocvec(self) {
            out.extend_from_slice(&body);
        }
        out
    }

    pub(crate) fn decode(bytes: &[u8]) -> FsResult<Inode> {
        match bytes.split_first() {
            Some((&RECORD_VERSION, body)) => {
                postcard::from_bytes(body).map_err(|_| FsError::Corrupt("inode"))
            }
            _ => Err(FsError::Corrupt("inode version")),
        }
    }
}

/// Big-endian u64 key (sorts numerically).
pub(crate) fn ino_key(ino: Ino) -> [u8; 8] {
    ino.0.to_be_bytes()
}

/// `parent ‖ name`.
pub(crate) fn dentry_key(parent: Ino, name: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(8 + name.len());
    k.extend_from_slice(&parent.0.to_be_bytes());
    k.extend_from_slice(name);
    k
}

/// A directory entry's value: child, kind, readdir cookie.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dentry {
    pub ino: Ino,
    pub kind: FileKind,
    pub cookie: u64,
}

impl Dentry {
    pub(crate) fn encode(&self) -> [u8; 18] {
        let mut v = [0u8; 18];
        v[0] = RECORD_VERSION;
        v[1..9].copy_from_slice(&self.ino.0.to_le_bytes());
        v[9] = self.kind.code();
        v[10..18].copy_from_slice(&self.cookie.to_le_bytes());
        v
    }

    pub(crate) fn decode(v: &[u8]) -> FsResult<Dentry> {
        if v.len() != 18 || v[0] != RECORD_VERSION {
            return Err(FsError::Corrupt("dentry"));
        }
        let ino = Ino(u64::from_le_bytes(
            v[1..9].try_into().map_err(|_| FsError::Corrupt("dentry"))?,
        ));
        let kind = FileKind::from_code(v[9]).ok_or(FsError::Corrupt("dentry kind"))?;
        let cookie = u64::from_le_bytes(
            v[10..18]
                .try_into()
                .map_err(|_| FsError::Corrupt("dentry"))?,
        );
        Ok(Dentry { ino, kind, cookie })
    }
}

/// `parent ‖ cookie` → `ino ‖ kind ‖ name`: readdir order with stable offsets.
pub(crate) fn dirpos_key(parent: Ino, cookie: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&parent.0.to_be_bytes());
    k[8..].copy_from_slice(&cookie.to_be_bytes());
    k
}

pub(crate) fn dirpos_value(ino: Ino, kind: FileKind, name: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(9 + name.len());
    v.extend_from_slice(&ino.0.to_le_bytes());
    v.push(kind.code());
    v.extend_from_slice(name);
    v
}

pub(crate) fn decode_dirpos(key: &[u8], v: &[u8]) -> FsResult<(u64, Ino, FileKind, Vec<u8>)> {
    if key.len() != 16 || v.len() < 9 {
        return Err(FsError::Corrupt("dirpos"));
    }
    let cookie = u64::from_be_bytes(
        key[8..16]
            .try_into()
            .map_err(|_| FsError::Corrupt("dirpos"))?,
    );
    let ino = Ino(u64::from_le_bytes(
        v[..8].try_into().map_err(|_| FsError::Corrupt("dirpos"))?,
    ));
    let kind = FileKind::from_code(v[8]).ok_or(FsError::Corrupt("dirpos kind"))?;
    Ok((cookie, ino, kind, v[9..].to_vec()))
}

/// `ino ‖ chunk index`.
pub(crate) fn extent_key(ino: Ino, index: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&ino.0.to_be_bytes());
    k[8..].copy_from_slice(&index.to_be_bytes());
    k
}

/// One slot of a file: the chunk holding bytes `index * chunk_size ..` and
/// its plaintext length (bytes past it, up to the file size, are zeros).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkRef {
    pub id: ChunkId,
    pub len: u32,
}

impl ChunkRef {
    pub(crate) fn encode(&self) -> [u8; 37] {
        let mut v = [0u8; 37];
        v[0] = RECORD_VERSION;
        v[1..33].copy_from_slice(self.id.as_bytes());
        v[33..37].copy_from_slice(&self.len.to_le_bytes());
        v
    }

    pub(crate) fn decode(v: &[u8]) -> FsResult<ChunkRef> {
        if v.len() != 37 || v[0] != RECORD_VERSION {
            return Err(FsError::Corrupt("extent"));
        }
        let mut id = [0u8; 32];
        id.copy_from_slice(&v[1..33]);
        let len = u32::from_le_bytes(
            v[33..37]
                .try_into()
                .map_err(|_| FsError::Corrupt("extent"))?,
        );
        Ok(ChunkRef {
            id: ChunkId(id),
            len,
        })
    }
}

/// Checks a name given by the kernel.
pub fn check_name(name: &[u8]) -> FsResult<()> {
    if name.len() > NAME_MAX {
        return Err(FsError::NameTooLong);
    }
    if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') || name.contains(&0)
    {
        return Err(FsError::Invalid);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let ino = Inode {
            ino: Ino(7),
            kind: FileKind::Symlink,
            perm: 0o4755,
            uid: 1,
            gid: 2,
            nlink: 1,
            size: 3,
            atime: Time { secs: -5, nanos: 7 },
            mtime: Time::now(),
            ctime: Time::now(),
            crtime: Time::now(),
            rdev: 0,
            target: b"abc".to_vec(),
            next_cookie: 0,
            parent: Ino(0),
            chunk_size: DEFAULT_CHUNK_SIZE,
        };
        assert_eq!(Inode::decode(&ino.encode()).unwrap(), ino);
        let d = Dentry {
            ino: Ino(9),
            kind: FileKind::Dir,
            cookie: 4,
        };
        assert_eq!(Dentry::decode(&d.encode()).unwrap(), d);
        let c = ChunkRef {
            id: ChunkId([3; 32]),
            len: 77,
        };
        assert_eq!(ChunkRef::decode(&c.encode()).unwrap(), c);
        assert!(Inode::decode(&[2, 0]).is_err());
        assert!(Dentry::decode(&[1; 5]).is_err());
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name(&[b'a'; 255]).is_ok());
        assert!(matches!(
            check_name(&[b'a'; 256]),
            Err(FsError::NameTooLong)
        ));
        assert!(check_name(b"a/b").is_err());
        assert!(check_name(b"..").is_err());
    }

    #[test]
    fn times_convert_both_ways() {
        for t in [
            Time { secs: 0, nanos: 0 },
            Time { secs: 5, nanos: 9 },
            Time {
                secs: -3,
                nanos: 500,
            },
        ] {
            assert_eq!(Time::from_system(t.to_system()), t);
        }
    }
}
