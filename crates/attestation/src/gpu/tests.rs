//! GPU evidence verification on real recorded NVIDIA H100 data: the shared
//! set (`../shared/testdata/nvidia`, whose RIMs belong to another driver, so
//! it is refused for exactly that) and the older sample those RIMs were made
//! for (`testdata/nvidia-older`), which passes every step; then each piece
//! tampered with, one at a time, refused with its own reason.

use std::path::PathBuf;

use super::*;

/// 2024-06-01: inside every certificate's validity (the RIM signing
/// certificates expired in June 2025).
pub(super) const AT: u64 = 1_717_200_000;

/// The nonce the older sample was made with (the shared README's).
pub(super) const OLDER_NONCE: &str =
    "4cff7f5380ead8fad8ec2c531c110aca4302a88f603792801a8ca29ee151af2e";
/// The nonce in the shared report's request.
const SHARED_NONCE: &str = "931d8dd0add203ac3d8b4fbde75e115278eefcdceac5b87671a748f32364dfcb";

pub(super) fn shared(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/testdata/nvidia")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (the recorded GPU evidence lives in shared/ beside the project)",
            path.display()
        )
    })
}

fn older(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("testdata/nvidia-older")
        .join(name);
    std::fs::read_to_string(&path).unwrap()
}

fn hex_file(text: &str) -> Vec<u8> {
    hex::decode(text.trim()).unwrap()
}

pub(super) fn nonce(text: &str) -> [u8; 32] {
    hex::decode(text).unwrap().try_into().unwrap()
}

fn reference() -> GpuReference {
    GpuReference {
        device_root: certs::from_pem(&shared("verifier_device_root.pem"), "root").unwrap()[0]
            .clone(),
        rim_root: certs::from_pem(&shared("verifier_RIM_root.pem"), "root").unwrap()[0].clone(),
        rims: vec![
            Rim::parse(RimKind::Driver, &shared("Driver_RIM_test_no_gpu.swidtag")).unwrap(),
            Rim::parse(
                RimKind::Vbios,
                &shared("1010_0200_882_96005E0001_test_no_gpu.swidtag"),
            )
            .unwrap(),
        ],
    }
}

/// The older sample: (report, device chain).
pub(super) fn older_evidence() -> (Vec<u8>, Vec<Vec<u8>>) {
    (
        hex_file(&older("attestationReport.txt")),
        certs::from_pem(&older("gpuAkCertChain.txt"), "chain").unwrap(),
    )
}

fn shared_evidence() -> (Vec<u8>, Vec<Vec<u8>>) {
    (
        hex_file(&shared("hopperAttestationReport.txt")),
        certs::from_pem(&shared("hopperCertChain.txt"), "chain").unwrap(),
    )
}

#[test]
fn the_report_parses_to_what_the_gpu_measured() {
    let (report, _) = shared_evidence();
    let parsed = SpdmReport::parse(&report).unwrap();
    assert_eq!(report.len(), 4117);
    assert_eq!(hex::encode(parsed.nonce), SHARED_NONCE);
    assert_eq!(parsed.measurements.len(), 64);
    assert_eq!(parsed.signed.len(), 4021);
    assert_eq!(parsed.driver_version().as_deref(), Some("550.90.07"));
    assert_eq!(parsed.vbios_version().as_deref(), Some("96.00.9f.00.01"));
    assert_eq!(
        hex::encode(parsed.opaque(report::opaque::FWID).unwrap()),
        "f5c384aebb579217a2c66b17ed0f28e6a9b8d639041acd7b4721cec004f7275494ba94bb5cdfdb3055ee051762b1f75d"
    );
    let rims = reference().rims;
    assert_eq!(rims[0].version, "545.00");
    assert_eq!(rims[1].version, "96.00.5e.00.01");
    assert_eq!(rims[0].golden.len() + rims[1].golden.len(), 33);
    assert_eq!(rims[0].chain.len(), 4);
}

