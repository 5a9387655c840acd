//! `cocoon bench-load`: one proxy under load. The proxy runs as its own
//! `cocoon proxy` process (so its memory is its own, read from
//! `/proc/<pid>/status`), with W instant workers and K client nodes in this
//! process, all over real TLS on loopback. C streamed requests at a time,
//! spread over the client nodes, each sealed to workers, routed by the proxy
//! and opened again. The same requests answered by the instant engine
//! directly, in this process, are the reference: the difference is what the
//! network adds. Printed per worker count: requests/s, tokens/s, p50/p99 of
//! time to first token and of the whole answer, added latency, and the
//! proxy's resident memory idle and at peak.

use std::path::Path;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use cocoon_client::{Backend, ProxyPool};
use cocoon_devnet::process_net::Node;
use cocoon_inference::{Engine, InstantEngine};
use cocoon_protocol::tls::Identity;
use cocoon_protocol::{
    ChatMessage, Event, GenerateRequest, Input, MuxOptions, Profile, ProxyEndpoint, RoutingPrefs,
    SamplingParams,
};
use cocoon_proxy::ProxyConfig;
use futures::stream::BoxStream;
use futures::StreamExt;

#[derive(clap::Args, Debug)]
pub struct LoadBenchOptions {
    /// Worker counts to measure at, comma-separated.
    #[arg(long, default_value = "10,100")]
    workers: String,
    /// Client nodes the load comes from.
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// Requests in flight at once (over all client nodes).
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Requests per worker count (after a warm-up of a tenth as many).
    #[arg(long, default_value_t = 4000)]
    requests: usize,
    /// Completion tokens per request (each a sealed streamed chunk).
    #[arg(long, default_value_t = 16)]
    max_tokens: u32,
}

const MODEL: &str = "bench-instant";

/// A request silent this long is counted as stuck (and dropped).
const STUCK: Duration = Duration::from_secs(60);

/// One run's measurements.
#[derive(Default)]
struct Run {
    ttft: Vec<Duration>,
    total: Vec<Duration>,
    tokens: u64,
    errors: usize,
    /// Errors by kind.
    kinds: std::collections::BTreeMap<String, usize>,
    elapsed: Duration,
}

impl Run {
    fn rps(&self) -> f64 {
        self.total.len() as f64 / self.elapsed.as_secs_f64()
    }
}

fn ms(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e3
}

fn request(max_tokens: u32) -> GenerateRequest {
    GenerateRequest {
        model: MODEL.into(),
        input: Input::Chat(vec![ChatMessage::new(
            "user",
            "Summarise the last messages of this chat for me please, briefly",
        )]),
        params: SamplingParams {
            max_tokens: Some(max_tokens),
            ..SamplingParams::default()
        },
    }
}

/// Run `total` requests, `concurrency` at a time, each from `start(i)`.
async fn drive(
    total: usize,
    concurrency: usize,
    start: impl Fn(usize) -> BoxStream<'static, Event> + Send + Sync + 'static,
) -> Run {
    let start = Arc::new(start);
    let next = Arc::new(AtomicUsize::new(0));
    let began = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (start, next) = (start.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut run = Run::default();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    break;
                }
                let t = Instant::now();
                let mut events = start(i);
                let mut first = None;
                let mut ok = false;
                loop {
                    let event = match tokio::time::timeout(STUCK, events.next()).await {
                        Ok(Some(event)) => event,
                        Ok(None) => break,
                        Err(_) => {
                            *run.kinds.entry("no answer within 60 s".into()).or_default() += 1;
                            break;
                        }
                    };
                    match event {
                        Event::Delta { tokens, .. } => {
                            first.get_or_insert_with(|| t.elapsed());
                            run.tokens += tokens as u64;
                        }
                        Event::Done(_) => {
                            ok = true;
                            break;
                        }
                        Event::Error(e) => {
                            *run.kinds.entry(format!("{:?}", e.kind)).or_default() += 1;
                            break;
                        }
                        // The worker's running totals.
                        Event::Progress(_) => {}
                        _ => break,
                    }
                }
                match (ok, first) {
                    (true, Some(first)) => {
                        run.ttft.push(first);
                        run.total.push(t.elapsed());
                    }
                    _ => run.errors += 1,
                }
            }
            run
        }));
    }
    let mut all = Run::default();
    for task in tasks {
        if let Ok(run) = task.await {
            all.ttft.extend(run.ttft);
            all.total.extend(run.total);
            all.tokens += run.tokens;
            all.errors += run.errors;
            for (kind, n) in run.kinds {
                *all.kinds.entry(kind).or_default() += n;
            }
        }
    }
    all.elapsed = began.elapsed();
    all.ttft.sort();
    all.total.sort();
    all
}

