//! The shard protocol's messages (`/pangea/shard/1`) and their bytes.
//!
//! Every message is bounded before it is read: a shard is at most
//! [`MAX_SHARD_LEN`] bytes, a `has` asks about at most [`MAX_HAS`] shards,
//! a `list` page holds at most [`MAX_LIST`] addresses, so a request is at
//! most [`MAX_REQUEST_LEN`] bytes and a response [`MAX_RESPONSE_LEN`].
//! Decoding never panics and refuses anything malformed, oversized or
//! followed by extra bytes (docs/FORMAT.md, "Shard protocol"). A shard's
//! address is its BLAKE3 ([`ShardId::of`]): the sender checks it before
//! sending and the receiver before storing ([`check_shard`]).

use thiserror::Error;

use crate::ces::ShardId;

/// The protocol's version byte, first in every message.
pub const WIRE_VERSION: u8 = 1;
/// The protocol name peers negotiate.
pub const PROTOCOL: &str = "/pangea/shard/1";
/// The largest shard: a 4 MiB chunk sealed whole (k = 1), with room for
/// the tag and padding of an incompressible one.
pub const MAX_SHARD_LEN: usize = (4 << 20) + (64 << 10);
/// Shards one `has` asks about.
pub const MAX_HAS: usize = 1024;
/// Addresses in one `list` page.
pub const MAX_LIST: usize = 4096;
/// The largest request: a `put` of the largest shard.
pub const MAX_REQUEST_LEN: usize = 2 + 32 + 4 + MAX_SHARD_LEN;
/// The largest response: a `shard` of the largest shard (a full `list`
/// page is smaller).
pub const MAX_RESPONSE_LEN: usize = 2 + 4 + MAX_SHARD_LEN;

const REQ_PUT: u8 = 1;
const REQ_GET: u8 = 2;
const REQ_HAS: u8 = 3;
const REQ_DELETE: u8 = 4;
const REQ_LIST: u8 = 5;
const REQ_PROVE: u8 = 6;
const REQ_PUT_ROOT: u8 = 7;
const REQ_GET_ROOT: u8 = 8;

const RESP_STORED: u8 = 1;
const RESP_SHARD: u8 = 2;
const RESP_HAVE: u8 = 3;
const RESP_DELETED: u8 = 4;
const RESP_LISTED: u8 = 5;
const RESP_REFUSED: u8 = 6;
const RESP_PROOF: u8 = 7;
const RESP_ROOT: u8 = 8;
/// The largest backup root a storage node keeps (per slot).
pub const MAX_ROOT_LEN: usize = 64 << 10;

/// What a member asks a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Store this shard (for the asking member).
    Put { address: ShardId, bytes: Vec<u8> },
    /// Send this shard back.
    Get { address: ShardId },
    /// Which of these shards do you hold?
    Has { addresses: Vec<ShardId> },
    /// Delete this shard (only the member that stored it may).
    Delete { address: ShardId },
    /// The shards you hold for me, in address order, after `after`.
    List { after: Option<ShardId>, limit: u16 },
    /// Prove you hold this shard: BLAKE3 keyed with `nonce` over its
    /// bytes (a fresh nonce each time: the address alone cannot answer).
    Prove { address: ShardId, nonce: [u8; 32] },
    /// Keep this backup root in `slot` if `seq` is newer than the one
    /// kept (an owner's index backup: ciphertext the node cannot read).
    PutRoot {
        slot: [u8; 32],
        seq: u64,
        blob: Vec<u8>,
    },
    /// Send the backup root kept in `slot`.
    GetRoot { slot: [u8; 32] },
}

/// Why a peer refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No room (the peer's quota).
    Full,
    /// No such shard (for this member).
    NotFound,
    /// The bytes are not the shard the address names.
    BadAddress,
    /// The asker is not a member, or is banned.
    NotMember,
    /// Too many requests: try later.
    Busy,
    /// The request did not parse.
    Malformed,
}