#[test]
fn the_older_sample_passes_every_step() {
    let (report, chain) = older_evidence();
    let verdict = verify(&report, &chain, &reference(), &nonce(OLDER_NONCE), AT).unwrap();
    assert_eq!(verdict.driver_version, "545.00");
    assert_eq!(verdict.vbios_version, "96.00.5e.00.01");
    assert_eq!(verdict.measurements_checked, 33);
    assert!(!verdict.fwid_checked, "the older sample carries no FWID");
}

/// The shared report is genuine (its chain, signature and firmware ID all
/// verify) but was made by another driver and VBIOS than the shared RIMs
/// describe: refused for the versions, and with the versions set aside,
/// for the measurements that differ.
#[test]
fn the_shared_report_is_genuine_but_not_of_the_shared_rims() {
    let (report, chain) = shared_evidence();
    let err = verify(&report, &chain, &reference(), &nonce(SHARED_NONCE), AT).unwrap_err();
    assert_eq!(
        err,
        GpuRefusal::Version {
            what: RimKind::Driver,
            reported: "550.90.07".into(),
            rim: "545.00".into(),
        }
    );
    let parsed = SpdmReport::parse(&report).unwrap();
    let reference = reference();
    let rims: Vec<&Rim> = reference.rims.iter().collect();
    match compare(&parsed, &rims).unwrap_err() {
        GpuRefusal::Measurements {
            mismatched,
            missing,
        } => {
            assert_eq!(mismatched.len(), 20, "{mismatched:?}");
            assert!(missing.is_empty());
        }
        other => panic!("{other}"),
    }
    // The README's nonce is not the one this report answers.
    let err = verify(&report, &chain, &reference, &nonce(OLDER_NONCE), AT).unwrap_err();
    assert!(matches!(err, GpuRefusal::Nonce { .. }), "{err}");
}

#[test]
fn another_nonce_is_refused() {
    let (report, chain) = older_evidence();
    let mut other = nonce(OLDER_NONCE);
    other[0] ^= 1;
    let err = verify(&report, &chain, &reference(), &other, AT).unwrap_err();
    assert!(matches!(err, GpuRefusal::Nonce { .. }), "{err}");
}

/// One flipped byte anywhere in the signed part (a measurement, the
/// versions, the nonce) or in the signature: refused by the signature.
#[test]
fn a_flipped_byte_in_the_signed_report_is_refused() {
    let (report, chain) = older_evidence();
    let parsed = SpdmReport::parse(&report).unwrap();
    let signed = parsed.signed.len();
    // The request's nonce, a measurement value, the opaque data, the signature.
    for at in [10, 45 + 55 + 10, signed - 5, signed + 20] {
        let mut tampered = report.clone();
        tampered[at] ^= 0x01;
        let err = verify(&tampered, &chain, &reference(), &nonce(OLDER_NONCE), AT).unwrap_err();
        assert!(
            matches!(err, GpuRefusal::Signature | GpuRefusal::Malformed(_)),
            "byte {at}: {err}"
        );
    }
}

#[test]
fn a_cut_or_foreign_chain_is_refused() {
    let (report, chain) = older_evidence();
    // Without the intermediates: no path to the root.
    let cut = vec![chain[0].clone()];
    let err = verify(&report, &cut, &reference(), &nonce(OLDER_NONCE), AT).unwrap_err();
    assert!(matches!(err, GpuRefusal::Chain(_)), "{err}");
    // Another root (the RIM root) trusted for devices: refused.
    let mut wrong_root = reference();
    wrong_root.device_root = wrong_root.rim_root.clone();
    let err = verify(&report, &chain, &wrong_root, &nonce(OLDER_NONCE), AT).unwrap_err();
    assert!(matches!(err, GpuRefusal::Chain(_)), "{err}");
    // The shared chain's leaf did not sign the older report.
    let (_, other_chain) = shared_evidence();
    let err = verify(&report, &other_chain, &reference(), &nonce(OLDER_NONCE), AT).unwrap_err();
    assert_eq!(err, GpuRefusal::Signature);
}

