//! `cocoon attest verify|show-cert|verify-gpu|bench`: an operator's or
//! auditor's check of a TDX quote (or of a running node's RA-TLS certificate)
//! against DCAP collateral at a given time and an optional policy, or of an
//! NVIDIA GPU's evidence against its RIMs, printed as JSON; the exit status
//! says whether it was accepted.

use std::path::PathBuf;

mod gpu;
pub use gpu::{verify_gpu, VerifyGpuArgs};

use anyhow::Context;
use cocoon_attestation::{tdx, Evidence, PeerRole, Policy};
use serde_json::json;

#[derive(clap::Args, Debug)]
pub struct VerifyArgs {
    /// The raw quote (as configfs-tsm's outblob gives it).
    #[arg(long, value_name = "FILE")]
    pub quote: PathBuf,
    /// DCAP collateral in dcap-qvl's JSON shape.
    #[arg(long, value_name = "FILE")]
    pub collateral: PathBuf,
    /// Verify as of this time (RFC 3339, e.g. 2025-06-20T00:00:00Z); default now.
    #[arg(long, value_name = "TIME")]
    pub at: Option<String>,
    /// Policy (the network's root configuration, TOML: worker_images,
    /// proxy_images, models, accepted_tcb_statuses, allow_simulated); without
    /// one, only the quote's validity is checked.
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// Which role's allowed images the policy checks the quote against.
    #[arg(long, value_enum, default_value = "worker")]
    pub role: RoleArg,
}

/// A node role whose images a policy lists.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum RoleArg {
    Worker,
    Proxy,
}

impl From<RoleArg> for PeerRole {
    fn from(role: RoleArg) -> Self {
        match role {
            RoleArg::Worker => PeerRole::Worker,
            RoleArg::Proxy => PeerRole::Proxy,
        }
    }
}

/// Print the verdict as JSON; `Ok(false)` when the quote is refused.
pub fn verify(args: &VerifyArgs) -> anyhow::Result<bool> {
    let quote =
        std::fs::read(&args.quote).with_context(|| format!("--quote {}", args.quote.display()))?;
    let collateral = load_collateral(&args.collateral)?;
    let at = parse_at(args.at.as_deref())?;
    let policy = load_policy(args.policy.as_ref())?;
    let (output, accepted) = match Evidence::Tdx(quote).verify(Some(&collateral), at) {
        Err(e) => (json!({"accepted": false, "reason": e.to_string()}), false),
        Ok(verdict) => {
            let refusal = policy
                .as_ref()
                .and_then(|p| p.check(&verdict, args.role.into(), None).err());
            let accepted = refusal.is_none();
            (
                json!({
                    "accepted": accepted,
                    "reason": refusal.map(|r| r.to_string()),
                    "policy_checked": policy.is_some(),
                    "verdict": verdict,
                }),
                accepted,
            )
        }
    };
    println!("{}", serde_json::to_string_pretty(&output)?);
    Ok(accepted)
}

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    #[command(flatten)]
    pub input: VerifyArgs,
    /// Verifications to time.
    #[arg(long, default_value_t = 200)]
    pub iterations: u32,
    /// Also time GPU evidence verification: the report, chain, RIMs and
    /// nonce as `verify-gpu` takes them, at `--gpu-at`.
    #[arg(long, value_name = "FILE", requires_all = ["gpu_certs", "gpu_rims", "gpu_nonce"])]
    pub gpu_report: Option<PathBuf>,
    #[arg(long, value_name = "FILE")]
    pub gpu_certs: Option<PathBuf>,
    #[arg(long, value_name = "DIR")]
    pub gpu_rims: Option<PathBuf>,
    #[arg(long, value_name = "HEX")]
    pub gpu_nonce: Option<String>,
    #[arg(long, value_name = "TIME")]
    pub gpu_at: Option<String>,
}

