//! Chat histories exported by Telegram Desktop ("Export chat history" ->
//! machine-readable JSON, `result.json`): parsed into plain messages for
//! summaries and reply drafts. Text given as an array of plain strings and
//! entity objects (`{type, text}`) is flattened; media-only messages keep
//! their kind; service messages (`type: "service"`) keep their action. A
//! malformed export is refused with the message index and field at fault.

use serde_json::Value;

/// One exported chat.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatExport {
    pub name: String,
    /// `personal_chat`, `private_group`, `public_supergroup`, ...
    pub kind: String,
    pub id: i64,
    pub messages: Vec<ExportedMessage>,
}

/// One message, flattened.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportedMessage {
    pub id: i64,
    /// Local time as exported, `YYYY-MM-DDTHH:MM:SS`.
    pub date: String,
    /// Sender's display name (None for some service messages and deleted accounts).
    pub from: Option<String>,
    pub from_id: Option<String>,
    /// The text with entities flattened (may be empty for media).
    pub text: String,
    pub reply_to: Option<i64>,
    pub forwarded_from: Option<String>,
    /// `photo`, `voice_message`, `sticker`, `file`, ... when the message carries media.
    pub media: Option<String>,
    /// A service message's action (`pin_message`, `invite_members`, ...).
    pub service: Option<String>,
}

/// What is wrong with an export: where (`messages[12].text`) and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ExportError {
    pub field: String,
    pub message: String,
}

fn error(field: impl Into<String>, message: impl Into<String>) -> ExportError {
    ExportError {
        field: field.into(),
        message: message.into(),
    }
}

/// Parse `result.json`.
pub fn parse(bytes: &[u8]) -> Result<ChatExport, ExportError> {
    let root: Value =
        serde_json::from_slice(bytes).map_err(|e| error("export", format!("not JSON: {e}")))?;
    let root = root
        .as_object()
        .ok_or_else(|| error("export", "expected a JSON object (Telegram's result.json)"))?;
    let name = match root.get("name") {
        Some(Value::String(s)) => s.clone(),
        // Saved messages have no name.
        None | Some(Value::Null) => String::new(),
        Some(_) => return Err(error("name", "expected a string")),
    };
    let kind = root
        .get("type")
        .and_then(Value::as_str)
        .ok_or_else(|| error("type", "expected a string such as \"personal_chat\""))?
        .to_string();
    let id = root
        .get("id")
        .and_then(Value::as_i64)
        .ok_or_else(|| error("id", "expected an integer"))?;
    let list = root
        .get("messages")
        .ok_or_else(|| {
            error(
                "messages",
                "missing: export a single chat (not the whole account) as JSON",
            )
        })?
        .as_array()
        .ok_or_else(|| error("messages", "expected an array"))?;
    let messages = list
        .iter()
        .enumerate()
        .map(|(i, m)| message(i, m))
        .collect::<Result<_, _>>()?;
    Ok(ChatExport {
        name,
        kind,
        id,
        messages,
    })
}

