//! The Mistral format (v0.3, Nemo, Small and later): `[TOOL_CALLS]` and a
//! JSON list of calls, `[TOOL_CALLS][{"name": "f", "arguments": {...}}]`.
//! In Mistral's vocabularies `[TOOL_CALLS]` is a control token, which
//! shows as no text: an answer may also start at the list itself. Call
//! ids are nine letters and digits (see `reader::Ids`): Mistral's
//! templates refuse a history with any other.

use cocoon_protocol::{ToolCall, Tools};

use super::{call_object, call_schema, laid_out};

/// The tag before the list.
pub const TAG: &str = "[TOOL_CALLS]";
/// What calls start with: the tag, or the list when the tag showed as
/// no text (a control token).
pub const OPEN: [&str; 2] = [TAG, "[{\"name\""];

pub fn grammar(tools: &Tools, tag_token: Option<u32>) -> String {
    let schema = laid_out(call_schema(tools, "arguments"));
    let calls = if tools.parallel {
        "call (\", \" call)*"
    } else {
        "call"
    };
    // The tag's text after the list's opening bracket: no literal is a
    // prefix of another. A space may come first: after the tag as a
    // control token (no text), v0.3 writes one, which its vocabulary may
    // join to the bracket.
    let mut start = format!("\" \"? \"[\" (\"TOOL_CALLS]\" \" \"? \"[\")? {calls} \"]\"");
    if let Some(id) = tag_token {
        start.push_str(&format!(" | <[{id}]> \" \"? \"[\" {calls} \"]\""));
    }
    format!("start: {start}\ncall: %json {schema}\n")
}

pub fn written(calls: &[ToolCall]) -> String {
    let objects: Vec<String> = calls.iter().map(|c| call_object(c, "arguments")).collect();
    format!("{TAG}[{}]", objects.join(", "))
}
