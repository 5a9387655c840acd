//! `cocoon bench-routing`: the cost of the proxy's routing decisions with 10,
//! 1,000 and 10,000 registered workers of one model (prices spread over
//! 500-2000): listing the short list a client node seals to (`WorkerKeys`:
//! by price through the price index, by load in one linear pass) and picking
//! the worker for a sealed request (`pick`: it looks the two candidates up). Every worker
//! shares one in-memory connection; nothing crosses a network.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cocoon_protocol::{
    length_codec, Announce, Connection, Event, Handler, Hello, ModelOffer, MuxOptions, RequestBody,
    Role, RoutingPrefs, Sort, WorkerKey, DEFAULT_MAX_FRAME_BYTES,
};
use cocoon_proxy::Registry;
use futures::stream::{self, BoxStream, StreamExt};
use tokio_util::codec::Framed;

#[derive(clap::Args, Debug)]
pub struct RoutingBenchOptions {
    /// Registered worker counts to measure at, comma-separated.
    #[arg(long, default_value = "10,1000,10000")]
    workers: String,
    /// Decisions timed per count.
    #[arg(long, default_value_t = 2000)]
    iterations: usize,
}

struct Idle;
impl Handler for Idle {
    fn serve(&self, _: &Connection, _: RequestBody) -> BoxStream<'static, Event> {
        stream::empty().boxed()
    }
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e6
}

fn fake_key(i: u64) -> WorkerKey {
    let mut identity = vec![0u8; 44];
    identity[..8].copy_from_slice(&i.to_be_bytes());
    WorkerKey {
        identity,
        sealing_key: [7; 32],
        evidence: None,
        configuration: None,
        anchor: None,
        gpus: Vec::new(),
    }
}

pub async fn run(options: RoutingBenchOptions) -> anyhow::Result<()> {
    let counts: Vec<u64> = options
        .workers
        .split(',')
        .map(|n| n.trim().parse())
        .collect::<Result<_, _>>()
        .map_err(|e| anyhow::anyhow!("--workers: {e}"))?;
    anyhow::ensure!(options.iterations > 0, "--iterations: must be more than 0");
    let (ours, _theirs) = tokio::io::duplex(1 << 16);
    let conn = Connection::spawn(
        Framed::new(ours, length_codec(DEFAULT_MAX_FRAME_BYTES)),
        Hello {
            role: Role::Worker,
            software: "bench".into(),
        },
        None,
        Arc::new(Idle),
        MuxOptions::default(),
    );
    println!(
        "routing decisions in µs, {} each, one model:",
        options.iterations
    );
    println!(
        "{:>8}  {:>14}  {:>14}  {:>14}  {:>14}  {:>12}  {:>12}",
        "workers",
        "price list p50",
        "price list p99",
        "load list p50",
        "load list p99",
        "pick p50",
        "pick p99"
    );
    for n in counts {
        let registry = Registry::new(["m".to_string()]);
        for i in 0..n {
            let key = fake_key(i);
            let announce = Announce {
                models: vec![ModelOffer {
                    context_length: None,
                    quantization: None,
                    features: Default::default(),
                    name: "m".into(),
                    max_concurrent: 8,
                    weights_sha256: None,
                    price_coefficient: 500 + (i * 7919 % 1500) as u32,
                }],
                key: Some(key.clone()),
                payout: None,
                vouched: None,
            };
            registry.announce(i, &conn, &announce, key, None);
        }
        let prefs = RoutingPrefs {
            max_coefficient: Some(1500),
            sort: Sort::Price,
            ..Default::default()
        };
        let by_load = RoutingPrefs {
            max_coefficient: Some(1500),
            sort: Sort::Throughput,
            ..Default::default()
        };
        let mut load_times = Vec::with_capacity(options.iterations);
        let mut list_times = Vec::with_capacity(options.iterations);
        let mut pick_times = Vec::with_capacity(options.iterations);
        for _ in 0..options.iterations {
            let start = Instant::now();
            let listed = registry
                .keys("m", &prefs)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            list_times.push(start.elapsed());
            let start = Instant::now();
            registry
                .keys("m", &by_load)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            load_times.push(start.elapsed());
            let candidates = [
                listed[0].key.worker(),
                listed[listed.len() - 1].key.worker(),
            ];
            let start = Instant::now();
            let picked = registry
                .pick("m", &candidates, Sort::Price)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            pick_times.push(start.elapsed());
            drop(picked);
        }
        list_times.sort();
        load_times.sort();
        pick_times.sort();
        println!(
            "{:>8}  {:>14.1}  {:>14.1}  {:>14.1}  {:>14.1}  {:>12.2}  {:>12.2}",
            n,
            percentile(&list_times, 0.5),
            percentile(&list_times, 0.99),
            percentile(&load_times, 0.5),
            percentile(&load_times, 0.99),
            percentile(&pick_times, 0.5),
            percentile(&pick_times, 0.99)
        );
    }
    Ok(())
}
