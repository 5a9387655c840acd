//! The sealed requests this proxy has forwarded, by request id: each is
//! forwarded, answered and billed once. A second request with the same id
//! (a dishonest relay or client sending one sealed request to another of its
//! recipients, or replaying it) is refused before it reaches a worker.
//!
//! Honest client nodes never repeat an id: a reseal is a new seal with a new
//! random id. Ids are kept for [`KEEP`] (longer than any worker's replay
//! window, after which workers refuse the request as stale anyway) and at
//! most [`MAX_IDS`] of them, oldest dropped first; a restarted proxy starts
//! empty (the workers' own replay guards still hold).

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use cocoon_protocol::sync::LockRecover;

/// How long an id is remembered: longer than the largest replay window a
/// worker may be configured with (`replay_window_secs` up to an hour).
pub const KEEP: Duration = Duration::from_secs(65 * 60);
/// Ids remembered at most (about 40 bytes each).
pub const MAX_IDS: usize = 1 << 20;

#[derive(Default)]
pub struct RequestIds {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    seen: HashSet<[u8; 16]>,
    order: VecDeque<(Instant, [u8; 16])>,
}

impl RequestIds {
    /// True the first time `id` is offered; false for a repeat.
    pub fn first_time(&self, id: [u8; 16]) -> bool {
        self.first_time_at(id, Instant::now(), KEEP, MAX_IDS)
    }

    fn first_time_at(&self, id: [u8; 16], now: Instant, keep: Duration, max: usize) -> bool {
        let mut inner = self.inner.locked();
        while let Some(&(at, old)) = inner.order.front() {
            if now.duration_since(at) < keep && inner.order.len() < max {
                break;
            }
            inner.order.pop_front();
            inner.seen.remove(&old);
        }
        if !inner.seen.insert(id) {
            return false;
        }
        inner.order.push_back((now, id));
        true
    }

    /// Ids remembered now.
    pub fn len(&self) -> usize {
        self.inner.locked().seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_passes_once_and_is_forgotten_after_its_time_or_when_full() {
        let ids = RequestIds::default();
        let t0 = Instant::now();
        let keep = Duration::from_secs(60);
        assert!(ids.first_time_at([1; 16], t0, keep, 3));
        assert!(!ids.first_time_at([1; 16], t0, keep, 3));
        assert!(ids.first_time_at([2; 16], t0, keep, 3));
        // Past its time: forgotten (workers refuse it as stale by then).
        let later = t0 + Duration::from_secs(61);
        assert!(ids.first_time_at([1; 16], later, keep, 3));
        assert!(!ids.first_time_at([1; 16], later, keep, 3));
        // Full: the oldest goes first.
        assert!(ids.first_time_at([3; 16], later, keep, 3));
        assert!(ids.first_time_at([4; 16], later, keep, 3));
        assert!(ids.len() <= 3);
        assert!(!ids.first_time_at([4; 16], later, keep, 3));
    }
}
