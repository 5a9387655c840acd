//! `cocoon root deploy`: a new root contract, owned by the wallet that
//! deploys it, with the default prices and parameters except those given.
//! Its address follows from its code, owner and prices, so deploying the
//! same twice is refused (it is there already).

use anyhow::Context;
use cocoon_chain::{contract_address, Contract, Outgoing, WalletSender, TON};

use super::{chain, confirm, read_state, show, Owner, ParamFlags, PriceFlags};

/// Attached to the deployment: the contract's storage and gas for years of
/// changes.
const DEPLOY_VALUE: u128 = TON;

pub(super) async fn run(
    api: &str,
    owner: &Owner,
    prices: &PriceFlags,
    params: &ParamFlags,
) -> anyhow::Result<()> {
    let prices = params.apply(prices.apply(cocoon_chain::pricing::default_prices())?)?;
    let chain = chain(api)?;
    let wallet = cocoon_chain::Wallet::from_mnemonic_file(&owner.mnemonic)
        .with_context(|| format!("--mnemonic {}", owner.mnemonic.display()))?;
    let code = Contract::Root.code();
    let data = prices.root_data(&wallet.address)?;
    let root = contract_address(&code, &data)?;
    let account = chain
        .account(&root)
        .await
        .with_context(|| format!("--api {api}: reading {root}"))?;
    anyhow::ensure!(
        !account.is_active(),
        "a root contract with this owner and these prices is deployed at {root} already (`cocoon root show --root {root}`)"
    );
    let funds = chain.account(&wallet.address).await?.balance;
    anyhow::ensure!(
        funds > DEPLOY_VALUE,
        "--mnemonic: the wallet {} holds {funds} nano-TON; deploying takes {DEPLOY_VALUE} and fees",
        wallet.address
    );
    println!(
        "deploy a root contract at {root}, owned by {}, code {}, prices {prices:?}",
        wallet.address,
        hex::encode(Contract::Root.committed_hash().0),
    );
    if !owner.yes && !confirm("Sign and send the deployment?")? {
        anyhow::bail!("not deployed");
    }
    let owner_address = wallet.address.clone();
    WalletSender::new(chain.clone(), wallet)
        .send(&[Outgoing {
            to: root.clone(),
            value: DEPLOY_VALUE,
            bounce: false,
            // An empty body: the contract takes its code, data and value.
            body: cocoon_chain::snake("")?,
            init: Some((code, data)),
        }])
        .await
        .context("sending the deployment from the owner's wallet")?;
    let started = std::time::Instant::now();
    loop {
        if let Ok(state) = read_state(chain.as_ref(), &root).await {
            anyhow::ensure!(
                state.owner == owner_address && state.prices == prices,
                "the contract at {root} does not read back as deployed: {}",
                show(&state)
            );
            println!("{}", serde_json::to_string_pretty(&show(&state))?);
            println!(
                "deployed: root contract {root} at version {} (give it to nodes as `root`)",
                state.lists.version
            );
            return Ok(());
        }
        anyhow::ensure!(
            started.elapsed() < std::time::Duration::from_secs(90),
            "the root contract at {root} is not active after 90 s (`cocoon root show --root {root}` tells later)"
        );
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}
