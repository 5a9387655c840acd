//! `cocoon wallet new|address|balance|send` and the client contract's life
//! (`deploy-client`, `top-up`, `withdraw`, `close`): a TON v4r2 wallet from a
//! 24-word mnemonic (kept in a 0600 file, never printed except once by
//! `new`), read and driven through TON's HTTP API; a transfer counts as done
//! only when the wallet's seqno is seen to advance on chain.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use cocoon_chain::mnemonic::Mnemonic;
use cocoon_chain::{
    client as client_msg, Chain, ClientChannel, ClientTerms, Contract, Outgoing, ProxyState,
    StdAddr, Wallet, WalletSender,
};

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
    /// Deploy a client contract with a proxy (a payment channel), deposit
    /// into it, and print its address for `[billing] contract` in client.toml.
    DeployClient {
        #[arg(long, value_name = "FILE")]
        mnemonic: PathBuf,
        #[arg(long, value_name = "URL")]
        api: String,
        /// The proxy's contract (the proxy prints it at start).
        #[arg(long, value_name = "ADDR")]
        proxy_contract: String,
        /// The client node's key fingerprint (`sha256:...`, as `cocoon
        /// identity` prints it for the node's key file): the only node a
        /// proxy serves on this contract.
        #[arg(long, value_name = "FINGERPRINT")]
        client_key: String,
        /// TON to deposit, e.g. `10`.
        #[arg(long)]
        deposit: String,
        /// TON of the deposit to stake (default: all of it). A proxy serves
        /// between settlements only up to the stake, which cannot be
        /// withdrawn while the contract is open; at least the network's
        /// minimum client stake.
        #[arg(long)]
        stake: Option<String>,
        /// Seconds between a close request and the stake's release (a proxy
        /// refuses less than the network's client close delay).
        #[arg(long, default_value_t = 3600)]
        close_delay: u32,
    },
    /// Deposit more into a client contract.
    TopUp(ChannelAmount),
    /// Lock more of a client contract's balance as stake (owner only): the
    /// credit a proxy extends between settlements.
    Stake(ChannelAmount),
    /// Take TON above the stake back out of a client contract (owner only).
    Withdraw(ChannelAmount),
    /// Ask to close a proxy contract (its operator's wallet only). The
    /// running proxy then serves no new request, charges every client,
    /// and after the contract's close delay, once its workers have claimed,
    /// closes it and returns its balance to this wallet.
    CloseProxy {
        #[arg(long, value_name = "FILE")]
        mnemonic: PathBuf,
        #[arg(long, value_name = "URL")]
        api: String,
        /// The proxy contract (the proxy prints it at start).
        #[arg(long, value_name = "ADDR")]
        contract: String,
    },
    /// Show a client contract: balance, stake, charged, closing.
    Contract {
        #[arg(long, value_name = "URL")]
        api: String,
        #[arg(long, value_name = "ADDR")]
        contract: String,
    },
}

/// `--mnemonic`, `--api`, `--contract` and `--amount` of `top-up` and `withdraw`.
#[derive(clap::Args, Debug)]
pub struct ChannelAmount {
    #[arg(long, value_name = "FILE")]
    mnemonic: PathBuf,
    #[arg(long, value_name = "URL")]
    api: String,
    #[arg(long, value_name = "ADDR")]
    contract: String,
    /// TON, e.g. `2.5`.
    #[arg(long)]
    amount: String,
}

/// Parse `--amount` ("1.5" TON) into nano-TON exactly.
pub fn parse_ton(text: &str) -> anyhow::Result<u128> {
    cocoon_chain::pricing::parse_ton(text).map_err(|e| anyhow::anyhow!("--amount: {e}"))
}

use cocoon_chain::pricing::format_ton;

fn load(path: &Path) -> anyhow::Result<Wallet> {
    Wallet::from_mnemonic_file(path).with_context(|| format!("--mnemonic {}", path.display()))
}

fn parse_address(flag: &str, text: &str) -> anyhow::Result<StdAddr> {
    cocoon_chain::ton_http::parse_address(text).map_err(|e| anyhow::anyhow!("{flag}: {e}"))
}

fn api_client(api: &str) -> anyhow::Result<Arc<dyn Chain>> {
    let ton = cocoon_chain::ton_http::from_config(api, None)
        .map_err(|e| anyhow::anyhow!("--api: {e}"))?;
    Ok(Arc::new(ton))
}

fn sender(mnemonic: &Path, api: &str) -> anyhow::Result<WalletSender> {
    Ok(WalletSender::new(api_client(api)?, load(mnemonic)?))
}

