//! The Hermes format (Qwen 2.5/3, Hermes 2/3 and many fine-tunes): each
//! call a JSON object between `<tool_call>` tags, one per line.

use cocoon_protocol::{ToolCall, Tools};

use super::{call_object, call_schema, laid_out};

/// What opens a call.
pub const OPEN: &str = "<tool_call>";

pub fn grammar(tools: &Tools) -> String {
    let schema = laid_out(call_schema(tools, "arguments"));
    let calls = if tools.parallel {
        "call (\"\\n\" call)*"
    } else {
        "call"
    };
    format!(
        "start: {calls}\ncall: \"<tool_call>\\n\" body \"\\n</tool_call>\"\nbody: %json {schema}\n"
    )
}

pub fn written(calls: &[ToolCall]) -> String {
    calls
        .iter()
        .map(|call| format!("{OPEN}\n{}\n</tool_call>", call_object(call, "arguments")))
        .collect::<Vec<_>>()
        .join("\n")
}
