//! One SSE payload of an upstream's streamed answer, read straight into the
//! few fields the worker uses: a chat chunk (`choices[0].delta.content`), a
//! legacy completion chunk (`choices[0].text`), the usage chunk, or an
//! error. Read without building a `serde_json::Value` first, borrowing the
//! text where it has no escapes: the worker reads one of these per token.

use std::borrow::Cow;

use cocoon_protocol::openai::{ChoiceLogprobs, DeltaToolCall, Usage as ApiUsage};
use cocoon_protocol::{ErrorKind, TokenLogprob, ToolCallChunk, WireError};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
pub(super) struct StreamChunk<'a> {
    /// Any JSON: servers send `{"message": ...}` or a bare string.
    #[serde(default)]
    error: Option<serde_json::Value>,
    #[serde(default, borrow)]
    pub choices: Vec<StreamChoice<'a>>,
    #[serde(default)]
    pub usage: Option<ApiUsage>,
}

#[derive(Debug, Deserialize)]
pub(super) struct StreamChoice<'a> {
    /// Which answer of several (`n`) this is.
    #[serde(default)]
    pub index: u32,
    #[serde(default, borrow)]
    delta: Option<StreamDelta<'a>>,
    #[serde(default, borrow)]
    text: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub finish_reason: Option<Cow<'a, str>>,
    #[serde(default)]
    logprobs: Option<ChoiceLogprobs>,
}

#[derive(Debug, Deserialize)]
struct StreamDelta<'a> {
    #[serde(default, borrow)]
    content: Option<Cow<'a, str>>,
    /// A reasoning model's thinking: vLLM's and SGLang's field ...
    #[serde(default, borrow)]
    reasoning_content: Option<Cow<'a, str>>,
    /// ... and the name newer vLLM, Ollama and OpenRouter give it.
    #[serde(default, borrow)]
    reasoning: Option<Cow<'a, str>>,
    #[serde(default)]
    tool_calls: Option<Vec<DeltaToolCall>>,
}

impl<'a> StreamChunk<'a> {
    /// Parse one `data:` payload; an `error` object becomes the error.
    pub fn parse(data: &'a str) -> Result<Self, WireError> {
        let chunk: StreamChunk<'a> = serde_json::from_str(data).map_err(|e| {
            WireError::new(
                ErrorKind::Upstream,
                format!("engine sent an unexpected chunk in its stream: {e}"),
            )
        })?;
        match &chunk.error {
            None | Some(serde_json::Value::Null) => Ok(chunk),
            Some(error) => {
                let message = error
                    .get("message")
                    .and_then(|m| m.as_str())
                    .or_else(|| error.as_str())
                    .unwrap_or("unknown error");
                Err(WireError::new(
                    ErrorKind::Upstream,
                    format!("engine failed mid-stream: {message}"),
                ))
            }
        }
    }
}