fn amount(flag: &str, text: &str) -> anyhow::Result<u128> {
    cocoon_chain::pricing::parse_ton(text).map_err(|e| anyhow::anyhow!("{flag}: {e}"))
}

async fn channel(chain: &dyn Chain, contract: &StdAddr) -> anyhow::Result<ClientChannel> {
    ClientChannel::from_stack(
        &chain
            .get(contract, "get_client_data", &[])
            .await
            .with_context(|| format!("--contract {contract}: not a client contract on chain"))?,
    )
    .map_err(anyhow::Error::from)
}

async fn proxy_state(chain: &dyn Chain, contract: &StdAddr) -> anyhow::Result<ProxyState> {
    ProxyState::from_stack(
        &chain
            .get(contract, "get_proxy_data", &[])
            .await
            .with_context(|| format!("--contract {contract}: not a proxy contract on chain"))?,
    )
    .map_err(anyhow::Error::from)
}

/// What `top-up` and `withdraw` start from: the amount, the contract, the
/// wallet and the contract's state now.
async fn channel_command(
    args: &ChannelAmount,
) -> anyhow::Result<(u128, StdAddr, WalletSender, ClientChannel)> {
    let nano = amount("--amount", &args.amount)?;
    let contract = parse_address("--contract", &args.contract)?;
    let wallet = sender(&args.mnemonic, &args.api)?;
    let before = channel(wallet.chain().as_ref(), &contract).await?;
    Ok((nano, contract, wallet, before))
}

/// The balance above the stake of a contract `wallet` must own (what the
/// owner may withdraw or stake).
fn owners_free_balance(wallet: &WalletSender, c: &ClientChannel) -> anyhow::Result<u128> {
    anyhow::ensure!(
        &c.owner == wallet.address(),
        "--mnemonic: this wallet ({}) is not the contract's owner ({})",
        wallet.address(),
        c.owner
    );
    Ok(c.state.balance.saturating_sub(c.state.stake))
}

fn print_channel(contract: &StdAddr, c: &ClientChannel) {
    println!("client contract {contract}");
    println!("  proxy contract {}", c.proxy);
    println!("  owner          {}", c.owner);
    println!(
        "  client node    {}",
        cocoon_protocol::tls::Fingerprint(c.client_key.0)
    );
    println!(
        "  balance        {} TON (stake {} TON)",
        format_ton(c.state.balance),
        format_ton(c.state.stake)
    );
    println!("  charged        {} TON", format_ton(c.state.charged));
    if c.state.close_requested_at != 0 {
        println!(
            "  closing since  {} (Unix time)",
            c.state.close_requested_at
        );
    }
}

