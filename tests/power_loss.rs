//! The power-loss simulator tier: the filesystem core runs over a simulated
//! disk (`store::SimDisk`) that, at a power cut, keeps what was synced and a
//! seeded random part of what was not (torn chunk files included). Each
//! case runs a random sequence of the operations real programs use, cuts
//! the power at a random point (between operations, or at a random disk
//! call inside one), boots again and checks:
//! * the recovered index and chunk files agree (`fs::fsck::fsck` finds
//!   nothing: no chunk referenced and missing or damaged, nothing
//!   unreferenced left after recovery, counts right);
//! * every file reads without error, and its bytes are what the program
//!   wrote: each byte is that byte of some version of the file not older
//!   than its last fsync, and a file fsynced and not changed since reads
//!   back exactly (an empty or zeroed tail from a lost chunk, or any other
//!   garbage, fails);
//! * a name fsynced (or sync_all'ed) since its last change is there.
//!
//! `PANGEA_SIM_CASES` sets the number of cases (default 2000),
//! `PANGEA_SIM_SEED` replays one case; a failure prints its seed.

use std::collections::HashMap;
use std::sync::Arc;

use pangea::ces::{Ces, CompressionPolicy, MasterKey, ShardParams};
use pangea::fs::{Ctx, Fs, FsConfig, Ino, ROOT_INO, RenameFlags, SetAttr};
use pangea::store::SimDisk;
use pangea::store::sim::Rng;

const CHUNK: u32 = 128 * 1024;
const NAMES: usize = 6;

fn cfg() -> FsConfig {
    FsConfig {
        chunk_size: CHUNK,
        inline_max: 8 * 1024,
        shard_params: ShardParams::new(4, 2).expect("valid params"),
        cache_capacity: 4 << 20,
        dirty_limit: 768 * 1024,
        read_ahead: 0,
        ..FsConfig::default()
    }
}

fn open(disk: &SimDisk) -> Result<Fs, String> {
    let ces = Ces::new(
        &MasterKey::from_bytes([7; 32]),
        CompressionPolicy::default(),
    )
    .map_err(|e| e.to_string())?;
    Fs::new(disk.kv(), disk.chunks(), ces, cfg(), (0, 0)).map_err(|e| e.to_string())
}

/// One file's content over time.
#[derive(Debug, Clone)]
struct ModelFile {
    versions: Vec<Vec<u8>>,
    /// Versions before this one may not come back (fsynced at it).
    floor: usize,
    ino: Ino,
    fh: Option<u64>,
}

impl ModelFile {
    fn cur(&self) -> &Vec<u8> {
        self.versions.last().expect("a file has a version")
    }
}

/// One writer's names and files.
#[derive(Debug, Default)]
struct Model {
    files: Vec<ModelFile>,
    /// name → what it named over time (None: absent), and its floor.
    names: HashMap<String, (Vec<Option<usize>>, usize)>,
    log: Vec<String>,
}

impl Model {
    fn named(&self, name: &str) -> Option<usize> {
        self.names.get(name).and_then(|(h, _)| *h.last()?)
    }

    fn set_name(&mut self, name: &str, f: Option<usize>) {
        self.names
            .entry(name.to_string())
            .or_insert_with(|| (vec![None], 0))
            .0
            .push(f);
    }

    fn push_version(&mut self, f: usize, v: Vec<u8>) {
        self.files[f].versions.push(v);
    }

    /// fsync syncs the whole index: every name change so far is durable.
    fn names_durable(&mut self) {
        for (h, floor) in self.names.values_mut() {
            *floor = h.len() - 1;
        }
    }
}

fn data(rng: &mut Rng, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    match rng.below(3) {
        0 => {
            // Compressible text-like bytes.
            let pat: Vec<u8> = (0..1 + rng.below(16))
                .map(|_| b'a' + rng.below(26) as u8)
                .collect();
            for (i, b) in v.iter_mut().enumerate() {
                *b = pat[i % pat.len()];
            }
        }
        _ => {
            for c in v.chunks_mut(8) {
                let x = rng.next_u64().to_le_bytes();
                c.copy_from_slice(&x[..c.len()]);
            }
        }
    }
    v
}

fn ensure_open(fs: &Fs, m: &mut Model, f: usize) -> Result<u64, String> {
    if let Some(fh) = m.files[f].fh {
        return Ok(fh);
    }
    let fh = fs.open(m.files[f].ino, false).map_err(|e| e.to_string())?;
    m.files[f].fh = Some(fh);
    Ok(fh)
}

