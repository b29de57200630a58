//! Paired statistics over tasks: a mean with its standard error, and the
//! exact sign test on the tasks where two arms disagree.

use serde::Serialize;

/// A mean over tasks with its standard error.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Gap {
    /// The mean.
    pub mean: f64,
    /// Its standard error (absent with fewer than two tasks).
    pub stderr: Option<f64>,
}

impl Gap {
    /// The mean and standard error of `values`; `None` when empty.
    pub fn of(values: &[f64]) -> Option<Gap> {
        if values.is_empty() {
            return None;
        }
        let n = values.len() as f64;
        let mean = values.iter().sum::<f64>() / n;
        let stderr = (values.len() > 1).then(|| {
            let var = values.iter().map(|g| (g - mean).powi(2)).sum::<f64>() / (n - 1.0);
            (var / n).sqrt()
        });
        Some(Gap { mean, stderr })
    }

    /// "0.42 ± 0.10" (two decimals), or the mean alone without an error.
    pub fn display(&self) -> String {
        match self.stderr {
            Some(e) => format!("{:.2} ± {e:.2}", self.mean),
            None => format!("{:.2}", self.mean),
        }
    }
}

/// Two-sided p-value of the exact sign test (McNemar's exact test): under
/// the null each of the `wins + losses` discordant tasks is a fair coin.
pub fn sign_test(wins: usize, losses: usize) -> f64 {
    let n = wins + losses;
    if n == 0 {
        return 1.0;
    }
    let k = wins.min(losses);
    // P(X <= k) for X ~ Binomial(n, 1/2), summed in log space.
    let ln_half_n = -(n as f64) * std::f64::consts::LN_2;
    let mut ln_choose = 0f64; // ln C(n, 0)
    let mut tail = 0f64;
    for i in 0..=k {
        if i > 0 {
            ln_choose += ((n - i + 1) as f64).ln() - (i as f64).ln();
        }
        tail += (ln_choose + ln_half_n).exp();
    }
    (2.0 * tail).min(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_and_standard_error_match_the_textbook_formula() {
        let g = Gap::of(&[1.0, 2.0, 3.0, 4.0]).unwrap();
        assert!((g.mean - 2.5).abs() < 1e-12);
        // sample sd = sqrt(5/3); s.e. = sd / 2
        assert!((g.stderr.unwrap() - (5.0f64 / 3.0).sqrt() / 2.0).abs() < 1e-12);
        assert_eq!(Gap::of(&[]), None);
        assert_eq!(Gap::of(&[0.5]).unwrap().stderr, None);
        assert_eq!(g.display(), "2.50 ± 0.65");
    }

    #[test]
    fn sign_test_matches_exact_binomial_tails() {
        // 10 discordant pairs split 9:1: 2 * (1 + 10) / 1024.
        assert!((sign_test(9, 1) - 22.0 / 1024.0).abs() < 1e-12);
        assert!((sign_test(1, 9) - 22.0 / 1024.0).abs() < 1e-12);
        // An even split is no evidence at all.
        assert_eq!(sign_test(5, 5), 1.0);
        assert_eq!(sign_test(0, 0), 1.0);
        // 6:0 — 2 / 64.
        assert!((sign_test(6, 0) - 2.0 / 64.0).abs() < 1e-12);
        // Large n stays finite and small.
        let p = sign_test(200, 100);
        assert!(p > 0.0 && p < 1e-6, "{p}");
    }
}