const TON: u128 = 1_000_000_000;

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
            let account = api_client(&api)?.account(&wallet.address).await?;
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
            let to = parse_address("--to", &to)?;
            let wallet = sender(&mnemonic, &api)?;
            let sent = wallet
                .send(&[Outgoing {
                    to: to.clone(),
                    value: nano,
                    bounce,
                    body: cocoon_chain::Cell::default(),
                    init: None,
                }])
                .await?;
            println!(
                "sent {} TON to {to} (wallet seqno {})",
                format_ton(nano),
                sent.seqno + 1
            );
        }
        WalletCommand::DeployClient {
            mnemonic,
            api,
            proxy_contract,
            client_key,
            deposit,
            stake,
            close_delay,
        } => {
            let deposit = amount("--deposit", &deposit)?;
            let stake = match &stake {
                Some(text) => amount("--stake", text)?,
                None => deposit,
            };
            anyhow::ensure!(
                stake <= deposit,
                "--stake: {} TON is more than the deposit of {} TON",
                format_ton(stake),
                format_ton(deposit)
            );
            let client_key: cocoon_protocol::tls::Fingerprint = client_key
                .parse()
                .map_err(|e| anyhow::anyhow!("--client-key: {e}"))?;
            let proxy = parse_address("--proxy-contract", &proxy_contract)?;
            let wallet = sender(&mnemonic, &api)?;
            let state = ProxyState::from_stack(
                &wallet
                    .chain()
                    .get(&proxy, "get_proxy_data", &[])
                    .await
                    .with_context(|| format!("--proxy-contract {proxy}: not a proxy contract"))?,
            )?;
            let data = ClientTerms {
                proxy: proxy.clone(),
                owner: wallet.address().clone(),
                proxy_key: state.proxy_key,
                close_delay,
                nonce: cocoon_chain::random_nonce()?,
                client_key: cocoon_chain::HashBytes(client_key.0),
            }
            .initial_data()?;
            let contract = cocoon_chain::contract_address(&Contract::Client.code(), &data)?;
            wallet
                .send(&client_msg::deposit(
                    &contract,
                    deposit,
                    stake,
                    Some((Contract::Client.code(), data)),
                )?)
                .await?;
            let c = channel(wallet.chain().as_ref(), &contract).await?;
            anyhow::ensure!(
                c.state.balance == deposit && c.state.stake == stake,
                "the contract was deployed but holds {} TON with {} TON staked, not the {} TON deposited with {} TON staked",
                format_ton(c.state.balance),
                format_ton(c.state.stake),
                format_ton(deposit),
                format_ton(stake)
            );
            println!("{contract}");
            eprintln!(
                "deployed with {} TON; put `contract = \"{contract}\"` in [billing] of client.toml",
                format_ton(deposit)
            );
        }
        WalletCommand::TopUp(args) => {
            let (nano, contract, wallet, before) = channel_command(&args).await?;
            wallet
                .send(&[Outgoing {
                    to: contract.clone(),
                    value: nano + client_msg::GAS_RESERVE,
                    bounce: true,
                    body: client_msg::top_up()?,
                    init: None,
                }])
                .await?;
            let after = channel(wallet.chain().as_ref(), &contract).await?;
            anyhow::ensure!(
                // (a charge landing meanwhile moves balance to `charged`)
                after.state.balance + after.state.charged.saturating_sub(before.state.charged)
                    >= before.state.balance + nano,
                "the top-up was refused by the contract (is it closing?)"
            );
            print_channel(&contract, &after);
        }
        WalletCommand::Stake(args) => {
            let (nano, contract, wallet, before) = channel_command(&args).await?;
            let free = owners_free_balance(&wallet, &before)?;
            anyhow::ensure!(
                nano <= free,
                "--amount: {} TON can be staked (balance {} TON, of which {} TON are staked already)",
                format_ton(free),
                format_ton(before.state.balance),
                format_ton(before.state.stake)
            );
            wallet
                .send(&[Outgoing {
                    to: contract.clone(),
                    value: client_msg::STAKE_GAS,
                    bounce: true,
                    body: client_msg::increase_stake(nano)?,
                    init: None,
                }])
                .await?;
            let after = channel(wallet.chain().as_ref(), &contract).await?;
            anyhow::ensure!(
                after.state.stake >= before.state.stake + nano,
                "the stake was refused by the contract (is it closing?)"
            );
            print_channel(&contract, &after);
        }
        WalletCommand::Withdraw(args) => {
            let (nano, contract, wallet, before) = channel_command(&args).await?;
            let free = owners_free_balance(&wallet, &before)?;
            anyhow::ensure!(
                nano <= free,
                "--amount: {} TON can be withdrawn (balance {} TON above the stake of {} TON)",
                format_ton(free),
                format_ton(before.state.balance),
                format_ton(before.state.stake)
            );
            wallet
                .send(&[Outgoing {
                    to: contract.clone(),
                    value: TON / 20,
                    bounce: true,
                    body: client_msg::withdraw(nano)?,
                    init: None,
                }])
                .await?;
            print_channel(
                &contract,
                &channel(wallet.chain().as_ref(), &contract).await?,
            );
        }
        WalletCommand::CloseProxy {
            mnemonic,
            api,
            contract,
        } => {
            let contract = parse_address("--contract", &contract)?;
            let wallet = sender(&mnemonic, &api)?;
            let state = proxy_state(wallet.chain().as_ref(), &contract).await?;
            anyhow::ensure!(
                &state.owner == wallet.address(),
                "--mnemonic: this wallet ({}) is not the proxy contract's owner ({})",
                wallet.address(),
                state.owner
            );
            anyhow::ensure!(
                state.close_requested_at == 0,
                "--contract: proxy contract {contract} is already closing (asked at {}, Unix time)",
                state.close_requested_at
            );
            wallet
                .send(&[Outgoing {
                    to: contract.clone(),
                    value: TON / 20,
                    bounce: true,
                    body: cocoon_chain::proxy::request_close()?,
                    init: None,
                }])
                .await?;
            let after = proxy_state(wallet.chain().as_ref(), &contract).await?;
            anyhow::ensure!(
                after.close_requested_at != 0,
                "the close request was refused by the proxy contract"
            );
            println!(
                "proxy contract {contract} is closing: the proxy serves no new request and charges its clients; from {} (Unix time) it closes once its workers have claimed, and its balance comes to {}",
                u64::from(after.close_requested_at) + u64::from(after.close_delay),
                wallet.address()
            );
        }
        WalletCommand::Contract { api, contract } => {
            let contract = parse_address("--contract", &contract)?;
            let chain = api_client(&api)?;
            print_channel(&contract, &channel(chain.as_ref(), &contract).await?);
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
