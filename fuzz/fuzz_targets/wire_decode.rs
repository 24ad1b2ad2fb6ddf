//! Arbitrary bytes → the shard protocol's decoders (`pangea::net::wire`)
//! must not panic, and whatever parses must encode back to exactly the same
//! bytes (the encoding is canonical).
//!
//! Input: one mode byte (bit 0: parse as a response, else a request), then
//! the candidate message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pangea::net::wire::{Request, Response};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, bytes)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        if let Ok(req) = Request::decode(bytes) {
            let back = req.encode().expect("a decoded request encodes");
            assert!(back == bytes, "encode(decode(b)) != b for {req:?}");
        }
    } else if let Ok(resp) = Response::decode(bytes) {
        let back = resp.encode().expect("a decoded response encodes");
        assert!(back == bytes, "encode(decode(b)) != b for {resp:?}");
    }
});
