//! When evidence was made, in a way the host cannot fake. The host controls
//! the guest's clock, so a time the node writes proves nothing; a TON
//! masterchain block's hash is public and unpredictable, so evidence whose
//! report data binds one cannot predate that block. A node binds the newest
//! block it knows (its [`Anchor`]) as the report data's nonce and sends the
//! anchor beside the evidence; a verifier looks the block up on the chain
//! (the hash must match), takes the block's time from the chain, and refuses
//! evidence older than its policy's `max_evidence_age_secs`.
//!
//! Verification is synchronous (inside a TLS handshake), so it never waits
//! for the chain: [`BlockAnchors::lookup`] answers from memory, and a block
//! not seen yet is fetched in the background (the peer's next attempt
//! passes, as with DCAP collateral). Async callers [`BlockAnchors::fetch`]
//! first and never see a pending block.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use crate::sync::LockRecover;

/// How often the newest block is read again (what this node's own new
/// evidence binds, so at most this old when made).
pub const HEAD_EVERY: Duration = Duration::from_secs(30);
/// Blocks kept in memory; the oldest go first.
const MAX_KNOWN: usize = 4096;
/// Lookups waiting at once; more are refused until these are done.
const MAX_WANTED: usize = 256;

/// A masterchain block evidence is anchored to: its sequence number and
/// root hash (as TON's HTTP API gives them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Anchor {
    pub seqno: u32,
    pub root_hash: [u8; 32],
}

/// Wire form: 4 bytes of seqno (big-endian) then the 32-byte root hash.
pub const ANCHOR_LEN: usize = 36;

impl Anchor {
    /// The bytes bound as the report data's nonce and carried beside the
    /// evidence.
    pub fn to_bytes(&self) -> [u8; ANCHOR_LEN] {
        let mut out = [0u8; ANCHOR_LEN];
        out[..4].copy_from_slice(&self.seqno.to_be_bytes());
        out[4..].copy_from_slice(&self.root_hash);
        out
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, String> {
        if bytes.len() != ANCHOR_LEN {
            return Err(format!(
                "a block anchor is {ANCHOR_LEN} bytes, got {}",
                bytes.len()
            ));
        }
        let mut root_hash = [0u8; 32];
        root_hash.copy_from_slice(&bytes[4..]);
        Ok(Self {
            seqno: u32::from_be_bytes(bytes[..4].try_into().expect("4 bytes")),
            root_hash,
        })
    }
}

impl std::fmt::Display for Anchor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "masterchain block {} ({})",
            self.seqno,
            hex::encode(&self.root_hash[..8])
        )
    }
}

/// A block as the chain reports it: its anchor and when it was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnchorBlock {
    pub anchor: Anchor,
    /// The block's `gen_utime` (Unix seconds), from the chain.
    pub gen_utime: u64,
}

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A chain's masterchain blocks (TON's HTTP API, or the embedded devnet).
pub trait BlockSource: Send + Sync + std::fmt::Debug {
    /// The newest block.
    fn head(&self) -> BoxFuture<'_, Result<AnchorBlock, String>>;
    /// Block `seqno`, `None` when the chain has none by that number (yet).
    fn block(&self, seqno: u32) -> BoxFuture<'_, Result<Option<AnchorBlock>, String>>;
}

/// Several endpoints of one chain (TON HTTP APIs run by different
/// parties) whose answers must agree: a block is believed only when every
/// endpoint reports it with the same hash and time, and the head is the
/// lowest of their heads, confirmed by all. One endpoint that lies (to let
/// replayed evidence name a block the chain never had, or to date old
/// evidence as new) is outvoted by any honest one: the lookup fails, and
/// the evidence is not believed. Endpoints that lag are retried.
#[derive(Debug)]
pub struct AgreeingBlocks(Vec<Arc<dyn BlockSource>>);

impl AgreeingBlocks {
    /// `sources`: at least one.
    pub fn new(sources: Vec<Arc<dyn BlockSource>>) -> Arc<Self> {
        assert!(!sources.is_empty(), "at least one block source");
        Arc::new(Self(sources))
    }

    async fn agreed(&self, seqno: u32) -> Result<Option<AnchorBlock>, String> {
        let mut answers = Vec::with_capacity(self.0.len());
        for (i, source) in self.0.iter().enumerate() {
            answers.push(
                source
                    .block(seqno)
                    .await
                    .map_err(|e| format!("endpoint {}: {e}", i + 1))?,
            );
        }
        let first = answers[0];
        if answers.iter().all(|a| *a == first) {
            Ok(first)
        } else {
            Err(format!(
                "the TON endpoints disagree on masterchain block {seqno} ({}): not believed",
                answers
                    .iter()
                    .map(|a| a.map_or("none".to_string(), |b| hex::encode(
                        &b.anchor.root_hash[..8]
                    )))
                    .collect::<Vec<_>>()
                    .join(" / ")
            ))
        }
    }
}

