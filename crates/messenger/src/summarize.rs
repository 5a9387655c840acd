//! Summaries and reply drafts of an exported chat, asked of the Cocoon
//! network through a client node's OpenAI-compatible API. A chat longer
//! than the model's context is split into chunks that fit, each chunk is
//! summarised, and the partial summaries are summarised again (and again,
//! while they do not fit) into one. The cost of every answer (the node's
//! `cocoon.cost_nano`) is added up.

use std::collections::HashMap;

use serde_json::{json, Value};

use crate::chat_export::{ChatExport, ExportedMessage};

/// Which messages to summarise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    All,
    /// The last N messages.
    Last(usize),
    /// Messages at or after this date (`YYYY-MM-DD` or `YYYY-MM-DDTHH:MM:SS`).
    Since(String),
}

/// Why a summary or drafts could not be made.
#[derive(Debug, thiserror::Error)]
pub enum SummarizeError {
    #[error("expected YYYY-MM-DD or YYYY-MM-DDTHH:MM:SS, got {0:?}")]
    Date(String),
    /// The node could not be reached or answered something unreadable.
    #[error("{0}")]
    Http(String),
    #[error("the network serves no model {}", .0.as_ref().map(|m| format!("{m:?}")).unwrap_or_else(|| "yet".into()))]
    NoModel(Option<String>),
    #[error("the network answered {status}: {message}")]
    Refused { status: u16, message: String },
    #[error("no messages with text or media in the selection")]
    NothingSelected,
    #[error("no message from anyone but {0} to reply to")]
    NothingToReplyTo(String),
}

impl Selection {
    /// `Since` from `YYYY-MM-DD` (from midnight) or `YYYY-MM-DDTHH:MM:SS`.
    pub fn since(date: &str) -> Result<Self, SummarizeError> {
        let full = if date.len() == 10 {
            format!("{date}T00:00:00")
        } else {
            date.to_string()
        };
        if crate::chat_export::is_export_date(&full) {
            Ok(Selection::Since(full))
        } else {
            Err(SummarizeError::Date(date.to_string()))
        }
    }
}

/// What a summary cost and took.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Spent {
    /// Chat completions asked.
    pub requests: usize,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// Sum of the answers' costs, nano-TON (`None` when the node does not bill).
    pub cost_nano: Option<u128>,
}

impl Spent {
    fn add(&mut self, answer: &Value) {
        self.requests += 1;
        self.prompt_tokens += answer["usage"]["prompt_tokens"].as_u64().unwrap_or(0);
        self.completion_tokens += answer["usage"]["completion_tokens"].as_u64().unwrap_or(0);
        if let Some(cost) = answer["cocoon"]["cost_nano"]
            .as_str()
            .and_then(|c| c.parse::<u128>().ok())
        {
            self.cost_nano = Some(self.cost_nano.unwrap_or(0) + cost);
        }
    }
}

/// A summary, and what it took.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Summary {
    pub text: String,
    /// Messages summarised (service messages and empty ones left out).
    pub messages: usize,
    /// Chunks at the first level.
    pub chunks: usize,
    /// Levels of summaries (1: the chat fitted in one request).
    pub levels: usize,
}

/// Asks a client node.
pub struct Summarizer {
    http: reqwest::Client,
    /// e.g. `http://127.0.0.1:8080/v1`.
    api: String,
    api_key: Option<String>,
    pub model: String,
    /// The model's context, tokens.
    pub context_tokens: u32,
    /// Longest answer asked for, tokens.
    pub max_tokens: u32,
    pub spent: Spent,
}

/// Bytes of chat per token of context budget: conservative for scripts
/// whose characters take several bytes and tokens (Cyrillic, CJK).
const BYTES_PER_TOKEN: usize = 2;
/// Tokens of instructions and chat template around each chunk.
const OVERHEAD_TOKENS: u32 = 160;

