//! Worker role: dials out to its proxies (so a GPU behind NAT can serve), announces
//! its models and capacity, and answers requests through an inference engine.
//!
//! It does not route or meter across workers (proxies do) and does not speak HTTP
//! to apps (client nodes do).
//!
//! # Layout
//! * `config` - [`WorkerConfig`], the TOML file, including which engine to run.
//! * `serve`  - the request handler: opening sealed requests, capacity limits,
//!   engine calls, sealed answers, signed usage receipts, statistics.
//! * `replay` - refusing replayed or stale sealed requests.
//! * `sealing_keys` - [`SealingKeys`]: the sealing keys, rotated on
//!   schedule, the previous one dropped once its grace is over.
//! * `coalesce` - tokens gathered for a few milliseconds into one sealed chunk.
//! * `run`    - [`Worker::start`]: one kept-alive connection per proxy.
//! * `status` - [`WorkerStatus`]: readiness, `/stats` and the worker's gauges.
//! * `controls` - [`WorkerControls`]: drain, resume and set-price, for the
//!   admin endpoints.
//! * `prices` - [`Prices`]: each model's price, changed at run time, and
//!   which prices a sealed request may be served at.
//! * `doctor` - [`doctor::diagnose`]: the setup checked step by step
//!   (`cocoon worker doctor`).
//! * `node`   - [`WorkerNode`]: the worker and its status endpoints, started
//!   from a config file or from settings.
//! * `earnings` - [`Earnings`]: the proxies' signed vouchers, checked and
//!   kept, and claims on TON above a threshold.

#![forbid(unsafe_code)]

mod coalesce;
mod config;
mod controls;
pub mod doctor;
mod earnings;
mod node;
mod prices;
mod replay;
mod run;
mod sealing_keys;
mod serve;
mod status;

pub use coalesce::DEFAULT_WINDOW as DEFAULT_COALESCE;
pub use config::{
    ConfigError, EngineConfig, PayoutConfig, Profile, WeightsLocation, WorkerConfig, WorkerSettings,
};
pub use controls::WorkerControls;
pub use earnings::{
    read_earnings, Earnings, EarningsBook, EarningsError, EarningsLine, ProxyEarnings,
};
pub use node::WorkerNode;
pub use prices::{PriceError, Prices, PRICE_GRACE};
pub use run::Worker;
pub use sealing_keys::{SealingKeys, DEFAULT_ROTATION as DEFAULT_SEALING_KEY_ROTATION};
pub use serve::{WorkerStats, PROGRESS_TOKENS};
pub use status::WorkerStatus;
