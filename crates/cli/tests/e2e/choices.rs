//! Several answers to one prompt (`n` > 1) through the whole network on a
//! real model (SmolLM2 on the embedded engine): `choices` holds `n`
//! answers, each exactly what a request for one gives with the seed plus
//! its index; streamed chunks carry each answer's `index` and spell the
//! same answers; usage and the worker's signed receipt count every answer's
//! tokens (what the proxy bills); the official OpenAI Python SDK reads them.
//! The `openai-http` engine passes `n` upstream and reads the answers back
//! by index. A client cannot show the proxy less than it asks the worker for:
//! `sealed::tests::a_header_showing_less_than_the_sealed_request_asks_is_refused`.

use cocoon_devnet::kit::{post, post_stream};
use serde_json::{json, Value};

use super::openai_sdk::run_sdk;
use super::real_model::{ask, behind_openai_http, network, MODEL};

const SDK_SCRIPT: &str = r#"
import json, sys
import openai

client = openai.OpenAI(base_url=sys.argv[1], api_key="unused", max_retries=0)
kw = dict(model=sys.argv[2], messages=[{"role": "user", "content": "Name a fruit."}],
          max_tokens=12, temperature=0.9, seed=7, n=2)
whole = client.chat.completions.create(**kw)
streamed = {}
for c in client.chat.completions.create(stream=True, **kw):
    for choice in c.choices:
        streamed[choice.index] = streamed.get(choice.index, "") + (choice.delta.content or "")
print(json.dumps({
    "whole": [c.message.content for c in sorted(whole.choices, key=lambda c: c.index)],
    "streamed": [streamed[i] for i in sorted(streamed)],
}))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_answers_are_each_what_one_would_be_and_all_are_paid_for() {
    let net = network(4).await;
    let url = format!("{}/chat/completions", net.api_url);
    let sampled = |seed: u64, n: u32| {
        ask(
            "Tell me about cats.",
            json!({"temperature": 0.9, "seed": seed, "max_tokens": 16, "n": n}),
        )
    };
    let (status, answer) = post(&url, &sampled(21, 3)).await;
    assert_eq!(status, 200, "{answer}");
    let choices = answer["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 3, "{answer}");
    let (mut completion, mut texts) = (0, Vec::new());
    for (i, choice) in choices.iter().enumerate() {
        assert_eq!(choice["index"], i, "{answer}");
        let (_, alone) = post(&url, &sampled(21 + i as u64, 1)).await;
        assert_eq!(
            choice["message"], alone["choices"][0]["message"],
            "answer {i}"
        );
        assert_eq!(
            choice["finish_reason"],
            alone["choices"][0]["finish_reason"]
        );
        completion += alone["usage"]["completion_tokens"].as_u64().unwrap();
        assert_eq!(
            answer["usage"]["prompt_tokens"],
            alone["usage"]["prompt_tokens"]
        );
        texts.push(choice["message"]["content"].as_str().unwrap().to_string());
    }
    assert!(texts[0] != texts[1] || texts[1] != texts[2], "{texts:?}");
    // Every answer's tokens are counted, signed and billed.
    assert_eq!(answer["usage"]["completion_tokens"], completion, "{answer}");
    let receipt = &answer["cocoon"]["receipt"];
    assert_eq!(receipt["verified"], true, "{answer}");
    assert_eq!(receipt["completion_tokens"], completion, "{receipt}");

    // Streamed: each chunk names its answer; together they spell the same.
    let mut body = sampled(21, 3);
    body["stream"] = json!(true);
    let mut streamed = vec![String::new(); 3];
    let mut finishes = vec![Value::Null; 3];
    for data in post_stream(&url, &body).await {
        if data == "[DONE]" {
            break;
        }
        let chunk: Value = serde_json::from_str(&data).unwrap();
        for choice in chunk["choices"].as_array().unwrap() {
            let i = choice["index"].as_u64().unwrap() as usize;
            streamed[i].push_str(choice["delta"]["content"].as_str().unwrap_or(""));
            if !choice["finish_reason"].is_null() {
                finishes[i] = choice["finish_reason"].clone();
            }
        }
    }
    assert_eq!(streamed, texts);
    for (i, choice) in choices.iter().enumerate() {
        assert_eq!(finishes[i], choice["finish_reason"]);
    }

    // More answers than a worker runs at once: refused naming `n`.
    let (status, body) = post(&url, &sampled(1, 5)).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["param"], "n", "{body}");

    let sdk = run_sdk(SDK_SCRIPT, vec![net.api_url.clone(), MODEL.into()]).await;
    assert_eq!(sdk["whole"].as_array().map(Vec::len), Some(2), "{sdk}");
    assert_eq!(sdk["whole"], sdk["streamed"], "{sdk}");
    net.shutdown().await;

    // The same model behind an OpenAI-compatible server: `n` goes upstream,
    // the answers come back apart, the same as served directly.
    let (net, server) = behind_openai_http(4).await;
    let url = format!("{}/chat/completions", net.api_url);
    let (status, relayed) = post(&url, &sampled(21, 3)).await;
    assert_eq!(status, 200, "{relayed}");
    let relayed_texts: Vec<&str> = relayed["choices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["message"]["content"].as_str().unwrap())
        .collect();
    assert_eq!(relayed_texts, texts, "{relayed}");
    for (i, choice) in choices.iter().enumerate() {
        assert_eq!(
            relayed["choices"][i]["finish_reason"],
            choice["finish_reason"]
        );
    }
    assert_eq!(relayed["usage"]["completion_tokens"], completion);
    net.shutdown().await;
    server.abort();
}
