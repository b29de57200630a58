//! A GGUF file: format detection, the model loader (header, hyper-parameters,
//! every tensor) and the vocabulary must refuse what they cannot use, never
//! panic, abort or allocate without bound.

#![no_main]

use libfuzzer_sys::fuzz_target;
use prophetkv_fuzz::{f32_load, scratch_file};
use prophetkv_model::{load_model, ModelFormat, TextTokenizer};

fuzz_target!(|data: &[u8]| {
    let path = scratch_file("model.gguf", data);
    let _ = ModelFormat::detect(&path);
    let _ = load_model(&path, &f32_load());
    let _ = TextTokenizer::from_path(&path);
});
