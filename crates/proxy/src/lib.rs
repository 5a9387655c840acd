//! Proxy role: accepts pinned client nodes and attested workers on one TLS port,
//! keeps a live registry of workers by model with their attested keys, forwards
//! each sealed request to one of the workers it is sealed to and streams the
//! sealed answer back, checking the worker's signed usage receipt. A client
//! hanging up cancels the worker's generation.
//!
//! It does not run models (workers do), does not speak HTTP (client nodes do),
//! and cannot read prompts or answers (they are sealed to the worker's enclave).
//!
//! # Layout
//! * `config`   - [`ProxyConfig`], the TOML file, validated with field names.
//! * `registry` - live workers by model and their keys, least-loaded choice
//!   among a request's recipients, capacity slots, the per-model queue.
//! * `timeouts` - [`HopTimeouts`]: deadlines on each worker answer.
//! * `receipts` - the workers' signed usage receipts, verified and totalled.
//! * `books`    - what each client owes and each worker is owed, priced in nano-TON.
//! * `settlement` - [`Settlement`]: client contracts checked on chain, charges
//!   and the books' hash put on chain, vouchers for workers, root prices.
//! * `controls` - [`ProxyControls`]: the operator disables and enables
//!   workers at run time (the admin endpoints); workers whose receipts
//!   keep being refused are evicted.
//! * `status`   - [`ProxyStatus`]: readiness, `/stats` and the routing
//!   table's Prometheus gauges.
//! * `gate`     - [`GateSettings`]: per-source limits on handshakes, before TLS.
//! * `server`   - [`run`]: the accept loop and the per-role connection handlers.
//! * `node`     - [`ProxyNode`]: the accept loop, settlement rounds and the
//!   status endpoints, started from a config file or from settings.

#![forbid(unsafe_code)]

mod books;
mod config;
pub mod controls;
mod gate;
mod node;
mod receipts;
mod refusal;
mod registry;
mod request_ids;
mod server;
mod settlement;
mod status;
mod timeouts;
mod unfinished;

pub use books::{Account, Books, BooksError};
pub use config::{signer_of, ConfigError, Inspector, ProxyConfig, ProxySettings, SettlementConfig};
pub use controls::ProxyControls;
pub use gate::{Gate, GateSettings, Turned};
pub use node::{ProxyListeners, ProxyNode};
pub use receipts::{ReceiptLog, Refused};
pub use refusal::{AdmitError, AnnounceRefused};
pub use registry::{OfferStats, QueueSettings, Registry, PROBATION};
pub use request_ids::RequestIds;
pub use server::{run, start, ProxyHandle};
pub use settlement::{Round, Settlement, SettlementError, Totals};
pub use status::ProxyStatus;
pub use timeouts::HopTimeouts;
