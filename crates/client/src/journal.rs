//! The receipts this node paid for, kept on disk: one JSON line per verified
//! receipt, with the worker's public key and what it cost, so that what a
//! proxy charged on chain can be compared with signed data long after the
//! answers (docs/economics.md). Appended as each paid answer ends; bounded:
//! past [`MAX_BYTES`] the file is moved to `FILE.1` (replacing the previous
//! one) and a new one begins, so the latest 64 to 128 MiB of receipts are
//! kept (copy `FILE.1` away to keep more).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use cocoon_protocol::sync::LockRecover;
use cocoon_protocol::{Receipt, SignedReceipt};
use serde::{Deserialize, Serialize};

/// Largest journal file before it is rotated.
pub const MAX_BYTES: u64 = 64 * 1024 * 1024;

/// One paid receipt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalEntry {
    /// The proxy contract that charged for it.
    pub proxy_contract: String,
    /// Its price, nano-TON (a decimal string: JSON numbers lose precision).
    pub cost_nano: String,
    /// The worker's identity key (DER SubjectPublicKeyInfo, hex): the key
    /// the signature verifies with, whose SHA-256 is `receipt.worker`.
    pub worker_key: String,
    pub receipt: Receipt,
    /// Ed25519 signature over the receipt (hex).
    pub signature: String,
}

impl JournalEntry {
    /// Check the worker's signature.
    pub fn verify(&self) -> Result<(), EntryError> {
        let hex = |field: &'static str, text: &str| {
            hex::decode(text).map_err(|source| EntryError::Hex { field, source })
        };
        let spki = hex("worker_key", &self.worker_key)?;
        let signature = hex("signature", &self.signature)?;
        SignedReceipt {
            receipt: self.receipt.clone(),
            signature,
        }
        .verify(&spki)?;
        Ok(())
    }

    pub fn cost(&self) -> Result<u128, EntryError> {
        self.cost_nano.parse().map_err(|source| EntryError::Cost {
            text: self.cost_nano.clone(),
            source,
        })
    }
}

/// A journal that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("{}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} line {line}: {source}", path.display())]
    Line {
        path: PathBuf,
        line: usize,
        #[source]
        source: serde_json::Error,
    },
}

/// A journal entry that does not check out.
#[derive(Debug, thiserror::Error)]
pub enum EntryError {
    #[error("{field}: {source}")]
    Hex {
        field: &'static str,
        #[source]
        source: hex::FromHexError,
    },
    #[error(transparent)]
    Receipt(#[from] cocoon_protocol::receipt::ReceiptError),
    #[error("cost_nano {text:?}: {source}")]
    Cost {
        text: String,
        #[source]
        source: std::num::ParseIntError,
    },
}

/// The journal file of one node.
pub struct ReceiptJournal {
    path: PathBuf,
    max_bytes: u64,
    /// The file open for appending and its size, once the first receipt
    /// is written (reopened after a rotation or a failed write).
    open: Mutex<Option<(std::fs::File, u64)>>,
}

impl ReceiptJournal {
    pub fn new(path: PathBuf) -> Self {
        Self::with_limit(path, MAX_BYTES)
    }

