//! Generated Llama-architecture models in real GGUF format: random weights from a
//! fixed seed and a real SentencePiece-style tokenizer with a chat template in the
//! metadata. Loaded through exactly the same code path as downloaded models.
//!
//! Uses: unit tests that must not depend on a download, the devnet's last-resort
//! fallback when no real model can be had (its output is noise, and says so), and
//! speed benchmarks of larger model shapes.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::gguf_writer::{GgufWriter, TensorType, Value};

/// The dimensions of a generated model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelShape {
    pub n_embd: u32,
    pub n_layer: u32,
    pub n_head: u32,
    pub n_head_kv: u32,
    pub n_ff: u32,
    /// Total vocabulary; tokens beyond the real ones are unused fillers.
    pub n_vocab: u32,
    pub n_ctx_train: u32,
}

impl ModelShape {
    /// A few hundred kilobytes: for tests.
    pub const TINY: ModelShape = ModelShape {
        n_embd: 64,
        n_layer: 2,
        n_head: 4,
        n_head_kv: 2,
        n_ff: 128,
        n_vocab: 0,
        n_ctx_train: 4096,
    };
    /// Qwen2.5-0.5B's layer shape (about 0.36B non-embedding parameters).
    pub const HALF_B: ModelShape = ModelShape {
        n_embd: 896,
        n_layer: 24,
        n_head: 14,
        n_head_kv: 2,
        n_ff: 4864,
        n_vocab: 32000,
        n_ctx_train: 4096,
    };
    /// Llama-3.2-1B's layer shape (about 1B non-embedding parameters).
    pub const ONE_B: ModelShape = ModelShape {
        n_embd: 2048,
        n_layer: 16,
        n_head: 32,
        n_head_kv: 8,
        n_ff: 8192,
        n_vocab: 32000,
        n_ctx_train: 4096,
    };
}

/// The chat template stored in generated models (ChatML, rendered by our Jinja
/// engine like any model's own template).
pub const TINY_CHAT_TEMPLATE: &str = "{% for message in messages %}<|im_start|>{{ message.role }}\n{{ message.content }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

/// The chat template of generated reasoning models, in the style of Qwen 3:
/// the answer opens a `<think>` section unless `enable_thinking` is false
/// (then an empty one is written, closed), `reasoning_effort` is written
/// into a system turn, and earlier turns show their `reasoning_content`.
pub const REASONING_CHAT_TEMPLATE: &str = "{% if reasoning_effort is defined %}<|im_start|>system\nReasoning: {{ reasoning_effort }}<|im_end|>\n{% endif %}{% for message in messages %}<|im_start|>{{ message.role }}\n{% if message.reasoning_content %}<think>\n{{ message.reasoning_content }}\n</think>\n\n{% endif %}{{ message.content }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n{% else %}<think>\n{% endif %}{% endif %}";

/// The chat templates of generated tool models, one per format of calls
/// (see [`write_tool_model`]): each renders the tools, earlier calls and
/// their results itself, in the manner of its family's real template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToolTemplate {
    /// In the style of Qwen 2.5: `<tool_call>` tags.
    Hermes,
    /// In the style of Llama 3.1: `{"name": ..., "parameters": ...}`, one
    /// call per message, results in `ipython` turns.
    Llama3,
    /// In the style of Mistral v0.3: `[TOOL_CALLS] [...]` with call ids
    /// that must be nine characters (control tokens for its tags).
    Mistral,
}

impl ToolTemplate {
    /// The template's source.
    pub fn source(self) -> &'static str {
        match self {
            ToolTemplate::Hermes => HERMES_TOOL_TEMPLATE,
            ToolTemplate::Llama3 => LLAMA3_TOOL_TEMPLATE,
            ToolTemplate::Mistral => MISTRAL_TOOL_TEMPLATE,
        }
    }
}

const HERMES_TOOL_TEMPLATE: &str = concat!(
    "{% if tools %}<|im_start|>system\n# Tools\n<tools>",
    "{% for tool in tools %}{{ '\\n' }}{{ tool | tojson }}{% endfor %}",
    "{{ '\\n' }}</tools>\nFor each function call, return a json object within <tool_call></tool_call> XML tags:\n",
    "<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n{% endif %}",
    "{% for message in messages %}{% if message.role == 'tool' %}",
    "<|im_start|>user\n<tool_response>\n{{ message.content }}\n</tool_response><|im_end|>\n",
    "{% else %}<|im_start|>{{ message.role }}\n{{ message.content }}",
    "{% if message.tool_calls %}{% for call in message.tool_calls %}",
    "<tool_call>\n{\"name\": \"{{ call.function.name }}\", \"arguments\": {{ call.function.arguments | tojson }}}\n</tool_call>",
    "{% endfor %}{% endif %}<|im_end|>\n{% endif %}{% endfor %}",
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}",
);

