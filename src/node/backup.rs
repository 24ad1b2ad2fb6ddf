//! The index backup: without the index, the shards on the peers are
//! anonymous ciphertext, so the index itself goes to the swarm, through
//! CES, continuously.
//!
//! Every `period` (30 s; the lag stays under a minute while peers answer)
//! that the index changed, the backup worker:
//! 1. takes a RocksDB checkpoint (hard links: a consistent copy);
//! 2. cuts each of its files into 1 MiB pieces, CES-encodes each piece
//!    (compressed, encrypted under the owner's keys, sharded) and places
//!    the shards on up peers, spread over failure domains. Pieces are
//!    named by their chunk id (keyed BLAKE3 of the plaintext): SST files
//!    do not change once written, so a piece placed by an earlier
//!    generation whose holders are all up is not sent again;
//! 3. writes a listing (files, their pieces, every piece's manifest and
//!    holders), itself encoded and placed the same way;
//! 4. seals a root (generation, time, this device, the listing's pieces)
//!    with XChaCha20-Poly1305 under a key derived from the master key, and
//!    puts it in the owner's slot (another derived value) on every storage
//!    member, which keeps the newest generation;
//! 5. records the generation (`Cf::Meta`, `backup/state`), moves the
//!    release floor (`backup/floor`) to the checkpoint's time, and queues
//!    the release of pieces only the previous generation named.
//!
//! The release floor: a peer's copy queued for release at time T (a file
//! deleted, a shard moved by the healer) is released only once a backup
//! taken after T is complete, so the newest complete backup never names a
//! shard that was let go (`placement::UploadQueue::due`).
//!
//! [`restore`] is the way back: the newest root that opens among the
//! members' answers, its listing, every file rebuilt and checked against
//! its pieces' ids.

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::ces::{Ces, Hint, Manifest, MasterKey};
use crate::net::roots::Roots;
use crate::placement::{
    PeerBook, PeerId, PeerTable, ShardToPlace, ShardTransport, Spread, queue, unix_now_ms,
};
use crate::store::{Batch, Cf, Kv, StoreError};
use crate::workers::{Stop, Worker, WorkerError, WorkerProgress, WorkerState};

/// The size of a backup piece.
pub const PIECE: usize = 1 << 20;
/// The default time between backups.
pub const DEFAULT_PERIOD: Duration = Duration::from_secs(30);
/// `Cf::Meta`: the last complete generation ([`State`]).
const META_STATE: &[u8] = b"backup/state";
/// `Cf::Meta`: releases queued before this Unix time (ms) may run.
pub const META_FLOOR: &[u8] = crate::placement::RELEASE_FLOOR;
const ROOT_VERSION: u8 = 1;
/// How far before a checkpoint the release floor is set.
const FLOOR_MARGIN_MS: u64 = 5_000;
const CTX_ROOT_KEY: &str = "pangea 2026-12 index backup root key";
const CTX_ROOT_SLOT: &str = "pangea 2026-12 index backup root slot";
const ROOT_AAD: &[u8] = b"pangea index backup root v1";

/// Why a backup or a restore failed.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("CES: {0}")]
    Ces(#[from] crate::ces::CesError),
    #[error("{0}")]
    Placement(String),
    #[error("{0}")]
    Restore(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BackupError + '_ {
    move |source| BackupError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A placed piece: what decodes it on a machine with only the master key.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Hash)]
pub struct PieceRef {
    /// Its chunk id (keyed BLAKE3 of the plaintext).
    pub id: [u8; 32],
    /// Its CES manifest.
    pub manifest: Vec<u8>,
    /// (shard index, holder's peer id) for every shard placed.
    pub holders: Vec<(u16, Vec<u8>)>,
}

/// A file of the checkpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BackupFile {
    pub name: String,
    pub len: u64,
    /// Its pieces' ids, in order.
    pub pieces: Vec<[u8; 32]>,
}

/// What a generation holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Listing {
    pub generation: u64,
    pub taken_ms: u64,
    pub files: Vec<BackupFile>,
    pub pieces: Vec<PieceRef>,
}

