//! Tool calls through the whole network on a real model (SmolLM2 on the
//! embedded engine, and behind the `openai-http` engine), as apps make
//! them: `tool_choice` `required` and a named function give calls whose
//! arguments fit the function's schema, streamed (`delta.tool_calls`: id
//! and name, then argument pieces) as answered whole; a tool result turn is
//! answered; a schema the grammar engine cannot enforce is a 400 naming the
//! function; and the official OpenAI Python SDK reads the calls, including
//! its `pydantic_function_tool` + `parse` helper. A 135M model asked the same
//! without `tool_choice` writes no call (checked below): the grammar makes
//! them valid.

use cocoon_devnet::kit::{post, post_stream};
use cocoon_devnet::{Devnet, DevnetOptions};
use serde_json::{json, Value};

use super::openai_sdk::run_sdk;
use super::real_model::{ask, behind_openai_http, embedded, network, MODEL};

const QUESTION: &str = "What is the weather like in Paris today?";

fn tools() -> Value {
    json!([
        {"type": "function", "function": {
            "name": "get_weather",
            "description": "The current weather in a city",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string", "maxLength": 30},
                    "unit": {"enum": ["celsius", "fahrenheit"]}
                },
                "required": ["city", "unit"],
                "additionalProperties": false
            }
        }},
        {"type": "function", "function": {
            "name": "get_time",
            "description": "The current time in a time zone",
            "parameters": {
                "type": "object",
                "properties": {"zone": {"type": "string", "maxLength": 30}},
                "required": ["zone"],
                "additionalProperties": false
            }
        }}
    ])
}

/// The call's arguments fit its function's schema.
fn check_arguments(name: &str, arguments: &str) {
    let args: Value = serde_json::from_str(arguments)
        .unwrap_or_else(|e| panic!("arguments are not JSON ({e}): {arguments:?}"));
    let args = args.as_object().expect("an object");
    match name {
        "get_weather" => {
            assert_eq!(args.len(), 2, "{arguments}");
            assert!(
                args["city"]
                    .as_str()
                    .is_some_and(|c| c.chars().count() <= 30),
                "{arguments}"
            );
            assert!(
                matches!(args["unit"].as_str(), Some("celsius" | "fahrenheit")),
                "{arguments}"
            );
        }
        "get_time" => {
            assert_eq!(args.len(), 1, "{arguments}");
            assert!(args["zone"].is_string(), "{arguments}");
        }
        other => panic!("called {other}"),
    }
}

/// The calls of a whole answer, each checked: (id, name, arguments).
fn the_calls(answer: &Value) -> Vec<(String, String, String)> {
    let choice = &answer["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls", "{answer}");
    assert!(choice["message"]["content"].is_null(), "{answer}");
    let calls = choice["message"]["tool_calls"].as_array().expect("calls");
    assert!(!calls.is_empty(), "{answer}");
    calls
        .iter()
        .map(|call| {
            assert_eq!(call["type"], "function");
            let id = call["id"].as_str().unwrap().to_string();
            assert!(id.starts_with("call_"), "{id}");
            let name = call["function"]["name"].as_str().unwrap().to_string();
            let arguments = call["function"]["arguments"].as_str().unwrap().to_string();
            check_arguments(&name, &arguments);
            (id, name, arguments)
        })
        .collect()
}

