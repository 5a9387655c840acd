//! Reasoning through the whole network, on a generated reasoning model (its
//! template opens a `<think>` section, as Qwen 3's does; its output is
//! noise, fixed by the seed): the answer's `message.reasoning_content` and
//! streamed `delta.reasoning_content` hold the thinking, apart from the
//! content and never with the marker tokens; `reasoning_effort` and
//! `chat_template_kwargs.enable_thinking` reach the template; bad values are
//! refused naming the field; the reasoning crosses the proxy sealed; the
//! official OpenAI Python SDK reads it; the `openai-http` engine passes the
//! fields upstream and reads the reasoning back. (A model that cannot reason is
//! refused `reasoning_effort`: see `openai_sdk`.)

use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use cocoon_devnet::kit::{get_json, post, post_stream};
use cocoon_devnet::{Devnet, DevnetOptions};
use cocoon_inference::tiny_model::{write_reasoning_model, ModelShape};
use cocoon_worker::{EngineConfig, WeightsLocation};
use serde_json::{json, Value};

use super::openai_sdk::run_sdk;
use super::real_model::serve_upstream;

const MODEL: &str = "tiny-reasoner";

fn reasoner() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("cocoon-e2e-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("reasoner.gguf");
        write_reasoning_model(&path, ModelShape::TINY, 7).unwrap();
        path
    })
    .clone()
}

async fn embedded() -> EngineConfig {
    EngineConfig::Embedded {
        model: MODEL.into(),
        weights: WeightsLocation::Path(tokio::task::spawn_blocking(reasoner).await.unwrap()),
        max_sequences: 2,
        context_tokens: 512,
        batch_tokens: 256,
        threads: 0,
        default_max_tokens: 64,
    }
}

