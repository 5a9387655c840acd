//! The proxy's books: what each client contract owes and each worker
//! contract is owed, in nano-TON, from verified usage receipts priced with
//! the network's prices (the root contract's, reloaded when they change).
//! Accounts are the contracts on chain that settle them, so two worker
//! identities paid to one wallet share one account, as on chain. Amounts are
//! cumulative, as the payment channels expect: a charge or a claim carries
//! the running total, so only the latest matters.
//!
//! With a database file (redb, ACID, each record committed durably before the
//! answer's end reaches the client), a proxy that crashes or restarts
//! continues from exactly what it had recorded. The books also keep the
//! commits of their hash to chain (the one about to be sent, and the last
//! one confirmed), so that a proxy restored from an old database sees that
//! the chain holds a later commit than its books know (see
//! `Settlement::connect`).

use cocoon_protocol::sync::LockRecover;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

use redb::{Database, ReadableTable, TableDefinition};

use cocoon_chain::pricing::{Charge, TokenCounts};
use cocoon_chain::{HashBytes, Prices, StdAddr};
use cocoon_protocol::Usage;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Account {
    /// Cumulative amount, nano-TON.
    pub total: u128,
    pub requests: u64,
}

pub struct Books {
    prices: Mutex<Prices>,
    inner: Mutex<Inner>,
    db: Option<Database>,
}

/// Client contract (basechain address, 32 bytes) -> (total u128 BE, requests u64 BE).
const CLIENTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("clients");
/// Worker contract (basechain address) -> (total u128 BE, requests u64 BE).
const WORKERS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("workers");
/// `pending` and `committed`: a books commit as (seqno, hash).
const COMMITS: TableDefinition<&str, &[u8]> = TableDefinition::new("commits");

/// One commit of the books' hash to the proxy contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Commit {
    pub seqno: u64,
    pub hash: [u8; 32],
}

impl Commit {
    fn encode(&self) -> [u8; 40] {
        let mut out = [0u8; 40];
        out[..8].copy_from_slice(&self.seqno.to_be_bytes());
        out[8..].copy_from_slice(&self.hash);
        out
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        Some(Self {
            seqno: u64::from_be_bytes(bytes.get(..8)?.try_into().ok()?),
            hash: bytes.get(8..40)?.try_into().ok()?,
        })
    }
}

/// The commits the books know of: the one about to be sent, the last one
/// seen on chain.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Commits {
    pub pending: Option<Commit>,
    pub committed: Option<Commit>,
}

/// Accounts are basechain contracts: the address is its 32-byte hash.
fn key(address: &StdAddr) -> &[u8] {
    address.address.as_slice()
}

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

/// The books database could not be opened or read.
#[derive(Debug, thiserror::Error)]
#[error("books database {}: {source}", path.display())]
pub struct BooksError {
    pub path: std::path::PathBuf,
    #[source]
    pub source: Box<redb::Error>,
}

fn load(
    db: &Database,
    table: TableDefinition<&[u8], &[u8]>,
) -> Result<HashMap<StdAddr, Account>, Box<redb::Error>> {
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
            out.insert(StdAddr::new(0, HashBytes(key)), account);
        }
    }
    Ok(out)
}

#[derive(Default)]
struct Inner {
    clients: HashMap<StdAddr, Account>,
    workers: HashMap<StdAddr, Account>,
    commits: Commits,
}

/// Any of redb's errors, boxed (it is large).
fn boxed(e: impl Into<redb::Error>) -> Box<redb::Error> {
    Box::new(e.into())
}

fn load_commits(db: &Database) -> Result<Commits, Box<redb::Error>> {
    let read = db.begin_read().map_err(|e| Box::new(e.into()))?;
    let table = match read.open_table(COMMITS) {
        Ok(table) => table,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Commits::default()),
        Err(e) => return Err(Box::new(e.into())),
    };
    let get = |name: &str| -> Result<Option<Commit>, Box<redb::Error>> {
        Ok(table
            .get(name)
            .map_err(|e| Box::new(e.into()))?
            .and_then(|v| Commit::decode(v.value())))
    };
    Ok(Commits {
        pending: get("pending")?,
        committed: get("committed")?,
    })
}

impl Books {
    /// Books in memory only (tests, the devnet).
    pub fn new(prices: Prices) -> Self {
        Self {
            prices: Mutex::new(prices),
            inner: Mutex::default(),
            db: None,
        }
    }

