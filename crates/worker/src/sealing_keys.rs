//! [`SealingKeys`]: the worker's sealing keys, rotated on schedule.
//!
//! Whoever holds a sealing key's secret can open every request sealed to it,
//! including requests a proxy or the host recorded earlier. A worker
//! therefore makes a new sealing key in enclave memory every
//! `sealing_key_rotation_secs`, announces it (with fresh evidence binding it)
//! on every proxy connection, keeps the previous key only while a request
//! sealed to it can still be admitted (the replay window, or the period if
//! shorter), and then drops it: x25519-dalek zeroizes the secret, and the
//! sessions opened under it go with it. After that, nothing this worker
//! holds opens what was sealed to the old key. A request that opens under
//! none of the keys held, once a rotation has happened, is refused as
//! `keys_changed`, and the client node seals it again to the key announced
//! now.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use cocoon_protocol::sealed::{ReplySealer, SealError, SealedRequest, SealingKey};
use cocoon_protocol::sync::LockRecover;
use cocoon_protocol::tls::Fingerprint;
use cocoon_protocol::GenerateRequest;
use tokio::sync::watch;
// Tokio's clock (the std one outside a paused test runtime), so tests can
// let hours of rotation pass at once.
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The default `sealing_key_rotation_secs`.
pub const DEFAULT_ROTATION: Duration = Duration::from_secs(3600);

/// The current sealing key, and the one before it while requests sealed to
/// it may still arrive.
pub struct SealingKeys {
    period: Duration,
    grace: Duration,
    state: Mutex<State>,
    /// Bumped at every rotation (announcements follow it).
    rotations: watch::Sender<u64>,
}

struct State {
    current: Arc<SealingKey>,
    made: Instant,
    /// The previous key and when it was retired.
    previous: Option<(Arc<SealingKey>, Instant)>,
}

impl std::fmt::Debug for SealingKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealingKeys")
            .field("period", &self.period)
            .field("current", &self.current())
            .finish_non_exhaustive()
    }
}

impl SealingKeys {
    /// A first key, rotated every `period`; the previous one kept for
    /// `replay_window` (what requests may still be admitted) or `period`,
    /// whichever is shorter.
    pub fn new(period: Duration, replay_window: Duration) -> Self {
        Self {
            period,
            grace: replay_window.min(period),
            state: Mutex::new(State {
                current: Arc::new(SealingKey::generate()),
                made: Instant::now(),
                previous: None,
            }),
            rotations: watch::channel(0).0,
        }
    }

    /// The key announced now.
    pub fn current(&self) -> Arc<SealingKey> {
        self.state.locked().current.clone()
    }

    /// Rotations so far, and a receiver woken at each.
    pub fn rotations(&self) -> watch::Receiver<u64> {
        self.rotations.subscribe()
    }

    /// Open `sealed` (for worker `me`) under the current key, else under the
    /// previous one while it is kept.
    pub fn open(
        &self,
        me: &Fingerprint,
        sealed: &SealedRequest,
    ) -> Result<(GenerateRequest, ReplySealer), Unopened> {
        let (current, previous) = {
            let state = self.state.locked();
            let previous = state
                .previous
                .as_ref()
                .filter(|(_, retired)| retired.elapsed() < self.grace)
                .map(|(key, _)| key.clone());
            (state.current.clone(), previous)
        };
        let error = match current.open(me, sealed) {
            Ok(opened) => return Ok(opened),
            Err(e) => e,
        };
        if let (SealError::Tampered, Some(previous)) = (&error, previous) {
            if let Ok(opened) = previous.open(me, sealed) {
                return Ok(opened);
            }
        }
        Err(Unopened {
            rotated: *self.rotations.borrow() > 0 && matches!(error, SealError::Tampered),
            error,
        })
    }

    /// Make a new current key; the current one becomes the previous (the
    /// one before it is dropped now).
    pub fn rotate(&self) {
        {
            let mut state = self.state.locked();
            let now = Instant::now();
            let retired = std::mem::replace(&mut state.current, Arc::new(SealingKey::generate()));
            state.previous = Some((retired, now));
            state.made = now;
        }
        self.rotations.send_modify(|n| *n += 1);
        tracing::info!(public = ?self.current(), "sealing key rotated");
    }