/// Time quote verification (TDX with dcap-qvl, and simulated evidence), RA-TLS
/// handshakes and HPKE sealing, and print p50/mean of each.
pub async fn bench(args: &BenchArgs) -> anyhow::Result<()> {
    let quote = std::fs::read(&args.input.quote)
        .with_context(|| format!("--quote {}", args.input.quote.display()))?;
    let collateral = load_collateral(&args.input.collateral)?;
    let at = parse_at(args.input.at.as_deref())?;
    let tdx = Evidence::Tdx(quote);
    tdx.verify(Some(&collateral), at)
        .map_err(|e| anyhow::anyhow!("the quote does not verify at that time: {e}"))?;
    let simulated = Evidence::Simulated(Box::new(
        cocoon_attestation::simulated::SimulatedTee::new().quote(&[7; 64]),
    ));
    for (name, evidence) in [
        ("TDX quote (dcap-qvl)", &tdx),
        ("simulated quote", &simulated),
    ] {
        time_it(&format!("{name} verification"), args.iterations, || {
            std::hint::black_box(evidence.verify(Some(&collateral), at)).ok();
        });
    }
    if let (Some(report), Some(certs), Some(rims), Some(nonce)) = (
        &args.gpu_report,
        &args.gpu_certs,
        &args.gpu_rims,
        &args.gpu_nonce,
    ) {
        let (report, chain, reference, nonce, at) = gpu::load(
            report,
            certs,
            rims,
            nonce,
            args.gpu_at.as_deref(),
            None,
            None,
        )?;
        cocoon_attestation::gpu::verify(&report, &chain, &reference, &nonce, at)
            .map_err(|e| anyhow::anyhow!("the GPU evidence does not verify: {e}"))?;
        time_it(
            "GPU evidence verification (chain, report, 2 RIMs)",
            args.iterations,
            || {
                std::hint::black_box(cocoon_attestation::gpu::verify(
                    &report, &chain, &reference, &nonce, at,
                ))
                .ok();
            },
        );
    }
    cocoon_bench::trust::run(args.iterations).await
}

/// Run `f` `iterations` times; print p50 and mean.
fn time_it(name: &str, iterations: u32, mut f: impl FnMut()) {
    let mut times = Vec::with_capacity(iterations as usize);
    for _ in 0..iterations.max(1) {
        let start = std::time::Instant::now();
        f();
        times.push(start.elapsed());
    }
    times.sort();
    let mean = times.iter().sum::<std::time::Duration>() / times.len() as u32;
    println!(
        "{name:<48} p50 {:8.1} µs, mean {:8.1} µs over {} runs",
        times[times.len() / 2].as_secs_f64() * 1e6,
        mean.as_secs_f64() * 1e6,
        times.len()
    );
}

#[derive(clap::Args, Debug)]
pub struct ShowCertArgs {
    /// The node's TLS address (a proxy's listen address).
    pub address: String,
    /// DCAP collateral (dcap-qvl JSON), to verify TDX evidence.
    #[arg(long, value_name = "FILE")]
    pub collateral: Option<PathBuf>,
    /// Verify as of this time (RFC 3339); default now.
    #[arg(long, value_name = "TIME")]
    pub at: Option<String>,
    /// Policy (TOML) to judge the evidence by.
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// TON HTTP API (`testnet`, `mainnet` or a URL) to look up the
    /// masterchain block the evidence binds: when it was made, and (with
    /// `--policy`) whether it is fresh enough.
    #[arg(long, value_name = "URL")]
    pub ton_api: Option<String>,
    /// Which role's allowed images to check (nodes that listen are proxies).
    #[arg(long, value_enum, default_value = "proxy")]
    pub role: RoleArg,
}

/// Connect to a node, print its certificate's RA-TLS evidence and verdict as
/// JSON; `Ok(false)` when it has none, or it fails verification or the policy.
pub async fn show_cert(args: &ShowCertArgs) -> anyhow::Result<bool> {
    use cocoon_protocol::ra_tls;
    let at = parse_at(args.at.as_deref())?;
    let collateral = args.collateral.as_ref().map(load_collateral).transpose()?;
    let policy = load_policy(args.policy.as_ref())?;
    let der = ra_tls::fetch_certificate(&args.address, std::time::Duration::from_secs(10))
        .await
        .with_context(|| format!("connecting to {}", args.address))?;
    let key = cocoon_protocol::tls::Fingerprint::of_certificate(&der)?;
    let evidence = ra_tls::evidence_in(&der).map_err(|e| anyhow::anyhow!("{e}"))?;
    let Some(evidence) = evidence else {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &json!({"address": args.address, "key": key.to_string(), "evidence": null, "accepted": false, "reason": "the certificate carries no TEE evidence"})
            )?
        );
        return Ok(false);
    };
    let configuration = ra_tls::certificate_configuration(&der);
    let (anchor, staleness) = dated(&der, args.ton_api.as_deref(), at, policy.as_ref()).await?;
    let binding = cocoon_attestation::configuration::bind(
        ra_tls::key_binding(&der).map_err(|e| anyhow::anyhow!("{e}"))?,
        configuration.as_deref(),
    );
    // What the node says it was told to do (bound when `key_bound`).
    let shown_configuration = configuration.as_deref().map(|bytes| {
        serde_json::from_slice::<serde_json::Value>(bytes)
            .unwrap_or_else(|_| json!({"malformed": String::from_utf8_lossy(bytes)}))
    });
    let (output, accepted) = match evidence.verify(collateral.as_ref(), at) {
        Err(e) => (
            json!({"address": args.address, "key": key.to_string(), "evidence": evidence.kind(), "accepted": false, "reason": e.to_string()}),
            false,
        ),
        Ok(verdict) => {
            let key_bound = verdict.report_data == binding;
            let refusal = match &policy {
                Some(p) => p
                    .check(&verdict, args.role.into(), Some(&binding))
                    .err()
                    .map(|r| r.to_string())
                    .or_else(|| {
                        p.check_configuration(configuration.as_deref(), args.role.into())
                            .err()
                            .map(|r| r.to_string())
                    })
                    .or(staleness),
                None if !key_bound => Some(
                    "the evidence does not bind the certificate's key and configuration"
                        .to_string(),
                ),
                None => None,
            };
            let accepted = refusal.is_none();
            (
                json!({"address": args.address, "key": key.to_string(), "evidence": evidence.kind(), "key_bound": key_bound, "configuration": shown_configuration, "anchor": anchor, "accepted": accepted, "reason": refusal, "policy_checked": policy.is_some(), "verdict": verdict}),
                accepted,
            )
        }
    };
    println!("{}", serde_json::to_string_pretty(&output)?);
    Ok(accepted)
}

