//! Constrained decoding: a request's output held to a JSON schema or a
//! grammar, by masking every token that would leave it (llguidance's
//! matcher, one per sequence, inside the batched decode step).
//!
//! The vocabulary is handed to llguidance as the bytes each token stands
//! for (control tokens marked as such), built once: 2.2 s for a 262k-token
//! vocabulary, so the engine starts building it in the background when it
//! starts, and the first request that needs it waits only for what is left.

use std::sync::{Arc, OnceLock};

use llguidance::api::TopLevelGrammar;
use llguidance::toktrie::{ApproximateTokEnv, SimpleVob, TokEnv, TokRxInfo, TokTrie};
use llguidance::{Matcher, ParserFactory};
use prophetkv_model::{TextTokenizer, TokenPiece};
use serde_json::Value;

use crate::{EngineError, Result};

/// What a request's output must be.
#[derive(Debug, Clone, PartialEq)]
pub enum OutputConstraint {
    /// Any JSON object.
    JsonObject,
    /// JSON valid under this schema.
    JsonSchema(Value),
    /// Text of this Lark grammar (llguidance's dialect, which embeds JSON
    /// schemas with `%json`).
    Lark(String),
}

impl OutputConstraint {
    fn grammar(&self) -> TopLevelGrammar {
        match self {
            OutputConstraint::JsonObject => TopLevelGrammar::from_json_schema(compact_json_schema(
                serde_json::json!({"type": "object"}),
            )),
            OutputConstraint::JsonSchema(schema) => {
                TopLevelGrammar::from_json_schema(compact_json_schema(schema.clone()))
            }
            OutputConstraint::Lark(grammar) => TopLevelGrammar::from_lark(grammar.clone()),
        }
    }
}

/// `schema` with JSON written one way, `{"a": 1, "b": [2, 3]}`, unless it
/// says otherwise (`x-guidance`): free whitespace lets a small model loop
/// on blank lines until `max_tokens`.
pub fn compact_json_schema(mut schema: Value) -> Value {
    if let Value::Object(map) = &mut schema {
        map.entry("x-guidance").or_insert_with(|| {
            serde_json::json!({
                "whitespace_flexible": false,
                "item_separator": ", ",
                "key_separator": ": ",
            })
        });
    }
    schema
}

/// Builds matchers for the served vocabulary (built on first use).
pub(crate) struct Grammars {
    tokenizer: TextTokenizer,
    vocab_size: usize,
    factory: OnceLock<std::result::Result<ParserFactory, String>>,
}

impl Grammars {
    /// For `tokenizer`'s vocabulary, `vocab_size` logits wide.
    pub(crate) fn new(tokenizer: TextTokenizer, vocab_size: usize) -> Self {
        Self {
            tokenizer,
            vocab_size,
            factory: OnceLock::new(),
        }
    }

    /// Builds the vocabulary's parser factory now (idempotent; callers
    /// racing it wait for the one build).
    pub(crate) fn prepare(&self) {
        let _ = self.factory();
    }

    fn factory(&self) -> Result<&ParserFactory> {
        self.factory
            .get_or_init(|| {
                let env = token_env(&self.tokenizer, self.vocab_size);
                let mut factory = ParserFactory::new_simple(&env).map_err(|e| e.to_string())?;
                factory.quiet();
                Ok(factory)
            })
            .as_ref()
            .map_err(|e| EngineError::Worker(format!("constrained decoding: {e}")))
    }

    /// A matcher at the start of `constraint`; a schema or grammar that does
    /// not compile is the client's error, naming `field`.
    pub(crate) fn start(
        &self,
        constraint: &OutputConstraint,
        field: &'static str,
    ) -> Result<Constraint> {
        let parser = self.factory()?.create_parser(constraint.grammar());
        let matcher = Matcher::new(parser);
        if let Some(e) = matcher.get_error() {
            return Err(EngineError::invalid(field, e));
        }
        Ok(Constraint { matcher, field })
    }
}

/// The vocabulary as llguidance sees it: each id's bytes, a control token's
/// string behind the marker byte, ids past the tokenizer's vocabulary empty.
fn token_env(tokenizer: &TextTokenizer, vocab_size: usize) -> TokEnv {
    let words: Vec<Vec<u8>> = (0..vocab_size as u32)
        .map(|id| match tokenizer.token_piece(id) {
            Some(TokenPiece {
                bytes,
                control: true,
            }) => {
                let mut marked = vec![TokTrie::SPECIAL_TOKEN_MARKER];
                marked.extend(bytes);
                marked
            }
            Some(piece) => piece.bytes,
            None => Vec::new(),
        })
        .collect();
    let eos = tokenizer.eos().first().copied().unwrap_or(0);
    let info = TokRxInfo::new(vocab_size as u32, eos);
    let trie = TokTrie::from(&info, &words).with_eos_tokens(tokenizer.eos());
    Arc::new(ApproximateTokEnv::new(trie))
}

/// One sequence's place in its grammar.
pub(crate) struct Constraint {
    matcher: Matcher,
    /// The request field the grammar came from (`response_format`, `tools`).
    field: &'static str,
}

impl Constraint {
    /// Sets the logits of tokens the grammar does not allow next to -∞
    /// (only end-of-sequence once the output is complete).
    pub(crate) fn mask(&mut self, logits: &mut [f32]) -> Result<()> {
        let allowed: SimpleVob = match self.matcher.compute_mask_or_eos() {
            Ok(allowed) if allowed.num_set() > 0 => allowed,
            Ok(_) => return Err(self.cannot_continue("no token allowed")),
            Err(e) => return Err(self.cannot_continue(&e.to_string())),
        };
        allowed.iter_unset_entries(|id| {
            if let Some(logit) = logits.get_mut(id) {
                *logit = f32::NEG_INFINITY;
            }
        });
        Ok(())
    }

    /// The request's constraint cannot go on in the served vocabulary (a
    /// model whose tokens cannot spell what it requires next, or a grammar
    /// too complex to follow): the client's to change, naming its field.
    /// llguidance's reason is its first line (the rest is a state dump).
    fn cannot_continue(&self, reason: &str) -> EngineError {
        let reason = reason.lines().next().unwrap_or_default();
        EngineError::invalid(
            self.field,
            format!(
                "no token of the served model's vocabulary continues the output it allows ({reason})"
            ),
        )
    }

    /// Advances past `token` (not end-of-sequence).
    pub(crate) fn accept(&mut self, token: u32) -> Result<()> {
        self.matcher
            .consume_token(token)
            .map_err(|e| EngineError::Worker(format!("constrained decoding: {e}")))
    }

    /// Whether the output is complete and nothing more may follow.
    pub(crate) fn is_finished(&self) -> bool {
        self.matcher.is_stopped()
    }
}
