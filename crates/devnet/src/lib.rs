//! A whole Cocoon network on loopback, for `cocoon devnet`, the end-to-end
//! tests and the benchmarks: nothing else starts nodes.
//!
//! # Layout
//! * `devnet`      - [`Devnet`]: proxies, workers and a client node in one
//!   process, each started as its role starts it, paying on the embedded chain.
//! * `options`     - [`DevnetOptions`]: what a devnet starts.
//! * `chain`       - the embedded TON chain of a devnet: genesis or resumed
//!   state, blocks, TON's HTTP API over it (with an outage switch).
//! * `process_net` - [`ProcessNet`]: every node its own `cocoon` process run
//!   from its TOML file, paying on an embedded chain served here.
//! * `engine_server` - an engine served directly as an OpenAI-compatible
//!   API (`cocoon engine serve`): the reference for benchmarks, a test upstream.
//! * `models`      - `cocoon model pull|list` and the devnet's default model.
//! * `kit`         - what tests and benchmarks share to speak to a network.
//! * `adversary`   - dishonest parties for attack tests ([`adversary::RelayProxy`]:
//!   a proxy operator rewriting what passes between client nodes and a proxy;
//!   [`adversary::LyingEngine`]: a GPU owner's inference server that
//!   overstates usage).
//! * `unpaid`      - an unpaid network assembled node by node, for tests that
//!   stop, restart or relay single nodes.
//! * `simulation`  - [`simulation::simulate`]: a seeded, deterministic
//!   simulation of the money path under faults, with its invariants.

#![forbid(unsafe_code)]

pub mod adversary;
mod chain;
mod devnet;
pub mod engine_server;
pub mod kit;
pub mod models;
mod newcomer;
mod options;
pub mod process_net;
pub mod simulation;
pub mod unpaid;

pub use devnet::{Devnet, DevnetProxy, Settled};
pub use options::DevnetOptions;
pub use process_net::{ProcessNet, ProcessNetOptions};
