//! A worker makes a new sealing key on schedule (`sealing_key_rotation_secs`,
//! 2 s here): each is announced with evidence binding it, apps are answered
//! throughout (the client node follows the new keys, sealing again when a
//! worker says its keys changed), and once a key is dropped nothing the
//! worker holds opens what was sealed to it: a request a proxy (or the
//! host) kept back from before is refused before a token.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use cocoon_devnet::kit::*;
use cocoon_protocol::{ErrorKind, Event, RequestBody};
use serde_json::json;

use crate::sealing::{first_event, listed_workers, raw_client, sealed_now};

#[tokio::test]
async fn a_worker_rotates_its_sealing_key_and_a_request_sealed_to_a_dropped_key_never_opens() {
    let net = devnet_with(|o| {
        o.settle_every = None;
        o.sealing_key_rotation = Duration::from_secs(2);
    })
    .await;
    let conn = raw_client(&net).await;
    let first = listed_workers(&conn).await.remove(0);
    // Sealed to the key announced now, and kept back (a proxy holding a
    // request, or a host that recorded it).
    let kept = sealed_now(&first, first.price_coefficient, "kept back");

    // Apps go on being answered while the keys rotate, until the worker
    // has announced two keys after the first: by then the first has been
    // retired and dropped.
    let url = format!("{}/chat/completions", net.api_url);
    let mut seen = HashSet::from([first.key.sealing_key]);
    let started = Instant::now();
    let mut answered = 0;
    while seen.len() < 3 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "keys seen: {}",
            seen.len()
        );
        let (status, body) = post(
            &url,
            &chat_body(&format!("question {answered}"), json!({"max_tokens": 4})),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        answered += 1;
        for listed in listed_workers(&conn).await {
            // Each key comes with evidence binding it (the proxy checked
            // it at announcement; so does the client node before sealing).
            assert!(listed.key.evidence.is_some());
            seen.insert(listed.key.sealing_key);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(answered >= 3, "{answered}");
    // The operator sees the rotations on the worker's status page.
    let stats = get_json(&format!("{}/stats", net.worker_status_url())).await;
    let sealing = &stats["sealing_key"];
    assert!(sealing["rotations"].as_u64().unwrap() >= 2, "{sealing}");
    assert_eq!(sealing["rotation_secs"], 2, "{sealing}");

    // Before a token, and not for a price or a replay: none of the
    // worker's keys opens it any more.
    match first_event(&conn, RequestBody::Generate(kept)).await {
        Event::Error(e) => {
            assert_eq!(e.kind, ErrorKind::KeysChanged, "{e:?}");
            assert!(e.message.contains("rotate"), "{}", e.message);
        }
        other => panic!("a request sealed to a dropped key was served: {other:?}"),
    }

    // A request sealed to the key announced now is served.
    let now = listed_workers(&conn).await.remove(0);
    let fresh = sealed_now(&now, now.price_coefficient, "fresh");
    let event = first_event(&conn, RequestBody::Generate(fresh)).await;
    assert!(!matches!(event, Event::Error(_)), "{event:?}");
    net.shutdown().await;
}