    fn with_limit(path: PathBuf, max_bytes: u64) -> Self {
        Self {
            path,
            max_bytes,
            open: Mutex::new(None),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Append one paid receipt. A failure to write is logged, never fatal:
    /// the answer was delivered and is charged either way.
    pub fn append(
        &self,
        proxy_contract: &str,
        receipt: &SignedReceipt,
        worker_key: &[u8],
        cost: u128,
    ) {
        let entry = JournalEntry {
            proxy_contract: proxy_contract.to_string(),
            cost_nano: cost.to_string(),
            worker_key: cocoon_protocol::to_hex(worker_key),
            receipt: receipt.receipt.clone(),
            signature: cocoon_protocol::to_hex(&receipt.signature),
        };
        if let Err(e) = self.write(&entry) {
            tracing::warn!(path = %self.path.display(), error = %e, "could not keep a paid receipt");
        }
    }

    fn write(&self, entry: &JournalEntry) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(entry)?;
        line.push(b'\n');
        let mut open = self.open.locked();
        if open.is_none() {
            *open = Some(self.open_file()?);
        }
        if open
            .as_ref()
            .is_some_and(|(_, size)| *size > 0 && size + line.len() as u64 > self.max_bytes)
        {
            *open = None;
            let mut old = self.path.clone().into_os_string();
            old.push(".1");
            std::fs::rename(&self.path, old)?;
            *open = Some(self.open_file()?);
        }
        let (file, size) = open.as_mut().expect("opened above");
        if let Err(e) = file.write_all(&line) {
            // Start again from the file as it is on disk next time.
            *open = None;
            return Err(e);
        }
        *size += line.len() as u64;
        Ok(())
    }

    /// Open (or create) the journal for appending; its size now.
    fn open_file(&self) -> std::io::Result<(std::fs::File, u64)> {
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        let size = file.metadata()?.len();
        Ok((file, size))
    }

    /// Every entry of the journal at `path`, in order; a line that does not
    /// parse is an error naming its number.
    pub fn read(path: &Path) -> Result<Vec<JournalEntry>, JournalError> {
        let text = std::fs::read_to_string(path).map_err(|source| JournalError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        text.lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(i, l)| {
                serde_json::from_str(l).map_err(|source| JournalError::Line {
                    path: path.to_path_buf(),
                    line: i + 1,
                    source,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cocoon_protocol::tls::Identity;
    use cocoon_protocol::{FinishReason, Usage};

    fn signed(worker: &Identity, n: u8) -> SignedReceipt {
        SignedReceipt::sign(
            Receipt {
                request_id: [n; 16],
                model: "m".into(),
                model_sha256: None,
                usage: Usage {
                    prompt_tokens: 3,
                    completion_tokens: n as u64,
                    ..Usage::default()
                },
                finish_reason: FinishReason::Stop,
                chunks: n as u64,
                worker: worker.fingerprint(),
                price_coefficient: 1000,
                issued_at_ms: 1,
                partial: false,
            },
            worker,
        )
    }

    #[test]
    fn paid_receipts_are_kept_verifiable_and_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/receipts.jsonl");
        let worker = Identity::generate().unwrap();
        let journal = ReceiptJournal::with_limit(path.clone(), 2000);
        for n in 1..=3 {
            journal.append(
                "0:abc",
                &signed(&worker, n),
                worker.spki(),
                1_000 * n as u128,
            );
        }
        let entries = ReceiptJournal::read(&path).unwrap();
        assert_eq!(entries.len(), 3);
        for (e, n) in entries.iter().zip(1u128..) {
            e.verify().unwrap();
            assert_eq!(e.cost().unwrap(), 1_000 * n);
        }
        // An entry edited after the fact no longer verifies.
        let mut forged = entries[0].clone();
        forged.receipt.usage.completion_tokens = 500;
        assert!(forged.verify().is_err());
        // Past the limit the file rotates: nothing grows without bound.
        for n in 4..=20 {
            journal.append("0:abc", &signed(&worker, n), worker.spki(), 1);
        }
        let size = std::fs::metadata(&path).unwrap().len();
        assert!(size <= 2000, "{size}");
        assert!(dir.path().join("state/receipts.jsonl.1").exists());
        // A node started again appends to the journal it finds, and rotates
        // it by the size on disk.
        let before = ReceiptJournal::read(&path).unwrap().len();
        let again = ReceiptJournal::with_limit(path.clone(), 2000);
        again.append("0:abc", &signed(&worker, 21), worker.spki(), 1);
        let after = ReceiptJournal::read(&path).unwrap();
        assert!(
            after.len() == before + 1 || after.len() == 1,
            "{before} -> {}",
            after.len()
        );
        assert_eq!(after.last().unwrap().receipt.request_id, [21; 16]);
        assert!(std::fs::metadata(&path).unwrap().len() <= 2000);
        std::fs::write(&path, "{not json\n").unwrap();
        let err = ReceiptJournal::read(&path).unwrap_err();
        assert!(matches!(err, JournalError::Line { line: 1, .. }), "{err}");
        assert!(err.to_string().contains("line 1"), "{err}");
    }
}