impl Summarizer {
    /// For `model` on the node at `api` (none: the first model it lists);
    /// its context length from `/v1/models` (2048 when not announced).
    pub async fn connect(
        api: &str,
        model: Option<&str>,
        api_key: Option<String>,
    ) -> Result<Self, SummarizeError> {
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(600))
            .build()
            .map_err(|e| SummarizeError::Http(e.to_string()))?;
        let api = api.trim_end_matches('/').to_string();
        let mut request = http.get(format!("{api}/models"));
        if let Some(key) = &api_key {
            request = request.bearer_auth(key);
        }
        let listed: Value = request
            .send()
            .await
            .map_err(|e| SummarizeError::Http(format!("{api}/models: {e}")))?
            .json()
            .await
            .map_err(|e| SummarizeError::Http(format!("{api}/models: {e}")))?;
        let models = listed["data"].as_array().ok_or_else(|| {
            SummarizeError::Http(format!("{api}/models: no model list in {listed}"))
        })?;
        let entry = match model {
            Some(name) => models
                .iter()
                .find(|m| m["id"] == name)
                .ok_or_else(|| SummarizeError::NoModel(Some(name.to_string())))?,
            None => models.first().ok_or(SummarizeError::NoModel(None))?,
        };
        Ok(Self {
            http,
            api,
            api_key,
            model: entry["id"].as_str().unwrap_or_default().to_string(),
            context_tokens: entry["context_length"].as_u64().unwrap_or(2048) as u32,
            max_tokens: 256,
            spent: Spent::default(),
        })
    }

    /// Bytes of chat that fit one request.
    fn chunk_bytes(&self) -> usize {
        let budget = self
            .context_tokens
            .saturating_sub(self.max_tokens + OVERHEAD_TOKENS)
            .max(64);
        budget as usize * BYTES_PER_TOKEN
    }

    async fn ask(
        &mut self,
        system: &str,
        user: &str,
        extra: Value,
    ) -> Result<String, SummarizeError> {
        let mut body = json!({
            "model": self.model,
            "messages": [
                {"role": "system", "content": system},
                {"role": "user", "content": user},
            ],
            "max_tokens": self.max_tokens,
        });
        for (k, v) in extra.as_object().into_iter().flatten() {
            body[k] = v.clone();
        }
        let mut request = self
            .http
            .post(format!("{}/chat/completions", self.api))
            .json(&body);
        if let Some(key) = &self.api_key {
            request = request.bearer_auth(key);
        }
        let response = request
            .send()
            .await
            .map_err(|e| SummarizeError::Http(format!("{}/chat/completions: {e}", self.api)))?;
        let status = response.status();
        let answer: Value = response
            .json()
            .await
            .map_err(|e| SummarizeError::Http(format!("{}/chat/completions: {e}", self.api)))?;
        if !status.is_success() {
            return Err(SummarizeError::Refused {
                status: status.as_u16(),
                message: answer["error"]["message"]
                    .as_str()
                    .unwrap_or("(no message)")
                    .to_string(),
            });
        }
        self.spent.add(&answer);
        Ok(answer["choices"][0]["message"]["content"]
            .as_str()
            .unwrap_or_default()
            .trim()
            .to_string())
    }

    /// Summarise the `selection` of `chat`; `progress(done, total)` after
    /// each chunk (the total grows when partial summaries need another level).
    pub async fn summarize(
        &mut self,
        chat: &ChatExport,
        selection: &Selection,
        mut progress: impl FnMut(usize, usize),
    ) -> Result<Summary, SummarizeError> {
        let lines = transcript(chat, selection);
        if lines.is_empty() {
            return Err(SummarizeError::NothingSelected);
        }
        let messages = lines.len();
        let system = "You summarize chat conversations. Write the summary in the same language as the messages. Say who said what. Be brief and factual.";
        let mut pieces = chunks(&lines, self.chunk_bytes());
        let first_level = pieces.len();
        let (mut done, mut total, mut levels) = (0, pieces.len(), 0);
        let title = if chat.name.is_empty() {
            String::new()
        } else {
            format!(" \"{}\"", chat.name)
        };
        loop {
            levels += 1;
            let mut summaries = Vec::with_capacity(pieces.len());
            for piece in &pieces {
                let user = if levels == 1 {
                    format!("Messages from the chat{title}:\n{piece}\n\nSummarize these messages.")
                } else {
                    format!("Partial summaries of consecutive parts of the chat{title}:\n{piece}\n\nCombine them into one summary.")
                };
                // Greedy: a summary of the same messages is the same every time.
                summaries.push(self.ask(system, &user, json!({"temperature": 0})).await?);
                done += 1;
                progress(done, total);
            }
            if summaries.len() == 1 {
                return Ok(Summary {
                    text: summaries.remove(0),
                    messages,
                    chunks: first_level,
                    levels,
                });
            }
            pieces = chunks(&summaries, self.chunk_bytes());
            // Summaries that do not shrink (a model that repeats its input)
            // still end: each level at least halves the pieces.
            if pieces.len() * 2 > summaries.len() {
                pieces = summaries.chunks(2).map(|pair| pair.join("\n")).collect();
            }
            total += pieces.len();
        }
    }

    /// `k` reply drafts, in `me`'s voice, to the last message from someone
    /// else (preferring one that replies to `me`).
    pub async fn drafts(
        &mut self,
        chat: &ChatExport,
        me: &str,
        k: usize,
    ) -> Result<Drafts, SummarizeError> {
        let spoken: Vec<&ExportedMessage> = chat
            .messages
            .iter()
            .filter(|m| m.service.is_none() && m.from.is_some())
            .collect();
        let mine = |m: &ExportedMessage| m.from.as_deref() == Some(me);
        let by_id: HashMap<i64, &ExportedMessage> =
            chat.messages.iter().map(|m| (m.id, m)).collect();
        let to_me = spoken.iter().rposition(|m| {
            !mine(m)
                && m.reply_to
                    .and_then(|id| by_id.get(&id))
                    .is_some_and(|r| mine(r))
        });
        let last_other = spoken.iter().rposition(|m| !mine(m));
        let Some(target) = to_me.or(last_other) else {
            return Err(SummarizeError::NothingToReplyTo(me.to_string()));
        };
        let addressed = spoken[target];
        // The conversation up to that message, as much as fits.
        let budget = self.chunk_bytes();
        let mut context: Vec<String> = Vec::new();
        let mut used = 0;
        for m in spoken[..=target].iter().rev() {
            let Some(line) = m.line(&by_id) else { continue };
            if used + line.len() > budget && !context.is_empty() {
                break;
            }
            used += line.len() + 1;
            context.push(line);
        }
        context.reverse();
        let from = addressed.from.as_deref().unwrap_or("them");
        let system = format!("You write replies as {me}, in {me}'s voice and in the language of the chat. Answer with the reply text only.");
        let user = format!(
            "Recent messages:\n{}\n\nWrite {me}'s reply to {from}'s last message.",
            context.join("\n")
        );
        let mut drafts = Vec::with_capacity(k);
        for i in 0..k {
            drafts.push(
                self.ask(
                    &system,
                    &user,
                    json!({"temperature": 0.8, "seed": i as u64 + 1}),
                )
                .await?,
            );
        }
        Ok(Drafts {
            reply_to: addressed.id,
            from: from.to_string(),
            drafts,
        })
    }
}

