//! A running worker: one kept-alive connection per configured proxy, each
//! announcing the engine's models on connect.

use cocoon_protocol::sync::LockRecover;
use std::sync::Arc;
use std::time::Duration;

use cocoon_attestation::configuration::bind;
use cocoon_attestation::gpu::{binding_nonce, GpuAttester};
use cocoon_attestation::{
    Configuration, ConfigurationRefusal, EngineIdentity, ModelIdentity, PeerRole,
};
use cocoon_protocol::ra_tls::AttestationCheck;
use cocoon_protocol::tls::{self, Fingerprint, PinnedKeys};
use cocoon_protocol::worker_key::sealing_binding;
use cocoon_protocol::{
    keep_connected, Announce, Connection, DialSettings, Hello, Role, SealingKey, WorkerKey,
    DEFAULT_MAX_FRAME_BYTES,
};
use tokio::sync::{watch, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::serve::{RequestHandler, WorkerStats};
use crate::{ConfigError, WorkerSettings};

/// How often the engine's own load (vLLM's gauges, the batch loop's counts) is read.
const LOAD_POLL: Duration = Duration::from_secs(5);

async fn poll_engine_load(
    engine: Arc<dyn cocoon_inference::Engine>,
    stats: Arc<WorkerStats>,
    stop: CancellationToken,
) {
    loop {
        let load = engine.load().await;
        *stats.engine_load.locked() = load;
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(LOAD_POLL) => {}
        }
    }
}

/// The engine's models as this worker offers them (at its price).
pub(crate) fn offers_of(settings: &WorkerSettings) -> Vec<cocoon_protocol::ModelOffer> {
    settings
        .engine
        .models()
        .into_iter()
        .map(|mut offer| {
            offer.price_coefficient = settings.price_coefficient;
            offer
        })
        .collect()
}

/// What this worker's evidence says it was told to do: its engine and
/// upstream, the models it offers, the policy it enforces, its proxies and
/// payout wallet, its version.
pub(crate) fn configuration_of(
    settings: &WorkerSettings,
    offers: &[cocoon_protocol::ModelOffer],
) -> Configuration {
    Configuration {
        role: PeerRole::Worker,
        version: env!("CARGO_PKG_VERSION").into(),
        engine: Some(EngineIdentity {
            kind: settings.engine.kind().into(),
            upstream: settings.engine.upstream(),
        }),
        models: offers
            .iter()
            .map(|o| ModelIdentity {
                name: o.name.clone(),
                weights_sha256: o.weights_sha256.clone(),
            })
            .collect(),
        policy_sha256: settings.attestation.as_ref().map(|a| a.policy.sha256()),
        trust_root: settings.attestation.as_ref().and_then(|a| a.trust_root()),
        proxies: settings
            .proxies
            .iter()
            .map(|p| format!("{}@{}", p.fingerprint, p.address))
            .collect(),
        contracts: settings
            .payout
            .as_ref()
            .map(|(e, _)| e.payout().to_string())
            .into_iter()
            .collect(),
    }
}

/// Would this worker's peers refuse its configuration? Then it does not
/// start, naming the setting.
pub(crate) fn check_own_configuration(
    settings: &WorkerSettings,
    configuration: &Configuration,
) -> Result<(), ConfigError> {
    let Some(check) = &settings.attestation else {
        return Ok(());
    };
    let lists = check.published.as_ref().and_then(|p| p.current());
    check
        .policy
        .check_configuration_under(
            Some(&configuration.to_bytes()),
            PeerRole::Worker,
            lists.as_deref().map(|l| &l.rules),
        )
        .map(|_| ())
        .map_err(|refusal| {
            let field = match refusal {
                ConfigurationRefusal::UpstreamNotLoopback { .. } => "engine.base_url",
                ConfigurationRefusal::EngineNotAllowed { .. } => "engine.kind",
                _ => "attestation.policy",
            };
            ConfigError::new(field, format!("peers would refuse this worker: {refusal}"))
        })
}

