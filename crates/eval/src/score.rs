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

/// Whether an arm's answer agrees with full prefill's on the same task:
/// the same generated text, up to surrounding whitespace (two wrong answers
/// with the same text agree).
pub fn agrees_with_full(prediction: &str, full_prediction: &str) -> bool {
    prediction.trim() == full_prediction.trim()
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
    fn an_answer_inside_a_longer_number_still_counts_as_written() {
        // Containment, as the format defines it: the generators draw answers
        // of fixed width so that this cannot reward a wrong number.
        let t = task(&["4547"], Match::Any);
        assert!(is_correct(&t, " 74547"));
    }
}
