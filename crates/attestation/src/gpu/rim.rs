//! NVIDIA's Reference Integrity Manifests: signed SWID tags (XML) holding a
//! driver's or a VBIOS's golden measurements, the version they are for, and
//! the certificate chain that signed them.

use super::GpuRefusal;

/// The namespace NVIDIA's RIMs give golden hash attributes (`Hash0`...).
const SHA384_NS: &str = "http://www.w3.org/2001/04/xmlenc#sha384";
/// XML-DSig.
const DSIG_NS: &str = "http://www.w3.org/2000/09/xmldsig#";

/// One golden measurement: the SPDM block (`index` + 1) must equal one of
/// `alternatives`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Golden {
    /// The RIM's index (0-based; the report's block index is one more).
    pub index: u8,
    pub alternatives: Vec<Vec<u8>>,
}

/// Which firmware a RIM is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RimKind {
    Driver,
    Vbios,
}

impl std::fmt::Display for RimKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RimKind::Driver => "driver",
            RimKind::Vbios => "VBIOS",
        })
    }
}

/// A parsed RIM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rim {
    pub kind: RimKind,
    /// `Meta/@colloquialVersion`, lowercased: the driver or VBIOS version.
    pub version: String,
    /// The active measurements only.
    pub golden: Vec<Golden>,
    /// The signing chain embedded in its signature (leaf first, DER).
    pub chain: Vec<Vec<u8>>,
    /// The document's text, for its signature check.
    pub xml: String,
}

impl RimKind {
    /// Which firmware a version is of, by its shape: a VBIOS version has
    /// five dotted groups (96.00.5E.00.01), a driver's two or three (545.00,
    /// 550.90.07).
    pub fn of_version(version: &str) -> Self {
        if version.split('.').count() == 5 {
            RimKind::Vbios
        } else {
            RimKind::Driver
        }
    }
}

impl Rim {
    /// Parse `xml`, a driver's or a VBIOS's RIM by its version's shape.
    pub fn parse_any(xml: &str) -> Result<Self, GpuRefusal> {
        let probe = Self::parse(RimKind::Driver, xml)?;
        Ok(Self {
            kind: RimKind::of_version(&probe.version),
            ..probe
        })
    }

    /// Parse `xml` (a `.swidtag` file), the RIM of `kind`.
    pub fn parse(kind: RimKind, xml: &str) -> Result<Self, GpuRefusal> {
        let bad = |m: String| GpuRefusal::Malformed(format!("{kind} RIM: {m}"));
        let doc = roxmltree::Document::parse(xml).map_err(|e| bad(e.to_string()))?;
        let version = doc
            .descendants()
            .find(|n| n.has_tag_name("Meta") && n.attribute("colloquialVersion").is_some())
            .and_then(|n| n.attribute("colloquialVersion"))
            .ok_or_else(|| bad("no Meta colloquialVersion".into()))?
            .to_lowercase();
        let mut golden = Vec::new();
        for resource in doc.descendants().filter(|n| n.has_tag_name("Resource")) {
            if !resource
                .attribute("active")
                .is_some_and(|a| a.eq_ignore_ascii_case("true"))
            {
                continue;
            }
            let index: u8 = resource
                .attribute("index")
                .and_then(|i| i.parse().ok())
                .filter(|i| *i < 255)
                .ok_or_else(|| bad("a Resource without a valid index".into()))?;
            let count: usize = resource
                .attribute("alternatives")
                .and_then(|a| a.parse().ok())
                .filter(|a| (1..=64).contains(a))
                .ok_or_else(|| bad(format!("Resource {index}: no valid alternatives count")))?;
            let mut alternatives = Vec::with_capacity(count);
            for k in 0..count {
                let hash = resource
                    .attribute((SHA384_NS, format!("Hash{k}").as_str()))
                    .ok_or_else(|| bad(format!("Resource {index}: no Hash{k}")))?;
                alternatives.push(
                    hex::decode(hash)
                        .map_err(|_| bad(format!("Resource {index}: Hash{k} is not hex")))?,
                );
            }
            if golden.iter().any(|g: &Golden| g.index == index) {
                return Err(bad(format!("index {index} appears twice")));
            }
            golden.push(Golden {
                index,
                alternatives,
            });
        }
        let mut chain = Vec::new();
        for cert in doc.descendants().filter(|n| {
            n.tag_name().namespace() == Some(DSIG_NS) && n.has_tag_name("X509Certificate")
        }) {
            let text: String = cert
                .text()
                .unwrap_or("")
                .chars()
                .filter(|c| !c.is_whitespace())
                .collect();
            use base64::Engine as _;
            chain.push(
                base64::engine::general_purpose::STANDARD
                    .decode(text)
                    .map_err(|e| bad(format!("an X509Certificate: {e}")))?,
            );
        }
        Ok(Self {
            kind,
            version,
            golden,
            chain,
            xml: xml.to_string(),
        })
    }
}
