//! Tool calling fields checked into the protocol's [`Tools`]: `tools`
//! (functions with names, descriptions and JSON Schema parameters),
//! `tool_choice` (`none`, `auto`, `required`, or one named function) and
//! `parallel_tool_calls`; and in messages, an assistant's `tool_calls` and a
//! `tool` message's `tool_call_id`. Each failure names its field.

use cocoon_protocol::{Function, ToolCall, ToolChoice, Tools};
use serde_json::Value;

use super::nested::{flag, invalid, object, only, string};
use super::{is_schema_name, missing, ApiError};

/// OpenAI's limit on functions per request.
const MAX_TOOLS: usize = 128;

/// The request's tools, or `None` when it offers none (or `tool_choice`
/// is `"none"`: the model is then not told about them).
pub fn tools(
    tools: Option<&Value>,
    choice: Option<&Value>,
    parallel: Option<bool>,
) -> Result<Option<Tools>, ApiError> {
    let functions = match tools {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(list)) => functions(list)?,
        Some(_) => {
            return Err(invalid(
                "Invalid type for 'tools': expected an array of tools.".into(),
                "tools",
                "invalid_type",
            ))
        }
    };
    let choice = match choice {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => match s.as_str() {
            "none" => return Ok(None),
            "auto" => Some(ToolChoice::Auto),
            "required" => Some(ToolChoice::Required),
            other => {
                return Err(invalid(
                    format!("Invalid value for 'tool_choice': {other:?}. Supported values are: 'none', 'auto', 'required', or a named function."),
                    "tool_choice",
                    "invalid_value",
                ))
            }
        },
        Some(value) => Some(named_choice(value, &functions)?),
    };
    if functions.is_empty() {
        return match choice {
            None | Some(ToolChoice::Auto) => Ok(None),
            Some(_) => Err(invalid(
                "Invalid value for 'tool_choice': a function must be called, but 'tools' offers none.".into(),
                "tool_choice",
                "invalid_value",
            )),
        };
    }
    Ok(Some(Tools {
        functions,
        choice: choice.unwrap_or(ToolChoice::Auto),
        parallel: parallel.unwrap_or(true),
    }))
}

fn functions(list: &[Value]) -> Result<Vec<Function>, ApiError> {
    if list.len() > MAX_TOOLS {
        return Err(invalid(
            format!(
                "Invalid 'tools': {} tools given, at most {MAX_TOOLS} are allowed.",
                list.len()
            ),
            "tools",
            "array_above_max_length",
        ));
    }
    let mut out: Vec<Function> = Vec::with_capacity(list.len());
    for (i, tool) in list.iter().enumerate() {
        let field = format!("tools[{i}]");
        let tool = object(tool, &field)?;
        only(tool, &field, &["type", "function"])?;
        let kind = string(tool, &field, "type")?;
        if kind != "function" {
            return Err(invalid(
                format!(
                    "Invalid value for '{field}.type': {kind:?}. Supported values are: 'function'."
                ),
                &format!("{field}.type"),
                "invalid_value",
            ));
        }
        let field = format!("{field}.function");
        let function = object(tool.get("function").unwrap_or(&Value::Null), &field)?;
        only(
            function,
            &field,
            &["name", "description", "parameters", "strict"],
        )?;
        let name = string(function, &field, "name")?;
        if !is_schema_name(name) {
            return Err(invalid(
                format!("Invalid '{field}.name': expected 1 to 64 letters, digits, '_' or '-'."),
                &format!("{field}.name"),
                "invalid_value",
            ));
        }
        if out.iter().any(|f| f.name == name) {
            return Err(invalid(
                format!("Invalid '{field}.name': {name:?} is offered twice."),
                &format!("{field}.name"),
                "invalid_value",
            ));
        }
        let description = match function.get("description") {
            None | Some(Value::Null) => None,
            Some(_) => Some(string(function, &field, "description")?.to_string()),
        };
        let parameters = match function.get("parameters") {
            None | Some(Value::Null) => r#"{"type":"object","properties":{}}"#.to_string(),
            Some(p @ Value::Object(_)) => p.to_string(),
            Some(_) => {
                return Err(invalid(
                    format!(
                        "Invalid type for '{field}.parameters': expected a JSON Schema object."
                    ),
                    &format!("{field}.parameters"),
                    "invalid_type",
                ))
            }
        };
        flag(function, &field, "strict")?;
        out.push(Function {
            name: name.to_string(),
            description,
            parameters,
        });
    }
    Ok(out)
}

