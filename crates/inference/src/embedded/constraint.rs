//! Constrained decoding: an answer held to a shape (OpenAI's
//! `response_format`) by masking, before each token is chosen, every token
//! that would leave the shape. The grammar engine is llguidance (through
//! `llama-cpp-2`'s `llguidance` feature): it compiles a JSON Schema into a
//! lexer and Earley parser and computes each step's allowed tokens over the
//! whole vocabulary in tens of microseconds, against milliseconds for
//! llama.cpp's GBNF sampler on large vocabularies, and it covers more of
//! JSON Schema (string formats and lengths, `$ref`, `anyOf`, patterns).
//!
//! [`Shapes`] is built once per model (the vocabulary as a token trie);
//! [`Shapes::compile`] turns one request's format into a [`Constraint`] off
//! the batch loop's thread, so a schema's errors come back before the
//! request is queued; the batch loop then asks the constraint for each
//! step's mask and feeds it each chosen token.

use cocoon_protocol::{OutputFormat, Tools};
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;
use llguidance::api::TopLevelGrammar;
use llguidance::toktrie::SimpleVob;
use llguidance::{Matcher, ParserFactory};
use serde_json::{json, Value};

use super::tool_calls::ToolFormat;

/// Why a format cannot be enforced; the message names the field.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ShapeError {
    /// The schema is not JSON, not an object, or uses what the grammar
    /// engine cannot enforce (the message names the keyword).
    #[error("Invalid 'response_format.json_schema.schema': {0}")]
    Schema(String),
    /// A function's parameters schema cannot be enforced (the field is
    /// named, e.g. `tools[1].function.parameters`).
    #[error("Invalid '{field}': {message}")]
    Tool { field: String, message: String },
    /// The grammar engine could not be set up for this model.
    #[error("structured outputs are unavailable for this model: {0}")]
    Unavailable(String),
}

/// The grammar engine for one model's vocabulary.
pub struct Shapes {
    factory: ParserFactory,
    /// The tags of [`ToolFormat::TAGS`] that are one control token of this
    /// vocabulary, with their ids.
    tags: Vec<(&'static str, u32)>,
}

impl std::fmt::Debug for Shapes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Shapes")
    }
}

impl Shapes {
    /// Walk `model`'s vocabulary once (a few hundred ms on 150k tokens).
    pub fn new(model: &LlamaModel) -> Result<Self, ShapeError> {
        let env = LlamaSampler::llguidance_tok_env(model);
        let mut factory =
            ParserFactory::new_simple(&env).map_err(|e| ShapeError::Unavailable(e.to_string()))?;
        // Nothing on stderr: a grammar's diagnostics quote the request's schema.
        factory.quiet();
        let vocab = model.vocab();
        let tags = ToolFormat::TAGS
            .into_iter()
            .filter_map(
                |tag| match vocab.tokenize(tag.as_bytes(), false, true)[..] {
                    [one] if vocab.token_to_piece(one, false, None).is_empty() => {
                        Some((tag, one.0 as u32))
                    }
                    _ => None,
                },
            )
            .collect();
        Ok(Self { factory, tags })
    }

    /// The id of `calls`' tag, where it is one control token.
    fn tag_token(&self, calls: ToolFormat) -> Option<u32> {
        let tag = calls.tag()?;
        self.tags.iter().find(|(t, _)| *t == tag).map(|(_, id)| *id)
    }

    /// A fresh constraint for one answer of `format`.
    pub fn compile(&self, format: &OutputFormat) -> Result<Constraint, ShapeError> {
        let grammar = TopLevelGrammar::from_json_schema(with_layout(format_schema(format)?));
        let parser = self
            .factory
            .create_parser(grammar)
            .map_err(|e| ShapeError::Schema(e.to_string()))?;
        let matcher = Matcher::new(Ok(parser));
        if let Some(e) = matcher.get_error() {
            return Err(ShapeError::Schema(e));
        }
        Ok(Constraint { matcher })
    }

    /// A fresh constraint holding one answer to either calls `tools`
    /// allows (in `calls`' format) or a JSON value of `format` (`tool_choice: auto` with
    /// `response_format`). What does not compile is named: the format, or
    /// the function at fault.
    pub fn compile_calls_or(
        &self,
        tools: &Tools,
        calls: ToolFormat,
        format: &OutputFormat,
    ) -> Result<Constraint, ShapeError> {
        // The format alone first: its refusal names the keyword.
        self.compile(format)?;
        let answer = with_layout(format_schema(format)?);
        let tag = self.tag_token(calls);
        self.calls_grammar(calls.grammar_or_answer(tools, tag, &answer), tools)
    }

