//! The node: the process, for every front end (`pangea-mount` today,
//! `pangea serve`'s storage node is [`serve`]). [`Node::open`] does the wiring every front end
//! needs, and [`Node::shutdown`] takes it apart in one order.
//!
//! Owns:
//! * the data dir ([`datadir`]): its lock (held for the node's life, let
//!   go last) and its key;
//! * the index (RocksDB) and the chunk files, inside the [`Fs`];
//! * the release queue ([`Releases`], [`releases`]): the last release of
//!   files, off the front end's threads;
//! * the workers' [`Runner`] and its workers: the uploader
//!   ([`UploaderWorker`]) whenever the node has peers
//!   ([`NodeConfig::placer`]);
//! * opening a data dir for offline tools ([`offline`], `pangea fsck`).
//!
//! May not: know about FUSE or any front end's protocol (a front end takes
//! [`Node::fs`] and [`Node::releases`] and replies on its own); be
//! imported by `fs`, `store`, `cache`, `ces` or `workers`
//! (`scripts/check-layering`).
//!
//! Threads: the release threads ([`releases::RELEASE_THREADS`]), one
//! thread per worker, and the core's own pools (encode, fetch, sync: see
//! `fs`), which end with the [`Fs`].
//!
//! # Shutdown order
//!
//! [`Node::shutdown`], each step after the previous one has finished:
//! 1. **Stop intake.** The front end stops taking requests first (FUSE:
//!    the session ends at unmount) and then calls `shutdown`; the release
//!    queue stops taking releases (a late one runs on its caller's thread).
//! 2. **Drain releases.** Every queued release runs: the closed files'
//!    buffers are stored. The release threads end.
//! 3. **Flush.** Every buffer left is stored and made durable
//!    ([`Fs::sync_all`]): the user's data first, before anything else can
//!    fail or hang.
//! 4. **Stop workers.** The runner raises its stop signal and waits for the
//!    workers at most [`NodeConfig::exit_deadline`]; the workers (and what
//!    they hold of the core) are dropped.
//! 5. **Mark clean.** [`Fs::shutdown`]: a last flush and the clean-shutdown
//!    mark, which lets the next open skip the sweep a crash needs. Skipped
//!    when a worker did not stop (it could still write after the mark): the
//!    next open then sweeps.
//! 6. **Close the index.** The [`Fs`], and with it RocksDB, is dropped,
//!    if nothing else holds it (else it closes with the process).
//! 7. **Let go of the data dir.** Its lock goes last: whoever takes the
//!    data dir next finds the index closed, even while this process is
//!    still exiting.
//!
//! Dropping a `Node` without `shutdown` (a front end that failed to start)
//! drains the releases, stops the workers and closes the index in the same
//! order, without the flush and the mark.

/// The index backup to the swarm, and its restore.
#[cfg(feature = "net")]
pub mod backup;
pub mod control;
pub mod datadir;
#[cfg(feature = "net")]
mod evict;
#[cfg(feature = "net")]
mod fit;
/// The recovery kit: the keys and a few peers, on paper, to recover on a new machine.
#[cfg(feature = "net")]
pub mod kit;
#[cfg(feature = "net")]
pub mod metrics;
pub mod offline;
#[cfg(feature = "net")]
pub mod prober;
/// Recovery of a lost device from its kit and the index backup.
#[cfg(feature = "net")]
pub mod recover;
pub mod releases;
#[cfg(feature = "net")]
pub mod serve;
#[cfg(feature = "net")]
pub mod status;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tracing::warn;

use crate::ces::{Ces, CesError};
use crate::fs::{Fs, FsConfig, FsError};
use crate::placement::ShardTransport;
use crate::store::{Cf, ChunkFiles, Kv, RocksKv, StoreError};
use crate::workers::runner::{DEFAULT_EXIT_DEADLINE, SpawnError};
use crate::workers::{Clock, Runner, SystemClock, UploaderWorker, Worker, WorkerStatus};
use datadir::{DataDir, DataDirError};

pub use releases::{ReleaseDone, Releases};

