//! The admission policy: how many waiting requests join the batch this step.
//!
//! Invariants: never more running sequences than `max_batch`; never more
//! prefills per step than `max_prefills_per_step` (a prefill stalls every
//! running sequence's next token, so they are admitted a few at a time); a
//! waiting request is admitted whenever there is room. Pure, so it is tested
//! without a model.

/// Requests to admit now, given the queue and the running batch.
pub fn admissions(
    waiting: usize,
    running: usize,
    max_batch: usize,
    max_prefills_per_step: usize,
) -> usize {
    let room = max_batch.saturating_sub(running);
    waiting.min(room).min(max_prefills_per_step.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_up_to_the_room_left_and_the_prefill_limit() {
        assert_eq!(admissions(10, 0, 8, 2), 2);
        assert_eq!(admissions(10, 7, 8, 4), 1);
        assert_eq!(admissions(10, 8, 8, 4), 0);
        assert_eq!(admissions(0, 0, 8, 4), 0);
        assert_eq!(admissions(3, 2, 16, 8), 3);
    }

    #[test]
    fn never_exceeds_the_batch_even_when_over_full() {
        assert_eq!(admissions(5, 9, 8, 4), 0);
    }

    #[test]
    fn a_zero_prefill_limit_still_makes_progress() {
        assert_eq!(admissions(5, 0, 8, 0), 1);
    }
}
