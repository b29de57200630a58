//! Text to token ids and back, with the model's special ids.
//!
//! Built from `tokenizer.json` or from a GGUF file's `tokenizer.ggml.*`
//! metadata. Plain text is encoded without parsing control tokens: a document
//! containing the characters `<bos>` stays text and cannot inject a control
//! token. Segments are encoded one by one and concatenated by the caller; BOS
//! is added once, by [`TextTokenizer::prompt_ids`].

mod gguf_vocab;

use std::path::Path;
use std::sync::Arc;

use serde_json::Value;

use crate::loader::ModelFormat;
use crate::{ModelError, Result};

/// A tokenizer plus the special ids generation needs. Cheap to clone: the
/// vocabulary (hundreds of MB for a 262k-token model) is shared.
#[derive(Debug, Clone)]
pub struct TextTokenizer {
    inner: Arc<tokenizers::Tokenizer>,
    bos: Option<u32>,
    eos: Vec<u32>,
    chat_template: Option<Arc<str>>,
    /// Special tokens' strings and ids, longest first.
    special: Arc<Vec<(String, u32)>>,
}

/// A token's `start..end` byte offsets in the text it was encoded from.
pub type ByteSpan = (usize, usize);

impl TextTokenizer {
    /// Loads the tokenizer that belongs to the model at `path`.
    pub fn from_path(path: &Path) -> Result<Self> {
        match ModelFormat::detect(path)? {
            ModelFormat::Gguf(p) => gguf_vocab::from_gguf(&p),
            ModelFormat::Safetensors(dir) => from_dir(&dir),
        }
    }

    /// One token per byte of the text (ids 0–255), BOS 256 and EOS 257: the
    /// tokenizer of a random-weights model, whose vocabulary means nothing.
    pub fn bytes() -> Result<Self> {
        let json = byte_level_json();
        let inner = json
            .parse::<tokenizers::Tokenizer>()
            .map_err(|e| ModelError::Tokenizer(format!("byte tokenizer: {e}")))?;
        Ok(Self::new(inner, Some(BYTE_BOS), vec![BYTE_EOS]))
    }

