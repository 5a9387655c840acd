//! Running one validated request on the backend and answering it: a JSON body, or
//! Server-Sent Events ending in `data: [DONE]`. Errors before the first token get
//! their HTTP status; errors after it arrive as an `error` event in the stream.
//! Dropping the response (the app hung up) drops the backend stream, which cancels
//! the request all the way to the worker.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::http::header;
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use cocoon_protocol::openai::{
    ApiTokenLogprob, ApiToolCall, ChatChoice, ChatCompletion, ChatCompletionChunk, ChoiceLogprobs,
    ChunkChoice, CocoonExtension, Completion, CompletionChoice, Delta, DeltaToolCall, ReceiptJson,
    ResponseMessage, Usage as ApiUsage,
};
use cocoon_protocol::{Done, ErrorKind, Event, TokenLogprob, ToolCall, ToolCallChunk, WireError};
use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use tokio::sync::OwnedSemaphorePermit;

use super::validate::Validated;
use super::{ApiError, App};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Chat,
    Completion,
}

pub async fn run(app: Arc<App>, v: Validated, endpoint: Endpoint) -> Result<Response, ApiError> {
    let permit = app.slots.clone().try_acquire_owned().map_err(|_| {
        ApiError::overloaded(format!(
            "This client node is already running its limit of {} concurrent requests; retry shortly.",
            app.settings.max_concurrent_requests
        ))
    })?;
    let started = Instant::now();
    let model = v.request.model.clone();
    let wants_logprobs = v.request.params.logprobs.is_some();
    let n = v.request.params.choices();
    let prefs = cocoon_protocol::RoutingPrefs {
        max_coefficient: v.max_coefficient.or(app.settings.routing.max_coefficient),
        sort: v.sort.unwrap_or(app.settings.routing.sort),
        needs: v.request.needs(),
    };
    let timer = app.settings.metrics.request(&model);
    let mut events = cocoon_metrics::metered(timer, app.backend.generate(v.request, prefs));
    let first = match tokio::time::timeout(app.settings.first_token_timeout, events.next()).await {
        Err(_) => {
            return Err(ApiError::timeout(format!(
                "No answer from the network within {} s.",
                app.settings.first_token_timeout.as_secs()
            )))
        }
        Ok(None) => {
            return Err(
                WireError::new(ErrorKind::Internal, "the backend ended without an answer").into(),
            )
        }
        Ok(Some(Event::Error(e))) => return Err(e.into()),
        Ok(Some(event)) => event,
    };
    let answer = Answer {
        logprobs: wants_logprobs,
        n,
        billing: app.settings.billing.clone(),
        id: response_id(endpoint),
        created: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        model,
        endpoint,
    };
    let events = futures::stream::iter([first]).chain(events).boxed();
    if v.stream {
        Ok(stream_answer(
            answer,
            events,
            v.include_usage,
            app.settings.idle_timeout,
            permit,
            started,
        ))
    } else {
        collect_answer(answer, events, app.settings.idle_timeout, permit, started).await
    }
}

fn response_id(endpoint: Endpoint) -> String {
    let prefix = match endpoint {
        Endpoint::Chat => "chatcmpl",
        Endpoint::Completion => "cmpl",
    };
    format!("{prefix}-{:032x}", rand::random::<u128>())
}

/// What every chunk of one answer repeats.
struct Answer {
    id: String,
    created: u64,
    model: String,
    endpoint: Endpoint,
    /// Prices the answer's cost, when this node pays on TON.
    billing: Option<Arc<crate::Billing>>,
    /// The request asked for log probabilities.
    logprobs: bool,
    /// How many answers it asked for.
    n: u32,
}

fn json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("response types serialize")
}

/// What one streamed chunk carries. With no text, role, finish reason or
/// log probabilities it has no choice (the usage chunk).
#[derive(Default)]
struct ChunkParts {
    /// Which answer of several it belongs to.
    index: u32,
    text: Option<String>,
    role: bool,
    finish: Option<&'static str>,
    usage: Option<ApiUsage>,
    cocoon: Option<CocoonExtension>,
    logprobs: Vec<TokenLogprob>,
}

/// One answer of several (or the one), gathered for a whole response.
#[derive(Default)]
struct Collected {
    text: String,
    reasoning: String,
    calls: Vec<ToolCall>,
    logprobs: Vec<TokenLogprob>,
}

/// Why answer `index` ended.
fn finish_of(done: &Done, index: usize) -> &'static str {
    done.finishes
        .get(index)
        .copied()
        .unwrap_or(done.finish_reason)
        .as_str()
}

