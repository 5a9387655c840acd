//! Structured outputs through the whole network on a real model (SmolLM2 on
//! the embedded engine, and behind the `openai-http` engine): every answer
//! to a `json_schema` or `json_object` request parses and fits its schema,
//! streamed or not, with reqwest and with the official OpenAI Python SDK's
//! `parse` helper (pydantic); a schema the grammar engine cannot enforce is
//! a 400 naming it. A 135M model asked the same without the format writes
//! prose (checked below), so the grammar, not the model, makes them valid.

use cocoon_devnet::kit::{get_json, post, post_stream};
use cocoon_devnet::Devnet;
use serde_json::{json, Value};

use super::openai_sdk::run_sdk;
use super::real_model::{ask, behind_openai_http, content, network, MODEL};

const QUESTION: &str = "Alice is 31 years old and lives in Paris. Describe her.";

fn person_format() -> Value {
    json!({"type": "json_schema", "json_schema": {"name": "person", "strict": true, "schema": {
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 24},
            "age": {"type": "integer", "minimum": 0, "maximum": 150},
            "city": {"type": "string", "maxLength": 24},
            "adult": {"type": "boolean"}
        },
        "required": ["name", "age", "city", "adult"],
        "additionalProperties": false
    }}})
}

/// `text` is a person: exactly the schema's fields, each of its type and bounds.
fn check_person(text: &str) {
    let value: Value =
        serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text:?}"));
    let object = value.as_object().expect("an object");
    let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["adult", "age", "city", "name"], "{text}");
    assert!(
        object["name"]
            .as_str()
            .is_some_and(|s| s.chars().count() <= 24),
        "{text}"
    );
    assert!(
        object["city"]
            .as_str()
            .is_some_and(|s| s.chars().count() <= 24),
        "{text}"
    );
    assert!(
        object["age"]
            .as_i64()
            .is_some_and(|a| (0..=150).contains(&a)),
        "{text}"
    );
    assert!(object["adult"].is_boolean(), "{text}");
}

async fn structured_answers(net: &Devnet) {
    let url = format!("{}/chat/completions", net.api_url);
    let free = ask(QUESTION, json!({"max_tokens": 60}));
    let (status, answer) = post(&url, &free).await;
    assert_eq!(status, 200, "{answer}");
    assert!(
        serde_json::from_str::<Value>(content(&answer)).is_err(),
        "without a format the model writes prose: {answer}"
    );

    let body = ask(
        QUESTION,
        json!({"max_tokens": 120, "response_format": person_format()}),
    );
    let (status, answer) = post(&url, &body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["choices"][0]["finish_reason"], "stop", "{answer}");
    check_person(content(&answer));

    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let mut text = String::new();
    for data in post_stream(&url, &streamed).await {
        if data == "[DONE]" {
            break;
        }
        let chunk: Value = serde_json::from_str(&data).unwrap();
        if let Some(piece) = chunk["choices"][0]["delta"]["content"].as_str() {
            text.push_str(piece);
        }
    }
    assert_eq!(text, content(&answer), "streamed as answered");

    let body = ask(
        "List three colours.",
        json!({"max_tokens": 120, "seed": 7, "temperature": 0.8,
               "response_format": {"type": "json_object"}}),
    );
    let (status, answer) = post(&url, &body).await;
    assert_eq!(status, 200, "{answer}");
    if answer["choices"][0]["finish_reason"] == "stop" {
        let value: Value = serde_json::from_str(content(&answer)).unwrap();
        assert!(value.is_object(), "{answer}");
    } else {
        assert!(content(&answer).starts_with('{'), "{answer}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn structured_outputs_fit_their_schema_through_the_network() {
    let net = network(2).await;
    // The model list says what its workers serve (OpenRouter's field).
    let models = get_json(&format!("{}/models", net.api_url)).await;
    let served = &models["data"][0]["supported_parameters"];
    for field in ["response_format", "tools", "tool_choice", "logprobs"] {
        assert!(
            served.as_array().unwrap().iter().any(|f| f == field),
            "{field}: {models}"
        );
    }
    structured_answers(&net).await;

    // A schema the grammar engine cannot enforce: 400 naming it.
    let url = format!("{}/chat/completions", net.api_url);
    let mut format = person_format();
    format["json_schema"]["schema"]["if"] = json!({"required": ["name"]});
    let (status, answer) = post(&url, &ask(QUESTION, json!({"response_format": format}))).await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(
        answer["error"]["param"], "response_format.json_schema.schema",
        "{answer}"
    );
    assert!(
        answer["error"]["message"].as_str().unwrap().contains("if"),
        "{answer}"
    );

    // The SDK's own structured-output helper: a pydantic model in, a
    // parsed object out, and a streamed schema answer that parses.
    let seen = run_sdk(SDK_SCRIPT, vec![net.api_url.clone(), MODEL.into()]).await;
    let person = &seen["parsed"];
    assert!(
        person["name"].is_string() && person["age"].is_i64(),
        "{seen}"
    );
    assert!(person["adult"].is_boolean(), "{seen}");
    check_person(seen["streamed"].as_str().unwrap());
    net.shutdown().await;
}

const SDK_SCRIPT: &str = r#"
import json, sys
import openai
from pydantic import BaseModel, ConfigDict, Field

class Person(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(max_length=24)
    age: int = Field(ge=0, le=150)
    city: str = Field(max_length=24)
    adult: bool

client = openai.OpenAI(base_url=sys.argv[1], api_key="unused", max_retries=0)
messages = [{"role": "user", "content": "Alice is 31 years old and lives in Paris. Describe her."}]
parsed = client.chat.completions.parse(
    model=sys.argv[2], messages=messages, response_format=Person, temperature=0, max_tokens=120
)
schema = {"type": "json_schema", "json_schema": {
    "name": "person", "strict": True, "schema": Person.model_json_schema()}}
streamed = "".join(
    c.choices[0].delta.content or ""
    for c in client.chat.completions.create(
        model=sys.argv[2], messages=messages, temperature=0, max_tokens=120,
        response_format=schema, stream=True,
    )
    if c.choices
)
print(json.dumps({"parsed": parsed.choices[0].message.parsed.model_dump(), "streamed": streamed}))
"#;

/// Behind the `openai-http` engine the format is passed to the upstream
/// server (here `cocoon engine serve`'s code on SmolLM2), which enforces it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn structured_outputs_pass_through_an_openai_http_upstream() {
    let (net, server) = behind_openai_http(2).await;
    structured_answers(&net).await;
    net.shutdown().await;
    server.abort();
}
