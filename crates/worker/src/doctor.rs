//! `cocoon worker doctor`: a worker's setup checked step by step, in the
//! order the worker itself starts (TEE, identity and evidence, engine and
//! model files, the network's policy and root contract, GPUs, each proxy,
//! the payout wallet), each step saying what it found and, when it fails,
//! what to fix. Every check is the real one: the evidence is made by the
//! configured TEE and judged by the same policy proxies judge it with, and
//! each proxy is dialled with the worker's own key and evidence and told
//! its keys and payout (an announcement with no models, so nothing is
//! routed to the doctor); the proxy admits it when it keeps the connection.

use std::sync::Arc;
use std::time::Duration;

use cocoon_attestation::PeerRole;
use cocoon_protocol::tls::{self, PinnedKeys};
use cocoon_protocol::{
    dial_once, Connection, DialSettings, Hello, RequestBody, Role, TeeChoice,
    DEFAULT_MAX_FRAME_BYTES,
};
use futures::stream::BoxStream;

use crate::run::{
    check_own_configuration, check_own_models, configuration_of, offers_of, AttestedKey,
};
use crate::{ConfigError, WorkerConfig};

/// How long a proxy has to turn the worker away after the handshake
/// before it counts as admitted (a refusal closes the connection at once).
const ADMISSION_WAIT: Duration = Duration::from_secs(2);

/// Dials to each proxy before it counts as unreachable.
const DIAL_TRIES: usize = 3;

/// What one step found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Pass,
    /// Works, but not as a production network expects.
    Warn,
    Fail,
}

/// One step's finding: what it checked, what it found, what to do.
#[derive(Debug, Clone)]
pub struct Finding {
    pub step: String,
    pub outcome: Outcome,
    pub detail: String,
    pub fix: Option<String>,
}

impl Finding {
    fn pass(step: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            step: step.into(),
            outcome: Outcome::Pass,
            detail: detail.into(),
            fix: None,
        }
    }

    fn warn(step: impl Into<String>, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            step: step.into(),
            outcome: Outcome::Warn,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }

    fn fail(step: impl Into<String>, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            step: step.into(),
            outcome: Outcome::Fail,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }

    fn of_error(step: &str, e: &ConfigError) -> Self {
        Self::fail(
            step,
            e.to_string(),
            format!("fix `{}` in worker.toml", e.field),
        )
    }
}

/// Serves nothing: the doctor's connections only show that a proxy admits
/// the worker.
struct Nothing;

impl cocoon_protocol::Handler for Nothing {
    fn serve(
        &self,
        _conn: &Connection,
        _body: RequestBody,
    ) -> BoxStream<'static, cocoon_protocol::Event> {
        Box::pin(futures::stream::iter([cocoon_protocol::Event::Error(
            cocoon_protocol::WireError::new(
                cocoon_protocol::ErrorKind::Upstream,
                "this is `cocoon worker doctor`, not a worker",
            ),
        )]))
    }
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Check the worker `config` describes, step by step; later steps that
/// need an earlier one are left out when it failed.
pub async fn diagnose(config: WorkerConfig) -> Vec<Finding> {
    let mut found = vec![profile(&config), tee(&config)];
    let payout = config.payout.clone();
    // Loading makes a key file that is not there (as the worker's first
    // start does): say so, a mistyped path is a new key nobody pins.
    let new_key = (config.attestation.tee != TeeChoice::Tdx
        && config.attestation.key_manager.is_none()
        && !config.identity_key.exists())
    .then(|| config.identity_key.clone());
    let settings = match tokio::task::spawn_blocking(move || config.into_settings()).await {
        Ok(Ok(settings)) => settings,
        Ok(Err(e)) => {
            found.push(Finding::of_error(
                "identity, evidence, engine and chain lists",
                &e,
            ));
            return found;
        }
        Err(e) => {
            found.push(Finding::fail(
                "identity, evidence, engine and chain lists",
                format!("loading failed: {e}"),
                "see the log above",
            ));
            return found;
        }
    };
    found.push(Finding::pass(
        "identity and engine",
        format!(
            "key {}, engine {}",
            settings.identity.fingerprint(),
            settings.engine.describe()
        ),
    ));
    if let Some(path) = new_key {
        found.push(Finding::warn(
            "identity key file",
            format!("{} did not exist: a new key was made there, as the worker's first start would", path.display()),
            "if this worker ran before, its key is elsewhere: check identity_key (proxies pinning workers know the old one)",
        ));
    }
    found.push(match settings.engine.check().await {
        Ok(()) => Finding::pass("engine answers", "the engine is up"),
        Err(e) => Finding::fail(
            "engine answers",
            e.to_string(),
            "start the engine (for openai-http: the server at engine.base_url) before the worker",
        ),
    });

    let offers = offers_of(&settings);
    let models = offers
        .iter()
        .map(|o| match &o.weights_sha256 {
            Some(sha256) => format!("{} (weights {sha256})", o.name),
            None => format!("{} (no weights hash)", o.name),
        })
        .collect::<Vec<_>>()
        .join(", ");
    found.push(match check_own_models(&settings, &offers) {
        Ok(()) => Finding::pass("models allowed", models),
        Err(e) => Finding::fail(
            "models allowed",
            e.to_string(),
            "serve a model the network publishes (`cocoon root show` lists them; the hash is the GGUF file's SHA-256)",
        ),
    });
    let configuration = configuration_of(&settings, &offers);
    found.push(match check_own_configuration(&settings, &configuration) {
        Ok(()) => Finding::pass(
            "configuration allowed",
            format!(
                "sha256 {}",
                hex::encode(cocoon_attestation::configuration::digest(
                    &configuration.to_bytes()
                ))
            ),
        ),
        Err(e) => Finding::of_error("configuration allowed", &e),
    });
    settings.identity.bind_configuration(&configuration);
    if let Err(e) =
        cocoon_protocol::anchors_ready(&settings.identity, settings.attestation.as_deref()).await
    {
        found.push(Finding::of_error("evidence dated on chain", &e));
        return found;
    }
    found.push(evidence(&settings));
    let (finding, key) = gpus(&settings);
    found.push(finding);
    let announce = key.map(|key| cocoon_protocol::Announce {
        // No models: nothing is routed here, as while draining.
        models: Vec::new(),
        key: Some(key.current()),
        payout: settings
            .payout
            .as_ref()
            .map(|(earnings, _)| earnings.payout().to_string()),
        vouched: None,
    });
    for endpoint in &settings.proxies {
        found.push(proxy(&settings, endpoint, announce.clone()).await);
    }
    if let (Some(config), Some((earnings, _))) = (payout, &settings.payout) {
        found.push(wallet(&config, earnings.payout()).await);
    }
    found
}