impl Refusal {
    fn code(self) -> u8 {
        match self {
            Refusal::Full => 1,
            Refusal::NotFound => 2,
            Refusal::BadAddress => 3,
            Refusal::NotMember => 4,
            Refusal::Busy => 5,
            Refusal::Malformed => 6,
        }
    }

    fn from_code(c: u8) -> Option<Refusal> {
        Some(match c {
            1 => Refusal::Full,
            2 => Refusal::NotFound,
            3 => Refusal::BadAddress,
            4 => Refusal::NotMember,
            5 => Refusal::Busy,
            6 => Refusal::Malformed,
            _ => return None,
        })
    }
}

/// A peer's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// The shard is stored (durably).
    Stored,
    /// The shard asked for.
    Shard { bytes: Vec<u8> },
    /// For each address of a `has`, in order: held or not.
    Have { held: Vec<bool> },
    /// Deleted (false: there was nothing to delete).
    Deleted { existed: bool },
    /// A page of addresses; `more` when another page follows.
    Listed { addresses: Vec<ShardId>, more: bool },
    /// Not done, and why.
    Refused(Refusal),
    /// The answer to a `prove`.
    Proof { hash: [u8; 32] },
    /// The backup root kept in a slot.
    Root { seq: u64, blob: Vec<u8> },
}

/// Why bytes are not a message.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum WireError {
    #[error("message truncated")]
    Truncated,
    #[error("{what} of {got} is over the limit of {max}")]
    TooLarge {
        what: &'static str,
        max: usize,
        got: usize,
    },
    #[error("protocol version {0} is not spoken here")]
    Version(u8),
    #[error("unknown message kind {0}")]
    Kind(u8),
    #[error("a flag or code holds {0}, which means nothing")]
    Value(u8),
    #[error("{0} bytes follow the message")]
    Trailing(usize),
    #[error("the shard's bytes do not match its address")]
    BadAddress,
}

/// Checks that `bytes` are the shard `address` names and are not too long
/// (the sender before sending, the receiver before storing).
pub fn check_shard(address: &ShardId, bytes: &[u8]) -> Result<(), WireError> {
    if bytes.len() > MAX_SHARD_LEN {
        return Err(WireError::TooLarge {
            what: "a shard",
            max: MAX_SHARD_LEN,
            got: bytes.len(),
        });
    }
    if ShardId::of(bytes) != *address {
        return Err(WireError::BadAddress);
    }
    Ok(())
}

fn too_large(what: &'static str, max: usize, got: usize) -> Result<(), WireError> {
    if got > max {
        Err(WireError::TooLarge { what, max, got })
    } else {
        Ok(())
    }
}

impl Request {
    /// The request's bytes; refuses a shard or list over the limits.
    pub fn encode(&self) -> Result<Vec<u8>, WireError> {
        let mut v = vec![WIRE_VERSION];
        match self {
            Request::Put { address, bytes } => {
                too_large("a shard", MAX_SHARD_LEN, bytes.len())?;
                v.reserve(37 + bytes.len());
                v.push(REQ_PUT);
                v.extend_from_slice(address.as_bytes());
                put_len(&mut v, bytes.len());
                v.extend_from_slice(bytes);
            }
            Request::Get { address } => {
                v.push(REQ_GET);
                v.extend_from_slice(address.as_bytes());
            }
            Request::Has { addresses } => {
                too_large("a has", MAX_HAS, addresses.len())?;
                v.push(REQ_HAS);
                put_count(&mut v, addresses.len());
                for a in addresses {
                    v.extend_from_slice(a.as_bytes());
                }
            }
            Request::Delete { address } => {
                v.push(REQ_DELETE);
                v.extend_from_slice(address.as_bytes());
            }
            Request::List { after, limit } => {
                too_large("a list page", MAX_LIST, usize::from(*limit))?;
                v.push(REQ_LIST);
                match after {
                    Some(a) => {
                        v.push(1);
                        v.extend_from_slice(a.as_bytes());
                    }
                    None => v.push(0),
                }
                v.extend_from_slice(&limit.to_le_bytes());
            }
            Request::Prove { address, nonce } => {
                v.push(REQ_PROVE);
                v.extend_from_slice(address.as_bytes());
                v.extend_from_slice(nonce);
            }
            Request::PutRoot { slot, seq, blob } => {
                too_large("a backup root", MAX_ROOT_LEN, blob.len())?;
                v.push(REQ_PUT_ROOT);
                v.extend_from_slice(slot);
                v.extend_from_slice(&seq.to_le_bytes());
                put_len(&mut v, blob.len());
                v.extend_from_slice(blob);
            }
            Request::GetRoot { slot } => {
                v.push(REQ_GET_ROOT);
                v.extend_from_slice(slot);
            }
        }
        Ok(v)
    }

