//! Recovery of a lost device (`pangea-mount DIR --recover KIT`).
//!
//! On a new, empty data dir: the kit's admin key proves itself to one of
//! the kit's storage members, which answers with the network's roster
//! (and its backup root); this device signs itself into the next roster
//! epoch and goes online; the newest backup root that opens under the
//! kit's master key names the listing, and every index file is rebuilt
//! from its pieces into `index.recovering`, checked, then renamed to
//! `index` after the master key is installed. Last, the device that wrote
//! the backup (the lost one) is removed from the network: if it comes
//! back, every member refuses it (`docs/SEMANTICS.md`, "Recovery").
//!
//! Anything that fails leaves the data dir without an index (a one-line
//! error; run it again), never a half-built tree.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::info;

use super::backup::{self, BackupError};
use super::kit::KitContents;
use crate::ces::{Ces, CompressionPolicy, MasterKey};
use crate::net::online::{NetSetup, StoresNothing, bring_up};
use crate::net::roots::{Recovery, Roots};
use crate::placement::PeerBook;

/// How long recovery waits for the storage members' roots.
const FIND_ROOT: Duration = Duration::from_secs(30);

/// What a recovery did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Recovered {
    pub generation: u64,
    /// When that backup's checkpoint was taken (Unix ms).
    pub taken_ms: u64,
    pub files: usize,
    pub bytes: u64,
    /// The device it replaced (its peer id), removed from the network.
    pub replaced: String,
    pub took_ms: u64,
}

/// See the module documentation. `setup` is the network setup the mount
/// will use (listen addresses, name, deadlines); `progress(done, total)`
/// in bytes of index.
pub fn recover(
    data_dir: &Path,
    kit: &KitContents,
    setup: &NetSetup,
    progress: &dyn Fn(u64, u64),
) -> Result<Recovered, String> {
    let t = Instant::now();
    const LEFTOVERS: [&str; 4] = ["net", "index.recovering", "recovered-backup", "master.key"];
    let marker = data_dir.join("recovering");
    let clean = |data_dir: &Path| {
        for p in LEFTOVERS {
            let path = data_dir.join(p);
            let _ = std::fs::remove_dir_all(&path).or_else(|_| std::fs::remove_file(&path));
        }
    };
    // An earlier recovery here was interrupted (killed): what it left goes.
    if marker.exists() && !data_dir.join("index").exists() {
        clean(data_dir);
    }
    if data_dir.join("master.key").exists()
        || data_dir.join("index").exists()
        || data_dir.join("net").join("network").exists()
    {
        return Err(format!(
            "--recover needs a new, empty data dir: {} already holds a node",
            data_dir.display()
        ));
    }
    std::fs::create_dir_all(data_dir).map_err(|e| format!("{}: {e}", data_dir.display()))?;
    std::fs::write(&marker, b"").map_err(|e| format!("{}: {e}", marker.display()))?;
    let result = recover_into(data_dir, kit, setup, progress, t);
    if result.is_err() {
        // Nothing half-built: what this run created goes, so that it can
        // run again on the same (empty) data dir.
        clean(data_dir);
    }
    let _ = std::fs::remove_file(&marker);
    result
}

