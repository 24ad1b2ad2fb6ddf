//! The uploader against in-memory peers (no network: the transport is a
//! [`ShardTransport`] that keeps shards in maps).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::uploader::run_round;
use super::*;
use crate::ces::{Ces, CompressionPolicy, MasterKey, ShardId};
use crate::fs::{Ctx, Fs, FsConfig, ROOT_INO};
use crate::placement::{PeerId, PlaceError, ShardToPlace, ShardTransport, UploadTask};
use crate::store::{ChunkFiles, MemKv};
use crate::testutil::{corrupt_chunk_files, random};

/// One peer's shards: address → bytes.
type PeerStore = HashMap<ShardId, Vec<u8>>;

/// Peers in memory: peer id → its shards.
#[derive(Default)]
struct FakePeers {
    peers: Vec<PeerId>,
    held: Mutex<HashMap<PeerId, PeerStore>>,
    /// While set, every call fails (a network outage).
    down: Mutex<bool>,
    /// Shards placed before the outage starts.
    fail_after: Mutex<Option<usize>>,
}

impl FakePeers {
    fn new(n: usize) -> Self {
        FakePeers {
            peers: (0..n)
                .map(|i| PeerId(format!("peer-{i}").into_bytes()))
                .collect(),
            ..Default::default()
        }
    }

    fn copies(&self) -> usize {
        self.held.lock().unwrap().values().map(HashMap::len).sum()
    }

    fn place_one(&self, s: &ShardToPlace, avoid: &[PeerId]) -> Result<PeerId, PlaceError> {
        if *self.down.lock().unwrap() {
            return Err(PlaceError::NoPeer);
        }
        if let Some(n) = self.fail_after.lock().unwrap().as_mut() {
            if *n == 0 {
                return Err(PlaceError::PeerDown(self.peers[0].clone()));
            }
            *n -= 1;
        }
        // Peers verify what they store, like the real protocol.
        assert_eq!(
            ShardId::of(&s.bytes),
            s.address,
            "shard does not match its address"
        );
        let peer = self
            .peers
            .iter()
            .find(|p| !avoid.contains(p))
            .or_else(|| self.peers.first())
            .ok_or(PlaceError::NoPeer)?
            .clone();
        self.held
            .lock()
            .unwrap()
            .entry(peer.clone())
            .or_default()
            .insert(s.address, s.bytes.clone());
        Ok(peer)
    }
}

impl ShardTransport for FakePeers {
    fn place(&self, shards: &[ShardToPlace], avoid: &[PeerId]) -> Vec<Result<PeerId, PlaceError>> {
        let mut used = avoid.to_vec();
        shards
            .iter()
            .map(|s| {
                let r = self.place_one(s, &used);
                if let Ok(p) = &r
                    && !used.contains(p)
                {
                    used.push(p.clone());
                }
                r
            })
            .collect()
    }

    fn release(&self, peer: &PeerId, address: &ShardId) -> Result<(), PlaceError> {
        if *self.down.lock().unwrap() {
            return Err(PlaceError::PeerDown(peer.clone()));
        }
        if let Some(h) = self.held.lock().unwrap().get_mut(peer) {
            h.remove(address);
        }
        Ok(())
    }
}

const C: Ctx = Ctx {
    uid: 0,
    gid: 0,
    pid: 0,
};

fn fs_with(upload: bool, dir: &tempfile::TempDir) -> Arc<Fs> {
    fs_and_kv(upload, dir).0
}

fn fs_and_kv(upload: bool, dir: &tempfile::TempDir) -> (Arc<Fs>, Arc<MemKv>) {
    let cfg = FsConfig {
        chunk_size: 64 * 1024,
        inline_max: 8 * 1024,
        shard_params: crate::ces::ShardParams::new(4, 2).unwrap(),
        upload,
        ..FsConfig::default()
    };
    let chunks = ChunkFiles::open(&dir.path().join("chunks")).unwrap();
    let ces = Ces::new(
        &MasterKey::from_bytes([9; 32]),
        CompressionPolicy::default(),
    )
    .unwrap();
    let kv = Arc::new(MemKv::new());
    let fs = Arc::new(Fs::new(kv.clone(), Arc::new(chunks), ces, cfg, (0, 0)).unwrap());
    (fs, kv)
}

