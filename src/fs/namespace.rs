//! Namespace operations: lookup, create, link, unlink, rename, readdir,
//! symlinks and attributes. Each mutation is one WriteBatch under `ns`.

use nix::libc;

use super::types::Ino;
use super::types::{self, Dentry, FileKind, Inode, Time, check_name};
use super::{Ctx, DirEntry, Fs, FsError, FsResult, RenameFlags, SetAttr, SetTime};
use crate::chunks::FileId;
use crate::store::{Batch, Cf};

/// Extents (or xattrs) one step of deleting an inode handles under `ns`.
const REAP_STEP: usize = 256;

const S_ISUID: u16 = 0o4000;
const S_ISGID: u16 = 0o2000;
const S_IXGRP: u16 = 0o010;

impl Fs {
    fn dentry(&self, parent: Ino, name: &[u8]) -> FsResult<Option<Dentry>> {
        match self.kv.get(Cf::Dentry, &types::dentry_key(parent, name))? {
            Some(v) => Ok(Some(Dentry::decode(&v)?)),
            None => Ok(None),
        }
    }

    fn load_dir(&self, ino: Ino) -> FsResult<Inode> {
        let dir = self.load(ino)?;
        if dir.kind != FileKind::Dir {
            return Err(FsError::NotDir);
        }
        Ok(dir)
    }

    /// The attributes of `ino`, including writes not yet flushed.
    pub fn getattr(&self, ino: Ino) -> FsResult<Inode> {
        // Pending attributes first: see `pending_attrs`.
        let pending = self.pending_attrs(ino);
        let mut inode = self.load(ino)?;
        super::open::apply_pending(&mut inode, pending);
        Ok(inode)
    }

    /// Looks `name` up in `parent`.
    pub fn lookup(&self, parent: Ino, name: &[u8]) -> FsResult<Inode> {
        if name.len() > types::NAME_MAX {
            return Err(FsError::NameTooLong);
        }
        let dir = self.load_dir(parent)?;
        if name == b"." {
            return self.getattr(parent);
        }
        if name == b".." {
            return self.getattr(dir.parent);
        }
        match self.dentry(parent, name)? {
            Some(d) => self.getattr(d.ino),
            None => Err(FsError::NotFound),
        }
    }

    /// Inserts the dentry `name` → `child` in `dir` (whose record the caller
    /// writes afterwards: its cookie counter and times change).
    fn add_entry(&self, b: &mut Batch, dir: &mut Inode, name: &[u8], child: &Inode) {
        let cookie = dir.next_cookie.max(1);
        dir.next_cookie = cookie + 1;
        let d = Dentry {
            ino: child.ino,
            kind: child.kind,
            cookie,
        };
        b.put(Cf::Dentry, &types::dentry_key(dir.ino, name), &d.encode());
        b.put(
            Cf::DirPos,
            &types::dirpos_key(dir.ino, cookie),
            &types::dirpos_value(child.ino, child.kind, name),
        );
    }

    fn remove_entry(&self, b: &mut Batch, dir: Ino, name: &[u8], d: &Dentry) {
        b.delete(Cf::Dentry, &types::dentry_key(dir, name));
        b.delete(Cf::DirPos, &types::dirpos_key(dir, d.cookie));
    }

