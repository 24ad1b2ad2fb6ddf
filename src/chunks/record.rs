//! Chunk records: what the index knows of one stored chunk (refcount,
//! where its shards live, which peers hold copies, its manifest), and
//! their byte format (docs/FORMAT.md).

use crate::ces::{ChunkId, Manifest, ShardId};

use super::error::ChunkError;

/// Records are written at version 2 (with shard holders); version 1 records
/// (no holders) are still read.
const CHUNK_RECORD_VERSION: u8 = 2;

/// Where a chunk's own copy of its shards lives on this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Location {
    /// In the index, beside the record (small encodings).
    Inline,
    /// In a chunk file named by [`FileId::of`] the manifest.
    File,
    /// Nowhere on this node: its local copy was evicted once every shard
    /// was placed on peers (the holders in the record have them).
    Remote,
}

impl Location {
    fn code(self) -> u8 {
        match self {
            Location::Inline => 0,
            Location::File => 1,
            Location::Remote => 2,
        }
    }

    fn from_code(c: u8) -> Option<Location> {
        match c {
            0 => Some(Location::Inline),
            1 => Some(Location::File),
            2 => Some(Location::Remote),
            _ => None,
        }
    }
}

/// The name of a chunk file: BLAKE3 of the encoding's manifest, so unique
/// per encoding (two encodings of one chunk never share a file, and a
/// repair, which keeps the encoding, keeps the name).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileId(pub [u8; 32]);

impl FileId {
    /// The file of the encoding whose encoded manifest is `manifest`.
    pub fn of(manifest: &[u8]) -> FileId {
        FileId(*blake3::hash(manifest).as_bytes())
    }

    /// The raw name, for the store.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl std::fmt::Display for FileId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The same short form as the other ids.
        std::fmt::Display::fmt(&ShardId(self.0), f)
    }
}

impl std::fmt::Debug for FileId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FileId({self})")
    }
}

/// A peer holding one shard of a chunk: the shard's index (data shards
/// first) and the peer's number in the peer table (`placement::peers`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Holder {
    pub shard: u16,
    pub peer: u32,
}

/// A chunk record (the value of `Cf::Chunk`, keyed by chunk id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkRecord {
    /// Extents naming the chunk; the record goes when this reaches zero.
    pub refs: u64,
    /// Where this node's copy of the shards lives.
    pub location: Location,
    /// Remote copies (the local ones are implied by `location`); empty
    /// while the node is alone.
    pub holders: Vec<Holder>,
    /// The encoded manifest (nonce, sizes, shard addresses).
    pub manifest: Vec<u8>,
}

impl ChunkRecord {
    /// The record's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let n = u16::try_from(self.holders.len()).unwrap_or(u16::MAX);
        let mut v = Vec::with_capacity(12 + 6 * usize::from(n) + self.manifest.len());
        v.push(CHUNK_RECORD_VERSION);
        v.extend_from_slice(&self.refs.to_le_bytes());
        v.push(self.location.code());
        v.extend_from_slice(&n.to_le_bytes());
        for h in self.holders.iter().take(usize::from(n)) {
            v.extend_from_slice(&h.shard.to_le_bytes());
            v.extend_from_slice(&h.peer.to_le_bytes());
        }
        v.extend_from_slice(&self.manifest);
        v
    }

    /// Parses a record (versions 1 and 2).
    pub fn decode(v: &[u8]) -> Result<ChunkRecord, ChunkError> {
        const BAD: ChunkError = ChunkError::Corrupt("chunk record");
        if v.len() < 10 || !(1..=CHUNK_RECORD_VERSION).contains(&v[0]) {
            return Err(BAD);
        }
        let location = Location::from_code(v[9]).ok_or(BAD)?;
        let refs = u64::from_le_bytes(v[1..9].try_into().map_err(|_| BAD)?);
        let mut rest = &v[10..];
        let mut holders = Vec::new();
        if v[0] >= 2 {
            let n = rest.get(..2).ok_or(BAD)?;
            let n = usize::from(u16::from_le_bytes([n[0], n[1]]));
            let list = rest.get(2..2 + 6 * n).ok_or(BAD)?;
            holders = list
                .chunks_exact(6)
                .map(|h| Holder {
                    shard: u16::from_le_bytes([h[0], h[1]]),
                    peer: u32::from_le_bytes([h[2], h[3], h[4], h[5]]),
                })
                .collect();
            rest = &rest[2 + 6 * n..];
        }
        Ok(ChunkRecord {
            refs,
            location,
            holders,
            manifest: rest.to_vec(),
        })
    }

    /// The chunk file holding the shards (when `location` is `File`).
    pub fn file(&self) -> FileId {
        FileId::of(&self.manifest)
    }
}

