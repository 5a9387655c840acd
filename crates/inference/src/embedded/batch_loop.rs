//! Continuous batching: one thread per model owns the llama.cpp context and runs
//! every live request in the same forward passes. Each pass carries one token for
//! every sequence that is generating plus chunks of prompts being read, so new
//! requests join (and finished ones leave) between any two tokens.
//!
//! Memory: each of the `max_sequences` slots has its own KV-cache stream of
//! `context_tokens` cells (llama.cpp's non-unified cache), so a request admitted
//! with prompt + `max_tokens` within the context never runs out of cache, and
//! each sequence's attention is computed exactly as if it ran alone: batched and
//! serial runs give the same tokens. A finished request leaves its cache in its
//! slot; a new request whose prompt starts the same way (the next turn of a chat)
//! goes to that slot and reuses it.
//!
//! Several answers to one prompt (`n` > 1) take a slot each: the first reads
//! the prompt, and once it has, its cache is copied to the others' slots and
//! every answer samples its first token from the same logits; from there
//! each goes on alone.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::Arc;

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;

use super::choices::Out;
use super::sequence::{End, Job, Pick, ReasoningMarkers, Sequence};

#[derive(Debug, Clone, Copy)]
pub(super) struct LoopLimits {
    pub max_sequences: usize,
    pub context_tokens: usize,
    pub batch_tokens: usize,
}

/// Requests running and waiting, published by the loop for the worker to read.
#[derive(Debug, Default)]
pub(super) struct LoadGauge {
    pub running: AtomicU32,
    pub waiting: AtomicU32,
}

/// A sequence id of the llama.cpp context and what its KV cache holds.
struct Slot {
    seq: i32,
    /// Tokens whose attention state is in the cache, position by position.
    cached: Vec<LlamaToken>,
    last_used: u64,
    active: Option<Sequence>,
}

pub(super) struct BatchLoop<'m> {
    model: &'m LlamaModel,
    ctx: LlamaContext<'m>,
    jobs: Receiver<Job>,
    limits: LoopLimits,
    markers: ReasoningMarkers,
    slots: Vec<Slot>,
    queue: VecDeque<Job>,
    batch: LlamaBatch<'static>,
    clock: u64,
    gauge: Arc<LoadGauge>,
}

impl<'m> BatchLoop<'m> {
    pub fn new(
        model: &'m LlamaModel,
        ctx: LlamaContext<'m>,
        jobs: Receiver<Job>,
        limits: LoopLimits,
        markers: ReasoningMarkers,
        gauge: Arc<LoadGauge>,
    ) -> Self {
        let slots = (0..limits.max_sequences)
            .map(|i| Slot {
                seq: i as i32,
                cached: Vec::new(),
                last_used: 0,
                active: None,
            })
            .collect();
        Self {
            model,
            ctx,
            jobs,
            limits,
            markers,
            slots,
            queue: VecDeque::new(),
            batch: LlamaBatch::new(limits.batch_tokens, 1),
            clock: 0,
            gauge,
        }
    }

    /// Serve until the engine is dropped and every request has ended.
    pub fn run(mut self) {
        while self.intake() {
            self.drop_cancelled();
            self.admit();
            self.publish_load();
            if self.active() > 0 {
                self.step();
                self.publish_load();
            }
        }
    }

    fn publish_load(&self) {
        let running = self.active() as u32;
        self.gauge.running.store(running, Ordering::Relaxed);
        self.gauge
            .waiting
            .store(self.queue.len() as u32, Ordering::Relaxed);
    }

    fn active(&self) -> usize {
        self.slots.iter().filter(|s| s.active.is_some()).count()
    }

    /// Take new requests; block when idle. False once the engine is gone.
    fn intake(&mut self) -> bool {
        if self.active() == 0 && self.queue.is_empty() {
            match self.jobs.recv() {
                Ok(job) => self.queue.push_back(job),
                Err(_) => return false,
            }
        }
        loop {
            match self.jobs.try_recv() {
                Ok(job) => self.queue.push_back(job),
                Err(TryRecvError::Empty) => return true,
                Err(TryRecvError::Disconnected) => {
                    return self.active() > 0 || !self.queue.is_empty()
                }
            }
        }
    }

    /// Requests whose receiver is gone stop here; their cache stays reusable.
    fn drop_cancelled(&mut self) {
        self.queue.retain(|job| !job.events.is_closed());
        for slot in &mut self.slots {
            if slot.active.as_ref().is_some_and(Sequence::is_cancelled) {
                slot.active = None;
                slot.last_used = self.clock;
            }
        }
    }