/// How often the uploader looks at its queue when nothing was due: entries
/// become due by time (their back-off), and a new chunk waits at most this
/// long to be placed.
pub const UPLOAD_INTERVAL: Duration = Duration::from_millis(500);
/// The uploader's tranquility: none. Each round moves a batch of chunks
/// with their shards in flight; pausing as long again after each (as a
/// tranquility of 1 did) halved the rate at which a write became safe
/// (scripts/bench-swarm: 1 GiB placed in 35 s with it).
pub const UPLOAD_TRANQUILITY: u32 = 0;

/// What a node is opened with.
#[derive(Clone)]
pub struct NodeConfig {
    /// The data dir (as messages should name it: front ends pass a
    /// canonical path). Created on first use unless `read_only`.
    pub data_dir: PathBuf,
    /// Write nothing to the data dir (`-o ro`): no key or directory
    /// created, no recovery, no reserve, no uploads.
    pub read_only: bool,
    /// The filesystem core's tunables. The node sets `staging_dir`,
    /// `reserve`, `read_only` and `upload` itself (from the data dir,
    /// `read_only` and `placer`): what is given for them is replaced.
    pub fs: FsConfig,
    /// (uid, gid) of the root directory, when the node creates it.
    pub root_owner: (u32, u32),
    /// The transport to peers. Some: new chunks are queued for placement
    /// and the uploader runs. None: a node alone (no queue, no uploader).
    pub placer: Option<Arc<dyn ShardTransport>>,
    /// See [`UPLOAD_INTERVAL`].
    pub upload_interval: Duration,
    /// See [`UPLOAD_TRANQUILITY`].
    pub upload_tranquility: u32,
    /// The workers' time (a manual clock in tests).
    pub clock: Arc<dyn Clock>,
    /// How long shutdown waits for the workers to stop.
    pub exit_deadline: Duration,
    /// The network: Some, the node goes online (joining or creating a
    /// network) and places its chunks on the storage members.
    #[cfg(feature = "net")]
    pub net: Option<crate::net::online::NetSetup>,
    /// Choose (k, m) for new chunks from the storage members present
    /// (false: `fs.shard_params` as given, e.g. `--k/--m`).
    pub auto_params: bool,
    /// Online: the most bytes of chunk files to keep (placed chunks beyond
    /// it are evicted); None: evict only when the disk is 90 % full.
    pub local_max: Option<u64>,
    /// `-o sync_remote`: fsync and close return only once at least k+1
    /// shards of each of the file's chunks sit on live peers (EIO after
    /// six operation timeouts: 60 s by default).
    pub sync_remote: bool,
    /// When the healer repairs (grace period, spare shards).
    pub heal: crate::placement::HealPolicy,
    /// How often the healer scans every chunk record.
    pub heal_rescan: Duration,
    /// The most bytes per second repairs move (None: no cap).
    pub heal_rate: Option<u64>,
    /// How often the prober asks each storage member.
    pub probe_every: Duration,
    /// Run the healer (false: `--no-heal`, lost shards stay lost).
    pub heal_enabled: bool,
    /// How long a local scrub pass takes (each 5/6 to 7/6 of it).
    pub scrub_period: Duration,
    /// Peers' proofs asked per second.
    pub scrub_challenges: usize,
    /// How often the index is backed up to the storage members (an admin
    /// device with peers only; None: `--no-backup`).
    pub backup_every: Option<Duration>,
    /// `--metrics ADDR`: the Prometheus endpoint, and the front end's
    /// operation timings it shows.
    #[cfg(feature = "net")]
    pub metrics: Option<(std::net::SocketAddr, Arc<metrics::OpStats>)>,
}

