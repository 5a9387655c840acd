//! Tool calls on the embedded engine, in the format each model is trained
//! on ([`ToolFormat`], read from its chat template as llama.cpp's server
//! does):
//!
//! ```text
//! Hermes:  <tool_call>\n{"name": "f", "arguments": {...}}\n</tool_call>
//! Llama 3: {"name": "f", "parameters": {...}}
//! Mistral: [TOOL_CALLS][{"name": "f", "arguments": {...}}, ...]
//! Generic: {"tool_call": {"name": "f", "arguments": {...}}}
//!          {"tool_calls": [{"name": "f", "arguments": {...}}, ...]}
//! ```
//!
//! This module owns the text side: the functions as a template reads them
//! ([`definitions`]), the system message for templates that do not render
//! tools themselves ([`instructions`], the generic format), calls written
//! back into a chat's history ([`ToolFormat::written`]), the grammar that
//! holds an answer to valid calls ([`ToolFormat::grammar`], Lark for
//! llguidance, the arguments to each function's JSON Schema), where an
//! `auto` answer starts calling ([`ToolFormat::opening`]), and
//! [`CallReader`], which turns the generated text into OpenAI's streamed
//! `tool_calls` pieces.
//!
//! * `hermes`, `llama3`, `mistral`, `generic` - each format's layout.
//! * `reader` - generated text back into streamed pieces.

mod generic;
mod hermes;
mod llama3;
mod mistral;
mod reader;

use cocoon_protocol::{Function, ToolCall, ToolChoice, Tools};
use serde_json::{json, Value};

pub use generic::{instructions, tool_result};
pub use reader::CallReader;
use reader::{Ids, Nest};

/// How a model writes function calls, chosen from its chat template's text:
///
/// * a template that never mentions `tools` does not render them: Generic;
/// * one that mentions `[TOOL_CALLS]`: Mistral (v0.3, Nemo and later);
/// * else one that mentions `<tool_call>`: Hermes (Qwen 2.5/3, Hermes 2/3);
/// * else one that mentions `<|python_tag|>` or the `ipython` role: Llama
///   3.x (3.1, 3.2, 3.3);
/// * any other: Generic (its own tool format is not one read here).
///
/// With Generic the template is not given the tools: they are described
/// in a system message ([`instructions`]), and earlier calls and their
/// results are written into the messages' text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ToolFormat {
    Hermes,
    /// One call per answer (Llama 3.1's template refuses more).
    Llama3,
    /// Calls with nine-character ids (its templates refuse any other).
    Mistral,
    #[default]
    Generic,
}

/// Whether an `auto` answer's start is a call's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opening {
    /// It starts the way calls do.
    Call,
    /// It could still be either.
    Undecided,
    /// It is text.
    Text,
}

impl ToolFormat {
    /// The format of the model whose chat template is `template`.
    pub fn detect(template: &str) -> Self {
        if !template.contains("tools") {
            ToolFormat::Generic
        } else if template.contains("[TOOL_CALLS]") {
            ToolFormat::Mistral
        } else if template.contains("<tool_call>") {
            ToolFormat::Hermes
        } else if template.contains("<|python_tag|>") || template.contains("ipython") {
            ToolFormat::Llama3
        } else {
            ToolFormat::Generic
        }
    }

    /// The template is given the tools and calls (OpenAI's fields) and
    /// renders them itself.
    pub fn rendered_by_template(self) -> bool {
        self != ToolFormat::Generic
    }

    /// Tags of calls that a model's vocabulary may have as one control
    /// token (no text): Mistral's `[TOOL_CALLS]`.
    pub const TAGS: [&'static str; 1] = [mistral::TAG];

    /// The tag before this format's calls, if it is one of [`Self::TAGS`].
    pub fn tag(self) -> Option<&'static str> {
        (self == ToolFormat::Mistral).then_some(mistral::TAG)
    }

    /// The Lark grammar of an answer made of calls that `tools` allows:
    /// one call, or several where parallel calls are allowed and the
    /// format has them; each call's name one of the allowed functions, its
    /// arguments valid against that function's schema, in one fixed
    /// layout. `tag_token`: the id of the format's [`Self::tag`] where the
    /// vocabulary has it as a control token, which the model may then
    /// write as it was trained to. It starts with `start: `.
    pub fn grammar(self, tools: &Tools, tag_token: Option<u32>) -> String {
        match self {
            ToolFormat::Hermes => hermes::grammar(tools),
            ToolFormat::Llama3 => llama3::grammar(tools),
            ToolFormat::Mistral => mistral::grammar(tools, tag_token),
            ToolFormat::Generic => generic::grammar(tools),
        }
    }

