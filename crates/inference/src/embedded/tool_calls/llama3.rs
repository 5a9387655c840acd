//! The Llama 3.x format (3.1, 3.2, 3.3 with custom tools): the answer is
//! one JSON object, `{"name": "f", "parameters": {...}}`. Llama 3.1's
//! template refuses more than one call in a message, so an answer holds
//! one, parallel calls allowed or not.

use cocoon_protocol::{ToolCall, Tools};

use super::{call_object, call_schema, laid_out};

/// What a call starts with.
pub const OPEN: &str = "{\"name\"";

pub fn grammar(tools: &Tools) -> String {
    let schema = laid_out(call_schema(tools, "parameters"));
    format!("start: call\ncall: %json {schema}\n")
}

pub fn written(calls: &[ToolCall]) -> String {
    calls
        .iter()
        .map(|call| call_object(call, "parameters"))
        .collect::<Vec<_>>()
        .join("\n")
}