/// Why the network no longer trusts this worker, if it does not: its
/// image or a model it serves is not published (any more) by the root
/// contract it follows, or its configuration breaks the contract's rules.
/// Only publication is judged here; evidence that ages or collateral that
/// changes is its proxies' to judge.
fn withdrawal(
    settings: &WorkerSettings,
    offers: &[cocoon_protocol::ModelOffer],
    configuration: &Configuration,
    image: Option<&str>,
) -> Option<String> {
    let check = settings.attestation.as_ref()?;
    let published = check.published.as_ref()?;
    if let Err(e) = check_own_models(settings, offers) {
        return Some(e.message);
    }
    if let Err(e) = check_own_configuration(settings, configuration) {
        return Some(format!("its configuration: {}", e.message));
    }
    published
        .check_image(PeerRole::Worker, image?)
        .err()
        .map(|refusal| format!("its image: {refusal}"))
}

/// When the worker follows a root contract: at every change of its lists,
/// pause (announce no models, refuse new requests) while the network no
/// longer publishes its image or a model, or its rules exclude the
/// worker's configuration, saying why; resume when they allow it again.
/// `configuration` is the one its evidence binds, and `image` the
/// image hash its own evidence claims (each made once: neither changes
/// while the process runs).
fn follow_own_withdrawal(
    settings: WorkerSettings,
    offers: Vec<cocoon_protocol::ModelOffer>,
    configuration: Configuration,
    image: Option<String>,
    controls: Arc<crate::WorkerControls>,
    stop: CancellationToken,
) {
    let Some(mut lists) = settings
        .attestation
        .as_ref()
        .and_then(|check| check.published.as_ref())
        .map(|published| published.changes())
    else {
        return;
    };
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                changed = lists.changed() => if changed.is_err() { return },
            }
            let why = withdrawal(&settings, &offers, &configuration, image.as_deref());
            controls.set_withdrawn(why);
        }
    });
}

/// What announces this worker's models and key on one proxy's connection.
type Announcer = Arc<dyn Fn(&Connection) + Send + Sync>;

/// Announce again on every live connection whenever the operator drains,
/// resumes or changes a price (the offers at their prices now, or none
/// while draining), and when the sealing key rotates (the new key, with
/// evidence binding it).
async fn announce_on_change(
    mut changes: watch::Receiver<crate::controls::Pause>,
    mut prices: watch::Receiver<u64>,
    mut rotations: watch::Receiver<u64>,
    announcers: Vec<Announcer>,
    connections: Vec<watch::Receiver<Option<Connection>>>,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            changed = changes.changed() => if changed.is_err() { return },
            changed = prices.changed() => if changed.is_err() { return },
            changed = rotations.changed() => if changed.is_err() { return },
        }
        for (announce, connection) in announcers.iter().zip(&connections) {
            let live = connection.borrow().clone();
            if let Some(conn) = live {
                announce(&conn);
            }
        }
    }
}

/// Would this worker's peers refuse a model it serves (the policy's models,
/// and the root contract's once read)? Then it does not start, naming the
/// model. (A model withdrawn later on chain: its proxies disconnect it and
/// refuse its announcements, naming the withdrawal, which it logs.)
pub(crate) fn check_own_models(
    settings: &WorkerSettings,
    offers: &[cocoon_protocol::ModelOffer],
) -> Result<(), ConfigError> {
    let Some(check) = &settings.attestation else {
        return Ok(());
    };
    for offer in offers {
        check
            .check_model(&offer.name, offer.weights_sha256.as_deref())
            .map_err(|refusal| {
                let field = match refusal {
                    cocoon_attestation::Refusal::NotPublished { .. } => "attestation.root",
                    _ => "attestation.policy",
                };
                ConfigError::new(field, format!("peers would refuse this worker: {refusal}"))
            })?;
    }
    Ok(())
}

/// This worker's announced keys, their evidence made again once older than
/// [`tls::RENEW_AFTER`] (as its certificate is), so what it announces is
/// always within the policy's maximum age.
pub(crate) struct AttestedKey {
    identity: Arc<cocoon_protocol::tls::Identity>,
    sealing: Arc<crate::SealingKeys>,
    gpu: Option<Arc<dyn GpuAttester>>,
    /// This worker's own check (of its proxies), whose policy its GPU
    /// evidence must pass before it is announced.
    check: Option<Arc<AttestationCheck>>,
    current: std::sync::Mutex<(WorkerKey, std::time::Instant)>,
}