impl NodeConfig {
    /// A node alone on `data_dir`, with the core's default tunables.
    pub fn new(data_dir: PathBuf) -> NodeConfig {
        NodeConfig {
            data_dir,
            read_only: false,
            fs: FsConfig::default(),
            root_owner: (0, 0),
            placer: None,
            upload_interval: UPLOAD_INTERVAL,
            upload_tranquility: UPLOAD_TRANQUILITY,
            clock: Arc::new(SystemClock),
            exit_deadline: DEFAULT_EXIT_DEADLINE,
            #[cfg(feature = "net")]
            net: None,
            auto_params: true,
            local_max: None,
            sync_remote: false,
            heal: crate::placement::HealPolicy::default(),
            heal_rescan: Duration::from_secs(300),
            heal_rate: Some(64 << 20),
            probe_every: Duration::from_secs(2),
            heal_enabled: true,
            scrub_period: Duration::from_secs(30 * 24 * 3600),
            scrub_challenges: 4,
            backup_every: Some(Duration::from_secs(30)),
            #[cfg(feature = "net")]
            metrics: None,
        }
    }
}

/// Why a node did not open, with what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// Another process holds the data dir's lock.
    #[error(
        "data dir {} is in use by another pangea-mount (see {}/lock); unmount it first or pass --data-dir",
        .path.display(),
        .path.display()
    )]
    InUse {
        /// The data dir.
        path: PathBuf,
    },
    /// The data dir or its key (including a key that does not match the
    /// index).
    #[error(transparent)]
    DataDir(DataDirError),
    /// The index could not open for want of space.
    #[error(
        "index: the disk of {} is full; free some space on it (at least {reserve_mib} MiB) and mount again",
        .path.display()
    )]
    IndexDiskFull {
        /// The data dir.
        path: PathBuf,
        /// The size of the data dir's reserve: what the index needs.
        reserve_mib: u64,
    },
    /// The index could not open or be read.
    #[error("index: {0}")]
    Index(StoreError),
    /// The chunk files' directory could not open.
    #[error("chunk store: {0}")]
    ChunkStore(StoreError),
    /// CES could not start with the data dir's key.
    #[error(transparent)]
    Ces(CesError),
    /// The filesystem core could not open (or recover) the store.
    #[error("opening the filesystem: {0}")]
    Fs(FsError),
    /// A worker could not be started.
    #[error(transparent)]
    Worker(SpawnError),
    /// The node could not go online.
    #[error("network: {0}")]
    Net(String),
}

/// What [`Node::shutdown`] did.
#[derive(Debug)]
pub struct ShutdownReport {
    /// The first failure of the flush or of marking the store clean (the
    /// later steps ran all the same).
    pub flush_error: Option<FsError>,
    /// Workers that did not stop within the exit deadline (the store was
    /// then not marked clean).
    pub workers_not_stopped: Vec<String>,
    /// Whether the index was closed (false: something outside the node
    /// still held the filesystem; it closes with the process).
    pub index_closed: bool,
}

/// The running process (see the module docs). Field order is drop order:
/// the release queue, then the workers, then the core (the index), then
/// the data dir's lock.
pub struct Node {
    /// The metrics endpoint; closed first.
    #[cfg(feature = "net")]
    metrics: Option<metrics::MetricsServer>,
    /// The control socket (`pangea status`...); closed first.
    #[cfg(feature = "net")]
    control: Option<control::ControlServer>,
    /// Runs releases off the front end's threads; drained first.
    releases: Arc<Releases>,
    /// The workers; stopped after the flush, before the index closes.
    runner: Runner,
    /// The network (its runtime and swarm task); stopped after the
    /// workers, which use it.
    #[cfg(feature = "net")]
    online: Option<crate::net::online::Online>,
    /// The filesystem core, which owns the index and the chunk files.
    fs: Arc<Fs>,
    /// Whether the last run marked the store clean (false: it crashed,
    /// or this is the first run, and the open swept).
    last_run_clean: bool,
    /// See [`NodeConfig::exit_deadline`].
    exit_deadline: Duration,
    /// The data dir, its key and its lock: dropped last.
    dir: DataDir,
}

