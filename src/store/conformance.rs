//! The [`Kv`] conformance suite: every case runs against [`MemKv`] and
//! [`RocksKv`], plus a twin test that applies the same random ops to both and
//! compares them, and the RocksDB-only cases (reopen, schema, locking).

use std::sync::Arc;

use super::*;

/// Everything `scan` visits, as owned pairs.
fn scan_all(kv: &dyn Kv, cf: Cf, prefix: &[u8], start: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    kv.scan(cf, prefix, start, &mut |k, v| {
        out.push((k.to_vec(), v.to_vec()));
        true
    })
    .unwrap();
    out
}

/// The keys `scan` visits.
fn scan_keys(kv: &dyn Kv, cf: Cf, prefix: &[u8], start: &[u8]) -> Vec<Vec<u8>> {
    scan_all(kv, cf, prefix, start)
        .into_iter()
        .map(|(k, _)| k)
        .collect()
}

fn put_all(kv: &dyn Kv, cf: Cf, keys: &[&[u8]]) {
    let mut b = Batch::new();
    for k in keys {
        b.put(cf, k, k);
    }
    kv.write(b, false).unwrap();
}

fn keys(ks: &[&[u8]]) -> Vec<Vec<u8>> {
    ks.iter().map(|k| k.to_vec()).collect()
}

/// A small deterministic RNG (splitmix64): seeded, printed, reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// A short key over an alphabet with the edge bytes 0x00 and 0xff.
    fn key(&mut self) -> Vec<u8> {
        const ALPHABET: [u8; 5] = [0x00, 0x01, 0x7f, 0xfe, 0xff];
        let len = self.below(4) as usize;
        (0..len)
            .map(|_| ALPHABET[self.below(ALPHABET.len() as u64) as usize])
            .collect()
    }
}

// ---- cases, each run against both stores ----

fn get_absent_put_get(kv: &dyn Kv) {
    assert_eq!(kv.get(Cf::Inode, b"k").unwrap(), None);
    let mut b = Batch::new();
    b.put(Cf::Inode, b"k", b"v1");
    kv.write(b, true).unwrap();
    assert_eq!(kv.get(Cf::Inode, b"k").unwrap(), Some(b"v1".to_vec()));
    // Column families are separate key spaces.
    assert_eq!(kv.get(Cf::Dentry, b"k").unwrap(), None);
}

fn batch_is_ordered(kv: &dyn Kv) {
    let mut b = Batch::new();
    b.put(Cf::Extent, b"a", b"1");
    b.delete(Cf::Extent, b"a");
    b.delete(Cf::Extent, b"b");
    b.put(Cf::Extent, b"b", b"2");
    b.put(Cf::Extent, b"c", b"3");
    b.put(Cf::Extent, b"c", b"4");
    kv.write(b, false).unwrap();
    assert_eq!(kv.get(Cf::Extent, b"a").unwrap(), None);
    assert_eq!(kv.get(Cf::Extent, b"b").unwrap(), Some(b"2".to_vec()));
    assert_eq!(kv.get(Cf::Extent, b"c").unwrap(), Some(b"4".to_vec()));
}

fn batch_spans_column_families(kv: &dyn Kv) {
    let mut b = Batch::new();
    for cf in Cf::ALL {
        b.put(cf, b"same", cf.name().as_bytes());
    }
    kv.write(b, false).unwrap();
    for cf in Cf::ALL {
        assert_eq!(
            kv.get(cf, b"same").unwrap(),
            Some(cf.name().as_bytes().to_vec())
        );
    }
    let mut b = Batch::new();
    b.delete(Cf::Gc, b"same");
    kv.write(b, false).unwrap();
    assert_eq!(kv.get(Cf::Gc, b"same").unwrap(), None);
    assert!(kv.get(Cf::Orphan, b"same").unwrap().is_some());
}

