//! `cocoon bench-engine`: the embedded engine's decode speed and time to first
//! token at several concurrent streams, beside (in the same run) llama.cpp's own
//! benchmark tools on the same file and thread count, and beside this machine's
//! memory-bandwidth bound (bandwidth / bytes of weights read per token).
//! With `--structured`, each level also runs held to a JSON Schema by
//! constrained decoding, to show what the grammar's per-token mask costs.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context;
use cocoon_inference::tiny_model::{write_model, ModelShape};
use cocoon_inference::{EmbeddedConfig, EmbeddedEngine, Engine};
use cocoon_protocol::{Event, GenerateRequest, Input, OutputFormat, SamplingParams};
use futures::StreamExt;

use cocoon_devnet::models;

#[derive(clap::Args, Debug, Clone)]
pub struct EngineBenchOptions {
    /// GGUF file to run (default: SmolLM2-135M-Instruct from the model store).
    #[arg(long, value_name = "FILE")]
    pub gguf: Option<PathBuf>,
    /// Generate a random-weight model of this layer shape instead (Q8_0 weights):
    /// `0.5b` (Qwen2.5-0.5B's shape) or `1b` (Llama-3.2-1B's shape).
    #[arg(long, conflicts_with = "gguf")]
    pub shape: Option<String>,
    /// Concurrent streams to measure, comma-separated.
    #[arg(long, default_value = "1,4,16", value_delimiter = ',')]
    pub streams: Vec<u32>,
    /// Tokens generated per stream.
    #[arg(long, default_value_t = 64)]
    pub tokens: u32,
    /// Prompt length in tokens (about).
    #[arg(long, default_value_t = 32)]
    pub prompt_tokens: u32,
    /// CPU threads (0 = every core).
    #[arg(long, default_value_t = 0)]
    pub threads: u32,
    /// Folder with llama.cpp's llama-bench and llama-batched-bench
    /// (`scripts/build-llama-bench` puts them there); skipped when absent.
    #[arg(long, default_value = "target/llama.cpp-tools/bin")]
    pub reference: PathBuf,
    /// Also measure each level with answers held to a JSON Schema (an array
    /// of at least 1,000 objects with a free-text string and an integer, so
    /// no answer ends early) and print the ratio to free decoding.
    #[arg(long)]
    pub structured: bool,
}

/// The schema of `--structured`: long enough that every stream generates
/// all its tokens.
const LONG_SCHEMA: &str = r#"{"type":"array","items":{"type":"object","properties":{"name":{"type":"string"},"n":{"type":"integer"}},"required":["name","n"],"additionalProperties":false},"minItems":1000}"#;

/// One measured level of concurrency.
struct Level {
    streams: u32,
    ttft_p50: Duration,
    per_stream_tps: f64,
    aggregate_tps: f64,
}

pub async fn run(options: EngineBenchOptions) -> anyhow::Result<()> {
    let threads = match options.threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
        n => n,
    };
    let path = model_file(&options).await?;
    let bandwidth = tokio::task::spawn_blocking(move || memory_bandwidth(threads as usize)).await?;
    let max_streams = options.streams.iter().copied().max().unwrap_or(1);
    let mut config = EmbeddedConfig::new(&path, "bench");
    config.max_sequences = max_streams;
    config.context_tokens = (options.prompt_tokens + options.tokens + 64).next_multiple_of(256);
    config.threads = threads;
    let engine = tokio::task::spawn_blocking(move || EmbeddedEngine::load(config))
        .await?
        .map_err(anyhow::Error::msg)?;
    let facts = engine.facts().clone();
    println!("model: {}", path.display());
    println!("engine: {}", engine.describe());
    println!(
        "threads: {threads}; prompt ~{} tokens; {} tokens generated per stream",
        options.prompt_tokens, options.tokens
    );
    let bound = bandwidth / facts.file_bytes as f64;
    println!(
        "memory bandwidth (read, {threads} threads): {:.1} GB/s -> bound at 1 stream: {:.1} tokens/s ({} MB of weights per token)",
        bandwidth / 1e9,
        bound,
        facts.file_bytes / 1_000_000
    );

    // Warm up: page the weights in, touch every code path once.
    measure(&engine, 1, options.prompt_tokens, 8, 0, None).await?;
    let structured = options.structured.then(|| OutputFormat::JsonSchema {
        name: "bench".into(),
        schema: LONG_SCHEMA.into(),
        strict: true,
    });
    let mut levels = Vec::new();
    let mut held = Vec::new();
    for (run, &streams) in options.streams.iter().enumerate() {
        let shape = (options.prompt_tokens, options.tokens, 2 * run + 1);
        levels.push(measure(&engine, streams, shape.0, shape.1, shape.2, None).await?);
        if let Some(format) = &structured {
            held.push(
                measure(
                    &engine,
                    streams,
                    shape.0,
                    shape.1,
                    shape.2 + 1,
                    Some(format.clone()),
                )
                .await?,
            );
        }
    }
    let reference = reference_runs(&options, &path, threads, max_streams);

    println!();
    println!("| streams | TTFT p50 ms | decode tok/s per stream | total tok/s | llama.cpp tok/s per stream | llama.cpp total tok/s | % of bound (1 stream) |");
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for level in &levels {
        let reference = reference.iter().find(|r| r.streams == level.streams);
        let fmt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1}"));
        let of_bound = if level.streams == 1 {
            format!("{:.0}%", 100.0 * level.per_stream_tps / bound)
        } else {
            "-".into()
        };
        println!(
            "| {} | {:.1} | {:.1} | {:.1} | {} | {} | {} |",
            level.streams,
            level.ttft_p50.as_secs_f64() * 1e3,
            level.per_stream_tps,
            level.aggregate_tps,
            fmt(reference.map(|r| r.per_stream_tps)),
            fmt(reference.map(|r| r.aggregate_tps)),
            of_bound
        );
    }
    if reference.is_empty() {
        println!(
            "(llama.cpp reference skipped: no tools in {}; run scripts/build-llama-bench)",
            options.reference.display()
        );
    }
    if !held.is_empty() {
        println!();
        println!("Held to a JSON Schema (llguidance, {LONG_SCHEMA}):");
        println!("| streams | free tok/s per stream | JSON tok/s per stream | free total tok/s | JSON total tok/s | JSON / free (total) |");
        println!("|---:|---:|---:|---:|---:|---:|");
        for (free, json) in levels.iter().zip(&held) {
            println!(
                "| {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.2} |",
                free.streams,
                free.per_stream_tps,
                json.per_stream_tps,
                free.aggregate_tps,
                json.aggregate_tps,
                json.aggregate_tps / free.aggregate_tps
            );
        }
    }
    Ok(())
}

