//! Attack tests in which the proxy operator is the attacker: a relay
//! (`cocoon_devnet::adversary::RelayProxy`) that client nodes dial as their
//! proxy, in front of the devnet's honest proxy, rewriting what passes.

use std::sync::{Arc, Mutex};

use cocoon_devnet::adversary::{ask_all, forward, RelayProxy, Script};
use cocoon_devnet::kit::*;
use cocoon_protocol::sealed::SealingKey;
use cocoon_protocol::{Connection, Event, RequestBody};
use futures::stream::{self, BoxStream};
use futures::StreamExt;
use serde_json::json;

const SECRET: &str = "my-bank-pin-is-8841";

/// Lists its own X25519 key in place of every worker's, then tries to open
/// what the client node seals.
struct SubstituteKeys {
    key: SealingKey,
    /// Keep the worker's evidence (which binds the worker's real key), or
    /// strip it.
    keep_evidence: bool,
    /// Prompts the relay could read.
    read: Mutex<Vec<String>>,
}

impl Script for SubstituteKeys {
    fn serve(&self, body: RequestBody, upstream: Connection) -> BoxStream<'static, Event> {
        match body {
            RequestBody::WorkerKeys { .. } => {
                let (ours, keep) = (self.key.public(), self.keep_evidence);
                forward(upstream, body)
                    .map(move |event| match event {
                        Event::WorkerKeys(mut listed) => {
                            for l in &mut listed {
                                l.key.sealing_key = ours;
                                if !keep {
                                    l.key.evidence = None;
                                }
                            }
                            Event::WorkerKeys(listed)
                        }
                        other => other,
                    })
                    .boxed()
            }
            RequestBody::Generate(sealed) => {
                for worker in sealed.workers() {
                    if let Ok((request, _)) = self.key.open(worker, &sealed) {
                        self.read
                            .lock()
                            .unwrap()
                            .push(format!("{:?}", request.input));
                    }
                }
                // Forwarded as is: the honest worker cannot open it either.
                forward(upstream, RequestBody::Generate(sealed))
            }
            other => forward(upstream, other),
        }
    }
}

fn substitute(keep_evidence: bool) -> Arc<SubstituteKeys> {
    Arc::new(SubstituteKeys {
        key: SealingKey::generate(),
        keep_evidence,
        read: Mutex::new(Vec::new()),
    })
}

#[tokio::test]
async fn a_proxy_listing_its_own_key_as_a_workers_reads_nothing_from_a_verifying_client() {
    let net = devnet().await;
    for keep_evidence in [true, false] {
        let script = substitute(keep_evidence);
        let relay = RelayProxy::in_front_of(&net, script.clone()).await.unwrap();
        // A client node with the network's policy (what production requires)
        // checks each listed key's evidence itself: the substituted key is
        // not bound by the worker's evidence, or has none.
        let client = net
            .client_through(vec![relay.endpoint.clone()], net.peer_check.clone())
            .await
            .unwrap();
        let url = format!("{}/chat/completions", client.api_url());
        let (status, body) = post(&url, &chat_body(SECRET, json!({}))).await;
        assert_eq!(status, 503, "{body}");
        assert_error(&body, "attested key");
        assert!(script.read.lock().unwrap().is_empty());
        client.stop().await;
    }

    // The same relay against a client node without a policy (the
    // development profile's pinned-keys-only mode, which production refuses
    // to start in): the relay reads the prompt. This is the attack the
    // policy requirement stops.
    let script = substitute(false);
    let relay = RelayProxy::in_front_of(&net, script.clone()).await.unwrap();
    let unverified = net
        .client_through(vec![relay.endpoint.clone()], None)
        .await
        .unwrap();
    let url = format!("{}/chat/completions", unverified.api_url());
    let _ = post(&url, &chat_body(SECRET, json!({}))).await;
    let read = script.read.lock().unwrap().clone();
    assert!(read.iter().any(|p| p.contains(SECRET)), "{read:?}");
    unverified.stop().await;
    net.shutdown().await;
}

/// Sends each sealed request to its first recipient alone, then to its
/// second alone (same request id), to get two answers to one request.
#[derive(Default)]
struct SendToBoth {
    second: Arc<Mutex<Vec<Event>>>,
}

