//! Proxy role: accepts pinned client nodes and workers on one TLS port, keeps a live
//! registry of workers by model, forwards each request to a worker and streams the
//! answer back. A client hanging up cancels the worker's generation.
//!
//! It does not run models (workers do) and does not speak HTTP (client nodes do).
//!
//! # Layout
//! * `config`   - [`ProxyConfig`], the TOML file, validated with field names.
//! * `registry` - live workers by model, least-loaded choice, capacity slots.
//! * `server`   - [`run`]: the accept loop and the per-role connection handlers.

mod config;
mod registry;
mod server;

pub use config::{ConfigError, ProxyConfig, ProxySettings};
pub use registry::Registry;
pub use server::{run, start, ProxyHandle};
