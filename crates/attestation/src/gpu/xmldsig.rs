//! XML-DSig as NVIDIA signs its RIMs, and nothing else: one enveloped
//! signature over the whole document (`Reference URI=""`, transforms
//! enveloped-signature then inclusive Canonical XML 1.1), SHA-384 digest,
//! ECDSA P-384 signature (r ‖ s) by the first certificate in `KeyInfo`.
//! Any other algorithm or shape is refused by name. Canonical XML 1.1 is
//! written here over quick-xml's events (no mature pure-Rust crate does it):
//! namespaces in scope rendered where they change, attributes sorted by
//! namespace and name, text and attribute values re-escaped canonically,
//! empty elements expanded, comments dropped, documents with a DTD refused.

use std::collections::BTreeMap;

use base64::Engine as _;
use quick_xml::events::{BytesStart, Event};
use ring::signature::{UnparsedPublicKey, ECDSA_P384_SHA384_FIXED};
use sha2::{Digest, Sha384};

use super::{certs, GpuRefusal};

const DSIG: &str = "http://www.w3.org/2000/09/xmldsig#";
const C14N11: &str = "http://www.w3.org/2006/12/xml-c14n11";
const ENVELOPED: &str = "http://www.w3.org/2000/09/xmldsig#enveloped-signature";
const ECDSA_SHA384: &str = "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha384";
const SHA384: &str = "http://www.w3.org/2001/04/xmldsig-more#sha384";

/// Which part of the document to canonicalize.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subset {
    /// The whole document without its `ds:Signature` element (what the
    /// enveloped-signature transform leaves).
    WithoutSignature,
    /// The `ds:SignedInfo` element, with the namespaces it inherits.
    SignedInfo,
}

/// Check `xml`'s signature: its digest over the document and the signature
/// over its `SignedInfo` by the certificate `signer` (DER).
pub fn verify(xml: &str, signer: &[u8], what: &str) -> Result<(), GpuRefusal> {
    let refuse = |m: String| GpuRefusal::RimSignature(format!("{what}: {m}"));
    let doc = roxmltree::Document::parse(xml).map_err(|e| refuse(e.to_string()))?;
    let signatures: Vec<_> = doc
        .descendants()
        .filter(|n| n.tag_name().namespace() == Some(DSIG) && n.tag_name().name() == "Signature")
        .collect();
    let [signature] = signatures.as_slice() else {
        return Err(refuse(format!(
            "{} signatures, expected exactly one",
            signatures.len()
        )));
    };
    let missing = |name: &str| refuse(format!("no {name}"));
    let signed_info = ds(*signature, "SignedInfo").ok_or_else(|| missing("SignedInfo"))?;
    let algorithm = |node: Option<roxmltree::Node<'_, '_>>, name: &str| {
        node.and_then(|n| n.attribute("Algorithm"))
            .ok_or_else(|| missing(name))
            .map(str::to_string)
    };
    let expect = |got: String, want: &str, name: &str| {
        if got == want {
            Ok(())
        } else {
            Err(refuse(format!(
                "{name} {got} is not supported (only {want})"
            )))
        }
    };
    expect(
        algorithm(
            ds(signed_info, "CanonicalizationMethod"),
            "CanonicalizationMethod",
        )?,
        C14N11,
        "canonicalization",
    )?;
    expect(
        algorithm(ds(signed_info, "SignatureMethod"), "SignatureMethod")?,
        ECDSA_SHA384,
        "signature method",
    )?;
    let references: Vec<_> = signed_info
        .children()
        .filter(|n| n.tag_name().namespace() == Some(DSIG) && n.tag_name().name() == "Reference")
        .collect();
    let [reference] = references.as_slice() else {
        return Err(refuse(format!(
            "{} references, expected exactly one",
            references.len()
        )));
    };
    if reference.attribute("URI") != Some("") {
        return Err(refuse(
            "the reference is not to the whole document (URI=\"\")".into(),
        ));
    }
    let transforms: Vec<String> = ds(*reference, "Transforms")
        .ok_or_else(|| missing("Transforms"))?
        .children()
        .filter(|n| n.is_element())
        .map(|n| n.attribute("Algorithm").unwrap_or("").to_string())
        .collect();
    if transforms != [ENVELOPED, C14N11] {
        return Err(refuse(format!(
            "transforms {transforms:?} are not supported (only enveloped-signature, then C14N 1.1)"
        )));
    }
    expect(
        algorithm(ds(*reference, "DigestMethod"), "DigestMethod")?,
        SHA384,
        "digest method",
    )?;
    let base64 = |node: Option<roxmltree::Node<'_, '_>>, name: &str| {
        let text: String = node
            .and_then(|n| n.text())
            .ok_or_else(|| missing(name))?
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect();
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(|e| refuse(format!("{name}: {e}")))
    };
    let digest = base64(ds(*reference, "DigestValue"), "DigestValue")?;
    let signature_value = base64(ds(*signature, "SignatureValue"), "SignatureValue")?;
    let document = canonicalize(xml, Subset::WithoutSignature).map_err(refuse)?;
    if Sha384::digest(&document).as_slice() != digest.as_slice() {
        return Err(refuse(
            "the document's digest differs from the signed one (altered)".into(),
        ));
    }
    let signed = canonicalize(xml, Subset::SignedInfo).map_err(refuse)?;
    UnparsedPublicKey::new(&ECDSA_P384_SHA384_FIXED, certs::public_key(signer)?)
        .verify(&signed, &signature_value)
        .map_err(|_| refuse("the signature does not verify with its certificate's key".into()))
}

