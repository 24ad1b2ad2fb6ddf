//! The `fuser::Filesystem` adapter: each callback converts the request,
//! calls the core (`pangea::fs::Fs`), maps the error to an errno and
//! replies. No filesystem logic lives here.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fuser::{
    AccessFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation,
    INodeNo, InitFlags, KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate,
    ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs,
    ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use pangea::fs::xattr::{XattrMode, XattrReply};
use pangea::fs::{Ctx, FileKind, Fs, FsError, Ino, Inode, SetAttr, SetTime, Time};
use pangea::node::Releases;
use pangea::node::metrics::OpStats;
use tracing::{debug, warn};

/// How long the kernel may cache what the daemon tells it (`-o
/// entry_timeout=`, `attr_timeout=`, `negative_timeout=`, in seconds, as
/// libfuse names them).
///
/// Every change to the namespace and to attributes goes through this
/// kernel, which updates or invalidates what it cached (the core has no
/// other writer: peers hold shards, never the namespace), so the caches
/// may live long. What the daemon changes on its own is covered too: the
/// kernel invalidates the mode after a write that may clear setuid and
/// the times after writes and truncates. The lifetime then only bounds how
/// often an idle program's `stat` (`git status`, `make`, `find`, a file
/// manager) costs a round trip.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ttls {
    /// Names found.
    pub entry: Duration,
    /// Attributes.
    pub attr: Duration,
    /// Names found missing.
    pub negative: Duration,
}

impl Default for Ttls {
    fn default() -> Self {
        Ttls {
            entry: Duration::from_secs(60),
            attr: Duration::from_secs(60),
            negative: Duration::from_secs(60),
        }
    }
}

impl Ttls {
    /// For the replies that carry an entry and its attributes under one
    /// lifetime (create, readdirplus).
    fn both(&self) -> Duration {
        self.entry.min(self.attr)
    }
}

/// Largest write request (the kernel caps it at its max_pages).
const MAX_WRITE: u32 = 1 << 20;

/// The mounted filesystem.
pub struct FuseFs {
    /// The core every callback calls.
    fs: Arc<Fs>,
    /// The node's release queue: last releases run off the FUSE threads.
    releases: Arc<Releases>,
    /// How long the kernel may cache what it is told.
    ttl: Ttls,
    /// The kernel skips opendir/releasedir once opendir answers ENOSYS.
    no_opendir: bool,
    /// How long each request took, by operation (`--metrics`).
    ops: Arc<OpStats>,
}

impl FuseFs {
    /// The adapter over a node's core and release queue
    /// (`pangea::node::Node::fs`, `Node::releases`).
    pub fn new(fs: Arc<Fs>, releases: Arc<Releases>, ttl: Ttls) -> Self {
        FuseFs {
            fs,
            releases,
            ttl,
            no_opendir: false,
            ops: Arc::new(OpStats::default()),
        }
    }

    /// Times every request into `ops` (the metrics endpoint's).
    pub fn with_ops(mut self, ops: Arc<OpStats>) -> Self {
        self.ops = ops;
        self
    }

    /// Replies with an entry; the kernel now holds a reference to it,
    /// which the core counts until `forget`.
    fn entry(&self, reply: ReplyEntry, r: Result<Inode, FsError>) {
        match r {
            Ok(i) => {
                self.fs.remember(i.ino);
                let ttl = &self.ttl;
                reply.entry_with_ttls(&ttl.entry, &ttl.attr, &attr(&i), Generation(0))
            }
            Err(e) => reply.error(errno(&e)),
        }
    }
}

fn errno(e: &FsError) -> Errno {
    if matches!(
        e,
        FsError::Store(_) | FsError::Chunk(_) | FsError::Corrupt(_)
    ) {
        warn!(error = %e, "I/O error");
    } else {
        debug!(error = %e, "request failed");
    }
    Errno::from_i32(e.errno())
}

fn ctx(req: &Request) -> Ctx {
    Ctx {
        uid: req.uid(),
        gid: req.gid(),
        pid: req.pid(),
    }
}

