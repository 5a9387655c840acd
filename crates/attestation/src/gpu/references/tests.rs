//! A verifier's GPU references: the simulated GPU only where allowed, the
//! older real sample against RIMs from a folder, and RIMs fetched from a RIM
//! service (a local server answering as NVIDIA's does, with the recorded
//! RIMs) in the background, kept, and not believed when they are not the
//! RIM asked for.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};

use super::super::simulated::SimulatedGpu;
use super::super::tests::{older_evidence, shared, AT, OLDER_NONCE};
use super::*;

const DRIVER_ID: &str = "NV_GPU_DRIVER_GH100_545.00";
const VBIOS_ID: &str = "NV_GPU_VBIOS_1010_0200_882_96005E0001";
const DRIVER_RIM: &str = "Driver_RIM_test_no_gpu.swidtag";
const VBIOS_RIM: &str = "1010_0200_882_96005E0001_test_no_gpu.swidtag";

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn older() -> GpuEvidence {
    let (report, chain) = older_evidence();
    GpuEvidence { report, chain }
}

fn older_nonce() -> [u8; 32] {
    super::super::tests::nonce(OLDER_NONCE)
}

/// NVIDIA's answer shape for a RIM: the file in base64, its SHA-256.
fn answer(xml: &str, sha256: Option<String>) -> Value {
    let sha = sha256.unwrap_or_else(|| hex::encode(Sha256::digest(xml.as_bytes())));
    json!({
        "id": "ignored",
        "rim": base64::engine::general_purpose::STANDARD.encode(xml),
        "sha256": sha,
        "rim_format": "SWID",
    })
}

/// A RIM service on loopback answering `answers` by id (404 otherwise),
/// counting requests.
async fn rim_service(answers: BTreeMap<String, Value>) -> (String, Arc<Mutex<Vec<String>>>) {
    type Served = (Arc<BTreeMap<String, Value>>, Arc<Mutex<Vec<String>>>);
    async fn rim(
        State((answers, asked)): State<Served>,
        UrlPath(id): UrlPath<String>,
    ) -> Result<Json<Value>, StatusCode> {
        asked.lock().unwrap().push(id.clone());
        answers
            .get(&id)
            .cloned()
            .map(Json)
            .ok_or(StatusCode::NOT_FOUND)
    }
    let asked = Arc::new(Mutex::new(Vec::new()));
    let app = axum::Router::new()
        .route("/v1/rim/{id}", axum::routing::get(rim))
        .with_state((Arc::new(answers), asked.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1/rim/", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, asked)
}

/// Verify until the result is not "being fetched" (the background fetch
/// ran), for at most ten seconds.
async fn verify_after_fetch(
    references: &GpuReferences,
    evidence: &GpuEvidence,
) -> Result<GpuVerdict, GpuRefusal> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match references.verify(evidence, &older_nonce(), false, AT) {
            Err(GpuRefusal::RimPending(_)) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            other => return other,
        }
    }
}

#[test]
fn simulated_gpu_evidence_passes_only_where_simulated_evidence_is_allowed() {
    let gpu = SimulatedGpu::new();
    let nonce = [7u8; 32];
    let evidence = gpu.evidence(&nonce);
    let references = GpuReferences::new(None, None).unwrap();
    let verdict = references.verify(&evidence, &nonce, true, now()).unwrap();
    assert!(verdict.simulated);
    assert_eq!(verdict.driver_version, simulated::DRIVER_VERSION);
    assert_eq!(verdict.measurements_checked, 4);
    // Without allow_simulated its chain must reach NVIDIA's root, and does not.
    let err = references
        .verify(&evidence, &nonce, false, now())
        .unwrap_err();
    assert!(matches!(err, GpuRefusal::Chain(_)), "{err}");
    // Another nonce: refused even where simulated evidence is allowed.
    let err = references
        .verify(&evidence, &[8u8; 32], true, now())
        .unwrap_err();
    assert!(matches!(err, GpuRefusal::Nonce { .. }), "{err}");
}

