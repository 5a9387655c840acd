//! Cocoon's wire: everything two Cocoon nodes (client node, proxy, worker) say to
//! each other, and the OpenAI JSON shapes that apps and engines speak.
//!
//! It does not route, meter or run models: those live in the role crates.
//!
//! # Layout
//! * `frame`  - the typed messages of protocol version [`PROTOCOL_VERSION`].
//! * `codec`  - length-delimited framing (tokio-util) with postcard bodies, and the
//!   versioned `Hello` handshake.
//! * `mux`    - many concurrent request streams over one connection, with
//!   cancellation and keepalive.
//! * `attestation_config` - `[attestation]` in every role's config.
//! * `config` - [`ConfigError`] and keepalive timing shared by role configs.
//! * `dial`   - dialling a proxy and staying connected, with backoff.
//! * `pow`    - the proof of work a busy server asks before a TLS handshake.
//! * `tls`    - node identities (Ed25519 keys, self-signed certificates) and the
//!   pinned-key TLS 1.3 verifiers; the one place certificates are made and checked.
//! * `ra_tls` - TEE evidence in certificates and its check during handshakes.
//! * `sealed` - HPKE sealing of requests to the worker's enclave and of its
//!   answers back to the client node; the proxy routes ciphertext.
//! * `worker_key` - a worker's attested identity and sealing keys.
//! * `receipt` - usage receipts signed by the worker.
//! * `openai` - OpenAI-compatible request/response JSON types.
//! * `error`  - [`ProtocolError`].

#![forbid(unsafe_code)]

mod attestation_config;
mod codec;
mod config;
mod dial;
mod error;
mod frame;
mod mux;
pub mod openai;
pub mod pow;
pub mod ra_tls;
pub mod receipt;
pub mod sealed;
pub mod sync;
pub mod tls;
pub mod worker_key;

pub use attestation_config::{anchors_ready, AttestationConfig, Profile, TeeChoice};
pub use cocoon_attestation::PeerRole;
pub use codec::{
    decode_frame, encode_frame, handshake, length_codec, read_hello, to_hex, write_hello,
    DEFAULT_MAX_FRAME_BYTES, MAGIC,
};
pub use config::{bind, load_identity, ConfigError};
pub use dial::{dial_once, keep_connected, DialSettings, ProxyEndpoint};
pub use error::ProtocolError;
pub use frame::{
    AccountTerms, Announce, AnswerCursor, ChatMessage, Done, ErrorKind, Event, Features,
    FinishReason, Frame, Function, GenerateRequest, Hello, Input, ListedWorker, ModelInfo,
    ModelOffer, OutputFormat, RequestBody, Role, RoutingPrefs, SamplingParams, Sort, Thinking,
    TokenLogprob, ToolCall, ToolCallChunk, ToolChoice, Tools, TopLogprob, Usage, Voucher,
    WireError, BASE_PRICE_COEFFICIENT, MAX_CHOICES, MAX_PRICE_COEFFICIENT, MAX_TOP_LOGPROBS,
    PROTOCOL_VERSION, REASONING_EFFORTS,
};
pub use mux::{Connection, Handler, MuxOptions, ResponseStream};
pub use receipt::{Receipt, SignedReceipt};
pub use sealed::{SealHeader, SealTo, SealedRequest, SealingKey};
pub use worker_key::WorkerKey;
