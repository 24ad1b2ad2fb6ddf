//! What a storage node (`pangea serve`) holds for the members: shard files
//! named by their address (`held/`, like chunk files), and in its own index
//! (`Cf::Held`) which member stored which shard, and how large it is.
//!
//! * `o ‖ owner length ‖ owner ‖ address → size`: the shards a member
//!   stored (what `list` pages through, and what `delete` may remove);
//! * `a ‖ address ‖ owner → ()`: who holds a reference to a shard file
//!   (the file goes with its last owner);
//! * `r ‖ slot → seq (8, LE) ‖ blob`: an owner's newest index-backup root
//!   (ciphertext, at most 64 KiB; a put with an older or equal `seq` is
//!   refused as `BadAddress`). Any member may put and get one: the blob
//!   is sealed under the owner's key, and a recovering device takes the
//!   newest one that opens among all the nodes' answers.
//!
//! A put is checked against its address and the quota, and its file is
//! durable (written, synced, renamed, the directory synced) before it is
//! answered; its index entry is written then and synced with the next sync
//! of the index (a crash may lose the entry, never the shard: gets and
//! `has` go by the file). Any
//! member may get a shard (a new device of the same owner must read it);
//! only the member that stored a shard may delete it. Shards read back are
//! checked against their address: a rotted file is dropped and reported
//! as not found, never sent.

use std::sync::Arc;
use std::sync::Mutex;

use libp2p::PeerId;
use tracing::{info, warn};

use super::swarm::ShardService;
use super::wire::{MAX_HAS, MAX_LIST, Refusal, Request, Response, check_shard};
use crate::ces::ShardId;
use crate::store::{Batch, Cf, ChunkStore, Kv, StoreError};

const BY_OWNER: u8 = b'o';
const BY_ADDRESS: u8 = b'a';
const ROOT: u8 = b'r';

/// Counters of a storage node.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct HeldStats {
    pub shards: u64,
    pub bytes: u64,
    pub quota: u64,
    pub puts: u64,
    pub gets: u64,
    pub refused_full: u64,
    pub rotted: u64,
}

/// See the module documentation.
pub struct HeldStore {
    kv: Arc<dyn Kv>,
    files: Arc<dyn ChunkStore>,
    quota: u64,
    /// Bytes and shards held (per owner entry), and the counters; one lock
    /// so a put's quota check and its accounting agree.
    stats: Mutex<HeldStats>,
    /// Held by puts, deletes and drops: a shard file and its index entries
    /// change together (no entry without its file).
    writes: Mutex<()>,
}

fn owner_prefix(owner: &PeerId) -> Vec<u8> {
    let o = owner.to_bytes();
    let mut k = Vec::with_capacity(2 + o.len() + 32);
    k.push(BY_OWNER);
    k.push(u8::try_from(o.len()).unwrap_or(u8::MAX));
    k.extend_from_slice(&o);
    k
}

fn owner_key(owner: &PeerId, address: &ShardId) -> Vec<u8> {
    let mut k = owner_prefix(owner);
    k.extend_from_slice(address.as_bytes());
    k
}

fn address_key(address: &ShardId, owner: &PeerId) -> Vec<u8> {
    let mut k = Vec::with_capacity(33 + 40);
    k.push(BY_ADDRESS);
    k.extend_from_slice(address.as_bytes());
    k.extend_from_slice(&owner.to_bytes());
    k
}

impl HeldStore {
    /// Opens the store over `kv` and `files`, with room for `quota` bytes,
    /// counting what is already held.
    pub fn open(
        kv: Arc<dyn Kv>,
        files: Arc<dyn ChunkStore>,
        quota: u64,
    ) -> Result<HeldStore, StoreError> {
        let mut stats = HeldStats {
            quota,
            ..HeldStats::default()
        };
        kv.scan(Cf::Held, &[BY_OWNER], &[], &mut |_, v| {
            stats.shards += 1;
            stats.bytes += v
                .get(..4)
                .and_then(|b| b.try_into().ok())
                .map_or(0, |b| u64::from(u32::from_le_bytes(b)));
            true
        })?;
        info!(
            shards = stats.shards,
            bytes = stats.bytes,
            quota,
            "holding shards"
        );
        Ok(HeldStore {
            kv,
            files,
            quota,
            stats: Mutex::new(stats),
            writes: Mutex::new(()),
        })
    }

