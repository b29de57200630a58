//! A `tokenizers` tokenizer rebuilt from GGUF's `tokenizer.ggml.*` metadata.
//!
//! Two vocabulary kinds exist. `llama` is SentencePiece BPE: pieces with
//! scores, merged greedily by the score of the merged piece, with byte
//! fallback. We express that as a BPE model whose merge list holds every split
//! of every normal piece into two pieces, ranked by the merged piece's score.
//! `gpt2` is byte-level BPE with an explicit merge list and a pre-tokenizer
//! regex chosen by `tokenizer.ggml.pre`. In both, control tokens (type 3) are
//! special added tokens and user-defined ones (type 4, e.g. Gemma's runs of
//! newlines and spaces) are matched as whole tokens before the model runs.

use std::path::Path;

use ahash::AHashMap;
use candle_core::quantized::gguf_file::Value;
use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::byte_level::ByteLevel;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::DecoderWrapper;
use tokenizers::models::bpe::BPE;
use tokenizers::normalizers::replace::Replace;
use tokenizers::pre_tokenizers::sequence::Sequence as PreSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, SplitDelimiterBehavior, Tokenizer};

use super::TextTokenizer;
use crate::loader::GgufMetadata;
use crate::{ModelError, Result};

const TYPE_NORMAL: i32 = 1;
const TYPE_CONTROL: i32 = 3;
const TYPE_USER_DEFINED: i32 = 4;

/// Llama 3 ("llama-bpe") pre-tokenizer split.
const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen2 pre-tokenizer split (single digits).
const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// GPT-2's split, the default for byte-level vocabularies.
const GPT2_SPLIT: &str =
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

fn tok_err(msg: impl Into<String>) -> ModelError {
    ModelError::Tokenizer(msg.into())
}

pub(super) fn from_gguf(path: &Path) -> Result<TextTokenizer> {
    let (_, content) = crate::loader::read_gguf_header(path)?;
    let md = GgufMetadata::new(&content.metadata);
    let kind = md.string("tokenizer.ggml.model")?;
    let tokens = string_array(&md, "tokenizer.ggml.tokens")?;
    let types = match md.get("tokenizer.ggml.token_type") {
        Some(v) => int_array(v, "tokenizer.ggml.token_type")?,
        None => vec![TYPE_NORMAL; tokens.len()],
    };
    if types.len() != tokens.len() {
        return Err(tok_err(format!(
            "tokenizer.ggml.token_type has {} entries for {} tokens",
            types.len(),
            tokens.len()
        )));
    }
    let mut tokenizer = match kind {
        "llama" => {
            let scores = match md.get("tokenizer.ggml.scores") {
                Some(v) => float_array(v, "tokenizer.ggml.scores")?,
                None => return Err(tok_err("tokenizer.ggml.scores is missing")),
            };
            sentencepiece_bpe(&tokens, &scores, &types)?
        }
        "gpt2" => {
            let merges = string_array(&md, "tokenizer.ggml.merges")?;
            let pre = md
                .get("tokenizer.ggml.pre")
                .and_then(|v| v.to_string().ok())
                .map_or("default", |s| s.as_str());
            byte_level_bpe(&tokens, &merges, pre)?
        }
        other => {
            return Err(tok_err(format!(
                "tokenizer.ggml.model {other:?} is not supported (llama, gpt2)"
            )))
        }
    };
    add_special_tokens(&mut tokenizer, &tokens, &types);

    let id = |key: &str| md.usize_opt(key).ok().flatten().map(|x| x as u32);
    let add_bos = md
        .bool_opt("tokenizer.ggml.add_bos_token")
        .unwrap_or(kind == "llama");
    let bos = id("tokenizer.ggml.bos_token_id").filter(|_| add_bos);
    let mut eos: Vec<u32> = id("tokenizer.ggml.eos_token_id").into_iter().collect();
    eos.extend(id("tokenizer.ggml.eot_token_id"));
    eos.dedup();
    let template = md
        .get("tokenizer.chat_template")
        .and_then(|v| v.to_string().ok())
        .cloned();
    Ok(TextTokenizer::new(tokenizer, bos, eos).with_chat_template(template))
}

fn string_array(md: &GgufMetadata<'_>, key: &str) -> Result<Vec<String>> {
    let v = md
        .get(key)
        .ok_or_else(|| tok_err(format!("{key} is missing from the GGUF metadata")))?;
    array(v, key, "string", |x| x.to_string().ok().cloned())
}

fn int_array(v: &Value, key: &str) -> Result<Vec<i32>> {
    array(v, key, "i32", |x| x.to_i32().ok())
}

fn float_array(v: &Value, key: &str) -> Result<Vec<f32>> {
    array(v, key, "f32", |x| x.to_f32().ok())
}