    /// Creates a new inode of `kind` in `parent`. `mode` is already masked by
    /// the kernel's umask.
    #[allow(clippy::too_many_arguments)]
    fn make_node(
        &self,
        ctx: &Ctx,
        parent: Ino,
        name: &[u8],
        kind: FileKind,
        mode: u32,
        rdev: u32,
        target: Vec<u8>,
    ) -> FsResult<Inode> {
        check_name(name)?;
        let _g = self.lock_ns();
        let mut dir = self.load_dir(parent)?;
        if dir.nlink == 0 {
            return Err(FsError::NotFound);
        }
        if self.dentry(parent, name)?.is_some() {
            return Err(FsError::Exists);
        }
        let mut perm = (mode & 0o7777) as u16;
        let mut gid = ctx.gid;
        if dir.perm & S_ISGID != 0 {
            gid = dir.gid;
            if kind == FileKind::Dir {
                perm |= S_ISGID;
            }
        }
        if kind != FileKind::Dir
            && perm & S_ISGID != 0
            && perm & S_IXGRP != 0
            && ctx.uid != 0
            && !ctx.in_group(gid)
        {
            perm &= !S_ISGID;
        }
        let now = Time::now();
        let mut b = Batch::new();
        let ino = self.alloc_ino(&mut b);
        let inode = Inode {
            ino,
            kind,
            perm,
            uid: ctx.uid,
            gid,
            nlink: if kind == FileKind::Dir { 2 } else { 1 },
            size: if kind == FileKind::Symlink {
                target.len() as u64
            } else {
                0
            },
            atime: now,
            mtime: now,
            ctime: now,
            crtime: now,
            rdev,
            target,
            next_cookie: 1,
            parent,
            chunk_size: if kind == FileKind::File {
                self.cfg.chunk_size
            } else {
                0
            },
        };
        self.add_entry(&mut b, &mut dir, name, &inode);
        if kind == FileKind::Dir {
            dir.nlink += 1;
        }
        dir.mtime = now;
        dir.ctime = now;
        self.put_inode(&mut b, &dir);
        self.put_inode(&mut b, &inode);
        self.kv.write(b, false)?;
        Ok(inode)
    }

    /// mknod: regular files, fifos, sockets and device nodes.
    pub fn mknod(
        &self,
        ctx: &Ctx,
        parent: Ino,
        name: &[u8],
        mode: u32,
        rdev: u32,
    ) -> FsResult<Inode> {
        let kind = FileKind::from_mode(mode).ok_or(FsError::Invalid)?;
        if matches!(kind, FileKind::Dir | FileKind::Symlink) {
            return Err(FsError::Invalid);
        }
        self.make_node(ctx, parent, name, kind, mode, rdev, Vec::new())
    }

    pub fn mkdir(&self, ctx: &Ctx, parent: Ino, name: &[u8], mode: u32) -> FsResult<Inode> {
        self.make_node(ctx, parent, name, FileKind::Dir, mode, 0, Vec::new())
    }

    pub fn symlink(&self, ctx: &Ctx, parent: Ino, name: &[u8], target: &[u8]) -> FsResult<Inode> {
        if target.is_empty() {
            return Err(FsError::NotFound);
        }
        if target.len() > 4095 {
            return Err(FsError::NameTooLong);
        }
        self.make_node(
            ctx,
            parent,
            name,
            FileKind::Symlink,
            0o777,
            0,
            target.to_vec(),
        )
    }

    pub fn readlink(&self, ino: Ino) -> FsResult<Vec<u8>> {
        let inode = self.load(ino)?;
        if inode.kind != FileKind::Symlink {
            return Err(FsError::Invalid);
        }
        Ok(inode.target)
    }

    /// A new hard link `newparent/newname` to `ino`.
    pub fn link(&self, ino: Ino, newparent: Ino, newname: &[u8]) -> FsResult<Inode> {
        check_name(newname)?;
        let _g = self.lock_ns();
        let mut inode = self.load(ino)?;
        if inode.kind == FileKind::Dir {
            return Err(FsError::Perm);
        }
        if inode.nlink >= types::LINK_MAX {
            return Err(FsError::TooManyLinks);
        }
        if inode.nlink == 0 {
            return Err(FsError::NotFound);
        }
        let mut dir = self.load_dir(newparent)?;
        if self.dentry(newparent, newname)?.is_some() {
            return Err(FsError::Exists);
        }
        let now = Time::now();
        let mut b = Batch::new();
        inode.nlink += 1;
        inode.ctime = now;
        self.add_entry(&mut b, &mut dir, newname, &inode);
        dir.mtime = now;
        dir.ctime = now;
        self.put_inode(&mut b, &dir);
        self.put_inode(&mut b, &inode);
        self.kv.write(b, false)?;
        self.overlay(&mut inode);
        Ok(inode)
    }

