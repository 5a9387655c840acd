//! What operators see, scraped over HTTP from a running devnet: every node's
//! `/healthz`, `/readyz`, Prometheus `/metrics` and `/stats` agree with the
//! requests that were made, and none of them holds a prompt or an answer.

use cocoon_devnet::kit::*;
use serde_json::{json, Value};

async fn text(url: &str) -> (u16, String) {
    let resp = http().get(url).send().await.unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

fn assert_has(text: &str, line: &str) {
    assert!(text.contains(line), "missing {line} in\n{text}");
}

#[tokio::test]
async fn every_node_counts_the_requests_it_saw_and_shows_no_prompt() {
    let net = devnet().await;
    let client = net.api_url.trim_end_matches("/v1").to_string();
    let marker = "zebra-quartz-7781";
    let chat = format!("{}/chat/completions", net.api_url);
    let (status, body) = post(&chat, &chat_body(marker, json!({"max_tokens": 4}))).await;
    assert_eq!(status, 200, "{body}");
    let streamed = post_stream(
        &chat,
        &chat_body(marker, json!({"stream": true, "max_tokens": 3})),
    )
    .await;
    assert_eq!(streamed.last().map(String::as_str), Some("[DONE]"));
    let mut missing = chat_body(marker, json!({}));
    missing["model"] = json!("no-such-model");
    let (status, _) = post(&chat, &missing).await;
    assert_eq!(status, 404);

    for base in [&client, &net.proxy_status_url(), &net.worker_status_url()] {
        assert_eq!(text(&format!("{base}/healthz")).await, (200, "ok".into()));
        let ready: Value = get_json(&format!("{base}/readyz")).await;
        assert_eq!(ready["ready"], true, "{base}: {ready}");
    }

    let (_, client_metrics) = text(&format!("{client}/metrics")).await;
    assert_has(
        &client_metrics,
        r#"cocoon_requests_total{role="client",model="test-echo",outcome="ok"} 2"#,
    );
    assert_has(
        &client_metrics,
        r#"cocoon_requests_total{role="client",model="no-such-model",outcome="model_not_found"} 1"#,
    );
    assert_has(
        &client_metrics,
        r#"cocoon_tokens_total{role="client",model="test-echo",kind="completion"} 7"#,
    );
    assert_has(
        &client_metrics,
        r#"cocoon_first_token_seconds_count{role="client",model="test-echo"} 2"#,
    );
    assert_has(
        &client_metrics,
        r#"cocoon_requests_in_flight{role="client"} 0"#,
    );

    let (_, proxy_metrics) = text(&format!("{}/metrics", net.proxy_status_url())).await;
    assert_has(
        &proxy_metrics,
        r#"cocoon_requests_total{role="proxy",model="test-echo",outcome="ok"} 2"#,
    );
    assert_has(
        &proxy_metrics,
        r#"cocoon_tokens_total{role="proxy",model="test-echo",kind="completion"} 7"#,
    );
    assert_has(
        &proxy_metrics,
        r#"cocoon_workers_connected{role="proxy"} 1.0"#,
    );
    let worker = net.worker().fingerprint().to_string();
    assert_has(
        &proxy_metrics,
        &format!(
            r#"cocoon_worker_capacity{{role="proxy",model="test-echo",worker="{worker}"}} 64.0"#
        ),
    );
    assert_has(
        &proxy_metrics,
        &format!(
            r#"cocoon_worker_healthy{{role="proxy",model="test-echo",worker="{worker}"}} 1.0"#
        ),
    );
    assert_has(
        &proxy_metrics,
        r#"cocoon_request_duration_seconds_bucket{role="proxy",le="+Inf",model="test-echo"} 2"#,
    );

    let (_, worker_metrics) = text(&format!("{}/metrics", net.worker_status_url())).await;
    assert_has(
        &worker_metrics,
        r#"cocoon_requests_total{role="worker",model="test-echo",outcome="ok"} 2"#,
    );
    assert_has(
        &worker_metrics,
        r#"cocoon_proxies_connected{role="worker"} 1.0"#,
    );

    let proxy_stats = get_json(&format!("{}/stats", net.proxy_status_url())).await;
    assert_eq!(proxy_stats["workers_connected"], 1);
    assert_eq!(proxy_stats["offers"][0]["answers"], 2, "{proxy_stats}");
    assert_eq!(proxy_stats["offers"][0]["worker"], worker);
    assert!(proxy_stats["settlement"]["proxy_contract"].is_string());
    let worker_stats = get_json(&format!("{}/stats", net.worker_status_url())).await;
    assert_eq!(worker_stats["requests"]["completed"], 2, "{worker_stats}");
    assert_eq!(worker_stats["tokens_generated"], 7);
    let client_stats = get_json(&format!("{client}/stats")).await;

    for (what, body) in [
        ("client metrics", client_metrics),
        ("proxy metrics", proxy_metrics),
        ("worker metrics", worker_metrics),
        ("proxy stats", proxy_stats.to_string()),
        ("worker stats", worker_stats.to_string()),
        ("client stats", client_stats.to_string()),
    ] {
        assert!(!body.contains("zebra"), "{what} shows the prompt");
    }
    net.shutdown().await;
}
