//! Proof of work before the TLS handshake. Every Cocoon TLS port first
//! sends one byte: go ahead, or a challenge (a difficulty and 32 random
//! bytes). A challenged dialer must answer with a nonce such that
//! SHA-256(`cocoon-pow-v1` ‖ challenge ‖ nonce) starts with `difficulty`
//! zero bits before its handshake is accepted. An open proxy challenges
//! while many handshakes are unfinished (see the proxy's gate): a
//! handshake with RA-TLS evidence to check costs it far more than it costs
//! the peer, and the work makes a flood from many addresses cost the flood
//! about 2^difficulty hashes per connection (2^20, COCOON's difficulty:
//! about a second of one core) while an honest node, which connects once
//! and stays, hardly notices.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::ProtocolError;

/// The first byte a server sends: no work asked.
const GO: u8 = 0;
/// The first byte a server sends: a challenge follows.
const CHALLENGE: u8 = 1;

/// The most work a dialer does for one connection (2^24 hashes, a few
/// seconds of one core, within the 10 s handshake timeout): a server
/// asking more is refused, not obeyed. (The challenge comes before TLS,
/// so anyone on the path can ask; this bounds what it costs the dialer.)
pub const MAX_DIFFICULTY: u8 = 24;

const DOMAIN: &[u8] = b"cocoon-pow-v1";

/// How long a dialer waits for the server's first byte.
const SILENCE: std::time::Duration = std::time::Duration::from_secs(5);

/// What a challenged dialer must solve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Challenge {
    /// Leading zero bits the hash must have.
    pub difficulty: u8,
    pub seed: [u8; 32],
}

impl Challenge {
    /// A fresh random challenge at `difficulty` bits.
    pub fn new(difficulty: u8) -> Self {
        let mut seed = [0u8; 32];
        rand_core::TryRngCore::try_fill_bytes(&mut rand_core::OsRng, &mut seed)
            .expect("the OS gives randomness");
        Self { difficulty, seed }
    }

    fn hash(&self, nonce: u64) -> [u8; 32] {
        let mut hasher = Sha256::new();
        hasher.update(DOMAIN);
        hasher.update(self.seed);
        hasher.update(nonce.to_le_bytes());
        hasher.finalize().into()
    }

    /// Whether `nonce` solves this challenge.
    pub fn solved_by(&self, nonce: u64) -> bool {
        leading_zero_bits(&self.hash(nonce)) >= u32::from(self.difficulty)
    }

    /// The first nonce that solves it (about 2^difficulty tries).
    pub fn solve(&self) -> u64 {
        self.solve_unless(&AtomicBool::new(false))
            .expect("not cancelled")
    }

    /// [`Challenge::solve`], giving up (`None`) once `cancelled` is set.
    pub fn solve_unless(&self, cancelled: &AtomicBool) -> Option<u64> {
        for nonce in 0u64.. {
            if nonce % 65_536 == 0 && cancelled.load(Ordering::Relaxed) {
                return None;
            }
            if self.solved_by(nonce) {
                return Some(nonce);
            }
        }
        None
    }
}

fn leading_zero_bits(hash: &[u8; 32]) -> u32 {
    let mut bits = 0;
    for byte in hash {
        if *byte == 0 {
            bits += 8;
        } else {
            return bits + byte.leading_zeros();
        }
    }
    bits
}

fn io(e: std::io::Error) -> ProtocolError {
    ProtocolError::Io(e)
}

/// Server side, first thing on an accepted socket: say go, or challenge
/// and check the answer (a wrong one is an error: close the socket).
pub async fn demand(
    tcp: &mut TcpStream,
    challenge: Option<Challenge>,
) -> Result<(), ProtocolError> {
    let Some(challenge) = challenge else {
        return tcp.write_all(&[GO]).await.map_err(io);
    };
    let mut message = [0u8; 34];
    message[0] = CHALLENGE;
    message[1] = challenge.difficulty;
    message[2..].copy_from_slice(&challenge.seed);
    tcp.write_all(&message).await.map_err(io)?;
    let mut nonce = [0u8; 8];
    tcp.read_exact(&mut nonce).await.map_err(io)?;
    if challenge.solved_by(u64::from_le_bytes(nonce)) {
        Ok(())
    } else {
        Err(ProtocolError::Tls(
            "the peer's proof of work does not solve the challenge".into(),
        ))
    }
}

/// The first protocol version whose TLS ports speak first.
const FIRST_TO_SPEAK: u16 = 15;

