//! `cocoon soak`: a bounded soak run. Many concurrent streaming clients
//! through one proxy to many instant workers (at several prices) for a fixed
//! time, every node its own `cocoon` process ([`ProcessNet`]) on an embedded
//! TON chain with settlement and claims running; then it prints requests
//! served, errors by kind, p50/p99 latency and each node's peak memory, lets
//! settlement finish, and checks the money to the nano-TON: what its
//! contract was charged on chain = what the proxy's books (read from its
//! database) say it owes = the answers' costs plus what the cut answers were
//! billed (each at most its worst cost), the client node's own count short
//! of the charge by no more than one running total per cut answer, and what
//! each worker was paid on chain = what the books owe it; the rest is the
//! proxy's fee. A share of the answers (`--cut-percent`) is cut: the app
//! hangs up mid-stream.

use cocoon_protocol::sync::LockRecover;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::overhead::PathResult;
use anyhow::Context;
use cocoon_devnet::kit::{cut_stream, streamed_request};
use cocoon_devnet::{ProcessNet, ProcessNetOptions};

#[derive(Debug, Clone, clap::Args)]
pub struct SoakOptions {
    /// How long to drive traffic.
    #[arg(long, default_value_t = 60)]
    pub seconds: u64,
    /// Instant workers behind the proxy.
    #[arg(long, default_value_t = 16)]
    pub workers: usize,
    /// Streaming clients at once.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Tokens per answer.
    #[arg(long, default_value_t = 16)]
    pub max_tokens: u32,
    /// Seconds between settlement rounds (proxy) and claim checks (workers).
    #[arg(long, default_value_t = 2)]
    pub settle_every: u64,
    /// Percent of the answers the app hangs up on mid-stream.
    #[arg(long, default_value_t = 10)]
    pub cut_percent: u32,
}

const MODEL: &str = "soak-instant";

#[derive(Default, Clone)]
struct Tally {
    latencies: Vec<Duration>,
    errors: BTreeMap<String, u64>,
    /// Sum of the answers' `cocoon.cost_nano`.
    cost: u128,
    /// Answers hung up on while still running.
    cut: u64,
}

