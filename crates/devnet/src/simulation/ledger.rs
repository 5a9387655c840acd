//! The simulation's own account of the money, kept beside the system under
//! test: what each client received through each proxy (priced as it was
//! delivered) and what each worker earned from it. The invariants compare
//! the chain with it, to the nano-TON.

use std::collections::BTreeMap;

use cocoon_chain::pricing::{Charge, TokenCounts};
use cocoon_chain::Prices;

#[derive(Debug, Default)]
pub struct Ledger {
    /// (client, proxy) -> the price of everything delivered, nano-TON.
    pub received: BTreeMap<(usize, usize), u128>,
    /// (worker, proxy) -> the workers' share of it.
    pub earned: BTreeMap<(usize, usize), u128>,
}

impl Ledger {
    /// `tokens` delivered to `client` through `proxy` by `worker` at its
    /// `coefficient`.
    pub fn deliver(
        &mut self,
        prices: &Prices,
        (client, proxy, worker): (usize, usize, usize),
        tokens: TokenCounts,
        coefficient: u32,
    ) -> Charge {
        let charge = prices.charge_at(tokens, coefficient);
        *self.received.entry((client, proxy)).or_default() += charge.total;
        *self.earned.entry((worker, proxy)).or_default() += charge.worker;
        charge
    }

    pub fn received(&self, client: usize, proxy: usize) -> u128 {
        self.received.get(&(client, proxy)).copied().unwrap_or(0)
    }

    pub fn earned(&self, worker: usize, proxy: usize) -> u128 {
        self.earned.get(&(worker, proxy)).copied().unwrap_or(0)
    }
}
