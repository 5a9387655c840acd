//! Refusing replayed sealed requests: a request id is served once, and only
//! while its send time is within the window of the worker's clock. Ids are
//! remembered for the window and then forgotten (a request that old is refused
//! by its time), so memory is bounded by the request rate times the window.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Why a sealed request was refused as a replay.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    #[error("request was sealed {age_ms} ms from now, outside the replay window of {window_ms} ms (check clocks)")]
    OutsideWindow { age_ms: i64, window_ms: u64 },
    #[error("request id was already served (replayed)")]
    Replayed,
}

pub struct ReplayGuard {
    window: Duration,
    seen: Mutex<Seen>,
}

struct Seen {
    ids: HashMap<[u8; 16], Instant>,
    last_sweep: Instant,
}

impl ReplayGuard {
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            seen: Mutex::new(Seen {
                ids: HashMap::new(),
                last_sweep: Instant::now(),
            }),
        }
    }

    /// Admit request `id` sent at `sent_at_ms` (Unix ms) when the worker's
    /// clock reads `now_ms`: once, and only inside the window.
    pub fn admit(&self, id: [u8; 16], sent_at_ms: u64, now_ms: u64) -> Result<(), ReplayError> {
        let age_ms = now_ms as i64 - sent_at_ms as i64;
        let window_ms = self.window.as_millis() as u64;
        if age_ms.unsigned_abs() > window_ms {
            return Err(ReplayError::OutsideWindow { age_ms, window_ms });
        }
        let now = Instant::now();
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if now.duration_since(seen.last_sweep) >= self.window / 4 {
            // Ids older than two windows can no longer pass the time check.
            let keep = self.window * 2;
            seen.ids.retain(|_, at| now.duration_since(*at) < keep);
            seen.last_sweep = now;
        }
        if seen.ids.insert(id, now).is_some() {
            return Err(ReplayError::Replayed);
        }
        Ok(())
    }

    /// Ids remembered now.
    #[cfg(test)]
    pub fn remembered(&self) -> usize {
        self.seen.lock().map(|s| s.ids.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_is_served_once_and_only_inside_the_window() {
        let guard = ReplayGuard::new(Duration::from_secs(60));
        let now = 1_000_000_000;
        guard.admit([1; 16], now - 5_000, now).unwrap();
        assert_eq!(
            guard.admit([1; 16], now - 5_000, now),
            Err(ReplayError::Replayed)
        );
        guard.admit([2; 16], now + 59_000, now).unwrap();
        assert!(matches!(
            guard.admit([3; 16], now - 61_000, now),
            Err(ReplayError::OutsideWindow { .. })
        ));
        assert!(matches!(
            guard.admit([4; 16], now + 61_000, now),
            Err(ReplayError::OutsideWindow { .. })
        ));
        assert_eq!(guard.remembered(), 2);
    }

    #[test]
    fn old_ids_are_forgotten() {
        let guard = ReplayGuard::new(Duration::from_millis(20));
        guard.admit([1; 16], 0, 0).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        guard.admit([2; 16], 0, 0).unwrap();
        assert_eq!(guard.remembered(), 1);
    }
}
