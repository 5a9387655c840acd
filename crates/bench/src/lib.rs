//! Cocoon's benchmarks and its soak run, each a `cocoon` subcommand that
//! prints its numbers beside a reference measured in the same run. Every
//! network they measure is started through `cocoon-devnet`.
//!
//! # Layout
//! * `overhead` - `cocoon bench`: the full path against the engine alone.
//! * `engine`   - `cocoon bench-engine`: the embedded engine beside
//!   llama.cpp's own tools and the memory-bandwidth bound.
//! * `gateways` - `cocoon bench-gateways`: Cocoon beside LiteLLM's proxy,
//!   same upstream, same load.
//! * `load`     - `cocoon bench-load`: one proxy (its own process) under
//!   streamed load from several client nodes to many workers.
//! * `routing`  - `cocoon bench-routing`: the proxy's routing decisions at
//!   10 to 10,000 registered workers.
//! * `trust`    - RA-TLS handshake and HPKE sealing costs (`cocoon attest bench`).
//! * `soak`     - `cocoon soak`: a bounded soak run with the money checked.

#![forbid(unsafe_code)]

pub mod engine;
pub mod gateways;
pub mod load;
pub mod overhead;
pub mod routing;
pub mod soak;
pub mod trust;
