//! Every limit a request is held to, and the one function that checks them.
//!
//! [`ValidRequest`] is the only thing the worker accepts, and only
//! [`Limits::validate`] builds one: the HTTP layer maps OpenAI's fields onto
//! a [`GenerateRequest`] and checks nothing itself, so a value is refused
//! with the same message whichever route it came by. Checks that need the
//! tokenizer (a context overflow) happen at admission, with the same
//! variants.

use prophetkv_reuse::ValidReuseConfig;

use crate::constrain::OutputConstraint;
use crate::error::DocumentBound;
use crate::logprobs::MAX_TOP_LOGPROBS;
use crate::request::{DocumentRef, GenerateRequest, PromptText, Segment, TextPiece};
use crate::sampling::SamplingParams;
use crate::{EngineError, Result};

/// Most stop strings a client may send (a prompt layout may add its own).
pub const MAX_STOP_STRINGS: usize = 8;
/// Most documents in one request unless configured otherwise
/// (`max_documents`).
pub const DEFAULT_MAX_DOCUMENTS: usize = 64;
/// Most documents registered in one call.
pub const MAX_REGISTRATIONS: usize = 256;
/// Most registered documents waiting for their caches; registering more
/// is refused (retry later) until the worker catches up.
pub const MAX_PENDING_DOCUMENTS: usize = 4096;
/// Most remembered precompute failures (when full, one is forgotten to make
/// room).
pub const MAX_REMEMBERED_FAILURES: usize = 4096;
/// Longest document id, in bytes.
pub const MAX_ID_BYTES: usize = 256;
/// Most documents in one page of a list (`limit`).
pub const MAX_LIST_LIMIT: usize = 100;
/// Documents in a page when the client names no `limit` (OpenAI's default).
pub const DEFAULT_LIST_LIMIT: usize = 20;
/// Highest sampling temperature.
pub const MAX_TEMPERATURE: f32 = 2.0;
/// Presence and frequency penalties lie within ± this (OpenAI's range).
pub const MAX_PENALTY: f32 = 2.0;
/// Logit biases lie within ± this (OpenAI's range).
pub const MAX_LOGIT_BIAS: f32 = 100.0;
/// Most tokens one request may bias.
pub const MAX_LOGIT_BIAS_TOKENS: usize = 1024;

/// What requests are checked against: the constants above, the configured
/// document limits, and the served model's shape. The context length is
/// checked at admission, once the prompt is tokenized.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Layers of the model (score layers must exist).
    pub num_layers: usize,
    /// Logits per step: token ids (of `logit_bias`, a prompt) are below it.
    pub vocab_size: usize,
    /// The model's context, in tokens.
    pub context: usize,
    /// Tokens of the anchor (BOS + instruction) every request starts with.
    pub anchor: usize,
    /// Most documents in one request (`max_documents`).
    pub max_documents: usize,
    /// Most tokens in one document as configured (`max_document_tokens`);
    /// 0: only the context bounds it.
    pub document_tokens: usize,
    /// Whether documents are cached right after the anchor, so that a
    /// request's first document is exact and kept out of the recompute.
    /// False when the store computes them behind a preamble: then no
    /// document is exact, and every one is eligible.
    pub first_document_exact: bool,
}

/// A request that passed [`Limits::validate`]: the only thing
/// [`crate::EngineHandle::submit`] accepts.
#[derive(Debug, Clone)]
pub struct ValidRequest {
    pub(crate) tenant: String,
    pub(crate) segments: Vec<Segment>,
    pub(crate) query: PromptText,
    pub(crate) reuse: ValidReuseConfig,
    pub(crate) sampling: SamplingParams,
    pub(crate) max_tokens: usize,
    pub(crate) stop: Vec<String>,
    pub(crate) layout_stop: Option<String>,
    pub(crate) constraint: Option<OutputConstraint>,
    pub(crate) explain: bool,
}

impl Limits {
    /// Checks every field that does not need the tokenizer, naming the field.
    pub fn validate(&self, request: GenerateRequest) -> Result<ValidRequest> {
        check_sampling(&request.sampling, self.vocab_size)?;
        if request.max_tokens == 0 {
            return Err(EngineError::invalid("max_tokens", "must be at least 1"));
        }
        if request.stop.len() > MAX_STOP_STRINGS {
            return Err(EngineError::invalid(
                "stop",
                format!(
                    "at most {MAX_STOP_STRINGS} stop strings, got {}",
                    request.stop.len()
                ),
            ));
        }
        if request.query.is_empty() {
            return Err(EngineError::invalid("prompt", "must not be empty"));
        }
        self.check_documents(&request.segments)?;
        self.check_prompt_ids(&request.query)?;
        let mut reuse = request.reuse;
        reuse.first_doc_eligible |= !self.first_document_exact;
        let reuse = reuse.validate(self.num_layers)?;
        Ok(ValidRequest {
            tenant: request.tenant,
            segments: request.segments,
            query: request.query,
            reuse,
            sampling: request.sampling,
            max_tokens: request.max_tokens,
            stop: request.stop,
            layout_stop: request.layout_stop,
            constraint: request.constraint,
            explain: request.explain,
        })
    }
}

