//! The node on a real data dir (RocksDB in a temp dir): its open, its
//! shutdown order, and the uploader it starts when it has peers.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Weak, mpsc};
use std::time::{Duration, Instant};

use super::*;
use crate::ces::ShardId;
use crate::fs::{Ctx, ROOT_INO};
use crate::placement::{PeerId, PlaceError, ShardToPlace};
use crate::testutil::random;
use crate::workers::{Stop, WorkerError, WorkerState};

fn config(root: &std::path::Path) -> NodeConfig {
    let mut cfg = NodeConfig::new(root.to_path_buf());
    cfg.fs.chunk_size = 64 * 1024;
    cfg.fs.inline_max = 8 * 1024;
    cfg.fs.shard_params = crate::ces::ShardParams::new(4, 2).unwrap();
    cfg
}

/// Peers that accept every shard (no network).
#[derive(Default)]
struct AcceptAll {
    placed: AtomicUsize,
}

impl ShardTransport for AcceptAll {
    fn place(&self, shards: &[ShardToPlace], avoid: &[PeerId]) -> Vec<Result<PeerId, PlaceError>> {
        (0..shards.len())
            .map(|i| {
                self.placed.fetch_add(1, Ordering::SeqCst);
                Ok(PeerId(format!("peer-{}", avoid.len() + i).into_bytes()))
            })
            .collect()
    }

    fn release(&self, _: &PeerId, _: &ShardId) -> Result<(), PlaceError> {
        Ok(())
    }
}

/// A worker that holds the core only weakly (so it cannot keep the index
/// open) and records, when the runner drops it, whether the index was
/// still open then.
struct Witness {
    fs: Weak<Fs>,
    index_open_when_dropped: Arc<AtomicBool>,
}

impl Worker for Witness {
    fn name(&self) -> String {
        "witness".into()
    }

    fn work(&mut self, _stop: &Stop) -> Result<WorkerState, WorkerError> {
        Ok(WorkerState::Idle)
    }

    fn wait_for_work(&mut self) -> Duration {
        Duration::from_secs(3600)
    }
}

impl Drop for Witness {
    fn drop(&mut self) {
        // The index is open while the core is alive: read it.
        let open = self
            .fs
            .upgrade()
            .is_some_and(|fs| fs.lookup(ROOT_INO, b"f").is_ok());
        self.index_open_when_dropped.store(open, Ordering::SeqCst);
    }
}

#[test]
fn node_shutdown_stores_a_queued_release_and_the_next_open_finds_the_clean_mark() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    let node = Node::open(config(&root)).unwrap();
    assert!(!node.last_run_clean(), "a new data dir has no mark");
    assert!(node.workers().is_empty(), "a node alone runs no uploader");
    let fs = node.fs().clone();
    let (inode, fh) = fs.create(&Ctx::ROOT, ROOT_INO, b"f", 0o644).unwrap();
    let data = random(200 * 1024, 1);
    fs.write(inode.ino, 0, &data).unwrap();
    let (tx, rx) = mpsc::channel();
    node.releases().release(
        fh,
        Box::new(move |r| {
            let _ = tx.send(r);
        }),
    );
    drop(fs);
    let report = node.shutdown();
    // The release ran (its completion was called) during the drain.
    assert!(rx.try_recv().unwrap().is_ok());
    assert!(report.flush_error.is_none(), "{:?}", report.flush_error);
    assert!(report.workers_not_stopped.is_empty());
    assert!(report.index_closed);
    // The data dir is free again, marked clean, and the file is there.
    let node = Node::open(config(&root)).unwrap();
    assert!(node.last_run_clean());
    let ino = node.fs().lookup(ROOT_INO, b"f").unwrap().ino;
    assert_eq!(node.fs().read(ino, 0, data.len() as u32).unwrap(), data);
    // Without peers nothing was queued for placement.
    assert_eq!(node.fs().upload_queue().len().unwrap(), 0);
    assert!(node.shutdown().index_closed);
    // A read-only node finds the mark and leaves it (it writes nothing).
    let mut ro = config(&root);
    ro.read_only = true;
    ro.placer = Some(Arc::new(AcceptAll::default()));
    let node = Node::open(ro.clone()).unwrap();
    assert!(node.last_run_clean());
    assert!(
        node.workers().is_empty(),
        "a read-only node uploads nothing"
    );
    node.shutdown();
    assert!(Node::open(ro).unwrap().last_run_clean());
}

#[test]
fn node_shutdown_stops_the_workers_before_the_index_closes() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    let mut cfg = config(&root);
    let peers = Arc::new(AcceptAll::default());
    cfg.placer = Some(peers.clone());
    cfg.upload_interval = Duration::from_millis(10);
    let node = Node::open(cfg).unwrap();
    let witnessed = Arc::new(AtomicBool::new(false));
    node.spawn_worker(
        Box::new(Witness {
            fs: Arc::downgrade(node.fs()),
            index_open_when_dropped: witnessed.clone(),
        }),
        0,
    )
    .unwrap();
    let names: Vec<String> = node.workers().into_iter().map(|w| w.name).collect();
    assert_eq!(names, ["uploader", "witness"]);
    // With peers, the node's uploader places new chunks' shards.
    let (inode, fh) = node.fs().create(&Ctx::ROOT, ROOT_INO, b"f", 0o644).unwrap();
    node.fs()
        .write(inode.ino, 0, &random(100 * 1024, 2))
        .unwrap();
    node.fs().release(fh).unwrap();
    let give_up = Instant::now() + Duration::from_secs(10);
    while node.fs().upload_queue().len().unwrap() > 0 {
        assert!(Instant::now() < give_up, "the uploader did not run");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(peers.placed.load(Ordering::SeqCst), 2 * 6);
    let weak = Arc::downgrade(node.fs());
    let report = node.shutdown();
    assert!(report.workers_not_stopped.is_empty());
    assert!(
        witnessed.load(Ordering::SeqCst),
        "a worker was dropped after the index closed"
    );
    assert!(report.index_closed);
    assert!(weak.upgrade().is_none(), "the index is closed");
}

#[test]
fn node_open_of_a_data_dir_in_use_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    let node = Node::open(config(&root)).unwrap();
    let e = Node::open(config(&root)).err().expect("opened twice");
    assert!(matches!(e, NodeError::InUse { .. }), "{e:?}");
    assert_eq!(
        e.to_string(),
        format!(
            "data dir {0} is in use by another pangea-mount (see {0}/lock); unmount it first or pass --data-dir",
            root.display()
        )
    );
    node.shutdown();
    // Once shut down, the data dir opens again.
    Node::open(config(&root)).unwrap().shutdown();
}

#[test]
fn releases_after_the_drain_run_on_the_callers_thread_before_returning() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::open(config(&dir.path().join("data"))).unwrap();
    let (inode, fh) = node
        .fs()
        .create(&Ctx::ROOT, ROOT_INO, b"late", 0o644)
        .unwrap();
    node.fs().write(inode.ino, 0, b"stored").unwrap();
    node.releases().drain();
    let ran_on = Arc::new(std::sync::Mutex::new(None));
    let seen = ran_on.clone();
    node.releases().release(
        fh,
        Box::new(move |r| {
            *seen.lock().unwrap() = Some((std::thread::current().id(), r.is_ok()));
        }),
    );
    // Run here, already: no thread is left to run it later.
    let here = std::thread::current().id();
    assert_eq!(*ran_on.lock().unwrap(), Some((here, true)));
    assert_eq!(node.fs().read(inode.ino, 0, 16).unwrap(), b"stored");
    assert!(node.shutdown().index_closed);
}