/// The items of an array value, each converted by `item` (`None`: wrong type).
fn array<T>(
    v: &Value,
    key: &str,
    what: &str,
    item: impl Fn(&Value) -> Option<T>,
) -> Result<Vec<T>> {
    let items = v
        .to_vec()
        .map_err(|_| tok_err(format!("{key} is not an array")))?;
    items
        .iter()
        .map(|x| item(x).ok_or_else(|| tok_err(format!("{key} holds a non-{what}"))))
        .collect()
}

fn vocab_map(tokens: &[String]) -> AHashMap<String, u32> {
    let mut vocab = AHashMap::with_capacity(tokens.len());
    for (id, t) in tokens.iter().enumerate() {
        // On duplicates the first id wins, as in llama.cpp.
        vocab.entry(t.clone()).or_insert(id as u32);
    }
    vocab
}

/// SentencePiece BPE as a `tokenizers` BPE model (see the module doc).
fn sentencepiece_bpe(tokens: &[String], scores: &[f32], types: &[i32]) -> Result<Tokenizer> {
    if scores.len() != tokens.len() {
        return Err(tok_err(format!(
            "tokenizer.ggml.scores has {} entries for {} tokens",
            scores.len(),
            tokens.len()
        )));
    }
    let vocab = vocab_map(tokens);
    let mut ranked: Vec<(f32, u32, String, String)> = Vec::new();
    for (id, piece) in tokens.iter().enumerate() {
        if types[id] != TYPE_NORMAL {
            continue;
        }
        let cuts: Vec<usize> = piece.char_indices().map(|(i, _)| i).skip(1).collect();
        for cut in cuts {
            let (left, right) = piece.split_at(cut);
            if vocab.contains_key(left) && vocab.contains_key(right) {
                ranked.push((scores[id], id as u32, left.to_string(), right.to_string()));
            }
        }
    }
    // Higher score merges first; among equal scores, the lower id.
    ranked.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    let merges = ranked.into_iter().map(|(_, _, l, r)| (l, r)).collect();
    let unk = tokens
        .iter()
        .position(|t| t == "<unk>")
        .map(|i| tokens[i].clone());
    let mut builder = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .byte_fallback(true)
        .fuse_unk(true);
    if let Some(unk) = unk {
        builder = builder.unk_token(unk);
    }
    let model = builder
        .build()
        .map_err(|e| tok_err(format!("cannot build BPE: {e}")))?;
    let mut tokenizer = Tokenizer::new(model);
    let space = Replace::new(" ", "\u{2581}").map_err(|e| tok_err(e.to_string()))?;
    tokenizer.with_normalizer(Some(space));
    let unspace = Replace::new("\u{2581}", " ").map_err(|e| tok_err(e.to_string()))?;
    tokenizer.with_decoder(Some(DecoderSequence::new(vec![
        DecoderWrapper::Replace(unspace),
        DecoderWrapper::ByteFallback(ByteFallback::new()),
        DecoderWrapper::Fuse(Fuse::new()),
    ])));
    Ok(tokenizer)
}

/// Byte-level BPE (GPT-2 style) with the split regex of `pre`.
fn byte_level_bpe(tokens: &[String], merges: &[String], pre: &str) -> Result<Tokenizer> {
    let merges = merges
        .iter()
        .map(|m| {
            m.split_once(' ')
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .ok_or_else(|| tok_err(format!("malformed merge {m:?}")))
        })
        .collect::<Result<Vec<_>>>()?;
    let model = BPE::builder()
        .vocab_and_merges(vocab_map(tokens), merges)
        .build()
        .map_err(|e| tok_err(format!("cannot build BPE: {e}")))?;
    let pattern = match pre {
        "llama-bpe" | "llama3" | "smaug-bpe" => LLAMA3_SPLIT,
        "qwen2" => QWEN2_SPLIT,
        _ => GPT2_SPLIT,
    };
    let split = Split::new(
        SplitPattern::Regex(pattern.into()),
        SplitDelimiterBehavior::Isolated,
        false,
    )
    .map_err(|e| tok_err(format!("bad split regex: {e}")))?;
    let mut tokenizer = Tokenizer::new(model);
    tokenizer.with_pre_tokenizer(Some(PreSequence::new(vec![
        split.into(),
        ByteLevel::new(false, true, false).into(),
    ])));
    tokenizer.with_decoder(Some(ByteLevel::default()));
    Ok(tokenizer)
}

fn add_special_tokens(tokenizer: &mut Tokenizer, tokens: &[String], types: &[i32]) {
    let control: Vec<AddedToken> = tokens
        .iter()
        .zip(types)
        .filter(|(_, &t)| t == TYPE_CONTROL)
        .map(|(s, _)| AddedToken::from(s.clone(), true))
        .collect();
    let user: Vec<AddedToken> = tokens
        .iter()
        .zip(types)
        .filter(|(_, &t)| t == TYPE_USER_DEFINED)
        .map(|(s, _)| AddedToken::from(s.clone(), false).normalized(false))
        .collect();
    tokenizer.add_special_tokens(&control);
    tokenizer.add_tokens(&user);
}