/// The root of a generation, sealed on the storage members.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Root {
    pub version: u8,
    pub generation: u64,
    /// When its checkpoint was taken (Unix ms).
    pub taken_ms: u64,
    /// The device that wrote it (its peer id).
    pub device: Vec<u8>,
    /// The listing's pieces, in order, and its length.
    pub listing: Vec<PieceRef>,
    pub listing_len: u64,
}

/// The last complete generation, as the index keeps it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct State {
    generation: u64,
    taken_ms: u64,
    /// Every piece it names (the files' and the listing's).
    pieces: Vec<PieceRef>,
}

/// The owner's root slot on the storage members (derived from the master
/// key: it names nothing else).
pub fn root_slot(master: &MasterKey) -> [u8; 32] {
    blake3::derive_key(CTX_ROOT_SLOT, master.expose_bytes())
}

fn aad(master: &MasterKey, generation: u64) -> Vec<u8> {
    let mut a = ROOT_AAD.to_vec();
    a.extend_from_slice(&root_slot(master));
    a.extend_from_slice(&generation.to_le_bytes());
    a
}

fn cipher(master: &MasterKey) -> XChaCha20Poly1305 {
    let key = zeroize::Zeroizing::new(blake3::derive_key(CTX_ROOT_KEY, master.expose_bytes()));
    XChaCha20Poly1305::new((&*key).into())
}

/// `root`'s sealed bytes: nonce ‖ ciphertext (the generation and the slot
/// are bound as associated data).
pub fn seal_root(master: &MasterKey, root: &Root) -> Result<Vec<u8>, BackupError> {
    let plain = postcard::to_allocvec(root)
        .map_err(|e| BackupError::Restore(format!("cannot encode the root: {e}")))?;
    let mut nonce = [0u8; 24];
    getrandom::fill(&mut nonce).map_err(|_| crate::ces::CesError::Random)?;
    let aad = aad(master, root.generation);
    let ct = cipher(master)
        .encrypt(
            &XNonce::from(nonce),
            Payload {
                msg: &plain,
                aad: &aad,
            },
        )
        .map_err(|_| BackupError::Restore("cannot seal the root".into()))?;
    let mut out = nonce.to_vec();
    out.extend_from_slice(&ct);
    Ok(out)
}

/// Opens a sealed root kept as generation `seq`; None if it does not open
/// under this master key (another owner's, forged, or damaged).
pub fn open_root(master: &MasterKey, seq: u64, blob: &[u8]) -> Option<Root> {
    if blob.len() < 24 {
        return None;
    }
    let (nonce, ct) = blob.split_at(24);
    let nonce: [u8; 24] = nonce.try_into().ok()?;
    let aad = aad(master, seq);
    let plain = cipher(master)
        .decrypt(&XNonce::from(nonce), Payload { msg: ct, aad: &aad })
        .ok()?;
    let root: Root = postcard::from_bytes(&plain).ok()?;
    (root.version == ROOT_VERSION && root.generation == seq).then_some(root)
}

/// Counters of the backup worker.
#[derive(Debug, Default)]
pub struct BackupStats {
    pub generations: AtomicU64,
    pub last_generation: AtomicU64,
    /// When the last complete generation's checkpoint was taken (Unix ms).
    pub last_taken_ms: AtomicU64,
    pub pieces_sent: AtomicU64,
    pub pieces_reused: AtomicU64,
    pub bytes_sent: AtomicU64,
    pub failures: AtomicU64,
    pub last_error: std::sync::Mutex<Option<String>>,
}

impl BackupStats {
    /// Counters starting from the last complete generation the index
    /// records (so a restart, or a recovery, shows its age at once).
    pub fn from_index(kv: &dyn Kv) -> BackupStats {
        let s = BackupStats::default();
        if let Ok(state) = load_state(kv) {
            s.last_generation.store(state.generation, Ordering::Relaxed);
            s.last_taken_ms.store(state.taken_ms, Ordering::Relaxed);
        }
        s
    }

