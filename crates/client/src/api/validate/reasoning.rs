//! Reasoning fields: `reasoning_effort` (OpenAI's), `chat_template_kwargs`
//! (vLLM's; only `enable_thinking` is served) and an assistant message's
//! `reasoning_content` (what a reasoning model thought before answering).

use cocoon_protocol::{Thinking, REASONING_EFFORTS};
use serde_json::Value;

use super::nested::{flag, invalid, object, only};
use super::ApiError;

/// The keys of `chat_template_kwargs` served: the ones reasoning templates
/// read (Qwen 3's and DeepSeek's `enable_thinking`).
const TEMPLATE_KWARGS: &[&str] = &["enable_thinking"];

/// What the request asks of a reasoning model; `None` when nothing.
pub fn thinking(
    effort: Option<&Value>,
    kwargs: Option<&Value>,
) -> Result<Option<Thinking>, ApiError> {
    let effort = match effort {
        None | Some(Value::Null) => None,
        Some(Value::String(e)) if REASONING_EFFORTS.contains(&e.as_str()) => Some(e.clone()),
        Some(other) => {
            return Err(invalid(
                format!(
                    "Invalid value for 'reasoning_effort': {other}. Supported values are: {}.",
                    REASONING_EFFORTS.map(|e| format!("'{e}'")).join(", ")
                ),
                "reasoning_effort",
                "invalid_value",
            ))
        }
    };
    let enabled = match kwargs {
        None | Some(Value::Null) => None,
        Some(value) => {
            let map = object(value, "chat_template_kwargs")?;
            only(map, "chat_template_kwargs", TEMPLATE_KWARGS)?;
            flag(map, "chat_template_kwargs", "enable_thinking")?
        }
    };
    Ok((effort.is_some() || enabled.is_some()).then_some(Thinking { enabled, effort }))
}

/// An assistant message's `reasoning_content`: a string or null.
pub fn message_reasoning(
    value: Option<&Value>,
    i: usize,
    role: &str,
) -> Result<Option<String>, ApiError> {
    let field = format!("messages[{i}].reasoning_content");
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(_)) if role != "assistant" => Err(invalid(
            format!("Invalid '{field}': only an assistant message carries reasoning."),
            &field,
            "invalid_value",
        )),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(invalid(
            format!("Invalid type for '{field}': expected a string."),
            &field,
            "invalid_type",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn effort_and_enable_thinking_are_read_and_bad_ones_named() {
        assert_eq!(thinking(None, None).unwrap(), None);
        let t = thinking(
            Some(&json!("low")),
            Some(&json!({"enable_thinking": false})),
        )
        .unwrap()
        .unwrap();
        assert_eq!(t.effort.as_deref(), Some("low"));
        assert_eq!(t.enabled, Some(false));
        assert!(!Thinking {
            enabled: Some(false),
            effort: None
        }
        .needs_reasoning());
        assert!(t.needs_reasoning());
        let e = thinking(Some(&json!("extreme")), None).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("reasoning_effort"));
        assert!(e.message.contains("'high'"), "{}", e.message);
        let e = thinking(None, Some(&json!({"enable_thinking": "yes"}))).unwrap_err();
        assert_eq!(
            e.param.as_deref(),
            Some("chat_template_kwargs.enable_thinking")
        );
        let e = thinking(None, Some(&json!({"thinking_budget": 10}))).unwrap_err();
        assert_eq!(
            e.param.as_deref(),
            Some("chat_template_kwargs.thinking_budget")
        );
        assert_eq!(e.code.as_deref(), Some("unknown_parameter"));
        let e = thinking(None, Some(&json!([1]))).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("chat_template_kwargs"));
    }

    #[test]
    fn only_assistant_messages_carry_reasoning() {
        assert_eq!(
            message_reasoning(Some(&json!("hmm")), 1, "assistant").unwrap(),
            Some("hmm".into())
        );
        let e = message_reasoning(Some(&json!("hmm")), 0, "user").unwrap_err();
        assert_eq!(e.param.as_deref(), Some("messages[0].reasoning_content"));
        let e = message_reasoning(Some(&json!(3)), 2, "assistant").unwrap_err();
        assert_eq!(e.param.as_deref(), Some("messages[2].reasoning_content"));
    }
}
