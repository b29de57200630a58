//! Every limit a request is held to, and the one function that checks them.
//!
//! [`ValidRequest`] is the only thing the worker accepts, and only
//! [`Limits::validate`] builds one: the HTTP layer maps OpenAI's fields onto
//! a [`GenerateRequest`] and checks nothing itself, so a value is refused
//! with the same message whichever route it came by. Checks that need the
//! tokenizer (a context overflow) happen at admission, with the same
//! variants.

use prophetkv_reuse::ValidReuseConfig;

use crate::request::{DocumentRef, GenerateRequest, PromptText, Segment};
use crate::sampling::SamplingParams;
use crate::{EngineError, Result};

/// Most stop strings a client may send (a prompt layout may add its own).
pub const MAX_STOP_STRINGS: usize = 8;
/// Most documents in one request.
pub const MAX_DOCUMENTS: usize = 64;
/// Most documents registered in one call.
pub const MAX_REGISTRATIONS: usize = 256;
/// Longest document id, in bytes.
pub const MAX_ID_BYTES: usize = 256;
/// Most documents in one page of a list (`limit`).
pub const MAX_LIST_LIMIT: usize = 100;
/// Documents in a page when the client names no `limit` (OpenAI's default).
pub const DEFAULT_LIST_LIMIT: usize = 20;
/// Highest sampling temperature.
pub const MAX_TEMPERATURE: f32 = 2.0;

/// What requests are checked against: the constants above plus the served
/// model's shape. The context length is checked at admission, once the
/// prompt is tokenized.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Layers of the model (score layers must exist).
    pub num_layers: usize,
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
}

impl Limits {
    /// Checks every field that does not need the tokenizer, naming the field.
    pub fn validate(&self, request: GenerateRequest) -> Result<ValidRequest> {
        check_sampling(&request.sampling)?;
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
        check_documents(&request.segments)?;
        let reuse = request.reuse.validate(self.num_layers)?;
        Ok(ValidRequest {
            tenant: request.tenant,
            segments: request.segments,
            query: request.query,
            reuse,
            sampling: request.sampling,
            max_tokens: request.max_tokens,
            stop: request
                .stop
                .into_iter()
                .chain(request.layout_stop)
                .collect(),
        })
    }
}

fn check_sampling(s: &SamplingParams) -> Result<()> {
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
    Ok(())
}

fn check_documents(segments: &[Segment]) -> Result<()> {
    let documents: Vec<&DocumentRef> = segments
        .iter()
        .filter_map(|s| match s {
            Segment::Document(d) => Some(d),
            Segment::Fresh(_) => None,
        })
        .collect();
    if documents.len() > MAX_DOCUMENTS {
        return Err(EngineError::invalid(
            "documents",
            format!("at most {MAX_DOCUMENTS} documents, got {}", documents.len()),
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
        }
    }

    const LIMITS: Limits = Limits { num_layers: 2 };

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
        assert_eq!(valid.stop, vec!["###".to_string(), "\nUser:".to_string()]);
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
        r.segments = vec![Segment::Document(DocumentRef::Id("a".into())); MAX_DOCUMENTS + 1];
        assert_eq!(field_of(r), "documents");
        let mut r = request();
        r.reuse.ratio = 1.5;
        assert_eq!(field_of(r), "kv_reuse");
    }

    #[test]
    fn the_layouts_stop_does_not_count_against_the_clients_limit() {
        let mut r = request();
        r.stop = vec!["x".into(); MAX_STOP_STRINGS];
        assert!(LIMITS.validate(r).is_ok());
    }
}
