//! Inputs the fuzz targets (fuzz/) found, kept as tests of what the code does
//! with them now (tests/data/fuzz/).

use std::path::PathBuf;

use prophetkv_model::testing::{instruct_model_path, workspace_root};
use prophetkv_model::{load_model, LoadOptions, ModelError, TextTokenizer};

fn data(name: &str) -> PathBuf {
    workspace_root()
        .join("crates/model/tests/data/fuzz")
        .join(name)
}

#[test]
fn a_gguf_claiming_an_impossible_tensor_shape_is_refused_as_corrupt() {
    // Its header gives a tensor dimensions whose product overflows 64 bits.
    let path = data("gguf-impossible-tensor-shape.gguf");
    match load_model(&path, &LoadOptions::default()) {
        Err(ModelError::Corrupt { reason, .. }) => {
            assert!(reason.contains("larger than any file"), "{reason}");
        }
        Err(other) => panic!("refused for another reason: {other}"),
        Ok(_) => panic!("a model with an impossible tensor loaded"),
    }
}

#[test]
fn text_with_bytes_smollm2_has_no_token_for_loses_only_those_bytes() {
    // SmolLM2's byte-level vocabulary has no token for 21 byte values (among
    // them U+0013, which this text holds 56 of), as Hugging Face's tokenizer
    // of the same vocabulary: they are dropped, the rest comes back whole.
    let bytes = std::fs::read(data("text-with-bytes-smollm2-cannot-represent.txt")).unwrap();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    assert_eq!(text.matches('\u{13}').count(), 56);
    let tokenizer = TextTokenizer::from_path(&instruct_model_path()).unwrap();
    let ids = tokenizer.encode(&text).unwrap();
    let decoded = tokenizer.decode(&ids).unwrap();
    assert_eq!(decoded, text.replace('\u{13}', ""));
    let gemma = TextTokenizer::from_path(&prophetkv_model::testing::default_model_path()).unwrap();
    let ids = gemma.encode(&text).unwrap();
    assert_eq!(
        gemma.decode(&ids).unwrap(),
        text,
        "Gemma's byte fallback keeps every byte"
    );
}

#[test]
fn a_gguf_with_an_empty_tensor_is_refused_as_corrupt() {
    // candle would view the empty buffer's dangling pointer as blocks of a
    // wider alignment (undefined behaviour its debug checks catch).
    let path = data("gguf-empty-tensor.gguf");
    match load_model(&path, &LoadOptions::default()) {
        Err(ModelError::Corrupt { reason, .. }) => {
            assert!(reason.contains("no elements"), "{reason}");
        }
        Err(other) => panic!("refused for another reason: {other}"),
        Ok(_) => panic!("a model with an empty tensor loaded"),
    }
}

#[test]
fn a_gguf_claiming_millions_of_layers_is_refused_before_allocating_for_them() {
    // Its block_count is in the millions; allocating a block for each ran
    // out of memory. Every layer's tensors must be in the file.
    let path = data("gguf-layer-count-beyond-its-tensors.gguf");
    match load_model(&path, &LoadOptions::default()) {
        Err(ModelError::Config { field, reason }) => {
            assert!(field.ends_with("block_count"), "{field}: {reason}");
        }
        Err(other) => panic!("refused for another reason: {other}"),
        Ok(_) => panic!("a model with missing layers loaded"),
    }
}
