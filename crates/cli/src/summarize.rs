//! `cocoon summarize`: a Telegram chat export summarised (and reply drafts
//! written) by the network through a client node's API, with a progress bar
//! over the chunks and the total cost in TON.

use std::path::PathBuf;

use anyhow::Context;
use cocoon_messenger::chat_export;
use cocoon_messenger::summarize::{self, Selection, Summarizer};
use indicatif::{ProgressBar, ProgressStyle};

/// `cocoon summarize EXPORT.json ...`
#[derive(Debug, clap::Args)]
pub struct SummarizeArgs {
    /// Telegram Desktop's export of one chat: `result.json` (machine-readable JSON).
    pub export: PathBuf,
    /// Only the last N messages.
    #[arg(long, value_name = "N", conflicts_with = "since")]
    pub last: Option<usize>,
    /// Only messages at or after DATE (`YYYY-MM-DD` or `YYYY-MM-DDTHH:MM:SS`).
    #[arg(long, value_name = "DATE")]
    pub since: Option<String>,
    /// Reply drafts to write to the last message addressed to you (default
    /// 3 when the export tells who you are; 0 for none).
    #[arg(long, value_name = "K", value_parser = clap::value_parser!(u32).range(0..=10))]
    pub drafts: Option<u32>,
    /// Your name in the chat (found by itself in a personal chat).
    #[arg(long, value_name = "NAME")]
    pub me: Option<String>,
    /// The client node's OpenAI-compatible API.
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:8080/v1")]
    pub api: String,
    /// Environment variable holding the node's API key, if it wants one.
    #[arg(long, value_name = "VAR")]
    pub api_key_env: Option<String>,
    /// Model (default: the first the network lists).
    #[arg(long)]
    pub model: Option<String>,
    /// Longest answer per request, tokens.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(16..=4096))]
    pub max_tokens: u32,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(args: SummarizeArgs) -> anyhow::Result<()> {
    let bytes = std::fs::read(&args.export)
        .with_context(|| format!("reading {}", args.export.display()))?;
    let chat = chat_export::parse(&bytes)
        .map_err(|e| anyhow::anyhow!("{}: {e}", args.export.display()))?;
    let selection = match (&args.last, &args.since) {
        (Some(0), _) => anyhow::bail!("--last: must be at least 1"),
        (Some(n), _) => Selection::Last(*n),
        (None, Some(date)) => {
            Selection::since(date).map_err(|e| anyhow::anyhow!("--since: {e}"))?
        }
        (None, None) => Selection::All,
    };
    let drafts_wanted = args.drafts.unwrap_or(3) as usize;
    let me = match (&args.me, drafts_wanted) {
        (_, 0) => None,
        (Some(me), _) => Some(me.clone()),
        (None, _) => match summarize::me_in_personal_chat(&chat) {
            Some(me) => Some(me),
            // Asked for: an error; by default: said, and left out.
            None if args.drafts.is_some() => anyhow::bail!(
                "--drafts: name yourself with --me NAME (only a personal chat tells who you are)"
            ),
            None => {
                eprintln!("no reply drafts: this is not a personal chat, name yourself with --me NAME to get them");
                None
            }
        },
    };
    let api_key = match &args.api_key_env {
        Some(var) => {
            Some(std::env::var(var).with_context(|| format!("--api-key-env: {var} is not set"))?)
        }
        None => None,
    };
    let mut summarizer = Summarizer::connect(&args.api, args.model.as_deref(), api_key).await?;
    summarizer.max_tokens = args.max_tokens;
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} chunks")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    bar.set_message(format!("summarizing with {}", summarizer.model));
    let summary = summarizer
        .summarize(&chat, &selection, |done, total| {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        })
        .await?;
    bar.finish_and_clear();
    let drafts = match &me {
        Some(me) => Some(summarizer.drafts(&chat, me, drafts_wanted).await?),
        None => None,
    };
    let spent = &summarizer.spent;
    if args.json {
        let out = serde_json::json!({
            "chat": chat.name,
            "model": summarizer.model,
            "summary": summary,
            "drafts": drafts,
            "spent": {
                "requests": spent.requests,
                "prompt_tokens": spent.prompt_tokens,
                "completion_tokens": spent.completion_tokens,
                "cost_nano": spent.cost_nano.map(|c| c.to_string()),
            },
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!("{}\n", summary.text);
    if let Some(d) = &drafts {
        println!("Reply drafts to {} (message {}):", d.from, d.reply_to);
        for (i, draft) in d.drafts.iter().enumerate() {
            println!("  {}. {draft}", i + 1);
        }
        println!();
    }
    let cost = match spent.cost_nano {
        Some(nano) => format!("{} TON", cocoon_chain::pricing::format_ton(nano)),
        None => "not billed (this client node does not pay on TON)".into(),
    };
    println!(
        "{} messages in {} chunks ({} levels); {} requests, {} prompt + {} completion tokens; cost {cost}",
        summary.messages,
        summary.chunks,
        summary.levels,
        spent.requests,
        spent.prompt_tokens,
        spent.completion_tokens
    );
    Ok(())
}