fn profile(config: &WorkerConfig) -> Finding {
    match config.profile {
        cocoon_protocol::Profile::Production => Finding::pass("profile", "production"),
        cocoon_protocol::Profile::Development => Finding::warn(
            "profile",
            "development: simulated TEEs and test engines are accepted",
            "a production network's proxies refuse such a worker; set profile = \"production\" on a real TDX host",
        ),
    }
}

fn tee(config: &WorkerConfig) -> Finding {
    match config.attestation.tee {
        TeeChoice::Tdx => {
            let root = config
                .attestation
                .configfs
                .clone()
                .unwrap_or_else(|| cocoon_attestation::tdx::DEFAULT_ROOT.into());
            if root.is_dir() {
                Finding::pass("TEE", format!("TDX, configfs-tsm at {}", root.display()))
            } else {
                Finding::fail(
                    "TEE",
                    format!("TDX chosen, but {} is not there", root.display()),
                    "run inside a TDX guest (kernel 6.7 or later) with configfs mounted: mount -t configfs none /sys/kernel/config",
                )
            }
        }
        TeeChoice::Simulated => Finding::warn(
            "TEE",
            "SIMULATED: the evidence proves nothing",
            "attestation.tee = \"tdx\" on a TDX host",
        ),
        TeeChoice::None => Finding::warn(
            "TEE",
            "none: the certificate carries no evidence",
            "only proxies that pin this worker's key admit it; set attestation.tee = \"tdx\"",
        ),
    }
}

/// The worker's certificate judged as its proxies judge it.
fn evidence(settings: &crate::WorkerSettings) -> Finding {
    const STEP: &str = "evidence accepted by the policy";
    let Some(check) = &settings.attestation else {
        return Finding::warn(
            STEP,
            "no attestation.policy: nothing judges this worker's evidence here",
            "set attestation.policy (and attestation.root) to the network's",
        );
    };
    let certificate = match settings.identity.issue_certificate() {
        Ok(certificate) => certificate,
        Err(e) => {
            return Finding::fail(
                STEP,
                format!("no evidence could be made: {e}"),
                "check the TEE step above",
            )
        }
    };
    match check.check_der(&certificate, PeerRole::Worker, now_secs()) {
        Ok(verdict) => Finding::pass(
            STEP,
            format!("{:?} image {}", verdict.tee, verdict.image_hash),
        ),
        Err(refusal) => Finding::fail(
            STEP,
            refusal.to_string(),
            "the image must be one the network publishes (`cocoon root show`, worker_images) and the policy's TCB and freshness rules met",
        ),
    }
}

