//! The peer table: small numbers for the peers that hold shards (chunk
//! records name peers by number, 4 bytes instead of an identity), in
//! `Cf::Peer`: `n ‖ number → identity` and `i ‖ identity → number`.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use crate::chunks::{ChunkError, ChunkResult};
use crate::store::{Batch, Cf, Kv};

const PEER_BY_NUMBER: u8 = b'n';
const PEER_BY_ID: u8 = b'i';
const META_NEXT_PEER: &[u8] = b"next_peer";

/// A peer's identity (the network's peer id, as bytes).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId(pub Vec<u8>);

impl PeerId {
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

/// Short form (the first 8 bytes in hex) for logs; `{:#}` prints all.
impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = if f.alternate() { self.0.len() } else { 8 };
        for b in self.0.iter().take(n) {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PeerId({self})")
    }
}

/// See the module documentation.
pub struct PeerTable {
    kv: Arc<dyn Kv>,
}

/// Peer numbers handed out while building one batch (not yet readable).
#[derive(Default)]
pub struct NewPeers {
    numbers: HashMap<PeerId, u32>,
    next: Option<u32>,
}

impl PeerTable {
    pub fn new(kv: Arc<dyn Kv>) -> PeerTable {
        PeerTable { kv }
    }

    /// The identity of peer number `n`.
    pub fn identity(&self, n: u32) -> ChunkResult<Option<PeerId>> {
        let mut k = vec![PEER_BY_NUMBER];
        k.extend_from_slice(&n.to_be_bytes());
        Ok(self.kv.get(Cf::Peer, &k)?.map(PeerId))
    }

    /// The number of peer `id`, allocated (in `b`) on first sight. Call
    /// under the chunk table's lock (numbers are allocated once).
    pub fn number(&self, b: &mut Batch, new: &mut NewPeers, id: &PeerId) -> ChunkResult<u32> {
        let mut by_id = vec![PEER_BY_ID];
        by_id.extend_from_slice(id.as_bytes());
        if let Some(v) = self.kv.get(Cf::Peer, &by_id)? {
            let n: [u8; 4] = v
                .as_slice()
                .try_into()
                .map_err(|_| ChunkError::Corrupt("peer table"))?;
            return Ok(u32::from_le_bytes(n));
        }
        if let Some(&n) = new.numbers.get(id) {
            return Ok(n);
        }
        let n = match new.next {
            Some(n) => n,
            None => match self.kv.get(Cf::Meta, META_NEXT_PEER)? {
                Some(v) => u32::from_le_bytes(
                    v.as_slice()
                        .try_into()
                        .map_err(|_| ChunkError::Corrupt("next peer number"))?,
                ),
                None => 0,
            },
        };
        let next = n
            .checked_add(1)
            .ok_or(ChunkError::Corrupt("peer numbers exhausted"))?;
        new.next = Some(next);
        new.numbers.insert(id.clone(), n);
        let mut by_number = vec![PEER_BY_NUMBER];
        by_number.extend_from_slice(&n.to_be_bytes());
        b.put(Cf::Peer, &by_number, id.as_bytes());
        b.put(Cf::Peer, &by_id, &n.to_le_bytes());
        b.put(Cf::Meta, META_NEXT_PEER, &next.to_le_bytes());
        Ok(n)
    }
}
