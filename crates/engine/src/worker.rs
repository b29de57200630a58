//! The worker thread: owns the model, admits requests, decodes the batch.
//!
//! One loop: take new requests off the channel, drop sequences whose client
//! went away, admit as many waiting requests as the policy allows (see
//! [`crate::admit`]), then run one decode step for every running sequence as
//! one batch. With nothing to answer, it computes registered documents'
//! caches.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::sync::Arc;
use std::time::Duration;

use prophetkv_model::{DocCache, Kv, Model, TextTokenizer};

use crate::batching::admissions;
use crate::caches::DocumentCaches;
use crate::config::EngineConfig;
use crate::constrain::Grammars;
use crate::queue::{Job, Shared, Work};
use crate::request::Event;
use crate::sequence::{Context, Sequence, Step};
use crate::validate::Limits;
use crate::{EngineError, Result};

pub(crate) struct Worker {
    pub(crate) model: Model,
    pub(crate) tokenizer: TextTokenizer,
    pub(crate) caches: DocumentCaches,
    pub(crate) anchor: Arc<DocCache>,
    pub(crate) limits: Limits,
    pub(crate) grammars: Arc<Grammars>,
    pub(crate) config: EngineConfig,
    pub(crate) shared: Arc<Shared>,
}

/// Requests join the queue; documents to precompute join the idle backlog.
fn sort_work(work: Work, waiting: &mut VecDeque<Job>, backlog: &mut VecDeque<(String, String)>) {
    match work {
        Work::Generate(job) => waiting.push_back(*job),
        Work::Precompute { tenant, id } => backlog.push_back((tenant, id)),
    }
}

impl Worker {
    pub(crate) fn run(mut self, jobs: Receiver<Work>) {
        let mut waiting: VecDeque<Job> = VecDeque::new();
        let mut running: Vec<Sequence> = Vec::new();
        let mut backlog: VecDeque<(String, String)> = VecDeque::new();
        loop {
            // Block only when there is nothing at all to do; otherwise just
            // drain what arrived.
            if waiting.is_empty() && running.is_empty() && backlog.is_empty() {
                match jobs.recv_timeout(Duration::from_millis(200)) {
                    Ok(work) => sort_work(work, &mut waiting, &mut backlog),
                    Err(RecvTimeoutError::Timeout) => continue,
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            }
            loop {
                match jobs.try_recv() {
                    Ok(work) => sort_work(work, &mut waiting, &mut backlog),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        // Shutting down: requests still finish, precomputation does not.
                        backlog.clear();
                        break;
                    }
                }
            }
            if waiting.is_empty() && running.is_empty() {
                if let Some((tenant, id)) = backlog.pop_front() {
                    self.precompute(&tenant, &id);
                }
                continue;
            }
            self.step(&mut waiting, &mut running);
        }
        tracing::info!("engine worker stopped");
    }

    /// Drops cancelled work, admits what the policy allows, decodes one token
    /// for every running sequence.
    fn step(&mut self, waiting: &mut VecDeque<Job>, running: &mut Vec<Sequence>) {
        waiting.retain(|j| {
            let alive = !j.events.is_closed();
            if !alive {
                self.shared.queued.fetch_sub(1, Ordering::SeqCst);
            }
            alive
        });
        running.retain(|s| !s.events.is_closed());
        let admit = admissions(
            waiting.len(),
            running.len(),
            self.config.max_batch,
            self.config.max_prefills_per_step,
        );
        for job in waiting.drain(..admit) {
            self.shared.queued.fetch_sub(1, Ordering::SeqCst);
            let events = job.events.clone();
            match self.admit(job) {
                Ok(Some(seq)) => running.push(seq),
                Ok(None) => {}
                Err(e) => {
                    let _ = events.send(Event::Failed(e));
                }
            }
        }
        self.publish_running(running.len());
        if !running.is_empty() {
            if let Err(e) = self.decode_step(running) {
                // A failed batch step fails its requests, not the worker.
                for seq in running.drain(..) {
                    let _ = seq.events.send(Event::Failed(e.clone()));
                }
            }
        }
        self.publish_running(running.len());
    }

    fn publish_running(&self, n: usize) {
        self.shared.metrics.running.store(n, Ordering::Relaxed);
    }

    /// Computes a registered document's cache (idle work). A document deleted
    /// in the meantime is skipped; other failures are logged, and the first
    /// request that uses the document will report them.
    fn precompute(&self, tenant: &str, id: &str) {
        let error = match self.caches.registered(&self.model, tenant, id) {
            Ok(_) | Err(EngineError::UnknownDocument(_)) => None,
            Err(e) => {
                tracing::warn!(document = id, error = %e, "precomputing a document failed");
                Some(e.to_string())
            }
        };
        self.shared
            .precompute()
            .finished((tenant.to_string(), id.to_string()), error);
    }

    /// What accepting a token needs.
    pub(crate) fn context(&self) -> Context<'_> {
        Context {
            tokenizer: &self.tokenizer,
            metrics: &self.shared.metrics,
            max_position: self.model.config().max_position,
        }
    }

    /// One decode step for every running sequence, as one batch.
    fn decode_step(&mut self, running: &mut Vec<Sequence>) -> Result<()> {
        let tokens: Vec<u32> = running.iter().map(|s| s.next).collect();
        let logits = {
            let mut kvs: Vec<&mut Kv> = running.iter_mut().map(|s| &mut s.kv).collect();
            self.model.decode(&mut kvs, &tokens)?
        };
        self.shared.metrics.record_batch(running.len());
        let rows: Vec<Vec<f32>> = logits.to_vec2()?;
        let cx = self.context();
        let mut still = Vec::with_capacity(running.len());
        for (mut seq, row) in running.drain(..).zip(rows) {
            match seq.accept(&cx, &row) {
                Step::Continue => still.push(seq),
                Step::Done(reason) => seq.finish(reason),
                Step::Failed(e) => {
                    let _ = seq.events.send(Event::Failed(e));
                }
            }
        }
        *running = still;
        Ok(())
    }
}
