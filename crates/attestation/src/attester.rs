//! Where a node's evidence comes from: its TEE, asked to sign report data.

use crate::evidence::Evidence;
use crate::simulated::SimulatedTee;
use crate::tdx::{ConfigfsTsm, QuoteError};

/// A TEE that can produce evidence over 64 bytes of report data. Slow on real
/// hardware: call it when issuing a certificate, never per request.
pub trait Attester: Send + Sync + std::fmt::Debug {
    fn evidence(&self, report_data: &[u8; 64]) -> Result<Evidence, QuoteError>;
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
}

impl std::fmt::Debug for SimulatedTee {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SimulatedTee")
    }
}
