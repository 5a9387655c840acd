//! `cocoon bench`: the network's own overhead. The same chat request, answered by
//! the same instant engine, is sent (1) straight to that engine served over HTTP,
//! and (2) through the full path client node -> proxy -> worker -> engine over real
//! TLS connections on loopback. Both run in one process, one after the other, with
//! the same load generator; the difference is what Cocoon adds. CPU per
//! request is this process's (from `/proc/self/stat`) while each path ran:
//! the reference's is the load generator's and the engine's, the network's
//! less that is what the three nodes spend.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use cocoon_client::ApiSettings;
use cocoon_inference::{Engine, InstantEngine};
use cocoon_worker::EngineConfig;
use tokio::net::TcpListener;

use cocoon_devnet::engine_server::EngineBackend;
use cocoon_devnet::{Devnet, DevnetOptions};

#[derive(Debug, Clone, clap::Args)]
pub struct BenchOptions {
    /// Requests per path (after a warm-up of a tenth as many).
    #[arg(long, default_value_t = 5000)]
    pub requests: usize,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Completion tokens per request.
    #[arg(long, default_value_t = 16)]
    pub max_tokens: u32,
    /// Stream answers as SSE instead of one JSON body.
    #[arg(long)]
    pub stream: bool,
}

/// Latencies of one path.
pub struct PathResult {
    pub latencies: Vec<Duration>,
    pub elapsed: Duration,
    pub errors: usize,
}

impl PathResult {
    pub fn percentile(&self, p: f64) -> Duration {
        let mut sorted = self.latencies.clone();
        sorted.sort();
        if sorted.is_empty() {
            return Duration::ZERO;
        }
        let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
        sorted[idx]
    }

    pub fn rps(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64()
    }
}

const MODEL: &str = "bench-instant";

/// CPU time (user + system) a process has used, from `/proc/PID/stat`
/// (in clock ticks of 10 ms, Linux's USER_HZ).
pub(crate) fn cpu_time(pid: &str) -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("unexpected /proc stat format")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> anyhow::Result<u64> {
        fields
            .get(i)
            .context("short /proc stat")?
            .parse::<u64>()
            .context("bad /proc stat field")
    };
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 here.
    Ok(Duration::from_millis((ticks(11)? + ticks(12)?) * 10))
}

pub async fn run(options: BenchOptions) -> anyhow::Result<()> {
    let capacity = (options.concurrency * 4).max(64);
    let engine: Arc<dyn Engine> = Arc::new(InstantEngine::new(MODEL, capacity as u32));
    let api = ApiSettings {
        max_concurrent_requests: capacity,
        ..ApiSettings::default()
    };
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let direct_url = format!("http://{}/v1", listener.local_addr()?);
    let direct_api = api.clone();
    tokio::spawn(cocoon_client::serve(
        listener,
        Arc::new(EngineBackend(engine)),
        direct_api,
        std::future::pending(),
    ));

    let mut devnet_options = DevnetOptions::instant(MODEL);
    devnet_options.engine = EngineConfig::Instant {
        model: MODEL.into(),
        max_concurrent: capacity as u32,
        token_delay_ms: 0,
    };
    devnet_options.api = api;
    let devnet = Devnet::start(devnet_options)
        .await
        .context("starting the devnet")?;

    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(options.concurrency * 2)
        .build()?;
    let body = serde_json::json!({
        "model": MODEL,
        "messages": [{"role": "user", "content": "Summarise the last messages of this chat for me please"}],
        "max_tokens": options.max_tokens,
        "stream": options.stream,
    })
    .to_string();

    println!(
        "cocoon bench: {} requests per path, concurrency {}, {} completion tokens each, {}",
        options.requests,
        options.concurrency,
        options.max_tokens,
        if options.stream {
            "streamed (SSE)"
        } else {
            "non-streaming"
        }
    );
    let warmup = (options.requests / 10).max(options.concurrency);
    drive(&http, &direct_url, &body, warmup, options.concurrency).await;
    drive(&http, &devnet.api_url, &body, warmup, options.concurrency).await;
    let cpu_before = cpu_time("self")?;
    let direct = drive(
        &http,
        &direct_url,
        &body,
        options.requests,
        options.concurrency,
    )
    .await;
    let cpu_between = cpu_time("self")?;
    let network = drive(
        &http,
        &devnet.api_url,
        &body,
        options.requests,
        options.concurrency,
    )
    .await;
    let cpu_after = cpu_time("self")?;
    let per_request = |cpu: Duration, r: &PathResult| {
        cpu.as_secs_f64() * 1000.0 / (r.latencies.len() + r.errors).max(1) as f64
    };
    let direct_cpu = per_request(cpu_between.saturating_sub(cpu_before), &direct);
    let network_cpu = per_request(cpu_after.saturating_sub(cpu_between), &network);

    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{:<34} {:>10} {:>9} {:>9} {:>11} {:>7}",
        "path", "req/s", "p50 ms", "p99 ms", "CPU ms/req", "errors"
    );
    for (name, r, cpu) in [
        ("engine over HTTP (reference)", &direct, direct_cpu),
        ("client -> proxy -> worker (TLS)", &network, network_cpu),
    ] {
        println!(
            "{:<34} {:>10.0} {:>9.3} {:>9.3} {:>11.3} {:>7}",
            name,
            r.rps(),
            ms(r.percentile(0.5)),
            ms(r.percentile(0.99)),
            cpu,
            r.errors
        );
    }
    println!(
        "the three nodes' CPU per request (network less reference): {:.3} ms",
        (network_cpu - direct_cpu).max(0.0)
    );
    println!(
        "added latency: p50 {:.3} ms, p99 {:.3} ms; throughput ratio network/reference: {:.2}",
        ms(network.percentile(0.5)) - ms(direct.percentile(0.5)),
        ms(network.percentile(0.99)) - ms(direct.percentile(0.99)),
        network.rps() / direct.rps()
    );
    devnet.shutdown().await;
    Ok(())
}

/// Send `total` requests with `concurrency` in flight; time each to its last byte.
pub async fn drive(
    http: &reqwest::Client,
    base: &str,
    body: &str,
    total: usize,
    concurrency: usize,
) -> PathResult {
    let next = Arc::new(AtomicUsize::new(0));
    let url = format!("{base}/chat/completions");
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (http, url, body, next) = (http.clone(), url.clone(), body.to_string(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0;
            while next.fetch_add(1, Ordering::Relaxed) < total {
                let t = Instant::now();
                let ok = match http
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await
                {
                    Ok(resp) => resp.status().is_success() && resp.bytes().await.is_ok(),
                    Err(_) => false,
                };
                if ok {
                    latencies.push(t.elapsed());
                } else {
                    errors += 1;
                }
            }
            (latencies, errors)
        }));
    }
    let mut result = PathResult {
        latencies: Vec::with_capacity(total),
        elapsed: Duration::ZERO,
        errors: 0,
    };
    for task in tasks {
        if let Ok((l, e)) = task.await {
            result.latencies.extend(l);
            result.errors += e;
        }
    }
    result.elapsed = started.elapsed();
    result
}