impl AttestedKey {
    pub(crate) fn new(
        identity: Arc<cocoon_protocol::tls::Identity>,
        sealing: Arc<crate::SealingKeys>,
        gpu: Option<Arc<dyn GpuAttester>>,
        check: Option<Arc<AttestationCheck>>,
    ) -> Result<Self, ConfigError> {
        let mut this = Self {
            identity,
            sealing,
            gpu,
            check,
            current: std::sync::Mutex::new((WorkerKey::default(), std::time::Instant::now())),
        };
        let key = this.make()?;
        this.current = std::sync::Mutex::new((key, std::time::Instant::now()));
        Ok(this)
    }

    /// The keys with fresh evidence, their GPUs' evidence bound to it and
    /// checked against this worker's own policy (peers would refuse what
    /// it refuses).
    fn make(&self) -> Result<WorkerKey, ConfigError> {
        let (mut key, binding) = attested_key(&self.identity, &self.sealing.current())?;
        if let Some(gpu) = &self.gpu {
            key.gpus = gpu
                .gpu_evidence(&binding_nonce(&binding))
                .map_err(|e| ConfigError::new("attestation.gpu", e))?;
        }
        if let Some(check) = &self.check {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            check.check_gpus(&key.gpus, &binding, now).map_err(|e| {
                ConfigError::new(
                    "attestation.gpu",
                    format!("peers would refuse this worker's GPUs: {e}"),
                )
            })?;
        }
        Ok(key)
    }

    /// The keys with evidence made within the renewal period, for the
    /// sealing key in use now; the last ones (logged) if new evidence
    /// cannot be made now.
    pub(crate) fn current(&self) -> WorkerKey {
        let mut current = self.current.locked();
        if current.1.elapsed() >= tls::RENEW_AFTER
            || current.0.sealing_key != self.sealing.current().public()
        {
            match self.make() {
                Ok(key) => *current = (key, std::time::Instant::now()),
                Err(e) => tracing::error!(error = %e, "could not renew the sealing key's evidence"),
            }
        }
        current.0.clone()
    }
}

/// This worker's sealing key with its identity and configuration, bound by
/// TEE evidence made now (it can take a second on real hardware), and the
/// report data that evidence binds.
fn attested_key(
    identity: &cocoon_protocol::tls::Identity,
    sealing: &SealingKey,
) -> Result<(WorkerKey, [u8; 64]), ConfigError> {
    let anchor = identity
        .anchor()
        .map_err(|e| ConfigError::new("attestation.ton_api", e.to_string()))?
        .map(|a| a.to_bytes().to_vec());
    let binding = bind(
        sealing_binding(&sealing.public(), identity.spki(), anchor.as_deref()),
        identity.configuration().as_deref(),
    );
    let evidence = match identity.evidence(&binding) {
        None => None,
        Some(Ok(evidence)) => Some(evidence.to_bytes()),
        Some(Err(e)) => {
            return Err(ConfigError::new(
                "attestation.tee",
                format!("could not get TEE evidence for the sealing key: {e}"),
            ))
        }
    };
    let key = WorkerKey {
        identity: identity.spki().to_vec(),
        sealing_key: sealing.public(),
        evidence,
        configuration: identity.configuration().map(|c| c.to_vec()),
        anchor,
        gpus: Vec::new(),
    };
    Ok((key, binding))
}

/// A started worker. Dropping it does not stop it; call [`Worker::stop`].
pub struct Worker {
    controls: Arc<crate::WorkerControls>,
    stats: Arc<WorkerStats>,
    metrics: Arc<cocoon_metrics::Metrics>,
    status: crate::WorkerStatus,
    earnings: Option<Arc<crate::Earnings>>,
    stop: CancellationToken,
    connections: Vec<watch::Receiver<Option<Connection>>>,
    fingerprint: Fingerprint,
    engine: String,
}

