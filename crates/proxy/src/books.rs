//! The proxy's books: what each client node owes and each worker is owed, in
//! nano-TON, from verified usage receipts priced with the network's prices.
//! Amounts are cumulative, as the payment channels on chain expect: a charge
//! or a claim carries the running total, so only the latest matters.
//!
//! With a database file (redb, ACID, each record committed durably before the
//! answer's end reaches the client), a proxy that crashes or restarts
//! continues from exactly what it had recorded.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

use redb::{Database, ReadableTable, TableDefinition};

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
    db: Option<Database>,
}

/// Client fingerprint -> (total u128 BE, requests u64 BE).
const CLIENTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("clients");
/// Worker fingerprint -> (total u128 BE, requests u64 BE).
const WORKERS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("workers");

fn encode(account: &Account) -> [u8; 24] {
    let mut out = [0u8; 24];
    out[..16].copy_from_slice(&account.total.to_be_bytes());
    out[16..].copy_from_slice(&account.requests.to_be_bytes());
    out
}

fn decode(bytes: &[u8]) -> Option<Account> {
    let total = u128::from_be_bytes(bytes.get(..16)?.try_into().ok()?);
    let requests = u64::from_be_bytes(bytes.get(16..24)?.try_into().ok()?);
    Some(Account { total, requests })
}

fn load(
    db: &Database,
    table: TableDefinition<&[u8], &[u8]>,
) -> Result<HashMap<Fingerprint, Account>, Box<redb::Error>> {
    let read = db.begin_read().map_err(|e| Box::new(e.into()))?;
    let table = match read.open_table(table) {
        Ok(table) => table,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(HashMap::new()),
        Err(e) => return Err(Box::new(e.into())),
    };
    let mut out = HashMap::new();
    for row in table.iter().map_err(|e| Box::new(e.into()))? {
        let (key, value) = row.map_err(|e| Box::new(e.into()))?;
        if let (Ok(key), Some(account)) = (<[u8; 32]>::try_from(key.value()), decode(value.value()))
        {
            out.insert(Fingerprint(key), account);
        }
    }
    Ok(out)
}

#[derive(Default)]
struct Inner {
    clients: HashMap<Fingerprint, Account>,
    workers: HashMap<Fingerprint, Account>,
}

impl Books {
    /// Books in memory only (tests, the devnet).
    pub fn new(prices: Prices) -> Self {
        Self {
            prices,
            inner: Mutex::default(),
            db: None,
        }
    }

    /// Books in the database at `path` (created if missing), loaded now.
    pub fn open(path: &Path, prices: Prices) -> Result<Self, String> {
        let fail = |e: &dyn std::fmt::Display| format!("books database {}: {e}", path.display());
        let db = Database::create(path).map_err(|e| fail(&e))?;
        let clients = load(&db, CLIENTS).map_err(|e| fail(&e))?;
        let workers = load(&db, WORKERS).map_err(|e| fail(&e))?;
        Ok(Self {
            prices,
            inner: Mutex::new(Inner { clients, workers }),
            db: Some(db),
        })
    }

    fn persist(
        &self,
        client: (&Fingerprint, &Account),
        worker: (&Fingerprint, &Account),
    ) -> Result<(), Box<redb::Error>> {
        let Some(db) = &self.db else {
            return Ok(());
        };
        let boxed = |e: redb::Error| Box::new(e);
        let write = db.begin_write().map_err(|e| boxed(e.into()))?;
        {
            let mut clients = write.open_table(CLIENTS).map_err(|e| boxed(e.into()))?;
            clients
                .insert(client.0 .0.as_slice(), encode(client.1).as_slice())
                .map_err(|e| boxed(e.into()))?;
            let mut workers = write.open_table(WORKERS).map_err(|e| boxed(e.into()))?;
            workers
                .insert(worker.0 .0.as_slice(), encode(worker.1).as_slice())
                .map_err(|e| boxed(e.into()))?;
        }
        write.commit().map_err(|e| boxed(e.into()))?;
        Ok(())
    }

    pub fn prices(&self) -> &Prices {
        &self.prices
    }

    /// Record a served request: `client` owes its price, `worker` is owed its
    /// share; with a database, committed durably before this returns.
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
        let owes = *owes;
        let owed = inner.workers.entry(worker).or_default();
        owed.total = owed.total.saturating_add(charge.worker);
        owed.requests += 1;
        let owed = *owed;
        if let Err(e) = self.persist((&client, &owes), (&worker, &owed)) {
            // Still counted in memory; a restart before the next good write
            // would lose this request's record, so say so loudly.
            tracing::error!(error = %e, "could not write the books to the database");
        }
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

    /// SHA-256 over every account, sorted (clients then workers: fingerprint,
    /// total, requests): what the proxy commits on chain so that a proxy whose
    /// database was rolled back is detectable.
    pub fn hash(&self) -> [u8; 32] {
        use sha2::{Digest, Sha256};
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let mut h = Sha256::new();
        for (label, accounts) in [(b"clients", &inner.clients), (b"workers", &inner.workers)] {
            h.update(label);
            let mut sorted: Vec<_> = accounts.iter().collect();
            sorted.sort_by_key(|(k, _)| k.0);
            for (key, account) in sorted {
                h.update(key.0);
                h.update(encode(account));
            }
        }
        h.finalize().into()
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
        // The hash moves with every record.
        let before = books.hash();
        books.record(client, worker, &usage);
        assert_ne!(books.hash(), before);
    }

    #[test]
    fn books_in_a_database_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("books.redb");
        let (client, worker) = (Fingerprint([1; 32]), Fingerprint([2; 32]));
        let usage = Usage {
            prompt_tokens: 10,
            completion_tokens: 5,
            ..Usage::default()
        };
        let prices = cocoon_chain::devnet::default_prices();
        let charged = {
            let books = Books::open(&path, prices.clone()).unwrap();
            books.record(client, worker, &usage);
            books.record(client, worker, &usage);
            books.client(&client)
        };
        // Reopened (a restart): the same totals, and counting goes on from them.
        let books = Books::open(&path, prices.clone()).unwrap();
        assert_eq!(books.client(&client), charged);
        assert_eq!(books.worker(&worker).requests, 2);
        books.record(client, worker, &usage);
        assert_eq!(books.client(&client).requests, 3);
        drop(books);
        std::fs::write(dir.path().join("junk.redb"), b"not a database").unwrap();
        let err = Books::open(&dir.path().join("junk.redb"), prices)
            .err()
            .unwrap();
        assert!(err.contains("junk.redb"), "{err}");
    }
}
