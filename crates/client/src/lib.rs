//! Client node: the OpenAI-compatible HTTP API an app developer runs beside their
//! backend (`GET /v1/models`, `POST /v1/chat/completions`, `POST /v1/completions`,
//! streaming as Server-Sent Events), answered by the Cocoon network through
//! long-lived connections to one or more proxies.
//!
//! Every request is sealed (HPKE) to attested workers' enclaves before it leaves
//! this node, and every answer chunk and usage receipt is checked on the way
//! back: the proxies in between see model names, sizes and token counts only.
//!
//! It does not run models or route between workers (proxies do).
//!
//! # Layout
//! * `api`     - the HTTP surface: [`router`], request validation, OpenAI-shaped
//!   errors (mapped once, in `api::error`), SSE streaming.
//! * `backend` - [`Backend`], what answers the API: the proxy pool here, an engine
//!   directly for `cocoon engine serve`.
//! * `pool`    - [`ProxyPool`], kept-alive connections to proxies with failover.
//! * `sealing` - which workers' attested keys to seal to; opening the answer
//!   and verifying the worker's usage receipt.
//! * `affinity` - which worker answered a conversation's last turn (its
//!   next turn is sealed to it first, for its prompt cache).
//! * `billing` - [`Billing`]: the node's client contract on TON, the balance
//!   endpoint, and refusing (402) what it cannot pay for.
//! * `journal` - [`ReceiptJournal`]: every receipt the node paid for, on disk.
//! * `config`  - [`ClientConfig`], the TOML file, validated with field names.
//! * `node`    - [`ClientNode`]: the pool and the API, started from a config
//!   file or from settings.

#![forbid(unsafe_code)]

mod affinity;
mod api;
mod backend;
pub mod billing;
mod config;
pub mod journal;
mod node;
mod pool;
mod refusal;
mod sealing;

pub use api::{check_request, router, serve, ApiError, ApiSettings, BrowserPolicy};
pub use backend::Backend;
pub use billing::Billing;
pub use config::{BillingConfig, ClientConfig, ClientSettings, ConfigError, RegistrySettings};
pub use journal::ReceiptJournal;
pub use node::ClientNode;
pub use pool::ProxyPool;
pub use refusal::ReceiptRefused;