impl BlockSource for AgreeingBlocks {
    fn head(&self) -> BoxFuture<'_, Result<AnchorBlock, String>> {
        Box::pin(async move {
            let mut lowest: Option<u32> = None;
            for (i, source) in self.0.iter().enumerate() {
                let head = source
                    .head()
                    .await
                    .map_err(|e| format!("endpoint {}: {e}", i + 1))?;
                lowest = Some(lowest.map_or(head.anchor.seqno, |l| l.min(head.anchor.seqno)));
            }
            let seqno = lowest.expect("at least one source");
            self.agreed(seqno)
                .await?
                .ok_or_else(|| format!("no endpoint has its own head block {seqno}"))
        })
    }

    fn block(&self, seqno: u32) -> BoxFuture<'_, Result<Option<AnchorBlock>, String>> {
        Box::pin(self.agreed(seqno))
    }
}

/// A chain's blocks given in memory (recorded blocks for an audit, or a
/// test's chain): the last one is the head.
#[derive(Debug, Default)]
pub struct FixedBlocks(Mutex<Vec<AnchorBlock>>);

impl FixedBlocks {
    pub fn new(blocks: &[AnchorBlock]) -> Arc<Self> {
        Arc::new(Self(Mutex::new(blocks.to_vec())))
    }

    /// A new head.
    pub fn push(&self, block: AnchorBlock) {
        self.0.locked().push(block);
    }

    /// The blocks as they stand.
    pub fn blocks(&self) -> Vec<AnchorBlock> {
        self.0.locked().clone()
    }
}

impl BlockSource for FixedBlocks {
    fn head(&self) -> BoxFuture<'_, Result<AnchorBlock, String>> {
        let head = self.0.locked().last().copied();
        Box::pin(async move { head.ok_or_else(|| "no blocks".to_string()) })
    }

    fn block(&self, seqno: u32) -> BoxFuture<'_, Result<Option<AnchorBlock>, String>> {
        let found = self
            .0
            .locked()
            .iter()
            .find(|b| b.anchor.seqno == seqno)
            .copied();
        Box::pin(async move { Ok(found) })
    }
}

/// What the chain says of an anchor, from memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// The chain has this block, made at this time.
    Known { gen_utime: u64 },
    /// The chain's block by that number has another hash (or there is no
    /// such block): the anchor is not of this chain.
    NotOnChain,
    /// Not looked up yet; it is being fetched now.
    Pending,
}

/// Masterchain blocks looked up, and the newest one, kept fresh.
pub struct BlockAnchors {
    source: Arc<dyn BlockSource>,
    head: Mutex<Option<AnchorBlock>>,
    /// Looked-up blocks by seqno: `None` where the chain has no such block.
    known: Mutex<BTreeMap<u32, Option<AnchorBlock>>>,
    wanted: Mutex<BTreeSet<u32>>,
    wake: tokio::sync::Notify,
    started: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for BlockAnchors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockAnchors")
            .field("source", &self.source)
            .field("head", &*self.head.locked())
            .finish_non_exhaustive()
    }
}

