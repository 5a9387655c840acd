//! The proxy's books: what each client node owes and each worker is owed, in
//! nano-TON, from verified usage receipts priced with the network's prices.
//! Amounts are cumulative, as the payment channels on chain expect: a charge
//! or a claim carries the running total, so only the latest matters.
//! (Kept in memory here; persistence comes with settlement on a real chain.)

use std::collections::HashMap;
use std::sync::Mutex;

use cocoon_chain::pricing::{Charge, TokenCounts};
use cocoon_chain::Prices;
use cocoon_protocol::tls::Fingerprint;
use cocoon_protocol::Usage;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Account {
    /// Cumulative amount, nano-TON.
    pub total: u128,
    pub requests: u64,
}

pub struct Books {
    prices: Prices,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    clients: HashMap<Fingerprint, Account>,
    workers: HashMap<Fingerprint, Account>,
}

impl Books {
    pub fn new(prices: Prices) -> Self {
        Self {
            prices,
            inner: Mutex::default(),
        }
    }

    pub fn prices(&self) -> &Prices {
        &self.prices
    }

    /// Record a served request: `client` owes its price, `worker` is owed its share.
    pub fn record(&self, client: Fingerprint, worker: Fingerprint, usage: &Usage) -> Charge {
        let charge = self.prices.charge(TokenCounts {
            prompt: usage.prompt_tokens,
            cached_prompt: usage.cached_prompt_tokens,
            completion: usage.completion_tokens,
            reasoning: usage.reasoning_tokens,
        });
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let owes = inner.clients.entry(client).or_default();
        owes.total = owes.total.saturating_add(charge.total);
        owes.requests += 1;
        let owed = inner.workers.entry(worker).or_default();
        owed.total = owed.total.saturating_add(charge.worker);
        owed.requests += 1;
        charge
    }

    /// What `client` owes in all.
    pub fn client(&self, client: &Fingerprint) -> Account {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.clients.get(client).copied().unwrap_or_default()
    }

    /// What `worker` is owed in all.
    pub fn worker(&self, worker: &Fingerprint) -> Account {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.workers.get(worker).copied().unwrap_or_default()
    }

    /// Every client's cumulative total.
    pub fn clients(&self) -> Vec<(Fingerprint, Account)> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.clients.iter().map(|(k, v)| (*k, *v)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_owe_and_workers_are_owed_cumulatively() {
        let books = Books::new(cocoon_chain::devnet::default_prices());
        let (client, worker) = (Fingerprint([1; 32]), Fingerprint([2; 32]));
        let usage = Usage {
            prompt_tokens: 100,
            completion_tokens: 10,
            cached_prompt_tokens: 40,
            reasoning_tokens: 0,
        };
        let first = books.record(client, worker, &usage);
        let second = books.record(client, worker, &usage);
        assert_eq!(first, second);
        assert_eq!(books.client(&client).total, 2 * first.total);
        assert_eq!(books.client(&client).requests, 2);
        assert_eq!(books.worker(&worker).total, 2 * first.worker);
        assert_eq!(books.client(&worker), Account::default());
    }
}