/// `{"type": "function", "function": {"name": ...}}`, naming an offered function.
fn named_choice(value: &Value, functions: &[Function]) -> Result<ToolChoice, ApiError> {
    let field = "tool_choice";
    let choice = object(value, field)?;
    only(choice, field, &["type", "function"])?;
    let kind = string(choice, field, "type")?;
    if kind != "function" {
        return Err(invalid(
            format!(
                "Invalid value for 'tool_choice.type': {kind:?}. Supported values are: 'function'."
            ),
            "tool_choice.type",
            "invalid_value",
        ));
    }
    let function = object(
        choice.get("function").unwrap_or(&Value::Null),
        "tool_choice.function",
    )?;
    only(function, "tool_choice.function", &["name"])?;
    let name = string(function, "tool_choice.function", "name")?;
    if !functions.iter().any(|f| f.name == name) {
        return Err(invalid(
            format!("Invalid value for 'tool_choice.function.name': {name:?} is not one of the functions in 'tools'."),
            "tool_choice.function.name",
            "invalid_value",
        ));
    }
    Ok(ToolChoice::Function(name.to_string()))
}

/// An assistant message's `tool_calls` (`[]` or `null`: none).
pub fn message_calls(value: Option<&Value>, i: usize) -> Result<Vec<ToolCall>, ApiError> {
    let field = format!("messages[{i}].tool_calls");
    let list = match value {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(list)) => list,
        Some(_) => {
            return Err(invalid(
                format!("Invalid type for '{field}': expected an array of tool calls."),
                &field,
                "invalid_type",
            ))
        }
    };
    let mut calls = Vec::with_capacity(list.len());
    for (j, call) in list.iter().enumerate() {
        let field = format!("{field}[{j}]");
        let call = object(call, &field)?;
        only(call, &field, &["id", "type", "function"])?;
        let id = string(call, &field, "id")?;
        if let Some(kind) = call.get("type") {
            if kind != "function" {
                return Err(invalid(
                    format!("Invalid value for '{field}.type': expected 'function'."),
                    &format!("{field}.type"),
                    "invalid_value",
                ));
            }
        }
        let ffield = format!("{field}.function");
        let function = object(call.get("function").unwrap_or(&Value::Null), &ffield)?;
        only(function, &ffield, &["name", "arguments"])?;
        calls.push(ToolCall {
            id: id.to_string(),
            name: string(function, &ffield, "name")?.to_string(),
            arguments: string(function, &ffield, "arguments")?.to_string(),
        });
    }
    Ok(calls)
}

/// A `tool` message's `tool_call_id` (required there, refused elsewhere).
pub fn call_id(value: Option<&Value>, i: usize, role: &str) -> Result<Option<String>, ApiError> {
    let field = format!("messages[{i}].tool_call_id");
    match (value, role) {
        (None | Some(Value::Null), "tool") => Err(missing(&field)),
        (None | Some(Value::Null), _) => Ok(None),
        (Some(Value::String(id)), "tool") => Ok(Some(id.clone())),
        (Some(Value::String(_)), _) => Err(invalid(
            format!("Invalid '{field}': only a 'tool' message answers a call."),
            &field,
            "invalid_value",
        )),
        (Some(_), _) => Err(invalid(
            format!("Invalid type for '{field}': expected a string."),
            &field,
            "invalid_type",
        )),
    }
}
