//! `cocoon soak`: a bounded soak run. Many concurrent streaming clients
//! through one proxy to many instant workers (at several prices) for a fixed
//! time, on the devnet with its TON chain and settlement running; then it
//! prints requests served, errors by kind, p50/p99 latency and peak memory,
//! settles, and checks the money: what the client node counted from the
//! answers' costs = what its contract was charged on chain = what the books
//! say it owes, and charged = paid to workers + the proxy's fee.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use cocoon_worker::EngineConfig;

use crate::{Devnet, DevnetOptions};

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
}

const MODEL: &str = "soak-instant";

#[derive(Default)]
struct Tally {
    latencies: Vec<Duration>,
    errors: BTreeMap<String, u64>,
    /// Sum of the answers' `cocoon.cost_nano`.
    cost: u128,
}

/// Peak resident memory of this process (all nodes run in it), KiB.
fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// One streamed request: Ok(cost) or Err(error code).
async fn one(http: &reqwest::Client, url: &str, body: &str) -> Result<u128, String> {
    let response = http
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .map_err(|_| "connection".to_string())?;
    let status = response.status();
    let text = response
        .text()
        .await
        .map_err(|_| "connection".to_string())?;
    let code = |json: &serde_json::Value| {
        json["error"]["code"]
            .as_str()
            .unwrap_or("unknown")
            .to_string()
    };
    if !status.is_success() {
        let json: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        return Err(code(&json));
    }
    let mut cost = None;
    let mut done = false;
    for data in text.lines().filter_map(|l| l.strip_prefix("data: ")) {
        if data == "[DONE]" {
            done = true;
            continue;
        }
        let chunk: serde_json::Value = serde_json::from_str(data).unwrap_or_default();
        if chunk.get("error").is_some() {
            return Err(code(&chunk));
        }
        if let Some(c) = chunk["cocoon"]["cost_nano"].as_str() {
            cost = c.parse::<u128>().ok();
        }
    }
    match (done, cost) {
        (true, Some(cost)) => Ok(cost),
        (true, None) => Err("no_cost".into()),
        _ => Err("truncated".into()),
    }
}

pub async fn run(o: SoakOptions) -> anyhow::Result<()> {
    anyhow::ensure!(o.workers >= 1, "--workers: at least 1");
    let engine = |delay| EngineConfig::Instant {
        model: MODEL.into(),
        max_concurrent: 8,
        token_delay_ms: delay,
    };
    let mut options = DevnetOptions::instant(MODEL);
    options.engine = engine(1);
    options.more_workers = (1..o.workers)
        .map(|i| (engine(1 + (i % 3) as u64), 800 + (i % 5) as u32 * 100))
        .collect();
    options.settle_every = Some(Duration::from_secs(2));
    options.api.max_concurrent_requests = o.concurrency * 2;
    let net = Devnet::start(options)
        .await
        .context("starting the devnet")?;
    let url = format!("{}/chat/completions", net.api_url);
    let body = serde_json::json!({
        "model": MODEL,
        "messages": [{"role": "user", "content": "soak test words to stream back"}],
        "max_tokens": o.max_tokens,
        "stream": true,
    })
    .to_string();
    println!(
        "cocoon soak: {} s, {} streaming clients, {} workers, {} tokens per answer, settling every 2 s",
        o.seconds, o.concurrency, o.workers, o.max_tokens
    );
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(o.concurrency * 2)
        .timeout(Duration::from_secs(60))
        .build()?;
    let tally = Arc::new(Mutex::new(Tally::default()));
    let deadline = Instant::now() + Duration::from_secs(o.seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..o.concurrency {
        let (http, url, body, tally) = (http.clone(), url.clone(), body.clone(), tally.clone());
        tasks.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                let t = Instant::now();
                let outcome = one(&http, &url, &body).await;
                let mut tally = tally.lock().unwrap_or_else(|e| e.into_inner());
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
    let elapsed = started.elapsed();
    let peak = peak_rss_kib();

    // Settle everything and compare.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let settled = net.settle_now().await?;
    let books = net
        .proxy
        .books
        .clone()
        .context("the devnet's proxy keeps books")?;
    let owed = books.client(&net.ton.client_contract).total;
    let worker_owed = books.worker(&net.ton.worker_contract).total;
    net.shutdown().await;

    let tally = tally.lock().unwrap_or_else(|e| e.into_inner());
    let mut latencies = tally.latencies.clone();
    latencies.sort();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len().max(1) - 1) as f64 * p).round() as usize)
            .map(|d| d.as_secs_f64() * 1000.0)
            .unwrap_or(0.0)
    };
    let errors: u64 = tally.errors.values().sum();
    println!(
        "served {} in {:.1} s ({:.0} req/s), p50 {:.1} ms, p99 {:.1} ms; errors {errors} {:?}",
        latencies.len(),
        elapsed.as_secs_f64(),
        latencies.len() as f64 / elapsed.as_secs_f64(),
        pct(0.5),
        pct(0.99),
        tally.errors
    );
    println!(
        "peak memory of the process (client node, proxy, {} workers, chain): {} MiB",
        o.workers,
        peak / 1024
    );
    let fee = settled.charged.saturating_sub(settled.claimed);
    println!(
        "money (nano-TON): answers' costs {}, books owe {owed}, charged on chain {}; paid to workers {} (books: {worker_owed}), proxy fee {fee}",
        tally.cost, settled.charged, settled.claimed
    );
    let mut failed = Vec::new();
    if tally.cost != settled.charged {
        failed.push("the answers' costs differ from what was charged");
    }
    if owed != settled.charged {
        failed.push("the books differ from what was charged");
    }
    if settled.claimed != worker_owed {
        failed.push("the workers were not paid what the books owe them");
    }
    if failed.is_empty() {
        println!("money checks: PASS (in = out + fee, to the nano-TON)");
        Ok(())
    } else {
        anyhow::bail!("money checks FAILED: {}", failed.join("; "))
    }
}