    /// Drops one link of `inode` inside batch `b`; deletes it (or marks it
    /// an orphan if open) when none is left. Returns chunk files to delete
    /// after the batch commits. An inode with more data than one bounded
    /// step deletes is marked an orphan too, and its inode number returned:
    /// the caller reaps it (`reap`) once `ns` is released.
    fn drop_link(
        &self,
        b: &mut Batch,
        inode: &mut Inode,
        now: Time,
    ) -> FsResult<(Vec<FileId>, Option<Ino>)> {
        if inode.kind == FileKind::Dir {
            inode.nlink = 0;
        } else {
            inode.nlink = inode.nlink.saturating_sub(1);
        }
        inode.ctime = now;
        if inode.nlink > 0 {
            self.put_inode(b, inode);
            return Ok((Vec::new(), None));
        }
        if !self.is_open(inode.ino)
            && !self.is_known(inode.ino)
            && let Some(dead) = self.delete_inode(b, inode.ino)?
        {
            return Ok((dead, None));
        }
        self.put_inode(b, inode);
        b.put(Cf::Orphan, &types::ino_key(inode.ino), &[]);
        let reap = (!self.is_open(inode.ino) && !self.is_known(inode.ino)).then_some(inode.ino);
        Ok((Vec::new(), reap))
    }

    /// The kernel took one more reference to `ino` (a reply carrying its
    /// entry: lookup, create, mkdir, mknod, symlink, link, readdirplus).
    /// Call it before replying, so that the matching `forget` comes after.
    pub fn remember(&self, ino: Ino) {
        if ino != types::ROOT_INO {
            let mut l = self.lookups.lock().unwrap_or_else(|p| p.into_inner());
            *l.entry(ino).or_default() += 1;
        }
    }

    /// Does the kernel hold a reference to `ino`?
    pub(super) fn is_known(&self, ino: Ino) -> bool {
        self.lookups
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(&ino)
    }

    /// FUSE forget: the kernel dropped `n` references to `ino`. When none
    /// is left, an unlinked inode that is not open is deleted.
    pub fn forget(&self, ino: Ino, n: u64) -> FsResult<()> {
        {
            let mut l = self.lookups.lock().unwrap_or_else(|p| p.into_inner());
            match l.get_mut(&ino) {
                Some(count) if *count > n => {
                    *count -= n;
                    return Ok(());
                }
                Some(_) => {
                    l.remove(&ino);
                }
                None => return Ok(()),
            }
        }
        // Checked before taking `ns` (lock order: file, then ns); the kernel
        // cannot open an inode it has forgotten.
        if self.is_open(ino) {
            return Ok(());
        }
        self.reap(ino)
    }

    /// Deletes unlinked inode `ino` (nlink 0, not open, not known to the
    /// kernel) and its data, in bounded steps: each holds `ns` for at most
    /// `REAP_STEP` extents, and each is one consistent batch (the inode
    /// stays an orphan until its last step, so a crash midway resumes at
    /// the next mount). Does nothing if `ino` is not such an inode.
    pub(super) fn reap(&self, ino: Ino) -> FsResult<()> {
        loop {
            let (dead, done) = {
                let _g = self.lock_ns();
                match self.load(ino) {
                    Ok(inode) if inode.nlink == 0 && !self.is_known(ino) && !self.is_open(ino) => {}
                    _ => return Ok(()),
                }
                let mut b = Batch::new();
                let (dead, done) = match self.delete_inode(&mut b, ino)? {
                    Some(dead) => (dead, true),
                    None => (self.delete_extents_step(&mut b, ino)?, false),
                };
                self.kv.write(b, false)?;
                (dead, done)
            };
            self.delete_chunk_files(&dead);
            if done {
                return Ok(());
            }
        }
    }