impl Worker {
    /// Check the engine, then dial every proxy (in the background, with retries).
    pub async fn start(settings: WorkerSettings) -> Result<Worker, ConfigError> {
        if let Err(e) = settings.engine.check().await {
            // The engine may come up later (a GPU server loading weights); keep going.
            tracing::warn!(error = %e, "engine check failed; requests will fail until it answers");
        }
        let offers = offers_of(&settings);
        let configuration = configuration_of(&settings, &offers);
        check_own_configuration(&settings, &configuration)?;
        settings.identity.bind_configuration(&configuration);
        cocoon_protocol::anchors_ready(&settings.identity, settings.attestation.as_deref()).await?;
        // Again under the root contract's rules, read by now.
        check_own_configuration(&settings, &configuration)?;
        check_own_models(&settings, &offers)?;
        let pins = PinnedKeys::new(settings.proxies.iter().map(|p| p.fingerprint));
        let tls = tls::client_config_attested(
            settings.identity.clone(),
            Arc::new(pins),
            settings.attestation.clone(),
        )
        .map_err(|e| ConfigError::new("identity_key", e.to_string()))?;
        let stats = Arc::new(WorkerStats::default());
        let prices = Arc::new(crate::Prices::new(&offers));
        let controls = Arc::new(crate::WorkerControls::new(stats.clone(), prices));
        let metrics = Arc::new(cocoon_metrics::Metrics::new("worker"));
        let sealing = Arc::new(crate::SealingKeys::new(
            settings.sealing_key_rotation,
            settings.replay_window,
        ));
        let key = Arc::new(AttestedKey::new(
            settings.identity.clone(),
            sealing.clone(),
            settings.gpu.clone(),
            settings.attestation.clone(),
        )?);
        let handler = Arc::new(RequestHandler {
            engine: settings.engine.clone(),
            models: offers
                .iter()
                .map(|o| {
                    (
                        o.name.clone(),
                        (
                            Arc::new(Semaphore::new(o.max_concurrent as usize)),
                            o.weights_sha256.clone(),
                            o.features,
                        ),
                    )
                })
                .collect(),
            stats: stats.clone(),
            metrics: metrics.clone(),
            identity: settings.identity.clone(),
            sealing: sealing.clone(),
            replay: crate::replay::ReplayGuard::new(settings.replay_window),
            coalesce: settings.coalesce,
            controls: controls.clone(),
        });
        let dial = DialSettings {
            tls,
            hello: Hello {
                role: Role::Worker,
                software: format!("cocoon-worker/{}", env!("CARGO_PKG_VERSION")),
            },
            handler,
            mux: settings.mux.clone(),
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            handshake_timeout: settings.mux.connect_timeout,
            max_backoff: Duration::from_secs(10),
            watch: settings.attestation.clone(),
        };
        let stop = CancellationToken::new();
        tokio::spawn(crate::sealing_keys::rotate_on_schedule(
            sealing.clone(),
            stop.clone(),
        ));
        let (announcers, connections): (Vec<Announcer>, Vec<_>) = settings
            .proxies
            .iter()
            .map(|endpoint| {
                let announce = Announce {
                    models: offers.clone(),
                    key: None,
                    payout: settings
                        .payout
                        .as_ref()
                        .map(|(earnings, _)| earnings.payout().to_string()),
                    vouched: None,
                };
                let earnings = settings.payout.as_ref().map(|(e, _)| e.clone());
                let proxy = endpoint.fingerprint.to_string();
                let key = key.clone();
                let controls = controls.clone();
                let announcer: Announcer = Arc::new(move |conn: &Connection| {
                    // The highest voucher kept from this proxy, as of now: a
                    // proxy restored from old books sees it is behind.
                    let mut announce = announce.clone();
                    // Evidence made within the renewal period (re-quoted
                    // when older: a connection outliving it is closed by
                    // the proxy when it ages out, and this runs again).
                    announce.key = Some(key.current());
                    announce.vouched = earnings.as_ref().and_then(|e| e.kept_voucher(&proxy));
                    // Each at its price now (set at run time by the owner).
                    let prices = controls.prices();
                    for offer in &mut announce.models {
                        if let Some(price) = prices.current(&offer.name) {
                            offer.price_coefficient = price;
                        }
                    }
                    // Draining: no model offered, so nothing new is routed here.
                    if controls.draining() {
                        announce.models.clear();
                    }
                    let _ = conn.announce(announce);
                });
                let on_connect = announcer.clone();
                let connection =
                    keep_connected(endpoint.clone(), dial.clone(), stop.clone(), move |conn| {
                        on_connect(conn)
                    });
                (announcer, connection)
            })
            .unzip();
        // This node's TEE and image, for its status page and its own
        // withdrawal check (its evidence made once here).
        let attestation = crate::status::attestation_of(&settings.identity);
        follow_own_withdrawal(
            settings.clone(),
            offers.clone(),
            configuration.clone(),
            attestation["image_hash"].as_str().map(str::to_string),
            controls.clone(),
            stop.clone(),
        );
        tokio::spawn(announce_on_change(
            controls.changes(),
            controls.prices().changes(),
            sealing.rotations(),
            announcers,
            connections.clone(),
            stop.clone(),
        ));
        if let Some((earnings, every)) = &settings.payout {
            let proxies = settings
                .proxies
                .iter()
                .map(|p| p.fingerprint.to_string())
                .zip(connections.iter().cloned())
                .collect();
            tokio::spawn(earnings.clone().run(proxies, *every, stop.clone()));
        }
        tokio::spawn(poll_engine_load(
            settings.engine.clone(),
            stats.clone(),
            stop.clone(),
        ));
        tracing::info!(fingerprint = %settings.identity.fingerprint(), engine = %settings.engine.describe(), "worker started");
        let status = crate::WorkerStatus {
            stats: stats.clone(),
            connections: settings
                .proxies
                .iter()
                .map(|p| p.address.clone())
                .zip(connections.iter().cloned())
                .collect(),
            fingerprint: settings.identity.fingerprint(),
            engine: settings.engine.describe(),
            attestation,
            offers: offers
                .iter()
                .map(|o| (o.name.clone(), o.max_concurrent, o.weights_sha256.clone()))
                .collect(),
            earnings: settings.payout.as_ref().map(|(e, _)| e.clone()),
            controls: controls.clone(),
            sealing: sealing.clone(),
            admin: settings
                .admin_token
                .clone()
                .map(|token| cocoon_metrics::admin::Admin {
                    token,
                    controls: controls.clone(),
                }),
        };
        metrics.add_collector(status.clone());
        Ok(Worker {
            controls,
            stats,
            metrics,
            status,
            earnings: settings.payout.as_ref().map(|(e, _)| e.clone()),
            stop,
            connections,
            fingerprint: settings.identity.fingerprint(),
            engine: settings.engine.describe(),
        })
    }

