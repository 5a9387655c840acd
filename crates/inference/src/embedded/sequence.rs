//! One request inside the batch loop: its prompt, its sampler (temperature,
//! top_p, penalties, seed) and, for a structured answer, its grammar
//! constraint; the text decoded so far (UTF-8 split across tokens, stop
//! sequences across tokens), kept apart as reasoning while the model thinks
//! (between `<think>` and `</think>`), and its token counts.

use cocoon_protocol::{
    ErrorKind, Event, FinishReason, SamplingParams, TokenLogprob, ToolCallChunk, TopLogprob, Usage,
    WireError,
};
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::data::LlamaTokenData;
use llama_cpp_2::token::data_array::LlamaTokenDataArray;
use llama_cpp_2::token::LlamaToken;
use tokio::sync::mpsc::UnboundedSender;

use super::choices::Out;
use super::constraint::{greedy_within, Constraint, Next};
use super::tool_calls::{CallReader, Opening, ToolFormat};
use crate::StopMatcher;

/// A request as handed to the batch loop.
pub(super) struct Job {
    pub prompt: Vec<LlamaToken>,
    pub max_tokens: u32,
    pub params: SamplingParams,
    /// One per answer asked for (`params.n`): the grammar it is held to
    /// (`params.format`, or the calls `params.tools` allows, compiled).
    pub constraints: Vec<Option<Constraint>>,
    /// How the answer may call functions.
    pub calls: CallMode,
    /// How the model writes calls.
    pub tool_format: ToolFormat,
    /// Whether reasoning is sent apart from the answer (chats on a model
    /// with reasoning markers), and whether the prompt leaves the model
    /// inside a reasoning section.
    pub reasoning: Reasoning,
    pub events: UnboundedSender<Event>,
}

/// How a sequence treats a reasoning model's thinking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Reasoning {
    /// Not told apart: all of it is the answer's text (raw prompts, or a
    /// model without reasoning markers).
    Inline,
    /// Sent as reasoning, not as text; `thinking`: the prompt ends inside
    /// a reasoning section (the template opened it).
    Apart { thinking: bool },
}

/// Whether an answer may, or must, be function calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum CallMode {
    /// Text only (the constraint, if any, is a response format).
    None,
    /// Calls only: the constraint holds the answer to them from its first token.
    Forced,
    /// Text or calls (`tool_choice: auto`): free until the answer starts
    /// with a call's opening tag, held to the constraint from there.
    Auto,
    /// Calls or an answer of a response format (`auto` with
    /// `response_format`): held to the constraint (either one) from the
    /// first token.
    AutoShaped,
}

/// Where an answer stands with function calls.
enum Calls {
    /// Text (no tools, or an `auto` answer that began as text).
    Off,
    /// `auto`, and the answer so far could be the start of a call: its text
    /// and tokens are held.
    Undecided {
        held: String,
        tokens: Vec<LlamaToken>,
        /// How many of `tokens` are whitespace before anything else (the
        /// blank line after a reasoning section, say): not part of a call.
        lead: usize,
    },
    /// The answer is calls: read into OpenAI's pieces as it comes.
    Calling(CallReader),
}

/// How a sequence's step ends, when it does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum End {
    Finish(FinishReason),
    /// The request fails with this message (no request content in it).
    Fail(&'static str),
}

/// What sampling one step gave.
pub(super) enum Pick {
    Token(LlamaToken),
    End(End),
}

/// The token ids that open and close a reasoning section, if the model has them.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct ReasoningMarkers {
    pub open: Option<LlamaToken>,
    pub close: Option<LlamaToken>,
}

pub(super) struct Sequence {
    out: Out,
    pub prompt: Vec<LlamaToken>,
    /// Slots whose answers wait for this one's prompt: when it has been
    /// read they get its cache and its first logits (`n` > 1).
    pub followers: Vec<usize>,
    /// Prompt tokens already in the KV cache.
    pub fed: usize,
    /// Prompt tokens reused from an earlier request on the same slot.
    pub cached_prompt: usize,
    pub max_tokens: u32,
    pub generated: u32,
    /// Sampled but not yet run through the model.
    pub next: Option<LlamaToken>,
    /// Index of this sequence's logits in the current batch.
    pub logits_at: Option<i32>,
    sampler: LlamaSampler,
    /// Temperature 0 without penalties: the most likely token, read straight
    /// from the logits (no candidate array over the whole vocabulary).
    greedy: bool,
    bytes: Vec<u8>,
    stop: StopMatcher,
    /// Tokens whose text is held back (partial UTF-8 or a possible stop sequence).
    unsent_tokens: u32,
    reasoning: u32,
    in_reasoning: bool,
    /// Reasoning is sent apart from the answer.
    apart: bool,
    /// Bytes of reasoning not yet sent (a UTF-8 character split across tokens).
    thought: Vec<u8>,
    ignore_eos: bool,
    constraint: Option<Constraint>,
    calls: Calls,
    tool_format: ToolFormat,
    /// `CallMode::AutoShaped`: the constraint masks while the answer is
    /// undecided too, and stays when it turns out to be text.
    shaped: bool,
    /// Alternatives to report per token, when the request asked for log
    /// probabilities.
    top_logprobs: Option<usize>,
    /// The log probabilities of the token just sampled, until it is taken.
    sampled_logprobs: Option<(f32, Vec<(LlamaToken, f32)>)>,
}