    /// Deletes the first `REAP_STEP` extents of `ino` inside `b`, with their
    /// chunk references; returns the chunk files to delete after `b`.
    fn delete_extents_step(&self, b: &mut Batch, ino: Ino) -> FsResult<Vec<FileId>> {
        let mut ids = Vec::new();
        let mut n = 0;
        self.kv
            .scan(Cf::Extent, &types::ino_key(ino), &[], &mut |k, v| {
                b.delete(Cf::Extent, k);
                if let Ok(r) = types::ChunkRef::decode(v) {
                    ids.push(r.id);
                }
                n += 1;
                n < REAP_STEP
            })?;
        if n < REAP_STEP {
            // Then the xattrs (an inode with that many is rare).
            self.kv
                .scan(Cf::Xattr, &types::ino_key(ino), &[], &mut |k, _| {
                    b.delete(Cf::Xattr, k);
                    n += 1;
                    n < REAP_STEP
                })?;
        }
        self.release_chunks(b, &ids)
    }

    /// Removes an inode, its extents, xattrs and chunk references inside
    /// `b`, if that is a bounded step (at most `REAP_STEP` extents and
    /// xattrs); None (and `b` unchanged) if it has more.
    pub(super) fn delete_inode(&self, b: &mut Batch, ino: Ino) -> FsResult<Option<Vec<FileId>>> {
        let prefix = types::ino_key(ino);
        let mut ids = Vec::new();
        let mut ekeys = Vec::new();
        let mut xkeys = Vec::new();
        self.kv.scan(Cf::Extent, &prefix, &[], &mut |k, v| {
            ekeys.push(k.to_vec());
            if let Ok(r) = types::ChunkRef::decode(v) {
                ids.push(r.id);
            }
            ekeys.len() <= REAP_STEP
        })?;
        if ekeys.len() > REAP_STEP {
            return Ok(None);
        }
        self.kv.scan(Cf::Xattr, &prefix, &[], &mut |k, _| {
            xkeys.push(k.to_vec());
            ekeys.len() + xkeys.len() <= REAP_STEP
        })?;
        if ekeys.len() + xkeys.len() > REAP_STEP {
            return Ok(None);
        }
        for k in ekeys {
            b.delete(Cf::Extent, &k);
        }
        for k in xkeys {
            b.delete(Cf::Xattr, &k);
        }
        b.delete(Cf::Inode, &prefix);
        b.delete(Cf::Orphan, &prefix);
        self.release_chunks(b, &ids).map(Some)
    }

    pub fn unlink(&self, parent: Ino, name: &[u8]) -> FsResult<()> {
        self.remove(parent, name, false)
    }

    pub fn rmdir(&self, parent: Ino, name: &[u8]) -> FsResult<()> {
        self.remove(parent, name, true)
    }

    fn dir_is_empty(&self, ino: Ino) -> FsResult<bool> {
        let mut empty = true;
        self.kv
            .scan(Cf::Dentry, &types::ino_key(ino), &[], &mut |_, _| {
                empty = false;
                false
            })?;
        Ok(empty)
    }