const LLAMA3_TOOL_TEMPLATE: &str = concat!(
    "{# Built-in tools would be called after <|python_tag|>: not rendered here. #}",
    "{% if tools %}<|im_start|>system\nEnvironment: ipython\n",
    "Given the following functions, please respond with a JSON for a function call. ",
    "Respond in the format {\"name\": function name, \"parameters\": dictionary of argument name and its value}.",
    "{% for tool in tools %}{{ '\\n' }}{{ tool | tojson }}{% endfor %}<|im_end|>\n{% endif %}",
    "{% for message in messages %}{% if message.role == 'tool' %}",
    "<|im_start|>ipython\n{{ message.content }}<|im_end|>\n",
    "{% elif message.tool_calls %}{% if message.tool_calls | length != 1 %}",
    "{{ raise_exception('This model only supports single tool-calls at once!') }}{% endif %}",
    "<|im_start|>assistant\n{\"name\": \"{{ message.tool_calls[0].function.name }}\", ",
    "\"parameters\": {{ message.tool_calls[0].function.arguments | tojson }}}<|im_end|>\n",
    "{% else %}<|im_start|>{{ message.role }}\n{{ message.content }}<|im_end|>\n{% endif %}{% endfor %}",
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}",
);

const MISTRAL_TOOL_TEMPLATE: &str = concat!(
    "{{ bos_token }}{% for message in messages %}{% if message.role == 'user' %}",
    "{% if tools and loop.first %}[AVAILABLE_TOOLS] {{ tools | tojson }}[/AVAILABLE_TOOLS]{% endif %}",
    "[INST] {{ message.content }}[/INST]",
    "{% elif message.tool_calls %}[TOOL_CALLS] [{% for call in message.tool_calls %}",
    "{% if call.id is not string or call.id | length != 9 %}",
    "{{ raise_exception('Tool call IDs should be alphanumeric strings with length 9!') }}{% endif %}",
    "{\"name\": \"{{ call.function.name }}\", \"arguments\": {{ call.function.arguments | tojson }}, \"id\": \"{{ call.id }}\"}",
    "{% if not loop.last %}, {% endif %}{% endfor %}]{{ eos_token }}",
    "{% elif message.role == 'tool' %}[TOOL_RESULTS] {\"content\": {{ message.content | tojson }}, ",
    "\"call_id\": \"{{ message.tool_call_id }}\"}[/TOOL_RESULTS]",
    "{% else %}{{ message.content }}{{ eos_token }}{% endif %}{% endfor %}",
);

/// How much likelier than its random weights make it a generated reasoning
/// model's `</think>` is (its output row is scaled by this), so that noise
/// leaves its reasoning after a few tokens.
const THINK_END_BOOST: f32 = 3.0;

/// Which kind of chat model to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flavour {
    Chat,
    /// With `<think>` / `</think>` tokens and [`REASONING_CHAT_TEMPLATE`].
    Reasoning,
    /// With a template that renders tools (and Mistral's tags as control tokens).
    Tools(ToolTemplate),
}

const WORDS: &[&str] = &[
    "the", "of", "and", "to", "in", "is", "that", "it", "was", "for", "on", "are", "with", "as",
    "be", "at", "this", "have", "from", "or", "by", "not", "but", "what", "all", "were", "we",
    "when", "your", "can", "said", "there", "use", "an", "each", "which", "she", "do", "how",
    "their", "if", "will", "up", "other", "about", "out", "many", "then", "them", "these", "so",
    "some", "her", "would", "make", "like", "him", "into", "time", "has", "look", "two", "more",
    "write", "go", "see", "number", "no", "way", "could", "people", "my", "than", "first", "water",
    "been", "call", "who", "now", "find", "long", "down", "day", "did", "get", "come", "made",
    "may", "part", "hello", "world", "capital", "city", "summary", "chat", "message",
];

/// SentencePiece token types as llama.cpp reads them.
const NORMAL: i32 = 1;
const UNKNOWN: i32 = 2;
const CONTROL: i32 = 3;
const USER_DEFINED: i32 = 4;
const BYTE: i32 = 6;