fn message(index: usize, value: &Value) -> Result<ExportedMessage, ExportError> {
    let at = |field: &str| format!("messages[{index}].{field}");
    let m = value
        .as_object()
        .ok_or_else(|| error(format!("messages[{index}]"), "expected an object"))?;
    let id = m
        .get("id")
        .and_then(Value::as_i64)
        .ok_or_else(|| error(at("id"), "expected an integer"))?;
    let kind = m
        .get("type")
        .and_then(Value::as_str)
        .ok_or_else(|| error(at("type"), "expected \"message\" or \"service\""))?;
    let date = m
        .get("date")
        .and_then(Value::as_str)
        .filter(|d| is_export_date(d))
        .ok_or_else(|| error(at("date"), "expected a date like \"2024-03-01T10:15:00\""))?
        .to_string();
    let optional_string = |field: &str| -> Result<Option<String>, ExportError> {
        match m.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(error(at(field), "expected a string")),
        }
    };
    let from = optional_string("from")?.or(optional_string("actor")?);
    let from_id = optional_string("from_id")?.or(optional_string("actor_id")?);
    let text = match m.get("text") {
        None | Some(Value::Null) => String::new(),
        Some(text) => flatten(text, &at("text"))?,
    };
    let reply_to = match m.get("reply_to_message_id") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_i64()
                .ok_or_else(|| error(at("reply_to_message_id"), "expected an integer"))?,
        ),
    };
    let forwarded_from = optional_string("forwarded_from")?;
    let media = match optional_string("media_type")? {
        Some(kind) => Some(kind),
        None if m.contains_key("photo") => Some("photo".into()),
        None if m.contains_key("file") => Some("file".into()),
        None => None,
    };
    let service = match kind {
        "message" => None,
        "service" => Some(optional_string("action")?.unwrap_or_else(|| "service".into())),
        other => {
            return Err(error(
                at("type"),
                format!("expected \"message\" or \"service\", got {other:?}"),
            ))
        }
    };
    Ok(ExportedMessage {
        id,
        date,
        from,
        from_id,
        text,
        reply_to,
        forwarded_from,
        media,
        service,
    })
}

/// `text` (at `field`) as a string, or an array of strings and entity
/// objects.
fn flatten(text: &Value, field: &str) -> Result<String, ExportError> {
    match text {
        Value::String(s) => Ok(s.clone()),
        Value::Array(parts) => {
            let mut out = String::new();
            for (i, part) in parts.iter().enumerate() {
                match part {
                    Value::String(s) => out.push_str(s),
                    Value::Object(entity) => match entity.get("text") {
                        Some(Value::String(s)) => out.push_str(s),
                        _ => {
                            return Err(error(
                                field,
                                format!("entity [{i}] has no string \"text\""),
                            ))
                        }
                    },
                    _ => {
                        return Err(error(
                            field,
                            format!("part [{i}] is neither a string nor an entity {{type, text}}"),
                        ))
                    }
                }
            }
            Ok(out)
        }
        _ => Err(error(
            field,
            "expected a string or an array of strings and entities",
        )),
    }
}

/// `YYYY-MM-DDTHH:MM:SS`, as Telegram Desktop writes dates.
pub fn is_export_date(text: &str) -> bool {
    let b = text.as_bytes();
    b.len() == 19
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => *c == b'T',
            13 | 16 => *c == b':',
            _ => c.is_ascii_digit(),
        })
}