impl Script for SendToBoth {
    fn serve(&self, body: RequestBody, upstream: Connection) -> BoxStream<'static, Event> {
        match body {
            RequestBody::Generate(sealed) if sealed.recipients.len() >= 2 => {
                let mut to_first = sealed.clone();
                to_first.recipients.truncate(1);
                let mut to_second = sealed;
                to_second.recipients.remove(0);
                to_second.recipients.truncate(1);
                let second = self.second.clone();
                stream::once(async move {
                    let first = ask_all(&upstream, RequestBody::Generate(to_first)).await;
                    let other = ask_all(&upstream, RequestBody::Generate(to_second)).await;
                    second.lock().unwrap().extend(other);
                    stream::iter(first)
                })
                .flatten()
                .boxed()
            }
            other => forward(upstream, other),
        }
    }
}

#[tokio::test]
async fn a_proxy_cannot_get_a_second_answer_to_one_sealed_request() {
    let net =
        devnet_with(|o| o.more_workers = vec![(slow_engine(0, 4), o.price_coefficient)]).await;
    let script = Arc::new(SendToBoth::default());
    let relay = RelayProxy::in_front_of(&net, script.clone()).await.unwrap();
    let client = net
        .client_through(vec![relay.endpoint.clone()], net.peer_check.clone())
        .await
        .unwrap();
    let url = format!("{}/chat/completions", client.api_url());
    let (status, body) = post(&url, &chat_body(SECRET, json!({}))).await;
    assert_eq!(status, 200, "{body}");
    // The request was sealed to both workers, and the relay sent it to the
    // second as well: the honest proxy refused it (no second answer under
    // any key, nothing billed twice).
    let second = script.second.lock().unwrap().clone();
    assert_eq!(second.len(), 1, "{second:?}");
    match &second[0] {
        Event::Error(e) => assert!(e.message.contains("forwarded already"), "{e:?}"),
        other => panic!("a second answer to one request: {other:?}"),
    }
    assert_eq!(net.proxy().receipts.recent().len(), 1);
    client.stop().await;
    net.shutdown().await;
}

/// Wants one worker to serve this client: refuses (as if the workers had
/// gone away) every first seal of a request, and any seal whose recipients
/// do not include its worker, so that the client node reseals until they
/// do; counts the seals it saw.
struct SteerTo {
    worker: cocoon_protocol::tls::Fingerprint,
    generates: std::sync::atomic::AtomicUsize,
}

impl Script for SteerTo {
    fn serve(&self, body: RequestBody, upstream: Connection) -> BoxStream<'static, Event> {
        match body {
            RequestBody::Generate(mut sealed) => {
                self.generates
                    .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let first_seal = sealed.recipients.len() <= 2;
                if first_seal || !sealed.workers().any(|w| *w == self.worker) {
                    return stream::iter([Event::Error(cocoon_protocol::WireError::new(
                        cocoon_protocol::ErrorKind::Upstream,
                        "worker went away",
                    ))])
                    .boxed();
                }
                sealed.recipients.retain(|r| r.worker == self.worker);
                forward(upstream, RequestBody::Generate(sealed))
            }
            other => forward(upstream, other),
        }
    }
}

#[tokio::test]
async fn a_proxy_failing_requests_to_steer_them_gets_one_reseal_and_is_passed_over() {
    let net = devnet_with(|o| {
        let p = o.price_coefficient;
        o.more_workers = vec![(slow_engine(0, 4), p), (slow_engine(0, 4), p)];
    })
    .await;
    let target = net.workers[2].fingerprint();
    let script = Arc::new(SteerTo {
        worker: target,
        generates: Default::default(),
    });
    let relay = RelayProxy::in_front_of(&net, script.clone()).await.unwrap();
    // The client node knows the relay and the honest proxy.
    let client = net
        .client_through(
            vec![relay.endpoint.clone(), net.proxy_endpoint().clone()],
            net.peer_check.clone(),
        )
        .await
        .unwrap();
    client.pool.wait_connected(2).await;
    let url = format!("{}/chat/completions", client.api_url());
    let seen = || script.generates.load(std::sync::atomic::Ordering::SeqCst);
    let mut through_relay_late = 0;
    for i in 0..60 {
        let before = seen();
        let (status, body) = post(&url, &chat_body("hello", json!({}))).await;
        // Every request is answered (by the honest proxy when the relay fails it).
        assert_eq!(status, 200, "request {i}: {body}");
        // Sealed at most twice through the relay: one reseal, not more.
        assert!(
            seen() - before <= 2,
            "request {i}: {} seals",
            seen() - before
        );
        if i >= 40 {
            through_relay_late += seen() - before;
        }
    }
    // Passed over once it looked like steering: the last 20 requests did
    // not go through it.
    assert_eq!(through_relay_late, 0, "the steering proxy was still used");
    client.stop().await;
    net.shutdown().await;
}
