//! The `cocoon` binary: parses the command line and hands off to the role crates.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use cocoon_cli::bench::{self, BenchOptions};
use cocoon_cli::engine_server::EngineBackend;
use cocoon_cli::{roles, Devnet, DevnetOptions};
use cocoon_client::ApiSettings;
use cocoon_protocol::tls::Identity;
use cocoon_worker::EngineConfig;

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
    /// Run a proxy (routes client requests to workers) from a TOML file.
    Proxy {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Run a worker (serves a model, dials out to proxies) from a TOML file.
    Worker {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Create a node key file if missing and print its fingerprint (to pin it in
    /// other nodes' configs).
    Keygen {
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Serve an engine directly as an OpenAI-compatible API, without the network.
    Engine {
        #[command(subcommand)]
        command: EngineCommand,
    },
    /// Measure the network's overhead against the engine alone, in one run.
    Bench(BenchOptions),
}

#[derive(clap::Args)]
struct DevnetArgs {
    /// Address of the OpenAI-compatible API.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Forward to this OpenAI-compatible server (e.g. http://127.0.0.1:8000/v1)
    /// instead of using the instant test engine.
    #[arg(long, value_name = "URL")]
    engine_url: Option<String>,
    /// Model name served on the network (with --engine-url: the upstream's model).
    #[arg(long, default_value = "cocoon-instant-echo")]
    model: String,
    /// Instant engine only: delay before each token, to watch streaming.
    #[arg(long, default_value_t = 0)]
    token_delay_ms: u64,
}

#[derive(Subcommand)]
enum EngineCommand {
    /// Serve the instant TEST engine (echoes words) as an OpenAI-compatible API.
    Serve {
        #[arg(long, default_value = "127.0.0.1:8000")]
        listen: SocketAddr,
        #[arg(long, default_value = "cocoon-instant-echo")]
        model: String,
        #[arg(long, default_value_t = 0)]
        token_delay_ms: u64,
    },
}

fn init_tracing() {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stderr)
        .init();
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    init_tracing();
    match Cli::parse().command {
        Command::Devnet(args) => devnet(args).await,
        Command::Client { config } => roles::client(&config).await,
        Command::Proxy { config } => roles::proxy(&config).await,
        Command::Worker { config } => roles::worker(&config).await,
        Command::Keygen { out } => {
            let identity = Identity::load_or_create(&out)?;
            println!("{}", identity.fingerprint());
            Ok(())
        }
        Command::Engine {
            command:
                EngineCommand::Serve {
                    listen,
                    model,
                    token_delay_ms,
                },
        } => {
            let engine = EngineConfig::Instant {
                model,
                max_concurrent: 1024,
                token_delay_ms,
            }
            .build()?;
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .with_context(|| format!("binding --listen {listen}"))?;
            println!("WARNING: instant TEST engine (echoes words, no model) on http://{listen}/v1");
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
        Command::Bench(options) => bench::run(options).await,
    }
}

async fn devnet(args: DevnetArgs) -> anyhow::Result<()> {
    let mut options = DevnetOptions::instant(&args.model);
    options.listen = args.listen;
    options.engine = match args.engine_url {
        Some(base_url) => EngineConfig::OpenaiHttp {
            base_url,
            model: args.model.clone(),
            upstream_model: None,
            api_key_env: None,
            max_concurrent: 16,
            connect_timeout_secs: 5,
            read_timeout_secs: 120,
        },
        None => EngineConfig::Instant {
            model: args.model.clone(),
            max_concurrent: 64,
            token_delay_ms: args.token_delay_ms,
        },
    };
    let instant = matches!(options.engine, EngineConfig::Instant { .. });
    let net = Devnet::start(options).await?;
    println!();
    println!(
        "Cocoon devnet is up: client node -> proxy {} -> worker",
        net.proxy_addr
    );
    println!("  worker engine: {}", net.worker.engine());
    if instant {
        println!("  NOTE: this is the instant TEST engine: it echoes your last message, it is not a model.");
        println!("        Point the devnet at a real OpenAI-compatible server with --engine-url URL --model NAME.");
    }
    println!("  OpenAI-compatible API: {}", net.api_url);
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
