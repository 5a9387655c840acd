//! The official OpenAI Python SDK against the devnet, as an app uses it: a
//! plain chat answers; what no worker of the model serves (tool calls and a
//! JSON schema and reasoning on the echo engine) and fields it does not know come back as
//! the SDK's own `BadRequestError` naming the field, never as a plain
//! answer that only looks like what was asked for. Structured outputs and
//! tool calls on a real model: see `structured` and `tool_calls`. The SDK
//! is installed by `scripts/test` into `target/openai-sdk` (see there).

use std::path::PathBuf;

use cocoon_devnet::kit::*;
use serde_json::Value;

const SCRIPT: &str = r#"
import json, sys
import openai

client = openai.OpenAI(base_url=sys.argv[1], api_key="unused", max_retries=0)
model = sys.argv[2]
messages = [{"role": "user", "content": "hello there"}]

def refused(**extra):
    try:
        client.chat.completions.create(model=model, messages=messages, max_tokens=4, **extra)
    except openai.BadRequestError as e:
        return {"status": e.status_code, "param": e.param, "code": e.code}
    return "answered"

plain = client.chat.completions.create(model=model, messages=messages, max_tokens=4, temperature=0)
streamed = "".join(
    c.choices[0].delta.content or ""
    for c in client.chat.completions.create(
        model=model, messages=messages, max_tokens=4, temperature=0, stream=True
    )
    if c.choices
)
weather = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
print(json.dumps({
    "plain": plain.choices[0].message.content,
    "streamed": streamed,
    "ignored": client.chat.completions.create(
        model=model, messages=messages, max_tokens=4, user="u-1", metadata={"a": "b"}
    ).choices[0].finish_reason,
    "tools": refused(tools=[weather], tool_choice="required"),
    "schema": refused(response_format={"type": "json_schema", "json_schema": {
        "name": "reply", "schema": {"type": "object"}, "strict": True}}),
    "unknown": refused(extra_body={"temprature": 0.5}),
    "effort": refused(reasoning_effort="high"),
}))
"#;

fn sdk_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/openai-sdk")
}

/// Run `script` with the SDK on its path and `args` as `sys.argv[1..]`; what
/// it prints, as one JSON value.
pub async fn run_sdk(script: &'static str, args: Vec<String>) -> Value {
    let sdk = sdk_dir();
    assert!(
        sdk.join("openai").is_dir(),
        "the OpenAI Python SDK is missing from {}: run ./scripts/test (it installs it), or \
         python3 -m pip install --target target/openai-sdk openai",
        sdk.display()
    );
    // On a blocking thread: the devnet runs on this test's runtime meanwhile.
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new("python3")
            .arg("-c")
            .arg(script)
            .args(args)
            .env("PYTHONPATH", &sdk)
            .output()
    })
    .await
    .unwrap()
    .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the SDK script failed: {}\n{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(stdout.trim()).expect("one JSON line")
}

#[tokio::test]
async fn the_openai_sdk_gets_answers_and_named_refusals() {
    let net = devnet().await;
    // The echo engine serves plain chat only, and the model list says so.
    let models = get_json(&format!("{}/models", net.api_url)).await;
    let served = models["data"][0]["supported_parameters"]
        .as_array()
        .unwrap();
    assert!(served.iter().any(|f| f == "temperature"), "{models}");
    assert!(!served.iter().any(|f| f == "tools"), "{models}");
    let seen = run_sdk(SCRIPT, vec![net.api_url.clone(), MODEL.into()]).await;
    // The echo engine answers with the prompt's words, the same streamed.
    assert!(
        seen["plain"].as_str().is_some_and(|t| !t.is_empty()),
        "{seen}"
    );
    assert_eq!(seen["plain"], seen["streamed"], "{seen}");
    assert!(seen["ignored"].is_string(), "{seen}");
    for (case, param, code) in [
        ("tools", "tools", "unsupported_parameter"),
        ("schema", "response_format", "unsupported_parameter"),
        ("unknown", "temprature", "unknown_parameter"),
        ("effort", "reasoning_effort", "unsupported_parameter"),
    ] {
        assert_eq!(seen[case]["status"], 400, "{case}: {seen}");
        assert_eq!(seen[case]["param"], param, "{case}: {seen}");
        assert_eq!(seen[case]["code"], code, "{case}: {seen}");
    }
    net.shutdown().await;
}