    /// Parses a request (all of `bytes`).
    pub fn decode(bytes: &[u8]) -> Result<Request, WireError> {
        too_large("a request", MAX_REQUEST_LEN, bytes.len())?;
        let mut r = Reader::new(bytes)?;
        let req = match r.u8()? {
            REQ_PUT => {
                let address = r.address()?;
                let len = r.len("a shard", MAX_SHARD_LEN)?;
                Request::Put {
                    address,
                    bytes: r.take(len)?.to_vec(),
                }
            }
            REQ_GET => Request::Get {
                address: r.address()?,
            },
            REQ_HAS => {
                let n = r.count("a has", MAX_HAS)?;
                let mut addresses = Vec::with_capacity(n);
                for _ in 0..n {
                    addresses.push(r.address()?);
                }
                Request::Has { addresses }
            }
            REQ_DELETE => Request::Delete {
                address: r.address()?,
            },
            REQ_LIST => {
                let after = match r.u8()? {
                    0 => None,
                    1 => Some(r.address()?),
                    x => return Err(WireError::Value(x)),
                };
                let limit = r.u16()?;
                too_large("a list page", MAX_LIST, usize::from(limit))?;
                Request::List { after, limit }
            }
            REQ_PROVE => Request::Prove {
                address: r.address()?,
                nonce: r.address()?.0,
            },
            REQ_PUT_ROOT => {
                let slot = r.address()?.0;
                let seq = r.u64()?;
                let len = r.len("a backup root", MAX_ROOT_LEN)?;
                Request::PutRoot {
                    slot,
                    seq,
                    blob: r.take(len)?.to_vec(),
                }
            }
            REQ_GET_ROOT => Request::GetRoot {
                slot: r.address()?.0,
            },
            k => return Err(WireError::Kind(k)),
        };
        r.end()?;
        Ok(req)
    }
}

impl Response {
    /// The response's bytes; refuses a shard or a page over the limits.
    pub fn encode(&self) -> Result<Vec<u8>, WireError> {
        let mut v = vec![WIRE_VERSION];
        match self {
            Response::Stored => v.push(RESP_STORED),
            Response::Shard { bytes } => {
                too_large("a shard", MAX_SHARD_LEN, bytes.len())?;
                v.reserve(5 + bytes.len());
                v.push(RESP_SHARD);
                put_len(&mut v, bytes.len());
                v.extend_from_slice(bytes);
            }
            Response::Have { held } => {
                too_large("a has", MAX_HAS, held.len())?;
                v.push(RESP_HAVE);
                put_count(&mut v, held.len());
                let mut bits = vec![0u8; held.len().div_ceil(8)];
                for (i, h) in held.iter().enumerate() {
                    if *h {
                        bits[i / 8] |= 1 << (i % 8);
                    }
                }
                v.extend_from_slice(&bits);
            }
            Response::Deleted { existed } => {
                v.push(RESP_DELETED);
                v.push(u8::from(*existed));
            }
            Response::Listed { addresses, more } => {
                too_large("a list page", MAX_LIST, addresses.len())?;
                v.push(RESP_LISTED);
                put_count(&mut v, addresses.len());
                for a in addresses {
                    v.extend_from_slice(a.as_bytes());
                }
                v.push(u8::from(*more));
            }
            Response::Refused(why) => {
                v.push(RESP_REFUSED);
                v.push(why.code());
            }
            Response::Proof { hash } => {
                v.push(RESP_PROOF);
                v.extend_from_slice(hash);
            }
            Response::Root { seq, blob } => {
                too_large("a backup root", MAX_ROOT_LEN, blob.len())?;
                v.push(RESP_ROOT);
                v.extend_from_slice(&seq.to_le_bytes());
                put_len(&mut v, blob.len());
                v.extend_from_slice(blob);
            }
        }
        Ok(v)
    }

