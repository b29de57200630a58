//! Text deltas with stop strings held back: a stop string is never emitted,
//! and text that could still become one waits until it cannot.
//!
//! The stream keeps only the text not emitted yet, which is never longer
//! than the longest stop string plus the newest delta, so each token costs
//! the same however long the answer grows.

/// The unemitted tail of one sequence's text.
#[derive(Debug, Clone, Default)]
pub struct TextStream {
    stops: Vec<String>,
    /// A stop that the prompt layout added: the start of the next turn.
    layout_stop: Option<String>,
    pending: String,
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
            layout_stop: None,
            pending: String::new(),
        }
    }

    /// Also stops at the layout's `stop` (e.g. "\nUser:"); when generation
    /// is cut off while a beginning of it is held back, that beginning is
    /// the next turn starting, not answer text, and is dropped.
    pub fn with_layout_stop(mut self, stop: Option<String>) -> Self {
        if let Some(stop) = stop.filter(|s| !s.is_empty()) {
            self.stops.push(stop.clone());
            self.layout_stop = Some(stop);
        }
        self
    }

    /// Appends newly decoded text; returns what can be emitted now.
    ///
    /// Emitted text never ends in a proper prefix of a stop string, so a
    /// stop always begins inside the pending tail, and searching that tail
    /// alone finds every stop a search of the whole text would.
    pub fn push(&mut self, delta: &str) -> Delta {
        self.pending.push_str(delta);
        if let Some(at) = self
            .stops
            .iter()
            .filter_map(|s| self.pending.find(s.as_str()))
            .min()
        {
            let out = self.pending[..at].to_string();
            self.pending.clear();
            return Delta::Stopped(out);
        }
        // The longest suffix that is a proper prefix of some stop string.
        let mut hold = 0;
        for stop in &self.stops {
            for (i, _) in stop.char_indices().skip(1) {
                if self.pending.ends_with(&stop[..i]) {
                    hold = hold.max(i);
                }
            }
        }
        let safe = self.pending.len() - hold;
        Delta::Text(self.pending.drain(..safe).collect())
    }

    /// Whatever is still held back, at the end of generation, unless it is
    /// the beginning of the layout's stop.
    pub fn finish(&mut self) -> String {
        let pending = std::mem::take(&mut self.pending);
        match &self.layout_stop {
            Some(stop) if stop.starts_with(&pending) => String::new(),
            _ => pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_string_is_never_emitted_even_across_tokens() {
        let mut s = TextStream::new(vec!["\n\n".into()]);
        assert_eq!(s.push("The code"), Delta::Text("The code".into()));
        assert_eq!(s.push(" is 42.\n"), Delta::Text(" is 42.".into()));
        assert_eq!(s.push("\nMore"), Delta::Stopped(String::new()));
    }

    #[test]
    fn a_held_back_prefix_is_released_when_it_does_not_become_a_stop() {
        let mut s = TextStream::new(vec!["END".into()]);
        assert_eq!(s.push("abc EN"), Delta::Text("abc ".into()));
        assert_eq!(s.push("x"), Delta::Text("ENx".into()));
        assert_eq!(s.finish(), "");
    }

    #[test]
    fn held_back_text_comes_out_at_the_end() {
        let mut s = TextStream::new(vec!["END".into()]);
        assert_eq!(s.push("abc E"), Delta::Text("abc ".into()));
        assert_eq!(s.finish(), "E");
    }

    #[test]
    fn a_cut_off_beginning_of_the_layouts_stop_is_dropped_but_a_clients_is_not() {
        let mut s = TextStream::new(vec!["###".into()]).with_layout_stop(Some("\nUser:".into()));
        assert_eq!(s.push("Paris.\nUser"), Delta::Text("Paris.".into()));
        assert_eq!(s.finish(), "");
        assert_eq!(s.push("x\nUser:"), Delta::Stopped("x".into()));
        let mut s = TextStream::new(vec!["###".into()]).with_layout_stop(Some("\nUser:".into()));
        assert_eq!(s.push("a #"), Delta::Text("a ".into()));
        assert_eq!(s.finish(), "#");
    }

    #[test]
    fn text_before_a_stop_in_the_same_step_is_emitted() {
        let mut s = TextStream::new(vec!["###".into()]);
        assert_eq!(s.push("answer ### rest"), Delta::Stopped("answer ".into()));
    }

    #[test]
    fn pushing_in_pieces_emits_what_one_push_of_the_whole_text_would() {
        let text = "alpha END beta ENDING gamma";
        for stops in [vec![], vec!["ENDI".to_string()], vec!["gam".to_string()]] {
            let mut whole = TextStream::new(stops.clone());
            let expected = match whole.push(text) {
                Delta::Text(t) => t + &whole.finish(),
                Delta::Stopped(t) => t,
            };
            let mut pieces = TextStream::new(stops);
            let mut got = String::new();
            let mut stopped = false;
            for piece in text.split_inclusive(' ') {
                match pieces.push(piece) {
                    Delta::Text(t) => got.push_str(&t),
                    Delta::Stopped(t) => {
                        got.push_str(&t);
                        stopped = true;
                        break;
                    }
                }
            }
            if !stopped {
                got.push_str(&pieces.finish());
            }
            assert_eq!(got, expected);
        }
    }
}
