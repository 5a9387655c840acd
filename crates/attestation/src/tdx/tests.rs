//! Verification of real TDX quotes recorded with their collateral
//! (`../shared/testdata/tdx`, see its README), always at a fixed time inside
//! (or deliberately outside) the collateral's validity window.

use crate::PeerRole;
use std::path::PathBuf;

use super::*;
use crate::{Policy, Refusal};

/// 2025-06-20T00:00:00Z: inside `tdx_quote_collateral.json`'s window.
const IN_WINDOW: u64 = 1_750_377_600;
/// 2026-02-19T12:00:00Z: inside `tdx_quote_outdated_collateral.json`'s window.
const OUTDATED_IN_WINDOW: u64 = 1_771_502_400;
/// 2025-08-01T00:00:00Z: after the first collateral's TCB info expired.
const AFTER_WINDOW: u64 = 1_754_006_400;

fn testdata(name: &str) -> Vec<u8> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/testdata/tdx");
    std::fs::read(dir.join(name)).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (the recorded quotes live in shared/ beside the project)",
            dir.join(name).display()
        )
    })
}

fn collateral(name: &str) -> Collateral {
    collateral_from_json(&testdata(name)).unwrap()
}

#[test]
fn the_up_to_date_quote_verifies_with_its_measurements() {
    let verdict = verify(
        &testdata("tdx_quote"),
        &collateral("tdx_quote_collateral.json"),
        IN_WINDOW,
    )
    .unwrap();
    assert_eq!(verdict.tee, crate::TeeKind::Tdx);
    assert_eq!(verdict.tcb_status, "UpToDate");
    assert!(verdict.advisories.is_empty());
    assert_eq!(verdict.image_hash, verdict.measurements.image_hash());
    assert_eq!(verdict.image_hash.len(), 64);
    // What the quote claims, read without collateral, is what verifies.
    assert_eq!(
        super::claimed_measurements(&testdata("tdx_quote")).unwrap(),
        verdict.measurements
    );
    assert_ne!(verdict.measurements.mrtd, [0u8; 48]);

    // The policy decides: the image must be listed.
    let err = Policy::default()
        .check(&verdict, PeerRole::Worker, None)
        .unwrap_err();
    assert!(matches!(err, Refusal::ImageNotAllowed { .. }), "{err}");
    let policy = Policy {
        worker_images: [verdict.image_hash.clone()].into(),
        ..Policy::default()
    };
    policy.check(&verdict, PeerRole::Worker, None).unwrap();
    // Per role: a worker image is not thereby a proxy image.
    let err = policy.check(&verdict, PeerRole::Proxy, None).unwrap_err();
    assert!(err.to_string().contains("proxy images"), "{err}");
    // ... and the quote must bind the key the peer presented.
    let other_key = crate::report_data(b"some other key", crate::Purpose::Tls, None);
    let err = policy
        .check(&verdict, PeerRole::Worker, Some(&other_key))
        .unwrap_err();
    assert!(matches!(err, Refusal::KeyNotBound { .. }), "{err}");
    policy
        .check(&verdict, PeerRole::Worker, Some(&verdict.report_data))
        .unwrap();
}

#[test]
fn the_out_of_date_platform_is_refused() {
    // dcap-qvl 0.7 finds no TCB level in Intel's list that this platform meets,
    // so verification itself refuses it, naming the TCB.
    let err = verify(
        &testdata("tdx_quote_outdated"),
        &collateral("tdx_quote_outdated_collateral.json"),
        OUTDATED_IN_WINDOW,
    )
    .unwrap_err();
    assert!(
        matches!(err, VerifyError::Tdx(ref m) if m.contains("TCB")),
        "{err}"
    );
}

#[test]
fn one_flipped_byte_anywhere_signed_fails() {
    let quote = testdata("tdx_quote");
    let collateral = collateral("tdx_quote_collateral.json");
    // Header, TD report (measurements, report data), and the QE report that
    // signs the attestation key.
    for at in [10usize, 150, 300, 600, 700, 1000] {
        let mut bad = quote.clone();
        bad[at] ^= 0x01;
        assert!(
            verify(&bad, &collateral, IN_WINDOW).is_err(),
            "flipping byte {at} went unnoticed"
        );
    }
    assert!(verify(&quote[..quote.len() / 2], &collateral, IN_WINDOW).is_err());
    assert!(verify(b"not a quote", &collateral, IN_WINDOW).is_err());
}

#[test]
fn expired_collateral_fails() {
    let err = verify(
        &testdata("tdx_quote"),
        &collateral("tdx_quote_collateral.json"),
        AFTER_WINDOW,
    )
    .unwrap_err();
    assert!(matches!(err, VerifyError::CollateralExpired(_)), "{err}");
    // The other quote's collateral does not fit this quote either.
    assert!(verify(
        &testdata("tdx_quote"),
        &collateral("tdx_quote_outdated_collateral.json"),
        OUTDATED_IN_WINDOW
    )
    .is_err());
}

#[test]
fn out_of_date_status_is_accepted_only_by_an_explicit_policy() {
    let mut verdict = verify(
        &testdata("tdx_quote"),
        &collateral("tdx_quote_collateral.json"),
        IN_WINDOW,
    )
    .unwrap();
    verdict.tcb_status = "OutOfDate".into();
    verdict.advisories = vec!["INTEL-SA-00837".into()];
    let mut policy = Policy {
        worker_images: [verdict.image_hash.clone()].into(),
        ..Policy::default()
    };
    let err = policy.check(&verdict, PeerRole::Worker, None).unwrap_err();
    assert!(
        err.to_string().contains("OutOfDate") && err.to_string().contains("INTEL-SA-00837"),
        "{err}"
    );
    policy.accepted_tcb_statuses.insert("OutOfDate".into());
    policy.check(&verdict, PeerRole::Worker, None).unwrap();
}
