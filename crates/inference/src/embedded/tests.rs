//! The embedded engine on a generated tiny model (random weights, real GGUF,
//! real tokenizer): same code path as a downloaded model, no download.

use std::path::PathBuf;
use std::sync::OnceLock;

use cocoon_protocol::{
    ChatMessage, Done, ErrorKind, Event, FinishReason, GenerateRequest, Input, SamplingParams,
};
use futures::StreamExt;

use super::*;
use crate::tiny_model::{write_model, ModelShape};
use crate::Engine;

fn tiny_path() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("cocoon-tiny-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("tiny.gguf");
        write_model(&path, ModelShape::TINY, 7).unwrap();
        path
    })
    .clone()
}

fn engine(max_sequences: u32) -> EmbeddedEngine {
    engine_with_context(max_sequences, 256)
}

fn engine_with_context(max_sequences: u32, context_tokens: u32) -> EmbeddedEngine {
    let mut config = EmbeddedConfig::new(tiny_path(), "tiny");
    config.max_sequences = max_sequences;
    config.context_tokens = context_tokens;
    config.threads = 1;
    EmbeddedEngine::load(config).expect("tiny model loads")
}

fn chat(text: &str, params: SamplingParams) -> GenerateRequest {
    GenerateRequest {
        model: "tiny".into(),
        input: Input::Chat(vec![ChatMessage::new("user", text)]),
        params,
    }
}

fn greedy(max_tokens: u32) -> SamplingParams {
    SamplingParams {
        max_tokens: Some(max_tokens),
        temperature: Some(0.0),
        ..Default::default()
    }
}

/// Run one request to its end: the text and the final `Done`.
async fn run(engine: &EmbeddedEngine, request: GenerateRequest) -> (String, Done) {
    let mut stream = engine.generate(request);
    let mut text = String::new();
    while let Some(event) = stream.next().await {
        match event {
            Event::Delta { text: t, .. } => text.push_str(&t),
            Event::Done(done) => return (text, done),
            // The prompt's counts, for the worker's running totals.
            Event::Usage(_) => {}
            other => panic!("unexpected event {other:?}"),
        }
    }
    panic!("stream ended without Done");
}

#[tokio::test]
async fn generates_exactly_max_tokens_and_counts_with_the_tokenizer() {
    let engine = engine(2);
    let (text, done) = run(&engine, chat("hello world", greedy(12))).await;
    assert_eq!(done.finish_reason, FinishReason::Length);
    assert_eq!(done.usage.completion_tokens, 12);
    assert!(!text.is_empty());
    // The prompt is the model's own template, tokenized by its own vocabulary.
    let rendered = "<|im_start|>user\nhello world<|im_end|>\n<|im_start|>assistant\n";
    let tokenizer = Prompter::load_vocab(&tiny_path(), "tiny").unwrap();
    let expected = tokenizer.tokenize(rendered, true, true).len() as u64;
    assert_eq!(done.usage.prompt_tokens, expected);
    assert_eq!(
        engine.models()[0].weights_sha256.as_deref(),
        Some(engine.facts().sha256.as_str())
    );
}

#[tokio::test]
async fn same_seed_same_output_other_seed_other_output() {
    let engine = engine(2);
    let sampled = |seed| SamplingParams {
        max_tokens: Some(24),
        temperature: Some(1.0),
        seed: Some(seed),
        ..Default::default()
    };
    let (a, _) = run(&engine, chat("the capital city", sampled(42))).await;
    let (b, _) = run(&engine, chat("the capital city", sampled(42))).await;
    let (c, _) = run(&engine, chat("the capital city", sampled(43))).await;
    assert_eq!(a, b);
    assert_ne!(
        a, c,
        "24 random tokens from a near-uniform model differ by seed"
    );
}

#[tokio::test]
async fn concurrent_requests_give_the_same_outputs_as_serial_runs() {
    let engine = engine(4);
    let prompts = [
        "hello world",
        "what is the time",
        "water and people",
        "find my city",
    ];
    let mut serial = Vec::new();
    for p in prompts {
        serial.push(run(&engine, chat(p, greedy(20))).await);
    }
    // A fresh engine so that no cached prefix differs from the serial run.
    let engine = engine_fresh(4);
    let batched =
        futures::future::join_all(prompts.map(|p| run(&engine, chat(p, greedy(20))))).await;
    for (s, b) in serial.iter().zip(&batched) {
        assert_eq!(s.0, b.0);
        assert_eq!(s.1.usage.completion_tokens, b.1.usage.completion_tokens);
    }
}