impl Limits {
    /// Most tokens one document may have, and what sets it: the configured
    /// `max_document_tokens`, or the context less the anchor, one token of
    /// question and one to generate, whichever is lower.
    pub fn max_document_tokens(&self) -> (usize, DocumentBound) {
        let fits = self.context.saturating_sub(self.anchor + 2);
        if self.document_tokens > 0 && self.document_tokens < fits {
            (self.document_tokens, DocumentBound::Configured)
        } else {
            (fits, DocumentBound::Context(self.context))
        }
    }

    /// Refuses a document (to register) of `tokens` tokens beyond
    /// [`Self::max_document_tokens`].
    pub fn check_document_length(&self, index: usize, tokens: usize) -> Result<()> {
        self.check_length("text", index, tokens, self.max_document_tokens())
    }

    /// Refuses a request's inline document of `tokens` tokens beyond the
    /// configured `max_document_tokens` (one beyond the context is the
    /// context check's, at admission).
    pub fn check_inline_document_length(&self, index: usize, tokens: usize) -> Result<()> {
        match self.document_tokens {
            0 => Ok(()),
            max => self.check_length("documents", index, tokens, (max, DocumentBound::Configured)),
        }
    }

    fn check_length(
        &self,
        field: &'static str,
        index: usize,
        tokens: usize,
        (max, bound): (usize, DocumentBound),
    ) -> Result<()> {
        if tokens > max {
            return Err(EngineError::DocumentTooLong {
                field,
                index,
                tokens,
                max,
                bound,
            });
        }
        Ok(())
    }

    /// At most `max_documents` documents, each with a valid id or text.
    fn check_documents(&self, segments: &[Segment]) -> Result<()> {
        let documents: Vec<&DocumentRef> = segments
            .iter()
            .filter_map(|s| match s {
                Segment::Document(d) => Some(d),
                Segment::Fresh(_) => None,
            })
            .collect();
        if documents.len() > self.max_documents {
            return Err(EngineError::invalid(
                "documents",
                format!(
                    "at most {} documents per request (max_documents), got {}",
                    self.max_documents,
                    documents.len()
                ),
            ));
        }
        for (index, document) in documents.into_iter().enumerate() {
            match document {
                DocumentRef::Id(id) => check_document_id(index, id)?,
                DocumentRef::Text(text) => check_document_text(index, text)?,
            }
        }
        Ok(())
    }

    /// Token ids a client sent as its prompt must be in the vocabulary.
    fn check_prompt_ids(&self, query: &PromptText) -> Result<()> {
        for piece in &query.0 {
            if let TextPiece::Ids(ids) = piece {
                self.check_token_ids("prompt", ids)?;
            }
        }
        Ok(())
    }

    /// Every one of `ids` (the client's `field`) must be in the vocabulary.
    pub(crate) fn check_token_ids(&self, field: &'static str, ids: &[u32]) -> Result<()> {
        ids.iter()
            .try_for_each(|&id| check_token_id(field, id, self.vocab_size))
    }
}

/// A token id a client sent must be below the vocabulary size.
fn check_token_id(field: &'static str, id: u32, vocab_size: usize) -> Result<()> {
    if id as usize >= vocab_size {
        return Err(EngineError::invalid(
            field,
            format!("token id {id} is not below the vocabulary size {vocab_size}"),
        ));
    }
    Ok(())
}

fn check_sampling(s: &SamplingParams, vocab_size: usize) -> Result<()> {
    if !(0.0..=MAX_TEMPERATURE).contains(&s.temperature) || s.temperature.is_nan() {
        return Err(EngineError::invalid(
            "temperature",
            format!(
                "must be within [0, {MAX_TEMPERATURE}], got {}",
                s.temperature
            ),
        ));
    }
    if !(s.top_p > 0.0 && s.top_p <= 1.0) {
        return Err(EngineError::invalid(
            "top_p",
            format!("must be within (0, 1], got {}", s.top_p),
        ));
    }
    for (field, value) in [
        ("presence_penalty", s.presence_penalty),
        ("frequency_penalty", s.frequency_penalty),
    ] {
        if !(-MAX_PENALTY..=MAX_PENALTY).contains(&value) {
            return Err(EngineError::invalid(
                field,
                format!("must be within [-{MAX_PENALTY}, {MAX_PENALTY}], got {value}"),
            ));
        }
    }
    check_logit_bias(&s.logit_bias, vocab_size)?;
    if let Some(n) = s.logprobs.filter(|&n| n > MAX_TOP_LOGPROBS) {
        return Err(EngineError::invalid(
            "top_logprobs",
            format!("must be within [0, {MAX_TOP_LOGPROBS}], got {n}"),
        ));
    }
    Ok(())
}

