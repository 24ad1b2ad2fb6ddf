//! `fsck`: an offline check of a data dir's index against its chunk files.
//!
//! Checks the namespace (every entry names an inode of its kind, link
//! counts, the readdir table, nothing unreachable), the file data (every
//! extent names a chunk record, every record's refcount is the number of
//! extents naming it) and the chunks themselves (every record's shards are
//! present and hash to their addresses; no chunk file, inline encoding or
//! queue entry is left that nothing names).
//!
//! `repair` removes only what is provably unreferenced: chunk files no
//! record names, inline encodings and queue entries of chunks that have no
//! record, records no extent names, and GC entries whose file is gone. It
//! never touches a record, extent or inode that something names.
//!
//! Run it only with the data dir locked (no filesystem open on it): an
//! encoding in flight looks exactly like an unreferenced chunk file.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

use super::FsResult;
use super::types::{self, ChunkRef, Dentry, FileKind, Inode};
use crate::ces::{ChunkId, Manifest, verify_shard};
use crate::chunks::{ChunkRecord, Location};
use crate::placement::queue::place_key;
use crate::store::{Batch, Cf, ChunkStore, Kv, key_hex};

/// One thing wrong, in words a person can act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// A record that cannot be decoded.
    Unreadable { what: &'static str, key: String },
    /// A directory entry naming an inode that does not exist.
    DanglingEntry { parent: u64, name: String, ino: u64 },
    /// A directory entry whose kind differs from its inode's.
    WrongKind { parent: u64, name: String },
    /// A directory entry or readdir position without its twin.
    ReaddirMismatch { parent: u64, name: String },
    /// An inode whose link count differs from the entries naming it.
    LinkCount { ino: u64, stored: u32, counted: u32 },
    /// An inode no entry names that is not waiting for deletion.
    Unreachable { ino: u64 },
    /// Data, xattrs or an orphan mark of an inode that does not exist.
    StrayInodeData { ino: u64, what: &'static str },
    /// An extent naming a chunk with no record: that part of the file is
    /// lost.
    MissingChunk { ino: u64, slot: u64, chunk: String },
    /// A chunk record whose refcount is not the number of extents naming it.
    Refcount {
        chunk: String,
        stored: u64,
        counted: u64,
    },
    /// A chunk whose shards are missing or damaged beyond repair (fewer
    /// than k good shards): files naming it read as EIO.
    ChunkLost {
        chunk: String,
        good: usize,
        needed: usize,
    },
    /// A chunk with some bad shards that still decodes (repaired on read).
    ChunkDamaged { chunk: String, bad: Vec<usize> },
    /// A chunk file that no record names.
    UnreferencedFile { file: String },
    /// An inline encoding, queue entry or GC entry that names no record.
    UnreferencedEntry { what: &'static str, key: String },
    /// A chunk record that no extent names.
    UnreferencedChunk { chunk: String },
    /// A chunk file that a record names and that is also queued for
    /// deletion: the next mount would delete data in use.
    LiveFileInGc { file: String },
}

impl Problem {
    /// True for what `repair` removes.
    pub fn is_removable(&self) -> bool {
        matches!(
            self,
            Problem::UnreferencedFile { .. }
                | Problem::UnreferencedEntry { .. }
                | Problem::UnreferencedChunk { .. }
        )
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Unreadable { what, key } => {
                write!(
                    f,
                    "a {what} record ({key}) cannot be read: the index is damaged"
                )
            }
            Problem::DanglingEntry { parent, name, ino } => write!(
                f,
                "directory {parent} has an entry {name:?} for inode {ino}, which does not exist"
            ),
            Problem::WrongKind { parent, name } => write!(
                f,
                "entry {name:?} in directory {parent} does not have its inode's type"
            ),
            Problem::ReaddirMismatch { parent, name } => write!(
                f,
                "entry {name:?} in directory {parent} is missing from the listing table (or the other way round)"
            ),
            Problem::LinkCount {
                ino,
                stored,
                counted,
            } => write!(
                f,
                "inode {ino} says it has {stored} links, but {counted} entries name it"
            ),
            Problem::Unreachable { ino } => {
                write!(
                    f,
                    "inode {ino} is in no directory and not waiting for deletion"
                )
            }
            Problem::StrayInodeData { ino, what } => {
                write!(f, "{what} of inode {ino}, which does not exist")
            }
            Problem::MissingChunk { ino, slot, chunk } => write!(
                f,
                "file {ino}, chunk slot {slot}: chunk {chunk} has no record; those bytes are lost"
            ),
            Problem::Refcount {
                chunk,
                stored,
                counted,
            } => write!(
                f,
                "chunk {chunk} counts {stored} references, but {counted} extents name it"
            ),
            Problem::ChunkLost {
                chunk,
                good,
                needed,
            } => write!(
                f,
                "chunk {chunk} is lost: {good} good shards, {needed} needed; files using it read as I/O errors"
            ),
            Problem::ChunkDamaged { chunk, bad } => write!(
                f,
                "chunk {chunk} has damaged shards {bad:?} but still decodes (the next read repairs it)"
            ),
            Problem::UnreferencedFile { file } => {
                write!(f, "chunk file {file} is not used by any chunk (removable)")
            }
            Problem::UnreferencedEntry { what, key } => {
                write!(f, "{what} entry {key} names no chunk (removable)")
            }
            Problem::UnreferencedChunk { chunk } => {
                write!(f, "chunk {chunk} is used by no file (removable)")
            }
            Problem::LiveFileInGc { file } => write!(
                f,
                "chunk file {file} is in use and also queued for deletion: do not mount before this is fixed"
            ),
        }
    }
}

/// What `fsck` found (and, with `repair`, removed).
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub inodes: u64,
    pub entries: u64,
    pub extents: u64,
    pub chunks: u64,
    pub chunk_files: u64,
    pub problems: Vec<Problem>,
    /// Problems removed by `repair`.
    pub removed: usize,
}

