//! A proxy with an attestation policy admits a worker only with RA-TLS evidence
//! for an allowed worker image, a sealing key bound by evidence to the same
//! identity, and models the network allows. Real TLS on loopback, simulated TEE.

use std::sync::Arc;
use std::time::Duration;

use cocoon_attestation::simulated::SimulatedTee;
use cocoon_attestation::{AllowedModel, Attester, Policy};
use cocoon_protocol::ra_tls::AttestationCheck;
use cocoon_protocol::tls::{self, Identity, PinnedKeys};
use cocoon_protocol::worker_key::sealing_binding;
use cocoon_protocol::{
    dial_once, Announce, Connection, DialSettings, Event, Handler, Hello, ModelOffer, MuxOptions,
    ProxyEndpoint, RequestBody, Role, SealingKey, WorkerKey, DEFAULT_MAX_FRAME_BYTES,
};
use cocoon_proxy::{ProxyHandle, ProxySettings};
use futures::stream::{self, BoxStream, StreamExt};

const WEIGHTS: &str = "aa11aa11aa11aa11aa11aa11aa11aa11aa11aa11aa11aa11aa11aa11aa11aa11";

struct Idle;
impl Handler for Idle {
    fn serve(&self, _: &Connection, _: RequestBody) -> BoxStream<'static, Event> {
        stream::empty().boxed()
    }
}

fn check() -> Arc<AttestationCheck> {
    let image = SimulatedTee::measurements().image_hash();
    Arc::new(AttestationCheck {
        policy: Policy {
            allow_simulated: true,
            worker_images: [image.clone()].into(),
            proxy_images: [image].into(),
            models: vec![AllowedModel {
                name: "m".into(),
                sha256: WEIGHTS.into(),
            }],
            // Dating evidence is tested through the devnet (e2e::freshness).
            require_fresh_evidence: false,
            ..Policy::default()
        },
        collateral: None,
        verify_at: None,
        anchors: None,
        gpu: None,
        published: None,
    })
}

/// An identity with a simulated TEE, bound to a worker's configuration
/// (a proxy started with it binds its own).
fn attested() -> Arc<Identity> {
    let identity = Identity::generate()
        .unwrap()
        .with_attester(Arc::new(SimulatedTee::new()));
    identity.bind_configuration(&cocoon_attestation::Configuration {
        engine: Some(cocoon_attestation::EngineIdentity {
            kind: "embedded".into(),
            upstream: None,
        }),
        ..cocoon_attestation::Configuration::new(cocoon_attestation::PeerRole::Worker, "test")
    });
    Arc::new(identity)
}

async fn start(worker: &Identity) -> (ProxyEndpoint, ProxyHandle) {
    start_with(worker, check()).await
}

async fn start_with(
    worker: &Identity,
    check: Arc<AttestationCheck>,
) -> (ProxyEndpoint, ProxyHandle) {
    start_admitting(PinnedKeys::new([worker.fingerprint()]), check).await
}

/// A proxy admitting `workers` (`PinnedKeys::any()`: any worker whose
/// evidence passes `check`, pinned nowhere) and any client node.
async fn start_admitting(
    workers: PinnedKeys,
    check: Arc<AttestationCheck>,
) -> (ProxyEndpoint, ProxyHandle) {
    let proxy_id = attested();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = ProxyEndpoint {
        address: listener.local_addr().unwrap().to_string(),
        fingerprint: proxy_id.fingerprint(),
    };
    let (proxy, serve) = cocoon_proxy::start(
        listener,
        ProxySettings {
            attestation: Some(check),
            ..ProxySettings::pinned(proxy_id, PinnedKeys::default(), workers)
        },
    )
    .unwrap();
    tokio::spawn(serve);
    (endpoint, proxy)
}

/// Dial settings of a test worker using TLS settings `tls`.
fn worker_settings(tls: Arc<tokio_rustls::rustls::ClientConfig>) -> DialSettings {
    DialSettings {
        tls,
        hello: Hello {
            role: Role::Worker,
            software: "test".into(),
        },
        handler: Arc::new(Idle),
        mux: MuxOptions::default(),
        max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
        handshake_timeout: Duration::from_secs(5),
        max_backoff: Duration::from_secs(1),
        watch: None,
    }
}