fn write_at(fs: &Fs, m: &mut Model, f: usize, off: u64, bytes: &[u8]) -> Result<(), String> {
    let mut v = m.files[f].cur().clone();
    let end = off as usize + bytes.len();
    if v.len() < end {
        v.resize(end, 0);
    }
    v[off as usize..end].copy_from_slice(bytes);
    // Before the call: an operation cut short may have happened or not.
    m.push_version(f, v);
    ensure_open(fs, m, f)?;
    let ino = m.files[f].ino;
    let mut done = 0;
    // Writes come in FUSE-sized pieces.
    while done < bytes.len() {
        let n = (bytes.len() - done).min(128 * 1024);
        fs.write(ino, off + done as u64, &bytes[done..done + n])
            .map_err(|e| e.to_string())?;
        done += n;
    }
    Ok(())
}

/// One random operation on `names`; Err when the filesystem failed (the
/// power is off).
fn step(fs: &Fs, m: &mut Model, rng: &mut Rng, names: &[String]) -> Result<(), String> {
    let name = &names[rng.below(names.len() as u64) as usize];
    let other = &names[rng.below(names.len() as u64) as usize];
    let ctx = Ctx::ROOT;
    let op = rng.below(100);
    m.log.push(format!("op {op} on {name} (other {other})"));
    let Some(f) = m.named(name) else {
        // Absent: create it.
        m.files.push(ModelFile {
            versions: vec![Vec::new()],
            floor: 0,
            ino: Ino(0),
            fh: None,
        });
        let f = m.files.len() - 1;
        m.set_name(name, Some(f));
        let (inode, fh) = fs
            .create(&ctx, ROOT_INO, name.as_bytes(), 0o644)
            .map_err(|e| e.to_string())?;
        m.files[f].ino = inode.ino;
        m.files[f].fh = Some(fh);
        m.log.push(format!("  created {name} ino {}", inode.ino));
        return Ok(());
    };
    let size = m.files[f].cur().len() as u64;
    match op {
        0..=24 => {
            // Write: overwrite, append or past the end (a hole).
            let len = match rng.below(5) {
                0 => 1 + rng.below(100),
                1 => 4096,
                2 => 1 + rng.below(40 * 1024),
                3 => 100 * 1024 + rng.below(64 * 1024),
                _ => 200 * 1024 + rng.below(200 * 1024),
            } as usize;
            let off = match rng.below(3) {
                0 => size,
                1 => rng.below(size + 1),
                _ => size + rng.below(64 * 1024),
            };
            if off as usize + len > 900 * 1024 {
                return Ok(());
            }
            let bytes = data(rng, len);
            m.log.push(format!("  write {len} at {off}"));
            write_at(fs, m, f, off, &bytes)
        }
        25..=31 => {
            // cp: the same content as another file (dedup), into `name`.
            let Some(src) = m.named(other).filter(|&s| s != f) else {
                return Ok(());
            };
            let content = m.files[src].cur().clone();
            let ino = m.files[f].ino;
            m.push_version(f, Vec::new());
            fs.setattr(
                &ctx,
                ino,
                &SetAttr {
                    size: Some(0),
                    ..SetAttr::default()
                },
            )
            .map_err(|e| e.to_string())?;
            m.log
                .push(format!("  cp {other} ({} bytes)", content.len()));
            write_at(fs, m, f, 0, &content)
        }
        32..=39 => {
            let new = match rng.below(3) {
                0 => 0,
                1 => rng.below(size + 1),
                _ => size + rng.below(200 * 1024),
            };
            let ino = m.files[f].ino;
            let mut v = m.files[f].cur().clone();
            v.resize(new as usize, 0);
            m.push_version(f, v);
            m.log.push(format!("  truncate {new}"));
            fs.setattr(
                &ctx,
                ino,
                &SetAttr {
                    size: Some(new),
                    ..SetAttr::default()
                },
            )
            .map_err(|e| e.to_string())?;
            Ok(())
        }
        40..=45 => {
            if size == 0 {
                return Ok(());
            }
            let off = rng.below(size);
            let len = 1 + rng.below(size - off + 64 * 1024);
            let mut v = m.files[f].cur().clone();
            let end = ((off + len) as usize).min(v.len());
            v[off as usize..end].fill(0);
            m.push_version(f, v);
            m.log.push(format!("  punch {len} at {off}"));
            ensure_open(fs, m, f)?;
            let mode = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
            fs.fallocate(m.files[f].ino, off, len, mode)
                .map_err(|e| e.to_string())?;
            Ok(())
        }
        46..=53 => {
            if other == name {
                return Ok(());
            }
            if let Some(g) = m.named(other) {
                // The replaced file goes: close it first.
                if let Some(fh) = m.files[g].fh.take() {
                    fs.release(fh).map_err(|e| e.to_string())?;
                }
            }
            m.set_name(other, Some(f));
            m.set_name(name, None);
            m.log.push(format!("  rename to {other}"));
            fs.rename(
                ROOT_INO,
                name.as_bytes(),
                ROOT_INO,
                other.as_bytes(),
                RenameFlags::default(),
            )
            .map_err(|e| e.to_string())?;
            Ok(())
        }
        54..=58 => {
            if let Some(fh) = m.files[f].fh.take() {
                fs.release(fh).map_err(|e| e.to_string())?;
            }
            m.set_name(name, None);
            m.log.push("  unlink".into());
            fs.unlink(ROOT_INO, name.as_bytes())
                .map_err(|e| e.to_string())?;
            Ok(())
        }
        59..=78 => {
            ensure_open(fs, m, f)?;
            fs.fsync(m.files[f].ino).map_err(|e| e.to_string())?;
            let file = &mut m.files[f];
            file.floor = file.versions.len() - 1;
            m.names_durable();
            m.log.push("  fsync".into());
            Ok(())
        }
        79..=92 => {
            if let Some(fh) = m.files[f].fh.take() {
                fs.flush(fh).map_err(|e| e.to_string())?;
                fs.release(fh).map_err(|e| e.to_string())?;
                m.log.push("  close".into());
            }
            Ok(())
        }
        _ => {
            fs.sync_all().map_err(|e| e.to_string())?;
            for file in &mut m.files {
                file.floor = file.versions.len() - 1;
            }
            m.names_durable();
            m.log.push("  sync_all".into());
            Ok(())
        }
    }
}