impl Sequence {
    /// Answer `index` of `job`, held to `constraint`, writing to `out`;
    /// `cached_prompt` tokens of the prompt are in its slot's cache.
    pub fn new(
        job: &Job,
        index: u32,
        constraint: Option<Constraint>,
        out: Out,
        cached_prompt: usize,
        n_vocab: i32,
    ) -> Self {
        let p = &job.params;
        let greedy = p.temperature == Some(0.0)
            && p.presence_penalty.unwrap_or(0.0) == 0.0
            && p.frequency_penalty.unwrap_or(0.0) == 0.0;
        Self {
            sampler: sampler(p, n_vocab, job.max_tokens, index),
            greedy,
            stop: StopMatcher::new(&p.stop),
            out,
            prompt: job.prompt.clone(),
            followers: Vec::new(),
            fed: cached_prompt,
            cached_prompt,
            max_tokens: job.max_tokens,
            generated: 0,
            next: None,
            logits_at: None,
            bytes: Vec::new(),
            unsent_tokens: 0,
            reasoning: 0,
            in_reasoning: job.reasoning == Reasoning::Apart { thinking: true },
            apart: matches!(job.reasoning, Reasoning::Apart { .. }),
            thought: Vec::new(),
            // A constrained answer ends where its shape does.
            ignore_eos: p.ignore_eos && constraint.is_none(),
            constraint,
            top_logprobs: p.logprobs.map(usize::from),
            sampled_logprobs: None,
            calls: match job.calls {
                CallMode::None => Calls::Off,
                CallMode::Forced => Calls::Calling(job.tool_format.reader()),
                CallMode::Auto | CallMode::AutoShaped => Calls::Undecided {
                    held: String::new(),
                    tokens: Vec::new(),
                    lead: 0,
                },
            },
            tool_format: job.tool_format,
            shaped: job.calls == CallMode::AutoShaped,
        }
    }

    pub fn sample(&mut self, ctx: &llama_cpp_2::context::LlamaContext<'_>, at: i32) -> Pick {
        let pick = self.pick(ctx, at);
        // Log probabilities are reported for the answer's tokens, not the
        // reasoning's.
        let thinking = self.apart && self.in_reasoning;
        if let (Pick::Token(token), Some(k), false) = (&pick, self.top_logprobs, thinking) {
            self.sampled_logprobs = Some(log_probabilities(ctx.get_logits_ith(at), *token, k));
        }
        pick
    }

    /// The constraint, while it masks the tokens: always for a response
    /// format or forced calls, for an `auto` tool answer once it calls;
    /// never while the model reasons (the answer after it is held).
    fn masking(&mut self) -> Option<&mut Constraint> {
        if self.apart && self.in_reasoning {
            return None;
        }
        match self.calls {
            Calls::Undecided { .. } if !self.shaped => None,
            _ => self.constraint.as_mut(),
        }
    }

    fn pick(&mut self, ctx: &llama_cpp_2::context::LlamaContext<'_>, at: i32) -> Pick {
        let greedy = self.greedy;
        let Some(constraint) = self.masking() else {
            if self.greedy {
                return Pick::Token(LlamaToken(argmax(ctx.get_logits_ith(at)) as i32));
            }
            return Pick::Token(self.sampler.sample(ctx, at));
        };
        let allowed = match constraint.next() {
            Ok(Next::Allowed(allowed)) => allowed,
            Ok(Next::Complete) => return Pick::End(End::Finish(FinishReason::Stop)),
            Err(e) => {
                tracing::warn!(error = %e, "grammar engine failed");
                return Pick::End(End::Fail("the grammar engine failed on this worker"));
            }
        };
        let logits = ctx.get_logits_ith(at);
        let picked = if greedy {
            greedy_within(logits, &allowed)
        } else {
            let mut candidates = Vec::with_capacity(allowed.num_set());
            allowed.iter_set_entries(|i| {
                if let Some(&logit) = logits.get(i) {
                    candidates.push(LlamaTokenData::new(LlamaToken(i as i32), logit, 0.0));
                }
            });
            let mut candidates = LlamaTokenDataArray::new(candidates, false);
            candidates.apply_sampler(&mut self.sampler);
            let token = candidates.selected_token();
            if let Some(token) = token {
                self.sampler.accept(token);
            }
            token
        };
        match picked {
            Some(token) => Pick::Token(token),
            None => Pick::End(End::Fail(
                "the grammar allows no token of this model's vocabulary here",
            )),
        }
    }

