//! Prometheus metrics: request histograms here, engine counters from the engine.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use prophetkv_engine::{EngineMetrics, StoreStats};

const LATENCY_BUCKETS: [f64; 12] = [
    0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0,
];
const RATIO_BUCKETS: [f64; 8] = [0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0];

/// A fixed-bucket histogram with atomic counters.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    counts: Vec<AtomicU64>,
    sum_micros: AtomicU64,
    total: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
            total: AtomicU64::new(0),
        }
    }

    /// Records one observation.
    pub fn observe(&self, value: f64) {
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            if value <= *b {
                c.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.sum_micros
            .fetch_add((value * 1e6) as u64, Ordering::Relaxed);
        self.total.fetch_add(1, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"{b}\"}} {}",
                c.load(Ordering::Relaxed)
            );
        }
        let total = self.total.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {total}");
        let _ = writeln!(
            out,
            "{name}_sum {}",
            self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "{name}_count {total}");
    }
}

/// Request-level metrics.
#[derive(Debug)]
pub struct HttpMetrics {
    /// Seconds from arrival to the first token.
    pub ttft: Histogram,
    /// Seconds from arrival to the last token.
    pub e2e: Histogram,
    /// Recomputed fraction of eligible document rows, per request.
    pub recompute_ratio: Histogram,
    /// Requests refused with 429.
    pub rejected: AtomicU64,
    /// Responses by route template and status.
    responses: Mutex<BTreeMap<(String, u16), u64>>,
}

impl Default for HttpMetrics {
    fn default() -> Self {
        Self {
            ttft: Histogram::new(&LATENCY_BUCKETS),
            e2e: Histogram::new(&LATENCY_BUCKETS),
            recompute_ratio: Histogram::new(&RATIO_BUCKETS),
            rejected: AtomicU64::new(0),
            responses: Mutex::new(BTreeMap::new()),
        }
    }
}

fn gauge(out: &mut String, name: &str, help: &str, v: f64) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
}

fn counter(out: &mut String, name: &str, help: &str, v: u64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
    );
}

/// Prometheus label values escape `\\`, `"` and newlines.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl HttpMetrics {
    /// Counts one response of `route` (a route template, so that the label
    /// set stays bounded) with `status`.
    pub fn count_response(&self, route: &str, status: u16) {
        let mut responses = self.responses.lock().unwrap_or_else(|p| p.into_inner());
        *responses.entry((route.to_string(), status)).or_default() += 1;
    }

    fn render_responses(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "# HELP prophetkv_http_responses_total HTTP responses by route and status.\n# TYPE prophetkv_http_responses_total counter"
        );
        let responses = self.responses.lock().unwrap_or_else(|p| p.into_inner());
        for ((route, status), n) in responses.iter() {
            let _ = writeln!(
                out,
                "prophetkv_http_responses_total{{route=\"{}\",status=\"{status}\"}} {n}",
                label(route)
            );
        }
    }

    /// The Prometheus text exposition of these and the engine's metrics.
    pub fn render(&self, engine: &EngineMetrics, store: &StoreStats, uptime_secs: f64) -> String {
        let mut out = String::new();
        self.ttft.render(
            &mut out,
            "prophetkv_time_to_first_token_seconds",
            "Time from arrival to the first token.",
        );
        self.e2e.render(
            &mut out,
            "prophetkv_request_duration_seconds",
            "Time from arrival to the last token.",
        );
        self.recompute_ratio.render(
            &mut out,
            "prophetkv_recompute_ratio",
            "Recomputed fraction of eligible document rows.",
        );
        counter(
            &mut out,
            "prophetkv_rejected_requests_total",
            "Requests refused with 429.",
            self.rejected.load(Ordering::Relaxed),
        );
        self.render_responses(&mut out);
        render_engine(&mut out, engine);
        gauge(
            &mut out,
            "prophetkv_uptime_seconds",
            "Seconds since the server started.",
            uptime_secs,
        );
        counter(
            &mut out,
            "prophetkv_store_integrity_failures_total",
            "Stored KV blobs rejected by their checks (and deleted).",
            store.integrity_failures,
        );
        counter(
            &mut out,
            "prophetkv_store_tier_errors_total",
            "Failed operations on the Redis tier, taken as misses.",
            store.tier_errors,
        );
        render_store_bytes(&mut out, store);
        out
    }
}

/// Bytes each store tier holds, one gauge labelled by tier.
fn render_store_bytes(out: &mut String, store: &StoreStats) {
    let _ = writeln!(out, "# HELP prophetkv_store_used_bytes Bytes of document caches each store tier holds.\n# TYPE prophetkv_store_used_bytes gauge");
    let used = &store.used_bytes;
    for (tier, n) in [
        ("device", used.device),
        ("host", used.host),
        ("disk", used.disk),
        ("remote", used.remote),
    ] {
        let _ = writeln!(out, "prophetkv_store_used_bytes{{tier=\"{tier}\"}} {n}");
    }
}

/// The engine's counters and gauges. Rates and means are left to PromQL
/// (`rate(prophetkv_generated_tokens_total[1m])`, decode rows over steps).
fn render_engine(out: &mut String, engine: &EngineMetrics) {
    gauge(
        out,
        "prophetkv_queue_depth",
        "Requests waiting for admission.",
        engine.queue_depth as f64,
    );
    gauge(
        out,
        "prophetkv_running_sequences",
        "Sequences being decoded.",
        engine.running as f64,
    );
    gauge(
        out,
        "prophetkv_decode_batch_max",
        "Largest decode batch so far.",
        engine.largest_batch as f64,
    );
    counter(
        out,
        "prophetkv_decode_steps_total",
        "Batched decode steps run.",
        engine.decode_steps,
    );
    counter(
        out,
        "prophetkv_decode_rows_total",
        "Sequences decoded, summed over steps (over steps: the mean batch).",
        engine.decode_rows,
    );
    counter(
        out,
        "prophetkv_generated_tokens_total",
        "Tokens generated.",
        engine.tokens,
    );
    counter(
        out,
        "prophetkv_requests_total",
        "Requests admitted.",
        engine.requests,
    );
    let [device, host, disk, remote, computed] = engine.hits;
    let _ = writeln!(out, "# HELP prophetkv_document_cache_hits_total Document caches found, by tier.\n# TYPE prophetkv_document_cache_hits_total counter");
    for (tier, n) in [
        ("device", device),
        ("host", host),
        ("disk", disk),
        ("remote", remote),
    ] {
        let _ = writeln!(
            out,
            "prophetkv_document_cache_hits_total{{tier=\"{tier}\"}} {n}"
        );
    }
    counter(
        out,
        "prophetkv_document_cache_misses_total",
        "Document caches found in no tier and computed.",
        computed,
    );
    counter(
        out,
        "prophetkv_recomputed_rows_total",
        "Eligible document rows recomputed, summed over requests.",
        engine.selected_rows,
    );
    counter(
        out,
        "prophetkv_eligible_rows_total",
        "Eligible document rows, summed over requests.",
        engine.eligible_rows,
    );
}