/// Resident memory of process `pid`, bytes.
fn rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// A `cocoon proxy` process admitting `clients` and `workers`.
fn spawn_proxy(
    dir: &Path,
    clients: &[Arc<Identity>],
    workers: &[Arc<Identity>],
) -> anyhow::Result<(Node, ProxyEndpoint, String)> {
    let key = dir.join("proxy.pem");
    let identity = Identity::load_or_create(&key)?;
    let (port, status) = (
        cocoon_devnet::process_net::free_port()?,
        cocoon_devnet::process_net::free_port()?,
    );
    let local = |port: u16| std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let prints = |ids: &[Arc<Identity>]| ids.iter().map(|i| i.fingerprint()).collect();
    let mut settings = ProxyConfig::new(local(port), key, prints(clients), prints(workers));
    // Key pins only, no TEE: a benchmark of routing, not of attestation.
    settings.profile = Profile::Development;
    settings.status_listen = Some(local(status));
    settings.queue.max_waiting = 100_000;
    // Every simulated worker and client dials from 127.0.0.1 at once.
    settings.admission.per_source_in_flight = 100_000;
    settings.admission.in_flight = 100_000;
    settings.admission.per_source_burst = 100_000.0;
    settings.admission.per_source_per_sec = 100_000.0;
    let config = dir.join("proxy.toml");
    std::fs::write(&config, settings.to_toml()?)?;
    let status_url = format!("http://127.0.0.1:{status}");
    let mut node = Node::new(
        "proxy".into(),
        "proxy",
        config,
        std::env::current_exe()?,
        status_url.clone(),
    );
    node.start()?;
    let endpoint = ProxyEndpoint {
        address: format!("127.0.0.1:{port}"),
        fingerprint: identity.fingerprint(),
    };
    Ok((node, endpoint, status_url))
}

async fn workers_connected(http: &reqwest::Client, status_url: &str) -> u64 {
    let Ok(resp) = http.get(format!("{status_url}/stats")).send().await else {
        return 0;
    };
    let stats: serde_json::Value = resp.json().await.unwrap_or_default();
    stats["workers_connected"].as_u64().unwrap_or(0)
}

pub async fn run(options: LoadBenchOptions) -> anyhow::Result<()> {
    let counts: Vec<usize> = options
        .workers
        .split(',')
        .map(|n| n.trim().parse::<usize>())
        .collect::<Result<_, _>>()
        .map_err(|e| anyhow::anyhow!("--workers: expected counts like 10,100: {e}"))?;
    if counts.contains(&0) || options.clients == 0 || options.concurrency == 0 {
        anyhow::bail!("--workers, --clients and --concurrency must be at least 1");
    }
    println!(
        "cocoon bench-load: {} streamed requests of {} tokens per worker count, {} in flight from {} client nodes; the proxy is its own process",
        options.requests, options.max_tokens, options.concurrency, options.clients
    );
    println!(
        "{:>7} {:>8} {:>9} {:>15} {:>15} {:>17} {:>16} {:>6}",
        "workers",
        "req/s",
        "tokens/s",
        "ttft p50/p99 ms",
        "total p50/p99",
        "added p50/p99 ms",
        "proxy RSS MiB",
        "errors"
    );
    // The reference: the same engine, directly in this process.
    let engine: Arc<dyn Engine> = Arc::new(InstantEngine::new(MODEL, 1_000_000));
    let direct = {
        let engine = engine.clone();
        let max_tokens = options.max_tokens;
        drive(options.requests, options.concurrency, move |_| {
            engine.generate(request(max_tokens)).boxed()
        })
        .await
    };
    println!(
        "{:>7} {:>8.0} {:>9.0} {:>15} {:>15} {:>17} {:>16} {:>6}",
        "direct",
        direct.rps(),
        direct.tokens as f64 / direct.elapsed.as_secs_f64(),
        format!(
            "{:.2} / {:.2}",
            ms(&direct.ttft, 0.5),
            ms(&direct.ttft, 0.99)
        ),
        format!(
            "{:.2} / {:.2}",
            ms(&direct.total, 0.5),
            ms(&direct.total, 0.99)
        ),
        "(reference)",
        "-",
        direct.errors
    );
    for count in counts {
        one(&options, count, &direct).await?;
    }
    println!(
        "(routing decision time at 10 / 1,000 / 10,000 registered workers: `cocoon bench-routing`)"
    );
    Ok(())
}