    /// Take a sampled token: emit its text, and say whether generation ends.
    pub fn on_token(
        &mut self,
        model: &LlamaModel,
        token: LlamaToken,
        markers: ReasoningMarkers,
    ) -> Option<End> {
        self.generated += 1;
        if self.generated == 1 {
            self.out
                .prompt_read(self.prompt.len() as u64, self.cached_prompt as u64);
        }
        let vocab = model.vocab();
        if vocab.is_eog(token) && !self.ignore_eos {
            return Some(End::Finish(FinishReason::Stop));
        }
        let open = Some(token) == markers.open;
        let close = Some(token) == markers.close;
        if open {
            self.in_reasoning = true;
        }
        let thought = self.in_reasoning;
        if thought {
            self.reasoning += 1;
        }
        if close {
            self.in_reasoning = false;
        }
        let mut piece = Vec::with_capacity(16);
        vocab.token_to_piece_into(token, &mut piece, false, None);
        if self.apart && (thought || open || close) {
            self.unsent_tokens += 1;
            if !open && !close {
                self.thought.extend_from_slice(&piece);
                let text = take_utf8(&mut self.thought);
                self.send_reasoning(text);
            }
            if close {
                self.flush_thought();
            }
            return (self.generated >= self.max_tokens)
                .then_some(End::Finish(FinishReason::Length));
        }
        let complete = match self.masking().map(|c| c.accept(token)) {
            None | Some(Ok(false)) => false,
            Some(Ok(true)) => true,
            Some(Err(e)) => {
                tracing::warn!(error = %e, "grammar engine refused its own token");
                return Some(End::Fail("the grammar engine failed on this worker"));
            }
        };
        if let Some((logprob, top)) = self.sampled_logprobs.take() {
            let top = top
                .into_iter()
                .map(|(t, logprob)| TopLogprob {
                    bytes: vocab.token_to_piece(t, false, None),
                    logprob,
                })
                .collect();
            let entry = TokenLogprob {
                bytes: piece.clone(),
                logprob,
                top,
            };
            self.out.send(Event::Logprobs(vec![entry]));
        }
        self.bytes.extend_from_slice(&piece);
        self.unsent_tokens += 1;
        let text = take_utf8(&mut self.bytes);
        if let Some(end) = self.route(token, text) {
            return Some(end);
        }
        if complete {
            return Some(End::Finish(FinishReason::Stop));
        }
        (self.generated >= self.max_tokens).then_some(End::Finish(FinishReason::Length))
    }

    /// Send `text` (the decoded `token`) where it belongs: the answer's
    /// text, or its calls. Ends the answer when a stop sequence is met.
    fn route(&mut self, token: LlamaToken, text: String) -> Option<End> {
        match &mut self.calls {
            Calls::Off => {
                if text.is_empty() {
                    return None;
                }
                let (out, stopped) = self.stop.push(&text);
                self.send_text(out);
                stopped.then_some(End::Finish(FinishReason::Stop))
            }
            Calls::Calling(reader) => {
                let pieces = reader.push(&text);
                self.send_calls(pieces);
                None
            }
            Calls::Undecided { held, tokens, lead } => {
                held.push_str(&text);
                tokens.push(token);
                let start = held.trim_start();
                if start.is_empty() {
                    *lead = tokens.len();
                }
                match self.tool_format.opening(start) {
                    Opening::Call => {
                        let lead = *lead;
                        let (held, tokens) = (std::mem::take(held), std::mem::take(tokens));
                        self.start_calling(held, &tokens, lead)
                    }
                    Opening::Undecided => None,
                    Opening::Text => {
                        let held = std::mem::take(held);
                        self.calls = Calls::Off;
                        if !self.shaped {
                            // Free text from here; a shaped answer stays held
                            // to its format.
                            self.constraint = None;
                        }
                        self.route(token, held)
                    }
                }
            }
        }
    }