async fn model_file(options: &EngineBenchOptions) -> anyhow::Result<PathBuf> {
    if let Some(path) = &options.gguf {
        return Ok(path.clone());
    }
    let Some(shape) = &options.shape else {
        let weights = tokio::task::spawn_blocking(|| models::devnet_weights(None)).await??;
        anyhow::ensure!(
            weights.real,
            "SmolLM2 could not be fetched; pass --gguf or --shape"
        );
        return Ok(weights.path);
    };
    let (shape, name) = match shape.as_str() {
        "0.5b" => (ModelShape::HALF_B, "random-0.5b-shape.Q8_0.gguf"),
        "1b" => (ModelShape::ONE_B, "random-1b-shape.Q8_0.gguf"),
        other => anyhow::bail!("--shape {other:?}: expected 0.5b or 1b"),
    };
    let dir = cocoon_inference::store::ModelStore::default_root().join("generated");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(name);
    if !path.exists() {
        eprintln!(
            "generating {} (random weights, fixed seed)...",
            path.display()
        );
        let out = path.clone();
        tokio::task::spawn_blocking(move || write_model(&out, shape, 11))
            .await?
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(path)
}

/// Start `streams` requests at once; time each one's first token and last token.
async fn measure(
    engine: &EmbeddedEngine,
    streams: u32,
    prompt_tokens: u32,
    tokens: u32,
    run: usize,
    format: Option<OutputFormat>,
) -> anyhow::Result<Level> {
    let start = Instant::now();
    let requests = (0..streams).map(|i| {
        let prompt = prompt_of(engine, run, i, prompt_tokens);
        let stream = engine.generate(GenerateRequest {
            model: "bench".into(),
            input: Input::Prompt(prompt),
            params: SamplingParams {
                max_tokens: Some(tokens),
                temperature: Some(0.0),
                ignore_eos: true,
                format: format.clone(),
                ..Default::default()
            },
        });
        timed(stream, start)
    });
    let results = futures::future::join_all(requests).await;
    let mut ttfts = Vec::new();
    let mut rates = Vec::new();
    let mut total_tokens = 0u64;
    let mut end = Duration::ZERO;
    for r in results {
        let (first, last, generated) = r?;
        ttfts.push(first);
        if generated > 1 && last > first {
            rates.push((generated - 1) as f64 / (last - first).as_secs_f64());
        }
        total_tokens += generated;
        end = end.max(last);
    }
    ttfts.sort();
    Ok(Level {
        streams,
        ttft_p50: ttfts[ttfts.len() / 2],
        per_stream_tps: rates.iter().sum::<f64>() / rates.len().max(1) as f64,
        aggregate_tps: total_tokens as f64 / end.as_secs_f64(),
    })
}

/// A prompt of `tokens` tokens in this model's tokenizer, distinct per run and
/// stream (so no stream reuses another's cached prefix), made of common words
/// that are single tokens in most vocabularies.
fn prompt_of(engine: &EmbeddedEngine, run: usize, stream: u32, tokens: u32) -> String {
    const WORDS: [&str; 8] = ["the", "of", "and", "to", "in", "is", "that", "for"];
    let mut prompt = format!("{run} {stream}");
    let mut i = 0;
    loop {
        let count = engine
            .prompt_tokens(&Input::Prompt(prompt.clone()))
            .map_or(0, |t| t.len());
        if count >= tokens as usize {
            return prompt;
        }
        prompt.push(' ');
        prompt.push_str(WORDS[i % WORDS.len()]);
        i += 1;
    }
}

/// (time to first token, time to last token, tokens generated) of one stream.
async fn timed(
    mut stream: cocoon_inference::Generation,
    start: Instant,
) -> anyhow::Result<(Duration, Duration, u64)> {
    let mut first = None;
    while let Some(event) = stream.next().await {
        match event {
            Event::Delta { .. } | Event::ToolCall(_) | Event::Reasoning { .. } => {
                first.get_or_insert_with(|| start.elapsed());
            }
            Event::Done(done) => {
                let last = start.elapsed();
                return Ok((first.unwrap_or(last), last, done.usage.completion_tokens));
            }
            Event::Error(e) => anyhow::bail!("engine error: {e}"),
            Event::Sealed { .. }
            | Event::SealedError { .. }
            | Event::WorkerKeys(_)
            | Event::Account(_)
            | Event::Voucher(_) => {
                anyhow::bail!("engines produce no sealed chunks, key lists or accounts")
            }
            Event::Models(_)
            | Event::Logprobs(_)
            | Event::Choice(_)
            | Event::Usage(_)
            | Event::Progress(_) => {}
        }
    }
    anyhow::bail!("stream ended without Done")
}

/// Read bandwidth in bytes/s: the best of several passes summing a 1 GiB buffer
/// split across `threads` threads.
fn memory_bandwidth(threads: usize) -> f64 {
    let words = (1usize << 30) / 8;
    let buffer: Vec<u64> = (0..words as u64).collect();
    let chunk = words.div_ceil(threads);
    let mut best = f64::MAX;
    for _ in 0..5 {
        let start = Instant::now();
        let sum: u64 = std::thread::scope(|s| {
            let handles: Vec<_> = buffer
                .chunks(chunk)
                .map(|part| s.spawn(move || part.iter().fold(0u64, |a, &b| a.wrapping_add(b))))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or(0))
                .fold(0, u64::wrapping_add)
        });
        std::hint::black_box(sum);
        best = best.min(start.elapsed().as_secs_f64());
    }
    (words * 8) as f64 / best
}

