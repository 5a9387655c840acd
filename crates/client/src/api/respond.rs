//! Running one validated request on the backend and answering it: a JSON body, or
//! Server-Sent Events ending in `data: [DONE]`. Errors before the first token get
//! their HTTP status; errors after it arrive as an `error` event in the stream.
//! Dropping the response (the app hung up) drops the backend stream, which cancels
//! the request all the way to the worker.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use cocoon_protocol::openai::{
    ChatChoice, ChatCompletion, ChatCompletionChunk, ChunkChoice, Completion, CompletionChoice,
    Delta, ResponseMessage, Usage as ApiUsage,
};
use cocoon_protocol::{Done, ErrorKind, Event, WireError};
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
    let mut events = app.backend.generate(v.request);
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
}

impl Answer {
    fn chunk(
        &self,
        text: Option<String>,
        role: bool,
        finish: Option<&str>,
        usage: Option<ApiUsage>,
    ) -> serde_json::Value {
        let no_choice = text.is_none() && !role && finish.is_none();
        match self.endpoint {
            Endpoint::Chat => serde_json::to_value(ChatCompletionChunk {
                id: self.id.clone(),
                object: "chat.completion.chunk".into(),
                created: self.created,
                model: self.model.clone(),
                choices: if no_choice {
                    vec![]
                } else {
                    vec![ChunkChoice {
                        index: 0,
                        delta: Delta {
                            role: role.then(|| "assistant".to_string()),
                            content: text,
                        },
                        finish_reason: finish.map(str::to_string),
                    }]
                },
                usage,
            }),
            Endpoint::Completion => serde_json::to_value(Completion {
                id: self.id.clone(),
                object: "text_completion".into(),
                created: self.created,
                model: self.model.clone(),
                choices: if no_choice {
                    vec![]
                } else {
                    vec![CompletionChoice {
                        index: 0,
                        text: text.unwrap_or_default(),
                        finish_reason: finish.map(str::to_string),
                    }]
                },
                usage,
            }),
        }
        .expect("response types serialize")
    }

    fn full(&self, text: String, done: &Done) -> serde_json::Value {
        let usage = Some(ApiUsage::from(done.usage));
        let finish_reason = Some(done.finish_reason.as_str().to_string());
        match self.endpoint {
            Endpoint::Chat => serde_json::to_value(ChatCompletion {
                id: self.id.clone(),
                object: "chat.completion".into(),
                created: self.created,
                model: self.model.clone(),
                choices: vec![ChatChoice {
                    index: 0,
                    message: ResponseMessage {
                        role: "assistant".into(),
                        content: text,
                    },
                    finish_reason,
                }],
                usage,
            }),
            Endpoint::Completion => serde_json::to_value(Completion {
                id: self.id.clone(),
                object: "text_completion".into(),
                created: self.created,
                model: self.model.clone(),
                choices: vec![CompletionChoice {
                    index: 0,
                    text,
                    finish_reason,
                }],
                usage,
            }),
        }
        .expect("response types serialize")
    }
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

async fn collect_answer(
    answer: Answer,
    mut events: BoxStream<'static, Event>,
    idle: Duration,
    _permit: OwnedSemaphorePermit,
    started: Instant,
) -> Result<Response, ApiError> {
    let mut text = String::new();
    loop {
        let event = tokio::time::timeout(idle, events.next())
            .await
            .map_err(|_| {
                ApiError::timeout(format!(
                    "The answer stalled for more than {} s.",
                    idle.as_secs()
                ))
            })?;
        match event {
            Some(Event::Delta { text: t, .. }) => text.push_str(&t),
            Some(Event::Done(done)) => {
                log_done(&answer.model, &done, started, false);
                return Ok(Json(answer.full(text, &done)).into_response());
            }
            Some(Event::Error(e)) => return Err(e.into()),
            Some(Event::Models(_)) | None => {
                return Err(WireError::new(
                    ErrorKind::Internal,
                    "the answer ended without a result",
                )
                .into())
            }
        }
    }
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
        queued: std::collections::VecDeque::new(),
        phase: Phase::Start,
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
    queued: std::collections::VecDeque<SseEvent>,
    phase: Phase,
}

fn json_event(value: &serde_json::Value) -> SseEvent {
    SseEvent::default().data(value.to_string())
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
                        let first = s.answer.chunk(Some(String::new()), true, None, None);
                        s.queued.push_back(json_event(&first));
                    }
                }
                Phase::Body => match tokio::time::timeout(s.idle, s.events.next()).await {
                    Ok(Some(Event::Delta { text, .. })) => {
                        if !text.is_empty() {
                            s.queued.push_back(json_event(&s.answer.chunk(
                                Some(text),
                                false,
                                None,
                                None,
                            )));
                        }
                    }
                    Ok(Some(Event::Done(done))) => {
                        log_done(&s.answer.model, &done, s.started, true);
                        let last =
                            s.answer
                                .chunk(None, false, Some(done.finish_reason.as_str()), None);
                        s.queued.push_back(json_event(&last));
                        if s.include_usage {
                            let usage = s.answer.chunk(None, false, None, Some(done.usage.into()));
                            s.queued.push_back(json_event(&usage));
                        }
                        s.queued.push_back(SseEvent::default().data("[DONE]"));
                        s.phase = Phase::Ended;
                    }
                    Ok(Some(Event::Error(e))) => {
                        let error = ApiError::from(e);
                        s.queued.push_back(json_event(
                            &serde_json::to_value(error.body()).unwrap_or_default(),
                        ));
                        s.phase = Phase::Ended;
                    }
                    Ok(Some(Event::Models(_))) | Ok(None) => {
                        let error = ApiError::from(WireError::new(
                            ErrorKind::Internal,
                            "the answer ended without a result",
                        ));
                        s.queued.push_back(json_event(
                            &serde_json::to_value(error.body()).unwrap_or_default(),
                        ));
                        s.phase = Phase::Ended;
                    }
                    Err(_) => {
                        let error = ApiError::timeout(format!(
                            "The answer stalled for more than {} s.",
                            s.idle.as_secs()
                        ));
                        s.queued.push_back(json_event(
                            &serde_json::to_value(error.body()).unwrap_or_default(),
                        ));
                        s.phase = Phase::Ended;
                    }
                },
            }
        }
    })
}