/// `node`'s child `ds:NAME`.
fn ds<'a, 'i>(node: roxmltree::Node<'a, 'i>, name: &str) -> Option<roxmltree::Node<'a, 'i>> {
    node.children()
        .find(|n| n.tag_name().namespace() == Some(DSIG) && n.tag_name().name() == name)
}

/// One open element while canonicalizing.
struct Frame {
    /// Namespaces in scope (prefix, "" for the default, → URI).
    in_scope: BTreeMap<String, String>,
    /// Namespaces the output has in scope here (empty outside the subset).
    rendered: BTreeMap<String, String>,
    /// Written to the output.
    output: bool,
    /// The raw qualified name, for the end tag.
    name: String,
}

/// `xml`'s canonical form (Canonical XML 1.1, without comments) of `subset`.
pub fn canonicalize(xml: &str, subset: Subset) -> Result<Vec<u8>, String> {
    let xml = xml.replace("\r\n", "\n").replace('\r', "\n");
    let mut reader = quick_xml::Reader::from_str(&xml);
    reader.config_mut().expand_empty_elements = true;
    let mut out = Vec::new();
    let mut stack: Vec<Frame> = Vec::new();
    loop {
        match reader.read_event().map_err(|e| e.to_string())? {
            Event::Start(start) => {
                let frame = open(&start, stack.last(), subset, &mut out)?;
                stack.push(frame);
            }
            Event::End(_) => {
                let frame = stack.pop().ok_or("an end tag without a start")?;
                if frame.output {
                    out.extend_from_slice(format!("</{}>", frame.name).as_bytes());
                }
            }
            Event::Text(text) => {
                if stack.last().is_some_and(|f| f.output) {
                    let raw = std::str::from_utf8(text.as_ref()).map_err(|e| e.to_string())?;
                    let text = quick_xml::escape::unescape(raw).map_err(|e| e.to_string())?;
                    escape_text(&text, &mut out);
                }
            }
            Event::CData(data) => {
                if stack.last().is_some_and(|f| f.output) {
                    let text = std::str::from_utf8(data.as_ref()).map_err(|e| e.to_string())?;
                    escape_text(text, &mut out);
                }
            }
            Event::PI(pi) => {
                if stack.last().is_some_and(|f| f.output) {
                    out.extend_from_slice(b"<?");
                    out.extend_from_slice(pi.as_ref());
                    out.extend_from_slice(b"?>");
                }
            }
            Event::DocType(_) => return Err("documents with a DTD are not supported".into()),
            Event::Comment(_) | Event::Decl(_) => {}
            Event::Empty(_) => unreachable!("empty elements are expanded"),
            Event::Eof => break,
            // GeneralRef and any later kinds of event: refused, not skipped.
            #[allow(unreachable_patterns)]
            other => return Err(format!("unsupported XML: {other:?}")),
        }
    }
    if !stack.is_empty() {
        return Err("the document ends inside an element".into());
    }
    Ok(out)
}