impl Answer {
    /// One streamed chunk, as JSON text.
    fn chunk(&self, p: ChunkParts) -> String {
        let has_choice = p.text.is_some() || p.role || p.finish.is_some() || !p.logprobs.is_empty();
        let logprobs = (!p.logprobs.is_empty()).then(|| ChoiceLogprobs {
            content: p.logprobs.iter().map(ApiTokenLogprob::from).collect(),
        });
        let finish_reason = p.finish.map(str::to_string);
        match self.endpoint {
            Endpoint::Chat => json(&ChatCompletionChunk {
                id: self.id.clone(),
                object: "chat.completion.chunk".into(),
                created: self.created,
                model: self.model.clone(),
                choices: has_choice
                    .then(|| ChunkChoice {
                        index: p.index,
                        delta: Delta {
                            role: p.role.then(|| "assistant".to_string()),
                            content: p.text,
                            ..Delta::default()
                        },
                        finish_reason,
                        logprobs,
                    })
                    .into_iter()
                    .collect(),
                usage: p.usage,
                cocoon: p.cocoon,
            }),
            Endpoint::Completion => json(
                &self.completion(
                    has_choice
                        .then(|| CompletionChoice {
                            index: p.index,
                            text: p.text.unwrap_or_default(),
                            finish_reason,
                        })
                        .into_iter()
                        .collect(),
                    p.usage,
                    p.cocoon,
                ),
            ),
        }
    }

    /// One streamed chunk with a piece of a function call (chat only).
    fn call_chunk(&self, index: u32, piece: &ToolCallChunk) -> String {
        self.delta_chunk(
            index,
            Delta {
                tool_calls: Some(vec![DeltaToolCall::from(piece)]),
                ..Delta::default()
            },
        )
    }

    /// One streamed chunk of reasoning (chat only).
    fn reasoning_chunk(&self, index: u32, text: String) -> String {
        self.delta_chunk(
            index,
            Delta {
                reasoning_content: Some(text),
                ..Delta::default()
            },
        )
    }

    /// One streamed chat chunk carrying `delta` alone.
    fn delta_chunk(&self, index: u32, delta: Delta) -> String {
        json(&ChatCompletionChunk {
            id: self.id.clone(),
            object: "chat.completion.chunk".into(),
            created: self.created,
            model: self.model.clone(),
            choices: vec![ChunkChoice {
                index,
                delta,
                finish_reason: None,
                logprobs: None,
            }],
            usage: None,
            cocoon: None,
        })
    }

    /// The whole response, every answer in it, as JSON text.
    fn full(&self, answers: Vec<Collected>, done: &Done) -> String {
        let usage = Some(ApiUsage::from(done.usage));
        let cocoon = extension(done, self.billing.as_deref());
        match self.endpoint {
            Endpoint::Chat => json(&ChatCompletion {
                id: self.id.clone(),
                object: "chat.completion".into(),
                created: self.created,
                model: self.model.clone(),
                choices: answers
                    .into_iter()
                    .enumerate()
                    .map(|(i, a)| ChatChoice {
                        index: i as u32,
                        message: ResponseMessage {
                            role: "assistant".into(),
                            // OpenAI's shape: no content beside calls.
                            content: (a.calls.is_empty() || !a.text.is_empty()).then_some(a.text),
                            reasoning_content: (!a.reasoning.is_empty()).then_some(a.reasoning),
                            tool_calls: a.calls.iter().map(ApiToolCall::from).collect(),
                        },
                        finish_reason: Some(finish_of(done, i).to_string()),
                        logprobs: self.logprobs.then(|| ChoiceLogprobs {
                            content: a.logprobs.iter().map(ApiTokenLogprob::from).collect(),
                        }),
                    })
                    .collect(),
                usage,
                cocoon,
            }),
            Endpoint::Completion => json(
                &self.completion(
                    answers
                        .into_iter()
                        .enumerate()
                        .map(|(i, a)| CompletionChoice {
                            index: i as u32,
                            text: a.text,
                            finish_reason: Some(finish_of(done, i).to_string()),
                        })
                        .collect(),
                    usage,
                    cocoon,
                ),
            ),
        }
    }

    /// `text_completion` objects are the same for chunks and whole answers.
    fn completion(
        &self,
        choices: Vec<CompletionChoice>,
        usage: Option<ApiUsage>,
        cocoon: Option<CocoonExtension>,
    ) -> Completion {
        Completion {
            id: self.id.clone(),
            object: "text_completion".into(),
            created: self.created,
            model: self.model.clone(),
            choices,
            usage,
            cocoon,
        }
    }

    /// The answer a `Choice` event names, if the request asked for it.
    fn index(&self, i: u32) -> Result<usize, ApiError> {
        if i < self.n {
            Ok(i as usize)
        } else {
            Err(WireError::new(
                ErrorKind::Upstream,
                format!("the engine sent answer {i} of a request for {}", self.n),
            )
            .into())
        }
    }
}

