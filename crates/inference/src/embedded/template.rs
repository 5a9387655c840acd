//! Chat templates: the model's own Jinja template (from the GGUF metadata key
//! `tokenizer.chat_template`, or a `tokenizer_config.json`), rendered with
//! minijinja the way Hugging Face's `transformers` renders it (trim_blocks,
//! lstrip_blocks, Python string methods, `raise_exception`).

use cocoon_protocol::{ChatMessage, SamplingParams};
use minijinja::{context, Environment, Error, ErrorKind};
use serde::Serialize;
use serde_json::{json, Value};

use super::tool_calls::{self, ToolFormat};

/// Why a chat template could not be read, compiled or rendered.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TemplateError {
    /// The template's syntax is wrong.
    #[error("the model's chat template does not compile: {0}")]
    Compile(#[source] Error),
    /// `tokenizer_config.json` is not JSON.
    #[error("tokenizer_config.json: {0}")]
    Json(#[source] serde_json::Error),
    /// `tokenizer_config.json` has a list of templates, none called "default".
    #[error("tokenizer_config.json: chat_template has no \"default\" entry")]
    NoDefault,
    /// `tokenizer_config.json` has no `chat_template`.
    #[error("tokenizer_config.json has no chat_template")]
    Missing,
    /// The compiled template could not be found again.
    #[error("chat template: {0}")]
    Lookup(#[source] Error),
    /// The template refused the messages (e.g. by `raise_exception`).
    #[error("the model's chat template refused these messages: {0}")]
    Render(#[source] Error),
}

/// A compiled chat template with the model's special tokens.
pub struct ChatTemplate {
    env: Environment<'static>,
    bos_token: String,
    eos_token: String,
    /// How the model writes calls. Templates of every format but the
    /// generic one render `tools` and `tool_calls` themselves; otherwise
    /// tools are described in a system message and calls written into the
    /// messages' text.
    format: ToolFormat,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate").finish_non_exhaustive()
    }
}

impl ChatTemplate {
    /// Compile `source`; an error names the template's syntax problem.
    pub fn new(source: &str, bos_token: &str, eos_token: &str) -> Result<Self, TemplateError> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        minijinja_contrib::add_to_environment(&mut env);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |message: String| -> Result<String, Error> {
                Err(Error::new(ErrorKind::InvalidOperation, message))
            },
        );
        env.add_filter("tojson", to_json);
        env.add_template_owned("chat", source.to_string())
            .map_err(TemplateError::Compile)?;
        Ok(Self {
            env,
            bos_token: bos_token.to_string(),
            eos_token: eos_token.to_string(),
            format: ToolFormat::detect(source),
        })
    }

    /// Read the template from a Hugging Face `tokenizer_config.json`.
    pub fn from_tokenizer_config(json: &str) -> Result<Self, TemplateError> {
        let config: serde_json::Value = serde_json::from_str(json).map_err(TemplateError::Json)?;
        let token = |key: &str| match &config[key] {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Object(o) => o
                .get("content")
                .and_then(|c| c.as_str())
                .unwrap_or_default()
                .to_string(),
            _ => String::new(),
        };
        let source = match &config["chat_template"] {
            serde_json::Value::String(s) => s.clone(),
            // A list of named templates: use the one called "default".
            serde_json::Value::Array(items) => items
                .iter()
                .find(|t| t["name"] == "default")
                .and_then(|t| t["template"].as_str())
                .ok_or(TemplateError::NoDefault)?
                .to_string(),
            _ => return Err(TemplateError::Missing),
        };
        Self::new(&source, &token("bos_token"), &token("eos_token"))
    }

    /// How the model writes function calls (read from the template).
    pub(crate) fn tool_format(&self) -> ToolFormat {
        self.format
    }

    /// The prompt for `messages`, ending where the assistant's answer begins.
    pub fn render(&self, messages: &[ChatMessage]) -> Result<String, TemplateError> {
        self.render_for(messages, &SamplingParams::default())
    }

    /// The prompt for `messages` as `params` ask: the functions of
    /// `params.tools` on offer, given to the template as `tools` (and calls
    /// as `tool_calls`, in the shape Hugging Face templates read) when it
    /// renders them, else described in a system message (see
    /// [`tool_calls::instructions`]); `params.thinking` as the variables
    /// reasoning templates read (`enable_thinking`, `reasoning_effort`),
    /// set only when asked so that each template's own default holds.
    pub fn render_for(
        &self,
        messages: &[ChatMessage],
        params: &SamplingParams,
    ) -> Result<String, TemplateError> {
        let tools = params.tools.as_ref();
        let template = self
            .env
            .get_template("chat")
            .map_err(TemplateError::Lookup)?;
        let native = self.format.rendered_by_template();
        let mut shown: Vec<Value> = messages.iter().map(|m| shape(m, native)).collect();
        let offered: Option<Vec<Value>> = tools.map(tool_calls::definitions);
        if let (Some(tools), false) = (tools, native) {
            let text = tool_calls::instructions(tools);
            match shown.first_mut() {
                Some(first) if first["role"] == "system" => {
                    let content = first["content"].as_str().unwrap_or_default();
                    first["content"] = Value::from(format!("{content}\n\n{text}"));
                }
                _ => shown.insert(0, json!({"role": "system", "content": text})),
            }
        }
        let mut asked = serde_json::Map::new();
        if let Some(thinking) = &params.thinking {
            if let Some(on) = thinking.enabled {
                asked.insert("enable_thinking".into(), Value::from(on));
            }
            if let Some(effort) = &thinking.effort {
                asked.insert("reasoning_effort".into(), Value::from(effort.as_str()));
            }
        }
        template
            .render(context! {
                messages => shown,
                tools => if native { offered } else { None },
                add_generation_prompt => true,
                bos_token => &self.bos_token,
                eos_token => &self.eos_token,
                ..minijinja::Value::from_serialize(&asked)
            })
            .map_err(TemplateError::Render)
    }
}