    /// Parses a response (all of `bytes`).
    pub fn decode(bytes: &[u8]) -> Result<Response, WireError> {
        too_large("a response", MAX_RESPONSE_LEN, bytes.len())?;
        let mut r = Reader::new(bytes)?;
        let resp = match r.u8()? {
            RESP_STORED => Response::Stored,
            RESP_SHARD => {
                let len = r.len("a shard", MAX_SHARD_LEN)?;
                Response::Shard {
                    bytes: r.take(len)?.to_vec(),
                }
            }
            RESP_HAVE => {
                let n = r.count("a has", MAX_HAS)?;
                let bits = r.take(n.div_ceil(8))?;
                if n % 8 != 0 && bits.last().is_some_and(|b| b >> (n % 8) != 0) {
                    return Err(WireError::Value(bits[bits.len() - 1]));
                }
                Response::Have {
                    held: (0..n).map(|i| bits[i / 8] & (1 << (i % 8)) != 0).collect(),
                }
            }
            RESP_DELETED => Response::Deleted { existed: r.flag()? },
            RESP_LISTED => {
                let n = r.count("a list page", MAX_LIST)?;
                let mut addresses = Vec::with_capacity(n);
                for _ in 0..n {
                    addresses.push(r.address()?);
                }
                Response::Listed {
                    addresses,
                    more: r.flag()?,
                }
            }
            RESP_REFUSED => {
                let c = r.u8()?;
                Response::Refused(Refusal::from_code(c).ok_or(WireError::Value(c))?)
            }
            RESP_PROOF => Response::Proof {
                hash: r.address()?.0,
            },
            RESP_ROOT => {
                let seq = r.u64()?;
                let len = r.len("a backup root", MAX_ROOT_LEN)?;
                Response::Root {
                    seq,
                    blob: r.take(len)?.to_vec(),
                }
            }
            k => return Err(WireError::Kind(k)),
        };
        r.end()?;
        Ok(resp)
    }
}

/// A length, as 4 bytes little-endian (callers bound it first).
fn put_len(v: &mut Vec<u8>, n: usize) {
    v.extend_from_slice(&u32::try_from(n).unwrap_or(u32::MAX).to_le_bytes());
}

/// A count, as 2 bytes little-endian (callers bound it first).
fn put_count(v: &mut Vec<u8>, n: usize) {
    v.extend_from_slice(&u16::try_from(n).unwrap_or(u16::MAX).to_le_bytes());
}