    /// For `pangea status`: the generation, its age, the lag and errors.
    pub fn json(&self) -> serde_json::Value {
        let taken = self.last_taken_ms.load(Ordering::Relaxed);
        let lag_s = (taken > 0).then(|| unix_now_ms().saturating_sub(taken) / 1000);
        serde_json::json!({
            "generation": self.last_generation.load(Ordering::Relaxed),
            "taken_ms": taken,
            "generations": self.generations.load(Ordering::Relaxed),
            "lag_s": lag_s,
            "pieces_sent": self.pieces_sent.load(Ordering::Relaxed),
            "pieces_reused": self.pieces_reused.load(Ordering::Relaxed),
            "bytes_sent": self.bytes_sent.load(Ordering::Relaxed),
            "failures": self.failures.load(Ordering::Relaxed),
            "last_error": self.last_error.lock().ok().and_then(|e| e.clone()),
        })
    }
}

/// See the module documentation.
pub struct BackupWorker {
    pub kv: Arc<dyn Kv>,
    pub ces: Ces,
    pub master: MasterKey,
    pub transport: Arc<dyn ShardTransport>,
    pub roots: Roots,
    pub book: Arc<PeerBook>,
    /// The chunk layer: the (k, m) new pieces get, and the chunk table's
    /// lock under which peer numbers are allocated.
    pub chunks: Arc<crate::chunks::Chunks>,
    /// The data dir (the checkpoint is taken under it).
    pub data_dir: PathBuf,
    /// This device's peer id.
    pub device: Vec<u8>,
    pub period: Duration,
    pub last_try: Option<Instant>,
    /// The index's sequence number once the last generation (and its own
    /// writes) were done: unchanged, there is nothing new to back up.
    pub last_sequence: Option<u64>,
    pub stats: Arc<BackupStats>,
}

fn load_state(kv: &dyn Kv) -> Result<State, BackupError> {
    Ok(match kv.get(Cf::Meta, META_STATE)? {
        Some(v) => postcard::from_bytes(&v).unwrap_or_else(|_| {
            warn!("the backup state does not parse: the next backup starts afresh");
            State::default()
        }),
        None => State::default(),
    })
}

fn save_state(b: &mut Batch, s: &State) -> Result<(), BackupError> {
    let v = postcard::to_allocvec(s)
        .map_err(|e| BackupError::Restore(format!("cannot encode the backup state: {e}")))?;
    b.put(Cf::Meta, META_STATE, &v);
    // A little before the checkpoint: a release whose batch was built
    // just before it but written just after is not in it.
    let floor = s.taken_ms.saturating_sub(FLOOR_MARGIN_MS);
    b.put(Cf::Meta, META_FLOOR, &floor.to_le_bytes());
    Ok(())
}

/// The file, in a recovered data dir, that tells the first open of the
/// restored index which generation it came from ([`adopt_pending`]).
const ADOPT_FILE: &str = "recovered-backup";

/// Leaves word in `data_dir` that its index was restored from generation
/// `root` (written by the recovery, which must not open RocksDB itself:
/// it runs before the mount forks into the background).
pub fn mark_adopted(data_dir: &Path, root: &Root, listing: &Listing) -> Result<(), BackupError> {
    let mut pieces = listing.pieces.clone();
    pieces.extend(root.listing.iter().cloned());
    let s = State {
        generation: root.generation,
        taken_ms: root.taken_ms,
        pieces,
    };
    let v = postcard::to_allocvec(&s)
        .map_err(|e| BackupError::Restore(format!("cannot encode the backup state: {e}")))?;
    let path = data_dir.join(ADOPT_FILE);
    let mut f = std::fs::File::create(&path).map_err(io(&path))?;
    f.write_all(&v)
        .and_then(|()| f.sync_all())
        .map_err(io(&path))
}

/// On the first open of a restored index: records that the generation it
/// came from is the last complete one (so the next backup is newer than
/// what the members keep, and its pieces are known), then forgets the
/// word left by [`mark_adopted`].
pub fn adopt_pending(data_dir: &Path, kv: &dyn Kv) -> Result<(), BackupError> {
    let path = data_dir.join(ADOPT_FILE);
    let v = match std::fs::read(&path) {
        Ok(v) => v,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(BackupError::Io { path, source: e }),
    };
    let s: State = postcard::from_bytes(&v)
        .map_err(|_| BackupError::Restore(format!("{} does not parse", path.display())))?;
    let mut b = Batch::new();
    save_state(&mut b, &s)?;
    kv.write(b, true)?;
    std::fs::remove_file(&path).map_err(io(&path))?;
    info!(
        generation = s.generation,
        "the restored index takes up its backup generation"
    );
    Ok(())
}