    /// Start queued requests, first come first served, while slots are
    /// free (a slot for each answer a request asks for).
    fn admit(&mut self) {
        loop {
            let free = self.limits.max_sequences - self.active();
            let n = match self.queue.front() {
                Some(job) if job.constraints.len() <= free => job.constraints.len(),
                _ => return,
            };
            let mut job = self.queue.pop_front().expect("checked above");
            let mut answers = std::mem::take(&mut job.constraints)
                .into_iter()
                .zip(Out::answers(job.events.clone(), n as u32));
            let (index, common) = self.pick_slot(&job.prompt);
            // At least one prompt token must run to produce the first logits.
            let mut common = common.min(job.prompt.len() - 1);
            let slot = &mut self.slots[index];
            if self
                .ctx
                .kv_cache_seq_rm(slot.seq, Some(common as u32), None)
                .is_err()
            {
                let _ = self
                    .ctx
                    .clear_kv_cache_seq(Some(slot.seq as u32), None, None);
                common = 0;
            }
            slot.cached.truncate(common);
            let (constraint, out) = answers.next().expect("at least one answer");
            let n_vocab = self.model.n_vocab();
            slot.active = Some(Sequence::new(&job, 0, constraint, out, common, n_vocab));
            let mut followers = Vec::with_capacity(n - 1);
            for (i, (constraint, out)) in answers.enumerate() {
                // The least recently used idle slot, emptied: the first
                // answer's prompt is copied in once read.
                let (f, _) = self.pick_slot(&[]);
                let slot = &mut self.slots[f];
                let _ = self
                    .ctx
                    .clear_kv_cache_seq(Some(slot.seq as u32), None, None);
                slot.cached.clear();
                let mut seq = Sequence::new(&job, i as u32 + 1, constraint, out, 0, n_vocab);
                seq.fed = seq.prompt.len();
                slot.active = Some(seq);
                followers.push(f);
            }
            if let Some(leader) = self.slots[index].active.as_mut() {
                leader.followers = followers;
            }
        }
    }

    /// Answers waiting on another's prompt (`n` > 1) get its cache and its
    /// logits once it has been read.
    fn share_prompts(&mut self) {
        for i in 0..self.slots.len() {
            let Some(seq) = self.slots[i].active.as_mut() else {
                continue;
            };
            let (Some(at), false) = (seq.logits_at, seq.followers.is_empty()) else {
                continue;
            };
            let followers = std::mem::take(&mut seq.followers);
            let (source, cached) = (self.slots[i].seq, self.slots[i].cached.clone());
            for f in followers {
                let slot = &mut self.slots[f];
                // A whole-stream copy (each slot has its own KV stream),
                // done by llama.cpp before the next forward pass.
                let _ = self.ctx.copy_kv_cache_seq(source, slot.seq, None, None);
                slot.cached.clone_from(&cached);
                if let Some(follower) = slot.active.as_mut() {
                    follower.logits_at = Some(at);
                }
            }
        }
    }

    /// The idle slot whose cache shares the longest prefix with `prompt`; among
    /// equals, the least recently used.
    fn pick_slot(&self, prompt: &[LlamaToken]) -> (usize, usize) {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.active.is_none())
            .map(|(i, s)| {
                let common = s
                    .cached
                    .iter()
                    .zip(prompt)
                    .take_while(|(a, b)| a == b)
                    .count();
                (i, common, s.last_used)
            })
            .max_by_key(|&(_, common, last_used)| (common, std::cmp::Reverse(last_used)))
            .map(|(i, common, _)| (i, common))
            .expect("admit checked that a slot is free")
    }

    /// One forward pass over every running sequence, then one sampled token each.
    fn step(&mut self) {
        self.clock += 1;
        self.batch.clear();
        let mut budget = self.limits.batch_tokens;
        // Generating sequences first: one token each keeps every stream moving.
        for slot in &mut self.slots {
            let Some(seq) = slot.active.as_mut() else {
                continue;
            };
            if let Some(token) = seq.next.take() {
                let pos = slot.cached.len() as i32;
                self.batch
                    .add(token, pos, &[slot.seq], true)
                    .expect("batch sized for every sequence");
                seq.logits_at = Some(self.batch.n_tokens() - 1);
                slot.cached.push(token);
                budget -= 1;
            }
        }
        // Then prompt chunks with what is left of this pass.
        for slot in &mut self.slots {
            let Some(seq) = slot.active.as_mut() else {
                continue;
            };
            if budget == 0 || seq.fed >= seq.prompt.len() {
                continue;
            }
            let n = (seq.prompt.len() - seq.fed).min(budget);
            for i in seq.fed..seq.fed + n {
                let last = i + 1 == seq.prompt.len();
                let pos = slot.cached.len() as i32;
                self.batch
                    .add(seq.prompt[i], pos, &[slot.seq], last)
                    .expect("batch sized by budget");
                slot.cached.push(seq.prompt[i]);
                if last {
                    seq.logits_at = Some(self.batch.n_tokens() - 1);
                }
            }
            seq.fed += n;
            budget -= n;
        }
        if self.batch.n_tokens() == 0 {
            return;
        }
        if let Err(e) = self.ctx.decode(&mut self.batch) {
            tracing::error!(error = %e, "forward pass failed; failing the requests in it");
            for slot in &mut self.slots {
                if let Some(seq) = slot.active.take() {
                    let _ = self
                        .ctx
                        .clear_kv_cache_seq(Some(slot.seq as u32), None, None);
                    slot.cached.clear();
                    seq.fail("the model's forward pass failed on this worker");
                }
            }
            return;
        }
        self.share_prompts();
        for slot in &mut self.slots {
            let Some(seq) = slot.active.as_mut() else {
                continue;
            };
            let Some(at) = seq.logits_at.take() else {
                continue;
            };
            let end = match seq.sample(&self.ctx, at) {
                Pick::Token(token) => {
                    let end = seq.on_token(self.model, token, self.markers);
                    if end.is_none() {
                        seq.next = Some(token);
                    }
                    end
                }
                Pick::End(end) => Some(end),
            };
            if let Some(end) = end {
                let seq = slot.active.take().expect("active");
                match end {
                    End::Finish(reason) => seq.finish(reason),
                    End::Fail(message) => seq.fail(message),
                }
                slot.last_used = self.clock;
            }
        }
    }
}
