//! The chunk layer through its shard seam: a source that is not the local
//! disk (peers, in the network to come) serves the shards, and loading,
//! verifying and repairing do not change.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::mpsc::channel;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::*;
use crate::ces::{CompressionPolicy, MasterKey};
use crate::store::{Batch, ChunkFiles, MemKv, StoreError};
use crate::testutil::random;

/// Shards held elsewhere: encoding → all its shards back to back. Serves
/// `get` from there only; can damage a shard or fail like a dead peer.
#[derive(Default)]
struct Remote {
    shards: Mutex<HashMap<ShardsAt, Vec<u8>>>,
    /// Flip a byte of this shard index in what `get` returns.
    damage: Mutex<Option<usize>>,
    /// Answer every `get` with this error (a peer that is gone).
    dead: Mutex<bool>,
    /// The deadlines `get` was given, as time left when called.
    deadlines: Mutex<Vec<Duration>>,
}

impl ShardSource for Remote {
    fn get(
        &self,
        at: &ShardsAt,
        shard_len: usize,
        want: Range<usize>,
        _buf: Vec<u8>,
        deadline: Instant,
    ) -> ChunkResult<Option<Fetched>> {
        self.deadlines
            .lock()
            .unwrap()
            .push(deadline.saturating_duration_since(Instant::now()));
        if *self.dead.lock().unwrap() {
            return Err(ChunkError::Store(StoreError::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "peer did not answer",
            ))));
        }
        let Some(all) = self.shards.lock().unwrap().get(at).cloned() else {
            return Ok(None);
        };
        let mut bytes = all
            .get(want.start * shard_len..(want.end * shard_len).min(all.len()))
            .unwrap_or_default()
            .to_vec();
        if let Some(i) = *self.damage.lock().unwrap()
            && want.contains(&i)
        {
            bytes[(i - want.start) * shard_len] ^= 0xff;
        }
        Ok(Some(Fetched {
            bytes,
            start: 0,
            remote: false,
        }))
    }

    fn put(&self, at: &ShardsAt, shards: &[u8], _durable: bool) -> ChunkResult<()> {
        self.shards.lock().unwrap().insert(*at, shards.to_vec());
        Ok(())
    }

    fn has(&self, at: &ShardsAt) -> ChunkResult<bool> {
        Ok(self.shards.lock().unwrap().contains_key(at))
    }

    fn delete(&self, at: &ShardsAt) -> ChunkResult<bool> {
        Ok(self.shards.lock().unwrap().remove(at).is_some())
    }
}

struct Setup {
    _dir: tempfile::TempDir,
    chunks: Chunks,
    remote: Arc<Remote>,
    files: Arc<ChunkFiles>,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let files = Arc::new(ChunkFiles::open(&dir.path().join("chunks")).unwrap());
    let kv: Arc<dyn crate::store::Kv> = Arc::new(MemKv::new());
    let ces = Ces::new(
        &MasterKey::from_bytes([5; 32]),
        CompressionPolicy::default(),
    )
    .unwrap();
    let cfg = ChunkConfig {
        shard_params: ShardParams::new(4, 2).unwrap(),
        inline_max: 1024,
        cache_capacity: 64 << 20,
        cache_ttl: Duration::from_secs(60),
        read_only: false,
    };
    let remote = Arc::new(Remote::default());
    let r = remote.clone();
    let chunks = Chunks::with_source(kv, files.clone(), ces, cfg, move |_local| r);
    Setup {
        _dir: dir,
        chunks,
        remote,
        files,
    }
}

/// Stores `plain` as a chunk the way a commit does (encoded on the pool,
/// the record written with one reference); returns its entry.
fn store(s: &Setup, plain: Vec<u8>) -> ChunkEntry {
    let (tx, rx) = channel();
    s.chunks.submit_encode(
        0,
        Arc::new(plain),
        "f".into(),
        Box::new(move |r| {
            let _ = tx.send(r);
        }),
    );
    let p = rx.recv().unwrap().map_err(|(e, _, _)| e).unwrap();
    let (mut rec, inline) = p.encoded.unwrap().into_record();
    rec.refs = 1;
    let mut b = Batch::new();
    s.chunks.table().create(&mut b, &p.id, &rec, &inline);
    s.chunks.table().kv().write(b, true).unwrap();
    s.chunks.drop_cache();
    s.chunks.table().get(&p.id).unwrap().unwrap()
}

/// Moves an encoding's shards from the local disk to the remote source.
fn move_to_remote(s: &Setup, e: &ChunkEntry) {
    let all = s.files.read_all(e.file().as_bytes()).unwrap().unwrap();
    s.remote.put(&e.at(), &all, true).unwrap();
    assert!(s.chunks.delete_file(&e.file()).unwrap());
}

#[test]
fn a_chunk_loads_from_a_source_other_than_the_local_disk() {
    let s = setup();
    let plain = random(300 * 1024, 1);
    let e = store(&s, plain.clone());
    assert_eq!(e.rec.location, Location::File);
    move_to_remote(&s, &e);
    assert_eq!(*s.chunks.load(&e.id).unwrap(), plain);
    assert_eq!(s.chunks.stats().decoded, 1);
    // Every wait on the source had a deadline, in the future.
    let deadlines = s.remote.deadlines.lock().unwrap().clone();
    assert!(!deadlines.is_empty());
    assert!(
        deadlines
            .iter()
            .all(|d| *d > Duration::ZERO && *d <= READ_DEADLINE)
    );
    // Read-ahead goes through the same source.
    s.chunks.drop_cache();
    assert!(s.chunks.read_ahead(&e.id));
    assert_eq!(*s.chunks.load(&e.id).unwrap(), plain);
}

#[test]
fn a_damaged_shard_from_the_source_is_rebuilt_and_repaired_locally() {
    let s = setup();
    let plain = random(200 * 1024, 2);
    let e = store(&s, plain.clone());
    let good = s.files.read_all(e.file().as_bytes()).unwrap().unwrap();
    move_to_remote(&s, &e);
    *s.remote.damage.lock().unwrap() = Some(1);
    assert_eq!(*s.chunks.load(&e.id).unwrap(), plain);
    assert_eq!(s.chunks.stats().repaired, 1);
    // The repair rebuilt the encoding's own shards under the same name on
    // this node's disk; the record did not change.
    assert_eq!(s.files.read_all(e.file().as_bytes()).unwrap(), Some(good));
    assert_eq!(s.chunks.table().record(&e.id).unwrap(), Some(e.rec.clone()));
}

#[test]
fn a_dead_source_is_an_error_never_wrong_bytes() {
    let s = setup();
    let e = store(&s, random(100 * 1024, 3));
    move_to_remote(&s, &e);
    *s.remote.dead.lock().unwrap() = true;
    assert!(s.chunks.load(&e.id).is_err());
    // Too much damage: fewer than k good shards.
    *s.remote.dead.lock().unwrap() = false;
    let at = e.at();
    let mut shards = s.remote.shards.lock().unwrap();
    let all = shards.get_mut(&at).unwrap();
    let len = e.manifest.shard_len as usize;
    for i in 0..3 {
        all[i * len] ^= 1;
    }
    drop(shards);
    assert!(matches!(
        s.chunks.load(&e.id),
        Err(ChunkError::Unreadable { .. })
    ));
    assert_eq!(s.chunks.stats().lost, 1);
}
