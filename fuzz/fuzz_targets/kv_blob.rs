//! A stored KV blob (disk and Redis tiers read these): decoding refuses
//! anything that is not this model's cache under this key, never panics, and
//! what it accepts is a well-formed cache of the expected shape.
//! (Under `cfg(fuzzing)` the blob's checksum is not checked, so that the
//! fuzzer reaches the checks behind it.)

#![no_main]

use libfuzzer_sys::fuzz_target;
use prophetkv_fuzz::{blob_codec, BLOB_ANCHOR, BLOB_SHAPE};

fuzz_target!(|data: &[u8]| {
    let (codec, key) = blob_codec();
    if let Ok(cache) = codec.decode(data, &key) {
        let (layers, kv_heads, head_dim) = BLOB_SHAPE;
        assert_eq!(cache.anchor(), BLOB_ANCHOR);
        assert_eq!(cache.layers().len(), layers);
        for (k, v) in cache.layers() {
            assert_eq!(k.dims(), [cache.len(), kv_heads, head_dim]);
            assert_eq!(v.dims(), k.dims());
        }
    }
});