/// A record with its manifest decoded (once, when read from the table).
#[derive(Debug, Clone)]
pub struct ChunkEntry {
    pub id: ChunkId,
    pub rec: ChunkRecord,
    pub manifest: Manifest,
}

impl ChunkEntry {
    /// Decodes the record of chunk `id` and its manifest.
    pub fn decode(id: ChunkId, v: &[u8]) -> Result<ChunkEntry, ChunkError> {
        let rec = ChunkRecord::decode(v)?;
        let manifest =
            Manifest::decode(&rec.manifest).map_err(|_| ChunkError::Corrupt("chunk manifest"))?;
        Ok(ChunkEntry { id, rec, manifest })
    }

    /// The chunk file holding the local shards.
    pub fn file(&self) -> FileId {
        self.rec.file()
    }
}

/// A chunk this process encoded and stored, not yet referenced by a record.
pub struct Stored {
    /// The encoded manifest.
    pub manifest: Vec<u8>,
    /// Where the shards went.
    pub location: Location,
    /// The shards, when they are to live in the index (`Inline`).
    pub inline: Vec<u8>,
}

impl Stored {
    /// The chunk file this encoding wrote, if any.
    pub fn file(&self) -> Option<FileId> {
        (self.location == Location::File).then(|| FileId::of(&self.manifest))
    }

    /// The record of this encoding, with no reference yet.
    pub fn into_record(self) -> (ChunkRecord, Vec<u8>) {
        (
            ChunkRecord {
                refs: 0,
                location: self.location,
                holders: Vec::new(),
                manifest: self.manifest,
            },
            self.inline,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_records_round_trip_with_holders_and_version_1_records_still_read() {
        let rec = ChunkRecord {
            refs: 7,
            location: Location::File,
            holders: vec![
                Holder { shard: 0, peer: 3 },
                Holder {
                    shard: 17,
                    peer: u32::MAX,
                },
            ],
            manifest: vec![9; 40],
        };
        let v = rec.encode();
        assert_eq!(v[0], 2);
        let back = ChunkRecord::decode(&v).unwrap();
        assert_eq!(back.refs, 7);
        assert_eq!(back.location, Location::File);
        assert_eq!(back.holders, rec.holders);
        assert_eq!(back.manifest, rec.manifest);
        // Version 1: version, refcount, location, manifest; no holders.
        let mut v1 = vec![1];
        v1.extend_from_slice(&5u64.to_le_bytes());
        v1.push(0);
        v1.extend_from_slice(&[4; 30]);
        let old = ChunkRecord::decode(&v1).unwrap();
        assert_eq!((old.refs, old.location), (5, Location::Inline));
        assert!(old.holders.is_empty());
        assert_eq!(old.manifest, vec![4; 30]);
        // Truncated holder lists and unknown versions are corrupt, not a panic.
        assert!(ChunkRecord::decode(&v[..14]).is_err());
        let mut v3 = v.clone();
        v3[0] = 3;
        assert!(ChunkRecord::decode(&v3).is_err());
    }

    #[test]
    fn an_unknown_location_is_corrupt() {
        let rec = ChunkRecord {
            refs: 1,
            location: Location::Inline,
            holders: Vec::new(),
            manifest: vec![1],
        };
        let mut v = rec.encode();
        v[9] = 3;
        assert!(ChunkRecord::decode(&v).is_err());
        // 2 is an evicted chunk's (no local copy).
        v[9] = 2;
        assert_eq!(ChunkRecord::decode(&v).unwrap().location, Location::Remote);
    }
}