/// The receipt of `done` for the answer's `cocoon` field. Receipts reach here
/// only after the client node has verified them (see `pool`).
fn extension(done: &Done, billing: Option<&crate::Billing>) -> Option<CocoonExtension> {
    done.receipt.as_ref().map(|r| CocoonExtension {
        receipt: ReceiptJson::new(r, true),
        cost_nano: billing
            .and_then(|b| b.cost(&done.usage, r.receipt.price_coefficient))
            .map(|c| c.to_string()),
    })
}

fn log_done(model: &str, done: &Done, started: Instant, stream: bool) {
    // Counts and timing only: prompts and completions are never logged.
    tracing::info!(
        model,
        stream,
        prompt_tokens = done.usage.prompt_tokens,
        completion_tokens = done.usage.completion_tokens,
        finish_reason = done.finish_reason.as_str(),
        ms = started.elapsed().as_millis() as u64,
        "request served"
    );
}

/// What the next event of an answer means to the HTTP side.
enum Step {
    /// What follows belongs to this answer of several.
    Choice(u32),
    Text(String),
    Reasoning(String),
    Call(ToolCallChunk),
    Logprobs(Vec<TokenLogprob>),
    Done(Box<Done>),
}

/// The next piece of text or the end of the answer; a stall longer than `idle`,
/// an error, or a stream that ends without a result is an [`ApiError`].
async fn next_step(
    events: &mut BoxStream<'static, Event>,
    idle: Duration,
) -> Result<Step, ApiError> {
    loop {
        let event = tokio::time::timeout(idle, events.next())
            .await
            .map_err(|_| {
                ApiError::timeout(format!(
                    "The answer stalled for more than {} s.",
                    idle.as_secs()
                ))
            })?;
        // Running totals and an engine's counts are bookkeeping, not answer.
        if !matches!(event, Some(Event::Progress(_) | Event::Usage(_))) {
            return step(event);
        }
    }
}

/// What `event` means to the HTTP side.
fn step(event: Option<Event>) -> Result<Step, ApiError> {
    match event {
        Some(Event::Delta { text, .. }) => Ok(Step::Text(text)),
        Some(Event::Reasoning { text, .. }) => Ok(Step::Reasoning(text)),
        Some(Event::Choice(i)) => Ok(Step::Choice(i)),
        Some(Event::ToolCall(piece)) => Ok(Step::Call(piece)),
        Some(Event::Logprobs(l)) => Ok(Step::Logprobs(l)),
        Some(Event::Done(done)) => Ok(Step::Done(Box::new(done))),
        Some(Event::Error(e)) => Err(e.into()),
        // The backend opens sealed chunks before they get here.
        Some(
            Event::Sealed { .. }
            | Event::SealedError { .. }
            | Event::Models(_)
            | Event::WorkerKeys(_)
            | Event::Account(_)
            | Event::Voucher(_)
            | Event::Progress(_)
            | Event::Usage(_),
        )
        | None => {
            Err(WireError::new(ErrorKind::Internal, "the answer ended without a result").into())
        }
    }
}

async fn collect_answer(
    answer: Answer,
    mut events: BoxStream<'static, Event>,
    idle: Duration,
    _permit: OwnedSemaphorePermit,
    started: Instant,
) -> Result<Response, ApiError> {
    let mut answers: Vec<Collected> = (0..answer.n).map(|_| Collected::default()).collect();
    let mut current = 0;
    loop {
        match next_step(&mut events, idle).await? {
            Step::Choice(i) => current = answer.index(i)?,
            Step::Text(t) => answers[current].text.push_str(&t),
            Step::Reasoning(t) => answers[current].reasoning.push_str(&t),
            Step::Call(piece) => add_piece(&mut answers[current].calls, piece)?,
            Step::Logprobs(l) => answers[current].logprobs.extend(l),
            Step::Done(done) => {
                log_done(&answer.model, &done, started, false);
                let body = answer.full(answers, &done);
                return Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response());
            }
        }
    }
}

/// Add a streamed piece to the calls it belongs to: a piece with a name
/// opens call `index` (the next one), the others extend its arguments.
fn add_piece(calls: &mut Vec<ToolCall>, piece: ToolCallChunk) -> Result<(), ApiError> {
    let index = piece.index as usize;
    match piece.name {
        Some(name) if index == calls.len() => calls.push(ToolCall {
            id: piece.id.unwrap_or_default(),
            name,
            arguments: piece.arguments,
        }),
        None if index + 1 == calls.len() => calls[index].arguments.push_str(&piece.arguments),
        _ => {
            return Err(WireError::new(
                ErrorKind::Upstream,
                "the engine's tool calls arrived out of order",
            )
            .into())
        }
    }
    Ok(())
}