fn empty_batch_and_sync(kv: &dyn Kv) {
    let b = Batch::new();
    assert!(b.is_empty());
    kv.write(b, true).unwrap();
    kv.write(Batch::new(), false).unwrap();
    kv.sync().unwrap();
    assert!(scan_all(kv, Cf::Xattr, b"", b"").is_empty());
}

fn delete_absent_is_noop(kv: &dyn Kv) {
    let mut b = Batch::new();
    b.delete(Cf::Xattr, b"nothing");
    kv.write(b, false).unwrap();
    assert_eq!(kv.get(Cf::Xattr, b"nothing").unwrap(), None);
}

fn values_with_zero_bytes_and_empty(kv: &dyn Kv) {
    let mut b = Batch::new();
    b.put(Cf::Inline, b"z", &[0, 0, 1, 0]);
    b.put(Cf::Inline, b"e", b"");
    b.put(Cf::Inline, b"", b"empty key");
    b.put(Cf::Inline, &[0, 0], &[0]);
    kv.write(b, false).unwrap();
    assert_eq!(kv.get(Cf::Inline, b"z").unwrap(), Some(vec![0, 0, 1, 0]));
    assert_eq!(kv.get(Cf::Inline, b"e").unwrap(), Some(vec![]));
    assert_eq!(
        kv.get(Cf::Inline, b"").unwrap(),
        Some(b"empty key".to_vec())
    );
    assert_eq!(kv.get(Cf::Inline, &[0, 0]).unwrap(), Some(vec![0]));
    assert_eq!(kv.get(Cf::Inline, &[0]).unwrap(), None);
    assert_eq!(
        scan_keys(kv, Cf::Inline, b"", b""),
        keys(&[b"", &[0, 0], b"e", b"z"])
    );
}

fn large_values(kv: &dyn Kv) {
    let big: Vec<u8> = (0..(4u32 << 20) + 17).map(|i| (i % 253) as u8).collect();
    let bigger = vec![0xa5; 9 << 20];
    let mut b = Batch::new();
    b.put(Cf::Inline, b"big", &big);
    b.put(Cf::Inline, b"bigger", &bigger);
    kv.write(b, true).unwrap();
    assert_eq!(kv.get(Cf::Inline, b"big").unwrap(), Some(big.clone()));
    assert_eq!(kv.get(Cf::Inline, b"bigger").unwrap(), Some(bigger));
    let found = scan_all(kv, Cf::Inline, b"big", b"");
    assert_eq!(found.len(), 2);
    assert_eq!(found[0].1, big);
}

fn scan_is_bytewise_ordered(kv: &dyn Kv) {
    let ks: [&[u8]; 8] = [b"b", b"a\0", b"ab", b"a", &[0xff], &[0x80], b"", &[0xff, 0]];
    put_all(kv, Cf::Dentry, &ks);
    assert_eq!(
        scan_keys(kv, Cf::Dentry, b"", b""),
        keys(&[b"", b"a", b"a\0", b"ab", b"b", &[0x80], &[0xff], &[0xff, 0]])
    );
    // Values come with their keys.
    for (k, v) in scan_all(kv, Cf::Dentry, b"", b"") {
        assert_eq!(k, v);
    }
}

fn scan_filters_by_prefix(kv: &dyn Kv) {
    put_all(
        kv,
        Cf::DirPos,
        &[
            &[1, 1, 0xff],
            &[1, 2],
            &[1, 2, 0],
            &[1, 2, 0xff, 0xff],
            &[1, 3],
            &[1],
            &[2],
        ],
    );
    assert_eq!(
        scan_keys(kv, Cf::DirPos, &[1, 2], b""),
        keys(&[&[1, 2], &[1, 2, 0], &[1, 2, 0xff, 0xff]])
    );
    assert_eq!(scan_keys(kv, Cf::DirPos, &[1], b"").len(), 6);
    assert!(scan_keys(kv, Cf::DirPos, &[1, 4], b"").is_empty());
    assert!(scan_keys(kv, Cf::DirPos, &[0], b"").is_empty());
    assert!(scan_keys(kv, Cf::DirPos, &[1, 2, 0, 0], b"").is_empty());
    // Another column family with the same keys is not visited.
    assert!(scan_keys(kv, Cf::Orphan, &[1], b"").is_empty());
}