impl BackupWorker {
    /// Encodes and places one piece on up peers; all its shards or none
    /// (a partial placement is released).
    fn place(&self, piece: &[u8]) -> Result<PieceRef, BackupError> {
        let params = self.chunks.shard_params();
        let enc = self.ces.encode(piece, params, &Hint::default())?;
        let shards: Vec<ShardToPlace> = (0..enc.manifest.shard_ids.len())
            .filter_map(|i| {
                Some(ShardToPlace {
                    index: u16::try_from(i).ok()?,
                    address: enc.manifest.shard_ids[i],
                    bytes: enc.shard(i)?.to_vec(),
                })
            })
            .collect();
        let placed = self.transport.place_spread(
            &shards,
            &[],
            Spread {
                per_domain: usize::from(params.m()).max(1),
                only_up: true,
            },
        );
        let mut holders = Vec::new();
        let mut failed = None;
        for (s, r) in shards.iter().zip(placed) {
            match r {
                Ok(p) => holders.push((s.index, p.0)),
                Err(e) => failed = Some(e.to_string()),
            }
        }
        let r = PieceRef {
            id: enc.manifest.chunk_id.0,
            manifest: enc.manifest.encode(),
            holders,
        };
        if let Some(why) = failed {
            self.release(std::slice::from_ref(&r))?;
            return Err(BackupError::Placement(format!(
                "a backup piece could not be placed: {why}"
            )));
        }
        self.stats.pieces_sent.fetch_add(1, Ordering::Relaxed);
        self.stats.bytes_sent.fetch_add(
            shards.iter().map(|s| s.bytes.len() as u64).sum(),
            Ordering::Relaxed,
        );
        Ok(r)
    }

    /// Queues the release of every copy `pieces` name.
    fn release(&self, pieces: &[PieceRef]) -> Result<(), BackupError> {
        if pieces.is_empty() {
            return Ok(());
        }
        let table = PeerTable::new(self.kv.clone());
        // Peer numbers are allocated under the chunk table's lock.
        let _records = self.chunks.table().lock();
        let mut b = Batch::new();
        let mut new = Default::default();
        for p in pieces {
            let Ok(m) = Manifest::decode(&p.manifest) else {
                continue;
            };
            for (i, holder) in &p.holders {
                if let Some(addr) = m.shard_ids.get(usize::from(*i)) {
                    let n = table
                        .number(&mut b, &mut new, &PeerId(holder.clone()))
                        .map_err(|e| BackupError::Placement(e.to_string()))?;
                    queue::release(&mut b, addr, n);
                }
            }
        }
        self.kv.write(b, true)?;
        Ok(())
    }

    fn all_up(&self, p: &PieceRef) -> bool {
        Manifest::decode(&p.manifest).is_ok_and(|m| p.holders.len() == m.shard_ids.len())
            && p.holders
                .iter()
                .all(|(_, h)| self.book.is_up(&PeerId(h.clone())))
    }

    /// One generation (see the module documentation); given up, with
    /// what it placed released, when `stop` is raised.
    pub fn backup_now(&mut self, stop: &Stop) -> Result<Option<u64>, BackupError> {
        // Nothing written since the last generation and its own writes.
        if self.last_sequence == Some(self.kv.sequence()) {
            return Ok(None);
        }
        if self.roots.storage_members() == 0 {
            return Ok(None);
        }
        let prev = load_state(self.kv.as_ref())?;
        // Newer than any root of ours the members keep (a generation
        // whose state was not saved here: a crash after its root was put).
        let kept = newest_root(&self.master, &self.roots.get_all(root_slot(&self.master)))
            .map_or(0, |r| r.generation);
        let generation = prev.generation.max(kept) + 1;
        let taken_ms = unix_now_ms();
        let tmp = self.data_dir.join("backup.checkpoint");
        let _ = std::fs::remove_dir_all(&tmp);
        self.kv.checkpoint(&tmp)?;
        let mut placed = Vec::new();
        let result = self.send(&prev, generation, &tmp, taken_ms, stop, &mut placed);
        let _ = std::fs::remove_dir_all(&tmp);
        if result.is_err() {
            // What this attempt placed and no generation names.
            self.release(&placed)?;
        } else {
            self.last_sequence = Some(self.kv.sequence());
        }
        result.map(Some)
    }