/// Jinja's `tojson` as `transformers` defines it for chat templates
/// (Python's `json.dumps`: `", "` and `": "` between items, or
/// `indent=n` lines; non-ASCII text kept as is): Qwen's, Llama's and
/// Mistral's templates write tools and arguments with it.
fn to_json(
    value: minijinja::Value,
    kwargs: minijinja::value::Kwargs,
) -> Result<minijinja::Value, Error> {
    let indent: Option<usize> = kwargs.get("indent")?;
    kwargs.assert_all_used()?;
    let mut out = Vec::new();
    let written = match indent {
        Some(n) => {
            let spaces = vec![b' '; n];
            let formatter = serde_json::ser::PrettyFormatter::with_indent(&spaces);
            value.serialize(&mut serde_json::Serializer::with_formatter(
                &mut out, formatter,
            ))
        }
        None => value.serialize(&mut serde_json::Serializer::with_formatter(
            &mut out, PythonJson,
        )),
    };
    written.map_err(|e| Error::new(ErrorKind::InvalidOperation, e.to_string()))?;
    let text = String::from_utf8(out)
        .map_err(|e| Error::new(ErrorKind::InvalidOperation, e.to_string()))?;
    Ok(minijinja::Value::from_safe_string(text))
}

/// `json.dumps`' default layout: `{"a": 1, "b": [2, 3]}`.
struct PythonJson;

impl serde_json::ser::Formatter for PythonJson {
    fn begin_array_value<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        separate(writer, first)
    }

    fn begin_object_key<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        separate(writer, first)
    }

    fn begin_object_value<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
    ) -> std::io::Result<()> {
        writer.write_all(b": ")
    }
}

/// `, ` before every item but the first, as `json.dumps` writes them.
fn separate<W: ?Sized + std::io::Write>(writer: &mut W, first: bool) -> std::io::Result<()> {
    if first {
        Ok(())
    } else {
        writer.write_all(b", ")
    }
}

/// A message as a template reads it: `role` and `content`, and for tool
/// chats either OpenAI's fields (`tool_calls` with `function.arguments` as
/// an object, `tool_call_id`) for templates that render them, or the same
/// written into the text in the generic format (`{"tool_call": ...}` and
/// `{"tool_response": ...}`).
fn shape(message: &ChatMessage, native: bool) -> Value {
    let mut out = shape_content(message, native);
    if let Some(reasoning) = &message.reasoning_content {
        out["reasoning_content"] = Value::from(reasoning.as_str());
    }
    out
}

fn shape_content(message: &ChatMessage, native: bool) -> Value {
    let calls = &message.tool_calls;
    if native {
        let mut out = json!({"role": message.role, "content": message.content});
        if !calls.is_empty() {
            out["tool_calls"] = calls
                .iter()
                .map(|c| {
                    json!({"id": c.id, "type": "function", "function": {
                        "name": c.name, "arguments": tool_calls::arguments_value(&c.arguments)}})
                })
                .collect();
        }
        if let Some(id) = &message.tool_call_id {
            out["tool_call_id"] = Value::from(id.as_str());
        }
        return out;
    }
    if message.role == "tool" {
        let text = tool_calls::tool_result(message.tool_call_id.as_deref(), &message.content);
        return json!({"role": "user", "content": text});
    }
    let mut text = message.content.clone();
    if !calls.is_empty() {
        if !text.is_empty() {
            text.push('\n');
        }
        text.push_str(&ToolFormat::Generic.written(calls));
    }
    json!({"role": message.role, "content": text})
}

#[cfg(test)]
mod tests;