    fn stats_mut(&self) -> std::sync::MutexGuard<'_, HeldStats> {
        self.stats.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The counters.
    pub fn stats(&self) -> HeldStats {
        self.stats_mut().clone()
    }

    fn held_by_anyone(&self, address: &ShardId) -> Result<bool, StoreError> {
        let mut prefix = vec![BY_ADDRESS];
        prefix.extend_from_slice(address.as_bytes());
        let mut any = false;
        self.kv.scan(Cf::Held, &prefix, &[], &mut |_, _| {
            any = true;
            false
        })?;
        Ok(any)
    }

    fn put(&self, owner: &PeerId, address: ShardId, bytes: &[u8]) -> Result<Response, StoreError> {
        if check_shard(&address, bytes).is_err() {
            return Ok(Response::Refused(Refusal::BadAddress));
        }
        let _w = self.writes.lock().unwrap_or_else(|e| e.into_inner());
        let key = owner_key(owner, &address);
        if self.kv.get(Cf::Held, &key)?.is_some() {
            return Ok(Response::Stored);
        }
        let len = bytes.len() as u64;
        {
            let mut s = self.stats_mut();
            if s.bytes.saturating_add(len) > self.quota {
                s.refused_full += 1;
                return Ok(Response::Refused(Refusal::Full));
            }
            // Reserved now; given back if the write fails.
            s.bytes += len;
            s.shards += 1;
        }
        let stored = (|| {
            if !self.held_by_anyone(&address)? {
                self.files.write(address.as_bytes(), bytes, true)?;
            }
            let mut b = Batch::new();
            b.put(
                Cf::Held,
                &key,
                &u32::try_from(len).unwrap_or(u32::MAX).to_le_bytes(),
            );
            b.put(Cf::Held, &address_key(&address, owner), &[]);
            // The shard itself is durable (the file, synced); its entry
            // rides on the next sync of the index: a crash may lose who
            // stored it (a get still finds the file), never the shard.
            self.kv.write(b, false)
        })();
        let mut s = self.stats_mut();
        match stored {
            Ok(()) => {
                s.puts += 1;
                Ok(Response::Stored)
            }
            Err(e) => {
                s.bytes -= len;
                s.shards -= 1;
                if e.is_no_space() {
                    s.refused_full += 1;
                    warn!("the disk is full: refusing shards");
                    return Ok(Response::Refused(Refusal::Full));
                }
                Err(e)
            }
        }
    }

    fn get(&self, address: ShardId) -> Result<Response, StoreError> {
        // The file is the shard (named by its address, checked on read).
        match self.files.read_all(address.as_bytes())? {
            Some(bytes) if check_shard(&address, &bytes).is_ok() => {
                self.stats_mut().gets += 1;
                Ok(Response::Shard { bytes })
            }
            Some(_) => {
                warn!(shard = %address, "a held shard has rotted; dropped (its owner's healer re-places it)");
                self.stats_mut().rotted += 1;
                self.drop_shard(&address)?;
                Ok(Response::Refused(Refusal::NotFound))
            }
            None => Ok(Response::Refused(Refusal::NotFound)),
        }
    }