/// Reads a message front to back; every read is bounds-checked.
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    /// Checks the version byte.
    fn new(bytes: &'a [u8]) -> Result<Reader<'a>, WireError> {
        let mut r = Reader { rest: bytes };
        match r.u8()? {
            WIRE_VERSION => Ok(r),
            v => Err(WireError::Version(v)),
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if self.rest.len() < n {
            return Err(WireError::Truncated);
        }
        let (head, rest) = self.rest.split_at(n);
        self.rest = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, WireError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u64(&mut self) -> Result<u64, WireError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    fn flag(&mut self) -> Result<bool, WireError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            x => Err(WireError::Value(x)),
        }
    }

    fn address(&mut self) -> Result<ShardId, WireError> {
        let mut a = [0u8; 32];
        a.copy_from_slice(self.take(32)?);
        Ok(ShardId(a))
    }

    /// A 4-byte length, refused over `max` before anything is read.
    fn len(&mut self, what: &'static str, max: usize) -> Result<usize, WireError> {
        let b = self.take(4)?;
        let n = u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize;
        too_large(what, max, n)?;
        Ok(n)
    }

    /// A 2-byte count, refused over `max`.
    fn count(&mut self, what: &'static str, max: usize) -> Result<usize, WireError> {
        let n = usize::from(self.u16()?);
        too_large(what, max, n)?;
        Ok(n)
    }

    fn end(&self) -> Result<(), WireError> {
        match self.rest.len() {
            0 => Ok(()),
            n => Err(WireError::Trailing(n)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(i: u8) -> ShardId {
        ShardId([i; 32])
    }

    fn requests() -> Vec<Request> {
        let shard = vec![7u8; 1000];
        vec![
            Request::Put {
                address: ShardId::of(&shard),
                bytes: shard,
            },
            Request::Put {
                address: addr(1),
                bytes: Vec::new(),
            },
            Request::Get { address: addr(2) },
            Request::Has {
                addresses: (0..MAX_HAS).map(|i| addr(i as u8)).collect(),
            },
            Request::Has {
                addresses: Vec::new(),
            },
            Request::Delete { address: addr(3) },
            Request::List {
                after: None,
                limit: 10,
            },
            Request::List {
                after: Some(addr(4)),
                limit: MAX_LIST as u16,
            },
            Request::Prove {
                address: addr(5),
                nonce: [7; 32],
            },
            Request::PutRoot {
                slot: [3; 32],
                seq: u64::MAX - 1,
                blob: vec![5; MAX_ROOT_LEN],
            },
            Request::PutRoot {
                slot: [0; 32],
                seq: 0,
                blob: Vec::new(),
            },
            Request::GetRoot { slot: [4; 32] },
        ]
    }

    fn responses() -> Vec<Response> {
        vec![
            Response::Stored,
            Response::Shard {
                bytes: vec![1, 2, 3],
            },
            Response::Have {
                held: vec![true, false, true, true, false, false, false, true, true],
            },
            Response::Have { held: Vec::new() },
            Response::Deleted { existed: true },
            Response::Deleted { existed: false },
            Response::Listed {
                addresses: vec![addr(1), addr(2)],
                more: true,
            },
            Response::Proof { hash: [9; 32] },
            Response::Root {
                seq: 7,
                blob: vec![1; 100],
            },
            Response::Refused(Refusal::Full),
            Response::Refused(Refusal::Malformed),
        ]
    }

    #[test]
    fn every_message_round_trips() {
        for req in requests() {
            let v = req.encode().unwrap();
            assert_eq!(Request::decode(&v).unwrap(), req);
        }
        for resp in responses() {
            let v = resp.encode().unwrap();
            assert_eq!(Response::decode(&v).unwrap(), resp);
        }
    }

    #[test]
    fn the_largest_shard_passes_and_one_byte_more_is_refused_both_ways() {
        let max = vec![0xa5u8; MAX_SHARD_LEN];
        let put = Request::Put {
            address: ShardId::of(&max),
            bytes: max.clone(),
        };
        let v = put.encode().unwrap();
        assert_eq!(v.len(), MAX_REQUEST_LEN);
        assert_eq!(Request::decode(&v).unwrap(), put);
        let got = Response::Shard { bytes: max.clone() }.encode().unwrap();
        assert_eq!(got.len(), MAX_RESPONSE_LEN);
        assert!(Response::decode(&got).is_ok());
        check_shard(&ShardId::of(&max), &max).unwrap();

        let mut over = max;
        over.push(0);
        let too_big = |e: Result<Vec<u8>, WireError>| matches!(e, Err(WireError::TooLarge { got, .. }) if got == MAX_SHARD_LEN + 1);
        assert!(too_big(
            Request::Put {
                address: ShardId::of(&over),
                bytes: over.clone(),
            }
            .encode()
        ));
        assert!(too_big(
            Response::Shard {
                bytes: over.clone()
            }
            .encode()
        ));
        assert!(check_shard(&ShardId::of(&over), &over).is_err());
        // Bytes claiming one more: refused from the length, before reading.
        let mut forged = v.clone();
        forged[34..38].copy_from_slice(&((MAX_SHARD_LEN + 1) as u32).to_le_bytes());
        assert!(matches!(
            Request::decode(&forged),
            Err(WireError::TooLarge { .. })
        ));
        let mut longer = v;
        longer.push(0);
        assert!(Request::decode(&longer).is_err());
    }

    #[test]
    fn lists_and_has_over_their_limits_are_refused() {
        let has = Request::Has {
            addresses: vec![addr(0); MAX_HAS + 1],
        };
        assert!(matches!(has.encode(), Err(WireError::TooLarge { .. })));
        let list = Request::List {
            after: None,
            limit: MAX_LIST as u16 + 1,
        };
        assert!(matches!(list.encode(), Err(WireError::TooLarge { .. })));
        let mut forged = Request::List {
            after: None,
            limit: 1,
        }
        .encode()
        .unwrap();
        let n = forged.len();
        forged[n - 2..].copy_from_slice(&(MAX_LIST as u16 + 1).to_le_bytes());
        assert!(matches!(
            Request::decode(&forged),
            Err(WireError::TooLarge { .. })
        ));
    }

    #[test]
    fn a_shard_is_checked_against_its_address() {
        let bytes = vec![3u8; 100];
        assert_eq!(check_shard(&ShardId::of(&bytes), &bytes), Ok(()));
        let mut other = bytes.clone();
        other[50] ^= 1;
        assert_eq!(
            check_shard(&ShardId::of(&bytes), &other),
            Err(WireError::BadAddress)
        );
    }

    #[test]
    fn every_truncation_and_every_trailing_byte_is_an_error() {
        let all: Vec<Vec<u8>> = requests()
            .iter()
            .map(|r| r.encode().unwrap())
            .chain(responses().iter().map(|r| r.encode().unwrap()))
            .collect();
        for (i, v) in all.iter().enumerate() {
            let is_request = i < requests().len();
            let parse = |b: &[u8]| {
                if is_request {
                    Request::decode(b).map(|_| ())
                } else {
                    Response::decode(b).map(|_| ())
                }
            };
            for cut in 0..v.len() {
                assert!(parse(&v[..cut]).is_err(), "message {i} cut at {cut}");
            }
            let mut longer = v.clone();
            longer.push(0);
            assert_eq!(parse(&longer), Err(WireError::Trailing(1)));
        }
    }

    #[test]
    fn random_and_mutated_bytes_are_errors_never_panics() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let valid: Vec<Vec<u8>> = requests()
            .iter()
            .map(|r| r.encode().unwrap())
            .chain(responses().iter().map(|r| r.encode().unwrap()))
            .collect();
        for _ in 0..20_000 {
            let mut v = valid[(next() % valid.len() as u64) as usize].clone();
            match next() % 3 {
                0 => {
                    let at = (next() % v.len() as u64) as usize;
                    v[at] = next() as u8;
                }
                1 => v.truncate((next() % (v.len() as u64 + 1)) as usize),
                _ => v = (0..next() % 64).map(|_| next() as u8).collect(),
            }
            let _ = Request::decode(&v);
            let _ = Response::decode(&v);
        }
    }

    #[test]
    fn unknown_versions_kinds_flags_and_codes_are_errors() {
        assert_eq!(Request::decode(&[2, REQ_GET]), Err(WireError::Version(2)));
        assert_eq!(
            Request::decode(&[WIRE_VERSION, 99]),
            Err(WireError::Kind(99))
        );
        assert_eq!(
            Response::decode(&[WIRE_VERSION, RESP_DELETED, 2]),
            Err(WireError::Value(2))
        );
        assert_eq!(
            Response::decode(&[WIRE_VERSION, RESP_REFUSED, 0]),
            Err(WireError::Value(0))
        );
        // A bit set past the count of a `have`.
        assert_eq!(
            Response::decode(&[WIRE_VERSION, RESP_HAVE, 3, 0, 0b1000_0001]),
            Err(WireError::Value(0b1000_0001))
        );
        let mut list = Request::List {
            after: None,
            limit: 1,
        }
        .encode()
        .unwrap();
        list[2] = 7;
        assert!(Request::decode(&list).is_err());
    }
}
