//! A SIMULATED NVIDIA GPU, for development networks and tests only. It
//! makes real-shaped evidence — an SPDM 1.1 report answering the caller's
//! nonce, signed with ECDSA P-384 by a device key under a *simulated*
//! device root, and the driver's and VBIOS's RIMs signed (XML-DSig, C14N
//! 1.1) under a *simulated* RIM root — so the whole GPU path (collection,
//! binding to the worker's TDX report data, verification, policy) runs on
//! machines without an H100. It proves nothing: its keys are in this
//! source tree (`simulated_keys/`), so anyone can make its evidence.
//! Verifiers accept its roots only where the policy sets `allow_simulated`
//! (refused under the production profile), and the verdict says
//! `simulated`.

use base64::Engine as _;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, ECDSA_P384_SHA384_FIXED_SIGNING};
use sha2::{Digest, Sha384};

use super::evidence::{GpuAttester, GpuEvidence};
use super::report::opaque;
use super::xmldsig::{canonicalize, Subset};
use super::{Rim, RimKind};

/// The driver version the simulated GPU reports.
pub const DRIVER_VERSION: &str = "0.0.1";
/// The VBIOS version it reports.
pub const VBIOS_VERSION: &str = "00.00.00.00.01";
/// Measurement blocks 1..=4: the driver's RIM holds indices 0 and 1, the
/// VBIOS's 2 and 3.
const BLOCKS: u8 = 4;

const DEVICE_ROOT_KEY: &str = include_str!("simulated_keys/device_root.pem");
const DEVICE_KEY: &str = include_str!("simulated_keys/device.pem");
const RIM_ROOT_KEY: &str = include_str!("simulated_keys/rim_root.pem");
const RIM_KEY: &str = include_str!("simulated_keys/rim.pem");

/// The golden value of SPDM measurement block `index`.
fn measurement(index: u8) -> [u8; 48] {
    Sha384::digest(format!("cocoon simulated GPU measurement {index}")).into()
}

fn key(pem: &str) -> KeyPair {
    KeyPair::from_pem(pem).expect("the simulated GPU's keys parse")
}

fn ca_params(name: &str) -> CertificateParams {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("no names");
    params.distinguished_name.push(
        DnType::CommonName,
        format!("{name} (SIMULATED, NOT NVIDIA)"),
    );
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

/// (root DER, leaf DER) for a root key and a leaf key.
fn chain(root_name: &str, root_pem: &str, leaf_name: &str, leaf_pem: &str) -> (Vec<u8>, Vec<u8>) {
    let root_key = key(root_pem);
    let root_params = ca_params(root_name);
    let root = root_params.self_signed(&root_key).expect("root signs");
    let issuer = rcgen::Issuer::new(root_params, root_key);
    let mut leaf_params = CertificateParams::new(Vec::<String>::new()).expect("no names");
    leaf_params
        .distinguished_name
        .push(DnType::CommonName, format!("{leaf_name} (SIMULATED)"));
    leaf_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let leaf = leaf_params
        .signed_by(&key(leaf_pem), &issuer)
        .expect("leaf signed");
    (root.der().to_vec(), leaf.der().to_vec())
}

/// The simulated device root (its name and key are fixed, so every copy
/// made anywhere verifies the same chains).
pub fn device_root() -> Vec<u8> {
    chain(
        "Cocoon Simulated GPU Device Root",
        DEVICE_ROOT_KEY,
        "Simulated GPU",
        DEVICE_KEY,
    )
    .0
}

/// The simulated RIM signing root.
pub fn rim_root() -> Vec<u8> {
    chain(
        "Cocoon Simulated GPU RIM Root",
        RIM_ROOT_KEY,
        "Simulated RIM signer",
        RIM_KEY,
    )
    .0
}

fn signing_key(pem: &str) -> EcdsaKeyPair {
    let der = x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .expect("a PEM key")
        .1
        .contents;
    EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, &der, &SystemRandom::new())
        .expect("a P-384 PKCS#8 key")
}

/// ECDSA P-384 over `message`, r ‖ s.
fn sign(key: &EcdsaKeyPair, message: &[u8]) -> Vec<u8> {
    key.sign(&SystemRandom::new(), message)
        .expect("signing")
        .as_ref()
        .to_vec()
}

/// The simulated driver's and VBIOS's RIMs, signed now.
pub fn rims() -> Vec<Rim> {
    let (_, signer) = chain(
        "Cocoon Simulated GPU RIM Root",
        RIM_ROOT_KEY,
        "Simulated RIM signer",
        RIM_KEY,
    );
    let key = signing_key(RIM_KEY);
    [
        (RimKind::Driver, DRIVER_VERSION, 0u8),
        (RimKind::Vbios, VBIOS_VERSION, 2),
    ]
    .into_iter()
    .map(|(kind, version, first)| {
        let xml = signed_rim(version, first, &signer, &key);
        Rim::parse(kind, &xml).expect("the simulated RIM parses")
    })
    .collect()
}

