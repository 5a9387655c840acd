//! `cocoon wallet new|address|balance|send`: a TON v4r2 wallet from a 24-word
//! mnemonic (kept in a 0600 file, never printed except once by `new`), its
//! balance through TON's HTTP API, and transfers that count as done only when
//! the wallet's seqno is seen to advance on chain.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use cocoon_chain::mnemonic::Mnemonic;
use cocoon_chain::wallet::{internal_message, SEND_PAY_FEES_SEPARATELY};
use cocoon_chain::{stack_int, StdAddr, TonHttp, Wallet};

#[derive(clap::Subcommand, Debug)]
pub enum WalletCommand {
    /// Make a new wallet: write its 24 words to FILE (mode 0600) and print its address.
    New {
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Print the wallet's address.
    Address {
        #[arg(long, value_name = "FILE")]
        mnemonic: PathBuf,
    },
    /// Print the wallet's balance in TON (and nano-TON).
    Balance {
        #[arg(long, value_name = "FILE")]
        mnemonic: PathBuf,
        /// TON HTTP API, e.g. the devnet's or https://toncenter.com/api/v2.
        #[arg(long, value_name = "URL")]
        api: String,
    },
    /// Send TON to an address; waits until the transfer is on chain.
    Send {
        #[arg(long, value_name = "FILE")]
        mnemonic: PathBuf,
        #[arg(long, value_name = "URL")]
        api: String,
        /// Destination (`0:<hex>` or user-friendly form).
        #[arg(long)]
        to: String,
        /// Amount in TON, e.g. `1.5` (at most 9 decimals).
        #[arg(long)]
        amount: String,
        /// Bounce back if the destination cannot take it (off for new accounts).
        #[arg(long)]
        bounce: bool,
    },
}

/// Parse a TON amount ("1.5") into nano-TON exactly, without floats.
pub fn parse_ton(text: &str) -> anyhow::Result<u128> {
    let bad = || anyhow::anyhow!("--amount: {text:?} is not an amount of TON like 1.5");
    let (whole, frac) = text.split_once('.').unwrap_or((text, ""));
    if whole.is_empty() && frac.is_empty()
        || !whole.chars().all(|c| c.is_ascii_digit())
        || !frac.chars().all(|c| c.is_ascii_digit())
    {
        return Err(bad());
    }
    anyhow::ensure!(
        frac.len() <= 9,
        "--amount: at most 9 decimals (1 nano-TON), got {text:?}"
    );
    let whole: u128 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| bad())?
    };
    let frac: u128 = format!("{frac:0<9}").parse().map_err(|_| bad())?;
    let nano = whole
        .checked_mul(1_000_000_000)
        .and_then(|w| w.checked_add(frac))
        .ok_or_else(bad)?;
    anyhow::ensure!(nano > 0, "--amount: must be more than 0");
    Ok(nano)
}

fn format_ton(nano: u128) -> String {
    format!("{}.{:09}", nano / 1_000_000_000, nano % 1_000_000_000)
}

fn load(path: &Path) -> anyhow::Result<Wallet> {
    let text = zeroize::Zeroizing::new(
        std::fs::read_to_string(path).with_context(|| format!("--mnemonic {}", path.display()))?,
    );
    let mnemonic =
        Mnemonic::parse(&text).with_context(|| format!("--mnemonic {}", path.display()))?;
    Wallet::from_seed(&mnemonic.key_seed())
}

fn parse_address(text: &str) -> anyhow::Result<StdAddr> {
    StdAddr::from_str(text)
        .or_else(|_| {
            StdAddr::from_str_ext(text, cocoon_chain::AddressFormat::any()).map(|(a, _)| a)
        })
        .map_err(|e| anyhow::anyhow!("--to: not a TON address ({e}): {text:?}"))
}

async fn seqno(api: &TonHttp, wallet: &Wallet) -> anyhow::Result<u32> {
    if api.account(&wallet.address).await?.state != "active" {
        return Ok(0);
    }
    Ok(stack_int(&api.get(&wallet.address, "seqno", &[]).await?)? as u32)
}

pub async fn run(command: WalletCommand) -> anyhow::Result<()> {
    match command {
        WalletCommand::New { out } => {
            anyhow::ensure!(
                !out.exists(),
                "--out {} exists; not overwriting a wallet",
                out.display()
            );
            let mnemonic = Mnemonic::generate()?;
            cocoon_protocol::tls::write_secret_file(&out, mnemonic.phrase().as_bytes())
                .with_context(|| format!("--out {}", out.display()))?;
            let wallet = Wallet::from_seed(&mnemonic.key_seed())?;
            println!("{}", wallet.address);
            eprintln!(
                "24 words written to {} (mode 0600): back them up; they are the wallet.",
                out.display()
            );
        }
        WalletCommand::Address { mnemonic } => println!("{}", load(&mnemonic)?.address),
        WalletCommand::Balance { mnemonic, api } => {
            let wallet = load(&mnemonic)?;
            let account = TonHttp::new(&api, None)?.account(&wallet.address).await?;
            println!(
                "{} TON ({} nano-TON, {})",
                format_ton(account.balance),
                account.balance,
                account.state
            );
        }
        WalletCommand::Send {
            mnemonic,
            api,
            to,
            amount,
            bounce,
        } => {
            let nano = parse_ton(&amount)?;
            let to = parse_address(&to)?;
            let wallet = load(&mnemonic)?;
            let api = TonHttp::new(&api, None)?;
            let balance = api.account(&wallet.address).await?.balance;
            anyhow::ensure!(
                balance > nano,
                "the wallet holds {} TON, not enough to send {} TON and pay fees",
                format_ton(balance),
                format_ton(nano)
            );
            let seqno = seqno(&api, &wallet).await?;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_secs() as u32;
            let message = internal_message(&to, nano, bounce, cocoon_chain::Cell::default(), None)?;
            let transfer =
                wallet.transfer(seqno, now + 120, &[(SEND_PAY_FEES_SEPARATELY, message)])?;
            api.send_boc(&transfer).await?;
            // Done when the wallet's seqno moves on, not when the message was sent.
            for _ in 0..60 {
                if self::seqno(&api, &wallet).await? > seqno {
                    println!(
                        "sent {} TON to {to} (wallet seqno {})",
                        format_ton(nano),
                        seqno + 1
                    );
                    return Ok(());
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            anyhow::bail!(
                "the transfer was sent but not seen on chain within 30 s (seqno still {seqno})"
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_are_exact_nano_ton() {
        assert_eq!(parse_ton("1.5").unwrap(), 1_500_000_000);
        assert_eq!(parse_ton("0.000000001").unwrap(), 1);
        assert_eq!(parse_ton("42").unwrap(), 42_000_000_000);
        assert_eq!(parse_ton(".25").unwrap(), 250_000_000);
        for bad in ["", ".", "-1", "1e9", "1.0000000001", "abc", "0", "1,5"] {
            let err = parse_ton(bad).unwrap_err().to_string();
            assert!(err.contains("--amount"), "{bad}: {err}");
        }
        assert_eq!(format_ton(1_500_000_001), "1.500000001");
    }
}
