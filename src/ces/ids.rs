//! Identifiers: 32-byte BLAKE3 outputs with a short hex display.

use std::fmt;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub [u8; 32]);

        impl $name {
            /// The raw 32 bytes.
            pub fn as_bytes(&self) -> &[u8; 32] {
                &self.0
            }

            /// Full lowercase hex (64 characters).
            pub fn to_hex(&self) -> String {
                hex(&self.0)
            }
        }

        /// Short form (first 8 bytes in hex) for logs; `{:#}` prints all 32.
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                if f.alternate() {
                    f.write_str(&hex(&self.0))
                } else {
                    f.write_str(&hex(&self.0[..8]))
                }
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), self)
            }
        }
    };
}

id_type!(
    /// Identity of a plaintext chunk: BLAKE3 keyed with the owner's secret
    /// dedup key. Equal plaintexts of one owner get equal ids; without the key
    /// an id reveals nothing about the content.
    ChunkId
);
id_type!(
    /// Address of a shard: plain BLAKE3 of its bytes, checkable by anyone
    /// (peers included) without a key.
    ShardId
);

impl ShardId {
    /// The address of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        ShardId(*blake3::hash(bytes).as_bytes())
    }
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_is_short_alternate_is_full() {
        let id = ChunkId([0xab; 32]);
        assert_eq!(id.to_string(), "abababababababab");
        assert_eq!(format!("{id:#}").len(), 64);
        assert_eq!(format!("{id:?}"), "ChunkId(abababababababab)");
    }
}