    fn remove(&self, parent: Ino, name: &[u8], dir_wanted: bool) -> FsResult<()> {
        if name.len() > types::NAME_MAX {
            return Err(FsError::NameTooLong);
        }
        if dir_wanted && name == b"." {
            return Err(FsError::Invalid);
        }
        if dir_wanted && name == b".." {
            return Err(FsError::NotEmpty);
        }
        let (dead, reap) = {
            let _g = self.lock_ns();
            let mut dir = self.load_dir(parent)?;
            let d = self.dentry(parent, name)?.ok_or(FsError::NotFound)?;
            let mut child = self.load(d.ino)?;
            match (dir_wanted, child.kind == FileKind::Dir) {
                (true, false) => return Err(FsError::NotDir),
                (false, true) => return Err(FsError::IsDir),
                (true, true) if !self.dir_is_empty(child.ino)? => return Err(FsError::NotEmpty),
                _ => {}
            }
            let now = Time::now();
            let mut b = Batch::new();
            self.remove_entry(&mut b, parent, name, &d);
            if child.kind == FileKind::Dir {
                dir.nlink = dir.nlink.saturating_sub(1);
            }
            dir.mtime = now;
            dir.ctime = now;
            self.put_inode(&mut b, &dir);
            let (dead, reap) = self.drop_link(&mut b, &mut child, now)?;
            self.kv.write(b, false)?;
            (dead, reap)
        };
        self.delete_chunk_files(&dead);
        if let Some(ino) = reap {
            self.reap(ino)?;
        }
        Ok(())
    }

    /// Is `ancestor` on the path from `dir` up to the root?
    fn is_ancestor(&self, ancestor: Ino, mut dir: Ino) -> FsResult<bool> {
        for _ in 0..100_000 {
            if dir == ancestor {
                return Ok(true);
            }
            if dir == types::ROOT_INO {
                return Ok(false);
            }
            dir = self.load(dir)?.parent;
        }
        Err(FsError::Corrupt("directory parent chain"))
    }