/// Does `got` fit the versions of `file` from its floor on?
fn fits(file: &ModelFile, got: &[u8]) -> Result<(), String> {
    let candidates = &file.versions[file.floor..];
    if candidates.len() == 1 {
        if got == candidates[0].as_slice() {
            return Ok(());
        }
        return Err(format!(
            "fsynced and unchanged since, but reads {} bytes (first difference at {:?}) instead of {}",
            got.len(),
            got.iter().zip(&candidates[0]).position(|(a, b)| a != b),
            candidates[0].len()
        ));
    }
    let max = candidates.iter().map(Vec::len).max().unwrap_or(0);
    if got.len() > max {
        return Err(format!(
            "{} bytes, longer than any version ({max})",
            got.len()
        ));
    }
    for (i, b) in got.iter().enumerate() {
        if !candidates.iter().any(|v| v.get(i) == Some(b)) {
            return Err(format!(
                "byte {i} of {} is {b:#x}, which no version of the file has there",
                got.len()
            ));
        }
    }
    Ok(())
}

fn check(fs: &Fs, models: &[Model]) -> Result<(), String> {
    for m in models {
        for (name, (hist, floor)) in &m.names {
            let candidates = &hist[*floor..];
            let found = match fs.lookup(ROOT_INO, name.as_bytes()) {
                Ok(inode) => Some(inode),
                Err(pangea::fs::FsError::NotFound) => None,
                Err(e) => return Err(format!("{name}: lookup failed: {e}")),
            };
            let Some(inode) = found else {
                if candidates.contains(&None) {
                    continue;
                }
                return Err(format!("{name} is gone, but it was fsynced as present"));
            };
            let got = fs
                .read(
                    inode.ino,
                    0,
                    u32::try_from(inode.size).map_err(|e| e.to_string())?,
                )
                .map_err(|e| format!("{name}: read fails after recovery: {e}"))?;
            if got.len() as u64 != inode.size {
                return Err(format!(
                    "{name}: size {} but read {}",
                    inode.size,
                    got.len()
                ));
            }
            let mut why = Vec::new();
            for f in candidates.iter().flatten() {
                match fits(&m.files[*f], &got) {
                    Ok(()) => {
                        why.clear();
                        break;
                    }
                    Err(e) => why.push(e),
                }
            }
            if !why.is_empty() {
                return Err(format!("{name}: {}", why.join("; ")));
            }
            if candidates.iter().all(Option::is_none) {
                return Err(format!("{name} exists, but it was fsynced as absent"));
            }
        }
    }
    Ok(())
}