fn check_logit_bias(bias: &[(u32, f32)], vocab_size: usize) -> Result<()> {
    if bias.len() > MAX_LOGIT_BIAS_TOKENS {
        return Err(EngineError::invalid(
            "logit_bias",
            format!("at most {MAX_LOGIT_BIAS_TOKENS} tokens, got {}", bias.len()),
        ));
    }
    for &(id, value) in bias {
        check_token_id("logit_bias", id, vocab_size)?;
        if !(-MAX_LOGIT_BIAS..=MAX_LOGIT_BIAS).contains(&value) {
            return Err(EngineError::invalid(
                "logit_bias",
                format!(
                    "the bias of token {id} must be within [-{MAX_LOGIT_BIAS}, {MAX_LOGIT_BIAS}], got {value}"
                ),
            ));
        }
    }
    Ok(())
}

/// A document's text must not be empty; `index` is its place in the request.
pub fn check_document_text(index: usize, text: &str) -> Result<()> {
    if text.is_empty() {
        return Err(EngineError::invalid(
            "documents",
            format!("documents[{index}].text is empty"),
        ));
    }
    Ok(())
}

/// A document id is 1 to [`MAX_ID_BYTES`] bytes without NUL.
pub fn check_document_id(index: usize, id: &str) -> Result<()> {
    if id.is_empty() || id.len() > MAX_ID_BYTES || id.contains('\0') {
        return Err(EngineError::invalid(
            "documents",
            format!("documents[{index}].id must be 1-{MAX_ID_BYTES} bytes without NUL"),
        ));
    }
    Ok(())
}

/// The page size of a document list: `limit` if given and within
/// 1..=[`MAX_LIST_LIMIT`], else [`DEFAULT_LIST_LIMIT`].
pub fn check_list_limit(limit: Option<usize>) -> Result<usize> {
    match limit {
        None => Ok(DEFAULT_LIST_LIMIT),
        Some(n) if (1..=MAX_LIST_LIMIT).contains(&n) => Ok(n),
        Some(n) => Err(EngineError::invalid(
            "limit",
            format!("must be within [1, {MAX_LIST_LIMIT}], got {n}"),
        )),
    }
}