impl BlockAnchors {
    pub fn new(source: Arc<dyn BlockSource>) -> Arc<Self> {
        Arc::new(Self {
            source,
            head: Mutex::new(None),
            known: Mutex::default(),
            wanted: Mutex::default(),
            wake: tokio::sync::Notify::new(),
            started: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// The newest block read so far (what new evidence binds).
    pub fn head(&self) -> Option<AnchorBlock> {
        *self.head.locked()
    }

    /// Read the newest block now.
    pub async fn refresh_head(&self) -> Result<AnchorBlock, String> {
        let head = self.source.head().await?;
        *self.head.locked() = Some(head);
        self.remember(head.anchor.seqno, Some(head));
        Ok(head)
    }

    /// Keep the head fresh and serve queued lookups on the current tokio
    /// runtime, until this cache is dropped (once; later calls do nothing).
    pub fn start(self: &Arc<Self>) {
        if self.started.swap(true, std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        let weak = Arc::downgrade(self);
        tokio::spawn(run(weak));
    }

    /// Read the newest block now and keep it fresh from here on: what a
    /// node does before it makes evidence or checks its peers'.
    pub async fn ready(self: &Arc<Self>) -> Result<AnchorBlock, String> {
        let head = self.refresh_head().await?;
        self.start();
        Ok(head)
    }

    /// What the chain says of `anchor`, without waiting: a block not seen
    /// yet is queued for fetching and answered [`Lookup::Pending`].
    pub fn lookup(&self, anchor: &Anchor) -> Lookup {
        if let Some(entry) = self.known.locked().get(&anchor.seqno) {
            return judge(anchor, entry.as_ref());
        }
        {
            let mut wanted = self.wanted.locked();
            if wanted.len() < MAX_WANTED {
                wanted.insert(anchor.seqno);
            }
        }
        self.wake.notify_one();
        Lookup::Pending
    }

    /// Look `anchor` up on the chain now (cached).
    pub async fn fetch(&self, anchor: &Anchor) -> Result<Lookup, String> {
        if let Some(entry) = self.known.locked().get(&anchor.seqno) {
            return Ok(judge(anchor, entry.as_ref()));
        }
        let block = self.source.block(anchor.seqno).await?;
        self.remember(anchor.seqno, block);
        Ok(judge(anchor, block.as_ref()))
    }

    fn remember(&self, seqno: u32, block: Option<AnchorBlock>) {
        let mut known = self.known.locked();
        // A block the chain does not have yet may come: only remember
        // absences below the newest block.
        let below_head = self.head.locked().is_some_and(|h| seqno <= h.anchor.seqno);
        if block.is_none() && !below_head {
            return;
        }
        known.insert(seqno, block);
        while known.len() > MAX_KNOWN {
            known.pop_first();
        }
    }

    /// Fetch the wanted blocks.
    async fn serve_wanted(&self) {
        let wanted: Vec<u32> = std::mem::take(&mut *self.wanted.locked())
            .into_iter()
            .collect();
        for seqno in wanted {
            match self.source.block(seqno).await {
                Ok(block) => self.remember(seqno, block),
                Err(e) => {
                    tracing::warn!(seqno, error = %e, "could not look up a masterchain block")
                }
            }
        }
    }
}

fn judge(anchor: &Anchor, block: Option<&AnchorBlock>) -> Lookup {
    match block {
        Some(block) if block.anchor == *anchor => Lookup::Known {
            gen_utime: block.gen_utime,
        },
        _ => Lookup::NotOnChain,
    }
}

/// Serve lookups as they are wanted, and read the head every
/// [`HEAD_EVERY`] (the caller read it just before starting).
async fn run(weak: Weak<BlockAnchors>) {
    let mut next_head = tokio::time::Instant::now() + HEAD_EVERY;
    loop {
        let Some(anchors) = weak.upgrade() else {
            return;
        };
        {
            let notified = anchors.wake.notified();
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep_until(next_head) => {}
            }
        }
        if tokio::time::Instant::now() >= next_head {
            if let Err(e) = anchors.refresh_head().await {
                tracing::warn!(error = %e, "could not read the newest masterchain block");
            }
            next_head = tokio::time::Instant::now() + HEAD_EVERY;
        }
        anchors.serve_wanted().await;
        drop(anchors);
    }
}

/// Why evidence is not fresh enough.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize)]
pub enum Staleness {
    #[error("the evidence binds no TON masterchain block, so nothing shows when it was made (the policy requires fresh evidence)")]
    NoAnchor,
    #[error("this node cannot check when evidence was made: it has no TON chain to look blocks up on (attestation.ton_api)")]
    NoChain,
    #[error("the evidence names {0}, which is not a block of this chain: it was not made after a real block")]
    NotOnChain(String),
    #[error("{0} is being looked up on the chain; the peer's next attempt can pass")]
    Pending(String),
    #[error("the evidence was made after {anchor} of {gen_utime} (Unix), {age_secs} s before now: older than the {max_secs} s the policy accepts")]
    TooOld {
        anchor: String,
        gen_utime: u64,
        age_secs: u64,
        max_secs: u64,
    },
}

/// Decide on `anchor` (what evidence binds) at `now`: on this chain and at
/// most `max_secs` old. Returns the block's time.
pub fn check(
    anchors: Option<&BlockAnchors>,
    anchor: Option<&Anchor>,
    now: u64,
    max_secs: u64,
) -> Result<u64, Staleness> {
    let anchor = anchor.ok_or(Staleness::NoAnchor)?;
    let anchors = anchors.ok_or(Staleness::NoChain)?;
    match anchors.lookup(anchor) {
        Lookup::Pending => Err(Staleness::Pending(anchor.to_string())),
        Lookup::NotOnChain => Err(Staleness::NotOnChain(anchor.to_string())),
        Lookup::Known { gen_utime } => {
            let age_secs = now.saturating_sub(gen_utime);
            if age_secs > max_secs {
                return Err(Staleness::TooOld {
                    anchor: anchor.to_string(),
                    gen_utime,
                    age_secs,
                    max_secs,
                });
            }
            Ok(gen_utime)
        }
    }
}

#[cfg(test)]
mod tests;