    /// The Lark grammar of an answer that is either calls `tools` allows
    /// (as [`Self::grammar`] lays them out) or one JSON value valid against
    /// `answer_schema` (a response format, with its layout): `tool_choice:
    /// auto` with `response_format`.
    pub fn grammar_or_answer(
        self,
        tools: &Tools,
        tag_token: Option<u32>,
        answer_schema: &Value,
    ) -> String {
        let calls = self.grammar(tools, tag_token);
        let calls = calls.replacen("start: ", "start: answer | ", 1);
        format!("{calls}answer: %json {answer_schema}\n")
    }

    /// `calls` (one answer's) as the model would have written them (the
    /// arguments' text as given, when it is JSON: the same bytes as
    /// generated).
    pub fn written(self, calls: &[ToolCall]) -> String {
        match self {
            ToolFormat::Hermes => hermes::written(calls),
            ToolFormat::Llama3 => llama3::written(calls),
            ToolFormat::Mistral => mistral::written(calls),
            ToolFormat::Generic => generic::written(calls),
        }
    }

    /// Whether an `auto` answer that starts with `text` (leading
    /// whitespace removed) is calls.
    pub fn opening(self, text: &str) -> Opening {
        let openers: &[&str] = match self {
            ToolFormat::Hermes => &[hermes::OPEN],
            ToolFormat::Llama3 => &[llama3::OPEN],
            ToolFormat::Mistral => &mistral::OPEN,
            ToolFormat::Generic => &[generic::OPEN],
        };
        if openers.iter().any(|o| text.starts_with(o)) {
            Opening::Call
        } else if openers.iter().any(|o| o.starts_with(text)) {
            Opening::Undecided
        } else {
            Opening::Text
        }
    }

    /// A reader of answers made of this format's calls.
    pub fn reader(self) -> CallReader {
        match self {
            ToolFormat::Hermes | ToolFormat::Llama3 => CallReader::new(Nest::Top, Ids::OpenAi),
            ToolFormat::Mistral => CallReader::new(
                Nest::Listed {
                    after: mistral::TAG,
                },
                Ids::Nine,
            ),
            ToolFormat::Generic => CallReader::new(Nest::Keyed, Ids::OpenAi),
        }
    }
}

/// The functions as OpenAI's `tools` list (what Hugging Face templates read).
pub fn definitions(tools: &Tools) -> Vec<Value> {
    tools.functions.iter().map(Function::to_openai).collect()
}

/// A call's arguments as a value, for templates that write them out
/// (the text itself when it is not JSON).
pub fn arguments_value(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::from(text))
}

/// The layout every grammar holds JSON to: `{"a": 1, "b": [2, 3]}`.
fn layout() -> Value {
    json!({
        "whitespace_flexible": false,
        "item_separator": ", ",
        "key_separator": ": ",
        "lenient": false,
    })
}

/// The JSON Schema of one call of the functions `tools` allows: an object
/// of the function's `name` and its arguments under `arguments_key`, in
/// that order, valid against its parameters' schema (a bare `anyOf`, for
/// nesting).
fn call_schema(tools: &Tools, arguments_key: &str) -> Value {
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
                    arguments_key: f.parameters_value(),
                },
                "required": ["name", arguments_key],
                "additionalProperties": false,
            })
        })
        .collect();
    json!({ "anyOf": allowed })
}

/// `schema` with the fixed layout, for `%json` in a grammar.
fn laid_out(mut schema: Value) -> Value {
    schema["x-guidance"] = layout();
    schema
}

/// One call as a JSON object: its name, then its arguments under
/// `arguments_key` (their text as given when it is JSON, else as a string).
fn call_object(call: &ToolCall, arguments_key: &str) -> String {
    let arguments = match serde_json::from_str::<Value>(&call.arguments) {
        Ok(_) => call.arguments.trim().to_string(),
        Err(_) => Value::from(call.arguments.as_str()).to_string(),
    };
    format!(
        "{{\"name\": {}, \"{arguments_key}\": {arguments}}}",
        Value::from(call.name.as_str())
    )
}

#[cfg(test)]
mod tests;