/// An empty tokenization of non-empty text (e.g. only characters the
/// vocabulary drops) is refused like empty text.
pub(crate) fn no_tokens(index: usize) -> EngineError {
    EngineError::invalid(
        "documents",
        format!("documents[{index}].text has no tokens"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::DocumentRef;
    use prophetkv_reuse::ReuseConfig;

    fn request() -> GenerateRequest {
        GenerateRequest {
            tenant: "t".into(),
            segments: vec![Segment::Document(DocumentRef::Id("a".into()))],
            query: "q".into(),
            reuse: ReuseConfig::default(),
            sampling: SamplingParams::default(),
            max_tokens: 4,
            stop: vec![],
            layout_stop: Some("\nUser:".into()),
            constraint: None,
            explain: false,
        }
    }

    const LIMITS: Limits = Limits {
        num_layers: 2,
        vocab_size: 100,
        context: 64,
        anchor: 4,
        max_documents: DEFAULT_MAX_DOCUMENTS,
        document_tokens: 0,
        first_document_exact: true,
    };

    fn field_of(r: GenerateRequest) -> &'static str {
        match LIMITS.validate(r).unwrap_err() {
            EngineError::Invalid { field, .. } => field,
            EngineError::Reuse(_) => "kv_reuse",
            other => panic!("unexpected {other}"),
        }
    }

    #[test]
    fn a_valid_request_keeps_its_stops_and_the_layouts() {
        let mut r = request();
        r.stop = vec!["###".into()];
        let valid = LIMITS.validate(r).unwrap();
        assert_eq!(valid.stop, vec!["###".to_string()]);
        assert_eq!(valid.layout_stop.as_deref(), Some("\nUser:"));
    }

    #[test]
    fn each_limit_names_its_field() {
        let mut r = request();
        r.max_tokens = 0;
        assert_eq!(field_of(r), "max_tokens");
        let mut r = request();
        r.stop = vec!["x".into(); MAX_STOP_STRINGS + 1];
        assert_eq!(field_of(r), "stop");
        let mut r = request();
        r.sampling.temperature = 2.5;
        assert_eq!(field_of(r), "temperature");
        let mut r = request();
        r.sampling.top_p = 0.0;
        assert_eq!(field_of(r), "top_p");
        let mut r = request();
        r.query = "".into();
        assert_eq!(field_of(r), "prompt");
        let mut r = request();
        r.segments = vec![Segment::Document(DocumentRef::Text(String::new()))];
        assert_eq!(field_of(r), "documents");
        let mut r = request();
        r.segments =
            vec![Segment::Document(DocumentRef::Id("a".into())); DEFAULT_MAX_DOCUMENTS + 1];
        assert_eq!(field_of(r), "documents");
        let mut r = request();
        r.reuse.ratio = 1.5;
        assert_eq!(field_of(r), "kv_reuse");
        let mut r = request();
        r.sampling.frequency_penalty = 5.0;
        assert_eq!(field_of(r), "frequency_penalty");
        let mut r = request();
        r.sampling.presence_penalty = -2.5;
        assert_eq!(field_of(r), "presence_penalty");
        let mut r = request();
        r.sampling.logit_bias = vec![(100, 1.0)];
        assert_eq!(field_of(r), "logit_bias");
        let mut r = request();
        r.sampling.logit_bias = vec![(5, 101.0)];
        assert_eq!(field_of(r), "logit_bias");
        let mut r = request();
        r.sampling.logprobs = Some(21);
        assert_eq!(field_of(r), "top_logprobs");
        let mut r = request();
        r.query = PromptText(vec![TextPiece::Ids(vec![1, 100])]);
        assert_eq!(field_of(r), "prompt");
    }

    #[test]
    fn a_document_is_refused_only_when_no_request_could_hold_it() {
        assert_eq!(
            LIMITS.max_document_tokens(),
            (58, DocumentBound::Context(64))
        );
        assert!(LIMITS.check_document_length(0, 58).is_ok());
        assert!(LIMITS.check_inline_document_length(0, 500).is_ok());
        let refused = LIMITS.check_document_length(3, 59).unwrap_err();
        assert!(matches!(
            refused,
            EngineError::DocumentTooLong {
                field: "text",
                index: 3,
                tokens: 59,
                max: 58,
                bound: DocumentBound::Context(64)
            }
        ));
        assert!(refused.to_string().contains("context"), "{refused}");
    }

    #[test]
    fn a_configured_document_limit_applies_to_registered_and_inline_documents() {
        let limits = Limits {
            document_tokens: 20,
            ..LIMITS
        };
        assert_eq!(
            limits.max_document_tokens(),
            (20, DocumentBound::Configured)
        );
        assert!(limits.check_document_length(0, 20).is_ok());
        let refused = limits.check_inline_document_length(2, 21).unwrap_err();
        assert!(matches!(
            refused,
            EngineError::DocumentTooLong {
                field: "documents",
                index: 2,
                tokens: 21,
                max: 20,
                bound: DocumentBound::Configured
            }
        ));
        let message = refused.to_string();
        assert!(
            message.contains("max_document_tokens")
                && message.contains("21")
                && message.contains("20"),
            "{message}"
        );
        // Above the context, the context is the bound.
        let loose = Limits {
            document_tokens: 1000,
            ..LIMITS
        };
        assert_eq!(
            loose.max_document_tokens(),
            (58, DocumentBound::Context(64))
        );
    }

    #[test]
    fn the_first_document_is_eligible_exactly_when_documents_sit_behind_a_preamble() {
        let exact = LIMITS.validate(request()).unwrap();
        assert!(!exact.reuse.first_doc_eligible);
        let behind = Limits {
            first_document_exact: false,
            ..LIMITS
        };
        assert!(behind.validate(request()).unwrap().reuse.first_doc_eligible);
        // A request may already ask for it; an exact store keeps the ask.
        let mut asked = request();
        asked.reuse.first_doc_eligible = true;
        assert!(LIMITS.validate(asked).unwrap().reuse.first_doc_eligible);
    }

    #[test]
    fn the_configured_number_of_documents_is_the_limit_and_is_named() {
        let limits = Limits {
            max_documents: 2,
            ..LIMITS
        };
        let mut r = request();
        r.segments = vec![Segment::Document(DocumentRef::Id("a".into())); 2];
        assert!(limits.validate(r.clone()).is_ok());
        r.segments
            .push(Segment::Document(DocumentRef::Id("b".into())));
        let message = limits.validate(r).unwrap_err().to_string();
        assert!(
            message.contains("max_documents")
                && message.contains("at most 2")
                && message.contains("got 3"),
            "{message}"
        );
    }

    #[test]
    fn the_layouts_stop_does_not_count_against_the_clients_limit() {
        let mut r = request();
        r.stop = vec!["x".into(); MAX_STOP_STRINGS];
        assert!(LIMITS.validate(r).is_ok());
    }
}
