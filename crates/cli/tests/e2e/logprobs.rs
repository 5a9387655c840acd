//! Log probabilities through the whole network on a real model (SmolLM2 on
//! the embedded engine, and behind the `openai-http` engine): `logprobs`
//! with `top_logprobs` gives one entry per generated token whose text
//! spells the answer, and at temperature 0 each token is its own most
//! likely alternative; streamed entries match the whole answer's; the
//! official OpenAI Python SDK reads them.

use cocoon_devnet::kit::{post, post_stream};
use cocoon_devnet::Devnet;
use serde_json::{json, Value};

use super::openai_sdk::run_sdk;
use super::real_model::{ask, behind_openai_http, content, network, MODEL};

fn check_entries(entries: &[Value], text: &str) {
    let spelled: String = entries
        .iter()
        .map(|e| e["token"].as_str().unwrap())
        .collect();
    assert_eq!(spelled, text);
    for e in entries {
        let top = e["top_logprobs"].as_array().unwrap();
        assert_eq!(top.len(), 3, "{e}");
        assert_eq!(top[0]["token"], e["token"], "greedy: the most likely, {e}");
        assert_eq!(top[0]["logprob"], e["logprob"], "{e}");
        assert!(e["logprob"].as_f64().unwrap() <= 0.0, "{e}");
        let bytes: Vec<u8> = e["bytes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b.as_u64().unwrap() as u8)
            .collect();
        assert_eq!(
            String::from_utf8_lossy(&bytes),
            e["token"].as_str().unwrap()
        );
    }
}

async fn logprob_answers(net: &Devnet) {
    let url = format!("{}/chat/completions", net.api_url);
    let body = ask(
        "What is the capital of France?",
        json!({"max_tokens": 12, "logprobs": true, "top_logprobs": 3}),
    );
    let (status, answer) = post(&url, &body).await;
    assert_eq!(status, 200, "{answer}");
    let entries = answer["choices"][0]["logprobs"]["content"]
        .as_array()
        .expect("logprobs.content")
        .clone();
    assert!(!entries.is_empty(), "{answer}");
    check_entries(&entries, content(&answer));

    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let (mut s_entries, mut s_text) = (Vec::new(), String::new());
    for data in post_stream(&url, &streamed).await {
        if data == "[DONE]" {
            break;
        }
        let chunk: Value = serde_json::from_str(&data).unwrap();
        let choice = &chunk["choices"][0];
        s_text.push_str(choice["delta"]["content"].as_str().unwrap_or(""));
        if let Some(list) = choice["logprobs"]["content"].as_array() {
            s_entries.extend(list.iter().cloned());
        }
    }
    assert_eq!(s_text, content(&answer));
    assert_eq!(s_entries, entries, "streamed as answered");

    // Not asked: none.
    let (_, plain) = post(&url, &ask("Hi", json!({"max_tokens": 4}))).await;
    assert!(plain["choices"][0]["logprobs"].is_null(), "{plain}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_probabilities_through_the_network() {
    let net = network(2).await;
    logprob_answers(&net).await;
    let seen = run_sdk(SDK_SCRIPT, vec![net.api_url.clone(), MODEL.into()]).await;
    assert_eq!(seen["top_is_chosen"], true, "{seen}");
    assert!(seen["count"].as_u64().unwrap() > 0, "{seen}");
    net.shutdown().await;
}

const SDK_SCRIPT: &str = r#"
import json, sys
import openai
client = openai.OpenAI(base_url=sys.argv[1], api_key="unused", max_retries=0)
answer = client.chat.completions.create(
    model=sys.argv[2], messages=[{"role": "user", "content": "Name a colour."}],
    temperature=0, max_tokens=8, logprobs=True, top_logprobs=2)
entries = answer.choices[0].logprobs.content
print(json.dumps({
    "count": len(entries),
    "top_is_chosen": all(e.top_logprobs[0].token == e.token for e in entries),
}))
"#;

/// Behind the `openai-http` engine `logprobs` go to the upstream and its
/// streamed entries come back through the seal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_probabilities_pass_through_an_openai_http_upstream() {
    let (net, server) = behind_openai_http(1).await;
    logprob_answers(&net).await;
    net.shutdown().await;
    server.abort();
}