/// llama.cpp's own numbers for the same file and threads.
struct Reference {
    streams: u32,
    per_stream_tps: f64,
    aggregate_tps: f64,
}

fn reference_runs(
    options: &EngineBenchOptions,
    model: &Path,
    threads: u32,
    max_streams: u32,
) -> Vec<Reference> {
    let batched = options.reference.join("llama-batched-bench");
    if !batched.exists() {
        return Vec::new();
    }
    let levels: Vec<String> = options.streams.iter().map(u32::to_string).collect();
    let ctx = (options.prompt_tokens + options.tokens) * max_streams + 256;
    let output = Command::new(&batched)
        .arg("-m")
        .arg(model)
        .args(["-t", &threads.to_string(), "-tb", &threads.to_string()])
        .args(["-c", &ctx.to_string(), "-b", "512", "-ub", "512"])
        .args(["-npp", &options.prompt_tokens.to_string()])
        .args(["-ntg", &options.tokens.to_string()])
        .args(["-npl", &levels.join(",")])
        .args(["--output-format", "jsonl"])
        .output();
    let output = match output {
        Ok(o) if o.status.success() => o,
        Ok(o) => {
            eprintln!(
                "llama-batched-bench failed: {}",
                String::from_utf8_lossy(&o.stderr)
                    .lines()
                    .last()
                    .unwrap_or("")
            );
            return Vec::new();
        }
        Err(e) => {
            eprintln!("llama-batched-bench could not run: {e}");
            return Vec::new();
        }
    };
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter_map(|v| {
            // Same definitions as ours: decode rate of one stream, and generated
            // tokens per second of wall time including the prompt phase.
            let streams = v["pl"].as_u64()? as u32;
            let decode = v["speed_tg"].as_f64()?;
            let generated = (v["tg"].as_u64()? * streams as u64) as f64;
            Some(Reference {
                streams,
                per_stream_tps: decode / streams as f64,
                aggregate_tps: generated / v["t"].as_f64()?,
            })
        })
        .collect()
}