impl Node {
    /// Opens the data dir (creating it and its key on first use, unless
    /// read-only), the index (checking the key against it before anything
    /// else reads it), the chunk files and the filesystem core; restores
    /// the index's reserve; starts the release queue and, when there are
    /// peers, the uploader.
    pub fn open(cfg: NodeConfig) -> Result<Node, NodeError> {
        let ro = cfg.read_only;
        let path = &cfg.data_dir;
        // -o ro writes nothing to the data dir (test
        // `read_only_mount_writes_nothing_to_the_data_dir`).
        let opened = if ro {
            DataDir::open_read_only(path)
        } else {
            DataDir::open(path)
        };
        let dir = opened.map_err(|e| match e {
            DataDirError::Store(StoreError::Locked { .. }) => {
                NodeError::InUse { path: path.clone() }
            }
            e => NodeError::DataDir(e),
        })?;
        let kv = if ro {
            RocksKv::open_read_only(&dir.index_dir(), &std::env::temp_dir())
        } else {
            RocksKv::open(&dir.index_dir())
        };
        let kv = kv.map_err(|e| {
            if e.is_no_space() {
                NodeError::IndexDiskFull {
                    path: path.clone(),
                    reserve_mib: dir.reserve.bytes() >> 20,
                }
            } else {
                NodeError::Index(e)
            }
        })?;
        // Before anything else reads or writes the index: is this its key?
        // (A mismatch writes nothing; -o ro writes no missing check value.)
        datadir::check_key(&kv, &dir.master, ro).map_err(NodeError::DataDir)?;
        #[cfg(feature = "net")]
        if !ro {
            backup::adopt_pending(path, &kv).map_err(|e| NodeError::Net(e.to_string()))?;
        }
        let chunks = if ro {
            ChunkFiles::open_read_only(&dir.chunks_dir())
        } else {
            ChunkFiles::open(&dir.chunks_dir())
        };
        let chunks = chunks.map_err(NodeError::ChunkStore)?;
        let last_run_clean = kv
            .get(Cf::Meta, crate::fs::META_CLEAN)
            .map_err(NodeError::Index)?
            .is_some();
        let kv: Arc<dyn crate::store::Kv> = Arc::new(kv);
        #[cfg(feature = "net")]
        let book = Arc::new(if ro {
            crate::placement::PeerBook::in_memory()
        } else {
            crate::placement::PeerBook::load(kv.clone()).map_err(|e| NodeError::Fs(e.into()))?
        });
        #[cfg(feature = "net")]
        let online = match cfg.net.as_ref().filter(|_| !ro) {
            Some(setup) => Some(
                crate::net::online::bring_up(
                    &dir.net_dir(),
                    setup,
                    Arc::new(crate::net::online::StoresNothing),
                    book.clone(),
                )
                .map_err(|e| NodeError::Net(e.to_string()))?,
            ),
            None => None,
        };
        let mut placer = cfg.placer.clone();
        let mut fs_params = cfg.fs.shard_params;
        #[cfg(feature = "net")]
        let mut remote: Option<(
            crate::net::swarm::NetClient,
            Arc<crate::net::roster::Membership>,
            Arc<crate::net::remote::RemoteStats>,
            Duration,
        )> = None;
        #[cfg(feature = "net")]
        if let Some(on) = &online {
            let client = on.client();
            let me = client.local_peer_id();
            let storage = on.members.storage_peers(&me).len();
            if cfg.auto_params {
                fs_params = params_for(storage).unwrap_or(fs_params);
            }
            tracing::info!(
                storage_members = storage,
                k = fs_params.k(),
                m = fs_params.m(),
                "online"
            );
            placer = Some(Arc::new(crate::net::remote::NetTransport::new(
                client.clone(),
                on.members.clone(),
                on.stats.clone(),
                book.clone(),
            )));
            let op = cfg
                .net
                .as_ref()
                .map_or(Duration::from_secs(10), |n| n.op_timeout);
            remote = Some((client, on.members.clone(), on.stats.clone(), op));
        }
        let upload = placer.is_some() && !ro;
        let fs_cfg = FsConfig {
            staging_dir: Some(dir.staging_dir()),
            reserve: (!ro).then(|| dir.reserve.clone()),
            read_only: ro,
            upload,
            shard_params: fs_params,
            ..cfg.fs
        };
        let ces = Ces::new(&dir.master, fs_cfg.policy).map_err(NodeError::Ces)?;
        #[cfg(feature = "net")]
        let source_book = book.clone();
        #[cfg(feature = "net")]
        let fs = Fs::with_source(
            kv.clone(),
            Arc::new(chunks),
            ces,
            fs_cfg,
            cfg.root_owner,
            move |local, kv| -> Arc<dyn crate::chunks::ShardSource> {
                match remote {
                    Some((client, members, stats, op)) => {
                        Arc::new(crate::net::remote::RemoteShards::new(
                            local,
                            kv,
                            client,
                            members,
                            op,
                            stats,
                            source_book,
                        ))
                    }
                    None => Arc::new(local),
                }
            },
        );
        #[cfg(not(feature = "net"))]
        let fs = Fs::new(kv.clone(), Arc::new(chunks), ces, fs_cfg, cfg.root_owner);
        let fs = Arc::new(fs.map_err(NodeError::Fs)?);
        if upload {
            // Chunks written before the node had peers are placed too.
            fs.upload_queue()
                .seed_unplaced()
                .map_err(|e| NodeError::Fs(e.into()))?;
        }
        if !ro && let Err(e) = dir.reserve.restore() {
            warn!(error = %e, bytes = dir.reserve.bytes(), "the data dir's disk is nearly full: no space set aside for the index (it is retried after deletions)");
        }
        let releases = Arc::new(Releases::start(fs.clone()));
        let runner = Runner::new(cfg.clock.clone());
        #[cfg(feature = "net")]
        let tune_explained = Arc::new(std::sync::Mutex::new(None));
        #[cfg(feature = "net")]
        if let Some(on) = online.as_ref().filter(|_| !ro) {
            let fit = fit::FitParams {
                auto: cfg.auto_params,
                chunks: fs.chunk_layer().clone(),
                members: on.members.clone(),
                client: on.client(),
                alone: cfg.fs.shard_params,
                changes: 0,
                queue: fs.upload_queue(),
                forgotten: std::collections::HashSet::new(),
                book: book.clone(),
                repair_h: (cfg.heal.grace_ms as f64 / 3_600_000.0)
                    .max(cfg.heal_rescan.as_secs_f64() / 3600.0)
                    .max(1.0 / 60.0),
                explained: tune_explained.clone(),
            };
            runner.spawn(Box::new(fit), 0).map_err(NodeError::Worker)?;
        }
        #[cfg(feature = "net")]
        if let Some(on) = online.as_ref().filter(|_| upload) {
            let evictor = evict::Evictor {
                queue: fs.upload_queue(),
                chunks: fs.chunk_layer().clone(),
                net: on.handle(),
                local_max: cfg.local_max,
                evicted: 0,
                evicted_bytes: 0,
            };
            runner
                .spawn(Box::new(evictor), 1)
                .map_err(NodeError::Worker)?;
        }
        #[cfg(feature = "net")]
        let mut healer_stats = None;
        #[cfg(feature = "net")]
        let mut scrub_stats = None;
        #[cfg(feature = "net")]
        let mut backup_stats: Option<Arc<backup::BackupStats>> = None;
        #[cfg(feature = "net")]
        if let (Some(on), Some(placer)) = (
            online.as_ref().filter(|_| upload),
            placer.clone().filter(|_| upload),
        ) {
            let prober = prober::Prober::new(
                on.client(),
                on.members.clone(),
                book.clone(),
                cfg.probe_every,
            );
            runner
                .spawn(Box::new(prober), 0)
                .map_err(NodeError::Worker)?;
            let placer_for_scrub = placer.clone();
            let backup_placer = placer.clone();
            let healer = crate::workers::HealerWorker::new(
                fs.heal_queue(),
                book.clone(),
                placer,
                cfg.heal,
                cfg.heal_rescan,
                cfg.heal_rate,
            );
            if cfg.heal_enabled {
                healer_stats = Some(healer.stats());
                runner
                    .spawn(Box::new(healer), 0)
                    .map_err(NodeError::Worker)?;
            }
            let scrubber = crate::workers::ScrubberWorker::new(
                kv.clone(),
                fs.chunk_layer().clone(),
                book.clone(),
                placer_for_scrub,
                cfg.scrub_period,
                cfg.scrub_challenges,
            );
            scrub_stats = Some(scrubber.stats());
            runner
                .spawn(Box::new(scrubber), 0)
                .map_err(NodeError::Worker)?;
            if let Some(period) = cfg.backup_every.filter(|_| on.members.is_admin()) {
                let chunks = fs.chunk_layer().clone();
                let op = cfg
                    .net
                    .as_ref()
                    .map_or(Duration::from_secs(10), |n| n.op_timeout);
                let worker = backup::BackupWorker {
                    kv: kv.clone(),
                    ces: Ces::new(&dir.master, cfg.fs.policy).map_err(NodeError::Ces)?,
                    master: dir.master.clone(),
                    transport: backup_placer,
                    roots: crate::net::roots::Roots::new(on.client(), on.members.clone(), op),
                    book: book.clone(),
                    chunks,
                    data_dir: dir.root.clone(),
                    device: on.client().local_peer_id().to_bytes(),
                    period,
                    last_try: None,
                    last_sequence: None,
                    stats: Arc::new(backup::BackupStats::from_index(kv.as_ref())),
                };
                backup_stats = Some(worker.stats.clone());
                runner
                    .spawn(Box::new(worker), 1)
                    .map_err(NodeError::Worker)?;
            }
        }
        // Backups turned off (`--no-backup`): no release waits for one.
        // (Offline, or not the admin, the floor stays: a backup that
        // exists still names what it names.)
        #[cfg(feature = "net")]
        if cfg.backup_every.is_none() && !ro {
            let mut b = crate::store::Batch::new();
            b.delete(Cf::Meta, crate::placement::RELEASE_FLOOR);
            kv.write(b, false).map_err(NodeError::Index)?;
        }
        if let Some(placer) = placer.filter(|_| upload) {
            let uploader = UploaderWorker::new(fs.upload_queue(), placer, cfg.upload_interval);
            runner
                .spawn(Box::new(uploader), cfg.upload_tranquility)
                .map_err(NodeError::Worker)?;
        }
        #[cfg(feature = "net")]
        if cfg.sync_remote
            && let Some(on) = online.as_ref()
        {
            let handle = on.handle();
            let weak = Arc::downgrade(&fs);
            let deadline = 6 * cfg
                .net
                .as_ref()
                .map_or(Duration::from_secs(10), |n| n.op_timeout);
            fs.set_remote_sync(Arc::new(move |chunks: &[crate::ces::ChunkId]| {
                let fs = weak.upgrade().ok_or("shutting down")?;
                status::wait_on_peers(&fs, &handle, chunks, deadline)
            }));
        }
        #[cfg(feature = "net")]
        {
            let handle = online.as_ref().map(|o| o.handle());
            let weak = Arc::downgrade(&fs);
            fs.set_health(Arc::new(move |chunks: &[crate::ces::ChunkId]| {
                match weak.upgrade() {
                    Some(fs) => status::health_of(&fs, handle.as_ref(), chunks),
                    None => String::new(),
                }
            }));
        }
        #[cfg(feature = "net")]
        let mut metrics_server = None;
        #[cfg(feature = "net")]
        let control = if ro {
            None
        } else {
            let context = || status::MountContext {
                fs: Arc::downgrade(&fs),
                net: online.as_ref().map(|o| o.handle()),
                healer: healer_stats.clone(),
                scrub: scrub_stats.clone(),
                backup: backup_stats.clone(),
                tune: tune_explained.clone(),
                workers: runner.status_handles(),
            };
            if let Some((addr, ops)) = &cfg.metrics {
                match metrics::MetricsServer::start(*addr, context(), ops.clone()) {
                    Ok(m) => metrics_server = Some(m),
                    Err(e) => {
                        return Err(NodeError::Net(format!(
                            "--metrics {addr}: cannot listen: {e}"
                        )));
                    }
                }
            }
            let handler = status::mount_handler(context());
            match control::ControlServer::start(path, handler) {
                Ok(c) => Some(c),
                Err(e) => {
                    warn!(error = %e, "no control socket: pangea status cannot reach this node");
                    None
                }
            }
        };
        Ok(Node {
            #[cfg(feature = "net")]
            metrics: metrics_server,
            #[cfg(feature = "net")]
            control,
            releases,
            runner,
            #[cfg(feature = "net")]
            online,
            fs,
            last_run_clean,
            exit_deadline: cfg.exit_deadline,
            dir,
        })
    }