    /// Forgets a shard for every owner (its file rotted): the entries, the
    /// file and the accounting, so that `has` says no and a new put stores
    /// it again.
    fn drop_shard(&self, address: &ShardId) -> Result<(), StoreError> {
        let _w = self.writes.lock().unwrap_or_else(|e| e.into_inner());
        // Looked at again under the lock: a put may have replaced it.
        if let Some(b) = self.files.read_all(address.as_bytes())?
            && check_shard(address, &b).is_ok()
        {
            return Ok(());
        }
        let mut prefix = vec![BY_ADDRESS];
        prefix.extend_from_slice(address.as_bytes());
        let mut owners = Vec::new();
        self.kv.scan(Cf::Held, &prefix, &[], &mut |k, _| {
            if let Ok(p) = PeerId::from_bytes(&k[prefix.len()..]) {
                owners.push(p);
            }
            true
        })?;
        let mut b = Batch::new();
        let mut freed = 0u64;
        for o in &owners {
            let key = owner_key(o, address);
            if let Some(v) = self.kv.get(Cf::Held, &key)? {
                freed += v
                    .get(..4)
                    .and_then(|b| b.try_into().ok())
                    .map_or(0, |b| u64::from(u32::from_le_bytes(b)));
            }
            b.delete(Cf::Held, &key);
            b.delete(Cf::Held, &address_key(address, o));
        }
        self.kv.write(b, true)?;
        self.files.delete(address.as_bytes())?;
        let mut s = self.stats_mut();
        s.bytes = s.bytes.saturating_sub(freed);
        s.shards = s.shards.saturating_sub(owners.len() as u64);
        Ok(())
    }

    fn delete(&self, owner: &PeerId, address: ShardId) -> Result<Response, StoreError> {
        let _w = self.writes.lock().unwrap_or_else(|e| e.into_inner());
        let key = owner_key(owner, &address);
        let Some(v) = self.kv.get(Cf::Held, &key)? else {
            return Ok(Response::Deleted { existed: false });
        };
        let len = v
            .get(..4)
            .and_then(|b| b.try_into().ok())
            .map_or(0, |b| u64::from(u32::from_le_bytes(b)));
        let mut b = Batch::new();
        b.delete(Cf::Held, &key);
        b.delete(Cf::Held, &address_key(&address, owner));
        self.kv.write(b, true)?;
        if !self.held_by_anyone(&address)? {
            self.files.delete(address.as_bytes())?;
        }
        let mut s = self.stats_mut();
        s.bytes = s.bytes.saturating_sub(len);
        s.shards = s.shards.saturating_sub(1);
        Ok(Response::Deleted { existed: true })
    }

    fn list(
        &self,
        owner: &PeerId,
        after: Option<ShardId>,
        limit: u16,
    ) -> Result<Response, StoreError> {
        let prefix = owner_prefix(owner);
        let start = match after {
            Some(a) => {
                let mut k = owner_key(owner, &a);
                k.push(0); // strictly after
                k
            }
            None => Vec::new(),
        };
        let limit = usize::from(limit).clamp(1, MAX_LIST);
        let mut addresses = Vec::new();
        let mut more = false;
        self.kv.scan(Cf::Held, &prefix, &start, &mut |k, _| {
            if addresses.len() == limit {
                more = true;
                return false;
            }
            if let Some(a) = k
                .get(prefix.len()..)
                .and_then(|a| <[u8; 32]>::try_from(a).ok())
            {
                addresses.push(ShardId(a));
            }
            true
        })?;
        Ok(Response::Listed { addresses, more })
    }

    fn answer(&self, from: &PeerId, request: Request) -> Result<Response, StoreError> {
        match request {
            Request::Put { address, bytes } => self.put(from, address, &bytes),
            Request::Get { address } => self.get(address),
            Request::Has { addresses } => {
                let mut held = Vec::with_capacity(addresses.len().min(MAX_HAS));
                for a in addresses.iter().take(MAX_HAS) {
                    held.push(self.files.exists(a.as_bytes())?);
                }
                Ok(Response::Have { held })
            }
            Request::Delete { address } => self.delete(from, address),
            Request::List { after, limit } => self.list(from, after, limit),
            Request::Prove { address, nonce } => Ok(match self.get(address)? {
                Response::Shard { bytes } => Response::Proof {
                    hash: *blake3::keyed_hash(&nonce, &bytes).as_bytes(),
                },
                other => other,
            }),
            Request::PutRoot { slot, seq, blob } => self.put_root(&slot, seq, &blob),
            Request::GetRoot { slot } => self.get_root(&slot),
        }
    }

