//! Nothing a request asks for is silently dropped: every top-level field
//! and every message field is one the network serves, one that changes
//! nothing in the answer (listed below), or a field at its "not asked for"
//! value (`null`, `false`, an empty list...). Anything else is refused with
//! a 400 naming it (`param`), so an app never believes it asked for tool
//! calls or a JSON schema and silently gets prose.

use serde_json::Value;

use super::super::ApiError;

/// Which endpoint a body is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Chat,
    Completion,
}

/// Fields both endpoints serve (checked further by the validator).
const SERVED: &[&str] = &[
    "model",
    "max_tokens",
    "temperature",
    "top_p",
    "n",
    "stream",
    "stream_options",
    "stop",
    "seed",
    "presence_penalty",
    "frequency_penalty",
    "logprobs",
    "response_format",
    "cocoon",
];
const SERVED_CHAT: &[&str] = &[
    "messages",
    "max_completion_tokens",
    "top_logprobs",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "reasoning_effort",
    "chat_template_kwargs",
];
const SERVED_COMPLETION: &[&str] = &["prompt"];

/// OpenAI's bookkeeping: accepted and ignored, as they change nothing in
/// the answer (no answer is stored, and nobody but the app sees `user`).
pub const IGNORED: &[&str] = &[
    "user",
    "metadata",
    "store",
    "service_tier",
    "safety_identifier",
    "prompt_cache_key",
];

/// OpenAI fields that change the answer and that no Cocoon engine serves
/// yet, with what they are for (in the refusal's message).
const NOT_SERVED: &[(&str, &str)] = &[
    ("functions", "function calling"),
    ("function_call", "function calling"),
    ("logit_bias", "logit bias"),
    ("modalities", "output modalities"),
    ("audio", "audio output"),
    ("prediction", "predicted outputs"),
    ("web_search_options", "web search"),
    ("verbosity", "verbosity"),
    ("suffix", "insertion (suffix)"),
    ("echo", "echoing the prompt"),
    ("best_of", "best-of sampling"),
];

/// Message fields served.
const MESSAGE_SERVED: &[&str] = &[
    "role",
    "content",
    "tool_calls",
    "tool_call_id",
    "reasoning_content",
];

/// Check the fields of `body` (a JSON object) for `endpoint`.
pub fn check(body: &serde_json::Map<String, Value>, endpoint: Endpoint) -> Result<(), ApiError> {
    let own = match endpoint {
        Endpoint::Chat => SERVED_CHAT,
        Endpoint::Completion => SERVED_COMPLETION,
    };
    // Known features first, in the list's order (`tools` before
    // `tool_choice`), then fields nobody knows.
    for (name, what) in NOT_SERVED {
        match body.get(*name) {
            Some(value) if !not_asked(name, value) => {
                return Err(ApiError::invalid(
                    format!(
                        "'{name}' ({what}) is not served by Cocoon's workers yet; leave it out."
                    ),
                    Some(name),
                    "unsupported_parameter",
                ))
            }
            _ => {}
        }
    }
    let known = |name: &str| {
        SERVED.contains(&name)
            || own.contains(&name)
            || IGNORED.contains(&name)
            || NOT_SERVED.iter().any(|(field, _)| *field == name)
    };
    if let Some(name) = body.keys().find(|name| !known(name)) {
        return Err(super::nested::unknown(name.clone()));
    }
    if let Some(Value::Object(options)) = body.get("stream_options") {
        // `include_obfuscation` only pads chunks against length side
        // channels, which sealed, bucketed chunks already hide: harmless.
        super::nested::only(
            options,
            "stream_options",
            &["include_usage", "include_obfuscation"],
        )?;
    }
    if let Some(Value::Array(messages)) = body.get("messages") {
        for (i, message) in messages.iter().enumerate() {
            let Value::Object(message) = message else {
                continue;
            };
            for (field, value) in message {
                if MESSAGE_SERVED.contains(&field.as_str()) || not_asked(field, value) {
                    continue;
                }
                return Err(ApiError::invalid(
                    format!(
                        "'messages[{i}].{field}' is not served by Cocoon's workers yet ({}); leave it out.",
                        what_message_field(field)
                    ),
                    Some(&format!("messages[{i}].{field}")),
                    "unsupported_parameter",
                ));
            }
        }
    }
    Ok(())
}