    /// Books in the database at `path` (created if missing), loaded now.
    pub fn open(path: &Path, prices: Prices) -> Result<Self, BooksError> {
        let fail = |source: Box<redb::Error>| BooksError {
            path: path.to_path_buf(),
            source,
        };
        let db = Database::create(path).map_err(|e| fail(Box::new(e.into())))?;
        let clients = load(&db, CLIENTS).map_err(fail)?;
        let workers = load(&db, WORKERS).map_err(fail)?;
        let commits = load_commits(&db).map_err(fail)?;
        Ok(Self {
            prices: Mutex::new(prices),
            inner: Mutex::new(Inner {
                clients,
                workers,
                commits,
            }),
            db: Some(db),
        })
    }

    fn persist(
        &self,
        client: (&StdAddr, &Account),
        worker: (&StdAddr, &Account),
    ) -> Result<(), Box<redb::Error>> {
        self.write(|write| {
            write
                .open_table(CLIENTS)
                .map_err(boxed)?
                .insert(key(client.0), encode(client.1).as_slice())
                .map_err(boxed)?;
            write
                .open_table(WORKERS)
                .map_err(boxed)?
                .insert(key(worker.0), encode(worker.1).as_slice())
                .map_err(boxed)?;
            Ok(())
        })
    }

    /// Run `rows` in one durable write transaction (nothing without a
    /// database file).
    fn write(
        &self,
        rows: impl FnOnce(&redb::WriteTransaction) -> Result<(), Box<redb::Error>>,
    ) -> Result<(), Box<redb::Error>> {
        let Some(db) = &self.db else {
            return Ok(());
        };
        let write = db.begin_write().map_err(boxed)?;
        rows(&write)?;
        write.commit().map_err(boxed)
    }

    /// The commits of these books' hash they know of.
    pub fn commits(&self) -> Commits {
        self.inner.locked().commits
    }

    /// Record `commit` as about to be sent (`confirmed: false`) or as seen
    /// on chain (`true`), durably before going on.
    pub fn record_commit(&self, commit: Commit, confirmed: bool) -> Result<(), Box<redb::Error>> {
        {
            let mut inner = self.inner.locked();
            if confirmed {
                inner.commits.committed = Some(commit);
            } else {
                inner.commits.pending = Some(commit);
            }
        }
        let name = if confirmed { "committed" } else { "pending" };
        self.write(|write| {
            write
                .open_table(COMMITS)
                .map_err(boxed)?
                .insert(name, commit.encode().as_slice())
                .map_err(boxed)?;
            Ok(())
        })
    }

    /// The prices requests are charged at now.
    pub fn prices(&self) -> Prices {
        self.prices.locked().clone()
    }

    /// Charge later requests at `prices` (the root contract changed them).
    pub fn set_prices(&self, prices: Prices) {
        *self.prices.locked() = prices;
    }

    /// Record a served request: the `client` contract owes its price at the
    /// worker's `coefficient`, the `worker` contract is owed its share; with
    /// a database, committed durably before this returns.
    pub fn record(
        &self,
        client: &StdAddr,
        worker: &StdAddr,
        usage: &Usage,
        coefficient: u32,
    ) -> Charge {
        let charge = self.prices().charge_at(
            TokenCounts {
                prompt: usage.prompt_tokens,
                cached_prompt: usage.cached_prompt_tokens,
                completion: usage.completion_tokens,
                reasoning: usage.reasoning_tokens,
            },
            coefficient,
        );
        let mut inner = self.inner.locked();
        let owes = inner.clients.entry(client.clone()).or_default();
        owes.total = owes.total.saturating_add(charge.total);
        owes.requests += 1;
        let owes = *owes;
        let owed = inner.workers.entry(worker.clone()).or_default();
        owed.total = owed.total.saturating_add(charge.worker);
        owed.requests += 1;
        let owed = *owed;
        if let Err(e) = self.persist((client, &owes), (worker, &owed)) {
            // Still counted in memory; a restart before the next good write
            // would lose this request's record, so say so loudly.
            tracing::error!(error = %e, "could not write the books to the database");
        }
        charge
    }

    /// What the `client` contract owes in all.
    pub fn client(&self, client: &StdAddr) -> Account {
        let inner = self.inner.locked();
        inner.clients.get(client).copied().unwrap_or_default()
    }

    /// What the `worker` contract is owed in all.
    pub fn worker(&self, worker: &StdAddr) -> Account {
        let inner = self.inner.locked();
        inner.workers.get(worker).copied().unwrap_or_default()
    }

    /// SHA-256 over every account, sorted (clients then workers: address,
    /// total, requests): what the proxy commits on chain so that a proxy whose
    /// database was rolled back is detectable.
    pub fn hash(&self) -> [u8; 32] {
        use sha2::{Digest, Sha256};
        let inner = self.inner.locked();
        let mut h = Sha256::new();
        for (label, accounts) in [(b"clients", &inner.clients), (b"workers", &inner.workers)] {
            h.update(label);
            let mut sorted: Vec<_> = accounts.iter().collect();
            sorted.sort_by_key(|(k, _)| k.address);
            for (address, account) in sorted {
                h.update(key(address));
                h.update(encode(account));
            }
        }
        h.finalize().into()
    }