    fn put_root(&self, slot: &[u8; 32], seq: u64, blob: &[u8]) -> Result<Response, StoreError> {
        let key = root_key(slot);
        // One writer at a time: the check and the write are one step.
        let _w = self.writes.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(old) = self.kv.get(Cf::Held, &key)?
            && old.len() >= 8
            && u64::from_le_bytes(old[..8].try_into().unwrap_or([0; 8])) >= seq
        {
            return Ok(Response::Refused(Refusal::BadAddress));
        }
        let mut v = Vec::with_capacity(8 + blob.len());
        v.extend_from_slice(&seq.to_le_bytes());
        v.extend_from_slice(blob);
        let mut b = Batch::new();
        b.put(Cf::Held, &key, &v);
        self.kv.write(b, true)?;
        Ok(Response::Stored)
    }

    fn get_root(&self, slot: &[u8; 32]) -> Result<Response, StoreError> {
        Ok(match self.kv.get(Cf::Held, &root_key(slot))? {
            Some(v) if v.len() >= 8 => Response::Root {
                seq: u64::from_le_bytes(v[..8].try_into().unwrap_or([0; 8])),
                blob: v[8..].to_vec(),
            },
            _ => Response::Refused(Refusal::NotFound),
        })
    }
}

fn root_key(slot: &[u8; 32]) -> Vec<u8> {
    let mut k = Vec::with_capacity(33);
    k.push(ROOT);
    k.extend_from_slice(slot);
    k
}