impl ExportedMessage {
    /// One transcript line: time, sender, reply and forward marks, text or
    /// media kind. `None` for service messages and empty ones.
    pub fn line(&self, by_id: &std::collections::HashMap<i64, &ExportedMessage>) -> Option<String> {
        if self.service.is_some() {
            return None;
        }
        let body = match (&self.text, &self.media) {
            (t, Some(media)) if t.trim().is_empty() => format!("[{media}]"),
            (t, Some(media)) => format!("[{media}] {}", t.trim()),
            (t, None) if t.trim().is_empty() => return None,
            (t, None) => t.trim().to_string(),
        };
        let mut line = format!(
            "[{} {}] {}",
            &self.date[..10],
            &self.date[11..16],
            self.from.as_deref().unwrap_or("(unknown)")
        );
        if let Some(to) = self.reply_to.and_then(|id| by_id.get(&id)) {
            line.push_str(&format!(
                " (replying to {})",
                to.from.as_deref().unwrap_or("(unknown)")
            ));
        }
        if let Some(f) = &self.forwarded_from {
            line.push_str(&format!(" (forwarded from {f})"));
        }
        line.push_str(": ");
        line.push_str(&body.replace('\n', " "));
        Some(line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn export(messages: Value) -> Vec<u8> {
        serde_json::to_vec(
            &json!({"name": "Team", "type": "private_group", "id": 42, "messages": messages}),
        )
        .unwrap()
    }

    #[test]
    fn entities_media_replies_forwards_and_service_messages_parse() {
        let bytes = export(json!([
            {"id": 1, "type": "service", "date": "2024-03-01T10:00:00", "actor": "Anna", "actor_id": "user1", "action": "invite_members", "text": ""},
            {"id": 2, "type": "message", "date": "2024-03-01T10:01:00", "from": "Anna", "from_id": "user1",
             "text": ["See ", {"type": "link", "text": "https://example.org"}, " and ", {"type": "bold", "text": "hurry"}]},
            {"id": 3, "type": "message", "date": "2024-03-01T10:02:00", "from": "Борис", "from_id": "user2",
             "text": "Хорошо", "reply_to_message_id": 2},
            {"id": 4, "type": "message", "date": "2024-03-01T10:03:00", "from": "Anna", "from_id": "user1",
             "text": "", "photo": "photos/1.jpg"},
            {"id": 5, "type": "message", "date": "2024-03-01T10:04:00", "from": "Anna", "from_id": "user1",
             "text": "look", "forwarded_from": "News"},
        ]));
        let chat = parse(&bytes).unwrap();
        assert_eq!(chat.messages.len(), 5);
        assert_eq!(chat.messages[0].service.as_deref(), Some("invite_members"));
        assert_eq!(chat.messages[1].text, "See https://example.org and hurry");
        assert_eq!(chat.messages[3].media.as_deref(), Some("photo"));
        let by_id = chat.messages.iter().map(|m| (m.id, m)).collect();
        let lines: Vec<String> = chat
            .messages
            .iter()
            .filter_map(|m| m.line(&by_id))
            .collect();
        assert_eq!(
            lines,
            [
                "[2024-03-01 10:01] Anna: See https://example.org and hurry",
                "[2024-03-01 10:02] Борис (replying to Anna): Хорошо",
                "[2024-03-01 10:03] Anna: [photo]",
                "[2024-03-01 10:04] Anna (forwarded from News): look",
            ]
        );
    }

    #[test]
    fn a_malformed_export_names_the_message_and_field() {
        let ok = json!({"id": 1, "type": "message", "date": "2024-03-01T10:00:00", "from": "A", "text": "x"});
        let cases = [
            (
                json!([ok, {"id": "x", "type": "message", "date": "2024-03-01T10:00:00"}]),
                "messages[1].id",
            ),
            (
                json!([ok, {"id": 2, "type": "message", "date": "yesterday"}]),
                "messages[1].date",
            ),
            (
                json!([{"id": 2, "type": "message", "date": "2024-03-01T10:00:00", "text": [1]}]),
                "messages[0].text",
            ),
            (
                json!([{"id": 2, "type": "message", "date": "2024-03-01T10:00:00", "text": [{"type": "bold"}]}]),
                "messages[0].text",
            ),
            (
                json!([{"id": 2, "type": "sticker", "date": "2024-03-01T10:00:00"}]),
                "messages[0].type",
            ),
            (
                json!([{"id": 2, "type": "message", "date": "2024-03-01T10:00:00", "from": 7}]),
                "messages[0].from",
            ),
            (
                json!([{"id": 2, "type": "message", "date": "2024-03-01T10:00:00", "reply_to_message_id": "1"}]),
                "messages[0].reply_to_message_id",
            ),
            (json!([7]), "messages[0]"),
        ];
        for (messages, field) in cases {
            let err = parse(&export(messages)).unwrap_err();
            assert_eq!(err.field, field, "{err}");
        }
        assert_eq!(parse(b"[]").unwrap_err().field, "export");
        assert_eq!(
            parse(b"{\"type\":\"personal_chat\",\"id\":1}")
                .unwrap_err()
                .field,
            "messages"
        );
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            let _ = parse(&bytes);
        }
    }
}
