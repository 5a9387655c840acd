//! A worker's GPU evidence beside its sealing key: bound to that key's TDX
//! evidence by its nonce, required where the policy says so, of allowed
//! versions. The attacker is the GPU owner (or a proxy relaying keys) who
//! shows GPU evidence made for another enclave, NVIDIA's genuine evidence
//! of some other GPU, or none. Simulated TEE and GPU, real signatures.

use cocoon_attestation::configuration::bind;
use cocoon_attestation::gpu::simulated::SimulatedGpu;
use cocoon_attestation::gpu::{binding_nonce, certs, GpuEvidence, GpuReferences};
use cocoon_attestation::simulated::SimulatedTee;
use cocoon_attestation::{Attester, Configuration, PeerRole, Policy};

use super::*;
use crate::sealed::SealingKey;
use crate::tls::Identity;

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn check() -> AttestationCheck {
    AttestationCheck {
        policy: Policy {
            worker_images: [SimulatedTee::measurements().image_hash()].into(),
            allow_simulated: true,
            require_fresh_evidence: false,
            require_gpu: true,
            ..Policy::default()
        },
        collateral: None,
        verify_at: None,
        anchors: None,
        gpu: Some(GpuReferences::new(None, None).unwrap()),
        published: None,
    }
}

/// A worker's key with TEE evidence, and the report data it binds.
fn attested(tee: &SimulatedTee) -> (WorkerKey, [u8; 64]) {
    let identity = Identity::generate().unwrap();
    let sealing = SealingKey::generate();
    let configuration = Configuration::new(PeerRole::Worker, "test").to_bytes();
    let binding = bind(
        sealing_binding(&sealing.public(), identity.spki(), None),
        Some(&configuration),
    );
    let key = WorkerKey {
        identity: identity.spki().to_vec(),
        sealing_key: sealing.public(),
        evidence: Some(tee.evidence(&binding).unwrap().to_bytes()),
        configuration: Some(configuration),
        anchor: None,
        gpus: Vec::new(),
    };
    (key, binding)
}

/// NVIDIA's genuine recorded H100 evidence (the older sample): a real GPU,
/// but asked with a nonce of someone else's choosing.
fn recorded_h100() -> GpuEvidence {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../attestation/testdata/nvidia-older");
    let text = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap();
    let report: String = text("attestationReport.txt")
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    GpuEvidence {
        report: hex::decode(report).unwrap(),
        chain: certs::from_pem(&text("gpuAkCertChain.txt"), "chain").unwrap(),
    }
}

#[test]
fn gpu_evidence_must_answer_the_nonce_of_this_keys_evidence() {
    let tee = SimulatedTee::new();
    let gpu = SimulatedGpu::new();
    let (mut key, binding) = attested(&tee);
    key.gpus = vec![gpu.evidence(&binding_nonce(&binding))];
    let verdict = key.verify(&check(), now()).unwrap();
    assert_eq!(verdict.gpus.len(), 1);
    assert!(verdict.gpus[0].simulated);

    // Evidence a GPU made for another enclave's key, moved onto this one.
    let (other, other_binding) = attested(&tee);
    let moved = WorkerKey {
        gpus: vec![gpu.evidence(&binding_nonce(&other_binding))],
        ..key.clone()
    };
    let err = moved.verify(&check(), now()).unwrap_err().to_string();
    assert!(err.contains("GPU 0: the report answers nonce"), "{err}");
    // Good evidence after good evidence does not excuse a bad one.
    let mixed = WorkerKey {
        gpus: vec![key.gpus[0].clone(), moved.gpus[0].clone()],
        ..key.clone()
    };
    let err = mixed.verify(&check(), now()).unwrap_err().to_string();
    assert!(err.contains("GPU 1: the report answers nonce"), "{err}");
    // The other worker's own key with it passes: the binding is per key.
    let theirs = WorkerKey {
        gpus: moved.gpus.clone(),
        ..other
    };
    theirs.verify(&check(), now()).unwrap();

    // NVIDIA's genuine evidence of a real H100, asked with another nonce.
    let mut real = check();
    real.verify_at = Some(1_717_200_000); // inside its certificates' validity
    let borrowed = WorkerKey {
        gpus: vec![recorded_h100()],
        ..key
    };
    let err = borrowed.verify(&real, now()).unwrap_err().to_string();
    assert!(err.contains("answers nonce 4cff7f53"), "{err}");
}

#[test]
fn a_policy_requiring_gpus_refuses_a_key_without_them() {
    let tee = SimulatedTee::new();
    let (key, binding) = attested(&tee);
    let err = key.verify(&check(), now()).unwrap_err().to_string();
    assert!(err.contains("require_gpu"), "{err}");
    // A network of CPU workers does not ask.
    let mut cpu = check();
    cpu.policy.require_gpu = false;
    assert!(key.verify(&cpu, now()).unwrap().gpus.is_empty());
    // A verifier without GPU references cannot check them, and says so.
    let mut blind = check();
    blind.gpu = None;
    let with_gpu = WorkerKey {
        gpus: vec![SimulatedGpu::new().evidence(&binding_nonce(&binding))],
        ..key.clone()
    };
    let err = with_gpu.verify(&blind, now()).unwrap_err().to_string();
    assert!(err.contains("attestation.gpu_rims"), "{err}");
    // More GPUs than any machine has: refused before any is verified.
    let flood = WorkerKey {
        gpus: vec![with_gpu.gpus[0].clone(); crate::ra_tls::MAX_GPUS + 1],
        ..key
    };
    let err = flood.verify(&check(), now()).unwrap_err().to_string();
    assert!(err.contains("at most 16"), "{err}");
}

#[test]
fn gpus_must_run_driver_and_vbios_versions_the_policy_allows() {
    let tee = SimulatedTee::new();
    let (mut key, binding) = attested(&tee);
    key.gpus = vec![SimulatedGpu::new().evidence(&binding_nonce(&binding))];
    let mut pinned = check();
    pinned.policy.gpu_driver_versions = ["550.90.07".to_string()].into();
    let err = key.verify(&pinned, now()).unwrap_err().to_string();
    assert!(
        err.contains("runs driver version 0.0.1, not one the policy allows (550.90.07)"),
        "{err}"
    );
    pinned.policy.gpu_driver_versions = ["0.0.1".to_string()].into();
    pinned.policy.gpu_vbios_versions = ["96.00.9f.00.01".to_string()].into();
    let err = key.verify(&pinned, now()).unwrap_err().to_string();
    assert!(err.contains("VBIOS version 00.00.00.00.01"), "{err}");
    pinned.policy.gpu_vbios_versions = ["00.00.00.00.01".to_string()].into();
    key.verify(&pinned, now()).unwrap();
}
