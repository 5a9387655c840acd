//! A model's tokenizer on its own: the vocabulary of a GGUF file loaded without
//! weights, to count tokens the way the engine does (and cross-check what an
//! upstream server reports).

use std::path::Path;

use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::LlamaModel;

pub struct Tokenizer {
    model: LlamaModel,
}

impl Tokenizer {
    pub fn load(path: &Path) -> Result<Self, String> {
        let backend = super::backend()?;
        let params = LlamaModelParams::default().with_vocab_only(true);
        let model = LlamaModel::load_from_file(backend, path, &params)
            .map_err(|e| format!("{}: could not load the vocabulary: {e}", path.display()))?;
        Ok(Self { model })
    }

    /// Token ids of `text`; `special` reads control tokens such as `<|im_start|>`.
    pub fn tokenize(&self, text: &str, add_bos: bool, special: bool) -> Vec<i32> {
        self.model
            .vocab()
            .tokenize(text.as_bytes(), add_bos, special)
            .into_iter()
            .map(|t| t.0)
            .collect()
    }
}
