//! Tokenizers built from GGUF metadata and from tokenizer.json directories.

use candle_core::quantized::gguf_file::{self, Value};
use prophetkv_model::TextTokenizer;

const NORMAL: i32 = 1;
const CONTROL: i32 = 3;
const USER_DEFINED: i32 = 4;
const BYTE: i32 = 6;

/// Writes a metadata-only GGUF with a SentencePiece-style vocabulary.
fn spm_gguf(pieces: &[(&str, f32, i32)]) -> tempfile::NamedTempFile {
    let mut tokens: Vec<(String, f32, i32)> = pieces
        .iter()
        .map(|(t, s, k)| (t.to_string(), *s, *k))
        .collect();
    tokens.extend((0..=255u8).map(|b| (format!("<0x{b:02X}>"), 0.0, BYTE)));
    let strings = Value::Array(tokens.iter().map(|t| Value::String(t.0.clone())).collect());
    let scores = Value::Array(tokens.iter().map(|t| Value::F32(t.1)).collect());
    let types = Value::Array(tokens.iter().map(|t| Value::I32(t.2)).collect());
    let arch = Value::String("gemma3".into());
    let model = Value::String("llama".into());
    let (bos, eos, add_bos) = (Value::U32(1), Value::U32(2), Value::Bool(true));
    let metadata: Vec<(&str, &Value)> = vec![
        ("general.architecture", &arch),
        ("tokenizer.ggml.model", &model),
        ("tokenizer.ggml.tokens", &strings),
        ("tokenizer.ggml.scores", &scores),
        ("tokenizer.ggml.token_type", &types),
        ("tokenizer.ggml.bos_token_id", &bos),
        ("tokenizer.ggml.eos_token_id", &eos),
        ("tokenizer.ggml.add_bos_token", &add_bos),
    ];
    let mut f = tempfile::NamedTempFile::new().unwrap();
    gguf_file::write(f.as_file_mut(), &metadata, &[]).unwrap();
    f
}

fn pieces() -> Vec<(&'static str, f32, i32)> {
    vec![
        ("<unk>", 0.0, 2),
        ("<bos>", 0.0, CONTROL),
        ("<eos>", 0.0, CONTROL),
        ("\n\n", 0.0, USER_DEFINED),
        ("\u{2581}", -1.0, NORMAL),
        ("a", -2.0, NORMAL),
        ("b", -3.0, NORMAL),
        ("c", -4.0, NORMAL),
        ("d", -5.0, NORMAL),
        ("bd", -6.0, NORMAL),
        ("ab", -7.0, NORMAL),
        ("abc", -8.0, NORMAL),
        ("\u{2581}c", -9.0, NORMAL),
    ]
}

#[test]
fn sentencepiece_vocab_merges_by_score_and_falls_back_to_bytes() {
    let f = spm_gguf(&pieces());
    let tok = TextTokenizer::from_path(f.path()).unwrap();
    let id = |s: &str| pieces().iter().position(|p| p.0 == s).unwrap() as u32;
    // "abc": only (a,b) is a merge at first; then (ab,c).
    assert_eq!(tok.encode("abc").unwrap(), vec![id("abc")]);
    // "abd": (b,d) scores higher than (a,b), so SentencePiece picks "bd".
    assert_eq!(tok.encode("abd").unwrap(), vec![id("a"), id("bd")]);
    // Spaces become U+2581 and merge like any piece; no dummy prefix.
    assert_eq!(tok.encode("ab c").unwrap(), vec![id("ab"), id("\u{2581}c")]);
    // User-defined pieces match whole; unknown characters fall back to bytes.
    let e = tok.encode("a\n\né").unwrap();
    let byte = |b: u8| (pieces().len() + b as usize) as u32;
    assert_eq!(e, vec![id("a"), id("\n\n"), byte(0xC3), byte(0xA9)]);
    assert_eq!(tok.decode(&e).unwrap(), "a\n\né");
    // Control tokens in text stay text; BOS is added once by prompt_ids.
    let ids = tok.prompt_ids("<bos>").unwrap();
    assert_eq!(ids[0], 1);
    assert!(!ids[1..].contains(&1), "{ids:?}");
    assert_eq!(tok.eos(), &[2]);
}

#[test]
fn tokenizer_json_directory_takes_bos_and_eos_from_its_configs() {
    use tokenizers::models::wordlevel::WordLevel;
    use tokenizers::pre_tokenizers::whitespace::Whitespace;

    let vocab = [
        ("<s>", 0),
        ("</s>", 1),
        ("hello", 2),
        ("world", 3),
        ("[UNK]", 4),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let model = WordLevel::builder()
        .vocab(vocab)
        .unk_token("[UNK]".into())
        .build()
        .unwrap();
    let mut tokenizer = tokenizers::Tokenizer::new(model);
    tokenizer.with_pre_tokenizer(Some(Whitespace {}));
    for (model_type, bos) in [("llama", Some(0)), ("qwen2", None)] {
        let dir = tempfile::tempdir().unwrap();
        tokenizer
            .save(dir.path().join("tokenizer.json"), false)
            .unwrap();
        let config =
            format!(r#"{{"model_type": "{model_type}", "bos_token_id": 0, "eos_token_id": [1]}}"#);
        std::fs::write(dir.path().join("config.json"), config).unwrap();
        let tok = TextTokenizer::from_path(dir.path()).unwrap();
        let mut expected: Vec<u32> = bos.into_iter().collect();
        expected.extend([2, 3]);
        assert_eq!(
            tok.prompt_ids("hello world").unwrap(),
            expected,
            "{model_type}"
        );
        assert_eq!(tok.eos(), &[1]);
    }
}

#[test]
fn template_text_parses_control_tokens_and_client_text_does_not() {
    let path = prophetkv_model::testing::default_model_path();
    let tok = prophetkv_model::TextTokenizer::from_path(&path).unwrap();
    let turn = "<start_of_turn>user\nHi<end_of_turn>\n";
    let template = tok.encode_template(turn).unwrap();
    let plain = tok.encode(turn).unwrap();
    let start = tok.encode_template("<start_of_turn>").unwrap();
    assert_eq!(start.len(), 1, "one control token");
    assert_eq!(tok.token(start[0]).as_deref(), Some("<start_of_turn>"));
    assert_eq!(template[0], start[0]);
    assert!(plain.len() > template.len(), "client text spells it out");
    assert!(!plain.contains(&start[0]));
    // Text around control tokens is encoded as text.
    assert_eq!(tok.decode(&template).unwrap(), "user\nHi\n");
}

#[test]
fn byte_tokenizer_gives_one_token_per_byte_and_decodes_back() {
    let tok = TextTokenizer::bytes().unwrap();
    for text in ["Paris.", "héllo wörld 🎉\n\n  tabs\tand <bos> text", ""] {
        let ids = tok.encode(text).unwrap();
        let bytes: Vec<u32> = text.bytes().map(u32::from).collect();
        assert_eq!(ids, bytes, "{text:?}");
        assert_eq!(tok.decode(&ids).unwrap(), text);
    }
    assert_eq!(tok.prompt_ids("a").unwrap(), vec![256, 97]);
    assert_eq!(tok.eos(), &[257]);
}