pub async fn run(o: SoakOptions) -> anyhow::Result<()> {
    anyhow::ensure!(o.workers >= 1, "--workers: at least 1");
    anyhow::ensure!(o.concurrency >= 1, "--concurrency: at least 1");
    anyhow::ensure!(o.settle_every >= 1, "--settle-every: at least 1 second");
    anyhow::ensure!(o.cut_percent <= 100, "--cut-percent: at most 100");
    let binary = std::env::current_exe().context("the cocoon binary's path")?;
    let mut options = ProcessNetOptions::new(binary, MODEL);
    // Three token speeds and five prices among the workers.
    options.workers = (0..o.workers)
        .map(|i| (1 + (i % 3) as u64, 800 + (i % 5) as u32 * 100))
        .collect();
    options.worker_concurrency = 8;
    options.client_concurrency = o.concurrency * 2;
    options.settle_every_secs = o.settle_every;
    println!(
        "cocoon soak: {} s, {} streaming clients, {} worker processes, {} tokens per answer, {}% cut mid-stream, settling every {} s",
        o.seconds, o.concurrency, o.workers, o.max_tokens, o.cut_percent, o.settle_every
    );
    let net = ProcessNet::start(options)
        .await
        .context("starting the network's processes")?;
    let url = format!("{}/chat/completions", net.api_url);
    let body = serde_json::json!({
        "model": MODEL,
        "messages": [{"role": "user", "content": "soak test words to stream back"}],
        "max_tokens": o.max_tokens,
        "stream": true,
    })
    .to_string();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(o.concurrency * 2)
        .timeout(Duration::from_secs(60))
        .build()?;
    let tally = Arc::new(Mutex::new(Tally::default()));
    let deadline = Instant::now() + Duration::from_secs(o.seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for client in 0..o.concurrency {
        let (http, url, body, tally) = (http.clone(), url.clone(), body.clone(), tally.clone());
        let (cut_percent, max_tokens) = (o.cut_percent, o.max_tokens as usize);
        tasks.push(tokio::spawn(async move {
            use rand::{Rng, SeedableRng};
            let mut rng = rand::rngs::StdRng::seed_from_u64(client as u64);
            while Instant::now() < deadline {
                if rng.gen_range(0..100) < cut_percent {
                    // Hang up after the first chunk or a few more.
                    let chunks = rng.gen_range(1..=max_tokens.div_ceil(2).max(1));
                    match cut_stream(&http, &url, &body, chunks).await {
                        Ok(true) => tally.locked().cut += 1,
                        // It ended first: billed, but its cost unseen.
                        Ok(false) => tally.locked().cut += 1,
                        Err(kind) => *tally.locked().errors.entry(kind).or_default() += 1,
                    }
                    continue;
                }
                let t = Instant::now();
                let outcome = streamed_request(&http, &url, &body).await;
                let mut tally = tally.locked();
                match outcome {
                    Ok(cost) => {
                        tally.latencies.push(t.elapsed());
                        tally.cost += cost;
                    }
                    Err(kind) => *tally.errors.entry(kind).or_default() += 1,
                }
            }
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    let tally = tally.locked().clone();
    let errors: u64 = tally.errors.values().sum();
    let served = PathResult {
        latencies: tally.latencies.clone(),
        elapsed: started.elapsed(),
        errors: errors as usize,
    };
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "served {} whole and {} cut in {:.1} s ({:.0} whole req/s), p50 {:.1} ms, p99 {:.1} ms; errors {errors} {:?}",
        served.latencies.len(),
        tally.cut,
        served.elapsed.as_secs_f64(),
        served.rps(),
        ms(served.percentile(0.5)),
        ms(served.percentile(0.99)),
        tally.errors
    );
    print_memory(&net);

    // Let settlement and the workers' claims finish, then stop every
    // process and read the proxy's books from its database.
    let settled = wait_settled(&net, tally.cost, Duration::from_secs(60)).await;
    let charged = net.charged(0).await?;
    // What the client node counted, against what was charged.
    let overcharged: u128 = http
        .get(format!("{}/cocoon/balance", net.api_url))
        .send()
        .await?
        .json::<serde_json::Value>()
        .await?["overcharged_nano"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .context("the client node's balance has no overcharged_nano")?;
    let claimed = net.claims(0).await?;
    let mut net = net;
    for p in &mut net.proxies {
        p.node.kill();
    }
    let books = net.books(0)?;
    let client = net
        .client_contract(0)?
        .context("the genesis client contract")?;
    let owed = books.client(&client).total;
    let mut failed = Vec::new();
    if let Err(e) = settled {
        println!("settlement: {e}");
    }
    let mut paid = 0u128;
    let mut worker_owed = 0u128;
    for (w, claimed) in claimed.iter().enumerate() {
        let due = books.worker(&net.worker_contract(w, 0)?).total;
        if due != *claimed {
            failed.push(format!(
                "worker {w} was paid {claimed}, the books owe it {due}"
            ));
        }
        paid += claimed;
        worker_owed += due;
    }
    // A cut answer costs at most its whole budget (prompt of ~10 tokens,
    // `max_tokens` of completion) at the dearest worker's price; the client
    // node may count one running total (at most the same) short of it.
    let prices = cocoon_chain::pricing::default_prices();
    let worst_cut = prices
        .charge_at(
            cocoon_chain::pricing::TokenCounts {
                prompt: 64,
                cached_prompt: 0,
                completion: u64::from(o.max_tokens),
                reasoning: 0,
            },
            1200,
        )
        .total;
    let cut_billed = charged.saturating_sub(tally.cost);
    println!(
        "money (nano-TON): answers' costs {} + cut answers {cut_billed} ({} cut) = charged on chain {charged}, books owe {owed}; the client node counted {overcharged} short; paid to workers {paid} (books: {worker_owed}), proxy fee {}",
        tally.cost,
        tally.cut,
        charged.saturating_sub(paid)
    );
    if charged < tally.cost {
        failed.push("less was charged than the whole answers cost".into());
    }
    if cut_billed > u128::from(tally.cut) * worst_cut {
        failed.push(format!(
            "the cut answers were billed {cut_billed}, more than {} cut at most {worst_cut} each",
            tally.cut
        ));
    }
    if overcharged > u128::from(tally.cut) * worst_cut {
        failed.push(format!(
            "the client node counted {overcharged} less than was charged, more than one running total per cut answer"
        ));
    }
    if owed != charged {
        failed.push("the books differ from what was charged".into());
    }
    net.shutdown().await;
    if failed.is_empty() {
        println!("money checks: PASS (in = out + fee, to the nano-TON)");
        Ok(())
    } else {
        anyhow::bail!("money checks FAILED: {}", failed.join("; "))
    }
}

/// Each node's peak resident memory (VmHWM of its process).
fn print_memory(net: &ProcessNet) {
    let mib =
        |kib: Option<u64>| kib.map_or("?".to_string(), |k| format!("{:.1}", k as f64 / 1024.0));
    for p in &net.proxies {
        println!(
            "peak memory {}: {} MiB",
            p.node.name,
            mib(p.node.peak_rss_kib())
        );
    }
    println!("peak memory client: {} MiB", mib(net.client.peak_rss_kib()));
    let workers: Vec<u64> = net
        .workers
        .iter()
        .filter_map(|w| w.node.peak_rss_kib())
        .collect();
    println!(
        "peak memory workers ({}): max {} MiB, mean {} MiB",
        workers.len(),
        mib(workers.iter().max().copied()),
        mib(Some(
            workers.iter().sum::<u64>() / workers.len().max(1) as u64
        )),
    );
}

/// Wait until the chain shows at least the answers' costs charged, the
/// books owe exactly what was charged, and nothing has moved for a while.
async fn wait_settled(net: &ProcessNet, cost: u128, within: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    let mut last = None;
    let mut steady = 0;
    loop {
        let charged = net.charged(0).await?;
        let owed = net.owed_by_clients(0).await;
        let claimed = net.claims(0).await?;
        let snapshot = (charged, owed, claimed);
        if charged >= cost && owed == Some(charged) && last.as_ref() == Some(&snapshot) {
            steady += 1;
            if steady >= 3 {
                return Ok(());
            }
        } else {
            steady = 0;
        }
        if Instant::now() > deadline {
            anyhow::bail!(
                "not settled within {within:?}: charged {charged}, books owe {owed:?}, answers cost {cost}"
            );
        }
        last = Some(snapshot);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