/// Damages one local shard of every chunk file, then reads the 60 KiB file
/// `ino` (written with `seed`) cold: the read rebuilds the bad shard.
fn damage_and_read(fs: &Fs, kv: &MemKv, dir: &tempfile::TempDir, ino: crate::fs::Ino, seed: u64) {
    corrupt_chunk_files(kv, dir.path(), 1);
    fs.drop_cache();
    assert_eq!(fs.read(ino, 0, 60 * 1024).unwrap(), random(60 * 1024, seed));
    assert_eq!(fs.data_stats().chunks_repaired, 1);
}

/// A file of `len` random bytes, written and closed.
fn put(fs: &Fs, name: &str, len: usize, seed: u64) -> crate::fs::Ino {
    let (ino, fh) = fs.create(&C, ROOT_INO, name.as_bytes(), 0o644).unwrap();
    fs.write(ino.ino, 0, &random(len, seed)).unwrap();
    fs.release(fh).unwrap();
    ino.ino
}

#[test]
fn a_node_alone_queues_nothing_and_records_no_holders() {
    let dir = tempfile::tempdir().unwrap();
    let fs = fs_with(false, &dir);
    put(&fs, "big", 200 * 1024, 1);
    put(&fs, "small", 100, 2);
    assert_eq!(fs.upload_queue().len().unwrap(), 0);
    let ids = fs.chunk_layer().table().ids().unwrap();
    assert!(ids.len() >= 4);
    for id in ids {
        assert!(fs.upload_queue().holders(&id).unwrap().is_empty());
    }
}

#[test]
fn uploader_places_every_shard_on_distinct_peers_and_empties_the_queue() {
    let dir = tempfile::tempdir().unwrap();
    let fs = fs_with(true, &dir);
    put(&fs, "big", 200 * 1024, 1); // 4 chunks in chunk files
    put(&fs, "small", 100, 2); // inline
    let ids = fs.chunk_layer().table().ids().unwrap();
    assert_eq!(fs.upload_queue().len().unwrap(), ids.len() as u64);

    let peers = Arc::new(FakePeers::new(6));
    let stats = UploaderStats::default();
    assert_eq!(
        run_round(&fs.upload_queue(), peers.as_ref(), &stats).unwrap(),
        ids.len()
    );
    assert_eq!(fs.upload_queue().len().unwrap(), 0);
    let s = stats.snapshot();
    assert_eq!(s.chunks_placed, ids.len() as u64);
    assert_eq!(s.shards_placed, 6 * ids.len() as u64);
    assert_eq!(s.failures, 0);
    for id in &ids {
        let holders = fs.upload_queue().holders(id).unwrap();
        let mut shards: Vec<u16> = holders.iter().map(|(i, _)| *i).collect();
        shards.sort_unstable();
        assert_eq!(shards, vec![0, 1, 2, 3, 4, 5]);
        let mut who: Vec<&PeerId> = holders.iter().map(|(_, p)| p).collect();
        who.sort();
        who.dedup();
        assert_eq!(who.len(), 6, "k + m shards on k + m distinct peers");
    }
    assert_eq!(peers.copies(), 6 * ids.len());
    // Nothing is due: another round does nothing.
    assert_eq!(
        run_round(&fs.upload_queue(), peers.as_ref(), &stats).unwrap(),
        0
    );
}

#[test]
fn deleting_a_file_releases_its_peer_copies() {
    let dir = tempfile::tempdir().unwrap();
    let fs = fs_with(true, &dir);
    put(&fs, "big", 130 * 1024, 3);
    let peers = Arc::new(FakePeers::new(6));
    let stats = UploaderStats::default();
    run_round(&fs.upload_queue(), peers.as_ref(), &stats).unwrap();
    let copies = peers.copies();
    assert!(copies > 0);
    fs.unlink(ROOT_INO, b"big").unwrap();
    assert_eq!(fs.upload_queue().len().unwrap(), copies as u64);
    run_round(&fs.upload_queue(), peers.as_ref(), &stats).unwrap();
    assert_eq!(peers.copies(), 0);
    assert_eq!(stats.snapshot().shards_released, copies as u64);
    assert_eq!(fs.upload_queue().len().unwrap(), 0);
}