/// Measure with `count` workers.
async fn one(options: &LoadBenchOptions, count: usize, direct: &Run) -> anyhow::Result<()> {
    let dir = tempdir()?;
    let clients: Vec<Arc<Identity>> = (0..options.clients)
        .map(|_| Identity::generate().map(Arc::new))
        .collect::<Result<_, _>>()?;
    let worker_ids: Vec<Arc<Identity>> = (0..count)
        .map(|_| Identity::generate().map(Arc::new))
        .collect::<Result<_, _>>()?;
    let (proxy, endpoint, status_url) = spawn_proxy(&dir.0, &clients, &worker_ids)?;
    let mux = MuxOptions::default();
    // Enough capacity in all that the load never waits for a slot.
    let per_worker = (options.concurrency * 2 / count).max(2) as u32;
    let mut workers = Vec::new();
    for id in worker_ids {
        workers.push(
            cocoon_devnet::unpaid::worker(
                id,
                vec![endpoint.clone()],
                Arc::new(InstantEngine::new(MODEL, per_worker)),
                mux.clone(),
            )
            .await?,
        );
    }
    let pools: Vec<Arc<ProxyPool>> = clients
        .iter()
        .map(|id| {
            ProxyPool::start(
                id.clone(),
                std::slice::from_ref(&endpoint),
                mux.clone(),
                None,
                None,
            )
            .map(Arc::new)
        })
        .collect::<Result<_, _>>()?;
    let http = reqwest::Client::new();
    let began = Instant::now();
    loop {
        let connected = workers_connected(&http, &status_url).await as usize;
        if connected == count && pools.iter().all(|p| p.connected() == 1) {
            break;
        }
        anyhow::ensure!(
            began.elapsed() < Duration::from_secs(120),
            "only {connected} of {count} workers connected within 120 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let pid = proxy.pid().context("the proxy process")?;
    let max_tokens = options.max_tokens;
    let start = {
        let pools = pools.clone();
        move |i: usize| -> BoxStream<'static, Event> {
            pools[i % pools.len()].generate(request(max_tokens), RoutingPrefs::default())
        }
    };
    // Warm-up (TLS sessions, key directories, allocator), then the idle mark.
    drive(
        (options.requests / 10).max(options.concurrency),
        options.concurrency,
        start.clone(),
    )
    .await;
    let idle = rss(pid).unwrap_or(0);
    let peak = Arc::new(AtomicU64::new(idle));
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (peak, sampling) = (peak.clone(), sampling.clone());
        tokio::spawn(async move {
            while sampling.load(Ordering::Relaxed) {
                if let Some(now) = rss(pid) {
                    peak.fetch_max(now, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let run = drive(options.requests, options.concurrency, start).await;
    sampling.store(false, Ordering::Relaxed);
    let _ = sampler.await;
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    println!(
        "{:>7} {:>8.0} {:>9.0} {:>15} {:>15} {:>17} {:>16} {:>6}",
        count,
        run.rps(),
        run.tokens as f64 / run.elapsed.as_secs_f64(),
        format!("{:.2} / {:.2}", ms(&run.ttft, 0.5), ms(&run.ttft, 0.99)),
        format!("{:.2} / {:.2}", ms(&run.total, 0.5), ms(&run.total, 0.99)),
        format!(
            "{:.2} / {:.2}",
            ms(&run.total, 0.5) - ms(&direct.total, 0.5),
            ms(&run.total, 0.99) - ms(&direct.total, 0.99)
        ),
        format!(
            "{:.0} idle, {:.0} peak",
            mib(idle),
            mib(peak.load(Ordering::Relaxed))
        ),
        run.errors
    );
    if !run.kinds.is_empty() {
        println!("        errors by kind: {:?}", run.kinds);
    }
    for pool in &pools {
        pool.stop();
    }
    for worker in workers {
        worker.stop().await;
    }
    drop(proxy);
    Ok(())
}

/// A scratch directory removed on drop.
struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tempdir() -> anyhow::Result<TempDir> {
    let dir = std::env::temp_dir().join(format!(
        "cocoon-bench-load-{}-{:x}",
        std::process::id(),
        rand_suffix()
    ));
    std::fs::create_dir_all(&dir)?;
    Ok(TempDir(dir))
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}