    pub fn stats(&self) -> &Arc<WorkerStats> {
        &self.stats
    }

    /// Drain and resume (what the admin endpoints drive).
    pub fn controls(&self) -> &Arc<crate::WorkerControls> {
        &self.controls
    }

    /// Request metrics and gauges (`/metrics`).
    pub fn metrics(&self) -> &Arc<cocoon_metrics::Metrics> {
        &self.metrics
    }

    /// Readiness and `/stats`.
    pub fn status(&self) -> crate::WorkerStatus {
        self.status.clone()
    }

    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }

    /// Earnings and claims, when the worker is paid on TON.
    pub fn earnings(&self) -> Option<&Arc<crate::Earnings>> {
        self.earnings.as_ref()
    }

    /// The live connection to proxy `index` (in configuration order).
    pub fn connection(&self, index: usize) -> Option<Connection> {
        self.connections.get(index)?.borrow().clone()
    }

    pub fn engine(&self) -> &str {
        &self.engine
    }

    /// Proxies connected right now.
    pub fn connected_proxies(&self) -> usize {
        self.connections
            .iter()
            .filter(|c| c.borrow().is_some())
            .count()
    }

    /// Wait until at least `n` proxies are connected.
    pub async fn wait_connected(&self, n: usize) {
        while self.connected_proxies() < n {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Say goodbye to every proxy and stop redialling.
    pub fn stop(&self) {
        self.stop.cancel();
    }
}
