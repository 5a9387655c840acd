//! The fuzz harnesses: each feeds bytes from another party to one decoder
//! and checks it answers (a value or an error), never panics, hangs or
//! allocates without bound. `fuzz_targets/` wraps each for libFuzzer
//! (`scripts/fuzz`); `tests/replay.rs` runs each over its seeds and every
//! input that once crashed it (`seeds/<target>/`), in the default test run.

#![forbid(unsafe_code)]

use cocoon_protocol::tls::Fingerprint;

/// The node-to-node wire: a frame's body, and a hello.
pub fn wire_frame(data: &[u8]) {
    if let Ok(frame) = cocoon_protocol::decode_frame(data) {
        // What decodes re-encodes to something that decodes the same.
        let again = cocoon_protocol::encode_frame(&frame).expect("a decoded frame encodes");
        let back = cocoon_protocol::decode_frame(&again).expect("an encoded frame decodes");
        assert_eq!(format!("{frame:?}"), format!("{back:?}"));
    }
    let _ = cocoon_protocol::read_hello(data);
}

/// A peer's certificate: the RA-TLS evidence extension and the evidence in it.
pub fn ra_tls_evidence(data: &[u8]) {
    let _ = cocoon_protocol::ra_tls::evidence_in(data);
    if let Ok(evidence) = cocoon_attestation::Evidence::from_bytes(data) {
        let _ = evidence.claimed_image_hash();
        let _ = evidence.verify(None, 0);
    }
}

/// A sealed request as it reaches a worker (postcard), opened with a key it
/// was not sealed to: always refused, never a panic.
pub fn sealed_request(data: &[u8]) {
    use std::sync::OnceLock;
    static KEY: OnceLock<cocoon_protocol::SealingKey> = OnceLock::new();
    let key = KEY.get_or_init(cocoon_protocol::SealingKey::generate);
    if let Ok(request) = postcard::from_bytes::<cocoon_protocol::SealedRequest>(data) {
        let me = request
            .workers()
            .next()
            .copied()
            .unwrap_or(Fingerprint([0; 32]));
        assert!(
            key.open(&me, &request).is_err(),
            "arbitrary bytes opened as a sealed request"
        );
    }
}

/// An app's request body, as the client node's API validates it.
pub fn openai_request(data: &[u8]) {
    let _ = cocoon_client::check_request(true, data);
    let _ = cocoon_client::check_request(false, data);
}

/// The roles' configuration files.
pub fn config_toml(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = cocoon_client::ClientConfig::from_toml(text);
    let _ = cocoon_proxy::ProxyConfig::from_toml(text);
    let _ = cocoon_worker::WorkerConfig::from_toml(text);
}

/// What the nodes read from TON: bags of cells (transactions, the proxy
/// registry, snake strings), the HTTP API's JSON, addresses.
pub fn ton_cells(data: &[u8]) {
    use tycho_types::boc::Boc;
    if let Ok(cell) = Boc::decode(data) {
        let _ = cocoon_chain::TxSummary::from_cell(&cell);
        let _ = cocoon_chain::registry::read_snake(&cell);
        let _ = cocoon_chain::RegisteredProxy::list_from_dict(cell);
    }
    if let Ok(json) = serde_json::from_slice::<serde_json::Value>(data) {
        let _ = cocoon_chain::ton_http::parse_transactions(&json);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = cocoon_chain::ton_http::parse_address(text);
    }
}

/// A Telegram chat export.
pub fn chat_export(data: &[u8]) {
    if let Ok(chat) = cocoon_messenger::chat_export::parse(data) {
        let lines = cocoon_messenger::summarize::transcript(
            &chat,
            &cocoon_messenger::summarize::Selection::All,
        );
        for piece in cocoon_messenger::summarize::chunks(&lines, 256) {
            assert!(piece.len() <= 256);
        }
    }
}

/// A GPU's attestation evidence as a worker would forward it: the SPDM
/// report, and a RIM (XML) with its canonical form for the signature check.
pub fn gpu_evidence(data: &[u8]) {
    use cocoon_attestation::gpu;
    if let Ok(report) = gpu::SpdmReport::parse(data) {
        let _ = report.driver_version();
        let _ = report.vbios_version();
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(rim) = gpu::Rim::parse(gpu::RimKind::Driver, text) {
            let _ = gpu::xmldsig::verify(&rim.xml, &[], "fuzz");
        }
        let _ = gpu::xmldsig::canonicalize(text, gpu::xmldsig::Subset::WithoutSignature);
    }
}

/// A harness: bytes in, a panic only on a bug.
pub type Harness = fn(&[u8]);

/// Every harness, by target name.
pub const TARGETS: &[(&str, Harness)] = &[
    ("wire_frame", wire_frame),
    ("ra_tls_evidence", ra_tls_evidence),
    ("sealed_request", sealed_request),
    ("openai_request", openai_request),
    ("config_toml", config_toml),
    ("ton_cells", ton_cells),
    ("chat_export", chat_export),
    ("gpu_evidence", gpu_evidence),
];
