//! Cocoon on TON: the network's contracts as compiled from `contracts/src`
//! (Tolk), typed builders and parsers for their storage, messages, signed
//! payloads and get-method results, and an in-process TVM that runs them (the
//! `tycho-vm` / `tycho-executor` crates, real transactions with real signature
//! checks).
//!
//! It does not talk to a TON network or keep the books (payments, later).
//!
//! # Layout
//! * `contracts` - the compiled code of each contract (`contracts/build`).
//! * `messages`  - every message body, and the payloads the proxy's key signs.
//! * `data`      - initial storage of each contract, and get-method results.
//! * `emulator`  - [`Emulator`]: accounts, internal message delivery through
//!   the executor, get-methods.

mod contracts;
mod data;
mod emulator;
mod messages;

pub use contracts::Contract;
pub use data::{
    stack_int, worker_data, ClientState, ClientTerms, Prices, ProxyState, ProxyTerms, WorkerState,
};
pub use emulator::{Emulator, TxReport};
pub use messages::{client, ops, proxy, root, signed, snake, worker, ProxySigner};
pub use tycho_types::cell::{Cell, HashBytes};
pub use tycho_types::models::StdAddr;

/// Errors from building cells or running the TVM.
pub type Error = anyhow::Error;