#[test]
fn a_file_deleted_before_upload_leaves_nothing_queued() {
    let dir = tempfile::tempdir().unwrap();
    let fs = fs_with(true, &dir);
    put(&fs, "gone", 130 * 1024, 4);
    assert!(fs.upload_queue().len().unwrap() > 0);
    fs.unlink(ROOT_INO, b"gone").unwrap();
    assert_eq!(fs.upload_queue().len().unwrap(), 0);
}

#[test]
fn failures_back_off_and_partial_placements_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let fs = fs_with(true, &dir);
    put(&fs, "one", 60 * 1024, 5); // one chunk, 6 shards
    let ids = fs.chunk_layer().table().ids().unwrap();
    assert_eq!(ids.len(), 1);
    let peers = Arc::new(FakePeers::new(6));
    *peers.fail_after.lock().unwrap() = Some(2);
    let stats = UploaderStats::default();
    assert_eq!(
        run_round(&fs.upload_queue(), peers.as_ref(), &stats).unwrap(),
        1
    );
    assert_eq!(stats.snapshot().failures, 1);
    // Two shards placed and recorded; the chunk stays queued, not yet due.
    assert_eq!(fs.upload_queue().holders(&ids[0]).unwrap().len(), 2);
    assert_eq!(fs.upload_queue().len().unwrap(), 1);
    assert_eq!(
        run_round(&fs.upload_queue(), peers.as_ref(), &stats).unwrap(),
        0,
        "backing off"
    );
    // Once due again, only the four missing shards travel.
    *peers.fail_after.lock().unwrap() = None;
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(
        run_round(&fs.upload_queue(), peers.as_ref(), &stats).unwrap(),
        1
    );
    assert_eq!(fs.upload_queue().holders(&ids[0]).unwrap().len(), 6);
    assert_eq!(stats.snapshot().shards_placed, 6);
    assert_eq!(fs.upload_queue().len().unwrap(), 0);
}

#[test]
fn the_uploader_worker_drains_the_queue_and_stops_at_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let fs = fs_with(true, &dir);
    put(&fs, "a", 100 * 1024, 6);
    let peers = Arc::new(FakePeers::new(6));
    let runner = Runner::new(Arc::new(SystemClock));
    let worker = UploaderWorker::new(fs.upload_queue(), peers.clone(), Duration::from_millis(20));
    let stats = worker.stats();
    runner.spawn(Box::new(worker), 0).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while fs.upload_queue().len().unwrap() > 0 {
        assert!(std::time::Instant::now() < deadline, "queue not drained");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(stats.snapshot().chunks_placed >= 2);
    let table = runner.status();
    assert_eq!(table.len(), 1);
    assert_eq!(table[0].name, "uploader");
    assert_eq!(table[0].errors, 0);
    assert!(table[0].progress.counters.contains(&("failures", 0)));
    assert!(runner.shutdown(Duration::from_secs(5)).is_empty());
    // New work is not picked up after shutdown.
    put(&fs, "b", 100 * 1024, 7);
    std::thread::sleep(Duration::from_millis(100));
    assert!(fs.upload_queue().len().unwrap() > 0);
}

#[test]
fn an_outage_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let fs = fs_with(true, &dir);
    put(&fs, "a", 100 * 1024, 8);
    let queued = fs.upload_queue().len().unwrap();
    let peers = Arc::new(FakePeers::new(6));
    *peers.down.lock().unwrap() = true;
    let stats = UploaderStats::default();
    run_round(&fs.upload_queue(), peers.as_ref(), &stats).unwrap();
    assert_eq!(fs.upload_queue().len().unwrap(), queued);
    assert_eq!(stats.snapshot().failures, queued);
    // The file still reads back locally.
    let ino = fs.lookup(ROOT_INO, b"a").unwrap().ino;
    assert_eq!(fs.read(ino, 0, 100 * 1024).unwrap(), random(100 * 1024, 8));
}

