//! Arbitrary bytes → `Manifest::decode` must not panic, and whatever parses
//! must encode back to exactly the same bytes (the encoding is canonical).
//!
//! Input: one mode byte, then the candidate manifest. Mode bit 0 set: the
//! last 8 bytes are replaced by the checksum of the rest first; a random
//! 8-byte BLAKE3 prefix is out of the fuzzer's reach, and without the fix it
//! would only ever test the checksum.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pangea::ces::Manifest;
use pangea_fuzz::fix_checksum;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut bytes = rest.to_vec();
    if mode & 1 == 1 {
        fix_checksum(&mut bytes);
    }
    if let Ok(manifest) = Manifest::decode(&bytes) {
        assert_eq!(
            manifest.validate(),
            Ok(()),
            "decode returned an invalid manifest"
        );
        let encoded = manifest.encode();
        assert_eq!(
            encoded.len(),
            Manifest::encoded_len(manifest.shard_ids.len())
        );
        assert!(encoded == bytes, "encode(decode(b)) != b for {manifest:?}");
    }
});
