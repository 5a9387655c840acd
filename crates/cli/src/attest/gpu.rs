//! `cocoon attest verify-gpu`: NVIDIA GPU evidence (an SPDM report and the
//! device's certificate chain) checked against the driver's and VBIOS's
//! RIMs and NVIDIA's roots at a given time; the verdict or the refusal as
//! JSON, the exit status saying which.

use std::path::{Path, PathBuf};

use anyhow::Context;
use cocoon_attestation::gpu::{self, certs, GpuReference, Rim, RimKind};
use serde_json::json;

#[derive(clap::Args, Debug)]
pub struct VerifyGpuArgs {
    /// The SPDM report: hex text (as NVIDIA's tools write it) or raw bytes.
    #[arg(long, value_name = "FILE")]
    pub report: PathBuf,
    /// The GPU's certificate chain, PEM, leaf first.
    #[arg(long, value_name = "FILE")]
    pub certs: PathBuf,
    /// A folder holding the driver's and the VBIOS's RIMs (`*.swidtag`).
    #[arg(long, value_name = "DIR")]
    pub rims: PathBuf,
    /// The nonce the report must answer (64 hex digits).
    #[arg(long, value_name = "HEX")]
    pub nonce: String,
    /// NVIDIA's device identity root (PEM); default: `verifier_device_root.pem` in --rims.
    #[arg(long, value_name = "FILE")]
    pub device_root: Option<PathBuf>,
    /// The root of RIM signing chains (PEM); default: `verifier_RIM_root.pem` in --rims.
    #[arg(long, value_name = "FILE")]
    pub rim_root: Option<PathBuf>,
    /// Verify as of this time (RFC 3339); default now.
    #[arg(long, value_name = "TIME")]
    pub at: Option<String>,
}

/// Run it; `Ok(false)` when the evidence is refused.
pub fn verify_gpu(args: &VerifyGpuArgs) -> anyhow::Result<bool> {
    let (report, chain, reference, nonce, at) = load(
        &args.report,
        &args.certs,
        &args.rims,
        &args.nonce,
        args.at.as_deref(),
        args.device_root.as_deref(),
        args.rim_root.as_deref(),
    )?;
    let (output, accepted) = match gpu::verify(&report, &chain, &reference, &nonce, at) {
        Ok(verdict) => (json!({"accepted": true, "verdict": verdict}), true),
        Err(refusal) => (
            json!({"accepted": false, "reason": refusal.to_string(), "refusal": refusal}),
            false,
        ),
    };
    println!("{}", serde_json::to_string_pretty(&output)?);
    Ok(accepted)
}

/// The report, the device chain, the reference, the nonce, the time.
pub(crate) type Loaded = (Vec<u8>, Vec<Vec<u8>>, GpuReference, [u8; 32], u64);

/// What verification takes, read from the files `verify-gpu` names (the
/// roots default to NVIDIA's file names in `rims`).
pub(crate) fn load(
    report: &Path,
    certs_file: &Path,
    rims: &Path,
    nonce: &str,
    at: Option<&str>,
    device_root: Option<&Path>,
    rim_root: Option<&Path>,
) -> anyhow::Result<Loaded> {
    let at = super::parse_at(at)?;
    let nonce: [u8; 32] = hex::decode(nonce.trim())
        .ok()
        .and_then(|n| n.try_into().ok())
        .ok_or_else(|| anyhow::anyhow!("--nonce: expected 64 hex digits (32 bytes)"))?;
    let report = read_report(report)?;
    let chain = certs::from_pem(&read_text(certs_file, "--certs")?, "--certs")
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let root = |flag: &str, given: Option<&Path>, default: &str| -> anyhow::Result<Vec<u8>> {
        let path = given.map_or_else(|| rims.join(default), Path::to_path_buf);
        let pem = read_text(&path, flag)?;
        Ok(certs::from_pem(&pem, flag)
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .remove(0))
    };
    let reference = GpuReference {
        device_root: root("--device-root", device_root, "verifier_device_root.pem")?,
        rim_root: root("--rim-root", rim_root, "verifier_RIM_root.pem")?,
        rims: read_rims(rims)?,
    };
    Ok((report, chain, reference, nonce, at))
}

fn read_text(path: &Path, flag: &str) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("{flag} {}", path.display()))
}

/// Hex text (white space ignored) or, failing that, the raw bytes.
fn read_report(path: &Path) -> anyhow::Result<Vec<u8>> {
    let bytes = std::fs::read(path).with_context(|| format!("--report {}", path.display()))?;
    let text: String = String::from_utf8_lossy(&bytes)
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    Ok(hex::decode(&text).unwrap_or(bytes))
}

/// The `.swidtag` files in `dir`, each the driver's or the VBIOS's by its
/// version's shape (a VBIOS version has five dotted groups, 96.00.5E.00.01;
/// a driver's two or three, 545.00 or 550.90.07): one of each.
fn read_rims(dir: &Path) -> anyhow::Result<Vec<Rim>> {
    let mut rims: Vec<(PathBuf, Rim)> = Vec::new();
    let entries = std::fs::read_dir(dir).with_context(|| format!("--rims {}", dir.display()))?;
    for entry in entries {
        let path = entry?.path();
        if path.extension().and_then(|e| e.to_str()) != Some("swidtag") {
            continue;
        }
        let xml = read_text(&path, "--rims")?;
        let rim =
            Rim::parse_any(&xml).map_err(|e| anyhow::anyhow!("--rims {}: {e}", path.display()))?;
        rims.push((path, rim));
    }
    for kind in [RimKind::Driver, RimKind::Vbios] {
        let found: Vec<_> = rims.iter().filter(|(_, r)| r.kind == kind).collect();
        anyhow::ensure!(
            found.len() == 1,
            "--rims {}: {} {kind} RIMs ({}); expected exactly one",
            dir.display(),
            found.len(),
            found
                .iter()
                .map(|(p, _)| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(rims.into_iter().map(|(_, r)| r).collect())
}
