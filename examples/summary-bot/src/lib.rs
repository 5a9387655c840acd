//! A messenger bot's backend, as an example of building on Cocoon: it takes
//! a chat's messages (Telegram's export format) over HTTP and answers with a
//! summary or reply drafts, which it asks of the Cocoon network through a
//! client node's OpenAI-compatible API. The bot never sees a model or a GPU;
//! the prompts it builds are sealed by the client node to attested workers.
//!
//! * `POST /summarize` `{"chat": <result.json>, "last": N?, "since": "YYYY-MM-DD"?}`
//!   -> `{"summary": {"text", "messages", "chunks", "levels"}, "spent": {...}}`
//! * `POST /drafts` `{"chat": <result.json>, "me": "Name"?, "count": 3?}`
//!   -> `{"drafts": {"reply_to", "from", "drafts": [...]}, "spent": {...}}`
//!
//! Errors are `{"error": {"message", "field"}}`: 400 naming the field of a
//! malformed chat (`chat.messages[3].date`), 502 when the network fails.

#![forbid(unsafe_code)]

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use cocoon_messenger::chat_export::{self, ChatExport};
use cocoon_messenger::summarize::{self, Selection, Summarizer};
use serde::Deserialize;
use serde_json::{json, Value};

/// Where the client node's API is, e.g. `http://127.0.0.1:8080/v1`.
#[derive(Clone)]
pub struct Bot {
    pub api: String,
    /// Longest answer per request, tokens.
    pub max_tokens: u32,
}

pub fn router(bot: Bot) -> Router {
    Router::new()
        .route("/summarize", post(summarize_chat))
        .route("/drafts", post(draft_replies))
        .with_state(bot)
}

struct BotError {
    status: StatusCode,
    message: String,
    field: Option<String>,
}

impl BotError {
    fn bad(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            field: Some(field.into()),
        }
    }

    /// What the network answered, or, for a chat with nothing to
    /// summarise or reply to, the caller's mistake (400, naming `chat`).
    fn network(error: summarize::SummarizeError) -> Self {
        use summarize::SummarizeError::{NothingSelected, NothingToReplyTo};
        match error {
            NothingSelected | NothingToReplyTo(_) => Self::bad("chat", error.to_string()),
            _ => Self {
                status: StatusCode::BAD_GATEWAY,
                message: error.to_string(),
                field: None,
            },
        }
    }
}

impl IntoResponse for BotError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"message": self.message, "field": self.field}});
        (self.status, Json(body)).into_response()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SummarizeRequest {
    chat: Value,
    #[serde(default)]
    last: Option<usize>,
    #[serde(default)]
    since: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DraftsRequest {
    chat: Value,
    #[serde(default)]
    me: Option<String>,
    #[serde(default = "three")]
    count: usize,
}

fn three() -> usize {
    3
}

/// The body as `T`, or 400 naming what is wrong.
fn body<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, BotError> {
    serde_json::from_slice(bytes).map_err(|e| BotError::bad("body", e.to_string()))
}

fn parse_chat(chat: &Value) -> Result<ChatExport, BotError> {
    let bytes = serde_json::to_vec(chat).map_err(|e| BotError::bad("chat", e.to_string()))?;
    chat_export::parse(&bytes).map_err(|e| BotError::bad(format!("chat.{}", e.field), e.message))
}

async fn summarizer(bot: &Bot) -> Result<Summarizer, BotError> {
    let mut s = Summarizer::connect(&bot.api, None, None)
        .await
        .map_err(BotError::network)?;
    s.max_tokens = bot.max_tokens;
    Ok(s)
}

async fn summarize_chat(
    State(bot): State<Bot>,
    request: axum::body::Bytes,
) -> Result<Json<Value>, BotError> {
    let request: SummarizeRequest = body(&request)?;
    let chat = parse_chat(&request.chat)?;
    let selection = match (request.last, request.since) {
        (Some(0), _) => return Err(BotError::bad("last", "must be at least 1")),
        (Some(n), None) => Selection::Last(n),
        (Some(_), Some(_)) => return Err(BotError::bad("since", "give last or since, not both")),
        (None, Some(date)) => {
            Selection::since(&date).map_err(|e| BotError::bad("since", e.to_string()))?
        }
        (None, None) => Selection::All,
    };
    let mut s = summarizer(&bot).await?;
    let summary = s
        .summarize(&chat, &selection, |_, _| {})
        .await
        .map_err(BotError::network)?;
    Ok(Json(json!({"summary": summary, "spent": spent(&s)})))
}

async fn draft_replies(
    State(bot): State<Bot>,
    request: axum::body::Bytes,
) -> Result<Json<Value>, BotError> {
    let request: DraftsRequest = body(&request)?;
    if !(1..=10).contains(&request.count) {
        return Err(BotError::bad("count", "must be between 1 and 10"));
    }
    let chat = parse_chat(&request.chat)?;
    let me = match request.me {
        Some(me) => me,
        None => summarize::me_in_personal_chat(&chat).ok_or_else(|| {
            BotError::bad(
                "me",
                "name the user (only a personal chat tells who they are)",
            )
        })?,
    };
    let mut s = summarizer(&bot).await?;
    let drafts = s
        .drafts(&chat, &me, request.count)
        .await
        .map_err(BotError::network)?;
    Ok(Json(json!({"drafts": drafts, "spent": spent(&s)})))
}

fn spent(s: &Summarizer) -> Value {
    json!({
        "requests": s.spent.requests,
        "prompt_tokens": s.spent.prompt_tokens,
        "completion_tokens": s.spent.completion_tokens,
        "cost_nano": s.spent.cost_nano.map(|c| c.to_string()),
    })
}