/// Reply drafts and the message they answer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Drafts {
    /// The message's id in the export.
    pub reply_to: i64,
    pub from: String,
    pub drafts: Vec<String>,
}

/// Who "me" is in a personal chat: the sender who is not the chat's other
/// party (`from_id` `user<id>`). `None` in groups and when only one side speaks.
pub fn me_in_personal_chat(chat: &ChatExport) -> Option<String> {
    if chat.kind != "personal_chat" {
        return None;
    }
    let other = format!("user{}", chat.id);
    chat.messages
        .iter()
        .find(|m| m.service.is_none() && m.from_id.as_deref().is_some_and(|id| id != other))
        .and_then(|m| m.from.clone())
}

/// The transcript lines of the selected messages.
pub fn transcript(chat: &ChatExport, selection: &Selection) -> Vec<String> {
    let by_id: HashMap<i64, &ExportedMessage> = chat.messages.iter().map(|m| (m.id, m)).collect();
    let selected: Vec<&ExportedMessage> = match selection {
        Selection::All => chat.messages.iter().collect(),
        Selection::Last(n) => {
            let spoken: Vec<&ExportedMessage> = chat
                .messages
                .iter()
                .filter(|m| m.line(&by_id).is_some())
                .collect();
            spoken[spoken.len().saturating_sub(*n)..].to_vec()
        }
        Selection::Since(date) => chat
            .messages
            .iter()
            .filter(|m| m.date.as_str() >= date.as_str())
            .collect(),
    };
    selected.iter().filter_map(|m| m.line(&by_id)).collect()
}

/// `lines` joined into pieces of at most `max_bytes` (a longer line is cut
/// at a character boundary).
pub fn chunks(lines: &[String], max_bytes: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in lines {
        let mut line = line.as_str();
        while line.len() > max_bytes {
            let mut cut = max_bytes;
            while !line.is_char_boundary(cut) {
                cut -= 1;
            }
            if !current.is_empty() {
                out.push(std::mem::take(&mut current));
            }
            out.push(line[..cut].to_string());
            line = &line[cut..];
        }
        if !current.is_empty() && current.len() + 1 + line.len() > max_bytes {
            out.push(std::mem::take(&mut current));
        }
        if !current.is_empty() {
            current.push('\n');
        }
        current.push_str(line);
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_fit_and_keep_every_byte() {
        let lines: Vec<String> = (0..50).map(|i| format!("line {i} — ещё текст")).collect();
        for max in [20, 64, 1000] {
            let pieces = chunks(&lines, max);
            assert!(pieces.iter().all(|p| p.len() <= max), "{max}");
            let joined: String = pieces.concat().replace('\n', "");
            assert_eq!(joined, lines.concat());
        }
        assert_eq!(chunks(&lines, 100_000).len(), 1);
    }
}
