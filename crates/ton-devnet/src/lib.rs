//! The embedded TON chain of the devnet and the tests: an in-process TVM
//! (the `tycho-vm` / `tycho-executor` crates: real transactions with real
//! signature checks) running the network's contracts, its state saved to a
//! file and loaded back, TON's HTTP API served over it, and the devnet's
//! genesis (wallets, the root contract, a proxy's and a client's contracts).
//! Production nodes do not link it: they reach TON through
//! `cocoon_chain::TonHttp`.
//!
//! # Layout
//! * `emulator` - [`Emulator`]: accounts, external and internal messages run
//!   through the executor (at once, or queued for blocks), transactions, get-methods.
//! * `blocks`   - masterchain block headers: numbers, times, unpredictable hashes.
//! * `persist`  - saving an emulator's state to a file and loading it back.
//! * `api`      - the TON HTTP API subset (toncenter v2) served from an emulator.
//! * `genesis`  - [`TonDevnet`]: genesis wallets, the root contract, the
//!   proxy's and the client's contracts, deployed by real transfers.
//! * `embedded` - [`EmbeddedChain`]: `cocoon_chain::Chain` straight on an emulator.

#![forbid(unsafe_code)]

pub mod api;
mod blocks;
mod embedded;
mod emulator;
pub mod genesis;
mod persist;

pub use blocks::BlockHeader;
pub use embedded::EmbeddedChain;
pub use emulator::{method_id, BlockReport, Emulator, TxRecord, TxReport};
pub use genesis::{
    default_prices, unix_now, Addresses, Genesis, TonDevnet, Wallets, CLIENT_DEPOSIT,
    GENESIS_BALANCE,
};
