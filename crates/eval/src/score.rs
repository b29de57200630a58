//! Scoring a prediction against a task's answers.

use crate::task::{Match, Task};

/// Whether `prediction` answers `task`: case-insensitive containment of any
/// answer (or of every answer, for `match: all`).
pub fn is_correct(task: &Task, prediction: &str) -> bool {
    let prediction = prediction.to_lowercase();
    let found = |a: &String| prediction.contains(&a.to_lowercase());
    match task.match_mode {
        Match::Any => task.answers.iter().any(found),
        Match::All => task.answers.iter().all(found),
    }
}

/// Share of `task`'s answers that occur in `prediction` (case-insensitive):
/// RULER's `string_match_all`, which credits a multi-value answer per value.
/// For `match: any` it is 1 when any answer occurs, else 0, as
/// [`is_correct`].
pub fn recall(task: &Task, prediction: &str) -> f64 {
    if task.match_mode == Match::Any || task.answers.is_empty() {
        return f64::from(u8::from(is_correct(task, prediction)));
    }
    let prediction = prediction.to_lowercase();
    let found = task
        .answers
        .iter()
        .filter(|a| prediction.contains(&a.to_lowercase()))
        .count();
    found as f64 / task.answers.len() as f64
}

/// Whether an arm's answer agrees with full prefill's on the same task: the
/// same first sentence, up to surrounding whitespace (two wrong answers with
/// the same text agree; what the model writes after its answer does not count).
pub fn agrees_with_full(prediction: &str, full_prediction: &str) -> bool {
    first_sentence(prediction) == first_sentence(full_prediction)
}

/// The answer in a generated text: everything up to its first line break or
/// its first `.`, `!` or `?` followed by whitespace (a decimal point is not
/// an end), trimmed.
pub fn first_sentence(text: &str) -> &str {
    let text = text.trim();
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        let next = chars.peek().map(|&(_, n)| n);
        match c {
            '\n' => return text[..i].trim_end(),
            '.' | '!' | '?' if next.is_none_or(char::is_whitespace) => {
                return &text[..i + c.len_utf8()];
            }
            _ => {}
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(answers: &[&str], match_mode: Match) -> Task {
        Task {
            id: "t".into(),
            task: "k".into(),
            prefix: String::new(),
            documents: vec!["d".into()],
            question: "q".into(),
            answers: answers.iter().map(|a| a.to_string()).collect(),
            match_mode,
        }
    }

    #[test]
    fn agreement_compares_the_answer_not_what_follows_it() {
        assert!(agrees_with_full(
            " 59442. It crosses the river",
            " 59442.\n"
        ));
        assert!(agrees_with_full("Porto\nmore", " Porto"));
        assert!(!agrees_with_full(" Porto, Portugal.\n", " Porto.\n"));
        assert!(!agrees_with_full(" 13463 and 85547.", " 85547 and 13463."));
        assert_eq!(
            first_sentence(" It is 3.5 meters. Then"),
            "It is 3.5 meters."
        );
        assert_eq!(first_sentence("Why? Because"), "Why?");
        assert_eq!(first_sentence("   "), "");
    }

    #[test]
    fn any_answer_counts_case_insensitively() {
        let t = task(&["Seoul", "서울"], Match::Any);
        assert!(is_correct(&t, " seoul.\n"));
        assert!(!is_correct(&t, " Busan."));
    }

    #[test]
    fn match_all_needs_every_answer() {
        let t = task(&["12345", "67890"], Match::All);
        assert!(is_correct(&t, " 67890 and 12345."));
        assert!(!is_correct(&t, " 12345 and 11111."));
    }

    #[test]
    fn recall_credits_each_value_found_and_equals_correctness_for_any() {
        let all = task(&["12345", "67890", "24680"], Match::All);
        assert_eq!(recall(&all, " 67890 and 11111."), 1.0 / 3.0);
        assert_eq!(recall(&all, " 24680, 12345 and 67890."), 1.0);
        assert_eq!(recall(&all, " none"), 0.0);
        let any = task(&["Seoul", "서울"], Match::Any);
        assert_eq!(recall(&any, " seoul"), 1.0);
        assert_eq!(recall(&any, " Busan"), 0.0);
    }

    #[test]
    fn an_answer_inside_a_longer_number_still_counts_as_written() {
        // Containment, as the format defines it: the generators draw answers
        // of fixed width so that this cannot reward a wrong number.
        let t = task(&["4547"], Match::Any);
        assert!(is_correct(&t, " 74547"));
    }
}
