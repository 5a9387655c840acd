//! Refusing replayed sealed requests: a request id is served once, and only
//! while its send time is within the window of the worker's clock. The window's
//! lower edge (the horizon) only moves forward, so setting the host's clock
//! back cannot readmit an old request; ids are forgotten once the horizon
//! passes their send time (they are refused by time from then on), so memory
//! is bounded by the request rate times the window.

use cocoon_protocol::sync::LockRecover;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// Why a sealed request was refused as a replay.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    #[error("request was sealed {age_ms} ms from now, outside the replay window of {window_ms} ms (check clocks)")]
    OutsideWindow { age_ms: i64, window_ms: u64 },
    #[error("request id was already served (replayed)")]
    Replayed,
}

pub struct ReplayGuard {
    window_ms: u64,
    seen: Mutex<Seen>,
}

#[derive(Default)]
struct Seen {
    /// Request id -> its send time (Unix ms).
    ids: HashMap<[u8; 16], u64>,
    /// Requests sent at or before this are refused; never decreases.
    horizon_ms: u64,
    /// The horizon at the last sweep.
    swept_at: u64,
}

impl ReplayGuard {
    pub fn new(window: Duration) -> Self {
        Self {
            window_ms: window.as_millis() as u64,
            seen: Mutex::default(),
        }
    }

    /// Admit request `id` sent at `sent_at_ms` (Unix ms) when the worker's
    /// clock reads `now_ms`: once, and only inside the window.
    pub fn admit(&self, id: [u8; 16], sent_at_ms: u64, now_ms: u64) -> Result<(), ReplayError> {
        let mut seen = self.seen.locked();
        seen.horizon_ms = seen.horizon_ms.max(now_ms.saturating_sub(self.window_ms));
        if sent_at_ms <= seen.horizon_ms || sent_at_ms > now_ms.saturating_add(self.window_ms) {
            return Err(ReplayError::OutsideWindow {
                age_ms: now_ms as i64 - sent_at_ms as i64,
                window_ms: self.window_ms,
            });
        }
        if seen.horizon_ms >= seen.swept_at + self.window_ms / 4 {
            let horizon = seen.horizon_ms;
            seen.ids.retain(|_, sent| *sent > horizon);
            seen.swept_at = horizon;
        }
        if seen.ids.insert(id, sent_at_ms).is_some() {
            return Err(ReplayError::Replayed);
        }
        Ok(())
    }

    /// Ids remembered now.
    #[cfg(test)]
    pub fn remembered(&self) -> usize {
        self.seen.locked().ids.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: u64 = 60_000;

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
    fn old_ids_are_forgotten_and_a_clock_set_back_does_not_readmit_them() {
        let guard = ReplayGuard::new(Duration::from_secs(60));
        let t0 = 1_000_000_000;
        guard.admit([1; 16], t0, t0).unwrap();
        // Time passes: the id is swept, and refused by time.
        guard
            .admit([2; 16], t0 + 2 * MINUTE, t0 + 2 * MINUTE)
            .unwrap();
        assert_eq!(guard.remembered(), 1);
        assert!(matches!(
            guard.admit([1; 16], t0, t0 + 2 * MINUTE),
            Err(ReplayError::OutsideWindow { .. })
        ));
        // The host sets the clock back to t0: the old request is still refused.
        assert!(matches!(
            guard.admit([1; 16], t0, t0),
            Err(ReplayError::OutsideWindow { .. })
        ));
    }
}
