//! `cocoon bench-gateways`: Cocoon beside the gateway app developers run
//! today (LiteLLM's proxy), both in front of the same OpenAI-compatible
//! upstream (an instant server streaming a fixed number of tokens), driven
//! by the same load generator in the same run: requests/s, latency added
//! over the upstream alone, and CPU per request of each. Cocoon's path is
//! the whole network (client node -> proxy -> worker over RA-TLS, sealed to
//! the worker, receipts signed and checked, tokens metered) with the worker's
//! `openai-http` engine calling the upstream; `scripts/bench-litellm` starts
//! the upstream and LiteLLM and runs this.

use std::time::Duration;

use anyhow::Context;
use cocoon_client::ApiSettings;
use cocoon_worker::EngineConfig;

use crate::overhead::{cpu_time, drive, PathResult};
use cocoon_devnet::{Devnet, DevnetOptions};

#[derive(Debug, Clone, clap::Args)]
pub struct GatewayBenchOptions {
    /// The upstream's OpenAI-compatible API, e.g. http://127.0.0.1:18601/v1
    /// (`cocoon engine serve`).
    #[arg(long, value_name = "URL")]
    pub upstream: String,
    /// The model the upstream serves.
    #[arg(long, default_value = "cocoon-instant-echo")]
    pub model: String,
    /// LiteLLM's proxy in front of the same upstream (its model named as `--model`).
    #[arg(long, value_name = "URL")]
    pub litellm: Option<String>,
    /// LiteLLM's process, for its CPU time.
    #[arg(long, value_name = "PID")]
    pub litellm_pid: Option<u32>,
    /// Requests per path (after a warm-up of a tenth as many).
    #[arg(long, default_value_t = 2000)]
    pub requests: usize,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Completion tokens per answer.
    #[arg(long, default_value_t = 16)]
    pub max_tokens: u32,
    /// Stream answers as SSE.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub stream: bool,
}

/// One measured path and the CPU time spent while it ran.
struct Measured {
    result: PathResult,
    cpu: Duration,
}

async fn measure(
    http: &reqwest::Client,
    url: &str,
    body: &str,
    options: &GatewayBenchOptions,
    pid: &str,
) -> anyhow::Result<Measured> {
    drive(
        http,
        url,
        body,
        (options.requests / 10).max(options.concurrency),
        options.concurrency,
    )
    .await;
    let before = cpu_time(pid)?;
    let result = drive(http, url, body, options.requests, options.concurrency).await;
    let cpu = cpu_time(pid)?.saturating_sub(before);
    Ok(Measured { result, cpu })
}

pub async fn run(options: GatewayBenchOptions) -> anyhow::Result<()> {
    let upstream = options.upstream.trim_end_matches('/').to_string();
    let capacity = (options.concurrency * 4).max(64);
    let mut devnet_options = DevnetOptions::instant(&options.model);
    devnet_options.engine = EngineConfig::OpenaiHttp {
        base_url: upstream.clone(),
        model: options.model.clone(),
        upstream_model: None,
        api_key_env: None,
        tokenizer_gguf: None,
        weights_dir: None,
        max_concurrent: capacity as u32,
        connect_timeout_secs: 5,
        read_timeout_secs: 60,
    };
    devnet_options.api = ApiSettings {
        max_concurrent_requests: capacity,
        ..ApiSettings::default()
    };
    let devnet = Devnet::start(devnet_options)
        .await
        .context("starting Cocoon (the devnet) in front of the upstream")?;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(options.concurrency * 2)
        .build()?;
    let body = serde_json::json!({
        "model": options.model,
        "messages": [{"role": "user", "content": "Summarise the last messages of this chat for me please"}],
        "max_tokens": options.max_tokens,
        "stream": options.stream,
    })
    .to_string();
    println!(
        "cocoon bench-gateways: {} requests per path, {} in flight, {} tokens per answer, {}; upstream {upstream}",
        options.requests,
        options.concurrency,
        options.max_tokens,
        if options.stream { "streamed" } else { "non-streaming" }
    );
    let me = std::process::id().to_string();
    // The load generator's own CPU per request: what this process spends
    // driving the upstream alone (subtracted from Cocoon's, which runs here).
    let reference = measure(&http, &upstream, &body, &options, &me).await?;
    let cocoon = measure(&http, &devnet.api_url, &body, &options, &me).await?;
    let litellm = match (&options.litellm, options.litellm_pid) {
        (Some(url), Some(pid)) => Some(
            measure(
                &http,
                url.trim_end_matches('/'),
                &body,
                &options,
                &pid.to_string(),
            )
            .await?,
        ),
        (Some(_), None) => anyhow::bail!("--litellm-pid: needed with --litellm (for its CPU time)"),
        _ => None,
    };
    devnet.shutdown().await;

    let n = options.requests as f64;
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let generator = ms(reference.cpu) / n;
    let cocoon_cpu = (ms(cocoon.cpu) / n - generator).max(0.0);
    println!(
        "{:<44} {:>9} {:>9} {:>9} {:>11} {:>11} {:>12} {:>7}",
        "path", "req/s", "p50 ms", "p99 ms", "added p50", "added p99", "CPU ms/req", "errors"
    );
    let row = |name: &str, m: &Measured, cpu: Option<f64>| {
        let r = &m.result;
        println!(
            "{:<44} {:>9.0} {:>9.3} {:>9.3} {:>11.3} {:>11.3} {:>12} {:>7}",
            name,
            r.rps(),
            ms(r.percentile(0.5)),
            ms(r.percentile(0.99)),
            ms(r.percentile(0.5)) - ms(reference.result.percentile(0.5)),
            ms(r.percentile(0.99)) - ms(reference.result.percentile(0.99)),
            cpu.map(|c| format!("{c:.3}")).unwrap_or_else(|| "-".into()),
            r.errors
        );
    };
    row("upstream alone (reference)", &reference, None);
    row(
        "Cocoon: client node -> proxy -> worker (TLS)",
        &cocoon,
        Some(cocoon_cpu),
    );
    if let Some(l) = &litellm {
        let litellm_cpu = ms(l.cpu) / n;
        row("LiteLLM proxy", l, Some(litellm_cpu));
        let added = |m: &Measured| {
            (ms(m.result.percentile(0.5)) - ms(reference.result.percentile(0.5))).max(0.001)
        };
        println!(
            "Cocoon vs LiteLLM: {:.1}x the requests/s, {:.1}x less added p50 latency, {:.1}x less CPU per request",
            cocoon.result.rps() / l.result.rps(),
            added(l) / added(&cocoon),
            litellm_cpu / cocoon_cpu.max(0.001)
        );
    }
    println!("(CPU: Cocoon's three nodes run in this process, minus what the load generator spends on the reference; LiteLLM's from its process; the upstream's in neither)");
    Ok(())
}