    /// Every client contract's cumulative total.
    pub fn clients(&self) -> Vec<(StdAddr, Account)> {
        let inner = self.inner.locked();
        inner.clients.iter().map(|(k, v)| (k.clone(), *v)).collect()
    }

    /// An in-memory copy of everything recorded (accounts, commits, prices):
    /// what a proxy finds when it reopens its database after a crash, since
    /// each record is committed durably before it returns (simulations
    /// restart proxies with it).
    pub fn duplicate(&self) -> Books {
        let inner = self.inner.locked();
        Books {
            prices: Mutex::new(self.prices()),
            inner: Mutex::new(Inner {
                clients: inner.clients.clone(),
                workers: inner.workers.clone(),
                commits: inner.commits,
            }),
            db: None,
        }
    }

    /// Every worker contract's cumulative total.
    pub fn workers(&self) -> Vec<(StdAddr, Account)> {
        let inner = self.inner.locked();
        inner.workers.iter().map(|(k, v)| (k.clone(), *v)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(n: u8) -> StdAddr {
        StdAddr::new(0, HashBytes([n; 32]))
    }

    #[test]
    fn clients_owe_and_workers_are_owed_cumulatively() {
        let books = Books::new(cocoon_chain::pricing::default_prices());
        let (client, worker) = (addr(1), addr(2));
        let usage = Usage {
            prompt_tokens: 100,
            completion_tokens: 10,
            cached_prompt_tokens: 40,
            reasoning_tokens: 0,
        };
        let first = books.record(&client, &worker, &usage, 1000);
        let second = books.record(&client, &worker, &usage, 1000);
        assert_eq!(first, second);
        assert_eq!(books.client(&client).total, 2 * first.total);
        assert_eq!(books.client(&client).requests, 2);
        assert_eq!(books.worker(&worker).total, 2 * first.worker);
        assert_eq!(books.client(&worker), Account::default());
        // The hash moves with every record.
        let before = books.hash();
        books.record(&client, &worker, &usage, 1000);
        assert_ne!(books.hash(), before);
    }

    #[test]
    fn books_in_a_database_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("books.redb");
        let (client, worker) = (addr(1), addr(2));
        let usage = Usage {
            prompt_tokens: 10,
            completion_tokens: 5,
            ..Usage::default()
        };
        let prices = cocoon_chain::pricing::default_prices();
        let charged = {
            let books = Books::open(&path, prices.clone()).unwrap();
            books.record(&client, &worker, &usage, 1000);
            books.record(&client, &worker, &usage, 1000);
            books.client(&client)
        };
        // Reopened (a restart): the same totals, and counting goes on from them.
        let books = Books::open(&path, prices.clone()).unwrap();
        assert_eq!(books.client(&client), charged);
        assert_eq!(books.worker(&worker).requests, 2);
        books.record(&client, &worker, &usage, 1000);
        assert_eq!(books.client(&client).requests, 3);
        drop(books);
        std::fs::write(dir.path().join("junk.redb"), b"not a database").unwrap();
        let err = Books::open(&dir.path().join("junk.redb"), prices)
            .err()
            .unwrap();
        assert!(err.to_string().contains("junk.redb"), "{err}");
    }

    proptest::proptest! {
        /// For any sequence of requests between any clients and workers,
        /// what clients owe is what workers are owed plus the proxy's
        /// commission, to the nano-TON, and no account goes down.
        #[test]
        fn money_in_is_money_out_plus_commission(
            requests in proptest::collection::vec(
                (0u8..3, 0u8..3, 0u64..100_000, 0u64..100_000, 0u64..1_000), 1..60)
        ) {
            let books = Books::new(cocoon_chain::pricing::default_prices());
            let mut commission = 0u128;
            let mut last = (0u128, 0u128);
            for (client, worker, prompt, completion, cached) in requests {
                let usage = Usage {
                    prompt_tokens: prompt,
                    completion_tokens: completion,
                    cached_prompt_tokens: cached.min(prompt),
                    reasoning_tokens: 0,
                };
                let charge = books.record(&addr(client), &addr(10 + worker), &usage, 500 + 250 * worker as u32);
                commission += charge.proxy();
                let owed: u128 = books.clients().iter().map(|(_, a)| a.total).sum();
                let paid: u128 = books.workers().iter().map(|(_, a)| a.total).sum();
                proptest::prop_assert_eq!(owed, paid + commission);
                proptest::prop_assert!(owed >= last.0 && paid >= last.1);
                last = (owed, paid);
            }
        }
    }
}
