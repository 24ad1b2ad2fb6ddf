//! [`RocksKv`]: the [`Kv`] contract on RocksDB, the node's index on disk.
//!
//! Owns: the RocksDB directory (one column family per [`Cf`], plus RocksDB's
//! unused `default`), the tuning below, and the schema version record
//! ([`SCHEMA_KEY`] in [`Cf::Meta`]).
//!
//! May not: interpret keys or values beyond the schema record.
//!
//! Invariants:
//! * An open `RocksKv` has every column family of [`Cf::ALL`] and a schema
//!   version equal to [`SCHEMA_VERSION`] (older upgradable versions are
//!   upgraded at open); any other version refuses to open.
//! * The schema record is written (with a WAL fsync) when the index is empty,
//!   i.e. at creation or after a crash that interrupted it. An index with data
//!   but no schema record is corrupt.
//! * Memory stays bounded: memtables are capped in total
//!   ([`TOTAL_WRITE_BUFFER_BYTES`]), and index and filter blocks live in the
//!   one block cache ([`BLOCK_CACHE_BYTES`]).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamily, ColumnFamilyDescriptor, DB, DBCompressionType, Options,
    ReadOptions, WriteBatch, WriteOptions,
};

use super::{Batch, Cf, Kv, NO_SPACE_MESSAGE, Op, StoreError, prefix_end, scan_from};

/// Version of the index layout. Bump it when a column family's key or value
/// encoding changes; an index of a version outside
/// [`OLDEST_UPGRADABLE_SCHEMA`]..=[`SCHEMA_VERSION`] is refused.
///
/// 2 added the `upload` and `peer` column families and version 2 of chunk
/// records (shard holders); version 1 records stay readable, so a version 1
/// index is upgraded at open by writing the new version.
pub const SCHEMA_VERSION: u32 = 2;

/// The oldest schema this build opens (and upgrades).
pub const OLDEST_UPGRADABLE_SCHEMA: u32 = 1;

/// Key of the schema version in [`Cf::Meta`]; the value is a u32, little endian.
pub const SCHEMA_KEY: &[u8] = b"schema";

/// The block cache shared by every column family. Holds data, index and
/// filter blocks, so it bounds the memory of reads.
pub const BLOCK_CACHE_BYTES: usize = 32 << 20;

/// One memtable of one column family. Values are small (records) or capped at
/// the inline limit of the layer above, so 16 MiB holds many of them.
pub const WRITE_BUFFER_BYTES: usize = 16 << 20;

/// All memtables of all column families together: when exceeded, RocksDB
/// flushes the largest. Keeps the daemon within its RSS budget.
pub const TOTAL_WRITE_BUFFER_BYTES: usize = 32 << 20;

/// WAL size that forces flushing the column families that keep old WAL files
/// alive (a rarely written one such as [`Cf::Meta`] would otherwise pin them).
pub const MAX_TOTAL_WAL_BYTES: u64 = 64 << 20;

/// Files RocksDB keeps open (SST tables). Well below the usual 1024 fd limit,
/// which the chunk files and sockets also draw from.
pub const MAX_OPEN_FILES: i32 = 256;

/// Background flush and compaction threads: the target machines have 2 cores.
pub const BACKGROUND_JOBS: i32 = 2;

/// Bloom filter bits per key: ~1% false positives on point lookups.
pub const BLOOM_BITS_PER_KEY: f64 = 10.0;

/// RocksDB's info LOG: kept small, it is for post-mortems only.
const INFO_LOG_BYTES: usize = 1 << 20;
/// How many old info LOG files RocksDB keeps.
const INFO_LOG_FILES: usize = 4;

/// The index on RocksDB.
pub struct RocksKv {
    /// The database; closed (memtables are not flushed, the WAL has them)
    /// when the `RocksKv` drops.
    db: DB,
    /// The block cache shared by every column family, kept to report usage.
    cache: Cache,
    /// The database directory, for messages.
    dir: PathBuf,
    /// Sequence number of the last write known durable: `sync` with nothing
    /// newer skips the WAL fsync (msync-heavy workloads call it per page).
    synced_seq: AtomicU64,
}

impl std::fmt::Debug for RocksKv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RocksKv").field("dir", &self.dir).finish()
    }
}

