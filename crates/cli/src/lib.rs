//! The `cocoon` command's library half: the subcommands that are more than
//! a call into a role, devnet or bench crate.
//!
//! # Layout
//! * `admin`     - `cocoon worker drain|resume|set-price|status` and `cocoon proxy
//!   disable-worker|enable-worker|status`: a running node's admin endpoints.
//! * `attest`    - `cocoon attest verify|show-cert|bench`: a TDX quote's or a
//!   node's verdict as JSON, and the cost of verification.
//! * `receipts`  - `cocoon receipts FILE`: a client node's paid receipts checked and summed.
//! * `key_manager` - `cocoon key-manager serve|authorize`: a key manager, and owners' authorizations.
//! * `roles`     - running one role from its TOML file.
//! * `root`      - `cocoon root show|add-image|...|set-prices`: the operator's tool for the root contract.
//! * `summarize` - `cocoon summarize`: a Telegram chat export summarised by the network.
//! * `wallet`    - `cocoon wallet new|address|balance|send`: TON v4r2 wallets.

#![forbid(unsafe_code)]

pub mod admin;
pub mod attest;
pub mod key_manager;
pub mod receipts;
pub mod roles;
pub mod root;
pub mod summarize;
pub mod wallet;