async fn dial(worker: &Arc<Identity>, endpoint: &ProxyEndpoint) -> Connection {
    let tls = tls::client_config_attested(
        worker.clone(),
        Arc::new(PinnedKeys::new([endpoint.fingerprint])),
        Some(check()),
    )
    .unwrap();
    dial_once(endpoint, &worker_settings(tls)).await.unwrap()
}

/// `identity`'s sealing key with simulated evidence binding it.
fn key(identity: &Identity) -> WorkerKey {
    key_and_binding(identity).0
}

/// The key, and the report data its evidence binds.
fn key_and_binding(identity: &Identity) -> (WorkerKey, [u8; 64]) {
    let sealing = SealingKey::generate();
    let configuration = identity.configuration();
    let binding = cocoon_attestation::configuration::bind(
        sealing_binding(&sealing.public(), identity.spki(), None),
        configuration.as_deref(),
    );
    let evidence = SimulatedTee::new().evidence(&binding).unwrap();
    let key = WorkerKey {
        identity: identity.spki().to_vec(),
        sealing_key: sealing.public(),
        evidence: Some(evidence.to_bytes()),
        configuration: configuration.map(|c| c.to_vec()),
        anchor: None,
        gpus: Vec::new(),
    };
    (key, binding)
}

fn offer(weights: &str, key: WorkerKey) -> Announce {
    Announce {
        models: vec![ModelOffer {
            context_length: None,
            quantization: None,
            features: Default::default(),
            price_coefficient: 1000,
            name: "m".into(),
            max_concurrent: 1,
            weights_sha256: Some(weights.into()),
        }],
        key: Some(key),
        payout: None,
        vouched: None,
    }
}

/// Announce and return the reason the proxy closed the connection, if it did.
async fn announce(worker: &Arc<Identity>, announce: Announce) -> (Option<String>, ProxyHandle) {
    announce_to(check(), worker, announce).await
}

async fn announce_to(
    check: Arc<AttestationCheck>,
    worker: &Arc<Identity>,
    announce: Announce,
) -> (Option<String>, ProxyHandle) {
    let (endpoint, proxy) = start_with(worker, check).await;
    let conn = dial(worker, &endpoint).await;
    conn.announce(announce).unwrap();
    let closed = tokio::time::timeout(Duration::from_millis(500), conn.closed()).await;
    (
        closed.ok().map(|_| conn.close_reason().unwrap_or_default()),
        proxy,
    )
}

#[tokio::test]
async fn an_attested_worker_with_an_allowed_model_is_admitted() {
    let worker = attested();
    let (closed, proxy) = announce(&worker, offer(WEIGHTS, key(&worker))).await;
    assert_eq!(closed, None);
    assert_eq!(
        proxy.registry.keys("m", &Default::default()).unwrap().len(),
        1
    );
}

#[tokio::test]
async fn other_weights_or_an_unattested_sealing_key_are_refused() {
    let worker = attested();
    let other_weights = "bb".repeat(32);
    let (closed, proxy) = announce(&worker, offer(&other_weights, key(&worker))).await;
    let reason = closed.expect("refused");
    assert!(reason.contains("not allowed by the network"), "{reason}");
    assert!(proxy.registry.keys("m", &Default::default()).is_err());

    let bare = WorkerKey {
        evidence: None,
        ..key(&worker)
    };
    let (closed, _) = announce(&worker, offer(WEIGHTS, bare)).await;
    let reason = closed.expect("refused");
    assert!(reason.contains("no TEE evidence"), "{reason}");

    // Evidence binding another identity's key.
    let stranger = Identity::generate().unwrap();
    let mut borrowed = key(&stranger);
    borrowed.identity = worker.spki().to_vec();
    let (closed, _) = announce(&worker, offer(WEIGHTS, borrowed)).await;
    let reason = closed.expect("refused");
    assert!(reason.contains("does not bind"), "{reason}");
}

#[tokio::test]
async fn a_worker_without_ra_tls_evidence_cannot_connect() {
    let bare = Arc::new(Identity::generate().unwrap());
    let (endpoint, _proxy) = start(&bare).await;
    let tls = tls::client_config(
        bare.clone(),
        Arc::new(PinnedKeys::new([endpoint.fingerprint])),
    )
    .unwrap();
    let result = dial_once(&endpoint, &worker_settings(tls)).await;
    if let Ok(conn) = result {
        // TLS 1.3 clients learn of a refused certificate on first read.
        tokio::time::timeout(Duration::from_secs(2), conn.closed())
            .await
            .expect("refused");
    }
}