fn scan_prefix_ending_in_ff(kv: &dyn Kv) {
    put_all(
        kv,
        Cf::Chunk,
        &[
            &[0x01, 0xfe],
            &[0x01, 0xff],
            &[0x01, 0xff, 0x00],
            &[0x01, 0xff, 0xff],
            &[0x02],
            &[0xfe, 0xff],
            &[0xff],
            &[0xff, 0x00],
            &[0xff, 0xff],
            &[0xff, 0xff, 0xff, 0x01],
        ],
    );
    assert_eq!(
        scan_keys(kv, Cf::Chunk, &[0x01, 0xff], b""),
        keys(&[&[0x01, 0xff], &[0x01, 0xff, 0x00], &[0x01, 0xff, 0xff]])
    );
    assert_eq!(
        scan_keys(kv, Cf::Chunk, &[0xff], b""),
        keys(&[
            &[0xff],
            &[0xff, 0x00],
            &[0xff, 0xff],
            &[0xff, 0xff, 0xff, 0x01]
        ])
    );
    assert_eq!(
        scan_keys(kv, Cf::Chunk, &[0xff, 0xff], b""),
        keys(&[&[0xff, 0xff], &[0xff, 0xff, 0xff, 0x01]])
    );
    assert_eq!(
        scan_keys(kv, Cf::Chunk, &[0xff, 0xff], &[0xff, 0xff, 0xff]),
        keys(&[&[0xff, 0xff, 0xff, 0x01]])
    );
    assert!(scan_keys(kv, Cf::Chunk, &[0xff, 0xff, 0xff, 0xff], b"").is_empty());
}

fn scan_starts_at_start(kv: &dyn Kv) {
    put_all(kv, Cf::Xattr, &[b"p", b"p1", b"p3", b"p5", b"q"]);
    let p = b"p".as_slice();
    // Inclusive start on an existing key.
    assert_eq!(scan_keys(kv, Cf::Xattr, p, b"p3"), keys(&[b"p3", b"p5"]));
    // Start between keys.
    assert_eq!(scan_keys(kv, Cf::Xattr, p, b"p2"), keys(&[b"p3", b"p5"]));
    assert_eq!(scan_keys(kv, Cf::Xattr, p, b"p30"), keys(&[b"p5"]));
    // Start equal to the prefix, and empty: everything with the prefix.
    assert_eq!(scan_keys(kv, Cf::Xattr, p, p).len(), 4);
    assert_eq!(scan_keys(kv, Cf::Xattr, p, b"").len(), 4);
    // Start past every key with the prefix: nothing, not the next prefix.
    assert!(scan_keys(kv, Cf::Xattr, p, b"p6").is_empty());
    assert!(scan_keys(kv, Cf::Xattr, p, &[b'p', 0xff, 0xff]).is_empty());
    // A start below the prefix means from the prefix.
    assert_eq!(scan_keys(kv, Cf::Xattr, p, b"a").len(), 4);
    // Empty prefix with a start.
    assert_eq!(scan_keys(kv, Cf::Xattr, b"", b"p4"), keys(&[b"p5", b"q"]));
}

fn scan_stops_when_visit_says_so(kv: &dyn Kv) {
    put_all(kv, Cf::Gc, &[b"1", b"2", b"3", b"4"]);
    let mut seen = Vec::new();
    kv.scan(Cf::Gc, b"", b"", &mut |k, _| {
        seen.push(k.to_vec());
        seen.len() < 2
    })
    .unwrap();
    assert_eq!(seen, keys(&[b"1", b"2"]));
}