/// A SWID tag in NVIDIA's shape (two active golden values from RIM index
/// `first`), with an enveloped XML-DSig signature in NVIDIA's profile.
fn signed_rim(version: &str, first: u8, signer: &[u8], key: &EcdsaKeyPair) -> String {
    let resources: String = (first..first + 2)
        .map(|i| {
            format!(
                r#"<Resource type="Measurement" index="{i}" active="True" alternatives="1" SHA384:Hash0="{}" name="Measurement_{i}" size="48"/>"#,
                hex::encode(measurement(i + 1))
            )
        })
        .collect();
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let draft = |digest: &str, signature: &str| {
        format!(
            r##"<SoftwareIdentity xmlns="http://standards.iso.org/iso/19770/-2/2015/schema.xsd" xmlns:SHA384="http://www.w3.org/2001/04/xmlenc#sha384" name="SIMULATED GPU" tagId="cocoon-simulated-{version}" version="1.0"><Meta colloquialVersion="{version}" product="SIMULATED"/><Payload>{resources}</Payload><Signature xmlns="http://www.w3.org/2000/09/xmldsig#"><SignedInfo><CanonicalizationMethod Algorithm="http://www.w3.org/2006/12/xml-c14n11"/><SignatureMethod Algorithm="http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha384"/><Reference URI=""><Transforms><Transform Algorithm="http://www.w3.org/2000/09/xmldsig#enveloped-signature"/><Transform Algorithm="http://www.w3.org/2006/12/xml-c14n11"/></Transforms><DigestMethod Algorithm="http://www.w3.org/2001/04/xmldsig-more#sha384"/><DigestValue>{digest}</DigestValue></Reference></SignedInfo><SignatureValue>{signature}</SignatureValue><KeyInfo><X509Data><X509Certificate>{}</X509Certificate></X509Data></KeyInfo></Signature></SoftwareIdentity>"##,
            b64(signer)
        )
    };
    let document = canonicalize(&draft("", ""), Subset::WithoutSignature).expect("canonical");
    let digest = b64(&Sha384::digest(document));
    let signed_info =
        canonicalize(&draft(&digest, ""), Subset::SignedInfo).expect("canonical SignedInfo");
    draft(&digest, &b64(&sign(key, &signed_info)))
}

/// One simulated GPU.
pub struct SimulatedGpu {
    key: EcdsaKeyPair,
    chain: Vec<Vec<u8>>,
}

impl Default for SimulatedGpu {
    fn default() -> Self {
        Self::new()
    }
}

impl SimulatedGpu {
    pub fn new() -> Self {
        tracing::warn!(
            "SIMULATED GPU: this node's GPU evidence is fake and proves nothing; development only"
        );
        let (_, leaf) = chain(
            "Cocoon Simulated GPU Device Root",
            DEVICE_ROOT_KEY,
            "Simulated GPU",
            DEVICE_KEY,
        );
        Self {
            key: signing_key(DEVICE_KEY),
            chain: vec![leaf],
        }
    }

    /// A report answering `nonce`, with the versions and measurements the
    /// simulated RIMs hold.
    pub fn evidence(&self, nonce: &[u8; 32]) -> GpuEvidence {
        let mut report = vec![0x11, 0xE0, 0x01, 0xFF];
        report.extend_from_slice(nonce);
        report.push(0); // slot
        let mut record = Vec::new();
        for index in 1..=BLOCKS {
            let value = measurement(index);
            record.push(index);
            record.push(0x01); // DMTF measurement specification
            record.extend_from_slice(&(3 + value.len() as u16).to_le_bytes());
            record.push(0x01);
            record.extend_from_slice(&(value.len() as u16).to_le_bytes());
            record.extend_from_slice(&value);
        }
        report.extend_from_slice(&[0x11, 0x60, 0, 0, BLOCKS]);
        report.extend_from_slice(&(record.len() as u32).to_le_bytes()[..3]);
        report.extend_from_slice(&record);
        report.extend_from_slice(&ring_random_32());
        let mut opaque_data = Vec::new();
        let mut entry = |kind: u16, value: &[u8]| {
            opaque_data.extend_from_slice(&kind.to_le_bytes());
            opaque_data.extend_from_slice(&(value.len() as u16).to_le_bytes());
            opaque_data.extend_from_slice(value);
        };
        entry(
            opaque::DRIVER_VERSION,
            format!("{DRIVER_VERSION}\0").as_bytes(),
        );
        entry(opaque::VBIOS_VERSION, &[0, 0, 0, 0, 1, 0, 0, 0]);
        entry(opaque::PROJECT, b"SIM0\0");
        entry(opaque::PROJECT_SKU, b"0000\0");
        entry(opaque::CHIP_SKU, b"000\0");
        report.extend_from_slice(&(opaque_data.len() as u16).to_le_bytes());
        report.extend_from_slice(&opaque_data);
        let signature = sign(&self.key, &report);
        report.extend_from_slice(&signature);
        GpuEvidence {
            report,
            chain: self.chain.clone(),
        }
    }
}

fn ring_random_32() -> [u8; 32] {
    use ring::rand::SecureRandom;
    let mut out = [0u8; 32];
    SystemRandom::new()
        .fill(&mut out)
        .expect("system randomness");
    out
}

impl GpuAttester for SimulatedGpu {
    fn gpu_evidence(&self, nonce: &[u8; 32]) -> Result<Vec<GpuEvidence>, String> {
        Ok(vec![self.evidence(nonce)])
    }
}