    fn send(
        &mut self,
        prev: &State,
        generation: u64,
        dir: &Path,
        taken_ms: u64,
        stop: &Stop,
        placed: &mut Vec<PieceRef>,
    ) -> Result<u64, BackupError> {
        let known: BTreeMap<[u8; 32], &PieceRef> = prev.pieces.iter().map(|p| (p.id, p)).collect();
        let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(io(dir))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .collect();
        names.sort();
        let mut files = Vec::new();
        let mut pieces: BTreeMap<[u8; 32], PieceRef> = BTreeMap::new();
        let mut buf = vec![0u8; PIECE];
        for path in names {
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .ok_or_else(|| {
                    BackupError::Restore(format!("{} has no UTF-8 name", path.display()))
                })?
                .to_owned();
            let mut f = std::fs::File::open(&path).map_err(io(&path))?;
            let mut ids = Vec::new();
            let mut len = 0u64;
            loop {
                if stop.is_raised() {
                    return Err(BackupError::Placement(
                        "stopped (the node shuts down)".into(),
                    ));
                }
                let n = crate::store::read_full(&mut f, &mut buf).map_err(io(&path))?;
                if n == 0 {
                    break;
                }
                len += n as u64;
                let piece = &buf[..n];
                let id = self.ces.chunk_id(piece).0;
                ids.push(id);
                if pieces.contains_key(&id) {
                    continue;
                }
                let r = match known.get(&id) {
                    Some(r) if self.all_up(r) => {
                        self.stats.pieces_reused.fetch_add(1, Ordering::Relaxed);
                        (*r).clone()
                    }
                    _ => {
                        let r = self.place(piece)?;
                        placed.push(r.clone());
                        r
                    }
                };
                pieces.insert(id, r);
                if n < PIECE {
                    break;
                }
            }
            files.push(BackupFile {
                name,
                len,
                pieces: ids,
            });
        }
        let listing = Listing {
            generation,
            taken_ms,
            files,
            pieces: pieces.values().cloned().collect(),
        };
        let bytes = postcard::to_allocvec(&listing)
            .map_err(|e| BackupError::Restore(format!("cannot encode the listing: {e}")))?;
        let mut listing_refs = Vec::new();
        for piece in bytes.chunks(PIECE) {
            let r = self.place(piece)?;
            placed.push(r.clone());
            listing_refs.push(r);
        }
        let root = Root {
            version: ROOT_VERSION,
            generation,
            taken_ms,
            device: self.device.clone(),
            listing: listing_refs.clone(),
            listing_len: bytes.len() as u64,
        };
        let blob = seal_root(&self.master, &root)?;
        let kept = self.roots.put(root_slot(&self.master), generation, &blob);
        if kept == 0 {
            return Err(BackupError::Placement(
                "no storage member kept the backup root".into(),
            ));
        }
        let mut all: Vec<PieceRef> = pieces.into_values().collect();
        all.extend(listing_refs);
        // Pieces only the previous generation named, or named under
        // another encoding (re-placed because a holder was down).
        let now: HashSet<&PieceRef> = all.iter().collect();
        let gone: Vec<PieceRef> = prev
            .pieces
            .iter()
            .filter(|p| !now.contains(p))
            .cloned()
            .collect();
        let state = State {
            generation,
            taken_ms,
            pieces: all,
        };
        let mut b = Batch::new();
        save_state(&mut b, &state)?;
        self.kv.write(b, true)?;
        placed.clear(); // named by this generation now
        self.release(&gone)?;
        self.stats.generations.fetch_add(1, Ordering::Relaxed);
        self.stats
            .last_generation
            .store(generation, Ordering::Relaxed);
        self.stats.last_taken_ms.store(taken_ms, Ordering::Relaxed);
        info!(generation, kept_by = kept, "index backed up");
        Ok(generation)
    }
}

