//! The one policy for poisoned locks (recover the guard), defined beside
//! the attestation code at the bottom of the crate graph so that every
//! crate follows it; see [`cocoon_attestation::sync`].

pub use cocoon_attestation::sync::{LockRecover, RwLockRecover};
