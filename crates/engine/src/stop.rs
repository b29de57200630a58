//! Turning generated ids into text deltas, holding back what could still
//! become a stop string (stop strings are never emitted) or an incomplete
//! UTF-8 character.

/// Incremental text of one sequence.
#[derive(Debug, Clone, Default)]
pub struct TextStream {
    stops: Vec<String>,
    emitted: usize,
}

/// What a new piece of text means for the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delta {
    /// Text safe to emit now (may be empty).
    Text(String),
    /// A stop string matched: emit this last text and finish.
    Stopped(String),
}

impl TextStream {
    /// A stream that stops at any of `stops` (empty strings are ignored).
    pub fn new(stops: Vec<String>) -> Self {
        Self {
            stops: stops.into_iter().filter(|s| !s.is_empty()).collect(),
            emitted: 0,
        }
    }

    /// Given the whole decoded text so far, the part that can be emitted now.
    pub fn advance(&mut self, text: &str) -> Delta {
        if let Some(at) = self
            .stops
            .iter()
            .filter_map(|s| text.find(s.as_str()))
            .min()
        {
            let out = text.get(self.emitted..at).unwrap_or_default().to_string();
            self.emitted = at.max(self.emitted);
            return Delta::Stopped(out);
        }
        // Hold back an incomplete character and any suffix that starts a stop string.
        let visible = text.trim_end_matches('\u{FFFD}').len();
        // The longest suffix that is a proper prefix of some stop string.
        let mut hold = 0;
        for stop in &self.stops {
            for (i, _) in stop.char_indices().skip(1) {
                if text[..visible].ends_with(&stop[..i]) {
                    hold = hold.max(i);
                }
            }
        }
        let safe = visible - hold;
        if safe <= self.emitted || !text.is_char_boundary(safe) {
            return Delta::Text(String::new());
        }
        let out = text[self.emitted..safe].to_string();
        self.emitted = safe;
        Delta::Text(out)
    }

    /// Whatever is still held back, at the end of generation.
    pub fn finish(&mut self, text: &str) -> String {
        let end = text.trim_end_matches('\u{FFFD}').len();
        let out = text.get(self.emitted..end).unwrap_or_default().to_string();
        self.emitted = end.max(self.emitted);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_string_is_never_emitted_even_across_tokens() {
        let mut s = TextStream::new(vec!["\n\n".into()]);
        assert_eq!(s.advance("The code"), Delta::Text("The code".into()));
        assert_eq!(
            s.advance("The code is 42.\n"),
            Delta::Text(" is 42.".into())
        );
        assert_eq!(
            s.advance("The code is 42.\n\nMore"),
            Delta::Stopped(String::new())
        );
    }

    #[test]
    fn a_held_back_prefix_is_released_when_it_does_not_become_a_stop() {
        let mut s = TextStream::new(vec!["END".into()]);
        assert_eq!(s.advance("abc EN"), Delta::Text("abc ".into()));
        assert_eq!(s.advance("abc ENx"), Delta::Text("ENx".into()));
        assert_eq!(s.finish("abc ENx"), "");
    }

    #[test]
    fn incomplete_characters_wait_for_their_last_byte() {
        let mut s = TextStream::new(vec![]);
        assert_eq!(s.advance("caf\u{FFFD}"), Delta::Text("caf".into()));
        assert_eq!(s.advance("café"), Delta::Text("é".into()));
    }

    #[test]
    fn text_before_a_stop_in_the_same_step_is_emitted() {
        let mut s = TextStream::new(vec!["###".into()]);
        assert_eq!(
            s.advance("answer ### rest"),
            Delta::Stopped("answer ".into())
        );
    }
}
