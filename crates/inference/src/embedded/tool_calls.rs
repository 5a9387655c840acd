//! Tool calls on the embedded engine, in the Hermes format that Qwen 2.5/3,
//! Hermes and many fine-tunes are trained on and that any instruction model
//! can follow from a description:
//!
//! ```text
//! <tool_call>
//! {"name": "get_weather", "arguments": {"city": "Paris"}}
//! </tool_call>
//! ```
//!
//! This module owns the text side: the functions as a template reads them
//! ([`definitions`]), the system message for templates that do not render
//! tools themselves ([`instructions`]), a call written back into a chat's
//! history ([`written`]), the grammar that holds an answer to valid calls
//! ([`grammar`], Lark for llguidance, the arguments to each function's
//! JSON Schema), and [`CallReader`], which turns the generated text into
//! OpenAI's streamed `tool_calls` pieces.

use cocoon_protocol::{Function, ToolCall, ToolCallChunk, ToolChoice, Tools};
use serde_json::{json, Value};

/// What opens a call.
pub const OPEN: &str = "<tool_call>";
/// Everything of a call before its name (the layout is fixed by the grammar).
const HEAD: &str = "<tool_call>\n{\"name\": \"";
/// Between the name and the arguments.
const MIDDLE: &str = "\", \"arguments\": ";
/// After the arguments.
const TAIL: &str = "}\n</tool_call>";

/// The functions as OpenAI's `tools` list (what Hugging Face templates read).
pub fn definitions(tools: &Tools) -> Vec<Value> {
    tools.functions.iter().map(Function::to_openai).collect()
}

/// A call's arguments as a value, for templates that write them out
/// (the text itself when it is not JSON).
pub fn arguments_value(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::from(text))
}

/// The system message describing `tools`, for templates that do not
/// render tools (Qwen 2.5's own wording).
pub fn instructions(tools: &Tools) -> String {
    let mut text = String::from(
        "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n\
         You are provided with function signatures within <tools></tools> XML tags:\n<tools>",
    );
    for definition in definitions(tools) {
        text.push('\n');
        text.push_str(&definition.to_string());
    }
    text.push_str(
        "\n</tools>\n\nFor each function call, return a json object with function name and \
         arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n\
         {\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call>",
    );
    text
}

/// `call` as the model would have written it (its arguments' text as
/// given, when it is JSON: the same bytes as generated).
pub fn written(call: &ToolCall) -> String {
    let arguments = match serde_json::from_str::<Value>(&call.arguments) {
        Ok(_) => call.arguments.trim().to_string(),
        Err(_) => Value::from(call.arguments.as_str()).to_string(),
    };
    format!(
        "{HEAD}{}{MIDDLE}{arguments}{TAIL}",
        call.name.replace('"', "")
    )
}

/// The Lark grammar of an answer made of calls that `tools` allows: one
/// call, or several one per line when parallel calls are allowed; each
/// call's name one of the allowed functions, its arguments valid against
/// that function's schema, in one fixed layout.
pub fn grammar(tools: &Tools) -> String {
    let allowed: Vec<_> = tools
        .functions
        .iter()
        .filter(|f| match &tools.choice {
            ToolChoice::Function(name) => &f.name == name,
            ToolChoice::Auto | ToolChoice::Required => true,
        })
        .map(|f| {
            json!({
                "type": "object",
                "properties": {
                    "name": {"const": f.name},
                    "arguments": f.parameters_value(),
                },
                "required": ["name", "arguments"],
                "additionalProperties": false,
            })
        })
        .collect();
    let schema = json!({
        "anyOf": allowed,
        "x-guidance": {
            "whitespace_flexible": false,
            "item_separator": ", ",
            "key_separator": ": ",
            "lenient": false,
        },
    });
    let calls = if tools.parallel {
        "call (\"\\n\" call)*"
    } else {
        "call"
    };
    format!(
        "start: {calls}\ncall: \"<tool_call>\\n\" body \"\\n</tool_call>\"\nbody: %json {schema}\n"
    )
}

/// The Lark grammar of an answer that is either calls `tools` allows (as
/// [`grammar`] lays them out) or one JSON value valid against
/// `answer_schema` (a response format, with its layout): `tool_choice:
/// auto` with `response_format`.
pub fn grammar_or_answer(tools: &Tools, answer_schema: &Value) -> String {
    let calls = grammar(tools);
    let calls = calls.replacen("start: ", "start: answer | ", 1);
    format!("{calls}answer: %json {answer_schema}\n")
}

/// Reads the text of an answer made of calls (as [`grammar`] lays them
/// out) and gives OpenAI's streamed pieces: a call's id and name as soon as
/// its name is complete, then its arguments as they are generated.
#[derive(Debug, Default)]
pub struct CallReader {
    /// Text not yet read.
    pending: String,
    /// The call being read: its index, and whether its head was sent.
    current: Option<u32>,
    calls: u32,
}

impl CallReader {
    /// Take `text`; the pieces it completes.
    pub fn push(&mut self, text: &str) -> Vec<ToolCallChunk> {
        self.pending.push_str(text);
        let mut out = Vec::new();
        loop {
            match self.current {
                None => {
                    let Some(start) = self.pending.find(HEAD) else {
                        return out;
                    };
                    let after = start + HEAD.len();
                    let Some(name_len) = self.pending[after..].find(MIDDLE) else {
                        return out;
                    };
                    let name = self.pending[after..after + name_len].to_string();
                    self.pending.drain(..after + name_len + MIDDLE.len());
                    let index = self.calls;
                    self.calls += 1;
                    self.current = Some(index);
                    out.push(ToolCallChunk {
                        index,
                        id: Some(call_id()),
                        name: Some(name),
                        ..ToolCallChunk::default()
                    });
                }
                Some(index) => {
                    if let Some(end) = self.pending.find(TAIL) {
                        let arguments: String = self.pending.drain(..end).collect();
                        self.pending.drain(..TAIL.len());
                        self.current = None;
                        if !arguments.is_empty() {
                            out.push(argument_piece(index, arguments));
                        }
                        continue;
                    }
                    // Hold back what could be the start of the tail.
                    let mut keep = self.pending.len().saturating_sub(TAIL.len() - 1);
                    while !self.pending.is_char_boundary(keep) {
                        keep -= 1;
                    }
                    if keep > 0 {
                        let arguments: String = self.pending.drain(..keep).collect();
                        out.push(argument_piece(index, arguments));
                    }
                    return out;
                }
            }
        }
    }

    /// Calls begun so far.
    pub fn calls(&self) -> u32 {
        self.calls
    }
}

fn argument_piece(index: u32, arguments: String) -> ToolCallChunk {
    ToolCallChunk {
        index,
        arguments,
        ..ToolCallChunk::default()
    }
}

/// A fresh call id, as OpenAI writes them (`call_` and 24 characters).
fn call_id() -> String {
    let bytes: [u8; 12] = rand::random();
    format!("call_{}", hex::encode(bytes))
}

#[cfg(test)]
mod tests;