fn engine_fresh(n: u32) -> EmbeddedEngine {
    engine(n)
}

#[tokio::test]
async fn next_turn_reuses_the_cached_prompt_prefix() {
    let engine = engine(1);
    let (_, first) = run(&engine, chat("hello world", greedy(4))).await;
    assert_eq!(first.usage.cached_prompt_tokens, 0);
    let (_, again) = run(&engine, chat("hello world", greedy(4))).await;
    assert_eq!(
        again.usage.cached_prompt_tokens,
        first.usage.prompt_tokens - 1
    );
}

#[tokio::test]
async fn stop_sequence_ends_the_answer_before_it() {
    let engine = engine(1);
    let (full, _) = run(&engine, chat("hello world", greedy(30))).await;
    let chars: Vec<char> = full.chars().collect();
    assert!(chars.len() > 10, "answer long enough to cut: {full:?}");
    let stop: String = chars[6..9].iter().collect();
    let cut = full.find(&stop).unwrap();
    let params = SamplingParams {
        stop: vec![stop],
        ..greedy(30)
    };
    let (text, done) = run(&engine, chat("hello world", params)).await;
    assert_eq!(text, full[..cut]);
    assert_eq!(done.finish_reason, FinishReason::Stop);
}

#[tokio::test]
async fn too_long_requests_are_refused_with_the_numbers() {
    let engine = engine(1);
    let mut stream = engine.generate(chat("hello", greedy(1000)));
    match stream.next().await {
        Some(Event::Error(e)) => {
            assert_eq!(e.kind, ErrorKind::InvalidRequest);
            assert!(
                e.message.contains("maximum context length is 256"),
                "{}",
                e.message
            );
        }
        other => panic!("expected an error, got {other:?}"),
    }
    let long = "hello ".repeat(400);
    let mut stream = engine.generate(chat(&long, greedy(1)));
    assert!(
        matches!(stream.next().await, Some(Event::Error(e)) if e.kind == ErrorKind::InvalidRequest)
    );
}