/// The worker's announced keys, with its GPUs' evidence when it has
/// GPUs: what its proxies check at announcement.
fn gpus(settings: &crate::WorkerSettings) -> (Finding, Option<AttestedKey>) {
    const STEP: &str = "GPUs attested";
    let key = AttestedKey::new(
        settings.identity.clone(),
        Arc::new(crate::SealingKeys::new(
            settings.sealing_key_rotation,
            settings.replay_window,
        )),
        settings.gpu.clone(),
        settings.attestation.clone(),
    );
    let finding = match (&key, &settings.gpu, &settings.attestation) {
        (Err(e), _, _) => Finding::fail(
            STEP,
            e.to_string(),
            "turn confidential computing on (nvidia-smi conf-compute -scc) and check the driver and VBIOS versions the policy allows",
        ),
        (Ok(_), None, _) => Finding::warn(
            STEP,
            "no GPU evidence (attestation.gpu)",
            "proxies whose policy requires GPUs refuse this worker; set attestation.gpu = \"nvml\" on an H100/H200 in confidential-computing mode",
        ),
        (Ok(_), Some(_), None) => Finding::warn(
            STEP,
            "evidence made, not judged (no attestation.policy)",
            "set attestation.policy to the network's",
        ),
        (Ok(_), Some(_), Some(_)) => Finding::pass(STEP, "evidence made and accepted by the policy"),
    };
    (finding, key.ok())
}

/// Dial `endpoint` as the worker does, announce the worker's keys (and
/// payout) with no models, and see whether it keeps us.
async fn proxy(
    settings: &crate::WorkerSettings,
    endpoint: &cocoon_protocol::ProxyEndpoint,
    announce: Option<cocoon_protocol::Announce>,
) -> Finding {
    let step = format!("proxy {}", endpoint.address);
    let tls = match tls::client_config_attested(
        settings.identity.clone(),
        Arc::new(PinnedKeys::new([endpoint.fingerprint])),
        settings.attestation.clone(),
    ) {
        Ok(tls) => tls,
        Err(e) => return Finding::fail(step, e.to_string(), "check identity_key"),
    };
    let dial = DialSettings {
        tls,
        hello: Hello {
            role: Role::Worker,
            software: format!("cocoon-worker-doctor/{}", env!("CARGO_PKG_VERSION")),
        },
        handler: Arc::new(Nothing),
        mux: settings.mux.clone(),
        max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
        handshake_timeout: settings.mux.connect_timeout,
        max_backoff: Duration::from_secs(1),
        watch: None,
    };
    // A few tries, as the worker redials: some refusals pass on the next
    // attempt (the collateral or the block dating the peer's evidence is
    // being fetched meanwhile).
    let mut dialled = dial_once(endpoint, &dial).await;
    for _ in 1..DIAL_TRIES {
        if dialled.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        dialled = dial_once(endpoint, &dial).await;
    }
    let not_admitted = format!(
        "a proxy pinning its workers must list {} in allowed_workers; an open proxy must accept this worker's evidence (its log says why)",
        settings.identity.fingerprint()
    );
    let conn = match dialled {
        Ok(conn) => conn,
        // The proxy's TLS refuses keys it does not pin with this alert.
        Err(e) if e.to_string().contains("AccessDenied") => {
            return Finding::fail(
                step,
                format!("the proxy refused this worker's key in the handshake: it does not admit this worker ({e})"),
                not_admitted,
            )
        }
        Err(e) => {
            return Finding::fail(
                step,
                format!("cannot connect: {e}"),
                "check the address and key in [[proxies]], that the proxy runs, and that its evidence passes this worker's policy",
            )
        }
    };
    if let Some(announce) = &announce {
        let _ = conn.announce(announce.clone());
    }
    let refused = tokio::time::timeout(ADMISSION_WAIT, conn.closed())
        .await
        .is_ok();
    conn.close("cocoon worker doctor: checked");
    if refused {
        Finding::fail(
            step,
            format!(
                "the proxy closed the connection after the handshake: it does not admit this worker ({})",
                conn.close_reason().unwrap_or_else(|| "no reason given".into())
            ),
            not_admitted,
        )
    } else if announce.is_some() {
        Finding::pass(
            step,
            "connected, and its keys and payout announced and kept",
        )
    } else {
        Finding::warn(
            step,
            "connected and kept, but nothing announced (no keys could be made: see the GPU step)",
            "fix the steps above",
        )
    }
}

/// The payout wallet on chain.
async fn wallet(config: &crate::PayoutConfig, payout: &cocoon_chain::StdAddr) -> Finding {
    let step = "payout wallet";
    let chain =
        match cocoon_chain::ton_http::from_config(&config.ton_api, config.api_key_env.as_deref()) {
            Ok(chain) => chain,
            Err(e) => return Finding::fail(step, e.to_string(), "fix payout.ton_api"),
        };
    match cocoon_chain::Chain::account(&chain, payout).await {
        Ok(account) if account.balance > 0 => Finding::pass(
            step,
            format!(
                "{payout}: {} TON",
                cocoon_chain::pricing::format_ton(account.balance)
            ),
        ),
        Ok(_) => Finding::warn(
            step,
            format!("{payout} holds nothing"),
            "claims cost a small fee: send the wallet ~0.5 TON",
        ),
        Err(e) => Finding::fail(
            step,
            format!("{payout}: {e}"),
            "check payout.ton_api (and its API key)",
        ),
    }
}
