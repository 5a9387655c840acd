//! Intel TDX. Quotes come from the guest kernel's configfs-tsm interface
//! (`configfs`); they are verified by the pure-Rust `dcap-qvl` crate against
//! DCAP collateral (PCK certificate chain and CRLs, TCB info, QE identity, all
//! signed by Intel), at an explicit time: collateral is valid only inside its
//! window. Collateral comes from a file, or from a PCCS through `pccs`'s
//! cache.

mod configfs;
pub mod pccs;

pub use configfs::{ConfigfsTsm, QuoteError, DEFAULT_ROOT};
pub use dcap_qvl::QuoteCollateralV3 as Collateral;
pub use pccs::{CollateralCache, CollateralError};

use dcap_qvl::quote::Report;

use crate::evidence::{TeeKind, VerifyError};
use crate::{Measurements, Verdict};

/// Parse collateral in `dcap-qvl`'s JSON shape (as a PCCS client saves it).
pub fn collateral_from_json(json: &[u8]) -> Result<Collateral, VerifyError> {
    serde_json::from_slice(json).map_err(|e| VerifyError::Malformed(format!("collateral: {e}")))
}

/// Verify a TDX quote at `now_secs` (Unix seconds).
pub fn verify(
    quote: &[u8],
    collateral: &Collateral,
    now_secs: u64,
) -> Result<Verdict, VerifyError> {
    let report = dcap_qvl::verify::verify(quote, collateral, now_secs).map_err(|e| {
        let text = format!("{e:#}");
        if text.contains("Expired") || text.contains("expired") || text.contains("not yet valid")
        {
            VerifyError::CollateralExpired(text)
        } else if text.contains("No matching TCB level") {
            VerifyError::Tdx(format!(
                "the platform's TCB is below every level in Intel's TCB info (out of date beyond what the collateral lists): {text}"
            ))
        } else {
            VerifyError::Tdx(text)
        }
    })?;
    let (measurements, report_data) = td_fields(&report.report)?;
    Ok(Verdict {
        tee: TeeKind::Tdx,
        tcb_status: report.status.clone(),
        advisories: report.advisory_ids.clone(),
        image_hash: measurements.image_hash(),
        measurements,
        report_data,
        configuration: None,
        made_after: None,
        gpus: Vec::new(),
    })
}

/// The measurements a quote claims, read without verifying it: for a node
/// showing its own image (its peers verify; this proves nothing).
pub fn claimed_measurements(quote: &[u8]) -> Result<Measurements, VerifyError> {
    let quote = dcap_qvl::quote::Quote::parse(quote)
        .map_err(|e| VerifyError::Malformed(format!("{e:#}")))?;
    Ok(td_fields(&quote.report)?.0)
}

/// A TD report's measurements and report data.
fn td_fields(report: &Report) -> Result<(Measurements, [u8; 64]), VerifyError> {
    let (mrtd, rtmr, report_data) = match report {
        Report::TD10(r) => (
            r.mr_td,
            [r.rt_mr0, r.rt_mr1, r.rt_mr2, r.rt_mr3],
            r.report_data,
        ),
        Report::TD15(r) => (
            r.base.mr_td,
            [r.base.rt_mr0, r.base.rt_mr1, r.base.rt_mr2, r.base.rt_mr3],
            r.base.report_data,
        ),
        Report::TD15Ex(r) => {
            let b = &r.base.base;
            (
                b.mr_td,
                [b.rt_mr0, b.rt_mr1, b.rt_mr2, b.rt_mr3],
                b.report_data,
            )
        }
        _ => {
            return Err(VerifyError::Tdx(
                "the quote is not a TDX quote (SGX enclave or unknown report)".into(),
            ))
        }
    };
    Ok((Measurements { mrtd, rtmr }, report_data))
}

#[cfg(test)]
mod tests;