impl Worker for BackupWorker {
    fn name(&self) -> String {
        "backup".into()
    }

    fn status(&self) -> WorkerProgress {
        let s = &self.stats;
        WorkerProgress {
            queue_length: None,
            counters: vec![
                ("generation", s.last_generation.load(Ordering::Relaxed)),
                ("pieces_sent", s.pieces_sent.load(Ordering::Relaxed)),
                ("pieces_reused", s.pieces_reused.load(Ordering::Relaxed)),
                ("bytes_sent", s.bytes_sent.load(Ordering::Relaxed)),
                ("failures", s.failures.load(Ordering::Relaxed)),
            ],
        }
    }

    fn work(&mut self, stop: &Stop) -> Result<WorkerState, WorkerError> {
        if self.last_try.is_some_and(|t| t.elapsed() < self.period) {
            return Ok(WorkerState::Idle);
        }
        self.last_try = Some(Instant::now());
        match self.backup_now(stop) {
            Ok(Some(_)) => {
                if let Ok(mut e) = self.stats.last_error.lock() {
                    *e = None;
                }
                Ok(WorkerState::Busy)
            }
            Ok(None) => Ok(WorkerState::Idle),
            Err(e) => {
                warn!(error = %e, "the index backup failed; tried again later");
                self.stats.failures.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut last) = self.stats.last_error.lock() {
                    *last = Some(e.to_string());
                }
                Ok(WorkerState::Idle)
            }
        }
    }

    fn wait_for_work(&mut self) -> Duration {
        Duration::from_secs(1).min(self.period)
    }
}

/// Fetches and decodes one piece (any k of its shards, from its holders
/// first), checked against its id.
fn fetch_piece(ces: &Ces, roots: &Roots, p: &PieceRef) -> Result<Vec<u8>, BackupError> {
    let m = Manifest::decode(&p.manifest)
        .map_err(|_| BackupError::Restore("a backup piece's manifest is malformed".into()))?;
    let n = m.shard_ids.len();
    let k = usize::from(m.params.k());
    let mut slots: Vec<Option<Vec<u8>>> = vec![None; n];
    let mut got = 0;
    for (i, slot) in slots.iter_mut().enumerate() {
        if got == k {
            break;
        }
        let mut hint: Vec<Vec<u8>> = p
            .holders
            .iter()
            .filter(|(s, _)| usize::from(*s) == i)
            .map(|(_, h)| h.clone())
            .collect();
        hint.dedup();
        if let Some(b) = roots.fetch(&m.shard_ids[i], &hint) {
            *slot = Some(b);
            got += 1;
        }
    }
    if got < k {
        return Err(BackupError::Restore(format!(
            "a backup piece has {got} of the {k} shards it needs on the members that answered"
        )));
    }
    let view: Vec<Option<&[u8]>> = slots.iter().map(|s| s.as_deref()).collect();
    let (plain, _) = ces.decode(&m, &view)?;
    if ces.chunk_id(&plain).0 != p.id {
        return Err(BackupError::Restore(
            "a backup piece decoded to other bytes than its id names".into(),
        ));
    }
    Ok(plain)
}

/// What a restore found and wrote.
#[derive(Debug, Clone)]
pub struct Restored {
    pub root: Root,
    pub listing: Listing,
    pub bytes: u64,
}

/// The newest backup root that opens under `master` among the members'
/// answers (`answers`: seq, blob).
pub fn newest_root(master: &MasterKey, answers: &[(u64, Vec<u8>)]) -> Option<Root> {
    answers
        .iter()
        .filter_map(|(seq, blob)| open_root(master, *seq, blob))
        .max_by_key(|r| r.generation)
}