    /// The filesystem core, for the front end's requests.
    pub fn fs(&self) -> &Arc<Fs> {
        &self.fs
    }

    /// The release queue, for the front end's last releases of files.
    pub fn releases(&self) -> &Arc<Releases> {
        &self.releases
    }

    /// Starts another worker under the node's runner (stopped at
    /// shutdown, before the index closes).
    pub fn spawn_worker(
        &self,
        worker: Box<dyn Worker>,
        tranquility: u32,
    ) -> Result<(), SpawnError> {
        self.runner.spawn(worker, tranquility)
    }

    /// The network, when the node is online.
    #[cfg(feature = "net")]
    pub fn online(&self) -> Option<&crate::net::online::Online> {
        self.online.as_ref()
    }

    /// The data dir.
    pub fn data_dir(&self) -> &std::path::Path {
        &self.dir.root
    }

    /// The workers' status table.
    pub fn workers(&self) -> Vec<WorkerStatus> {
        self.runner.status()
    }

    /// Whether the last run shut down cleanly (the store carried the mark
    /// [`Node::shutdown`] writes).
    pub fn last_run_clean(&self) -> bool {
        self.last_run_clean
    }

    /// Shuts the node down in the order of the module docs. Call it after
    /// the front end stopped taking requests. Failures are reported, not
    /// returned early: every step runs.
    pub fn shutdown(self) -> ShutdownReport {
        let Node {
            #[cfg(feature = "net")]
            metrics,
            #[cfg(feature = "net")]
            control,
            releases,
            runner,
            #[cfg(feature = "net")]
            online,
            fs,
            exit_deadline,
            dir,
            ..
        } = self;
        // The CLI's and the metrics' doors close first (they hold the
        // filesystem while they answer).
        #[cfg(feature = "net")]
        drop(metrics);
        #[cfg(feature = "net")]
        drop(control);
        // 1, 2: stop intake, drain releases.
        releases.drain();
        drop(releases);
        // 3: flush.
        let mut flush_error = fs.sync_all().err();
        if let Some(e) = &flush_error {
            warn!(error = %e, "flush at shutdown failed");
        }
        // 4: stop workers.
        let workers_not_stopped = runner.shutdown(exit_deadline);
        drop(runner);
        // The network goes with the workers that used it.
        #[cfg(feature = "net")]
        drop(online);
        // 5: mark clean, only if nothing can write after the mark.
        if workers_not_stopped.is_empty() {
            if let Err(e) = fs.shutdown() {
                flush_error.get_or_insert(e);
            }
        } else {
            warn!(workers = ?workers_not_stopped, "workers still running: the store is not marked clean (the next open sweeps)");
        }
        // 6: close the index.
        let index_closed = match Arc::try_unwrap(fs) {
            Ok(fs) => {
                drop(fs);
                true
            }
            Err(_) => {
                warn!(
                    "the filesystem is still referenced at exit; the index closes with the process"
                );
                false
            }
        };
        // 7: let go of the data dir.
        drop(dir);
        ShutdownReport {
            flush_error,
            workers_not_stopped,
            index_closed,
        }
    }
}

/// (k, m) for new chunks with `storage` storage members: one shard per
/// member, a third of them parity (any third of the members can be lost),
/// at most 12 wide. None below two members (the local layout stays).
pub fn params_for(storage: usize) -> Option<crate::ces::ShardParams> {
    if storage < 2 {
        return None;
    }
    let n = storage.min(12);
    let m = n.div_ceil(3).max(1);
    let k = n - m;
    let (k, m) = if k == 0 { (1, 1) } else { (k, m) };
    crate::ces::ShardParams::new(u16::try_from(k).ok()?, u16::try_from(m).ok()?).ok()
}

#[cfg(test)]
mod tests;
