//! The key manager (docs/key-manager.md): keys that must outlive a node's
//! restart without ever being in the clear outside an attested enclave.
//!
//! A key manager holds a master secret made in its enclave and derives each
//! released key from it ([`derive`]); it releases a key only over RA-TLS to a
//! node whose evidence passes its policy for the role the key is for, with
//! the owner's signed [`Authorization`]; and it gives the master secret only
//! to another key manager whose evidence passes `key_manager_images`
//! (replication: how a key manager survives a restart on TDX, which has no
//! sealing key).
//!
//! # Layout
//! * `derive`        - the master secret and the keys derived from it.
//! * `authorization` - the owner's signature naming the key a node may have.
//! * `wire`          - what crosses the TLS connection.
//! * `server`        - [`KeyManager`]: checks and releases.
//! * `client`        - asking a key manager, as a node or a replica.
//! * `node`          - a worker's or proxy's lasting key, at start.
//! * `sealed`        - the master secret sealed to the key manager's own TEE.
//! * `config`        - `cocoon key-manager serve`: its config file, and starting it.

#![forbid(unsafe_code)]

pub mod authorization;
pub mod client;
pub mod config;
pub mod derive;
pub mod node;
pub mod sealed;
pub mod server;
pub mod wire;

pub use authorization::Authorization;
pub use client::{fetch_key, replicate, AskError};
pub use derive::MasterSecret;
pub use node::lasting_identity;
pub use server::KeyManager;

#[cfg(test)]
mod tests;