async fn tool_answers(net: &Devnet) {
    let url = format!("{}/chat/completions", net.api_url);
    // Without tools the model writes prose, no call.
    let (status, answer) = post(&url, &ask(QUESTION, json!({"max_tokens": 40}))).await;
    assert_eq!(status, 200, "{answer}");
    assert!(answer["choices"][0]["message"]["tool_calls"].is_null());

    let required = ask(
        QUESTION,
        json!({"max_tokens": 100, "tools": tools(), "tool_choice": "required",
               "parallel_tool_calls": false}),
    );
    let (status, answer) = post(&url, &required).await;
    assert_eq!(status, 200, "{answer}");
    let calls = the_calls(&answer);
    assert_eq!(calls.len(), 1, "parallel_tool_calls false: {answer}");
    let (id, name, arguments) = calls[0].clone();

    // Streamed: the id and name first, then the arguments in pieces; the
    // same call as answered whole (temperature 0).
    let mut streamed = required.clone();
    streamed["stream"] = json!(true);
    let (mut s_name, mut s_args, mut finish) = (None, String::new(), None);
    for data in post_stream(&url, &streamed).await {
        if data == "[DONE]" {
            break;
        }
        let chunk: Value = serde_json::from_str(&data).unwrap();
        let choice = &chunk["choices"][0];
        if let Some(f) = choice["finish_reason"].as_str() {
            finish = Some(f.to_string());
        }
        for piece in choice["delta"]["tool_calls"]
            .as_array()
            .into_iter()
            .flatten()
        {
            assert_eq!(piece["index"], 0, "{chunk}");
            if let Some(n) = piece["function"]["name"].as_str() {
                assert!(s_name.is_none(), "one head per call");
                assert!(piece["id"].as_str().unwrap().starts_with("call_"));
                s_name = Some(n.to_string());
            } else {
                assert!(s_name.is_some(), "arguments after the head: {chunk}");
            }
            s_args.push_str(piece["function"]["arguments"].as_str().unwrap_or(""));
        }
    }
    assert_eq!(finish.as_deref(), Some("tool_calls"));
    assert_eq!(
        (s_name.as_deref(), s_args.as_str()),
        (Some(name.as_str()), arguments.as_str())
    );

    // A named function is the one called (each time, when the model calls
    // it more than once: parallel calls are allowed by default).
    let named = ask(
        QUESTION,
        json!({"max_tokens": 100, "tools": tools(),
               "tool_choice": {"type": "function", "function": {"name": "get_time"}}}),
    );
    let (status, answer) = post(&url, &named).await;
    assert_eq!(status, 200, "{answer}");
    for (_, name, _) in the_calls(&answer) {
        assert_eq!(name, "get_time");
    }

    // The tool's result goes back; the model answers (text or another call).
    let turn = json!({
        "model": MODEL, "temperature": 0, "max_tokens": 60, "tools": tools(),
        "messages": [
            {"role": "user", "content": QUESTION},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": id, "type": "function", "function": {"name": name, "arguments": arguments}}]},
            {"role": "tool", "tool_call_id": id, "content": "18 degrees and sunny"}
        ]
    });
    let (status, answer) = post(&url, &turn).await;
    assert_eq!(status, 200, "{answer}");
    let choice = &answer["choices"][0];
    match choice["finish_reason"].as_str() {
        Some("tool_calls") => {
            the_calls(&answer);
        }
        Some("stop" | "length") => {
            assert!(!choice["message"]["content"].as_str().unwrap().is_empty())
        }
        other => panic!("finish_reason {other:?}: {answer}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_calls_fit_their_functions_through_the_network() {
    let net = network(2).await;
    tool_answers(&net).await;

    // A parameters schema the grammar engine cannot enforce: 400 naming it.
    let url = format!("{}/chat/completions", net.api_url);
    let mut bad = tools();
    bad[1]["function"]["parameters"]["if"] = json!({"required": ["zone"]});
    let body = ask(QUESTION, json!({"tools": bad, "tool_choice": "required"}));
    let (status, answer) = post(&url, &body).await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(
        answer["error"]["param"], "tools[1].function.parameters",
        "{answer}"
    );

    let seen = run_sdk(SDK_SCRIPT, vec![net.api_url.clone(), MODEL.into()]).await;
    assert_eq!(seen["finish"], "tool_calls", "{seen}");
    check_arguments(
        seen["name"].as_str().unwrap(),
        seen["arguments"].as_str().unwrap(),
    );
    assert_eq!(seen["streamed"], seen["arguments"], "{seen}");
    assert!(seen["parsed"]["city"].is_string(), "{seen}");
    net.shutdown().await;
}

const SDK_SCRIPT: &str = r#"
import json, sys
import openai
from pydantic import BaseModel, ConfigDict, Field

class GetWeather(BaseModel):
    """The current weather in a city"""
    model_config = ConfigDict(extra="forbid")
    city: str = Field(max_length=30)

client = openai.OpenAI(base_url=sys.argv[1], api_key="unused", max_retries=0)
model = sys.argv[2]
messages = [{"role": "user", "content": "What is the weather like in Paris today?"}]
tools = [{"type": "function", "function": {
    "name": "get_weather", "description": "The current weather in a city",
    "parameters": {"type": "object", "additionalProperties": False, "required": ["city", "unit"],
        "properties": {"city": {"type": "string", "maxLength": 30},
                       "unit": {"enum": ["celsius", "fahrenheit"]}}}}}]
answer = client.chat.completions.create(
    model=model, messages=messages, tools=tools, tool_choice="required", parallel_tool_calls=False,
    temperature=0, max_tokens=100)
call = answer.choices[0].message.tool_calls[0]
streamed = ""
for chunk in client.chat.completions.create(
        model=model, messages=messages, tools=tools, tool_choice="required",
        parallel_tool_calls=False, temperature=0, max_tokens=100, stream=True):
    for piece in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
        streamed += piece.function.arguments or ""
parsed = client.chat.completions.parse(
    model=model, messages=messages, tools=[openai.pydantic_function_tool(GetWeather)],
    tool_choice="required", parallel_tool_calls=False, temperature=0, max_tokens=100)
print(json.dumps({
    "finish": answer.choices[0].finish_reason,
    "name": call.function.name,
    "arguments": call.function.arguments,
    "streamed": streamed,
    "parsed": parsed.choices[0].message.tool_calls[0].function.parsed_arguments.model_dump(),
}))
"#;

/// Behind the `openai-http` engine the tools go to the upstream server
/// (here `cocoon engine serve`'s code on SmolLM2) and its streamed
/// `tool_calls` come back through the seal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_calls_pass_through_an_openai_http_upstream() {
    let (net, server) = behind_openai_http(2).await;
    tool_answers(&net).await;
    net.shutdown().await;
    server.abort();
}

/// The proxy operator as attacker: tool definitions, the calls the model
/// makes and the results the app sends back are prompt and answer content,
/// sealed like the rest. A marker in a function's name, its description and
/// a tool result crosses the proxy both ways; the proxy never holds it in
/// clear (the answer, opened by the client node, does carry it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_definitions_calls_and_results_cross_the_proxy_sealed() {
    const MARKER: &str = "zebra4471";
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<Vec<u8>>::new()));
    let sink = seen.clone();
    let mut options = DevnetOptions::instant(MODEL);
    options.engine = tokio::task::spawn_blocking(|| embedded(1)).await.unwrap();
    options.proxy_inspect = Some(cocoon_proxy::Inspector(std::sync::Arc::new(
        move |bytes: &[u8]| sink.lock().unwrap().push(bytes.to_vec()),
    )));
    let net = Devnet::start(options).await.unwrap();
    let url = format!("{}/chat/completions", net.api_url);
    let name = format!("lookup_{MARKER}");
    let tools = json!([{"type": "function", "function": {
        "name": name, "description": format!("Looks up {MARKER} records"),
        "parameters": {"type": "object", "properties": {"q": {"type": "string", "maxLength": 20}},
                       "required": ["q"], "additionalProperties": false}}}]);
    let body = json!({"model": MODEL, "temperature": 0, "max_tokens": 60, "tools": tools,
    "tool_choice": "required", "parallel_tool_calls": false,
    "messages": [
        {"role": "user", "content": "Find the record."},
        {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function",
            "function": {"name": name, "arguments": "{\"q\": \"first\"}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": format!("{MARKER} not found")}
    ]});
    let (status, answer) = post(&url, &body).await;
    assert_eq!(status, 200, "{answer}");
    let call = &answer["choices"][0]["message"]["tool_calls"][0];
    assert_eq!(call["function"]["name"], name.as_str(), "{answer}");
    let held = seen.lock().unwrap().clone();
    assert!(held.len() >= 2, "the inspector saw {} items", held.len());
    for bytes in &held {
        assert!(
            !bytes.windows(MARKER.len()).any(|w| w == MARKER.as_bytes()),
            "the proxy saw a tool's name, description, call or result in clear"
        );
    }
    net.shutdown().await;
}
