//! A proxy killed (SIGKILL) while paid traffic flows, then started again from
//! its files: the client node fails over to the other proxy, the restarted
//! proxy owes and is owed exactly what its books held at the kill, and after
//! settlement the chain charged each client contract exactly what the books
//! say: nothing lost, nothing charged twice. Every node is its own `cocoon`
//! process ([`ProcessNet`]) on an embedded TON chain.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cocoon_devnet::kit::streamed_request;
use cocoon_devnet::process_net::{ProcessNet, ProcessNetOptions};

const BIN: &str = env!("CARGO_BIN_EXE_cocoon");
const CLIENTS: usize = 6;

#[derive(Default)]
struct Tally {
    ok: u64,
    cost: u128,
    max_cost: u128,
    errors: Vec<String>,
}

/// `CLIENTS` streaming loops until `stop`; while `pause` is set they finish
/// what they sent and send nothing new (`busy` counts requests in flight).
struct Traffic {
    tally: Arc<Mutex<Tally>>,
    pause: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    busy: Arc<std::sync::atomic::AtomicUsize>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Traffic {
    fn start(api_url: &str) -> Traffic {
        let url = format!("{api_url}/chat/completions");
        let body = serde_json::json!({
            "model": "echo",
            "messages": [{"role": "user", "content": "paid words streamed back while a proxy dies"}],
            "max_tokens": 24,
            "stream": true,
        })
        .to_string();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        let traffic = Traffic {
            tally: Default::default(),
            pause: Default::default(),
            stop: Default::default(),
            busy: Default::default(),
            tasks: Vec::new(),
        };
        let mut tasks = Vec::new();
        for _ in 0..CLIENTS {
            let (http, url, body) = (http.clone(), url.clone(), body.clone());
            let (tally, pause, stop, busy) = (
                traffic.tally.clone(),
                traffic.pause.clone(),
                traffic.stop.clone(),
                traffic.busy.clone(),
            );
            tasks.push(tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    if pause.load(Ordering::SeqCst) {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                    busy.fetch_add(1, Ordering::SeqCst);
                    let outcome = streamed_request(&http, &url, &body).await;
                    let mut t = tally.lock().unwrap();
                    match outcome {
                        Ok(cost) => {
                            t.ok += 1;
                            t.cost += cost;
                            t.max_cost = t.max_cost.max(cost);
                        }
                        Err(code) => t.errors.push(code),
                    }
                    drop(t);
                    busy.fetch_sub(1, Ordering::SeqCst);
                }
            }));
        }
        Traffic { tasks, ..traffic }
    }

    /// Counts so far: (answers, errors).
    fn counts(&self) -> (u64, usize) {
        let t = self.tally.lock().unwrap();
        (t.ok, t.errors.len())
    }

    async fn paused(&self) {
        self.pause.store(true, Ordering::SeqCst);
        while self.busy.load(Ordering::SeqCst) > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn stop(self) -> Tally {
        self.stop.store(true, Ordering::SeqCst);
        for task in self.tasks {
            task.await.unwrap();
        }
        Arc::try_unwrap(self.tally)
            .ok()
            .unwrap()
            .into_inner()
            .unwrap()
    }
}

/// What each worker was paid on chain by each proxy's contract, `[proxy][worker]`.
async fn claims(net: &ProcessNet) -> [Vec<u128>; 2] {
    [net.claims(0).await.unwrap(), net.claims(1).await.unwrap()]
}