fn scan_sees_the_store_as_of_its_start(kv: &dyn Kv) {
    put_all(kv, Cf::Orphan, &[b"a", b"c", b"e"]);
    let mut seen = Vec::new();
    kv.scan(Cf::Orphan, b"", b"", &mut |k, _| {
        if k == b"a" {
            // Writes from inside the scan must not deadlock or be seen.
            let mut b = Batch::new();
            b.put(Cf::Orphan, b"d", b"d");
            b.delete(Cf::Orphan, b"e");
            kv.write(b, false).unwrap();
            assert_eq!(kv.get(Cf::Orphan, b"d").unwrap(), Some(b"d".to_vec()));
        }
        seen.push(k.to_vec());
        true
    })
    .unwrap();
    assert_eq!(seen, keys(&[b"a", b"c", b"e"]));
    assert_eq!(
        scan_keys(kv, Cf::Orphan, b"", b""),
        keys(&[b"a", b"c", b"d"])
    );
}

fn batches_are_atomic_under_concurrency(kv: &dyn Kv) {
    const ROUNDS: u32 = 300;
    std::thread::scope(|s| {
        s.spawn(|| {
            for i in 0..ROUNDS {
                let mut b = Batch::new();
                b.put(Cf::Meta, b"pair/a", &i.to_le_bytes());
                b.put(Cf::Meta, b"pair/b", &i.to_le_bytes());
                kv.write(b, false).unwrap();
            }
        });
        s.spawn(|| {
            for _ in 0..ROUNDS {
                let pair = scan_all(kv, Cf::Meta, b"pair/", b"");
                if let [(_, a), (_, b)] = pair.as_slice() {
                    assert_eq!(a, b, "a scan saw half a batch");
                } else {
                    assert!(pair.is_empty(), "{pair:?}");
                }
            }
        });
    });
}

/// Applies the same random batches to `kv` and to a [`MemKv`] and compares
/// gets and scans after each one.
fn twin_matches_model(kv: &dyn Kv) {
    let seed = 0x5eed_0001;
    println!("twin seed {seed:#x}");
    let mut rng = Rng(seed);
    let model = MemKv::new();
    let cfs = [Cf::Inode, Cf::Dentry];
    for round in 0..200 {
        let mut b = Batch::new();
        for _ in 0..rng.below(6) {
            let cf = cfs[rng.below(2) as usize];
            let key = rng.key();
            if rng.below(3) == 0 {
                b.delete(cf, &key);
            } else {
                let value = rng.next().to_le_bytes()[..rng.below(9) as usize].to_vec();
                b.put(cf, &key, &value);
            }
        }
        kv.write(b.clone(), false).unwrap();
        model.write(b, false).unwrap();
        for _ in 0..4 {
            let cf = cfs[rng.below(2) as usize];
            let key = rng.key();
            assert_eq!(
                kv.get(cf, &key).unwrap(),
                model.get(cf, &key).unwrap(),
                "seed {seed:#x} round {round} get {key:?}"
            );
            let prefix = rng.key();
            let mut start = if rng.below(2) == 0 {
                vec![]
            } else {
                prefix.clone()
            };
            start.extend(rng.key());
            assert_eq!(
                scan_all(kv, cf, &prefix, &start),
                scan_all(&model, cf, &prefix, &start),
                "seed {seed:#x} round {round} scan {prefix:?} from {start:?}"
            );
        }
    }
}

fn usable_through_arc_dyn(kv: &dyn Kv) {
    // Compile-time check that `Arc<dyn Kv>` is itself a `Kv`.
    fn takes<K: Kv>(k: &K) -> Result<Option<Vec<u8>>, StoreError> {
        k.get(Cf::Meta, b"nope")
    }
    let shared: Arc<dyn Kv> = Arc::new(MemKv::new());
    assert_eq!(takes(&shared).unwrap(), None);
    assert_eq!(kv.get(Cf::Meta, b"nope").unwrap(), None);
}

