//! Trust evidence for Cocoon nodes: what a node presents to prove it runs a
//! measured image inside a TEE, and how the other side checks it.
//!
//! A node's *evidence* is a quote from its TEE whose report data binds its key
//! ([`report_data`]). Verifying evidence gives a typed [`Verdict`] (TEE kind, TCB
//! status, advisories, measurements reduced to one image hash, report data); a
//! [`Policy`] then decides, and a refusal says exactly why.
//!
//! # Layout
//! * `attester`     - [`Attester`]: the TEE a node asks for evidence (TDX or simulated).
//! * `measurements` - MRTD and RTMR0-3, and the image hash they reduce to.
//! * `report_data`  - key binding: SHA-256(key ‖ purpose ‖ nonce) in the quote.
//! * `configuration` - the node's effective configuration, its digest bound
//!   in the report data's second half.
//! * `tdx`          - Intel TDX: quotes from configfs-tsm, verification with
//!   `dcap-qvl` against DCAP collateral.
//! * `simulated`    - a SIMULATED TEE for development: quote-shaped evidence signed
//!   by a local key; refused unless a policy explicitly allows it.
//! * `evidence`     - the evidence a node presents, and verifying it.
//! * `policy`       - what a verifier accepts, and why it refuses.
//! * `published`    - the trust lists the root contract publishes on chain
//!   (images, models), which a local policy can only narrow.
//! * `freshness`    - when evidence was made: the TON masterchain block its
//!   report data binds, looked up on the chain.
//! * `gpu`          - NVIDIA confidential-computing GPU evidence (SPDM report,
//!   device chain, RIMs).

#![forbid(unsafe_code)]

mod attester;
pub mod configuration;
mod evidence;
pub mod freshness;
pub mod gpu;
mod measurements;
mod policy;
pub mod published;
mod report_data;
pub mod simulated;
pub mod sync;
pub mod tdx;

pub use attester::Attester;
pub use configuration::{Configuration, ConfigurationRefusal, EngineIdentity, ModelIdentity};
pub use evidence::{Evidence, TeeKind, Verdict, VerifyError};
pub use freshness::{AgreeingBlocks, Anchor, AnchorBlock, BlockAnchors, BlockSource, FixedBlocks};
pub use measurements::Measurements;
pub use policy::{AllowedModel, PeerRole, Policy, Refusal};
pub use published::{ConfigurationRules, Published, PublishedLists};
pub use report_data::{report_data, Purpose};
