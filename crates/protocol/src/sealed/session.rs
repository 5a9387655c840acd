//! Sealed sessions: one HPKE encapsulation per (client node, worker) pair,
//! then symmetric keys only.
//!
//! A client node sets up a session to a worker's sealing key once (HPKE base
//! mode: one ephemeral X25519 key and one Diffie-Hellman at the client, one
//! at the worker) and exports a session root bound to the worker's
//! fingerprint and the session's first epoch. Time is cut into epochs of
//! [`EPOCH_MS`]; each epoch has a key, and the next one is a one-way
//! function of it (`E[e+1] = HKDF(E[e], "epoch")`): a ratchet. A request
//! sealed at time t uses `E[epoch(t)]` and its own random request id:
//! `K = HKDF(E[e], "request" ‖ request id)`, from which the key wrapping the
//! request's content key and the answer key are derived.
//!
//! So steady-state requests do no asymmetric crypto (a few HMACs), and:
//! - a leaked request key opens that request only (HKDF is one-way and every
//!   request id is fresh);
//! - the client node holds only the current epoch's key of each session: its
//!   memory at time t opens no request sealed in an earlier epoch;
//! - each session's keys are independent of every other session's (fresh
//!   HPKE encapsulation), so two workers, or two client nodes, never share a
//!   key.
//!
//! The worker keeps a few recent epoch keys per session in a bounded cache.
//! Every request carries its session's encapsulated key, so a worker that
//! lost the session (restart of the cache, eviction) rebuilds it with one
//! Diffie-Hellman instead of failing the request. The worker's sealing key
//! itself lives as long as the enclave's process and can rebuild any of its
//! sessions: forward secrecy is the client node's, not the worker's.
//! Replays are refused by the worker's request-id guard, not here.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use hpke::{Deserializable, OpModeR, OpModeS, Serializable};
use ring::hkdf;
use zeroize::Zeroizing;

use super::{HpkeAead, Kdf, Kem, Recipient, SealError, SealHeader, SCHEME};
use crate::sync::LockRecover;
use crate::tls::Fingerprint;

/// Length of an epoch: the ratchet's step.
pub const EPOCH_MS: u64 = 60_000;
/// A client node starts a new session after this many epochs (an hour).
pub const SESSION_EPOCHS: u64 = 60;
/// A worker refuses a session older than this many epochs (its clock may
/// differ from the client node's, and a request may be sealed just before
/// the client node rotates).
pub const MAX_SESSION_EPOCHS: u64 = 2 * SESSION_EPOCHS;
/// Sessions a client node keeps (one per worker key it seals to).
const MAX_SENDER_SESSIONS: usize = 10_000;
/// Sessions a worker keeps; past it the least recently used goes (and is
/// rebuilt from its encapsulated key if it comes back).
const MAX_RECEIVER_SESSIONS: usize = 4_096;
/// Epoch keys a worker keeps per session (the newest and the ones before,
/// so requests sealed just before an epoch boundary still open cheaply).
const KEPT_EPOCHS: usize = 3;

const SESSION_EXPORT: &[u8] = b"cocoon/seal/v3/session";
const EPOCH_LABEL: &[u8] = b"cocoon/seal/v3/epoch";
const REQUEST_LABEL: &[u8] = b"cocoon/seal/v3/request-key";

/// The epoch a send time falls in.
pub fn epoch_of(sent_at_ms: u64) -> u64 {
    sent_at_ms / EPOCH_MS
}

type Key = Zeroizing<[u8; 32]>;

/// HKDF-Expand of `key` (a uniformly random 32-byte secret) with `info`.
pub(super) fn expand(key: &[u8; 32], info: &[&[u8]]) -> Key {
    struct Len32;
    impl hkdf::KeyType for Len32 {
        fn len(&self) -> usize {
            32
        }
    }
    let mut out = Zeroizing::new([0u8; 32]);
    hkdf::Prk::new_less_safe(hkdf::HKDF_SHA256, key)
        .expand(info, Len32)
        .and_then(|okm| okm.fill(out.as_mut_slice()))
        .expect("32 bytes is a valid HKDF-SHA256 output length");
    out
}

/// The root of a session (the key of its first epoch), exported from its
/// HPKE context and bound to the worker and the first epoch.
fn root(
    export: impl FnOnce(&[u8], &mut [u8]) -> Result<(), hpke::HpkeError>,
    worker: &Fingerprint,
    since: u64,
) -> Result<Key, SealError> {
    let info = [SESSION_EXPORT, worker.0.as_slice(), &since.to_be_bytes()].concat();
    let mut key = Zeroizing::new([0u8; 32]);
    export(&info, key.as_mut_slice())
        .map_err(|_| SealError::Malformed("exporting the session root".into()))?;
    Ok(key)
}