#[test]
fn a_repaired_chunk_keeps_its_placement_and_releases_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (fs, kv) = fs_and_kv(true, &dir);
    let ino = put(&fs, "r", 60 * 1024, 9); // one chunk, in a chunk file
    let ids = fs.chunk_layer().table().ids().unwrap();
    assert_eq!(ids.len(), 1);
    let peers = Arc::new(FakePeers::new(6));
    let stats = UploaderStats::default();
    run_round(&fs.upload_queue(), peers.as_ref(), &stats).unwrap();
    assert_eq!(peers.copies(), 6);
    let holders = fs.upload_queue().holders(&ids[0]).unwrap();
    assert_eq!(holders.len(), 6);
    // Damage one local shard; the next cold read rebuilds it in place
    // (same manifest): the peers' copies are still the chunk's shards.
    damage_and_read(&fs, &kv, &dir, ino, 9);
    assert_eq!(fs.upload_queue().holders(&ids[0]).unwrap(), holders);
    assert_eq!(fs.upload_queue().len().unwrap(), 0);
    run_round(&fs.upload_queue(), peers.as_ref(), &stats).unwrap();
    assert_eq!(stats.snapshot().shards_released, 0);
    assert_eq!(peers.copies(), 6);
}

#[test]
fn entries_backing_off_never_hide_due_ones_and_bad_entries_are_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let (fs, kv) = fs_and_kv(true, &dir);
    for i in 0..20 {
        put(&fs, &format!("old{i}"), 100, 100 + i);
    }
    let peers = Arc::new(FakePeers::new(6));
    *peers.down.lock().unwrap() = true;
    let stats = UploaderStats::default();
    assert_eq!(
        run_round(&fs.upload_queue(), peers.as_ref(), &stats).unwrap(),
        20
    );
    // A malformed entry (a newer version, or damage) must not block the queue.
    let mut b = crate::store::Batch::new();
    b.put(crate::store::Cf::Upload, b"Pbad", b"junk");
    crate::store::Kv::write(kv.as_ref(), b, false).unwrap();
    // All 20 back off; a new chunk is due at once, wherever its key sorts.
    let before = fs.chunk_layer().table().ids().unwrap();
    put(&fs, "new", 100, 999);
    let new: Vec<_> = fs
        .chunk_layer()
        .table()
        .ids()
        .unwrap()
        .into_iter()
        .filter(|id| !before.contains(id))
        .collect();
    assert_eq!(new.len(), 1);
    let due = fs.upload_queue().due(1).unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].task, UploadTask::Place { chunk: new[0] });
    *peers.down.lock().unwrap() = false;
    assert_eq!(
        run_round(&fs.upload_queue(), peers.as_ref(), &stats).unwrap(),
        1
    );
    assert_eq!(stats.snapshot().chunks_placed, 1);
}

#[test]
fn a_placement_that_raced_a_repair_is_recorded_as_the_shards_did_not_change() {
    let dir = tempfile::tempdir().unwrap();
    let (fs, kv) = fs_and_kv(true, &dir);
    let ino = put(&fs, "r", 60 * 1024, 11);
    let ids = fs.chunk_layer().table().ids().unwrap();
    // The uploader read the shards...
    let old = fs.upload_queue().shards_to_place(&ids[0]).unwrap().unwrap();
    // ...then a read repaired the chunk, in place.
    damage_and_read(&fs, &kv, &dir, ino, 11);
    // The placement lands: the shards it carried are still the chunk's.
    let placed: Vec<crate::placement::Placed> = old
        .iter()
        .map(|s| crate::placement::Placed {
            index: s.index,
            address: s.address,
            peer: PeerId(format!("peer-{}", s.index).into_bytes()),
        })
        .collect();
    fs.upload_queue()
        .record_placement(&ids[0], &placed)
        .unwrap();
    assert_eq!(fs.upload_queue().holders(&ids[0]).unwrap().len(), 6);
    assert_eq!(fs.upload_queue().len().unwrap(), 0);
}