/// One case: returns the failure, with what happened.
fn run_case(seed: u64) -> Result<(), String> {
    let mut rng = Rng::new(seed);
    let disk = SimDisk::new(seed.wrapping_mul(31));
    let concurrent = rng.chance(1, 5);
    let crash_inside = rng.chance(1, 2);
    let ops = 5 + rng.below(40) as usize;
    if crash_inside {
        disk.crash_at(rng.below(40 + 8 * ops as u64));
    }
    let fs = match open(&disk) {
        Ok(fs) => Arc::new(fs),
        // The power went at the first mount: nothing was acknowledged.
        Err(_) if disk.is_off() => {
            let after = disk.restart(seed.wrapping_add(1));
            let fs = open(&after).map_err(|e| format!("recovery of a cut first mount: {e}"))?;
            let report = pangea::fs::fsck::fsck(&*after.kv(), &*after.chunks(), false)
                .map_err(|e| e.to_string())?;
            drop(fs);
            return if report.is_clean() {
                Ok(())
            } else {
                Err(format!("fsck after a cut first mount:\n{report}"))
            };
        }
        Err(e) => return Err(e),
    };
    let all_names: Vec<String> = (0..NAMES).map(|i| format!("f{i}")).collect();
    let groups: Vec<Vec<String>> = if concurrent {
        vec![
            all_names[..NAMES / 2].to_vec(),
            all_names[NAMES / 2..].to_vec(),
        ]
    } else {
        vec![all_names.clone()]
    };
    let models: Vec<Model> = std::thread::scope(|s| {
        let handles: Vec<_> = groups
            .iter()
            .enumerate()
            .map(|(g, names)| {
                let fs = fs.clone();
                let disk = disk.clone();
                s.spawn(move || {
                    let mut rng = Rng::new(seed ^ (0x1000 * (g as u64 + 1)));
                    let mut m = Model::default();
                    for _ in 0..ops {
                        if disk.is_off() {
                            break;
                        }
                        if let Err(e) = step(&fs, &mut m, &mut rng, names) {
                            m.log.push(format!("  failed: {e}"));
                            break;
                        }
                    }
                    m
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_default())
            .collect()
    });
    disk.power_cut();
    drop(fs);
    let after = disk.restart(seed.wrapping_add(1));
    let describe = |e: String| {
        let log: Vec<String> = models.iter().flat_map(|m| m.log.clone()).collect();
        format!(
            "{e}\n  (concurrent: {concurrent}, crash inside an op: {crash_inside})\n  ops:\n    {}",
            log.join("\n    ")
        )
    };
    let fs = open(&after).map_err(|e| describe(format!("recovery failed: {e}")))?;
    let report = pangea::fs::fsck::fsck(&*after.kv(), &*after.chunks(), false)
        .map_err(|e| describe(format!("fsck failed: {e}")))?;
    let ignore_leaks = std::env::var_os("PANGEA_SIM_IGNORE_LEAKS").is_some();
    if let Some(first) = report
        .problems
        .iter()
        .find(|p| !(ignore_leaks && p.is_removable()))
    {
        return Err(describe(format!("fsck after recovery: {first}\n{report}")));
    }
    check(&fs, &models).map_err(describe)?;
    Ok(())
}

#[test]
fn every_power_cut_leaves_fsynced_files_exact_and_no_garbage() {
    if let Some(seed) = std::env::var("PANGEA_SIM_SEED")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
    {
        if let Err(e) = run_case(seed) {
            panic!("seed {seed}: {e}");
        }
        return;
    }
    let cases: u64 = std::env::var("PANGEA_SIM_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2000);
    let base: u64 = std::env::var("PANGEA_SIM_BASE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mut failures: Vec<(u64, String)> = Vec::new();
    for seed in base..base + cases {
        if let Err(e) = run_case(seed) {
            failures.push((seed, e));
        }
    }
    if let Some((seed, e)) = failures.first() {
        let summary: Vec<String> = failures
            .iter()
            .take(2000)
            .map(|(s, e)| format!("  seed {s}: {}", e.lines().next().unwrap_or_default()))
            .collect();
        panic!(
            "{} of {cases} cases failed:\n{}\nreplay one with PANGEA_SIM_SEED={seed}:\n{e}",
            failures.len(),
            summary.join("\n")
        );
    }
    eprintln!("power-loss simulator: {cases} cases passed");
}