    /// A fresh constraint holding one answer to the calls `tools` allows,
    /// written in `calls`' format. When the grammar does not compile, each
    /// function's schema is compiled alone to name the one at fault.
    pub fn compile_calls(
        &self,
        tools: &Tools,
        calls: ToolFormat,
    ) -> Result<Constraint, ShapeError> {
        self.calls_grammar(calls.grammar(tools, self.tag_token(calls)), tools)
    }

    /// A constraint for `lark`, a grammar of `tools`' calls; when it does
    /// not compile, the function at fault is named.
    fn calls_grammar(&self, lark: String, tools: &Tools) -> Result<Constraint, ShapeError> {
        match self.factory.create_parser(TopLevelGrammar::from_lark(lark)) {
            Ok(parser) => Ok(Constraint {
                matcher: Matcher::new(Ok(parser)),
            }),
            Err(whole) => Err(self.function_at_fault(tools).unwrap_or(ShapeError::Tool {
                field: "tools".into(),
                message: whole.to_string(),
            })),
        }
    }

    /// The first function of `tools` whose parameters schema does not compile.
    fn function_at_fault(&self, tools: &Tools) -> Option<ShapeError> {
        tools
            .functions
            .iter()
            .enumerate()
            .find_map(|(i, function)| {
                let grammar =
                    TopLevelGrammar::from_json_schema(with_layout(function.parameters_value()));
                let e = self.factory.create_parser(grammar).err()?;
                Some(ShapeError::Tool {
                    field: format!("tools[{i}].function.parameters"),
                    message: e.to_string(),
                })
            })
    }
}

/// The JSON Schema a response format holds an answer to.
fn format_schema(format: &OutputFormat) -> Result<Value, ShapeError> {
    Ok(match format {
        OutputFormat::JsonObject => json!({"type": "object"}),
        OutputFormat::JsonSchema { schema, .. } => {
            let value: Value = serde_json::from_str(schema)
                .map_err(|e| ShapeError::Schema(format!("not JSON: {e}")))?;
            if !value.is_object() && !value.is_boolean() {
                return Err(ShapeError::Schema(
                    "expected a JSON Schema object".to_string(),
                ));
            }
            value
        }
    })
}

/// One layout for every answer, whatever the schema asks of the grammar
/// engine: `{"a": 1, "b": [2, 3]}`, one space after `:` and `,`, none
/// elsewhere. Free whitespace would let a small model pad an answer with
/// newlines until `max_tokens` instead of closing it.
fn with_layout(mut schema: Value) -> Value {
    if let Value::Bool(allow) = schema {
        schema = if allow { json!({}) } else { json!({"not": {}}) };
    }
    if let Value::Object(object) = &mut schema {
        object.insert(
            "x-guidance".into(),
            json!({
                "whitespace_flexible": false,
                "item_separator": ", ",
                "key_separator": ": ",
                "lenient": false,
            }),
        );
    }
    schema
}

/// One answer's grammar state.
pub struct Constraint {
    matcher: Matcher,
}

impl std::fmt::Debug for Constraint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Constraint")
    }
}

/// What the grammar engine says the next token may be.
pub enum Next {
    /// These tokens (end-of-generation among them once the shape is complete).
    Allowed(SimpleVob),
    /// The shape is complete and nothing may follow.
    Complete,
}

impl Constraint {
    /// The tokens allowed next.
    pub fn next(&mut self) -> Result<Next, String> {
        if self.matcher.is_stopped() {
            return Ok(Next::Complete);
        }
        self.matcher
            .compute_mask_or_eos()
            .map(Next::Allowed)
            .map_err(|e| e.to_string())
    }

    /// An independent copy in the same state (the grammar is compiled
    /// once for all the answers of a request).
    pub fn fork(&self) -> Self {
        Constraint {
            matcher: self.matcher.deep_clone(),
        }
    }

    /// Take the chosen token; whether the shape is now complete.
    pub fn accept(&mut self, token: LlamaToken) -> Result<bool, String> {
        self.matcher
            .consume_token(token.0 as u32)
            .map_err(|e| e.to_string())?;
        Ok(self.matcher.is_stopped())
    }
}

/// The allowed token with the highest logit (the first of equals).
pub fn greedy_within(logits: &[f32], allowed: &SimpleVob) -> Option<LlamaToken> {
    let mut best: Option<(usize, f32)> = None;
    allowed.iter_set_entries(|i| {
        if let Some(&logit) = logits.get(i) {
            if best.is_none_or(|(_, b)| logit > b) {
                best = Some((i, logit));
            }
        }
    });
    best.map(|(i, _)| LlamaToken(i as i32))
}
