//! Counters the worker updates and the handle reads.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use serde::Serialize;

use crate::request::TierHits;

/// The worker's counters, lock-free.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    pub(crate) running: AtomicUsize,
    pub(crate) tokens: AtomicU64,
    requests: AtomicU64,
    decode_steps: AtomicU64,
    decode_rows: AtomicU64,
    largest_batch: AtomicUsize,
    hits: [AtomicU64; 5],
    selected_rows: AtomicU64,
    eligible_rows: AtomicU64,
}

impl Metrics {
    pub(crate) fn record_batch(&self, size: usize) {
        self.decode_steps.fetch_add(1, Ordering::Relaxed);
        self.decode_rows.fetch_add(size as u64, Ordering::Relaxed);
        self.largest_batch.fetch_max(size, Ordering::Relaxed);
    }

    pub(crate) fn record_request(&self, hits: &TierHits, selected: usize, eligible: usize) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        for (slot, n) in self.hits.iter().zip([
            hits.device,
            hits.host,
            hits.disk,
            hits.remote,
            hits.computed,
        ]) {
            slot.fetch_add(n as u64, Ordering::Relaxed);
        }
        self.selected_rows
            .fetch_add(selected as u64, Ordering::Relaxed);
        self.eligible_rows
            .fetch_add(eligible as u64, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self, queue_depth: usize) -> EngineMetrics {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        EngineMetrics {
            queue_depth,
            running: self.running.load(Ordering::Relaxed),
            requests: load(&self.requests),
            tokens: load(&self.tokens),
            decode_steps: load(&self.decode_steps),
            decode_rows: load(&self.decode_rows),
            largest_batch: self.largest_batch.load(Ordering::Relaxed),
            hits: std::array::from_fn(|i| load(&self.hits[i])),
            selected_rows: load(&self.selected_rows),
            eligible_rows: load(&self.eligible_rows),
        }
    }
}

/// A point-in-time view of the engine's counters.
#[derive(Debug, Clone, Serialize)]
pub struct EngineMetrics {
    /// Requests waiting for admission.
    pub queue_depth: usize,
    /// Sequences being decoded.
    pub running: usize,
    /// Requests admitted so far.
    pub requests: u64,
    /// Tokens generated so far.
    pub tokens: u64,
    /// Decode steps run.
    pub decode_steps: u64,
    /// Sequences decoded, summed over steps (rows / steps = mean batch).
    pub decode_rows: u64,
    /// Largest decode batch so far.
    pub largest_batch: usize,
    /// Document cache hits: device memory, host memory, disk, Redis, computed.
    pub hits: [u64; 5],
    /// Eligible document rows recomputed, summed over requests.
    pub selected_rows: u64,
    /// Eligible document rows, summed over requests.
    pub eligible_rows: u64,
}