impl Report {
    /// Nothing wrong (after repair, if repair ran: what it removed does
    /// not count).
    pub fn is_clean(&self) -> bool {
        self.remaining().next().is_none()
    }

    /// The problems `repair` did not remove.
    pub fn remaining(&self) -> impl Iterator<Item = &Problem> {
        let removed_kinds = self.removed > 0;
        self.problems
            .iter()
            .filter(move |p| !(removed_kinds && p.is_removable()))
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "checked {} inodes, {} directory entries, {} extents, {} chunks, {} chunk files",
            self.inodes, self.entries, self.extents, self.chunks, self.chunk_files
        )?;
        for p in &self.problems {
            writeln!(f, "- {p}")?;
        }
        if self.removed > 0 {
            writeln!(f, "removed {} unreferenced items", self.removed)?;
        }
        if self.problems.is_empty() {
            writeln!(f, "no problems found")?;
        }
        Ok(())
    }
}

fn name_of(k: &[u8]) -> String {
    String::from_utf8_lossy(k.get(8..).unwrap_or_default()).into_owned()
}

fn be_u64(k: &[u8], at: usize) -> Option<u64> {
    k.get(at..at + 8)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_be_bytes)
}

/// The short display of a 32-byte id.
fn short(id: &[u8; 32]) -> String {
    ChunkId(*id).to_string()
}

/// Every (key, value) of `cf`.
fn all(kv: &dyn Kv, cf: Cf) -> FsResult<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut out = Vec::new();
    kv.scan(cf, &[], &[], &mut |k, v| {
        out.push((k.to_vec(), v.to_vec()));
        true
    })?;
    Ok(out)
}

/// The chunk files that chunk records name (the files of the records that
/// keep their shards in a file of their own). Shared by fsck and by the
/// sweep a mount runs after a crash.
pub(crate) fn named_files(kv: &dyn Kv) -> FsResult<HashSet<[u8; 32]>> {
    let mut named = HashSet::new();
    kv.scan(Cf::Chunk, &[], &[], &mut |_, v| {
        if let Ok(rec) = ChunkRecord::decode(v)
            && rec.location == Location::File
        {
            named.insert(*rec.file().as_bytes());
        }
        true
    })?;
    Ok(named)
}

