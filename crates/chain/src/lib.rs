//! Cocoon on TON: the network's contracts as compiled from `contracts/src`
//! (Tolk), typed builders and parsers for their storage, messages, signed
//! payloads and get-method results, and an in-process TVM that runs them (the
//! `tycho-vm` / `tycho-executor` crates, real transactions with real signature
//! checks).
//!
//! It talks to TON networks through their HTTP API (`ton_http`); it does not
//! keep the books (the proxy does).
//!
//! # Layout
//! * `contracts` - the compiled code of each contract (`contracts/build`).
//! * `messages`  - every message body, and the payloads the proxy's key signs.
//! * `data`      - initial storage of each contract, and get-method results.
//! * `emulator`  - [`Emulator`]: accounts, external and internal messages run
//!   through the executor (at once, or queued for blocks), transactions, get-methods.
//! * `persist`   - saving an emulator's state to a file and loading it back.
//! * `wallet`    - TON's standard wallet v4r2: addresses and signed transfers.
//! * `mnemonic`  - TON's 24-word mnemonics, as `@ton/crypto` derives them.
//! * `api`       - the TON HTTP API subset (toncenter v2) served from an emulator.
//! * `devnet`    - the embedded TON devnet: genesis wallets, the root contract.
//! * `access`    - [`Chain`], the one interface the nodes settle through, and
//!   [`EmbeddedChain`], an emulator behind it.
//! * `ton_http`  - [`TonHttp`], [`Chain`] over TON's HTTP API (devnet or toncenter).
//! * `sender`    - [`WalletSender`]: transfers from a node's wallet, confirmed on chain.
//! * `pricing`   - what a request costs in nano-TON, and the worker's share.
//! * `registry`  - [`RegisteredProxy`]: the proxies the root contract publishes.

mod access;
pub mod api;
mod contracts;
mod data;
pub mod devnet;
mod emulator;
mod messages;
pub mod mnemonic;
mod persist;
pub mod pricing;
pub mod registry;
pub mod sender;
pub mod ton_http;
pub mod wallet;

pub use access::{AccountInfo, Chain, EmbeddedChain, TxSummary};
pub use contracts::{contract_address, worker_contract, Contract};
pub use data::{
    stack_int, worker_data, ClientChannel, ClientState, ClientTerms, Prices, ProxyState,
    ProxyTerms, WorkerState,
};
pub use devnet::random_nonce;
pub use emulator::{method_id, BlockReport, Emulator, TxRecord, TxReport};
pub use messages::{client, ops, proxy, root, signed, snake, verify_amount, worker, ProxySigner};
pub use registry::{registered_proxies, RegisteredProxy};
pub use sender::{Confirmed, Outgoing, WalletSender};
pub use ton_http::TonHttp;
pub use tycho_types::cell::{Cell, HashBytes};
pub use tycho_types::models::{StdAddr, StdAddrFormat as AddressFormat};
pub use wallet::Wallet;

/// Errors from building cells or running the TVM.
pub type Error = anyhow::Error;