/// Wait for `check` (polled every 100 ms) for at most `secs`.
async fn until<F: std::future::Future<Output = bool>>(
    secs: u64,
    what: &str,
    mut check: impl FnMut() -> F,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_killed_under_paid_traffic_restarts_with_its_books_and_nothing_is_charged_twice() {
    let mut options = ProcessNetOptions::new(BIN.into(), "echo");
    options.proxies = 2;
    // Equal prices: each proxy draws either worker.
    options.workers = vec![(2, 1000), (2, 1000)];
    options.worker_concurrency = 16;
    let mut net = ProcessNet::start(options).await.unwrap();
    let traffic = Traffic::start(&net.api_url);

    // Both proxies earn (the node deploys its contract with the second).
    until(60, "both proxies serving paid answers", || async {
        net.owed_by_clients(0).await.unwrap_or(0) > 0
            && net.owed_by_clients(1).await.unwrap_or(0) > 0
    })
    .await;
    until(
        30,
        "a settlement round charged the first contract",
        || async { net.charged(0).await.unwrap() > 0 },
    )
    .await;

    // Kill the first proxy mid-traffic. Its books on disk are what it owes.
    let (ok_at_kill, errors_at_kill) = traffic.counts();
    assert_eq!(
        errors_at_kill,
        0,
        "{:?}",
        traffic.tally.lock().unwrap().errors
    );
    net.proxies[0].node.kill();
    let contract0 = net.client_contract(0).unwrap().unwrap();
    let contract1 = net.client_contract(1).unwrap().unwrap();
    let owed_at_kill = {
        let books = net.books(0).unwrap();
        books.client(&contract0).total
    };
    let charged_at_kill = net.charged(0).await.unwrap();
    assert!(owed_at_kill >= charged_at_kill);

    // The client node fails over: answers keep coming through the other proxy.
    until(30, "answers while the first proxy is down", || async {
        traffic.counts().0 >= ok_at_kill + 40
    })
    .await;
    let (_, errors_down) = traffic.counts();
    assert!(
        errors_down - errors_at_kill <= CLIENTS,
        "only requests in flight at the kill may fail: {:?}",
        traffic.tally.lock().unwrap().errors
    );
    // Settlement of the first proxy's contract stopped with it.
    assert_eq!(net.charged(0).await.unwrap(), charged_at_kill);

    // Start it again from the same files, with nothing sent meanwhile: it
    // owes and is owed exactly what it held at the kill.
    traffic.paused().await;
    net.proxies[0].node.start().unwrap();
    until(
        60,
        "the restarted proxy has its workers and the client's contract",
        || async {
            net.proxy_stats(0).await.is_some_and(|s| {
                s["workers_connected"] == 2
                    && s["clients"]
                        .as_array()
                        .is_some_and(|c| c.iter().any(|c| c["contract"] == contract0.to_string()))
            })
        },
    )
    .await;
    let s = net.proxy_stats(0).await.unwrap();
    let account = s["clients"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["contract"] == contract0.to_string())
        .unwrap()
        .clone();
    assert_eq!(account["owed_nano"], owed_at_kill.to_string(), "{account}");
    // Its books, settled: what was owed but not yet charged at the kill is
    // charged now, once.
    until(
        30,
        "the restarted proxy charges what its books owe",
        || async { net.charged(0).await.unwrap() == owed_at_kill },
    )
    .await;

    // Traffic through both again, then stop and let everything settle.
    let (ok_paused, _) = traffic.counts();
    traffic.pause.store(false, Ordering::SeqCst);
    until(60, "answers after the restart", || async {
        traffic.counts().0 >= ok_paused + 40
            && net.owed_by_clients(0).await.unwrap_or(0) > owed_at_kill
    })
    .await;
    let tally = traffic.stop().await;
    until(60, "both contracts charged what the books owe", || async {
        net.charged(0).await.unwrap() == net.owed_by_clients(0).await.unwrap_or(0)
            && net.charged(1).await.unwrap() == net.owed_by_clients(1).await.unwrap_or(0)
    })
    .await;
    // Workers claim every second; wait until their claims stop moving.
    let mut last = claims(&net).await;
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let now = claims(&net).await;
        if now == last && now.iter().flatten().sum::<u128>() > 0 {
            break;
        }
        last = now;
    }
    let charged = [net.charged(0).await.unwrap(), net.charged(1).await.unwrap()];
    for p in &mut net.proxies {
        p.node.kill();
    }

    // The books on disk = the chain, for clients and for workers.
    for (i, contract) in [(0, &contract0), (1, &contract1)] {
        let books = net.books(i).unwrap();
        assert_eq!(
            books.client(contract).total,
            charged[i],
            "proxy {i}'s client"
        );
        assert_eq!(last[i].len(), 2);
        for (w, paid) in last[i].iter().enumerate() {
            assert_eq!(
                books.worker(&net.worker_contract(w, i).unwrap()).total,
                *paid,
                "proxy {i} paid worker {w} what its books owe"
            );
        }
    }
    // The client was charged for the answers it received, plus at most the
    // ones cut off at the kill (their receipt was in the proxy's books but
    // never reached the node).
    let total: u128 = charged.iter().sum();
    assert!(
        total >= tally.cost,
        "charged {total} < answers' costs {}",
        tally.cost
    );
    assert!(
        total - tally.cost <= CLIENTS as u128 * tally.max_cost,
        "charged {total}, answers cost {}",
        tally.cost
    );
    eprintln!(
        "answers {}, errors {:?}, costs {}, charged {charged:?}, owed at kill {owed_at_kill}",
        tally.ok, tally.errors, tally.cost
    );
    net.shutdown().await;
}