impl<'a> StreamChoice<'a> {
    /// The new text: a chat chunk's `delta.content`, else a completion
    /// chunk's `text`.
    pub fn text(&mut self) -> Option<Cow<'a, str>> {
        self.delta
            .as_mut()
            .and_then(|d| d.content.take())
            .or_else(|| self.text.take())
    }

    /// The new reasoning (a chat chunk's `delta.reasoning_content` or
    /// `delta.reasoning`).
    pub fn reasoning(&mut self) -> Option<Cow<'a, str>> {
        let delta = self.delta.as_mut()?;
        delta
            .reasoning_content
            .take()
            .or_else(|| delta.reasoning.take())
    }

    /// The log probabilities of the tokens in this chunk.
    pub fn logprobs(&mut self) -> Vec<TokenLogprob> {
        self.logprobs
            .take()
            .map(|l| l.content.iter().map(TokenLogprob::from).collect())
            .unwrap_or_default()
    }

    /// The pieces of function calls in this chunk, as the protocol carries them.
    pub fn tool_calls(&mut self) -> Vec<ToolCallChunk> {
        let calls = self.delta.as_mut().and_then(|d| d.tool_calls.take());
        calls
            .unwrap_or_default()
            .into_iter()
            .map(|c| ToolCallChunk {
                index: c.index,
                id: c.id,
                name: c.function.name,
                arguments: c.function.arguments.unwrap_or_default(),
                tokens: 1,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(data: &str) -> Option<String> {
        let chunk = StreamChunk::parse(data).unwrap();
        chunk
            .choices
            .into_iter()
            .next()
            .and_then(|mut c| c.text())
            .map(Cow::into_owned)
    }

    #[test]
    fn reads_reasoning_under_either_name() {
        for field in ["reasoning_content", "reasoning"] {
            let data =
                format!(r#"{{"choices":[{{"index":0,"delta":{{"{field}":"Let me see"}}}}]}}"#);
            let mut chunk = StreamChunk::parse(&data).unwrap();
            let choice = &mut chunk.choices[0];
            assert_eq!(choice.reasoning().as_deref(), Some("Let me see"));
            assert_eq!(choice.text(), None);
        }
    }

    #[test]
    fn reads_chat_and_completion_chunks() {
        let chat = r#"{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":"Hi \"there\"\n"},"finish_reason":null}]}"#;
        assert_eq!(text(chat).as_deref(), Some("Hi \"there\"\n"));
        let legacy = r#"{"id":"c","object":"text_completion","created":1,"model":"m","choices":[{"index":0,"text":" world","finish_reason":"length"}]}"#;
        assert_eq!(text(legacy).as_deref(), Some(" world"));
        let chunk = StreamChunk::parse(legacy).unwrap();
        assert_eq!(chunk.choices[0].finish_reason.as_deref(), Some("length"));
        // Role-only first chunk and an empty delta carry no text.
        assert_eq!(
            text(r#"{"choices":[{"index":0,"delta":{"role":"assistant"}}]}"#),
            None
        );
        assert_eq!(text(r#"{"choices":[{"index":0,"delta":{}}]}"#), None);
    }

    #[test]
    fn reads_the_usage_chunk() {
        let data = r#"{"id":"c","object":"chat.completion.chunk","choices":[],"usage":{"prompt_tokens":7,"completion_tokens":3,"total_tokens":10,"prompt_tokens_details":{"cached_tokens":2},"completion_tokens_details":{"reasoning_tokens":1}}}"#;
        let chunk = StreamChunk::parse(data).unwrap();
        let usage = chunk.usage.unwrap();
        assert_eq!((usage.prompt_tokens, usage.completion_tokens), (7, 3));
        assert_eq!(usage.prompt_tokens_details.unwrap().cached_tokens, 2);
        assert_eq!(usage.completion_tokens_details.unwrap().reasoning_tokens, 1);
        assert!(chunk.choices.is_empty());
    }

    #[test]
    fn errors_in_the_stream_and_bad_json_are_upstream_errors() {
        let e =
            StreamChunk::parse(r#"{"error":{"message":"out of memory","code":500}}"#).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Upstream);
        assert!(e.message.contains("out of memory"), "{}", e.message);
        let e = StreamChunk::parse(r#"{"error":"overloaded"}"#).unwrap_err();
        assert!(e.message.contains("overloaded"), "{}", e.message);
        for bad in [
            "{",
            "[1,2]",
            r#"{"choices":{"text":"x"}}"#,
            r#"{"choices":[{"text":5}]}"#,
        ] {
            let e = StreamChunk::parse(bad).unwrap_err();
            assert_eq!(e.kind, ErrorKind::Upstream, "{bad}");
        }
        // `"error": null` is no error.
        assert!(StreamChunk::parse(r#"{"error":null,"choices":[]}"#).is_ok());
    }

    #[test]
    fn reads_streamed_tool_calls() {
        let head = r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"get_weather","arguments":""}}]}}]}"#;
        let mut chunk = StreamChunk::parse(head).unwrap();
        let calls = chunk.choices[0].tool_calls();
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].id.as_deref(), Some("call_1"));
        assert_eq!(calls[0].name.as_deref(), Some("get_weather"));
        let more = r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"city\": "}}]},"finish_reason":null}]}"#;
        let mut chunk = StreamChunk::parse(more).unwrap();
        let calls = chunk.choices[0].tool_calls();
        assert_eq!(
            (calls[0].name.as_deref(), calls[0].arguments.as_str()),
            (None, "{\"city\": ")
        );
    }
}
