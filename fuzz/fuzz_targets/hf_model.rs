//! A Hugging Face model directory (config.json + model.safetensors, framed in
//! one input by `split_model_dir`): the loader must refuse what it cannot
//! use, never panic, abort or allocate without bound.

#![no_main]

use libfuzzer_sys::fuzz_target;
use prophetkv_fuzz::{f32_load, scratch_dir, split_model_dir};
use prophetkv_model::load_model;

fuzz_target!(|data: &[u8]| {
    let Some((config, weights)) = split_model_dir(data) else {
        return;
    };
    let dir = scratch_dir().join("hf");
    std::fs::create_dir_all(&dir).expect("scratch model directory");
    std::fs::write(dir.join("config.json"), config).expect("writing config.json");
    std::fs::write(dir.join("model.safetensors"), weights).expect("writing the weights");
    let _ = load_model(&dir, &f32_load());
});
