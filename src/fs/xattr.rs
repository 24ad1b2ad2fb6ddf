//! Extended attributes: `user.`, `trusted.` and `security.` names; values up
//! to 64 KiB, names up to 255 bytes (Linux's limits). `system.` names
//! (POSIX ACLs) are not supported. Stored under `ino ‖ name`.

use super::types::Ino;
use super::types::{self, FileKind, Time};
use super::{Ctx, Fs, FsError, FsResult};
use crate::store::{Batch, Cf};

/// Longest value.
pub const XATTR_SIZE_MAX: usize = 64 * 1024;
/// Longest name.
pub const XATTR_NAME_MAX: usize = 255;
/// Longest list of names (the kernel's limit for listxattr).
pub const XATTR_LIST_MAX: usize = 64 * 1024;

/// How setxattr treats an existing attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XattrMode {
    /// Create or replace.
    Any,
    /// XATTR_CREATE: fail with EEXIST if present.
    Create,
    /// XATTR_REPLACE: fail with ENODATA if absent.
    Replace,
}

/// The answer of getxattr/listxattr: the size only (when asked with size
/// 0), or the bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum XattrReply {
    Size(u32),
    Data(Vec<u8>),
}

/// The file capabilities xattr, removed with setuid by writes.
const SECURITY_CAPABILITY: &[u8] = b"security.capability";

/// `perm` without setuid, and without setgid if group-executable (as the
/// kernel's `setattr_should_drop_suidgid`).
pub(super) fn kill_suid_sgid(perm: u16) -> u16 {
    let mut perm = perm & !0o4000;
    if perm & 0o010 != 0 {
        perm &= !0o2000;
    }
    perm
}

pub(super) fn key(ino: Ino, name: &[u8]) -> Vec<u8> {
    types::dentry_key(ino, name)
}

fn check(ctx: &Ctx, kind: FileKind, name: &[u8]) -> FsResult<()> {
    if name.is_empty() {
        return Err(FsError::Invalid);
    }
    if name.len() > XATTR_NAME_MAX {
        return Err(FsError::Range);
    }
    if name.starts_with(b"user.") {
        // Linux: user xattrs only on regular files and directories.
        if !matches!(kind, FileKind::File | FileKind::Dir) {
            return Err(FsError::Perm);
        }
        return Ok(());
    }
    if name.starts_with(b"trusted.") {
        return if ctx.uid == 0 {
            Ok(())
        } else {
            Err(FsError::Perm)
        };
    }
    if name.starts_with(b"security.") {
        return Ok(());
    }
    Err(FsError::NotSupported)
}

fn reply(data: Vec<u8>, size: u32) -> FsResult<XattrReply> {
    if size == 0 {
        Ok(XattrReply::Size(data.len() as u32))
    } else if data.len() > size as usize {
        Err(FsError::Range)
    } else {
        Ok(XattrReply::Data(data))
    }
}

/// A read-only attribute of every regular file: how its chunks stand on
/// peers (`chunks=N placed=P degraded=D local_only=L lost=X`). Not
/// listed (copying tools would copy it) and not settable.
pub const HEALTH_XATTR: &[u8] = b"user.pangea.health";

impl Fs {
    pub fn setxattr(
        &self,
        ctx: &Ctx,
        ino: Ino,
        name: &[u8],
        value: &[u8],
        mode: XattrMode,
    ) -> FsResult<()> {
        if value.len() > XATTR_SIZE_MAX {
            return Err(FsError::TooBig);
        }
        if name == HEALTH_XATTR {
            return Err(FsError::Perm);
        }
        let _g = self.lock_ns();
        let mut inode = self.load(ino)?;
        check(ctx, inode.kind, name)?;
        let k = key(ino, name);
        let exists = self.kv.get(Cf::Xattr, &k)?.is_some();
        match (mode, exists) {
            (XattrMode::Create, true) => return Err(FsError::Exists),
            (XattrMode::Replace, false) => return Err(FsError::NoData),
            _ => {}
        }
        inode.ctime = Time::now();
        let mut b = Batch::new();
        b.put(Cf::Xattr, &k, value);
        self.put_inode(&mut b, &inode);
        self.kv.write(b, false)?;
        Ok(())
    }

    pub fn getxattr(&self, ctx: &Ctx, ino: Ino, name: &[u8], size: u32) -> FsResult<XattrReply> {
        let inode = self.load(ino)?;
        if name == HEALTH_XATTR && inode.kind == FileKind::File {
            let chunks = self.file_chunks(ino)?;
            let text = match self.health.get() {
                Some(f) => f(&chunks),
                None => format!(
                    "chunks={} placed=0 degraded=0 local_only={} lost=0",
                    chunks.len(),
                    chunks.len()
                ),
            };
            return reply(text.into_bytes(), size);
        }
        if name.len() > XATTR_NAME_MAX {
            return Err(FsError::Range);
        }
        if let Err(e @ FsError::NotSupported) = check(ctx, inode.kind, name) {
            return Err(e);
        }
        let v = self
            .kv
            .get(Cf::Xattr, &key(ino, name))?
            .ok_or(FsError::NoData)?;
        reply(v, size)
    }

    pub fn listxattr(&self, ino: Ino, size: u32) -> FsResult<XattrReply> {
        self.load(ino)?;
        let mut out = Vec::new();
        self.kv
            .scan(Cf::Xattr, &types::ino_key(ino), &[], &mut |k, _| {
                out.extend_from_slice(&k[8..]);
                out.push(0);
                true
            })?;
        if out.len() > XATTR_LIST_MAX {
            return Err(FsError::TooBig);
        }
        reply(out, size)
    }

    /// What a write or truncate by a caller without CAP_FSETID does to a
    /// regular file (the kernel leaves it to us: FUSE_HANDLE_KILLPRIV_V2):
    /// clears setuid, setgid if group-executable, and the file's
    /// `security.capability`. One batch; nothing when there is nothing to
    /// clear.
    pub fn kill_privs(&self, ino: Ino) -> FsResult<()> {
        let _g = self.lock_ns();
        let mut inode = self.load(ino)?;
        if inode.kind != FileKind::File {
            return Ok(());
        }
        let mut b = Batch::new();
        let perm = kill_suid_sgid(inode.perm);
        let cap = key(ino, SECURITY_CAPABILITY);
        let has_cap = self.kv.get(Cf::Xattr, &cap)?.is_some();
        if perm == inode.perm && !has_cap {
            return Ok(());
        }
        if has_cap {
            b.delete(Cf::Xattr, &cap);
        }
        inode.perm = perm;
        inode.ctime = Time::now();
        self.put_inode(&mut b, &inode);
        self.kv.write(b, false)?;
        Ok(())
    }

    pub fn removexattr(&self, ctx: &Ctx, ino: Ino, name: &[u8]) -> FsResult<()> {
        let _g = self.lock_ns();
        let mut inode = self.load(ino)?;
        check(ctx, inode.kind, name)?;
        let k = key(ino, name);
        if self.kv.get(Cf::Xattr, &k)?.is_none() {
            return Err(FsError::NoData);
        }
        inode.ctime = Time::now();
        let mut b = Batch::new();
        b.delete(Cf::Xattr, &k);
        self.put_inode(&mut b, &inode);
        self.kv.write(b, false)?;
        Ok(())
    }
}
