//! Decoding a growing list of generated ids into text, a token at a time.
//!
//! Decoding the whole answer again for every token costs time that grows
//! with the answer (quadratic overall). Instead only a short window is
//! decoded: the tokens since the last emitted boundary, with one earlier
//! token as context (a tokenizer may render a token differently at the
//! start of a text, e.g. without its leading space), and the new text is
//! what the window adds to the context's text. Text ending in an incomplete
//! UTF-8 character (U+FFFD) waits for the next token.

use prophetkv_model::TextTokenizer;

use crate::Result;

/// Incremental detokenizer of one sequence.
#[derive(Debug, Clone, Default)]
pub struct IncrementalDecoder {
    ids: Vec<u32>,
    /// Start of the context window.
    prefix: usize,
    /// End of the text already returned.
    read: usize,
}

impl IncrementalDecoder {
    /// Appends `id`; returns the text it completes (often empty mid-character).
    pub fn push(&mut self, tokenizer: &TextTokenizer, id: u32) -> Result<String> {
        self.ids.push(id);
        let before = tokenizer.decode(&self.ids[self.prefix..self.read])?;
        let now = tokenizer.decode(&self.ids[self.prefix..])?;
        if now.len() <= before.len() || now.ends_with('\u{FFFD}') {
            return Ok(String::new());
        }
        let Some(new) = now.get(before.len()..) else {
            return Ok(String::new());
        };
        let new = new.to_string();
        self.prefix = self.read;
        self.read = self.ids.len();
        Ok(new)
    }

    /// Every id pushed so far.
    pub fn ids(&self) -> &[u32] {
        &self.ids
    }
}