fn ask(seed: u64, extra: Value) -> Value {
    let mut body = json!({
        "model": MODEL, "temperature": 1, "seed": seed, "max_tokens": 48,
        "messages": [{"role": "user", "content": "the capital city"}],
    });
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

/// (reasoning, content) of a streamed answer; reasoning chunks all come
/// before the first content.
async fn streamed(url: &str, body: &Value) -> (String, String) {
    let mut body = body.clone();
    body["stream"] = json!(true);
    let (mut reasoning, mut content) = (String::new(), String::new());
    for data in post_stream(url, &body).await {
        if data == "[DONE]" {
            break;
        }
        let chunk: Value = serde_json::from_str(&data).unwrap();
        let delta = &chunk["choices"][0]["delta"];
        if let Some(r) = delta["reasoning_content"].as_str() {
            assert!(content.is_empty(), "reasoning after content: {data}");
            reasoning.push_str(r);
        }
        content.push_str(delta["content"].as_str().unwrap_or(""));
    }
    (reasoning, content)
}

const SDK_SCRIPT: &str = r#"
import json, sys
import openai

client = openai.OpenAI(base_url=sys.argv[1], api_key="unused", max_retries=0)
kw = dict(model=sys.argv[2], messages=[{"role": "user", "content": "the capital city"}],
          max_tokens=48, temperature=1, seed=int(sys.argv[3]))
whole = client.chat.completions.create(reasoning_effort="low", **kw)
parts = [c.choices[0].delta for c in client.chat.completions.create(
    reasoning_effort="low", stream=True, **kw) if c.choices]
off = client.chat.completions.create(
    extra_body={"chat_template_kwargs": {"enable_thinking": False}}, **kw)
print(json.dumps({
    "reasoning": whole.choices[0].message.reasoning_content,
    "content": whole.choices[0].message.content,
    "reasoning_tokens": whole.usage.completion_tokens_details.reasoning_tokens,
    "streamed_reasoning": "".join(getattr(d, "reasoning_content", None) or "" for d in parts),
    "streamed_content": "".join(d.content or "" for d in parts),
    "off_reasoning": getattr(off.choices[0].message, "reasoning_content", None),
}))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reasoning_comes_apart_from_the_answer_and_crosses_the_proxy_sealed() {
    let seen = Arc::new(Mutex::new(Vec::<Vec<u8>>::new()));
    let sink = seen.clone();
    let mut options = DevnetOptions::instant(MODEL);
    options.engine = embedded().await;
    options.proxy_inspect = Some(cocoon_proxy::Inspector(Arc::new(move |bytes: &[u8]| {
        sink.lock().unwrap().push(bytes.to_vec())
    })));
    let net = Devnet::start(options).await.expect("devnet starts");
    let url = format!("{}/chat/completions", net.api_url);
    let models = get_json(&format!("{}/models", net.api_url)).await;
    let served = models["data"][0]["supported_parameters"]
        .as_array()
        .unwrap();
    assert!(served.iter().any(|f| f == "reasoning"), "{models}");

    // The first seed whose noise thinks, then answers (most do).
    let mut found = None;
    for seed in 1..=8 {
        let (status, answer) = post(&url, &ask(seed, json!({}))).await;
        assert_eq!(status, 200, "{answer}");
        let message = &answer["choices"][0]["message"];
        let reasoning = message["reasoning_content"].as_str().unwrap_or("");
        let content = message["content"].as_str().unwrap_or("");
        for part in [reasoning, content] {
            assert!(!part.contains("think>"), "{answer}");
        }
        let details = &answer["usage"]["completion_tokens_details"];
        assert!(
            details["reasoning_tokens"].as_u64().unwrap() >= 1,
            "{answer}"
        );
        if reasoning.len() >= 12 && !content.is_empty() {
            found = Some((
                seed,
                reasoning.to_string(),
                content.to_string(),
                answer.clone(),
            ));
            break;
        }
    }
    let (seed, reasoning, content, answer) = found.expect("a seed that thinks, then answers");
    // Streamed: the same parts, reasoning first.
    assert_eq!(
        streamed(&url, &ask(seed, json!({}))).await,
        (reasoning.clone(), content.clone())
    );
    // The proxy carried the reasoning without reading it.
    let held = seen.lock().unwrap().clone();
    assert!(held.len() >= 2, "the inspector saw {} items", held.len());
    let needle = &reasoning.as_bytes()[..12];
    for bytes in &held {
        assert!(
            !bytes.windows(needle.len()).any(|w| w == needle),
            "the proxy saw reasoning in clear"
        );
    }

    // Asked not to think: the template's empty section, no reasoning.
    let off = ask(
        seed,
        json!({"chat_template_kwargs": {"enable_thinking": false}}),
    );
    let (status, quiet) = post(&url, &off).await;
    assert_eq!(status, 200, "{quiet}");
    assert!(
        quiet["choices"][0]["message"]["reasoning_content"].is_null(),
        "{quiet}"
    );
    // The effort reaches the template (this one writes it into the prompt).
    let (status, low) = post(&url, &ask(seed, json!({"reasoning_effort": "low"}))).await;
    assert_eq!(status, 200, "{low}");
    assert!(
        low["usage"]["prompt_tokens"].as_u64() > answer["usage"]["prompt_tokens"].as_u64(),
        "{low}"
    );
    // An earlier turn's reasoning is accepted on assistant messages only.
    let history = json!({"messages": [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello", "reasoning_content": "greet back"},
        {"role": "user", "content": "the capital city"}]});
    let (status, body) = post(&url, &ask(seed, history)).await;
    assert_eq!(status, 200, "{body}");
    for (extra, param) in [
        (json!({"reasoning_effort": "extreme"}), "reasoning_effort"),
        (
            json!({"chat_template_kwargs": {"enable_thinking": "yes"}}),
            "chat_template_kwargs.enable_thinking",
        ),
        (
            json!({"chat_template_kwargs": {"thinking_budget": 5}}),
            "chat_template_kwargs.thinking_budget",
        ),
        (
            json!({"messages": [{"role": "user", "content": "x", "reasoning_content": "y"}]}),
            "messages[0].reasoning_content",
        ),
    ] {
        let (status, body) = post(&url, &ask(seed, extra)).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["error"]["param"], param, "{body}");
    }

    // The official SDK: whole, streamed and thinking off.
    let sdk = run_sdk(
        SDK_SCRIPT,
        vec![net.api_url.clone(), MODEL.into(), seed.to_string()],
    )
    .await;
    assert!(
        sdk["reasoning"].as_str().is_some_and(|r| !r.is_empty()),
        "{sdk}"
    );
    assert_eq!(sdk["reasoning"], sdk["streamed_reasoning"], "{sdk}");
    assert_eq!(sdk["content"], sdk["streamed_content"], "{sdk}");
    assert!(sdk["reasoning_tokens"].as_u64() >= Some(1), "{sdk}");
    assert!(sdk["off_reasoning"].is_null(), "{sdk}");
    net.shutdown().await;

    // The same model behind an OpenAI-compatible server, reached by the
    // `openai-http` engine: the fields go upstream, the reasoning comes back
    // apart, the same answers as served directly.
    let config = embedded().await;
    let engine = tokio::task::spawn_blocking(move || config.build().unwrap())
        .await
        .unwrap();
    let (upstream, server) = serve_upstream(engine).await;
    let mut options = DevnetOptions::instant(MODEL);
    options.engine = EngineConfig::OpenaiHttp {
        base_url: upstream,
        model: MODEL.into(),
        upstream_model: None,
        api_key_env: None,
        tokenizer_gguf: None,
        weights_dir: None,
        max_concurrent: 2,
        connect_timeout_secs: 2,
        read_timeout_secs: 60,
    };
    let net = Devnet::start(options).await.expect("devnet starts");
    let url = format!("{}/chat/completions", net.api_url);
    let (status, relayed) = post(&url, &ask(seed, json!({}))).await;
    assert_eq!(status, 200, "{relayed}");
    assert_eq!(
        relayed["choices"][0]["message"],
        answer["choices"][0]["message"]
    );
    assert_eq!(
        streamed(&url, &ask(seed, json!({}))).await,
        (reasoning, content)
    );
    let (_, relayed_low) = post(&url, &ask(seed, json!({"reasoning_effort": "low"}))).await;
    assert_eq!(
        relayed_low["choices"][0]["message"],
        low["choices"][0]["message"]
    );
    let (_, relayed_off) = post(&url, &off).await;
    assert_eq!(
        relayed_off["choices"][0]["message"],
        quiet["choices"][0]["message"]
    );
    net.shutdown().await;
    server.abort();
}