/// The block a certificate's evidence binds, as JSON (with its time and age
/// at `at` when `ton_api` can look it up), and why it is not fresh enough
/// for `policy`, if it is not.
async fn dated(
    der: &[u8],
    ton_api: Option<&str>,
    at: u64,
    policy: Option<&cocoon_attestation::Policy>,
) -> anyhow::Result<(serde_json::Value, Option<String>)> {
    let anchor = cocoon_protocol::ra_tls::certificate_anchor(der);
    let requires = policy.is_some_and(|p| p.require_fresh_evidence);
    let Some(api) = ton_api else {
        let shown =
            anchor.map(|a| json!({"seqno": a.seqno, "root_hash": hex::encode(a.root_hash)}));
        let why = requires.then(|| {
            "the policy requires fresh evidence: give --ton-api to look up the block it binds"
                .to_string()
        });
        return Ok((shown.unwrap_or(serde_json::Value::Null), why));
    };
    let anchors = cocoon_chain::anchors::from_api(api, None).context("--ton-api")?;
    if let Some(a) = &anchor {
        anchors
            .fetch(a)
            .await
            .map_err(|e| anyhow::anyhow!("--ton-api {api}: {e}"))?;
    }
    let max = policy.map_or(u64::MAX, |p| p.max_evidence_age_secs);
    let checked = cocoon_attestation::freshness::check(Some(&anchors), anchor.as_ref(), at, max);
    let shown = match (&anchor, &checked) {
        (None, _) => serde_json::Value::Null,
        (Some(a), Ok(made)) => json!({"seqno": a.seqno, "root_hash": hex::encode(a.root_hash),
            "block_time": made, "age_secs": at.saturating_sub(*made)}),
        (Some(a), Err(e)) => {
            json!({"seqno": a.seqno, "root_hash": hex::encode(a.root_hash), "problem": e.to_string()})
        }
    };
    let why = checked.err().filter(|_| requires).map(|e| e.to_string());
    Ok((shown, why))
}

/// DCAP collateral from a `--collateral` file (dcap-qvl JSON).
fn load_collateral(path: &PathBuf) -> anyhow::Result<tdx::Collateral> {
    let bytes = std::fs::read(path).with_context(|| format!("--collateral {}", path.display()))?;
    tdx::collateral_from_json(&bytes)
        .map_err(|e| anyhow::anyhow!("--collateral {}: {e}", path.display()))
}

fn parse_at(at: Option<&str>) -> anyhow::Result<u64> {
    let secs = match at {
        Some(text) => {
            time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
                .map_err(|e| {
                    anyhow::anyhow!(
                        "--at {text:?}: expected RFC 3339 time such as 2025-06-20T00:00:00Z ({e})"
                    )
                })?
                .unix_timestamp()
        }
        None => time::OffsetDateTime::now_utc().unix_timestamp(),
    };
    u64::try_from(secs).map_err(|_| anyhow::anyhow!("--at is before 1970"))
}

fn load_policy(path: Option<&PathBuf>) -> anyhow::Result<Option<Policy>> {
    let Some(path) = path else { return Ok(None) };
    let text =
        std::fs::read_to_string(path).with_context(|| format!("--policy {}", path.display()))?;
    toml::from_str::<Policy>(&text)
        .map(Some)
        .map_err(|e| anyhow::anyhow!("--policy {}: {e}", path.display()))
}