fn recover_into(
    data_dir: &Path,
    kit: &KitContents,
    setup: &NetSetup,
    progress: &dyn Fn(u64, u64),
    t: Instant,
) -> Result<Recovered, String> {
    let master = MasterKey::from_bytes(kit.master);
    let recovery = recovery_of(kit);
    let mut setup = setup.clone();
    setup.join = None;
    setup.recover = Some(Arc::new(recovery));
    let online = bring_up(
        &data_dir.join("net"),
        &setup,
        Arc::new(StoresNothing),
        Arc::new(PeerBook::in_memory()),
    )
    .map_err(|e| format!("cannot reach the network with the kit: {e}"))?;
    let roots = Roots::new(online.client(), online.members.clone(), setup.op_timeout);
    let slot = backup::root_slot(&master);
    // The members take this device's roster when they connect: ask until
    // the newest root opens, or every member has answered without one.
    let until = Instant::now() + FIND_ROOT;
    let root = loop {
        let answers = roots.get_all(slot);
        if let Some(r) = backup::newest_root(&master, &answers) {
            // Wait a moment for the others (a newer generation may be on
            // a member that answers later), then take the newest.
            std::thread::sleep(Duration::from_millis(500));
            let again = roots.get_all(slot);
            break backup::newest_root(&master, &again)
                .filter(|n| n.generation > r.generation)
                .unwrap_or(r);
        }
        if Instant::now() >= until {
            return Err(format!(
                "no backup of this owner's index found: {} of {} storage members answered",
                answers.len(),
                roots.storage_members()
            ));
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    info!(generation = root.generation, "found the index backup");
    let ces = Ces::new(&master, CompressionPolicy::default()).map_err(|e| e.to_string())?;
    let tmp = data_dir.join("index.recovering");
    let _ = std::fs::remove_dir_all(&tmp);
    let restored = backup::restore(&ces, &roots, root, &tmp, progress).map_err(|e| match e {
        BackupError::Restore(s) => s,
        e => e.to_string(),
    })?;
    // The restored index will know its generation (the next backup is
    // newer), told on its first open.
    backup::mark_adopted(data_dir, &restored.root, &restored.listing).map_err(|e| e.to_string())?;
    super::datadir::install_key(data_dir, &master).map_err(|e| e.to_string())?;
    std::fs::rename(&tmp, data_dir.join("index")).map_err(|e| format!("{}: {e}", tmp.display()))?;
    let replaced = restored.root.device.clone();
    if let Err(e) = roots.remove_device(&replaced) {
        // The index is back: the mount goes on; the lost device can be
        // removed later (`pangea remove`).
        tracing::warn!(error = %e, "the lost device could not be removed from the network yet: run `pangea remove` with its peer id");
    }
    // Let the members take the new roster before this network closes.
    std::thread::sleep(Duration::from_millis(500));
    drop(online);
    Ok(Recovered {
        generation: restored.root.generation,
        taken_ms: restored.root.taken_ms,
        files: restored.listing.files.len(),
        bytes: restored.bytes,
        replaced: data_encoding::HEXLOWER.encode(&replaced),
        took_ms: u64::try_from(t.elapsed().as_millis()).unwrap_or(u64::MAX),
    })
}

/// `pangea recover --dry-run`: proves the kit's admin key to its storage
/// members and opens the newest backup root one of them keeps, changing
/// nothing anywhere. The generation and its age, or why not.
pub fn dry_run(kit: &KitContents, deadline: Duration) -> Result<serde_json::Value, String> {
    let master = MasterKey::from_bytes(kit.master);
    let recovery = recovery_of(kit);
    let (roster, root) = recovery
        .probe(backup::root_slot(&master), deadline)
        .map_err(|e| format!("the kit's storage members: {e}"))?;
    let root =
        root.ok_or("the storage member that answered keeps no backup of this owner's index")?;
    let root = backup::open_root(&master, root.0, &root.1)
        .ok_or("the backup root does not open with this kit's master key (another owner's kit?)")?;
    Ok(serde_json::json!({
        "network": data_encoding::HEXLOWER.encode(&kit.network),
        "members": roster,
        "generation": root.generation,
        "age_s": crate::placement::unix_now_ms().saturating_sub(root.taken_ms) / 1000,
    }))
}

/// What `pangea key export` prints, read from the data dir `root` (its
/// `master.key` and network files; the mount may be running). Refused on
/// a device that is not its network's admin.
pub fn kit_of(root: &Path) -> Result<KitContents, String> {
    let key = std::fs::read(root.join("master.key"))
        .map_err(|e| format!("{}: {e}", root.join("master.key").display()))?;
    let master: [u8; 32] = key
        .as_slice()
        .try_into()
        .map_err(|_| "master.key is not 32 bytes".to_string())?;
    let material = crate::net::roots::kit_material(&root.join("net"), 3)
        .map_err(|e| e.to_string())?
        .ok_or(
            "this device is not its network's admin (or has no network): export the kit on the device that created the network",
        )?;
    if material.peers.is_empty() {
        return Err(
            "the network has no storage member yet: a kit needs one to find the backup (pangea invite, then pangea serve --join on another machine)".into(),
        );
    }
    Ok(KitContents {
        master,
        admin: *material.admin,
        network: material.network,
        peers: material.peers,
    })
}

/// What the network layer needs of a kit.
fn recovery_of(kit: &KitContents) -> Recovery {
    Recovery {
        admin: zeroize::Zeroizing::new(kit.admin),
        network: kit.network,
        peers: kit.peers.clone(),
    }
}
