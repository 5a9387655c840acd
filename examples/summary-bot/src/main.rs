//! `cocoon-summary-bot --listen ADDR --api URL`: the example bot backend.

#![forbid(unsafe_code)]

use clap::Parser;

/// A messenger bot's backend: chat summaries and reply drafts from the Cocoon network.
#[derive(Parser)]
struct Args {
    /// Where the bot's HTTP API listens.
    #[arg(long, default_value = "127.0.0.1:8090")]
    listen: std::net::SocketAddr,
    /// The Cocoon client node's OpenAI-compatible API.
    #[arg(long, default_value = "http://127.0.0.1:8080/v1")]
    api: String,
    /// Longest answer per request, tokens.
    #[arg(long, default_value_t = 256)]
    max_tokens: u32,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    println!(
        "summary bot on http://{} (POST /summarize, POST /drafts), asking {}",
        args.listen, args.api
    );
    let bot = cocoon_summary_bot::Bot {
        api: args.api,
        max_tokens: args.max_tokens,
    };
    axum::serve(listener, cocoon_summary_bot::router(bot)).await?;
    Ok(())
}
