//! Cocoon on TON: the network's contracts as compiled from `contracts/src`
//! (Tolk), typed builders and parsers for their storage, messages, signed
//! payloads and get-method results, wallets, and the [`Chain`] interface the
//! nodes settle through.
//!
//! It talks to TON networks through their HTTP API (`ton_http`); it does not
//! keep the books (the proxy does), and it does not run contracts: the
//! embedded chain of the devnet and the tests (an in-process TVM) is the
//! `cocoon-ton-devnet` crate, which production nodes do not link.
//!
//! # Layout
//! * `contracts` - the compiled code of each contract (`contracts/build`),
//!   their addresses, and random nonces for their terms.
//! * `messages`  - every message body, and the payloads the proxy's key signs.
//! * `data`      - initial storage of each contract, and get-method results.
//! * `wallet`    - TON's standard wallet v4r2: addresses and signed transfers.
//! * `mnemonic`  - TON's 24-word mnemonics, as `@ton/crypto` derives them.
//! * `error`     - [`ChainError`]: what went wrong, by kind.
//! * `access`    - [`Chain`], the one interface the nodes settle through.
//! * `agreeing`  - [`AgreeingChain`]: reads believed only when several
//!   endpoints agree (`ton_api_agree`).
//! * `anchors`   - the chain's masterchain blocks anchoring TEE evidence in time.
//! * `ton_http`  - [`TonHttp`], [`Chain`] over TON's HTTP API (devnet or toncenter).
//! * `sender`    - [`WalletSender`]: transfers from a node's wallet, confirmed on chain.
//! * `pricing`   - what a request costs in nano-TON, and the worker's share.
//! * `registry`  - [`RegisteredProxy`]: the proxies the root contract publishes.
//! * `published` - the images and models the root contract publishes as
//!   trusted, read from endpoints that must agree, and followed.

#![forbid(unsafe_code)]

mod access;
pub mod agreeing;
pub mod anchors;
mod contracts;
mod data;
mod error;
mod messages;
pub mod mnemonic;
pub mod pricing;
pub mod published;
pub mod registry;
pub mod sender;
pub mod ton_http;
pub mod wallet;

pub use access::{AccountInfo, Chain, MasterchainBlock, TxSummary};
pub use agreeing::AgreeingChain;
/// The configuration rules the root contract publishes (see `root::set_rules`).
pub use cocoon_attestation::ConfigurationRules;
pub use contracts::{contract_address, random_nonce, random_seed, worker_contract, Contract};
pub use data::{
    stack_address, stack_int, stack_optional_address, worker_data, ClientChannel, ClientState,
    ClientTerms, Prices, ProxyState, ProxyTerms, WorkerState,
};
pub use messages::{client, ops, proxy, root, signed, snake, verify_amount, worker, ProxySigner};
pub use pricing::TON;
pub use registry::{
    check_proxy_listed, registered_proxies, registered_proxies_agreeing, RegisteredProxy,
};
pub use sender::{Confirmed, Outgoing, WalletSender};
pub use ton_http::TonHttp;
pub use tycho_types::cell::{Cell, HashBytes};
pub use tycho_types::models::{StdAddr, StdAddrFormat as AddressFormat};
pub use wallet::Wallet;

pub use error::{ChainError, InputError};

/// Errors of the chain bindings (see [`ChainError`]).
pub type Error = ChainError;