/// One step of the ratchet.
fn next_epoch(key: &[u8; 32]) -> Key {
    expand(key, &[EPOCH_LABEL])
}

/// The key of one request: its epoch's key and its request id.
pub(super) fn request_key(epoch_key: &[u8; 32], request_id: &[u8; 16]) -> Key {
    expand(epoch_key, &[REQUEST_LABEL, request_id])
}

/// What a request carries of its session, and the request's key.
pub(super) struct SessionKey {
    pub enc: Vec<u8>,
    pub since: u64,
    pub request_key: Key,
}

/// A client node's sessions, one per worker sealing key.
#[derive(Default)]
pub struct SenderSessions {
    sessions: std::sync::Mutex<HashMap<(Fingerprint, [u8; 32]), SenderSession>>,
}

impl std::fmt::Debug for SenderSessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SenderSessions({})", self.len())
    }
}

/// A client node's side of one session: only the current epoch's key.
struct SenderSession {
    enc: Vec<u8>,
    since: u64,
    epoch: u64,
    key: Key,
    used: Instant,
}

impl SenderSessions {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sessions held now.
    pub fn len(&self) -> usize {
        self.sessions.locked().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The key for request `request_id` sealed at `sent_at_ms` to `worker`
    /// (sealing key `public`): from the current session, advanced to the
    /// epoch (older epochs' keys are erased), or a new session when there is
    /// none, it is an hour old, or the clock went back.
    pub(super) fn key(
        &self,
        worker: &Fingerprint,
        public: &[u8; 32],
        request_id: &[u8; 16],
        sent_at_ms: u64,
    ) -> Result<SessionKey, SealError> {
        let epoch = epoch_of(sent_at_ms);
        let slot = (*worker, *public);
        let mut sessions = self.sessions.locked();
        let reusable = sessions
            .get(&slot)
            .is_some_and(|s| epoch >= s.epoch && epoch < s.since.saturating_add(SESSION_EPOCHS));
        if !reusable {
            sessions.remove(&slot);
            let fresh = SenderSession::start(worker, public, epoch)?;
            evict_oldest(&mut sessions, MAX_SENDER_SESSIONS, |s| s.used);
            sessions.insert(slot, fresh);
        }
        let session = sessions.get_mut(&slot).expect("inserted above");
        while session.epoch < epoch {
            session.key = next_epoch(&session.key);
            session.epoch += 1;
        }
        session.used = Instant::now();
        Ok(SessionKey {
            enc: session.enc.clone(),
            since: session.since,
            request_key: request_key(&session.key, request_id),
        })
    }
}

impl SenderSessions {
    /// The epoch and epoch key held for `worker` (what a dump of the client
    /// node's memory would find).
    #[cfg(test)]
    fn held(&self, worker: &Fingerprint, public: &[u8; 32]) -> Option<(u64, Key)> {
        let sessions = self.sessions.locked();
        sessions
            .get(&(*worker, *public))
            .map(|s| (s.epoch, s.key.clone()))
    }
}

impl SenderSession {
    fn start(worker: &Fingerprint, public: &[u8; 32], epoch: u64) -> Result<Self, SealError> {
        let public = <Kem as hpke::Kem>::PublicKey::from_bytes(public)
            .map_err(|_| SealError::Malformed("worker sealing key".into()))?;
        let mut rng = rand_core::UnwrapErr(rand_core::OsRng);
        let (enc, ctx) =
            hpke::setup_sender::<HpkeAead, Kdf, Kem, _>(&OpModeS::Base, &public, SCHEME, &mut rng)
                .map_err(|e| SealError::Malformed(e.to_string()))?;
        Ok(Self {
            enc: enc.to_bytes().to_vec(),
            since: epoch,
            epoch,
            key: root(|info, out| ctx.export(info, out), worker, epoch)?,
            used: Instant::now(),
        })
    }
}

/// A worker's sessions, by encapsulated key.
#[derive(Default)]
pub(super) struct ReceiverSessions {
    sessions: std::sync::Mutex<HashMap<Vec<u8>, ReceiverSession>>,
}

/// A worker's side of one session: the newest epoch keys it has needed.
struct ReceiverSession {
    since: u64,
    /// (epoch, key), oldest first, at most [`KEPT_EPOCHS`].
    epochs: Vec<(u64, Key)>,
    used: Instant,
}

impl ReceiverSession {
    /// The key of `epoch` if it is held or ahead of the newest held.
    fn epoch_key(&mut self, epoch: u64) -> Option<Key> {
        if let Some((_, key)) = self.epochs.iter().find(|(e, _)| *e == epoch) {
            return Some(key.clone());
        }
        let (newest, key) = self.epochs.last()?;
        if epoch < *newest {
            return None;
        }
        let (mut at, mut key) = (*newest, key.clone());
        while at < epoch {
            key = next_epoch(&key);
            at += 1;
        }
        self.epochs.push((epoch, key.clone()));
        if self.epochs.len() > KEPT_EPOCHS {
            self.epochs.remove(0);
        }
        Some(key)
    }
}

impl ReceiverSessions {
    /// The key of the request `header` for `recipient` (worker `me`, its
    /// session's `enc` and first epoch `since`). Steady state:
    /// a lookup and two HMACs. A session not held (new, evicted, or asked
    /// for an epoch older than those kept) costs one Diffie-Hellman; it is
    /// kept only once `confirm` says the request opened under it, so forged
    /// sessions never displace real ones.
    pub fn key(
        &self,
        secret: &<Kem as hpke::Kem>::PrivateKey,
        recipient: &Recipient,
        header: &SealHeader,
        confirm: impl FnOnce(&[u8; 32]) -> bool,
    ) -> Result<Key, SealError> {
        let (me, enc, since) = (&recipient.worker, recipient.enc.as_slice(), recipient.since);
        let request_id = &header.request_id;
        let epoch = epoch_of(header.sent_at_ms);
        if epoch < since || epoch - since >= MAX_SESSION_EPOCHS {
            return Err(SealError::Malformed(format!(
                "session epoch {since} does not cover the request's epoch {epoch}"
            )));
        }
        let held = {
            let mut sessions = self.sessions.locked();
            sessions
                .get_mut(enc)
                .filter(|s| s.since == since)
                .and_then(|s| {
                    s.used = Instant::now();
                    s.epoch_key(epoch)
                })
        };
        if let Some(epoch_key) = held {
            let key = request_key(&epoch_key, request_id);
            return if confirm(&key) {
                Ok(key)
            } else {
                Err(SealError::Tampered)
            };
        }
        // Not held: rebuild the session from its encapsulation.
        let encapped = <Kem as hpke::Kem>::EncappedKey::from_bytes(enc)
            .map_err(|_| SealError::Malformed("encapsulated key".into()))?;
        let ctx =
            hpke::setup_receiver::<HpkeAead, Kdf, Kem>(&OpModeR::Base, secret, &encapped, SCHEME)
                .map_err(|_| SealError::Tampered)?;
        let mut session = ReceiverSession {
            since,
            epochs: vec![(since, root(|info, out| ctx.export(info, out), me, since)?)],
            used: Instant::now(),
        };
        let epoch_key = session.epoch_key(epoch).expect("epoch is not before since");
        let key = request_key(&epoch_key, request_id);
        if !confirm(&key) {
            return Err(SealError::Tampered);
        }
        let mut sessions = self.sessions.locked();
        if !sessions.contains_key(enc) {
            evict_oldest(&mut sessions, MAX_RECEIVER_SESSIONS, |s| s.used);
        }
        match sessions.get_mut(enc) {
            // Rebuilt for an epoch older than those kept: keep the newer ones.
            Some(held) if held.since == since => {}
            _ => {
                sessions.insert(enc.to_vec(), session);
            }
        }
        Ok(key)
    }

    /// Sessions held now.
    pub fn len(&self) -> usize {
        self.sessions.locked().len()
    }

    /// Forget every session (as a restarted cache would).
    #[cfg(test)]
    pub fn forget(&self) {
        self.sessions.locked().clear();
    }
}

/// Make room for one more in `map` (at most `cap`): drop sessions idle for
/// a session's lifetime, then the least recently used.
fn evict_oldest<K: Clone + Eq + std::hash::Hash, V>(
    map: &mut HashMap<K, V>,
    cap: usize,
    used: impl Fn(&V) -> Instant,
) {
    if map.len() < cap {
        return;
    }
    let idle = Duration::from_millis(EPOCH_MS * SESSION_EPOCHS);
    map.retain(|_, v| used(v).elapsed() < idle);
    if map.len() < cap {
        return;
    }
    if let Some(oldest) = map
        .iter()
        .min_by_key(|(_, v)| used(v))
        .map(|(k, _)| k.clone())
    {
        map.remove(&oldest);
    }
}

#[cfg(test)]
mod tests;