    pub fn rename(
        &self,
        parent: Ino,
        name: &[u8],
        newparent: Ino,
        newname: &[u8],
        flags: RenameFlags,
    ) -> FsResult<()> {
        if flags.noreplace && flags.exchange {
            return Err(FsError::Invalid);
        }
        if name.len() > types::NAME_MAX {
            return Err(FsError::NameTooLong);
        }
        check_name(newname)?;
        let (dead, reap) = {
            let _g = self.lock_ns();
            let src = self.dentry(parent, name)?.ok_or(FsError::NotFound)?;
            let dst = self.dentry(newparent, newname)?;
            let mut sdir = self.load_dir(parent)?;
            let now = Time::now();
            let mut b = Batch::new();
            let mut dead = Vec::new();
            let mut reap = None;
            if flags.exchange {
                let dst = dst.ok_or(FsError::NotFound)?;
                let mut a = self.load(src.ino)?;
                let mut c = self.load(dst.ino)?;
                if parent != newparent {
                    if a.kind == FileKind::Dir && self.is_ancestor(a.ino, newparent)? {
                        return Err(FsError::Invalid);
                    }
                    if c.kind == FileKind::Dir && self.is_ancestor(c.ino, parent)? {
                        return Err(FsError::Invalid);
                    }
                }
                // Swap what the two names point to, keeping their cookies.
                let sd = Dentry {
                    ino: c.ino,
                    kind: c.kind,
                    cookie: src.cookie,
                };
                let dd = Dentry {
                    ino: a.ino,
                    kind: a.kind,
                    cookie: dst.cookie,
                };
                b.put(Cf::Dentry, &types::dentry_key(parent, name), &sd.encode());
                b.put(
                    Cf::DirPos,
                    &types::dirpos_key(parent, src.cookie),
                    &types::dirpos_value(c.ino, c.kind, name),
                );
                b.put(
                    Cf::Dentry,
                    &types::dentry_key(newparent, newname),
                    &dd.encode(),
                );
                b.put(
                    Cf::DirPos,
                    &types::dirpos_key(newparent, dst.cookie),
                    &types::dirpos_value(a.ino, a.kind, newname),
                );
                a.ctime = now;
                c.ctime = now;
                if parent != newparent {
                    let mut ddir = self.load_dir(newparent)?;
                    let (ad, cd) = (a.kind == FileKind::Dir, c.kind == FileKind::Dir);
                    if ad && !cd {
                        sdir.nlink -= 1;
                        ddir.nlink += 1;
                    } else if cd && !ad {
                        sdir.nlink += 1;
                        ddir.nlink -= 1;
                    }
                    if ad {
                        a.parent = newparent;
                    }
                    if cd {
                        c.parent = parent;
                    }
                    ddir.mtime = now;
                    ddir.ctime = now;
                    self.put_inode(&mut b, &ddir);
                }
                sdir.mtime = now;
                sdir.ctime = now;
                self.put_inode(&mut b, &sdir);
                self.put_inode(&mut b, &a);
                self.put_inode(&mut b, &c);
                self.kv.write(b, false)?;
                return Ok(());
            }
            let mut moved = self.load(src.ino)?;
            let is_dir = moved.kind == FileKind::Dir;
            if let Some(dst) = dst {
                if dst.ino == src.ino {
                    return Ok(()); // two links to one inode: nothing to do
                }
                if flags.noreplace {
                    return Err(FsError::Exists);
                }
                let victim_is_dir = dst.kind == FileKind::Dir;
                if is_dir && !victim_is_dir {
                    return Err(FsError::NotDir);
                }
                if !is_dir && victim_is_dir {
                    return Err(FsError::IsDir);
                }
                if victim_is_dir && !self.dir_is_empty(dst.ino)? {
                    return Err(FsError::NotEmpty);
                }
            }
            if is_dir && parent != newparent && self.is_ancestor(moved.ino, newparent)? {
                return Err(FsError::Invalid);
            }
            if is_dir && moved.ino == newparent {
                return Err(FsError::Invalid);
            }
            // Same directory: work on one record.
            let mut ddir_owned = if parent != newparent {
                Some(self.load_dir(newparent)?)
            } else {
                None
            };
            if let Some(dst) = dst {
                let mut victim = self.load(dst.ino)?;
                self.remove_entry(&mut b, newparent, newname, &dst);
                if victim.kind == FileKind::Dir {
                    match ddir_owned.as_mut() {
                        Some(d) => d.nlink -= 1,
                        None => sdir.nlink -= 1,
                    }
                }
                (dead, reap) = self.drop_link(&mut b, &mut victim, now)?;
            }
            self.remove_entry(&mut b, parent, name, &src);
            {
                let ddir = ddir_owned.as_mut().unwrap_or(&mut sdir);
                self.add_entry(&mut b, ddir, newname, &moved);
                if is_dir && parent != newparent {
                    ddir.nlink += 1;
                }
                ddir.mtime = now;
                ddir.ctime = now;
            }
            if is_dir && parent != newparent {
                sdir.nlink -= 1;
                moved.parent = newparent;
            }
            sdir.mtime = now;
            sdir.ctime = now;
            moved.ctime = now;
            self.put_inode(&mut b, &sdir);
            if let Some(d) = &ddir_owned {
                self.put_inode(&mut b, d);
            }
            self.put_inode(&mut b, &moved);
            self.kv.write(b, false)?;
            (dead, reap)
        };
        self.delete_chunk_files(&dead);
        if let Some(ino) = reap {
            self.reap(ino)?;
        }
        Ok(())
    }

