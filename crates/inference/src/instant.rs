//! The instant engine: deterministic, no model, no delay (unless asked). It exists
//! for tests and for measuring the network's own overhead, and its name says so;
//! production configuration refuses it.
//!
//! Tokens are whitespace-separated words. The answer repeats the words of the last
//! message (or the prompt): once when `max_tokens` is absent (`finish_reason:
//! stop`), or cycled until exactly `max_tokens` words (`finish_reason: length`).
//! Prompt tokens are the words of every message plus one per message for its role.

use std::collections::VecDeque;
use std::time::Duration;

use cocoon_protocol::{Done, FinishReason, Input, Usage};
use futures::StreamExt;

use crate::{Engine, Event, GenerateRequest, Generation, ModelOffer, StopMatcher};

#[derive(Debug, Clone)]
pub struct InstantEngine {
    model: String,
    max_concurrent: u32,
    token_delay: Duration,
}

impl InstantEngine {
    pub fn new(model: impl Into<String>, max_concurrent: u32) -> Self {
        Self {
            model: model.into(),
            max_concurrent,
            token_delay: Duration::ZERO,
        }
    }

    /// Sleep this long before each token (to test cancellation and timeouts).
    pub fn with_token_delay(mut self, delay: Duration) -> Self {
        self.token_delay = delay;
        self
    }

    /// Token counts and answer words for a request, as the engine computes them.
    pub fn plan(input: &Input) -> (u64, Vec<String>) {
        let (prompt_tokens, last) = match input {
            Input::Chat(messages) => (
                messages
                    .iter()
                    .map(|m| words(&m.content).len() as u64 + 1)
                    .sum(),
                messages.last().map(|m| m.content.as_str()).unwrap_or(""),
            ),
            Input::Prompt(prompt) => (words(prompt).len() as u64, prompt.as_str()),
        };
        let mut answer: Vec<String> = words(last).into_iter().map(str::to_string).collect();
        if answer.is_empty() {
            answer.push("ok".into());
        }
        (prompt_tokens, answer)
    }
}

fn words(text: &str) -> Vec<&str> {
    text.split_whitespace().collect()
}

impl Engine for InstantEngine {
    fn models(&self) -> Vec<ModelOffer> {
        vec![ModelOffer {
            price_coefficient: cocoon_protocol::BASE_PRICE_COEFFICIENT,
            name: self.model.clone(),
            max_concurrent: self.max_concurrent,
            weights_sha256: None,
            context_length: None,
            quantization: None,
            features: Default::default(),
        }]
    }

    fn kind(&self) -> &'static str {
        "instant"
    }

    fn describe(&self) -> String {
        format!("instant (TEST ENGINE, no model) serving {:?}", self.model)
    }

    fn generate(&self, request: GenerateRequest) -> Generation {
        let (prompt_tokens, answer) = Self::plan(&request.input);
        let (target, at_target) = match request.params.max_tokens {
            Some(max) => (max as usize, FinishReason::Length),
            None => (answer.len(), FinishReason::Stop),
        };
        // The prompt is "read" at once: its count is known from the start.
        let read = Event::Usage(Usage {
            prompt_tokens,
            ..Usage::default()
        });
        let state = Run {
            answer,
            target,
            at_target,
            prompt_tokens,
            stop: StopMatcher::new(&request.params.stop),
            generated: 0,
            pending: VecDeque::from([read]),
            finished: false,
            delay: self.token_delay,
        };
        futures::stream::unfold(state, |mut run| async move {
            let event = run.next().await?;
            Some((event, run))
        })
        .boxed()
    }
}

/// One request's progress through the instant engine.
struct Run {
    answer: Vec<String>,
    target: usize,
    at_target: FinishReason,
    prompt_tokens: u64,
    stop: StopMatcher,
    generated: usize,
    pending: VecDeque<Event>,
    finished: bool,
    delay: Duration,
}

impl Run {
    async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some(event);
            }
            if self.finished {
                return None;
            }
            if self.generated >= self.target {
                let rest = self.stop.finish();
                self.finish(rest, self.at_target);
                continue;
            }
            if !self.delay.is_zero() {
                tokio::time::sleep(self.delay).await;
            }
            let word = &self.answer[self.generated % self.answer.len()];
            let piece = if self.generated == 0 {
                word.clone()
            } else {
                format!(" {word}")
            };
            self.generated += 1;
            let (text, stopped) = self.stop.push(&piece);
            if stopped {
                self.finish(text, FinishReason::Stop);
            } else if !text.is_empty() {
                return Some(Event::Delta { text, tokens: 1 });
            }
        }
    }

    fn finish(&mut self, text: String, finish_reason: FinishReason) {
        if !text.is_empty() {
            self.pending.push_back(Event::Delta { text, tokens: 0 });
        }
        self.pending.push_back(Event::Done(Done {
            finish_reason,
            receipt: None,
            stamp: None,
            finishes: Vec::new(),
            usage: Usage {
                prompt_tokens: self.prompt_tokens,
                completion_tokens: self.generated as u64,
                ..Usage::default()
            },
        }));
        self.finished = true;
    }
}

#[cfg(test)]
mod tests;