struct Vocab {
    tokens: Vec<String>,
    scores: Vec<f32>,
    types: Vec<i32>,
}

fn vocab(min_size: u32, flavour: Flavour) -> Vocab {
    let mut v = Vocab {
        tokens: vec![],
        scores: vec![],
        types: vec![],
    };
    let push = |v: &mut Vocab, t: String, score: f32, kind: i32| {
        if !v.tokens.contains(&t) {
            v.tokens.push(t);
            v.scores.push(score);
            v.types.push(kind);
        }
    };
    push(&mut v, "<unk>".into(), 0.0, UNKNOWN);
    push(&mut v, "<s>".into(), 0.0, CONTROL);
    push(&mut v, "</s>".into(), 0.0, CONTROL);
    push(&mut v, "<|im_start|>".into(), 0.0, CONTROL);
    push(&mut v, "<|im_end|>".into(), 0.0, CONTROL);
    if flavour == Flavour::Reasoning {
        // As in Qwen 3: added tokens that show as text.
        push(&mut v, "<think>".into(), 0.0, USER_DEFINED);
        push(&mut v, "</think>".into(), 0.0, USER_DEFINED);
    }
    if flavour == Flavour::Tools(ToolTemplate::Mistral) {
        let tags = [
            "[INST]",
            "[/INST]",
            "[AVAILABLE_TOOLS]",
            "[/AVAILABLE_TOOLS]",
            "[TOOL_CALLS]",
            "[TOOL_RESULTS]",
            "[/TOOL_RESULTS]",
        ];
        for tag in tags {
            push(&mut v, tag.into(), 0.0, CONTROL);
        }
    }
    for b in 0..=255u8 {
        push(&mut v, format!("<0x{b:02X}>"), 0.0, BYTE);
    }
    let chars = "▁abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,!?'\"-:;()\n";
    for c in chars.chars() {
        push(&mut v, c.to_string(), -1000.0, NORMAL);
    }
    // Every prefix of "▁word", so SentencePiece's pairwise merges reach the word.
    for w in WORDS {
        let piece: Vec<char> = format!("▁{w}").chars().collect();
        for n in 2..=piece.len() {
            push(
                &mut v,
                piece[..n].iter().collect(),
                -100.0 + n as f32,
                NORMAL,
            );
        }
    }
    // Fill up to the requested size with printable pieces (so that every
    // generated token shows as text, as in a real vocabulary).
    let mut filler = 0;
    while (v.tokens.len() as u32) < min_size {
        push(&mut v, format!("▁w{filler}"), -10_000.0, NORMAL);
        filler += 1;
    }
    v
}

/// Write a generated model to `path`. The same seed and shape give the same bytes.
pub fn write_model(path: &Path, shape: ModelShape, seed: u64) -> io::Result<()> {
    write(path, shape, seed, Flavour::Chat)
}

/// Write a generated reasoning model to `path`: [`write_model`]'s, with
/// single `<think>` / `</think>` tokens, [`REASONING_CHAT_TEMPLATE`], and
/// `</think>` made likely enough that an answer's reasoning ends after a
/// few tokens (noise, like the rest of its output).
pub fn write_reasoning_model(path: &Path, shape: ModelShape, seed: u64) -> io::Result<()> {
    write(path, shape, seed, Flavour::Reasoning)
}

/// Write a generated model to `path` whose chat template renders tools in
/// the manner of `template`'s family: [`write_model`]'s otherwise.
pub fn write_tool_model(
    path: &Path,
    shape: ModelShape,
    seed: u64,
    template: ToolTemplate,
) -> io::Result<()> {
    write(path, shape, seed, Flavour::Tools(template))
}

