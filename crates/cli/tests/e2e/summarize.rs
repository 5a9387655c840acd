//! Chat summaries and reply drafts end to end: Telegram-format exports made
//! here (several languages, entity arrays, service and media messages,
//! replies, forwards) summarised through a devnet's client node, by the
//! library and by `cocoon summarize`; what they cost is what the node's
//! contract is charged.

use std::process::Command;

use cocoon_devnet::kit::*;
use cocoon_messenger::chat_export;
use cocoon_messenger::summarize::{Selection, Summarizer};
use serde_json::{json, Value};

/// A personal chat between "Me" (user1) and "Ольга" (user77), `n` messages.
fn personal_chat(n: usize) -> Value {
    let mut messages = vec![json!({
        "id": 1, "type": "service", "date": "2024-05-01T09:00:00",
        "actor": "Ольга", "actor_id": "user77", "action": "phone_call", "text": ""
    })];
    for i in 0..n {
        let id = i as i64 + 2;
        let date = format!(
            "2024-05-{:02}T{:02}:{:02}:00",
            1 + i / 40,
            9 + (i / 4) % 10,
            i % 60
        );
        let mut m = if i % 2 == 0 {
            json!({"id": id, "type": "message", "date": date, "from": "Ольга", "from_id": "user77",
                   "text": format!("Привет! Сообщение номер {i}: встречаемся в субботу в кафе?")})
        } else {
            json!({"id": id, "type": "message", "date": date, "from": "Me", "from_id": "user1",
                   "text": ["Sure, ", {"type": "bold", "text": "Saturday"}, " works, see ",
                            {"type": "link", "text": "https://example.org/cafe"}]})
        };
        if i % 7 == 3 {
            m["reply_to_message_id"] = json!(id - 1);
        }
        if i % 11 == 5 {
            m["forwarded_from"] = json!("Новости");
        }
        if i % 13 == 6 {
            m["text"] = json!("");
            m["media_type"] = json!("voice_message");
        }
        messages.push(m);
    }
    // Her last message replies to one of mine: the one drafts answer.
    messages.push(json!({"id": 9000, "type": "message", "date": "2024-06-30T20:00:00",
        "from": "Ольга", "from_id": "user77", "text": "ちょっと遅れるかも。¿Te parece bien a las ocho?",
        "reply_to_message_id": n as i64 + 1}));
    json!({"name": "Ольга", "type": "personal_chat", "id": 77, "messages": messages})
}

fn write(dir: &std::path::Path, name: &str, export: &Value) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, serde_json::to_vec_pretty(export).unwrap()).unwrap();
    path
}

