//! Chat templates: the model's own Jinja template (from the GGUF metadata key
//! `tokenizer.chat_template`, or a `tokenizer_config.json`), rendered with
//! minijinja the way Hugging Face's `transformers` renders it (trim_blocks,
//! lstrip_blocks, Python string methods, `raise_exception`).

use cocoon_protocol::ChatMessage;
use minijinja::{context, Environment, Error, ErrorKind};

/// A compiled chat template with the model's special tokens.
pub struct ChatTemplate {
    env: Environment<'static>,
    bos_token: String,
    eos_token: String,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate").finish_non_exhaustive()
    }
}

impl ChatTemplate {
    /// Compile `source`; an error names the template's syntax problem.
    pub fn new(source: &str, bos_token: &str, eos_token: &str) -> Result<Self, String> {
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
        env.add_template_owned("chat", source.to_string())
            .map_err(|e| format!("the model's chat template does not compile: {e}"))?;
        Ok(Self {
            env,
            bos_token: bos_token.to_string(),
            eos_token: eos_token.to_string(),
        })
    }

    /// Read the template from a Hugging Face `tokenizer_config.json`.
    pub fn from_tokenizer_config(json: &str) -> Result<Self, String> {
        let config: serde_json::Value =
            serde_json::from_str(json).map_err(|e| format!("tokenizer_config.json: {e}"))?;
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
                .ok_or("tokenizer_config.json: chat_template has no \"default\" entry")?
                .to_string(),
            _ => return Err("tokenizer_config.json has no chat_template".into()),
        };
        Self::new(&source, &token("bos_token"), &token("eos_token"))
    }

    /// The prompt for `messages`, ending where the assistant's answer begins.
    pub fn render(&self, messages: &[ChatMessage]) -> Result<String, String> {
        let template = self
            .env
            .get_template("chat")
            .map_err(|e| format!("chat template: {e}"))?;
        template
            .render(context! {
                messages => messages,
                add_generation_prompt => true,
                bos_token => &self.bos_token,
                eos_token => &self.eos_token,
            })
            .map_err(|e| format!("the model's chat template refused these messages: {e}"))
    }
}

#[cfg(test)]
mod tests;