fn stream_answer(
    answer: Answer,
    events: BoxStream<'static, Event>,
    include_usage: bool,
    idle: Duration,
    permit: OwnedSemaphorePermit,
    started: Instant,
) -> Response {
    let state = StreamState {
        answer,
        events,
        include_usage,
        idle,
        _permit: permit,
        started,
        queued: VecDeque::new(),
        phase: Phase::Start,
        logprobs: Vec::new(),
        current: 0,
    };
    Sse::new(sse_events(state)).into_response()
}

enum Phase {
    Start,
    Body,
    Ended,
}

struct StreamState {
    answer: Answer,
    events: BoxStream<'static, Event>,
    include_usage: bool,
    idle: Duration,
    _permit: OwnedSemaphorePermit,
    started: Instant,
    queued: VecDeque<SseEvent>,
    phase: Phase,
    /// Log probabilities waiting for the chunk their text goes out in.
    logprobs: Vec<TokenLogprob>,
    /// The answer the events are for now (of `answer.n`).
    current: u32,
}

fn sse_events(state: StreamState) -> impl Stream<Item = Result<SseEvent, Infallible>> {
    futures::stream::unfold(state, |mut s| async move {
        loop {
            if let Some(event) = s.queued.pop_front() {
                return Some((Ok(event), s));
            }
            match s.phase {
                Phase::Ended => return None,
                Phase::Start => {
                    s.phase = Phase::Body;
                    if s.answer.endpoint == Endpoint::Chat {
                        for index in 0..s.answer.n {
                            let first = s.answer.chunk(ChunkParts {
                                index,
                                text: Some(String::new()),
                                role: true,
                                ..ChunkParts::default()
                            });
                            s.queued.push_back(SseEvent::default().data(first));
                        }
                    }
                }
                Phase::Body => match next_step(&mut s.events, s.idle).await {
                    Ok(Step::Choice(i)) => match s.answer.index(i) {
                        Ok(i) => s.current = i as u32,
                        Err(error) => {
                            s.queued
                                .push_back(SseEvent::default().data(json(&error.body())));
                            s.phase = Phase::Ended;
                        }
                    },
                    Ok(Step::Text(text)) => {
                        if !text.is_empty() {
                            let chunk = s.answer.chunk(ChunkParts {
                                index: s.current,
                                text: Some(text),
                                logprobs: std::mem::take(&mut s.logprobs),
                                ..ChunkParts::default()
                            });
                            s.queued.push_back(SseEvent::default().data(chunk));
                        }
                    }
                    Ok(Step::Reasoning(text)) => {
                        // Legacy completions have no place for it: their
                        // text is the answer alone.
                        if !text.is_empty() && s.answer.endpoint == Endpoint::Chat {
                            let chunk = s.answer.reasoning_chunk(s.current, text);
                            s.queued.push_back(SseEvent::default().data(chunk));
                        }
                    }
                    Ok(Step::Logprobs(l)) => {
                        s.logprobs.extend(l);
                    }
                    Ok(Step::Call(piece)) => {
                        let chunk = s.answer.call_chunk(s.current, &piece);
                        s.queued.push_back(SseEvent::default().data(chunk));
                    }
                    Ok(Step::Done(done)) => {
                        log_done(&s.answer.model, &done, s.started, true);
                        // One finish chunk per answer; the receipt on the last.
                        let last = s.answer.n - 1;
                        for index in 0..s.answer.n {
                            let chunk = s.answer.chunk(ChunkParts {
                                index,
                                finish: Some(finish_of(&done, index as usize)),
                                cocoon: (index == last)
                                    .then(|| extension(&done, s.answer.billing.as_deref()))
                                    .flatten(),
                                logprobs: if index == s.current {
                                    std::mem::take(&mut s.logprobs)
                                } else {
                                    Vec::new()
                                },
                                ..ChunkParts::default()
                            });
                            s.queued.push_back(SseEvent::default().data(chunk));
                        }
                        if s.include_usage {
                            let usage = s.answer.chunk(ChunkParts {
                                usage: Some(done.usage.into()),
                                ..ChunkParts::default()
                            });
                            s.queued.push_back(SseEvent::default().data(usage));
                        }
                        s.queued.push_back(SseEvent::default().data("[DONE]"));
                        s.phase = Phase::Ended;
                    }
                    Err(error) => {
                        // Headers are sent: the error becomes the stream's last event.
                        s.queued
                            .push_back(SseEvent::default().data(json(&error.body())));
                        s.phase = Phase::Ended;
                    }
                },
            }
        }
    })
}
