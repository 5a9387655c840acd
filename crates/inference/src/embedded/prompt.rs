//! Turning a request's input into the model's tokens: the model's chat template
//! for chats, the raw text for prompts, a BOS token where the model wants one
//! and the template did not already write it. The engine and the token counter
//! of the `openai-http` backend share this, so both count the same way.

use std::path::Path;
use std::sync::Arc;

use cocoon_protocol::{ErrorKind, Input, SamplingParams, WireError};
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;

use super::engine::EmbeddedError;
use super::template::ChatTemplate;
use super::tool_calls::ToolFormat;

pub struct Prompter {
    model: Arc<LlamaModel>,
    template: Option<ChatTemplate>,
    bos_text: String,
    name: String,
}

impl Prompter {
    /// For a loaded model; `path` is where to look for a `tokenizer_config.json`
    /// when the GGUF has no template.
    pub(super) fn new(
        model: Arc<LlamaModel>,
        path: &Path,
        name: &str,
    ) -> Result<Self, EmbeddedError> {
        let vocab = model.vocab();
        let special = |t: LlamaToken| {
            String::from_utf8_lossy(&vocab.token_to_piece(t, true, None)).into_owned()
        };
        let bos_text = special(vocab.bos());
        let eos_text = special(vocab.eos());
        let template = load_template(&model, path, &bos_text, &eos_text)?;
        Ok(Self {
            model,
            template,
            bos_text,
            name: name.to_string(),
        })
    }

    /// The tokenizer and template of a GGUF file, without its weights: to count
    /// tokens the way the embedded engine would.
    pub fn load_vocab(path: &Path, name: &str) -> Result<Self, EmbeddedError> {
        let backend = super::backend()?;
        let params = LlamaModelParams::default().with_vocab_only(true);
        let model = LlamaModel::load_from_file(backend, path, &params).map_err(|source| {
            EmbeddedError::Vocab {
                path: path.to_path_buf(),
                source,
            }
        })?;
        Self::new(Arc::new(model), path, name)
    }

    pub fn has_template(&self) -> bool {
        self.template.is_some()
    }

    /// How the model writes function calls (generic without a template).
    pub(super) fn tool_format(&self) -> ToolFormat {
        self.template
            .as_ref()
            .map_or(ToolFormat::Generic, ChatTemplate::tool_format)
    }

    /// The tokens the model reads for `input`.
    pub fn tokens(&self, input: &Input) -> Result<Vec<LlamaToken>, WireError> {
        self.tokens_for(input, &SamplingParams::default())
    }

    /// The tokens the model reads for `input` as `params` ask (the
    /// functions on offer, the thinking asked for: see
    /// [`ChatTemplate::render_for`]).
    pub fn tokens_for(
        &self,
        input: &Input,
        params: &SamplingParams,
    ) -> Result<Vec<LlamaToken>, WireError> {
        let invalid = |m: String| WireError::new(ErrorKind::InvalidRequest, m);
        let (text, parse_special) = match input {
            Input::Chat(messages) => {
                let template = self.template.as_ref().ok_or_else(|| {
                    invalid(format!(
                        "model '{}' has no chat template; use /v1/completions with a raw prompt",
                        self.name
                    ))
                })?;
                let text = template
                    .render_for(messages, params)
                    .map_err(|e| invalid(e.to_string()))?;
                (text, true)
            }
            Input::Prompt(prompt) => (prompt.clone(), false),
        };
        let vocab = self.model.vocab();
        let add_bos = vocab.should_add_bos()
            && (self.bos_text.is_empty() || !text.starts_with(&self.bos_text));
        let tokens = vocab.tokenize(text.as_bytes(), add_bos, parse_special);
        if tokens.is_empty() {
            return Err(invalid("the prompt is empty".into()));
        }
        Ok(tokens)
    }

    /// The tokens of `text`, control tokens such as `</think>` read as such.
    pub(super) fn special_tokens(&self, text: &str) -> Vec<LlamaToken> {
        self.model.vocab().tokenize(text.as_bytes(), false, true)
    }

    /// Token ids of plain `text`; `special` reads control tokens such as `<|im_start|>`.
    pub fn tokenize(&self, text: &str, add_bos: bool, special: bool) -> Vec<i32> {
        self.model
            .vocab()
            .tokenize(text.as_bytes(), add_bos, special)
            .into_iter()
            .map(|t| t.0)
            .collect()
    }
}

/// The template from the GGUF metadata, else from a `tokenizer_config.json`
/// beside the file, else none (chat requests are then refused, clearly).
fn load_template(
    model: &LlamaModel,
    path: &Path,
    bos: &str,
    eos: &str,
) -> Result<Option<ChatTemplate>, EmbeddedError> {
    if let Ok(source) = model.meta_val_str("tokenizer.chat_template") {
        return Ok(Some(ChatTemplate::new(&source, bos, eos)?));
    }
    let beside = path.with_file_name("tokenizer_config.json");
    if let Ok(json) = std::fs::read_to_string(&beside) {
        return ChatTemplate::from_tokenizer_config(&json)
            .map(Some)
            .map_err(|source| EmbeddedError::TemplateFile {
                path: beside,
                source,
            });
    }
    tracing::warn!(file = %path.display(), "model has no chat template: only /v1/completions will work");
    Ok(None)
}