/// Rebuilds the index of generation `root` into the new directory `into`:
/// its listing, then every file from its pieces; `progress(done, total)`
/// in bytes. Nothing is left in `into` on an error.
pub fn restore(
    ces: &Ces,
    roots: &Roots,
    root: Root,
    into: &Path,
    progress: &dyn Fn(u64, u64),
) -> Result<Restored, BackupError> {
    let result = restore_into(ces, roots, root, into, progress);
    if result.is_err() {
        let _ = std::fs::remove_dir_all(into);
    }
    result
}

fn restore_into(
    ces: &Ces,
    roots: &Roots,
    root: Root,
    into: &Path,
    progress: &dyn Fn(u64, u64),
) -> Result<Restored, BackupError> {
    let mut bytes = Vec::new();
    for p in &root.listing {
        bytes.extend_from_slice(&fetch_piece(ces, roots, p)?);
    }
    bytes.truncate(usize::try_from(root.listing_len).unwrap_or(usize::MAX));
    let listing: Listing = postcard::from_bytes(&bytes)
        .map_err(|_| BackupError::Restore("the backup's listing does not parse".into()))?;
    if listing.generation != root.generation {
        return Err(BackupError::Restore(
            "the backup's listing is of another generation".into(),
        ));
    }
    let by_id: BTreeMap<[u8; 32], &PieceRef> = listing.pieces.iter().map(|p| (p.id, p)).collect();
    let total: u64 = listing.files.iter().map(|f| f.len).sum();
    std::fs::create_dir(into).map_err(io(into))?;
    let mut done = 0u64;
    progress(0, total);
    for f in &listing.files {
        if f.name.is_empty() || f.name.contains('/') || f.name == "." || f.name == ".." {
            return Err(BackupError::Restore(format!(
                "the listing names a file {:?} outside the index",
                f.name
            )));
        }
        let path = into.join(&f.name);
        let mut out = std::fs::File::create_new(&path).map_err(io(&path))?;
        let mut written = 0u64;
        for id in &f.pieces {
            let p = by_id
                .get(id)
                .ok_or_else(|| BackupError::Restore("the listing names a piece it lacks".into()))?;
            let plain = fetch_piece(ces, roots, p)?;
            out.write_all(&plain).map_err(io(&path))?;
            written += plain.len() as u64;
            done += plain.len() as u64;
            progress(done, total);
        }
        if written != f.len {
            return Err(BackupError::Restore(format!(
                "{} rebuilt to {written} bytes, the listing says {}",
                f.name, f.len
            )));
        }
        out.sync_all().map_err(io(&path))?;
    }
    std::fs::File::open(into)
        .and_then(|d| d.sync_all())
        .map_err(io(into))?;
    Ok(Restored {
        root,
        listing,
        bytes: total,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root(generation: u64) -> Root {
        Root {
            version: ROOT_VERSION,
            generation,
            taken_ms: 5,
            device: vec![1, 2, 3],
            listing: vec![PieceRef {
                id: [9; 32],
                manifest: vec![1; 40],
                holders: vec![(0, vec![7; 38])],
            }],
            listing_len: 40,
        }
    }

    #[test]
    fn a_root_opens_only_under_its_key_and_generation() {
        let a = MasterKey::from_bytes([1; 32]);
        let b = MasterKey::from_bytes([2; 32]);
        let sealed = seal_root(&a, &root(7)).unwrap();
        assert_eq!(open_root(&a, 7, &sealed).map(|r| r.generation), Some(7));
        assert!(open_root(&b, 7, &sealed).is_none(), "another owner's key");
        assert!(
            open_root(&a, 8, &sealed).is_none(),
            "kept as another generation"
        );
        let mut bad = sealed.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(open_root(&a, 7, &bad).is_none(), "a flipped bit");
        assert!(open_root(&a, 7, &sealed[..10]).is_none());
        assert_ne!(root_slot(&a), root_slot(&b));
        // The newest that opens wins; garbage and others' roots are passed over.
        let answers = vec![
            (7, sealed.clone()),
            (9, seal_root(&a, &root(9)).unwrap()),
            (12, seal_root(&b, &root(12)).unwrap()),
            (40, vec![0; 100]),
        ];
        assert_eq!(newest_root(&a, &answers).map(|r| r.generation), Some(9));
    }
}
