//! The generic format, for models whose template does not render tools
//! (llama.cpp's generic format): the answer is one JSON object,
//! `{"tool_call": {"name": "f", "arguments": {...}}}`, or where parallel
//! calls are allowed `{"tool_calls": [{...}, ...]}`. The tools and this
//! layout are described in a system message ([`instructions`]); earlier
//! calls and their results are written into the messages' text.

use cocoon_protocol::{ToolCall, Tools};
use serde_json::{json, Value};

use super::{call_object, call_schema, definitions, laid_out};

/// What calls start with (either key).
pub const OPEN: &str = "{\"tool_call";

pub fn grammar(tools: &Tools) -> String {
    let call = call_schema(tools, "arguments");
    let one = json!({
        "type": "object",
        "properties": {"tool_call": call},
        "required": ["tool_call"],
        "additionalProperties": false,
    });
    let schema = if tools.parallel {
        let many = json!({
            "type": "object",
            "properties": {"tool_calls": {"type": "array", "items": call, "minItems": 1}},
            "required": ["tool_calls"],
            "additionalProperties": false,
        });
        json!({"anyOf": [one, many]})
    } else {
        one
    };
    format!("start: calls\ncalls: %json {}\n", laid_out(schema))
}

pub fn written(calls: &[ToolCall]) -> String {
    let objects: Vec<String> = calls.iter().map(|c| call_object(c, "arguments")).collect();
    match objects.as_slice() {
        [one] => format!("{{\"tool_call\": {one}}}"),
        many => format!("{{\"tool_calls\": [{}]}}", many.join(", ")),
    }
}

/// The system message describing `tools` and how to call them.
pub fn instructions(tools: &Tools) -> String {
    let mut text = String::from(
        "# Tools\n\nYou may call functions to assist with the user query. \
         The functions available, as JSON:\n",
    );
    for definition in definitions(tools) {
        text.push('\n');
        text.push_str(&definition.to_string());
    }
    text.push_str(
        "\n\nTo call a function, reply with only this JSON object and nothing else:\n\
         {\"tool_call\": {\"name\": <function-name>, \"arguments\": <args-json-object>}}",
    );
    if tools.parallel {
        text.push_str(
            "\nTo call several at once:\n\
             {\"tool_calls\": [{\"name\": <function-name>, \"arguments\": <args-json-object>}, ...]}",
        );
    }
    text.push_str("\nOtherwise answer in plain text.");
    text
}

/// A tool's result as the text of a user message.
pub fn tool_result(call_id: Option<&str>, content: &str) -> String {
    let mut result = json!({"content": content});
    if let Some(id) = call_id {
        result["tool_call_id"] = Value::from(id);
    }
    json!({"tool_response": result}).to_string()
}
