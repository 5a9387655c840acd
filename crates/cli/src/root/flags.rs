//! The flags of `set-prices`, `set-params` and `deploy`: each optional,
//! applied over the values the root contract holds (or the defaults).

use cocoon_chain::Prices;

/// `set-prices`' flags, each optional.
#[derive(clap::Args, Debug)]
pub struct PriceFlags {
    /// Base price of one token, nano-TON.
    #[arg(long)]
    price_per_token: Option<u128>,
    /// The worker's share of a charge, in 1/10000 (at most 10000).
    #[arg(long)]
    worker_share_bps: Option<u16>,
    /// Multiplier for prompt tokens, in 1/10000 (10000 = 1x).
    #[arg(long)]
    prompt_bps: Option<u16>,
    #[arg(long)]
    cached_prompt_bps: Option<u16>,
    #[arg(long)]
    completion_bps: Option<u16>,
    #[arg(long)]
    reasoning_bps: Option<u16>,
}

/// `set-params`' flags, each optional: the network's stakes and delays.
#[derive(clap::Args, Debug)]
pub struct ParamFlags {
    /// The least a client contract holds to be served, nano-TON.
    #[arg(long)]
    min_client_stake: Option<u128>,
    /// The least a proxy contract stakes, nano-TON.
    #[arg(long)]
    min_proxy_stake: Option<u128>,
    /// Seconds between a client's close request and its refund (at least 60).
    #[arg(long)]
    client_close_delay: Option<u32>,
    /// Seconds between a proxy's close request and its stake's return (at least 60).
    #[arg(long)]
    proxy_close_delay: Option<u32>,
}

macro_rules! set {
    ($flags:ident, $prices:ident, $($field:ident),*) => { $( if let Some(v) = $flags.$field { $prices.$field = v; } )* };
}

impl PriceFlags {
    pub(super) fn apply(&self, mut prices: Prices) -> anyhow::Result<Prices> {
        set!(
            self,
            prices,
            price_per_token,
            worker_share_bps,
            prompt_bps,
            cached_prompt_bps,
            completion_bps,
            reasoning_bps
        );
        anyhow::ensure!(
            prices.worker_share_bps <= 10_000,
            "--worker-share-bps: at most 10000 (100%), got {}",
            prices.worker_share_bps
        );
        Ok(prices)
    }
}

impl ParamFlags {
    pub(super) fn apply(&self, mut prices: Prices) -> anyhow::Result<Prices> {
        set!(
            self,
            prices,
            min_client_stake,
            min_proxy_stake,
            client_close_delay,
            proxy_close_delay
        );
        // A close delay is the other side's time to settle what it is owed:
        // a minute at the very least.
        for (flag, delay) in [
            ("--client-close-delay", self.client_close_delay),
            ("--proxy-close-delay", self.proxy_close_delay),
        ] {
            if let Some(delay) = delay {
                anyhow::ensure!(delay >= 60, "{flag}: at least 60 seconds, got {delay}");
            }
        }
        Ok(prices)
    }
}