fn kind(k: FileKind) -> FileType {
    match k {
        FileKind::File => FileType::RegularFile,
        FileKind::Dir => FileType::Directory,
        FileKind::Symlink => FileType::Symlink,
        FileKind::Fifo => FileType::NamedPipe,
        FileKind::Socket => FileType::Socket,
        FileKind::CharDev => FileType::CharDevice,
        FileKind::BlockDev => FileType::BlockDevice,
    }
}

fn attr(i: &Inode) -> FileAttr {
    FileAttr {
        ino: INodeNo(i.ino.0),
        size: i.size,
        blocks: i.blocks(),
        atime: i.atime.to_system(),
        mtime: i.mtime.to_system(),
        ctime: i.ctime.to_system(),
        crtime: i.crtime.to_system(),
        kind: kind(i.kind),
        perm: i.perm,
        nlink: i.nlink,
        uid: i.uid,
        gid: i.gid,
        rdev: i.rdev,
        blksize: 4096,
        flags: 0,
    }
}

/// The attributes of a negative entry: only `ino` = 0 matters.
fn negative() -> FileAttr {
    FileAttr {
        ino: INodeNo(0),
        size: 0,
        blocks: 0,
        atime: SystemTime::UNIX_EPOCH,
        mtime: SystemTime::UNIX_EPOCH,
        ctime: SystemTime::UNIX_EPOCH,
        crtime: SystemTime::UNIX_EPOCH,
        kind: FileType::RegularFile,
        perm: 0,
        nlink: 0,
        uid: 0,
        gid: 0,
        rdev: 0,
        blksize: 4096,
        flags: 0,
    }
}

fn set_time(t: TimeOrNow) -> SetTime {
    match t {
        TimeOrNow::Now => SetTime::Now,
        TimeOrNow::SpecificTime(t) => SetTime::At(Time::from_system(t)),
    }
}

fn empty(reply: ReplyEmpty, r: Result<(), FsError>) {
    match r {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(errno(&e)),
    }
}

fn xattr(reply: ReplyXattr, r: Result<XattrReply, FsError>) {
    match r {
        Ok(XattrReply::Size(n)) => reply.size(n),
        Ok(XattrReply::Data(d)) => reply.data(&d),
        Err(e) => reply.error(errno(&e)),
    }
}