#[tokio::test]
async fn a_dropped_stream_frees_its_sequence() {
    let engine = engine(1);
    let mut stream = engine.generate(chat("hello world", greedy(200)));
    assert!(matches!(stream.next().await, Some(Event::Usage(_))));
    assert!(matches!(stream.next().await, Some(Event::Delta { .. })));
    let load = engine.load().await.unwrap();
    assert_eq!(load.running, 1);
    drop(stream);
    // The only sequence must be free again for this request to finish.
    let (_, done) = run(&engine, chat("water", greedy(5))).await;
    assert_eq!(done.usage.completion_tokens, 5);
    for _ in 0..100 {
        if engine.load().await.unwrap().running == 0 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    panic!("load still shows a running request");
}

#[tokio::test]
async fn raw_prompts_skip_the_chat_template() {
    let engine = engine(1);
    let request = GenerateRequest {
        model: "tiny".into(),
        input: Input::Prompt("hello world".into()),
        params: greedy(3),
    };
    let (_, done) = run(&engine, request).await;
    let tokenizer = Prompter::load_vocab(&tiny_path(), "tiny").unwrap();
    assert_eq!(
        done.usage.prompt_tokens,
        tokenizer.tokenize("hello world", true, false).len() as u64
    );
}

#[test]
fn generated_models_are_reproducible() {
    let dir = std::env::temp_dir().join(format!("cocoon-tiny-repro-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (a, b) = (dir.join("a.gguf"), dir.join("b.gguf"));
    write_model(&a, ModelShape::TINY, 7).unwrap();
    write_model(&b, ModelShape::TINY, 7).unwrap();
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_file_that_is_not_gguf_is_refused_by_name() {
    let dir = std::env::temp_dir().join(format!("cocoon-notgguf-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("model.gguf");
    std::fs::write(&path, b"not a model").unwrap();
    let err = EmbeddedEngine::load(EmbeddedConfig::new(&path, "x"))
        .err()
        .unwrap();
    assert!(matches!(err, EmbeddedError::Load { .. }), "{err:?}");
    let err = err.to_string();
    assert!(
        err.contains("model.gguf") && err.contains("could not load"),
        "{err}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

/// The refusal `request` gets, as its first event.
async fn refused(engine: &EmbeddedEngine, request: GenerateRequest) -> cocoon_protocol::WireError {
    match engine.generate(request).next().await {
        Some(Event::Error(e)) => e,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// A schema whose every answer is short: a boolean, a digit, one of two words.
const BOUNDED_SCHEMA: &str = r#"{"type":"object","properties":{"ok":{"type":"boolean"},"n":{"type":"integer","minimum":0,"maximum":9},"color":{"enum":["red","green"]}},"required":["ok","n","color"],"additionalProperties":false}"#;

fn schema_format(schema: &str) -> Option<cocoon_protocol::OutputFormat> {
    Some(cocoon_protocol::OutputFormat::JsonSchema {
        name: "answer".into(),
        schema: schema.into(),
        strict: true,
    })
}

/// `text` is an object of exactly the bounded schema's fields and values.
fn valid_bounded(text: &str) -> Result<(), String> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| format!("{e}"))?;
    let object = value.as_object().ok_or("not an object")?;
    let keys: std::collections::BTreeSet<&str> = object.keys().map(String::as_str).collect();
    if keys != ["color", "n", "ok"].into() {
        return Err(format!("keys {keys:?}"));
    }
    let n = object["n"].as_i64().ok_or("n is not an integer")?;
    let ok = object["ok"].is_boolean() && (0..=9).contains(&n);
    let color = object["color"].as_str();
    if ok && matches!(color, Some("red" | "green")) {
        Ok(())
    } else {
        Err(format!("values {value}"))
    }
}

#[tokio::test]
async fn every_structured_answer_parses_and_fits_its_schema() {
    // A random-weight model left alone writes no JSON at all: the grammar
    // alone makes these answers valid.
    let engine = engine(4);
    let (free, _) = run(&engine, chat("give me json", greedy(40))).await;
    assert!(valid_bounded(&free).is_err(), "{free}");
    let runs = (1..=6u64).map(|seed| {
        let params = SamplingParams {
            max_tokens: Some(120),
            temperature: Some(if seed == 1 { 0.0 } else { 1.0 }),
            seed: Some(seed),
            format: schema_format(BOUNDED_SCHEMA),
            ..Default::default()
        };
        run(&engine, chat("give me json", params))
    });
    for (text, done) in futures::future::join_all(runs).await {
        assert_eq!(done.finish_reason, FinishReason::Stop, "{text}");
        valid_bounded(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
        assert!(text.starts_with("{\""), "one layout: {text}");
    }
}

#[tokio::test]
async fn json_object_answers_are_objects_or_cut_by_max_tokens() {
    let engine = engine(2);
    for seed in 1..=4u64 {
        let params = SamplingParams {
            max_tokens: Some(60),
            temperature: Some(1.0),
            seed: Some(seed),
            format: Some(cocoon_protocol::OutputFormat::JsonObject),
            ..Default::default()
        };
        let (text, done) = run(&engine, chat("an object please", params)).await;
        assert!(text.starts_with('{'), "{text}");
        if done.finish_reason == FinishReason::Stop {
            let value: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert!(value.is_object(), "{text}");
        } else {
            assert_eq!(done.usage.completion_tokens, 60);
        }
    }
}

#[tokio::test]
async fn schemas_the_grammar_cannot_enforce_are_refused_naming_the_keyword() {
    let engine = engine(1);
    let refusal = |schema: &'static str| {
        let params = SamplingParams {
            max_tokens: Some(8),
            format: schema_format(schema),
            ..Default::default()
        };
        refused(&engine, chat("x", params))
    };
    let e = refusal(r#"{"type":"object","if":{"required":["a"]},"then":{}}"#).await;
    assert_eq!(e.kind, ErrorKind::InvalidRequest);
    assert!(
        e.message
            .starts_with("Invalid 'response_format.json_schema.schema'"),
        "{}",
        e.message
    );
    assert!(e.message.contains("if"), "{}", e.message);
    let e = refusal(r#"{"type":"strin"}"#).await;
    assert!(e.message.contains("strin"), "{}", e.message);
    // The engine still serves after refusing.
    let (_, done) = run(&engine, chat("x", greedy(3))).await;
    assert_eq!(done.usage.completion_tokens, 3);
}

/// An engine with room for the tools' description (the tiny vocabulary
/// spends a token on every few characters of it).
fn tool_engine(max_sequences: u32) -> EmbeddedEngine {
    engine_with_context(max_sequences, 1024)
}

fn weather_tools(choice: cocoon_protocol::ToolChoice) -> cocoon_protocol::Tools {
    cocoon_protocol::Tools {
        functions: vec![
            cocoon_protocol::Function {
                name: "get_weather".into(),
                description: Some("The weather in a city now".into()),
                parameters: r#"{"type":"object","properties":{"city":{"enum":["Paris","Oslo"]},"days":{"type":"integer","minimum":1,"maximum":3}},"required":["city","days"],"additionalProperties":false}"#.into(),
            },
            cocoon_protocol::Function {
                name: "get_time".into(),
                description: None,
                parameters: r#"{"type":"object","properties":{"zone":{"type":"boolean"}},"required":["zone"],"additionalProperties":false}"#.into(),
            },
        ],
        choice,
        parallel: false,
    }
}

/// Run a tool request to its end: the text, the calls (name, arguments)
/// assembled from their pieces, and the final `Done`.
async fn run_calls(
    engine: &EmbeddedEngine,
    request: GenerateRequest,
) -> (String, Vec<(String, String)>, Done) {
    let mut stream = engine.generate(request);
    let (mut text, mut calls) = (String::new(), Vec::<(String, String)>::new());
    while let Some(event) = stream.next().await {
        match event {
            Event::Delta { text: t, .. } => text.push_str(&t),
            Event::ToolCall(piece) => {
                if let Some(name) = piece.name {
                    assert_eq!(piece.index as usize, calls.len());
                    calls.push((name, String::new()));
                }
                calls[piece.index as usize].1.push_str(&piece.arguments);
            }
            Event::Done(done) => return (text, calls, done),
            // The prompt's counts, for the worker's running totals.
            Event::Usage(_) => {}
            other => panic!("unexpected event {other:?}"),
        }
    }
    panic!("stream ended without Done");
}

#[tokio::test]
async fn required_and_named_tool_choices_always_give_valid_calls() {
    let engine = &tool_engine(4);
    let runs = (1..=6u64).map(|seed| {
        let (choice, params) = forced_choice(seed);
        async move {
            (
                choice,
                run_calls(engine, chat("weather in Paris?", params)).await,
            )
        }
    });
    for (choice, (text, calls, done)) in futures::future::join_all(runs).await {
        assert_eq!(text, "", "no text beside forced calls");
        assert_eq!(done.finish_reason, FinishReason::ToolCalls, "{calls:?}");
        assert_eq!(calls.len(), 1, "{calls:?}");
        check_forced_call(&choice, &calls[0]);
    }
}

/// Run `seed` of the forced-call tests: a named function on even seeds,
/// `required` on odd ones; greedy on seed 1, sampled on the others.
fn forced_choice(seed: u64) -> (cocoon_protocol::ToolChoice, SamplingParams) {
    use cocoon_protocol::ToolChoice;
    let choice = if seed.is_multiple_of(2) {
        ToolChoice::Function("get_time".into())
    } else {
        ToolChoice::Required
    };
    let params = SamplingParams {
        max_tokens: Some(80),
        temperature: Some(if seed == 1 { 0.0 } else { 1.0 }),
        seed: Some(seed),
        tools: Some(weather_tools(choice.clone())),
        ..Default::default()
    };
    (choice, params)
}

/// `call` (name, arguments) is one `choice` allows, its arguments valid
/// against [`weather_tools`]' schemas.
fn check_forced_call(choice: &cocoon_protocol::ToolChoice, call: &(String, String)) {
    use cocoon_protocol::ToolChoice;
    let (name, arguments) = call;
    let args: serde_json::Value = serde_json::from_str(arguments)
        .unwrap_or_else(|e| panic!("arguments not JSON ({e}): {arguments:?}"));
    match name.as_str() {
        "get_weather" => {
            assert_eq!(*choice, ToolChoice::Required);
            assert!(
                matches!(args["city"].as_str(), Some("Paris" | "Oslo")),
                "{args}"
            );
            assert!(
                args["days"].as_i64().is_some_and(|d| (1..=3).contains(&d)),
                "{args}"
            );
            assert_eq!(args.as_object().unwrap().len(), 2, "{args}");
        }
        "get_time" => {
            assert!(args["zone"].is_boolean(), "{args}");
            assert_eq!(args.as_object().unwrap().len(), 1, "{args}");
        }
        other => panic!("called {other}"),
    }
    if let ToolChoice::Function(named) = choice {
        assert_eq!(name, named);
    }
}

/// `tool_choice: auto` with `response_format`: every answer is either
/// valid calls or one JSON value of the format, never prose (random
/// weights at temperature 1: these seeds take both ways).
#[tokio::test]
async fn an_auto_answer_with_a_response_format_is_calls_or_that_format() {
    calls_or_that_format(&tool_engine(4)).await;
}

/// Every `auto` answer with a response format on `engine` is either
/// valid calls or one JSON value of the format.
async fn calls_or_that_format(engine: &EmbeddedEngine) {
    let format = schema_format(
        r#"{"type":"object","properties":{"answer":{"enum":["yes","no"]}},"required":["answer"],"additionalProperties":false}"#,
    );
    let runs = (1..=8u64).map(|seed| {
        let params = SamplingParams {
            max_tokens: Some(80),
            temperature: Some(1.0),
            seed: Some(seed),
            tools: Some(weather_tools(cocoon_protocol::ToolChoice::Auto)),
            format: format.clone(),
            ..Default::default()
        };
        run_calls(engine, chat("weather in Paris?", params))
    });
    for (text, calls, done) in futures::future::join_all(runs).await {
        if calls.is_empty() {
            let answer: serde_json::Value =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text:?}"));
            assert!(
                matches!(answer["answer"].as_str(), Some("yes" | "no")),
                "{answer}"
            );
            assert_eq!(answer.as_object().unwrap().len(), 1, "{answer}");
            assert_eq!(done.finish_reason, FinishReason::Stop);
        } else {
            assert_eq!(text, "", "no text beside calls");
            assert_eq!(done.finish_reason, FinishReason::ToolCalls);
            for (name, arguments) in &calls {
                assert!(
                    matches!(name.as_str(), "get_weather" | "get_time"),
                    "{name}"
                );
                let args: serde_json::Value = serde_json::from_str(arguments).unwrap();
                assert!(args.is_object(), "{args}");
            }
        }
    }
}

#[tokio::test]
async fn an_auto_answer_that_does_not_call_is_plain_text() {
    // Random weights do not write `{"tool_call`: the answer is text, the
    // same as without tools but for the tools' description in the prompt.
    let engine = tool_engine(1);
    let params = SamplingParams {
        max_tokens: Some(12),
        temperature: Some(0.0),
        tools: Some(weather_tools(cocoon_protocol::ToolChoice::Auto)),
        ..Default::default()
    };
    let (text, calls, done) = run_calls(&engine, chat("hello", params)).await;
    assert!(calls.is_empty());
    assert!(!text.is_empty());
    assert_eq!(done.finish_reason, FinishReason::Length);
    // The tools were described to the model: a longer prompt.
    let (_, plain) = run(&engine, chat("hello", greedy(1))).await;
    assert!(done.usage.prompt_tokens > plain.usage.prompt_tokens + 50);
}

#[tokio::test]
async fn tool_schemas_the_grammar_cannot_enforce_are_refused_naming_the_function() {
    let engine = tool_engine(1);
    let mut tools = weather_tools(cocoon_protocol::ToolChoice::Required);
    tools.functions[1].parameters = r#"{"type":"object","if":{"required":["a"]}}"#.into();
    let params = SamplingParams {
        max_tokens: Some(8),
        tools: Some(tools),
        ..Default::default()
    };
    let e = refused(&engine, chat("x", params)).await;
    assert_eq!(e.kind, ErrorKind::InvalidRequest);
    assert!(
        e.message
            .starts_with("Invalid 'tools[1].function.parameters'"),
        "{}",
        e.message
    );
}

#[tokio::test]
async fn greedy_tokens_are_their_own_top_logprob_and_the_bytes_spell_the_text() {
    let engine = engine(1);
    let params = SamplingParams {
        logprobs: Some(5),
        ..greedy(16)
    };
    let mut stream = engine.generate(chat("the capital city", params));
    let (mut text, mut entries) = (String::new(), Vec::new());
    let done = loop {
        match stream.next().await.expect("an event") {
            Event::Delta { text: t, .. } => text.push_str(&t),
            Event::Logprobs(l) => entries.extend(l),
            Event::Done(done) => break done,
            // The prompt's counts, for the worker's running totals.
            Event::Usage(_) => {}
            other => panic!("unexpected event {other:?}"),
        }
    };
    assert_eq!(done.finish_reason, FinishReason::Length);
    assert_eq!(entries.len() as u64, done.usage.completion_tokens);
    let spelled: Vec<u8> = entries.iter().flat_map(|e| e.bytes.clone()).collect();
    assert_eq!(String::from_utf8_lossy(&spelled), text);
    for e in &entries {
        assert_eq!(e.top.len(), 5);
        assert_eq!(e.top[0].bytes, e.bytes, "greedy: the most likely token");
        assert!((e.top[0].logprob - e.logprob).abs() < 1e-6);
        assert!(e.logprob <= 0.0);
        assert!(e.top.windows(2).all(|w| w[0].logprob >= w[1].logprob));
    }
    // Without the request's ask, none.
    let mut stream = engine.generate(chat("the capital city", greedy(4)));
    while let Some(event) = stream.next().await {
        assert!(!matches!(event, Event::Logprobs(_)));
    }
}

mod choices;
mod reasoning;
mod tool_formats;