/// Dialer side, first thing on a connected socket: read the server's
/// word and, when challenged, do the work (off the async threads) and
/// send the nonce.
pub async fn prove(tcp: &mut TcpStream) -> Result<(), ProtocolError> {
    let mut first = [0u8; 1];
    // A server speaks at once: one that stays silent is not a Cocoon TLS
    // port of protocol 15 or later (an older node waits for our hello).
    match tokio::time::timeout(SILENCE, tcp.read_exact(&mut first)).await {
        Ok(read) => {
            read.map_err(io)?;
        }
        Err(_) => {
            return Err(ProtocolError::Tls(format!(
                "the server sent nothing for {} s: not a Cocoon node of protocol {FIRST_TO_SPEAK} or later (they speak first, see docs/protocol.md)",
                SILENCE.as_secs(),
            )))
        }
    }
    match first[0] {
        GO => Ok(()),
        CHALLENGE => {
            let mut rest = [0u8; 33];
            tcp.read_exact(&mut rest).await.map_err(io)?;
            let challenge = Challenge {
                difficulty: rest[0],
                seed: rest[1..].try_into().expect("32 bytes"),
            };
            if challenge.difficulty > MAX_DIFFICULTY {
                return Err(ProtocolError::Tls(format!(
                    "the server asks for proof of work of difficulty {}; at most {MAX_DIFFICULTY} is done",
                    challenge.difficulty
                )));
            }
            // The work stops when the dial is given up (its timeout).
            let cancelled = Arc::new(AtomicBool::new(false));
            let _stop = CancelOnDrop(cancelled.clone());
            let nonce = tokio::task::spawn_blocking(move || challenge.solve_unless(&cancelled))
                .await
                .map_err(|e| ProtocolError::Tls(format!("proof of work: {e}")))?
                .ok_or_else(|| ProtocolError::Tls("proof of work given up".into()))?;
            tcp.write_all(&nonce.to_le_bytes()).await.map_err(io)
        }
        other => Err(ProtocolError::Tls(format!(
            "the server opened with byte {other:#04x}, not a Cocoon TLS port"
        ))),
    }
}

/// Sets its flag when dropped: a dial given up stops its work.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_solution_has_the_leading_zero_bits_and_another_nonce_rarely_does() {
        let challenge = Challenge::new(12);
        let nonce = challenge.solve();
        assert!(challenge.solved_by(nonce));
        assert!(leading_zero_bits(&challenge.hash(nonce)) >= 12);
        // The same nonce does not solve another seed (1 in 4096 would).
        let other = Challenge::new(12);
        let tries = (0..8u64)
            .filter(|i| other.solved_by(nonce.wrapping_add(*i)))
            .count();
        assert!(tries < 8);
        assert_eq!(leading_zero_bits(&[0u8; 32]), 256);
        let mut hash = [0u8; 32];
        hash[1] = 0b0001_0000;
        assert_eq!(leading_zero_bits(&hash), 11);
    }

    #[tokio::test]
    async fn a_challenged_dialer_proves_work_and_a_wrong_answer_is_refused() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let mut outcomes = Vec::new();
            for challenge in [None, Some(Challenge::new(10)), Some(Challenge::new(10))] {
                let (mut tcp, _) = listener.accept().await.unwrap();
                outcomes.push(demand(&mut tcp, challenge).await.is_ok());
            }
            outcomes
        });
        // Not challenged, then challenged: both get through.
        for _ in 0..2 {
            let mut tcp = TcpStream::connect(address).await.unwrap();
            prove(&mut tcp).await.unwrap();
        }
        // A dialer answering without doing the work.
        let mut tcp = TcpStream::connect(address).await.unwrap();
        let mut challenge = [0u8; 34];
        tcp.read_exact(&mut challenge).await.unwrap();
        let seed: [u8; 32] = challenge[2..].try_into().unwrap();
        let wrong = (0u64..)
            .find(|n| {
                !Challenge {
                    difficulty: 10,
                    seed,
                }
                .solved_by(*n)
            })
            .unwrap();
        tcp.write_all(&wrong.to_le_bytes()).await.unwrap();
        assert_eq!(server.await.unwrap(), vec![true, true, false]);
    }

    #[tokio::test]
    async fn a_dialer_refuses_absurd_work() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut tcp, _) = listener.accept().await.unwrap();
            let _ = demand(&mut tcp, Some(Challenge::new(MAX_DIFFICULTY + 1))).await;
        });
        let mut tcp = TcpStream::connect(address).await.unwrap();
        let err = prove(&mut tcp).await.unwrap_err().to_string();
        assert!(err.contains("at most 24"), "{err}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_server_is_named_as_older_than_this_protocol() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let server = tokio::spawn(async move { listener.accept().await.unwrap() });
        let mut tcp = TcpStream::connect(address).await.unwrap();
        let err = prove(&mut tcp).await.unwrap_err().to_string();
        assert!(err.contains("protocol 15 or later"), "{err}");
        drop(server);
    }

    #[test]
    fn work_given_up_stops() {
        let cancelled = AtomicBool::new(true);
        // 2^60 tries would never end: a set flag ends it at once.
        let hard = Challenge::new(60);
        assert_eq!(hard.solve_unless(&cancelled), None);
    }
}