#[test]
fn a_changed_golden_value_or_version_is_refused() {
    let (report, chain) = older_evidence();
    let mut changed = reference();
    let golden = &mut changed.rims[0].golden[0];
    let index = golden.index;
    for alternative in &mut golden.alternatives {
        alternative[0] ^= 1;
    }
    let err = verify(&report, &chain, &changed, &nonce(OLDER_NONCE), AT).unwrap_err();
    assert_eq!(
        err,
        GpuRefusal::Measurements {
            mismatched: vec![index + 1],
            missing: vec![],
        }
    );
    let mut other_version = reference();
    other_version.rims[1].version = "96.00.5e.00.02".into();
    let err = verify(&report, &chain, &other_version, &nonce(OLDER_NONCE), AT).unwrap_err();
    assert!(
        matches!(
            err,
            GpuRefusal::Version {
                what: RimKind::Vbios,
                ..
            }
        ),
        "{err}"
    );
    let mut conflict = reference();
    let duplicate = conflict.rims[0].golden[0].clone();
    conflict.rims[1].golden.push(duplicate);
    let err = verify(&report, &chain, &conflict, &nonce(OLDER_NONCE), AT).unwrap_err();
    assert_eq!(err, GpuRefusal::IndexConflict(index));
}

/// The RIM signing certificates expired in June 2025: verified now, the
/// RIMs' chains are refused (a verifier needs current RIMs).
#[test]
fn expired_rim_certificates_are_refused() {
    let (report, chain) = older_evidence();
    let late = 1_780_000_000; // 2026-05-28
    let err = verify(&report, &chain, &reference(), &nonce(OLDER_NONCE), late).unwrap_err();
    match err {
        GpuRefusal::Chain(m) => assert!(m.contains("RIM") && m.contains("Expired"), "{m}"),
        other => panic!("{other}"),
    }
}

#[test]
fn truncated_or_padded_reports_are_malformed_not_panics() {
    let (report, _) = older_evidence();
    for len in [0, 1, 36, 37, 45, 100, report.len() - 97, report.len() - 1] {
        assert!(
            matches!(
                SpdmReport::parse(&report[..len]),
                Err(GpuRefusal::Malformed(_))
            ),
            "{len} bytes"
        );
    }
    let mut padded = report.clone();
    padded.push(0);
    assert!(matches!(
        SpdmReport::parse(&padded),
        Err(GpuRefusal::Malformed(_))
    ));
}

/// The RIMs' XML signatures: both verify; one changed golden value, one
/// changed version or a re-ordered attribute's value in the signed text is
/// refused before anything in the RIM is believed.
#[test]
fn a_rim_altered_after_signing_is_refused() {
    let (report, chain) = older_evidence();
    let xml = shared("Driver_RIM_test_no_gpu.swidtag");
    for (from, to) in [
        (
            "colloquialVersion=\"545.00\"",
            "colloquialVersion=\"545.01\"",
        ),
        ("active=\"False\"", "active=\"True\""),
        (
            "index=\"7\" active=\"True\"",
            "index=\"7\" active=\"False\"",
        ),
    ] {
        assert!(xml.contains(from), "{from}");
        let altered = xml.replacen(from, to, 1);
        let mut reference = reference();
        reference.rims[0] = Rim::parse(RimKind::Driver, &altered).unwrap();
        let err = verify(&report, &chain, &reference, &nonce(OLDER_NONCE), AT).unwrap_err();
        match err {
            GpuRefusal::RimSignature(m) => assert!(m.contains("digest"), "{m}"),
            other => panic!("{from}: {other}"),
        }
    }
    // Canonicalisation ignores what XML does not distinguish: another
    // quoting of an attribute and an empty element written out.
    let requoted = xml.replacen("name=\"GH100\"", "name='GH100'", 1);
    xmldsig::verify(&requoted, &reference().rims[0].chain[0], "driver RIM").unwrap();
}