/// A network whose models run on confidential GPUs: the proxy admits a
/// worker whose GPU evidence answers its own key's nonce, and refuses one
/// without GPU evidence or showing evidence a GPU made for another
/// worker's key (a GPU owner lending one attested GPU to many workers).
#[tokio::test]
async fn a_proxy_requiring_gpus_admits_only_gpu_evidence_bound_to_the_workers_key() {
    use cocoon_attestation::gpu::{binding_nonce, simulated::SimulatedGpu, GpuReferences};
    let gpus = || {
        let mut check = (*check()).clone();
        check.policy.require_gpu = true;
        check.gpu = Some(GpuReferences::new(None, None).unwrap());
        Arc::new(check)
    };
    let gpu = SimulatedGpu::new();
    let worker = attested();
    let (mut honest, binding) = key_and_binding(&worker);
    honest.gpus = vec![gpu.evidence(&binding_nonce(&binding))];
    let (closed, proxy) = announce_to(gpus(), &worker, offer(WEIGHTS, honest)).await;
    assert_eq!(closed, None);
    assert_eq!(
        proxy.registry.keys("m", &Default::default()).unwrap().len(),
        1
    );

    let (closed, _) = announce_to(gpus(), &worker, offer(WEIGHTS, key(&worker))).await;
    let reason = closed.expect("refused");
    assert!(reason.contains("require_gpu"), "{reason}");

    let (_, other_binding) = key_and_binding(&attested());
    let (mut lent, _) = key_and_binding(&worker);
    lent.gpus = vec![gpu.evidence(&binding_nonce(&other_binding))];
    let (closed, proxy) = announce_to(gpus(), &worker, offer(WEIGHTS, lent)).await;
    let reason = closed.expect("refused");
    assert!(
        reason.contains("GPU 0: the report answers nonce"),
        "{reason}"
    );
    assert!(proxy.registry.keys("m", &Default::default()).is_err());
}