    /// An `auto` answer turned out to be calls: the constraint catches up
    /// with the tokens so far (after the `lead` whitespace ones) and holds
    /// the rest to valid calls.
    fn start_calling(&mut self, held: String, tokens: &[LlamaToken], lead: usize) -> Option<End> {
        // A shaped answer was held to the grammar all along.
        let caught_up = self.shaped
            || self.constraint.as_mut().is_some_and(|c| {
                tokens[lead..]
                    .iter()
                    .all(|t| c.accept(*t).is_ok_and(|complete| !complete))
            });
        if !caught_up {
            // Not a call the grammar knows (e.g. tokenised oddly): text.
            self.calls = Calls::Off;
            self.constraint = None;
            return self.route(tokens[tokens.len() - 1], held);
        }
        let mut reader = self.tool_format.reader();
        let pieces = reader.push(held.trim_start());
        self.calls = Calls::Calling(reader);
        self.send_calls(pieces);
        None
    }

    fn send_calls(&mut self, pieces: Vec<ToolCallChunk>) {
        for mut piece in pieces {
            piece.tokens = std::mem::take(&mut self.unsent_tokens);
            self.out.send(Event::ToolCall(piece));
        }
    }

    fn send_reasoning(&mut self, text: String) {
        if text.is_empty() {
            return;
        }
        let tokens = std::mem::take(&mut self.unsent_tokens);
        self.out.send(Event::Reasoning { text, tokens });
    }

    /// Send what is left of the reasoning (bytes of an unfinished character).
    fn flush_thought(&mut self) {
        if !self.thought.is_empty() {
            let rest = String::from_utf8_lossy(&std::mem::take(&mut self.thought)).into_owned();
            self.send_reasoning(rest);
        }
    }

    fn send_text(&mut self, text: String) {
        if text.is_empty() {
            return;
        }
        let tokens = std::mem::take(&mut self.unsent_tokens);
        self.out.send(Event::Delta { text, tokens });
    }

    /// Flush held-back text and send `Done` with the usage.
    pub fn finish(mut self, mut reason: FinishReason) {
        self.flush_thought();
        match std::mem::replace(&mut self.calls, Calls::Off) {
            Calls::Undecided { held, .. } => {
                let (out, _) = self.stop.push(&held);
                self.send_text(out);
            }
            Calls::Calling(reader) => {
                // Bytes of an unfinished call: not text.
                self.bytes.clear();
                if reader.calls() > 0 && reason == FinishReason::Stop {
                    reason = FinishReason::ToolCalls;
                }
            }
            Calls::Off => {}
        }
        if !self.bytes.is_empty() {
            let rest = String::from_utf8_lossy(&std::mem::take(&mut self.bytes)).into_owned();
            let (out, _) = self.stop.push(&rest);
            self.send_text(out);
        }
        let rest = self.stop.finish();
        self.send_text(rest);
        let usage = Usage {
            prompt_tokens: self.prompt.len() as u64,
            completion_tokens: self.generated as u64,
            cached_prompt_tokens: self.cached_prompt as u64,
            reasoning_tokens: self.reasoning as u64,
        };
        self.out.finish(reason, usage);
    }

    pub fn fail(self, message: &str) {
        self.out.fail(WireError::new(ErrorKind::Internal, message));
    }

    /// The request's reader is gone.
    pub fn is_cancelled(&self) -> bool {
        self.out.is_closed()
    }
}

/// `token`'s log probability under `logits` (a log-softmax over the whole
/// vocabulary) and the `k` most likely tokens with theirs, most likely
/// first (the first of equals first).
fn log_probabilities(logits: &[f32], token: LlamaToken, k: usize) -> (f32, Vec<(LlamaToken, f32)>) {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = logits.iter().map(|l| f64::from(l - max).exp()).sum();
    let log_norm = max + sum.ln() as f32;
    let mut top: Vec<(usize, f32)> = Vec::with_capacity(k + 1);
    if k > 0 {
        for (i, &l) in logits.iter().enumerate() {
            if top.len() == k && l <= top[k - 1].1 {
                continue;
            }
            let at = top.partition_point(|&(_, t)| t >= l);
            top.insert(at, (i, l));
            top.truncate(k);
        }
    }
    let own = logits
        .get(token.0 as usize)
        .copied()
        .unwrap_or(f32::NEG_INFINITY);
    (
        own - log_norm,
        top.into_iter()
            .map(|(i, l)| (LlamaToken(i as i32), l - log_norm))
            .collect(),
    )
}

/// Index of the largest value (the first of equals, as llama.cpp's greedy sampler).
fn argmax(values: &[f32]) -> usize {
    let mut best = 0;
    for (i, v) in values.iter().enumerate() {
        if *v > values[best] {
            best = i;
        }
    }
    best
}