/// `value` asks for nothing beyond a plain answer: `null`, `false`, an
/// empty list or object, or the field's own "off" value.
fn not_asked(field: &str, value: &Value) -> bool {
    match value {
        Value::Null | Value::Bool(false) => true,
        Value::Array(a) => a.is_empty() || (field == "modalities" && a == &[Value::from("text")]),
        Value::Object(o) => {
            o.is_empty()
                || (field == "response_format"
                    && o.len() == 1
                    && o.get("type") == Some(&Value::from("text")))
        }
        Value::String(s) => field == "tool_choice" && s == "none",
        Value::Number(n) => field == "best_of" && n.as_i64() == Some(1),
        Value::Bool(true) => false,
    }
}

fn what_message_field(field: &str) -> &'static str {
    match field {
        "tool_calls" | "tool_call_id" | "function_call" => "tool calling",
        "name" => "participant names",
        "audio" => "audio",
        "refusal" => "refusals",
        _ => "not an OpenAI message field Cocoon knows",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_chat(extra: &str) -> Result<(), ApiError> {
        let body =
            format!(r#"{{"model":"m","messages":[{{"role":"user","content":"x"}}]{extra}}}"#);
        let Value::Object(map) = serde_json::from_str::<Value>(&body).unwrap() else {
            unreachable!()
        };
        check(&map, Endpoint::Chat)
    }

    fn refused(extra: &str) -> (String, Option<String>, String) {
        let e = check_chat(extra).unwrap_err();
        (e.message, e.param, e.code.unwrap_or_default())
    }

    #[test]
    fn served_ignored_and_not_asked_fields_pass() {
        check_chat("").unwrap();
        check_chat(r#","user":"u","metadata":{"a":"b"},"store":true,"service_tier":"auto""#)
            .unwrap();
        check_chat(r#","tools":[],"tool_choice":"none","response_format":{"type":"text"}"#)
            .unwrap();
        check_chat(r#","logit_bias":{},"modalities":["text"],"parallel_tool_calls":null"#).unwrap();
        // What the SDKs send back when an assistant message is appended.
        check_chat(r#","messages":[{"role":"assistant","content":"a","refusal":null,"tool_calls":[],"function_call":null}]"#)
            .unwrap();
    }

    #[test]
    fn unserved_features_are_refused_naming_the_field() {
        let functions = r#","functions":[{"name":"f"}],"function_call":"auto""#;
        let (message, param, code) = refused(functions);
        assert_eq!(param.as_deref(), Some("functions"), "{message}");
        assert_eq!(code, "unsupported_parameter");
        assert!(message.contains("function calling"), "{message}");
        let (_, param, _) = refused(r#","verbosity":"high""#);
        assert_eq!(param.as_deref(), Some("verbosity"));
        let (_, param, _) = refused(r#","logit_bias":{"50256":-100}"#);
        assert_eq!(param.as_deref(), Some("logit_bias"));
        // Tool calling is served: its fields pass this check.
        check_chat(r#","tools":[{"type":"function","function":{"name":"f"}}],"tool_choice":"required","parallel_tool_calls":false"#).unwrap();
        check_chat(r#","messages":[{"role":"tool","content":"42","tool_call_id":"c1"}]"#).unwrap();
        let (_, param, _) = refused(r#","messages":[{"role":"user","content":"x","name":"ann"}]"#);
        assert_eq!(param.as_deref(), Some("messages[0].name"));
    }

    #[test]
    fn unknown_stream_options_are_refused_naming_them() {
        check_chat(
            r#","stream":true,"stream_options":{"include_usage":true,"include_obfuscation":false}"#,
        )
        .unwrap();
        let (_, param, code) = refused(
            r#","stream":true,"stream_options":{"include_usage":true,"inclde_usage":true}"#,
        );
        assert_eq!(param.as_deref(), Some("stream_options.inclde_usage"));
        assert_eq!(code, "unknown_parameter");
    }

    #[test]
    fn unknown_fields_are_refused_naming_them() {
        let (message, param, code) = refused(r#","temprature":0.5"#);
        assert_eq!(param.as_deref(), Some("temprature"));
        assert_eq!(code, "unknown_parameter");
        assert!(message.contains("temprature"), "{message}");
        // A completion's field on the chat endpoint is unknown there.
        let (_, param, _) = refused(r#","prompt":"p""#);
        assert_eq!(param.as_deref(), Some("prompt"));
    }
}
