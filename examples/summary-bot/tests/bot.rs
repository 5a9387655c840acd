//! The example bot against a devnet: a chat in, a summary and drafts out,
//! a malformed chat refused naming its field.

use cocoon_devnet::{Devnet, DevnetOptions};
use serde_json::{json, Value};

fn chat() -> Value {
    json!({"name": "Mia", "type": "personal_chat", "id": 5, "messages": [
        {"id": 1, "type": "message", "date": "2024-01-02T10:00:00", "from": "Mia", "from_id": "user5",
         "text": ["Can you send the ", {"type": "italic", "text": "slides"}, "?"]},
        {"id": 2, "type": "message", "date": "2024-01-02T10:05:00", "from": "Leo", "from_id": "user9",
         "text": "Tonight, sorry", "reply_to_message_id": 1},
        {"id": 3, "type": "service", "date": "2024-01-02T10:06:00", "actor": "Mia", "action": "pin_message", "text": ""},
        {"id": 4, "type": "message", "date": "2024-01-02T10:07:00", "from": "Mia", "from_id": "user5",
         "text": "ok, before 9 please", "reply_to_message_id": 2}
    ]})
}

#[tokio::test]
async fn the_bot_summarises_and_drafts_through_the_network() {
    let net = Devnet::start(DevnetOptions::instant("test-echo"))
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let bot = cocoon_summary_bot::Bot {
        api: net.api_url.clone(),
        max_tokens: 32,
    };
    tokio::spawn(async move { axum::serve(listener, cocoon_summary_bot::router(bot)).await });
    let http = reqwest::Client::new();
    let post = |path: &str, body: Value| {
        let request = http.post(format!("{url}{path}")).json(&body);
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap())
        }
    };

    let (status, body) = post("/summarize", json!({"chat": chat()})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["summary"]["messages"], 3, "{body}");
    assert!(!body["summary"]["text"].as_str().unwrap().is_empty());
    assert_eq!(body["spent"]["requests"], 1);
    assert!(
        body["spent"]["cost_nano"]
            .as_str()
            .unwrap()
            .parse::<u128>()
            .unwrap()
            > 0
    );

    // Leo is "me" here (Mia is the chat's other party): drafts answer her.
    let (status, body) = post("/drafts", json!({"chat": chat(), "count": 2})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["drafts"]["reply_to"], 4);
    assert_eq!(body["drafts"]["from"], "Mia");
    assert_eq!(body["drafts"]["drafts"].as_array().unwrap().len(), 2);

    let mut bad = chat();
    bad["messages"][1]["text"] = json!([{"type": "bold"}]);
    let (status, body) = post("/summarize", json!({"chat": bad})).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["field"], "chat.messages[1].text");
    let (status, body) = post("/summarize", json!({"chat": chat(), "last": 0})).await;
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (400, Some("last"))
    );
    let (status, body) = post("/drafts", json!({"chat": chat(), "count": 99})).await;
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (400, Some("count"))
    );
    // Nothing to summarise is the caller's mistake, not the network's.
    let since = json!({"chat": chat(), "since": "2030-01-01"});
    let (status, body) = post("/summarize", since).await;
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (400, Some("chat"))
    );
    let (status, body) = post("/summarize", json!({"chats": []})).await;
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (400, Some("body"))
    );
    net.shutdown().await;
}