/// Checks the data dir held by `kv` and `chunks`; with `repair`, removes
/// what is provably unreferenced (see the module docs).
pub fn fsck(kv: &dyn Kv, chunks: &dyn ChunkStore, repair: bool) -> FsResult<Report> {
    let mut r = Report::default();
    let mut p = Vec::new();

    // Namespace.
    let mut inodes: BTreeMap<u64, Inode> = BTreeMap::new();
    for (k, v) in all(kv, Cf::Inode)? {
        match (be_u64(&k, 0), Inode::decode(&v)) {
            (Some(ino), Ok(inode)) => {
                inodes.insert(ino, inode);
            }
            _ => p.push(Problem::Unreadable {
                what: "inode",
                key: key_hex(&k),
            }),
        }
    }
    r.inodes = inodes.len() as u64;
    let orphans: HashSet<u64> = all(kv, Cf::Orphan)?
        .iter()
        .filter_map(|(k, _)| be_u64(k, 0))
        .collect();
    let mut links: HashMap<u64, u32> = HashMap::new();
    let mut subdirs: HashMap<u64, u32> = HashMap::new();
    let mut by_cookie: HashSet<(u64, u64, Vec<u8>)> = HashSet::new();
    for (k, v) in all(kv, Cf::Dentry)? {
        r.entries += 1;
        let (Some(parent), Ok(d)) = (be_u64(&k, 0), Dentry::decode(&v)) else {
            p.push(Problem::Unreadable {
                what: "directory entry",
                key: key_hex(&k),
            });
            continue;
        };
        let name = k[8..].to_vec();
        by_cookie.insert((parent, d.cookie, name.clone()));
        match inodes.get(&d.ino.0) {
            None => p.push(Problem::DanglingEntry {
                parent,
                name: name_of(&k),
                ino: d.ino.0,
            }),
            Some(child) if child.kind != d.kind => p.push(Problem::WrongKind {
                parent,
                name: name_of(&k),
            }),
            Some(child) => {
                *links.entry(d.ino.0).or_default() += 1;
                if child.kind == FileKind::Dir {
                    *subdirs.entry(parent).or_default() += 1;
                }
            }
        }
        if !inodes.get(&parent).is_some_and(|i| i.kind == FileKind::Dir) {
            p.push(Problem::DanglingEntry {
                parent,
                name: name_of(&k),
                ino: parent,
            });
        }
    }
    let mut positions = 0u64;
    for (k, v) in all(kv, Cf::DirPos)? {
        positions += 1;
        match types::decode_dirpos(&k, &v) {
            Ok((cookie, _, _, name)) => {
                let parent = be_u64(&k, 0).unwrap_or(0);
                if !by_cookie.contains(&(parent, cookie, name.clone())) {
                    p.push(Problem::ReaddirMismatch {
                        parent,
                        name: String::from_utf8_lossy(&name).into_owned(),
                    });
                }
            }
            Err(_) => p.push(Problem::Unreadable {
                what: "listing",
                key: key_hex(&k),
            }),
        }
    }
    if positions != r.entries
        && !p
            .iter()
            .any(|x| matches!(x, Problem::ReaddirMismatch { .. }))
    {
        p.push(Problem::ReaddirMismatch {
            parent: 0,
            name: format!("({} entries, {positions} listing positions)", r.entries),
        });
    }
    for (ino, inode) in &inodes {
        let named = links.get(ino).copied().unwrap_or(0);
        if *ino == types::ROOT_INO.0 {
            let want = 2 + subdirs.get(ino).copied().unwrap_or(0);
            if inode.nlink != want {
                p.push(Problem::LinkCount {
                    ino: *ino,
                    stored: inode.nlink,
                    counted: want,
                });
            }
            continue;
        }
        if named == 0 {
            if !(orphans.contains(ino) && inode.nlink == 0) {
                p.push(Problem::Unreachable { ino: *ino });
            }
            continue;
        }
        let want = if inode.kind == FileKind::Dir {
            2 + subdirs.get(ino).copied().unwrap_or(0)
        } else {
            named
        };
        if inode.nlink != want {
            p.push(Problem::LinkCount {
                ino: *ino,
                stored: inode.nlink,
                counted: want,
            });
        }
    }
    for ino in &orphans {
        if !inodes.contains_key(ino) {
            p.push(Problem::StrayInodeData {
                ino: *ino,
                what: "an orphan mark",
            });
        }
    }
    for (k, _) in all(kv, Cf::Xattr)? {
        let ino = be_u64(&k, 0).unwrap_or(0);
        if !inodes.contains_key(&ino) {
            p.push(Problem::StrayInodeData {
                ino,
                what: "extended attributes",
            });
        }
    }

    // Chunk records.
    let mut records: HashMap<[u8; 32], ChunkRecord> = HashMap::new();
    for (k, v) in all(kv, Cf::Chunk)? {
        match (<[u8; 32]>::try_from(k.as_slice()), ChunkRecord::decode(&v)) {
            (Ok(id), Ok(rec)) => {
                records.insert(id, rec);
            }
            _ => p.push(Problem::Unreadable {
                what: "chunk",
                key: key_hex(&k),
            }),
        }
    }
    r.chunks = records.len() as u64;

    // Extents.
    let mut counted: HashMap<[u8; 32], u64> = HashMap::new();
    for (k, v) in all(kv, Cf::Extent)? {
        r.extents += 1;
        let (Some(ino), Some(slot), Ok(cref)) =
            (be_u64(&k, 0), be_u64(&k, 8), ChunkRef::decode(&v))
        else {
            p.push(Problem::Unreadable {
                what: "extent",
                key: key_hex(&k),
            });
            continue;
        };
        if !inodes.get(&ino).is_some_and(|i| i.kind == FileKind::File) {
            p.push(Problem::StrayInodeData {
                ino,
                what: "file data",
            });
        }
        *counted.entry(*cref.id.as_bytes()).or_default() += 1;
        if !records.contains_key(cref.id.as_bytes()) {
            p.push(Problem::MissingChunk {
                ino,
                slot,
                chunk: cref.id.to_string(),
            });
        }
    }

    // Each record: refcount, shards.
    let inline: HashMap<Vec<u8>, Vec<u8>> = all(kv, Cf::Inline)?.into_iter().collect();
    let named_files = named_files(kv)?;
    let mut repair_batch = Batch::new();
    let mut dead_files = Vec::new();
    for (id, rec) in &records {
        let n = counted.get(id).copied().unwrap_or(0);
        if n == 0 {
            p.push(Problem::UnreferencedChunk { chunk: short(id) });
            if repair {
                repair_batch.delete(Cf::Chunk, id);
                repair_batch.delete(Cf::Inline, id);
                repair_batch.delete(Cf::Upload, &place_key(&ChunkId(*id)));
                if rec.location == Location::File {
                    dead_files.push(*rec.file().as_bytes());
                }
            }
        } else if rec.refs != n {
            p.push(Problem::Refcount {
                chunk: short(id),
                stored: rec.refs,
                counted: n,
            });
        }
        let Ok(m) = Manifest::decode(&rec.manifest) else {
            p.push(Problem::Unreadable {
                what: "chunk manifest",
                key: short(id),
            });
            continue;
        };
        let bytes = match rec.location {
            Location::Inline => inline.get(id.as_slice()).cloned(),
            Location::File => chunks.read_all(rec.file().as_bytes())?,
            // Evicted: its shards are on peers, which an offline check
            // does not reach.
            Location::Remote => continue,
        };
        let s = m.shard_len as usize;
        let total = m.params.total();
        let bad: Vec<usize> = (0..total)
            .filter(|&i| {
                let shard = bytes.as_deref().and_then(|b| b.get(i * s..(i + 1) * s));
                shard.is_none_or(|sh| verify_shard(&m, i, sh).is_err())
            })
            .collect();
        let k = usize::from(m.params.k());
        if total - bad.len() < k {
            p.push(Problem::ChunkLost {
                chunk: short(id),
                good: total - bad.len(),
                needed: k,
            });
        } else if !bad.is_empty() {
            p.push(Problem::ChunkDamaged {
                chunk: short(id),
                bad,
            });
        }
    }

    // What nothing names.
    for key in inline.keys() {
        if !<[u8; 32]>::try_from(key.as_slice()).is_ok_and(|id| records.contains_key(&id)) {
            p.push(Problem::UnreferencedEntry {
                what: "inline encoding",
                key: key_hex(key),
            });
            repair_batch.delete(Cf::Inline, key);
        }
    }
    for (key, _) in all(kv, Cf::Upload)? {
        let chunk = key.get(1..33).and_then(|c| <[u8; 32]>::try_from(c).ok());
        let is_place = chunk.is_some_and(|id| key == place_key(&ChunkId(id)));
        if is_place && !chunk.is_some_and(|id| records.contains_key(&id)) {
            p.push(Problem::UnreferencedEntry {
                what: "upload queue",
                key: key_hex(&key),
            });
            repair_batch.delete(Cf::Upload, &key);
        }
    }
    let mut files = Vec::new();
    chunks.visit(&mut |id, _| {
        files.push(*id);
        true
    })?;
    r.chunk_files = files.len() as u64;
    let on_disk: HashSet<[u8; 32]> = files.iter().copied().collect();
    for file in files {
        if !named_files.contains(&file) {
            p.push(Problem::UnreferencedFile { file: short(&file) });
            dead_files.push(file);
        }
    }
    for (key, _) in all(kv, Cf::Gc)? {
        let Ok(blob) = <[u8; 32]>::try_from(key.as_slice()) else {
            continue;
        };
        if named_files.contains(&blob) {
            p.push(Problem::LiveFileInGc { file: short(&blob) });
            continue;
        }
        if !on_disk.contains(&blob) || dead_files.contains(&blob) {
            // Its file is gone (or goes now): the entry is done with.
            repair_batch.delete(Cf::Gc, &key);
            if !on_disk.contains(&blob) {
                p.push(Problem::UnreferencedEntry {
                    what: "pending deletion",
                    key: key_hex(&key),
                });
            }
        }
    }

    if repair {
        // Index first (durably), then the files: a crash in between leaves
        // only files that the next fsck removes.
        kv.write(repair_batch, true)?;
        for blob in &dead_files {
            chunks.delete(blob)?;
            chunks.sync_dir(blob)?;
        }
        r.removed = p.iter().filter(|x| x.is_removable()).count();
    }
    r.problems = p;
    Ok(r)
}