fn write(path: &Path, shape: ModelShape, seed: u64, flavour: Flavour) -> io::Result<()> {
    let vocab = vocab(shape.n_vocab, flavour);
    let think_end = vocab.tokens.iter().position(|t| t == "</think>");
    let template = match flavour {
        Flavour::Chat => TINY_CHAT_TEMPLATE,
        Flavour::Reasoning => REASONING_CHAT_TEMPLATE,
        Flavour::Tools(template) => template.source(),
    };
    let n_vocab = vocab.tokens.len() as u64;
    let (e, ff) = (shape.n_embd as u64, shape.n_ff as u64);
    let head_dim = e / shape.n_head as u64;
    let e_kv = head_dim * shape.n_head_kv as u64;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut w = GgufWriter::default();
    w.meta("general.architecture", Value::Str("llama".into()))
        .meta(
            "general.name",
            Value::Str("cocoon-generated-random (output is noise)".into()),
        )
        .meta("general.alignment", Value::U32(32))
        .meta("llama.context_length", Value::U32(shape.n_ctx_train))
        .meta("llama.embedding_length", Value::U32(shape.n_embd))
        .meta("llama.block_count", Value::U32(shape.n_layer))
        .meta("llama.feed_forward_length", Value::U32(shape.n_ff))
        .meta("llama.attention.head_count", Value::U32(shape.n_head))
        .meta("llama.attention.head_count_kv", Value::U32(shape.n_head_kv))
        .meta("llama.rope.dimension_count", Value::U32(head_dim as u32))
        .meta("llama.rope.freq_base", Value::F32(10_000.0))
        .meta("llama.attention.layer_norm_rms_epsilon", Value::F32(1e-5))
        .meta("llama.vocab_size", Value::U32(n_vocab as u32))
        .meta("tokenizer.ggml.model", Value::Str("llama".into()))
        .meta("tokenizer.ggml.tokens", Value::StrArray(vocab.tokens))
        .meta("tokenizer.ggml.scores", Value::F32Array(vocab.scores))
        .meta("tokenizer.ggml.token_type", Value::I32Array(vocab.types))
        .meta("tokenizer.ggml.unknown_token_id", Value::U32(0))
        .meta("tokenizer.ggml.bos_token_id", Value::U32(1))
        .meta("tokenizer.ggml.eos_token_id", Value::U32(2))
        .meta("tokenizer.ggml.eot_token_id", Value::U32(4))
        .meta("tokenizer.ggml.add_bos_token", Value::Bool(true))
        .meta("tokenizer.ggml.add_eos_token", Value::Bool(false))
        .meta("tokenizer.chat_template", Value::Str(template.into()));

    let mut matrix = |w: &mut GgufWriter, name: &str, cols: u64, rows: u64, std: f32| {
        let values = normal(&mut rng, (cols * rows) as usize, std);
        w.tensor(name, &[cols, rows], &values, TensorType::Q8_0);
    };
    matrix(&mut w, "token_embd.weight", e, n_vocab, 1.0);
    for l in 0..shape.n_layer {
        let blk = |n: &str| format!("blk.{l}.{n}.weight");
        let s = 1.0 / (e as f32).sqrt();
        matrix(&mut w, &blk("attn_q"), e, e, s);
        matrix(&mut w, &blk("attn_k"), e, e_kv, s);
        matrix(&mut w, &blk("attn_v"), e, e_kv, s);
        matrix(&mut w, &blk("attn_output"), e, e, s);
        matrix(&mut w, &blk("ffn_gate"), e, ff, s);
        matrix(&mut w, &blk("ffn_up"), e, ff, s);
        matrix(&mut w, &blk("ffn_down"), ff, e, 1.0 / (ff as f32).sqrt());
        w.tensor(
            &blk("attn_norm"),
            &[e],
            &vec![1.0; e as usize],
            TensorType::F32,
        );
        w.tensor(
            &blk("ffn_norm"),
            &[e],
            &vec![1.0; e as usize],
            TensorType::F32,
        );
    }
    w.tensor(
        "output_norm.weight",
        &[e],
        &vec![1.0; e as usize],
        TensorType::F32,
    );
    let mut output = normal(&mut rng, (e * n_vocab) as usize, 8.0 / (e as f32).sqrt());
    if let Some(id) = think_end {
        let row = id * e as usize..(id + 1) * e as usize;
        output[row].iter_mut().for_each(|x| *x *= THINK_END_BOOST);
    }
    w.tensor("output.weight", &[e, n_vocab], &output, TensorType::Q8_0);

    // A private scratch name: concurrent writers of the same path never collide.
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = path.with_extension(format!("gguf.{}-{n}.part", std::process::id()));
    {
        let mut out = BufWriter::new(File::create(&tmp)?);
        w.write(&mut out)?;
        out.flush()?;
    }
    std::fs::rename(tmp, path)
}

/// Normally distributed values (Box-Muller), deterministic for a given generator.
fn normal(rng: &mut ChaCha8Rng, n: usize, std: f32) -> Vec<f32> {
    (0..n)
        .map(|_| {
            let u1: f32 = rng.gen_range(f32::EPSILON..1.0);
            let u2: f32 = rng.gen();
            std * (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
        })
        .collect()
}