#[test]
fn real_evidence_verifies_against_rims_kept_in_a_folder() {
    let dir = tempfile::tempdir().unwrap();
    let references = GpuReferences::new(Some(dir.path()), None).unwrap();
    let err = references
        .verify(&older(), &older_nonce(), false, AT)
        .unwrap_err();
    assert_eq!(
        err,
        GpuRefusal::NoRim {
            what: RimKind::Driver,
            id: DRIVER_ID.into()
        }
    );
    for name in [DRIVER_RIM, VBIOS_RIM] {
        std::fs::write(dir.path().join(name), shared(name)).unwrap();
    }
    let references = GpuReferences::new(Some(dir.path()), None).unwrap();
    let verdict = references
        .verify(&older(), &older_nonce(), true, AT)
        .unwrap();
    assert!(!verdict.simulated);
    assert_eq!(verdict.measurements_checked, 33);
}

#[tokio::test]
async fn rims_come_from_the_rim_service_in_the_background_and_are_kept() {
    let answers = BTreeMap::from([
        (DRIVER_ID.to_string(), answer(&shared(DRIVER_RIM), None)),
        (VBIOS_ID.to_string(), answer(&shared(VBIOS_RIM), None)),
    ]);
    let (url, asked) = rim_service(answers).await;
    let dir = tempfile::tempdir().unwrap();
    let references = GpuReferences::new(Some(dir.path()), Some(&url)).unwrap();
    // The first verification does not wait for the network.
    let err = references
        .verify(&older(), &older_nonce(), false, AT)
        .unwrap_err();
    assert_eq!(err, GpuRefusal::RimPending(DRIVER_ID.into()));
    let verdict = verify_after_fetch(&references, &older()).await.unwrap();
    assert_eq!(verdict.vbios_version, "96.00.5e.00.01");
    assert_eq!(*asked.lock().unwrap(), [DRIVER_ID, VBIOS_ID]);
    // Kept: a verifier started later from the folder needs no service.
    let kept = GpuReferences::new(Some(dir.path()), None).unwrap();
    kept.verify(&older(), &older_nonce(), false, AT).unwrap();
    // Async callers fetch before verifying, and never see "pending".
    let fresh_dir = tempfile::tempdir().unwrap();
    let eager = GpuReferences::new(Some(fresh_dir.path()), Some(&url)).unwrap();
    eager.fetch_missing(&[older()], AT).await;
    eager.verify(&older(), &older_nonce(), false, AT).unwrap();
}

/// The RIM service is not trusted: a RIM that does not match the digest
/// sent with it, or that is the RIM of another version, is not kept, and
/// the evidence needing it is refused saying why (not retried at once).
#[tokio::test]
async fn a_rim_service_answering_another_rim_is_not_believed() {
    let answers = BTreeMap::from([
        (
            DRIVER_ID.to_string(),
            answer(&shared(DRIVER_RIM), Some("00".repeat(32))),
        ),
        (VBIOS_ID.to_string(), answer(&shared(DRIVER_RIM), None)),
    ]);
    let (url, asked) = rim_service(answers).await;
    let dir = tempfile::tempdir().unwrap();
    let references = GpuReferences::new(Some(dir.path()), Some(&url)).unwrap();
    let err = verify_after_fetch(&references, &older()).await.unwrap_err();
    assert!(
        matches!(&err, GpuRefusal::RimUnavailable { id, reason } if id == DRIVER_ID && reason.contains("does not match the sha256")),
        "{err}"
    );
    references.add(Rim::parse(RimKind::Driver, &shared(DRIVER_RIM)).unwrap());
    let err = verify_after_fetch(&references, &older()).await.unwrap_err();
    assert!(
        matches!(&err, GpuRefusal::RimUnavailable { id, reason } if id == VBIOS_ID && reason.contains("not 96.00.5e.00.01")),
        "{err}"
    );
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    // Not asked again at once.
    let before = asked.lock().unwrap().len();
    references.fetch_missing(&[older()], AT).await;
    let _ = references.verify(&older(), &older_nonce(), false, AT);
    assert_eq!(asked.lock().unwrap().len(), before);
}