    pub(crate) fn new(mut inner: tokenizers::Tokenizer, bos: Option<u32>, eos: Vec<u32>) -> Self {
        inner.set_encode_special_tokens(true);
        let mut special: Vec<(String, u32)> = inner
            .get_added_tokens_decoder()
            .iter()
            .filter(|(_, t)| t.special && !t.content.is_empty())
            .map(|(id, t)| (t.content.clone(), *id))
            .collect();
        special.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.1.cmp(&b.1)));
        Self {
            inner: Arc::new(inner),
            bos,
            eos,
            chat_template: None,
            special: Arc::new(special),
        }
    }

    /// The same tokenizer with the model's Jinja chat template (as shipped in
    /// the GGUF metadata or `tokenizer_config.json`).
    pub fn with_chat_template(mut self, template: Option<String>) -> Self {
        self.chat_template = template.filter(|t| !t.trim().is_empty()).map(Arc::from);
        self
    }

    /// The model's chat template, if it ships one (base models usually do not).
    pub fn chat_template(&self) -> Option<&str> {
        self.chat_template.as_deref()
    }

    /// Ids of `text` with no special tokens added or parsed.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode_fast(text, false)
            .map_err(|e| ModelError::Tokenizer(e.to_string()))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Ids of `text` as [`TextTokenizer::encode`] gives them, with each
    /// token's byte range in `text` (to find where a string landed).
    pub fn encode_with_offsets(&self, text: &str) -> Result<(Vec<u32>, Vec<ByteSpan>)> {
        let enc = self
            .inner
            .encode(text, false)
            .map_err(|e| ModelError::Tokenizer(e.to_string()))?;
        Ok((enc.get_ids().to_vec(), enc.get_offsets().to_vec()))
    }

    /// Ids of text the model's own chat template produced: its special-token
    /// strings (`<start_of_turn>`, `<|im_start|>`, ...) become those tokens.
    /// Never for text a client wrote, which [`TextTokenizer::encode`] keeps
    /// as text.
    pub fn encode_template(&self, text: &str) -> Result<Vec<u32>> {
        let mut ids = Vec::new();
        let mut rest = text;
        loop {
            // The earliest special token; the longest of those starting there.
            let mut best: Option<(usize, usize, u32)> = None;
            for (s, id) in self.special.iter() {
                if let Some(at) = rest.find(s.as_str()) {
                    if best.is_none_or(|(b, _, _)| at < b) {
                        best = Some((at, s.len(), *id));
                    }
                }
            }
            let Some((at, len, id)) = best else {
                ids.extend(self.encode(rest)?);
                return Ok(ids);
            };
            ids.extend(self.encode(&rest[..at])?);
            ids.push(id);
            rest = &rest[at + len..];
        }
    }

    /// BOS (when the model uses one) followed by the ids of `text`.
    pub fn prompt_ids(&self, text: &str) -> Result<Vec<u32>> {
        let mut ids: Vec<u32> = self.bos.into_iter().collect();
        ids.extend(self.encode(text)?);
        Ok(ids)
    }

    /// Text of `ids`, special tokens dropped.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner
            .decode(ids, true)
            .map_err(|e| ModelError::Tokenizer(e.to_string()))
    }

    /// The id prepended to every prompt, if the model uses one.
    pub fn bos(&self) -> Option<u32> {
        self.bos
    }

    /// Ids that end generation.
    pub fn eos(&self) -> &[u32] {
        &self.eos
    }

    /// The token string of `id` (as stored in the vocabulary).
    pub fn token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// The bytes `id` stands for in generated text (see [`TokenPiece`]);
    /// empty for an id outside the vocabulary.
    pub fn token_bytes(&self, id: u32) -> Vec<u8> {
        self.token_piece(id).map(|p| p.bytes).unwrap_or_default()
    }

    /// What `id` stands for: a byte-fallback token's one byte (`<0x0A>`), a
    /// control token's own string (`<bos>`, `<end_of_turn>`: it decodes to
    /// no text), else its text with the word-start marker as the space it
    /// means (SentencePiece's `▁` is dropped by the decoder at the start of a
    /// text; here it is kept). `None` outside the vocabulary.
    pub fn token_piece(&self, id: u32) -> Option<TokenPiece> {
        let piece = self.inner.id_to_token(id)?;
        if let Some(byte) = byte_fallback(&piece) {
            return Some(TokenPiece::text(vec![byte]));
        }
        let text = self.inner.decode(&[id], true).unwrap_or_default();
        if text.is_empty() {
            return Some(TokenPiece {
                bytes: piece.into_bytes(),
                control: true,
            });
        }
        Some(TokenPiece::text(match piece.strip_prefix('\u{2581}') {
            Some(_) if !text.starts_with(' ') => format!(" {text}").into_bytes(),
            _ => text.into_bytes(),
        }))
    }
}

/// A token's bytes, and whether it is a control token rather than text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenPiece {
    /// Its text's bytes, or a control token's own string.
    pub bytes: Vec<u8>,
    /// It stands for no text.
    pub control: bool,
}

impl TokenPiece {
    fn text(bytes: Vec<u8>) -> Self {
        Self {
            bytes,
            control: false,
        }
    }
}

/// The byte of a `<0xHH>` piece.
fn byte_fallback(piece: &str) -> Option<u8> {
    let hex = piece.strip_prefix("<0x")?.strip_suffix('>')?;
    (hex.len() == 2)
        .then(|| u8::from_str_radix(hex, 16).ok())
        .flatten()
}

fn read_json(path: &Path) -> Result<Option<Value>> {
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(path).map_err(|source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| ModelError::Tokenizer(format!("{} is not valid JSON: {e}", path.display())))
}

