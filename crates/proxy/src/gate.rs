//! The door in front of the handshake. An open proxy accepts connections
//! from anyone, and every TLS handshake (with RA-TLS evidence to check)
//! costs it more than it costs the peer; so before a connection may start
//! one, its source address must have a handshake slot (at most
//! `per_source_in_flight` unfinished at once; at most `in_flight` from all
//! sources) and a token (`per_source_per_sec`, bursts of `per_source_burst`).
//! A connection without either is closed at once, so a flood of bad or
//! half-finished connections from a few addresses holds a few slots for
//! at most the handshake timeout, while everyone else's traffic flows.
//! While more than `pow_above_in_flight` handshakes are unfinished (a
//! flood from many addresses), each new connection must first prove
//! `pow_difficulty` bits of work (see `cocoon_protocol::pow`) before its
//! handshake begins.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use cocoon_protocol::sync::LockRecover;

/// The limits (`[admission]` in proxy.toml; a key left out keeps its
/// default).
#[derive(Debug, Clone, Copy, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct GateSettings {
    /// Unfinished handshakes from one address at once.
    pub per_source_in_flight: usize,
    /// Unfinished handshakes from everyone at once.
    pub in_flight: usize,
    /// New handshakes per second from one address, on average...
    pub per_source_per_sec: f64,
    /// ...and at most this many at once after a quiet spell.
    pub per_source_burst: f64,
    /// Proof of work asked of new connections while the proxy is busy:
    /// leading zero bits of a SHA-256 (20: about a million hashes, ~1 s
    /// of one core; 0: never asked).
    pub pow_difficulty: u8,
    /// Busy: more than this many handshakes unfinished (0: always ask).
    pub pow_above_in_flight: usize,
}

impl Default for GateSettings {
    fn default() -> Self {
        Self {
            per_source_in_flight: 64,
            in_flight: 4096,
            per_source_per_sec: 50.0,
            per_source_burst: 200.0,
            pow_difficulty: 20,
            pow_above_in_flight: 256,
        }
    }
}

/// Why a connection was closed before its handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Turned {
    #[error("too many unfinished handshakes from this address")]
    SourceBusy,
    #[error("too many unfinished handshakes")]
    Busy,
    #[error("too many new connections from this address")]
    TooFast,
}

struct Source {
    in_flight: usize,
    tokens: f64,
    at: Instant,
}

/// The gate's state, shared by the accept loop and the handshakes.
pub struct Gate {
    settings: GateSettings,
    state: Mutex<(HashMap<IpAddr, Source>, usize)>,
}

/// A handshake slot; given back when dropped (the handshake ended, either way).
pub struct Pass {
    gate: Arc<Gate>,
    source: IpAddr,
}

/// Sources remembered at most (idle ones are forgotten first).
const MAX_SOURCES: usize = 100_000;

impl Gate {
    pub fn new(settings: GateSettings) -> Arc<Self> {
        Arc::new(Self {
            settings,
            state: Mutex::new((HashMap::new(), 0)),
        })
    }

    /// A slot for a handshake from `source`, or why not.
    pub fn enter(self: &Arc<Self>, source: IpAddr) -> Result<Pass, Turned> {
        let s = &self.settings;
        let mut state = self.state.locked();
        let (sources, in_flight) = &mut *state;
        if *in_flight >= s.in_flight {
            return Err(Turned::Busy);
        }
        if sources.len() >= MAX_SOURCES && !sources.contains_key(&source) {
            sources.retain(|_, v| v.in_flight > 0);
        }
        let now = Instant::now();
        let entry = sources.entry(source).or_insert(Source {
            in_flight: 0,
            tokens: s.per_source_burst,
            at: now,
        });
        entry.tokens = (entry.tokens
            + now.duration_since(entry.at).as_secs_f64() * s.per_source_per_sec)
            .min(s.per_source_burst);
        entry.at = now;
        if entry.in_flight >= s.per_source_in_flight {
            return Err(Turned::SourceBusy);
        }
        if entry.tokens < 1.0 {
            return Err(Turned::TooFast);
        }
        entry.tokens -= 1.0;
        entry.in_flight += 1;
        *in_flight += 1;
        Ok(Pass {
            gate: self.clone(),
            source,
        })
    }

    /// The proof of work a connection just let in must give first, when
    /// the proxy is busy.
    pub fn challenge(&self) -> Option<cocoon_protocol::pow::Challenge> {
        let s = &self.settings;
        (s.pow_difficulty > 0 && self.in_flight() > s.pow_above_in_flight)
            .then(|| cocoon_protocol::pow::Challenge::new(s.pow_difficulty))
    }

    /// Unfinished handshakes now (all sources).
    pub fn in_flight(&self) -> usize {
        self.state.locked().1
    }
}

impl Drop for Pass {
    fn drop(&mut self) {
        let mut state = self.gate.state.locked();
        let (sources, in_flight) = &mut *state;
        *in_flight = in_flight.saturating_sub(1);
        if let Some(source) = sources.get_mut(&self.source) {
            source.in_flight = source.in_flight.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn unfinished_handshakes_are_capped_per_source_and_in_all() {
        let gate = Gate::new(GateSettings {
            per_source_in_flight: 2,
            in_flight: 3,
            per_source_per_sec: 1000.0,
            per_source_burst: 1000.0,
            ..GateSettings::default()
        });
        let a1 = gate.enter(ip(1)).unwrap();
        let _a2 = gate.enter(ip(1)).unwrap();
        assert_eq!(gate.enter(ip(1)).err(), Some(Turned::SourceBusy));
        let _b1 = gate.enter(ip(2)).unwrap();
        assert_eq!(gate.enter(ip(3)).err(), Some(Turned::Busy));
        drop(a1);
        assert_eq!(gate.in_flight(), 2);
        gate.enter(ip(3)).unwrap();
    }

    #[test]
    fn new_handshakes_are_rate_limited_per_source() {
        let gate = Gate::new(GateSettings {
            per_source_in_flight: 100,
            in_flight: 100,
            per_source_per_sec: 0.001,
            per_source_burst: 3.0,
            ..GateSettings::default()
        });
        for _ in 0..3 {
            drop(gate.enter(ip(1)).unwrap());
        }
        assert_eq!(gate.enter(ip(1)).err(), Some(Turned::TooFast));
        // Another address is not held up by the first.
        gate.enter(ip(2)).unwrap();
    }

    #[test]
    fn work_is_asked_only_while_busy() {
        let gate = Gate::new(GateSettings {
            pow_above_in_flight: 2,
            pow_difficulty: 20,
            ..GateSettings::default()
        });
        let (_a, _b) = (gate.enter(ip(1)).unwrap(), gate.enter(ip(2)).unwrap());
        assert_eq!(gate.challenge(), None);
        let _c = gate.enter(ip(3)).unwrap();
        assert_eq!(gate.challenge().map(|c| c.difficulty), Some(20));
        let never = Gate::new(GateSettings {
            pow_above_in_flight: 0,
            pow_difficulty: 0,
            ..GateSettings::default()
        });
        let _d = never.enter(ip(1)).unwrap();
        assert_eq!(never.challenge(), None);
    }
}