/// A proxy's books swapped for an older copy that the chain cannot tell
/// apart (the proxy made no commit since: it settles once an hour here),
/// while its worker kept a later voucher of the proxy's own signature: on
/// reconnecting, the worker shows it in its announcement, and the proxy
/// stops serving clients and says why, instead of owing its worker less than
/// it signed. Every node is its own process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_restarted_on_books_older_than_a_workers_voucher_stops_serving() {
    let mut options = ProcessNetOptions::new(BIN.into(), "echo");
    options.workers = vec![(1, 1000)];
    // Workers fetch vouchers every second; the proxy never settles.
    options.proxy_settle_every_secs = Some(3600);
    let mut net = ProcessNet::start(options).await.unwrap();
    let url = format!("{}/chat/completions", net.api_url);
    let http = reqwest::Client::new();
    let body = serde_json::json!({
        "model": "echo",
        "messages": [{"role": "user", "content": "old books"}],
        "max_tokens": 8,
        "stream": true,
    })
    .to_string();
    streamed_request(&http, &url, &body).await.unwrap();
    // The old copy: the books as they are now, taken with the proxy down.
    net.proxies[0].node.kill();
    let books = net.proxies[0].books.clone();
    let old_copy = net.dir.path().join("old-books.redb");
    std::fs::copy(&books, &old_copy).unwrap();
    let old_total = net
        .books(0)
        .unwrap()
        .worker(&net.worker_contract(0, 0).unwrap())
        .total;
    net.proxies[0].node.start().unwrap();
    // More answers; the worker keeps a voucher above the old copy's total.
    let earnings = net.dir.path().join("worker-0-earnings.json");
    let kept = || {
        cocoon_worker::read_earnings(&earnings)
            .ok()
            .and_then(|book| book.values().next().map(|e| e.owed()))
            .unwrap_or(0)
    };
    until(60, "a voucher above the old books", || async {
        let _ = streamed_request(&http, &url, &body).await;
        kept() > old_total
    })
    .await;
    // The operator restores the old copy.
    net.proxies[0].node.kill();
    std::fs::copy(&old_copy, &books).unwrap();
    net.proxies[0].node.start().unwrap();
    until(60, "the proxy refusing to serve on old books", || {
        let (http, url, body) = (http.clone(), url.clone(), body.clone());
        async move {
            let text = match http
                .post(&url)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
            {
                Ok(r) => r.text().await.unwrap_or_default(),
                Err(e) => e.to_string(),
            };
            text.contains("books are behind what this proxy signed")
        }
    })
    .await;
    net.shutdown().await;
}
