//! Fields nested inside request fields (`response_format.json_schema.*`,
//! `tools[i].function.*`, a message's `tool_calls`): read from JSON objects
//! key by key, each failure naming its full path, unknown keys refused.

use serde_json::{Map, Value};

use super::{missing, ApiError};

pub fn invalid(message: String, field: &str, code: &str) -> ApiError {
    ApiError::invalid(message, Some(field), code)
}

pub fn unknown(field: String) -> ApiError {
    invalid(
        format!("Unrecognized request argument supplied: {field}"),
        &field,
        "unknown_parameter",
    )
}

pub fn object<'a>(value: &'a Value, field: &str) -> Result<&'a Map<String, Value>, ApiError> {
    value.as_object().ok_or_else(|| {
        invalid(
            format!("Invalid type for '{field}': expected an object."),
            field,
            "invalid_type",
        )
    })
}

pub fn only(map: &Map<String, Value>, field: &str, allowed: &[&str]) -> Result<(), ApiError> {
    match map.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(unknown(format!("{field}.{k}"))),
        None => Ok(()),
    }
}

pub fn string<'a>(
    map: &'a Map<String, Value>,
    field: &str,
    key: &str,
) -> Result<&'a str, ApiError> {
    let path = format!("{field}.{key}");
    match map.get(key) {
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(invalid(
            format!("Invalid type for '{path}': expected a string."),
            &path,
            "invalid_type",
        )),
        None => Err(missing(&path)),
    }
}

/// An optional boolean (`null` or absent: `None`).
pub fn flag(map: &Map<String, Value>, field: &str, key: &str) -> Result<Option<bool>, ApiError> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => {
            let path = format!("{field}.{key}");
            Err(invalid(
                format!("Invalid type for '{path}': expected a boolean."),
                &path,
                "invalid_type",
            ))
        }
    }
}
