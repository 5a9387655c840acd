//! `cocoon key-manager`: run a key manager from its config file, and write
//! an owner's authorization for a node's key (docs/key-manager.md).

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use cocoon_attestation::PeerRole;
use cocoon_key_manager::authorization::PURPOSES;
use cocoon_key_manager::Authorization;

#[derive(Subcommand)]
pub enum KeyManagerCommand {
    /// Run a key manager from a TOML file (listen, bootstrap or
    /// replicate_from, [attestation]).
    Serve {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Sign, with the owner's TON wallet key, an authorization naming the
    /// key a worker or proxy may be given; writes it as JSON.
    Authorize(AuthorizeArgs),
}

#[derive(Clone, Copy, ValueEnum)]
pub enum NodeRole {
    Worker,
    Proxy,
}

#[derive(Args)]
pub struct AuthorizeArgs {
    /// The owner's wallet mnemonic (24 words).
    #[arg(long, value_name = "FILE")]
    pub mnemonic: PathBuf,
    #[arg(long, value_enum)]
    pub role: NodeRole,
    /// The key's name (the owner's choice, e.g. `eu-1`).
    #[arg(long)]
    pub name: String,
    /// `identity` (the node's key) or `payout`.
    #[arg(long, default_value = "identity")]
    pub purpose: String,
    /// Valid for this many days.
    #[arg(long, default_value_t = 365)]
    pub days: u64,
    /// Where to write it (it is not a secret).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
}

pub async fn run(command: KeyManagerCommand) -> anyhow::Result<()> {
    match command {
        KeyManagerCommand::Serve { config } => {
            let text = std::fs::read_to_string(&config)
                .with_context(|| format!("reading config file {}", config.display()))?;
            let parsed = cocoon_key_manager::config::KeyManagerConfig::from_toml(&text)
                .with_context(|| format!("in {}", config.display()))?;
            let running = cocoon_key_manager::config::start(parsed)
                .await
                .with_context(|| format!("in {}", config.display()))?;
            println!(
                "key manager listening on {}; its key (new at every start): {}",
                running.address, running.fingerprint
            );
            tokio::select! {
                result = running.wait() => result?,
                _ = tokio::signal::ctrl_c() => {}
            }
            Ok(())
        }
        KeyManagerCommand::Authorize(args) => authorize(&args),
    }
}

fn authorize(args: &AuthorizeArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        PURPOSES.contains(&args.purpose.as_str()),
        "--purpose: {:?} is not one of {}",
        args.purpose,
        PURPOSES.join(", ")
    );
    anyhow::ensure!(
        !args.name.is_empty() && args.name.len() <= 128,
        "--name: 1 to 128 bytes"
    );
    anyhow::ensure!((1..=3650).contains(&args.days), "--days: 1 to 3650");
    let text = std::fs::read_to_string(&args.mnemonic)
        .with_context(|| format!("--mnemonic {}", args.mnemonic.display()))?;
    let mnemonic = cocoon_chain::mnemonic::Mnemonic::parse(&text)
        .map_err(|e| anyhow::anyhow!("--mnemonic {}: {e}", args.mnemonic.display()))?;
    let owner = ed25519_dalek::SigningKey::from_bytes(&mnemonic.key_seed());
    let role = match args.role {
        NodeRole::Worker => PeerRole::Worker,
        NodeRole::Proxy => PeerRole::Proxy,
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let authorization = Authorization::sign(
        &owner,
        role,
        &args.purpose,
        &args.name,
        now + args.days * 86_400,
    );
    std::fs::write(&args.out, serde_json::to_vec_pretty(&authorization)?)
        .with_context(|| format!("--out {}", args.out.display()))?;
    println!(
        "authorization for the {} key {:?} ({}) written to {}",
        role,
        args.name,
        args.purpose,
        args.out.display()
    );
    Ok(())
}