impl RocksKv {
    /// Opens the index in `dir`, creating it (and `dir`) if missing.
    ///
    /// Fails with [`StoreError::Schema`] if it was written with another
    /// schema version, and with [`StoreError::Locked`] if another handle (in
    /// this or another process) has it open.
    pub fn open(dir: &Path) -> Result<RocksKv, StoreError> {
        std::fs::create_dir_all(dir).map_err(super::from_io)?;
        let cache = Cache::new_lru_cache(BLOCK_CACHE_BYTES);

        let mut db_opts = Options::default();
        db_opts.create_if_missing(true);
        db_opts.create_missing_column_families(true);
        db_opts.set_max_open_files(MAX_OPEN_FILES);
        db_opts.set_db_write_buffer_size(TOTAL_WRITE_BUFFER_BYTES);
        db_opts.set_max_total_wal_size(MAX_TOTAL_WAL_BYTES);
        db_opts.set_max_background_jobs(BACKGROUND_JOBS);
        db_opts.set_max_log_file_size(INFO_LOG_BYTES);
        db_opts.set_keep_log_file_num(INFO_LOG_FILES);

        // Every column family that exists must be opened. Unknown ones (from a
        // newer version) are opened too, so that the schema check below can
        // report the version instead of RocksDB's complaint about them.
        let mut names: Vec<String> = Cf::ALL.iter().map(|cf| cf.name().to_owned()).collect();
        if dir.join("CURRENT").try_exists().map_err(super::from_io)? {
            for name in DB::list_cf(&db_opts, dir).map_err(|e| db_error(e, dir))? {
                if name != "default" && !names.contains(&name) {
                    names.push(name);
                }
            }
        }
        let descriptors = names
            .into_iter()
            .map(|name| ColumnFamilyDescriptor::new(name, cf_options(&cache)));
        let db =
            DB::open_cf_descriptors(&db_opts, dir, descriptors).map_err(|e| db_error(e, dir))?;

        let kv = RocksKv {
            db,
            cache,
            dir: dir.to_path_buf(),
            synced_seq: AtomicU64::new(0),
        };
        kv.check_schema()?;
        tracing::debug!(dir = %kv.dir.display(), "index opened");
        Ok(kv)
    }

    /// Opens the existing index in `dir` for reading only (`-o ro`, fsck):
    /// nothing in `dir` is written (RocksDB replays its log in memory, and
    /// its info log goes to `log_dir`). Writes fail.
    pub fn open_read_only(dir: &Path, log_dir: &Path) -> Result<RocksKv, StoreError> {
        if !dir.join("CURRENT").try_exists().map_err(super::from_io)? {
            return Err(StoreError::Corrupt("no index in the data dir"));
        }
        let cache = Cache::new_lru_cache(BLOCK_CACHE_BYTES);
        let mut db_opts = Options::default();
        db_opts.set_max_open_files(MAX_OPEN_FILES);
        db_opts.set_db_log_dir(log_dir);
        db_opts.set_max_log_file_size(INFO_LOG_BYTES);
        db_opts.set_keep_log_file_num(1);
        let names = DB::list_cf(&db_opts, dir).map_err(|e| db_error(e, dir))?;
        let descriptors = names
            .into_iter()
            .filter(|n| n != "default")
            .map(|name| ColumnFamilyDescriptor::new(name, cf_options(&cache)));
        let db = DB::open_cf_descriptors_read_only(&db_opts, dir, descriptors, false)
            .map_err(|e| db_error(e, dir))?;
        let kv = RocksKv {
            db,
            cache,
            dir: dir.to_path_buf(),
            synced_seq: AtomicU64::new(u64::MAX),
        };
        let found = kv
            .get(Cf::Meta, SCHEMA_KEY)?
            .and_then(|v| <[u8; 4]>::try_from(v.as_slice()).ok())
            .map(u32::from_le_bytes);
        if found != Some(SCHEMA_VERSION) {
            return Err(StoreError::Schema {
                found: found.unwrap_or(0),
                expected: SCHEMA_VERSION,
            });
        }
        Ok(kv)
    }

    /// The database directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Bytes of memory RocksDB holds: every memtable plus the block cache
    /// (which includes index and filter blocks).
    pub fn memory_bytes(&self) -> Result<u64, StoreError> {
        let mut total = self.cache.get_usage() as u64;
        for cf in Cf::ALL {
            let handle = self.cf(cf)?;
            let mem = self
                .db
                .property_int_value_cf(handle, "rocksdb.size-all-mem-tables")
                .map_err(|e| self.error(e))?;
            total += mem.unwrap_or(0);
        }
        Ok(total)
    }

    /// Checks the schema record, writing it if the index is empty.
    fn check_schema(&self) -> Result<(), StoreError> {
        match self.get(Cf::Meta, SCHEMA_KEY)? {
            Some(value) => {
                let bytes: [u8; 4] = value
                    .as_slice()
                    .try_into()
                    .map_err(|_| StoreError::Corrupt("schema version is not 4 bytes"))?;
                let found = u32::from_le_bytes(bytes);
                if !(OLDEST_UPGRADABLE_SCHEMA..=SCHEMA_VERSION).contains(&found) {
                    return Err(StoreError::Schema {
                        found,
                        expected: SCHEMA_VERSION,
                    });
                }
                if found < SCHEMA_VERSION {
                    // The missing column families were created at open.
                    let mut batch = Batch::new();
                    batch.put(Cf::Meta, SCHEMA_KEY, &SCHEMA_VERSION.to_le_bytes());
                    self.write(batch, true)?;
                    tracing::info!(dir = %self.dir.display(), from = found, to = SCHEMA_VERSION, "index upgraded");
                }
                Ok(())
            }
            None => {
                if !self.is_empty()? {
                    return Err(StoreError::Corrupt(
                        "index holds data but no schema version",
                    ));
                }
                let mut batch = Batch::new();
                batch.put(Cf::Meta, SCHEMA_KEY, &SCHEMA_VERSION.to_le_bytes());
                self.write(batch, true)?;
                tracing::info!(dir = %self.dir.display(), version = SCHEMA_VERSION, "index created");
                Ok(())
            }
        }
    }

