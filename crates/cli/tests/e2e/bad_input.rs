//! Bad input over the wire: every case gets the right status and an OpenAI-shaped
//! error that names the problem; nothing panics or hangs.

use std::time::Duration;

use cocoon_client::ApiSettings;
use cocoon_devnet::kit::*;
use serde_json::{json, Value};

async fn send_raw(url: &str, body: Vec<u8>) -> (u16, Value) {
    let resp = http()
        .post(url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn bad_requests_table() {
    let net = devnet_with(|o| o.api.max_body_bytes = 64 * 1024).await;
    let chat = format!("{}/chat/completions", net.api_url);
    let m = r#""messages":[{"role":"user","content":"hi"}]"#;
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        ("malformed JSON", br#"{"model": "test-echo", "messages": ["#.to_vec(), 400, "parse the JSON"),
        ("empty body", b"".to_vec(), 400, "empty"),
        ("not an object", b"[1,2]".to_vec(), 400, "JSON object"),
        ("missing messages", br#"{"model":"test-echo"}"#.to_vec(), 400, "'messages'"),
        ("missing model", format!("{{{m}}}").into_bytes(), 400, "'model'"),
        ("messages wrong type", br#"{"model":"test-echo","messages":{"a":1}}"#.to_vec(), 400, "messages"),
        ("content wrong type", br#"{"model":"test-echo","messages":[{"role":"user","content":42}]}"#.to_vec(), 400, "messages[0].content"),
        ("bad role", br#"{"model":"test-echo","messages":[{"role":"wizard","content":"x"}]}"#.to_vec(), 400, "messages[0].role"),
        ("max_tokens wrong type", format!(r#"{{"model":"test-echo",{m},"max_tokens":"ten"}}"#).into_bytes(), 400, "max_tokens"),
        ("negative max_tokens", format!(r#"{{"model":"test-echo",{m},"max_tokens":-5}}"#).into_bytes(), 400, "max_tokens"),
        ("zero max_tokens", format!(r#"{{"model":"test-echo",{m},"max_tokens":0}}"#).into_bytes(), 400, ">= 1"),
        ("temperature out of range", format!(r#"{{"model":"test-echo",{m},"temperature":9}}"#).into_bytes(), 400, "temperature"),
        ("n above one, not served by the model's workers", format!(r#"{{"model":"test-echo",{m},"n":3}}"#).into_bytes(), 400, "'n' is not served by any worker serving 'test-echo'"),
        ("stream wrong type", format!(r#"{{"model":"test-echo",{m},"stream":"yes"}}"#).into_bytes(), 400, "stream"),
        ("unknown model", format!(r#"{{"model":"no-such-model",{m}}}"#).into_bytes(), 404, "no-such-model"),
        ("unknown field", format!(r#"{{"model":"test-echo",{m},"temprature":0}}"#).into_bytes(), 400, "temprature"),
        ("tools, not served by the model's workers", format!(r#"{{"model":"test-echo",{m},"tools":[{{"type":"function","function":{{"name":"f"}}}}]}}"#).into_bytes(), 400, "'tools' is not served by any worker serving 'test-echo'"),
        ("legacy functions, not served", format!(r#"{{"model":"test-echo",{m},"functions":[{{"name":"f"}}]}}"#).into_bytes(), 400, "function calling"),
        ("JSON, not served by the model's workers", format!(r#"{{"model":"test-echo",{m},"response_format":{{"type":"json_object"}}}}"#).into_bytes(), 400, "'response_format' is not served by any worker serving 'test-echo'"),
        ("a tool result without its call", br#"{"model":"test-echo","messages":[{"role":"tool","content":"42"}]}"#.to_vec(), 400, "messages[0].tool_call_id"),
        ("invalid UTF-8", b"{\"model\":\"test-echo\",\"messages\":[{\"role\":\"user\",\"content\":\"\xc3\x28\"}]}".to_vec(), 400, "UTF-8"),
        ("oversize body", format!(r#"{{"model":"test-echo","messages":[{{"role":"user","content":"{}"}}]}}"#, "a".repeat(100 * 1024)).into_bytes(), 413, "larger"),
    ];
    for (name, body, status, needle) in cases {
        let (got, answer) = send_raw(&chat, body).await;
        assert_eq!(got, status, "{name}: {answer}");
        assert_error(&answer, needle);
    }
    // The network still works after all that.
    assert_eq!(
        post(&chat, &chat_body("still fine", json!({}))).await.0,
        200
    );

    let (status, body) = post(&format!("{}/nowhere", net.api_url), &json!({})).await;
    assert_eq!(status, 404);
    assert_error(&body, "Unknown request URL");
    let resp = http().get(&chat).send().await.unwrap();
    assert_eq!(resp.status(), 405);
    net.shutdown().await;
}

#[tokio::test]
async fn api_key_is_required_when_configured() {
    let net = devnet_with(|o| o.api.api_keys = vec!["sk-test-123".into()]).await;
    let url = format!("{}/chat/completions", net.api_url);
    let body = chat_body("hi", json!({}));
    let (status, answer) = post(&url, &body).await;
    assert_eq!(status, 401);
    assert_error(&answer, "API key");
    let resp = http()
        .post(&url)
        .bearer_auth("sk-wrong")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let resp = http()
        .post(&url)
        .bearer_auth("sk-test-123")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let resp = http()
        .get(format!("{}/models", net.api_url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    net.shutdown().await;
}

#[tokio::test]
async fn overload_gives_429_with_retry_after() {
    let net = devnet_with(|o| {
        o.engine = slow_engine(20, 8);
        o.api = ApiSettings {
            max_concurrent_requests: 1,
            ..ApiSettings::default()
        };
    })
    .await;
    let url = format!("{}/chat/completions", net.api_url);
    let slow = open_stream(&net, "x").await;
    let resp = http()
        .post(&url)
        .json(&chat_body("y", json!({})))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["retry-after"], "1");
    assert_error(&resp.json().await.unwrap(), "concurrent requests");
    drop(slow);
    net.shutdown().await;
}

#[tokio::test]
async fn slow_first_token_gives_504() {
    let net = devnet_with(|o| {
        o.engine = slow_engine(3000, 8);
        o.api.first_token_timeout = Duration::from_millis(300);
    })
    .await;
    let started = std::time::Instant::now();
    let (status, body) = post(
        &format!("{}/chat/completions", net.api_url),
        &chat_body("x", json!({})),
    )
    .await;
    assert_eq!(status, 504, "{body}");
    assert_error(&body, "No answer");
    assert!(started.elapsed() < Duration::from_secs(3));
    net.shutdown().await;
}