    /// Lists `ino` from `offset` (0 = start; else an entry's `offset`),
    /// calling `emit` per entry until it returns false. Streams from the
    /// index: a directory is never loaded whole.
    pub fn readdir(
        &self,
        ino: Ino,
        offset: u64,
        emit: &mut dyn FnMut(DirEntry) -> bool,
    ) -> FsResult<()> {
        let dir = self.load_dir(ino)?;
        if offset < 1
            && !emit(DirEntry {
                ino,
                offset: 1,
                kind: FileKind::Dir,
                name: b".".to_vec(),
            })
        {
            return Ok(());
        }
        if offset < 2
            && !emit(DirEntry {
                ino: dir.parent,
                offset: 2,
                kind: FileKind::Dir,
                name: b"..".to_vec(),
            })
        {
            return Ok(());
        }
        let from = offset.saturating_sub(2) + 1;
        let start = types::dirpos_key(ino, from.max(1));
        let mut err = None;
        self.kv
            .scan(
                Cf::DirPos,
                &types::ino_key(ino),
                &start,
                &mut |k, v| match types::decode_dirpos(k, v) {
                    Ok((cookie, child, kind, name)) => emit(DirEntry {
                        ino: child,
                        offset: cookie + 2,
                        kind,
                        name,
                    }),
                    Err(e) => {
                        err = Some(e);
                        false
                    }
                },
            )?;
        match err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// setattr: mode, owner, size, times.
    pub fn setattr(&self, ctx: &Ctx, ino: Ino, attr: &SetAttr) -> FsResult<Inode> {
        if let Some(size) = attr.size {
            self.truncate(ino, size)
                .inspect_err(|_| self.suspect_cache(ino))?;
        }
        let _g = self.lock_ns();
        let mut inode = self.load(ino)?;
        self.overlay(&mut inode);
        let now = Time::now();
        let mut changed = attr.size.is_some();
        let mut b = Batch::new();
        if attr.size.is_some()
            && attr.mode.is_none()
            && ctx.uid != 0
            && inode.kind == FileKind::File
        {
            // A truncate by a caller without CAP_FSETID (root's stands for
            // it) drops setuid/setgid and file capabilities, as a write does.
            inode.perm = super::xattr::kill_suid_sgid(inode.perm);
            b.delete(Cf::Xattr, &super::xattr::key(ino, b"security.capability"));
        }
        if let Some(mode) = attr.mode {
            inode.perm = (mode & 0o7777) as u16;
            changed = true;
        }
        let owner_change =
            attr.uid.is_some_and(|u| u != inode.uid) || attr.gid.is_some_and(|g| g != inode.gid);
        if attr.uid.is_some() || attr.gid.is_some() {
            if let Some(uid) = attr.uid {
                inode.uid = uid;
            }
            if let Some(gid) = attr.gid {
                inode.gid = gid;
            }
            // chown clears setuid, and setgid on group-executable files,
            // unless the same call sets the mode explicitly.
            if owner_change && attr.mode.is_none() && inode.kind != FileKind::Dir {
                inode.perm &= !S_ISUID;
                if inode.perm & S_IXGRP != 0 {
                    inode.perm &= !S_ISGID;
                }
            }
            changed = true;
        }
        let resolve = |t: SetTime| match t {
            SetTime::Now => now,
            SetTime::At(t) => t,
        };
        if let Some(t) = attr.atime {
            inode.atime = resolve(t);
            changed = true;
        }
        if let Some(t) = attr.mtime {
            inode.mtime = resolve(t);
            changed = true;
        }
        if changed {
            inode.ctime = attr.ctime.unwrap_or(now);
        } else if let Some(c) = attr.ctime {
            inode.ctime = c;
        }
        self.put_inode(&mut b, &inode);
        self.kv.write(b, false)?;
        self.set_overlay_times(ino, inode.mtime, inode.ctime);
        Ok(inode)
    }

    /// access(2) against the mode bits (the kernel does this itself under
    /// `default_permissions`; this serves callers without it).
    pub fn access(&self, ctx: &Ctx, ino: Ino, mask: i32) -> FsResult<()> {
        let inode = self.load(ino)?;
        if mask == libc::F_OK {
            return Ok(());
        }
        let perm = u32::from(inode.perm);
        let bits = if ctx.uid == 0 {
            // Root may do anything but execute a file with no x bit at all.
            if mask & libc::X_OK != 0 && inode.kind != FileKind::Dir && perm & 0o111 == 0 {
                return Err(FsError::Access);
            }
            return Ok(());
        } else if ctx.uid == inode.uid {
            (perm >> 6) & 7
        } else if ctx.in_group(inode.gid) {
            (perm >> 3) & 7
        } else {
            perm & 7
        };
        if (mask as u32) & !bits & 7 != 0 {
            return Err(FsError::Access);
        }
        Ok(())
    }
}