/// One `#[test]` per case and store.
macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod mem {
            $(#[test] fn $case() { super::$case(&super::MemKv::new()); })*
        }
        mod rocks {
            $(#[test] fn $case() {
                let dir = tempfile::tempdir().unwrap();
                let kv = super::RocksKv::open(dir.path()).unwrap();
                super::$case(&kv);
            })*
        }
    };
}

conformance!(
    get_absent_put_get,
    batch_is_ordered,
    batch_spans_column_families,
    empty_batch_and_sync,
    delete_absent_is_noop,
    values_with_zero_bytes_and_empty,
    large_values,
    scan_is_bytewise_ordered,
    scan_filters_by_prefix,
    scan_prefix_ending_in_ff,
    scan_starts_at_start,
    scan_stops_when_visit_says_so,
    scan_sees_the_store_as_of_its_start,
    batches_are_atomic_under_concurrency,
    twin_matches_model,
    usable_through_arc_dyn,
);

// ---- RocksDB only ----

#[test]
fn rocks_fresh_index_has_schema_version() {
    let dir = tempfile::tempdir().unwrap();
    let kv = RocksKv::open(dir.path()).unwrap();
    assert_eq!(
        kv.get(Cf::Meta, SCHEMA_KEY).unwrap(),
        Some(SCHEMA_VERSION.to_le_bytes().to_vec())
    );
    // Only the schema record.
    assert_eq!(scan_all(&kv, Cf::Meta, b"", b"").len(), 1);
    let mem = kv.memory_bytes().unwrap();
    assert!(mem < 256 << 20, "{mem}");
}

#[test]
fn rocks_reopen_preserves_data() {
    let dir = tempfile::tempdir().unwrap();
    {
        let kv = RocksKv::open(dir.path()).unwrap();
        let mut b = Batch::new();
        b.put(Cf::Inode, b"synced", b"1");
        kv.write(b, true).unwrap();
        let mut b = Batch::new();
        b.put(Cf::Dentry, b"unsynced", &[0; 100]);
        b.put(Cf::Inline, b"big", &vec![7; 5 << 20]);
        kv.write(b, false).unwrap();
        let mut b = Batch::new();
        b.delete(Cf::Inode, b"gone");
        b.put(Cf::Inode, b"gone", b"x");
        b.delete(Cf::Inode, b"gone");
        kv.write(b, false).unwrap();
        kv.sync().unwrap();
    }
    let kv = RocksKv::open(dir.path()).unwrap();
    assert_eq!(kv.get(Cf::Inode, b"synced").unwrap(), Some(b"1".to_vec()));
    assert_eq!(kv.get(Cf::Dentry, b"unsynced").unwrap(), Some(vec![0; 100]));
    assert_eq!(kv.get(Cf::Inline, b"big").unwrap(), Some(vec![7; 5 << 20]));
    assert_eq!(kv.get(Cf::Inode, b"gone").unwrap(), None);
}

#[test]
fn rocks_schema_mismatch_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    {
        let kv = RocksKv::open(dir.path()).unwrap();
        let mut b = Batch::new();
        b.put(Cf::Meta, SCHEMA_KEY, &(SCHEMA_VERSION + 1).to_le_bytes());
        kv.write(b, true).unwrap();
    }
    let err = RocksKv::open(dir.path()).unwrap_err();
    match err {
        StoreError::Schema { found, expected } => {
            assert_eq!(found, SCHEMA_VERSION + 1);
            assert_eq!(expected, SCHEMA_VERSION);
        }
        other => panic!("expected Schema, got {other:?}"),
    }
}

#[test]
fn rocks_malformed_schema_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    {
        let kv = RocksKv::open(dir.path()).unwrap();
        let mut b = Batch::new();
        b.put(Cf::Meta, SCHEMA_KEY, &[1, 0, 0]);
        kv.write(b, true).unwrap();
    }
    let err = RocksKv::open(dir.path()).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt(_)), "{err:?}");
}