    /// Drop the previous key once its grace is over, and rotate when the
    /// current one is due; when to look again.
    fn tick(&self, now: Instant) -> Instant {
        let due = {
            let mut state = self.state.locked();
            if let Some((_, retired)) = &state.previous {
                if now >= *retired + self.grace {
                    state.previous = None;
                }
            }
            now >= state.made + self.period
        };
        if due {
            self.rotate();
        }
        let state = self.state.locked();
        let next = state.made + self.period;
        match &state.previous {
            Some((_, retired)) => next.min(*retired + self.grace),
            None => next,
        }
    }

    /// Whether the previous key is still held (for tests and status).
    pub fn holds_previous(&self) -> bool {
        self.state.locked().previous.is_some()
    }

    /// For the status page: the public key announced now, how many
    /// rotations there were, the period, and whether the previous key is
    /// still held.
    pub fn status(&self) -> serde_json::Value {
        serde_json::json!({
            "public": hex::encode(self.current().public()),
            "rotations": *self.rotations.borrow(),
            "rotation_secs": self.period.as_secs(),
            "previous_held": self.holds_previous(),
        })
    }
}

/// Why a request did not open: the error under the current key, and
/// whether it may have been sealed to a key this worker has since dropped.
#[derive(Debug)]
pub struct Unopened {
    pub error: SealError,
    pub rotated: bool,
}

/// Rotate `keys` on schedule, and drop each previous key once its grace is
/// over, until `stop`.
pub async fn rotate_on_schedule(keys: Arc<SealingKeys>, stop: CancellationToken) {
    let mut next = keys.tick(Instant::now());
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep_until(next) => {}
        }
        next = keys.tick(Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use cocoon_protocol::sealed::{seal, SealTo};
    use cocoon_protocol::{ChatMessage, GenerateRequest, Input, SamplingParams};

    use super::*;

    fn me() -> Fingerprint {
        Fingerprint([7; 32])
    }

    fn sealed_to(key: &SealingKey) -> SealedRequest {
        let request = GenerateRequest {
            model: "m".into(),
            input: Input::Chat(vec![ChatMessage::new("user", "a recorded prompt")]),
            params: SamplingParams::default(),
        };
        seal(
            &request,
            &[SealTo::at_base_price(me(), key.public())],
            1_000,
        )
        .unwrap()
        .0
    }

    /// A proxy (or the host) records a sealed request and, after the
    /// worker rotated and the grace ran out, hands it back hoping the
    /// worker's keys still open it: nothing does, and the refusal tells an
    /// honest client node to seal again.
    #[tokio::test(start_paused = true)]
    async fn after_a_rotation_and_its_grace_nothing_the_worker_holds_opens_an_old_request() {
        let keys = Arc::new(SealingKeys::new(
            Duration::from_secs(60),
            Duration::from_secs(10),
        ));
        let recorded = sealed_to(&keys.current());
        assert!(keys.open(&me(), &recorded).is_ok());
        let stop = CancellationToken::new();
        tokio::spawn(rotate_on_schedule(keys.clone(), stop.clone()));
        let mut rotations = keys.rotations();
        rotations.changed().await.unwrap();
        // Within the grace: a request sealed before the rotation still opens,
        // and so does one sealed to the new key.
        assert!(keys.holds_previous());
        assert!(keys.open(&me(), &recorded).is_ok());
        assert!(keys.open(&me(), &sealed_to(&keys.current())).is_ok());
        tokio::time::sleep(Duration::from_secs(11)).await;
        assert!(!keys.holds_previous(), "the old key is dropped");
        let refused = keys.open(&me(), &recorded).unwrap_err();
        assert!(refused.rotated, "{refused:?}");
        assert!(matches!(refused.error, SealError::Tampered));
        // A request for another worker is not mistaken for a rotation.
        let other = keys
            .open(&Fingerprint([8; 32]), &sealed_to(&keys.current()))
            .unwrap_err();
        assert!(!other.rotated && matches!(other.error, SealError::NotForUs));
        // It goes on rotating.
        let before = keys.current().public();
        rotations.changed().await.unwrap();
        assert_ne!(keys.current().public(), before);
        stop.cancel();
    }
}
