//! What a verifier accepts. Verification says what is true of the evidence; the
//! policy says whether that is good enough, and a refusal names the reason.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::evidence::{TeeKind, Verdict};

/// A verifier's rules (from the network's root configuration; a file for now).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Image hashes (see `Measurements::image_hash`) allowed to connect.
    #[serde(default)]
    pub allowed_images: BTreeSet<String>,
    /// Accept SIMULATED evidence (development networks only; never in production).
    #[serde(default)]
    pub allow_simulated: bool,
    /// TCB statuses accepted; default `["UpToDate"]`. Adding `OutOfDate` or
    /// `SWHardeningNeeded` is an explicit decision to trust a platform with
    /// known advisories.
    #[serde(default = "default_statuses")]
    pub accepted_tcb_statuses: BTreeSet<String>,
}

fn default_statuses() -> BTreeSet<String> {
    BTreeSet::from(["UpToDate".to_string()])
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            allowed_images: BTreeSet::new(),
            allow_simulated: false,
            accepted_tcb_statuses: default_statuses(),
        }
    }
}

/// Why evidence was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize)]
pub enum Refusal {
    #[error("simulated TEE evidence is not allowed by this policy (allow_simulated = false)")]
    Simulated,
    #[error(
        "TCB status {status} is not accepted (accepted: {accepted}); advisories: {advisories}"
    )]
    TcbStatus {
        status: String,
        accepted: String,
        advisories: String,
    },
    #[error("image hash {image_hash} is not in the allowed list")]
    ImageNotAllowed { image_hash: String },
    #[error("the quote does not bind the presented key: report data {got} != expected {expected}")]
    KeyNotBound { expected: String, got: String },
}

impl Policy {
    /// Decide on `verdict`; `expected_report_data` is the binding of the key the
    /// peer presented (see `report_data`), when there is one to check.
    pub fn check(
        &self,
        verdict: &Verdict,
        expected_report_data: Option<&[u8; 64]>,
    ) -> Result<(), Refusal> {
        if verdict.tee == TeeKind::Simulated && !self.allow_simulated {
            return Err(Refusal::Simulated);
        }
        if verdict.tee == TeeKind::Tdx && !self.accepted_tcb_statuses.contains(&verdict.tcb_status)
        {
            return Err(Refusal::TcbStatus {
                status: verdict.tcb_status.clone(),
                accepted: self
                    .accepted_tcb_statuses
                    .iter()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", "),
                advisories: if verdict.advisories.is_empty() {
                    "none".into()
                } else {
                    verdict.advisories.join(", ")
                },
            });
        }
        if !self.allowed_images.contains(&verdict.image_hash) {
            return Err(Refusal::ImageNotAllowed {
                image_hash: verdict.image_hash.clone(),
            });
        }
        if let Some(expected) = expected_report_data {
            if expected != &verdict.report_data {
                return Err(Refusal::KeyNotBound {
                    expected: hex::encode(expected),
                    got: hex::encode(verdict.report_data),
                });
            }
        }
        Ok(())
    }
}