/// The longest valid UTF-8 prefix of `bytes`, removed from it. Invalid bytes
/// (not a mere incomplete tail) are replaced rather than held forever.
fn take_utf8(bytes: &mut Vec<u8>) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) => {
            let s = s.to_string();
            bytes.clear();
            s
        }
        Err(e) if e.error_len().is_none() => {
            let valid = e.valid_up_to();
            let s = String::from_utf8_lossy(&bytes[..valid]).into_owned();
            bytes.drain(..valid);
            s
        }
        Err(_) => String::from_utf8_lossy(&std::mem::take(bytes)).into_owned(),
    }
}

/// OpenAI's sampling parameters as a llama.cpp sampler chain: penalties over the
/// generated tokens, then greedy (temperature 0) or top_p, temperature and a
/// seeded draw (answer `index` of several draws from seed + `index`, so that
/// the answers differ and each repeats). OpenAI's defaults: temperature 1,
/// top_p 1.
fn sampler(p: &SamplingParams, n_vocab: i32, max_tokens: u32, index: u32) -> LlamaSampler {
    let mut chain = Vec::with_capacity(4);
    let presence = p.presence_penalty.unwrap_or(0.0);
    let frequency = p.frequency_penalty.unwrap_or(0.0);
    if presence != 0.0 || frequency != 0.0 {
        // The window covers every token this request can generate.
        let window = max_tokens.min(i32::MAX as u32) as i32;
        chain.push(LlamaSampler::penalties(
            n_vocab, window, 1.0, frequency, presence,
        ));
    }
    let temperature = p.temperature.unwrap_or(1.0);
    if temperature <= 0.0 {
        chain.push(LlamaSampler::greedy());
    } else {
        let top_p = p.top_p.unwrap_or(1.0);
        if top_p < 1.0 {
            chain.push(LlamaSampler::top_p(top_p.max(f32::MIN_POSITIVE), 1));
        }
        chain.push(LlamaSampler::temp(temperature));
        let seed = p.seed.map(|s| s.wrapping_add(u64::from(index)));
        chain.push(LlamaSampler::dist(seed32(seed)));
    }
    LlamaSampler::chain_simple(chain)
}

/// A 32-bit seed for llama.cpp; a fresh random one when the request has none.
/// (llama.cpp reads 0xFFFFFFFF as "random", so that value is never passed.)
fn seed32(seed: Option<u64>) -> u32 {
    let s = match seed {
        Some(s) => (s ^ (s >> 32)) as u32,
        None => rand::random(),
    };
    if s == u32::MAX {
        0
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_split_across_tokens_is_held_back() {
        let mut buf = "é".as_bytes()[..1].to_vec();
        assert_eq!(take_utf8(&mut buf), "");
        buf.extend_from_slice(&"é".as_bytes()[1..]);
        buf.extend_from_slice(b"x");
        assert_eq!(take_utf8(&mut buf), "éx");
        assert!(buf.is_empty());
    }

    #[test]
    fn invalid_bytes_are_not_held_forever() {
        let mut buf = vec![b'a', 0xff, b'b'];
        assert_eq!(take_utf8(&mut buf), "a\u{fffd}b");
    }

    #[test]
    fn log_probabilities_are_a_log_softmax_with_the_top_first() {
        let logits = [1.0f32, 3.0, 2.0, 3.0, -1.0];
        let (own, top) = log_probabilities(&logits, LlamaToken(2), 3);
        let norm: f32 = logits.iter().map(|l| l.exp()).sum::<f32>().ln();
        assert!((own - (2.0 - norm)).abs() < 1e-5);
        let ids: Vec<i32> = top.iter().map(|(t, _)| t.0).collect();
        assert_eq!(
            ids,
            vec![1, 3, 2],
            "most likely first, the first of equals first"
        );
        assert!((top[0].1 - (3.0 - norm)).abs() < 1e-5);
        let total: f32 = logits.iter().map(|l| (l - norm).exp()).sum();
        assert!((total - 1.0).abs() < 1e-5);
        assert!(log_probabilities(&logits, LlamaToken(0), 0).1.is_empty());
    }

    #[test]
    fn argmax_takes_the_first_of_equals() {
        assert_eq!(argmax(&[0.0, 3.0, 1.0, 3.0]), 1);
        assert_eq!(argmax(&[-1.0]), 0);
    }

    #[test]
    fn seeds_never_mean_random_to_llama_cpp() {
        assert_ne!(seed32(Some(u32::MAX as u64)), u32::MAX);
        assert_eq!(seed32(Some(7)), seed32(Some(7)));
    }
}