/// Run `cocoon ARGS` off the test's runtime (which serves the devnet).
async fn cocoon(args: &[&str]) -> std::process::Output {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_cocoon"))
            .args(args)
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

async fn unsettled(api_url: &str) -> u128 {
    let balance = get_json(&format!("{api_url}/cocoon/balance")).await;
    balance["unsettled_nano"].as_str().unwrap().parse().unwrap()
}

#[tokio::test]
async fn a_long_chat_is_summarised_in_chunks_and_costs_what_is_charged() {
    let net = devnet_with(|o| {
        o.settle_every = None;
        o.chain_fresh = FRESH_IN_TESTS;
    })
    .await;
    let export = personal_chat(120);
    let chat = chat_export::parse(&serde_json::to_vec(&export).unwrap()).unwrap();
    assert_eq!(chat.messages.len(), 122);

    let mut summarizer = Summarizer::connect(&net.api_url, None, None).await.unwrap();
    assert_eq!(summarizer.model, MODEL);
    // A small context: the chat takes several chunks and levels.
    summarizer.context_tokens = 900;
    summarizer.max_tokens = 48;
    let mut seen = Vec::new();
    let summary = summarizer
        .summarize(&chat, &Selection::All, |done, total| {
            seen.push((done, total))
        })
        .await
        .unwrap();
    assert_eq!(summary.messages, 121, "the service message is left out");
    assert!(summary.chunks > 3, "{summary:?}");
    assert!(summary.levels >= 2, "{summary:?}");
    assert!(!summary.text.is_empty());
    let (done, total) = *seen.last().unwrap();
    assert_eq!(done, total);
    assert_eq!(summarizer.spent.requests, total);
    assert!(seen.windows(2).all(|w| w[1].0 == w[0].0 + 1));

    // Drafts answer her last message, which replies to mine.
    let me = cocoon_messenger::summarize::me_in_personal_chat(&chat).unwrap();
    assert_eq!(me, "Me");
    let drafts = summarizer.drafts(&chat, &me, 3).await.unwrap();
    assert_eq!(drafts.reply_to, 9000);
    assert_eq!(drafts.from, "Ольга");
    assert_eq!(drafts.drafts.len(), 3);
    assert_eq!(summarizer.spent.requests, total + 3);

    // Every answer's cost, added up, is what the client node counted
    // against its contract (to the nano-TON).
    let cost = summarizer.spent.cost_nano.expect("the devnet's node bills");
    assert!(cost > 0);
    past_fresh().await;
    assert_eq!(unsettled(&net.api_url).await, cost);

    // The last few messages fit in one request.
    let mut small = Summarizer::connect(&net.api_url, Some(MODEL), None)
        .await
        .unwrap();
    let summary = small
        .summarize(&chat, &Selection::Last(5), |_, _| {})
        .await
        .unwrap();
    assert_eq!(
        (summary.messages, summary.chunks, summary.levels),
        (5, 1, 1)
    );
    let summary = small
        .summarize(&chat, &Selection::Since("2024-06-30".into()), |_, _| {})
        .await
        .unwrap();
    assert_eq!(summary.messages, 1);
    net.shutdown().await;
}

#[tokio::test]
async fn cocoon_summarize_prints_json_and_names_what_is_wrong_in_an_export() {
    let net = devnet().await;
    let dir = std::env::temp_dir().join(format!("cocoon-summarize-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = write(&dir, "result.json", &personal_chat(12));
    let good = good.to_str().unwrap();
    let out = cocoon(&[
        "summarize",
        good,
        "--api",
        &net.api_url,
        "--last",
        "6",
        "--drafts",
        "2",
        "--json",
        "--max-tokens",
        "32",
    ])
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed["summary"]["messages"], 6, "{printed}");
    assert_eq!(printed["summary"]["chunks"], 1);
    assert_eq!(printed["drafts"]["reply_to"], 9000);
    assert_eq!(printed["drafts"]["drafts"].as_array().unwrap().len(), 2);
    assert_eq!(printed["spent"]["requests"], 3);
    assert!(
        printed["spent"]["cost_nano"]
            .as_str()
            .unwrap()
            .parse::<u128>()
            .unwrap()
            > 0
    );

    // Plain text ends with the cost in TON.
    let out = cocoon(&["summarize", good, "--api", &net.api_url, "--last", "3"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("3 messages in 1 chunks") && text.contains(" TON"),
        "{text}"
    );

    // A malformed export: the message index and field are named.
    let mut bad = personal_chat(4);
    bad["messages"][3]["date"] = json!("last Tuesday");
    let bad = write(&dir, "bad.json", &bad);
    let out = cocoon(&["summarize", bad.to_str().unwrap(), "--api", &net.api_url]).await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("messages[3].date"), "{stderr}");
    // A group chat does not say who "me" is.
    let mut group = personal_chat(4);
    group["type"] = json!("private_group");
    let group = write(&dir, "group.json", &group);
    let group = group.to_str().unwrap();
    let out = cocoon(&["summarize", group, "--api", &net.api_url, "--drafts", "1"]).await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--me"));
    let _ = std::fs::remove_dir_all(&dir);
    net.shutdown().await;
}
