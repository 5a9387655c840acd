//! End-to-end sealing through a real devnet on loopback (simulated TEEs, RA-TLS
//! on every hop): the proxy forwards only ciphertext, the app gets the answer
//! and a usage receipt its client node verified; the proxy forwards a request
//! id once, and the worker refuses sealed requests that are altered, stale,
//! or sealed to another key.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use cocoon_devnet::kit::*;
use cocoon_protocol::tls::{self, PinnedKeys};
use cocoon_protocol::{
    dial_once, ChatMessage, Connection, DialSettings, Event, GenerateRequest, Handler, Hello,
    Input, MuxOptions, RequestBody, Role, SamplingParams, SealTo, SealingKey,
    DEFAULT_MAX_FRAME_BYTES,
};
use cocoon_proxy::Inspector;
use futures::stream::{self, BoxStream};
use futures::StreamExt;
use serde_json::json;

const MARKER: &str = "zebra-marker-4471";

/// A devnet whose proxy reports everything it forwards into the returned list.
async fn inspected_devnet() -> (cocoon_devnet::Devnet, Arc<Mutex<Vec<Vec<u8>>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    let net = devnet_with(|o| {
        o.proxy_inspect = Some(Inspector(Arc::new(move |bytes: &[u8]| {
            sink.lock().unwrap().push(bytes.to_vec());
        })))
    })
    .await;
    (net, seen)
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[tokio::test]
async fn the_proxy_forwards_only_ciphertext_and_the_app_gets_a_verified_receipt() {
    let (net, seen) = inspected_devnet().await;
    let url = format!("{}/chat/completions", net.api_url);

    // Non-streaming: the echo engine repeats the prompt, so the marker travels
    // both ways.
    let (status, body) = post(&url, &chat_body(&format!("say {MARKER} please"), json!({}))).await;
    assert_eq!(status, 200, "{body}");
    let text = body["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(text.contains(MARKER), "{text}");
    let receipt = &body["cocoon"]["receipt"];
    assert_eq!(receipt["verified"], true, "{body}");
    assert_eq!(receipt["worker"], net.worker().fingerprint().to_string());
    assert_eq!(receipt["prompt_tokens"], body["usage"]["prompt_tokens"]);
    assert_eq!(
        receipt["completion_tokens"],
        body["usage"]["completion_tokens"]
    );
    assert_eq!(receipt["signature"].as_str().unwrap().len(), 128);

    // Streaming: the last chunk with a finish reason carries the receipt.
    let chunks = post_stream(
        &url,
        &chat_body(&format!("stream {MARKER} now"), json!({"stream": true})),
    )
    .await;
    let mut streamed = String::new();
    let mut receipts = 0;
    for chunk in chunks.iter().filter(|c| *c != "[DONE]") {
        let v: serde_json::Value = serde_json::from_str(chunk).unwrap();
        if let Some(t) = v["choices"][0]["delta"]["content"].as_str() {
            streamed.push_str(t);
        }
        if v["cocoon"]["receipt"]["verified"] == true {
            assert!(v["choices"][0]["finish_reason"].is_string());
            receipts += 1;
        }
    }
    assert!(streamed.contains(MARKER), "{streamed}");
    assert_eq!(receipts, 1, "{chunks:?}");

    // What the proxy held: requests and answer events, none with the marker.
    let seen = seen.lock().unwrap().clone();
    assert!(seen.len() >= 4, "the inspector saw {} items", seen.len());
    for bytes in seen.iter() {
        assert!(!contains(bytes, MARKER), "the proxy saw plaintext");
        assert!(!contains(bytes, "please"), "the proxy saw plaintext");
    }
    assert_eq!(net.proxy().receipts.recent().len(), 2);
    assert_eq!(net.proxy().receipts.rejected(), 0);
    let total = net.proxy().receipts.total(&net.worker().fingerprint());
    assert!(total.completion_tokens > 0);
    net.shutdown().await;
}

struct Refuse;
impl Handler for Refuse {
    fn serve(&self, _: &Connection, _: RequestBody) -> BoxStream<'static, Event> {
        stream::empty().boxed()
    }
}

/// Speak the node protocol to the devnet's proxy as its client node.
pub(crate) async fn raw_client(net: &cocoon_devnet::Devnet) -> Connection {
    let settings = DialSettings {
        tls: tls::client_config(
            net.client_identity.clone(),
            Arc::new(PinnedKeys::new([net.proxy_endpoint().fingerprint])),
        )
        .unwrap(),
        hello: Hello {
            role: Role::Client,
            software: "test".into(),
        },
        handler: Arc::new(Refuse),
        mux: MuxOptions::default(),
        max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
        handshake_timeout: Duration::from_secs(5),
        max_backoff: Duration::from_secs(1),
        watch: None,
    };
    dial_once(net.proxy_endpoint(), &settings).await.unwrap()
}

/// The workers the proxy lists for the devnet's model now.
pub(crate) async fn listed_workers(conn: &Connection) -> Vec<cocoon_protocol::ListedWorker> {
    let body = RequestBody::WorkerKeys {
        model: MODEL.into(),
        prefs: Default::default(),
    };
    match first_event(conn, body).await {
        Event::WorkerKeys(keys) => keys,
        other => panic!("{other:?}"),
    }
}

/// A short chat `text` for the devnet's model, sealed by hand now to the
/// worker `listed`, at the price `price`.
pub(crate) fn sealed_now(
    listed: &cocoon_protocol::ListedWorker,
    price: u32,
    text: &str,
) -> cocoon_protocol::SealedRequest {
    let to = SealTo {
        worker: listed.key.worker(),
        sealing_key: listed.key.sealing_key,
        price_coefficient: price,
    };
    let request = GenerateRequest {
        model: MODEL.into(),
        input: Input::Chat(vec![ChatMessage::new("user", text)]),
        params: SamplingParams {
            max_tokens: Some(4),
            ..Default::default()
        },
    };
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    cocoon_protocol::sealed::seal(&request, &[to], now_ms)
        .unwrap()
        .0
}

/// Send `body` and return the first event of the answer.
pub(crate) async fn first_event(conn: &Connection, body: RequestBody) -> Event {
    let mut answer = conn.request(body).await.unwrap();
    answer.next().await.expect("an answer")
}

fn error_message(event: Event) -> String {
    match event {
        Event::Error(e) => e.message,
        other => panic!("expected an error, got {other:?}"),
    }
}

#[tokio::test]
async fn replayed_altered_or_misaddressed_requests_are_refused_by_the_worker() {
    let (net, seen) = inspected_devnet().await;
    let url = format!("{}/chat/completions", net.api_url);
    let (status, _) = post(&url, &chat_body("hello there", json!({}))).await;
    assert_eq!(status, 200);
    let captured = seen
        .lock()
        .unwrap()
        .iter()
        .find_map(|bytes| match postcard::from_bytes::<RequestBody>(bytes) {
            Ok(RequestBody::Generate(sealed)) => Some(sealed),
            _ => None,
        })
        .expect("the proxy forwarded a sealed request");
    let conn = raw_client(&net).await;

    // Replayed as is: the proxy forwards a request id once (the worker
    // would refuse it as replayed too; its replay window is unit-tested).
    let message = error_message(first_event(&conn, RequestBody::Generate(captured.clone())).await);
    assert!(message.contains("forwarded already"), "{message}");

    // Altered header (another id, to pass as new): it no longer opens.
    let mut altered = captured.clone();
    altered.header.request_id[0] ^= 1;
    let message = error_message(first_event(&conn, RequestBody::Generate(altered)).await);
    assert!(message.contains("does not open"), "{message}");

    // Sealed for another key but addressed to this worker: refused.
    let request = GenerateRequest {
        model: net.model.clone(),
        input: Input::Chat(vec![ChatMessage::new("user", "hi")]),
        params: SamplingParams::default(),
    };
    let wrong_key = SealingKey::generate().public();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let (misaddressed, _) = cocoon_protocol::sealed::seal(
        &request,
        &[SealTo::at_base_price(net.worker().fingerprint(), wrong_key)],
        now_ms,
    )
    .unwrap();
    let message = error_message(first_event(&conn, RequestBody::Generate(misaddressed)).await);
    assert!(message.contains("does not open"), "{message}");

    // Too old: sealed correctly, outside the replay window.
    let keys = match first_event(
        &conn,
        RequestBody::WorkerKeys {
            model: net.model.clone(),
            prefs: Default::default(),
        },
    )
    .await
    {
        Event::WorkerKeys(keys) => keys,
        other => panic!("{other:?}"),
    };
    let (stale, _) = cocoon_protocol::sealed::seal(
        &request,
        &[SealTo::at_base_price(
            keys[0].key.worker(),
            keys[0].key.sealing_key,
        )],
        now_ms - 10 * 60 * 1000,
    )
    .unwrap();
    let message = error_message(first_event(&conn, RequestBody::Generate(stale)).await);
    assert!(message.contains("outside the replay window"), "{message}");

    // Misrouted: a request with tools sealed to a worker whose model does
    // not serve them (as a faulty or dishonest proxy, or a client skipping
    // the routing, would send it). The worker refuses it: it never answers
    // as if the tools had not been asked for.
    let mut with_tools = request.clone();
    with_tools.params.tools = Some(cocoon_protocol::Tools {
        functions: vec![cocoon_protocol::Function {
            name: "get_weather".into(),
            description: None,
            parameters: "{}".into(),
        }],
        choice: cocoon_protocol::ToolChoice::Required,
        parallel: false,
    });
    let (misrouted, _) = cocoon_protocol::sealed::seal(
        &with_tools,
        &[SealTo::at_base_price(
            keys[0].key.worker(),
            keys[0].key.sealing_key,
        )],
        now_ms,
    )
    .unwrap();
    match first_event(&conn, RequestBody::Generate(misrouted)).await {
        Event::Error(e) => {
            assert_eq!(e.kind, cocoon_protocol::ErrorKind::FeatureNotServed);
            assert!(e.message.contains("'tools' is not served"), "{}", e.message);
        }
        other => panic!("a misrouted tools request was answered: {other:?}"),
    }

    // None of the recipients is a live worker: the proxy says the keys changed.
    let (elsewhere, _) = cocoon_protocol::sealed::seal(
        &request,
        &[SealTo::at_base_price(
            cocoon_protocol::tls::Identity::generate()
                .unwrap()
                .fingerprint(),
            wrong_key,
        )],
        now_ms,
    )
    .unwrap();
    match first_event(&conn, RequestBody::Generate(elsewhere)).await {
        Event::Error(e) => assert_eq!(e.kind, cocoon_protocol::ErrorKind::KeysChanged),
        other => panic!("{other:?}"),
    }

    let refused = net
        .worker()
        .stats()
        .refused_sealed
        .load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(refused, 3);
    // Nothing refused was charged: one receipt, for the one real request.
    assert_eq!(net.proxy().receipts.recent().len(), 1);
    net.shutdown().await;
}

/// What a proxy sees of an answer: chunks padded to size buckets and
/// carrying no token counts, tokens coalesced (fewer chunks than tokens
/// when they come fast), the request padded, and an engine error that
/// repeats the prompt sealed (only its kind in clear).
#[tokio::test]
async fn the_proxy_sees_neither_token_boundaries_nor_lengths_nor_engine_errors() {
    let (net, seen) = inspected_devnet().await;
    let url = format!("{}/chat/completions", net.api_url);
    let words = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu";
    let (status, body) = post(&url, &chat_body(words, json!({}))).await;
    assert_eq!(status, 200, "{body}");
    let tokens = body["usage"]["completion_tokens"].as_u64().unwrap();
    let events: Vec<Event> = seen
        .lock()
        .unwrap()
        .iter()
        .filter_map(|b| postcard::from_bytes::<Event>(b).ok())
        .collect();
    let chunks: Vec<usize> = events
        .iter()
        .filter_map(|e| match e {
            Event::Sealed { ciphertext } => Some(ciphertext.len() - 16),
            _ => None,
        })
        .collect();
    assert!(!chunks.is_empty());
    assert!(
        (chunks.len() as u64) < tokens,
        "{} chunks for {tokens} tokens",
        chunks.len()
    );
    for len in &chunks {
        assert!(
            len.is_power_of_two() && *len >= 64,
            "a chunk of {len} bytes"
        );
    }
    let request = seen
        .lock()
        .unwrap()
        .iter()
        .find_map(|b| match postcard::from_bytes::<RequestBody>(b) {
            Ok(RequestBody::Generate(sealed)) => Some(sealed.ciphertext.len() - 16),
            _ => None,
        })
        .unwrap();
    assert!(
        request.is_power_of_two() && request >= 512,
        "a request of {request} bytes"
    );
    net.shutdown().await;

    // An engine error that repeats the prompt: the app reads it, the proxy
    // only its kind.
    let upstream = cocoon_devnet::adversary::EchoingErrors::start()
        .await
        .unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    let net = devnet_with(|o| {
        o.engine = openai_http_engine(&upstream.base_url, None, 2, 10);
        o.proxy_inspect = Some(Inspector(Arc::new(move |bytes: &[u8]| {
            sink.lock().unwrap().push(bytes.to_vec());
        })))
    })
    .await;
    let (status, body) = post(
        &url_of(&net),
        &chat_body(&format!("tell {MARKER}"), json!({})),
    )
    .await;
    assert_ne!(status, 200, "{body}");
    assert!(
        body.to_string().contains(MARKER),
        "the app gets the engine's words: {body}"
    );
    for bytes in seen.lock().unwrap().iter() {
        assert!(
            !contains(bytes, MARKER),
            "the proxy saw the prompt in an error"
        );
    }
    net.shutdown().await;
}

fn url_of(net: &cocoon_devnet::Devnet) -> String {
    format!("{}/chat/completions", net.api_url)
}