/// The open market: a proxy that pins no worker admits one it never heard
/// of on its evidence alone, and takes its announcement.
#[tokio::test]
async fn an_open_proxy_admits_an_unpinned_worker_on_its_evidence() {
    let (endpoint, proxy) = start_admitting(PinnedKeys::any(), check()).await;
    let stranger = attested();
    let conn = dial(&stranger, &endpoint).await;
    conn.announce(offer(WEIGHTS, key(&stranger))).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while proxy.registry.keys("m", &Default::default()).is_err() {
        assert!(std::time::Instant::now() < deadline, "not admitted");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(conn.close_reason().is_none());
}

/// Open admission is by evidence, so a worker showing none is not let in
/// (before: any key joined an open proxy as a worker), and evidence that
/// fails the policy (another image) fails the handshake, as for a pinned one.
#[tokio::test]
async fn an_open_proxy_refuses_workers_without_evidence_or_with_evidence_it_refuses() {
    let (endpoint, proxy) = start_admitting(PinnedKeys::any(), check()).await;
    let bare = Arc::new(Identity::generate().unwrap());
    let tls = tls::client_config(
        bare.clone(),
        Arc::new(PinnedKeys::new([endpoint.fingerprint])),
    )
    .unwrap();
    if let Ok(conn) = dial_once(&endpoint, &worker_settings(tls)).await {
        tokio::time::timeout(Duration::from_secs(2), conn.closed())
            .await
            .expect("a worker without evidence is refused");
    }

    let mut strict = (*check()).clone();
    strict.policy.worker_images = ["ab".repeat(32)].into();
    let (endpoint, _) = start_admitting(PinnedKeys::any(), Arc::new(strict)).await;
    let stranger = attested();
    let tls = tls::client_config(
        stranger.clone(),
        Arc::new(PinnedKeys::new([endpoint.fingerprint])),
    )
    .unwrap();
    if let Ok(conn) = dial_once(&endpoint, &worker_settings(tls)).await {
        tokio::time::timeout(Duration::from_secs(2), conn.closed())
            .await
            .expect("evidence of another image is refused");
    }
    assert!(proxy.registry.keys("m", &Default::default()).is_err());
}

/// A proxy following the root contract (`[attestation] root`): what the
/// chain publishes decides, and the local policy lists no images or models.
fn following(
    lists: &cocoon_attestation::PublishedLists,
) -> (Arc<AttestationCheck>, Arc<cocoon_attestation::Published>) {
    let published = Arc::new(cocoon_attestation::Published::with("0:root", lists.clone()));
    let mut check = (*check()).clone();
    check.policy.worker_images.clear();
    check.policy.models.clear();
    check.published = Some(published.clone());
    (Arc::new(check), published)
}

fn published_lists(version: u32) -> cocoon_attestation::PublishedLists {
    cocoon_attestation::PublishedLists {
        version,
        worker_images: [SimulatedTee::measurements().image_hash()].into(),
        proxy_images: [SimulatedTee::measurements().image_hash()].into(),
        models: [(WEIGHTS.to_string(), "m".to_string())].into(),
        rules: Default::default(),
    }
}

/// The network's operator withdraws, on chain, the model a connected
/// worker serves, then (for another worker) its image, then publishes
/// configuration rules the next worker's attested configuration breaks
/// (only `openai-http` engines; it runs `embedded`, and this proxy's own
/// policy allows any): the proxy drops each worker as soon as it reads
/// the change, not at its next periodic check, and routes nothing more to
/// it (these workers do not pause themselves, as a worker not following
/// the root would not); a worker whose image the root does not publish is
/// refused from the start.
#[tokio::test]
async fn a_proxy_following_the_root_contract_drops_workers_whose_model_image_or_configuration_is_withdrawn(
) {
    let routed = |proxy: &ProxyHandle| {
        proxy
            .registry
            .keys("m", &Default::default())
            .map(|k| k.len())
            .unwrap_or(0)
    };
    for withdraw in ["model", "image", "configuration"] {
        let (check, published) = following(&published_lists(1));
        let worker = attested();
        let (endpoint, proxy) = start_with(&worker, check).await;
        let conn = dial(&worker, &endpoint).await;
        conn.announce(offer(WEIGHTS, key(&worker))).unwrap();
        eventually(|| routed(&proxy) == 1).await;

        let mut lists = published_lists(2);
        match withdraw {
            "model" => lists.models.clear(),
            "image" => lists.worker_images.clear(),
            _ => {
                lists.rules = cocoon_attestation::ConfigurationRules {
                    worker_engines: ["openai-http".to_string()].into(),
                    ..Default::default()
                }
            }
        }
        assert!(published.update(lists));
        tokio::time::timeout(Duration::from_secs(5), conn.closed())
            .await
            .unwrap_or_else(|_| {
                panic!("the worker whose {withdraw} was withdrawn is still connected")
            });
        let reason = conn.close_reason().unwrap_or_default();
        let named = match withdraw {
            "configuration" => reason.contains("not among the root contract's worker engines"),
            _ => reason.contains("does not publish") && reason.contains(withdraw),
        };
        assert!(named, "{withdraw}: {reason}");
        assert_eq!(routed(&proxy), 0, "{withdraw}");
    }

    // An image the root never published: refused at the TLS handshake.
    let mut lists = published_lists(1);
    lists.worker_images = ["ff".repeat(32)].into();
    let (check, _) = following(&lists);
    let worker = attested();
    let (endpoint, proxy) = start_with(&worker, check).await;
    let tls = tls::client_config_attested(
        worker.clone(),
        Arc::new(PinnedKeys::new([endpoint.fingerprint])),
        Some(self::check()),
    )
    .unwrap();
    match dial_once(&endpoint, &worker_settings(tls)).await {
        Err(e) => assert!(e.to_string().contains("CertificateUnknown"), "{e}"),
        // TLS 1.3 clients learn of a refused certificate on first read.
        Ok(conn) => tokio::time::timeout(Duration::from_secs(2), conn.closed())
            .await
            .expect("refused"),
    }
    assert_eq!(routed(&proxy), 0);
}

/// Poll `ok` every 10 ms for up to 5 s.
async fn eventually(mut ok: impl FnMut() -> bool) {
    let started = std::time::Instant::now();
    while !ok() {
        assert!(started.elapsed() < Duration::from_secs(5), "not within 5 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