#[test]
fn rocks_data_without_schema_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    {
        let kv = RocksKv::open(dir.path()).unwrap();
        let mut b = Batch::new();
        b.delete(Cf::Meta, SCHEMA_KEY);
        b.put(Cf::Inode, b"data", b"x");
        kv.write(b, true).unwrap();
    }
    let err = RocksKv::open(dir.path()).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt(_)), "{err:?}");
}

#[test]
fn rocks_empty_index_without_schema_gets_one() {
    // A crash between creating the database and writing the schema record.
    let dir = tempfile::tempdir().unwrap();
    {
        let kv = RocksKv::open(dir.path()).unwrap();
        let mut b = Batch::new();
        b.delete(Cf::Meta, SCHEMA_KEY);
        kv.write(b, true).unwrap();
    }
    let kv = RocksKv::open(dir.path()).unwrap();
    assert_eq!(
        kv.get(Cf::Meta, SCHEMA_KEY).unwrap(),
        Some(SCHEMA_VERSION.to_le_bytes().to_vec())
    );
}

#[test]
fn rocks_unknown_column_family_reports_schema() {
    // A newer version added a column family and bumped the schema.
    let dir = tempfile::tempdir().unwrap();
    drop(RocksKv::open(dir.path()).unwrap());
    {
        let opts = rocksdb::Options::default();
        let mut names: Vec<&str> = Cf::ALL.iter().map(|c| c.name()).collect();
        names.push("default");
        let mut db = rocksdb::DB::open_cf(&opts, dir.path(), names).unwrap();
        db.create_cf("future", &opts).unwrap();
        let meta = db.cf_handle("meta").unwrap();
        db.put_cf(meta, SCHEMA_KEY, (SCHEMA_VERSION + 1).to_le_bytes())
            .unwrap();
    }
    let err = RocksKv::open(dir.path()).unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Schema { found, expected }
                if found == SCHEMA_VERSION + 1 && expected == SCHEMA_VERSION
        ),
        "{err:?}"
    );
}

#[test]
fn rocks_version_1_index_is_upgraded_and_keeps_its_data() {
    // A version 1 index: no `upload` or `peer` column family yet.
    let dir = tempfile::tempdir().unwrap();
    {
        let mut opts = rocksdb::Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        let names = [
            "default", "meta", "inode", "dentry", "dirpos", "extent", "chunk", "inline", "xattr",
            "orphan", "gc",
        ];
        let db = rocksdb::DB::open_cf(&opts, dir.path(), names).unwrap();
        db.put_cf(
            db.cf_handle("meta").unwrap(),
            SCHEMA_KEY,
            1u32.to_le_bytes(),
        )
        .unwrap();
        db.put_cf(db.cf_handle("inode").unwrap(), b"old", b"v1 data")
            .unwrap();
    }
    let kv = RocksKv::open(dir.path()).unwrap();
    assert_eq!(
        kv.get(Cf::Meta, SCHEMA_KEY).unwrap(),
        Some(SCHEMA_VERSION.to_le_bytes().to_vec())
    );
    assert_eq!(
        kv.get(Cf::Inode, b"old").unwrap(),
        Some(b"v1 data".to_vec())
    );
    let mut b = Batch::new();
    b.put(Cf::Upload, b"chunk", b"queued");
    kv.write(b, false).unwrap();
    assert_eq!(
        kv.get(Cf::Upload, b"chunk").unwrap(),
        Some(b"queued".to_vec())
    );
}

#[test]
fn rocks_second_open_while_open_is_locked() {
    let dir = tempfile::tempdir().unwrap();
    let first = RocksKv::open(dir.path()).unwrap();
    let err = RocksKv::open(dir.path()).unwrap_err();
    assert!(matches!(err, StoreError::Locked { .. }), "{err:?}");
    drop(first);
    RocksKv::open(dir.path()).unwrap();
}

#[test]
fn rocks_open_on_a_file_fails() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    assert!(RocksKv::open(&file).is_err());
}