impl ShardService for HeldStore {
    fn serve(&self, from: &PeerId, request: Request) -> Response {
        match self.answer(from, request) {
            Ok(r) => r,
            Err(e) => {
                warn!(error = %e, "a shard request failed on this node's disk");
                Response::Refused(Refusal::Busy)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{ChunkFiles, MemKv};

    fn store(quota: u64) -> (tempfile::TempDir, HeldStore) {
        let d = tempfile::tempdir().unwrap();
        let files = ChunkFiles::open(&d.path().join("held")).unwrap();
        let s = HeldStore::open(Arc::new(MemKv::new()), Arc::new(files), quota).unwrap();
        (d, s)
    }

    fn shard(i: u8, len: usize) -> (ShardId, Vec<u8>) {
        let b = vec![i; len];
        (ShardId::of(&b), b)
    }

    #[test]
    fn a_backup_root_is_kept_only_when_newer_and_survives_a_reopen() {
        let d = tempfile::tempdir().unwrap();
        let open = || {
            let kv = crate::store::RocksKv::open(&d.path().join("index")).unwrap();
            let files = ChunkFiles::open(&d.path().join("held")).unwrap();
            HeldStore::open(Arc::new(kv), Arc::new(files), 1 << 20).unwrap()
        };
        let s = open();
        let a = PeerId::random();
        let slot = [7u8; 32];
        let get = |s: &HeldStore| s.serve(&a, Request::GetRoot { slot });
        assert_eq!(get(&s), Response::Refused(Refusal::NotFound));
        let put = |s: &HeldStore, seq, blob: &[u8]| {
            s.serve(
                &a,
                Request::PutRoot {
                    slot,
                    seq,
                    blob: blob.to_vec(),
                },
            )
        };
        assert_eq!(put(&s, 5, b"five"), Response::Stored);
        assert_eq!(put(&s, 5, b"again"), Response::Refused(Refusal::BadAddress));
        assert_eq!(put(&s, 4, b"older"), Response::Refused(Refusal::BadAddress));
        assert_eq!(
            get(&s),
            Response::Root {
                seq: 5,
                blob: b"five".to_vec()
            }
        );
        assert_eq!(put(&s, 9, b"nine"), Response::Stored);
        // Another slot is another owner's.
        assert_eq!(
            s.serve(&a, Request::GetRoot { slot: [8; 32] }),
            Response::Refused(Refusal::NotFound)
        );
        drop(s);
        let s = open();
        assert_eq!(
            get(&s),
            Response::Root {
                seq: 9,
                blob: b"nine".to_vec()
            }
        );
    }

    #[test]
    fn put_get_list_and_only_the_owner_deletes() {
        let (_d, s) = store(1 << 20);
        let a = PeerId::random();
        let b = PeerId::random();
        let (x, xb) = shard(1, 1000);
        let (y, yb) = shard(2, 1000);
        let put = |p: &PeerId, address, bytes| s.serve(p, Request::Put { address, bytes });
        assert_eq!(put(&a, x, xb.clone()), Response::Stored);
        assert_eq!(put(&a, y, yb.clone()), Response::Stored);
        assert_eq!(put(&b, x, xb.clone()), Response::Stored);
        assert_eq!(
            s.serve(&b, Request::Get { address: y }),
            Response::Shard { bytes: yb }
        );
        let Response::Listed { addresses, more } = s.serve(
            &a,
            Request::List {
                after: None,
                limit: 1,
            },
        ) else {
            panic!()
        };
        assert_eq!(addresses.len(), 1);
        assert!(more);
        let Response::Listed {
            addresses: rest,
            more,
        } = s.serve(
            &a,
            Request::List {
                after: Some(addresses[0]),
                limit: 10,
            },
        )
        else {
            panic!()
        };
        assert_eq!(rest.len(), 1);
        assert!(!more);
        // b never stored y: it cannot delete it.
        assert_eq!(
            s.serve(&b, Request::Delete { address: y }),
            Response::Deleted { existed: false }
        );
        assert!(matches!(
            s.serve(&a, Request::Get { address: y }),
            Response::Shard { .. }
        ));
        // x is held for a and b: a's delete keeps the file for b.
        assert_eq!(
            s.serve(&a, Request::Delete { address: x }),
            Response::Deleted { existed: true }
        );
        assert_eq!(
            s.serve(&b, Request::Get { address: x }),
            Response::Shard { bytes: xb }
        );
        assert_eq!(
            s.serve(
                &a,
                Request::Has {
                    addresses: vec![x, y, ShardId([9; 32])]
                }
            ),
            Response::Have {
                held: vec![true, true, false]
            }
        );
    }

    #[test]
    fn a_full_node_says_full_and_a_wrong_shard_is_refused() {
        let (_d, s) = store(2500);
        let p = PeerId::random();
        for i in 0..2 {
            let (a, b) = shard(i, 1000);
            assert_eq!(
                s.serve(
                    &p,
                    Request::Put {
                        address: a,
                        bytes: b
                    }
                ),
                Response::Stored
            );
        }
        let (a, b) = shard(3, 1000);
        assert_eq!(
            s.serve(
                &p,
                Request::Put {
                    address: a,
                    bytes: b.clone()
                }
            ),
            Response::Refused(Refusal::Full)
        );
        let (other, _) = shard(4, 10);
        assert_eq!(
            s.serve(
                &p,
                Request::Put {
                    address: other,
                    bytes: b
                }
            ),
            Response::Refused(Refusal::BadAddress)
        );
        assert_eq!(s.stats().refused_full, 1);
        assert_eq!(s.stats().bytes, 2000);
    }

    #[test]
    fn a_rotted_shard_is_never_sent() {
        let d = tempfile::tempdir().unwrap();
        let files = Arc::new(ChunkFiles::open(&d.path().join("held")).unwrap());
        let s = HeldStore::open(Arc::new(MemKv::new()), files.clone(), 1 << 20).unwrap();
        let p = PeerId::random();
        let (a, b) = shard(5, 4096);
        assert_eq!(
            s.serve(
                &p,
                Request::Put {
                    address: a,
                    bytes: b
                }
            ),
            Response::Stored
        );
        files.write(a.as_bytes(), &[0u8; 4096], true).unwrap();
        assert_eq!(
            s.serve(&p, Request::Get { address: a }),
            Response::Refused(Refusal::NotFound)
        );
        assert_eq!(s.stats().rotted, 1);
        // Forgotten whole: not held, not counted, and a new put stores it.
        assert_eq!(
            s.serve(&p, Request::Has { addresses: vec![a] }),
            Response::Have { held: vec![false] }
        );
        assert_eq!(s.stats().bytes, 0);
        let (_, good) = shard(5, 4096);
        assert_eq!(
            s.serve(
                &p,
                Request::Put {
                    address: a,
                    bytes: good.clone()
                }
            ),
            Response::Stored
        );
        assert_eq!(
            s.serve(&p, Request::Get { address: a }),
            Response::Shard { bytes: good }
        );
    }
}
