//! The PCCS client against a local PCCS on loopback serving the recorded
//! collateral of `../shared/testdata/tdx` in PCCS's own wire format (DER CRL,
//! URL-encoded issuer-chain headers, `{tcbInfo, signature}` JSON, hex root
//! CRL), then the real quote verified with what was fetched.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};

use super::*;

/// 2025-06-20T00:00:00Z: inside the recorded collateral's window.
const IN_WINDOW: u64 = 1_750_377_600;

fn testdata(name: &str) -> Vec<u8> {
    let dir =
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/testdata/tdx");
    std::fs::read(dir.join(name)).expect("recorded TDX test data in shared/testdata/tdx")
}

fn recorded() -> Collateral {
    collateral_from_json(&testdata("tdx_quote_collateral.json")).unwrap()
}

struct Pccs {
    collateral: Collateral,
    fmspc: String,
    hits: AtomicUsize,
    down: AtomicBool,
}

fn chain(value: &str) -> HeaderValue {
    HeaderValue::from_str(&utf8_percent_encode(value, NON_ALPHANUMERIC).to_string()).unwrap()
}

async fn pck_crl(
    State(p): State<Arc<Pccs>>,
    Query(q): Query<HashMap<String, String>>,
) -> axum::response::Response {
    p.hits.fetch_add(1, Ordering::SeqCst);
    if p.down.load(Ordering::SeqCst) {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    assert_eq!(q.get("encoding").map(String::as_str), Some("der"));
    let mut headers = HeaderMap::new();
    headers.insert(
        "SGX-PCK-CRL-Issuer-Chain",
        chain(&p.collateral.pck_crl_issuer_chain),
    );
    (headers, p.collateral.pck_crl.clone()).into_response()
}

async fn tcb(
    State(p): State<Arc<Pccs>>,
    Query(q): Query<HashMap<String, String>>,
) -> axum::response::Response {
    if q.get("fmspc") != Some(&p.fmspc) {
        return StatusCode::NOT_FOUND.into_response();
    }
    let mut headers = HeaderMap::new();
    headers.insert(
        "TCB-Info-Issuer-Chain",
        chain(&p.collateral.tcb_info_issuer_chain),
    );
    let body = format!(
        r#"{{"tcbInfo":{},"signature":"{}"}}"#,
        p.collateral.tcb_info,
        hex::encode(&p.collateral.tcb_info_signature)
    );
    (headers, body).into_response()
}

async fn qe_identity(State(p): State<Arc<Pccs>>) -> axum::response::Response {
    let mut headers = HeaderMap::new();
    headers.insert(
        "SGX-Enclave-Identity-Issuer-Chain",
        chain(&p.collateral.qe_identity_issuer_chain),
    );
    let body = format!(
        r#"{{"enclaveIdentity":{},"signature":"{}"}}"#,
        p.collateral.qe_identity,
        hex::encode(&p.collateral.qe_identity_signature)
    );
    (headers, body).into_response()
}

async fn root_crl(State(p): State<Arc<Pccs>>) -> String {
    hex::encode(&p.collateral.root_ca_crl)
}

/// Serve the recorded collateral as a PCCS; returns its URL and state.
async fn serve_pccs() -> (String, Arc<Pccs>) {
    let (fmspc, _) = platform_of_quote(&testdata("tdx_quote")).unwrap();
    let state = Arc::new(Pccs {
        collateral: recorded(),
        fmspc,
        hits: AtomicUsize::new(0),
        down: AtomicBool::new(false),
    });
    let app = axum::Router::new()
        .route("/sgx/certification/v4/pckcrl", get(pck_crl))
        .route("/tdx/certification/v4/tcb", get(tcb))
        .route("/tdx/certification/v4/qe/identity", get(qe_identity))
        .route("/sgx/certification/v4/rootcacrl", get(root_crl))
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, state)
}

#[tokio::test]
async fn collateral_is_fetched_off_the_request_path_and_verifies_the_real_quote() {
    let (url, pccs) = serve_pccs().await;
    let dir = tempfile::tempdir().unwrap();
    let cache = CollateralCache::open(&url, dir.path()).unwrap();
    let quote = testdata("tdx_quote");

    // First sight of the platform: nothing held, nothing fetched inline.
    assert!(cache.for_quote(&quote).is_none());
    assert_eq!(pccs.hits.load(Ordering::SeqCst), 0);
    cache.refresh_due(IN_WINDOW).await;
    let fetched = cache.for_quote(&quote).expect("fetched in the background");
    assert_eq!(
        *fetched,
        recorded(),
        "PCCS answers reassemble the same collateral"
    );
    let verdict = crate::tdx::verify(&quote, &fetched, IN_WINDOW).unwrap();
    assert_eq!(verdict.tcb_status, "UpToDate");

    // Saved: a node restarting with the PCCS unreachable still has it.
    let offline = CollateralCache::open("http://127.0.0.1:9", dir.path()).unwrap();
    assert_eq!(*offline.for_quote(&quote).unwrap(), recorded());
}

#[tokio::test]
async fn collateral_is_refreshed_before_next_update_and_kept_when_the_pccs_fails() {
    let (url, pccs) = serve_pccs().await;
    let dir = tempfile::tempdir().unwrap();
    let cache = CollateralCache::open(&url, dir.path()).unwrap();
    let quote = testdata("tdx_quote");
    cache.for_quote(&quote);
    cache.refresh_due(IN_WINDOW).await;
    let next_update = cache.held()[0].1;
    assert!(next_update > IN_WINDOW);
    let hits = pccs.hits.load(Ordering::SeqCst);

    // Well before nextUpdate: nothing to do.
    cache
        .refresh_due(next_update - 2 * REFRESH_MARGIN_SECS)
        .await;
    assert_eq!(pccs.hits.load(Ordering::SeqCst), hits);
    // Inside the margin: fetched again.
    cache
        .refresh_due(next_update - REFRESH_MARGIN_SECS / 2)
        .await;
    assert_eq!(pccs.hits.load(Ordering::SeqCst), hits + 1);

    // The PCCS fails: what is held stays, and it is not hammered.
    pccs.down.store(true, Ordering::SeqCst);
    let now = next_update - 10;
    cache.refresh_due(now).await;
    assert_eq!(pccs.hits.load(Ordering::SeqCst), hits + 2);
    assert!(cache.for_quote(&quote).is_some());
    cache.refresh_due(now + 1).await;
    assert_eq!(
        pccs.hits.load(Ordering::SeqCst),
        hits + 2,
        "retried within a minute"
    );
    cache.refresh_due(now + RETRY_SECS + 1).await;
    assert_eq!(pccs.hits.load(Ordering::SeqCst), hits + 3);
}

#[test]
fn platform_comes_from_the_quotes_pck_certificate() {
    let (fmspc, ca) = platform_of_quote(&testdata("tdx_quote")).unwrap();
    assert_eq!(fmspc.len(), 12);
    assert!(ca == "processor" || ca == "platform");
    assert!(platform_of_quote(b"not a quote").is_err());
}
