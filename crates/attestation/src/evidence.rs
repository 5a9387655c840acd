//! The evidence a node presents and its verification into a [`Verdict`].

use serde::{Deserialize, Serialize};

use crate::measurements::Measurements;
use crate::simulated::SimulatedQuote;
use crate::tdx;

/// Which kind of TEE produced the evidence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TeeKind {
    Tdx,
    /// Development only: no hardware protects anything.
    Simulated,
}

/// A node's evidence, as carried between nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Evidence {
    /// A raw TDX quote (version 4 or 5), as configfs-tsm returns it.
    Tdx(Vec<u8>),
    Simulated(Box<SimulatedQuote>),
}

impl Evidence {
    pub fn kind(&self) -> TeeKind {
        match self {
            Evidence::Tdx(_) => TeeKind::Tdx,
            Evidence::Simulated(_) => TeeKind::Simulated,
        }
    }

    /// The image hash this evidence claims, unverified (for a node showing
    /// its own; peers verify).
    pub fn claimed_image_hash(&self) -> Result<String, VerifyError> {
        match self {
            Evidence::Tdx(quote) => Ok(tdx::claimed_measurements(quote)?.image_hash()),
            Evidence::Simulated(quote) => Ok(quote.measurements.image_hash()),
        }
    }

    /// Wire form (postcard), e.g. for a certificate extension.
    pub fn to_bytes(&self) -> Vec<u8> {
        postcard::to_allocvec(self).expect("evidence serializes")
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, VerifyError> {
        postcard::from_bytes(bytes).map_err(|e| VerifyError::Malformed(e.to_string()))
    }
}

/// What verification established; the [`Policy`](crate::Policy) decides on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    pub tee: TeeKind,
    /// Intel's TCB status (`UpToDate`, `OutOfDate`, `SWHardeningNeeded`, ...);
    /// `Simulated` for simulated evidence.
    pub tcb_status: String,
    /// Intel security advisories that apply (e.g. `INTEL-SA-00837`).
    pub advisories: Vec<String>,
    pub measurements: Measurements,
    pub image_hash: String,
    #[serde(with = "crate::measurements::hex_array")]
    pub report_data: [u8; 64],
    /// The configuration the report data binds, once a verifier has
    /// checked it against its policy (see [`crate::Policy::check_configuration`]).
    #[serde(default)]
    pub configuration: Option<crate::Configuration>,
    /// When the evidence was made at the earliest: the time of the TON
    /// masterchain block it binds, once a verifier has looked it up (see
    /// [`crate::freshness`]); `None` where the policy waives freshness.
    #[serde(default)]
    pub made_after: Option<u64>,
    /// The GPUs whose evidence a verifier checked (see [`crate::gpu`]).
    #[serde(default)]
    pub gpus: Vec<crate::gpu::GpuVerdict>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VerifyError {
    #[error("evidence is malformed: {0}")]
    Malformed(String),
    #[error("TDX quote verification failed: {0}")]
    Tdx(String),
    #[error("TDX collateral is expired or not yet valid at the verification time: {0}")]
    CollateralExpired(String),
    #[error("simulated evidence is invalid: {0}")]
    Simulated(String),
    #[error("no DCAP collateral available to verify a TDX quote")]
    NoCollateral,
}

impl Evidence {
    /// Check signatures and chains. TDX needs DCAP collateral and the time to
    /// verify at (collateral is valid only inside its window).
    pub fn verify(
        &self,
        collateral: Option<&tdx::Collateral>,
        now_secs: u64,
    ) -> Result<Verdict, VerifyError> {
        match self {
            Evidence::Tdx(quote) => tdx::verify(
                quote,
                collateral.ok_or(VerifyError::NoCollateral)?,
                now_secs,
            ),
            Evidence::Simulated(quote) => quote.verify(),
        }
    }
}
