//! The `cocoon` command's library half, so tests and benchmarks run exactly what
//! the binary runs.
//!
//! # Layout
//! * `attest`        - `cocoon attest verify|show-cert|bench`: a TDX quote's or a
//!   node's verdict as JSON, and the cost of verification.
//! * `trust_bench`   - RA-TLS handshake and HPKE sealing costs for `attest bench`.
//! * `devnet`        - [`Devnet`]: client node, proxy and worker in one process on
//!   loopback, wired to each other's keys.
//! * `engine_server` - an engine served directly as an OpenAI-compatible HTTP API
//!   (`cocoon engine serve`): the reference for benchmarks, a test upstream.
//! * `bench`         - `cocoon bench`: overhead of the full path against the engine
//!   alone, in one run.
//! * `engine_bench`  - `cocoon bench-engine`: the embedded engine's speed beside
//!   llama.cpp's own tools and the memory-bandwidth bound.
//! * `gateway_bench` - `cocoon bench-gateways`: Cocoon beside LiteLLM's proxy,
//!   same upstream, same load.
//! * `roles`         - running one role from its TOML file.
//! * `process_net`   - [`process_net::ProcessNet`]: every node its own `cocoon`
//!   process from its TOML file, paying on an embedded chain served here.
//! * `load_bench` - `cocoon bench-load`: one proxy (its own process) under
//!   streamed load from several client nodes to many workers.
//! * `routing_bench` - `cocoon bench-routing`: the proxy's routing decisions at
//!   10 to 10,000 registered workers.
//! * `models`        - `cocoon model pull|list` and the devnet's default model.
//! * `soak`          - `cocoon soak`: a bounded soak run with the money checked.
//! * `summarize`     - `cocoon summarize`: a Telegram chat export summarised by the network.
//! * `wallet`        - `cocoon wallet new|address|balance|send`: TON v4r2 wallets.

pub mod attest;
pub mod bench;
pub mod devnet;
pub mod engine_bench;
pub mod engine_server;
pub mod gateway_bench;
pub mod load_bench;
pub mod models;
pub mod process_net;
pub mod roles;
pub mod routing_bench;
pub mod soak;
pub mod summarize;
mod trust_bench;
pub mod wallet;

pub use devnet::{Devnet, DevnetOptions, DevnetProxy};