/// Handle a start tag: its namespaces, whether it is output, and if so its
/// canonical start tag.
fn open(
    start: &BytesStart<'_>,
    parent: Option<&Frame>,
    subset: Subset,
    out: &mut Vec<u8>,
) -> Result<Frame, String> {
    let name = std::str::from_utf8(start.name().as_ref())
        .map_err(|e| e.to_string())?
        .to_string();
    let mut in_scope = parent.map(|p| p.in_scope.clone()).unwrap_or_default();
    let mut attributes = Vec::new();
    for attribute in start.attributes() {
        let attribute = attribute.map_err(|e| e.to_string())?;
        let key = std::str::from_utf8(attribute.key.as_ref())
            .map_err(|e| e.to_string())?
            .to_string();
        let raw = std::str::from_utf8(&attribute.value).map_err(|e| e.to_string())?;
        // Attribute-value normalisation: literal white space becomes a space.
        let normalized = raw.replace(['\t', '\n'], " ");
        let value = quick_xml::escape::unescape(&normalized)
            .map_err(|e| e.to_string())?
            .into_owned();
        if key == "xmlns" {
            in_scope.insert(String::new(), value);
        } else if let Some(prefix) = key.strip_prefix("xmlns:") {
            in_scope.insert(prefix.to_string(), value);
        } else {
            attributes.push((key, value));
        }
    }
    let (prefix, local) = split(&name);
    let namespace = in_scope.get(prefix).map(String::as_str).unwrap_or("");
    let parent_output = parent.is_some_and(|p| p.output);
    let output = match subset {
        Subset::WithoutSignature => {
            let in_signature = parent.is_some_and(|p| !p.output);
            let is_signature = namespace == DSIG && local == "Signature";
            !(in_signature || is_signature)
        }
        Subset::SignedInfo => parent_output || (namespace == DSIG && local == "SignedInfo"),
    };
    if !output {
        return Ok(Frame {
            in_scope,
            rendered: BTreeMap::new(),
            output,
            name,
        });
    }
    let above = match parent {
        Some(p) if p.output => p.rendered.clone(),
        _ => BTreeMap::new(),
    };
    let mut rendered = above.clone();
    let mut declarations = Vec::new();
    for (prefix, uri) in &in_scope {
        if prefix == "xml" {
            continue;
        }
        let shown = above.get(prefix).map(String::as_str);
        // An empty default namespace is shown only to undo a shown one.
        let needed = if prefix.is_empty() && uri.is_empty() {
            shown.is_some_and(|s| !s.is_empty())
        } else {
            shown != Some(uri.as_str())
        };
        if needed {
            declarations.push((prefix.clone(), uri.clone()));
            rendered.insert(prefix.clone(), uri.clone());
        }
    }
    // BTreeMap order puts the default ("") first, then prefixes by name.
    let mut sorted = Vec::with_capacity(attributes.len());
    for (key, value) in attributes {
        let (prefix, local) = split(&key);
        let uri = if prefix.is_empty() {
            String::new()
        } else {
            in_scope
                .get(prefix)
                .cloned()
                .ok_or_else(|| format!("attribute {key}: prefix {prefix} is not declared"))?
        };
        sorted.push(((uri, local.to_string()), key, value));
    }
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    out.push(b'<');
    out.extend_from_slice(name.as_bytes());
    for (prefix, uri) in &declarations {
        if prefix.is_empty() {
            out.extend_from_slice(b" xmlns=\"");
        } else {
            out.extend_from_slice(format!(" xmlns:{prefix}=\"").as_bytes());
        }
        escape_attribute(uri, out);
        out.push(b'"');
    }
    for (_, key, value) in &sorted {
        out.extend_from_slice(format!(" {key}=\"").as_bytes());
        escape_attribute(value, out);
        out.push(b'"');
    }
    out.push(b'>');
    Ok(Frame {
        in_scope,
        rendered,
        output,
        name,
    })
}

/// (prefix, local name); the prefix is "" when there is none.
fn split(name: &str) -> (&str, &str) {
    name.split_once(':').unwrap_or(("", name))
}

fn escape_text(text: &str, out: &mut Vec<u8>) {
    for c in text.chars() {
        match c {
            '&' => out.extend_from_slice(b"&amp;"),
            '<' => out.extend_from_slice(b"&lt;"),
            '>' => out.extend_from_slice(b"&gt;"),
            '\r' => out.extend_from_slice(b"&#xD;"),
            c => out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
        }
    }
}

fn escape_attribute(text: &str, out: &mut Vec<u8>) {
    for c in text.chars() {
        match c {
            '&' => out.extend_from_slice(b"&amp;"),
            '<' => out.extend_from_slice(b"&lt;"),
            '"' => out.extend_from_slice(b"&quot;"),
            '\t' => out.extend_from_slice(b"&#x9;"),
            '\n' => out.extend_from_slice(b"&#xA;"),
            '\r' => out.extend_from_slice(b"&#xD;"),
            c => out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
        }
    }
}