    /// True when no column family holds an entry.
    fn is_empty(&self) -> Result<bool, StoreError> {
        for cf in Cf::ALL {
            let mut iter = self.db.raw_iterator_cf(self.cf(cf)?);
            iter.seek_to_first();
            let valid = iter.valid();
            iter.status().map_err(|e| self.error(e))?;
            if valid {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// The handle of `cf`. Every one was opened, so None means a bug or a
    /// damaged database; it is an error, not a panic.
    fn cf(&self, cf: Cf) -> Result<&ColumnFamily, StoreError> {
        self.db
            .cf_handle(cf.name())
            .ok_or(StoreError::Corrupt("column family missing after open"))
    }

    fn error(&self, e: rocksdb::Error) -> StoreError {
        db_error(e, &self.dir)
    }
}

impl Kv for RocksKv {
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.db.get_cf(self.cf(cf)?, key).map_err(|e| self.error(e))
    }

    fn write(&self, batch: Batch, sync: bool) -> Result<(), StoreError> {
        let mut wb = WriteBatch::default();
        for op in &batch.ops {
            match op {
                Op::Put { cf, key, value } => wb.put_cf(self.cf(*cf)?, key, value),
                Op::Delete { cf, key } => wb.delete_cf(self.cf(*cf)?, key),
            }
        }
        let mut opts = WriteOptions::default();
        opts.set_sync(sync);
        self.db.write_opt(wb, &opts).map_err(|e| self.error(e))
    }

    fn scan(
        &self,
        cf: Cf,
        prefix: &[u8],
        start: &[u8],
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), StoreError> {
        let mut opts = ReadOptions::default();
        if let Some(end) = prefix_end(prefix) {
            opts.set_iterate_upper_bound(end);
        }
        // The iterator pins an implicit snapshot: writes made by `visit` are
        // not seen by this scan, as the contract says.
        let mut iter = self.db.raw_iterator_cf_opt(self.cf(cf)?, opts);
        iter.seek(scan_from(prefix, start));
        while let Some((key, value)) = iter.item() {
            // The upper bound already stops at the prefix's end; the check
            // covers prefixes without one (all 0xff bytes).
            if !key.starts_with(prefix) || !visit(key, value) {
                break;
            }
            iter.next();
        }
        iter.status().map_err(|e| self.error(e))
    }

    fn sync(&self) -> Result<(), StoreError> {
        // Read the sequence number first: a write racing with this sync may
        // or may not be covered, so only what was written before counts.
        let seq = self.db.latest_sequence_number();
        if seq <= self.synced_seq.load(Ordering::Acquire) {
            return Ok(());
        }
        self.db.flush_wal(true).map_err(|e| self.error(e))?;
        self.synced_seq.fetch_max(seq, Ordering::AcqRel);
        Ok(())
    }

    fn checkpoint(&self, dir: &Path) -> Result<(), StoreError> {
        let c = rocksdb::checkpoint::Checkpoint::new(&self.db).map_err(|e| self.error(e))?;
        c.create_checkpoint(dir).map_err(|e| self.error(e))
    }

    fn sequence(&self) -> u64 {
        self.db.latest_sequence_number()
    }
}

/// The options of every column family: no compression (values are small or
/// already CES-encoded), a whole-key bloom filter, the shared block cache.
fn cf_options(cache: &Cache) -> Options {
    let mut table = BlockBasedOptions::default();
    table.set_block_cache(cache);
    table.set_bloom_filter(BLOOM_BITS_PER_KEY, false);
    table.set_cache_index_and_filter_blocks(true);
    table.set_pin_l0_filter_and_index_blocks_in_cache(true);

    let mut opts = Options::default();
    opts.set_block_based_table_factory(&table);
    opts.set_compression_type(DBCompressionType::None);
    opts.set_bottommost_compression_type(DBCompressionType::None);
    opts.set_write_buffer_size(WRITE_BUFFER_BYTES);
    opts.set_max_write_buffer_number(2);
    opts
}

/// A RocksDB error as a [`StoreError`]: ENOSPC becomes
/// [`StoreError::NoSpace`], a held `LOCK` file [`StoreError::Locked`].
fn db_error(e: rocksdb::Error, dir: &Path) -> StoreError {
    let msg = e.into_string();
    if msg.contains(NO_SPACE_MESSAGE) {
        StoreError::NoSpace
    } else if msg.contains("While lock file") || msg.contains("lock hold by current process") {
        StoreError::Locked {
            path: dir.join("LOCK"),
        }
    } else {
        StoreError::Db(msg)
    }
}