impl Filesystem for FuseFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // Clearing setuid/setgid/capabilities on write and truncate is ours
        // (`Fs::kill_privs`): the kernel then marks inodes S_NOSEC and stops
        // asking getxattr("security.capability") before every write.
        let _ = config.add_capabilities(InitFlags::FUSE_HANDLE_KILLPRIV_V2);
        // Listings carry each entry's attributes when the kernel sees a
        // program stat what it lists (`ls -l`, find, du, rsync, file
        // managers): one request per directory block instead of a lookup
        // per name.
        let _ = config
            .add_capabilities(InitFlags::FUSE_DO_READDIRPLUS | InitFlags::FUSE_READDIRPLUS_AUTO);
        // Lookups and listings of one directory may run together (the core
        // reads without a lock; mutations are serialized by the core).
        let _ = config.add_capabilities(InitFlags::FUSE_PARALLEL_DIROPS);
        // A symlink's target never changes (a new target is a new inode):
        // the kernel may keep it in its page cache.
        let _ = config.add_capabilities(InitFlags::FUSE_CACHE_SYMLINKS);
        // Directories need no open handle (listings are addressed by the
        // directory and a stable offset): no opendir/releasedir round trips.
        self.no_opendir = config
            .add_capabilities(InitFlags::FUSE_NO_OPENDIR_SUPPORT)
            .is_ok();
        // Not asked: FUSE_WRITEBACK_CACHE. It merges an untar's small writes
        // (3.05 write requests per file down to 0.98), but the kernel then
        // sends each written file's mtime and ctime back in a setattr at
        // close (and, for rsync, again at release): per file, untar went
        // from 13.91 requests to 12.82 and rsync from 19.28 to 21.28
        // (`scripts/bench-requests`, docs/PERFORMANCE.md, session 14).
        let _ = config.set_max_write(MAX_WRITE);
        let _ = config.set_max_background(64);
        let _ = config.set_time_granularity(Duration::from_nanos(1));
        Ok(())
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        let _t = self.ops.time("forget");
        if let Err(e) = self.fs.forget(Ino(ino.0), nlookup) {
            warn!(ino = ino.0, error = %e, "forget failed; the orphan is deleted at the next mount");
        }
    }

    // No `destroy`: once the session ends, the front end shuts the node
    // down (drain the releases, flush, stop the workers, close the index).

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let _t = self.ops.time("lookup");
        match self.fs.lookup(Ino(parent.0), name.as_bytes()) {
            // A negative entry (inode 0): the kernel caches the miss for
            // the negative lifetime, so a program that stats a name before
            // creating or renaming onto it (rsync, editors, make) asks
            // once. Every namespace change goes through this kernel, which
            // replaces the negative dentry when the name is created.
            Err(FsError::NotFound) => reply.entry_with_ttls(
                &self.ttl.negative,
                &self.ttl.negative,
                &negative(),
                Generation(0),
            ),
            r => self.entry(reply, r),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let _t = self.ops.time("getattr");
        match self.fs.getattr(Ino(ino.0)) {
            Ok(i) => reply.attr(&self.ttl.attr, &attr(&i)),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let _t = self.ops.time("setattr");
        let set = SetAttr {
            mode,
            uid,
            gid,
            size,
            atime: atime.map(set_time),
            mtime: mtime.map(set_time),
            ctime: ctime.map(Time::from_system),
        };
        match self.fs.setattr(&ctx(req), Ino(ino.0), &set) {
            Ok(i) => reply.attr(&self.ttl.attr, &attr(&i)),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let _t = self.ops.time("readlink");
        match self.fs.readlink(Ino(ino.0)) {
            Ok(t) => reply.data(&t),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let _t = self.ops.time("mknod");
        self.entry(
            reply,
            self.fs.mknod(
                &ctx(req),
                Ino(parent.0),
                name.as_bytes(),
                mode & !umask,
                rdev,
            ),
        );
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let _t = self.ops.time("mkdir");
        self.entry(
            reply,
            self.fs
                .mkdir(&ctx(req), Ino(parent.0), name.as_bytes(), mode & !umask),
        );
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let _t = self.ops.time("unlink");
        empty(reply, self.fs.unlink(Ino(parent.0), name.as_bytes()));
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let _t = self.ops.time("rmdir");
        empty(reply, self.fs.rmdir(Ino(parent.0), name.as_bytes()));
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let _t = self.ops.time("symlink");
        self.entry(
            reply,
            self.fs.symlink(
                &ctx(req),
                Ino(parent.0),
                link_name.as_bytes(),
                target.as_os_str().as_bytes(),
            ),
        );
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let _t = self.ops.time("rename");
        let f = pangea::fs::RenameFlags {
            noreplace: flags.contains(RenameFlags::RENAME_NOREPLACE),
            exchange: flags.contains(RenameFlags::RENAME_EXCHANGE),
        };
        if !(flags - RenameFlags::RENAME_NOREPLACE - RenameFlags::RENAME_EXCHANGE).is_empty() {
            return reply.error(Errno::EINVAL);
        }
        empty(
            reply,
            self.fs.rename(
                Ino(parent.0),
                name.as_bytes(),
                Ino(newparent.0),
                newname.as_bytes(),
                f,
            ),
        );
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let _t = self.ops.time("link");
        self.entry(
            reply,
            self.fs
                .link(Ino(ino.0), Ino(newparent.0), newname.as_bytes()),
        );
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let _t = self.ops.time("open");
        match self.fs.open(Ino(ino.0), flags.0 & libc::O_TRUNC != 0) {
            // The kernel keeps the file's page cache across opens, so a
            // file read again is served from memory: every change of a
            // file's bytes goes through this kernel (writes, truncates,
            // fallocate), which updates or drops its cached pages itself.
            // Not after a change failed here (`Fs::keep_cache`): then the
            // kernel drops them at this open.
            Ok(fh) => reply.opened(
                FileHandle(fh),
                if self.fs.keep_cache(Ino(ino.0)) {
                    FopenFlags::FOPEN_KEEP_CACHE
                } else {
                    FopenFlags::empty()
                },
            ),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let _t = self.ops.time("read");
        match self.fs.read_data(Ino(ino.0), offset, size) {
            Ok(d) => reply.data(&d),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let _t = self.ops.time("write");
        if write_flags.contains(WriteFlags::FUSE_WRITE_KILL_SUIDGID)
            && let Err(e) = self.fs.kill_privs(Ino(ino.0))
        {
            return reply.error(errno(&e));
        }
        match self.fs.write(Ino(ino.0), offset, data) {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        let _t = self.ops.time("flush");
        empty(reply, self.fs.close_descriptor(fh.0));
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let _t = self.ops.time("release");
        // Off this thread, unless the queue says it must run here
        // (`pangea::node::Releases`).
        self.releases
            .release(fh.0, Box::new(move |r| empty(reply, r)));
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let _t = self.ops.time("fsync");
        empty(reply, self.fs.fsync(Ino(ino.0)));
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let _t = self.ops.time("opendir");
        if self.no_opendir {
            // Taken by the kernel as "no opendir needed", once for all.
            return reply.error(Errno::ENOSYS);
        }
        match self.fs.getattr(Ino(ino.0)) {
            Ok(i) if i.kind == FileKind::Dir => reply.opened(FileHandle(0), FopenFlags::empty()),
            Ok(_) => reply.error(Errno::ENOTDIR),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let _t = self.ops.time("readdir");
        let r = self.fs.readdir(Ino(ino.0), offset, &mut |e| {
            !reply.add(
                INodeNo(e.ino.0),
                e.offset,
                kind(e.kind),
                OsStr::from_bytes(&e.name),
            )
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let _t = self.ops.time("readdirplus");
        let fs = &self.fs;
        let r = fs.readdir(Ino(ino.0), offset, &mut |e| {
            let Ok(i) = fs.getattr(e.ino) else {
                return true;
            };
            // The kernel counts a lookup per entry it receives, except for
            // "." and "..". Counted before the reply goes out.
            let dot = e.name == b"." || e.name == b"..";
            if !dot {
                fs.remember(e.ino);
            }
            let full = reply.add(
                INodeNo(e.ino.0),
                e.offset,
                OsStr::from_bytes(&e.name),
                &self.ttl.both(),
                &attr(&i),
                Generation(0),
            );
            if full && !dot {
                // Not sent: the kernel will not forget it.
                let _ = fs.forget(e.ino, 1);
            }
            !full
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        let _t = self.ops.time("releasedir");
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let _t = self.ops.time("fsyncdir");
        empty(reply, self.fs.sync_all());
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let _t = self.ops.time("statfs");
        match self.fs.statfs() {
            Ok(s) => reply.statfs(
                s.blocks, s.bfree, s.bavail, s.files, s.ffree, s.bsize, s.namelen, s.frsize,
            ),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn setxattr(
        &self,
        req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        let _t = self.ops.time("setxattr");
        let mode = match flags {
            0 => XattrMode::Any,
            libc::XATTR_CREATE => XattrMode::Create,
            libc::XATTR_REPLACE => XattrMode::Replace,
            _ => return reply.error(Errno::EINVAL),
        };
        empty(
            reply,
            self.fs
                .setxattr(&ctx(req), Ino(ino.0), name.as_bytes(), value, mode),
        );
    }

    fn getxattr(&self, req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let _t = self.ops.time("getxattr");
        xattr(
            reply,
            self.fs
                .getxattr(&ctx(req), Ino(ino.0), name.as_bytes(), size),
        );
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let _t = self.ops.time("listxattr");
        xattr(reply, self.fs.listxattr(Ino(ino.0), size));
    }

    fn removexattr(&self, req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let _t = self.ops.time("removexattr");
        empty(
            reply,
            self.fs.removexattr(&ctx(req), Ino(ino.0), name.as_bytes()),
        );
    }

    fn access(&self, req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        let _t = self.ops.time("access");
        empty(reply, self.fs.access(&ctx(req), Ino(ino.0), mask.bits()));
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        let _t = self.ops.time("create");
        match self
            .fs
            .create(&ctx(req), Ino(parent.0), name.as_bytes(), mode & !umask)
        {
            Ok((i, fh)) => {
                self.fs.remember(i.ino);
                reply.created(
                    &self.ttl.both(),
                    &attr(&i),
                    Generation(0),
                    FileHandle(fh),
                    FopenFlags::empty(),
                )
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let _t = self.ops.time("fallocate");
        empty(reply, self.fs.fallocate(Ino(ino.0), offset, length, mode));
    }
}
