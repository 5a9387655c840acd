//! Where a node's evidence comes from: its TEE, asked to sign report data.

use crate::evidence::Evidence;
use crate::simulated::SimulatedTee;
use crate::tdx::{ConfigfsTsm, QuoteError};

/// A TEE that can produce evidence over 64 bytes of report data. Slow on real
/// hardware: call it when issuing a certificate, never per request.
pub trait Attester: Send + Sync + std::fmt::Debug {
    fn evidence(&self, report_data: &[u8; 64]) -> Result<Evidence, QuoteError>;

    /// A key for `label` that only this measured image, in this TEE, can
    /// derive again: a sealing key, for data the enclave keeps on the host's
    /// disk. `None` where the TEE has none: TDX gives a guest no sealing key
    /// (unlike SGX), so a TDX node keeps nothing sealed and a key manager
    /// survives restarts by replication instead.
    fn sealing_key(&self, label: &str) -> Option<zeroize::Zeroizing<[u8; 32]>> {
        let _ = label;
        None
    }
}

impl Attester for ConfigfsTsm {
    fn evidence(&self, report_data: &[u8; 64]) -> Result<Evidence, QuoteError> {
        self.quote(report_data).map(Evidence::Tdx)
    }
}

impl Attester for SimulatedTee {
    fn evidence(&self, report_data: &[u8; 64]) -> Result<Evidence, QuoteError> {
        Ok(Evidence::Simulated(Box::new(self.quote(report_data))))
    }

    fn sealing_key(&self, label: &str) -> Option<zeroize::Zeroizing<[u8; 32]>> {
        Some(self.development_sealing_key(label))
    }
}

impl std::fmt::Debug for SimulatedTee {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SimulatedTee")
    }
}