fn ids_of(v: Option<&Value>) -> Vec<u32> {
    match v {
        Some(Value::Number(n)) => n.as_u64().map(|x| vec![x as u32]).unwrap_or_default(),
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|x| x.as_u64().map(|x| x as u32))
            .collect(),
        _ => Vec::new(),
    }
}

/// `tokenizer.json`, with BOS/EOS from `config.json` and `tokenizer_config.json`.
/// BOS of [`TextTokenizer::bytes`].
const BYTE_BOS: u32 = 256;
/// EOS of [`TextTokenizer::bytes`].
const BYTE_EOS: u32 = 257;

/// `tokenizer.json` of a byte-level BPE with no merges: each byte one token.
fn byte_level_json() -> String {
    let vocab: serde_json::Map<String, Value> = (0..=255u8)
        .map(|b| (byte_char(b).to_string(), Value::from(b)))
        .collect();
    let special = |id: u32, content: &str| {
        serde_json::json!({"id": id, "content": content, "single_word": false, "lstrip": false,
                           "rstrip": false, "normalized": false, "special": true})
    };
    let byte_level = serde_json::json!({"type": "ByteLevel", "add_prefix_space": false,
                                        "trim_offsets": false, "use_regex": false});
    serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null,
        "added_tokens": [special(BYTE_BOS, "<bos>"), special(BYTE_EOS, "<eos>")],
        "normalizer": null, "pre_tokenizer": byte_level, "post_processor": null,
        "decoder": byte_level,
        "model": {"type": "BPE", "dropout": null, "unk_token": null,
                  "continuing_subword_prefix": null, "end_of_word_suffix": null,
                  "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                  "vocab": vocab, "merges": []}
    })
    .to_string()
}

/// The printable character GPT-2's byte-level alphabet gives byte `b`.
fn byte_char(b: u8) -> char {
    let printable = |b: u8| matches!(b, 33..=126 | 161..=172 | 174..=255);
    if printable(b) {
        return char::from(b);
    }
    let shifted = (0..b).filter(|&x| !printable(x)).count() as u32;
    char::from_u32(256 + shifted).unwrap_or('?')
}

fn from_dir(dir: &Path) -> Result<TextTokenizer> {
    let file = dir.join("tokenizer.json");
    let inner = tokenizers::Tokenizer::from_file(&file)
        .map_err(|e| ModelError::Tokenizer(format!("cannot load {}: {e}", file.display())))?;
    let config = read_json(&dir.join("config.json"))?.unwrap_or(Value::Null);
    let config = config.get("text_config").cloned().unwrap_or(config);
    let tok_config = read_json(&dir.join("tokenizer_config.json"))?.unwrap_or(Value::Null);
    let model_type = config
        .get("model_type")
        .and_then(Value::as_str)
        .unwrap_or("");
    let add_bos = tok_config
        .get("add_bos_token")
        .and_then(Value::as_bool)
        .unwrap_or(!model_type.starts_with("qwen"));
    let bos = ids_of(config.get("bos_token_id")).first().copied();
    let eos = ids_of(config.get("eos_token_id"));
    Ok(TextTokenizer::new(inner, bos.filter(|_| add_bos), eos)
        .with_chat_template(dir_chat_template(dir, &tok_config)?))
}

/// `chat_template.jinja`, else `tokenizer_config.json`'s `chat_template`: a
/// string, or a list of named templates of which "default" is used.
fn dir_chat_template(dir: &Path, tok_config: &Value) -> Result<Option<String>> {
    let file = dir.join("chat_template.jinja");
    if file.is_file() {
        return std::fs::read_to_string(&file)
            .map(Some)
            .map_err(|source| ModelError::Io { path: file, source });
    }
    Ok(match tok_config.get("chat_template") {
        Some(Value::String(t)) => Some(t.clone()),
        Some(Value::Array(named)) => named
            .iter()
            .find(|t| t.get("name").and_then(Value::as_str) == Some("default"))
            .and_then(|t| t.get("template"))
            .and_then(Value::as_str)
            .map(str::to_string),
        _ => None,
    })
}
